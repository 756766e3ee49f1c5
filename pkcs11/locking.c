/*
 * The mutexes keysvcd offers the module in C_Initialize.
 *
 * A module like SoftHSM serialises each signature on a few mutexes of its
 * own (the key object, the token's wrapping key), held for microseconds
 * with file and crypto work inside. keysvcd calls the module from as many
 * threads as the token signs at once (64 and more in front of a network
 * HSM), so those mutexes are contended on almost every signature. With the
 * default OS mutex every contended lock puts the waiter to sleep and makes
 * the holder wake it: two context switches and two futex calls, which on a
 * loaded host turn into queues behind a preempted holder. An adaptive
 * mutex spins for a bounded time first, which is enough whenever the
 * holder is running on another CPU, and sleeps only when it is not (see
 * docs/benchmarks/2026-12-06-hsm-latency.md, "Fifth session").
 *
 * PKCS#11 (C_Initialize, CK_C_INITIALIZE_ARGS) lets a module given
 * CKF_OS_LOCKING_OK and the four functions use either its own locking or
 * ours; one that can use neither ours answers CKR_CANT_LOCK (module.c then
 * initialises it with CKF_OS_LOCKING_OK alone).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "pkcs11/token_internal.h"

static CK_RV create_mutex(CK_VOID_PTR_PTR out)
{
	pthread_mutexattr_t attr;
	pthread_mutex_t *m;
	int r;

	if (out == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((m = malloc(sizeof(*m))) == NULL)
		return CKR_HOST_MEMORY;
	if (pthread_mutexattr_init(&attr) != 0) {
		free(m);
		return CKR_HOST_MEMORY;
	}
	r = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
	if (r == 0)
		r = pthread_mutex_init(m, &attr);
	pthread_mutexattr_destroy(&attr);
	if (r != 0) {
		free(m);
		return r == ENOMEM ? CKR_HOST_MEMORY : CKR_GENERAL_ERROR;
	}
	*out = m;
	return CKR_OK;
}

static CK_RV destroy_mutex(CK_VOID_PTR m)
{
	if (m == NULL)
		return CKR_MUTEX_BAD;
	/* EBUSY: the module destroys a mutex it holds; keep it rather than free it in use. */
	if (pthread_mutex_destroy(m) != 0)
		return CKR_GENERAL_ERROR;
	free(m);
	return CKR_OK;
}

static CK_RV lock_mutex(CK_VOID_PTR m)
{
	if (m == NULL)
		return CKR_MUTEX_BAD;
	return pthread_mutex_lock(m) == 0 ? CKR_OK : CKR_GENERAL_ERROR;
}

static CK_RV unlock_mutex(CK_VOID_PTR m)
{
	if (m == NULL)
		return CKR_MUTEX_BAD;
	/* Like the module's own OS mutexes, an unlock by a thread that does not hold it is not detected. */
	return pthread_mutex_unlock(m) == 0 ? CKR_OK : CKR_MUTEX_NOT_LOCKED;
}

void ks_tok_init_args(CK_C_INITIALIZE_ARGS *args, int offer_mutexes)
{
	memset(args, 0, sizeof(*args));
	args->flags = CKF_OS_LOCKING_OK;
	if (!offer_mutexes)
		return;
	args->CreateMutex = create_mutex;
	args->DestroyMutex = destroy_mutex;
	args->LockMutex = lock_mutex;
	args->UnlockMutex = unlock_mutex;
}
