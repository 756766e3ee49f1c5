/*
 * The token layer on a private SoftHSM token: token selection, PIN
 * handling, every key type and signature algorithm (verified with
 * OpenSSL), names, certificates, deletion and concurrent use.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "pkcs11/token.h"
#include "tests/common/softhsm.h"

static struct ks_test_token tt;
static struct ks_token *tok;

static void base_config(struct ks_token_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->module_path = tt.module;
	cfg->token_label = tt.label;
	cfg->pin = tt.pin;
	cfg->pin_len = tt.pin_len;
	cfg->sessions = 2;
}

/*
 * One process shares one module instance, so the tests that open and close
 * tokens of their own run first, and the shared handle is opened after them.
 */
static int setup(void **state)
{
	(void)state;
	return ks_test_token_setup(&tt, "tokentest");
}

static void test_open(void **state)
{
	struct ks_token_config cfg;

	(void)state;
	base_config(&cfg);
	assert_int_equal(ks_token_open(&cfg, &tok), 0);
}

static int teardown(void **state)
{
	(void)state;
	ks_token_close(tok);
	ks_test_token_teardown(&tt);
	return 0;
}

static void test_token_selection(void **state)
{
	struct ks_token_config cfg;
	struct ks_token_info info;
	struct ks_token *t2 = NULL;
	char uri[128];

	(void)state;
	base_config(&cfg);
	assert_int_equal(ks_token_open(&cfg, &t2), 0);
	assert_int_equal(ks_token_get_info(t2, &info), 0);
	assert_string_equal(info.label, "tokentest");
	assert_string_equal(info.manufacturer, "SoftHSM project");
	assert_int_equal(info.up, 1);
	ks_token_close(t2);

	/* By RFC 7512 URI and by serial: the same token. */
	base_config(&cfg);
	cfg.token_label = NULL;
	snprintf(uri, sizeof(uri), "pkcs11:token=%s;serial=%s", info.label, info.serial);
	cfg.token_uri = uri;
	assert_int_equal(ks_token_open(&cfg, &t2), 0);
	ks_token_close(t2);
	base_config(&cfg);
	cfg.token_label = NULL;
	cfg.token_serial = info.serial;
	assert_int_equal(ks_token_open(&cfg, &t2), 0);
	ks_token_close(t2);

	/* No such token, a bad URI, a relative module path. */
	base_config(&cfg);
	cfg.token_label = "no-such-token";
	assert_int_equal(ks_token_open(&cfg, &t2), -ENODEV);
	base_config(&cfg);
	cfg.token_uri = "pkcs11:token=%zz";
	assert_int_equal(ks_token_open(&cfg, &t2), -EINVAL);
	base_config(&cfg);
	cfg.module_path = "libsofthsm2.so";
	assert_int_equal(ks_token_open(&cfg, &t2), -EINVAL);
}

static void test_wrong_pin(void **state)
{
	struct ks_token_config cfg;
	struct ks_token *t2 = NULL;

	(void)state;
	/* Refused, named as such, and no handle is left that could try it again. */
	base_config(&cfg);
	cfg.pin = "wrong-pin-0000";
	cfg.pin_len = strlen(cfg.pin);
	assert_int_equal(ks_token_open(&cfg, &t2), -EKEYREJECTED);
	assert_null(t2);
}

static EVP_PKEY *generate(const char *name, enum ks_key_type type)
{
	EVP_PKEY *pub = NULL;

	assert_int_equal(ks_token_generate(tok, name, type, &pub), 0);
	assert_non_null(pub);
	return pub;
}

static void verify(EVP_PKEY *pub, enum ks_sig_alg alg, const uint8_t *md, size_t md_len,
		   const uint8_t *sig, size_t sig_len)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pub, NULL);

	assert_non_null(ctx);
	assert_int_equal(EVP_PKEY_verify_init(ctx), 1);
	assert_int_equal(EVP_PKEY_CTX_set_signature_md(ctx, EVP_get_digestbyname(ks_sig_alg_digest(alg))), 1);
	if (ks_sig_alg_is_pss(alg)) {
		assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING), 1);
		/* Exactly the digest length, as TLS 1.3 requires. */
		assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST), 1);
	}
	if (EVP_PKEY_verify(ctx, sig, sig_len, md, md_len) != 1)
		fail_msg("%s signature does not verify", ks_sig_alg_name(alg));
	EVP_PKEY_CTX_free(ctx);
}

static void sign_and_verify(const char *name, EVP_PKEY *pub, enum ks_sig_alg alg)
{
	uint8_t md[64], *sig = NULL;
	size_t md_len = ks_sig_alg_digest_len(alg), sig_len = 0;
	unsigned int n = 0;

	assert_int_equal(EVP_Digest("payload", 7, md, &n, EVP_get_digestbyname(ks_sig_alg_digest(alg)), NULL), 1);
	assert_int_equal(n, md_len);
	assert_int_equal(ks_token_sign_digest(tok, name, alg, md, md_len, &sig, &sig_len), 0);
	verify(pub, alg, md, md_len, sig, sig_len);
	free(sig);
}

static void test_key_types_and_algorithms(void **state)
{
	static const struct {
		const char *name;
		enum ks_key_type type;
	} keys[] = {
		{ "t-rsa2048", KS_KEY_RSA_2048 }, { "t-rsa3072", KS_KEY_RSA_3072 },
		{ "t-rsa4096", KS_KEY_RSA_4096 }, { "t-p256", KS_KEY_EC_P256 },
		{ "t-p384", KS_KEY_EC_P384 },
	};
	struct ks_key_info info;

	(void)state;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		EVP_PKEY *pub = generate(keys[i].name, keys[i].type), *again = NULL;

		assert_int_equal(EVP_PKEY_get_bits(pub), (int)ks_key_type_bits(keys[i].type));
		assert_int_equal(ks_token_key_info(tok, keys[i].name, &info), 0);
		assert_int_equal(info.type, keys[i].type);
		assert_int_equal(info.id_len, KS_KEY_ID_LEN);
		assert_int_equal(info.has_cert, 0);
		assert_int_equal(ks_token_public_key(tok, keys[i].name, &again), 0);
		assert_int_equal(EVP_PKEY_eq(pub, again), 1);
		EVP_PKEY_free(again);
		for (int a = KS_SIG_NONE + 1; ks_sig_alg_name((enum ks_sig_alg)a) != NULL; a++) {
			if (ks_sig_alg_family((enum ks_sig_alg)a) == ks_key_type_family(keys[i].type))
				sign_and_verify(keys[i].name, pub, (enum ks_sig_alg)a);
		}
		EVP_PKEY_free(pub);
	}
}

static void test_sign_argument_errors(void **state)
{
	uint8_t md[64] = { 0 }, *sig = NULL;
	size_t sig_len = 0;

	(void)state;
	assert_int_equal(ks_token_sign_digest(tok, "t-p256", KS_SIG_ECDSA_SHA256, md, 31, &sig, &sig_len), -EINVAL);
	assert_int_equal(ks_token_sign_digest(tok, "t-p256", KS_SIG_RSA_PKCS1_SHA256, md, 32, &sig, &sig_len), -EINVAL);
	assert_int_equal(ks_token_sign_digest(tok, "t-rsa2048", KS_SIG_ECDSA_SHA256, md, 32, &sig, &sig_len), -EINVAL);
	assert_int_equal(ks_token_sign_digest(tok, "nope", KS_SIG_ECDSA_SHA256, md, 32, &sig, &sig_len), -ENOENT);
	assert_int_equal(ks_token_sign_digest(tok, "../x", KS_SIG_ECDSA_SHA256, md, 32, &sig, &sig_len), -EINVAL);
	assert_null(sig);
}

static void test_names(void **state)
{
	char long_name[KS_KEY_NAME_MAX + 2];

	(void)state;
	assert_true(ks_key_name_valid("web-1.example_key"));
	assert_false(ks_key_name_valid(""));
	assert_false(ks_key_name_valid(".hidden"));
	assert_false(ks_key_name_valid("-flag"));
	assert_false(ks_key_name_valid("a/b"));
	assert_false(ks_key_name_valid("a b"));
	assert_false(ks_key_name_valid("caf\xc3\xa9"));
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	assert_false(ks_key_name_valid(long_name));
	long_name[KS_KEY_NAME_MAX] = '\0';
	assert_true(ks_key_name_valid(long_name));
	assert_int_equal(ks_token_generate(tok, "t-p256", KS_KEY_EC_P256, NULL), -EEXIST);
	assert_int_equal(ks_token_generate(tok, "bad name", KS_KEY_EC_P256, NULL), -EINVAL);
	assert_int_equal(ks_token_generate(tok, "x", KS_KEY_NONE, NULL), -EINVAL);
}

static X509 *self_signed_for(EVP_PKEY *subject_pub)
{
	EVP_PKEY *ca = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *x = X509_new();

	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"t-p256", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, subject_pub);
	assert_true(X509_sign(x, ca, EVP_sha256()) > 0);
	EVP_PKEY_free(ca);
	return x;
}

static void test_certificates_and_list(void **state)
{
	EVP_PKEY *pub = NULL;
	X509 *x;
	uint8_t *der = NULL, *got = NULL;
	size_t got_len = 0;
	struct ks_key_info *keys = NULL;
	size_t n = 0;
	int der_len;

	(void)state;
	assert_int_equal(ks_token_cert_get(tok, "t-p256", &got, &got_len), -ENOENT);
	assert_int_equal(ks_token_public_key(tok, "t-p256", &pub), 0);
	x = self_signed_for(pub);
	der_len = i2d_X509(x, &der);
	assert_true(der_len > 0);
	assert_int_equal(ks_token_cert_put(tok, "t-p256", der, (size_t)der_len), 0);
	/* Replacing keeps exactly one. */
	assert_int_equal(ks_token_cert_put(tok, "t-p256", der, (size_t)der_len), 0);
	assert_int_equal(ks_token_cert_get(tok, "t-p256", &got, &got_len), 0);
	assert_int_equal(got_len, (size_t)der_len);
	assert_memory_equal(got, der, got_len);
	free(got);

	assert_int_equal(ks_token_list(tok, &keys, &n), 0);
	assert_int_equal(n, 5);
	for (size_t i = 1; i < n; i++)
		assert_true(strcmp(keys[i - 1].name, keys[i].name) < 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(keys[i].has_cert, strcmp(keys[i].name, "t-p256") == 0);
	free(keys);

	/* Delete removes private key, public key and certificate. */
	assert_int_equal(ks_token_delete(tok, "t-p256"), 0);
	EVP_PKEY_free(pub);
	assert_int_equal(ks_token_public_key(tok, "t-p256", &pub), -ENOENT);
	assert_null(pub);
	assert_int_equal(ks_token_cert_get(tok, "t-p256", &got, &got_len), -ENOENT);
	assert_int_equal(ks_token_delete(tok, "t-p256"), -ENOENT);
	/* The name is free again. */
	assert_int_equal(ks_token_generate(tok, "t-p256", KS_KEY_EC_P256, NULL), 0);
	OPENSSL_free(der);
	X509_free(x);
}

static void *signer_thread(void *arg)
{
	uint8_t md[32] = { 1 }, *sig = NULL;
	size_t sig_len = 0;
	int *failures = arg;

	for (int i = 0; i < 50; i++) {
		if (ks_token_sign_digest(tok, "t-p256", KS_SIG_ECDSA_SHA256, md, 32, &sig, &sig_len) != 0)
			__atomic_add_fetch(failures, 1, __ATOMIC_RELAXED);
		free(sig);
		sig = NULL;
	}
	return NULL;
}

static void test_concurrent_signing(void **state)
{
	pthread_t th[8];
	int failures = 0;

	(void)state;
	/* Eight threads on a pool of two sessions. */
	for (int i = 0; i < 8; i++)
		assert_int_equal(pthread_create(&th[i], NULL, signer_thread, &failures), 0);
	for (int i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(failures, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_token_selection),
		cmocka_unit_test(test_wrong_pin),
		cmocka_unit_test(test_open),
		cmocka_unit_test(test_key_types_and_algorithms),
		cmocka_unit_test(test_sign_argument_errors),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_certificates_and_list),
		cmocka_unit_test(test_concurrent_signing),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
