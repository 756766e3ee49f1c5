/*
 * Declarative JSON schemas over jansson (after systemd's sd-json dispatch
 * tables): one table per message says which fields exist, their types,
 * limits, where they go in a typed struct and, for a field that needs it,
 * the check that turns its value into a typed one (a key name checked, an
 * algorithm name made an enum, base64 decoded: proto/wire.h has the
 * protocol's checks).
 */
#ifndef KEYSVC_PROTO_JSON_H
#define KEYSVC_PROTO_JSON_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define KS_JSON_MAX_DEPTH 32
#define KS_STRV_MAX 100

enum ks_json_type {
	KS_JSON_STRING,      /* const char * (borrowed from the json_t) */
	KS_JSON_UINT,        /* uint64_t, 0 .. 2^53-1 */
	KS_JSON_BOOL,        /* int, 0 or 1 */
	KS_JSON_STRV,        /* struct ks_strv: array of strings */
	KS_JSON_OBJECT,      /* json_t * (borrowed), checked to be an object */
	KS_JSON_ARRAY,       /* json_t * (borrowed), checked to be an array of at most max entries */
	KS_JSON_ANY,         /* json_t * (borrowed), any type; the caller checks it */
	KS_JSON_SKIP,        /* allowed and not stored: envelope fields checked elsewhere */
};

/* Field flags. */
#define KS_JSON_REQUIRED 0x1u

struct ks_strv {
	size_t n;
	const char *v[KS_STRV_MAX];
};

/*
 * A field's check. @value points at what the field stored in the target
 * (for KS_JSON_STRING a const char *), @typed at the target's
 * check_offset. Stores the typed form of the value there (an enum,
 * decoded bytes) and returns 0, or returns a negative errno (-EINVAL: a
 * malformed value; -EOPNOTSUPP: a name the protocol does not define) with
 * *@why a static message. A check that allocates leaves what it made in
 * the target even when a later field fails: the caller frees it.
 */
typedef int (*ks_json_check_fn)(const void *value, void *typed, const char **why);

struct ks_json_field {
	const char *name;
	enum ks_json_type type;
	size_t offset;          /* offsetof() in the target struct */
	unsigned flags;
	/* STRING: max bytes (0 = 65536); STRV and ARRAY: max entries
	 * (0 = KS_STRV_MAX); STRV strings are bounded by 4096 bytes each. */
	size_t max;
	ks_json_check_fn check;   /* NULL: the type and max say it all */
	size_t check_offset;      /* offsetof() of what check stores */
};

/* Dispatch flags. */
#define KS_JSON_ALLOW_UNKNOWN 0x1u  /* for responses: ignore fields a newer peer added */
#define KS_JSON_NO_CHECKS 0x2u      /* types only: the caller runs ks_json_check() when it decides */

/*
 * Parse @len bytes as one JSON object: valid UTF-8, duplicate keys
 * rejected, no NUL in strings, nesting at most KS_JSON_MAX_DEPTH (checked
 * on the raw bytes before parsing, so deep input costs no recursion).
 * Returns a new reference, or NULL with *@why set to a static message.
 */
json_t *ks_json_parse(const uint8_t *buf, size_t len, const char **why);

/* Where a text failed to parse, for a person to find it. */
struct ks_json_where {
	int line, column;       /* from 1, as jansson counts (column in characters); 0: no place */
	char detail[160];       /* jansson's own words ("'}' expected near ','"); may quote the text */
};

/*
 * ks_json_parse() that also fills @where on a parse error (all zero
 * when the error has no place: nesting too deep, a valid document that is
 * not an object). For configuration files: @where quotes the input, so a
 * wire message's must not be sent back or logged.
 */
json_t *ks_json_parse_at(const uint8_t *buf, size_t len, const char **why,
			 struct ks_json_where *where);

/*
 * Fill @target from @obj according to @table (terminated by a NULL name).
 * Missing optional fields leave the target untouched (callers zero it).
 * Unknown fields are rejected unless KS_JSON_ALLOW_UNKNOWN. Then, unless
 * KS_JSON_NO_CHECKS, ks_json_check(): the checks run only once every
 * field has its type, so a bad value never hides a type error after it.
 * On error returns -EINVAL (or a check's errno) with *@field naming the
 * offending field (or NULL) and *@why a static message.
 */
int ks_json_dispatch(json_t *obj, const struct ks_json_field *table,
		     void *target, unsigned flags, const char **field,
		     const char **why);

/*
 * Run the checks of @table's fields that @obj holds, in table order, on
 * what ks_json_dispatch() stored in @target. 0, or the first failing
 * check's negative errno with *@field and *@why set.
 */
int ks_json_check(json_t *obj, const struct ks_json_field *table, void *target,
		  const char **field, const char **why);

/*
 * Serialise @obj compactly into a new buffer of at most @max bytes.
 * Returns 0 with *@out (caller frees) and *@out_len, -EMSGSIZE if larger,
 * -ENOMEM.
 */
int ks_json_serialize(const json_t *obj, size_t max, char **out, size_t *out_len);

#endif
