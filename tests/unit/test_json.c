/* JSON parsing and declarative schemas. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/json.h"

static json_t *parse(const char *s, const char **why)
{
	return ks_json_parse((const uint8_t *)s, strlen(s), why);
}

static void expect_reject(const char *s, size_t len, const char *why_expected)
{
	const char *why = NULL;
	json_t *o = ks_json_parse((const uint8_t *)s, len, &why);

	if (o != NULL) {
		json_decref(o);
		fail_msg("accepted %.*s", (int)len, s);
	}
	assert_non_null(why);
	if (why_expected != NULL && strcmp(why, why_expected) != 0)
		fail_msg("%.*s: why is \"%s\", expected \"%s\"", (int)len, s, why, why_expected);
}

#define REJECT(lit, why) expect_reject(lit, sizeof(lit) - 1, why)

static void test_parse_good(void **state)
{
	const char *why = NULL;
	json_t *o;

	(void)state;
	o = parse(" {\"a\": [1, {\"b\": \"\\u00e9\\n\"}], \"c\": null}\n", &why);
	assert_non_null(o);
	assert_true(json_is_object(o));
	assert_int_equal(json_object_size(o), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(o, "a"), 1), "b")),
			    "\xc3\xa9\n");
	json_decref(o);
	o = parse("{}", &why);
	assert_non_null(o);
	assert_int_equal(json_object_size(o), 0);
	json_decref(o);
	/* Only @len bytes are parsed. */
	o = ks_json_parse((const uint8_t *)"{\"k\":1}GARBAGE", 7, &why);
	assert_non_null(o);
	assert_int_equal(json_integer_value(json_object_get(o, "k")), 1);
	json_decref(o);
	/* Same key in different objects is not a duplicate. */
	o = parse("{\"a\":{\"a\":1},\"b\":{\"a\":2}}", &why);
	assert_non_null(o);
	json_decref(o);
}

static void test_parse_rejects(void **state)
{
	(void)state;
	/* Invalid UTF-8: a lone byte, a bad continuation, an overlong form, a surrogate, in a key. */
	REJECT("{\"a\":\"\xff\"}", "invalid UTF-8");
	REJECT("{\"a\":\"\xc3\x28\"}", "invalid UTF-8");
	REJECT("{\"a\":\"\xc0\xaf\"}", "invalid UTF-8");
	REJECT("{\"a\":\"\xed\xa0\x80\"}", "invalid UTF-8");
	REJECT("{\"\xfe\":1}", "invalid UTF-8");
	REJECT("{\"a\":\"\xe2\x82\"}", "invalid UTF-8");
	/* Duplicate keys, top level and nested. */
	REJECT("{\"a\":1,\"a\":2}", "duplicate key in JSON object");
	REJECT("{\"a\":1,\"b\":2,\"a\":1}", "duplicate key in JSON object");
	REJECT("{\"o\":{\"b\":1,\"b\":2}}", "duplicate key in JSON object");
	REJECT("{\"o\":[{\"b\":1,\"b\":\"x\"}]}", "duplicate key in JSON object");
	/* NUL, escaped in a value and in a key, or raw. */
	REJECT("{\"a\":\"x\\u0000y\"}", "NUL character in JSON");
	REJECT("{\"a\\u0000b\":1}", "NUL character in JSON");
	REJECT("{\"a\":\"x\0y\"}", NULL);
	REJECT("{\"a\":1}\0", NULL);
	/* Not an object at the top. */
	REJECT("[1,2]", "the message is not a JSON object");
	REJECT("[]", "the message is not a JSON object");
	REJECT("[{}]", "the message is not a JSON object");
	/* jansson itself refuses a scalar at the top. */
	REJECT("42", NULL);
	REJECT("-1.5", NULL);
	REJECT("\"s\"", NULL);
	REJECT("null", NULL);
	REJECT("true", NULL);
	/* Truncated, trailing garbage, empty, other syntax errors. */
	REJECT("{\"a\":", "malformed JSON");
	REJECT("{\"a\":1", "malformed JSON");
	REJECT("{\"a\":\"abc", "malformed JSON");
	REJECT("{\"a\":[1,2", "malformed JSON");
	REJECT("{", "malformed JSON");
	REJECT("{\"a\":1} trailing", "malformed JSON");
	REJECT("{\"a\":1}{}", "malformed JSON");
	REJECT("{\"a\":1}]", "malformed JSON");
	REJECT("", "malformed JSON");
	REJECT("   ", "malformed JSON");
	REJECT("{'a':1}", "malformed JSON");
	REJECT("{\"a\":1,}", "malformed JSON");
	REJECT("{a:1}", "malformed JSON");
	REJECT("{\"a\":NaN}", "malformed JSON");
	REJECT("{\"a\":18446744073709551616}", "malformed JSON");
	REJECT("{\"a\":\"\\ud800\"}", "malformed JSON");
	REJECT("\xef\xbb\xbf{}", "malformed JSON");
}

/* An object holding @depth - 1 nested arrays: @depth levels in all. */
static char *nested(size_t depth, int in_string)
{
	char *s = malloc(2 * depth + 32);
	size_t n = 0;

	assert_non_null(s);
	n += (size_t)sprintf(s, in_string ? "{\"a\":\"" : "{\"a\":");
	memset(s + n, '[', depth - 1);
	n += depth - 1;
	if (in_string) {
		s[n++] = '"';
	}
	memset(s + n, ']', in_string ? 0 : depth - 1);
	n += in_string ? 0 : depth - 1;
	strcpy(s + n, "}");
	return s;
}

/* @depth levels of objects: {"a":{"a":...{}...}} */
static char *nested_objects(size_t depth)
{
	char *s = malloc(6 * depth + 8);
	size_t n = 0;

	assert_non_null(s);
	for (size_t i = 1; i < depth; i++)
		n += (size_t)sprintf(s + n, "{\"a\":");
	n += (size_t)sprintf(s + n, "{");
	for (size_t i = 0; i < depth; i++)
		s[n++] = '}';
	s[n] = '\0';
	return s;
}

static void test_depth(void **state)
{
	const char *why = NULL;
	char *s;
	json_t *o;

	(void)state;
	/* The object itself is level 1; 31 arrays inside make 32. */
	s = nested(KS_JSON_MAX_DEPTH, 0);
	o = parse(s, &why);
	assert_non_null(o);
	json_decref(o);
	free(s);
	s = nested(KS_JSON_MAX_DEPTH + 1, 0);
	why = NULL;
	assert_null(parse(s, &why));
	assert_string_equal(why, "JSON nested too deeply");
	free(s);
	s = nested(100000, 0);
	why = NULL;
	assert_null(parse(s, &why));
	assert_string_equal(why, "JSON nested too deeply");
	free(s);
	/* Objects count the same as arrays. */
	s = nested_objects(KS_JSON_MAX_DEPTH);
	o = parse(s, &why);
	assert_non_null(o);
	json_decref(o);
	free(s);
	s = nested_objects(KS_JSON_MAX_DEPTH + 1);
	why = NULL;
	assert_null(parse(s, &why));
	assert_string_equal(why, "JSON nested too deeply");
	free(s);
	/* Truncated deep input is refused for depth before it is parsed. */
	s = nested(KS_JSON_MAX_DEPTH + 1, 0);
	why = NULL;
	assert_null(ks_json_parse((const uint8_t *)s, 5 + KS_JSON_MAX_DEPTH, &why));
	assert_string_equal(why, "JSON nested too deeply");
	free(s);
	/* Sibling containers do not add up. */
	{
		char buf[4096];
		size_t n = 0;

		n += (size_t)sprintf(buf, "{");
		for (int i = 0; i < 40; i++)
			n += (size_t)sprintf(buf + n, "%s\"k%d\":[[[]]]", i ? "," : "", i);
		sprintf(buf + n, "}");
		o = parse(buf, &why);
		assert_non_null(o);
		json_decref(o);
	}
	/* Brackets inside strings do not count. */
	s = nested(1000, 1);
	o = parse(s, &why);
	assert_non_null(o);
	assert_int_equal(strlen(json_string_value(json_object_get(o, "a"))), 999);
	json_decref(o);
	free(s);
	/* Nor inside keys, nor after an escaped quote. */
	o = parse("{\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\":1,"
		  "\"b\":\"\\\"{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{\"}", &why);
	assert_non_null(o);
	json_decref(o);
}

/* An escaped backslash closes nothing: what follows the string still counts. */
static void test_depth_escapes(void **state)
{
	char buf[512];
	const char *why = NULL;
	size_t n;
	json_t *o;

	(void)state;
	for (int extra = 0; extra <= 1; extra++) {
		int depth = KS_JSON_MAX_DEPTH + extra;

		n = (size_t)sprintf(buf, "{\"s\":\"x\\\\\",\"t\":\"\\\"\",\"a\":");
		for (int i = 1; i < depth; i++)
			buf[n++] = '[';
		for (int i = 1; i < depth; i++)
			buf[n++] = ']';
		buf[n++] = '}';
		buf[n] = '\0';
		why = NULL;
		o = parse(buf, &why);
		if (extra == 0) {
			assert_non_null(o);
			assert_string_equal(json_string_value(json_object_get(o, "s")), "x\\");
			json_decref(o);
		} else {
			assert_null(o);
			assert_string_equal(why, "JSON nested too deeply");
		}
	}
}

struct target {
	const char *s;
	uint64_t u;
	int b;
	struct ks_strv v;
	json_t *obj, *arr, *any;
	int skipped;
};

static const struct ks_json_field fields[] = {
	{ "s", KS_JSON_STRING, offsetof(struct target, s), KS_JSON_REQUIRED, 8 },
	{ "u", KS_JSON_UINT, offsetof(struct target, u), 0, 0 },
	{ "b", KS_JSON_BOOL, offsetof(struct target, b), 0, 0 },
	{ "v", KS_JSON_STRV, offsetof(struct target, v), 0, 3 },
	{ "obj", KS_JSON_OBJECT, offsetof(struct target, obj), 0, 0 },
	{ "arr", KS_JSON_ARRAY, offsetof(struct target, arr), 0, 2 },
	{ "any", KS_JSON_ANY, offsetof(struct target, any), 0, 0 },
	{ "skip", KS_JSON_SKIP, offsetof(struct target, skipped), 0, 0 },
	{ NULL, 0, 0, 0, 0 },
};

/* Default limits: 65536 bytes per string, KS_STRV_MAX entries. */
static const struct ks_json_field default_fields[] = {
	{ "s", KS_JSON_STRING, offsetof(struct target, s), 0, 0 },
	{ "v", KS_JSON_STRV, offsetof(struct target, v), 0, 0 },
	{ "arr", KS_JSON_ARRAY, offsetof(struct target, arr), 0, 0 },
	{ NULL, 0, 0, 0, 0 },
};

/* A limit above KS_STRV_MAX cannot overflow struct ks_strv. */
static const struct ks_json_field big_fields[] = {
	{ "v", KS_JSON_STRV, offsetof(struct target, v), 0, 500 },
	{ NULL, 0, 0, 0, 0 },
};

/*
 * The parsed object is kept until the next call (or release()), because the
 * target borrows strings and values from it.
 */
static json_t *held;

static void release(void)
{
	json_decref(held);
	held = NULL;
}

static int teardown(void **state)
{
	(void)state;
	release();
	return 0;
}

static int dispatch_table(const char *s, const struct ks_json_field *table,
			  struct target *t, unsigned flags, const char **field,
			  const char **why_out)
{
	const char *why = NULL;
	json_t *o;
	int r;

	release();
	o = parse(s, &why);
	if (o == NULL)
		fail_msg("did not parse: %.60s: %s", s, why);
	memset(t, 0, sizeof(*t));
	*field = NULL;
	why = NULL;
	r = ks_json_dispatch(o, table, t, flags, field, &why);
	if (r != 0)
		assert_non_null(why);
	if (why_out != NULL)
		*why_out = why;
	held = o;
	return r;
}

static int dispatch(const char *s, struct target *t, unsigned flags, const char **field)
{
	return dispatch_table(s, fields, t, flags, field, NULL);
}

static void test_dispatch_good(void **state)
{
	struct target t;
	const char *field = "sentinel";
	const char *why;
	json_t *o;

	(void)state;
	o = parse("{\"s\":\"abcdefgh\",\"u\":9007199254740991,\"b\":true,\"v\":[\"x\",\"y\",\"z\"],"
		  "\"obj\":{},\"arr\":[1,\"two\"],\"any\":null,\"skip\":[1,2]}", &why);
	assert_non_null(o);
	memset(&t, 0, sizeof(t));
	t.skipped = 77;
	assert_int_equal(ks_json_dispatch(o, fields, &t, 0, &field, &why), 0);
	assert_null(field);
	assert_string_equal(t.s, "abcdefgh");
	/* Borrowed from the object, not copied. */
	assert_ptr_equal(t.s, json_string_value(json_object_get(o, "s")));
	assert_int_equal(t.u, 9007199254740991ULL);
	assert_int_equal(t.b, 1);
	assert_int_equal(t.v.n, 3);
	assert_string_equal(t.v.v[0], "x");
	assert_string_equal(t.v.v[1], "y");
	assert_string_equal(t.v.v[2], "z");
	assert_ptr_equal(t.obj, json_object_get(o, "obj"));
	assert_ptr_equal(t.arr, json_object_get(o, "arr"));
	assert_ptr_equal(t.any, json_object_get(o, "any"));
	assert_true(json_is_null(t.any));
	/* SKIP stores nothing. */
	assert_int_equal(t.skipped, 77);
	json_decref(o);

	/* Other values at the edges. */
	assert_int_equal(dispatch("{\"s\":\"\",\"u\":0,\"b\":false,\"v\":[],\"any\":{\"x\":[1]}}",
				  &t, 0, &field), 0);
	assert_string_equal(t.s, "");
	assert_int_equal(t.u, 0);
	assert_int_equal(t.b, 0);
	assert_int_equal(t.v.n, 0);
	assert_int_equal(dispatch("{\"s\":\"a\",\"any\":1.5}", &t, 0, &field), 0);
	assert_int_equal(dispatch("{\"s\":\"a\",\"any\":\"str\"}", &t, 0, &field), 0);
	assert_int_equal(dispatch("{\"s\":\"a\",\"skip\":{\"anything\":\"goes\"}}", &t, 0, &field), 0);
	/* A multibyte string at the byte limit. */
	assert_int_equal(dispatch("{\"s\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"}", &t, 0, &field), 0);
}

static void test_dispatch_missing_untouched(void **state)
{
	struct target t;
	const char *field, *why;
	json_t *o;

	(void)state;
	o = parse("{\"s\":\"only\"}", &why);
	assert_non_null(o);
	memset(&t, 0, sizeof(t));
	t.u = 42;
	t.b = 7;
	t.v.n = 9;
	t.any = (json_t *)&t;
	assert_int_equal(ks_json_dispatch(o, fields, &t, 0, &field, &why), 0);
	assert_string_equal(t.s, "only");
	assert_int_equal(t.u, 42);
	assert_int_equal(t.b, 7);
	assert_int_equal(t.v.n, 9);
	assert_ptr_equal(t.any, &t);
	assert_null(t.obj);
	json_decref(o);
}

static void test_dispatch_errors(void **state)
{
	static const struct {
		const char *json;
		const char *field;
		const char *why;
	} cases[] = {
		{ "{}", "s", "required field missing" },
		{ "{\"u\":1}", "s", "required field missing" },
		{ "{\"s\":\"123456789\"}", "s", "string too long" },
		{ "{\"s\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9x\"}", "s", "string too long" },
		{ "{\"s\":1}", "s", "must be a string" },
		{ "{\"s\":null}", "s", "must be a string" },
		{ "{\"s\":true}", "s", "must be a string" },
		{ "{\"s\":[\"a\"]}", "s", "must be a string" },
		{ "{\"s\":{}}", "s", "must be a string" },
		{ "{\"s\":\"a\",\"zzz\":1}", "zzz", "unknown field" },
		{ "{\"zzz\":1}", "zzz", "unknown field" },
		{ "{\"s\":\"a\",\"S\":\"a\"}", "S", "unknown field" },
		{ "{\"s\":\"a\",\"u\":-1}", "u", NULL },
		{ "{\"s\":\"a\",\"u\":-9007199254740991}", "u", NULL },
		{ "{\"s\":\"a\",\"u\":9007199254740992}", "u", NULL },
		{ "{\"s\":\"a\",\"u\":9223372036854775807}", "u", NULL },
		{ "{\"s\":\"a\",\"u\":1.5}", "u", NULL },
		{ "{\"s\":\"a\",\"u\":1.0}", "u", NULL },
		{ "{\"s\":\"a\",\"u\":1e3}", "u", NULL },
		{ "{\"s\":\"a\",\"u\":\"1\"}", "u", NULL },
		{ "{\"s\":\"a\",\"u\":true}", "u", NULL },
		{ "{\"s\":\"a\",\"u\":null}", "u", NULL },
		{ "{\"s\":\"a\",\"b\":1}", "b", "must be true or false" },
		{ "{\"s\":\"a\",\"b\":0}", "b", "must be true or false" },
		{ "{\"s\":\"a\",\"b\":\"true\"}", "b", "must be true or false" },
		{ "{\"s\":\"a\",\"b\":null}", "b", "must be true or false" },
		{ "{\"s\":\"a\",\"v\":\"x\"}", "v", "must be an array of strings" },
		{ "{\"s\":\"a\",\"v\":{}}", "v", "must be an array of strings" },
		{ "{\"s\":\"a\",\"v\":[1]}", "v", "must be an array of strings" },
		{ "{\"s\":\"a\",\"v\":[\"a\",null]}", "v", "must be an array of strings" },
		{ "{\"s\":\"a\",\"v\":[\"a\",[\"b\"]]}", "v", "must be an array of strings" },
		{ "{\"s\":\"a\",\"v\":[\"a\",\"b\",\"c\",\"d\"]}", "v", "too many entries" },
		{ "{\"s\":\"a\",\"obj\":[]}", "obj", "must be an object" },
		{ "{\"s\":\"a\",\"obj\":\"{}\"}", "obj", "must be an object" },
		{ "{\"s\":\"a\",\"obj\":null}", "obj", "must be an object" },
		{ "{\"s\":\"a\",\"arr\":{}}", "arr", "must be an array" },
		{ "{\"s\":\"a\",\"arr\":\"[]\"}", "arr", "must be an array" },
		{ "{\"s\":\"a\",\"arr\":[1,2,3]}", "arr", "too many entries" },
	};
	struct target t;
	const char *field, *why;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		field = NULL;
		why = NULL;
		if (dispatch_table(cases[i].json, fields, &t, 0, &field, &why) != -EINVAL)
			fail_msg("case %zu accepted %s", i, cases[i].json);
		if (field == NULL || strcmp(field, cases[i].field) != 0)
			fail_msg("case %zu: field %s, expected %s", i, field ? field : "(null)", cases[i].field);
		if (cases[i].why != NULL && strcmp(why, cases[i].why) != 0)
			fail_msg("case %zu: why \"%s\", expected \"%s\"", i, why, cases[i].why);
	}
	/* UINT errors explain themselves the same way. */
	assert_int_equal(dispatch_table("{\"s\":\"a\",\"u\":-1}", fields, &t, 0, &field, &why), -EINVAL);
	assert_string_equal(why, "must be a non-negative integer below 2^53");
}

static void test_dispatch_unknown_allowed(void **state)
{
	struct target t;
	const char *field = NULL;

	(void)state;
	/* Responses from a newer peer may carry more; known fields are still filled. */
	assert_int_equal(dispatch("{\"s\":\"a\",\"zzz\":1,\"u\":5}", &t, KS_JSON_ALLOW_UNKNOWN, &field), 0);
	assert_null(field);
	assert_string_equal(t.s, "a");
	assert_int_equal(t.u, 5);
	/* ...but known fields are still checked, and required ones still required. */
	assert_int_equal(dispatch("{\"s\":\"a\",\"zzz\":1,\"u\":-5}", &t, KS_JSON_ALLOW_UNKNOWN, &field), -EINVAL);
	assert_string_equal(field, "u");
	assert_int_equal(dispatch("{\"zzz\":1}", &t, KS_JSON_ALLOW_UNKNOWN, &field), -EINVAL);
	assert_string_equal(field, "s");
}

static void test_dispatch_not_object(void **state)
{
	struct target t;
	const char *field = "sentinel", *why = NULL;
	json_t *a = json_array();

	(void)state;
	assert_int_equal(ks_json_dispatch(a, fields, &t, 0, &field, &why), -EINVAL);
	assert_null(field);
	assert_non_null(why);
	field = "sentinel";
	assert_int_equal(ks_json_dispatch(NULL, fields, &t, 0, &field, &why), -EINVAL);
	assert_null(field);
	json_decref(a);
}

/* A JSON array of @n strings, each @len bytes long. */
static char *strv_json(const char *key, size_t n, size_t len)
{
	size_t cap = 16 + strlen(key) + n * (len + 3);
	char *s = malloc(cap), *p;

	assert_non_null(s);
	p = s + sprintf(s, "{\"%s\":[", key);
	for (size_t i = 0; i < n; i++) {
		if (i)
			*p++ = ',';
		*p++ = '"';
		memset(p, 'a' + (char)(i % 26), len);
		p += len;
		*p++ = '"';
	}
	strcpy(p, "]}");
	return s;
}

static void test_dispatch_limits(void **state)
{
	struct target t;
	const char *field, *why;
	char *s;

	(void)state;
	/* Default string cap: 65536 bytes. */
	s = malloc(65536 + 16);
	assert_non_null(s);
	strcpy(s, "{\"s\":\"");
	memset(s + 6, 'q', 65536);
	strcpy(s + 6 + 65536, "\"}");
	assert_int_equal(dispatch_table(s, default_fields, &t, 0, &field, &why), 0);
	assert_int_equal(strlen(t.s), 65536);
	free(s);
	s = malloc(65537 + 16);
	assert_non_null(s);
	strcpy(s, "{\"s\":\"");
	memset(s + 6, 'q', 65537);
	strcpy(s + 6 + 65537, "\"}");
	assert_int_equal(dispatch_table(s, default_fields, &t, 0, &field, &why), -EINVAL);
	assert_string_equal(field, "s");
	assert_string_equal(why, "string too long");
	free(s);

	/* STRV: KS_STRV_MAX entries by default, 4096 bytes per entry. */
	s = strv_json("v", KS_STRV_MAX, 1);
	assert_int_equal(dispatch_table(s, default_fields, &t, 0, &field, &why), 0);
	assert_int_equal(t.v.n, KS_STRV_MAX);
	assert_string_equal(t.v.v[KS_STRV_MAX - 1], "v");
	free(s);
	s = strv_json("v", KS_STRV_MAX + 1, 1);
	assert_int_equal(dispatch_table(s, default_fields, &t, 0, &field, &why), -EINVAL);
	assert_string_equal(field, "v");
	assert_string_equal(why, "too many entries");
	free(s);
	/* A table limit above KS_STRV_MAX is clamped to the array in struct ks_strv. */
	s = strv_json("v", KS_STRV_MAX, 1);
	assert_int_equal(dispatch_table(s, big_fields, &t, 0, &field, &why), 0);
	assert_int_equal(t.v.n, KS_STRV_MAX);
	free(s);
	s = strv_json("v", KS_STRV_MAX + 1, 1);
	assert_int_equal(dispatch_table(s, big_fields, &t, 0, &field, &why), -EINVAL);
	assert_string_equal(why, "too many entries");
	free(s);
	s = strv_json("v", 2, 4096);
	assert_int_equal(dispatch_table(s, default_fields, &t, 0, &field, &why), 0);
	assert_int_equal(t.v.n, 2);
	assert_int_equal(strlen(t.v.v[1]), 4096);
	free(s);
	s = strv_json("v", 2, 4097);
	assert_int_equal(dispatch_table(s, default_fields, &t, 0, &field, &why), -EINVAL);
	assert_string_equal(field, "v");
	assert_string_equal(why, "string too long");
	free(s);
	/* Exactly the table limit (3) is fine. */
	assert_int_equal(dispatch("{\"s\":\"a\",\"v\":[\"1\",\"2\",\"3\"]}", &t, 0, &field), 0);
	assert_int_equal(t.v.n, 3);
	/* ARRAY: default KS_STRV_MAX entries, of any type. */
	s = strv_json("arr", KS_STRV_MAX, 0);
	assert_int_equal(dispatch_table(s, default_fields, &t, 0, &field, &why), 0);
	assert_int_equal(json_array_size(t.arr), KS_STRV_MAX);
	free(s);
	s = strv_json("arr", KS_STRV_MAX + 1, 0);
	assert_int_equal(dispatch_table(s, default_fields, &t, 0, &field, &why), -EINVAL);
	assert_string_equal(field, "arr");
	free(s);
	assert_int_equal(dispatch("{\"s\":\"a\",\"arr\":[{},[]]}", &t, 0, &field), 0);
}

static void test_serialize(void **state)
{
	json_t *o = json_pack("{s:s}", "k", "0123456789");
	char *s = NULL, *sentinel = (char *)"untouched";
	size_t n = 0;

	(void)state;
	/* {"k":"0123456789"} is 18 bytes. */
	s = sentinel;
	n = 99;
	assert_int_equal(ks_json_serialize(o, 10, &s, &n), -EMSGSIZE);
	assert_int_equal(ks_json_serialize(o, 17, &s, &n), -EMSGSIZE);
	assert_ptr_equal(s, sentinel);
	assert_int_equal(n, 99);
	assert_int_equal(ks_json_serialize(o, 18, &s, &n), 0);
	assert_string_equal(s, "{\"k\":\"0123456789\"}");
	assert_int_equal(n, 18);
	free(s);
	assert_int_equal(ks_json_serialize(o, 100, &s, &n), 0);
	assert_string_equal(s, "{\"k\":\"0123456789\"}");
	assert_int_equal(n, strlen(s));
	free(s);
	json_decref(o);

	/* Compact, UTF-8 kept, nested. */
	o = json_pack("{s:[i,b,n],s:s}", "a", 1, 1, "e", "\xc3\xa9");
	assert_int_equal(ks_json_serialize(o, 1000, &s, &n), 0);
	assert_string_equal(s, "{\"a\":[1,true,null],\"e\":\"\xc3\xa9\"}");
	assert_int_equal(n, strlen(s));
	free(s);
	json_decref(o);
	o = json_object();
	assert_int_equal(ks_json_serialize(o, 1, &s, &n), -EMSGSIZE);
	assert_int_equal(ks_json_serialize(o, 2, &s, &n), 0);
	assert_string_equal(s, "{}");
	assert_int_equal(n, 2);
	free(s);
	json_decref(o);

	/* Around the first pass's 4096 bytes: {"k":"..."} is 8 bytes plus the string. */
	for (size_t len = 4086; len <= 4092; len++) {
		char *v = malloc(len + 1);

		assert_non_null(v);
		memset(v, 'x', len);
		v[len] = '\0';
		o = json_pack("{s:s}", "k", v);
		assert_int_equal(ks_json_serialize(o, len + 7, &s, &n), -EMSGSIZE);
		assert_int_equal(ks_json_serialize(o, 65536, &s, &n), 0);
		assert_int_equal(n, len + 8);
		assert_int_equal(strlen(s), n);
		assert_memory_equal(s + 6, v, len);
		assert_string_equal(s + 6 + len, "\"}");
		free(s);
		assert_int_equal(ks_json_serialize(o, len + 8, &s, &n), 0);
		assert_int_equal(n, len + 8);
		free(s);
		json_decref(o);
		free(v);
	}
}

/* ---- field checks ---- */

struct checked {
	const char *color;
	const char *size;
	int color_id;
	int checks_run;
};

/* "red" and "blue" are colors (ids 1, 2); "green" is malformed; anything else unknown. */
static int check_color(const void *value, void *typed, const char **why)
{
	const char *s = *(const char *const *)value;
	struct checked *c = (struct checked *)((char *)typed - offsetof(struct checked, color_id));

	c->checks_run++;
	if (strcmp(s, "green") == 0) {
		*why = "not a color of this protocol";
		return -EINVAL;
	}
	if (strcmp(s, "red") != 0 && strcmp(s, "blue") != 0) {
		*why = "unknown color";
		return -EOPNOTSUPP;
	}
	*(int *)typed = s[0] == 'r' ? 1 : 2;
	return 0;
}

static const struct ks_json_field checked_fields[] = {
	{ "color", KS_JSON_STRING, offsetof(struct checked, color), 0, 16,
	  check_color, offsetof(struct checked, color_id) },
	{ "size", KS_JSON_STRING, offsetof(struct checked, size), 0, 4 },
	{ NULL, 0, 0, 0, 0 },
};

static int run_checked(const char *json, unsigned flags, struct checked *c, const char **field,
		       const char **why)
{
	const char *pwhy = NULL;
	json_t *o = parse(json, &pwhy);
	int r;

	assert_non_null(o);
	memset(c, 0, sizeof(*c));
	*field = NULL;
	*why = NULL;
	r = ks_json_dispatch(o, checked_fields, c, flags, field, why);
	json_decref(o);
	return r;
}

/*
 * A field's check turns its value into a typed one, and a value it refuses
 * is a named error with the check's errno; checks run only after every
 * field has passed its type check, only on fields present, and not at all
 * with KS_JSON_NO_CHECKS until ks_json_check() is called.
 */
static void test_dispatch_checks(void **state)
{
	struct checked c;
	const char *field, *why, *pwhy = NULL;
	json_t *o;

	(void)state;
	assert_int_equal(run_checked("{\"color\": \"blue\"}", 0, &c, &field, &why), 0);
	assert_int_equal(c.color_id, 2);

	assert_int_equal(run_checked("{\"color\": \"green\"}", 0, &c, &field, &why), -EINVAL);
	assert_string_equal(field, "color");
	assert_string_equal(why, "not a color of this protocol");
	assert_int_equal(run_checked("{\"color\": \"mauve\"}", 0, &c, &field, &why), -EOPNOTSUPP);
	assert_string_equal(field, "color");
	assert_string_equal(why, "unknown color");
	assert_int_equal(c.color_id, 0);

	/* An absent field is not checked. */
	assert_int_equal(run_checked("{\"size\": \"L\"}", 0, &c, &field, &why), 0);
	assert_int_equal(c.checks_run, 0);

	/* A type error after the bad value is the one reported, and no check ran. */
	assert_int_equal(run_checked("{\"color\": \"mauve\", \"size\": 3}", 0, &c, &field, &why), -EINVAL);
	assert_string_equal(field, "size");
	assert_string_equal(why, "must be a string");
	assert_int_equal(c.checks_run, 0);
	/* And a type error of the checked field itself comes before its check. */
	assert_int_equal(run_checked("{\"color\": 5}", 0, &c, &field, &why), -EINVAL);
	assert_string_equal(why, "must be a string");
	assert_int_equal(c.checks_run, 0);

	/* KS_JSON_NO_CHECKS: the types only; ks_json_check() later. */
	assert_int_equal(run_checked("{\"color\": \"mauve\"}", KS_JSON_NO_CHECKS, &c, &field, &why), 0);
	assert_int_equal(c.checks_run, 0);
	o = parse("{\"color\": \"red\", \"size\": \"S\"}", &pwhy);
	memset(&c, 0, sizeof(c));
	assert_int_equal(ks_json_dispatch(o, checked_fields, &c, KS_JSON_NO_CHECKS, &field, &why), 0);
	assert_int_equal(c.color_id, 0);
	assert_int_equal(ks_json_check(o, checked_fields, &c, &field, &why), 0);
	assert_int_equal(c.color_id, 1);
	assert_int_equal(c.checks_run, 1);
	json_decref(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_depth_escapes),
		cmocka_unit_test(test_dispatch_good),
		cmocka_unit_test(test_dispatch_missing_untouched),
		cmocka_unit_test(test_dispatch_errors),
		cmocka_unit_test(test_dispatch_unknown_allowed),
		cmocka_unit_test(test_dispatch_not_object),
		cmocka_unit_test(test_dispatch_limits),
		cmocka_unit_test(test_dispatch_checks),
		cmocka_unit_test(test_serialize),
	};

	return cmocka_run_group_tests(tests, NULL, teardown);
}
