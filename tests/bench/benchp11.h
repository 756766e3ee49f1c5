/*
 * The PKCS#11 side the sign benchmarks share: a module loaded into a
 * process, the benchmark's token and key found, a login, and a server that
 * gives each connection a thread (the raw signers). Errors are returned for
 * the caller's die(); nothing here exits except the forked server loop.
 */
#ifndef KEYSVC_TESTS_BENCH_BENCHP11_H
#define KEYSVC_TESTS_BENCH_BENCHP11_H

#include <stddef.h>

#include <p11-kit/pkcs11.h>

/*
 * dlopen @module and take its function list into *@f. NULL, or what
 * failed ("dlopen: ...", "C_GetFunctionList"), in a static buffer.
 */
const char *bench_p11_load(const char *module, CK_FUNCTION_LIST **f);

/*
 * C_Initialize @f with OS locking, open a serial session on the token
 * labelled @label into *@s and log in with @pin (a login already there is
 * fine: it is per application). CKR_OK, or the first error; *@what names
 * the call that failed.
 */
CK_RV bench_p11_open_logged_in(CK_FUNCTION_LIST *f, const char *label, const char *pin,
			       size_t pin_len, CK_SESSION_HANDLE *s, const char **what);

/* The slot holding the token labelled @label into *@slot: CKR_OK, CKR_TOKEN_NOT_PRESENT or C_GetSlotList's error. */
CK_RV bench_p11_find_slot(CK_FUNCTION_LIST *f, const char *label, CK_SLOT_ID *slot);

/*
 * The private key labelled @name into *@key: CKR_OK when exactly one
 * exists (*@count says how many were found, at most 2), the search's error,
 * or CKR_OBJECT_HANDLE_INVALID for none or several.
 */
CK_RV bench_p11_find_key(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, const char *name,
			 CK_OBJECT_HANDLE *key, CK_ULONG *count);

/*
 * Accept on @lfd forever, each connection (its fd cast to a pointer) to
 * @conn on a detached thread of its own; _exit(1) when accept fails for
 * good. For a forked server process.
 */
void bench_serve_threads(int lfd, void *(*conn)(void *)) __attribute__((noreturn));

#endif
