/*
 * libFuzzer target for the frame reader (proto/frame.c).
 *
 * The input is the byte stream a peer sends on its socket. A writer thread
 * pushes it through a socketpair and closes its end; the reader reads
 * frames until it reports an error. The stream goes through both readers:
 * ks_frame_read() (clients) and ks_frame_read_deadline() (keysvcd). A simple model of the framing rules
 * (proto/PROTOCOL.md) predicts every result: each frame's body, then the
 * one error that ends the stream (clean end, cut frame, zero length,
 * length over the 64 KiB cap). Any difference, or a buffer that ever holds
 * more than the cap, aborts. Every frame read is also written back with
 * ks_frame_write() and must come out byte for byte as it went in.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/buf.h"
#include "proto/frame.h"
#include "tests/fuzz/fuzz.h"

/* Generous: data is always there or the stream is closed, so no wait should ever expire. */
#define READ_TIMEOUT_MS 10000


struct writer {
	int fd;
	const uint8_t *data;
	size_t size;
};

static void *write_all(void *arg)
{
	struct writer *w = arg;
	size_t done = 0;
	ssize_t r;

	while (done < w->size) {
		/* Odd-sized chunks so frames straddle reads; stops once the reader has gone. */
		size_t chunk = w->size - done < 7919 ? w->size - done : 7919;

		r = send(w->fd, w->data + done, chunk, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		done += (size_t)r;
	}
	shutdown(w->fd, SHUT_WR);
	return NULL;
}

/* What the model says the next ks_frame_read() returns at @pos; sets *@len for a frame. */
static int expect_at(const uint8_t *data, size_t size, size_t pos, size_t *len)
{
	uint32_t v;

	if (pos == size)
		return -ECONNRESET;
	if (size - pos < KS_FRAME_HDR)
		return -EPIPE;
	v = (uint32_t)data[pos] << 24 | (uint32_t)data[pos + 1] << 16 |
	    (uint32_t)data[pos + 2] << 8 | data[pos + 3];
	if (v == 0)
		return -EBADMSG;
	if (v > KS_FRAME_MAX)
		return -EMSGSIZE;
	if (size - pos - KS_FRAME_HDR < v)
		return -EPIPE;
	*len = v;
	return 0;
}

/* ks_frame_write() of @body must put exactly header + body on the wire. */
static void check_round_trip(const uint8_t *body, size_t len)
{
	static struct ks_buf back;
	int sv[2], sndbuf = 1 << 20;

	if (back.max == 0)
		ks_buf_init(&back, KS_FRAME_MAX);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	/* One whole frame must fit in the socket so the write completes without a reader. */
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	CHECK(ks_frame_write(sv[0], body, len, READ_TIMEOUT_MS) == 0);
	close(sv[0]);
	CHECK(ks_frame_read(sv[1], &back, READ_TIMEOUT_MS) == 0);
	CHECK(back.len == len && memcmp(back.data, body, len) == 0);
	CHECK(ks_frame_read(sv[1], &back, READ_TIMEOUT_MS) == -ECONNRESET);
	close(sv[1]);
}

enum reader { READER_CHUNK, READER_DEADLINE };

static int read_frame(enum reader which, int fd, struct ks_buf *body)
{
	if (which == READER_CHUNK)
		return ks_frame_read(fd, body, READ_TIMEOUT_MS);
	return ks_frame_read_deadline(fd, body, READ_TIMEOUT_MS, READ_TIMEOUT_MS);
}

/* Send @data through a socketpair and check everything @which reads against the model. */
static void check_stream(enum reader which, const uint8_t *data, size_t size)
{
	static struct ks_buf body;
	struct writer w;
	pthread_t thread;
	size_t pos = 0, len = 0;
	int sv[2], want, got;

	if (body.max == 0)
		ks_buf_init(&body, KS_FRAME_MAX);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	w.fd = sv[0];
	w.data = data;
	w.size = size;
	CHECK(pthread_create(&thread, NULL, write_all, &w) == 0);
	for (;;) {
		size_t alloc_before = body.alloc;

		want = expect_at(data, size, pos, &len);
		got = read_frame(which, sv[1], &body);
		if (got != want) {
			fprintf(stderr, "reader %d, frame at offset %zu: read %d, expected %d\n",
				(int)which, pos, got, want);
			abort();
		}
		/* The cap holds whatever the peer claims. */
		CHECK(body.len <= KS_FRAME_MAX && body.alloc <= body.max);
		if (got == -EMSGSIZE || got == -EBADMSG)
			/* Refused on the header alone: nothing allocated for the claimed body. */
			CHECK(body.alloc == alloc_before && body.len == 0);
		if (got != 0)
			break;
		CHECK(body.len == len && memcmp(body.data, data + pos + KS_FRAME_HDR, len) == 0);
		if (which == READER_CHUNK)
			check_round_trip(body.data, body.len);
		pos += KS_FRAME_HDR + len;
	}
	/* Unblocks the writer if the reader stopped early. */
	close(sv[1]);
	pthread_join(thread, NULL);
	close(sv[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The header check on its own agrees with the model too. */
	if (size >= KS_FRAME_HDR) {
		size_t hlen = 0, mlen = 0;
		int h = ks_frame_header_decode(data, &hlen);
		int m = expect_at(data, KS_FRAME_HDR, 0, &mlen);

		/* The model sees a 4-byte stream: a valid length is a cut frame there. */
		CHECK(m == -EPIPE ? h == 0 && hlen >= 1 && hlen <= KS_FRAME_MAX : h == m);
	}
	check_stream(READER_CHUNK, data, size);
	check_stream(READER_DEADLINE, data, size);
	return 0;
}
