/* The bounded buffer: the cap holds, growth works, wiping happens. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto/buf.h"

static void test_cap(void **state)
{
	struct ks_buf b;
	uint8_t *p;

	(void)state;
	ks_buf_init(&b, 10);
	assert_null(b.data);
	assert_int_equal(ks_buf_put(&b, "0123456789", 10), 0);
	assert_int_equal(b.len, 10);
	assert_int_equal(ks_buf_put(&b, "x", 1), -EMSGSIZE);
	assert_int_equal(b.len, 10);
	assert_int_equal(ks_buf_reserve(&b, SIZE_MAX, &p), -EMSGSIZE);
	assert_int_equal(ks_buf_reserve(&b, SIZE_MAX - 5, &p), -EMSGSIZE);
	assert_memory_equal(b.data, "0123456789", 10);
	/* Never allocated past the cap. */
	assert_true(b.alloc <= 10);
	ks_buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
}

static void test_growth(void **state)
{
	struct ks_buf b;
	uint8_t chunk[1000];

	(void)state;
	memset(chunk, 0xab, sizeof(chunk));
	ks_buf_init(&b, 65536);
	for (int i = 0; i < 65; i++)
		assert_int_equal(ks_buf_put(&b, chunk, sizeof(chunk)), 0);
	assert_int_equal(b.len, 65000);
	assert_true(b.alloc >= b.len && b.alloc <= 65536);
	assert_int_equal(ks_buf_put(&b, chunk, 536), 0);
	assert_int_equal(ks_buf_put(&b, chunk, 1), -EMSGSIZE);
	for (size_t i = 0; i < b.len; i++)
		assert_int_equal(b.data[i], 0xab);
	ks_buf_free(&b);
}

static void test_reset_wipes(void **state)
{
	struct ks_buf b;
	uint8_t *data;

	(void)state;
	ks_buf_init(&b, 64);
	assert_int_equal(ks_buf_put(&b, "secret", 6), 0);
	data = b.data;
	ks_buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_ptr_equal(b.data, data);
	for (size_t i = 0; i < 6; i++)
		assert_int_equal(data[i], 0);
	ks_buf_free(&b);
}

static void test_u32(void **state)
{
	struct ks_buf b;

	(void)state;
	ks_buf_init(&b, 8);
	assert_int_equal(ks_buf_put_u32(&b, 0x01020304), 0);
	assert_memory_equal(b.data, "\x01\x02\x03\x04", 4);
	assert_int_equal(ks_peek_u32(b.data), 0x01020304);
	assert_int_equal(ks_peek_u32((const uint8_t *)"\xff\xff\xff\xff"), 0xffffffffu);
	ks_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cap),
		cmocka_unit_test(test_growth),
		cmocka_unit_test(test_reset_wipes),
		cmocka_unit_test(test_u32),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
