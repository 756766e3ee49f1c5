/*
 * What the files of the keysvc CLI share. keysvc-cli.c parses the options
 * and runs the commands that talk to keysvcd; cli_output.c holds the
 * output, the error reports, the files and the connection; cli_audit.c
 * holds audit-verify. Functions returning an exit code (KS_EXIT_*) have
 * already reported the error (stderr, and stdout with --json).
 */
#ifndef KEYSVC_CLIENTS_CLI_CLI_CMD_H
#define KEYSVC_CLIENTS_CLI_CLI_CMD_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "keysvc/keysvc.h"
#include "clients/status/statuscmd.h"
#include "proto/file.h"

/* Options before the command; set once in main(). */
struct cli_global {
	const char *socket;
	int json;
	int timeout_ms;            /* -1: library default */
	const char *command;       /* for messages: "keysvc: COMMAND: ..."; NULL before one is known */
};

/*
 * An output file written atomically: cli_out_open() creates a temporary file
 * beside @path before the daemon is asked anything (so a bad --out costs
 * no key generation), cli_out_commit() writes, fsyncs and renames it over
 * @path, cli_out_abort() removes it. @path is never touched on failure.
 */
struct cli_outfile {
	const char *path;
	struct ks_file_tmp tmp;       /* the new file until it is renamed over @path */
};

/* Print @o (reference taken) as one line of JSON on stdout. */
void cli_print_json(json_t *o);

/* Replace control characters of @s (for messages quoting user or daemon text). */
void cli_sanitize(char *s);

/*
 * Report an error named @name with exit code @code: on stderr always, and
 * as {"error", "message"} on stdout with --json. Returns @code.
 */
int cli_report_named(const struct cli_global *g, int code, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Report a library error; the message is the daemon's, or the library's reason. */
int cli_report(const struct cli_global *g, const keysvc *ks, int err);

#define cli_usage_error(g, ...) cli_report_named((g), KS_EXIT_USAGE, "usage", __VA_ARGS__)

/* Report "unknown command 'NAME' (see keysvc --help)"; returns KS_EXIT_USAGE. */
int cli_unknown_command(const struct cli_global *g, const char *name);

/*
 * Read all of @path ("-": stdin), at most @max bytes, NUL-terminated, into
 * *@data (malloc'd, *@len bytes without the NUL). A larger input is an
 * error, never a truncation. KS_EXIT_OK or an exit code.
 */
int cli_read_input(const struct cli_global *g, const char *path, size_t max, uint8_t **data,
		   size_t *len);

/* Create the temporary file of @o beside @path. KS_EXIT_OK or an exit code. */
int cli_out_open(const struct cli_global *g, struct cli_outfile *o, const char *path);

/* Remove the temporary file of @o, if any. */
void cli_out_abort(struct cli_outfile *o);

/* Write @data, fsync and rename over o->path; aborts @o on failure. KS_EXIT_OK or an exit code. */
int cli_out_commit(const struct cli_global *g, struct cli_outfile *o, const void *data, size_t len);

/* Write @text to the output file if there is one, else to stdout (unless --json). */
int cli_emit_text(const struct cli_global *g, struct cli_outfile *o, const char *text);

/* Connect to g->socket with g's timeout into *@ks. KS_EXIT_OK or an exit code. */
int cli_dial(const struct cli_global *g, keysvc **ks);

/* Report a library error on @ks and close it; returns the exit code. */
int cli_fail_on(const struct cli_global *g, keysvc *ks, int err);

/*
 * Report @err of a request that changes the token and close @ks. @change
 * says what may have happened and how to find out, for a request that
 * went out but got no answer. Returns the exit code.
 */
int cli_fail_change(const struct cli_global *g, keysvc *ks, int err, const char *change);

/*
 * `keysvc key-ref NAME [--out FILE]` (cli_keyref.c): after keysvcd shows
 * key @name exists and may be read, a key reference file (PEM, no secret)
 * naming it, and the socket if --socket was given, to @out or stdout.
 */
int cli_key_ref(const struct cli_global *g, const char *name, const char *out);

/* `keysvc provider-check [--key FILE]` (cli_keyref.c): its usage text, and the command. */
extern const char cli_provider_check_usage[];
int cli_provider_check_main(int argc, char **argv, const struct ks_cmd_global *g);

/* audit-verify's usage text, and the command (argv[0] is "audit-verify"); an exit code. */
extern const char cli_audit_verify_usage[];
int cli_audit_verify_main(int argc, char **argv, const struct ks_cmd_global *g);

#endif
