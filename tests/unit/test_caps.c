/*
 * What the token can do, probed from its mechanism list (pkcs11/caps.c),
 * and the token running out of memory. SoftHSM can be neither capped nor
 * filled, so faultp11 (tests/faultp11) in front of it hides mechanisms,
 * caps the RSA key size, refuses CKM_RSA_PKCS for keys that cannot decrypt
 * (as tpm2-pkcs11 does) and answers CKR_DEVICE_MEMORY; the tpm2 suite
 * (tests/tpm2) meets the same limits on a real second token.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "pkcs11/token.h"
#include "tests/common/softhsm.h"

#define BIT(x) (1u << (unsigned)(x))
#define ALL_TYPES (BIT(KS_KEY_RSA_2048) | BIT(KS_KEY_RSA_3072) | BIT(KS_KEY_RSA_4096) | \
		   BIT(KS_KEY_EC_P256) | BIT(KS_KEY_EC_P384))
#define PKCS1_ALGS (BIT(KS_SIG_RSA_PKCS1_SHA256) | BIT(KS_SIG_RSA_PKCS1_SHA384) | \
		    BIT(KS_SIG_RSA_PKCS1_SHA512))
#define ALL_ALGS (PKCS1_ALGS | BIT(KS_SIG_RSA_PSS_SHA256) | BIT(KS_SIG_RSA_PSS_SHA384) | \
		  BIT(KS_SIG_RSA_PSS_SHA512) | BIT(KS_SIG_ECDSA_SHA256) | BIT(KS_SIG_ECDSA_SHA384))

struct fixture {
	struct ks_test_token tt;
	struct ks_token *tok;
	char control[4200];
};

static void write_control(struct fixture *fx, const char *line)
{
	FILE *f = fopen(fx->control, "w");

	assert_non_null(f);
	fprintf(f, "%s\n", line);
	fclose(f);
}

/* A token behind faultp11 with KS_FAULTP11_MECHS=@mechs (NULL: unset). */
static void open_with(struct fixture *fx, const char *label, const char *mechs)
{
	struct ks_token_config cfg;
	const char *shim = getenv("KS_FAULTP11");

	assert_non_null(shim);
	assert_int_equal(ks_test_token_setup(&fx->tt, label), 0);
	snprintf(fx->control, sizeof(fx->control), "%s/faults", fx->tt.dir);
	write_control(fx, "");
	setenv("KS_FAULTP11_TARGET", fx->tt.module, 1);
	setenv("KS_FAULTP11_CONTROL", fx->control, 1);
	if (mechs != NULL)
		setenv("KS_FAULTP11_MECHS", mechs, 1);
	else
		unsetenv("KS_FAULTP11_MECHS");
	ks_test_token_config(&fx->tt, &cfg);
	cfg.module_path = shim;
	assert_int_equal(ks_token_open(&cfg, &fx->tok), 0);
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	if (fx != NULL) {
		ks_token_close(fx->tok);
		ks_test_token_teardown(&fx->tt);
		free(fx);
	}
	unsetenv("KS_FAULTP11_MECHS");
	return 0;
}

static int setup(void **state)
{
	*state = calloc(1, sizeof(struct fixture));
	return *state == NULL ? -1 : 0;
}

/* SoftHSM can do everything protocol v1 names: hello offers all of it. */
static void test_softhsm_offers_everything(void **state)
{
	struct fixture *fx = *state;
	struct ks_token_info info;
	char why[256];

	open_with(fx, "caps-all", NULL);
	assert_int_equal(ks_token_get_info(fx->tok, &info), 0);
	assert_int_equal(info.key_types & ALL_TYPES, ALL_TYPES);
	assert_int_equal(info.sig_algs & ALL_ALGS, ALL_ALGS);
	assert_int_equal(info.digest_algs & ALL_ALGS, ALL_ALGS);
	for (int t = KS_KEY_RSA_2048; t <= KS_KEY_EC_P384; t++)
		assert_int_equal(ks_token_check_key_type(fx->tok, (enum ks_key_type)t, why,
							 sizeof(why)), 0);
}

/*
 * RSA keys up to 2048 bits and no RSA-PSS: the other sizes and PSS are
 * neither offered nor asked of the token, and the refusal names the limit.
 */
static void test_capped_token(void **state)
{
	struct fixture *fx = *state;
	struct ks_token_info info;
	uint8_t digest[32] = { 1 }, *sig = NULL;
	size_t sig_len = 0;
	char why[256];

	open_with(fx, "caps-capped", "rsa-max:2048 hide:0xd");
	assert_int_equal(ks_token_get_info(fx->tok, &info), 0);
	assert_int_equal(info.key_types & ALL_TYPES,
			 BIT(KS_KEY_RSA_2048) | BIT(KS_KEY_EC_P256) | BIT(KS_KEY_EC_P384));
	assert_int_equal(info.sig_algs & BIT(KS_SIG_RSA_PSS_SHA256), 0);
	assert_int_equal(info.sig_algs & PKCS1_ALGS, PKCS1_ALGS);

	assert_int_equal(ks_token_check_key_type(fx->tok, KS_KEY_RSA_3072, why, sizeof(why)),
			 -EOPNOTSUPP);
	assert_non_null(strstr(why, "the token's RSA key sizes are "));
	assert_non_null(strstr(why, "..2048 bits"));
	/* SoftHSM itself would make it: the refusal is keysvcd's, from the probe. */
	assert_int_equal(ks_token_generate(fx->tok, "big", KS_KEY_RSA_4096, NULL), -EOPNOTSUPP);
	assert_int_equal(ks_token_generate(fx->tok, "small", KS_KEY_RSA_2048, NULL), 0);

	assert_int_equal(ks_token_check_sig_alg(fx->tok, KS_SIG_RSA_PSS_SHA256, 0, why, sizeof(why)),
			 -EOPNOTSUPP);
	assert_non_null(strstr(why, "CKM_RSA_PKCS_PSS"));
	assert_int_equal(ks_token_sign_digest(fx->tok, "small", KS_SIG_RSA_PSS_SHA256, digest,
					      sizeof(digest), &sig, &sig_len), -EOPNOTSUPP);
	assert_int_equal(ks_token_sign_digest(fx->tok, "small", KS_SIG_RSA_PKCS1_SHA256, digest,
					      sizeof(digest), &sig, &sig_len), 0);
	free(sig);
}

static int verify(EVP_PKEY *pub, const char *md, const uint8_t *data, size_t len,
		  const uint8_t *sig, size_t sig_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx != NULL && EVP_DigestVerifyInit_ex(ctx, NULL, md, NULL, NULL, pub, NULL) == 1 &&
		 EVP_DigestVerify(ctx, sig, sig_len, data, len) == 1;

	EVP_MD_CTX_free(ctx);
	return ok;
}

/*
 * A token whose CKM_RSA_PKCS needs a key that can decrypt: PKCS#1 v1.5
 * from a digest is refused as unsupported (learned once, health stays ok),
 * from the data it is made by hash-and-sign and verifies.
 */
static void test_rsa_pkcs_needs_decrypt(void **state)
{
	struct fixture *fx = *state;
	struct ks_token_info info;
	static const uint8_t data[] = "the data a client sends";
	uint8_t digest[32], *sig = NULL;
	unsigned digest_len = 0;
	size_t sig_len = 0;
	EVP_PKEY *pub = NULL;
	char why[256];

	open_with(fx, "caps-decrypt", "rsa-pkcs-needs-decrypt");
	assert_int_equal(ks_token_generate(fx->tok, "r", KS_KEY_RSA_2048, &pub), 0);
	assert_int_equal(EVP_Digest(data, sizeof(data), digest, &digest_len, EVP_sha256(), NULL), 1);
	/* Not known before the first refusal. */
	assert_int_equal(ks_token_check_sig_alg(fx->tok, KS_SIG_RSA_PKCS1_SHA256, 1, why,
						sizeof(why)), 0);
	assert_int_equal(ks_token_sign_digest(fx->tok, "r", KS_SIG_RSA_PKCS1_SHA256, digest,
					      digest_len, &sig, &sig_len), -EOPNOTSUPP);
	assert_int_equal(ks_token_check_sig_alg(fx->tok, KS_SIG_RSA_PKCS1_SHA384, 1, why,
						sizeof(why)), -EOPNOTSUPP);
	assert_non_null(strstr(why, "only from the data"));
	assert_int_equal(ks_token_check_sig_alg(fx->tok, KS_SIG_RSA_PKCS1_SHA384, 0, why,
						sizeof(why)), 0);
	assert_int_equal(ks_token_get_info(fx->tok, &info), 0);
	assert_int_equal(info.health, KS_HEALTH_OK);
	assert_int_equal(info.sig_algs & PKCS1_ALGS, PKCS1_ALGS);
	assert_int_equal(info.digest_algs & PKCS1_ALGS, 0);
	assert_int_not_equal(info.digest_algs & BIT(KS_SIG_RSA_PSS_SHA256), 0);

	assert_int_equal(ks_token_sign(fx->tok, "r", KS_SIG_RSA_PKCS1_SHA256, data, sizeof(data),
				       digest, digest_len, &sig, &sig_len), 0);
	assert_true(verify(pub, "SHA256", data, sizeof(data), sig, sig_len));
	free(sig);
	EVP_PKEY_free(pub);
}

/* Without hash-and-sign either, such a token offers no PKCS#1 v1.5 once that is known. */
static void test_no_pkcs1_at_all(void **state)
{
	struct fixture *fx = *state;
	struct ks_token_info info;
	static const uint8_t data[] = "x";
	uint8_t digest[32] = { 0 }, *sig = NULL;
	size_t sig_len = 0;

	open_with(fx, "caps-nopkcs1", "rsa-pkcs-needs-decrypt hide:0x40 hide:0x41 hide:0x42");
	assert_int_equal(ks_token_generate(fx->tok, "r", KS_KEY_RSA_2048, NULL), 0);
	assert_int_equal(ks_token_sign(fx->tok, "r", KS_SIG_RSA_PKCS1_SHA256, data, sizeof(data),
				       digest, sizeof(digest), &sig, &sig_len), -EOPNOTSUPP);
	assert_int_equal(ks_token_get_info(fx->tok, &info), 0);
	assert_int_equal(info.sig_algs & PKCS1_ALGS, 0);
	assert_int_not_equal(info.key_types & BIT(KS_KEY_RSA_2048), 0);
}

static void wait_up(struct ks_token *tok)
{
	struct ks_token_info info;
	struct timespec pause = { 0, 50 * 1000 * 1000 };

	for (int i = 0; i < 400; i++) {
		assert_int_equal(ks_token_get_info(tok, &info), 0);
		if (info.up)
			return;
		nanosleep(&pause, NULL);
	}
	fail_msg("the token did not come back within 20 s");
}

/*
 * Out of memory on the token (tpm2-pkcs11 out of TPM object contexts):
 * degraded with the token's error while signatures fail, even though
 * searches still work, and recovered by a re-initialisation.
 */
static void test_exhaustion(void **state)
{
	struct fixture *fx = *state;
	struct ks_token_info info;
	struct ks_key_info *keys = NULL;
	uint8_t digest[32] = { 2 }, *sig = NULL;
	size_t n = 0, sig_len = 0;

	open_with(fx, "caps-memory", NULL);
	assert_int_equal(ks_token_generate(fx->tok, "e", KS_KEY_EC_P256, NULL), 0);
	write_control(fx, "error CKR_DEVICE_MEMORY always C_Sign");
	for (int i = 0; i < 2; i++)
		assert_int_not_equal(ks_token_sign_digest(fx->tok, "e", KS_SIG_ECDSA_SHA256, digest,
							  sizeof(digest), &sig, &sig_len), 0);
	/* A search that works says nothing about the signatures that fail. */
	assert_int_equal(ks_token_list(fx->tok, &keys, &n), 0);
	free(keys);
	assert_int_equal(ks_token_get_info(fx->tok, &info), 0);
	assert_int_equal(info.health, KS_HEALTH_DEGRADED);
	assert_non_null(strstr(info.health_reason, "C_Sign: CKR_DEVICE_MEMORY 2 times"));
	assert_non_null(strstr(info.health_reason, "out of memory"));
	/* The third in a row initialises the module again, which frees what ran out. */
	assert_int_equal(ks_token_sign_digest(fx->tok, "e", KS_SIG_ECDSA_SHA256, digest,
					      sizeof(digest), &sig, &sig_len), -ENODEV);
	write_control(fx, "");
	wait_up(fx->tok);
	assert_int_equal(ks_token_get_info(fx->tok, &info), 0);
	assert_int_equal(info.health, KS_HEALTH_OK);
	assert_int_equal(ks_token_sign_digest(fx->tok, "e", KS_SIG_ECDSA_SHA256, digest,
					      sizeof(digest), &sig, &sig_len), 0);
	free(sig);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_softhsm_offers_everything, setup, teardown),
		cmocka_unit_test_setup_teardown(test_capped_token, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rsa_pkcs_needs_decrypt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_pkcs1_at_all, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exhaustion, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
