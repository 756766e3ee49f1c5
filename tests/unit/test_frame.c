/* Framing over a socketpair: caps before allocation, truncation, slow and stalled peers. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "proto/frame.h"

static int sv[2];

static int setup(void **state)
{
	(void)state;
	return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
}

static int teardown(void **state)
{
	(void)state;
	close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	return 0;
}

static void test_header(void **state)
{
	uint8_t hdr[4];
	size_t len = 0;

	(void)state;
	ks_frame_header_encode(hdr, 1);
	assert_int_equal(ks_frame_header_decode(hdr, &len), 0);
	assert_int_equal(len, 1);
	ks_frame_header_encode(hdr, KS_FRAME_MAX);
	assert_int_equal(ks_frame_header_decode(hdr, &len), 0);
	assert_int_equal(len, KS_FRAME_MAX);
	assert_int_equal(ks_frame_header_decode((const uint8_t *)"\0\0\0\0", &len), -EBADMSG);
	assert_int_equal(ks_frame_header_decode((const uint8_t *)"\0\x01\0\x01", &len), -EMSGSIZE);
	assert_int_equal(ks_frame_header_decode((const uint8_t *)"\xff\xff\xff\xff", &len), -EMSGSIZE);
}

static void test_round_trip(void **state)
{
	struct ks_buf body;
	uint8_t *big = malloc(KS_FRAME_MAX);

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(ks_frame_write(sv[0], "{\"a\":1}", 7, 1000), 0);
	assert_int_equal(ks_frame_read(sv[1], &body, 1000), 0);
	assert_int_equal(body.len, 7);
	assert_memory_equal(body.data, "{\"a\":1}", 7);
	assert_int_equal(ks_frame_write(sv[0], "x", 0, 1000), -EMSGSIZE);
	assert_int_equal(ks_frame_write(sv[0], big, KS_FRAME_MAX + 1, 1000), -EMSGSIZE);
	free(big);
	ks_buf_free(&body);
}

struct writer {
	int fd;
	size_t len;
	int delay_ms;
};

static void *big_writer(void *arg)
{
	struct writer *w = arg;
	uint8_t *data = malloc(w->len);

	memset(data, 'z', w->len);
	ks_frame_write(w->fd, data, w->len, 5000);
	free(data);
	return NULL;
}

static void test_max_frame(void **state)
{
	struct writer w = { sv[0], KS_FRAME_MAX, 0 };
	struct ks_buf body;
	pthread_t th;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(pthread_create(&th, NULL, big_writer, &w), 0);
	assert_int_equal(ks_frame_read(sv[1], &body, 5000), 0);
	pthread_join(th, NULL);
	assert_int_equal(body.len, KS_FRAME_MAX);
	assert_int_equal(body.data[KS_FRAME_MAX - 1], 'z');
	ks_buf_free(&body);
}

static void test_bad_lengths_allocate_nothing(void **state)
{
	static const char *const headers[] = { "\0\0\0\0", "\0\x01\0\x01", "\xff\xff\xff\xff" };
	static const int expect[] = { -EBADMSG, -EMSGSIZE, -EMSGSIZE };
	struct ks_buf body;

	(void)state;
	for (size_t i = 0; i < 3; i++) {
		ks_buf_init(&body, KS_FRAME_MAX);
		assert_int_equal(write(sv[0], headers[i], 4), 4);
		assert_int_equal(ks_frame_read(sv[1], &body, 1000), expect[i]);
		assert_int_equal(body.alloc, 0);
		ks_buf_free(&body);
	}
}

static void test_eof(void **state)
{
	struct ks_buf body;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	/* Inside the body. */
	assert_int_equal(write(sv[0], "\0\0\0\x10{\"x\"", 8), 8);
	shutdown(sv[0], SHUT_WR);
	assert_int_equal(ks_frame_read(sv[1], &body, 1000), -EPIPE);
	ks_buf_free(&body);
}

static void test_eof_in_header(void **state)
{
	struct ks_buf body;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(write(sv[0], "\0\0", 2), 2);
	shutdown(sv[0], SHUT_WR);
	assert_int_equal(ks_frame_read(sv[1], &body, 1000), -EPIPE);
	ks_buf_free(&body);
}

static void test_clean_eof(void **state)
{
	struct ks_buf body;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	shutdown(sv[0], SHUT_WR);
	assert_int_equal(ks_frame_read(sv[1], &body, 1000), -ECONNRESET);
	ks_buf_free(&body);
}

static void test_stall(void **state)
{
	struct ks_buf body;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(write(sv[0], "\0\0\0\x05{\"", 6), 6);
	assert_int_equal(ks_frame_read(sv[1], &body, 200), -ETIMEDOUT);
	ks_buf_free(&body);
}

static void *slow_writer(void *arg)
{
	static const char frame[] = "\0\0\0\x04{\"\"}";
	struct writer *w = arg;

	for (size_t i = 0; i < sizeof(frame) - 1; i++) {
		if (write(w->fd, frame + i, 1) != 1)
			break;
		usleep((useconds_t)w->delay_ms * 1000);
	}
	return NULL;
}

static void test_slow_sender(void **state)
{
	struct writer w = { sv[0], 0, 20 };
	struct ks_buf body;
	pthread_t th;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(pthread_create(&th, NULL, slow_writer, &w), 0);
	/* 8 bytes, one every 20 ms, within 100 ms per chunk and 400 ms per frame. */
	assert_int_equal(ks_frame_read(sv[1], &body, 100), 0);
	pthread_join(th, NULL);
	assert_memory_equal(body.data, "{\"\"}", 4);
	ks_buf_free(&body);
}

static void test_trickle_is_dropped(void **state)
{
	struct writer w = { sv[0], 0, 60 };
	struct ks_buf body;
	pthread_t th;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(pthread_create(&th, NULL, slow_writer, &w), 0);
	/* Each byte arrives in time, but the frame takes longer than 4 x 100 ms. */
	assert_int_equal(ks_frame_read(sv[1], &body, 100), -ETIMEDOUT);
	pthread_join(th, NULL);
	ks_buf_free(&body);
}

static void test_write_to_closed_peer(void **state)
{
	(void)state;
	close(sv[1]);
	sv[1] = -1;
	/* EPIPE, not SIGPIPE. */
	assert_int_equal(ks_frame_write(sv[0], "{}", 2, 1000), -EPIPE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header),
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_frame, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_lengths_allocate_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eof, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eof_in_header, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clean_eof, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stall, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_sender, setup, teardown),
		cmocka_unit_test_setup_teardown(test_trickle_is_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_to_closed_peer, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
