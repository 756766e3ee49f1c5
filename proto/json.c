#include "proto/json.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KS_JSON_UINT_MAX ((uint64_t)1 << 53)
#define KS_JSON_STRING_DEFAULT_MAX 65536u
#define KS_JSON_STRV_ENTRY_MAX 4096u

/*
 * jansson's parser recurses once per nesting level; measure the depth on
 * the raw bytes first so hostile input never reaches it.
 */
static int depth_ok(const uint8_t *buf, size_t len)
{
	int depth = 0, in_string = 0, escaped = 0;

	for (size_t i = 0; i < len; i++) {
		uint8_t c = buf[i];

		if (in_string) {
			if (escaped)
				escaped = 0;
			else if (c == '\\')
				escaped = 1;
			else if (c == '"')
				in_string = 0;
			continue;
		}
		if (c == '"') {
			in_string = 1;
		} else if (c == '{' || c == '[') {
			if (++depth > KS_JSON_MAX_DEPTH)
				return 0;
		} else if (c == '}' || c == ']') {
			depth--;
		}
	}
	return 1;
}

json_t *ks_json_parse(const uint8_t *buf, size_t len, const char **why)
{
	struct ks_json_where where;

	return ks_json_parse_at(buf, len, why, &where);
}

json_t *ks_json_parse_at(const uint8_t *buf, size_t len, const char **why,
			 struct ks_json_where *where)
{
	json_error_t jerr;
	json_t *root;

	memset(where, 0, sizeof(*where));
	if (!depth_ok(buf, len)) {
		*why = "JSON nested too deeply";
		return NULL;
	}
	/* Without JSON_ALLOW_NUL jansson rejects \u0000; it always checks UTF-8. */
	root = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		switch (json_error_code(&jerr)) {
		case json_error_duplicate_key:
			*why = "duplicate key in JSON object";
			break;
		case json_error_invalid_utf8:
			*why = "invalid UTF-8";
			break;
		case json_error_null_character:
		case json_error_null_byte_in_key:
			*why = "NUL character in JSON";
			break;
		default:
			*why = "malformed JSON";
			break;
		}
		/* jansson counts both from 1; -1 when the error has no place (end of input included). */
		if (jerr.line > 0) {
			where->line = jerr.line;
			where->column = jerr.column > 0 ? jerr.column : 0;
		}
		snprintf(where->detail, sizeof(where->detail), "%s", jerr.text);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		*why = "the message is not a JSON object";
		return NULL;
	}
	return root;
}

static int dispatch_one(json_t *v, const struct ks_json_field *f, void *target,
			const char **why)
{
	uint8_t *dst = (uint8_t *)target + f->offset;
	size_t max;

	switch (f->type) {
	case KS_JSON_STRING:
		if (!json_is_string(v)) {
			*why = "must be a string";
			return -EINVAL;
		}
		max = f->max ? f->max : KS_JSON_STRING_DEFAULT_MAX;
		if (json_string_length(v) > max) {
			*why = "string too long";
			return -EINVAL;
		}
		*(const char **)dst = json_string_value(v);
		return 0;
	case KS_JSON_UINT:
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    (uint64_t)json_integer_value(v) >= KS_JSON_UINT_MAX) {
			*why = "must be a non-negative integer below 2^53";
			return -EINVAL;
		}
		*(uint64_t *)dst = (uint64_t)json_integer_value(v);
		return 0;
	case KS_JSON_BOOL:
		if (!json_is_boolean(v)) {
			*why = "must be true or false";
			return -EINVAL;
		}
		*(int *)dst = json_is_true(v);
		return 0;
	case KS_JSON_STRV: {
		struct ks_strv *sv = (struct ks_strv *)dst;
		size_t i;
		json_t *e;

		max = f->max && f->max < KS_STRV_MAX ? f->max : KS_STRV_MAX;
		if (!json_is_array(v)) {
			*why = "must be an array of strings";
			return -EINVAL;
		}
		if (json_array_size(v) > max) {
			*why = "too many entries";
			return -EINVAL;
		}
		json_array_foreach(v, i, e) {
			if (!json_is_string(e)) {
				*why = "must be an array of strings";
				return -EINVAL;
			}
			if (json_string_length(e) > KS_JSON_STRV_ENTRY_MAX) {
				*why = "string too long";
				return -EINVAL;
			}
			sv->v[i] = json_string_value(e);
		}
		sv->n = json_array_size(v);
		return 0;
	}
	case KS_JSON_OBJECT:
		if (!json_is_object(v)) {
			*why = "must be an object";
			return -EINVAL;
		}
		*(json_t **)dst = v;
		return 0;
	case KS_JSON_ARRAY:
		max = f->max ? f->max : KS_STRV_MAX;
		if (!json_is_array(v)) {
			*why = "must be an array";
			return -EINVAL;
		}
		if (json_array_size(v) > max) {
			*why = "too many entries";
			return -EINVAL;
		}
		*(json_t **)dst = v;
		return 0;
	case KS_JSON_ANY:
		*(json_t **)dst = v;
		return 0;
	case KS_JSON_SKIP:
		return 0;
	}
	*why = "internal: unknown field type";
	return -EINVAL;
}

int ks_json_dispatch(json_t *obj, const struct ks_json_field *table,
		     void *target, unsigned flags, const char **field,
		     const char **why)
{
	const struct ks_json_field *f;
	const char *key;
	json_t *v;
	int r;

	*field = NULL;
	if (!json_is_object(obj)) {
		*why = "must be an object";
		return -EINVAL;
	}
	if (!(flags & KS_JSON_ALLOW_UNKNOWN)) {
		json_object_foreach(obj, key, v) {
			for (f = table; f->name != NULL; f++)
				if (strcmp(f->name, key) == 0)
					break;
			if (f->name == NULL) {
				*field = key;
				*why = "unknown field";
				return -EINVAL;
			}
		}
	}
	for (f = table; f->name != NULL; f++) {
		v = json_object_get(obj, f->name);
		if (v == NULL) {
			if (f->flags & KS_JSON_REQUIRED) {
				*field = f->name;
				*why = "required field missing";
				return -EINVAL;
			}
			continue;
		}
		if ((r = dispatch_one(v, f, target, why)) != 0) {
			*field = f->name;
			return r;
		}
	}
	if (flags & KS_JSON_NO_CHECKS)
		return 0;
	return ks_json_check(obj, table, target, field, why);
}

int ks_json_check(json_t *obj, const struct ks_json_field *table, void *target,
		  const char **field, const char **why)
{
	uint8_t *base = target;
	int r;

	*field = NULL;
	for (const struct ks_json_field *f = table; f->name != NULL; f++) {
		if (f->check == NULL || f->type == KS_JSON_SKIP || json_object_get(obj, f->name) == NULL)
			continue;
		if ((r = f->check(base + f->offset, base + f->check_offset, why)) != 0) {
			*field = f->name;
			return r;
		}
	}
	return 0;
}

int ks_json_serialize(const json_t *obj, size_t max, char **out, size_t *out_len)
{
	/* Most messages fit: one pass into this much, a second only for larger ones. */
	size_t first = max < 4096 ? max : 4096, n;
	char *s;

	if ((s = malloc(first + 1)) == NULL)
		return -ENOMEM;
	n = json_dumpb(obj, s, first, JSON_COMPACT);
	if (n == 0) {
		free(s);
		return -ENOMEM;
	}
	if (n > max) {
		free(s);
		return -EMSGSIZE;
	}
	if (n > first) {
		/* The partial output is data to be signed too: wipe before letting go. */
		explicit_bzero(s, first);
		free(s);
		if ((s = malloc(n + 1)) == NULL)
			return -ENOMEM;
		if (json_dumpb(obj, s, n, JSON_COMPACT) != n) {
			free(s);
			return -ENOMEM;
		}
	}
	s[n] = '\0';
	*out = s;
	*out_len = n;
	return 0;
}
