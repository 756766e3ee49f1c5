#include "tests/bench/benchp11.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

const char *bench_p11_load(const char *module, CK_FUNCTION_LIST **f)
{
	static char why[512];
	CK_C_GetFunctionList getfl;
	void *h;

	if (module == NULL || (h = dlopen(module, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		snprintf(why, sizeof(why), "dlopen: %s", module == NULL ? "no module" : dlerror());
		return why;
	}
	if ((getfl = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList")) == NULL ||
	    getfl(f) != CKR_OK)
		return "C_GetFunctionList";
	return NULL;
}

CK_RV bench_p11_find_slot(CK_FUNCTION_LIST *f, const char *label, CK_SLOT_ID *slot)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64;
	CK_RV rv;

	if ((rv = f->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK)
		return rv;
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		size_t len = sizeof(ti.label);

		if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		while (len > 0 && ti.label[len - 1] == ' ')
			len--;
		if (len == strlen(label) && memcmp(ti.label, label, len) == 0) {
			*slot = slots[i];
			return CKR_OK;
		}
	}
	return CKR_TOKEN_NOT_PRESENT;
}

CK_RV bench_p11_open_logged_in(CK_FUNCTION_LIST *f, const char *label, const char *pin,
			       size_t pin_len, CK_SESSION_HANDLE *s, const char **what)
{
	CK_C_INITIALIZE_ARGS args;
	CK_SLOT_ID slot;
	CK_RV rv;

	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	*what = "C_Initialize";
	if ((rv = f->C_Initialize(&args)) != CKR_OK)
		return rv;
	*what = "finding the token";
	if ((rv = bench_p11_find_slot(f, label, &slot)) != CKR_OK)
		return rv;
	*what = "C_OpenSession";
	if ((rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, s)) != CKR_OK)
		return rv;
	*what = "C_Login";
	rv = f->C_Login(*s, CKU_USER, (CK_UTF8CHAR *)(uintptr_t)pin, pin_len);
	return rv == CKR_USER_ALREADY_LOGGED_IN ? CKR_OK : rv;
}

CK_RV bench_p11_find_key(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, const char *name,
			 CK_OBJECT_HANDLE *key, CK_ULONG *count)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[2] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)(uintptr_t)name, strlen(name) },
	};
	CK_OBJECT_HANDLE h[2];
	CK_RV rv;

	*count = 0;
	if ((rv = f->C_FindObjectsInit(s, tmpl, 2)) != CKR_OK)
		return rv;
	rv = f->C_FindObjects(s, h, 2, count);
	f->C_FindObjectsFinal(s);
	if (rv != CKR_OK)
		return rv;
	if (*count != 1)
		return CKR_OBJECT_HANDLE_INVALID;
	*key = h[0];
	return CKR_OK;
}

void bench_serve_threads(int lfd, void *(*conn)(void *))
{
	pthread_attr_t attr;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		pthread_t th;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			_exit(1);
		}
		if (pthread_create(&th, &attr, conn, (void *)(intptr_t)fd) != 0)
			close(fd);
	}
}
