#include "proto/frame.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
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

/*
 * Both readers: wait at most @first_wait_ms for the first byte (0: no
 * bound; -ETIME when it passes), then read the frame with each wait bounded
 * by @chunk_ms (as wait_fd() takes it) and the whole frame by @frame_ms
 * from its first byte (0: no bound).
 */
static int read_frame(int fd, struct ks_buf *body, int first_wait_ms, int chunk_ms, int64_t frame_ms)
{
	uint8_t hdr[KS_FRAME_HDR];
	int64_t first_deadline = now_ms() + first_wait_ms, deadline = 0;
	size_t got = 0, len = 0, body_got = 0;
	uint8_t *p;
	int r;

	ks_buf_reset(body);
	if (body->max < KS_FRAME_MAX)
		return -EINVAL;
	/*
	 * poll() first: with one request in flight per connection, the other
	 * side's frame is hardly ever queued yet when this is called.
	 */
	r = wait_fd(fd, POLLIN, first_wait_ms > 0 ? -1 : 0, first_deadline);
	if (r == -ETIMEDOUT)
		return -ETIME;
	if (r != 0)
		return r;
	/* The frame's clock starts with its first byte. */
	if (frame_ms > 0)
		deadline = now_ms() + frame_ms;
	r = read_full(fd, hdr, sizeof(hdr), chunk_ms, deadline, &got);
	if (r == -EPIPE && got == 0)
		return -ECONNRESET;
	if (r != 0)
		return r;
	/* The cap is checked before anything is allocated for the body. */
	if ((r = ks_frame_header_decode(hdr, &len)) != 0)
		return r;
	if ((r = ks_buf_reserve(body, len, &p)) != 0)
		return r;
	if ((r = read_full(fd, p, len, chunk_ms, deadline, &body_got)) != 0) {
		ks_buf_reset(body);
		return r;
	}
	return 0;
}

int ks_frame_read(int fd, struct ks_buf *body, int timeout_ms)
{
	int r;

	/* Negative has always meant "no timeout" here; wait_fd() gives -1 another meaning. */
	if (timeout_ms < 0)
		timeout_ms = 0;
	/* The first byte may take as long as an idle client is allowed to idle. */
	r = read_frame(fd, body, timeout_ms, timeout_ms, 4 * (int64_t)timeout_ms);
	return r == -ETIME ? -ETIMEDOUT : r;
}

/*
 * Send the header and the body with one sendmsg() when the socket takes
 * them: a reader woken by the header alone would wake again for the body.
 */
static int write_frame(int fd, const void *body, size_t len, int chunk_ms, int64_t frame_ms)
{
	uint8_t hdr[KS_FRAME_HDR];
	struct iovec iov[2];
	struct msghdr msg;
	size_t done = 0, total = sizeof(hdr) + len;
	int64_t deadline = 0;
	ssize_t r;
	int e;

	if (len == 0 || len > KS_FRAME_MAX)
		return -EMSGSIZE;
	if (frame_ms > 0)
		deadline = now_ms() + frame_ms;
	ks_frame_header_encode(hdr, len);
	while (done < total) {
		memset(&msg, 0, sizeof(msg));
		if (done < sizeof(hdr)) {
			iov[0].iov_base = hdr + done;
			iov[0].iov_len = sizeof(hdr) - done;
			iov[1].iov_base = (void *)(uintptr_t)body;
			iov[1].iov_len = len;
			msg.msg_iovlen = 2;
		} else {
			iov[0].iov_base = (uint8_t *)(uintptr_t)body + (done - sizeof(hdr));
			iov[0].iov_len = total - done;
			msg.msg_iovlen = 1;
		}
		msg.msg_iov = iov;
		r = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r > 0) {
			done += (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		if ((e = wait_fd(fd, POLLOUT, chunk_ms, deadline)) != 0)
			return e;
	}
	return 0;
}

int ks_frame_write(int fd, const void *body, size_t len, int timeout_ms)
{
	if (timeout_ms < 0)
		timeout_ms = 0;
	return write_frame(fd, body, len, timeout_ms, 4 * (int64_t)timeout_ms);
}

/* -1 for wait_fd(): waits bounded only by the frame's deadline; 0: no bound at all. */
int ks_frame_read_deadline(int fd, struct ks_buf *body, int idle_timeout_ms,
			   int frame_timeout_ms)
{
	return read_frame(fd, body, idle_timeout_ms, frame_timeout_ms > 0 ? -1 : 0, frame_timeout_ms);
}

int ks_frame_write_deadline(int fd, const void *body, size_t len, int frame_timeout_ms)
{
	return write_frame(fd, body, len, frame_timeout_ms > 0 ? -1 : 0, frame_timeout_ms);
}
