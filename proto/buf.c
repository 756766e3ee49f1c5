#include "proto/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto/secmem.h"

void ks_buf_init(struct ks_buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->alloc = 0;
	b->max = max;
}

void ks_buf_free(struct ks_buf *b)
{
	ks_freezero(b->data, b->alloc);
	b->data = NULL;
	b->len = 0;
	b->alloc = 0;
}

void ks_buf_reset(struct ks_buf *b)
{
	if (b->data != NULL)
		explicit_bzero(b->data, b->alloc);
	b->len = 0;
}

int ks_buf_reserve(struct ks_buf *b, size_t n, uint8_t **p)
{
	size_t need, nalloc;
	uint8_t *nd;

	if (n > b->max || b->len > b->max - n)
		return -EMSGSIZE;
	need = b->len + n;
	if (need > b->alloc) {
		/* Grow geometrically but never past the cap. */
		nalloc = b->alloc < 256 ? 256 : b->alloc;
		while (nalloc < need)
			nalloc = nalloc > b->max / 2 ? b->max : nalloc * 2;
		if (nalloc > b->max)
			nalloc = b->max;
		/* Not realloc(): the old block may hold request data that must be wiped. */
		nd = malloc(nalloc);
		if (nd == NULL)
			return -ENOMEM;
		if (b->len > 0)
			memcpy(nd, b->data, b->len);
		ks_freezero(b->data, b->alloc);
		b->data = nd;
		b->alloc = nalloc;
	}
	*p = b->data + b->len;
	b->len = need;
	return 0;
}

int ks_buf_put(struct ks_buf *b, const void *src, size_t n)
{
	uint8_t *p;
	int r;

	if (n == 0)
		return 0;
	if ((r = ks_buf_reserve(b, n, &p)) != 0)
		return r;
	memcpy(p, src, n);
	return 0;
}

int ks_buf_put_u32(struct ks_buf *b, uint32_t v)
{
	uint8_t be[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };

	return ks_buf_put(b, be, sizeof(be));
}

uint32_t ks_peek_u32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	       ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}
