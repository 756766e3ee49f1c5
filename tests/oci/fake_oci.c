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
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define DAY 86400L
#define MAX_HEADER_BYTES (32 * 1024)
#define MAX_BODY_BYTES (64 * 1024)
#define MAX_HEADERS 64
#define IO_TIMEOUT_SECS 30
#define P_RENEW_PREFIX "/20201210/roverNodes/"
#define P_RENEW_SUFFIX "/actions/renewCertificate"
#define P_BUNDLE "/20210224/certificateBundles/"

static const char *dir, *port_file, *control_file, *verify_key_path, *key_id;
static X509 *ca_cert, *foreign_cert;
static EVP_PKEY *ca_key, *foreign_key;
static SSL_CTX *ssl_ctx;
static volatile sig_atomic_t stop;
static unsigned issued_count;
static bool rps_mode;
static const char *infra_id, *state_file;
static long state_step_ms = 300;
static unsigned register_calls, check_calls;
static struct timespec ready_at;
static bool ready, never_connected;

struct header {
	char name[64];
	char *value;
};

struct request {
	char method[16];
	char target[2048];            /* path and query, as sent */
	struct header h[MAX_HEADERS];
	size_t nh;
	char *body;
	size_t body_len;
};

struct response {
	int status;
	char *body;                   /* malloc'd */
	size_t body_len;
	bool hang, huge;
};

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fake-oci: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* ---- files and certificates ---- */

static int write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	char tmp[PATH_MAX];
	int fd;

	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -1;
	if (write(fd, data, len) != (ssize_t)len || close(fd) != 0 || rename(tmp, path) != 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

static char *pem_of(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p, *out = NULL;
	long n;

	if (b != NULL && PEM_write_bio_X509(b, x) && (n = BIO_get_mem_data(b, &p)) > 0 &&
	    (out = malloc((size_t)n + 1)) != NULL) {
		memcpy(out, p, (size_t)n);
		out[n] = '\0';
	}
	BIO_free(b);
	return out;
}

static int add_ext(X509 *issuer, X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *e;
	int ok;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	if ((e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value)) == NULL)
		return -1;
	ok = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok ? 0 : -1;
}

static X509 *new_cert(X509 *issuer, const X509_NAME *subject, EVP_PKEY *pub, time_t nb, time_t na)
{
	X509 *x = X509_new();
	unsigned char serial[16];
	BIGNUM *bn = NULL;

	if (x == NULL || RAND_bytes(serial, sizeof serial) != 1)
		goto fail;
	serial[0] = (unsigned char)((serial[0] & 0x7f) | 1);
	if ((bn = BN_bin2bn(serial, sizeof serial, NULL)) == NULL ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL || !X509_set_version(x, X509_VERSION_3) ||
	    !X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : subject) ||
	    !X509_set_subject_name(x, subject) || !X509_set_pubkey(x, pub) ||
	    !ASN1_TIME_set(X509_getm_notBefore(x), nb) || !ASN1_TIME_set(X509_getm_notAfter(x), na))
		goto fail;
	BN_free(bn);
	return x;
fail:
	BN_free(bn);
	X509_free(x);
	return NULL;
}

static int load_or_make_ca(const char *base, const char *cn, X509 **cert, EVP_PKEY **key)
{
	char cp[PATH_MAX], kp[PATH_MAX];
	X509_NAME *name = NULL;
	FILE *f;
	BIO *b = NULL;
	char *pem = NULL;
	time_t now = time(NULL);
	int r = -1;

	snprintf(cp, sizeof cp, "%s/%s.pem", dir, base);
	snprintf(kp, sizeof kp, "%s/%s.key", dir, base);
	if ((f = fopen(cp, "r")) != NULL) {
		*cert = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
		if ((f = fopen(kp, "r")) != NULL) {
			*key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
			fclose(f);
		}
		return *cert != NULL && *key != NULL ? 0 : -1;
	}
	if ((*key = EVP_EC_gen("P-256")) == NULL || (name = X509_NAME_new()) == NULL ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0) ||
	    (*cert = new_cert(NULL, name, *key, now - DAY, now + 3650 * DAY)) == NULL ||
	    add_ext(*cert, *cert, NID_basic_constraints, "critical,CA:TRUE") != 0 ||
	    add_ext(*cert, *cert, NID_key_usage, "critical,keyCertSign,cRLSign") != 0 ||
	    add_ext(*cert, *cert, NID_subject_key_identifier, "hash") != 0 ||
	    X509_sign(*cert, *key, EVP_sha256()) <= 0 || (pem = pem_of(*cert)) == NULL ||
	    write_file(cp, pem, strlen(pem), 0644) != 0 || (b = BIO_new(BIO_s_mem())) == NULL ||
	    !PEM_write_bio_PrivateKey(b, *key, NULL, NULL, 0, NULL, NULL))
		goto out;
	{
		char *p;
		long n = BIO_get_mem_data(b, &p);

		if (n <= 0 || write_file(kp, p, (size_t)n, 0600) != 0)
			goto out;
	}
	r = 0;
out:
	free(pem);
	BIO_free(b);
	X509_NAME_free(name);
	return r;
}

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
	x = new_cert(issuer, name != NULL ? name : X509_REQ_get_subject_name(req),
		     pub != NULL ? pub : X509_REQ_get0_pubkey(req), nb, na);
	if (x == NULL)
		goto out;
	for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);

		if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name && !X509_add_ext(x, e, -1))
			goto out;
	}
	ok = add_ext(issuer, x, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
	     add_ext(issuer, x, NID_key_usage, "critical,digitalSignature") == 0 &&
	     add_ext(issuer, x, NID_ext_key_usage, "clientAuth") == 0 &&
	     add_ext(issuer, x, NID_authority_key_identifier, "keyid:always") == 0 &&
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

static const char *hval(const struct request *rq, const char *name)
{
	for (size_t i = 0; i < rq->nh; i++)
		if (strcasecmp(rq->h[i].name, name) == 0)
			return rq->h[i].value;
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
static const char *check_signature(const struct request *rq, bool with_body)
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

static void renew(const struct request *rq, const char *node, const char *mode, struct response *rs)
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
	write_file(path, rq->body, rq->body_len, 0644);
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
	write_file(path, json_string_value(csr_j), json_string_length(csr_j), 0644);
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
	if (x == NULL || (pem = pem_of(x)) == NULL) {
		set_error(rs, 500, "InternalServerError", "could not issue");
		goto out;
	}
	snprintf(id, sizeof id, "ocid1.certificate.oc1.fake.%u", ++issued_count);
	snprintf(path, sizeof path, "%s/issued/%s.pem", dir, id);
	write_file(path, pem, strlen(pem), 0644);
	if (strcmp(mode, "direct") == 0) {
		char *chain = pem_of(ca_cert);

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

static void bundle(const struct request *rq, const char *id, const char *mode, struct response *rs)
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
	    (chain = pem_of(ca_cert)) != NULL)
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
static const char *check_form(const struct request *rq)
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
	write_file(state_file, text, strlen(text), 0644);
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

static void rps(const struct request *rq, const char *path, const char *mode, struct response *rs)
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

static void handle(const struct request *rq, struct response *rs)
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
			for (size_t i = 0; i < rq->nh; i++)
				fprintf(log, " %s", rq->h[i].name);
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

static int read_request(SSL *ssl, struct request *rq)
{
	char *buf = malloc(MAX_HEADER_BYTES + 1), *end = NULL, *line, *next, *sp;
	size_t have = 0, got, cl = 0, body_have;
	int r = -1;

	if (buf == NULL)
		return -1;
	while (end == NULL) {
		if (have == MAX_HEADER_BYTES || SSL_read_ex(ssl, buf + have, MAX_HEADER_BYTES - have, &got) != 1)
			goto out;
		have += got;
		buf[have] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	*end = '\0';
	line = buf;
	next = strstr(line, "\r\n");
	if (next != NULL)
		*next = '\0';
	if ((sp = strchr(line, ' ')) == NULL || (size_t)(sp - line) >= sizeof rq->method)
		goto out;
	memcpy(rq->method, line, (size_t)(sp - line));
	line = sp + 1;
	if ((sp = strchr(line, ' ')) == NULL || (size_t)(sp - line) >= sizeof rq->target)
		goto out;
	memcpy(rq->target, line, (size_t)(sp - line));
	for (line = next != NULL ? next + 2 : NULL; line != NULL && *line != '\0'; line = next != NULL ? next + 2 : NULL) {
		char *colon, *v;

		if ((next = strstr(line, "\r\n")) != NULL)
			*next = '\0';
		if ((colon = strchr(line, ':')) == NULL || rq->nh == MAX_HEADERS)
			goto out;
		*colon = '\0';
		for (v = colon + 1; *v == ' '; v++)
			;
		snprintf(rq->h[rq->nh].name, sizeof rq->h[rq->nh].name, "%s", line);
		for (char *c = rq->h[rq->nh].name; *c != '\0'; c++)
			*c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
		rq->h[rq->nh++].value = strdup(v);
		if (strcasecmp(line, "content-length") == 0)
			cl = strtoul(v, NULL, 10);
	}
	if (cl > MAX_BODY_BYTES || (rq->body = malloc(cl + 1)) == NULL)
		goto out;
	body_have = have - (size_t)(end + 4 - buf);
	if (body_have > cl)
		body_have = cl;
	memcpy(rq->body, end + 4, body_have);
	while (body_have < cl) {
		if (SSL_read_ex(ssl, rq->body + body_have, cl - body_have, &got) != 1)
			goto out;
		body_have += got;
	}
	rq->body[cl] = '\0';
	rq->body_len = cl;
	r = 0;
out:
	free(buf);
	return r;
}

static void send_response(SSL *ssl, int fd, const struct response *rs)
{
	char head[512];
	int n;

	if (rs->hang) {
		char c;

		/* Say nothing until the client gives up. */
		while (!stop) {
			struct pollfd p = { .fd = fd, .events = POLLIN };

			if (poll(&p, 1, 100) > 0 && recv(fd, &c, 1, 0) <= 0)
				break;
		}
		return;
	}
	if (rs->huge) {
		static char chunk[16384];
		size_t w;

		memset(chunk, 'A', sizeof chunk);
		n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			     "Content-Length: %d\r\nConnection: close\r\n\r\n", 1024 * 1024);
		SSL_write_ex(ssl, head, (size_t)n, &w);
		for (int i = 0; i < 64 && SSL_write_ex(ssl, chunk, sizeof chunk, &w) == 1; i++)
			;
		return;
	}
	n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
		     "opc-request-id: fake-%u\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", rs->status,
		     rs->status == 200 ? "OK" : "Error", issued_count, rs->body_len);
	{
		size_t w;

		if (SSL_write_ex(ssl, head, (size_t)n, &w) == 1 && rs->body_len > 0)
			SSL_write_ex(ssl, rs->body, rs->body_len, &w);
	}
}

static void serve(int fd)
{
	struct timeval tv = { .tv_sec = IO_TIMEOUT_SECS };
	struct request rq;
	struct response rs;
	SSL *ssl = SSL_new(ssl_ctx);

	memset(&rq, 0, sizeof rq);
	memset(&rs, 0, sizeof rs);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1 || read_request(ssl, &rq) != 0) {
		ERR_clear_error();
		goto out;
	}
	handle(&rq, &rs);
	logmsg("%s %s -> %d%s", rq.method, rq.target, rs.status, rs.hang ? " (hang)" : rs.huge ? " (huge)" : "");
	send_response(ssl, fd, &rs);
	SSL_shutdown(ssl);
out:
	ERR_clear_error();
	SSL_free(ssl);
	close(fd);
	for (size_t i = 0; i < rq.nh; i++)
		free(rq.h[i].value);
	free(rq.body);
	free(rs.body);
}

static int init_tls(void)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509_NAME *name = X509_NAME_new();
	X509 *x = NULL;
	time_t now = time(NULL);
	int r = -1;

	ssl_ctx = SSL_CTX_new(TLS_server_method());
	if (ssl_ctx == NULL || key == NULL || name == NULL ||
	    SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION) != 1 ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)"localhost", -1, -1, 0) ||
	    (x = new_cert(ca_cert, name, key, now - DAY, now + 365 * DAY)) == NULL ||
	    add_ext(ca_cert, x, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1") != 0 ||
	    add_ext(ca_cert, x, NID_ext_key_usage, "serverAuth") != 0 || X509_sign(x, ca_key, EVP_sha256()) <= 0 ||
	    SSL_CTX_use_certificate(ssl_ctx, x) != 1 || SSL_CTX_use_PrivateKey(ssl_ctx, key) != 1)
		goto out;
	r = 0;
out:
	X509_free(x);
	X509_NAME_free(name);
	EVP_PKEY_free(key);
	return r;
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
	    (pem = pem_of(x)) != NULL && write_file(out_path, pem, strlen(pem), 0644) == 0)
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
	struct sockaddr_in sa4;
	struct sigaction sa;
	socklen_t sl = sizeof sa4;
	const char *issue_csr = NULL, *out = NULL;
	char path[PATH_MAX], text[32];
	long age = 0, days = 60;
	int opt, lfd, one = 1;

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
	mkdir(dir, 0700);
	snprintf(path, sizeof path, "%s/issued", dir);
	mkdir(path, 0700);
	if (load_or_make_ca("ca", "Fake OCI Roving Edge CA", &ca_cert, &ca_key) != 0 ||
	    load_or_make_ca("foreign-ca", "Foreign CA (not trusted)", &foreign_cert, &foreign_key) != 0) {
		logmsg("cannot make the CAs in %s", dir);
		return 1;
	}
	if (issue_csr != NULL)
		return out != NULL ? issue_file(issue_csr, out, age, days) : 2;
	if (rps_mode ? infra_id == NULL || state_file == NULL : verify_key_path == NULL || key_id == NULL)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (init_tls() != 0) {
		logmsg("TLS setup failed");
		return 1;
	}
	/* Loopback only: the CA key is in a plain file. */
	memset(&sa4, 0, sizeof sa4);
	sa4.sin_family = AF_INET;
	sa4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(lfd, (struct sockaddr *)&sa4, sizeof sa4) != 0 || listen(lfd, 16) != 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa4, &sl) != 0) {
		logmsg("listen: %s", strerror(errno));
		return 1;
	}
	if (port_file != NULL) {
		snprintf(text, sizeof text, "%d\n", ntohs(sa4.sin_port));
		if (write_file(port_file, text, strlen(text), 0644) != 0)
			return 1;
	}
	logmsg("listening on https://127.0.0.1:%d/", ntohs(sa4.sin_port));
	while (!stop) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		int fd;

		if (rps_mode)
			update_state();
		if (poll(&p, 1, 50) <= 0)
			continue;
		if ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
			serve(fd);
	}
	close(lfd);
	SSL_CTX_free(ssl_ctx);
	X509_free(ca_cert);
	EVP_PKEY_free(ca_key);
	X509_free(foreign_cert);
	EVP_PKEY_free(foreign_key);
	return 0;
}
