#include "clients/renew/common/cliutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "clients/renew/common/certinstall.h"
#include "proto/utf8.h"
#include "clients/provider/provider.h"

static const char *program = "keysvc";
static int verbose = 1;
static int json_output;
static char last_error[512];

void ks_cli_init(const char *name, int is_verbose)
{
	program = name;
	verbose = is_verbose;
	last_error[0] = '\0';
}

const char *ks_last_error(void)
{
	return last_error;
}

void ks_say(const char *fmt, ...)
{
	va_list ap;

	if (!verbose)
		return;
	/* With --json, stdout holds the result object alone. */
	va_start(ap, fmt);
	vfprintf(json_output ? stderr : stdout, fmt, ap);
	va_end(ap);
	fputc('\n', json_output ? stderr : stdout);
	fflush(json_output ? stderr : stdout);
}

void ks_cli_set_json(int on)
{
	json_output = on;
}

int ks_cli_json(void)
{
	return json_output;
}

static const char *outcome_for(int code, const char *done)
{
	switch (code) {
	case KS_EXIT_OK: return done;
	case KS_EXIT_NOT_DUE: return "not-due";
	case KS_EXIT_BUSY: return "busy";
	case KS_EXIT_PUSH_FAILED: return "installed-push-failed";
	default: return "failed";
	}
}

int ks_json_result(const char *command, const char *done, int code, const char *cert, const char *key)
{
	char err[KS_CI_ERR_MAX], when[64], *pem = NULL, *text = NULL;
	X509 *x = NULL;
	size_t len;
	json_t *o;

	if (!json_output)
		return code;
	o = json_pack("{s:s, s:s, s:s, s:i, s:s}", "program", program, "command", command, "outcome",
		      outcome_for(code, done), "exit_code", code, "exit_meaning",
		      ks_exit_meaning(code) != NULL ? ks_exit_meaning(code) : "");
	if (o == NULL)
		goto out;
	json_object_set_new(o, "certificate", cert != NULL ? json_string(cert) : json_null());
	json_object_set_new(o, "key", key != NULL ? json_string(key) : json_null());
	/* What is installed now, whatever this run did: a failed renewal leaves the old one. */
	if (cert != NULL && ks_ci_read_file(cert, &pem, &len, err) == 0 && ks_ci_parse_one(pem, len, &x, err) == 0) {
		struct tm tm;

		if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) &&
		    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) != 0)
			json_object_set_new(o, "not_after", json_string(when));
	}
	if (json_object_get(o, "not_after") == NULL)
		json_object_set_new(o, "not_after", json_null());
	json_object_set_new(o, "error", code != KS_EXIT_OK && last_error[0] != '\0' ? json_string(last_error)
										   : json_null());
	text = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
out:
	/* A message that is not valid UTF-8 makes json_string() NULL: the object still goes out. */
	if (text == NULL)
		printf("{\"program\":\"%s\",\"outcome\":\"%s\",\"exit_code\":%d}\n", program,
		       outcome_for(code, done), code);
	else
		printf("%s\n", text);
	fflush(stdout);
	free(text);
	free(pem);
	X509_free(x);
	json_decref(o);
	return code;
}

int ks_die(int code, const char *fmt, ...)
{
	/* Room for a CA's whole reason, escaped (up to 4 KiB); the inventory keeps the first line's 512. */
	char msg[8192];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: %s\n", program, msg);
	/* The first error is the cause; later ones are consequences or warnings. */
	if (last_error[0] == '\0' &&
	    snprintf(last_error, sizeof(last_error), "%s", msg) >= (int)sizeof(last_error))
		ks_utf8_mark_cut(last_error, sizeof(last_error));
	return code;
}

int ks_check_long_options(int argc, char *const argv[], const struct option *longopts)
{
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *name;
		const struct option *o;
		size_t n;

		if (strcmp(arg, "--") == 0)
			break;
		if (strncmp(arg, "--", 2) != 0)
			continue;
		name = arg + 2;
		n = strcspn(name, "=");
		for (o = longopts; o->name != NULL; o++)
			if (strlen(o->name) == n && strncmp(o->name, name, n) == 0)
				break;
		if (o->name == NULL)
			return ks_die(KS_EXIT_USAGE, "unrecognized option '--%.*s' (see --help)", (int)n, name);
		/* The next word is this option's value, whatever it looks like. */
		if (o->has_arg == required_argument && name[n] != '=')
			i++;
	}
	return 0;
}

int ks_read_secret_file(const char *option, const char *path, char *buf, size_t len, size_t *n)
{
	struct stat st;
	size_t have = 0;
	ssize_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);

	*n = 0;
	if (fd < 0)
		return ks_die(KS_EXIT_USAGE, "%s %s: %s", option, path, strerror(errno));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return ks_die(KS_EXIT_USAGE, "%s %s: not a regular file", option, path);
	}
	if ((st.st_mode & 077) != 0) {
		close(fd);
		return ks_die(KS_EXIT_USAGE, "%s %s: mode %04o lets other users read it; a credential must be "
			      "mode 0600 (chmod 0600 it, and get a new one if others may have read it)", option, path,
			      (unsigned)(st.st_mode & 07777));
	}
	while (have < len - 1 && (got = read(fd, buf + have, len - 1 - have)) > 0)
		have += (size_t)got;
	close(fd);
	buf[have] = '\0';
	if (got < 0)
		return ks_die(KS_EXIT_USAGE, "%s %s: %s", option, path, strerror(errno));
	if (have >= len - 1)
		return ks_die(KS_EXIT_USAGE, "%s %s: over %zu bytes", option, path, len - 2);
	*n = have;
	return 0;
}

int ks_load_ca_file(const char *path, STACK_OF(X509) **out)
{
	char err[KS_CI_ERR_MAX];

	if (ks_ci_load_bundle(path, out, err) < 0)
		return ks_die(KS_EXIT_USAGE, "--ca-file %s: %s", path, err);
	return 0;
}

int ks_parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int ks_exit_for_keysvc(int err)
{
	switch (err) {
	case KEYSVC_OK: return KS_EXIT_OK;
	case KEYSVC_E_BAD_REQUEST:
	case KEYSVC_E_INVALID: return KS_EXIT_USAGE;
	case KEYSVC_E_DENIED: return KS_EXIT_DENIED;
	case KEYSVC_E_NO_SUCH_KEY: return KS_EXIT_NO_SUCH_KEY;
	case KEYSVC_E_TOKEN_UNAVAILABLE: return KS_EXIT_TOKEN;
	case KEYSVC_E_EXISTS: return KS_EXIT_EXISTS;
	case KEYSVC_E_UNSUPPORTED: return KS_EXIT_UNSUPPORTED;
	case KEYSVC_E_CONNECT:
	case KEYSVC_E_IO: return KS_EXIT_CONNECT;
	case KEYSVC_E_AUDIT_UNAVAILABLE: return KS_EXIT_AUDIT;
	default: return KS_EXIT_INTERNAL;
	}
}

int ks_https_exit(int r, const struct ks_https_response *resp)
{
	if (r == -ENOKEY) {
		/* keysvcd's answer when it would not let the key be used; keysvc.so missing is 1. */
		switch (resp != NULL ? resp->keysvc_reason : 0) {
		case KSP_R_DENIED: return KS_EXIT_DENIED;
		case KSP_R_NO_SUCH_KEY: return KS_EXIT_NO_SUCH_KEY;
		case KSP_R_TOKEN_UNAVAILABLE: return KS_EXIT_TOKEN;
		case KSP_R_CANNOT_CONNECT: return KS_EXIT_CONNECT;
		case KSP_R_UNSUPPORTED: return KS_EXIT_UNSUPPORTED;
		default: return KS_EXIT_INTERNAL;
		}
	}
	return r == -EINVAL ? KS_EXIT_USAGE : KS_EXIT_NETWORK;
}

void ks_connect_error_text(char *buf, size_t len, const char *socket, int r, int e)
{
	if (socket == NULL && ((socket = getenv(KEYSVC_SOCKET_ENV)) == NULL || socket[0] == '\0'))
		socket = KEYSVC_DEFAULT_SOCKET;
	snprintf(buf, len, "cannot reach keysvcd at %s: %s; is it running? (systemctl status keysvcd.socket)",
		 socket, r == KEYSVC_E_CONNECT ? strerror(e) : keysvc_strerror(r));
}

int ks_open_keysvc(const char *socket, keysvc **ks)
{
	char msg[PATH_MAX + 256];
	int r = keysvc_connect(socket, ks);

	if (r != KEYSVC_OK) {
		ks_connect_error_text(msg, sizeof(msg), socket, r, errno);
		return ks_die(ks_exit_for_keysvc(r), "%s", msg);
	}
	return 0;
}

int ks_token_public_key(keysvc *ks, const char *name, EVP_PKEY **pub, int missing_ok)
{
	char *pem = NULL, err[KS_CI_ERR_MAX];
	int r = keysvc_key_public(ks, name, &pem, NULL);

	*pub = NULL;
	if (r == KEYSVC_E_NO_SUCH_KEY && missing_ok)
		return -1;
	if (r != KEYSVC_OK)
		return ks_die(ks_exit_for_keysvc(r), "key %s: %s: %s", name, keysvc_strerror(r),
			      keysvc_error_message(ks));
	r = ks_ci_parse_pubkey(pem, pub, err);
	free(pem);
	if (r < 0)
		return ks_die(KS_EXIT_INTERNAL, "key %s: %s", name, err);
	return 0;
}

void ks_https_ca_opts(struct ks_https_opts *h, const char *ca_file, long timeout_s, int insecure,
		      const char *cert_file, const char *key, char *uri_buf, size_t uri_len)
{
	memset(h, 0, sizeof(*h));
	h->ca_file = ca_file;
	h->insecure = insecure;
	h->total_timeout_ms = timeout_s * 1000;
	h->connect_timeout_ms = timeout_s * 1000 < 10000 ? timeout_s * 1000 : 10000;
	h->max_response_bytes = KS_CI_PEM_MAX;
	if (cert_file != NULL && key != NULL) {
		snprintf(uri_buf, uri_len, "keysvc:%s", key);
		h->cert_file = cert_file;
		h->key_uri = uri_buf;
	}
}
