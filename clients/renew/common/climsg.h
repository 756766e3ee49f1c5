/*
 * What every client's messages share: the program name, progress lines,
 * the first error (for the inventory), --json's one result object and the
 * exit through ks_die(). The exit codes are proto/exitcode.h's, shared
 * with keysvcd and the keysvc CLI.
 */
#ifndef KEYSVC_CLIENTS_RENEW_CLIMSG_H
#define KEYSVC_CLIENTS_RENEW_CLIMSG_H

#include "proto/exitcode.h"

/* Set once by main: the program name in messages, and whether say() prints. */
void ks_cli_init(const char *program, int verbose);

/*
 * Journal priorities: when the stream is the journal's ($JOURNAL_STREAM,
 * proto/log.h), ks_say() lines go as info and ks_die() lines as err, each
 * as warning instead when the message begins "warning:".
 */

/* A progress line on stdout (unless quiet; on stderr with --json). */
void ks_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* --json: ks_say() moves to stderr and ks_json_result() prints. */
void ks_cli_set_json(int on);
int ks_cli_json(void);

/*
 * With --json, the one result object of a run on stdout: {"program",
 * "command", "outcome" (@done on success, "not-due", "busy",
 * "installed-push-failed" or "failed"), "exit_code", "exit_meaning",
 * "certificate" (@cert), "key" (@key), "not_after" (RFC 3339, of the
 * certificate installed at @cert now; null if none), "error" (the first
 * ks_die() message, null on success)}. Without --json nothing. Returns
 * @code, so `return ks_json_result(...)` ends main.
 */
int ks_json_result(const char *command, const char *done, int code, const char *cert, const char *key);

/*
 * "PROGRAM: message" on stderr (up to 8 KiB of message, so a CA's reason
 * is shown whole); returns @code, so `return ks_die(...)` reads well.
 */
int ks_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * The first message ks_die() printed since ks_cli_init() (with the
 * program name left out, at most 511 bytes of it, a longer one cut after a
 * whole word with "…"), "" if none: the
 * one-line reason a renewal client records in the inventory when it fails.
 */
const char *ks_last_error(void);

#endif
