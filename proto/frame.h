/*
 * Framing of protocol v1: a 4-byte big-endian length (1..KS_FRAME_MAX)
 * followed by that many bytes of body. See proto/PROTOCOL.md.
 */
#ifndef KEYSVC_PROTO_FRAME_H
#define KEYSVC_PROTO_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "proto/buf.h"

#define KS_FRAME_MAX 65536u
#define KS_FRAME_HDR 4u

/*
 * Check a frame header. Returns 0 and sets *@len, or -EBADMSG for a zero
 * length, -EMSGSIZE for a length over KS_FRAME_MAX.
 */
int ks_frame_header_decode(const uint8_t hdr[KS_FRAME_HDR], size_t *len);

/* Write the header for a body of @len bytes (1..KS_FRAME_MAX). */
void ks_frame_header_encode(uint8_t hdr[KS_FRAME_HDR], size_t len);

/*
 * Read one frame from the blocking or non-blocking socket @fd into @body
 * (reset first; its max must be at least KS_FRAME_MAX). @timeout_ms bounds
 * the wait for each chunk of bytes (0 = wait forever), so a peer that sends
 * one byte at a time still gets dropped once it pauses that long; the
 * whole frame is further bounded by 4 * @timeout_ms.
 * Returns 0, or
 *   -ECONNRESET  the peer closed before the first header byte (clean end)
 *   -EPIPE       the peer closed inside a frame
 *   -EBADMSG     zero length
 *   -EMSGSIZE    length over the cap (nothing was allocated for it)
 *   -ETIMEDOUT   the peer was too slow
 *   -errno       a socket error
 */
int ks_frame_read(int fd, struct ks_buf *body, int timeout_ms);

/*
 * Write @len bytes (1..KS_FRAME_MAX) as one frame, with the same
 * timeout rules. Never raises SIGPIPE (MSG_NOSIGNAL).
 * Returns 0, -EMSGSIZE, -ETIMEDOUT or -errno.
 */
int ks_frame_write(int fd, const void *body, size_t len, int timeout_ms);

/*
 * The server's read, with two separate bounds and no per-chunk timeout:
 * wait at most @idle_timeout_ms for the first byte of the next frame (the
 * time a client may sit idle between requests), then at most
 * @frame_timeout_ms, counted from that first byte, for the whole frame
 * (header and body) to arrive. A peer that dribbles one byte now and then
 * is dropped when the frame deadline passes, however regular its bytes.
 * 0 for either bound means no bound. Same contract and return values as
 * ks_frame_read() otherwise, except that an idle bound that passes before
 * any byte arrived is -ETIME (the client is idle), told apart from
 * -ETIMEDOUT (a frame started and did not finish in time).
 */
int ks_frame_read_deadline(int fd, struct ks_buf *body, int idle_timeout_ms,
			   int frame_timeout_ms);

/*
 * Write one frame within a total deadline of @frame_timeout_ms (0 = none)
 * from the call: a peer that does not take its answer in that time gets
 * -ETIMEDOUT, so a writer never waits on a reader for longer than that,
 * and nothing is queued beyond this one frame and the kernel's socket
 * buffer. Same return values as ks_frame_write().
 */
int ks_frame_write_deadline(int fd, const void *body, size_t len, int frame_timeout_ms);

#endif
