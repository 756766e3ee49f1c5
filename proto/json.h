/*
 * Declarative JSON schemas over jansson (after systemd's sd-json dispatch
 * tables): one table per message says which fields exist, their types,
 * limits and where they go in a typed struct.
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

struct ks_json_field {
	const char *name;
	enum ks_json_type type;
	size_t offset;          /* offsetof() in the target struct */
	unsigned flags;
	/* STRING: max bytes (0 = 65536); STRV and ARRAY: max entries
	 * (0 = KS_STRV_MAX); STRV strings are bounded by 4096 bytes each. */
	size_t max;
};

/* Dispatch flags. */
#define KS_JSON_ALLOW_UNKNOWN 0x1u  /* for responses: ignore fields a newer peer added */

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
 * Unknown fields are rejected unless KS_JSON_ALLOW_UNKNOWN. On error returns
 * -EINVAL with *@field naming the offending field (or NULL) and *@why a
 * static message.
 */
int ks_json_dispatch(json_t *obj, const struct ks_json_field *table,
		     void *target, unsigned flags, const char **field,
		     const char **why);

/*
 * Serialise @obj compactly into a new buffer of at most @max bytes.
 * Returns 0 with *@out (caller frees) and *@out_len, -EMSGSIZE if larger,
 * -ENOMEM.
 */
int ks_json_serialize(const json_t *obj, size_t max, char **out, size_t *out_len);

#endif
