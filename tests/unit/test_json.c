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

static void test_parse_rejects(void **state)
{
	static const char *const bad[] = {
		"{\"a\":\"\xff\"}",            /* invalid UTF-8 */
		"{\"a\":\"\xc3\x28\"}",
		"{\"a\":1,\"a\":2}",           /* duplicate key */
		"{\"a\":\"x\\u0000y\"}",       /* NUL */
		"[1,2]", "42", "\"s\"", "null",
		"{\"a\":", "{\"a\":1} trailing", "",
	};
	const char *why;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		if (parse(bad[i], &why) != NULL)
			fail_msg("accepted %s", bad[i]);
		assert_non_null(why);
	}
	assert_null(parse("{\"a\":1,\"a\":2}", &why));
	assert_string_equal(why, "duplicate key in JSON object");
	assert_null(parse("{\"a\":\"\xff\"}", &why));
	assert_string_equal(why, "invalid UTF-8");
}

static char *nested(size_t depth, int in_string)
{
	char *s = malloc(2 * depth + 32);
	size_t n = 0;

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
	assert_null(parse(s, &why));
	assert_string_equal(why, "JSON nested too deeply");
	free(s);
	s = nested(100000, 0);
	assert_null(parse(s, &why));
	free(s);
	/* Brackets inside strings do not count. */
	s = nested(1000, 1);
	o = parse(s, &why);
	assert_non_null(o);
	json_decref(o);
	free(s);
}

struct target {
	const char *s;
	uint64_t u;
	int b;
	struct ks_strv v;
	json_t *obj, *arr, *any;
};

static const struct ks_json_field fields[] = {
	{ "s", KS_JSON_STRING, offsetof(struct target, s), KS_JSON_REQUIRED, 8 },
	{ "u", KS_JSON_UINT, offsetof(struct target, u), 0, 0 },
	{ "b", KS_JSON_BOOL, offsetof(struct target, b), 0, 0 },
	{ "v", KS_JSON_STRV, offsetof(struct target, v), 0, 3 },
	{ "obj", KS_JSON_OBJECT, offsetof(struct target, obj), 0, 0 },
	{ "arr", KS_JSON_ARRAY, offsetof(struct target, arr), 0, 2 },
	{ "any", KS_JSON_ANY, offsetof(struct target, any), 0, 0 },
	{ "skip", KS_JSON_SKIP, 0, 0, 0 },
	{ NULL, 0, 0, 0, 0 },
};

/* *@field is copied out: it may name a key of the parsed object, freed here. */
static int dispatch(const char *s, struct target *t, unsigned flags, const char **field)
{
	static char field_copy[64];
	const char *why = NULL;
	json_t *o = parse(s, &why);
	int r;

	assert_non_null(o);
	memset(t, 0, sizeof(*t));
	*field = NULL;
	r = ks_json_dispatch(o, fields, t, flags, field, &why);
	if (r != 0)
		assert_non_null(why);
	if (*field != NULL) {
		snprintf(field_copy, sizeof(field_copy), "%s", *field);
		*field = field_copy;
	}
	json_decref(o);
	return r;
}

static void test_dispatch_good(void **state)
{
	struct target t;
	const char *field;
	const char *why;
	json_t *o;

	(void)state;
	o = parse("{\"s\":\"abc\",\"u\":9007199254740991,\"b\":true,\"v\":[\"x\",\"y\"],"
		  "\"obj\":{},\"arr\":[1],\"any\":null,\"skip\":[1,2]}", &why);
	assert_non_null(o);
	memset(&t, 0, sizeof(t));
	assert_int_equal(ks_json_dispatch(o, fields, &t, 0, &field, &why), 0);
	assert_string_equal(t.s, "abc");
	assert_int_equal(t.u, 9007199254740991ULL);
	assert_int_equal(t.b, 1);
	assert_int_equal(t.v.n, 2);
	assert_string_equal(t.v.v[1], "y");
	assert_true(json_is_object(t.obj));
	assert_true(json_is_array(t.arr));
	assert_true(json_is_null(t.any));
	json_decref(o);
}

static void test_dispatch_errors(void **state)
{
	static const struct {
		const char *json;
		const char *field;
	} cases[] = {
		{ "{}", "s" },
		{ "{\"s\":\"toolongstring\"}", "s" },
		{ "{\"s\":1}", "s" },
		{ "{\"s\":\"a\",\"zzz\":1}", "zzz" },
		{ "{\"s\":\"a\",\"u\":-1}", "u" },
		{ "{\"s\":\"a\",\"u\":9007199254740992}", "u" },
		{ "{\"s\":\"a\",\"u\":1.5}", "u" },
		{ "{\"s\":\"a\",\"u\":\"1\"}", "u" },
		{ "{\"s\":\"a\",\"b\":1}", "b" },
		{ "{\"s\":\"a\",\"v\":\"x\"}", "v" },
		{ "{\"s\":\"a\",\"v\":[1]}", "v" },
		{ "{\"s\":\"a\",\"v\":[\"a\",\"b\",\"c\",\"d\"]}", "v" },
		{ "{\"s\":\"a\",\"obj\":[]}", "obj" },
		{ "{\"s\":\"a\",\"arr\":{}}", "arr" },
		{ "{\"s\":\"a\",\"arr\":[1,2,3]}", "arr" },
	};
	struct target t;
	const char *field;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		field = NULL;
		if (dispatch(cases[i].json, &t, 0, &field) != -EINVAL)
			fail_msg("accepted %s", cases[i].json);
		assert_non_null(field);
		assert_string_equal(field, cases[i].field);
	}
	/* Responses from a newer peer may carry more. */
	assert_int_equal(dispatch("{\"s\":\"a\",\"zzz\":1}", &t, KS_JSON_ALLOW_UNKNOWN, &field), 0);
}

static void test_serialize_cap(void **state)
{
	json_t *o = json_pack("{s:s}", "k", "0123456789");
	char *s = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(ks_json_serialize(o, 10, &s, &n), -EMSGSIZE);
	assert_int_equal(ks_json_serialize(o, 100, &s, &n), 0);
	assert_string_equal(s, "{\"k\":\"0123456789\"}");
	assert_int_equal(n, strlen(s));
	free(s);
	json_decref(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_dispatch_good),
		cmocka_unit_test(test_dispatch_errors),
		cmocka_unit_test(test_serialize_cap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
