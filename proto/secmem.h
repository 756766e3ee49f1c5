/*
 * Memory for secrets (the PIN): locked so it is not swapped, excluded from
 * core dumps, wiped before it is released.
 */
#ifndef KEYSVC_PROTO_SECMEM_H
#define KEYSVC_PROTO_SECMEM_H

#include <stddef.h>

/*
 * Allocate @n zeroed bytes; mlock() and MADV_DONTDUMP are attempted and a
 * failure of either is only a warning (unprivileged test runs may lack the
 * memlock limit). NULL on allocation failure.
 */
void *ks_secmem_alloc(size_t n);

/* Wipe @n bytes at @p (from ks_secmem_alloc) and release them. NULL is fine. */
void ks_secmem_free(void *p, size_t n);

/* explicit_bzero, then free(). For ordinary heap buffers that held secrets or request data. */
void ks_freezero(void *p, size_t n);

#endif
