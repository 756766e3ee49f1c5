/*
 * What every renewal client's command line shares: messages, the exit
 * codes, number parsing, keysvcd's public keys and the HTTPS options.
 * One definition here keeps the clients' behaviour the same; their exit
 * codes are proto/exitcode.h's, shared with keysvcd and the keysvc CLI.
 */
#ifndef KEYSVC_CLIENTS_CLIUTIL_H
#define KEYSVC_CLIENTS_CLIUTIL_H

#include <getopt.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "clients/renew/https/https.h"
#include "keysvc/keysvc.h"
#include "proto/exitcode.h"

/*
 * The exit code for a libkeysvc error (KEYSVC_OK and KEYSVC_E_*), for the
 * keysvc CLI and the renewal clients alike: cannot connect or a broken
 * connection KS_EXIT_CONNECT, denied KS_EXIT_DENIED, audit-unavailable
 * KS_EXIT_AUDIT, token-unavailable KS_EXIT_TOKEN, no-such-key
 * KS_EXIT_NO_SUCH_KEY, exists KS_EXIT_EXISTS, unsupported
 * KS_EXIT_UNSUPPORTED, a request the daemon or library refused as malformed
 * (bad-request, KEYSVC_E_INVALID) KS_EXIT_USAGE, anything else
 * KS_EXIT_INTERNAL.
 */
int ks_exit_for_keysvc(int err);


/* Set once by main: the program name in messages, and whether say() prints. */
void ks_cli_init(const char *program, int verbose);

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

/*
 * A credential (a one-time or IAM token) from @path, named @option in
 * messages: a regular file, not a symlink, of mode 0600 or stricter, and
 * shorter than @len - 1 bytes. 0 with @buf NUL-terminated and *@n its
 * length; else KS_EXIT_USAGE with the reason printed. The caller checks
 * the contents and wipes @buf.
 */
int ks_read_secret_file(const char *option, const char *path, char *buf, size_t len, size_t *n);

/* A decimal in [@min, @max] with nothing after it. 0 or -1. */
int ks_parse_long(const char *s, long min, long max, long *out);

/*
 * Every "--name" in @argv (before "--") must be the whole name of an entry
 * of @longopts. getopt_long() takes unambiguous prefixes, so without this
 * "--token SECRET" would be read as "--token-file SECRET" and a secret
 * would sit on a command line that seemed to work. 0, or KS_EXIT_USAGE
 * with "unrecognized option" printed.
 */
int ks_check_long_options(int argc, char *const argv[], const struct option *longopts);

/* The CA certificates of @path (--ca-file). 0, or KS_EXIT_USAGE with the reason printed. */
int ks_load_ca_file(const char *path, STACK_OF(X509) **out);

/*
 * The exit code for a negative errno @r from ks_https_request() and its
 * @resp: -ENOKEY by keysvcd's answer (resp->keysvc_reason) as
 * ks_exit_for_keysvc() would map it, else KS_EXIT_INTERNAL (keysvc.so
 * missing); -EINVAL KS_EXIT_USAGE; anything else KS_EXIT_NETWORK.
 */
int ks_https_exit(int r, const struct ks_https_response *resp);

/*
 * "cannot reach keysvcd at PATH: REASON; is it running? (systemctl status
 * keysvcd.socket)" into @buf, for keysvc_connect()'s error @r on @socket
 * (NULL: the path keysvc_connect() chose) with @e the errno it left. Users
 * who got only "cannot connect" did not know which socket was tried.
 */
void ks_connect_error_text(char *buf, size_t len, const char *socket, int r, int e);

/* Connect to keysvcd (@socket NULL: the default). 0 or KS_EXIT_CONNECT, with the reason printed. */
int ks_open_keysvc(const char *socket, keysvc **ks);

/*
 * Key @name's public key from keysvcd. 0; -1 (nothing printed) if there is
 * no such key and @missing_ok; else an exit code with the reason printed.
 */
int ks_token_public_key(keysvc *ks, const char *name, EVP_PKEY **pub, int missing_ok);

/*
 * HTTPS options for a CA: pinned @ca_file, total timeout @timeout_s (the
 * connect timeout at most 10 s of it), answers capped at KS_CI_PEM_MAX,
 * and a client certificate with key "keysvc:@key" when both are given.
 * @uri_buf (at least 80 bytes) holds the key URI.
 */
void ks_https_ca_opts(struct ks_https_opts *h, const char *ca_file, long timeout_s, int insecure,
		      const char *cert_file, const char *key, char *uri_buf, size_t uri_len);

#endif
