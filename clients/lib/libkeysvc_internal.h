/*
 * What libkeysvc.c (the handle, errors, connection, request building and
 * one exchange) and libkeysvc_ops.c (one call per operation) share.
 * Nothing here is exported: the library's symbols are keysvc_* only
 * (libkeysvc.map).
 */
#ifndef KEYSVC_CLIENTS_LIBKEYSVC_INTERNAL_H
#define KEYSVC_CLIENTS_LIBKEYSVC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "keysvc/keysvc.h"
#include "proto/json.h"

#define KEYSVC_EXPORT __attribute__((visibility("default")))

/* Caps on what we accept from the daemon (all far above what v1 sends). */
#define NAME_MAX_BYTES 256       /* key names (v1: 64) */
#define SHORT_MAX_BYTES 256      /* type names, token fields, server string */
#define PEM_MAX_BYTES 65536      /* public keys, CSRs, certificates */
#define SIG_B64_MAX_BYTES 4096
#define SIG_MAX_BYTES 1024       /* RSA-4096 is 512 bytes, ECDSA P-384 DER about 104 */
#define LIST_MAX_ENTRIES 8192    /* a 64 KiB frame holds fewer */

struct keysvc {
	int fd;                  /* -1 once broken */
	int timeout_ms;
	uint64_t next_id;
	int unsent;              /* the last request certainly never reached the daemon */
	int list_truncated;      /* the last key.list left out keys the peer may list */
	/* The purposes of the last key.list's keys, by index (libkeysvc_purposes.c). */
	char **list_purposes;    /* "csr,tls"; NULL entries: the daemon did not say */
	int *list_legacy;
	size_t list_n;
	char message[KEYSVC_MESSAGE_MAX];
};

/*
 * Set the handle's message (keysvc_error_message()) and return @code; an
 * I/O or protocol error also breaks the handle for good, since the stream
 * may be out of step with the daemon.
 */
int libks_fail(keysvc *ks, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* libks_fail() with KEYSVC_E_NOMEM. */
int libks_nomem(keysvc *ks);

/* Set @obj[@field] = @value, a string checked to be strict UTF-8 (else KEYSVC_E_INVALID). */
int libks_put_str(keysvc *ks, json_t *obj, const char *field, const char *value);

/* Set @obj[@field] to the array of strings @v[0..@n) (nothing if @n is 0). */
int libks_put_strv(keysvc *ks, json_t *obj, const char *field, const char *const *v, size_t n);

/* A new request {"op": @op}. Checks the handle first. On error *@req is NULL. */
int libks_req_new(keysvc *ks, const char *op, json_t **req);

/* A new request {"op": @op, "key": @name}; @name must be a non-empty string. */
int libks_req_new_key(keysvc *ks, const char *op, const char *name, json_t **req);

/* Read @obj with @table; a response that does not fit is a protocol error. */
int libks_decode(keysvc *ks, json_t *obj, const struct ks_json_field *table, void *target);

/*
 * Send @req (always consumed) and read the answer. KEYSVC_OK with *@resp
 * the response object (caller decrefs), a named error of the daemon with
 * its message kept, or a local error.
 */
int libks_transact(keysvc *ks, json_t *req, json_t **resp);

/* Copy @s (NULL allowed) to *@out if @out is not NULL. */
int libks_dup_out(keysvc *ks, const char *s, char **out);

/*
 * Send @req; on success copy the string result field @field (at most @max
 * bytes) to *@out. @field NULL: only the outcome matters.
 */
int libks_call(keysvc *ks, json_t *req, const char *field, size_t max, char **out);

/* Check that @v is a string of at most @max bytes or null (*@s = NULL then). */
int libks_string_or_null(keysvc *ks, const char *what, json_t *v, size_t max, const char **s);

/* ---- libkeysvc_purposes.c ---- */

/*
 * The "purposes" array of the result object @obj as "csr,tls" in *@out
 * (malloc'd; NULL when @obj has none: a daemon before purposes), and its
 * "purposes_legacy" in *@legacy. KEYSVC_OK or KEYSVC_E_PROTOCOL/NOMEM.
 */
int libks_purposes_read(keysvc *ks, json_t *obj, char **out, int *legacy);

/* Keep the purposes of the key.list @keys (the result's array) in the handle. */
int libks_list_purposes_keep(keysvc *ks, json_t *keys);

/* Forget what libks_list_purposes_keep() kept. */
void libks_list_purposes_clear(keysvc *ks);

#endif
