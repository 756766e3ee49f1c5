/*
 * proto/utf8: text made fit for a JSON string. Valid UTF-8 is kept as it
 * is; a sequence cut off by the end is dropped; every other invalid byte
 * (stray continuation bytes, overlong forms, surrogates, code points past
 * U+10FFFF, bytes that never occur) becomes '?'. Cuts to a length end on
 * a character boundary. jansson, which refuses invalid UTF-8, checks the
 * results.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "proto/utf8.h"

static void expect_sanitized(const char *in, const char *want)
{
	char buf[64];
	json_t *s;

	snprintf(buf, sizeof(buf), "%s", in);
	ks_utf8_sanitize(buf);
	if (strcmp(buf, want) != 0)
		fail_msg("sanitize(\"%s\") gave \"%s\", expected \"%s\"", in, buf, want);
	s = json_string(buf);
	assert_non_null(s);
	json_decref(s);
}

static void test_sanitize(void **state)
{
	(void)state;
	expect_sanitized("", "");
	expect_sanitized("SoftHSM token", "SoftHSM token");
	expect_sanitized("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91");
	expect_sanitized("bad\xff label", "bad? label");
	expect_sanitized("\x80x", "?x");
	expect_sanitized("overlong \xc0\xaf.", "overlong ??.");
	expect_sanitized("overlong \xe0\x80\xaf.", "overlong ???.");
	expect_sanitized("surrogate \xed\xa0\x80.", "surrogate ???.");
	expect_sanitized("too high \xf4\x90\x80\x80.", "too high ????.");
	expect_sanitized("lead then ASCII \xc3x", "lead then ASCII ?x");
	/* Cut off by the end of a fixed-size field: dropped, not replaced. */
	expect_sanitized("cut \xe2\x82", "cut ");
	expect_sanitized("cut \xf0\x9f\x94", "cut ");
	expect_sanitized("cut \xc3", "cut ");
}

static void test_prefix(void **state)
{
	(void)state;
	assert_int_equal(ks_utf8_prefix("abc", 64), 3);
	assert_int_equal(ks_utf8_prefix("abcdef", 4), 4);
	/* "é" is 2 bytes at offsets 3-4: a cut at 4 goes back to 3. */
	assert_int_equal(ks_utf8_prefix("abc\xc3\xa9z", 4), 3);
	assert_int_equal(ks_utf8_prefix("abc\xc3\xa9z", 5), 5);
	/* A 4-byte character: any cut inside it goes back to its start. */
	for (size_t max = 2; max <= 4; max++)
		assert_int_equal(ks_utf8_prefix("a\xf0\x9f\x94\x91", max), 1);
	assert_int_equal(ks_utf8_prefix("a\xf0\x9f\x94\x91", 5), 5);
}

/* ks_utf8_mark_cut() of @in (the text that filled a buffer of @len bytes) must give @want. */
static void expect_cut(const char *in, size_t len, const char *want)
{
	char buf[64];

	assert_true(len <= sizeof(buf));
	snprintf(buf, len, "%s", in);
	ks_utf8_mark_cut(buf, len);
	if (strcmp(buf, want) != 0)
		fail_msg("mark_cut(\"%s\", %zu) gave \"%s\", expected \"%s\"", in, len, buf, want);
	assert_true(strlen(buf) < len);
}

static void test_mark_cut(void **state)
{
	(void)state;
	/* 18 bytes: "not granted on" and the "…" fit, "key-name" does not. */
	expect_cut("not granted on key-name", 18, "not granted on\xe2\x80\xa6");
	/* 17 bytes: "on" would no longer fit whole, so it goes too. */
	expect_cut("not granted on key-name", 17, "not granted\xe2\x80\xa6");
	expect_cut("not granted on key-name", 15, "not granted\xe2\x80\xa6");
	/* One word longer than the buffer: cut at a character boundary. */
	expect_cut("abcdefghijklmnop", 10, "abcdef\xe2\x80\xa6");
	expect_cut("abcd\xc3\xa9" "fghijk", 9, "abcd\xe2\x80\xa6");
	/* Too small to say anything useful: left as it is. */
	expect_cut("abcdefgh", 7, "abcdef");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sanitize),
		cmocka_unit_test(test_prefix),
		cmocka_unit_test(test_mark_cut),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
