/*
 * A bounded byte buffer for wire data (after OpenSSH's sshbuf).
 *
 * A buffer never grows beyond the maximum given at init, so a peer can
 * never make us allocate more than that. Freed and reset buffers are wiped,
 * because they may have held signatures or other request data.
 */
#ifndef KEYSVC_PROTO_BUF_H
#define KEYSVC_PROTO_BUF_H

#include <stddef.h>
#include <stdint.h>

struct ks_buf {
	uint8_t *data;
	size_t len;     /* bytes in use */
	size_t alloc;   /* bytes allocated */
	size_t max;     /* hard cap on len */
};

/* An empty buffer that will hold at most @max bytes. Allocates nothing. */
void ks_buf_init(struct ks_buf *b, size_t max);

/* Wipe and free the storage; the buffer is empty and reusable. */
void ks_buf_free(struct ks_buf *b);

/* Wipe the contents, keep the storage. */
void ks_buf_reset(struct ks_buf *b);

/*
 * Make room for @n more bytes and return a pointer to them in *@p; len
 * grows by @n. -EMSGSIZE if len + n would exceed max, -ENOMEM on
 * allocation failure (the buffer is unchanged then).
 */
int ks_buf_reserve(struct ks_buf *b, size_t n, uint8_t **p);

/* Append @n bytes; same errors as ks_buf_reserve(). */
int ks_buf_put(struct ks_buf *b, const void *src, size_t n);

/* Append a 32-bit big-endian integer. */
int ks_buf_put_u32(struct ks_buf *b, uint32_t v);

/* Read a 32-bit big-endian integer from @p (4 bytes). */
uint32_t ks_peek_u32(const uint8_t *p);

#endif
