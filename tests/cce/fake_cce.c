/*
 * fake-cce: a local imitation of the two Huawei Cloud CCE calls that
 * keysvc-cce makes, for its tests. Test code only: loopback, keys in
 * plain files.
 *
 *   fake-cce --dir DIR --token-file FILE [--port-file FILE] [--control FILE]
 *
 *   --dir DIR        made at start: ca.pem/ca.key (the test CA), server.pem/
 *                    server.key (127.0.0.1, localhost), other-ca.pem (an
 *                    unrelated CA, for the pinning test); last-body.json is
 *                    the last rotatecredentials body that passed the checks.
 *   --token-file F   the X-Auth-Token every request must carry.
 *   --port-file F    the port (bound as port 0 on 127.0.0.1), written once
 *                    the server listens.
 *   --control F      the mode, first word of the file, read on every
 *                    request (see modes[]); missing or empty: normal.
 *
 * Every request is CHECKED the way the client should be held to: method,
 * path, Content-Type, the token, and the JSON body (fields, types, the
 * component enum, certificateExpirationTime 0..8784, certContent present
 * if and only if the component is custom, strict base64, each part 1 byte
 * ..1 MiB decoded). A bad request gets 400 in CCE's error shape, so a
 * client bug shows as a failed test. One line per request goes to stderr
 * (never the token or the body).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
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
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "proto/b64.h"

#define MAX_HEADER_BYTES (32 * 1024)
/* Three base64 parts of 1 MiB each, and some room to see oversized ones arrive. */
#define MAX_BODY_BYTES (8 * 1024 * 1024)
#define PART_MAX (1024 * 1024)
#define EXPIRATION_MAX 8784
#define TOKEN_MAX 8192
#define MAX_JOBS 256
#define IO_TIMEOUT_SECS 30
#define DAY 86400L

enum mode {
	M_NORMAL, M_ERROR1, M_ERROR2, M_401, M_403, M_404, M_500, M_GARBAGE, M_HANG,
	M_JOB_FAILS, M_JOB_PENDING, M_JOB_FLAT,
};

static const struct {
	const char *word;
	enum mode mode;
	const char *effect;
} modes[] = {
	{ "normal", M_NORMAL, "accept; jobs are Running once, then Success" },
	{ "error-shape-1", M_ERROR1, "rotation: 400 {errorCode, errorMessage}" },
	{ "error-shape-2", M_ERROR2, "rotation: 400 {error_code, error_msg}" },
	{ "401", M_401, "rotation: 401, as for an expired token" },
	{ "403", M_403, "rotation: 403" },
	{ "404", M_404, "rotation: 404, no such cluster" },
	{ "500", M_500, "rotation: 500" },
	{ "garbage", M_GARBAGE, "rotation: 200 with a body that is not JSON" },
	{ "hang", M_HANG, "rotation: read the request, never answer" },
	{ "job-fails", M_JOB_FAILS, "job: Failed, with a reason" },
	{ "job-pending-forever", M_JOB_PENDING, "job: Running, always" },
	{ "job-flat", M_JOB_FLAT, "job: {\"status\": \"Success\"} (the flat shape)" },
};

struct job {
	char id[40];
	int polls;
};

struct request {
	char method[16];
	char path[2048];
	char content_type[128];
	char *token;
	char *body;
	size_t body_len;
};

struct response {
	int status;
	bool hang;
	char *body;
	char note[160];
};

static const char *dir, *port_file, *control_file, *token_file;
static char expected_token[TOKEN_MAX];
static SSL_CTX *ssl_ctx;
static atomic_bool stopping;
static atomic_int active;
static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct job jobs[MAX_JOBS];
static int n_jobs;

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
	va_list ap;
	char line[512];

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "fake-cce: %s\n", line);
}

/* ---- files and certificates ---- */

static int write_file(const char *name, const void *data, size_t len, mode_t mode)
{
	char path[4096], tmp[4200];
	int fd, r = -1;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)) < 0)
		return -1;
	if (write(fd, data, len) == (ssize_t)len && fsync(fd) == 0)
		r = 0;
	close(fd);
	if (r == 0 && rename(tmp, path) != 0)
		r = -1;
	return r;
}

static int write_pem(const char *name, X509 *x, EVP_PKEY *k)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p;
	long n;
	int r = -1;

	if (b == NULL)
		return -1;
	if ((x != NULL && PEM_write_bio_X509(b, x) == 1) || (k != NULL && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1)) {
		n = BIO_get_mem_data(b, &p);
		r = write_file(name, p, (size_t)n, k != NULL ? 0600 : 0644);
	}
	BIO_free(b);
	return r;
}

static int add_ext(X509 *issuer, X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *e;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	if ((e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value)) == NULL)
		return -1;
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return 0;
}

/* A certificate for @key named @cn, signed by @issuer/@ikey (self-signed when NULL). */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ikey, bool ca)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	unsigned char serial[16];
	BIGNUM *bn = NULL;
	bool ok = false;

	if (x == NULL || name == NULL || RAND_bytes(serial, sizeof(serial)) != 1)
		goto out;
	serial[0] &= 0x7f;
	if ((bn = BN_bin2bn(serial, sizeof(serial), NULL)) == NULL || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
		goto out;
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
	X509_set_version(x, 2);
	X509_set_subject_name(x, name);
	X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
	X509_gmtime_adj(X509_getm_notBefore(x), -DAY);
	X509_gmtime_adj(X509_getm_notAfter(x), 30 * DAY);
	X509_set_pubkey(x, key);
	if (issuer == NULL) {
		issuer = x;
		ikey = key;
	}
	if (add_ext(issuer, x, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE") ||
	    add_ext(issuer, x, NID_key_usage, ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature") ||
	    add_ext(issuer, x, NID_subject_key_identifier, "hash") ||
	    (!ca && add_ext(issuer, x, NID_ext_key_usage, "serverAuth")) ||
	    (!ca && add_ext(issuer, x, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1")))
		goto out;
	ok = X509_sign(x, ikey, EVP_sha256()) > 0;
out:
	BN_free(bn);
	X509_NAME_free(name);
	if (!ok) {
		X509_free(x);
		x = NULL;
	}
	return x;
}

static int init_tls(void)
{
	EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *srv_key = EVP_EC_gen("P-256"), *other_key = EVP_EC_gen("P-256");
	X509 *ca = NULL, *srv = NULL, *other = NULL;
	int r = -1;

	if (ca_key == NULL || srv_key == NULL || other_key == NULL ||
	    (ca = make_cert("fake-cce test CA", ca_key, NULL, NULL, true)) == NULL ||
	    (srv = make_cert("localhost", srv_key, ca, ca_key, false)) == NULL ||
	    (other = make_cert("an unrelated CA", other_key, NULL, NULL, true)) == NULL)
		goto out;
	if (write_pem("ca.pem", ca, NULL) || write_pem("ca.key", NULL, ca_key) || write_pem("server.pem", srv, NULL) ||
	    write_pem("server.key", NULL, srv_key) || write_pem("other-ca.pem", other, NULL))
		goto out;
	if ((ssl_ctx = SSL_CTX_new(TLS_server_method())) == NULL ||
	    SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_use_certificate(ssl_ctx, srv) != 1 || SSL_CTX_use_PrivateKey(ssl_ctx, srv_key) != 1)
		goto out;
	r = 0;
out:
	if (r != 0)
		logmsg("TLS setup failed: %s", ERR_reason_error_string(ERR_peek_last_error()));
	X509_free(ca);
	X509_free(srv);
	X509_free(other);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(srv_key);
	EVP_PKEY_free(other_key);
	return r;
}

static int load_token(void)
{
	FILE *f = fopen(token_file, "r");
	size_t n;

	if (f == NULL)
		return -1;
	n = fread(expected_token, 1, sizeof(expected_token) - 1, f);
	fclose(f);
	expected_token[n] = '\0';
	while (n > 0 && (expected_token[n - 1] == '\n' || expected_token[n - 1] == '\r'))
		expected_token[--n] = '\0';
	return n > 0 ? 0 : -1;
}

static enum mode read_mode(void)
{
	char word[64] = "";
	FILE *f;

	if (control_file == NULL || (f = fopen(control_file, "r")) == NULL)
		return M_NORMAL;
	if (fscanf(f, "%63s", word) != 1)
		word[0] = '\0';
	fclose(f);
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (strcmp(word, modes[i].word) == 0)
			return modes[i].mode;
	if (word[0] != '\0')
		logmsg("unknown mode \"%s\" in the control file; normal", word);
	return M_NORMAL;
}

/* ---- answers ---- */

static void answer(struct response *rs, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void answer(struct response *rs, int status, const char *fmt, ...)
{
	va_list ap;

	rs->status = status;
	free(rs->body);
	va_start(ap, fmt);
	if (vasprintf(&rs->body, fmt, ap) < 0)
		rs->body = NULL;
	va_end(ap);
}

/* CCE's own error shape, with the reason also in the log. */
static void bad_request(struct response *rs, const char *why)
{
	json_t *j = json_pack("{s:s,s:s}", "errorCode", "CCE.01400001", "errorMessage", why);

	rs->status = 400;
	free(rs->body);
	rs->body = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	snprintf(rs->note, sizeof(rs->note), "bad request: %s", why);
}

static bool b64_part_ok(json_t *content, const char *name, struct response *rs)
{
	json_t *v = json_object_get(content, name);
	uint8_t *dec = NULL;
	size_t dec_len = 0;
	char why[128];
	int r;

	if (!json_is_string(v)) {
		snprintf(why, sizeof(why), "certContent.%s must be a string", name);
		bad_request(rs, why);
		return false;
	}
	r = ks_b64_decode(json_string_value(v), json_string_length(v), PART_MAX, &dec, &dec_len);
	free(dec);
	if (r != 0 || dec_len == 0) {
		snprintf(why, sizeof(why), "certContent.%s: %s", name,
			 r == -EMSGSIZE ? "over 1 MB" : r != 0 ? "not valid base64" : "empty");
		bad_request(rs, why);
		return false;
	}
	return true;
}

/* The body of rotatecredentials, checked field by field; @rs is set when it is refused. */
static bool rotate_body_ok(const struct request *rq, struct response *rs)
{
	json_t *j = NULL, *comp, *exp, *content, *v;
	const char *key, *c;
	bool ok = false, custom;

	if (strncasecmp(rq->content_type, "application/json", 16) != 0 ||
	    (rq->content_type[16] != '\0' && rq->content_type[16] != ';')) {
		bad_request(rs, "Content-Type must be application/json");
		return false;
	}
	if ((j = json_loadb(rq->body, rq->body_len, JSON_REJECT_DUPLICATES, NULL)) == NULL || !json_is_object(j)) {
		bad_request(rs, "the body is not a JSON object");
		goto out;
	}
	json_object_foreach(j, key, v) {
		if (strcmp(key, "component") != 0 && strcmp(key, "certificateExpirationTime") != 0 &&
		    strcmp(key, "certContent") != 0) {
			bad_request(rs, "unknown field in the body");
			goto out;
		}
	}
	comp = json_object_get(j, "component");
	c = json_string_value(comp);
	if (c == NULL || (strcmp(c, "all") != 0 && strcmp(c, "service-account-controller") != 0 &&
			  strcmp(c, "custom") != 0)) {
		bad_request(rs, "component must be all, service-account-controller or custom");
		goto out;
	}
	custom = strcmp(c, "custom") == 0;
	exp = json_object_get(j, "certificateExpirationTime");
	if (exp != NULL && (!json_is_integer(exp) || json_integer_value(exp) < 0 ||
			    json_integer_value(exp) > EXPIRATION_MAX)) {
		bad_request(rs, "certificateExpirationTime must be an integer 0..8784");
		goto out;
	}
	content = json_object_get(j, "certContent");
	if ((content != NULL) != custom) {
		bad_request(rs, custom ? "certContent is mandatory when component is custom"
			    : "certContent goes only with component custom");
		goto out;
	}
	if (content != NULL) {
		if (!json_is_object(content) || json_object_size(content) != 3) {
			bad_request(rs, "certContent must be an object of ca, cert and privateKey");
			goto out;
		}
		if (!b64_part_ok(content, "ca", rs) || !b64_part_ok(content, "cert", rs) ||
		    !b64_part_ok(content, "privateKey", rs))
			goto out;
	}
	ok = true;
out:
	json_decref(j);
	return ok;
}

static bool id_ok(const char *s, size_t n)
{
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
		      s[i] == '-'))
			return false;
	return true;
}

/* "/api/v3/projects/P/SEG/ID[TAIL]": the ID into @id, or false. */
static bool route(const char *path, const char *seg, const char *tail, char *id, size_t id_len)
{
	static const char prefix[] = "/api/v3/projects/";
	const char *p, *s, *e;
	size_t n;

	if (strncmp(path, prefix, sizeof(prefix) - 1) != 0)
		return false;
	p = path + sizeof(prefix) - 1;
	if ((s = strchr(p, '/')) == NULL || !id_ok(p, (size_t)(s - p)))
		return false;
	n = strlen(seg);
	if (strncmp(s + 1, seg, n) != 0 || s[1 + n] != '/')
		return false;
	s += 2 + n;
	e = s + strcspn(s, "/");
	if (!id_ok(s, (size_t)(e - s)) || strcmp(e, tail) != 0 || (size_t)(e - s) >= id_len)
		return false;
	memcpy(id, s, (size_t)(e - s));
	id[e - s] = '\0';
	return true;
}

static void new_job(struct response *rs)
{
	unsigned char r[16];
	char id[40];

	RAND_bytes(r, sizeof(r));
	snprintf(id, sizeof(id), "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1],
		 r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]);
	pthread_mutex_lock(&jobs_lock);
	if (n_jobs == MAX_JOBS)
		n_jobs = 0;
	snprintf(jobs[n_jobs].id, sizeof(jobs[n_jobs].id), "%s", id);
	jobs[n_jobs++].polls = 0;
	pthread_mutex_unlock(&jobs_lock);
	answer(rs, 200, "{\"jobid\":\"%s\"}", id);
	snprintf(rs->note, sizeof(rs->note), "job %s", id);
}

static void get_job(const char *id, enum mode mode, struct response *rs)
{
	int polls = -1;

	pthread_mutex_lock(&jobs_lock);
	for (int i = 0; i < n_jobs; i++)
		if (strcmp(jobs[i].id, id) == 0)
			polls = jobs[i].polls++;
	pthread_mutex_unlock(&jobs_lock);
	if (polls < 0) {
		answer(rs, 404, "{\"errorCode\":\"CCE.01404001\",\"errorMessage\":\"Job %s not found\"}", id);
		return;
	}
	switch (mode) {
	case M_JOB_FAILS:
		answer(rs, 200, "{\"kind\":\"Job\",\"apiVersion\":\"v3\",\"metadata\":{\"uid\":\"%s\"},"
		       "\"spec\":{\"type\":\"RotateCredentials\"},\"status\":{\"phase\":\"Failed\","
		       "\"reason\":\"rotating the certificates failed: kube-apiserver did not come back\"}}", id);
		break;
	case M_JOB_PENDING:
		answer(rs, 200, "{\"kind\":\"Job\",\"metadata\":{\"uid\":\"%s\"},\"status\":{\"phase\":\"%s\"}}", id,
		       polls == 0 ? "Initializing" : "Running");
		break;
	case M_JOB_FLAT:
		answer(rs, 200, "{\"status\":\"Success\"}");
		break;
	default:
		answer(rs, 200, "{\"kind\":\"Job\",\"apiVersion\":\"v3\",\"metadata\":{\"uid\":\"%s\"},"
		       "\"spec\":{\"type\":\"RotateCredentials\"},\"status\":{\"phase\":\"%s\",\"reason\":\"\"}}", id,
		       polls == 0 ? "Running" : "Success");
	}
}

static bool token_matches(const char *got)
{
	size_t a, b;

	if (got == NULL)
		return false;
	a = strlen(got);
	b = strlen(expected_token);
	return a == b && CRYPTO_memcmp(got, expected_token, a) == 0;
}

static void handle(const struct request *rq, struct response *rs)
{
	enum mode mode = read_mode();
	char id[80];

	/* Authentication first, as Huawei's API gateway does, in its shape. */
	if (!token_matches(rq->token)) {
		answer(rs, 401, "{\"error_code\":\"APIGW.0301\",\"error_msg\":\"Incorrect IAM authentication "
		       "information: %s\",\"request_id\":\"fake\"}", rq->token == NULL ? "no X-Auth-Token" : "token mismatch");
		snprintf(rs->note, sizeof(rs->note), "%s", rq->token == NULL ? "no X-Auth-Token" : "wrong token");
		return;
	}
	if (route(rq->path, "clusters", "/rotatecredentials", id, sizeof(id))) {
		if (strcmp(rq->method, "POST") != 0) {
			answer(rs, 405, "{\"errorCode\":\"CCE.01405001\",\"errorMessage\":\"method not allowed\"}");
			return;
		}
		if (!rotate_body_ok(rq, rs))
			return;
		switch (mode) {
		case M_ERROR1:
			answer(rs, 400, "{\"errorCode\":\"CCE.01400013\",\"errorMessage\":\"Cluster status is not "
			       "available for rotating credentials\"}");
			return;
		case M_ERROR2:
			answer(rs, 400, "{\"error_code\":\"CCE.01400001\",\"error_msg\":\"Invalid request: the "
			       "cluster version does not support this component\"}");
			return;
		case M_401:
			answer(rs, 401, "{\"error_code\":\"APIGW.0307\",\"error_msg\":\"The token must be updated.\"}");
			return;
		case M_403:
			answer(rs, 403, "{\"errorCode\":\"CCE.01403001\",\"errorMessage\":\"Forbidden: the user has "
			       "no cce:cluster:rotateCredentials permission\"}");
			return;
		case M_404:
			answer(rs, 404, "{\"errorCode\":\"CCE.01404001\",\"errorMessage\":\"Resource not found: "
			       "cluster %s\"}", id);
			return;
		case M_500:
			answer(rs, 500, "{\"errorCode\":\"CCE.01500001\",\"errorMessage\":\"Internal server error\"}");
			return;
		case M_GARBAGE:
			answer(rs, 200, "<html><body>Service Unavailable</body></html>");
			return;
		case M_HANG:
			rs->hang = true;
			return;
		default:
			break;
		}
		if (write_file("last-body.json", rq->body, rq->body_len, 0600) != 0)
			logmsg("cannot save last-body.json: %s", strerror(errno));
		new_job(rs);
		return;
	}
	if (route(rq->path, "jobs", "", id, sizeof(id))) {
		if (strcmp(rq->method, "GET") != 0) {
			answer(rs, 405, "{\"errorCode\":\"CCE.01405001\",\"errorMessage\":\"method not allowed\"}");
			return;
		}
		get_job(id, mode, rs);
		return;
	}
	answer(rs, 404, "{\"error_code\":\"APIGW.0101\",\"error_msg\":\"The API does not exist or has not been "
	       "published in the environment\"}");
}

/* ---- HTTP over TLS ---- */

static int read_request(SSL *ssl, struct request *rq, struct response *rs)
{
	char *buf = malloc(MAX_HEADER_BYTES + 1), *end = NULL, *line, *next, *sp;
	size_t have = 0, got, body_have;
	unsigned long long length = 0;
	int r = -1;

	if (buf == NULL)
		return -1;
	while (end == NULL) {
		if (have == MAX_HEADER_BYTES) {
			answer(rs, 431, "{\"errorCode\":\"CCE.01400001\",\"errorMessage\":\"headers too large\"}");
			r = 1;
			goto out;
		}
		if (SSL_read_ex(ssl, buf + have, MAX_HEADER_BYTES - have, &got) != 1)
			goto out;
		have += got;
		buf[have] = '\0';
		end = memmem(buf, have, "\r\n\r\n", 4);
	}
	*end = '\0';
	r = 1;
	line = buf;
	if ((next = strstr(line, "\r\n")) != NULL)
		*next = '\0';
	if ((sp = strchr(line, ' ')) == NULL || (size_t)(sp - line) >= sizeof(rq->method))
		goto bad;
	memcpy(rq->method, line, (size_t)(sp - line));
	line = sp + 1;
	if ((sp = strchr(line, ' ')) == NULL || (size_t)(sp - line) >= sizeof(rq->path))
		goto bad;
	memcpy(rq->path, line, (size_t)(sp - line));
	for (line = next ? next + 2 : NULL; line != NULL && *line; line = next ? next + 2 : NULL) {
		char *colon, *v;

		if ((next = strstr(line, "\r\n")) != NULL)
			*next = '\0';
		if ((colon = strchr(line, ':')) == NULL)
			goto bad;
		*colon = '\0';
		for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
			;
		if (strcasecmp(line, "Content-Length") == 0)
			length = strtoull(v, NULL, 10);
		else if (strcasecmp(line, "Content-Type") == 0)
			snprintf(rq->content_type, sizeof(rq->content_type), "%s", v);
		else if (strcasecmp(line, "X-Auth-Token") == 0) {
			/* Two of them is a client bug: answered as a missing token. */
			if (rq->token != NULL)
				rq->token[0] = '\0';
			else
				rq->token = strdup(v);
		} else if (strcasecmp(line, "Transfer-Encoding") == 0)
			goto bad;
	}
	if (length > MAX_BODY_BYTES) {
		answer(rs, 413, "{\"errorCode\":\"CCE.01400001\",\"errorMessage\":\"body too large\"}");
		goto out;
	}
	if ((rq->body = malloc(length + 1)) == NULL) {
		r = -1;
		goto out;
	}
	body_have = have - (size_t)(end + 4 - buf);
	if (body_have > length)
		body_have = length;
	memcpy(rq->body, end + 4, body_have);
	while (body_have < length) {
		if (SSL_read_ex(ssl, rq->body + body_have, length - body_have, &got) != 1) {
			r = -1;
			goto out;
		}
		body_have += got;
	}
	rq->body[body_have] = '\0';
	rq->body_len = body_have;
	r = 0;
	goto out;
bad:
	answer(rs, 400, "{\"errorCode\":\"CCE.01400001\",\"errorMessage\":\"malformed HTTP request\"}");
out:
	ERR_clear_error();
	free(buf);
	return r;
}

static void send_response(SSL *ssl, const struct response *rs)
{
	char head[256];
	size_t len = rs->body != NULL ? strlen(rs->body) : 0, done;
	int n = snprintf(head, sizeof(head), "HTTP/1.1 %d Fake\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n", rs->status, len);

	if (SSL_write_ex(ssl, head, (size_t)n, &done) == 1 && len > 0)
		SSL_write_ex(ssl, rs->body, len, &done);
	ERR_clear_error();
}

/* hang: say nothing until the client gives up or the server stops. */
static void wait_for_client(int fd)
{
	char junk[4096];

	while (!atomic_load(&stopping)) {
		struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
		int n = poll(&p, 1, 200);

		if (n < 0 && errno != EINTR)
			return;
		if (n > 0 && ((p.revents & (POLLRDHUP | POLLHUP | POLLERR)) || recv(fd, junk, sizeof(junk), 0) <= 0))
			return;
	}
}

static void *conn_main(void *arg)
{
	int fd = (int)(intptr_t)arg;
	struct request rq;
	struct response rs;
	SSL *ssl = SSL_new(ssl_ctx);
	int rr;

	memset(&rq, 0, sizeof(rq));
	memset(&rs, 0, sizeof(rs));
	if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1) {
		logmsg("TLS handshake failed: %s", ERR_reason_error_string(ERR_peek_last_error()));
		goto out;
	}
	if ((rr = read_request(ssl, &rq, &rs)) < 0)
		goto out;
	if (rr == 0)
		handle(&rq, &rs);
	if (rs.hang) {
		logmsg("%s %s hang", rq.method, rq.path);
		wait_for_client(fd);
		goto out;
	}
	send_response(ssl, &rs);
	logmsg("%s %s %d%s%s", rq.method[0] ? rq.method : "-", rq.path[0] ? rq.path : "-", rs.status,
	       rs.note[0] ? " " : "", rs.note);
	SSL_shutdown(ssl);
out:
	ERR_clear_error();
	SSL_free(ssl);
	close(fd);
	if (rq.token != NULL)
		OPENSSL_cleanse(rq.token, strlen(rq.token));
	free(rq.token);
	if (rq.body != NULL)
		OPENSSL_cleanse(rq.body, rq.body_len);
	free(rq.body);
	free(rs.body);
	OPENSSL_thread_stop();
	atomic_fetch_sub(&active, 1);
	return NULL;
}

static void on_signal(int sig)
{
	(void)sig;
	atomic_store(&stopping, true);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: fake-cce --dir DIR --token-file FILE [--port-file FILE] [--control FILE]\ncontrol words:\n");
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		fprintf(f, "  %-20s %s\n", modes[i].word, modes[i].effect);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "port-file", required_argument, NULL, 'p' },
		{ "control", required_argument, NULL, 'c' },
		{ "token-file", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct sockaddr_in sa;
	struct sigaction act;
	socklen_t sl = sizeof(sa);
	char port[16];
	int c, lfd = -1, one = 1, r = 1;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'p': port_file = optarg; break;
		case 'c': control_file = optarg; break;
		case 't': token_file = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || dir == NULL || token_file == NULL) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	memset(&act, 0, sizeof(act));
	act.sa_handler = on_signal;
	sigaction(SIGTERM, &act, NULL);
	sigaction(SIGINT, &act, NULL);
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		logmsg("%s: %s", dir, strerror(errno));
		return 1;
	}
	if (load_token() != 0) {
		logmsg("--token-file %s: unreadable or empty", token_file);
		return 1;
	}
	if (init_tls() != 0)
		goto out;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 64) != 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0) {
		logmsg("cannot listen on 127.0.0.1: %s", strerror(errno));
		goto out;
	}
	snprintf(port, sizeof(port), "%d\n", ntohs(sa.sin_port));
	if (port_file != NULL) {
		char tmp[4200];
		FILE *f;

		snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
		if ((f = fopen(tmp, "w")) == NULL || fputs(port, f) < 0 || fclose(f) != 0 || rename(tmp, port_file) != 0) {
			logmsg("cannot write %s", port_file);
			goto out;
		}
	}
	logmsg("listening on https://127.0.0.1:%d/ (dir %s)", ntohs(sa.sin_port), dir);
	while (!atomic_load(&stopping)) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		struct timeval tv = { .tv_sec = IO_TIMEOUT_SECS };
		pthread_attr_t attr;
		pthread_t tid;
		int fd;

		if (poll(&p, 1, 200) <= 0 || (fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		/* One thread per connection: a hanging answer holds only its own. */
		atomic_fetch_add(&active, 1);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&tid, &attr, conn_main, (void *)(intptr_t)fd) != 0) {
			atomic_fetch_sub(&active, 1);
			close(fd);
		}
		pthread_attr_destroy(&attr);
	}
	r = 0;
out:
	atomic_store(&stopping, true);
	if (lfd >= 0)
		close(lfd);
	/* Hanging connections notice `stopping` within 200 ms. */
	for (int i = 0; i < 50 && atomic_load(&active) > 0; i++)
		usleep(100 * 1000);
	if (atomic_load(&active) == 0)
		SSL_CTX_free(ssl_ctx);
	OPENSSL_cleanse(expected_token, sizeof(expected_token));
	return r;
}
