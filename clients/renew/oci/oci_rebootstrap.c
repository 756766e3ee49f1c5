/*
 * keysvc-oci rebootstrap: register the node again with the Roving Edge
 * provisioning service (RPS) from an infrastructure token zip, wait until
 * the node reports ready, and keep a support bundle of every exchange.
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
#include <openssl/rand.h>

#include "clients/renew/common/climsg.h"
#include "clients/renew/common/clihttps.h"
#include "clients/renew/https/https.h"
#include "keysvc/keysvc.h"
#include "clients/renew/oci/oci.h"
#include "clients/renew/oci/oci_cmd.h"
#include "clients/renew/oci/ocirun.h"
#include "proto/file.h"

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

static int bundle_open(const struct oci_opts *o, struct bundle *b, const char *rps, const char *zip_info)
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
static int rps_post(const struct oci_opts *o, struct bundle *b, const char *rps, const char *path, int attempt,
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

int oci_cmd_rebootstrap(const struct oci_opts *o)
{
	struct bundle b = { 0 };
	struct stat zst = { 0 };   /* its age goes into the warning and the support bundle */
	unsigned char *zip = NULL, *form = NULL, md[32], rnd[12];
	char err[256], rps[512], zip_info[512], boundary[64], ctype[128], state[64], hex[65];
	const char *fname;
	size_t zip_len = 0, form_len = 0;
	long wait;
	long long deadline_ms;
	int r;

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
	if (!oci_ocid_ok(o->infra_id))
		return ks_die(KS_EXIT_USAGE, "--infrastructure-id: an OCID");

	/* The zip: a regular file, readable, small, really a zip. */
	r = ks_file_read(o->token_zip, OCI_TOKEN_ZIP_MAX, KS_FILE_WIPE, ks_file_keep_stat, &zst, &zip, &zip_len);
	if (r == -EISDIR || r == -EBADFD || r == -EFBIG) {
		r = ks_die(KS_EXIT_USAGE, "--token-zip %s: not a regular file of at most %zu bytes", o->token_zip,
			   OCI_TOKEN_ZIP_MAX);
		goto out;
	}
	if (r < 0) {
		r = zst.st_mode != 0 ? ks_die(KS_EXIT_USAGE, "--token-zip %s: cannot read it", o->token_zip) :
				ks_die(KS_EXIT_USAGE, "--token-zip %s: %s", o->token_zip, strerror(-r));
		goto out;
	}
	if (oci_zip_check(zip, zip_len, err, sizeof(err)) < 0) {
		r = ks_die(KS_EXIT_USAGE, "--token-zip %s: %s", o->token_zip, err);
		goto out;
	}
	if (o->now - zst.st_mtime > o->session_max_age_s)
		ks_die(0, "warning: %s is %ld minutes old; the exported session expires after 60 minutes: "
		       "if the calls fail, authenticate and export it again (steps 1 to 3)", o->token_zip,
		       (long)((o->now - zst.st_mtime) / 60));
	EVP_Digest(zip, zip_len, md, NULL, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	oci_rfc3339(zst.st_mtime, err, sizeof(err));
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
		wait = o->register_retry_s >= 0 ? o->register_retry_s : 60 + (long)(oci_jitter() * 60);
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
	if (zip != NULL)
		OPENSSL_cleanse(zip, zip_len);
	if (form != NULL)
		OPENSSL_cleanse(form, form_len);
	free(zip);
	free(form);
	return r;
}
