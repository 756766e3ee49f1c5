/*
 * libFuzzer target for the JSON schema layer (proto/json.c).
 *
 * Any bytes go through ks_json_parse(); what it accepts must be an object
 * that ks_json_serialize() writes out and ks_json_parse() reads back equal
 * (so the depth pre-check on raw bytes and jansson agree, and nothing the
 * daemon accepts is something it cannot write). The object, and every
 * object inside it, is then dispatched against a table holding every field
 * type; a success must respect each field's type and limit, a failure must
 * say why.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "proto/frame.h"
#include "proto/json.h"
#include "tests/fuzz/fuzz.h"


#define STR_MAX 16
#define STRV_MAX 4
#define ARRAY_MAX 8

struct every_type {
	const char *str;
	uint64_t uint;
	int boolean;
	struct ks_strv strv;
	json_t *object;
	json_t *array;
	json_t *any;
};

static const struct ks_json_field every_field[] = {
	{ "str", KS_JSON_STRING, offsetof(struct every_type, str), 0, STR_MAX },
	{ "uint", KS_JSON_UINT, offsetof(struct every_type, uint), 0, 0 },
	{ "bool", KS_JSON_BOOL, offsetof(struct every_type, boolean), 0, 0 },
	{ "strv", KS_JSON_STRV, offsetof(struct every_type, strv), 0, STRV_MAX },
	{ "object", KS_JSON_OBJECT, offsetof(struct every_type, object), 0, 0 },
	{ "array", KS_JSON_ARRAY, offsetof(struct every_type, array), 0, ARRAY_MAX },
	{ "any", KS_JSON_ANY, offsetof(struct every_type, any), 0, 0 },
	{ "skip", KS_JSON_SKIP, 0, 0, 0 },
	{ NULL, 0, 0, 0, 0 },
};

static const struct ks_json_field required_field[] = {
	{ "str", KS_JSON_STRING, offsetof(struct every_type, str), KS_JSON_REQUIRED, 0 },
	{ NULL, 0, 0, 0, 0 },
};

static void check_dispatch(json_t *obj, unsigned flags, int depth)
{
	struct every_type t;
	const char *field = NULL, *why = NULL;
	const char *key;
	json_t *v;

	memset(&t, 0, sizeof(t));
	if (ks_json_dispatch(obj, every_field, &t, flags, &field, &why) != 0) {
		CHECK(why != NULL);
		/* An unknown field is named, and only without ALLOW_UNKNOWN. */
		if (field != NULL && strcmp(why, "unknown field") == 0)
			CHECK(!(flags & KS_JSON_ALLOW_UNKNOWN) && json_object_get(obj, field) != NULL);
	} else {
		CHECK(t.str == NULL || strlen(t.str) <= STR_MAX);
		CHECK(t.uint < ((uint64_t)1 << 53));
		CHECK(t.boolean == 0 || t.boolean == 1);
		CHECK(t.strv.n <= STRV_MAX);
		for (size_t i = 0; i < t.strv.n; i++)
			CHECK(t.strv.v[i] != NULL && strlen(t.strv.v[i]) <= 4096);
		CHECK(t.object == NULL || json_is_object(t.object));
		CHECK(t.array == NULL || (json_is_array(t.array) && json_array_size(t.array) <= ARRAY_MAX));
		CHECK(t.any == NULL || t.any == json_object_get(obj, "any"));
	}
	memset(&t, 0, sizeof(t));
	if (ks_json_dispatch(obj, required_field, &t, KS_JSON_ALLOW_UNKNOWN, &field, &why) == 0)
		CHECK(t.str != NULL && json_is_string(json_object_get(obj, "str")));
	else
		CHECK(why != NULL && field != NULL);
	/* Nested objects, like csr.create's san and attributes. */
	if (depth < 4)
		json_object_foreach(obj, key, v)
			if (json_is_object(v))
				check_dispatch(v, flags, depth + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *why = NULL;
	json_t *obj, *again;
	char *out = NULL;
	size_t out_len = 0;
	int r;

	obj = ks_json_parse(data, size, &why);
	if (obj == NULL) {
		CHECK(why != NULL);
		return 0;
	}
	CHECK(json_is_object(obj));

	r = ks_json_serialize(obj, KS_FRAME_MAX, &out, &out_len);
	CHECK(r == 0 || r == -EMSGSIZE);
	if (r == 0) {
		CHECK(out_len > 0 && out_len <= KS_FRAME_MAX && strlen(out) == out_len);
		again = ks_json_parse((const uint8_t *)out, out_len, &why);
		if (again == NULL) {
			fprintf(stderr, "serialised form not accepted (%s): %s\n", why, out);
			abort();
		}
		CHECK(json_equal(obj, again));
		json_decref(again);
		free(out);
	}

	check_dispatch(obj, 0, 0);
	check_dispatch(obj, KS_JSON_ALLOW_UNKNOWN, 0);
	json_decref(obj);
	return 0;
}
