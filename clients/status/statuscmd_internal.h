/*
 * What the keysvc commands of this folder share: statuscmd.c (status and
 * its --forget, and these helpers), track.c (track) and verify.c (verify).
 */
#ifndef KEYSVC_CLIENTS_STATUSCMD_INTERNAL_H
#define KEYSVC_CLIENTS_STATUSCMD_INTERNAL_H

#include <stddef.h>

#include <openssl/x509.h>

/* Replace control characters of @s (for messages quoting file or daemon text). */
void statuscmd_sanitize(char *s);

/* With JSON output every failure is also one {"error", "message"} object on stdout, as in the rest of the CLI. */
extern int statuscmd_json_errors;

/* "keysvc: CMD: NAME: message" on stderr (and as JSON); returns @code. */
int statuscmd_fail(const char *cmd, int code, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#define statuscmd_usage_err(cmd, ...) statuscmd_fail((cmd), KS_EXIT_USAGE, "usage", __VA_ARGS__)

/* The first certificate of @path (a certificate or a chain): 0, -ENOENT, or -EBADMSG with @err. */
int statuscmd_read_leaf(const char *path, X509 **out, char *err);

/* @name as RFC 4514 text (UTF-8 kept, control characters replaced) into @buf of @len bytes. */
void statuscmd_name_text(const X509_NAME *name, char *buf, size_t len);

/* @t as "YYYY-MM-DDTHH:MM:SSZ" into @buf, "?" when unreadable. */
void statuscmd_iso_time(const ASN1_TIME *t, char *buf, size_t len);

#endif
