#include "proto/secmem.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "proto/log.h"

/*
 * Secrets get whole pages of their own: mlock() and MADV_DONTDUMP work on
 * pages, and sharing a page with ordinary heap data would lock or hide it too.
 */
static size_t page_round(size_t n)
{
	long ps = sysconf(_SC_PAGESIZE);
	size_t page = ps > 0 ? (size_t)ps : 4096;

	return (n + page - 1) / page * page;
}

void *ks_secmem_alloc(size_t n)
{
	size_t len;
	void *p;

	if (n == 0)
		n = 1;
	len = page_round(n);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (mlock(p, len) != 0)
		ks_warn("mlock of secret memory failed; it may be swapped (raise LimitMEMLOCK)");
	if (madvise(p, len, MADV_DONTDUMP) != 0)
		ks_warn("madvise(MADV_DONTDUMP) failed for secret memory");
	return p;
}

void ks_secmem_free(void *p, size_t n)
{
	size_t len;

	if (p == NULL)
		return;
	if (n == 0)
		n = 1;
	len = page_round(n);
	explicit_bzero(p, len);
	munlock(p, len);
	munmap(p, len);
}

void ks_freezero(void *p, size_t n)
{
	if (p == NULL)
		return;
	explicit_bzero(p, n);
	free(p);
}
