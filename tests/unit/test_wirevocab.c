/*
 * proto/wire (the operation, error and health names, the key-name rule,
 * the schema checks) and the lookups of proto/alg the provider uses. The
 * names are compared with proto/PROTOCOL.md's spelling, so a rename on
 * one side only fails here.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "proto/alg.h"
#include "proto/b64.h"
#include "proto/frame.h"
#include "proto/json.h"
#include "proto/wire.h"

/* Every operation name round-trips, and the names are PROTOCOL.md's. */
static void test_ops(void **state)
{
	static const char *const names[KS_OP_COUNT] = {
		"hello", "key.generate", "key.list", "key.public", "key.delete",
		"csr.create", "sign", "cert.put", "cert.get",
	};

	(void)state;
	for (int op = 0; op < KS_OP_COUNT; op++) {
		assert_string_equal(ks_op_name((enum ks_op)op), names[op]);
		assert_int_equal(ks_op_from_name(names[op]), op);
		assert_int_equal(ks_op_takes_key((enum ks_op)op), op != KS_OP_HELLO && op != KS_OP_KEY_LIST);
	}
	assert_null(ks_op_name(KS_OP_COUNT));
	assert_null(ks_op_name((enum ks_op)-1));
	assert_int_equal(ks_op_takes_key(KS_OP_COUNT), 0);
	assert_int_equal(ks_op_from_name("Sign"), -1);
	assert_int_equal(ks_op_from_name("key.*"), -1);
	assert_int_equal(ks_op_from_name(""), -1);
	assert_int_equal(ks_op_from_name(NULL), -1);
}

/* Every wire error name round-trips; the names are distinct and PROTOCOL.md's. */
static void test_errors(void **state)
{
	static const char *const documented[] = {
		"bad-request", "denied", "no-such-key", "exists", "unsupported",
		"token-unavailable", "audit-unavailable", "internal",
	};
	size_t n = 0;

	(void)state;
	assert_null(ks_wire_err_name(KS_WIRE_ERR_NONE));
	assert_null(ks_wire_err_name(KS_WIRE_ERR_COUNT));
	for (int e = KS_WIRE_ERR_NONE + 1; e < KS_WIRE_ERR_COUNT; e++, n++) {
		const char *name = ks_wire_err_name((enum ks_wire_err)e);
		int found = 0;

		assert_non_null(name);
		assert_int_equal(ks_wire_err_from_name(name), e);
		for (int f = KS_WIRE_ERR_NONE + 1; f < e; f++)
			assert_string_not_equal(ks_wire_err_name((enum ks_wire_err)f), name);
		for (size_t i = 0; i < sizeof(documented) / sizeof(documented[0]); i++)
			found |= strcmp(documented[i], name) == 0;
		if (!found)
			fail_msg("wire error %s is not in proto/PROTOCOL.md's list", name);
	}
	assert_int_equal(n, sizeof(documented) / sizeof(documented[0]));
	assert_int_equal(ks_wire_err_from_name("ok"), KS_WIRE_ERR_NONE);
	assert_int_equal(ks_wire_err_from_name("Denied"), KS_WIRE_ERR_NONE);
	assert_int_equal(ks_wire_err_from_name(NULL), KS_WIRE_ERR_NONE);
}

static void test_health(void **state)
{
	(void)state;
	assert_string_equal(ks_wire_health_name(KS_WIRE_HEALTH_OK), "ok");
	assert_string_equal(ks_wire_health_name(KS_WIRE_HEALTH_DEGRADED), "degraded");
	/* The unavailable state shares the error's name. */
	assert_string_equal(ks_wire_health_name(KS_WIRE_HEALTH_TOKEN_UNAVAILABLE),
			    ks_wire_err_name(KS_WIRE_TOKEN_UNAVAILABLE));
	for (int h = 0; h < KS_WIRE_HEALTH_COUNT; h++)
		assert_int_equal(ks_wire_health_from_name(ks_wire_health_name((enum ks_wire_health)h)), h);
	assert_null(ks_wire_health_name(KS_WIRE_HEALTH_COUNT));
	assert_int_equal(ks_wire_health_from_name("unknown"), -1);
	assert_int_equal(ks_wire_health_from_name(NULL), -1);
}

static void test_key_names(void **state)
{
	static const char *const good[] = {
		"a", "A", "0", "_", "web", "web.example.com", "a-b_c.d", "x.", "x-", "_x", "0-9",
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._",
	};
	static const char *const bad[] = {
		"", ".", "-", ".hidden", "-rf", "..", "../etc", "a/b", "a b", "a\tb", "a:b", "a*",
		"a\n", "caf\xc3\xa9", "a\\b", "a@b", "\xff",
	};
	char name[KS_KEY_NAME_MAX + 2];

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (!ks_key_name_valid(good[i]))
			fail_msg("refused %s", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ks_key_name_valid(bad[i]))
			fail_msg("accepted \"%s\"", bad[i]);
	assert_int_equal(ks_key_name_valid(NULL), 0);
	/* 64 characters, not 65. */
	memset(name, 'k', KS_KEY_NAME_MAX);
	name[KS_KEY_NAME_MAX] = '\0';
	assert_int_equal(KS_KEY_NAME_MAX, 64);
	assert_int_equal(ks_key_name_valid(name), 1);
	name[KS_KEY_NAME_MAX] = 'k';
	name[KS_KEY_NAME_MAX + 1] = '\0';
	assert_int_equal(ks_key_name_valid(name), 0);
}

/* A check failing gives its named error and errno; one passing stores the typed value. */
static void test_checks(void **state)
{
	const char *why = NULL, *s;
	enum ks_key_type type = KS_KEY_NONE;
	enum ks_sig_alg alg = KS_SIG_NONE;
	struct ks_wire_bytes b = { NULL, 0 };
	char *big = NULL;
	uint8_t raw[KS_SIGN_DATA_MAX + 1];

	(void)state;
	s = "web-1";
	assert_int_equal(ks_wire_check_key_name(&s, NULL, &why), 0);
	s = "../web";
	assert_int_equal(ks_wire_check_key_name(&s, NULL, &why), -EINVAL);
	assert_string_equal(why, "not a valid key name");

	s = "ec-p384";
	assert_int_equal(ks_wire_check_key_type(&s, &type, &why), 0);
	assert_int_equal(type, KS_KEY_EC_P384);
	s = "dsa-1024";
	assert_int_equal(ks_wire_check_key_type(&s, &type, &why), -EOPNOTSUPP);
	assert_string_equal(why, "unknown key type");

	s = "rsa-pss-sha512";
	assert_int_equal(ks_wire_check_sig_alg(&s, &alg, &why), 0);
	assert_int_equal(alg, KS_SIG_RSA_PSS_SHA512);
	s = "ecdsa-sha512";
	assert_int_equal(ks_wire_check_sig_alg(&s, &alg, &why), -EOPNOTSUPP);
	assert_string_equal(why, "unknown signature algorithm");

	/* Digest: canonical base64 of at most 64 bytes. */
	s = "AAECAw==";
	assert_int_equal(ks_wire_check_digest(&s, &b, &why), 0);
	assert_int_equal(b.len, 4);
	assert_int_equal(b.data[3], 3);
	s = "AAECAx==";            /* the bits '=' discards are not zero */
	assert_int_equal(ks_wire_check_digest(&s, &b, &why), -EINVAL);
	assert_string_equal(why, "must be base64 of at most 64 bytes");
	assert_null(b.data);
	memset(raw, 0x5a, sizeof(raw));
	assert_int_equal(ks_b64_encode(raw, 65, &big), 0);
	s = big;
	assert_int_equal(ks_wire_check_digest(&s, &b, &why), -EINVAL);
	free(big);
	assert_int_equal(ks_b64_encode(raw, 64, &big), 0);
	s = big;
	assert_int_equal(ks_wire_check_digest(&s, &b, &why), 0);
	assert_int_equal(b.len, 64);
	free(big);
	ks_wire_bytes_clear(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);

	/* Data: at most KS_SIGN_DATA_MAX bytes, which the message names. */
	assert_int_equal(ks_b64_encode(raw, KS_SIGN_DATA_MAX, &big), 0);
	s = big;
	assert_int_equal(ks_wire_check_data(&s, &b, &why), 0);
	assert_int_equal(b.len, KS_SIGN_DATA_MAX);
	free(big);
	assert_int_equal(ks_b64_encode(raw, KS_SIGN_DATA_MAX + 1, &big), 0);
	s = big;
	assert_int_equal(ks_wire_check_data(&s, &b, &why), -EINVAL);
	assert_null(b.data);
	free(big);
	{
		char want[64];

		snprintf(want, sizeof(want), "must be base64 of at most %d bytes", KS_SIGN_DATA_MAX);
		assert_string_equal(why, want);
	}
	ks_wire_bytes_clear(&b);
}

/* The checks in a schema table: a field's named error, as the dispatcher reports it. */
static void test_checks_in_table(void **state)
{
	struct req {
		const char *key, *alg;
		enum ks_sig_alg sig_alg;
	} r;
	static const struct ks_json_field fields[] = {
		{ "key", KS_JSON_STRING, offsetof(struct req, key), KS_JSON_REQUIRED, KS_KEY_NAME_MAX,
		  ks_wire_check_key_name, 0 },
		{ "alg", KS_JSON_STRING, offsetof(struct req, alg), KS_JSON_REQUIRED, KS_WIRE_NAME_MAX,
		  ks_wire_check_sig_alg, offsetof(struct req, sig_alg) },
		{ NULL, 0, 0, 0, 0 },
	};
	static const struct {
		const char *json;
		int err;
		const char *field, *why;
	} cases[] = {
		{ "{\"key\": \"k\", \"alg\": \"ecdsa-sha384\"}", 0, NULL, NULL },
		{ "{\"key\": \"-k\", \"alg\": \"ecdsa-sha384\"}", -EINVAL, "key", "not a valid key name" },
		{ "{\"key\": \"k\", \"alg\": \"md5\"}", -EOPNOTSUPP, "alg", "unknown signature algorithm" },
		{ "{\"key\": \"-k\", \"alg\": 1}", -EINVAL, "alg", "must be a string" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *why = NULL, *field = NULL;
		json_t *o = ks_json_parse((const uint8_t *)cases[i].json, strlen(cases[i].json), &why);

		assert_non_null(o);
		memset(&r, 0, sizeof(r));
		assert_int_equal(ks_json_dispatch(o, fields, &r, 0, &field, &why), cases[i].err);
		if (cases[i].err == 0) {
			assert_int_equal(r.sig_alg, KS_SIG_ECDSA_SHA384);
		} else {
			assert_string_equal(field, cases[i].field);
			assert_string_equal(why, cases[i].why);
		}
		json_decref(o);
	}
}

/* proto/alg's lookups for the provider: the algorithm for a family and digest, and DigestInfo. */
static void test_alg_find(void **state)
{
	(void)state;
	assert_int_equal(ks_sig_alg_find(KS_FAMILY_RSA, 0, 32), KS_SIG_RSA_PKCS1_SHA256);
	assert_int_equal(ks_sig_alg_find(KS_FAMILY_RSA, 0, 64), KS_SIG_RSA_PKCS1_SHA512);
	assert_int_equal(ks_sig_alg_find(KS_FAMILY_RSA, 1, 48), KS_SIG_RSA_PSS_SHA384);
	assert_int_equal(ks_sig_alg_find(KS_FAMILY_EC, 0, 48), KS_SIG_ECDSA_SHA384);
	assert_int_equal(ks_sig_alg_find(KS_FAMILY_EC, 0, 64), KS_SIG_NONE);
	assert_int_equal(ks_sig_alg_find(KS_FAMILY_EC, 1, 32), KS_SIG_NONE);
	assert_int_equal(ks_sig_alg_find(KS_FAMILY_RSA, 0, 20), KS_SIG_NONE);
	assert_int_equal(ks_sig_alg_find(KS_FAMILY_NONE, 0, 32), KS_SIG_NONE);
	/* Every algorithm is found again from its family, PSS flag and digest length. */
	for (int a = KS_SIG_NONE + 1; ks_sig_alg_name((enum ks_sig_alg)a) != NULL; a++)
		assert_int_equal(ks_sig_alg_find(ks_sig_alg_family((enum ks_sig_alg)a),
						 ks_sig_alg_is_pss((enum ks_sig_alg)a),
						 ks_sig_alg_digest_len((enum ks_sig_alg)a)), a);
}

/* The DigestInfo prefixes are what OpenSSL encodes for each hash (RFC 8017, 9.2). */
static void test_digest_info(void **state)
{
	size_t n = 0;

	(void)state;
	assert_null(ks_sig_alg_digest_info(KS_SIG_NONE, &n));
	for (int a = KS_SIG_NONE + 1; ks_sig_alg_name((enum ks_sig_alg)a) != NULL; a++) {
		const EVP_MD *md = EVP_get_digestbyname(ks_sig_alg_digest((enum ks_sig_alg)a));
		size_t dlen = ks_sig_alg_digest_len((enum ks_sig_alg)a);
		const uint8_t *prefix = ks_sig_alg_digest_info((enum ks_sig_alg)a, &n);
		uint8_t digest[64], *der = NULL;
		X509_SIG *sig = X509_SIG_new();
		X509_ALGOR *algor;
		ASN1_OCTET_STRING *os;
		int der_len;

		assert_non_null(md);
		assert_int_equal((size_t)EVP_MD_get_size(md), dlen);
		assert_non_null(prefix);
		memset(digest, 0xa5, sizeof(digest));
		X509_SIG_getm(sig, &algor, &os);
		assert_int_equal(X509_ALGOR_set0(algor, OBJ_nid2obj(EVP_MD_get_type(md)), V_ASN1_NULL, NULL), 1);
		assert_int_equal(ASN1_OCTET_STRING_set(os, digest, (int)dlen), 1);
		der_len = i2d_X509_SIG(sig, &der);
		assert_int_equal((size_t)der_len, n + dlen);
		assert_memory_equal(der, prefix, n);
		assert_memory_equal(der + n, digest, dlen);
		OPENSSL_free(der);
		X509_SIG_free(sig);
	}
}

/* Limits that other constants or texts depend on. */
static void test_limits(void **state)
{
	size_t longest = 0;

	(void)state;
	/* The base64 of the most data is no longer than the "data" string may be (a frame). */
	assert_true((KS_SIGN_DATA_MAX + 2) / 3 * 4 <= KS_FRAME_MAX);
	assert_true(KS_CERT_PEM_MAX < KS_FRAME_MAX);
	assert_true(KS_CSR_TEXT_MAX < KS_FRAME_MAX);
	/* KS_DIGEST_MAX is the longest digest of an algorithm. */
	for (int a = KS_SIG_NONE + 1; ks_sig_alg_name((enum ks_sig_alg)a) != NULL; a++)
		if (ks_sig_alg_digest_len((enum ks_sig_alg)a) > longest)
			longest = ks_sig_alg_digest_len((enum ks_sig_alg)a);
	assert_int_equal(longest, KS_DIGEST_MAX);
	assert_true(KS_MESSAGE_MAX > KS_QUOTE_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ops),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_health),
		cmocka_unit_test(test_key_names),
		cmocka_unit_test(test_checks),
		cmocka_unit_test(test_checks_in_table),
		cmocka_unit_test(test_alg_find),
		cmocka_unit_test(test_digest_info),
		cmocka_unit_test(test_limits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
