/*
 * The mutexes the token layer offers the module in C_Initialize
 * (pkcs11/locking.c):
 *
 *  - the four functions lock as a mutex must (two threads, one counter)
 *    and refuse a missing mutex with CKR_MUTEX_BAD;
 *  - SoftHSM, behind faultp11, takes them and really locks them while it
 *    signs (faultp11 counts the module's LockMutex calls);
 *  - a module that cannot use them (faultp11 "os-only": CKR_CANT_LOCK) is
 *    initialised again without them, works, and is never offered them
 *    again, not even when it is re-initialised.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "pkcs11/token.h"
#include "pkcs11/token_internal.h"
#include "tests/common/softhsm.h"

static struct ks_test_token tt;
static char count[PATH_MAX + 32];
static const uint8_t md[32] = { 0x17, 4, 5, 6 };

#define ROUNDS 200000

struct shared {
	CK_C_INITIALIZE_ARGS *args;
	void *mutex;
	unsigned long counter; /* only changed under the mutex, on purpose not atomically */
	int failures;
};

static void *add_under_mutex(void *arg)
{
	struct shared *s = arg;

	for (int i = 0; i < ROUNDS; i++) {
		if (s->args->LockMutex(s->mutex) != CKR_OK) {
			__atomic_add_fetch(&s->failures, 1, __ATOMIC_RELAXED);
			continue;
		}
		/* A read and a write apart: without mutual exclusion increments get lost. */
		unsigned long v = *(volatile unsigned long *)&s->counter;
		*(volatile unsigned long *)&s->counter = v + 1;
		if (s->args->UnlockMutex(s->mutex) != CKR_OK)
			__atomic_add_fetch(&s->failures, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void test_mutex_functions(void **state)
{
	CK_C_INITIALIZE_ARGS args;
	struct shared s = { &args, NULL, 0, 0 };
	pthread_t t1, t2;

	(void)state;
	ks_tok_init_args(&args, 0);
	assert_int_equal(args.flags, CKF_OS_LOCKING_OK);
	assert_null(args.CreateMutex);
	assert_null(args.LockMutex);

	ks_tok_init_args(&args, 1);
	assert_int_equal(args.flags, CKF_OS_LOCKING_OK);
	assert_non_null(args.CreateMutex);
	assert_non_null(args.DestroyMutex);
	assert_non_null(args.LockMutex);
	assert_non_null(args.UnlockMutex);
	assert_null(args.pReserved);

	assert_int_equal(args.CreateMutex(NULL), CKR_ARGUMENTS_BAD);
	assert_int_equal(args.LockMutex(NULL), CKR_MUTEX_BAD);
	assert_int_equal(args.UnlockMutex(NULL), CKR_MUTEX_BAD);
	assert_int_equal(args.DestroyMutex(NULL), CKR_MUTEX_BAD);

	assert_int_equal(args.CreateMutex(&s.mutex), CKR_OK);
	assert_non_null(s.mutex);
	assert_int_equal(pthread_create(&t1, NULL, add_under_mutex, &s), 0);
	assert_int_equal(pthread_create(&t2, NULL, add_under_mutex, &s), 0);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	assert_int_equal(s.failures, 0);
	assert_int_equal(s.counter, 2UL * ROUNDS);
	assert_int_equal(args.DestroyMutex(s.mutex), CKR_OK);
}

/* The module's LockMutex calls, from the line faultp11 writes at C_Finalize (0: none). */
static unsigned long mutex_locks(void)
{
	char line[128];
	unsigned long locks = 0;
	FILE *f = fopen(count, "r");

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
		(void)sscanf(line, "LockMutex %lu", &locks);
	fclose(f);
	return locks;
}

static int lines(const char *want)
{
	return ks_test_count_lines(count, want);
}

static struct ks_token *open_token(void)
{
	struct ks_token_config cfg;
	struct ks_token *tok = NULL;

	ks_test_token_config(&tt, &cfg);
	cfg.module_path = getenv("KS_FAULTP11");
	cfg.sessions = 2;
	/* A name nobody made re-initialises the module: the reconnect path's C_Initialize. */
	cfg.rescan = KS_RESCAN_REINITIALIZE;
	assert_int_equal(ks_token_open(&cfg, &tok), 0);
	return tok;
}

static void sign_and_verify(struct ks_token *tok, const char *name)
{
	EVP_PKEY *pub = NULL;
	EVP_PKEY_CTX *ctx;
	uint8_t *sig = NULL;
	size_t sig_len = 0;

	assert_int_equal(ks_token_generate(tok, name, KS_KEY_EC_P256, &pub), 0);
	assert_int_equal(ks_token_sign_digest(tok, name, KS_SIG_ECDSA_SHA256, md, sizeof(md), &sig,
					      &sig_len), 0);
	assert_non_null(ctx = EVP_PKEY_CTX_new(pub, NULL));
	assert_int_equal(EVP_PKEY_verify_init(ctx), 1);
	assert_int_equal(EVP_PKEY_verify(ctx, sig, sig_len, md, sizeof(md)), 1);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pub);
	free(sig);
}

static void test_module_locks_our_mutexes(void **state)
{
	struct ks_token *tok;

	(void)state;
	unsetenv("KS_FAULTP11_LOCKING");
	remove(count);
	tok = open_token();
	assert_int_equal(lines("C_Initialize"), 1);
	assert_int_equal(lines("C_Initialize mutexes"), 1);
	sign_and_verify(tok, "locking-ours");
	assert_int_equal(ks_token_delete(tok, "locking-ours"), 0);
	assert_int_equal(ks_token_close(tok), 0);
	/* C_Finalize wrote how often SoftHSM locked a mutex of ours meanwhile. */
	assert_true(mutex_locks() > 0);
}

static void test_module_refusing_them_is_initialised_without(void **state)
{
	struct ks_token *tok;
	EVP_PKEY *pub = NULL;

	(void)state;
	setenv("KS_FAULTP11_LOCKING", "os-only", 1);
	remove(count);
	tok = open_token();
	/* Offered once, refused with CKR_CANT_LOCK, then initialised without them. */
	assert_int_equal(lines("C_Initialize"), 2);
	assert_int_equal(lines("C_Initialize mutexes"), 1);
	sign_and_verify(tok, "locking-own");

	/* A re-initialisation does not offer them again. */
	assert_int_equal(ks_token_public_key(tok, "nobody-made-this", &pub), -ENOENT);
	assert_int_equal(lines("C_Initialize"), 3);
	assert_int_equal(lines("C_Initialize mutexes"), 1);
	sign_and_verify(tok, "locking-own-again");

	assert_int_equal(ks_token_delete(tok, "locking-own"), 0);
	assert_int_equal(ks_token_delete(tok, "locking-own-again"), 0);
	assert_int_equal(ks_token_close(tok), 0);
	assert_int_equal(mutex_locks(), 0);
	unsetenv("KS_FAULTP11_LOCKING");
}

static int setup(void **state)
{
	(void)state;
	return ks_test_faultp11_token_setup(&tt, "locking", count, sizeof(count));
}

static int teardown(void **state)
{
	(void)state;
	ks_test_faultp11_token_teardown(&tt);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mutex_functions),
		cmocka_unit_test(test_module_locks_our_mutexes),
		cmocka_unit_test(test_module_refusing_them_is_initialised_without),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
