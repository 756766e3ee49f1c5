#include "proto/frame.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ks_frame_header_decode(const uint8_t hdr[KS_FRAME_HDR], size_t *len)
{
	uint32_t v = ks_peek_u32(hdr);

	if (v == 0)
		return -EBADMSG;
	if (v > KS_FRAME_MAX)
		return -EMSGSIZE;
	*len = v;
	return 0;
}

void ks_frame_header_encode(uint8_t hdr[KS_FRAME_HDR], size_t len)
{
	hdr[0] = (uint8_t)(len >> 24);
	hdr[1] = (uint8_t)(len >> 16);
	hdr[2] = (uint8_t)(len >> 8);
	hdr[3] = (uint8_t)len;
}

/*
 * Wait until @fd is ready for @events. The wait is bounded by the per-chunk
 * timeout and by the whole-frame deadline, whichever comes first;
 * @timeout_ms 0 means neither (wait forever), @timeout_ms -1 means only
 * the deadline.
 */
static int wait_fd(int fd, short events, int timeout_ms, int64_t deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int wait, r;

	for (;;) {
		wait = -1;
		if (timeout_ms != 0) {
			int64_t left = deadline - now_ms();

			if (left <= 0)
				return -ETIMEDOUT;
			wait = timeout_ms < 0 || left < timeout_ms ? (int)left : timeout_ms;
		}
		r = poll(&pfd, 1, wait);
		if (r > 0)
			return 0;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

/* Read exactly @n bytes. *@got counts what arrived, to tell a clean EOF from a cut one. */
static int read_full(int fd, uint8_t *p, size_t n, int timeout_ms,
		     int64_t deadline, size_t *got)
{
	ssize_t r;
	int e;

	while (*got < n) {
		r = recv(fd, p + *got, n - *got, MSG_DONTWAIT);
		if (r > 0) {
			*got += (size_t)r;
			continue;
		}
		if (r == 0)
			return -EPIPE;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		if ((e = wait_fd(fd, POLLIN, timeout_ms, deadline)) != 0)
			return e;
	}
	return 0;
}

int ks_frame_read(int fd, struct ks_buf *body, int timeout_ms)
{
	uint8_t hdr[KS_FRAME_HDR];
	int64_t deadline = 0;
	size_t got = 0, len = 0, body_got = 0;
	uint8_t *p;
	int r;

	/* Negative has always meant "no timeout" here; wait_fd() gives -1 another meaning. */
	if (timeout_ms < 0)
		timeout_ms = 0;
	ks_buf_reset(body);
	if (body->max < KS_FRAME_MAX)
		return -EINVAL;
	/* The first byte may take as long as an idle client is allowed to idle. */
	if (timeout_ms > 0 &&
	    (r = wait_fd(fd, POLLIN, timeout_ms, now_ms() + timeout_ms)) != 0)
		return r;
	if (timeout_ms > 0)
		deadline = now_ms() + 4 * (int64_t)timeout_ms;
	r = read_full(fd, hdr, sizeof(hdr), timeout_ms, deadline, &got);
	if (r == -EPIPE && got == 0)
		return -ECONNRESET;
	if (r != 0)
		return r;
	/* The cap is checked before anything is allocated for the body. */
	if ((r = ks_frame_header_decode(hdr, &len)) != 0)
		return r;
	if ((r = ks_buf_reserve(body, len, &p)) != 0)
		return r;
	r = read_full(fd, p, len, timeout_ms, deadline, &body_got);
	if (r != 0) {
		ks_buf_reset(body);
		return r;
	}
	return 0;
}

static int write_full(int fd, const uint8_t *p, size_t n, int timeout_ms,
		      int64_t deadline)
{
	size_t done = 0;
	ssize_t r;
	int e;

	while (done < n) {
		r = send(fd, p + done, n - done, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r > 0) {
			done += (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		if ((e = wait_fd(fd, POLLOUT, timeout_ms, deadline)) != 0)
			return e;
	}
	return 0;
}

int ks_frame_write(int fd, const void *body, size_t len, int timeout_ms)
{
	uint8_t hdr[KS_FRAME_HDR];
	int64_t deadline = 0;
	int r;

	if (timeout_ms < 0)
		timeout_ms = 0;
	if (len == 0 || len > KS_FRAME_MAX)
		return -EMSGSIZE;
	if (timeout_ms > 0)
		deadline = now_ms() + 4 * (int64_t)timeout_ms;
	ks_frame_header_encode(hdr, len);
	if ((r = write_full(fd, hdr, sizeof(hdr), timeout_ms, deadline)) != 0)
		return r;
	return write_full(fd, body, len, timeout_ms, deadline);
}

int ks_frame_read_deadline(int fd, struct ks_buf *body, int idle_timeout_ms,
			   int frame_timeout_ms)
{
	uint8_t hdr[KS_FRAME_HDR];
	/* -1: wait_fd() bounds only by the deadline; 0: no bound at all. */
	int chunk = frame_timeout_ms > 0 ? -1 : 0;
	int64_t deadline = 0;
	size_t got = 0, len = 0, body_got = 0;
	uint8_t *p;
	int r;

	ks_buf_reset(body);
	if (body->max < KS_FRAME_MAX)
		return -EINVAL;
	if ((r = wait_fd(fd, POLLIN, idle_timeout_ms > 0 ? -1 : 0,
			 now_ms() + idle_timeout_ms)) != 0)
		return r;
	/* The frame's clock starts when its first byte is readable, not per chunk. */
	if (frame_timeout_ms > 0)
		deadline = now_ms() + frame_timeout_ms;
	r = read_full(fd, hdr, sizeof(hdr), chunk, deadline, &got);
	if (r == -EPIPE && got == 0)
		return -ECONNRESET;
	if (r != 0)
		return r;
	if ((r = ks_frame_header_decode(hdr, &len)) != 0)
		return r;
	if ((r = ks_buf_reserve(body, len, &p)) != 0)
		return r;
	if ((r = read_full(fd, p, len, chunk, deadline, &body_got)) != 0) {
		ks_buf_reset(body);
		return r;
	}
	return 0;
}

int ks_frame_write_deadline(int fd, const void *body, size_t len, int frame_timeout_ms)
{
	uint8_t hdr[KS_FRAME_HDR];
	int chunk = frame_timeout_ms > 0 ? -1 : 0;
	int64_t deadline = 0;
	int r;

	if (len == 0 || len > KS_FRAME_MAX)
		return -EMSGSIZE;
	if (frame_timeout_ms > 0)
		deadline = now_ms() + frame_timeout_ms;
	ks_frame_header_encode(hdr, len);
	if ((r = write_full(fd, hdr, sizeof(hdr), chunk, deadline)) != 0)
		return r;
	return write_full(fd, body, len, chunk, deadline);
}
