/*
 * proto/sigform: the purpose vocabulary (names, lists, sets, the schema
 * check) and the forms of signature inputs each purpose allows. The TLS
 * inputs are built from their RFC structure here, and also captured from
 * real in-memory OpenSSL handshakes (TLS 1.3 server and client
 * CertificateVerify, TLS 1.2 ECDHE and DHE ServerKeyExchange, TLS 1.2
 * client CertificateVerify) whose signatures are verified over the
 * reconstructed input, so the reconstruction is what OpenSSL signed.
 * The forgeries of issue 21 (a CertificationRequestInfo, a
 * TBSCertificate, arbitrary text, a TLS 1.3 content with a wrong context
 * string) are refused.
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
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "proto/json.h"
#include "proto/sigform.h"
#include "proto/wire.h"

/* ---- vocabulary ----------------------------------------------------------- */

static void test_names(void **state)
{
	static const struct {
		unsigned bit;
		const char *name;
	} want[] = {
		{ KS_PURPOSE_CSR, "csr" },
		{ KS_PURPOSE_TLS, "tls" },
		{ KS_PURPOSE_HTTP_SIGNATURE, "http-signature" },
		{ KS_PURPOSE_SIGN, "sign" },
	};

	(void)state;
	for (size_t i = 0; i < 4; i++) {
		assert_string_equal(ks_purpose_name(want[i].bit), want[i].name);
		assert_int_equal(ks_purpose_from_name(want[i].name), want[i].bit);
	}
	assert_null(ks_purpose_name(0));
	assert_null(ks_purpose_name(KS_PURPOSE_CSR | KS_PURPOSE_TLS));
	assert_null(ks_purpose_name(1u << 4));
	assert_int_equal(ks_purpose_from_name("TLS"), 0);
	assert_int_equal(ks_purpose_from_name("tls "), 0);
	assert_int_equal(ks_purpose_from_name(""), 0);
	assert_int_equal(ks_purpose_from_name(NULL), 0);
	assert_int_equal(KS_PURPOSE_DEFAULT, KS_PURPOSE_CSR | KS_PURPOSE_TLS);
	assert_true(ks_purposes_valid(KS_PURPOSE_ALL));
	assert_false(ks_purposes_valid(0));
	assert_false(ks_purposes_valid(KS_PURPOSE_ALL | 1u << 4));
}

static void test_parse_format(void **state)
{
	char buf[KS_PURPOSES_TEXT_MAX];
	const char *why = NULL;
	unsigned set = 0;

	(void)state;
	assert_int_equal(ks_purposes_parse("csr,tls", &set, &why), 0);
	assert_int_equal(set, KS_PURPOSE_CSR | KS_PURPOSE_TLS);
	assert_int_equal(ks_purposes_parse("sign,http-signature,tls,csr", &set, &why), 0);
	assert_int_equal(set, KS_PURPOSE_ALL);
	assert_int_equal(ks_purposes_format(set, buf, sizeof(buf)), 27);
	assert_string_equal(buf, "csr,tls,http-signature,sign");
	assert_int_equal(ks_purposes_parse("http-signature", &set, &why), 0);
	assert_int_equal(set, KS_PURPOSE_HTTP_SIGNATURE);
	assert_int_equal(ks_purposes_format(set, buf, sizeof(buf)), 14);
	assert_string_equal(buf, "http-signature");

	assert_int_equal(ks_purposes_parse("", &set, &why), -EINVAL);
	assert_string_equal(why, "purposes must not be empty");
	assert_int_equal(ks_purposes_parse("tls,,csr", &set, &why), -EINVAL);
	assert_string_equal(why, "empty entry in the purpose list");
	assert_int_equal(ks_purposes_parse("tls,", &set, &why), -EINVAL);
	assert_int_equal(ks_purposes_parse(",tls", &set, &why), -EINVAL);
	assert_int_equal(ks_purposes_parse("tls,tls", &set, &why), -EINVAL);
	assert_string_equal(why, "duplicate purpose");
	assert_int_equal(ks_purposes_parse("tls,csr,sign,http-signature,tls", &set, &why), -EINVAL);
	assert_string_equal(why, "duplicate purpose");
	assert_int_equal(ks_purposes_parse("tls, csr", &set, &why), -EOPNOTSUPP);
	assert_string_equal(why, "unknown purpose (csr, tls, http-signature, sign)");
	assert_int_equal(ks_purposes_parse("all", &set, &why), -EOPNOTSUPP);
	assert_int_equal(ks_purposes_parse("csr,tls,http-signature,sign,csr,tls,http-signature,sign,x",
					   &set, &why), -EINVAL);
	assert_string_equal(why, "duplicate purpose");
	assert_int_equal(ks_purposes_parse("http-signature-http-signature-http-signature-http-signature-x",
					   &set, &why), -EOPNOTSUPP);

	assert_int_equal(ks_purposes_format(0, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(ks_purposes_format(1u << 7, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(ks_purposes_format(KS_PURPOSE_CSR | KS_PURPOSE_TLS, buf, 7), -ENOSPC);
	assert_int_equal(ks_purposes_format(KS_PURPOSE_CSR | KS_PURPOSE_TLS, buf, 8), 7);
	assert_string_equal(buf, "csr,tls");
}

/* The schema check over a request's JSON array, as key.generate reads "purposes". */
static void test_schema_check(void **state)
{
	struct target {
		struct ks_strv names;
		unsigned set;
	};
	static const struct ks_json_field table[] = {
		{ "purposes", KS_JSON_STRV, offsetof(struct target, names), 0, KS_PURPOSES_MAX + 1,
		  ks_purposes_check_strv, offsetof(struct target, set) },
		{ NULL, 0, 0, 0, 0, NULL, 0 },
	};
	static const struct {
		const char *json;
		int r;
		unsigned set;
		const char *why;
	} cases[] = {
		{ "{\"purposes\":[\"csr\",\"tls\"]}", 0, KS_PURPOSE_CSR | KS_PURPOSE_TLS, NULL },
		{ "{\"purposes\":[\"sign\"]}", 0, KS_PURPOSE_SIGN, NULL },
		{ "{\"purposes\":[]}", -EINVAL, 0, "purposes must not be empty" },
		{ "{\"purposes\":[\"tls\",\"tls\"]}", -EINVAL, 0, "duplicate purpose" },
		{ "{\"purposes\":[\"csr\",\"tls\",\"sign\",\"http-signature\",\"csr\"]}", -EINVAL, 0,
		  "duplicate purpose" },
		{ "{\"purposes\":[\"decrypt\"]}", -EOPNOTSUPP, 0,
		  "unknown purpose (csr, tls, http-signature, sign)" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct target t;
		const char *field = NULL, *why = NULL;
		json_t *o = json_loads(cases[i].json, 0, NULL);
		int r;

		assert_non_null(o);
		memset(&t, 0, sizeof(t));
		r = ks_json_dispatch(o, table, &t, 0, &field, &why);
		if (r != cases[i].r)
			fail_msg("%s: %d, expected %d (%s)", cases[i].json, r, cases[i].r, why ? why : "");
		if (r == 0)
			assert_int_equal(t.set, cases[i].set);
		else
			assert_string_equal(why, cases[i].why);
		json_decref(o);
	}
}

/* ---- TLS inputs from their RFC structure --------------------------------- */

static size_t tls13_cv(uint8_t *out, const char *context, size_t hash_len)
{
	size_t n = 0;

	memset(out, 0x20, 64);
	n = 64;
	memcpy(out + n, context, strlen(context));
	n += strlen(context);
	out[n++] = 0;
	for (size_t i = 0; i < hash_len; i++)
		out[n++] = (uint8_t)(0xa0 + i);
	return n;
}

static void expect(unsigned purpose, const uint8_t *m, size_t len, int want, const char *why_part,
		   const char *what)
{
	const char *why = NULL;
	int r = ks_sigform_check(purpose, m, len, &why);

	if (r != want)
		fail_msg("%s: %d (%s), expected %d", what, r, why ? why : "-", want);
	if (why_part != NULL && (why == NULL || strstr(why, why_part) == NULL))
		fail_msg("%s: message \"%s\" does not say \"%s\"", what, why ? why : "(none)", why_part);
}

static void test_tls13_structure(void **state)
{
	uint8_t m[256];
	size_t n;

	(void)state;
	n = tls13_cv(m, "TLS 1.3, server CertificateVerify", 32);
	expect(KS_PURPOSE_TLS, m, n, 0, NULL, "server, SHA-256");
	n = tls13_cv(m, "TLS 1.3, client CertificateVerify", 48);
	expect(KS_PURPOSE_TLS, m, n, 0, NULL, "client, SHA-384");
	/* The other purposes do not take it. */
	expect(KS_PURPOSE_HTTP_SIGNATURE, m, n, -EPERM, NULL, "as http-signature");
	expect(KS_PURPOSE_CSR, m, n, -EPERM, "csr.create", "as csr");
	expect(KS_PURPOSE_SIGN, m, n, 0, NULL, "as sign");

	n = tls13_cv(m, "TLS 1.3, server Certificateverify", 32);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "context string", "wrong context case");
	n = tls13_cv(m, "TLS 1.2, server CertificateVerify", 32);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "context string", "wrong context version");
	n = tls13_cv(m, "TLS 1.3, server CertificateVerif", 33);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "context string", "context cut short");
	n = tls13_cv(m, "TLS 1.3, server CertificateVerify", 32);
	m[64 + 33] = 0x01;
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "context string", "no NUL after the context");
	n = tls13_cv(m, "TLS 1.3, server CertificateVerify", 64);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "32 or 48", "SHA-512 sized hash");
	n = tls13_cv(m, "TLS 1.3, server CertificateVerify", 20);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "32 or 48", "SHA-1 sized hash");
	n = tls13_cv(m, "TLS 1.3, server CertificateVerify", 33);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "32 or 48", "a trailing byte");
	n = tls13_cv(m, "TLS 1.3, server CertificateVerify", 32);
	expect(KS_PURPOSE_TLS, m, n - 1, -EPERM, "32 or 48", "truncated hash");
	expect(KS_PURPOSE_TLS, m, 64 + 20, -EPERM, "context string", "truncated context");
	n = tls13_cv(m, "TLS 1.3, server CertificateVerify", 32);
	m[10] = 0x21;
	expect(KS_PURPOSE_TLS, m, n, -EPERM, NULL, "63 spaces");
}

/* client_random, server_random, ServerECDHParams for @group with a point of @point_len. */
static size_t tls12_ske_ec(uint8_t *out, uint16_t group, size_t point_len, uint8_t first)
{
	size_t n = 0;

	for (int i = 0; i < 64; i++)
		out[n++] = (uint8_t)(i * 7);
	out[n++] = 3;
	out[n++] = (uint8_t)(group >> 8);
	out[n++] = (uint8_t)group;
	out[n++] = (uint8_t)point_len;
	for (size_t i = 0; i < point_len; i++)
		out[n++] = i == 0 ? first : (uint8_t)(0x55 ^ i);
	return n;
}

static size_t put_vec16(uint8_t *out, size_t len, uint8_t first, uint8_t last)
{
	out[0] = (uint8_t)(len >> 8);
	out[1] = (uint8_t)len;
	for (size_t i = 0; i < len; i++)
		out[2 + i] = (uint8_t)(0x33 + i);
	out[2] = first;
	out[2 + len - 1] = last;
	return 2 + len;
}

static size_t tls12_ske_dh(uint8_t *out, size_t plen, size_t glen, size_t ylen)
{
	size_t n = 0;

	for (int i = 0; i < 64; i++)
		out[n++] = (uint8_t)(0xff - i);
	n += put_vec16(out + n, plen, 0xff, 0xff);
	n += put_vec16(out + n, glen, 0x02, 0x02);
	n += put_vec16(out + n, ylen, 0x12, 0x34);
	return n;
}

static void test_tls12_ske_structure(void **state)
{
	static const struct {
		uint16_t group;
		size_t len;
		uint8_t first;
	} ok[] = {
		{ 23, 65, 4 }, { 24, 97, 4 }, { 25, 133, 4 }, { 29, 32, 0x99 }, { 30, 56, 0x04 },
		{ 26, 65, 4 }, { 27, 97, 4 }, { 28, 129, 4 },
	};
	uint8_t m[2048];
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		n = tls12_ske_ec(m, ok[i].group, ok[i].len, ok[i].first);
		expect(KS_PURPOSE_TLS, m, n, 0, NULL, "ECDHE params");
	}
	n = tls12_ske_ec(m, 23, 65, 4);
	expect(KS_PURPOSE_TLS, m, n - 1, -EPERM, "wrong length", "P-256 point cut short");
	m[n] = 0;
	expect(KS_PURPOSE_TLS, m, n + 1, -EPERM, "wrong length", "a byte after the point");
	n = tls12_ske_ec(m, 23, 33, 2);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "wrong length", "compressed P-256 point");
	n = tls12_ske_ec(m, 23, 65, 2);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "uncompressed", "P-256 point not 0x04");
	n = tls12_ske_ec(m, 29, 65, 4);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "wrong length", "x25519 with a P-256 point");
	n = tls12_ske_ec(m, 0x1d1d, 32, 4);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "unknown named group", "unknown group");
	n = tls12_ske_ec(m, 23, 65, 4);
	m[64] = 1; /* explicit_prime curve_type */
	expect(KS_PURPOSE_TLS, m, n, -EPERM, NULL, "explicit curve");
	expect(KS_PURPOSE_TLS, m, 64, -EPERM, NULL, "only the randoms");

	/* DHE params are refused whatever their values: too free-form (proto/sigform.h). */
	n = tls12_ske_dh(m, 256, 1, 256);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "DHE is not signed", "DHE 2048");
	n = tls12_ske_dh(m, 512, 1, 512);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "DHE is not signed", "DHE 4096");
}

static size_t hs_put(uint8_t *out, uint8_t type, size_t body_len, int tls12_version)
{
	out[0] = type;
	out[1] = (uint8_t)(body_len >> 16);
	out[2] = (uint8_t)(body_len >> 8);
	out[3] = (uint8_t)body_len;
	for (size_t i = 0; i < body_len; i++)
		out[4 + i] = (uint8_t)(type + i);
	if (tls12_version) {
		out[4] = 3;
		out[5] = 3;
	}
	return 4 + body_len;
}

/* A transcript of the messages @types (0-terminated), ClientHello and ServerHello at TLS 1.2. */
static size_t transcript(uint8_t *out, const uint8_t *types)
{
	size_t n = 0;

	for (size_t i = 0; types[i] != 0; i++)
		n += hs_put(out + n, types[i], types[i] <= 2 ? 80 : 40 + i, types[i] <= 2);
	return n;
}

static void test_tls12_transcript_structure(void **state)
{
	static const uint8_t full[] = { 1, 2, 11, 12, 13, 14, 11, 16, 0 };
	static const uint8_t with_status[] = { 1, 2, 11, 22, 12, 13, 14, 11, 16, 0 };
	static const uint8_t rsa_kx[] = { 1, 2, 11, 13, 14, 11, 16, 0 };
	static const uint8_t no_request[] = { 1, 2, 11, 12, 14, 11, 16, 0 };
	static const uint8_t no_ckx[] = { 1, 2, 11, 12, 13, 14, 11, 0 };
	static const uint8_t cv_included[] = { 1, 2, 11, 12, 13, 14, 11, 16, 15, 0 };
	static const uint8_t finished[] = { 1, 2, 11, 12, 13, 14, 11, 16, 20, 0 };
	static const uint8_t sh_first[] = { 2, 1, 11, 12, 13, 14, 11, 16, 0 };
	static const uint8_t unknown[] = { 1, 2, 11, 99, 13, 14, 11, 16, 0 };
	uint8_t m[2048];
	size_t n;

	(void)state;
	n = transcript(m, full);
	expect(KS_PURPOSE_TLS, m, n, 0, NULL, "full transcript");
	expect(KS_PURPOSE_TLS, m, n - 1, -EPERM, "cut short", "last message cut");
	m[n] = 0;
	expect(KS_PURPOSE_TLS, m, n + 1, -EPERM, "cut short", "a trailing byte");
	n = transcript(m, with_status);
	expect(KS_PURPOSE_TLS, m, n, 0, NULL, "with certificate status");
	n = transcript(m, rsa_kx);
	expect(KS_PURPOSE_TLS, m, n, 0, NULL, "RSA key exchange");
	n = transcript(m, no_request);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "CertificateRequest", "no certificate request");
	n = transcript(m, no_ckx);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "ClientKeyExchange", "no ClientKeyExchange");
	n = transcript(m, cv_included);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "ClientKeyExchange", "CertificateVerify inside");
	n = transcript(m, finished);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, NULL, "Finished inside");
	n = transcript(m, sh_first);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, NULL, "ServerHello first");
	n = transcript(m, unknown);
	expect(KS_PURPOSE_TLS, m, n, -EPERM, NULL, "unknown message type");
	n = transcript(m, full);
	m[5] = 1; /* ClientHello legacy_version 0x0301 */
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "ClientHello", "TLS 1.0 ClientHello");
	n = transcript(m, full);
	m[84 + 5] = 4; /* ServerHello 0x0304 */
	expect(KS_PURPOSE_TLS, m, n, -EPERM, "ServerHello", "ServerHello not 0x0303");
	expect(KS_PURPOSE_TLS, m, 84, -EPERM, NULL, "only a ClientHello");
}

/* ---- what must never pass as a tls or http-signature input ---------------- */

static EVP_PKEY *ec_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	assert_non_null(k);
	return k;
}

/* A CertificationRequestInfo for CN=evil with @k: what csr.create alone may sign. */
static int csr_info_der(EVP_PKEY *k, uint8_t **der)
{
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = X509_NAME_new();
	int n;

	assert_non_null(req);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"evil", -1, -1, 0);
	X509_REQ_set_subject_name(req, name);
	X509_REQ_set_pubkey(req, k);
	n = i2d_re_X509_REQ_tbs(req, der);
	X509_NAME_free(name);
	X509_REQ_free(req);
	assert_true(n > 0);
	return n;
}

/* A TBSCertificate of a self-signed CA:TRUE certificate. */
static int ca_tbs_der(EVP_PKEY *k, uint8_t **der)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	X509_EXTENSION *ext;
	X509V3_CTX ctx;
	int n;

	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"Evil CA", -1, -1, 0);
	X509_set_subject_name(x, name);
	X509_set_issuer_name(x, name);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, k);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
	assert_non_null(ext);
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	/* The signature algorithm of the TBS: sign once in software to fill it in. */
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	n = i2d_re_X509_tbs(x, der);
	X509_NAME_free(name);
	X509_free(x);
	assert_true(n > 0);
	return n;
}

static void test_forgeries(void **state)
{
	static const char *const texts[] = {
		"hello world",
		"I owe Mallory 1000 EUR",
		"date: Thu, 05 Jan 2014 21:31:40 GMT",
	};
	EVP_PKEY *k = ec_key();
	uint8_t *der = NULL;
	int n;

	(void)state;
	n = csr_info_der(k, &der);
	expect(KS_PURPOSE_TLS, der, (size_t)n, -EPERM, NULL, "CertificationRequestInfo as tls");
	expect(KS_PURPOSE_HTTP_SIGNATURE, der, (size_t)n, -EPERM, NULL, "CertificationRequestInfo as http");
	expect(KS_PURPOSE_CSR, der, (size_t)n, -EPERM, NULL, "CertificationRequestInfo as csr");
	OPENSSL_free(der);
	der = NULL;
	n = ca_tbs_der(k, &der);
	expect(KS_PURPOSE_TLS, der, (size_t)n, -EPERM, NULL, "TBSCertificate as tls");
	expect(KS_PURPOSE_HTTP_SIGNATURE, der, (size_t)n, -EPERM, NULL, "TBSCertificate as http");
	OPENSSL_free(der);
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		expect(KS_PURPOSE_TLS, (const uint8_t *)texts[i], strlen(texts[i]), -EPERM,
		       "not a TLS handshake signature input", texts[i]);
		expect(KS_PURPOSE_HTTP_SIGNATURE, (const uint8_t *)texts[i], strlen(texts[i]), -EPERM,
		       NULL, texts[i]);
		expect(KS_PURPOSE_SIGN, (const uint8_t *)texts[i], strlen(texts[i]), 0, NULL, texts[i]);
	}
	expect(KS_PURPOSE_TLS, (const uint8_t *)"", 0, -EPERM, NULL, "empty as tls");
	expect(KS_PURPOSE_HTTP_SIGNATURE, (const uint8_t *)"", 0, -EPERM, NULL, "empty as http");
	EVP_PKEY_free(k);
}

static void test_limits_and_args(void **state)
{
	uint8_t *big = calloc(1, KS_SIGN_DATA_MAX + 1);
	const char *why = NULL;
	unsigned p = 0;

	(void)state;
	assert_non_null(big);
	assert_int_equal(ks_sigform_check(KS_PURPOSE_SIGN, big, KS_SIGN_DATA_MAX, &why), 0);
	expect(KS_PURPOSE_SIGN, big, KS_SIGN_DATA_MAX + 1, -EPERM, "limit", "sign over the limit");
	expect(KS_PURPOSE_TLS, big, KS_SIGN_DATA_MAX + 1, -EPERM, "limit", "tls over the limit");
	assert_int_equal(ks_sigform_check(0, big, 1, &why), -EINVAL);
	assert_int_equal(ks_sigform_check(KS_PURPOSE_TLS | KS_PURPOSE_SIGN, big, 1, &why), -EINVAL);
	assert_int_equal(ks_sigform_check(KS_PURPOSE_SIGN, NULL, 1, &why), -EINVAL);
	free(big);

	/* match: the narrowest purpose that allows it, sign last. */
	{
		static const char oci[] = "date: x\n(request-target): get /\nhost: h";
		uint8_t m[256];
		size_t n = tls13_cv(m, "TLS 1.3, server CertificateVerify", 32);

		assert_int_equal(ks_sigform_match(KS_PURPOSE_ALL, m, n, &p, &why), 0);
		assert_int_equal(p, KS_PURPOSE_TLS);
		assert_int_equal(ks_sigform_match(KS_PURPOSE_ALL, (const uint8_t *)oci, strlen(oci), &p, &why), 0);
		assert_int_equal(p, KS_PURPOSE_HTTP_SIGNATURE);
		assert_int_equal(ks_sigform_match(KS_PURPOSE_ALL, (const uint8_t *)"x", 1, &p, &why), 0);
		assert_int_equal(p, KS_PURPOSE_SIGN);
		assert_int_equal(ks_sigform_match(KS_PURPOSE_TLS | KS_PURPOSE_CSR, (const uint8_t *)oci,
						  strlen(oci), &p, &why), -EPERM);
		assert_non_null(strstr(why, "TLS"));
		assert_int_equal(ks_sigform_match(KS_PURPOSE_HTTP_SIGNATURE, m, n, &p, &why), -EPERM);
		assert_non_null(strstr(why, "HTTP signature"));
		assert_int_equal(ks_sigform_match(KS_PURPOSE_CSR, m, n, &p, &why), -EPERM);
		assert_string_equal(why, "key purposes do not allow signing client data");
	}
}

/* ---- http-signature ------------------------------------------------------- */

/* The signing strings of the published OCI test values, EXAMPLE 1 and 2. */
static const char oci_get[] =
	"date: Thu, 05 Jan 2014 21:31:40 GMT\n"
	"(request-target): get /20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1&compartmentId="
	"ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa&displayName="
	"TeamXInstances&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q\n"
	"host: iaas.us-phoenix-1.oraclecloud.com";
static const char oci_post[] =
	"date: Thu, 05 Jan 2014 21:31:40 GMT\n"
	"(request-target): post /20160918/volumeAttachments\n"
	"host: iaas.us-phoenix-1.oraclecloud.com\n"
	"content-length: 316\n"
	"content-type: application/json\n"
	"x-content-sha256: V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0=";

static void http(const char *s, int want, const char *why_part)
{
	expect(KS_PURPOSE_HTTP_SIGNATURE, (const uint8_t *)s, strlen(s), want, why_part, s);
}

static void test_http_signature(void **state)
{
	(void)state;
	http(oci_get, 0, NULL);
	http(oci_post, 0, NULL);
	http("x-date: Thu, 05 Jan 2014 21:31:40 GMT\n(request-target): put /a\nhost: h", 0, NULL);
	http("(request-target): delete /a/b?c=d\nhost: h\ndate: d\nx-custom: caf\xc3\xa9", 0, NULL);
	/* Neither tls nor csr take them. */
	expect(KS_PURPOSE_TLS, (const uint8_t *)oci_get, strlen(oci_get), -EPERM, NULL, "OCI as tls");

	http("date: d\n(request-target): get /\n", -EPERM, "empty line");
	http("date: d\n\n(request-target): get /\nhost: h", -EPERM, "empty line");
	http("date: d\r\n(request-target): get /\nhost: h", -EPERM, "control character");
	http("date: d\x01\n(request-target): get /\nhost: h", -EPERM, "control character");
	http("date: d\xc2\x85\n(request-target): get /\nhost: h", -EPERM, "control character");
	http("date: d\xff\n(request-target): get /\nhost: h", -EPERM, "UTF-8");
	http("Date: d\n(request-target): get /\nhost: h", -EPERM, "lower-case");
	http("date: d\n(request-target): GET /\nhost: h", -EPERM, "(request-target)");
	http("date: d\n(request-target): get\nhost: h", -EPERM, "(request-target)");
	http("date: d\n(request-target): get x\nhost: h", -EPERM, "(request-target)");
	http("date: d\n(request-target): get / x\nhost: h", -EPERM, "(request-target)");
	http("date:d\n(request-target): get /\nhost: h", -EPERM, "name: value");
	http("date d\n(request-target): get /\nhost: h", -EPERM, "name: value");
	http(": d\n(request-target): get /\nhost: h", -EPERM, NULL);
	http("date: d\n(request-target): get /\nhost: h\ndate: e", -EPERM, "twice");
	http("date: d\n(request-target): get /\n(request-target): get /\nhost: h", -EPERM, "twice");
	http("(request-target): get /\nhost: h", -EPERM, "date or x-date");
	http("date: d\nhost: h", -EPERM, "(request-target)");
	http("date: d\n(request-target): get /", -EPERM, "host");
	http("hello world", -EPERM, NULL);
}

/* ---- real TLS handshakes ---------------------------------------------------- */

/* Every handshake message either side sent, in order, as it went into the transcript. */
struct capture {
	uint8_t buf[64 * 1024];
	size_t len;
	/* Offsets of the messages and their types. */
	size_t off[64];
	uint8_t type[64];
	size_t n;
};

static void on_message(int write_p, int version, int content_type, const void *buf, size_t len,
		       SSL *ssl, void *arg)
{
	struct capture *c = arg;

	(void)version;
	(void)ssl;
	/* Each message is reported by its sender only, so the two sides are not counted twice. */
	if (!write_p || content_type != SSL3_RT_HANDSHAKE || len < 4)
		return;
	assert_true(c->len + len <= sizeof(c->buf) && c->n < 64);
	c->off[c->n] = c->len;
	c->type[c->n++] = ((const uint8_t *)buf)[0];
	memcpy(c->buf + c->len, buf, len);
	c->len += len;
}

static X509 *self_signed(EVP_PKEY *k)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_get_subject_name(x);

	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, name);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	return x;
}

static int accept_any(int ok, X509_STORE_CTX *ctx)
{
	(void)ok;
	(void)ctx;
	return 1;
}

struct handshake_opts {
	int version;          /* TLS1_2_VERSION or TLS1_3_VERSION */
	const char *sigalgs;  /* both sides */
	const char *groups;   /* NULL: OpenSSL's default */
	const char *ciphers;  /* TLS 1.2 cipher list, NULL: default */
	const char *suites;   /* TLS 1.3 suites, NULL: default */
	int client_cert;
};

/*
 * A whole handshake between an OpenSSL client and server in memory
 * (BIO pairs), both with @k's self-signed certificate; every handshake
 * message goes into @c.
 */
static void handshake(EVP_PKEY *k, const struct handshake_opts *o, struct capture *c)
{
	SSL_CTX *sctx = SSL_CTX_new(TLS_server_method()), *cctx = SSL_CTX_new(TLS_client_method());
	X509 *x = self_signed(k);
	BIO *sbio = NULL, *cbio = NULL;
	SSL *s, *cl;
	int sdone = 0, cdone = 0;

	memset(c, 0, sizeof(*c));
	assert_non_null(sctx);
	assert_non_null(cctx);
	for (int i = 0; i < 2; i++) {
		SSL_CTX *ctx = i == 0 ? sctx : cctx;

		SSL_CTX_set_min_proto_version(ctx, o->version);
		SSL_CTX_set_max_proto_version(ctx, o->version);
		assert_int_equal(SSL_CTX_set1_sigalgs_list(ctx, o->sigalgs), 1);
		if (o->groups != NULL)
			assert_int_equal(SSL_CTX_set1_groups_list(ctx, o->groups), 1);
		if (o->ciphers != NULL)
			assert_int_equal(SSL_CTX_set_cipher_list(ctx, o->ciphers), 1);
		if (o->suites != NULL)
			assert_int_equal(SSL_CTX_set_ciphersuites(ctx, o->suites), 1);
		SSL_CTX_set_msg_callback(ctx, on_message);
		SSL_CTX_set_msg_callback_arg(ctx, c);
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0);
		SSL_CTX_set_security_level(ctx, 0);
	}
	assert_int_equal(SSL_CTX_use_certificate(sctx, x), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(sctx, k), 1);
	SSL_CTX_set_dh_auto(sctx, 1);
	if (o->client_cert) {
		assert_int_equal(SSL_CTX_use_certificate(cctx, x), 1);
		assert_int_equal(SSL_CTX_use_PrivateKey(cctx, k), 1);
		SSL_CTX_set_verify(sctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, accept_any);
	}
	SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, accept_any);
	s = SSL_new(sctx);
	cl = SSL_new(cctx);
	assert_int_equal(BIO_new_bio_pair(&sbio, 0, &cbio, 0), 1);
	SSL_set_bio(s, sbio, sbio);
	SSL_set_bio(cl, cbio, cbio);
	SSL_set_accept_state(s);
	SSL_set_connect_state(cl);
	for (int round = 0; round < 100 && !(sdone && cdone); round++) {
		int r;

		if (!cdone && (r = SSL_do_handshake(cl)) == 1)
			cdone = 1;
		else if (!cdone && SSL_get_error(cl, r) != SSL_ERROR_WANT_READ)
			fail_msg("client handshake failed: %d", SSL_get_error(cl, r));
		if (!sdone && (r = SSL_do_handshake(s)) == 1)
			sdone = 1;
		else if (!sdone && SSL_get_error(s, r) != SSL_ERROR_WANT_READ) {
			ERR_print_errors_fp(stderr);
			fail_msg("server handshake failed: %d", SSL_get_error(s, r));
		}
	}
	assert_true(sdone && cdone);
	SSL_free(s);
	SSL_free(cl);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	X509_free(x);
}

/* Index of the @nth (0-based) message of @type in @c, or fail. */
static size_t find(const struct capture *c, uint8_t type, int nth)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->type[i] == type && nth-- == 0)
			return i;
	fail_msg("no handshake message of type %u", type);
	return 0;
}

static size_t msg_end(const struct capture *c, size_t i)
{
	return i + 1 < c->n ? c->off[i + 1] : c->len;
}

/*
 * The DigitallySigned at @p (TLS 1.2 and 1.3: SignatureScheme, then
 * signature<0..2^16-1>) verifies over @tbs with @k: the input really is
 * what the peer signed.
 */
static void verify_signed(EVP_PKEY *k, const uint8_t *p, size_t left, const uint8_t *tbs, size_t tbs_len)
{
	uint16_t scheme;
	size_t sig_len;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	const EVP_MD *hash;
	int pss;

	assert_true(left >= 4);
	scheme = (uint16_t)(p[0] << 8 | p[1]);
	sig_len = (size_t)p[2] << 8 | p[3];
	assert_int_equal(sig_len + 4, left);
	switch (scheme) {
	case 0x0401: hash = EVP_sha256(); pss = 0; break;
	case 0x0501: hash = EVP_sha384(); pss = 0; break;
	case 0x0403: hash = EVP_sha256(); pss = 0; break;
	case 0x0503: hash = EVP_sha384(); pss = 0; break;
	case 0x0804: hash = EVP_sha256(); pss = 1; break;
	case 0x0805: hash = EVP_sha384(); pss = 1; break;
	default: fail_msg("signature scheme %04x", scheme); return;
	}
	assert_int_equal(EVP_DigestVerifyInit(md, &pctx, hash, NULL, k), 1);
	if (pss) {
		EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
		EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
	}
	if (EVP_DigestVerify(md, p + 4, sig_len, tbs, tbs_len) != 1)
		fail_msg("the reconstructed signature input is not what was signed (scheme %04x)", scheme);
	EVP_MD_CTX_free(md);
}

/*
 * TLS 1.3: the content of the @nth CertificateVerify (0 the server's, 1
 * the client's) is the padding, the context and the hash of the
 * transcript up to the Certificate before it.
 */
static size_t tls13_capture(EVP_PKEY *k, const struct capture *c, int nth, const EVP_MD *hash,
			    uint8_t *out)
{
	size_t cv = find(c, 15, nth), n;
	unsigned int hl = 0;
	uint8_t h[EVP_MAX_MD_SIZE];

	assert_int_equal(EVP_Digest(c->buf, c->off[cv], h, &hl, hash, NULL), 1);
	n = tls13_cv(out, nth == 0 ? "TLS 1.3, server CertificateVerify" : "TLS 1.3, client CertificateVerify", 0);
	memcpy(out + n, h, hl);
	n += hl;
	verify_signed(k, c->buf + c->off[cv] + 4, msg_end(c, cv) - c->off[cv] - 4, out, n);
	return n;
}

static void test_real_tls13(void **state)
{
	static const struct {
		int rsa;
		const char *sigalgs;
		const char *suites;
		const EVP_MD *(*hash)(void);
	} runs[] = {
		{ 1, "rsa_pss_rsae_sha256", "TLS_AES_128_GCM_SHA256", EVP_sha256 },
		{ 1, "rsa_pss_rsae_sha384", "TLS_AES_256_GCM_SHA384", EVP_sha384 },
		{ 0, "ecdsa_secp256r1_sha256", "TLS_CHACHA20_POLY1305_SHA256", EVP_sha256 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
		struct handshake_opts o = { TLS1_3_VERSION, runs[i].sigalgs, NULL, NULL, runs[i].suites, 1 };
		EVP_PKEY *k = runs[i].rsa ? EVP_RSA_gen(2048) : ec_key();
		static struct capture c;
		uint8_t m[256];
		size_t n;

		handshake(k, &o, &c);
		for (int side = 0; side < 2; side++) {
			n = tls13_capture(k, &c, side, runs[i].hash(), m);
			expect(KS_PURPOSE_TLS, m, n, 0, NULL, "real TLS 1.3 CertificateVerify content");
			/* The same content for the other side's context string. */
			memcpy(m + 64, side == 0 ? "TLS 1.3, client CertificateVerify"
					      : "TLS 1.3, server CertificateVerify", 33);
			expect(KS_PURPOSE_TLS, m, n, 0, NULL, "other side's context");
			memcpy(m + 64, "TLS 1.3, server Finished\0\0\0\0\0\0\0\0\0", 33);
			expect(KS_PURPOSE_TLS, m, n, -EPERM, "context string", "wrong context, real hash");
		}
		EVP_PKEY_free(k);
	}
}

/* TLS 1.2: client random + server random + the ServerKeyExchange params before their signature. */
static size_t tls12_ske_capture(EVP_PKEY *k, const struct capture *c, uint8_t *out)
{
	size_t ch = find(c, 1, 0), sh = find(c, 2, 0), ske = find(c, 12, 0);
	const uint8_t *p = c->buf + c->off[ske] + 4;
	size_t left = msg_end(c, ske) - c->off[ske] - 4, plen;

	memcpy(out, c->buf + c->off[ch] + 6, 32);
	memcpy(out + 32, c->buf + c->off[sh] + 6, 32);
	if (p[0] == 3) {
		plen = 4u + p[3];
	} else {
		size_t off = 0;

		for (int i = 0; i < 3; i++)
			off += 2 + ((size_t)p[off] << 8 | p[off + 1]);
		plen = off;
	}
	assert_true(64 + plen <= 4096);
	memcpy(out + 64, p, plen);
	verify_signed(k, p + plen, left - plen, out, 64 + plen);
	return 64 + plen;
}

static void test_real_tls12(void **state)
{
	static const struct {
		int rsa;
		const char *sigalgs;
		const char *groups;
		const char *ciphers;
	} runs[] = {
		{ 1, "RSA+SHA256", "P-256", "ECDHE-RSA-AES128-GCM-SHA256" },
		{ 1, "rsa_pss_rsae_sha256", "X25519", "ECDHE-RSA-AES128-GCM-SHA256" },
		{ 1, "RSA+SHA384", "P-384", "ECDHE-RSA-AES256-GCM-SHA384" },
		{ 1, "RSA+SHA256", "X448", "ECDHE-RSA-AES128-GCM-SHA256" },
		{ 1, "RSA+SHA256", NULL, "DHE-RSA-AES128-GCM-SHA256" },   /* refused: DHE */
		{ 0, "ECDSA+SHA256", "P-256", "ECDHE-ECDSA-AES128-GCM-SHA256" },
	};
	static uint8_t m[64 * 1024];

	(void)state;
	for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
		struct handshake_opts o = { TLS1_2_VERSION, runs[i].sigalgs, runs[i].groups, runs[i].ciphers,
					    NULL, 1 };
		EVP_PKEY *k = runs[i].rsa ? EVP_RSA_gen(2048) : ec_key();
		static struct capture c;
		size_t n, cv;

		handshake(k, &o, &c);
		n = tls12_ske_capture(k, &c, m);
		if (strncmp(runs[i].ciphers, "DHE", 3) == 0) {
			expect(KS_PURPOSE_TLS, m, n, -EPERM, "DHE is not signed", "real DHE params");
		} else {
			expect(KS_PURPOSE_TLS, m, n, 0, NULL, "real TLS 1.2 ServerKeyExchange params");
			expect(KS_PURPOSE_TLS, m, n - 1, -EPERM, NULL, "real SKE params cut short");
		}
		/* The client's CertificateVerify signs everything before it. */
		cv = find(&c, 15, 0);
		verify_signed(k, c.buf + c.off[cv] + 4, msg_end(&c, cv) - c.off[cv] - 4, c.buf, c.off[cv]);
		expect(KS_PURPOSE_TLS, c.buf, c.off[cv], 0, NULL, "real TLS 1.2 client transcript");
		expect(KS_PURPOSE_TLS, c.buf, c.off[cv] - 1, -EPERM, NULL, "real transcript cut short");
		expect(KS_PURPOSE_TLS, c.buf, msg_end(&c, cv), -EPERM, NULL, "real transcript with its CV");
		EVP_PKEY_free(k);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_parse_format),
		cmocka_unit_test(test_schema_check),
		cmocka_unit_test(test_tls13_structure),
		cmocka_unit_test(test_tls12_ske_structure),
		cmocka_unit_test(test_tls12_transcript_structure),
		cmocka_unit_test(test_forgeries),
		cmocka_unit_test(test_limits_and_args),
		cmocka_unit_test(test_http_signature),
		cmocka_unit_test(test_real_tls13),
		cmocka_unit_test(test_real_tls12),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
