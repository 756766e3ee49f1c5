/*
 * fake-oci: a local imitation of the two OCI services keysvc-oci renew
 * talks to, for its tests. Test code only: loopback, CA key in a file,
 * one connection at a time.
 *
 *   fake-oci --dir DIR --verify-key PUB.pem --key-id ID [--port-file F] [--control F]
 *   fake-oci --dir DIR --issue CSR.pem --out CERT.pem [--age-days N] [--days N]
 *
 * Serving:
 *   POST /20201210/roverNodes/{id}/actions/renewCertificate
 *        The request must carry a valid OCI signature (headers "date
 *        (request-target) host content-length content-type
 *        x-content-sha256", keyId = --key-id, rsa-sha256, checked with
 *        --verify-key, re-read on every request) and the JSON body
 *        {"csr": PEM, "timeCertValidityEnd": RFC 3339}, exactly those two
 *        keys. A certificate is issued by DIR/ca.pem with the CSR's subject
 *        and subjectAltName, valid from now to timeCertValidityEnd, and the
 *        answer is the Rover API's {"roverNodeId", "certificateDetails":
 *        {"certificateId", "certificateName"}}. Bad signature: 401
 *        NotAuthenticated; bad body: 400 InvalidParameter.
 *   GET  /20210224/certificateBundles/{certificateId}
 *        Signed too ("date (request-target) host"). {"certificateId",
 *        "certificatePem", "certChainPem", ...}.
 *   The last renewal body is kept in DIR/last-renew.json, the CSR in
 *   DIR/last-csr.pem, and each request's header names (lower case, in
 *   order) are appended to DIR/requests.log with the method and path.
 *
 * --control F: one word, read on every request (missing/empty: normal):
 *   status-500       renewCertificate answers 500 InternalServerError
 *   not-authorized   renewCertificate answers 404 NotAuthorizedOrNotFound
 *   garbage          renewCertificate answers 200 with a non-JSON body
 *   direct           renewCertificate answers certificatePem itself
 *   bundle-404       the bundle fetch answers 404
 *   other-key        the certificate is for another public key
 *   foreign-ca       the certificate is signed by DIR/foreign-ca.pem
 *   expired          the certificate ended yesterday
 *   shorter          the certificate ends in one day (before the current one)
 *   other-subject    the certificate has another subject
 *   huge             a 1 MiB answer
 *   hang             no answer until the client leaves
 *
 * Issuing (--issue): signs CSR.pem with DIR/ca.pem (made if missing)
 * with notBefore = now - N days (--age-days, default 0) and a validity of
 * --days (default 60), then exits; the tests make their "current"
 * certificate this way.
 *
 * RPS mode (--rps --infrastructure-id ID --state-file F [--state-step-ms N]):
 *   POST /register, POST /check_ready
 *        The form must be exactly what the seed's curl sends: Accept:
 *        application/json, multipart/form-data with the part "file"
 *        (filename given, Content-Type: application/zip, a zip) then
 *        "infrastructure_id" (Content-Type: text/plain, = ID), nothing
 *        else. A bad form: 400. Success: 200 {"status": ...}.
 *   After a successful /check_ready the connection state in F goes
 *   Ready -> Disconnected -> Connecting -> Connected, one step every N ms
 *   (default 300). Control words: register-fail-once, register-fail-always,
 *   check-fail-once, check-fail-always (500 with an error body),
 *   never-connected (stays Connecting).
 *
 * SIGTERM/SIGINT end the server with status 0.
 */
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "fakesrv.h"

#define DAY FS_DAY
#define MAX_BODY_BYTES (64 * 1024)
#define MAX_HEADERS 64
#define P_RENEW_PREFIX "/20201210/roverNodes/"
#define P_RENEW_SUFFIX "/actions/renewCertificate"
#define P_BUNDLE "/20210224/certificateBundles/"

static const char *dir, *port_file, *control_file, *verify_key_path, *key_id;
static X509 *ca_cert, *foreign_cert;
static EVP_PKEY *ca_key, *foreign_key;
static unsigned issued_count;
static bool rps_mode;
static const char *infra_id, *state_file;
static long state_step_ms = 300;
static unsigned register_calls, check_calls;
static struct timespec ready_at;
static bool ready, never_connected;

struct response {
	int status;
	char *body;                   /* malloc'd */
	size_t body_len;
	bool hang, huge;
};

/* ---- files and certificates ---- */

static const struct fs_ext ca_exts[] = {
	{ NID_basic_constraints, "critical,CA:TRUE" },
	{ NID_key_usage, "critical,keyCertSign,cRLSign" },
	{ NID_subject_key_identifier, "hash" },
	{ 0, NULL },
};

static const struct fs_ext server_exts[] = {
	{ NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1" },
	{ NID_ext_key_usage, "serverAuth" },
	{ 0, NULL },
};

/* A certificate for @req's key (or @pub), subject and SANs, by @issuer. */
static X509 *issue(X509_REQ *req, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *issuer_key, time_t nb, time_t na,
		   const char *other_subject)
{
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
	X509_NAME *name = NULL;
	X509 *x;
	int ok = 0;

	if (other_subject != NULL) {
		name = X509_NAME_new();
		X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)other_subject, -1, -1, 0);
	}
	x = fs_new_cert(X509_get_subject_name(issuer), name != NULL ? name : X509_REQ_get_subject_name(req),
			pub != NULL ? pub : X509_REQ_get0_pubkey(req), nb, na);
	if (x == NULL)
		goto out;
	for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);

		if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name && !X509_add_ext(x, e, -1))
			goto out;
	}
	ok = fs_add_ext(issuer, x, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
	     fs_add_ext(issuer, x, NID_key_usage, "critical,digitalSignature") == 0 &&
	     fs_add_ext(issuer, x, NID_ext_key_usage, "clientAuth") == 0 &&
	     fs_add_ext(issuer, x, NID_authority_key_identifier, "keyid:always") == 0 &&
	     X509_sign(x, issuer_key, EVP_sha256()) > 0;
out:
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(name);
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static X509_REQ *parse_csr(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509_REQ *req = b != NULL ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
	EVP_PKEY *pk;

	BIO_free(b);
	if (req != NULL && ((pk = X509_REQ_get0_pubkey(req)) == NULL || X509_REQ_verify(req, pk) != 1)) {
		X509_REQ_free(req);
		req = NULL;
	}
	return req;
}

/* ---- the OCI signature ---- */

static const char *hval(const struct fs_request *rq, const char *name)
{
	/* The first of several: what the signature covers. */
	for (size_t i = 0; i < rq->nheaders; i++)
		if (strcasecmp(rq->headers[i].name, name) == 0)
			return rq->headers[i].value;
	return NULL;
}

/* The value of @param="..." in an Authorization header, into @out. */
static bool auth_param(const char *auth, const char *param, char *out, size_t len)
{
	char pat[32];
	const char *p, *e;

	snprintf(pat, sizeof pat, "%s=\"", param);
	for (p = auth; (p = strstr(p, pat)) != NULL; p++)
		if (p == auth || p[-1] == ',' || p[-1] == ' ')
			break;
	if (p == NULL)
		return false;
	p += strlen(pat);
	if ((e = strchr(p, '"')) == NULL || (size_t)(e - p) >= len)
		return false;
	memcpy(out, p, (size_t)(e - p));
	out[e - p] = '\0';
	return true;
}

/* NULL if the request is correctly signed, else why not. */
static const char *check_signature(const struct fs_request *rq, bool with_body)
{
	static char why[640];
	const char *auth = hval(rq, "authorization"), *want_headers;
	char headers[256], kid[8192], alg[32], sig_b64[1024], ss[8192], version[8];
	unsigned char sig[768], md[32];
	size_t o = 0;
	int sig_len;
	EVP_PKEY *pub = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	FILE *f;
	bool ok = false;

	want_headers = with_body ? "date (request-target) host content-length content-type x-content-sha256"
				 : "date (request-target) host";
	if (auth == NULL || strncmp(auth, "Signature ", 10) != 0)
		return "no Signature authorization";
	if (!auth_param(auth, "version", version, sizeof version) || strcmp(version, "1") != 0 ||
	    !auth_param(auth, "headers", headers, sizeof headers) ||
	    !auth_param(auth, "keyId", kid, sizeof kid) || !auth_param(auth, "algorithm", alg, sizeof alg) ||
	    !auth_param(auth, "signature", sig_b64, sizeof sig_b64))
		return "malformed Signature authorization";
	if (strcmp(headers, want_headers) != 0) {
		snprintf(why, sizeof why, "signed headers \"%s\", expected \"%s\"", headers, want_headers);
		return why;
	}
	if (strcmp(alg, "rsa-sha256") != 0)
		return "algorithm is not rsa-sha256";
	if (strcmp(kid, key_id) != 0)
		return "unknown keyId";
	/* Rebuild the signing string from what arrived. */
	for (const char *p = headers; *p != '\0';) {
		char name[64];
		size_t n = strcspn(p, " ");
		const char *v;

		snprintf(name, sizeof name, "%.*s", (int)n, p);
		p += n;
		while (*p == ' ')
			p++;
		if (strcmp(name, "(request-target)") == 0) {
			char m[16];
			size_t i;

			for (i = 0; rq->method[i] != '\0' && i + 1 < sizeof m; i++)
				m[i] = (char)(rq->method[i] | 0x20);
			m[i] = '\0';
			o += (size_t)snprintf(ss + o, sizeof ss - o, "%s(request-target): %s %s", o ? "\n" : "", m,
					      rq->target);
		} else {
			if ((v = hval(rq, name)) == NULL) {
				snprintf(why, sizeof why, "signed header %s missing", name);
				return why;
			}
			o += (size_t)snprintf(ss + o, sizeof ss - o, "%s%s: %s", o ? "\n" : "", name, v);
		}
		if (o >= sizeof ss)
			return "signing string too long";
	}
	if (with_body) {
		unsigned char bmd[32];
		char b64[64];
		const char *cl = hval(rq, "content-length");

		EVP_Digest(rq->body, rq->body_len, bmd, NULL, EVP_sha256(), NULL);
		EVP_EncodeBlock((unsigned char *)b64, bmd, 32);
		if (strcmp(b64, hval(rq, "x-content-sha256")) != 0)
			return "x-content-sha256 does not match the body";
		if (cl == NULL || strtoull(cl, NULL, 10) != rq->body_len)
			return "content-length does not match the body";
	}
	sig_len = EVP_DecodeBlock(sig, (const unsigned char *)sig_b64, (int)strlen(sig_b64));
	if (sig_len <= 0)
		return "signature is not base64";
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	for (size_t l = strlen(sig_b64); l > 0 && sig_b64[l - 1] == '='; l--)
		sig_len--;
	if ((f = fopen(verify_key_path, "r")) != NULL) {
		pub = PEM_read_PUBKEY(f, NULL, NULL, NULL);
		fclose(f);
	}
	EVP_Digest(ss, o, md, NULL, EVP_sha256(), NULL);
	ok = pub != NULL && (ctx = EVP_PKEY_CTX_new(pub, NULL)) != NULL && EVP_PKEY_verify_init(ctx) == 1 &&
	     EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1 &&
	     EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1 &&
	     EVP_PKEY_verify(ctx, sig, (size_t)sig_len, md, 32) == 1;
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pub);
	ERR_clear_error();
	return ok ? NULL : "the signature does not verify";
}

/* ---- handlers ---- */

static void set_json(struct response *rs, int status, json_t *obj)
{
	rs->status = status;
	rs->body = json_dumps(obj, JSON_PRESERVE_ORDER | JSON_COMPACT);
	rs->body_len = rs->body != NULL ? strlen(rs->body) : 0;
	json_decref(obj);
}

static void set_error(struct response *rs, int status, const char *code, const char *msg)
{
	set_json(rs, status, json_pack("{s:s, s:s}", "code", code, "message", msg));
}

static void read_control(char *mode, size_t len)
{
	FILE *f = control_file != NULL ? fopen(control_file, "r") : NULL;

	mode[0] = '\0';
	if (f != NULL) {
		if (fgets(mode, (int)len, f) == NULL)
			mode[0] = '\0';
		fclose(f);
	}
	mode[strcspn(mode, " \r\n")] = '\0';
}

static void renew(const struct fs_request *rq, const char *node, const char *mode, struct response *rs)
{
	json_error_t jerr;
	json_t *body = NULL, *csr_j, *end_j;
	X509_REQ *req = NULL;
	X509 *x = NULL;
	EVP_PKEY *other = NULL;
	struct tm tm;
	const char *why, *ct = hval(rq, "content-type");
	char path[PATH_MAX], id[128], *pem = NULL;
	time_t now = time(NULL), end;

	if ((why = check_signature(rq, true)) != NULL) {
		set_error(rs, 401, "NotAuthenticated", why);
		goto out;
	}
	if (strcmp(mode, "status-500") == 0) {
		set_error(rs, 500, "InternalServerError", "Internal error occurred");
		goto out;
	}
	if (strcmp(mode, "not-authorized") == 0) {
		set_error(rs, 404, "NotAuthorizedOrNotFound", "Authorization failed or requested resource not found.");
		goto out;
	}
	if (strcmp(mode, "garbage") == 0) {
		rs->status = 200;
		rs->body = strdup("<html>this is not JSON</html>");
		rs->body_len = strlen(rs->body);
		goto out;
	}
	snprintf(path, sizeof path, "%s/last-renew.json", dir);
	fs_write_file_atomic(path, rq->body, rq->body_len, 0644);
	body = json_loadb(rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &jerr);
	csr_j = json_object_get(body, "csr");
	end_j = json_object_get(body, "timeCertValidityEnd");
	memset(&tm, 0, sizeof tm);
	if (ct == NULL || strcmp(ct, "application/json") != 0 || !json_is_object(body) || json_object_size(body) != 2 ||
	    !json_is_string(csr_j) || json_string_length(csr_j) > 10240 || !json_is_string(end_j) ||
	    strptime(json_string_value(end_j), "%Y-%m-%dT%H:%M:%SZ", &tm) == NULL ||
	    (req = parse_csr(json_string_value(csr_j))) == NULL) {
		set_error(rs, 400, "InvalidParameter", "The request body is not a valid RoverNodeRenewCertificateDetails");
		goto out;
	}
	snprintf(path, sizeof path, "%s/last-csr.pem", dir);
	fs_write_file_atomic(path, json_string_value(csr_j), json_string_length(csr_j), 0644);
	end = timegm(&tm);
	if (strcmp(mode, "expired") == 0)
		end = now - DAY;
	else if (strcmp(mode, "shorter") == 0)
		end = now + DAY;
	if (strcmp(mode, "other-key") == 0)
		other = EVP_EC_gen("P-256");
	x = issue(req, other, strcmp(mode, "foreign-ca") == 0 ? foreign_cert : ca_cert,
		  strcmp(mode, "foreign-ca") == 0 ? foreign_key : ca_key, strcmp(mode, "expired") == 0 ? now - 2 * DAY : now - 60,
		  end, strcmp(mode, "other-subject") == 0 ? "someone-else" : NULL);
	if (x == NULL || (pem = fs_cert_pem(x, NULL)) == NULL) {
		set_error(rs, 500, "InternalServerError", "could not issue");
		goto out;
	}
	snprintf(id, sizeof id, "ocid1.certificate.oc1.fake.%u", ++issued_count);
	snprintf(path, sizeof path, "%s/issued/%s.pem", dir, id);
	fs_write_file_atomic(path, pem, strlen(pem), 0644);
	if (strcmp(mode, "direct") == 0) {
		char *chain = fs_cert_pem(ca_cert, NULL);

		set_json(rs, 200, json_pack("{s:s, s:s, s:s}", "certificateId", id, "certificatePem", pem,
					    "certChainPem", chain));
		free(chain);
	} else {
		set_json(rs, 200, json_pack("{s:s, s:{s:s, s:s}}", "roverNodeId", node, "certificateDetails",
					    "certificateId", id, "certificateName", "rover-node-certificate"));
	}
out:
	free(pem);
	X509_free(x);
	EVP_PKEY_free(other);
	X509_REQ_free(req);
	json_decref(body);
}

static void bundle(const struct fs_request *rq, const char *id, const char *mode, struct response *rs)
{
	char path[PATH_MAX], *pem = NULL, *chain = NULL;
	const char *why;
	FILE *f;
	long n;

	if ((why = check_signature(rq, false)) != NULL) {
		set_error(rs, 401, "NotAuthenticated", why);
		return;
	}
	if (strcmp(mode, "bundle-404") == 0 || strchr(id, '/') != NULL || id[0] == '.') {
		set_error(rs, 404, "NotAuthorizedOrNotFound", "Authorization failed or requested resource not found.");
		return;
	}
	snprintf(path, sizeof path, "%s/issued/%s.pem", dir, id);
	if ((f = fopen(path, "r")) == NULL) {
		set_error(rs, 404, "NotAuthorizedOrNotFound", "Authorization failed or requested resource not found.");
		return;
	}
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	if (n > 0 && (pem = calloc(1, (size_t)n + 1)) != NULL && fread(pem, 1, (size_t)n, f) == (size_t)n &&
	    (chain = fs_cert_pem(ca_cert, NULL)) != NULL)
		set_json(rs, 200, json_pack("{s:s, s:s, s:s, s:i, s:[s]}", "certificateId", id, "certificatePem", pem,
					    "certChainPem", chain, "versionNumber", 1, "stages", "CURRENT"));
	else
		set_error(rs, 500, "InternalServerError", "unreadable");
	fclose(f);
	free(pem);
	free(chain);
}


/* ---- the RPS ---- */

/* The next part of a multipart body at *@p: headers into @hdr, content bounds. */
static bool next_part(const char **p, const char *end, const char *delim, char *hdr, size_t hdr_len,
		      const char **content, size_t *content_len)
{
	const char *h, *he, *next;
	size_t dl = strlen(delim);

	/* *p is just after "--BOUNDARY\r\n". */
	h = *p;
	he = memmem(h, (size_t)(end - h), "\r\n\r\n", 4);
	if (he == NULL || (size_t)(he - h) >= hdr_len)
		return false;
	memcpy(hdr, h, (size_t)(he - h));
	hdr[he - h] = '\0';
	*content = he + 4;
	next = memmem(*content, (size_t)(end - *content), delim, dl);
	if (next == NULL)
		return false;
	*content_len = (size_t)(next - *content);
	*p = next + dl;
	return true;
}

/* NULL if @rq carries exactly the seed's form, else why not. */
static const char *check_form(const struct fs_request *rq)
{
	static char why[256];
	const char *ct = hval(rq, "content-type"), *acc = hval(rq, "accept"), *p, *end, *c1, *c2;
	char delim[128], hdr[512];
	size_t l1, l2;

	if (acc == NULL || strcmp(acc, "application/json") != 0)
		return "Accept is not application/json";
	if (ct == NULL || strncmp(ct, "multipart/form-data; boundary=", 30) != 0 || strlen(ct + 30) == 0 ||
	    strlen(ct + 30) > 70)
		return "Content-Type is not multipart/form-data with a boundary";
	snprintf(delim, sizeof delim, "\r\n--%s", ct + 30);
	p = rq->body;
	end = rq->body + rq->body_len;
	if (rq->body_len < strlen(delim) || memcmp(p, delim + 2, strlen(delim) - 2) != 0 ||
	    memcmp(p + strlen(delim) - 2, "\r\n", 2) != 0)
		return "the body does not start with the boundary";
	p += strlen(delim);
	if (!next_part(&p, end, delim, hdr, sizeof hdr, &c1, &l1))
		return "the first part is malformed";
	if (strncmp(hdr, "Content-Disposition: form-data; name=\"file\"; filename=\"", 55) != 0 ||
	    strstr(hdr, "\"\r\nContent-Type: application/zip") == NULL || strchr(strstr(hdr, "\r\n") + 2, '\n') != NULL)
		return "the first part is not file=@...;type=application/zip";
	if (l1 < 4 || memcmp(c1, "PK\x03\x04", 4) != 0)
		return "the file part is not a zip";
	if (p + 2 > end || memcmp(p, "\r\n", 2) != 0)
		return "the second part is malformed";
	p += 2;
	if (!next_part(&p, end, delim, hdr, sizeof hdr, &c2, &l2))
		return "the second part is malformed";
	if (strcmp(hdr, "Content-Disposition: form-data; name=\"infrastructure_id\"\r\nContent-Type: text/plain") != 0)
		return "the second part is not infrastructure_id=...;type=text/plain";
	if (l2 != strlen(infra_id) || memcmp(c2, infra_id, l2) != 0) {
		snprintf(why, sizeof why, "unknown infrastructure_id");
		return why;
	}
	if (end - p != 4 || memcmp(p, "--\r\n", 4) != 0)
		return "the body does not end after the second part";
	return NULL;
}

static void write_state(const char *state)
{
	char text[32];

	snprintf(text, sizeof text, "%s\n", state);
	fs_write_file_atomic(state_file, text, strlen(text), 0644);
}

static void update_state(void)
{
	static const char *const steps[] = { "Ready", "Disconnected", "Connecting", "Connected" };
	struct timespec now;
	long ms;
	size_t i;

	if (!ready)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (now.tv_sec - ready_at.tv_sec) * 1000 + (now.tv_nsec - ready_at.tv_nsec) / 1000000;
	i = (size_t)(ms / state_step_ms);
	if (i > 3)
		i = 3;
	if (never_connected && i > 2)
		i = 2;
	write_state(steps[i]);
}

static void rps(const struct fs_request *rq, const char *path, const char *mode, struct response *rs)
{
	const char *why;
	bool reg = strcmp(path, "/register") == 0;
	unsigned n;

	if (strcmp(rq->method, "POST") != 0 || (!reg && strcmp(path, "/check_ready") != 0)) {
		set_error(rs, 404, "NotFound", "no such route");
		return;
	}
	if ((why = check_form(rq)) != NULL) {
		set_error(rs, 400, "InvalidParameter", why);
		return;
	}
	n = reg ? ++register_calls : ++check_calls;
	if ((reg && (strcmp(mode, "register-fail-always") == 0 || (strcmp(mode, "register-fail-once") == 0 && n == 1))) ||
	    (!reg && (strcmp(mode, "check-fail-always") == 0 || (strcmp(mode, "check-fail-once") == 0 && n == 1)))) {
		set_error(rs, 500, "InternalError", reg ? "certificate registration failed (fake)" :
			  "certificate is not ready (fake)");
		return;
	}
	if (!reg) {
		ready = true;
		never_connected = strcmp(mode, "never-connected") == 0;
		clock_gettime(CLOCK_MONOTONIC, &ready_at);
		update_state();
	}
	set_json(rs, 200, json_pack("{s:s}", "status", reg ? "registered" : "ready"));
}

static void handle(const struct fs_request *rq, struct response *rs)
{
	char mode[64], path[2048], *q;
	size_t pl = strlen(P_RENEW_PREFIX), sl = strlen(P_RENEW_SUFFIX), n;
	FILE *log;

	read_control(mode, sizeof mode);
	snprintf(path, sizeof path, "%s", rq->target);
	if ((q = strchr(path, '?')) != NULL)
		*q = '\0';
	n = strlen(path);
	{
		char lp[PATH_MAX];

		snprintf(lp, sizeof lp, "%s/requests.log", dir);
		if ((log = fopen(lp, "a")) != NULL) {
			fprintf(log, "%s %s", rq->method, path);
			for (size_t i = 0; i < rq->nheaders; i++) {
				const char *c = rq->headers[i].name;

				/* Lower case, at most 63 bytes. */
				fputc(' ', log);
				for (size_t k = 0; c[k] != '\0' && k < 63; k++)
					fputc(c[k] >= 'A' && c[k] <= 'Z' ? c[k] + 32 : c[k], log);
			}
			fputc('\n', log);
			fclose(log);
		}
	}
	if (strcmp(mode, "hang") == 0) {
		rs->hang = true;
		return;
	}
	if (strcmp(mode, "huge") == 0) {
		rs->huge = true;
		return;
	}
	if (rps_mode) {
		rps(rq, path, mode, rs);
	} else if (strcmp(rq->method, "POST") == 0 && n > pl + sl && strncmp(path, P_RENEW_PREFIX, pl) == 0 &&
	    strcmp(path + n - sl, P_RENEW_SUFFIX) == 0) {
		char node[256];

		snprintf(node, sizeof node, "%.*s", (int)(n - pl - sl), path + pl);
		renew(rq, node, mode, rs);
	} else if (strcmp(rq->method, "GET") == 0 && strncmp(path, P_BUNDLE, strlen(P_BUNDLE)) == 0) {
		bundle(rq, path + strlen(P_BUNDLE), mode, rs);
	} else {
		set_error(rs, 404, "NotFound", "no such route");
	}
}

/* ---- HTTP over TLS ---- */

static void send_response(struct fs_conn *c, const struct response *rs)
{
	char lines[128];

	if (rs->hang) {
		/* Say nothing until the client gives up. */
		fs_wait_until_client_leaves(c);
		return;
	}
	if (rs->huge) {
		static char chunk[16384];

		memset(chunk, 'A', sizeof chunk);
		if (fs_send_head(c, 200, "OK", "Content-Type: application/json\r\n", 1024 * 1024) != 0)
			return;
		for (int i = 0; i < 64 && fs_write(c, chunk, sizeof chunk) == 0; i++)
			;
		return;
	}
	snprintf(lines, sizeof lines, "Content-Type: application/json\r\nopc-request-id: fake-%u\r\n", issued_count);
	if (fs_send_head(c, rs->status, rs->status == 200 ? "OK" : "Error", lines, (long)rs->body_len) == 0 &&
	    rs->body_len > 0)
		fs_write(c, rs->body, rs->body_len);
}

/* The fakesrv handler. A request it cannot read is not answered at all. */
static void serve(struct fs_conn *c, struct fs_request *rq)
{
	struct response rs;

	if (rq->error != 0 || rq->nheaders > MAX_HEADERS)
		return;
	memset(&rs, 0, sizeof rs);
	handle(rq, &rs);
	fs_log("%s %s -> %d%s", rq->method, rq->target, rs.status, rs.hang ? " (hang)" : rs.huge ? " (huge)" : "");
	send_response(c, &rs);
	free(rs.body);
}

static SSL_CTX *init_tls(void)
{
	return fs_tls_server_minted(NULL, ca_cert, ca_key, 365 * DAY, server_exts, NULL, FS_CLIENT_CERT_NONE);
}

static int issue_file(const char *csr_path, const char *out_path, long age_days, long days)
{
	FILE *f = fopen(csr_path, "r");
	X509_REQ *req = NULL;
	X509 *x = NULL;
	char *pem = NULL, text[16384];
	size_t n;
	time_t nb = time(NULL) - age_days * DAY;
	int r = 1;

	if (f == NULL)
		return 1;
	n = fread(text, 1, sizeof text - 1, f);
	fclose(f);
	text[n] = '\0';
	if ((req = parse_csr(text)) != NULL && (x = issue(req, NULL, ca_cert, ca_key, nb, nb + days * DAY, NULL)) != NULL &&
	    (pem = fs_cert_pem(x, NULL)) != NULL && fs_write_file_atomic(out_path, pem, strlen(pem), 0644) == 0)
		r = 0;
	free(pem);
	X509_free(x);
	X509_REQ_free(req);
	return r;
}

int main(int argc, char **argv)
{
	enum { O_DIR = 1, O_PORT_FILE, O_CONTROL, O_VERIFY_KEY, O_KEY_ID, O_ISSUE, O_OUT, O_AGE, O_DAYS, O_RPS,
	       O_INFRA, O_STATE_FILE, O_STEP };
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, O_DIR },
		{ "port-file", required_argument, NULL, O_PORT_FILE },
		{ "control", required_argument, NULL, O_CONTROL },
		{ "verify-key", required_argument, NULL, O_VERIFY_KEY },
		{ "key-id", required_argument, NULL, O_KEY_ID },
		{ "issue", required_argument, NULL, O_ISSUE },
		{ "out", required_argument, NULL, O_OUT },
		{ "age-days", required_argument, NULL, O_AGE },
		{ "days", required_argument, NULL, O_DAYS },
		{ "rps", no_argument, NULL, O_RPS },
		{ "infrastructure-id", required_argument, NULL, O_INFRA },
		{ "state-file", required_argument, NULL, O_STATE_FILE },
		{ "state-step-ms", required_argument, NULL, O_STEP },
		{ NULL, 0, NULL, 0 },
	};
	struct fs_server srv = {
		.handle = serve,
		.max_body_bytes = MAX_BODY_BYTES,
		/* One connection at a time: the handlers keep state in globals. */
		.serial = true,
		.tick_ms = 50,
	};
	const char *issue_csr = NULL, *out = NULL;
	char path[PATH_MAX];
	long age = 0, days = 60;
	int opt, lfd, port, r = 1;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case O_DIR: dir = optarg; break;
		case O_PORT_FILE: port_file = optarg; break;
		case O_CONTROL: control_file = optarg; break;
		case O_VERIFY_KEY: verify_key_path = optarg; break;
		case O_KEY_ID: key_id = optarg; break;
		case O_ISSUE: issue_csr = optarg; break;
		case O_OUT: out = optarg; break;
		case O_AGE: age = strtol(optarg, NULL, 10); break;
		case O_DAYS: days = strtol(optarg, NULL, 10); break;
		case O_RPS: rps_mode = true; break;
		case O_INFRA: infra_id = optarg; break;
		case O_STATE_FILE: state_file = optarg; break;
		case O_STEP: state_step_ms = strtol(optarg, NULL, 10) > 0 ? strtol(optarg, NULL, 10) : 300; break;
		default: return 2;
		}
	}
	if (dir == NULL || optind != argc)
		return 2;
	fs_log_init("fake-oci");
	if (fs_make_dir(dir, 0700) != 0 || !fs_pathf(path, sizeof path, "%s/issued", dir) ||
	    fs_make_dir(path, 0700) != 0)
		return 1;
	if (fs_load_or_make_ca(dir, "ca", "Fake OCI Roving Edge CA", 3650 * DAY, ca_exts, &ca_cert, &ca_key) != 0 ||
	    fs_load_or_make_ca(dir, "foreign-ca", "Foreign CA (not trusted)", 3650 * DAY, ca_exts, &foreign_cert,
			       &foreign_key) != 0) {
		fs_log("cannot make the CAs in %s", dir);
		return 1;
	}
	if (issue_csr != NULL)
		return out != NULL ? issue_file(issue_csr, out, age, days) : 2;
	if (rps_mode ? infra_id == NULL || state_file == NULL : verify_key_path == NULL || key_id == NULL)
		return 2;
	if (fs_signals_init() != 0)
		return 1;
	if ((srv.ctx = init_tls()) == NULL) {
		fs_log("TLS setup failed");
		goto out;
	}
	/* Loopback only: the CA key is in a plain file. */
	if ((lfd = fs_listen_announced("127.0.0.1", port_file, &port)) < 0)
		goto out;
	fs_log("listening on https://127.0.0.1:%d/", port);
	if (rps_mode)
		srv.tick = update_state;
	if (fs_serve(lfd, &srv) != 0)
		goto out;
	r = 0;
out:
	SSL_CTX_free(srv.ctx);
	X509_free(ca_cert);
	EVP_PKEY_free(ca_key);
	X509_free(foreign_cert);
	EVP_PKEY_free(foreign_key);
	return r;
}
