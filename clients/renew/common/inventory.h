/*
 * The inventory: what keysvc's renewal clients manage, one small JSON file
 * per certificate in a directory (default KS_INV_DEFAULT_DIR), named by the
 * SHA-256 of the certificate's absolute path. Each client records every
 * renewal attempt there; `keysvc status` reads the directory.
 *
 * One file per certificate, replaced atomically (temporary file, fsync,
 * rename, mode 0644), keeps concurrent clients of different certificates
 * out of each other's way and a crash from leaving half a record.
 *
 * A record (every field but "version" and "cert" may be absent):
 *   {"version": 1, "cert": "/abs/path.pem", "key": "agent1", "client": "openvox",
 *    "ca_file": "/abs/ca.pem", "crl": "/abs/crl.pem", "last_renewal": 1767225600,
 *    "outcome": "ok" | "failed" | "push-failed", "reason": "one line",
 *    "successes": 3, "failures": 1, "name": "web"}
 * "name" is set by `keysvc track NAME`: the name the operator gave the
 * entry, for `keysvc status --forget NAME`.
 *
 * Errors are negative errno values with a one-line reason in @err (at
 * least KS_INV_ERR_MAX bytes).
 */
#ifndef KEYSVC_CLIENTS_INVENTORY_H
#define KEYSVC_CLIENTS_INVENTORY_H

#include <stddef.h>
#include <time.h>

#define KS_INV_DEFAULT_DIR "/var/lib/keysvc-inventory"
#define KS_INV_ENV "KEYSVC_INVENTORY"
#define KS_INV_ERR_MAX 512
/* Largest record file read; records are a few hundred bytes. */
#define KS_INV_RECORD_MAX ((size_t)64 * 1024)
/* Most records ks_inv_list() reads: a bound on what a directory can cost. */
#define KS_INV_MAX_RECORDS 10000
#define KS_INV_REASON_MAX 300

enum ks_inv_outcome {
	KS_INV_NONE = 0,          /* never renewed by a client (e.g. only in the configuration) */
	KS_INV_OK,
	KS_INV_FAILED,            /* the renewal failed; the installed certificate is as it was */
	KS_INV_PUSH_FAILED,       /* installed, but the reload hook or the check of the served certificate failed */
};

struct ks_inv_entry {
	char *cert;               /* absolute path; required */
	char *key;                /* keysvc key name, NULL if unknown */
	char *client;             /* "openvox", "ucl", "oci", "other"; NULL: "other" */
	char *ca_file;            /* the issuing CA's certificates, NULL if unknown */
	char *crl;                /* the CA's CRL, NULL if none */
	long long last_renewal;   /* seconds since 1970 of the last attempt, 0 if none */
	enum ks_inv_outcome outcome;
	char *reason;             /* one line, with failures; NULL otherwise */
	unsigned long long successes, failures;
	char *name;               /* given by `keysvc track`; NULL otherwise */
};

/* "ok", "failed", "push-failed", or "-" for KS_INV_NONE. */
const char *ks_inv_outcome_name(enum ks_inv_outcome o);

/*
 * The directory: @override (an option) if not NULL, else $KEYSVC_INVENTORY
 * if set and not empty, else @configured (the configuration file's) if not
 * NULL, else KS_INV_DEFAULT_DIR.
 */
const char *ks_inv_dir(const char *override, const char *configured);

/*
 * @path made absolute (relative to the working directory) and cleared of
 * "//" and trailing "/": the form records and the configuration compare.
 * No symlinks are resolved: the file may be gone. Returns a new string,
 * or NULL (out of memory, or no working directory).
 */
char *ks_inv_abs_path(const char *path);

/* The record's file name for @cert_abs: 64 hex digits of SHA-256 and ".json", into @buf (at least 70 bytes). */
void ks_inv_file_name(const char *cert_abs, char *buf, size_t len);

/* Free the strings of @e and zero it. */
void ks_inv_entry_free(struct ks_inv_entry *e);

/*
 * Parse one record. Strict: unknown fields, duplicate keys, wrong types,
 * an unknown outcome or version, control characters in strings are
 * refused (-EBADMSG).
 */
int ks_inv_parse(const char *json, size_t len, struct ks_inv_entry *e, char *err);

/* The record of @cert_abs in @dir: 0, -ENOENT if there is none, or another error. */
int ks_inv_load(const char *dir, const char *cert_abs, struct ks_inv_entry *e, char *err);

/* Write @e (e->cert absolute) atomically into @dir, creating @dir (0755) if it is missing. */
int ks_inv_save(const char *dir, const struct ks_inv_entry *e, char *err);

/*
 * Record one renewal attempt of @cert (made absolute here) at @now:
 * @outcome and @reason (NULL for none; cut at the first line), the success
 * or failure counter incremented. @key, @client, @ca_file and @crl replace
 * the recorded values when not NULL; NULL keeps what was there.
 */
int ks_inv_record(const char *dir, const char *cert, const char *key, const char *client,
		  const char *ca_file, const char *crl, enum ks_inv_outcome outcome, const char *reason,
		  time_t now, char *err);

/*
 * Every record in @dir ("*.json" files), sorted by certificate path, in a
 * new array *@entries of *@n (free with ks_inv_list_free()). A missing
 * @dir is an empty inventory. A file that cannot be read or parsed is
 * passed to @bad (file name and reason) and skipped, so one broken record
 * does not hide the others; @bad may be NULL.
 */
int ks_inv_list(const char *dir, struct ks_inv_entry **entries, size_t *n,
		void (*bad)(const char *file, const char *reason, void *ctx), void *ctx, char *err);

void ks_inv_list_free(struct ks_inv_entry *entries, size_t n);

/*
 * Delete the record of @cert_abs from @dir: the file is unlinked (one
 * atomic step, so a reader sees the record or nothing) and the directory
 * synced. A client recording an attempt at the same moment writes a new
 * record, which is right: that attempt is news. 0, -ENOENT if there is no
 * record, or another error.
 */
int ks_inv_forget(const char *dir, const char *cert_abs, char *err);

#endif
