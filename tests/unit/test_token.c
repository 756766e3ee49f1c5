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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "pkcs11/token.h"
#include "proto/sigform.h"
#include "tests/common/softhsm.h"

static struct ks_test_token tt;
static struct ks_token *tok;

/*
 * A second, raw view of the same SoftHSM instance (one process, one module
 * state): it can close the token layer's sessions or log it out behind its
 * back, and count objects the layer should have created or destroyed.
 */
static CK_FUNCTION_LIST *raw;
static CK_SLOT_ID raw_slot;

static void raw_load(void)
{
	CK_SLOT_ID slots[16];
	CK_ULONG n = 16;
	CK_TOKEN_INFO ti;
	CK_RV rv;
	int found = 0;

	if (raw != NULL)
		return;
	raw = p11_kit_module_load(tt.module, P11_KIT_MODULE_UNMANAGED);
	assert_non_null(raw);
	rv = p11_kit_module_initialize(raw);
	assert_true(rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED);
	assert_int_equal(raw->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
	for (CK_ULONG i = 0; i < n; i++) {
		if (raw->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
		    memcmp(ti.label, "tokentest ", 10) == 0) {
			raw_slot = slots[i];
			found++;
		}
	}
	assert_int_equal(found, 1);
}

/* A fresh raw session: the layer's recovery closes all sessions of the slot, ours too. */
static CK_SESSION_HANDLE raw_session(void)
{
	CK_SESSION_HANDLE s;

	raw_load();
	assert_int_equal(raw->C_OpenSession(raw_slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
					    NULL, NULL, &s), CKR_OK);
	return s;
}

static CK_STATE raw_state(CK_SESSION_HANDLE s)
{
	CK_SESSION_INFO si;

	assert_int_equal(raw->C_GetSessionInfo(s, &si), CKR_OK);
	return si.state;
}

/* Objects of @cls with CKA_ID @id; needs a logged-in raw session to see private ones. */
static CK_ULONG raw_count(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, const uint8_t *id,
			  size_t id_len)
{
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_ID, (void *)(uintptr_t)id, id_len },
	};
	CK_OBJECT_HANDLE h[8];
	CK_ULONG n = 0;

	assert_int_equal(raw->C_FindObjectsInit(s, tmpl, 2), CKR_OK);
	assert_int_equal(raw->C_FindObjects(s, h, 8, &n), CKR_OK);
	assert_int_equal(raw->C_FindObjectsFinal(s), CKR_OK);
	return n;
}

static CK_ULONG raw_count_label(CK_SESSION_HANDLE s, const char *label)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)(uintptr_t)label, strlen(label) },
	};
	CK_OBJECT_HANDLE h[8];
	CK_ULONG n = 0;

	assert_int_equal(raw->C_FindObjectsInit(s, tmpl, 2), CKR_OK);
	assert_int_equal(raw->C_FindObjects(s, h, 8, &n), CKR_OK);
	assert_int_equal(raw->C_FindObjectsFinal(s), CKR_OK);
	return n;
}

static int sign_p256(const char *name)
{
	uint8_t md[32] = { 9 }, *sig = NULL;
	size_t sig_len = 0;
	int r;

	r = ks_token_sign_digest(tok, name, KS_SIG_ECDSA_SHA256, md, sizeof(md), &sig, &sig_len);
	if (r == 0)
		assert_true(sig_len > 0);
	free(sig);
	return r;
}

static void base_config(struct ks_token_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->module_path = tt.module;
	cfg->token_label = tt.label;
	cfg->pin = tt.pin;
	cfg->pin_len = tt.pin_len;
	/* A pool of two that does not grow: the recovery tests share it among more threads. */
	cfg->sessions = 2;
	cfg->max_sessions = 2;
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
	if (raw != NULL)
		p11_kit_module_release(raw);
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
		/* 16 random bytes, "ksp1:" and every purpose (ks_token_generate()'s). */
		assert_int_equal(info.id_len, KS_KEY_ID_LEN + strlen("ksp1:csr,tls,http-signature,sign"));
		assert_int_equal(info.purposes, KS_PURPOSE_ALL);
		assert_int_equal(info.purposes_legacy, 0);
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
	assert_int_equal(ks_token_generate(tok, ".x", KS_KEY_EC_P256, NULL), -EINVAL);
	assert_int_equal(ks_token_generate(tok, long_name, KS_KEY_NONE, NULL), -EINVAL);
	long_name[KS_KEY_NAME_MAX] = 'a';
	assert_int_equal(ks_token_generate(tok, long_name, KS_KEY_EC_P256, NULL), -EINVAL);
}

static void test_unknown_and_invalid_names(void **state)
{
	struct ks_key_info info;
	EVP_PKEY *pub = NULL;
	uint8_t *der = NULL;
	size_t der_len = 0;
	static const uint8_t junk[] = { 0x30, 0x03, 0x02, 0x01, 0x01 };

	(void)state;
	assert_int_equal(ks_token_key_info(tok, "nope", &info), -ENOENT);
	assert_int_equal(ks_token_public_key(tok, "nope", &pub), -ENOENT);
	assert_null(pub);
	assert_int_equal(ks_token_delete(tok, "nope"), -ENOENT);
	assert_int_equal(ks_token_cert_get(tok, "nope", &der, &der_len), -ENOENT);
	assert_int_equal(ks_token_cert_put(tok, "t-p256", junk, sizeof(junk)), -EINVAL);
	assert_int_equal(ks_token_key_info(tok, "../etc", &info), -EINVAL);
	assert_int_equal(ks_token_public_key(tok, "a b", &pub), -EINVAL);
	assert_int_equal(ks_token_delete(tok, "-rf"), -EINVAL);
	assert_int_equal(ks_token_cert_get(tok, "", &der, &der_len), -EINVAL);
	assert_null(der);
}

static void test_ckr_names(void **state)
{
	(void)state;
	assert_string_equal(ks_ckr_name(CKR_OK), "CKR_OK");
	assert_string_equal(ks_ckr_name(CKR_DEVICE_REMOVED), "CKR_DEVICE_REMOVED");
	assert_string_equal(ks_ckr_name(CKR_PIN_INCORRECT), "CKR_PIN_INCORRECT");
	assert_string_equal(ks_ckr_name(CKR_ATTRIBUTE_SENSITIVE), "CKR_ATTRIBUTE_SENSITIVE");
	assert_string_equal(ks_ckr_name(CKR_USER_NOT_LOGGED_IN), "CKR_USER_NOT_LOGGED_IN");
	assert_string_equal(ks_ckr_name(0x8000abcdUL), "CKR_0x8000abcd");
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
	for (size_t i = 0; i < n; i++) {
		struct ks_key_info one;

		assert_int_equal(keys[i].has_cert, strcmp(keys[i].name, "t-p256") == 0);
		assert_int_equal(ks_token_key_info(tok, keys[i].name, &one), 0);
		assert_int_equal(keys[i].type, one.type);
		assert_int_not_equal(keys[i].type, KS_KEY_NONE);
		assert_int_equal(keys[i].id_len, one.id_len);
		assert_memory_equal(keys[i].id, one.id, one.id_len);
	}
	free(keys);

	/* A certificate with bytes after it is not one certificate. */
	{
		uint8_t *longer = malloc((size_t)der_len + 1);

		assert_non_null(longer);
		memcpy(longer, der, (size_t)der_len);
		longer[der_len] = 0;
		assert_int_equal(ks_token_cert_put(tok, "t-p256", longer, (size_t)der_len + 1), -EINVAL);
		free(longer);
	}

	/* Delete removes private key, public key and certificate: counted through the raw API. */
	{
		struct ks_key_info info;
		CK_SESSION_HANDLE s = raw_session();
		CK_RV rv = raw->C_Login(s, CKU_USER, (CK_UTF8CHAR *)tt.pin, tt.pin_len);

		assert_true(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN);
		assert_int_equal(ks_token_key_info(tok, "t-p256", &info), 0);
		assert_int_equal(raw_count(s, CKO_PRIVATE_KEY, info.id, info.id_len), 1);
		assert_int_equal(raw_count(s, CKO_PUBLIC_KEY, info.id, info.id_len), 1);
		assert_int_equal(raw_count(s, CKO_CERTIFICATE, info.id, info.id_len), 1);
		assert_int_equal(ks_token_delete(tok, "t-p256"), 0);
		assert_int_equal(raw_count(s, CKO_PRIVATE_KEY, info.id, info.id_len), 0);
		assert_int_equal(raw_count(s, CKO_PUBLIC_KEY, info.id, info.id_len), 0);
		assert_int_equal(raw_count(s, CKO_CERTIFICATE, info.id, info.id_len), 0);
		raw->C_CloseSession(s);
	}
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

static void test_recover_closed_sessions(void **state)
{
	struct ks_key_info *keys = NULL;
	size_t n = 0;

	(void)state;
	raw_load();
	assert_int_equal(sign_p256("t-p256"), 0);
	/* Every pooled session is gone: only reopen + login + find by CKA_ID + retry works. */
	assert_int_equal(raw->C_CloseAllSessions(raw_slot), CKR_OK);
	assert_int_equal(sign_p256("t-p256"), 0);
	assert_int_equal(raw->C_CloseAllSessions(raw_slot), CKR_OK);
	assert_int_equal(ks_token_list(tok, &keys, &n), 0);
	assert_int_equal(n, 5);
	free(keys);
	assert_int_equal(sign_p256("t-p256"), 0);
}

static void test_recover_logout(void **state)
{
	CK_SESSION_HANDLE s;
	struct ks_key_info *keys = NULL;
	size_t n = 0;
	CK_RV rv;

	(void)state;
	/*
	 * Logged out, private keys are not an error but invisible: a sign must
	 * not answer -ENOENT, a list must not come back empty, and generate must
	 * not create a second key under a taken name.
	 */
	s = raw_session();
	rv = raw->C_Login(s, CKU_USER, (CK_UTF8CHAR *)tt.pin, tt.pin_len);
	assert_true(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN);
	assert_int_equal(raw->C_Logout(s), CKR_OK);
	assert_int_equal(raw_state(s), CKS_RW_PUBLIC_SESSION);
	assert_int_equal(sign_p256("t-p256"), 0);

	s = raw_session();
	assert_int_equal(raw_state(s), CKS_RW_USER_FUNCTIONS);
	assert_int_equal(raw->C_Logout(s), CKR_OK);
	assert_int_equal(ks_token_list(tok, &keys, &n), 0);
	assert_int_equal(n, 5);
	free(keys);

	s = raw_session();
	assert_int_equal(raw->C_Logout(s), CKR_OK);
	assert_int_equal(ks_token_generate(tok, "t-p256", KS_KEY_EC_P256, NULL), -EEXIST);
	s = raw_session();
	assert_int_equal(raw_state(s), CKS_RW_USER_FUNCTIONS);
	assert_int_equal(raw_count_label(s, "t-p256"), 1);
	raw->C_CloseSession(s);
}

static int concurrent_failures;
static pthread_barrier_t lost_barrier;

static void *lost_signer(void *arg)
{
	(void)arg;
	for (int round = 0; round < 2; round++) {
		/* Wait while the main thread breaks the sessions, then all hit the loss at once. */
		pthread_barrier_wait(&lost_barrier);
		pthread_barrier_wait(&lost_barrier);
		for (int i = 0; i < 10; i++)
			if (sign_p256("t-p256") != 0)
				__atomic_add_fetch(&concurrent_failures, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void test_recover_under_load(void **state)
{
	pthread_t th[6];
	CK_SESSION_HANDLE s;
	CK_RV rv;

	(void)state;
	/*
	 * Six threads on two sessions all notice one lost login (then one lost
	 * set of sessions): one reopen serves them all, nobody fails. The loss
	 * is made while no call is in flight; SoftHSM answers CKR_GENERAL_ERROR
	 * to calls racing a C_Logout, which is its problem, not ours.
	 */
	raw_load();
	concurrent_failures = 0;
	assert_int_equal(pthread_barrier_init(&lost_barrier, NULL, 7), 0);
	for (int i = 0; i < 6; i++)
		assert_int_equal(pthread_create(&th[i], NULL, lost_signer, NULL), 0);
	pthread_barrier_wait(&lost_barrier);
	s = raw_session();
	rv = raw->C_Login(s, CKU_USER, (CK_UTF8CHAR *)tt.pin, tt.pin_len);
	assert_true(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN);
	assert_int_equal(raw->C_Logout(s), CKR_OK);
	pthread_barrier_wait(&lost_barrier);
	pthread_barrier_wait(&lost_barrier);
	assert_int_equal(raw->C_CloseAllSessions(raw_slot), CKR_OK);
	pthread_barrier_wait(&lost_barrier);
	for (int i = 0; i < 6; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&lost_barrier);
	assert_int_equal(concurrent_failures, 0);
	assert_int_equal(sign_p256("t-p256"), 0);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* At most: the default pool's test runs one signer per session, the small pool's eight. */
#define RACE_SIGNERS 16
#define RACE_ROUNDS 60
#define RACE_SIGS_KEPT 64

static const uint8_t race_md[32] = { 0x5a, 1, 2, 3 };

struct race_signer {
	int stop_seen;
	int ok, enoent, bad;
	int bad_errors[8];
	uint8_t *sigs[RACE_SIGS_KEPT];
	size_t sig_lens[RACE_SIGS_KEPT];
	int nsigs;
};

static int race_stop;
static struct ks_token *race_tok;

static void *race_signer_thread(void *arg)
{
	struct race_signer *rs = arg;
	uint8_t *sig;
	size_t sig_len;
	int r;

	while (!__atomic_load_n(&race_stop, __ATOMIC_ACQUIRE)) {
		sig = NULL;
		r = ks_token_sign_digest(race_tok, "race-key", KS_SIG_ECDSA_SHA256, race_md,
					 sizeof(race_md), &sig, &sig_len);
		if (r == 0) {
			/* Every 16th kept, the oldest replaced: a sample of every generation. */
			if (rs->ok++ % 16 == 0) {
				int i = (rs->ok / 16) % RACE_SIGS_KEPT;

				free(rs->sigs[i]);
				rs->sigs[i] = sig;
				rs->sig_lens[i] = sig_len;
				if (rs->nsigs < RACE_SIGS_KEPT)
					rs->nsigs++;
				sig = NULL;
			}
		} else if (r == -ENOENT) {
			rs->enoent++;
		} else {
			if (rs->bad < 8)
				rs->bad_errors[rs->bad] = r;
			rs->bad++;
		}
		free(sig);
	}
	return NULL;
}

#define RACE_READERS 4
#define RACE_PUBS_KEPT 64

struct race_reader {
	int ok, enoent, bad;
	int bad_errors[8];
	EVP_PKEY *pubs[RACE_PUBS_KEPT];
	int npubs;
};

/* key.public on the name while it is deleted and generated again. */
static void *race_reader_thread(void *arg)
{
	struct race_reader *rr = arg;
	EVP_PKEY *pub;
	int r;

	while (!__atomic_load_n(&race_stop, __ATOMIC_ACQUIRE)) {
		pub = NULL;
		r = ks_token_public_key(race_tok, "race-key", &pub);
		if (r == 0) {
			if (rr->ok++ % 16 == 0) {
				int i = (rr->ok / 16) % RACE_PUBS_KEPT;

				EVP_PKEY_free(rr->pubs[i]);
				rr->pubs[i] = pub;
				if (rr->npubs < RACE_PUBS_KEPT)
					rr->npubs++;
				pub = NULL;
			}
		} else if (r == -ENOENT) {
			rr->enoent++;
		} else {
			if (rr->bad < 8)
				rr->bad_errors[rr->bad] = r;
			rr->bad++;
		}
		EVP_PKEY_free(pub);
	}
	return NULL;
}

#define RACE_LISTERS 2

struct race_lister {
	int ok, bad;
	int bad_errors[8];
};

/* key.list while the key is deleted and generated again: a list with or without it, never an error. */
static void *race_lister_thread(void *arg)
{
	struct race_lister *rl = arg;
	struct ks_key_info *keys;
	size_t n;
	int r;

	while (!__atomic_load_n(&race_stop, __ATOMIC_ACQUIRE)) {
		keys = NULL;
		n = 0;
		r = ks_token_list(race_tok, &keys, &n);
		if (r == 0) {
			rl->ok++;
		} else {
			if (rl->bad < 8)
				rl->bad_errors[rl->bad] = r;
			rl->bad++;
		}
		free(keys);
	}
	return NULL;
}

static int verifies(EVP_PKEY *pub, const uint8_t *sig, size_t sig_len)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pub, NULL);
	int ok;

	assert_non_null(ctx);
	ok = EVP_PKEY_verify_init(ctx) == 1 &&
	     EVP_PKEY_verify(ctx, sig, sig_len, race_md, sizeof(race_md)) == 1;
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

/*
 * @signers signers, RACE_READERS readers of its public key and
 * RACE_LISTERS listers of the token's keys on one name of token @t while
 * the key is deleted and generated again @rounds times: every answer is a
 * signature by one of the generations, that public key, -ENOENT or a key
 * list, never -EOPNOTSUPP, -EIO or -EINVAL; every generate and delete
 * succeeds.
 */
static void sign_during_delete_and_regenerate(struct ks_token *t, int signers, int rounds)
{
	static struct race_signer rs[RACE_SIGNERS];
	static struct race_reader rr[RACE_READERS];
	static struct race_lister rl[RACE_LISTERS];
	EVP_PKEY *pubs[RACE_ROUNDS + 1];
	pthread_t th[RACE_SIGNERS], rth[RACE_READERS], lth[RACE_LISTERS];
	int enoent = 0, ok = 0, lifecycle_errors = 0, r;

	memset(pubs, 0, sizeof(pubs));
	memset(rs, 0, sizeof(rs));
	memset(rr, 0, sizeof(rr));
	memset(rl, 0, sizeof(rl));
	race_tok = t;
	/* Left by the other variant if it failed: each variant stands on its own. */
	(void)ks_token_delete(t, "race-key");
	assert_int_equal(ks_token_generate(t, "race-key", KS_KEY_EC_P256, &pubs[0]), 0);
	race_stop = 0;
	for (int i = 0; i < signers; i++)
		assert_int_equal(pthread_create(&th[i], NULL, race_signer_thread, &rs[i]), 0);
	for (int i = 0; i < RACE_READERS; i++)
		assert_int_equal(pthread_create(&rth[i], NULL, race_reader_thread, &rr[i]), 0);
	for (int i = 0; i < RACE_LISTERS; i++)
		assert_int_equal(pthread_create(&lth[i], NULL, race_lister_thread, &rl[i]), 0);
	for (int round = 1; round <= rounds; round++) {
		usleep(20 * 1000);
		if ((r = ks_token_delete(t, "race-key")) != 0) {
			fprintf(stderr, "round %d: delete: %d\n", round, r);
			lifecycle_errors++;
		}
		usleep(5 * 1000);
		if ((r = ks_token_generate(t, "race-key", KS_KEY_EC_P256, &pubs[round])) != 0) {
			fprintf(stderr, "round %d: generate: %d\n", round, r);
			lifecycle_errors++;
		}
	}
	__atomic_store_n(&race_stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < signers; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < RACE_READERS; i++)
		pthread_join(rth[i], NULL);
	for (int i = 0; i < RACE_LISTERS; i++)
		pthread_join(lth[i], NULL);
	for (int i = 0; i < signers; i++) {
		for (int j = 0; j < rs[i].bad && j < 8; j++)
			fprintf(stderr, "signer %d: error %d\n", i, rs[i].bad_errors[j]);
		ok += rs[i].ok;
		enoent += rs[i].enoent;
		for (int j = 0; j < rs[i].nsigs; j++) {
			int good = 0;

			for (int g = 0; g <= rounds && !good; g++)
				good = pubs[g] != NULL &&
				       verifies(pubs[g], rs[i].sigs[j], rs[i].sig_lens[j]);
			assert_true(good);
			free(rs[i].sigs[j]);
		}
	}
	for (int i = 0; i < RACE_READERS; i++) {
		for (int j = 0; j < rr[i].bad && j < 8; j++)
			fprintf(stderr, "reader %d: error %d\n", i, rr[i].bad_errors[j]);
		ok += rr[i].ok;
		enoent += rr[i].enoent;
		for (int j = 0; j < rr[i].npubs; j++) {
			int good = 0;

			for (int g = 0; g <= rounds && !good; g++)
				good = pubs[g] != NULL && EVP_PKEY_eq(pubs[g], rr[i].pubs[j]) == 1;
			assert_true(good);
			EVP_PKEY_free(rr[i].pubs[j]);
		}
	}
	fprintf(stderr, "race: %d signatures and public keys, %d no-such-key, %d generate/delete "
		"failures\n", ok, enoent, lifecycle_errors);
	for (int i = 0; i < signers; i++)
		assert_int_equal(rs[i].bad, 0);
	for (int i = 0; i < RACE_READERS; i++)
		assert_int_equal(rr[i].bad, 0);
	for (int i = 0; i < RACE_LISTERS; i++) {
		for (int j = 0; j < rl[i].bad && j < 8; j++)
			fprintf(stderr, "lister %d: error %d\n", i, rl[i].bad_errors[j]);
		assert_int_equal(rl[i].bad, 0);
		assert_true(rl[i].ok > 0);
	}
	assert_int_equal(lifecycle_errors, 0);
	assert_true(ok > 0);
	for (int g = 0; g <= rounds; g++)
		EVP_PKEY_free(pubs[g]);
	assert_int_equal(ks_token_delete(t, "race-key"), 0);
}

/*
 * The pool keysvcd has by default (16 sessions, growing), a signer on each:
 * SoftHSM then often destroys the key between a signer's search and its
 * read of the key's attributes, and answers that read CKR_GENERAL_ERROR or
 * CKR_ATTRIBUTE_VALUE_INVALID.
 */
static void test_sign_during_delete_and_regenerate(void **state)
{
	struct ks_token_config cfg;
	struct ks_token *t = NULL;

	(void)state;
	base_config(&cfg);
	cfg.sessions = 0;
	cfg.max_sessions = 0;
	assert_int_equal(ks_token_open(&cfg, &t), 0);
	sign_during_delete_and_regenerate(t, 16, RACE_ROUNDS);
	assert_int_equal(ks_token_close(t), 0);
}

/* Two sessions for eight signers, the deleter and the generator: they wait for each other. */
static void test_sign_during_delete_and_regenerate_small_pool(void **state)
{
	(void)state;
	sign_during_delete_and_regenerate(tok, 8, 25);
}

/*
 * The real SoftHSM token directory moved away (as by a restore, or an
 * unmounted volume) and back after 12 s: a key known to exist is never
 * answered -ENOENT meanwhile, health is not ok, and signing works again
 * within 10 s of the directory's return, without reopening anything.
 */
static void test_token_directory_away_and_back(void **state)
{
	char dir[PATH_MAX + 16], away[PATH_MAX + 32];
	struct ks_token_info info;
	int64_t start;
	int r, unavailable = 0, not_ok = 0;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/tokens", tt.dir);
	snprintf(away, sizeof(away), "%s/tokens.away", tt.dir);
	assert_int_equal(ks_token_generate(tok, "moved-key", KS_KEY_EC_P256, NULL), 0);
	assert_int_equal(sign_p256("moved-key"), 0);
	assert_int_equal(rename(dir, away), 0);
	start = now_ms();
	while (now_ms() - start < 12000) {
		r = sign_p256("moved-key");
		assert_int_not_equal(r, -ENOENT);
		unavailable += r == -ENODEV;
		assert_int_equal(ks_token_get_info(tok, &info), 0);
		not_ok += info.health != KS_HEALTH_OK;
		usleep(200 * 1000);
	}
	assert_true(unavailable > 0);
	assert_true(not_ok > 0);
	assert_int_equal(ks_token_get_info(tok, &info), 0);
	assert_int_equal(info.health, KS_HEALTH_UNAVAILABLE);
	assert_int_equal(rename(away, dir), 0);
	start = now_ms();
	while ((r = sign_p256("moved-key")) != 0 && now_ms() - start < 10000) {
		assert_int_not_equal(r, -ENOENT);
		usleep(100 * 1000);
	}
	fprintf(stderr, "signing again %lld ms after the directory came back\n",
		(long long)(now_ms() - start));
	assert_int_equal(r, 0);
	assert_int_equal(ks_token_get_info(tok, &info), 0);
	assert_int_equal(info.health, KS_HEALTH_OK);
}

/* Runs last: it leaves the shared handle refusing everything. */
static void test_pin_rejected_later_is_final(void **state)
{
	static char new_pin[] = "changed-pin-1234";
	struct ks_token_info info;
	struct ks_key_info *keys = NULL;
	struct ks_key_info one;
	CK_SESSION_HANDLE s;
	size_t n = 0;
	CK_RV rv;

	(void)state;
	assert_int_equal(sign_p256("t-p256"), 0);
	/* Someone changes the user PIN and the login is lost: the re-login is refused. */
	s = raw_session();
	rv = raw->C_Login(s, CKU_USER, (CK_UTF8CHAR *)tt.pin, tt.pin_len);
	assert_true(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN);
	assert_int_equal(raw->C_SetPIN(s, (CK_UTF8CHAR *)tt.pin, tt.pin_len,
				       (CK_UTF8CHAR *)new_pin, strlen(new_pin)), CKR_OK);
	assert_int_equal(raw->C_Logout(s), CKR_OK);
	assert_int_equal(sign_p256("t-p256"), -EKEYREJECTED);
	assert_int_equal(ks_token_get_info(tok, &info), 0);
	assert_int_equal(info.up, 0);
	assert_int_equal(info.health, KS_HEALTH_UNAVAILABLE);
	assert_non_null(strstr(info.health_reason, "rejected the PIN"));
	assert_string_equal(info.label, "tokentest");

	/*
	 * Put the old PIN back. Were the layer to log in again it would now
	 * succeed: it must not, so calls keep failing and nobody is logged in.
	 */
	s = raw_session();
	assert_int_equal(raw->C_Login(s, CKU_USER, (CK_UTF8CHAR *)new_pin, strlen(new_pin)), CKR_OK);
	assert_int_equal(raw->C_SetPIN(s, (CK_UTF8CHAR *)new_pin, strlen(new_pin),
				       (CK_UTF8CHAR *)tt.pin, tt.pin_len), CKR_OK);
	assert_int_equal(raw->C_Logout(s), CKR_OK);
	assert_int_equal(sign_p256("t-p256"), -EKEYREJECTED);
	assert_int_equal(ks_token_key_info(tok, "t-p256", &one), -EKEYREJECTED);
	assert_int_equal(ks_token_list(tok, &keys, &n), -EKEYREJECTED);
	assert_int_equal(ks_token_generate(tok, "t-new", KS_KEY_EC_P256, NULL), -EKEYREJECTED);
	assert_int_equal(raw_state(s), CKS_RW_PUBLIC_SESSION);
	raw->C_CloseSession(s);
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
		cmocka_unit_test(test_unknown_and_invalid_names),
		cmocka_unit_test(test_ckr_names),
		cmocka_unit_test(test_recover_closed_sessions),
		cmocka_unit_test(test_recover_logout),
		cmocka_unit_test(test_recover_under_load),
		cmocka_unit_test(test_sign_during_delete_and_regenerate),
		cmocka_unit_test(test_sign_during_delete_and_regenerate_small_pool),
		cmocka_unit_test(test_token_directory_away_and_back),
		cmocka_unit_test(test_pin_rejected_later_is_final),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
