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

#include "clients/common/certinstall.h"
#include "clients/common/certlock.h"
#include "clients/common/cliutil.h"
#include "clients/common/push.h"
#include "clients/common/renewcli.h"
#include "clients/https/https.h"
#include "clients/keysvc.h"
#include "clients/oci/oci.h"
#include "clients/oci/ocirun.h"
#include "clients/oci/ocisign.h"
#include "clients/status/status.h"

#define DEFAULT_RENEW_PATH "/20201210/roverNodes/{roverNodeId}/actions/renewCertificate"
#define DEFAULT_BUNDLE_PATH "/20210224/certificateBundles/{certificateId}"
#define BODY_FILE_MAX ((size_t)1024 * 1024)
#define MAX_SANS 100

struct opts {
	struct ks_rc_opts c;
	const char *key, *new_key, *key_id, *method, *url, *body_file, *content_type, *date;
	const char *cert, *ca_file, *tls_ca_file, *endpoint, *bundle_endpoint, *node_id;
	const char *renew_path, *bundle_path, *state;
	const char *rps_fqdn, *rps_url, *infra_id, *token_zip, *region, *support_dir, *state_command;
	long register_retry_s, ready_wait_s, check_retry_s, connect_limit_s, poll_s, session_max_age_s;
	long long renew_after_s, lifetime_s, backoff_base_s, backoff_max_s;
	time_t now;
	int when_due;
};

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
	      "                          the configuration's, /var/lib/keysvc/inventory)\n"
	      "  --config FILE           renew: reload hook and endpoints to verify after installing\n"
	      "                          (default /etc/keysvc/certs.json if it exists); exit 23 when they fail\n"
	      "  --lock-wait SECONDS     renew: wait this long for another run on the same --cert\n"
	      "                          (default 60); exit 13 when it does not end in time\n"
	      "rebootstrap options:\n"
	      "  --rps-fqdn HOST         the RPS host name, used as given: rps.<FQDN> as the\n"
	      "                          Roving Edge steps write it (e.g. rps.example.org)\n"
	      "  --rps-url URL           instead of https://HOST\n"
	      "  --tls-ca-file PATH      CAs for the RPS's TLS (default /etc/ssl/certs/ca-certificates.crt)\n"
	      "  --support-dir DIR       where support bundles go (default /var/lib/keysvc/oci/support)\n"
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

static int keysvc_signer(void *arg, const uint8_t digest[32], uint8_t **sig, size_t *sig_len)
{
	struct ks_signer *s = arg;
	int r = keysvc_sign_digest(s->ks, s->key, "rsa-pkcs1-sha256", digest, 32, sig, sig_len);

	if (r != KEYSVC_OK) {
		s->err = r;
		snprintf(s->msg, sizeof(s->msg), "%s", keysvc_error_message(s->ks));
		return -EACCES;
	}
	return 0;
}

/* Sign @rq with @key; an exit code (message printed) on failure. */
static int sign_request(keysvc *ks, const char *key, const char *key_id, const struct oci_request *rq,
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
	FILE *f = fopen(path, "rb");
	size_t n = 0, cap = 4096;
	char *buf;

	*out = NULL;
	*len = 0;
	if (f == NULL)
		return ks_die(KS_EXIT_USAGE, "--body-file %s: %s", path, strerror(errno));
	if ((buf = malloc(cap)) == NULL) {
		fclose(f);
		return ks_die(KS_EXIT_INTERNAL, "out of memory");
	}
	for (;;) {
		size_t got;

		if (n == cap) {
			char *nb;

			if (cap >= BODY_FILE_MAX + 1 || (nb = realloc(buf, cap * 2)) == NULL)
				break;
			buf = nb;
			cap *= 2;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f) || n > BODY_FILE_MAX) {
		fclose(f);
		free(buf);
		return ks_die(KS_EXIT_USAGE, "--body-file %s: unreadable or over %zu bytes", path, BODY_FILE_MAX);
	}
	fclose(f);
	*out = buf;
	*len = n;
	return 0;
}

static int cmd_sign_request(const struct opts *o)
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
	if ((r = sign_request(ks, o->key, o->key_id, &rq, &s)) != 0)
		goto out;
	h = (const char *const *)s.header_lines;
	if (o->c.json) {
		json_t *obj = json_object();
		char *text;

		for (size_t i = 0; obj != NULL && h[i] != NULL; i++) {
			const char *colon = strchr(h[i], ':');
			char name[32];

			snprintf(name, sizeof(name), "%.*s", (int)(colon - h[i]), h[i]);
			json_object_set_new(obj, name, json_string(colon + 2));
		}
		text = obj != NULL ? json_dumps(obj, JSON_PRESERVE_ORDER | JSON_INDENT(2)) : NULL;
		json_decref(obj);
		if (text == NULL) {
			r = ks_die(KS_EXIT_INTERNAL, "out of memory");
			goto out;
		}
		puts(text);
		free(text);
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

static int load_cert(const char *path, X509 **cert, char **text)
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

static int lifecycle(const struct opts *o, X509 *x, struct oci_status *st)
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
static char *subject_text(X509 *x)
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

static int cmd_status(const struct opts *o)
{
	struct oci_status st;
	X509 *x = NULL;
	char issued[32], renew[32], expires[32], *subject = NULL;
	int r;

	if (o->cert == NULL)
		return ks_die(KS_EXIT_USAGE, "status needs --cert");
	if ((r = load_cert(o->cert, &x, NULL)) != 0 || (r = lifecycle(o, x, &st)) != 0)
		goto out;
	subject = subject_text(x);
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
		char *text = obj != NULL ? json_dumps(obj, JSON_PRESERVE_ORDER | JSON_INDENT(2)) : NULL;

		json_decref(obj);
		if (text == NULL) {
			r = ks_die(KS_EXIT_INTERNAL, "out of memory");
			goto out;
		}
		puts(text);
		free(text);
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

/* ---- renew ---- */

/* @tmpl with "{NAME}" replaced by @value, appended to @base. */
static char *make_url(const char *base, const char *tmpl, const char *name, const char *value)
{
	char pat[64];
	const char *at;
	size_t bl = strlen(base);
	char *u;

	while (bl > 0 && base[bl - 1] == '/')
		bl--;
	snprintf(pat, sizeof(pat), "{%s}", name);
	at = strstr(tmpl, pat);
	if (tmpl[0] != '/')
		return NULL;
	if (at == NULL) {
		if (asprintf(&u, "%.*s%s", (int)bl, base, tmpl) < 0)
			return NULL;
	} else if (asprintf(&u, "%.*s%.*s%s%s", (int)bl, base, (int)(at - tmpl), tmpl, value,
			    at + strlen(pat)) < 0) {
		return NULL;
	}
	return u;
}

/* OCIDs and certificate ids go into URL paths: no characters that need encoding. */
static int ocid_ok(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	if (n == 0 || n > 255)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || strchr(".-_:", s[i]) != NULL))
			return 0;
	return 1;
}

/* The current certificate's SANs, as keysvcd takes them. Exit code on failure. */
struct sans {
	char *v[4][MAX_SANS];         /* dns, ip, uri, email */
	size_t n[4];
};

static void sans_free(struct sans *s)
{
	for (int k = 0; k < 4; k++)
		for (size_t i = 0; i < s->n[k]; i++)
			free(s->v[k][i]);
	memset(s, 0, sizeof(*s));
}

static int collect_sans(X509 *x, struct sans *s)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	int r = 0;

	memset(s, 0, sizeof(*s));
	for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens) && r == 0; i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		char ipbuf[INET6_ADDRSTRLEN], *v = NULL;
		int kind;

		switch (g->type) {
		case GEN_DNS:
		case GEN_URI:
		case GEN_EMAIL:
			kind = g->type == GEN_DNS ? 0 : g->type == GEN_URI ? 2 : 3;
			v = strndup((const char *)ASN1_STRING_get0_data(g->d.ia5), (size_t)ASN1_STRING_length(g->d.ia5));
			break;
		case GEN_IPADD:
			kind = 1;
			if ((ASN1_STRING_length(g->d.ip) == 4 &&
			     inet_ntop(AF_INET, ASN1_STRING_get0_data(g->d.ip), ipbuf, sizeof(ipbuf)) != NULL) ||
			    (ASN1_STRING_length(g->d.ip) == 16 &&
			     inet_ntop(AF_INET6, ASN1_STRING_get0_data(g->d.ip), ipbuf, sizeof(ipbuf)) != NULL))
				v = strdup(ipbuf);
			break;
		default:
			r = ks_die(KS_EXIT_USAGE, "the current certificate has a subjectAltName of a kind keysvcd "
				   "cannot put in a CSR (only DNS, IP, URI, email)");
			continue;
		}
		if (v == NULL) {
			r = ks_die(KS_EXIT_INTERNAL, "reading the subjectAltNames failed");
		} else if (s->n[kind] == MAX_SANS) {
			free(v);
			r = ks_die(KS_EXIT_USAGE, "more than %d subjectAltNames of one kind", MAX_SANS);
		} else {
			s->v[kind][s->n[kind]++] = v;
		}
	}
	GENERAL_NAMES_free(gens);
	if (r != 0)
		sans_free(s);
	return r;
}

/* A signed request to OCI; the response in @resp. Exit code on failure (message printed). */
static int oci_call(const struct opts *o, keysvc *ks, const char *method, const char *url, const char *body,
		    struct ks_https_response *resp)
{
	struct oci_request rq = { .method = method, .url = url, .body = body,
				  .body_len = body != NULL ? strlen(body) : 0 };
	struct oci_signed s = { 0 };
	struct ks_https_opts h;
	const char *headers[OCI_HEADERS_MAX + 3] = { NULL };
	size_t n = 0;
	int r;

	if ((r = sign_request(ks, o->key, o->key_id, &rq, &s)) != 0)
		goto out;
	for (size_t i = 0; s.header_lines[i] != NULL; i++)
		headers[n++] = s.header_lines[i];
	headers[n++] = "accept: application/json";
	ks_https_ca_opts(&h, o->tls_ca_file, o->c.timeout_s, o->c.insecure, NULL, NULL, NULL, 0);
	if ((r = ks_https_request(&h, method, url, headers, body, rq.body_len, resp)) < 0) {
		r = ks_die(ks_https_exit(r, resp), "%s %s: %s", method, url, resp->err);
		goto out;
	}
	r = 0;
out:
	oci_signed_free(&s);
	return r;
}

static int refused(const char *what, const struct ks_https_response *resp)
{
	char text[512];

	oci_error_text(resp->body, resp->body_len, text, sizeof(text));
	return ks_die(KS_EXIT_CA_REFUSED, "%s: HTTP %ld: %s", what, resp->status, text);
}

/* Check the new certificate (and its chain) and install it. */
static int check_and_install(const struct opts *o, const char *pem, const char *chain_pem, EVP_PKEY *pub,
			     X509 *current)
{
	struct ks_ci_expect exp = { .public_key = pub, .later_than = X509_get0_notAfter(current),
				    .now = o->now };
	STACK_OF(X509) *trusted = NULL, *chain = NULL;
	char err[KS_CI_ERR_MAX], until[64];
	X509 *cert = NULL;
	int r;

	if ((r = ks_load_ca_file(o->ca_file, &trusted)) != 0)
		goto out;
	exp.trusted = trusted;
	if ((r = ks_ci_parse_one(pem, strlen(pem), &cert, err)) < 0 ||
	    (chain_pem != NULL && (r = ks_ci_parse_bundle(chain_pem, strlen(chain_pem), &chain, err)) < 0) ||
	    (r = ks_ci_check(cert, chain, &exp, err)) < 0) {
		r = ks_die(KS_EXIT_CA_ANSWER, "the new certificate is not installed: %s", err);
		goto out;
	}
	if (X509_NAME_cmp(X509_get_subject_name(cert), X509_get_subject_name(current)) != 0) {
		r = ks_die(KS_EXIT_CA_ANSWER, "the new certificate is not installed: its subject is not the "
			   "current certificate's");
		goto out;
	}
	if ((r = ks_ci_install(o->cert, pem, strlen(pem), 0644, err)) < 0) {
		r = ks_die(KS_EXIT_INTERNAL, "%s", err);
		goto out;
	}
	ks_ci_format_time(X509_get0_notAfter(cert), until, sizeof(until));
	ks_say("installed %s (valid until %s); the previous one is %s.prev", o->cert, until, o->cert);
	r = 0;
out:
	sk_X509_pop_free(trusted, X509_free);
	sk_X509_pop_free(chain, X509_free);
	X509_free(cert);
	return r;
}

/*
 * renew --new-key: key @o->new_key, of the type of @o->key, made in the
 * token. 0 with *@pub set; else an exit code (message printed).
 */
static int new_key_make(const struct opts *o, keysvc *ks, EVP_PKEY **pub)
{
	char *type = NULL, *pem = NULL, err[KS_CI_ERR_MAX];
	int r;

	*pub = NULL;
	if ((r = keysvc_key_public(ks, o->key, NULL, &type)) != KEYSVC_OK) {
		r = ks_die(ks_exit_for_keysvc(r), "key %s: %s: %s", o->key, keysvc_strerror(r), keysvc_error_message(ks));
		goto out;
	}
	if (type == NULL) {
		r = ks_die(KS_EXIT_USAGE, "key %s is of a kind keysvcd cannot generate; --new-key needs RSA or "
			   "EC P-256/P-384", o->key);
		goto out;
	}
	r = keysvc_key_generate(ks, o->new_key, type, &pem);
	if (r == KEYSVC_E_EXISTS) {
		r = ks_die(KS_EXIT_USAGE, "--new-key %s: a key of that name exists; name a new one", o->new_key);
		goto out;
	}
	if (r != KEYSVC_OK) {
		r = ks_die(ks_exit_for_keysvc(r), "--new-key %s: %s: %s",
			   o->new_key, keysvc_strerror(r), keysvc_error_message(ks));
		goto out;
	}
	if (ks_ci_parse_pubkey(pem, pub, err) < 0) {
		r = ks_die(KS_EXIT_INTERNAL, "--new-key %s: %s", o->new_key, err);
		goto out;
	}
	ks_say("generated key %s (%s) in the token", o->new_key, type);
	r = 0;
out:
	free(type);
	free(pem);
	return r;
}

static int renew_once(const struct opts *o, X509 *current)
{
	struct keysvc_csr_params params;
	struct ks_https_response resp;
	struct oci_renew_answer ans = { 0 };
	struct sans sans;
	EVP_PKEY *pub = NULL, *new_pub = NULL;
	keysvc *ks = NULL;
	char err[256], *subject = NULL, *csr = NULL, *body = NULL, *url = NULL, *burl = NULL;
	const char *pem, *chain, *csr_key = o->key;
	int r, generated = 0;

	memset(&resp, 0, sizeof(resp));
	memset(&sans, 0, sizeof(sans));
	if ((r = ks_open_keysvc(o->c.socket, &ks)) != 0)
		goto out;
	if ((r = ks_token_public_key(ks, o->key, &pub, 0)) != 0)
		goto out;
	if (EVP_PKEY_eq(X509_get0_pubkey(current), pub) != 1) {
		r = ks_die(KS_EXIT_USAGE, "%s is not a certificate for key %s", o->cert, o->key);
		goto out;
	}
	if ((subject = subject_text(current)) == NULL) {
		r = ks_die(KS_EXIT_USAGE, "cannot read the current certificate's subject");
		goto out;
	}
	if ((r = collect_sans(current, &sans)) != 0)
		goto out;
	if (o->new_key != NULL) {
		if ((r = new_key_make(o, ks, &new_pub)) != 0)
			goto out;
		generated = 1;
		csr_key = o->new_key;
	}
	memset(&params, 0, sizeof(params));
	params.subject = subject;
	params.dns = (const char *const *)sans.v[0];
	params.n_dns = sans.n[0];
	params.ip = (const char *const *)sans.v[1];
	params.n_ip = sans.n[1];
	params.uri = (const char *const *)sans.v[2];
	params.n_uri = sans.n[2];
	params.email = (const char *const *)sans.v[3];
	params.n_email = sans.n[3];
	if ((r = keysvc_csr_create(ks, csr_key, &params, &csr)) != KEYSVC_OK) {
		r = ks_die(ks_exit_for_keysvc(r), "CSR: %s: %s",
			   keysvc_strerror(r), keysvc_error_message(ks));
		goto out;
	}
	if ((r = oci_renew_body(csr, o->now + (time_t)o->lifetime_s, &body)) < 0) {
		r = ks_die(KS_EXIT_INTERNAL, "the renewal request: %s", strerror(-r));
		goto out;
	}
	if ((url = make_url(o->endpoint, o->renew_path, "roverNodeId", o->node_id)) == NULL) {
		r = ks_die(KS_EXIT_USAGE, "--renew-path must start with /");
		goto out;
	}
	if ((r = oci_call(o, ks, "POST", url, body, &resp)) != 0)
		goto out;
	if (resp.status != 200) {
		r = refused("renewCertificate", &resp);
		goto out;
	}
	if (oci_renew_answer_parse(resp.body, resp.body_len, &ans, err, sizeof(err)) < 0) {
		r = ks_die(KS_EXIT_CA_ANSWER, "renewCertificate answered 200 but %s; nothing installed", err);
		goto out;
	}
	pem = ans.certificate_pem;
	chain = ans.chain_pem;
	if (pem == NULL) {
		struct oci_renew_answer bundle = { 0 };

		if (!ocid_ok(ans.certificate_id)) {
			r = ks_die(KS_EXIT_CA_ANSWER, "renewCertificate answered an unusable certificateId");
			goto out;
		}
		if ((burl = make_url(o->bundle_endpoint, o->bundle_path, "certificateId", ans.certificate_id)) == NULL) {
			r = ks_die(KS_EXIT_USAGE, "--bundle-path must start with /");
			goto out;
		}
		ks_https_response_free(&resp);
		if ((r = oci_call(o, ks, "GET", burl, NULL, &resp)) != 0)
			goto out;
		if (resp.status != 200) {
			r = refused("the certificate bundle", &resp);
			goto out;
		}
		if (oci_renew_answer_parse(resp.body, resp.body_len, &bundle, err, sizeof(err)) < 0 ||
		    bundle.certificate_pem == NULL) {
			oci_renew_answer_free(&bundle);
			r = ks_die(KS_EXIT_CA_ANSWER, "the certificate bundle has no certificatePem; nothing installed");
			goto out;
		}
		oci_renew_answer_free(&ans);
		ans = bundle;
		pem = ans.certificate_pem;
		chain = ans.chain_pem;
	}
	r = check_and_install(o, pem, chain, new_pub != NULL ? new_pub : pub, current);
	if (r == 0 && generated)
		ks_say("the certificate is now for key %s: use --key %s from now on; key %s is kept for a "
		       "rollback (delete it with `keysvc delete %s` when no longer needed)", o->new_key,
		       o->new_key, o->key, o->key);
out:
	/* A failed renewal leaves the token as it was. */
	if (r != 0 && generated) {
		int d = keysvc_key_delete(ks, o->new_key);

		if (d != KEYSVC_OK)
			ks_die(r, "warning: the new key %s stays in the token (cannot delete it: %s); delete it "
			       "before the next --new-key %s", o->new_key, keysvc_strerror(d), o->new_key);
	}
	oci_renew_answer_free(&ans);
	ks_https_response_free(&resp);
	sans_free(&sans);
	keysvc_close(ks);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(new_pub);
	free(subject);
	free(csr);
	free(body);
	free(url);
	free(burl);
	return r;
}

static double jitter(void)
{
	unsigned int v;

	if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
		return 0.5;
	return (double)v / (double)0xffffffffu;
}

static int cmd_renew(const struct opts *o)
{
	struct oci_backoff b;
	struct oci_status st;
	X509 *current = NULL;
	char state_buf[4096], when[32], reason[256];
	const char *state = o->state;
	int r, lr;

	if (o->cert == NULL || o->ca_file == NULL || o->key == NULL || o->key_id == NULL ||
	    o->endpoint == NULL || o->node_id == NULL)
		return ks_die(KS_EXIT_USAGE, "renew needs --cert, --ca-file, --key, --key-id, --endpoint and --node-id");
	if (strncmp(o->endpoint, "https://", 8) != 0 || strncmp(o->bundle_endpoint, "https://", 8) != 0)
		return ks_die(KS_EXIT_USAGE, "--endpoint and --bundle-endpoint must be https:// URLs");
	if (!ocid_ok(o->node_id))
		return ks_die(KS_EXIT_USAGE, "--node-id: an OCID (letters, digits, . - _ :)");
	if (o->new_key != NULL && o->when_due)
		return ks_die(KS_EXIT_USAGE, "--new-key is a one-off, made by hand: not with --when-due (the "
			      "timer would try to make the same key again)");
	if (o->new_key != NULL && strcmp(o->new_key, o->key) == 0)
		return ks_die(KS_EXIT_USAGE, "--new-key must name another key than --key");
	if (state == NULL) {
		if (snprintf(state_buf, sizeof(state_buf), "%s.state", o->cert) >= (int)sizeof(state_buf))
			return ks_die(KS_EXIT_USAGE, "--cert: path too long");
		state = state_buf;
	}
	if ((r = load_cert(o->cert, &current, NULL)) != 0 || (r = lifecycle(o, current, &st)) != 0)
		goto out;
	if (st.phase == OCI_PHASE_EXPIRED) {
		oci_rfc3339(st.expires_at, when, sizeof(when));
		r = ks_die(KS_EXIT_EXPIRED, "%s expired at %s: renewal cannot recover it; re-bootstrap is required",
			   o->cert, when);
		goto out;
	}
	if ((lr = oci_backoff_load(state, &b)) == -EBADMSG)
		ks_say("warning: the state file %s is unreadable; starting afresh", state);
	else if (lr < 0)
		ks_say("warning: cannot read the state file %s: %s", state, strerror(-lr));
	if (o->when_due) {
		if (st.phase == OCI_PHASE_CURRENT || st.phase == OCI_PHASE_NOT_YET_VALID) {
			oci_rfc3339(st.renew_at, when, sizeof(when));
			ks_say("not due: renewal starts %s", when);
			r = KS_EXIT_NOT_DUE;
			goto out;
		}
		if (b.failures > 0 && b.next_attempt > o->now) {
			oci_rfc3339(b.next_attempt, when, sizeof(when));
			ks_say("backing off after %u failed attempt%s (last: %s); next attempt after %s", b.failures,
			       b.failures == 1 ? "" : "s", b.last_error, when);
			r = KS_EXIT_NOT_DUE;
			goto out;
		}
	}
	r = renew_once(o, current);
	if (r == 0) {
		memset(&b, 0, sizeof(b));
		if (unlink(state) != 0 && errno != ENOENT)
			ks_say("warning: cannot remove the state file %s: %s", state, strerror(errno));
	} else if (r != KS_EXIT_USAGE) {
		long long d;

		b.failures++;
		d = oci_backoff_delay(b.failures, o->backoff_base_s, o->backoff_max_s, jitter());
		b.next_attempt = o->now + (time_t)d;
		snprintf(reason, sizeof(reason), "exit %d: %s", r,
			 ks_exit_meaning(r) != NULL ? ks_exit_meaning(r) : "error");
		snprintf(b.last_error, sizeof(b.last_error), "%s", reason);
		if ((lr = oci_backoff_save(state, &b)) < 0)
			ks_die(r, "cannot record the failure in %s: %s", state, strerror(-lr));
		else {
			oci_rfc3339(b.next_attempt, when, sizeof(when));
			ks_say("failure %u recorded in %s; renew --when-due retries after %s", b.failures, state, when);
		}
	}
out:
	X509_free(current);
	return r;
}


/* ---- rebootstrap ---- */

#define RPS_ANSWER_MAX ((size_t)256 * 1024)

struct bundle {
	FILE *f;
	char path[4096];
};

static void now_text(char *buf, size_t len)
{
	oci_rfc3339(time(NULL), buf, len);
}

static void blog(struct bundle *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void blog(struct bundle *b, const char *fmt, ...)
{
	char when[32];
	va_list ap;

	if (b->f == NULL)
		return;
	now_text(when, sizeof(when));
	fprintf(b->f, "[%s] ", when);
	va_start(ap, fmt);
	vfprintf(b->f, fmt, ap);
	va_end(ap);
	fputc('\n', b->f);
	fflush(b->f);
}

/* A body as text: printable bytes kept, others as \xNN, capped. */
static void blog_body(struct bundle *b, const char *body, size_t len)
{
	size_t n = len < 65536 ? len : 65536;

	if (b->f == NULL)
		return;
	fprintf(b->f, "--- response body (%zu bytes%s) ---\n", len, n < len ? ", first 65536" : "");
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)body[i];

		if (c == '\n' || c == '\t' || (c >= 0x20 && c < 0x7f))
			fputc(c, b->f);
		else
			fprintf(b->f, "\\x%02x", c);
	}
	fputs("\n--- end of body ---\n", b->f);
	fflush(b->f);
}

static int bundle_open(const struct opts *o, struct bundle *b, const char *rps, const char *zip_info)
{
	char stamp[32], when[32];
	struct tm tm;
	time_t t = time(NULL);
	int fd;

	memset(b, 0, sizeof(*b));
	gmtime_r(&t, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	if (mkdir(o->support_dir, 0700) != 0 && errno != EEXIST)
		return ks_die(KS_EXIT_USAGE, "--support-dir %s: %s", o->support_dir, strerror(errno));
	snprintf(b->path, sizeof(b->path), "%s/rebootstrap-%s-%ld.txt", o->support_dir, stamp, (long)getpid());
	if ((fd = open(b->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0 ||
	    (b->f = fdopen(fd, "w")) == NULL) {
		if (fd >= 0)
			close(fd);
		return ks_die(KS_EXIT_USAGE, "cannot write the support bundle %s: %s", b->path, strerror(errno));
	}
	oci_rfc3339(t, when, sizeof(when));
	fprintf(b->f, "keysvc-oci rebootstrap support bundle\n"
		"infrastructure ID: %s\nregion: %s\nRPS: %s\ntoken zip: %s\nstarted: %s\n\n",
		o->infra_id, o->region, rps, zip_info, when);
	fflush(b->f);
	return 0;
}

/* Close the bundle with @outcome and say where it is. Returns @code. */
static int bundle_close(struct bundle *b, int code, const char *outcome)
{
	char when[32];

	if (b->f == NULL)
		return code;
	now_text(when, sizeof(when));
	fprintf(b->f, "\noutcome: %s (exit %d)\nended: %s\n", outcome, code, when);
	fclose(b->f);
	b->f = NULL;
	if (code != 0)
		ks_die(code, "support bundle written to %s: give it to support with this message", b->path);
	else
		ks_say("support bundle (for the record) written to %s", b->path);
	return code;
}

/* Wait @secs, with a live countdown on a terminal and one log line otherwise. */
static void wait_for(struct bundle *b, long secs, const char *why)
{
	int tty = isatty(STDERR_FILENO);

	blog(b, "waiting %ld s %s", secs, why);
	if (!tty)
		ks_say("waiting %ld s %s", secs, why);
	for (long left = secs; left > 0; left--) {
		struct timespec ts = { 1, 0 };

		if (tty)
			fprintf(stderr, "\rkeysvc-oci: waiting %s: %ld:%02ld left   ", why, left / 60, left % 60);
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}
	if (tty && secs > 0)
		fprintf(stderr, "\r%60s\r", "");
}

/* One form POST. 0 on a 2xx answer; else -1 with everything in the bundle. */
static int rps_post(const struct opts *o, struct bundle *b, const char *rps, const char *path, int attempt,
		    const unsigned char *body, size_t body_len, const char *ctype)
{
	struct ks_https_opts h;
	struct ks_https_response resp;
	const char *headers[] = { "Accept: application/json", ctype, NULL };
	char url[1024];
	int r;

	memset(&resp, 0, sizeof(resp));
	snprintf(url, sizeof(url), "%s%s", rps, path);
	ks_https_ca_opts(&h, o->tls_ca_file, o->c.timeout_s, o->c.insecure, NULL, NULL, NULL, 0);
	h.max_response_bytes = RPS_ANSWER_MAX;
	blog(b, "POST %s (attempt %d)", url, attempt);
	r = ks_https_request(&h, "POST", url, headers, body, body_len, &resp);
	if (r < 0) {
		blog(b, "POST %s failed: %s", path, resp.err);
		ks_say("POST %s: %s", path, resp.err);
		r = -1;
	} else {
		blog(b, "POST %s: HTTP %ld%s%s", path, resp.status, resp.content_type ? ", " : "",
		     resp.content_type ? resp.content_type : "");
		blog_body(b, resp.body, resp.body_len);
		if (resp.status >= 200 && resp.status < 300) {
			ks_say("POST %s: HTTP %ld", path, resp.status);
			r = 0;
		} else {
			char text[256];

			oci_error_text(resp.body, resp.body_len, text, sizeof(text));
			ks_say("POST %s: HTTP %ld: %s", path, resp.status, text);
			r = -1;
		}
	}
	ks_https_response_free(&resp);
	return r;
}

static long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The connection state from --state-command, into @buf ("" when it printed
 * nothing or failed: the state is then unknown, the polling goes on).
 * -ETIME when it was still running after @timeout_ms and was killed.
 */
static int read_state(struct bundle *b, const char *cmd, long timeout_ms, char *buf, size_t len)
{
	int r, status;

	r = oci_run_first_line(cmd, timeout_ms, buf, len, &status);
	if (r == -ETIME)
		return r;
	if (r < 0)
		blog(b, "cannot run the state command: %s", strerror(-r));
	else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
		blog(b, "the state command exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		blog(b, "the state command was killed by signal %d", WTERMSIG(status));
	for (char *c = buf; *c != '\0'; c++)
		if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7f)
			*c = '?';
	return 0;
}

static int cmd_rebootstrap(const struct opts *o)
{
	struct bundle b = { 0 };
	struct stat stz;
	unsigned char *zip = NULL, *form = NULL, md[32], rnd[12];
	char err[256], rps[512], zip_info[512], boundary[64], ctype[128], state[64], hex[65];
	const char *fname;
	size_t zip_len = 0, form_len = 0;
	long wait;
	long long deadline_ms;
	int r, fd = -1;

	if (o->infra_id == NULL || o->token_zip == NULL || o->region == NULL ||
	    (o->rps_fqdn == NULL && o->rps_url == NULL))
		return ks_die(KS_EXIT_USAGE, "rebootstrap needs --rps-fqdn (or --rps-url), --infrastructure-id, "
			      "--token-zip and --region");
	if (o->rps_url != NULL) {
		if (strncmp(o->rps_url, "https://", 8) != 0 || strlen(o->rps_url) >= sizeof(rps))
			return ks_die(KS_EXIT_USAGE, "--rps-url must be an https:// URL");
		snprintf(rps, sizeof(rps), "%s", o->rps_url);
	} else {
		if (oci_rps_url(o->rps_fqdn, rps, sizeof(rps), err, sizeof(err)) < 0)
			return ks_die(KS_EXIT_USAGE, "--rps-fqdn '%s': %s", o->rps_fqdn, err);
	}
	while (strlen(rps) > 8 && rps[strlen(rps) - 1] == '/')
		rps[strlen(rps) - 1] = '\0';
	if (!ocid_ok(o->infra_id))
		return ks_die(KS_EXIT_USAGE, "--infrastructure-id: an OCID");

	/* The zip: a regular file, readable, small, really a zip. */
	if ((fd = open(o->token_zip, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &stz) != 0) {
		r = ks_die(KS_EXIT_USAGE, "--token-zip %s: %s", o->token_zip, strerror(errno));
		goto out;
	}
	if (!S_ISREG(stz.st_mode) || (size_t)stz.st_size > OCI_TOKEN_ZIP_MAX) {
		r = ks_die(KS_EXIT_USAGE, "--token-zip %s: not a regular file of at most %zu bytes", o->token_zip,
			   OCI_TOKEN_ZIP_MAX);
		goto out;
	}
	zip_len = (size_t)stz.st_size;
	if ((zip = malloc(zip_len + 1)) == NULL || read(fd, zip, zip_len) != (ssize_t)zip_len) {
		r = ks_die(KS_EXIT_USAGE, "--token-zip %s: cannot read it", o->token_zip);
		goto out;
	}
	if (oci_zip_check(zip, zip_len, err, sizeof(err)) < 0) {
		r = ks_die(KS_EXIT_USAGE, "--token-zip %s: %s", o->token_zip, err);
		goto out;
	}
	if (o->now - stz.st_mtime > o->session_max_age_s)
		ks_die(0, "warning: %s is %ld minutes old; the exported session expires after 60 minutes: "
		       "if the calls fail, authenticate and export it again (steps 1 to 3)", o->token_zip,
		       (long)((o->now - stz.st_mtime) / 60));
	EVP_Digest(zip, zip_len, md, NULL, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	oci_rfc3339(stz.st_mtime, err, sizeof(err));
	snprintf(zip_info, sizeof(zip_info), "%s (%zu bytes, modified %s, sha256 %s)", o->token_zip, zip_len, err,
		 hex);
	fname = strrchr(o->token_zip, '/') != NULL ? strrchr(o->token_zip, '/') + 1 : o->token_zip;
	/* A random boundary that is not in the zip. */
	for (int tries = 0;; tries++) {
		if (RAND_bytes(rnd, sizeof(rnd)) != 1 || tries == 8) {
			r = ks_die(KS_EXIT_INTERNAL, "cannot make a multipart boundary");
			goto out;
		}
		snprintf(boundary, sizeof(boundary), "------------------------");
		for (size_t i = 0; i < sizeof(rnd); i++)
			snprintf(boundary + strlen(boundary), 3, "%02x", rnd[i]);
		if ((r = oci_multipart(boundary, fname, zip, zip_len, o->infra_id, &form, &form_len)) == 0)
			break;
		if (r != -EINVAL) {
			r = ks_die(KS_EXIT_INTERNAL, "out of memory");
			goto out;
		}
	}
	snprintf(ctype, sizeof(ctype), "Content-Type: multipart/form-data; boundary=%s", boundary);
	if ((r = bundle_open(o, &b, rps, zip_info)) != 0)
		goto out;

	/* Step 5: register; on error wait 1 to 2 minutes and try once more. */
	if (rps_post(o, &b, rps, "/register", 1, form, form_len, ctype) != 0) {
		wait = o->register_retry_s >= 0 ? o->register_retry_s : 60 + (long)(jitter() * 60);
		wait_for(&b, wait, "before retrying /register");
		if (rps_post(o, &b, rps, "/register", 2, form, form_len, ctype) != 0) {
			r = bundle_close(&b, KS_EXIT_REGISTER_FAILED, "/register failed twice: stop and contact support");
			goto out;
		}
	}
	/* Step 6, then 7: check_ready; on error wait 2 minutes and try again, once. */
	wait_for(&b, o->ready_wait_s, "after /register, before /check_ready");
	if (rps_post(o, &b, rps, "/check_ready", 1, form, form_len, ctype) != 0) {
		wait_for(&b, o->check_retry_s, "before retrying /check_ready");
		if (rps_post(o, &b, rps, "/check_ready", 2, form, form_len, ctype) != 0) {
			r = bundle_close(&b, KS_EXIT_CHECK_READY_FAILED,
					 "/check_ready failed twice: stop and contact support");
			goto out;
		}
	}
	if (o->state_command == NULL) {
		ks_say("the RPS has a new certificate; the connection should go Ready -> Disconnected/Connecting -> "
		       "Connected within %ld minutes (no --state-command to follow it)", o->connect_limit_s / 60);
		r = bundle_close(&b, 0, "/register and /check_ready succeeded; connection not followed");
		goto out;
	}
	/*
	 * Then Ready -> Disconnected/Connecting -> Connected, within the limit,
	 * which bounds the state command too: one that hangs is killed when
	 * the limit runs out.
	 */
	deadline_ms = mono_ms() + o->connect_limit_s * 1000LL;
	for (char last[64] = "";;) {
		long long left_ms = deadline_ms - mono_ms();

		if (read_state(&b, o->state_command, left_ms > 0 ? (long)left_ms : 0, state, sizeof(state)) ==
		    -ETIME) {
			char msg[256];

			snprintf(msg, sizeof(msg), "the state command timed out after %lld s and was killed; not "
				 "Connected within %ld s (last state: %s): check the state command",
				 left_ms > 0 ? (left_ms + 999) / 1000 : 0, o->connect_limit_s,
				 last[0] != '\0' ? last : "none");
			ks_die(0, "state command timed out after %lld s", left_ms > 0 ? (left_ms + 999) / 1000 : 0);
			r = bundle_close(&b, KS_EXIT_NOT_IN_TIME, msg);
			goto out;
		}
		if (strcmp(state, last) != 0) {
			blog(&b, "connection state: %s", state[0] != '\0' ? state : "(none)");
			ks_say("connection state: %s", state[0] != '\0' ? state : "(none)");
			snprintf(last, sizeof(last), "%s", state);
		}
		if (strcasecmp(state, "Connected") == 0) {
			r = bundle_close(&b, 0, "Connected");
			goto out;
		}
		if (mono_ms() + o->poll_s * 1000LL > deadline_ms) {
			char msg[160];

			snprintf(msg, sizeof(msg), "not Connected within %ld s (last state: %s): contact support",
				 o->connect_limit_s, state[0] != '\0' ? state : "none");
			r = bundle_close(&b, KS_EXIT_NOT_IN_TIME, msg);
			goto out;
		}
		wait_for(&b, o->poll_s, "before the next connection state check");
	}
out:
	if (b.f != NULL)
		bundle_close(&b, r, "stopped");
	if (fd >= 0)
		close(fd);
	if (zip != NULL)
		OPENSSL_cleanse(zip, zip_len);
	if (form != NULL)
		OPENSSL_cleanse(form, form_len);
	free(zip);
	free(form);
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
	const struct opts *o = ctx;
	int r = cmd_renew(o);

	/* With --new-key the certificate is for the new key once installed. */
	if (r == 0 && o->new_key != NULL)
		run->key = o->new_key;
	run->ca_file = o->ca_file;
	return r;
}

static int run_rebootstrap(void *ctx, struct ks_rc_run *run)
{
	(void)run;
	return cmd_rebootstrap(ctx);
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
	struct opts *o = ctx;
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
	struct opts *o = ctx;

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
	struct opts o = { .renew_after_s = OCI_DEFAULT_RENEW_AFTER_S, .lifetime_s = OCI_DEFAULT_LIFETIME_S,
			  .backoff_base_s = 3600, .backoff_max_s = 86400, .renew_path = DEFAULT_RENEW_PATH,
			  .bundle_path = DEFAULT_BUNDLE_PATH, .support_dir = "/var/lib/keysvc/oci/support",
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
