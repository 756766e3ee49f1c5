/*
 * keysvc-oci: the certificate lifecycle of an Oracle Roving Edge node whose
 * key is held by keysvcd, and OCI request signing with that key.
 *
 *   sign-request  print the OCI "Signature version=1" headers for a request
 *   status        age, phase (current / renewal-due / expired / not yet
 *                 valid), dates
 *   renew         CSR from the token with the current subject and SANs ->
 *                 POST renewCertificate signed with the current key ->
 *                 fetch the certificate bundle -> check, install
 *
 * Nothing is installed until it has been checked (ks_ci_check), and a
 * failure leaves the installed certificate as it was. Failures of renew are
 * counted in a state file so that `renew --when-due` (the timer) backs off
 * with jitter instead of hammering OCI.
 *
 * This file parses the options and runs sign-request and status;
 * oci_renew.c holds renew, oci_rebootstrap.c rebootstrap (oci_cmd.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "clients/renew/common/certinstall.h"
#include "clients/renew/common/certlock.h"
#include "clients/renew/common/climsg.h"
#include "clients/renew/common/cliopt.h"
#include "clients/renew/common/clikeysvc.h"
#include "clients/renew/common/push.h"
#include "clients/renew/common/renewcli.h"
#include "clients/renew/https/https.h"
#include "keysvc/keysvc.h"
#include "clients/renew/oci/oci.h"
#include "clients/renew/oci/oci_cmd.h"
#include "clients/renew/oci/ocirun.h"
#include "clients/renew/oci/ocisign.h"
#include "clients/status/status.h"
#include "proto/file.h"

#define DEFAULT_RENEW_PATH "/20201210/roverNodes/{roverNodeId}/actions/renewCertificate"
#define DEFAULT_BUNDLE_PATH "/20210224/certificateBundles/{certificateId}"
#define BODY_FILE_MAX ((size_t)1024 * 1024)


static void usage(FILE *f)
{
	fputs("Usage: keysvc-oci COMMAND [options]\n"
	      "\n"
	      "OCI request signing and the Roving Edge certificate lifecycle, with the private\n"
	      "key kept in the token by keysvcd.\n"
	      "\n"
	      "Commands:\n"
	      "  sign-request  --key NAME --key-id ID --method M --url URL [--body-file F]\n"
	      "                [--content-type T] [--date HTTP-DATE]: print the signed headers\n"
	      "  status        --cert PATH: age, phase and dates of the certificate\n"
	      "  renew         --cert PATH --ca-file PATH --key NAME --key-id ID --endpoint URL\n"
	      "                --node-id OCID: renew through renewCertificate\n"
	      "  rebootstrap   --rps-fqdn rps.FQDN --infrastructure-id ID --token-zip ZIP --region R:\n"
	      "                POST /register and /check_ready to https://rps.FQDN, then follow\n"
	      "                the connection state (--state-command) until Connected\n"
	      "\n"
	      "Options:\n"
	      "  --key NAME              keysvc key (RSA; signs as rsa-pkcs1-sha256)\n"
	      "  --key-id ID             the OCI keyId (tenancy/user/fingerprint, ST$token, ...)\n"
	      "  --json                  status, sign-request: JSON on stdout; renew, rebootstrap: the\n"
	      "                          outcome as one JSON object on stdout (progress on stderr)\n"
	      "  --renew-after DAYS      renewal point after issue (default 30)\n"
	      "  --lifetime DAYS         certificate lifetime after issue (default 60)\n"
	      "  --when-due              renew: only in the renewal window and after any backoff\n"
	      "  --new-key NAME          renew: generate key NAME (the --key's type) in the token and\n"
	      "                          certify it instead; the request is still signed with --key,\n"
	      "                          which is kept for a rollback. A one-off: not with --when-due\n"
	      "  --ca-file PATH          renew: the CA the new certificate must chain to\n"
	      "  --tls-ca-file PATH      renew: CA bundle for the endpoint's TLS (default --ca-file)\n"
	      "  --endpoint URL          renew: the Rover API, e.g. https://rover.REGION.oci.oraclecloud.com\n"
	      "  --node-id OCID          renew: the rover node\n"
	      "  --renew-path PATH       default " DEFAULT_RENEW_PATH "\n"
	      "  --bundle-endpoint URL   the Certificates service (default --endpoint)\n"
	      "  --bundle-path PATH      default " DEFAULT_BUNDLE_PATH "\n"
	      "  --state PATH            renew: failure count and next attempt (default CERT.state)\n"
	      "  --backoff SECONDS       first retry delay after a failure (default 3600)\n"
	      "  --backoff-max SECONDS   longest retry delay (default 86400)\n"
	      "  --socket PATH           keysvcd socket (default $KEYSVC_SOCKET, then /run/keysvc/keysvc.sock)\n"
	      "  --timeout SECONDS       per HTTPS request (default 60)\n"
	      "  --insecure              do not verify the endpoint's TLS certificate (prints a warning)\n"
	      "  --inventory DIR         renew: where the outcome is recorded (default $KEYSVC_INVENTORY,\n"
	      "                          the configuration's, /var/lib/keysvc-inventory)\n"
	      "  --config FILE           renew: reload hook and endpoints to verify after installing\n"
	      "                          (default /etc/keysvc/certs.json if it exists); exit 23 when they fail\n"
	      "  --lock-wait SECONDS     renew: wait this long for another run on the same --cert\n"
	      "                          (default 60); exit 13 when it does not end in time\n"
	      "rebootstrap options:\n"
	      "  --rps-fqdn HOST         the RPS host name, used as given: rps.<FQDN> as the\n"
	      "                          Roving Edge steps write it (e.g. rps.example.org)\n"
	      "  --rps-url URL           instead of https://HOST\n"
	      "  --tls-ca-file PATH      CAs for the RPS's TLS (default /etc/ssl/certs/ca-certificates.crt)\n"
	      "  --support-dir DIR       where support bundles go (default /var/lib/keysvc-oci/support)\n"
	      "  --register-retry-wait S before the one retry of /register (default 60..120 at random)\n"
	      "  --ready-wait S          after /register, before /check_ready (default 120)\n"
	      "  --check-retry-wait S    before the one retry of /check_ready (default 120)\n"
	      "  --state-command CMD     prints the connection state (Ready, Disconnected, Connecting,\n"
	      "                          Connected); without it, rebootstrap ends after /check_ready.\n"
	      "                          Killed (its process group) when --connect-limit runs out\n"
	      "  --poll-interval S       between state checks (default 30)\n"
	      "  --connect-limit S       Connected must come within this (default 1200)\n"
	      "  --session-max-age S     warn when the token zip is older (default 3600)\n"
	      "  --now EPOCH             status, renew: take this as the current time (what-if, tests)\n"
	      "  --quiet                 errors only\n"
	      "  --version               print the version\n"
	      "status exits 0 (current), 11 (renewal due) or 12 (expired; also not yet valid, as\n"
	      "keysvc status classes it); renew --when-due 10 when not due or backing off;\n"
	      "rebootstrap 20, 21 or 22 with a support bundle (22 also when --state-command\n"
	      "timed out).\n", f);
}

/* ---- signing with keysvcd ---- */

struct ks_signer {
	keysvc *ks;
	const char *key;
	int err;                      /* the keysvc error of the last failure */
	char msg[KEYSVC_MESSAGE_MAX];
};

/* The signing string goes as data: an http-signature key signs nothing else. */
static int keysvc_signer(void *arg, const uint8_t *data, size_t len, uint8_t **sig, size_t *sig_len)
{
	struct ks_signer *s = arg;
	int r = keysvc_sign_data(s->ks, s->key, "rsa-pkcs1-sha256", data, len, sig, sig_len);

	if (r != KEYSVC_OK) {
		s->err = r;
		snprintf(s->msg, sizeof(s->msg), "%s", keysvc_error_message(s->ks));
		return -EACCES;
	}
	return 0;
}

/* Sign @rq with @key; an exit code (message printed) on failure. */
int oci_keysvc_sign(keysvc *ks, const char *key, const char *key_id, const struct oci_request *rq,
			struct oci_signed *out)
{
	struct ks_signer s = { .ks = ks, .key = key };
	int r = oci_sign(rq, key_id, keysvc_signer, &s, out);

	if (r == 0 && oci_headers(out) == NULL)
		r = -ENOMEM;
	if (r == -EACCES && s.err != 0)
		return ks_die(ks_exit_for_keysvc(s.err), "keysvcd would not sign with key %s: %s: %s", key,
			      keysvc_strerror(s.err), s.msg);
	if (r == -EINVAL)
		return ks_die(KS_EXIT_USAGE, "cannot sign this request: bad method, URL (https:// only), "
			      "date, content type or keyId (printable, no quotes)");
	if (r < 0)
		return ks_die(KS_EXIT_INTERNAL, "signing: %s", strerror(-r));
	return 0;
}

/* ---- sign-request ---- */

static int read_body(const char *path, char **out, size_t *len)
{
	struct stat st = { 0 };
	uint8_t *data;
	int r;

	*out = NULL;
	r = ks_file_read(path, BODY_FILE_MAX, KS_FILE_ANY_TYPE, ks_file_keep_stat, &st, &data, len);
	if (r == -ENOMEM)
		return ks_die(KS_EXIT_INTERNAL, "out of memory");
	/* What fails before the file is open is the path's fault (a directory opens, and fails at the first read). */
	if (r < 0 && st.st_mode == 0 && r != -EISDIR)
		return ks_die(KS_EXIT_USAGE, "--body-file %s: %s", path, strerror(-r));
	if (r < 0)
		return ks_die(KS_EXIT_USAGE, "--body-file %s: unreadable or over %zu bytes", path, BODY_FILE_MAX);
	*out = (char *)data;
	return 0;
}

/* @obj (taken over; NULL: out of memory) on stdout, indented. 0 or the exit code, printed. */
static int print_json(json_t *obj)
{
	char *text = obj != NULL ? json_dumps(obj, JSON_PRESERVE_ORDER | JSON_INDENT(2)) : NULL;

	json_decref(obj);
	if (text == NULL)
		return ks_die(KS_EXIT_INTERNAL, "out of memory");
	puts(text);
	free(text);
	return 0;
}

static int cmd_sign_request(const struct oci_opts *o)
{
	struct oci_request rq = { .method = o->method, .url = o->url, .date = o->date,
				  .content_type = o->content_type };
	struct oci_signed s = { 0 };
	const char *const *h;
	keysvc *ks = NULL;
	char *body = NULL;
	size_t len = 0;
	int r;

	if (o->key == NULL || o->key_id == NULL || o->method == NULL || o->url == NULL)
		return ks_die(KS_EXIT_USAGE, "sign-request needs --key, --key-id, --method and --url");
	if (o->body_file != NULL && (r = read_body(o->body_file, &body, &len)) != 0)
		return r;
	rq.body = body;
	rq.body_len = len;
	if ((r = ks_open_keysvc(o->c.socket, &ks)) != 0)
		goto out;
	if ((r = oci_keysvc_sign(ks, o->key, o->key_id, &rq, &s)) != 0)
		goto out;
	h = (const char *const *)s.header_lines;
	if (o->c.json) {
		json_t *obj = json_object();

		for (size_t i = 0; obj != NULL && h[i] != NULL; i++) {
			const char *colon = strchr(h[i], ':');
			char name[32];

			snprintf(name, sizeof(name), "%.*s", (int)(colon - h[i]), h[i]);
			json_object_set_new(obj, name, json_string(colon + 2));
		}
		if ((r = print_json(obj)) != 0)
			goto out;
	} else {
		for (size_t i = 0; h[i] != NULL; i++)
			puts(h[i]);
	}
	r = fflush(stdout) == 0 ? 0 : ks_die(KS_EXIT_INTERNAL, "stdout: %s", strerror(errno));
out:
	oci_signed_free(&s);
	keysvc_close(ks);
	free(body);
	return r;
}

/* ---- the current certificate ---- */

int oci_load_cert(const char *path, X509 **cert, char **text)
{
	char err[KS_CI_ERR_MAX], *t = NULL;
	size_t len;
	int r;

	*cert = NULL;
	if ((r = ks_ci_read_file(path, &t, &len, err)) < 0 || (r = ks_ci_parse_one(t, len, cert, err)) < 0) {
		free(t);
		return ks_die(KS_EXIT_USAGE, "the current certificate %s: %s", path, err);
	}
	if (text != NULL)
		*text = t;
	else
		free(t);
	return 0;
}

static int cert_times(X509 *x, time_t *nb, time_t *na)
{
	struct tm tm;

	if (ASN1_TIME_to_tm(X509_get0_notBefore(x), &tm) != 1)
		return -1;
	*nb = timegm(&tm);
	if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1)
		return -1;
	*na = timegm(&tm);
	return 0;
}

int oci_cert_lifecycle(const struct oci_opts *o, X509 *x, struct oci_status *st)
{
	time_t nb, na;

	if (cert_times(x, &nb, &na) != 0 ||
	    oci_lifecycle(nb, na, o->now, o->renew_after_s, o->lifetime_s, st) != 0)
		return ks_die(KS_EXIT_USAGE, "%s: unusable validity dates", o->cert);
	/* keysvc status's rule, so that the two tools never disagree on such a certificate. */
	if (ks_cert_not_yet_valid(x, o->now))
		st->phase = OCI_PHASE_NOT_YET_VALID;
	return 0;
}

/* The subject as RFC 4514 text keysvcd parses back (UTF-8 kept, not \XX-escaped). */
char *oci_subject_text(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *s = NULL, *p;
	long n;

	if (b != NULL && X509_NAME_print_ex(b, X509_get_subject_name(x), 0,
					    XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0 &&
	    (n = BIO_get_mem_data(b, &p)) > 0 && (s = malloc((size_t)n + 1)) != NULL) {
		memcpy(s, p, (size_t)n);
		s[n] = '\0';
	}
	BIO_free(b);
	return s;
}

/* Not yet valid exits as expired: keysvc status classes it expired too (unusable now). */
static int status_exit(enum oci_phase p)
{
	return p == OCI_PHASE_CURRENT ? 0 : p == OCI_PHASE_RENEWAL_DUE ? KS_EXIT_RENEWAL_DUE : KS_EXIT_EXPIRED;
}

static int cmd_status(const struct oci_opts *o)
{
	struct oci_status st;
	X509 *x = NULL;
	char issued[32], renew[32], expires[32], *subject = NULL;
	int r;

	if (o->cert == NULL)
		return ks_die(KS_EXIT_USAGE, "status needs --cert");
	if ((r = oci_load_cert(o->cert, &x, NULL)) != 0 || (r = oci_cert_lifecycle(o, x, &st)) != 0)
		goto out;
	subject = oci_subject_text(x);
	oci_rfc3339(st.issued, issued, sizeof(issued));
	oci_rfc3339(st.renew_at, renew, sizeof(renew));
	oci_rfc3339(st.expires_at, expires, sizeof(expires));
	if (o->c.json) {
		json_t *obj = json_pack("{s:s, s:s, s:s, s:I, s:f, s:s, s:s, s:s, s:I, s:I}",
					"certificate", o->cert, "subject", subject != NULL ? subject : "",
					"phase", oci_phase_name(st.phase), "age_seconds", (json_int_t)st.age_s,
					"age_days", (double)st.age_s / OCI_DAY, "issued", issued,
					"renewal_due", renew, "expires", expires,
					"renew_after_days", (json_int_t)(o->renew_after_s / OCI_DAY),
					"lifetime_days", (json_int_t)(o->lifetime_s / OCI_DAY));
		if ((r = print_json(obj)) != 0)
			goto out;
	} else {
		printf("certificate:  %s\n", o->cert);
		printf("subject:      %s\n", subject != NULL ? subject : "?");
		printf("issued:       %s (%.1f days ago)\n", issued, (double)st.age_s / OCI_DAY);
		printf("renewal due:  %s\n", renew);
		printf("expires:      %s\n", expires);
		if (st.phase == OCI_PHASE_NOT_YET_VALID)
			printf("phase:        not yet valid (from %s): unusable until then; check the clocks\n",
			       issued);
		else
			printf("phase:        %s\n", st.phase == OCI_PHASE_CURRENT ? "current" :
			       st.phase == OCI_PHASE_RENEWAL_DUE ? "renewal due" : "expired: re-bootstrap required");
	}
	fflush(stdout);
	r = status_exit(st.phase);
out:
	free(subject);
	X509_free(x);
	return r;
}

/* ---- main ---- */

static int days_opt(const char *s, const char *name, long long *out)
{
	long v;

	if (ks_parse_long(s, 1, 3650, &v) != 0)
		return ks_die(KS_EXIT_USAGE, "%s: 1..3650 days", name);
	*out = v * OCI_DAY;
	return 0;
}

static int run_sign_request(void *ctx, struct ks_rc_run *run)
{
	(void)run;
	return cmd_sign_request(ctx);
}

static int run_status(void *ctx, struct ks_rc_run *run)
{
	(void)run;
	return cmd_status(ctx);
}

static int run_renew(void *ctx, struct ks_rc_run *run)
{
	const struct oci_opts *o = ctx;
	int r = oci_cmd_renew(o);

	/* With --new-key the certificate is for the new key once installed. */
	if (r == 0 && o->new_key != NULL)
		run->key = o->new_key;
	run->ca_file = o->ca_file;
	return r;
}

static int run_rebootstrap(void *ctx, struct ks_rc_run *run)
{
	(void)run;
	return oci_cmd_rebootstrap(ctx);
}

enum { O_KEY = 256, O_NEW_KEY, O_KEY_ID, O_METHOD, O_URL, O_BODY_FILE, O_CONTENT_TYPE, O_DATE, O_CERT, O_CA_FILE,
       O_TLS_CA, O_ENDPOINT, O_BUNDLE_ENDPOINT, O_NODE_ID, O_RENEW_PATH, O_BUNDLE_PATH, O_STATE, O_RENEW_AFTER,
       O_LIFETIME, O_BACKOFF, O_BACKOFF_MAX, O_NOW, O_WHEN_DUE, O_RPS_FQDN, O_RPS_URL, O_INFRA, O_ZIP, O_REGION,
       O_SUPPORT, O_REG_RETRY, O_READY_WAIT, O_CHECK_RETRY, O_STATE_CMD, O_POLL, O_CONNECT_LIMIT, O_SESSION_AGE };

static const struct option options[] = {
	{ "key", required_argument, NULL, O_KEY },
	{ "new-key", required_argument, NULL, O_NEW_KEY },
	{ "key-id", required_argument, NULL, O_KEY_ID },
	{ "method", required_argument, NULL, O_METHOD },
	{ "url", required_argument, NULL, O_URL },
	{ "body-file", required_argument, NULL, O_BODY_FILE },
	{ "content-type", required_argument, NULL, O_CONTENT_TYPE },
	{ "date", required_argument, NULL, O_DATE },
	{ "cert", required_argument, NULL, O_CERT },
	{ "ca-file", required_argument, NULL, O_CA_FILE },
	{ "tls-ca-file", required_argument, NULL, O_TLS_CA },
	{ "endpoint", required_argument, NULL, O_ENDPOINT },
	{ "bundle-endpoint", required_argument, NULL, O_BUNDLE_ENDPOINT },
	{ "node-id", required_argument, NULL, O_NODE_ID },
	{ "renew-path", required_argument, NULL, O_RENEW_PATH },
	{ "bundle-path", required_argument, NULL, O_BUNDLE_PATH },
	{ "state", required_argument, NULL, O_STATE },
	{ "renew-after", required_argument, NULL, O_RENEW_AFTER },
	{ "lifetime", required_argument, NULL, O_LIFETIME },
	{ "backoff", required_argument, NULL, O_BACKOFF },
	{ "backoff-max", required_argument, NULL, O_BACKOFF_MAX },
	{ "now", required_argument, NULL, O_NOW },
	{ "when-due", no_argument, NULL, O_WHEN_DUE },
	{ "rps-fqdn", required_argument, NULL, O_RPS_FQDN },
	{ "rps-url", required_argument, NULL, O_RPS_URL },
	{ "infrastructure-id", required_argument, NULL, O_INFRA },
	{ "token-zip", required_argument, NULL, O_ZIP },
	{ "region", required_argument, NULL, O_REGION },
	{ "support-dir", required_argument, NULL, O_SUPPORT },
	{ "register-retry-wait", required_argument, NULL, O_REG_RETRY },
	{ "ready-wait", required_argument, NULL, O_READY_WAIT },
	{ "check-retry-wait", required_argument, NULL, O_CHECK_RETRY },
	{ "state-command", required_argument, NULL, O_STATE_CMD },
	{ "poll-interval", required_argument, NULL, O_POLL },
	{ "connect-limit", required_argument, NULL, O_CONNECT_LIMIT },
	{ "session-max-age", required_argument, NULL, O_SESSION_AGE },
	{ NULL, 0, NULL, 0 },
};

static const char *option_name(int c)
{
	for (const struct option *p = options; p->name != NULL; p++)
		if (p->val == c)
			return p->name;
	return "?";
}

static int option(void *ctx, int c, const char *arg)
{
	struct oci_opts *o = ctx;
	long v;
	int r;

	switch (c) {
	case O_KEY: o->key = arg; break;
	case O_NEW_KEY: o->new_key = arg; break;
	case O_KEY_ID: o->key_id = arg; break;
	case O_METHOD: o->method = arg; break;
	case O_URL: o->url = arg; break;
	case O_BODY_FILE: o->body_file = arg; break;
	case O_CONTENT_TYPE: o->content_type = arg; break;
	case O_DATE: o->date = arg; break;
	case O_CERT: o->cert = arg; break;
	case O_CA_FILE: o->ca_file = arg; break;
	case O_TLS_CA: o->tls_ca_file = arg; break;
	case O_ENDPOINT: o->endpoint = arg; break;
	case O_BUNDLE_ENDPOINT: o->bundle_endpoint = arg; break;
	case O_NODE_ID: o->node_id = arg; break;
	case O_RENEW_PATH: o->renew_path = arg; break;
	case O_BUNDLE_PATH: o->bundle_path = arg; break;
	case O_STATE: o->state = arg; break;
	case O_RENEW_AFTER:
		if ((r = days_opt(arg, "--renew-after", &o->renew_after_s)) != 0)
			return r;
		break;
	case O_LIFETIME:
		if ((r = days_opt(arg, "--lifetime", &o->lifetime_s)) != 0)
			return r;
		break;
	case O_BACKOFF:
		if (ks_parse_long(arg, 1, 30L * 86400, &v) != 0)
			return ks_die(KS_EXIT_USAGE, "--backoff: 1..2592000 seconds");
		o->backoff_base_s = v;
		break;
	case O_BACKOFF_MAX:
		if (ks_parse_long(arg, 1, 30L * 86400, &v) != 0)
			return ks_die(KS_EXIT_USAGE, "--backoff-max: 1..2592000 seconds");
		o->backoff_max_s = v;
		break;
	case O_NOW:
		if (ks_parse_long(arg, 0, 32503680000L, &v) != 0)
			return ks_die(KS_EXIT_USAGE, "--now: seconds since 1970");
		o->now = (time_t)v;
		break;
	case O_RPS_FQDN: o->rps_fqdn = arg; break;
	case O_RPS_URL: o->rps_url = arg; break;
	case O_INFRA: o->infra_id = arg; break;
	case O_ZIP: o->token_zip = arg; break;
	case O_REGION: o->region = arg; break;
	case O_SUPPORT: o->support_dir = arg; break;
	case O_STATE_CMD: o->state_command = arg; break;
	case O_REG_RETRY:
	case O_READY_WAIT:
	case O_CHECK_RETRY:
	case O_POLL:
	case O_CONNECT_LIMIT:
	case O_SESSION_AGE:
		if (ks_parse_long(arg, c == O_POLL ? 1 : 0, 86400, &v) != 0)
			return ks_die(KS_EXIT_USAGE, "--%s: %d..86400 seconds", option_name(c), c == O_POLL);
		*(c == O_REG_RETRY ? &o->register_retry_s : c == O_READY_WAIT ? &o->ready_wait_s :
		  c == O_CHECK_RETRY ? &o->check_retry_s : c == O_POLL ? &o->poll_s :
		  c == O_CONNECT_LIMIT ? &o->connect_limit_s : &o->session_max_age_s) = v;
		break;
	case O_WHEN_DUE: o->when_due = 1; break;
	}
	return 0;
}

static int check(void *ctx, struct ks_rc_run *run)
{
	struct oci_opts *o = ctx;

	if (o->renew_after_s > o->lifetime_s)
		return ks_die(KS_EXIT_USAGE, "--renew-after must not be later than --lifetime");
	if (o->backoff_max_s < o->backoff_base_s)
		return ks_die(KS_EXIT_USAGE, "--backoff-max must be at least --backoff");
	if (o->tls_ca_file == NULL)
		o->tls_ca_file = strcmp(run->command, "rebootstrap") == 0 && o->ca_file == NULL ?
				 "/etc/ssl/certs/ca-certificates.crt" : o->ca_file;
	if (o->bundle_endpoint == NULL)
		o->bundle_endpoint = o->endpoint;
	if (strcmp(run->command, "renew") == 0) {
		/* Without --cert no lock: renew says what is missing. */
		run->lock_path = run->cert = o->cert;
		run->key = o->key;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct ks_rc_command commands[] = {
		{ "sign-request", NULL, 0, run_sign_request },
		{ "status", NULL, 0, run_status },
		{ "renew", "renewed", KS_RC_RENEWAL | KS_RC_HTTPS | KS_RC_RESULT, run_renew },
		{ "rebootstrap", "connected", KS_RC_HTTPS | KS_RC_RESULT, run_rebootstrap },
		{ NULL, NULL, 0, NULL },
	};
	struct oci_opts o = { .renew_after_s = OCI_DEFAULT_RENEW_AFTER_S, .lifetime_s = OCI_DEFAULT_LIFETIME_S,
			  .backoff_base_s = 3600, .backoff_max_s = 86400, .renew_path = DEFAULT_RENEW_PATH,
			  .bundle_path = DEFAULT_BUNDLE_PATH, .support_dir = "/var/lib/keysvc-oci/support",
			  .register_retry_s = -1, .ready_wait_s = 120, .check_retry_s = 120, .poll_s = 30,
			  .connect_limit_s = 1200, .session_max_age_s = 3600, .now = time(NULL) };
	const struct ks_rc_client client = {
		.program = "keysvc-oci", .inventory_client = "oci",
		.common = KS_RC_OPT_SOCKET | KS_RC_OPT_INVENTORY | KS_RC_OPT_LOCK_WAIT,
		.usage = usage, .options = options, .option = option, .check = check, .commands = commands,
		.common_opts = &o.c, .ctx = &o,
	};

	return ks_rc_main(&client, argc, argv);
}
