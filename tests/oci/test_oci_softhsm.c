/*
 * OCI request signing with the signature made by keysvcd: Oracle's
 * published test key is imported into a private SoftHSM token (as a
 * sensitive, non-extractable, sign-only key, the way keysvcd names keys:
 * CKA_LABEL = the key name, one 16-byte CKA_ID shared with the public
 * key), keysvcd is started on it, and the signing strings, signatures and
 * Authorization headers of the published GET and POST examples must come
 * out byte for byte, through libkeysvc and through `keysvc-oci
 * sign-request` (its path is argv[1]).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "keysvc/keysvc.h"
#include "clients/renew/oci/ocisign.h"
#include "tests/common/daemon.h"
#include "tests/oci/oci_test_vectors.h"

#define KEY_NAME "oci-test"

static struct ks_td d;
static const char *oci_cli;

/* One RSA component of @pk as big-endian bytes in @buf. */
static CK_ULONG component(EVP_PKEY *pk, const char *name, unsigned char *buf, size_t len)
{
	BIGNUM *bn = NULL;
	int n;

	if (EVP_PKEY_get_bn_param(pk, name, &bn) != 1)
		return 0;
	n = BN_num_bytes(bn);
	if (n <= 0 || (size_t)n > len || BN_bn2bin(bn, buf) != n)
		n = 0;
	BN_free(bn);
	return (CK_ULONG)n;
}

/* Import the published key the way keysvcd would have made it. 0 or -1. */
static int import_test_key(void)
{
	static const char *const names[8] = {
		OSSL_PKEY_PARAM_RSA_N, OSSL_PKEY_PARAM_RSA_E, OSSL_PKEY_PARAM_RSA_D,
		OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PKEY_PARAM_RSA_FACTOR2, OSSL_PKEY_PARAM_RSA_EXPONENT1,
		OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
	};
	static const CK_ATTRIBUTE_TYPE types[8] = {
		CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT, CKA_PRIME_1, CKA_PRIME_2,
		CKA_EXPONENT_1, CKA_EXPONENT_2, CKA_COEFFICIENT,
	};
	/*
	 * The CKA_ID keysvcd gives a key generated with purposes
	 * (pkcs11/purpose.c): 16 bytes, "ksp1:", the list. This one may sign
	 * HTTP signature signing strings only, as keysvc-oci's keys do.
	 */
	static unsigned char id[] = "oci-test-key-id\0ksp1:http-signature";
	unsigned char comp[8][256];
	CK_OBJECT_CLASS priv_cls = CKO_PRIVATE_KEY, pub_cls = CKO_PUBLIC_KEY;
	CK_KEY_TYPE kt = CKK_RSA;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE priv[8 + 12], pub[7 + 2];
	CK_FUNCTION_LIST *f = NULL;
	CK_SLOT_ID slots[16];
	CK_ULONG nslots = 16, np = 0, nu = 0;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_OBJECT_HANDLE h;
	CK_TOKEN_INFO ti;
	EVP_PKEY *pk = NULL;
	BIO *b = BIO_new_mem_buf(TV_PRIVATE_KEY, -1);
	int r = -1;
	CK_RV rv;

	pk = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	if (pk == NULL)
		return -1;
#define ADD(arr, n, t, p, l) do { (arr)[(n)].type = (t); (arr)[(n)].pValue = (p); (arr)[(n)].ulValueLen = (l); (n)++; } while (0)
	ADD(priv, np, CKA_CLASS, &priv_cls, sizeof(priv_cls));
	ADD(priv, np, CKA_KEY_TYPE, &kt, sizeof(kt));
	ADD(priv, np, CKA_TOKEN, &yes, sizeof(yes));
	ADD(priv, np, CKA_PRIVATE, &yes, sizeof(yes));
	ADD(priv, np, CKA_SENSITIVE, &yes, sizeof(yes));
	ADD(priv, np, CKA_EXTRACTABLE, &no, sizeof(no));
	ADD(priv, np, CKA_SIGN, &yes, sizeof(yes));
	ADD(priv, np, CKA_DECRYPT, &no, sizeof(no));
	ADD(priv, np, CKA_UNWRAP, &no, sizeof(no));
	ADD(priv, np, CKA_LABEL, KEY_NAME, strlen(KEY_NAME));
	ADD(priv, np, CKA_ID, id, sizeof(id) - 1);
	ADD(pub, nu, CKA_CLASS, &pub_cls, sizeof(pub_cls));
	ADD(pub, nu, CKA_KEY_TYPE, &kt, sizeof(kt));
	ADD(pub, nu, CKA_TOKEN, &yes, sizeof(yes));
	ADD(pub, nu, CKA_PRIVATE, &no, sizeof(no));
	ADD(pub, nu, CKA_VERIFY, &yes, sizeof(yes));
	ADD(pub, nu, CKA_LABEL, KEY_NAME, strlen(KEY_NAME));
	ADD(pub, nu, CKA_ID, id, sizeof(id) - 1);
	for (int i = 0; i < 8; i++) {
		CK_ULONG l = component(pk, names[i], comp[i], sizeof(comp[i]));

		if (l == 0)
			goto out;
		ADD(priv, np, types[i], comp[i], l);
		if (i < 2)
			ADD(pub, nu, types[i], comp[i], l);
	}
#undef ADD
	if ((f = p11_kit_module_load(d.token.module, P11_KIT_MODULE_UNMANAGED)) == NULL)
		goto out;
	rv = p11_kit_module_initialize(f);
	if (rv != CKR_OK)
		goto out;
	if (f->C_GetSlotList(CK_TRUE, slots, &nslots) != CKR_OK)
		goto fin;
	for (CK_ULONG i = 0; i < nslots && s == CK_INVALID_HANDLE; i++)
		if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK && memcmp(ti.label, "keysvc-oci ", 11) == 0 &&
		    f->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) != CKR_OK)
			s = CK_INVALID_HANDLE;
	if (s == CK_INVALID_HANDLE) {
		fprintf(stderr, "import: no token labelled keysvc-oci among %lu slots\n", (unsigned long)nslots);
		goto fin;
	}
	rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR *)d.token.pin, d.token.pin_len);
	if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
		if ((rv = f->C_CreateObject(s, priv, np, &h)) != CKR_OK)
			fprintf(stderr, "import: private key refused\n");
		else if ((rv = f->C_CreateObject(s, pub, nu, &h)) != CKR_OK)
			fprintf(stderr, "import: public key refused\n");
		r = rv == CKR_OK ? 0 : -1;
	}
	if (rv != CKR_OK)
		fprintf(stderr, "import: CK_RV 0x%lx\n", (unsigned long)rv);
	f->C_CloseSession(s);
fin:
	p11_kit_module_finalize(f);
out:
	if (f != NULL)
		p11_kit_module_release(f);
	OPENSSL_cleanse(comp, sizeof(comp));
	EVP_PKEY_free(pk);
	return r;
}

static int setup(void **state)
{
	char policy[256];

	(void)state;
	snprintf(policy, sizeof(policy),
		 "[{\"uid\": %u, \"keys\": [\"oci-*\"], \"ops\": [\"sign\", \"key.public\", \"key.list\"]}]",
		 (unsigned)getuid());
	if (ks_td_init(&d, "keysvc-oci", policy, 0, 0) != 0)
		return -1;
	if (import_test_key() != 0) {
		fprintf(stderr, "importing the published test key into the token failed\n");
		return -1;
	}
	return ks_td_start(&d);
}

static int teardown(void **state)
{
	(void)state;
	ks_td_teardown(&d);
	return 0;
}

struct signer {
	keysvc *ks;
	int calls;
};

/* As keysvc-oci signs: the signing string itself, which keysvcd checks and hashes. */
static int daemon_signer(void *arg, const uint8_t *data, size_t len, uint8_t **sig, size_t *sig_len)
{
	struct signer *s = arg;

	s->calls++;
	return keysvc_sign_data(s->ks, KEY_NAME, "rsa-pkcs1-sha256", data, len, sig, sig_len) == KEYSVC_OK ?
	       0 : -EACCES;
}

/* keysvcd sees the key as the published one, and will not hand out the private part. */
static void test_key_is_the_published_one(void **state)
{
	keysvc *ks = NULL;
	char *pem = NULL, *type = NULL;

	(void)state;
	assert_int_equal(keysvc_connect(d.socket_path, &ks), KEYSVC_OK);
	assert_int_equal(keysvc_key_public(ks, KEY_NAME, &pem, &type), KEYSVC_OK);
	assert_string_equal(pem, TV_PUBLIC_KEY);
	free(pem);
	free(type);
	keysvc_close(ks);
}

/*
 * The key is http-signature only: keysvcd says so, and refuses what the
 * digest form of before would have sent (the SHA-256 of the very signing
 * string), arbitrary data and a TLS 1.3 CertificateVerify content.
 */
static void test_key_is_http_signature_only(void **state)
{
	static const char tls13[] = "                                                                "
				    "TLS 1.3, server CertificateVerify";
	uint8_t md[32], tls[sizeof(tls13) + 32], *sig = NULL;
	size_t sig_len = 0;
	char *purposes = NULL;
	keysvc *ks = NULL;
	int legacy = -1;

	(void)state;
	assert_int_equal(keysvc_connect(d.socket_path, &ks), KEYSVC_OK);
	assert_int_equal(keysvc_key_purposes(ks, KEY_NAME, &purposes, &legacy), KEYSVC_OK);
	assert_string_equal(purposes, "http-signature");
	assert_int_equal(legacy, 0);
	free(purposes);
	assert_non_null(EVP_Digest(TV_GET_SIGNING_STRING, strlen(TV_GET_SIGNING_STRING), md, NULL,
				   EVP_sha256(), NULL));
	assert_int_equal(keysvc_sign_digest(ks, KEY_NAME, "rsa-pkcs1-sha256", md, 32, &sig, &sig_len),
			 KEYSVC_E_DENIED);
	assert_non_null(strstr(keysvc_error_message(ks), "http-signature"));
	assert_int_equal(keysvc_sign_data(ks, KEY_NAME, "rsa-pkcs1-sha256", (const uint8_t *)"I owe you", 9,
					  &sig, &sig_len), KEYSVC_E_DENIED);
	memcpy(tls, tls13, sizeof(tls13));       /* with its NUL */
	memset(tls + sizeof(tls13), 0xab, 32);
	assert_int_equal(keysvc_sign_data(ks, KEY_NAME, "rsa-pkcs1-sha256", tls, sizeof(tls), &sig, &sig_len),
			 KEYSVC_E_DENIED);
	assert_null(sig);
	keysvc_close(ks);
}

static void test_get_vector(void **state)
{
	struct oci_request rq = { .method = "GET", .url = TV_GET_URL, .date = TV_DATE };
	struct oci_signed s = { 0 };
	struct signer sg = { 0 };

	(void)state;
	assert_int_equal(keysvc_connect(d.socket_path, &sg.ks), KEYSVC_OK);
	assert_int_equal(oci_sign(&rq, TV_KEY_ID, daemon_signer, &sg, &s), 0);
	assert_int_equal(sg.calls, 1);
	assert_string_equal(s.signing_string, TV_GET_SIGNING_STRING);
	assert_string_equal(s.signature_b64, TV_GET_SIGNATURE);
	assert_string_equal(s.authorization, TV_GET_AUTHORIZATION);
	oci_signed_free(&s);
	keysvc_close(sg.ks);
}

static void test_post_vector(void **state)
{
	struct oci_request rq = { .method = "POST", .url = TV_POST_URL, .date = TV_DATE,
				  .content_type = "application/json", .body = TV_POST_BODY,
				  .body_len = sizeof(TV_POST_BODY) - 1 };
	struct oci_signed s = { 0 };
	struct signer sg = { 0 };

	(void)state;
	assert_int_equal(keysvc_connect(d.socket_path, &sg.ks), KEYSVC_OK);
	assert_int_equal(oci_sign(&rq, TV_KEY_ID, daemon_signer, &sg, &s), 0);
	assert_string_equal(s.signing_string, TV_POST_SIGNING_STRING);
	assert_string_equal(s.signature_b64, TV_POST_SIGNATURE);
	assert_string_equal(s.authorization, TV_POST_AUTHORIZATION);
	oci_signed_free(&s);
	keysvc_close(sg.ks);
}

/* Run keysvc-oci with @args (a shell-quoted string); its stdout in a new string. */
static char *run_cli(const char *args, int *status)
{
	char cmd[8192], *out = malloc(65536);
	size_t n = 0, got;
	FILE *p;

	assert_non_null(out);
	snprintf(cmd, sizeof(cmd), "'%s' sign-request --socket '%s' %s", oci_cli, d.socket_path, args);
	p = popen(cmd, "r");
	assert_non_null(p);
	while (n < 65535 && (got = fread(out + n, 1, 65535 - n, p)) > 0)
		n += got;
	out[n] = '\0';
	*status = pclose(p);
	return out;
}

static void test_cli_get(void **state)
{
	int st;
	char *out = run_cli("--key " KEY_NAME " --key-id '" TV_KEY_ID "' --method GET --url '" TV_GET_URL "' "
			    "--date '" TV_DATE "'", &st);

	(void)state;
	assert_int_equal(st, 0);
	assert_string_equal(out, "date: " TV_DATE "\nhost: iaas.us-phoenix-1.oraclecloud.com\n"
			    "authorization: " TV_GET_AUTHORIZATION "\n");
	free(out);
}

static void test_cli_post(void **state)
{
	char body[] = "/tmp/keysvc-oci-body.XXXXXX", args[2048];
	int fd = mkstemp(body), st;
	char *out;

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, TV_POST_BODY, sizeof(TV_POST_BODY) - 1), (ssize_t)sizeof(TV_POST_BODY) - 1);
	close(fd);
	snprintf(args, sizeof(args), "--key " KEY_NAME " --key-id '" TV_KEY_ID "' --method POST --url '"
		 TV_POST_URL "' --date '" TV_DATE "' --body-file '%s'", body);
	out = run_cli(args, &st);
	unlink(body);
	assert_int_equal(st, 0);
	assert_string_equal(out, "date: " TV_DATE "\nhost: iaas.us-phoenix-1.oraclecloud.com\n"
			    "content-length: 316\ncontent-type: application/json\n"
			    "x-content-sha256: " TV_POST_SHA256 "\n"
			    "authorization: " TV_POST_AUTHORIZATION "\n");
	free(out);
}

/* A key keysvcd does not have, and a keyId that would break the header: clear errors, no headers. */
static void test_cli_errors(void **state)
{
	int st;
	char *out;

	(void)state;
	out = run_cli("--key oci-none --key-id k --method GET --url https://h/ 2>/dev/null", &st);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 14);
	assert_string_equal(out, "");
	free(out);
	out = run_cli("--key " KEY_NAME " --key-id 'a\"b' --method GET --url https://h/ 2>/dev/null", &st);
	assert_int_equal(WEXITSTATUS(st), 2);
	assert_string_equal(out, "");
	free(out);
	out = run_cli("--key " KEY_NAME " --key-id k --method GET --url http://h/ 2>/dev/null", &st);
	assert_int_equal(WEXITSTATUS(st), 2);
	free(out);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_is_the_published_one),
		cmocka_unit_test(test_key_is_http_signature_only),
		cmocka_unit_test(test_get_vector),
		cmocka_unit_test(test_post_vector),
		cmocka_unit_test(test_cli_get),
		cmocka_unit_test(test_cli_post),
		cmocka_unit_test(test_cli_errors),
	};

	if (argc != 2) {
		fprintf(stderr, "usage: %s KEYSVC-OCI\n", argv[0]);
		return 2;
	}
	oci_cli = argv[1];
	return cmocka_run_group_tests(tests, setup, teardown);
}
