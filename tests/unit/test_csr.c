/*
 * The CSR builder and the RFC 4514 parser, with software keys standing in
 * for the token so that every byte of the result can be checked.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "keysvc/csr.h"

struct soft_signer {
	EVP_PKEY *key;
	int fail_with;
};

static int soft_sign(void *arg, enum ks_sig_alg alg, const uint8_t *digest, size_t digest_len,
		     uint8_t **sig, size_t *sig_len)
{
	struct soft_signer *s = arg;
	EVP_PKEY_CTX *ctx;
	size_t len = 0;

	if (s->fail_with)
		return s->fail_with;
	ctx = EVP_PKEY_CTX_new(s->key, NULL);
	assert_non_null(ctx);
	assert_int_equal(EVP_PKEY_sign_init(ctx), 1);
	assert_int_equal(EVP_PKEY_CTX_set_signature_md(ctx, EVP_get_digestbyname(ks_sig_alg_digest(alg))), 1);
	assert_int_equal(EVP_PKEY_sign(ctx, NULL, &len, digest, digest_len), 1);
	*sig = malloc(len);
	assert_int_equal(EVP_PKEY_sign(ctx, *sig, &len, digest, digest_len), 1);
	*sig_len = len;
	EVP_PKEY_CTX_free(ctx);
	return 0;
}

static char *name_rfc2253(X509_NAME *name)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;

	X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
	n = BIO_get_mem_data(bio, &data);
	out = strndup(data, (size_t)n);
	BIO_free(bio);
	return out;
}

static void test_rfc4514_round_trip(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US,CN=x", NULL },
		{ "CN=host.example.org,O=Example\\, Inc.,C=DE", NULL },
		{ "CN=a\\+b,O=x", NULL },
		{ "CN=\\\"quoted\\\",O=x", NULL },
		{ "CN=back\\\\slash", NULL },
		{ "CN=Caf\\C3\\A9", "CN=Caf\xc3\xa9" },
		{ "CN=a+UID=b,O=multi", NULL },
		{ "2.5.4.3=by-oid,O=x", "CN=by-oid,O=x" },
		{ "cn=lower,o=case", "CN=lower,O=case" },
		{ "DC=example,DC=org", NULL },
		{ "emailAddress=ops@example.org,CN=x", NULL },
		{ "CN=\\ lead and trail\\ ", NULL },
		{ "CN=\\#hash", NULL },
	};
	X509_NAME *name;
	const char *err;
	char *got;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *want = cases[i].out ? cases[i].out : cases[i].in;

		if (ks_rfc4514_parse(cases[i].in, &name, &err) != 0)
			fail_msg("case %zu (%s): %s", i, cases[i].in, err);
		got = name_rfc2253(name);
		if (strcmp(got, want) != 0)
			fail_msg("case %zu: %s printed back as %s", i, want, got);
		free(got);
		X509_NAME_free(name);
	}
}

static void test_rfc4514_order_and_types(void **state)
{
	X509_NAME *name;
	const X509_NAME_ENTRY *e;
	const char *err;

	(void)state;
	assert_int_equal(ks_rfc4514_parse("CN=leaf,O=Org,C=US", &name, &err), 0);
	assert_int_equal(X509_NAME_entry_count(name), 3);
	/* The encoded name starts with the string's last RDN. */
	e = X509_NAME_get_entry(name, 0);
	assert_int_equal(OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)), NID_countryName);
	assert_int_equal(ASN1_STRING_type(X509_NAME_ENTRY_get_data(e)), V_ASN1_PRINTABLESTRING);
	e = X509_NAME_get_entry(name, 2);
	assert_int_equal(OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)), NID_commonName);
	assert_int_equal(ASN1_STRING_type(X509_NAME_ENTRY_get_data(e)), V_ASN1_UTF8STRING);
	X509_NAME_free(name);

	/* A multi-valued RDN is one SET. */
	assert_int_equal(ks_rfc4514_parse("CN=a+UID=b,O=x", &name, &err), 0);
	assert_int_equal(X509_NAME_entry_count(name), 3);
	assert_int_equal(X509_NAME_ENTRY_set(X509_NAME_get_entry(name, 1)),
			 X509_NAME_ENTRY_set(X509_NAME_get_entry(name, 2)));
	assert_int_not_equal(X509_NAME_ENTRY_set(X509_NAME_get_entry(name, 0)),
			     X509_NAME_ENTRY_set(X509_NAME_get_entry(name, 1)));
	X509_NAME_free(name);
}

static void test_rfc4514_rejects(void **state)
{
	static const char *const bad[] = {
		"", "CN", "CN=", "=x", "CN=x,", "CN=x,,O=y", "CN=x+", "XX=unknown",
		"CN=#04024869", "CN=a\"b", "CN=a;b", "CN=a<b", "CN= lead", "CN=trail ",
		"CN=bad\\escape", "CN=\\C3", "CN=\\FF\\FE", "C=USA", "C=1A", "1..2=x", "1.=x",
		"CN=x,O=y,", ",CN=x",
	};
	char long_value[400];
	X509_NAME *name = NULL;
	const char *err;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err = NULL;
		if (ks_rfc4514_parse(bad[i], &name, &err) != -EINVAL)
			fail_msg("accepted bad subject \"%s\"", bad[i]);
		assert_non_null(err);
		assert_null(name);
	}
	memcpy(long_value, "CN=", 3);
	memset(long_value + 3, 'a', 257);
	long_value[260] = '\0';
	assert_int_equal(ks_rfc4514_parse(long_value, &name, &err), -EINVAL);
}

static X509_REQ *parse_csr(const char *pem)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	X509_REQ *req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);

	BIO_free(bio);
	assert_non_null(req);
	return req;
}

static void check_full_csr(EVP_PKEY *key, enum ks_sig_alg alg)
{
	static const char *const dns[] = { "a.example.org", "*.b.example.org" };
	static const char *const ip[] = { "192.0.2.1", "2001:db8::1" };
	static const char *const uri[] = { "spiffe://example.org/agent" };
	static const char *const email[] = { "ops@example.org" };
	static const char *const eku[] = { "clientAuth", "serverAuth", "1.3.6.1.5.5.7.3.17" };
	struct ks_csr_attr attr = { "1.3.6.1.4.1.34380.1.3.2", "true", "printable" };
	struct ks_csr_params p = {
		.subject = "OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US,CN=agent",
		.dns = dns, .n_dns = 2, .ip = ip, .n_ip = 2, .uri = uri, .n_uri = 1,
		.email = email, .n_email = 1,
		.key_usage = KS_KU_DIGITAL_SIGNATURE | KS_KU_KEY_ENCIPHERMENT,
		.ext_key_usage = eku, .n_ext_key_usage = 3,
		.attrs = &attr, .n_attrs = 1,
		.alg = alg,
	};
	struct soft_signer signer = { key, 0 };
	STACK_OF(X509_EXTENSION) *exts;
	GENERAL_NAMES *gens;
	ASN1_BIT_STRING *ku;
	EXTENDED_KEY_USAGE *ekus;
	X509_ATTRIBUTE *xa;
	ASN1_TYPE *av;
	const char *err = NULL;
	char *pem = NULL, *subj, path[] = "/tmp/keysvc-csr-XXXXXX", cmd[256];
	X509_REQ *req;
	FILE *fp;
	int fd, idx;

	assert_int_equal(ks_csr_create(key, &p, soft_sign, &signer, &pem, &err), 0);
	req = parse_csr(pem);
	assert_int_equal(X509_REQ_verify(req, key), 1);
	assert_int_equal(X509_REQ_get_signature_nid(req),
			 ks_sig_alg_family(alg) == KS_FAMILY_RSA ? NID_sha256WithRSAEncryption :
			 NID_ecdsa_with_SHA256);
	subj = name_rfc2253(X509_REQ_get_subject_name(req));
	assert_string_equal(subj, p.subject);
	free(subj);

	exts = X509_REQ_get_extensions(req);
	assert_non_null(exts);
	gens = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
	assert_non_null(gens);
	assert_int_equal(sk_GENERAL_NAME_num(gens), 6);
	GENERAL_NAMES_free(gens);
	ku = X509V3_get_d2i(exts, NID_key_usage, &idx, NULL);
	assert_non_null(ku);
	assert_true(ASN1_BIT_STRING_get_bit(ku, 0));
	assert_true(ASN1_BIT_STRING_get_bit(ku, 2));
	assert_false(ASN1_BIT_STRING_get_bit(ku, 5));
	assert_true(X509_EXTENSION_get_critical(sk_X509_EXTENSION_value(exts,
		X509v3_get_ext_by_NID(exts, NID_key_usage, -1))));
	ASN1_BIT_STRING_free(ku);
	ekus = X509V3_get_d2i(exts, NID_ext_key_usage, NULL, NULL);
	assert_non_null(ekus);
	assert_int_equal(sk_ASN1_OBJECT_num(ekus), 3);
	assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(ekus, 0)), NID_client_auth);
	sk_ASN1_OBJECT_pop_free(ekus, ASN1_OBJECT_free);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);

	{
		ASN1_OBJECT *auto_renew = OBJ_txt2obj("1.3.6.1.4.1.34380.1.3.2", 1);

		idx = X509_REQ_get_attr_by_OBJ(req, auto_renew, -1);
		ASN1_OBJECT_free(auto_renew);
	}
	assert_true(idx >= 0);
	xa = X509_REQ_get_attr(req, idx);
	av = X509_ATTRIBUTE_get0_type(xa, 0);
	assert_int_equal(av->type, V_ASN1_PRINTABLESTRING);
	assert_memory_equal(ASN1_STRING_get0_data(av->value.printablestring), "true", 4);
	X509_REQ_free(req);

	/* And the openssl tool agrees. */
	fd = mkstemp(path);
	assert_true(fd >= 0);
	fp = fdopen(fd, "w");
	fputs(pem, fp);
	fclose(fp);
	snprintf(cmd, sizeof(cmd), "openssl req -in %s -noout -verify 2>&1 | grep -q 'verify OK'", path);
	assert_int_equal(system(cmd), 0);
	unlink(path);
	free(pem);
}

static void test_csr_rsa(void **state)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);

	(void)state;
	check_full_csr(key, KS_SIG_RSA_PKCS1_SHA256);
	EVP_PKEY_free(key);
}

static void test_csr_ec(void **state)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

	(void)state;
	check_full_csr(key, KS_SIG_ECDSA_SHA256);
	EVP_PKEY_free(key);
}

static void test_csr_p384_sha384(void **state)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	struct soft_signer signer = { key, 0 };
	struct ks_csr_params p = { .subject = "CN=p384", .alg = KS_SIG_ECDSA_SHA384 };
	const char *err = NULL;
	char *pem = NULL;
	X509_REQ *req;

	(void)state;
	assert_int_equal(ks_csr_create(key, &p, soft_sign, &signer, &pem, &err), 0);
	req = parse_csr(pem);
	assert_int_equal(X509_REQ_verify(req, key), 1);
	assert_int_equal(X509_REQ_get_signature_nid(req), NID_ecdsa_with_SHA384);
	X509_REQ_free(req);
	free(pem);
	EVP_PKEY_free(key);
}

static void test_csr_failures(void **state)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	struct soft_signer wrong = { other, 0 }, down = { key, -ENODEV };
	static const char *const bad_ip[] = { "300.1.1.1" };
	static const char *const bad_dns[] = { "" };
	static const char *const bad_eku[] = { "sortOfAuth" };
	static const char *many[101];
	struct ks_csr_params p = { .subject = "CN=x", .alg = KS_SIG_ECDSA_SHA256 };
	const char *err = NULL;
	char *pem = NULL;

	(void)state;
	/* A token that signed with another key is caught before anyone sees the CSR. */
	assert_int_equal(ks_csr_create(key, &p, soft_sign, &wrong, &pem, &err), -EIO);
	assert_null(pem);
	assert_int_equal(ks_csr_create(key, &p, soft_sign, &down, &pem, &err), -ENODEV);
	p.alg = KS_SIG_RSA_PKCS1_SHA256;
	assert_int_equal(ks_csr_create(key, &p, soft_sign, &down, &pem, &err), -EINVAL);
	p.alg = KS_SIG_ECDSA_SHA256;
	p.ip = bad_ip;
	p.n_ip = 1;
	err = NULL;
	assert_int_equal(ks_csr_create(key, &p, soft_sign, &down, &pem, &err), -EINVAL);
	assert_non_null(err);
	p.n_ip = 0;
	p.dns = bad_dns;
	p.n_dns = 1;
	assert_int_equal(ks_csr_create(key, &p, soft_sign, &down, &pem, &err), -EINVAL);
	for (size_t i = 0; i < 101; i++)
		many[i] = "x.example";
	p.dns = many;
	p.n_dns = 101;
	assert_int_equal(ks_csr_create(key, &p, soft_sign, &down, &pem, &err), -EINVAL);
	p.n_dns = 0;
	p.ext_key_usage = bad_eku;
	p.n_ext_key_usage = 1;
	assert_int_equal(ks_csr_create(key, &p, soft_sign, &down, &pem, &err), -EINVAL);
	EVP_PKEY_free(key);
	EVP_PKEY_free(other);
}

static void test_key_usage_names(void **state)
{
	(void)state;
	assert_int_equal(ks_key_usage_from_name("digitalSignature"), KS_KU_DIGITAL_SIGNATURE);
	assert_int_equal(ks_key_usage_from_name("contentCommitment"), KS_KU_NON_REPUDIATION);
	assert_int_equal(ks_key_usage_from_name("cRLSign"), KS_KU_CRL_SIGN);
	assert_int_equal(ks_key_usage_from_name("crlsign"), 0);
	assert_int_equal(ks_key_usage_from_name(NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc4514_round_trip),
		cmocka_unit_test(test_rfc4514_order_and_types),
		cmocka_unit_test(test_rfc4514_rejects),
		cmocka_unit_test(test_csr_rsa),
		cmocka_unit_test(test_csr_ec),
		cmocka_unit_test(test_csr_p384_sha384),
		cmocka_unit_test(test_csr_failures),
		cmocka_unit_test(test_key_usage_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
