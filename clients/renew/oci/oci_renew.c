/*
 * keysvc-oci renew: a CSR from the token with the current subject and
 * SANs, POST renewCertificate signed with the current key, fetch the
 * certificate bundle, check it and install it; failures are counted in
 * the state file so that --when-due backs off with jitter. Also the
 * OCID check and the jitter that rebootstrap uses.
 */
#include <arpa/inet.h>
#include <errno.h>
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
#include <openssl/evp.h>
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
#include "clients/renew/common/clihttps.h"
#include "clients/renew/common/clikeysvc.h"
#include "clients/renew/common/push.h"
#include "clients/renew/https/https.h"
#include "keysvc/keysvc.h"
#include "clients/renew/oci/oci.h"
#include "clients/renew/oci/oci_cmd.h"
#include "clients/renew/oci/ocirun.h"
#include "clients/renew/oci/ocisign.h"
#include "clients/status/status.h"

#define MAX_SANS 100

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
int oci_ocid_ok(const char *s)
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
static int oci_call(const struct oci_opts *o, keysvc *ks, const char *method, const char *url, const char *body,
		    struct ks_https_response *resp)
{
	struct oci_request rq = { .method = method, .url = url, .body = body,
				  .body_len = body != NULL ? strlen(body) : 0 };
	struct oci_signed s = { 0 };
	struct ks_https_opts h;
	const char *headers[OCI_HEADERS_MAX + 3] = { NULL };
	size_t n = 0;
	int r;

	if ((r = oci_keysvc_sign(ks, o->key, o->key_id, &rq, &s)) != 0)
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
static int check_and_install(const struct oci_opts *o, const char *pem, const char *chain_pem, EVP_PKEY *pub,
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
static int new_key_make(const struct oci_opts *o, keysvc *ks, EVP_PKEY **pub)
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
	/* Its CSR, and OCI request signing (signing strings keysvcd checks): nothing else. */
	r = keysvc_key_generate_purposes(ks, o->new_key, type, "csr,http-signature", &pem);
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

static int renew_once(const struct oci_opts *o, X509 *current)
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
	if ((r = ks_cli_public_key(ks, o->key, &pub, 0)) != 0)
		goto out;
	if (EVP_PKEY_eq(X509_get0_pubkey(current), pub) != 1) {
		r = ks_die(KS_EXIT_USAGE, "%s is not a certificate for key %s", o->cert, o->key);
		goto out;
	}
	if ((subject = oci_subject_text(current)) == NULL) {
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

		if (!oci_ocid_ok(ans.certificate_id)) {
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

double oci_jitter(void)
{
	unsigned int v;

	if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
		return 0.5;
	return (double)v / (double)0xffffffffu;
}

int oci_cmd_renew(const struct oci_opts *o)
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
	if (!oci_ocid_ok(o->node_id))
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
	if ((r = oci_load_cert(o->cert, &current, NULL)) != 0 || (r = oci_cert_lifecycle(o, current, &st)) != 0)
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
		d = oci_backoff_delay(b.failures, o->backoff_base_s, o->backoff_max_s, oci_jitter());
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
