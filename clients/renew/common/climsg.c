#include "clients/renew/common/climsg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/x509.h>

#include "clients/renew/common/certinstall.h"
#include "proto/log.h"
#include "proto/utf8.h"

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

/* The journal priority of a message: "warning: ..." is a warning, whichever function says it. */
static enum ks_log_level level_of(const char *msg, enum ks_log_level otherwise)
{
	return strncmp(msg, "warning:", 8) == 0 ? KS_LOG_WARNING : otherwise;
}

void ks_say(const char *fmt, ...)
{
	va_list ap;

	if (!verbose)
		return;
	/* With --json, stdout holds the result object alone. */
	/* Under systemd both streams are the journal's: progress is info, errors (ks_die) err. */
	fputs(ks_log_journal_prefix(json_output ? stderr : stdout, level_of(fmt, KS_LOG_INFO)),
	      json_output ? stderr : stdout);
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
	fprintf(stderr, "%s%s: %s\n", ks_log_journal_prefix(stderr, level_of(msg, KS_LOG_ERR)),
		program, msg);
	/* The first error is the cause; later ones are consequences or warnings. */
	if (last_error[0] == '\0' &&
	    snprintf(last_error, sizeof(last_error), "%s", msg) >= (int)sizeof(last_error))
		ks_utf8_mark_cut(last_error, sizeof(last_error));
	return code;
}
