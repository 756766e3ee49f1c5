/*
 * keysvc-cce: asks Huawei Cloud CCE to rotate a cluster's credentials
 * (POST .../clusters/{id}/rotatecredentials) and, with --wait, follows the
 * job it starts until it ends.
 *
 * Two secrets pass through here and both are handled as such: the IAM
 * token (X-Auth-Token), which is read only from a private file or the
 * environment, never from the command line, is never printed and is wiped
 * once the requests are made; and, for component "custom", the private key
 * of the authenticating proxy, which CCE needs in the request itself. That
 * key can only come from a file the operator hands over on purpose: a key
 * held by keysvcd is never exported, so keysvc:NAME is refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "clients/cce/cce.h"
#include "clients/renew/common/climsg.h"
#include "clients/renew/common/cliopt.h"
#include "clients/renew/common/clihttps.h"
#include "clients/renew/common/renewcli.h"
#include "clients/renew/https/https.h"
#include "proto/file.h"
#include "proto/log.h"

#define TOKEN_ENV "KEYSVC_CCE_TOKEN"
/* Huawei documents X-Auth-Token values of up to 16384 bytes (a token with
 * many roles and projects is that big). */
#define TOKEN_MAX 16384
/* The token file: the token and its newline, and one byte more to tell a
 * longer file from one that just fits (ks_read_secret_file's rule). */
#define TOKEN_BUF (TOKEN_MAX + 3)
/* The longest pause between two job queries that failed (5xx, network). */
#define RETRY_MAX_S 30
#define TOKEN_HEADER "X-Auth-Token: "

struct opts {
	struct ks_rc_opts c;
	const char *endpoint, *project_id, *cluster_id, *ca_file, *token_file;
	const char *custom_ca, *custom_cert, *custom_key;
	enum cce_component component;
	int have_component, wait;
	long expiration_hours, poll_interval_s, max_wait_s;
};

/* Loaded custom files; every buffer is wiped when freed (one holds a private key). */
struct material {
	uint8_t *ca, *cert, *key;
	size_t ca_len, cert_len, key_len;
};

static void usage(FILE *f)
{
	fputs("Usage: keysvc-cce rotate --endpoint https://cce.REGION.myhuaweicloud.com --project-id ID\n"
	      "           --cluster-id ID --component all|service-account-controller|custom [options]\n"
	      "\n"
	      "Asks Huawei Cloud CCE to rotate a cluster's certificates (rotatecredentials) and\n"
	      "prints the job id; --wait follows the job until it ends.\n"
	      "\n"
	      "The IAM token (at most 16384 bytes) is read from --token-file (a regular file, not a\n"
	      "symlink, mode 0600) or else from $" TOKEN_ENV "; never from the command line.\n"
	      "\n"
	      "Options:\n"
	      "  --endpoint URL          CCE's endpoint, https://HOST[:PORT]\n"
	      "  --project-id ID         project (1..64 of A-Z a-z 0-9 -)\n"
	      "  --cluster-id ID         cluster (same rule)\n"
	      "  --component NAME        all: the cluster's certificates; service-account-controller:\n"
	      "                          the ServiceAccount-token signing certificate; custom: the\n"
	      "                          authenticating proxy's, from --custom-ca/-cert/-key\n"
	      "  --expiration-hours N    0..8784: how long the old ServiceAccount-token signing\n"
	      "                          certificate stays valid (CCE's default when absent: 24)\n"
	      "  --custom-ca FILE        custom: the CA certificate (PEM or DER, at most 1 MiB)\n"
	      "  --custom-cert FILE      custom: the client certificate it issued (PEM or DER)\n"
	      "  --custom-key FILE       custom: that certificate's unencrypted private key (a regular\n"
	      "                          file, not a symlink, mode 0600); it is SENT to CCE\n"
	      "                          (keysvc:NAME is refused: keysvcd never exports a key)\n"
	      "  --token-file FILE       the IAM token (X-Auth-Token)\n"
	      "  --ca-file PEM_BUNDLE    the CAs trusted for the endpoint's TLS certificate, and the only ones\n"
	      "  --wait                  poll the job until Success (exit 0) or Failed (exit 17); a\n"
	      "                          5xx or network failure is asked again (1 s, doubling to 30 s)\n"
	      "  --poll-interval S       seconds between polls (default 10)\n"
	      "  --max-wait S            give up waiting after S seconds (default 1800; exit 22, or\n"
	      "                          the last failure's code); each poll's timeout is cut to fit\n"
	      "  --timeout S             per HTTPS request (default 60)\n"
	      "  --insecure              do not verify the endpoint's certificate (the token is then\n"
	      "                          sent to whoever answers; prints a warning)\n"
	      "  --json                  print {\"jobid\": ...} (and the job's phase with --wait) on stdout\n"
	      "  --quiet                 print only the job id (and errors)\n"
	      "  --version               print the version\n", f);
}

/* ---- secrets and files ---- */

/* The token: printable, no spaces, one line (a trailing newline is dropped). */
static int token_ok(char *token, size_t n, const char *from)
{
	while (n > 0 && (token[n - 1] == '\n' || token[n - 1] == '\r'))
		token[--n] = '\0';
	if (n == 0)
		return ks_die(KS_EXIT_USAGE, "%s: the token is empty", from);
	if (n > TOKEN_MAX)
		return ks_die(KS_EXIT_USAGE, "%s: the token is over %d bytes, Huawei's limit for X-Auth-Token",
			      from, TOKEN_MAX);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)token[i] < 0x21 || (unsigned char)token[i] > 0x7e)
			return ks_die(KS_EXIT_USAGE, "%s: the token has a space or a character that cannot go "
				      "into an HTTP header", from);
	return 0;
}

static int read_token_file(const char *path, char *token, size_t len)
{
	size_t n;
	int r;

	if ((r = ks_read_secret_file("--token-file", path, token, len, &n)) != 0)
		return r;
	return token_ok(token, n, "--token-file");
}

static int read_token(const char *path, char *token, size_t len)
{
	char *env = getenv(TOKEN_ENV);
	size_t n;
	int r;

	if (path != NULL) {
		r = read_token_file(path, token, len);
	} else if (env == NULL || env[0] == '\0') {
		return ks_die(KS_EXIT_USAGE, "no IAM token: give --token-file FILE (mode 0600) or set " TOKEN_ENV);
	} else if ((n = strlen(env)) > TOKEN_MAX + 1 || n >= len) {
		r = ks_die(KS_EXIT_USAGE, TOKEN_ENV ": over %d bytes, Huawei's limit for X-Auth-Token", TOKEN_MAX);
	} else {
		memcpy(token, env, n + 1);
		r = token_ok(token, n, TOKEN_ENV);
	}
	/* Not for children, and no longer in /proc/PID/environ for the rest of the run. */
	if (env != NULL) {
		OPENSSL_cleanse(env, strlen(env));
		unsetenv(TOKEN_ENV);
	}
	return r;
}

/*
 * A custom file, at most CCE_CUSTOM_FILE_MAX bytes: the size is checked
 * before reading, and again while reading in case the file grows. The
 * buffer is wiped when freed, whatever it holds.
 */
static int read_custom(const char *opt, const char *path, uint8_t **out, size_t *out_len)
{
	uint8_t *buf = OPENSSL_malloc(CCE_CUSTOM_FILE_MAX + 1);
	struct stat st = { 0 };
	size_t have = 0;
	int r;

	*out = NULL;
	*out_len = 0;
	if (buf == NULL)
		return ks_die(KS_EXIT_INTERNAL, "out of memory");
	r = ks_file_read_buf(path, 0, ks_file_keep_stat, &st, buf, CCE_CUSTOM_FILE_MAX, &have);
	if (r == -EISDIR || r == -EBADFD) {
		r = ks_die(KS_EXIT_USAGE, "%s %s: not a regular file", opt, path);
		goto out;
	}
	if (r == -EFBIG && (size_t)st.st_size > CCE_CUSTOM_FILE_MAX) {
		r = ks_die(KS_EXIT_USAGE, "%s %s: %lld bytes, over CCE's limit of %zu (1 MiB)", opt, path,
			   (long long)st.st_size, CCE_CUSTOM_FILE_MAX);
		goto out;
	}
	if (r == -EFBIG) {
		/* It grew while it was read. */
		r = ks_die(KS_EXIT_USAGE, "%s %s: over CCE's limit of %zu bytes (1 MiB)", opt, path,
			   CCE_CUSTOM_FILE_MAX);
		goto out;
	}
	if (r < 0) {
		r = ks_die(KS_EXIT_USAGE, "%s %s: %s", opt, path, strerror(-r));
		goto out;
	}
	if (have == 0) {
		r = ks_die(KS_EXIT_USAGE, "%s %s: empty", opt, path);
		goto out;
	}
	*out = buf;
	*out_len = have;
	buf = NULL;
	r = 0;
out:
	OPENSSL_clear_free(buf, CCE_CUSTOM_FILE_MAX + 1);
	return r;
}

/*
 * The custom key: CCE gets it, but on this host it is a secret like the
 * token, so its file passes the same checks (regular, not a symlink, mode
 * 0600 or stricter) before a byte of it is read.
 */
static int read_custom_key(const char *path, uint8_t **out, size_t *out_len)
{
	/* One byte for the NUL, one to tell a file over the limit from one at it. */
	const size_t cap = CCE_CUSTOM_FILE_MAX + 2;
	uint8_t *buf = OPENSSL_malloc(cap);
	size_t n = 0;
	int r;

	*out = NULL;
	*out_len = 0;
	if (buf == NULL)
		return ks_die(KS_EXIT_INTERNAL, "out of memory");
	if ((r = ks_read_secret_file("--custom-key", path, (char *)buf, cap, &n)) != 0)
		goto out;
	if (n == 0) {
		r = ks_die(KS_EXIT_USAGE, "--custom-key %s: empty", path);
		goto out;
	}
	*out = buf;
	*out_len = n;
	buf = NULL;
out:
	OPENSSL_clear_free(buf, cap);
	return r;
}

static void material_free(struct material *m)
{
	/* The buffers are CCE_CUSTOM_FILE_MAX + 1 bytes; wipe what was read. */
	OPENSSL_clear_free(m->ca, m->ca_len);
	OPENSSL_clear_free(m->cert, m->cert_len);
	OPENSSL_clear_free(m->key, m->key_len);
	memset(m, 0, sizeof(*m));
}

static int load_material(const struct opts *o, struct material *m)
{
	char err[CCE_ERR_MAX];
	int r;

	if ((r = read_custom("--custom-ca", o->custom_ca, &m->ca, &m->ca_len)) != 0 ||
	    (r = read_custom("--custom-cert", o->custom_cert, &m->cert, &m->cert_len)) != 0 ||
	    (r = read_custom_key(o->custom_key, &m->key, &m->key_len)) != 0)
		return r;
	if (cce_check_cert(m->ca, m->ca_len, err) != 0)
		return ks_die(KS_EXIT_USAGE, "--custom-ca %s: %s", o->custom_ca, err);
	if (cce_check_cert(m->cert, m->cert_len, err) != 0)
		return ks_die(KS_EXIT_USAGE, "--custom-cert %s: %s", o->custom_cert, err);
	if (cce_check_key(m->key, m->key_len, err) != 0)
		return ks_die(KS_EXIT_USAGE, "--custom-key %s: %s", o->custom_key, err);
	if (cce_check_pair(m->cert, m->cert_len, m->key, m->key_len, err) != 0)
		return ks_die(KS_EXIT_USAGE, "--custom-cert %s and --custom-key %s: %s", o->custom_cert,
			      o->custom_key, err);
	return 0;
}

/* ---- output ---- */

static void print_json(const char *jobid, const char *phase, const char *reason)
{
	json_t *j = json_pack("{s:s}", "jobid", jobid);
	char *s = NULL;

	if (j != NULL && phase != NULL && phase[0] != '\0')
		json_object_set_new(j, "phase", json_string(phase));
	if (j != NULL && reason != NULL && reason[0] != '\0')
		json_object_set_new(j, "reason", json_string(reason));
	if (j != NULL)
		s = json_dumps(j, JSON_COMPACT);
	if (s != NULL)
		printf("%s\n", s);
	fflush(stdout);
	free(s);
	json_decref(j);
}

/* ---- the requests ---- */

/* The request alone: @timeout_ms bounds it all; errors are left to the caller (resp->err). */
static int request_once(const struct opts *o, const char *method, const char *url, const char *token_header,
			const char *body, size_t body_len, long timeout_ms, struct ks_https_response *resp)
{
	const char *headers[] = { "Content-Type: application/json", "Accept: application/json", token_header, NULL };
	struct ks_https_opts h;

	ks_https_ca_opts(&h, o->ca_file, o->c.timeout_s, o->c.insecure, NULL, NULL, NULL, 0);
	h.total_timeout_ms = timeout_ms;
	if (h.connect_timeout_ms > timeout_ms)
		h.connect_timeout_ms = timeout_ms;
	return ks_https_request(&h, method, url, headers, body, body_len, resp);
}

static int request(const struct opts *o, const char *method, const char *url, const char *token_header,
		   const char *body, size_t body_len, struct ks_https_response *resp)
{
	int r = request_once(o, method, url, token_header, body, body_len, o->c.timeout_s * 1000, resp);

	if (r < 0)
		return ks_die(ks_https_exit(r, resp), "%s %s: %s", method, url, resp->err);
	return 0;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long long ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (ms > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Failures of a job query that say nothing of the job, only of the way to it. */
static int transient(int r)
{
	return r == -ETIMEDOUT || r == -ECONNREFUSED || r == -EHOSTUNREACH || r == -ECONNRESET || r == -EIO;
}

static int rotate(const struct opts *o, const char *token_header, const struct material *m, char *jobid)
{
	struct cce_custom custom = {
		.ca = m->ca, .ca_len = m->ca_len, .cert = m->cert, .cert_len = m->cert_len,
		.key = m->key, .key_len = m->key_len,
	};
	struct ks_https_response resp;
	char err[CCE_ERR_MAX], *body = NULL, *url = NULL;
	size_t body_len = 0;
	int r;

	memset(&resp, 0, sizeof(resp));
	if ((url = cce_rotate_url(o->endpoint, o->project_id, o->cluster_id)) == NULL) {
		r = ks_die(KS_EXIT_INTERNAL, "out of memory");
		goto out;
	}
	r = cce_rotate_body(o->component, o->expiration_hours,
			    o->component == CCE_COMPONENT_CUSTOM ? &custom : NULL, &body, &body_len, err);
	if (r != 0) {
		r = ks_die(r == -ENOMEM ? KS_EXIT_INTERNAL : KS_EXIT_USAGE, "%s", err);
		goto out;
	}
	if ((r = request(o, "POST", url, token_header, body, body_len, &resp)) != 0)
		goto out;
	if (resp.status < 200 || resp.status > 299) {
		cce_format_error("the rotation", resp.status, resp.body, resp.body_len, err, sizeof(err));
		r = ks_die(KS_EXIT_CA_REFUSED, "%s", err);
		goto out;
	}
	if (cce_parse_jobid(resp.body, resp.body_len, jobid, err) != 0) {
		r = ks_die(KS_EXIT_CA_ANSWER, "CCE accepted the request (HTTP %ld) but its answer is malformed: %s; "
			   "the rotation may be under way: check the cluster's jobs in the console", resp.status, err);
		goto out;
	}
	r = 0;
out:
	if (body != NULL)
		OPENSSL_clear_free(body, body_len);
	free(url);
	ks_https_response_free(&resp);
	return r;
}

/*
 * Polls the job until it ends or --max-wait runs out. The job goes on in
 * CCE whatever happens to one query, so a 5xx or a network failure is
 * asked again (after 1 s, doubling up to RETRY_MAX_S) while the deadline
 * allows; a 4xx or an answer that makes no sense ends the wait. Every
 * request's timeout is cut to the time left, so the whole wait ends at
 * most about a second after --max-wait.
 */
static int wait_job(const struct opts *o, const char *token_header, const char *jobid)
{
	struct ks_https_response resp;
	enum cce_phase phase = CCE_PHASE_PENDING;
	char err[CCE_ERR_MAX], phase_text[64] = "", reason[256] = "", *url;
	long long start = now_ms(), deadline = start + (long long)o->max_wait_s * 1000, left, pause;
	long long backoff = 1000;
	int r, fail_code;

	memset(&resp, 0, sizeof(resp));
	if ((url = cce_job_url(o->endpoint, o->project_id, jobid)) == NULL)
		return ks_die(KS_EXIT_INTERNAL, "out of memory");
	for (;;) {
		/* At least a second: a query cut to nothing would say nothing. */
		left = deadline - now_ms();
		if (left < 1000)
			left = 1000;
		ks_https_response_free(&resp);
		r = request_once(o, "GET", url, token_header, NULL, 0,
				 left < o->c.timeout_s * 1000 ? left : o->c.timeout_s * 1000, &resp);
		if (r < 0 && !transient(r)) {
			r = ks_die(ks_https_exit(r, &resp), "GET %s: %s; job %s was submitted, its outcome is unknown", url,
				   resp.err, jobid);
			goto out;
		}
		if (r < 0 || resp.status >= 500) {
			if (r < 0) {
				fail_code = ks_https_exit(r, &resp);
				snprintf(err, sizeof(err), "GET %.200s: %.280s", url, resp.err);
			} else {
				fail_code = KS_EXIT_CA_REFUSED;
				cce_format_error("the job query", resp.status, resp.body, resp.body_len, err,
						 sizeof(err));
			}
			if (now_ms() + backoff > deadline) {
				r = ks_die(fail_code, "%s; giving up at --max-wait %ld s: job %s was submitted, its "
					   "outcome is unknown", err, o->max_wait_s, jobid);
				goto out;
			}
			fprintf(stderr, "%skeysvc-cce: warning: %s; asking again in %lld s\n", ks_log_journal_prefix(stderr, KS_LOG_WARNING), err, backoff / 1000);
			sleep_ms(backoff);
			backoff = backoff * 2 > RETRY_MAX_S * 1000 ? RETRY_MAX_S * 1000 : backoff * 2;
			continue;
		}
		backoff = 1000;
		if (resp.status < 200 || resp.status > 299) {
			cce_format_error("the job query", resp.status, resp.body, resp.body_len, err, sizeof(err));
			r = ks_die(KS_EXIT_CA_REFUSED, "%s; job %s was submitted, its outcome is unknown", err, jobid);
			goto out;
		}
		if (cce_parse_job(resp.body, resp.body_len, &phase, phase_text, sizeof(phase_text), reason,
				  sizeof(reason), err) != 0) {
			r = ks_die(KS_EXIT_CA_ANSWER, "job %s: %s", jobid, err);
			goto out;
		}
		if (phase == CCE_PHASE_SUCCESS) {
			ks_say("job %s: %s after %lld s", jobid, phase_text, (now_ms() - start) / 1000);
			r = 0;
			goto out;
		}
		if (phase == CCE_PHASE_FAILED) {
			r = ks_die(KS_EXIT_CA_REFUSED, "job %s failed%s%s", jobid, reason[0] ? ": " : "", reason);
			goto out;
		}
		pause = (long long)o->poll_interval_s * 1000;
		if (now_ms() + pause > deadline) {
			r = ks_die(KS_EXIT_NOT_IN_TIME, "job %s is still %s after %lld s (--max-wait %ld); it goes on "
				   "in CCE", jobid, phase_text, (now_ms() - start) / 1000, o->max_wait_s);
			goto out;
		}
		ks_say("job %s: %s; asking again in %ld s", jobid, phase_text, o->poll_interval_s);
		sleep_ms(pause);
	}
out:
	if (o->c.json)
		print_json(jobid, phase_text, phase == CCE_PHASE_FAILED ? reason : NULL);
	ks_https_response_free(&resp);
	free(url);
	return r;
}

static int cmd_rotate(const struct opts *o, const char *token)
{
	struct material m;
	char jobid[CCE_ID_MAX + 1], *token_header = NULL;
	size_t th_len = strlen(TOKEN_HEADER) + strlen(token) + 1;
	int r;

	memset(&m, 0, sizeof(m));
	if (o->component == CCE_COMPONENT_CUSTOM) {
		if ((r = load_material(o, &m)) != 0)
			goto out;
		/* On stderr, so that it is seen even with --quiet or --json. */
		fprintf(stderr, "%skeysvc-cce: notice: the private key in %s is sent to CCE (base64, in the "
			"request body); it is not a keysvcd key and leaves this host\n", ks_log_journal_prefix(stderr, KS_LOG_NOTICE), o->custom_key);
	}
	if ((token_header = OPENSSL_malloc(th_len)) == NULL) {
		r = ks_die(KS_EXIT_INTERNAL, "out of memory");
		goto out;
	}
	snprintf(token_header, th_len, TOKEN_HEADER "%s", token);
	if ((r = rotate(o, token_header, &m, jobid)) != 0)
		goto out;
	material_free(&m);
	if (o->c.json && !o->wait)
		print_json(jobid, NULL, NULL);
	else if (o->c.quiet && !o->c.json)
		printf("%s\n", jobid);  /* even --quiet: the job id is what a script needs */
	else if (!o->c.json)
		ks_say("CCE accepted the rotation of %s for cluster %s: job %s", cce_component_name(o->component),
		       o->cluster_id, jobid);
	if (o->wait)
		r = wait_job(o, token_header, jobid);
out:
	material_free(&m);
	if (token_header != NULL)
		OPENSSL_clear_free(token_header, th_len);
	return r;
}

static int run_rotate(void *ctx, struct ks_rc_run *run)
{
	const struct opts *o = ctx;
	char token[TOKEN_BUF];
	int r;

	(void)run;
	if ((r = read_token(o->token_file, token, sizeof(token))) != 0)
		goto out;
	if (o->c.insecure)
		fprintf(stderr, "%skeysvc-cce: warning: --insecure: the IAM token goes to a server that is not "
			"verified\n", ks_log_journal_prefix(stderr, KS_LOG_WARNING));
	r = cmd_rotate(o, token);
out:
	OPENSSL_cleanse(token, sizeof(token));
	return r;
}

/* ---- main ---- */

enum { O_ENDPOINT = 256, O_PROJECT, O_CLUSTER, O_COMPONENT, O_EXPIRATION, O_CA_FILE, O_CUSTOM_CA, O_CUSTOM_CERT,
       O_CUSTOM_KEY, O_TOKEN_FILE, O_TOKEN, O_WAIT, O_POLL, O_MAX_WAIT };

static int option(void *ctx, int c, const char *arg)
{
	struct opts *o = ctx;

	switch (c) {
	case O_ENDPOINT: o->endpoint = arg; break;
	case O_PROJECT: o->project_id = arg; break;
	case O_CLUSTER: o->cluster_id = arg; break;
	case O_COMPONENT:
		if (cce_component_parse(arg, &o->component) != 0)
			return ks_die(KS_EXIT_USAGE, "--component: all, service-account-controller or custom");
		o->have_component = 1;
		break;
	case O_EXPIRATION:
		if (ks_parse_long(arg, 0, CCE_EXPIRATION_MAX, &o->expiration_hours) != 0)
			return ks_die(KS_EXIT_USAGE, "--expiration-hours: 0..%ld hours (CCE's range; without "
				      "the option CCE keeps the old certificate 24 h)", CCE_EXPIRATION_MAX);
		break;
	case O_CA_FILE: o->ca_file = arg; break;
	case O_CUSTOM_CA: o->custom_ca = arg; break;
	case O_CUSTOM_CERT: o->custom_cert = arg; break;
	case O_CUSTOM_KEY: o->custom_key = arg; break;
	case O_TOKEN_FILE: o->token_file = arg; break;
	case O_TOKEN:
		return ks_die(KS_EXIT_USAGE, "--token: refused: a token on the command line can be read by "
			      "every user (ps, /proc/PID/cmdline) and stays in shell history; use "
			      "--token-file FILE (mode 0600) or the " TOKEN_ENV " environment variable");
	case O_WAIT: o->wait = 1; break;
	case O_POLL:
		if (ks_parse_long(arg, 1, 3600, &o->poll_interval_s) != 0)
			return ks_die(KS_EXIT_USAGE, "--poll-interval: 1..3600 seconds");
		break;
	case O_MAX_WAIT:
		if (ks_parse_long(arg, 0, 86400, &o->max_wait_s) != 0)
			return ks_die(KS_EXIT_USAGE, "--max-wait: 0..86400 seconds");
		break;
	}
	return 0;
}

static int check(void *ctx, struct ks_rc_run *run)
{
	const struct opts *o = ctx;

	(void)run;
	if (o->endpoint != NULL && strncasecmp(o->endpoint, "http://", 7) == 0)
		return ks_die(KS_EXIT_USAGE, "--endpoint %s: plain http is refused: the request carries the "
			      "IAM token; use https://", o->endpoint);
	if (!cce_endpoint_ok(o->endpoint))
		return ks_die(KS_EXIT_USAGE, "--endpoint https://HOST[:PORT] is required (e.g. "
			      "https://cce.ap-southeast-1.myhuaweicloud.com), with no path");
	if (!cce_id_ok(o->project_id))
		return ks_die(KS_EXIT_USAGE, "--project-id: 1..%d of A-Z a-z 0-9 -", CCE_ID_MAX);
	if (!cce_id_ok(o->cluster_id))
		return ks_die(KS_EXIT_USAGE, "--cluster-id: 1..%d of A-Z a-z 0-9 -", CCE_ID_MAX);
	if (!o->have_component)
		return ks_die(KS_EXIT_USAGE, "--component all|service-account-controller|custom is required");
	if (o->component == CCE_COMPONENT_CUSTOM) {
		if (o->custom_ca == NULL || o->custom_cert == NULL || o->custom_key == NULL)
			return ks_die(KS_EXIT_USAGE, "--component custom needs --custom-ca, --custom-cert and "
				      "--custom-key");
		if (strncmp(o->custom_key, "keysvc:", 7) == 0)
			return ks_die(KS_EXIT_USAGE, "--custom-key %s: refused: a key held by keysvcd is never "
				      "exported, and CCE needs the private key itself; give the file of a key "
				      "meant to be handed to CCE", o->custom_key);
	} else if (o->custom_ca != NULL || o->custom_cert != NULL || o->custom_key != NULL) {
		return ks_die(KS_EXIT_USAGE, "--custom-ca, --custom-cert and --custom-key go only with "
			      "--component custom");
	}
	if (o->ca_file == NULL && !o->c.insecure)
		return ks_die(KS_EXIT_USAGE, "--ca-file PEM_BUNDLE is required: it is the only trust for "
			      "the endpoint (no system store is used)");
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "endpoint", required_argument, NULL, O_ENDPOINT },
		{ "project-id", required_argument, NULL, O_PROJECT },
		{ "cluster-id", required_argument, NULL, O_CLUSTER },
		{ "component", required_argument, NULL, O_COMPONENT },
		{ "expiration-hours", required_argument, NULL, O_EXPIRATION },
		{ "ca-file", required_argument, NULL, O_CA_FILE },
		{ "custom-ca", required_argument, NULL, O_CUSTOM_CA },
		{ "custom-cert", required_argument, NULL, O_CUSTOM_CERT },
		{ "custom-key", required_argument, NULL, O_CUSTOM_KEY },
		{ "token-file", required_argument, NULL, O_TOKEN_FILE },
		/* Listed so that "--token" is refused with the reason, not taken as an
		 * abbreviation of --token-file. */
		{ "token", optional_argument, NULL, O_TOKEN },
		{ "wait", no_argument, NULL, O_WAIT },
		{ "poll-interval", required_argument, NULL, O_POLL },
		{ "max-wait", required_argument, NULL, O_MAX_WAIT },
		{ NULL, 0, NULL, 0 },
	};
	/* No keysvcd, no certificate installed here: no lock, no inventory, its own --json document. */
	static const struct ks_rc_command commands[] = {
		{ "rotate", NULL, KS_RC_HTTPS, run_rotate },
		{ NULL, NULL, 0, NULL },
	};
	struct opts o = { .expiration_hours = -1, .poll_interval_s = 10, .max_wait_s = 1800 };
	const struct ks_rc_client client = {
		.program = "keysvc-cce", .own_json = 1, .usage = usage, .options = options, .option = option,
		.check = check, .commands = commands, .common_opts = &o.c, .ctx = &o,
	};

	return ks_rc_main(&client, argc, argv);
}
