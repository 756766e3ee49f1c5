/*
 * The keysvc CLI's output and reports (one JSON line with --json, the
 * "keysvc: COMMAND: ERROR: MESSAGE" line on stderr), its input and output
 * files, and the connection to keysvcd with the reports of its failures.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "clients/cli/cli_cmd.h"
#include "clients/renew/common/clikeysvc.h"
#include "keysvc/keysvc.h"
#include "proto/exitcode.h"
#include "proto/file.h"
#include "proto/log.h"

/* Print @o (reference taken) as one line of JSON on stdout. */
void cli_print_json(json_t *o)
{
	if (o == NULL || json_dumpf(o, stdout, JSON_COMPACT | JSON_ENSURE_ASCII) != 0)
		fputs("{\"error\":\"nomem\",\"message\":\"cannot format the result\"}", stdout);
	fputc('\n', stdout);
	json_decref(o);
}

/* Replace control characters of @s (for messages quoting user or daemon text). */
void cli_sanitize(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

/*
 * Report an error named @name with exit code @code: on stderr always, and
 * as {"error", "message"} on stdout with --json. Returns @code.
 */
int cli_report_named(const struct cli_global *g, int code, const char *name, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cli_sanitize(msg);
	if (g->json)
		cli_print_json(json_pack("{s:s, s:s}", "error", name, "message", msg));
	fprintf(stderr, "%skeysvc: %s%s%s%s%s\n", ks_log_journal_prefix(stderr, KS_LOG_ERR), g->command != NULL ? g->command : "",
		g->command != NULL ? ": " : "", name, msg[0] != '\0' ? ": " : "", msg);
	return code;
}

/* Report a library error; the message is the daemon's, or the library's reason. */
int cli_report(const struct cli_global *g, const keysvc *ks, int err)
{
	const char *msg = keysvc_error_message(ks);

	return cli_report_named(g, ks_exit_for_keysvc(err), keysvc_error_name(err), "%s",
			    msg[0] != '\0' ? msg : keysvc_strerror(err));
}


/*
 * "keysvc: unknown command 'NAME' (see keysvc --help)": the word the user
 * typed comes first, since "usage:" before it hid which word was wrong.
 */
int cli_unknown_command(const struct cli_global *g, const char *name)
{
	char msg[256];

	snprintf(msg, sizeof(msg), "unknown command '%.100s' (see keysvc --help)", name);
	cli_sanitize(msg);
	if (g->json)
		cli_print_json(json_pack("{s:s, s:s}", "error", "usage", "message", msg));
	fprintf(stderr, "%skeysvc: %s\n", ks_log_journal_prefix(stderr, KS_LOG_ERR), msg);
	return KS_EXIT_USAGE;
}

/* ---- files ---- */

/*
 * Read all of @path ("-": stdin), at most @max bytes, NUL-terminated. The
 * size of a regular file is checked before reading; anything else is read
 * with the same bound, so a larger input is an error, never a truncation.
 */
int cli_read_input(const struct cli_global *g, const char *path, size_t max, uint8_t **data,
		      size_t *len)
{
	int r;

	if (strcmp(path, "-") == 0)
		r = ks_file_read_fd(STDIN_FILENO, max, KS_FILE_ANY_TYPE, NULL, NULL, data, len);
	else
		r = ks_file_read(path, max, KS_FILE_ANY_TYPE, NULL, NULL, data, len);
	if (r == 0)
		return KS_EXIT_OK;
	if (r == -EFBIG)
		return cli_report_named(g, KS_EXIT_USAGE, "input", "%s: larger than %zu bytes", path, max);
	return cli_report_named(g, KS_EXIT_USAGE, "input", "%s: %s", path, strerror(-r));
}

int cli_out_open(const struct cli_global *g, struct cli_outfile *o, const char *path)
{
	int r;

	o->path = path;
	o->tmp.fd = -1;
	o->tmp.tmp[0] = '\0';
	if (path == NULL)
		return KS_EXIT_OK;
	if ((r = ks_file_tmp_open(&o->tmp, path)) == -ENAMETOOLONG)
		return cli_report_named(g, KS_EXIT_USAGE, "output", "%s: path too long", path);
	if (r < 0)
		return cli_report_named(g, KS_EXIT_INTERNAL, "output", "%s: %s", path, strerror(-r));
	return KS_EXIT_OK;
}

void cli_out_abort(struct cli_outfile *o)
{
	ks_file_tmp_discard(&o->tmp);
}

int cli_out_commit(const struct cli_global *g, struct cli_outfile *o, const void *data, size_t len)
{
	int r;

	if ((r = ks_file_tmp_write(&o->tmp, data, len)) < 0 || (r = ks_file_tmp_sync(&o->tmp, 0644)) < 0 ||
	    (r = ks_file_tmp_commit(&o->tmp, 0)) < 0) {
		cli_out_abort(o);
		return cli_report_named(g, KS_EXIT_INTERNAL, "output", "%s: %s", o->path, strerror(-r));
	}
	/* Only closes it: its name is in place. */
	ks_file_tmp_discard(&o->tmp);
	/* Make the rename durable too. */
	(void)ks_file_sync_dir(o->path);
	return KS_EXIT_OK;
}

/* Write @text to the output file if there is one, else to stdout (unless --json). */
int cli_emit_text(const struct cli_global *g, struct cli_outfile *o, const char *text)
{
	if (o->path != NULL)
		return cli_out_commit(g, o, text, strlen(text));
	if (!g->json)
		fputs(text, stdout);
	return KS_EXIT_OK;
}

/* ---- the daemon ---- */

/* Connect after the command checked its arguments and files. */
int cli_dial(const struct cli_global *g, keysvc **ks)
{
	char msg[PATH_MAX + 256];
	int r;

	if ((r = keysvc_connect(g->socket, ks)) != KEYSVC_OK) {
		ks_connect_error_text(msg, sizeof(msg), g->socket, r, errno);
		return cli_report_named(g, ks_exit_for_keysvc(r), keysvc_error_name(r), "%s", msg);
	}
	if (g->timeout_ms >= 0)
		keysvc_set_timeout(*ks, g->timeout_ms);
	return KS_EXIT_OK;
}

/* Report a library error on @ks and close it. */
int cli_fail_on(const struct cli_global *g, keysvc *ks, int err)
{
	int r = cli_report(g, ks, err);

	keysvc_close(ks);
	return r;
}

/*
 * Report @err of a request that changes the token and close @ks. @change
 * says what may have happened and how to find out ("the key k may have
 * been created: check with `keysvc list`"). A request that went out but
 * got no answer may have been carried out, since keysvcd goes on after the
 * client gave up: a plain "timed out" made users believe nothing happened.
 */
int cli_fail_change(const struct cli_global *g, keysvc *ks, int err, const char *change)
{
	int ms = g->timeout_ms >= 0 ? g->timeout_ms : KEYSVC_DEFAULT_TIMEOUT_MS;
	const char *why = keysvc_error_message(ks);
	int r;

	if (err != KEYSVC_E_IO)
		return cli_fail_on(g, ks, err);
	if (keysvc_request_unsent(ks))
		r = cli_report_named(g, ks_exit_for_keysvc(err), keysvc_error_name(err),
				 "the request never reached keysvcd (%s); nothing was changed", why);
	/* libkeysvc's words for a timeout on receiving or on sending. */
	else if (strncmp(why, "no answer within", 16) == 0 || strstr(why, "timed out") != NULL)
		r = cli_report_named(g, ks_exit_for_keysvc(err), keysvc_error_name(err),
				 "no answer from keysvcd within %g s; %s", ms / 1000.0, change);
	else
		r = cli_report_named(g, ks_exit_for_keysvc(err), keysvc_error_name(err),
				 "no answer from keysvcd (%s); %s", why, change);
	keysvc_close(ks);
	return r;
}
