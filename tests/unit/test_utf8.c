/*
 * proto/utf8: the one validator, on Markus Kuhn's UTF-8 decoder stress
 * cases (boundaries, stray continuation bytes, lone and cut-off lead
 * bytes, 5- and 6-byte forms, overlong forms, surrogates, past U+10FFFF,
 * the noncharacters U+FFFE/U+FFFF), each also checked against jansson's
 * own verdict. Then text made fit for a JSON string. Valid UTF-8 is kept as it
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

struct utf8_case {
	const char *bytes;
	size_t len;        /* 0: strlen(bytes) */
	int valid;
	const char *what;
};

static const struct utf8_case utf8_cases[] = {
	{ "", 0, 1, "empty" },
	{ "plain ASCII", 0, 1, "ASCII" },
	{ "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 0, 1, "kosme (1.)" },
	{ "a\0b", 3, 1, "U+0000 inside" },
	{ "", 0, 1, "U+007F" },
	{ "\xc2\x80", 0, 1, "U+0080, first 2-byte" },
	{ "\xdf\xbf", 0, 1, "U+07FF, last 2-byte" },
	{ "\xe0\xa0\x80", 0, 1, "U+0800, first 3-byte" },
	{ "\xed\x9f\xbf", 0, 1, "U+D7FF, below the surrogates" },
	{ "\xee\x80\x80", 0, 1, "U+E000, above the surrogates" },
	{ "\xef\xbf\xbd", 0, 1, "U+FFFD" },
	{ "\xef\xbf\xbe", 0, 1, "U+FFFE, a noncharacter but valid UTF-8" },
	{ "\xef\xbf\xbf", 0, 1, "U+FFFF, a noncharacter but valid UTF-8" },
	{ "\xf0\x90\x80\x80", 0, 1, "U+10000, first 4-byte" },
	{ "\xf4\x8f\xbf\xbf", 0, 1, "U+10FFFF, the last code point" },
	{ "\x80", 0, 0, "first continuation byte (3.1.1)" },
	{ "\xbf", 0, 0, "last continuation byte (3.1.2)" },
	{ "\x80\xbf\x80", 0, 0, "3 continuation bytes (3.1.5)" },
	{ "\xc0 ", 0, 0, "lone C0 then space (3.2.1)" },
	{ "\xdf ", 0, 0, "lone DF then space (3.2.1)" },
	{ "\xe0 ", 0, 0, "lone E0 then space (3.2.2)" },
	{ "\xf0 ", 0, 0, "lone F0 then space (3.2.3)" },
	{ "\xf8 ", 0, 0, "lone F8 then space (3.2.4)" },
	{ "\xfc ", 0, 0, "lone FC then space (3.2.5)" },
	{ "\xc2", 0, 0, "2-byte cut short (3.3.1)" },
	{ "\xe0\xa0", 0, 0, "3-byte cut short (3.3.2)" },
	{ "\xf0\x90\x80", 0, 0, "4-byte cut short (3.3.3)" },
	{ "abc\xe2\x82", 0, 0, "euro sign cut short at the end" },
	{ "\xe2\x82 x", 0, 0, "euro sign cut short before a space" },
	{ "\xf8\x88\x80\x80\x80", 0, 0, "5-byte form (U+200000, 2.1.5)" },
	{ "\xfc\x84\x80\x80\x80\x80", 0, 0, "6-byte form (U+4000000, 2.1.6)" },
	{ "\xfe", 0, 0, "FE (3.5.1)" },
	{ "\xff", 0, 0, "FF (3.5.2)" },
	{ "\xfe\xfe\xff\xff", 0, 0, "FE FE FF FF (3.5.3)" },
	{ "\xc0\xaf", 0, 0, "overlong '/' in 2 bytes (4.1.1)" },
	{ "\xe0\x80\xaf", 0, 0, "overlong '/' in 3 bytes (4.1.2)" },
	{ "\xf0\x80\x80\xaf", 0, 0, "overlong '/' in 4 bytes (4.1.3)" },
	{ "\xf8\x80\x80\x80\xaf", 0, 0, "overlong '/' in 5 bytes (4.1.4)" },
	{ "\xc1\xbf", 0, 0, "largest overlong 2-byte (4.2.1)" },
	{ "\xe0\x9f\xbf", 0, 0, "largest overlong 3-byte (4.2.2)" },
	{ "\xf0\x8f\xbf\xbf", 0, 0, "largest overlong 4-byte (4.2.3)" },
	{ "\xc0\x80", 0, 0, "overlong NUL (4.3.1)" },
	{ "\xed\xa0\x80", 0, 0, "U+D800 (5.1.1)" },
	{ "\xed\xad\xbf", 0, 0, "U+DB7F (5.1.2)" },
	{ "\xed\xae\x80", 0, 0, "U+DB80 (5.1.3)" },
	{ "\xed\xaf\xbf", 0, 0, "U+DBFF (5.1.4)" },
	{ "\xed\xb0\x80", 0, 0, "U+DC00 (5.1.5)" },
	{ "\xed\xbf\xbf", 0, 0, "U+DFFF (5.1.7)" },
	{ "\xed\xa0\x80\xed\xb0\x80", 0, 0, "paired surrogates U+D800 U+DC00 (5.2.1)" },
	{ "\xf4\x90\x80\x80", 0, 0, "U+110000, past the last code point" },
	{ "\xf7\xbf\xbf\xbf", 0, 0, "U+1FFFFF" },
	{ "\xf5\x80\x80\x80", 0, 0, "lead byte F5" },
	{ "ok\xc3\xa9 then \xff", 0, 0, "valid text, then FF" },
};

static void test_valid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(utf8_cases) / sizeof(utf8_cases[0]); i++) {
		const struct utf8_case *c = &utf8_cases[i];
		size_t len = c->len != 0 ? c->len : strlen(c->bytes);
		json_t *s = json_stringn(c->bytes, len);
		int jansson = s != NULL;

		json_decref(s);
		if (ks_utf8_valid(c->bytes, len) != c->valid)
			fail_msg("%s: ks_utf8_valid() says %s", c->what, c->valid ? "invalid" : "valid");
		/* The rules are jansson's: a string we pass, it takes. */
		if (jansson != c->valid)
			fail_msg("%s: jansson says %s", c->what, jansson ? "valid" : "invalid");
	}
}

static void test_char_len(void **state)
{
	(void)state;
	assert_int_equal(ks_utf8_char_len("a", 1), 1);
	assert_int_equal(ks_utf8_char_len("\xc3\xa9", 2), 2);
	assert_int_equal(ks_utf8_char_len("\xe2\x82\xac", 3), 3);
	assert_int_equal(ks_utf8_char_len("\xf0\x9f\x94\x91", 4), 4);
	/* Only the first character counts; what follows does not matter. */
	assert_int_equal(ks_utf8_char_len("\xc3\xa9\xff", 3), 2);
	/* Never reads past @n: a character longer than what is left is not one. */
	assert_int_equal(ks_utf8_char_len("\xc3\xa9", 1), 0);
	assert_int_equal(ks_utf8_char_len("\xf0\x9f\x94\x91", 3), 0);
	assert_int_equal(ks_utf8_char_len("a", 0), 0);
	assert_int_equal(ks_utf8_char_len("\x80", 1), 0);
	assert_int_equal(ks_utf8_char_len("\xed\xa0\x80", 3), 0);
	assert_int_equal(ks_utf8_char_len("\xe0\x80\xaf", 3), 0);
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
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_char_len),
		cmocka_unit_test(test_sanitize),
		cmocka_unit_test(test_prefix),
		cmocka_unit_test(test_mark_cut),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
