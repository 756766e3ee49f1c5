/*
 * keysvc-openvox: enrollment and renewal of an agent certificate with an
 * OpenVox / Puppet Server CA, the key held by keysvcd.
 *
 *   enroll   CA bundle, cut down to what the pinned CA vouches for -> CSR
 *            from the token key (generated if missing) -> PUT
 *            certificate_request (a 400 other than "already has a
 *            requested/signed certificate" is a refusal) -> poll
 *            certificate/<certname> -> the CRL, checked -> check the
 *            certificate, install it with the CA bundle and the CRL.
 *   renew    POST certificate_renewal over mutual TLS with the current
 *            certificate and the token key; the CA re-signs the same key.
 *            --rotate-key NEW: a new key through the enrollment path, the
 *            old one deleted only after the new certificate is installed.
 *
 * Nothing is installed until it has been checked (ks_ci_check), and a
 * failure leaves every installed file as it was.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "clients/renew/common/certinstall.h"
#include "clients/renew/common/certlock.h"
#include "clients/renew/common/climsg.h"
#include "clients/renew/common/cliopt.h"
#include "clients/renew/common/clihttps.h"
#include "clients/renew/common/clikeysvc.h"
#include "clients/renew/common/push.h"
#include "clients/renew/common/renewcli.h"
#include "clients/renew/https/https.h"
#include "keysvc/keysvc.h"
#include "clients/renew/openvox/openvox.h"

struct opts {
	struct ks_rc_opts c;
	const char *server, *certname, *key, *cert, *ca_file, *ca_fingerprint, *ca_out, *crl_out;
	const char *key_type, *rotate_key;
	const char *dns[32];
	size_t n_dns;
	long waitforcert, maxwaitforcert, interval_s;
	int when_due, header_cert;
};

static void usage(FILE *f)
{
	fputs("Usage: keysvc-openvox COMMAND --server URL --certname NAME [options]\n"
	      "\n"
	      "Enrolls and renews an agent certificate with an OpenVox / Puppet Server CA;\n"
	      "the private key is made and kept in the token by keysvcd.\n"
	      "\n"
	      "Commands:\n"
	      "  enroll     CSR from the token key (made if missing), submit, wait, install\n"
	      "  renew      POST certificate_renewal with the current certificate (mutual TLS)\n"
	      "\n"
	      "Options:\n"
	      "  --server URL            the CA, e.g. https://puppet.example.org:8140\n"
	      "  --certname NAME         the agent's certname (lower case)\n"
	      "  --key NAME              keysvc key name (default: the certname)\n"
	      "  --cert PATH             the installed certificate (required)\n"
	      "  --ca-file PATH          pinned CA bundle: the only trust for the CA's TLS and certificates\n"
	      "  --ca-fingerprint SHA256:HEX  enroll without a CA file: the downloaded bundle must hold a\n"
	      "                          certificate with this fingerprint; it is then the pinned CA\n"
	      "  --ca-out PATH           enroll: where to install, with the certificate, the pinned CA and the\n"
	      "                          CAs of the bundle it vouches for (the rest of the bundle is dropped)\n"
	      "  --crl-out PATH          enroll: where to install the CA's CRL (checked before anything is\n"
	      "                          installed: it must parse and be signed by the CA)\n"
	      "  --dns-alt-name NAME     enroll: extra DNS name (repeatable; the CA must allow them)\n"
	      "  --key-type TYPE         enroll: key type when the key is made (default ec-p256)\n"
	      "  --waitforcert SECONDS   enroll: poll interval while the CA has not signed (default 120)\n"
	      "  --maxwaitforcert SECONDS  enroll: give up after this long (default 3600; 0: ask once)\n"
	      "  --when-due              renew: only when the certificate ends within the interval\n"
	      "  --renewal-interval DAYS renew: the interval (default 30, like hostcert_renewal_interval)\n"
	      "  --header-cert           renew: send the certificate in X-Client-Cert (TLS-terminating proxy)\n"
	      "  --rotate-key NEWKEY     renew: enroll a new key NEWKEY; the old key is deleted after the\n"
	      "                          new certificate is installed\n"
	      "  --socket PATH           keysvcd socket (default $KEYSVC_SOCKET, then /run/keysvc/keysvc.sock)\n"
	      "  --timeout SECONDS       per HTTPS request (default 60)\n"
	      "  --insecure              do not verify the CA's TLS certificate (prints a warning)\n"
	      "  --quiet                 errors only\n"
	      "  --inventory DIR         where the outcome is recorded (default $KEYSVC_INVENTORY, then\n"
	      "                          the configuration's, then /var/lib/keysvc-inventory)\n"
	      "  --config FILE           reload hook and endpoints to verify after installing (default\n"
	      "                          /etc/keysvc/certs.json if it exists)\n"
	      "  --lock-wait SECONDS     wait this long for another run on the same --cert (default 60)\n"
	      "  --json                  print the outcome as one JSON object on stdout (progress on stderr)\n"
	      "  --version               print the version\n", f);
}

/* ---- HTTPS ---- */

/* Options without a client certificate: enrollment needs none. */
static void https_opts(const struct opts *o, const char *ca_file, struct ks_https_opts *h)
{
	ks_https_ca_opts(h, ca_file, o->c.timeout_s, o->c.insecure, NULL, NULL, NULL, 0);
}

/* 0, or an exit code with the reason printed; *@https_r (if not NULL) gets ks_https_request()'s error. */
static int request(const struct ks_https_opts *h, const char *method, const char *server,
		   const char *path, const char *const *headers, const char *body,
		   struct ks_https_response *resp, int *https_r)
{
	char *url = ovx_url(server, path);
	int r;

	if (url == NULL)
		return ks_die(KS_EXIT_USAGE, "--server must be an https:// URL");
	r = ks_https_request(h, method, url, headers, body, body != NULL ? strlen(body) : 0, resp);
	if (https_r != NULL)
		*https_r = r < 0 ? r : 0;
	if (r < 0)
		r = ks_die(ks_https_exit(r, resp), "%s %s: %s", method, url, resp->err);
	free(url);
	return r;
}

/* ---- the CA bundle ---- */

static int sha256_matches(X509 *x, const char *want)
{
	unsigned char md[32];
	unsigned int n = sizeof(md);
	char hex[3 * sizeof(md) + 1];
	const char *w = want;
	size_t o = 0;

	if (strncasecmp(w, "SHA256:", 7) == 0)
		w += 7;
	if (!X509_digest(x, EVP_sha256(), md, &n))
		return 0;
	/* Accept "AA:BB:..." and "aabb...". */
	for (unsigned int i = 0; i < n; i++)
		o += (size_t)snprintf(hex + o, sizeof(hex) - o, "%02x", md[i]);
	for (size_t i = 0, j = 0; ; i++) {
		if (w[i] == ':')
			continue;
		if (w[i] == '\0')
			return j == o;
		if (j >= o || (w[i] | 0x20) != hex[j])
			return 0;
		j++;
	}
}

/* What enrollment trusts, from the pinned CA and the CA's bundle. */
struct ca_trust {
	STACK_OF(X509) *trusted;      /* anchors for the certificate check and the CRL */
	STACK_OF(X509) *chain;        /* the bundle's certificates that were kept: intermediates */
	char *pem;                    /* those as PEM: what --ca-out receives */
	size_t pem_len;
	char tls_file[PATH_MAX];      /* --ca-fingerprint: a private copy of @pem for the TLS that follows */
	const char *trust_file;       /* the CA file for the TLS that follows */
};

static void ca_trust_free(struct ca_trust *t)
{
	sk_X509_pop_free(t->trusted, X509_free);
	sk_X509_pop_free(t->chain, X509_free);
	free(t->pem);
	if (t->tls_file[0] != '\0')
		unlink(t->tls_file);
	memset(t, 0, sizeof(*t));
}

/* @pem in a new private temporary file, its name in @path: the CA file for libcurl. */
static int write_tls_trust(const char *pem, size_t len, char path[PATH_MAX])
{
	const char *dir = getenv("TMPDIR");
	size_t done = 0;
	int fd, r;

	if (dir == NULL || dir[0] != '/')
		dir = "/tmp";
	if (snprintf(path, PATH_MAX, "%s/keysvc-openvox-ca.XXXXXX", dir) >= PATH_MAX) {
		path[0] = '\0';
		return ks_die(KS_EXIT_INTERNAL, "TMPDIR is too long");
	}
	if ((fd = mkostemp(path, O_CLOEXEC)) < 0) {
		r = ks_die(KS_EXIT_INTERNAL, "%s: %s", path, strerror(errno));
		path[0] = '\0';
		return r;
	}
	while (done < len) {
		ssize_t n = write(fd, pem + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = ks_die(KS_EXIT_INTERNAL, "%s: %s", path, strerror(errno));
			close(fd);
			return r;
		}
		done += (size_t)n;
	}
	close(fd);
	return 0;
}

/*
 * Fetch the CA bundle and keep only what the pinned CA vouches for. With
 * --ca-file it is fetched over verified TLS and the pinned certificates are
 * the anchors; with --ca-fingerprint it is fetched without verification
 * (there is nothing to verify with yet) and the anchor is its certificate
 * with that fingerprint. Of the bundle only the anchors and the CA
 * certificates that verify up to them are kept (ks_ci_vouched): anything
 * else, such as a certificate a man in the middle put next to the genuine
 * one, is dropped with a warning and trusted for nothing. Nothing is
 * installed here: --ca-out gets the kept certificates only once a
 * certificate has passed its checks.
 */
static int fetch_ca(const struct opts *o, struct ca_trust *t)
{
	struct ks_https_opts h;
	struct ks_https_response resp;
	STACK_OF(X509) *bundle = NULL, *anchors = NULL;
	char err[KS_CI_ERR_MAX];
	int r, dropped;

	memset(&resp, 0, sizeof(resp));
	memset(t, 0, sizeof(*t));
	if (o->ca_fingerprint != NULL) {
		struct opts first = *o;

		ks_say("first contact: fetching the CA certificate unverified, to compare with %s",
		    o->ca_fingerprint);
		first.c.insecure = 1;
		https_opts(&first, NULL, &h);
	} else {
		https_opts(o, o->ca_file, &h);
	}
	if ((r = request(&h, "GET", o->server, "/certificate/ca", NULL, NULL, &resp, NULL)) != 0)
		goto out;
	if (resp.status != 200) {
		r = ks_die(KS_EXIT_CA_REFUSED, "GET certificate/ca: HTTP %ld", resp.status);
		goto out;
	}
	if ((r = ks_ci_parse_bundle(resp.body, resp.body_len, &bundle, err)) < 0) {
		r = ks_die(KS_EXIT_CA_ANSWER, "the CA bundle: %s", err);
		goto out;
	}
	if (o->ca_fingerprint != NULL) {
		if ((anchors = sk_X509_new_null()) == NULL) {
			r = ks_die(KS_EXIT_INTERNAL, "out of memory");
			goto out;
		}
		for (int i = 0; i < sk_X509_num(bundle); i++) {
			X509 *x = sk_X509_value(bundle, i);

			if (!sha256_matches(x, o->ca_fingerprint))
				continue;
			if (!sk_X509_push(anchors, x)) {
				r = ks_die(KS_EXIT_INTERNAL, "out of memory");
				goto out;
			}
			X509_up_ref(x);
		}
		if (sk_X509_num(anchors) == 0) {
			r = ks_die(KS_EXIT_CA_ANSWER, "no certificate of the CA bundle has fingerprint %s: "
				"not installing it", o->ca_fingerprint);
			goto out;
		}
	} else if ((r = ks_load_ca_file(o->ca_file, &anchors)) != 0) {
		goto out;
	}
	if ((dropped = ks_ci_vouched(bundle, anchors, NULL, 0, &t->chain, err)) < 0) {
		r = ks_die(KS_EXIT_INTERNAL, "out of memory");
		goto out;
	}
	if (sk_X509_num(t->chain) == 0) {
		r = ks_die(KS_EXIT_CA_ANSWER, "no certificate of the CA's bundle is the pinned CA certificate "
			   "or a CA it vouches for");
		goto out;
	}
	if (dropped > 0)
		ks_say("warning: ignoring %d certificate(s) of the CA's bundle that the pinned CA does not vouch "
		       "for (the first: %s)", dropped, err);
	if ((r = ks_ci_pem_of(t->chain, &t->pem, &t->pem_len, err)) < 0) {
		r = ks_die(KS_EXIT_INTERNAL, "%s", err);
		goto out;
	}
	/* The anchors, and the intermediates they vouch for (anchors too, as ks_ci_check goes). */
	t->trusted = anchors;
	anchors = NULL;
	for (int i = 0; i < sk_X509_num(t->chain); i++) {
		X509 *x = sk_X509_value(t->chain, i);

		if (!sk_X509_push(t->trusted, x)) {
			r = ks_die(KS_EXIT_INTERNAL, "out of memory");
			goto out;
		}
		X509_up_ref(x);
	}
	if (o->ca_fingerprint != NULL) {
		if ((r = write_tls_trust(t->pem, t->pem_len, t->tls_file)) != 0)
			goto out;
		t->trust_file = t->tls_file;
	} else {
		t->trust_file = o->ca_file;
	}
	r = 0;
out:
	if (r != 0)
		ca_trust_free(t);
	sk_X509_pop_free(bundle, X509_free);
	sk_X509_pop_free(anchors, X509_free);
	ks_https_response_free(&resp);
	return r;
}

/*
 * The CA's CRL, checked before anything is installed: it must parse and be
 * signed by one of @trusted. A CRL without entries is an ordinary CRL (a
 * new CA's). On success *@pem (malloc'd, *@len bytes) is what --crl-out
 * receives.
 */
static int fetch_crl(const struct opts *o, const char *trust_file, STACK_OF(X509) *trusted, char **pem,
		     size_t *len)
{
	struct ks_https_opts h;
	struct ks_https_response resp;
	X509_CRL *crl = NULL;
	BIO *bio = NULL;
	int r, ok = 0;

	memset(&resp, 0, sizeof(resp));
	https_opts(o, trust_file, &h);
	if ((r = request(&h, "GET", o->server, "/certificate_revocation_list/ca", NULL, NULL, &resp, NULL)) != 0)
		goto out;
	if (resp.status != 200) {
		r = ks_die(KS_EXIT_CA_REFUSED, "GET certificate_revocation_list/ca: HTTP %ld; nothing installed",
			   resp.status);
		goto out;
	}
	if ((bio = BIO_new_mem_buf(resp.body, (int)resp.body_len)) == NULL ||
	    (crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) == NULL) {
		r = ks_die(KS_EXIT_CA_ANSWER, "the CA's CRL does not parse (%zu bytes); nothing installed",
			   resp.body_len);
		goto out;
	}
	for (int i = 0; i < sk_X509_num(trusted) && !ok; i++)
		ok = X509_CRL_verify(crl, X509_get0_pubkey(sk_X509_value(trusted, i))) == 1;
	if (!ok) {
		r = ks_die(KS_EXIT_CA_ANSWER, "the CA's CRL is not signed by the CA; nothing installed");
		goto out;
	}
	*pem = resp.body;
	*len = resp.body_len;
	resp.body = NULL;
	r = 0;
out:
	ERR_clear_error();
	X509_CRL_free(crl);
	BIO_free(bio);
	ks_https_response_free(&resp);
	return r;
}

/* ---- checks and installation ---- */

/*
 * Check the CA's certificate (@chain: intermediates from the verified
 * bundle, may be NULL) and install it; on enrollment the kept CA bundle
 * @ca_pem (with --ca-out) and the checked CRL @crl_pem (with --crl-out) go
 * in with it, all or none.
 */
static int check_and_install(const struct opts *o, const char *pem, size_t len, EVP_PKEY *pub,
			     STACK_OF(X509) *trusted, STACK_OF(X509) *chain, const ASN1_TIME *later_than,
			     const char *ca_pem, size_t ca_len, const char *crl_pem, size_t crl_len)
{
	struct ks_ci_expect exp = {
		.public_key = pub, .trusted = trusted, .common_name = o->certname, .later_than = later_than,
	};
	struct ks_ci_file files[3];
	char err[KS_CI_ERR_MAX], until[64];
	X509 *cert = NULL;
	size_t n = 0;
	int r;

	if ((r = ks_ci_parse_one(pem, len, &cert, err)) < 0 || (r = ks_ci_check(cert, chain, &exp, err)) < 0) {
		r = ks_die(KS_EXIT_CA_ANSWER, "the CA's certificate is not installed: %s", err);
		goto out;
	}
	if (ca_pem != NULL && o->ca_out != NULL)
		files[n++] = (struct ks_ci_file){ o->ca_out, ca_pem, ca_len, 0644 };
	if (crl_pem != NULL && o->crl_out != NULL)
		files[n++] = (struct ks_ci_file){ o->crl_out, crl_pem, crl_len, 0644 };
	/* The certificate last: it is the one whose failure matters most, and it puts the others back. */
	files[n++] = (struct ks_ci_file){ o->cert, pem, len, 0644 };
	if ((r = ks_ci_install_all(files, n, err)) < 0) {
		r = ks_die(KS_EXIT_INTERNAL, "%s", err);
		goto out;
	}
	if (ca_pem != NULL && o->ca_out != NULL)
		ks_say("installed the CA bundle at %s", o->ca_out);
	if (crl_pem != NULL && o->crl_out != NULL)
		ks_say("installed the CRL at %s", o->crl_out);
	ks_ci_format_time(X509_get0_notAfter(cert), until, sizeof(until));
	ks_say("installed %s (CN=%s, valid until %s)", o->cert, o->certname, until);
	r = 0;
out:
	X509_free(cert);
	return r;
}

/* ---- enroll ---- */

static int enroll_key(const struct opts *o, keysvc *ks, const char *key, const struct ca_trust *t)
{
	struct keysvc_csr_attr attr = { OVX_OID_AUTO_RENEW, "true", "printable" };
	struct keysvc_csr_params params;
	struct ks_https_opts h;
	struct ks_https_response resp;
	static const char *const text_headers[] = { "Content-Type: text/plain", "Accept: text/plain", NULL };
	char subject[300], path[OVX_CERTNAME_MAX + 64], reason[OVX_ESCAPED_MAX], *csr = NULL, *crl = NULL;
	size_t crl_len = 0;
	EVP_PKEY *pub = NULL;
	time_t deadline;
	int r;

	memset(&resp, 0, sizeof(resp));
	r = ks_cli_public_key(ks, key, &pub, 1);
	if (r > 0)
		return r;
	if (r < 0) {
		char *pem = NULL;

		/* The CSR to the CA and the agent's mutual TLS: nothing else. */
		r = keysvc_key_generate_purposes(ks, key, o->key_type, "csr,tls", &pem);
		free(pem);
		if (r != KEYSVC_OK)
			return ks_die(ks_exit_for_keysvc(r), "generating key %s (%s): %s: %s", key, o->key_type,
				   keysvc_strerror(r), keysvc_error_message(ks));
		ks_say("generated key %s (%s) in the token", key, o->key_type);
		if ((r = ks_cli_public_key(ks, key, &pub, 0)) != 0)
			return r;
	} else {
		ks_say("using key %s from the token", key);
	}

	memset(&params, 0, sizeof(params));
	snprintf(subject, sizeof(subject), "CN=%s", o->certname);
	params.subject = subject;
	params.dns = o->n_dns ? o->dns : NULL;
	params.n_dns = o->n_dns;
	/* The CA refuses keyUsage, EKU and basicConstraints in CSRs: none asked for. */
	params.attrs = &attr;
	params.n_attrs = 1;
	if ((r = keysvc_csr_create(ks, key, &params, &csr)) != KEYSVC_OK) {
		r = ks_die(ks_exit_for_keysvc(r), "CSR: %s: %s",
			keysvc_strerror(r), keysvc_error_message(ks));
		goto out;
	}

	https_opts(o, t->trust_file, &h);
	snprintf(path, sizeof(path), "/certificate_request/%s", o->certname);
	if ((r = request(&h, "PUT", o->server, path, text_headers, csr, &resp, NULL)) != 0)
		goto out;
	ovx_escape(resp.body, resp.body_len, reason, sizeof(reason));
	switch (ovx_csr_answer(resp.status, resp.body, resp.body_len, o->certname)) {
	case OVX_CSR_SUBMITTED:
		ks_say("submitted the CSR for %s", o->certname);
		break;
	case OVX_CSR_ALREADY:
		ks_say("submitted before (the CA: \"%s\"); checking for a certificate", reason);
		break;
	case OVX_CSR_REFUSED:
		/* Asking again will not change the CA's mind: the operator must act, so the reason in full. */
		r = ks_die(KS_EXIT_CA_REFUSED, "the CA refused the CSR for %s (HTTP 400): %s", o->certname,
			   reason);
		goto out;
	default:
		r = ks_die(KS_EXIT_CA_REFUSED, "PUT certificate_request: HTTP %ld: %s", resp.status, reason);
		goto out;
	}

	snprintf(path, sizeof(path), "/certificate/%s", o->certname);
	deadline = time(NULL) + o->maxwaitforcert;
	for (;;) {
		ks_https_response_free(&resp);
		if ((r = request(&h, "GET", o->server, path, NULL, NULL, &resp, NULL)) != 0)
			goto out;
		if (resp.status == 200)
			break;
		if (resp.status != 404) {
			r = ks_die(KS_EXIT_CA_REFUSED, "GET certificate/%s: HTTP %ld", o->certname, resp.status);
			goto out;
		}
		if (time(NULL) + o->waitforcert > deadline) {
			r = ks_die(KS_EXIT_NOT_IN_TIME, "the CA has not signed %s yet; run enroll again later "
				"(the key and the CSR are kept)", o->certname);
			goto out;
		}
		ks_say("not signed yet; asking again in %ld s", o->waitforcert);
		sleep((unsigned)o->waitforcert);
	}
	/* The CRL before anything is installed: KS_EXIT_CA_ANSWER must mean that nothing was. */
	if (o->crl_out != NULL && (r = fetch_crl(o, t->trust_file, t->trusted, &crl, &crl_len)) != 0)
		goto out;
	r = check_and_install(o, resp.body, resp.body_len, pub, t->trusted, t->chain, NULL, t->pem, t->pem_len,
			      crl, crl_len);
out:
	free(crl);
	free(csr);
	EVP_PKEY_free(pub);
	ks_https_response_free(&resp);
	return r;
}

static int cmd_enroll(void *ctx, struct ks_rc_run *run)
{
	const struct opts *o = ctx;
	struct ca_trust t;
	keysvc *ks = NULL;
	int r;

	memset(&t, 0, sizeof(t));
	if ((r = fetch_ca(o, &t)) != 0)
		goto out;
	if ((r = ks_open_keysvc(o->c.socket, &ks)) != 0)
		goto out;
	if ((r = enroll_key(o, ks, o->key, &t)) != 0)
		goto out;
	r = 0;
out:
	/* A failed enrollment installed nothing: the record keeps naming the files it had, so that
	 * keysvc status never looks for a CA bundle or CRL that was not written. */
	if (r == 0) {
		run->ca_file = o->ca_out != NULL ? o->ca_out : o->ca_file;
		run->crl = o->crl_out;
	}
	keysvc_close(ks);
	ca_trust_free(&t);
	return r;
}

/* ---- renew ---- */

static int cmd_renew(void *ctx, struct ks_rc_run *run)
{
	const struct opts *o = ctx;
	struct ks_renewal *rn = run->renewal;
	static const char *const text_headers[] = { "Content-Type: text/plain", "Accept: text/plain", NULL };
	struct ks_https_opts h;
	struct ks_https_response resp;
	STACK_OF(X509) *trusted = NULL;
	X509 *current = NULL;
	EVP_PKEY *pub = NULL;
	keysvc *ks = NULL;
	char err[KS_CI_ERR_MAX], msg[OVX_MSG_MAX], when[64], uri[80], *text = NULL, *enc = NULL, *hdr = NULL;
	const char *headers[4] = { NULL };
	size_t len;
	time_t opens;
	int r, https_r = 0, recorded = 0;

	memset(&resp, 0, sizeof(resp));
	if ((r = ks_ci_read_file(o->cert, &text, &len, err)) < 0 ||
	    (r = ks_ci_parse_one(text, len, &current, err)) < 0) {
		r = ks_die(KS_EXIT_USAGE, "the current certificate: %s", err);
		goto out;
	}
	if (o->when_due && !ovx_is_due(X509_get0_notAfter(current), time(NULL), o->interval_s, &opens)) {
		struct tm tm;

		ks_ci_format_time(X509_get0_notAfter(current), when, sizeof(when));
		gmtime_r(&opens, &tm);
		strftime(msg, sizeof(msg), "%Y-%m-%d %H:%M:%S UTC", &tm);
		ks_say("not due: %s is valid until %s; renewal starts %s", o->cert, when, msg);
		r = KS_EXIT_NOT_DUE;
		goto out;
	}
	if ((r = ks_load_ca_file(o->ca_file, &trusted)) != 0)
		goto out;
	if ((r = ks_open_keysvc(o->c.socket, &ks)) != 0)
		goto out;

	if (o->rotate_key != NULL) {
		/* A new key goes through enrollment; the old one stays until its
		 * successor's certificate is installed. */
		struct ca_trust t = { .trusted = trusted, .trust_file = o->ca_file };

		if ((r = enroll_key(o, ks, o->rotate_key, &t)) != 0)
			goto out;
		/* The push first: if it fails, the old key stays for the rollback to <cert>.prev. */
		recorded = 1;
		if ((r = ks_renewal_finish(rn, 0, o->cert, o->rotate_key, o->ca_file, NULL)) != 0) {
			ks_say("the old key %s is kept for a rollback", o->key);
			goto out;
		}
		if ((r = keysvc_key_delete(ks, o->key)) != KEYSVC_OK) {
			r = ks_die(ks_exit_for_keysvc(r), "the new certificate is installed, but deleting the old key %s "
				"failed: %s: %s", o->key, keysvc_strerror(r), keysvc_error_message(ks));
			goto out;
		}
		ks_say("deleted the old key %s; the key is now %s", o->key, o->rotate_key);
		r = 0;
		goto out;
	}

	if ((r = ks_cli_public_key(ks, o->key, &pub, 0)) != 0)
		goto out;
	if (EVP_PKEY_eq(X509_get0_pubkey(current), pub) != 1) {
		r = ks_die(KS_EXIT_USAGE, "%s is not a certificate for key %s", o->cert, o->key);
		goto out;
	}
	ks_https_ca_opts(&h, o->ca_file, o->c.timeout_s, o->c.insecure, o->header_cert ? NULL : o->cert,
			 o->key, uri, sizeof(uri));
	headers[0] = text_headers[0];
	headers[1] = text_headers[1];
	if (o->header_cert) {
		if ((enc = ovx_urlencode(text)) == NULL || asprintf(&hdr, "X-Client-Cert: %s", enc) < 0) {
			hdr = NULL;
			r = ks_die(KS_EXIT_INTERNAL, "out of memory");
			goto out;
		}
		headers[2] = hdr;
	}
	if ((r = request(&h, "POST", o->server, "/certificate_renewal", headers, NULL, &resp, &https_r)) != 0) {
		/* The whole Puppet Server stack answers a certificate of another CA without any 403. */
		if (!o->header_cert && (https_r == -EPROTO || https_r == -EIO))
			(void)ks_die(0, "note: Puppet Server refuses a client certificate it did not sign (or has "
				     "revoked) in the TLS handshake itself; if %s is not from this CA, enroll with "
				     "this CA", o->cert);
		goto out;
	}
	if (ovx_renewal_result(resp.status, resp.body, resp.body_len, msg, sizeof(msg)) != OVX_RENEWED) {
		r = ks_die(KS_EXIT_CA_REFUSED, "%s", msg);
		goto out;
	}
	r = check_and_install(o, resp.body, resp.body_len, pub, trusted, NULL, X509_get0_notAfter(current), NULL, 0,
			      NULL, 0);
out:
	if (!recorded)
		r = ks_renewal_finish(rn, r, o->cert, o->key, o->ca_file, NULL);
	run->recorded = 1;
	/* After --rotate-key the certificate is the new key's. */
	if (r == 0 && o->rotate_key != NULL)
		run->key = o->rotate_key;
	ks_https_response_free(&resp);
	keysvc_close(ks);
	sk_X509_pop_free(trusted, X509_free);
	X509_free(current);
	EVP_PKEY_free(pub);
	free(text);
	free(enc);
	free(hdr);
	return r;
}

/* ---- main ---- */

enum { O_SERVER = 256, O_CERTNAME, O_KEY, O_CERT, O_CA_FILE, O_CA_FP, O_CA_OUT, O_CRL_OUT, O_DNS, O_KEY_TYPE,
       O_WAIT, O_MAXWAIT, O_WHEN_DUE, O_INTERVAL, O_HEADER_CERT, O_ROTATE };

static int option(void *ctx, int c, const char *arg)
{
	struct opts *o = ctx;
	long days;

	switch (c) {
	case O_SERVER: o->server = arg; break;
	case O_CERTNAME: o->certname = arg; break;
	case O_KEY: o->key = arg; break;
	case O_CERT: o->cert = arg; break;
	case O_CA_FILE: o->ca_file = arg; break;
	case O_CA_FP: o->ca_fingerprint = arg; break;
	case O_CA_OUT: o->ca_out = arg; break;
	case O_CRL_OUT: o->crl_out = arg; break;
	case O_DNS:
		if (o->n_dns == sizeof(o->dns) / sizeof(o->dns[0]))
			return ks_die(KS_EXIT_USAGE, "at most %zu --dns-alt-name", o->n_dns);
		o->dns[o->n_dns++] = arg;
		break;
	case O_KEY_TYPE: o->key_type = arg; break;
	case O_WAIT:
		if (ks_parse_long(arg, 1, 86400, &o->waitforcert) != 0)
			return ks_die(KS_EXIT_USAGE, "--waitforcert: 1..86400 seconds");
		break;
	case O_MAXWAIT:
		if (ks_parse_long(arg, 0, 30L * 86400, &o->maxwaitforcert) != 0)
			return ks_die(KS_EXIT_USAGE, "--maxwaitforcert: 0..2592000 seconds");
		break;
	case O_WHEN_DUE: o->when_due = 1; break;
	case O_INTERVAL:
		if (ks_parse_long(arg, 0, 3650, &days) != 0)
			return ks_die(KS_EXIT_USAGE, "--renewal-interval: 0..3650 days");
		o->interval_s = days * 86400;
		break;
	case O_HEADER_CERT: o->header_cert = 1; break;
	case O_ROTATE: o->rotate_key = arg; break;
	}
	return 0;
}

static int check(void *ctx, struct ks_rc_run *run)
{
	struct opts *o = ctx;

	if (o->server == NULL || strncmp(o->server, "https://", 8) != 0)
		return ks_die(KS_EXIT_USAGE, "--server https://HOST:PORT is required");
	if (!ovx_certname_ok(o->certname))
		return ks_die(KS_EXIT_USAGE, "--certname: 1..253 of a-z 0-9 . _ - (the CA wants lower case)");
	if (o->key == NULL)
		o->key = o->certname;
	if (o->cert == NULL)
		return ks_die(KS_EXIT_USAGE, "--cert PATH is required");
	if (o->ca_file != NULL && o->ca_fingerprint != NULL)
		return ks_die(KS_EXIT_USAGE, "--ca-file and --ca-fingerprint exclude each other");
	if (o->ca_fingerprint != NULL && o->ca_out == NULL)
		return ks_die(KS_EXIT_USAGE, "--ca-fingerprint needs --ca-out: the CA bundle is kept there");
	if (strcmp(run->command, "enroll") == 0) {
		if (o->ca_file == NULL && o->ca_fingerprint == NULL)
			return ks_die(KS_EXIT_USAGE, "enroll needs --ca-file or --ca-fingerprint: the CA is never "
				   "trusted on first sight");
		if (o->when_due || o->header_cert || o->rotate_key != NULL)
			return ks_die(KS_EXIT_USAGE, "--when-due, --header-cert and --rotate-key are renew options");
	} else {
		if (o->ca_file == NULL)
			return ks_die(KS_EXIT_USAGE, "renew needs --ca-file");
		if (o->ca_fingerprint != NULL || o->ca_out != NULL || o->crl_out != NULL)
			return ks_die(KS_EXIT_USAGE, "--ca-fingerprint, --ca-out and --crl-out are enroll options");
		if (o->rotate_key != NULL && o->header_cert)
			return ks_die(KS_EXIT_USAGE, "--rotate-key enrolls anew; --header-cert does not apply");
		if (o->rotate_key != NULL && strcmp(o->rotate_key, o->key) == 0)
			return ks_die(KS_EXIT_USAGE, "--rotate-key must name a new key, not %s", o->key);
	}
	run->lock_path = run->cert = o->cert;
	run->key = o->key;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "server", required_argument, NULL, O_SERVER },
		{ "certname", required_argument, NULL, O_CERTNAME },
		{ "key", required_argument, NULL, O_KEY },
		{ "cert", required_argument, NULL, O_CERT },
		{ "ca-file", required_argument, NULL, O_CA_FILE },
		{ "ca-fingerprint", required_argument, NULL, O_CA_FP },
		{ "ca-out", required_argument, NULL, O_CA_OUT },
		{ "crl-out", required_argument, NULL, O_CRL_OUT },
		{ "dns-alt-name", required_argument, NULL, O_DNS },
		{ "key-type", required_argument, NULL, O_KEY_TYPE },
		{ "waitforcert", required_argument, NULL, O_WAIT },
		{ "maxwaitforcert", required_argument, NULL, O_MAXWAIT },
		{ "when-due", no_argument, NULL, O_WHEN_DUE },
		{ "renewal-interval", required_argument, NULL, O_INTERVAL },
		{ "header-cert", no_argument, NULL, O_HEADER_CERT },
		{ "rotate-key", required_argument, NULL, O_ROTATE },
		{ NULL, 0, NULL, 0 },
	};
	static const struct ks_rc_command commands[] = {
		{ "enroll", "enrolled", KS_RC_RENEWAL | KS_RC_HTTPS | KS_RC_RESULT, cmd_enroll },
		{ "renew", "renewed", KS_RC_RENEWAL | KS_RC_HTTPS | KS_RC_RESULT, cmd_renew },
		{ NULL, NULL, 0, NULL },
	};
	struct opts o = { .key_type = "ec-p256", .waitforcert = 120, .maxwaitforcert = 3600,
			  .interval_s = OVX_DEFAULT_RENEWAL_INTERVAL_S };
	const struct ks_rc_client client = {
		.program = "keysvc-openvox", .inventory_client = "openvox",
		.common = KS_RC_OPT_SOCKET | KS_RC_OPT_INVENTORY | KS_RC_OPT_LOCK_WAIT,
		.usage = usage, .options = options, .option = option, .check = check, .commands = commands,
		.common_opts = &o.c, .ctx = &o,
	};

	return ks_rc_main(&client, argc, argv);
}
