/*
 * A key name no search shows and nobody knew (pkcs11/token.h, "rescan").
 * The token layer runs on faultp11 in front of SoftHSM, whose
 * KS_FAULTP11_COUNT file gets a line for every C_Initialize, so each test
 * counts how often the module was initialised:
 *
 *  - with rescan "search" (the default), a key made by another process
 *    (tests/tpm2/p11obj, its own SoftHSM instance on the same token) while
 *    the layer runs is found by its name at the first request, without a
 *    re-initialisation; and misses of names nobody made, before and after
 *    it, answer -ENOENT and never re-initialise the module;
 *  - with rescan "reinitialize", a miss re-initialises the module once, and
 *    a second miss right after does not (at most once every 10 s).
 */
#include <errno.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "pkcs11/token.h"
#include "tests/common/softhsm.h"

extern char **environ;

static struct ks_test_token tt;
static char count[PATH_MAX + 32];
static const uint8_t md[32] = { 0x42, 1, 2, 3 };

/* C_Initialize calls faultp11 saw so far. */
static int inits(void)
{
	return ks_test_count_lines(count, "C_Initialize");
}

static struct ks_token *open_token(enum ks_rescan rescan)
{
	struct ks_token_config cfg;
	struct ks_token *tok = NULL;

	ks_test_token_config(&tt, &cfg);
	cfg.module_path = getenv("KS_FAULTP11");
	cfg.sessions = 2;
	cfg.rescan = rescan;
	assert_int_equal(ks_token_open(&cfg, &tok), 0);
	return tok;
}

/* Another program makes an EC key named @name on the token, in a process of its own. */
static void make_elsewhere(const char *name)
{
	char prog[PATH_MAX], verb[] = "generate", key[64];
	char *argv[] = { prog, tt.module, tt.label, tt.pin_file, verb, key, NULL };
	pid_t pid;
	int st;

	snprintf(prog, sizeof(prog), "%s", getenv("KS_P11OBJ"));
	snprintf(key, sizeof(key), "%s", name);

	assert_int_equal(posix_spawn(&pid, argv[0], NULL, NULL, argv, environ), 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_search_finds_without_reinit(void **state)
{
	struct ks_token *tok;
	EVP_PKEY *pub = NULL;
	EVP_PKEY_CTX *ctx;
	uint8_t *sig = NULL;
	size_t sig_len = 0;
	int before;

	(void)state;
	before = inits();
	tok = open_token(KS_RESCAN_SEARCH);
	assert_int_equal(inits(), before + 1);
	/* A miss before the key exists: no re-initialisation. */
	assert_int_equal(ks_token_public_key(tok, "made-elsewhere", &pub), -ENOENT);
	assert_int_equal(inits(), before + 1);

	make_elsewhere("made-elsewhere");
	assert_int_equal(ks_token_public_key(tok, "made-elsewhere", &pub), 0);
	assert_int_equal(ks_token_sign_digest(tok, "made-elsewhere", KS_SIG_ECDSA_SHA256, md,
					      sizeof(md), &sig, &sig_len), 0);
	assert_non_null(ctx = EVP_PKEY_CTX_new(pub, NULL));
	assert_int_equal(EVP_PKEY_verify_init(ctx), 1);
	assert_int_equal(EVP_PKEY_verify(ctx, sig, sig_len, md, sizeof(md)), 1);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pub);
	free(sig);

	/* Names nobody made, over and over: -ENOENT each time, never a re-initialisation. */
	for (int i = 0; i < 5; i++) {
		struct ks_key_info info;

		assert_int_equal(ks_token_key_info(tok, "nobody-made-this", &info), -ENOENT);
		sig = NULL;
		assert_int_equal(ks_token_sign_digest(tok, "nobody-made-this-either",
						      KS_SIG_ECDSA_SHA256, md, sizeof(md), &sig,
						      &sig_len), -ENOENT);
	}
	assert_int_equal(inits(), before + 1);
	assert_int_equal(ks_token_close(tok), 0);
}

static void test_reinitialize_rate_limited(void **state)
{
	struct ks_token *tok;
	EVP_PKEY *pub = NULL;
	int before;

	(void)state;
	before = inits();
	tok = open_token(KS_RESCAN_REINITIALIZE);
	assert_int_equal(inits(), before + 1);
	assert_int_equal(ks_token_public_key(tok, "nobody-1", &pub), -ENOENT);
	assert_int_equal(inits(), before + 2);
	/* Within 10 s of the last one: answered at once, no second re-initialisation. */
	assert_int_equal(ks_token_public_key(tok, "nobody-2", &pub), -ENOENT);
	assert_int_equal(inits(), before + 2);
	/* The module works after its re-initialisation. */
	assert_int_equal(ks_token_public_key(tok, "made-elsewhere", &pub), 0);
	EVP_PKEY_free(pub);
	assert_int_equal(ks_token_close(tok), 0);
}

static int setup(void **state)
{
	(void)state;
	if (getenv("KS_P11OBJ") == NULL) {
		fprintf(stderr, "KS_P11OBJ is not set (meson test sets it)\n");
		return -1;
	}
	return ks_test_faultp11_token_setup(&tt, "rescan", count, sizeof(count));
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
		cmocka_unit_test(test_search_finds_without_reinit),
		cmocka_unit_test(test_reinitialize_rate_limited),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
