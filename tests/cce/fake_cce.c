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
 *   --token-file F   the X-Auth-Token every request must carry (read again
 *                    for every request).
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
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "fakesrv.h"
#include "proto/b64.h"

/* Three base64 parts of 1 MiB each, and some room to see oversized ones arrive. */
#define MAX_BODY_BYTES (8 * 1024 * 1024)
#define PART_MAX (1024 * 1024)
#define EXPIRATION_MAX 8784
/* Huawei takes X-Auth-Token values of up to 16384 bytes; the newline and the NUL. */
#define TOKEN_MAX (16384 + 2)
#define MAX_JOBS 256
#define DAY FS_DAY

enum mode {
	M_NORMAL, M_ERROR1, M_ERROR2, M_401, M_403, M_404, M_500, M_GARBAGE, M_HANG,
	M_JOB_FAILS, M_JOB_PENDING, M_JOB_FLAT, M_JOB_500_ONCE, M_JOB_HANG,
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
	{ "job-500-once", M_JOB_500_ONCE, "job: the first query of each job 500 (as CCE's gateway does at times), then normal" },
	{ "job-hang", M_JOB_HANG, "job: read the query, never answer" },
};

struct job {
	char id[40];
	int polls;
};

struct response {
	int status;
	bool hang;
	char *body;
	char note[160];
};

static const char *dir, *port_file, *control_file, *token_file;
static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct job jobs[MAX_JOBS];
static int n_jobs;

/* ---- files and certificates ---- */

static const struct fs_ext ca_exts[] = {
	{ NID_basic_constraints, "critical,CA:TRUE" },
	{ NID_key_usage, "critical,keyCertSign,cRLSign" },
	{ NID_subject_key_identifier, "hash" },
	{ 0, NULL },
};

static const struct fs_ext server_exts[] = {
	{ NID_basic_constraints, "critical,CA:FALSE" },
	{ NID_key_usage, "critical,digitalSignature" },
	{ NID_subject_key_identifier, "hash" },
	{ NID_ext_key_usage, "serverAuth" },
	{ NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1" },
	{ 0, NULL },
};

/* Fresh certificates at every start: DIR/ca.pem, ca.key, server.pem,
 * server.key and other-ca.pem. */
static SSL_CTX *init_tls(void)
{
	char ca_path[PATH_MAX], ca_key_path[PATH_MAX], other_path[PATH_MAX];
	time_t now = time(NULL);
	EVP_PKEY *ca_key = NULL, *srv_key = NULL, *other_key = NULL;
	X509 *ca = NULL, *srv = NULL, *other = NULL;
	SSL_CTX *ctx = NULL;

	if (!fs_pathf(ca_path, sizeof ca_path, "%s/ca.pem", dir) ||
	    !fs_pathf(ca_key_path, sizeof ca_key_path, "%s/ca.key", dir) ||
	    !fs_pathf(other_path, sizeof other_path, "%s/other-ca.pem", dir))
		goto out;
	if (fs_mint_ca("fake-cce test CA", 30 * DAY, ca_exts, &ca, &ca_key) != 0 ||
	    fs_mint_server_cert(dir, ca, ca_key, now - DAY, now + 30 * DAY, server_exts, &srv, &srv_key) != 0 ||
	    fs_mint_ca("an unrelated CA", 30 * DAY, ca_exts, &other, &other_key) != 0)
		goto out;
	if (fs_write_cert(ca_path, ca) != 0 || fs_write_key(ca_key_path, ca_key) != 0 ||
	    fs_write_cert(other_path, other) != 0)
		goto out;
	ctx = fs_tls_server_ctx(srv, srv_key, NULL, FS_CLIENT_CERT_NONE);
out:
	if (!ctx)
		fs_log("TLS setup failed");
	X509_free(ca);
	X509_free(srv);
	X509_free(other);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(srv_key);
	EVP_PKEY_free(other_key);
	return ctx;
}

/* Read at every request, so that a test can hand the server another token
 * (e.g. one of Huawei's largest) without a restart. */
static int load_token(char *token, size_t len)
{
	FILE *f = fopen(token_file, "r");
	size_t n;

	if (f == NULL)
		return -1;
	n = fread(token, 1, len - 1, f);
	fclose(f);
	token[n] = '\0';
	while (n > 0 && (token[n - 1] == '\n' || token[n - 1] == '\r'))
		token[--n] = '\0';
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
		fs_log("unknown mode \"%s\" in the control file; normal", word);
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
static bool rotate_body_ok(const struct fs_request *rq, struct response *rs)
{
	json_t *j = NULL, *comp, *exp, *content, *v;
	const char *key, *c, *type = fs_header(rq, "Content-Type");
	bool ok = false, custom;

	if (type == NULL || strncasecmp(type, "application/json", 16) != 0 || (type[16] != '\0' && type[16] != ';')) {
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
	case M_JOB_500_ONCE:
		if (polls == 0) {
			answer(rs, 500, "{\"error_code\":\"CCE.01500001\",\"error_msg\":\"Internal server error\"}");
			return;
		}
		answer(rs, 200, "{\"kind\":\"Job\",\"metadata\":{\"uid\":\"%s\"},\"status\":{\"phase\":\"%s\"}}", id,
		       polls == 1 ? "Running" : "Success");
		break;
	case M_JOB_HANG:
		rs->hang = true;
		break;
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
	char expected[TOKEN_MAX];
	size_t a, b;
	bool ok;

	if (got == NULL || load_token(expected, sizeof(expected)) != 0)
		return false;
	a = strlen(got);
	b = strlen(expected);
	ok = a == b && CRYPTO_memcmp(got, expected, a) == 0;
	OPENSSL_cleanse(expected, sizeof(expected));
	return ok;
}

static void handle(const struct fs_request *rq, struct response *rs)
{
	enum mode mode = read_mode();
	const char *token = fs_header(rq, "X-Auth-Token");
	char path[PATH_MAX], id[80];

	/* Two of them is a client bug: answered as a wrong token. */
	if (fs_header_count(rq, "X-Auth-Token") > 1)
		token = "";
	/* Authentication first, as Huawei's API gateway does, in its shape. */
	if (!token_matches(token)) {
		answer(rs, 401, "{\"error_code\":\"APIGW.0301\",\"error_msg\":\"Incorrect IAM authentication "
		       "information: %s\",\"request_id\":\"fake\"}", token == NULL ? "no X-Auth-Token" : "token mismatch");
		snprintf(rs->note, sizeof(rs->note), "%s", token == NULL ? "no X-Auth-Token" : "wrong token");
		return;
	}
	/* Routes go by the whole target: a query string is a route of its own. */
	if (route(rq->target, "clusters", "/rotatecredentials", id, sizeof(id))) {
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
		if (!fs_pathf(path, sizeof path, "%s/last-body.json", dir) ||
		    fs_write_file_atomic(path, rq->body, rq->body_len, 0600) != 0)
			fs_log("cannot save last-body.json");
		new_job(rs);
		return;
	}
	if (route(rq->target, "jobs", "", id, sizeof(id))) {
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

static void send_response(struct fs_conn *c, const struct response *rs)
{
	size_t len = rs->body != NULL ? strlen(rs->body) : 0;

	if (fs_send_head(c, rs->status, "Fake", "Content-Type: application/json\r\n", (long)len) == 0 && len > 0)
		fs_write(c, rs->body, len);
}

/* The fakesrv handler: one request, its answer and its log line (never
 * the token or the body). */
static void serve(struct fs_conn *c, struct fs_request *rq)
{
	struct response rs;

	memset(&rs, 0, sizeof(rs));
	/* Only Content-Length bodies, and no Transfer-Encoding at all. */
	if (rq->error == 0 && fs_header(rq, "Transfer-Encoding") != NULL)
		rq->error = 400;
	switch (rq->error) {
	case 0:
		handle(rq, &rs);
		break;
	case 413:
		answer(&rs, 413, "{\"errorCode\":\"CCE.01400001\",\"errorMessage\":\"body too large\"}");
		break;
	case 431:
		answer(&rs, 431, "{\"errorCode\":\"CCE.01400001\",\"errorMessage\":\"headers too large\"}");
		break;
	default:
		answer(&rs, 400, "{\"errorCode\":\"CCE.01400001\",\"errorMessage\":\"malformed HTTP request\"}");
		break;
	}
	if (rs.hang) {
		fs_log("%s %s hang", rq->method, rq->target);
		fs_wait_until_client_leaves(c);
		goto out;
	}
	send_response(c, &rs);
	fs_log("%s %s %d%s%s", rq->method[0] ? rq->method : "-", rq->target[0] ? rq->target : "-", rs.status,
	       rs.note[0] ? " " : "", rs.note);
out:
	free(rs.body);
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
	struct fs_server srv = {
		.handle = serve,
		.max_body_bytes = MAX_BODY_BYTES,
	};
	char probe[TOKEN_MAX];
	int c, lfd, port, r = 1;

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
	fs_log_init("fake-cce");
	if (fs_signals_init() != 0 || fs_make_dir(dir, 0700) != 0)
		return 1;
	if (load_token(probe, sizeof(probe)) != 0) {
		fs_log("--token-file %s: unreadable or empty", token_file);
		return 1;
	}
	if ((srv.ctx = init_tls()) == NULL)
		goto out;
	/* Loopback only: the CA key is in a plain file. */
	if ((lfd = fs_listen_announced("127.0.0.1", port_file, &port)) < 0)
		goto out;
	fs_log("listening on https://127.0.0.1:%d/ (dir %s)", port, dir);
	if (fs_serve(lfd, &srv) != 0)
		goto out;
	r = 0;
out:
	SSL_CTX_free(srv.ctx);
	OPENSSL_cleanse(probe, sizeof(probe));
	return r;
}
