/* Framing over a socketpair: caps before allocation, truncation, slow and stalled peers. */
#include <errno.h>
#include <fcntl.h>
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
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	return 0;
}

/* Nothing is waiting to be read on @fd. */
static void assert_no_data(int fd)
{
	uint8_t c;

	assert_int_equal(recv(fd, &c, 1, MSG_DONTWAIT), -1);
	assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
}

static void test_header(void **state)
{
	uint8_t hdr[4];
	size_t len = 0;

	(void)state;
	ks_frame_header_encode(hdr, 1);
	assert_memory_equal(hdr, "\0\0\0\x01", 4);
	assert_int_equal(ks_frame_header_decode(hdr, &len), 0);
	assert_int_equal(len, 1);
	ks_frame_header_encode(hdr, KS_FRAME_MAX);
	assert_memory_equal(hdr, "\0\x01\0\0", 4);
	assert_int_equal(ks_frame_header_decode(hdr, &len), 0);
	assert_int_equal(len, KS_FRAME_MAX);
	ks_frame_header_encode(hdr, 0x1234);
	assert_memory_equal(hdr, "\0\0\x12\x34", 4);
	assert_int_equal(ks_frame_header_decode(hdr, &len), 0);
	assert_int_equal(len, 0x1234);
	/* Errors leave *len alone. */
	len = 777;
	assert_int_equal(ks_frame_header_decode((const uint8_t *)"\0\0\0\0", &len), -EBADMSG);
	assert_int_equal(ks_frame_header_decode((const uint8_t *)"\0\x01\0\x01", &len), -EMSGSIZE);
	assert_int_equal(ks_frame_header_decode((const uint8_t *)"\xff\xff\xff\xff", &len), -EMSGSIZE);
	assert_int_equal(ks_frame_header_decode((const uint8_t *)"\x80\0\0\0", &len), -EMSGSIZE);
	assert_int_equal(ks_frame_header_decode((const uint8_t *)"\x01\0\0\x01", &len), -EMSGSIZE);
	assert_int_equal(len, 777);
}

static void test_round_trip(void **state)
{
	struct ks_buf body;
	uint8_t *big = calloc(1, KS_FRAME_MAX + 1);
	uint8_t wire[4 + 7];

	(void)state;
	assert_non_null(big);
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(ks_frame_write(sv[0], "{\"a\":1}", 7, 1000), 0);
	/* The bytes on the wire: big-endian length, then the body. */
	assert_int_equal(recv(sv[1], wire, sizeof(wire), MSG_WAITALL), (ssize_t)sizeof(wire));
	assert_memory_equal(wire, "\0\0\0\x07{\"a\":1}", sizeof(wire));
	assert_no_data(sv[1]);

	assert_int_equal(ks_frame_write(sv[0], "{\"a\":1}", 7, 1000), 0);
	assert_int_equal(ks_frame_read(sv[1], &body, 1000), 0);
	assert_int_equal(body.len, 7);
	assert_memory_equal(body.data, "{\"a\":1}", 7);
	/* Bad lengths write nothing at all. */
	assert_int_equal(ks_frame_write(sv[0], "x", 0, 1000), -EMSGSIZE);
	assert_int_equal(ks_frame_write(sv[0], big, KS_FRAME_MAX + 1, 1000), -EMSGSIZE);
	assert_int_equal(ks_frame_write(sv[0], big, SIZE_MAX, 1000), -EMSGSIZE);
	assert_no_data(sv[1]);
	free(big);
	ks_buf_free(&body);
}

static void test_back_to_back(void **state)
{
	struct ks_buf body;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	/* Three frames in one go: each read takes exactly one. */
	assert_int_equal(ks_frame_write(sv[0], "first-frame", 11, 1000), 0);
	assert_int_equal(ks_frame_write(sv[0], "2nd", 3, 1000), 0);
	assert_int_equal(ks_frame_write(sv[0], "x", 1, 0), 0);
	assert_int_equal(ks_frame_read(sv[1], &body, 1000), 0);
	assert_int_equal(body.len, 11);
	assert_memory_equal(body.data, "first-frame", 11);
	/* The body is reset first: a shorter frame replaces the longer one. */
	assert_int_equal(ks_frame_read(sv[1], &body, 1000), 0);
	assert_int_equal(body.len, 3);
	assert_memory_equal(body.data, "2nd", 3);
	assert_int_equal(body.data[3], 0);
	/* timeout 0: wait forever, the data is already there. */
	assert_int_equal(ks_frame_read(sv[1], &body, 0), 0);
	assert_int_equal(body.len, 1);
	assert_int_equal(body.data[0], 'x');
	assert_no_data(sv[1]);
	ks_buf_free(&body);
}

static void test_small_body_buffer(void **state)
{
	struct ks_buf body;

	(void)state;
	assert_int_equal(ks_frame_write(sv[0], "{}", 2, 1000), 0);
	ks_buf_init(&body, KS_FRAME_MAX - 1);
	assert_int_equal(ks_frame_read(sv[1], &body, 1000), -EINVAL);
	assert_int_equal(body.alloc, 0);
	ks_buf_free(&body);
	/* Nothing was consumed. */
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(ks_frame_read(sv[1], &body, 1000), 0);
	assert_int_equal(body.len, 2);
	assert_memory_equal(body.data, "{}", 2);
	ks_buf_free(&body);
}

struct writer {
	int fd;
	size_t len;
	int delay_ms;
	int result;
};

static void *big_writer(void *arg)
{
	struct writer *w = arg;
	uint8_t *data = malloc(w->len);

	for (size_t i = 0; i < w->len; i++)
		data[i] = (uint8_t)(i * 7 + 3);
	if (w->delay_ms > 0)
		usleep((useconds_t)w->delay_ms * 1000);
	w->result = ks_frame_write(w->fd, data, w->len, 5000);
	free(data);
	return NULL;
}

static void test_max_frame(void **state)
{
	struct writer w = { sv[0], KS_FRAME_MAX, 0, -1 };
	struct ks_buf body;
	pthread_t th;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(pthread_create(&th, NULL, big_writer, &w), 0);
	assert_int_equal(ks_frame_read(sv[1], &body, 5000), 0);
	pthread_join(th, NULL);
	assert_int_equal(w.result, 0);
	assert_int_equal(body.len, KS_FRAME_MAX);
	for (size_t i = 0; i < KS_FRAME_MAX; i++)
		if (body.data[i] != (uint8_t)(i * 7 + 3))
			fail_msg("byte %zu differs", i);
	assert_no_data(sv[1]);
	ks_buf_free(&body);
}

/* A non-blocking socket and a writer that starts late. */
static void test_nonblocking_late_writer(void **state)
{
	struct writer w = { sv[0], 1000, 100, -1 };
	struct ks_buf body;
	pthread_t th;

	(void)state;
	assert_int_equal(fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK), 0);
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(pthread_create(&th, NULL, big_writer, &w), 0);
	assert_int_equal(ks_frame_read(sv[1], &body, 2000), 0);
	pthread_join(th, NULL);
	assert_int_equal(w.result, 0);
	assert_int_equal(body.len, 1000);
	assert_int_equal(body.data[999], (uint8_t)(999 * 7 + 3));
	/* And with no timeout at all. */
	w.result = -1;
	assert_int_equal(pthread_create(&th, NULL, big_writer, &w), 0);
	assert_int_equal(ks_frame_read(sv[1], &body, 0), 0);
	pthread_join(th, NULL);
	assert_int_equal(w.result, 0);
	assert_int_equal(body.len, 1000);
	ks_buf_free(&body);
}

static void test_bad_lengths_allocate_nothing(void **state)
{
	static const char *const headers[] = {
		"\0\0\0\0", "\0\x01\0\x01", "\xff\xff\xff\xff", "\0\x10\0\0",
	};
	static const int expect[] = { -EBADMSG, -EMSGSIZE, -EMSGSIZE, -EMSGSIZE };
	struct ks_buf body;

	(void)state;
	for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
		ks_buf_init(&body, SIZE_MAX);
		assert_int_equal(write(sv[0], headers[i], 4), 4);
		/* Some body bytes follow; they must not tempt the reader. */
		assert_int_equal(write(sv[0], "{}{}", 4), 4);
		assert_int_equal(ks_frame_read(sv[1], &body, 1000), expect[i]);
		assert_int_equal(body.alloc, 0);
		assert_null(body.data);
		assert_int_equal(body.len, 0);
		ks_buf_free(&body);
		/* Drain what the reader left. */
		{
			char junk[4];

			assert_int_equal(recv(sv[1], junk, 4, MSG_DONTWAIT), 4);
		}
	}
}

static void test_eof(void **state)
{
	struct ks_buf body;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	/* Inside the body: 4 of 16 bytes arrived. */
	assert_int_equal(write(sv[0], "\0\0\0\x10{\"x\"", 8), 8);
	shutdown(sv[0], SHUT_WR);
	assert_int_equal(ks_frame_read(sv[1], &body, 1000), -EPIPE);
	/* What arrived is not handed out as a frame. */
	assert_int_equal(body.len, 0);
	ks_buf_free(&body);
}

static void test_eof_in_body_no_timeout(void **state)
{
	struct ks_buf body;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	/* One byte short, peer fully closed. */
	assert_int_equal(write(sv[0], "\0\0\0\x03{}", 6), 6);
	close(sv[0]);
	sv[0] = -1;
	assert_int_equal(ks_frame_read(sv[1], &body, 0), -EPIPE);
	assert_int_equal(body.len, 0);
	ks_buf_free(&body);
}

static void test_eof_in_header(void **state)
{
	struct ks_buf body;

	(void)state;
	for (size_t n = 1; n <= 3; n++) {
		int p[2];

		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p), 0);
		ks_buf_init(&body, KS_FRAME_MAX);
		assert_int_equal(write(p[0], "\0\0\0", n), (ssize_t)n);
		shutdown(p[0], SHUT_WR);
		assert_int_equal(ks_frame_read(p[1], &body, 1000), -EPIPE);
		assert_int_equal(body.alloc, 0);
		ks_buf_free(&body);
		close(p[0]);
		close(p[1]);
	}
}

static void test_clean_eof(void **state)
{
	struct ks_buf body;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	shutdown(sv[0], SHUT_WR);
	assert_int_equal(ks_frame_read(sv[1], &body, 1000), -ECONNRESET);
	assert_int_equal(ks_frame_read(sv[1], &body, 0), -ECONNRESET);
	assert_int_equal(body.alloc, 0);
	ks_buf_free(&body);
}

static void test_clean_eof_after_frame(void **state)
{
	struct ks_buf body;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(ks_frame_write(sv[0], "{}", 2, 1000), 0);
	close(sv[0]);
	sv[0] = -1;
	assert_int_equal(ks_frame_read(sv[1], &body, 1000), 0);
	assert_int_equal(body.len, 2);
	assert_int_equal(ks_frame_read(sv[1], &body, 1000), -ECONNRESET);
	assert_int_equal(body.len, 0);
	ks_buf_free(&body);
}

static void test_stall(void **state)
{
	struct ks_buf body;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	/* Inside the body. */
	assert_int_equal(write(sv[0], "\0\0\0\x05{\"", 6), 6);
	assert_int_equal(ks_frame_read(sv[1], &body, 200), -ETIMEDOUT);
	assert_int_equal(body.len, 0);
	ks_buf_free(&body);
}

static void test_stall_in_header(void **state)
{
	struct ks_buf body;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(write(sv[0], "\0\0", 2), 2);
	assert_int_equal(ks_frame_read(sv[1], &body, 200), -ETIMEDOUT);
	assert_int_equal(body.alloc, 0);
	ks_buf_free(&body);
}

static void test_idle(void **state)
{
	struct ks_buf body;

	(void)state;
	/* A client that connects and says nothing. */
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(ks_frame_read(sv[1], &body, 200), -ETIMEDOUT);
	assert_int_equal(body.alloc, 0);
	ks_buf_free(&body);
}

/* The server's reader tells an idle client (-ETIME) from a frame that stalled (-ETIMEDOUT). */
static void test_deadline_idle_and_stall(void **state)
{
	struct ks_buf body;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(ks_frame_read_deadline(sv[1], &body, 150, 5000), -ETIME);
	assert_int_equal(body.alloc, 0);
	/* Two header bytes: the frame has started, the idle bound no longer applies. */
	assert_int_equal(write(sv[0], "\0\0", 2), 2);
	assert_int_equal(ks_frame_read_deadline(sv[1], &body, 50, 200), -ETIMEDOUT);
	assert_int_equal(body.alloc, 0);
	ks_buf_free(&body);
}

/* Idle bound 0 waits for the first byte without limit; a frame already there is read whole. */
static void test_deadline_no_idle_bound(void **state)
{
	struct ks_buf body;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(write(sv[0], "\0\0\0\x02{}", 6), 6);
	assert_int_equal(ks_frame_read_deadline(sv[1], &body, 0, 200), 0);
	assert_int_equal(body.len, 2);
	assert_memory_equal(body.data, "{}", 2);
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
	struct writer w = { sv[0], 0, 50, 0 };
	struct ks_buf body;
	pthread_t th;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(pthread_create(&th, NULL, slow_writer, &w), 0);
	/* 8 bytes, one every 50 ms: within 200 ms per chunk and 800 ms per frame. */
	assert_int_equal(ks_frame_read(sv[1], &body, 200), 0);
	pthread_join(th, NULL);
	assert_int_equal(body.len, 4);
	assert_memory_equal(body.data, "{\"\"}", 4);
	ks_buf_free(&body);
}

static void test_trickle_is_dropped(void **state)
{
	struct writer w = { sv[0], 0, 60, 0 };
	struct ks_buf body;
	pthread_t th;

	(void)state;
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(pthread_create(&th, NULL, slow_writer, &w), 0);
	/* Each byte arrives in time, but the frame takes longer than 4 x 100 ms. */
	assert_int_equal(ks_frame_read(sv[1], &body, 100), -ETIMEDOUT);
	pthread_join(th, NULL);
	assert_int_equal(body.len, 0);
	ks_buf_free(&body);
}

static void test_write_to_closed_peer(void **state)
{
	void (*old)(int);

	(void)state;
	/* SIGPIPE at its default would kill this process: EPIPE, not SIGPIPE. */
	old = signal(SIGPIPE, SIG_DFL);
	close(sv[1]);
	sv[1] = -1;
	assert_int_equal(ks_frame_write(sv[0], "{}", 2, 1000), -EPIPE);
	assert_int_equal(ks_frame_write(sv[0], "{}", 2, 0), -EPIPE);
	signal(SIGPIPE, old);
}

static void test_write_stalled_reader(void **state)
{
	uint8_t *big = calloc(1, KS_FRAME_MAX);
	int r = 0, i;

	(void)state;
	assert_non_null(big);
	/* The peer never reads: once the socket buffer is full, writes time out. */
	for (i = 0; i < 1000 && r == 0; i++)
		r = ks_frame_write(sv[0], big, KS_FRAME_MAX, 200);
	assert_int_equal(r, -ETIMEDOUT);
	assert_true(i > 1);
	free(big);
}

static void test_not_a_socket(void **state)
{
	struct ks_buf body;
	int p[2];

	(void)state;
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "\0\0\0\x01x", 5), 5);
	ks_buf_init(&body, KS_FRAME_MAX);
	assert_int_equal(ks_frame_read(p[0], &body, 200), -ENOTSOCK);
	assert_int_equal(ks_frame_write(p[1], "x", 1, 200), -ENOTSOCK);
	ks_buf_free(&body);
	close(p[0]);
	close(p[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header),
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_back_to_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_small_body_buffer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_frame, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nonblocking_late_writer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_lengths_allocate_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eof, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eof_in_body_no_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eof_in_header, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clean_eof, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clean_eof_after_frame, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stall, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stall_in_header, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deadline_idle_and_stall, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deadline_no_idle_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_sender, setup, teardown),
		cmocka_unit_test_setup_teardown(test_trickle_is_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_to_closed_peer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_stalled_reader, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_a_socket, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
