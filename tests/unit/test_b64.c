/*
 * Base64 (proto/b64.c): every length round-trips, and decoding accepts
 * only the one canonical encoding of a value (RFC 4648 sections 3.3, 3.5, 4).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/b64.h"

static const char alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int decode(const char *s, size_t max, uint8_t **out, size_t *out_len)
{
	return ks_b64_decode(s, strlen(s), max, out, out_len);
}

static void test_round_trip_every_length(void **state)
{
	uint8_t in[1024], *dec = NULL;
	size_t dec_len = 0;
	char *enc = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 167 + (i >> 8) * 13);
	for (size_t len = 0; len <= sizeof(in); len++) {
		assert_int_equal(ks_b64_encode(in, len, &enc), 0);
		assert_int_equal(strlen(enc), (len + 2) / 3 * 4);
		assert_int_equal(decode(enc, len, &dec, &dec_len), 0);
		assert_non_null(dec);
		assert_int_equal(dec_len, len);
		assert_memory_equal(dec, in, len);
		free(dec);
		/* One byte under the size: refused as too large, not malformed. */
		if (len > 0)
			assert_int_equal(decode(enc, len - 1, &dec, &dec_len), -EMSGSIZE);
		free(enc);
	}
}

/* The RFC 4648 section 10 vectors. */
static void test_vectors(void **state)
{
	static const char *const v[][2] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
	};
	uint8_t *dec = NULL;
	size_t dec_len = 0;
	char *enc = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		assert_int_equal(ks_b64_encode((const uint8_t *)v[i][0], strlen(v[i][0]), &enc), 0);
		assert_string_equal(enc, v[i][1]);
		free(enc);
		assert_int_equal(decode(v[i][1], 64, &dec, &dec_len), 0);
		assert_int_equal(dec_len, strlen(v[i][0]));
		assert_memory_equal(dec, v[i][0], dec_len);
		free(dec);
	}
}

/*
 * Every last quantum with one or two padding characters: accepted exactly
 * when the discarded bits are zero, and then it is what the encoder writes.
 */
static void test_discarded_bits(void **state)
{
	char q[9], *enc = NULL;
	uint8_t *dec = NULL;
	size_t dec_len = 0;
	int r;

	(void)state;
	/* The reviewer's pair. */
	assert_int_equal(decode("QQ==", 8, &dec, &dec_len), 0);
	assert_int_equal(dec_len, 1);
	assert_int_equal(dec[0], 'A');
	free(dec);
	assert_int_equal(decode("QR==", 8, &dec, &dec_len), -EINVAL);
	assert_null(dec);
	assert_int_equal(decode("QUI=", 8, &dec, &dec_len), 0);
	free(dec);
	assert_int_equal(decode("QUJ=", 8, &dec, &dec_len), -EINVAL);
	/* The same in a longer value: only the last quantum has such bits. */
	assert_int_equal(decode("Zm9vQR==", 8, &dec, &dec_len), -EINVAL);
	assert_int_equal(decode("Zm9vQUJ=", 8, &dec, &dec_len), -EINVAL);

	for (int a = 0; a < 64; a++) {
		for (int b = 0; b < 64; b++) {
			/* "ab==": 12 bits, 8 used; the low 4 bits of b are discarded. */
			snprintf(q, sizeof(q), "Zm9v%c%c==", alphabet[a], alphabet[b]);
			r = decode(q, 8, &dec, &dec_len);
			if ((b & 0x0f) != 0) {
				assert_int_equal(r, -EINVAL);
				continue;
			}
			assert_int_equal(r, 0);
			assert_int_equal(dec_len, 4);
			assert_int_equal(ks_b64_encode(dec, dec_len, &enc), 0);
			assert_string_equal(enc, q);
			free(enc);
			free(dec);
			/* "abc=": 18 bits, 16 used; the low 2 bits of c are discarded. */
			for (int c = 0; c < 64; c++) {
				snprintf(q, sizeof(q), "Zm9v%c%c%c=", alphabet[a], alphabet[b], alphabet[c]);
				r = decode(q, 8, &dec, &dec_len);
				if ((c & 0x03) != 0) {
					assert_int_equal(r, -EINVAL);
					continue;
				}
				assert_int_equal(r, 0);
				assert_int_equal(dec_len, 5);
				assert_int_equal(ks_b64_encode(dec, dec_len, &enc), 0);
				assert_string_equal(enc, q);
				free(enc);
				free(dec);
			}
		}
	}
}

static void test_malformed(void **state)
{
	static const char *const bad[] = {
		"Q", "QQ", "QQ=", "QQ===", "Q===", "====", "QQ=A", "Q=Q=", "=QQQ",
		"QQ==QQ==", "Zm9v YmFy", " Zm9v", "Zm9v\n", "Zm9-", "Zm9_", "Zm9v\tA==",
		"Zm9vYmE*", "QQ%3D",
	};
	uint8_t junk = 0, *dec;
	size_t dec_len;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* Refusal also clears what the caller passed in. */
		dec = &junk;
		dec_len = 7;
		if (decode(bad[i], 64, &dec, &dec_len) != -EINVAL)
			fail_msg("\"%s\" was accepted", bad[i]);
		assert_null(dec);
		assert_int_equal(dec_len, 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_every_length),
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_discarded_bits),
		cmocka_unit_test(test_malformed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
