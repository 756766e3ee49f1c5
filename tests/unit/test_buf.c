/* The bounded buffer: the cap holds, growth works, wiping happens. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto/buf.h"

static void test_init(void **state)
{
	struct ks_buf b;

	(void)state;
	memset(&b, 0x5a, sizeof(b));
	ks_buf_init(&b, 1234);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.alloc, 0);
	assert_int_equal(b.max, 1234);
	/* Freeing an empty buffer is fine and keeps the cap. */
	ks_buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.max, 1234);
}

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
	assert_int_equal(ks_buf_put_u32(&b, 1), -EMSGSIZE);
	assert_int_equal(b.len, 10);
	p = (uint8_t *)&b;
	assert_int_equal(ks_buf_reserve(&b, 1, &p), -EMSGSIZE);
	/* *p is not touched on failure. */
	assert_ptr_equal(p, (uint8_t *)&b);
	assert_int_equal(ks_buf_reserve(&b, SIZE_MAX, &p), -EMSGSIZE);
	assert_int_equal(ks_buf_reserve(&b, SIZE_MAX - 5, &p), -EMSGSIZE);
	assert_int_equal(ks_buf_reserve(&b, SIZE_MAX - 9, &p), -EMSGSIZE);
	assert_int_equal(ks_buf_reserve(&b, SIZE_MAX - 10, &p), -EMSGSIZE);
	assert_memory_equal(b.data, "0123456789", 10);
	assert_int_equal(b.len, 10);
	/* Never allocated past the cap. */
	assert_int_equal(b.alloc, 10);
	/* A zero-length put or reserve at the cap is fine and changes nothing. */
	assert_int_equal(ks_buf_put(&b, NULL, 0), 0);
	assert_int_equal(ks_buf_reserve(&b, 0, &p), 0);
	assert_ptr_equal(p, b.data + 10);
	assert_int_equal(b.len, 10);
	ks_buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.alloc, 0);
	/* Reusable after free, same cap. */
	assert_int_equal(ks_buf_put(&b, "abc", 3), 0);
	assert_int_equal(ks_buf_put(&b, "01234567", 8), -EMSGSIZE);
	assert_int_equal(b.len, 3);
	assert_memory_equal(b.data, "abc", 3);
	ks_buf_free(&b);
}

static void test_zero_cap(void **state)
{
	struct ks_buf b;
	uint8_t *p;

	(void)state;
	ks_buf_init(&b, 0);
	assert_int_equal(ks_buf_put(&b, "x", 1), -EMSGSIZE);
	assert_int_equal(ks_buf_put(&b, "x", 0), 0);
	assert_int_equal(ks_buf_reserve(&b, 0, &p), 0);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.alloc, 0);
	assert_null(b.data);
	ks_buf_free(&b);
}

/* Arithmetic near SIZE_MAX: len + n must not wrap past the check. */
static void test_overflow(void **state)
{
	struct ks_buf b;
	uint8_t *p = NULL, *data;

	(void)state;
	ks_buf_init(&b, SIZE_MAX);
	assert_int_equal(ks_buf_put(&b, "0123456789", 10), 0);
	data = b.data;
	assert_int_equal(b.alloc, 256);
	/* len + n would wrap to a small number. */
	assert_int_equal(ks_buf_reserve(&b, SIZE_MAX, &p), -EMSGSIZE);
	assert_int_equal(ks_buf_reserve(&b, SIZE_MAX - 9, &p), -EMSGSIZE);
	assert_int_equal(ks_buf_reserve(&b, SIZE_MAX - 5, &p), -EMSGSIZE);
	assert_null(p);
	assert_int_equal(b.len, 10);
	assert_int_equal(b.alloc, 256);
	assert_ptr_equal(b.data, data);
	ks_buf_free(&b);

#ifndef __SANITIZE_ADDRESS__
	/*
	 * Within the cap but impossible to allocate: -ENOMEM and the buffer is
	 * unchanged. (Half of SIZE_MAX: valgrind calls larger sizes "fishy";
	 * ASan aborts instead of returning NULL, hence the #ifndef.)
	 */
	ks_buf_init(&b, SIZE_MAX / 2);
	assert_int_equal(ks_buf_put(&b, "0123456789", 10), 0);
	data = b.data;
	assert_int_equal(ks_buf_reserve(&b, SIZE_MAX / 2 - 10, &p), -ENOMEM);
	assert_null(p);
	assert_int_equal(b.len, 10);
	assert_int_equal(b.alloc, 256);
	assert_ptr_equal(b.data, data);
	assert_memory_equal(b.data, "0123456789", 10);
	ks_buf_free(&b);
#endif

	/* A small cap: n alone above max, and len + n above max. */
	ks_buf_init(&b, 100);
	assert_int_equal(ks_buf_reserve(&b, 101, &p), -EMSGSIZE);
	assert_int_equal(ks_buf_put(&b, "abcdefghij", 10), 0);
	assert_int_equal(ks_buf_reserve(&b, 91, &p), -EMSGSIZE);
	assert_int_equal(ks_buf_reserve(&b, 90, &p), 0);
	assert_ptr_equal(p, b.data + 10);
	assert_int_equal(b.len, 100);
	assert_int_equal(b.alloc, 100);
	ks_buf_free(&b);
}

static void test_growth(void **state)
{
	struct ks_buf b;
	uint8_t chunk[1000];
	size_t prev_alloc = 0;

	(void)state;
	ks_buf_init(&b, 65536);
	for (int i = 0; i < 65; i++) {
		memset(chunk, i, sizeof(chunk));
		assert_int_equal(ks_buf_put(&b, chunk, sizeof(chunk)), 0);
		assert_int_equal(b.len, (size_t)(i + 1) * 1000);
		assert_true(b.alloc >= b.len && b.alloc <= 65536);
		/* Geometric: a grown buffer at least doubles (or hits the cap). */
		if (b.alloc != prev_alloc && prev_alloc != 0)
			assert_true(b.alloc >= 2 * prev_alloc || b.alloc == 65536);
		prev_alloc = b.alloc;
	}
	assert_int_equal(b.len, 65000);
	assert_int_equal(ks_buf_put(&b, chunk, 536), 0);
	assert_int_equal(b.len, 65536);
	assert_int_equal(b.alloc, 65536);
	assert_int_equal(ks_buf_put(&b, chunk, 1), -EMSGSIZE);
	assert_int_equal(b.len, 65536);
	/* Contents survive every reallocation. */
	for (size_t i = 0; i < 65000; i++)
		if (b.data[i] != (uint8_t)(i / 1000))
			fail_msg("byte %zu is %u, expected %u", i, b.data[i], (unsigned)(i / 1000));
	for (size_t i = 65000; i < 65536; i++)
		assert_int_equal(b.data[i], 64);
	ks_buf_free(&b);
}

static void test_small_cap_alloc(void **state)
{
	struct ks_buf b;
	uint8_t *p = NULL;

	(void)state;
	/* The first allocation is 256 bytes, but never more than the cap. */
	ks_buf_init(&b, 16);
	assert_int_equal(ks_buf_reserve(&b, 4, &p), 0);
	assert_ptr_equal(p, b.data);
	assert_int_equal(b.len, 4);
	assert_int_equal(b.alloc, 16);
	memcpy(p, "abcd", 4);
	assert_int_equal(ks_buf_reserve(&b, 12, &p), 0);
	assert_ptr_equal(p, b.data + 4);
	assert_int_equal(b.len, 16);
	assert_int_equal(b.alloc, 16);
	assert_memory_equal(b.data, "abcd", 4);
	ks_buf_free(&b);

	ks_buf_init(&b, 1000);
	assert_int_equal(ks_buf_put(&b, "x", 1), 0);
	assert_int_equal(b.alloc, 256);
	assert_int_equal(ks_buf_reserve(&b, 600, &p), 0);
	assert_int_equal(b.alloc, 1000);
	assert_int_equal(b.len, 601);
	assert_int_equal(b.data[0], 'x');
	ks_buf_free(&b);
}

static void test_reset_wipes(void **state)
{
	struct ks_buf b;
	uint8_t *data, *p;
	size_t alloc;

	(void)state;
	ks_buf_init(&b, 64);
	assert_int_equal(ks_buf_put(&b, "secret", 6), 0);
	/* Reserved bytes are contents too: the whole allocation is wiped. */
	assert_int_equal(ks_buf_reserve(&b, 58, &p), 0);
	memset(p, 0xee, 58);
	data = b.data;
	alloc = b.alloc;
	assert_int_equal(alloc, 64);
	ks_buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.alloc, alloc);
	assert_int_equal(b.max, 64);
	assert_ptr_equal(b.data, data);
	for (size_t i = 0; i < alloc; i++)
		assert_int_equal(data[i], 0);
	/* The storage is reused, not reallocated. */
	assert_int_equal(ks_buf_put(&b, "again", 5), 0);
	assert_ptr_equal(b.data, data);
	assert_memory_equal(b.data, "again", 5);
	ks_buf_free(&b);
	/* Resetting an empty buffer is fine. */
	ks_buf_init(&b, 64);
	ks_buf_reset(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
}

static void test_u32(void **state)
{
	struct ks_buf b;

	(void)state;
	ks_buf_init(&b, 8);
	assert_int_equal(ks_buf_put_u32(&b, 0x01020304), 0);
	assert_int_equal(b.len, 4);
	assert_memory_equal(b.data, "\x01\x02\x03\x04", 4);
	assert_int_equal(ks_peek_u32(b.data), 0x01020304);
	assert_int_equal(ks_buf_put_u32(&b, 0xfffefdfcu), 0);
	assert_int_equal(b.len, 8);
	assert_memory_equal(b.data + 4, "\xff\xfe\xfd\xfc", 4);
	assert_int_equal(ks_peek_u32(b.data + 4), 0xfffefdfcu);
	assert_int_equal(ks_buf_put_u32(&b, 0), -EMSGSIZE);
	assert_int_equal(b.len, 8);
	assert_int_equal(ks_peek_u32((const uint8_t *)"\xff\xff\xff\xff"), 0xffffffffu);
	assert_int_equal(ks_peek_u32((const uint8_t *)"\0\0\0\0"), 0);
	assert_int_equal(ks_peek_u32((const uint8_t *)"\x80\0\0\x01"), 0x80000001u);
	assert_int_equal(ks_peek_u32((const uint8_t *)"\0\x01\0\0"), 65536);
	ks_buf_free(&b);

	/* Room for 3 bytes only: nothing is written. */
	ks_buf_init(&b, 3);
	assert_int_equal(ks_buf_put_u32(&b, 1), -EMSGSIZE);
	assert_int_equal(b.len, 0);
	ks_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init),
		cmocka_unit_test(test_cap),
		cmocka_unit_test(test_zero_cap),
		cmocka_unit_test(test_overflow),
		cmocka_unit_test(test_growth),
		cmocka_unit_test(test_small_cap_alloc),
		cmocka_unit_test(test_reset_wipes),
		cmocka_unit_test(test_u32),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
