/*
 * OCI request signing against Oracle's published test values: the signing
 * strings, signatures and Authorization headers must come out byte for
 * byte, with the published test key in OpenSSL as the signer. Plus the
 * refusals (bad URLs, methods, keyIds, header injection).
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
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "clients/renew/oci/ocisign.h"
#include "proto/sigform.h"
#include "tests/oci/oci_test_vectors.h"

static EVP_PKEY *test_key;
static int signer_calls;

static int setup(void **state)
{
	BIO *b = BIO_new_mem_buf(TV_PRIVATE_KEY, -1);

	(void)state;
	test_key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	return test_key != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(test_key);
	return 0;
}

/*
 * The signer callback, as keysvcd would be with a key whose only purpose
 * is http-signature: it signs (PKCS#1 v1.5 with SHA-256) only a message
 * that proto/sigform takes for an HTTP signature signing string.
 */
static int openssl_signer(void *arg, const uint8_t *data, size_t len, uint8_t **sig, size_t *sig_len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	const char *why = NULL;
	size_t n = 0;
	int r = -EIO;

	signer_calls++;
	*sig = NULL;
	if (ks_sigform_check(KS_PURPOSE_HTTP_SIGNATURE, data, len, &why) != 0) {
		fprintf(stderr, "an http-signature key would not sign this: %s\n", why);
		r = -EACCES;
		goto out;
	}
	if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, (EVP_PKEY *)arg) != 1 ||
	    EVP_DigestSign(md, NULL, &n, data, len) != 1 || (*sig = malloc(n)) == NULL ||
	    EVP_DigestSign(md, *sig, &n, data, len) != 1) {
		free(*sig);
		*sig = NULL;
		goto out;
	}
	*sig_len = n;
	r = 0;
out:
	EVP_MD_CTX_free(md);
	return r;
}

static int failing_signer(void *arg, const uint8_t *data, size_t len, uint8_t **sig, size_t *sig_len)
{
	(void)arg;
	(void)data;
	(void)len;
	(void)sig_len;
	*sig = NULL;
	return -EACCES;
}

static void test_get_vector(void **state)
{
	struct oci_request rq = { .method = "GET", .url = TV_GET_URL, .date = TV_DATE };
	struct oci_signed s = { 0 };
	const char *const *h;

	(void)state;
	assert_int_equal(oci_sign(&rq, TV_KEY_ID, openssl_signer, test_key, &s), 0);
	assert_string_equal(s.signing_string, TV_GET_SIGNING_STRING);
	assert_string_equal(s.signature_b64, TV_GET_SIGNATURE);
	assert_string_equal(s.authorization, TV_GET_AUTHORIZATION);
	assert_int_equal(s.has_body, 0);
	h = oci_headers(&s);
	assert_non_null(h);
	assert_string_equal(h[0], "date: " TV_DATE);
	assert_string_equal(h[1], "host: iaas.us-phoenix-1.oraclecloud.com");
	assert_string_equal(h[2], "authorization: " TV_GET_AUTHORIZATION);
	assert_null(h[3]);
	oci_signed_free(&s);
}

static void test_post_vector(void **state)
{
	struct oci_request rq = { .method = "POST", .url = TV_POST_URL, .date = TV_DATE,
				  .content_type = "application/json", .body = TV_POST_BODY,
				  .body_len = sizeof(TV_POST_BODY) - 1 };
	struct oci_signed s = { 0 };
	const char *const *h;

	(void)state;
	assert_int_equal(sizeof(TV_POST_BODY) - 1, 316);
	assert_int_equal(oci_sign(&rq, TV_KEY_ID, openssl_signer, test_key, &s), 0);
	assert_string_equal(s.content_sha256, TV_POST_SHA256);
	assert_string_equal(s.content_length, "316");
	assert_string_equal(s.signing_string, TV_POST_SIGNING_STRING);
	assert_string_equal(s.signature_b64, TV_POST_SIGNATURE);
	assert_string_equal(s.authorization, TV_POST_AUTHORIZATION);
	h = oci_headers(&s);
	assert_non_null(h);
	assert_string_equal(h[0], "date: " TV_DATE);
	assert_string_equal(h[1], "host: iaas.us-phoenix-1.oraclecloud.com");
	assert_string_equal(h[2], "content-length: 316");
	assert_string_equal(h[3], "content-type: application/json");
	assert_string_equal(h[4], "x-content-sha256: " TV_POST_SHA256);
	assert_string_equal(h[5], "authorization: " TV_POST_AUTHORIZATION);
	assert_null(h[6]);
	oci_signed_free(&s);
}

/* Lower-case methods and a default content type give the same POST signature. */
static void test_post_defaults(void **state)
{
	struct oci_request rq = { .method = "post", .url = TV_POST_URL, .date = TV_DATE,
				  .body = TV_POST_BODY, .body_len = sizeof(TV_POST_BODY) - 1 };
	struct oci_signed s = { 0 };

	(void)state;
	assert_int_equal(oci_sign(&rq, TV_KEY_ID, openssl_signer, test_key, &s), 0);
	assert_string_equal(s.authorization, TV_POST_AUTHORIZATION);
	oci_signed_free(&s);
}

static void test_methods(void **state)
{
	static const char *const plain[] = { "GET", "DELETE", "HEAD", "delete" };
	static const char *const body[] = { "PUT", "PATCH", "post" };
	struct oci_request rq = { .url = "https://h.example/a/b?c=d%20e", .date = TV_DATE };
	struct oci_signed s = { 0 };

	(void)state;
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		rq.method = plain[i];
		assert_int_equal(oci_signing_string(&rq, &s), 0);
		assert_int_equal(s.has_body, 0);
		assert_non_null(strstr(s.signing_string, "\n(request-target): "));
		assert_null(strstr(s.signing_string, "content-length"));
	}
	rq.method = "DELETE";
	assert_int_equal(oci_signing_string(&rq, &s), 0);
	assert_string_equal(s.signing_string, "date: " TV_DATE "\n(request-target): delete /a/b?c=d%20e\n"
			    "host: h.example");
	for (size_t i = 0; i < sizeof(body) / sizeof(body[0]); i++) {
		rq.method = body[i];
		assert_int_equal(oci_signing_string(&rq, &s), 0);
		assert_int_equal(s.has_body, 1);
		/* An empty body: SHA-256 of nothing, length 0. */
		assert_string_equal(s.content_length, "0");
		assert_string_equal(s.content_sha256, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
	}
	rq.method = "PUT";
	rq.body = "{}";
	rq.body_len = 2;
	rq.content_type = "application/json; charset=utf-8";
	assert_int_equal(oci_signing_string(&rq, &s), 0);
	assert_string_equal(s.signing_string, "date: " TV_DATE "\n(request-target): put /a/b?c=d%20e\n"
			    "host: h.example\ncontent-length: 2\ncontent-type: application/json; charset=utf-8\n"
			    "x-content-sha256: RBNvo1WzZ4oRRq0W9+hknpT7T8If536DEMBg9hyq/4o=");
	oci_signed_free(&s);
}

static void test_urls(void **state)
{
	char *host = NULL, *target = NULL;

	(void)state;
	assert_int_equal(oci_url_split("https://h:8443/x/y?z=1", &host, &target), 0);
	assert_string_equal(host, "h:8443");
	assert_string_equal(target, "/x/y?z=1");
	free(host);
	free(target);
	assert_int_equal(oci_url_split("https://h", &host, &target), 0);
	assert_string_equal(target, "/");
	free(host);
	free(target);
	assert_int_equal(oci_url_split("https://h?q", &host, &target), 0);
	assert_string_equal(host, "h");
	assert_string_equal(target, "/?q");
	free(host);
	free(target);
	assert_int_equal(oci_url_split("http://h/x", &host, &target), -EINVAL);
	assert_int_equal(oci_url_split("https:///x", &host, &target), -EINVAL);
	assert_int_equal(oci_url_split("https://u:p@h/x", &host, &target), -EINVAL);
	assert_int_equal(oci_url_split("https://h/x#frag", &host, &target), -EINVAL);
	assert_int_equal(oci_url_split("https://h/x y", &host, &target), -EINVAL);
	assert_int_equal(oci_url_split("https://h/x\r\nEvil: 1", &host, &target), -EINVAL);
	assert_null(host);
	assert_null(target);
}

static void test_refusals(void **state)
{
	struct oci_request rq = { .method = "GET", .url = TV_GET_URL, .date = TV_DATE };
	struct oci_signed s = { 0 };
	char big[OCI_KEY_ID_MAX + 2];

	(void)state;
	signer_calls = 0;
	assert_int_equal(oci_sign(&rq, "a\"b", openssl_signer, test_key, &s), -EINVAL);
	assert_int_equal(oci_sign(&rq, "a b", openssl_signer, test_key, &s), -EINVAL);
	assert_int_equal(oci_sign(&rq, "", openssl_signer, test_key, &s), -EINVAL);
	assert_int_equal(oci_sign(&rq, "a\\b", openssl_signer, test_key, &s), -EINVAL);
	memset(big, 'k', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(oci_sign(&rq, big, openssl_signer, test_key, &s), -EINVAL);
	assert_int_equal(signer_calls, 0);
	assert_null(s.authorization);
	/* A session-token keyId of the maximum length is fine. */
	big[OCI_KEY_ID_MAX] = '\0';
	memcpy(big, "ST$", 3);
	assert_int_equal(oci_sign(&rq, big, openssl_signer, test_key, &s), 0);
	assert_int_equal(signer_calls, 1);

	rq.method = "GE T";
	assert_int_equal(oci_sign(&rq, TV_KEY_ID, openssl_signer, test_key, &s), -EINVAL);
	rq.method = "";
	assert_int_equal(oci_sign(&rq, TV_KEY_ID, openssl_signer, test_key, &s), -EINVAL);
	rq.method = "GET";
	rq.date = "Thu, 05 Jan 2014\r\nX-Evil: 1";
	assert_int_equal(oci_sign(&rq, TV_KEY_ID, openssl_signer, test_key, &s), -EINVAL);
	rq.date = TV_DATE;
	rq.method = "POST";
	rq.content_type = "text/plain\nX: y";
	assert_int_equal(oci_sign(&rq, TV_KEY_ID, openssl_signer, test_key, &s), -EINVAL);
	rq.content_type = NULL;
	rq.body_len = 5;   /* a length without a body */
	assert_int_equal(oci_sign(&rq, TV_KEY_ID, openssl_signer, test_key, &s), -EINVAL);
	rq.body_len = 0;
	/* The signer's error comes back as is, and nothing is half-made. */
	assert_int_equal(oci_sign(&rq, TV_KEY_ID, failing_signer, NULL, &s), -EACCES);
	assert_null(s.authorization);
	assert_null(oci_headers(&s));
	oci_signed_free(&s);
	oci_signed_free(NULL);
}

static void test_date(void **state)
{
	char buf[OCI_DATE_MAX];

	(void)state;
	assert_int_equal(oci_http_date(784111777, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
	assert_int_equal(oci_http_date(0, buf, 10), -EINVAL);
}

/* Without a date, now is used, in HTTP form. */
static void test_date_now(void **state)
{
	struct oci_request rq = { .method = "GET", .url = "https://h/" };
	struct oci_signed s = { 0 };

	(void)state;
	assert_int_equal(oci_signing_string(&rq, &s), 0);
	assert_int_equal(strlen(s.date), 29);
	assert_string_equal(s.date + 25, " GMT");
	oci_signed_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_vector),
		cmocka_unit_test(test_post_vector),
		cmocka_unit_test(test_post_defaults),
		cmocka_unit_test(test_methods),
		cmocka_unit_test(test_urls),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_date),
		cmocka_unit_test(test_date_now),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
