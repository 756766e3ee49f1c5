/* The pure parts of keysvc-cce (clients/cce/cce.h). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "clients/cce/cce.h"
#include "proto/b64.h"

static void test_component(void **state)
{
	enum cce_component c;

	(void)state;
	assert_int_equal(cce_component_parse("all", &c), 0);
	assert_int_equal(c, CCE_COMPONENT_ALL);
	assert_int_equal(cce_component_parse("service-account-controller", &c), 0);
	assert_int_equal(c, CCE_COMPONENT_SA_CONTROLLER);
	assert_int_equal(cce_component_parse("custom", &c), 0);
	assert_int_equal(c, CCE_COMPONENT_CUSTOM);
	assert_string_equal(cce_component_name(CCE_COMPONENT_SA_CONTROLLER), "service-account-controller");
	assert_int_equal(cce_component_parse("All", &c), -EINVAL);
	assert_int_equal(cce_component_parse("", &c), -EINVAL);
	assert_int_equal(cce_component_parse(NULL, &c), -EINVAL);
}

static void test_ids(void **state)
{
	char s65[66];

	(void)state;
	assert_true(cce_id_ok("a"));
	assert_true(cce_id_ok("0a1b2c3d4e5f60718293a4b5c6d7e8f9"));
	assert_true(cce_id_ok("2ec9b78d-9368-46f3-8f29-d1a95622a568"));
	memset(s65, 'a', 64);
	s65[64] = '\0';
	assert_true(cce_id_ok(s65));
	s65[64] = 'a';
	s65[65] = '\0';
	assert_false(cce_id_ok(s65));
	assert_false(cce_id_ok(""));
	assert_false(cce_id_ok(NULL));
	assert_false(cce_id_ok("a/b"));
	assert_false(cce_id_ok(".."));
	assert_false(cce_id_ok("a%2f"));
	assert_false(cce_id_ok("a?b"));
	assert_false(cce_id_ok("a b"));
	assert_false(cce_id_ok("a_b"));
	assert_false(cce_id_ok("caf\xc3\xa9"));
}

static void test_endpoint(void **state)
{
	(void)state;
	assert_true(cce_endpoint_ok("https://cce.ap-southeast-1.myhuaweicloud.com"));
	assert_true(cce_endpoint_ok("https://cce.ap-southeast-1.myhuaweicloud.com/"));
	assert_true(cce_endpoint_ok("HTTPS://127.0.0.1:8443"));
	assert_true(cce_endpoint_ok("https://[::1]:443"));
	assert_false(cce_endpoint_ok("http://cce.example.com"));
	assert_false(cce_endpoint_ok("cce.example.com"));
	assert_false(cce_endpoint_ok("https://"));
	assert_false(cce_endpoint_ok("https:///"));
	assert_false(cce_endpoint_ok("https://host/api"));
	assert_false(cce_endpoint_ok("https://host//"));
	assert_false(cce_endpoint_ok("https://user@host"));
	assert_false(cce_endpoint_ok("https://host?x"));
	assert_false(cce_endpoint_ok("https://host:"));
	assert_false(cce_endpoint_ok("https://host:1234567"));
	assert_false(cce_endpoint_ok("https://host:12a"));
	assert_false(cce_endpoint_ok("https://[]"));
	assert_false(cce_endpoint_ok("https://[::1"));
	assert_false(cce_endpoint_ok(NULL));
}

static void test_urls(void **state)
{
	char *u;

	(void)state;
	u = cce_rotate_url("https://cce.example.com/", "p1", "c-2");
	assert_string_equal(u, "https://cce.example.com/api/v3/projects/p1/clusters/c-2/rotatecredentials");
	free(u);
	u = cce_job_url("https://127.0.0.1:8443", "p1", "2ec9b78d-9368");
	assert_string_equal(u, "https://127.0.0.1:8443/api/v3/projects/p1/jobs/2ec9b78d-9368");
	free(u);
	assert_null(cce_rotate_url("http://cce.example.com", "p", "c"));
	assert_null(cce_rotate_url("https://cce.example.com", "p/../x", "c"));
	assert_null(cce_rotate_url("https://cce.example.com", "p", ""));
	assert_null(cce_job_url("https://cce.example.com", "p", "../../x"));
}

static json_t *body_json(enum cce_component c, long hours, const struct cce_custom *custom)
{
	char err[CCE_ERR_MAX], *body = NULL;
	size_t len = 0;
	json_t *j;

	assert_int_equal(cce_rotate_body(c, hours, custom, &body, &len, err), 0);
	assert_int_equal(strlen(body), len);
	j = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
	assert_non_null(j);
	OPENSSL_clear_free(body, len);
	return j;
}

static void test_body_simple(void **state)
{
	json_t *j;

	(void)state;
	j = body_json(CCE_COMPONENT_SA_CONTROLLER, -1, NULL);
	assert_int_equal(json_object_size(j), 1);
	assert_string_equal(json_string_value(json_object_get(j, "component")), "service-account-controller");
	json_decref(j);

	j = body_json(CCE_COMPONENT_ALL, 0, NULL);
	assert_int_equal(json_object_size(j), 2);
	assert_true(json_is_integer(json_object_get(j, "certificateExpirationTime")));
	assert_int_equal(json_integer_value(json_object_get(j, "certificateExpirationTime")), 0);
	json_decref(j);

	j = body_json(CCE_COMPONENT_ALL, 8784, NULL);
	assert_int_equal(json_integer_value(json_object_get(j, "certificateExpirationTime")), 8784);
	json_decref(j);
}

static void test_body_refused(void **state)
{
	static const uint8_t x[] = "x";
	struct cce_custom cu = { x, 1, x, 1, x, 1 };
	char err[CCE_ERR_MAX], *body = (char *)1;
	size_t len = 1;

	(void)state;
	assert_int_equal(cce_rotate_body(CCE_COMPONENT_ALL, 8785, NULL, &body, &len, err), -EINVAL);
	assert_null(body);
	assert_int_equal(len, 0);
	assert_non_null(strstr(err, "0..8784"));
	assert_int_equal(cce_rotate_body(CCE_COMPONENT_CUSTOM, -1, NULL, &body, &len, err), -EINVAL);
	assert_non_null(strstr(err, "custom"));
	assert_int_equal(cce_rotate_body(CCE_COMPONENT_ALL, -1, &cu, &body, &len, err), -EINVAL);
	assert_non_null(strstr(err, "only with component custom"));
	cu.key_len = 0;
	assert_int_equal(cce_rotate_body(CCE_COMPONENT_CUSTOM, -1, &cu, &body, &len, err), -EINVAL);
	assert_non_null(strstr(err, "private key is empty"));
	cu.key_len = CCE_CUSTOM_FILE_MAX + 1;
	assert_int_equal(cce_rotate_body(CCE_COMPONENT_CUSTOM, -1, &cu, &body, &len, err), -EINVAL);
	assert_non_null(strstr(err, "over"));
	assert_int_equal(cce_rotate_body((enum cce_component)7, -1, NULL, &body, &len, err), -EINVAL);
}

static void check_part(json_t *content, const char *name, const uint8_t *want, size_t want_len)
{
	json_t *v = json_object_get(content, name);
	uint8_t *dec = NULL;
	size_t n = 0;

	assert_true(json_is_string(v));
	assert_int_equal(ks_b64_decode(json_string_value(v), json_string_length(v), CCE_CUSTOM_FILE_MAX, &dec, &n), 0);
	assert_int_equal(n, want_len);
	assert_memory_equal(dec, want, n);
	free(dec);
}

static void test_body_custom(void **state)
{
	uint8_t *big = malloc(CCE_CUSTOM_FILE_MAX);
	static const uint8_t ca[] = { 0, 1, 2, 0xff }, cert[] = "-----BEGIN CERTIFICATE-----\n";
	struct cce_custom cu = { ca, sizeof(ca), cert, sizeof(cert) - 1, NULL, CCE_CUSTOM_FILE_MAX };
	json_t *j, *content;

	(void)state;
	assert_non_null(big);
	for (size_t i = 0; i < CCE_CUSTOM_FILE_MAX; i++)
		big[i] = (uint8_t)(i * 7);
	cu.key = big;
	j = body_json(CCE_COMPONENT_CUSTOM, 48, &cu);
	assert_string_equal(json_string_value(json_object_get(j, "component")), "custom");
	assert_int_equal(json_integer_value(json_object_get(j, "certificateExpirationTime")), 48);
	content = json_object_get(j, "certContent");
	assert_true(json_is_object(content));
	assert_int_equal(json_object_size(content), 3);
	check_part(content, "ca", ca, sizeof(ca));
	check_part(content, "cert", cert, sizeof(cert) - 1);
	check_part(content, "privateKey", big, CCE_CUSTOM_FILE_MAX);
	json_decref(j);
	free(big);
}

static void test_jobid(void **state)
{
	char jobid[CCE_ID_MAX + 1], err[CCE_ERR_MAX];
	static const char ok[] = "{\"jobid\" : \"2ec9b78d-9368-46f3-8f29-d1a95622a568\"}";
	static const char *const bad[] = {
		"", "not json", "[]", "{}", "{\"jobid\": 5}", "{\"jobid\": \"\"}", "{\"jobid\": \"../../x\"}",
		"{\"jobid\": \"a\", \"jobid\": \"b\"}", "{\"jobID\": \"a\"}",
	};

	(void)state;
	assert_int_equal(cce_parse_jobid(ok, strlen(ok), jobid, err), 0);
	assert_string_equal(jobid, "2ec9b78d-9368-46f3-8f29-d1a95622a568");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(cce_parse_jobid(bad[i], strlen(bad[i]), jobid, err), -EBADMSG);
		assert_string_equal(jobid, "");
		assert_true(strlen(err) > 0);
	}
	assert_int_equal(cce_parse_jobid(NULL, 0, jobid, err), -EBADMSG);
}

static void test_error_shapes(void **state)
{
	char code[64], msg[256];
	static const char s1[] = "{\"errorCode\": \"CCE.01400001\", \"errorMessage\": \"Invalid request.\"}";
	static const char s2[] = "{\"error_code\": \"APIGW.0301\", \"error_msg\": \"Incorrect IAM authentication\","
				 " \"request_id\": \"x\"}";
	static const char ctl[] = "{\"errorCode\": \"C\", \"errorMessage\": \"line1\\nline2\\u001b[31m\"}";
	static const char both[] = "{\"kind\": \"Status\", \"status\": \"Failure\", \"code\": 404, "
				   "\"errorCode\": \"CCE.01404001\", \"errorMessage\": \"Resource not found\", "
				   "\"error_code\": \"CCE_CM.0004\", \"error_msg\": \"Request resource not found\"}";
	static const char same[] = "{\"errorCode\": \"CCE.01400001\", \"errorMessage\": \"Invalid request.\", "
				   "\"error_code\": \"CCE.01400001\", \"error_msg\": \"Invalid request.\"}";

	(void)state;
	assert_int_equal(cce_parse_error(s1, strlen(s1), code, sizeof(code), msg, sizeof(msg)), 0);
	assert_string_equal(code, "CCE.01400001");
	assert_string_equal(msg, "Invalid request.");
	assert_int_equal(cce_parse_error(s2, strlen(s2), code, sizeof(code), msg, sizeof(msg)), 0);
	assert_string_equal(code, "APIGW.0301");
	assert_string_equal(msg, "Incorrect IAM authentication");
	assert_int_equal(cce_parse_error(ctl, strlen(ctl), code, sizeof(code), msg, sizeof(msg)), 0);
	assert_string_equal(msg, "line1 line2?[31m");
	/* Cut, with a mark. */
	assert_int_equal(cce_parse_error(s1, strlen(s1), code, 6, msg, 8), 0);
	assert_string_equal(code, "CC...");
	assert_string_equal(msg, "Inva...");
	assert_int_equal(cce_parse_error("{}", 2, code, sizeof(code), msg, sizeof(msg)), -EBADMSG);
	/* CCE's own answer: both pairs, the specific one (error_code) first. */
	assert_int_equal(cce_parse_error(both, strlen(both), code, sizeof(code), msg, sizeof(msg)), 0);
	assert_string_equal(code, "CCE_CM.0004");
	assert_string_equal(msg, "Request resource not found; CCE.01404001: Resource not found");
	/* The same pair under both spellings is said once. */
	assert_int_equal(cce_parse_error(same, strlen(same), code, sizeof(code), msg, sizeof(msg)), 0);
	assert_string_equal(code, "CCE.01400001");
	assert_string_equal(msg, "Invalid request.");
	assert_int_equal(cce_parse_error("<html>", 6, code, sizeof(code), msg, sizeof(msg)), -EBADMSG);
	assert_string_equal(code, "");
	assert_string_equal(msg, "");
}

static void test_format_error(void **state)
{
	char buf[CCE_ERR_MAX];
	static const char s1[] = "{\"errorCode\": \"CCE.01400001\", \"errorMessage\": \"Invalid request.\"}";
	static const char s2[] = "{\"error_code\": \"APIGW.0307\", \"error_msg\": \"The token must be updated.\"}";
	static const char both[] = "{\"errorCode\": \"CCE.01404001\", \"errorMessage\": \"Resource not found\", "
				   "\"error_code\": \"CCE_CM.0004\", \"error_msg\": \"Request resource not found\"}";

	(void)state;
	cce_format_error("the rotation", 400, s1, strlen(s1), buf, sizeof(buf));
	assert_string_equal(buf, "CCE refused the rotation: CCE.01400001: Invalid request. (HTTP 400)");
	cce_format_error("the rotation", 401, s2, strlen(s2), buf, sizeof(buf));
	assert_string_equal(buf, "CCE refused the rotation: the token is invalid or expired: APIGW.0307: "
			    "The token must be updated. (HTTP 401)");
	cce_format_error("the rotation", 403, "", 0, buf, sizeof(buf));
	assert_string_equal(buf, "CCE refused the rotation: the token's user may not rotate this cluster's "
			    "credentials (HTTP 403)");
	cce_format_error("the job query", 404, s1, strlen(s1), buf, sizeof(buf));
	assert_string_equal(buf, "CCE refused the job query: no such project or cluster: CCE.01400001: "
			    "Invalid request. (HTTP 404)");
	cce_format_error("the job query", 404, both, strlen(both), buf, sizeof(buf));
	assert_string_equal(buf, "CCE refused the job query: no such project or cluster: CCE_CM.0004: Request "
			    "resource not found; CCE.01404001: Resource not found (HTTP 404)");
	cce_format_error("the rotation", 502, "Bad gateway\r\nmore", 18, buf, sizeof(buf));
	assert_string_equal(buf, "CCE refused the rotation: \"Bad gateway\" (HTTP 502)");
	cce_format_error("the rotation", 500, NULL, 0, buf, sizeof(buf));
	assert_string_equal(buf, "CCE refused the rotation: no explanation (HTTP 500)");
	cce_format_error("the rotation", 400, s1, strlen(s1), buf, 20);
	assert_int_equal(strlen(buf), 19);
}

static void expect_job(const char *body, int want_r, enum cce_phase want, const char *want_reason)
{
	enum cce_phase p = (enum cce_phase)99;
	char text[64], reason[256], err[CCE_ERR_MAX];
	int r = cce_parse_job(body, strlen(body), &p, text, sizeof(text), reason, sizeof(reason), err);

	assert_int_equal(r, want_r);
	if (r == 0) {
		assert_int_equal(p, want);
		assert_string_equal(reason, want_reason);
	} else {
		assert_true(strlen(err) > 0);
	}
}

static void test_job(void **state)
{
	(void)state;
	expect_job("{\"status\": {\"phase\": \"Success\"}}", 0, CCE_PHASE_SUCCESS, "");
	expect_job("{\"status\": \"Success\"}", 0, CCE_PHASE_SUCCESS, "");
	expect_job("{\"phase\": \"success\"}", 0, CCE_PHASE_SUCCESS, "");
	expect_job("{\"kind\": \"Job\", \"spec\": {\"type\": \"x\", \"subJobs\": []}, \"status\": {\"phase\": \"Running\","
		   " \"reason\": \"\"}}", 0, CCE_PHASE_PENDING, "");
	expect_job("{\"status\": {\"phase\": \"Initializing\"}}", 0, CCE_PHASE_PENDING, "");
	expect_job("{\"status\": {\"phase\": \"Failed\", \"reason\": \"apiserver\\ndown\"}}", 0, CCE_PHASE_FAILED,
		   "apiserver down");
	expect_job("{\"status\": {\"phase\": \"Failed\", \"message\": \"why\"}}", 0, CCE_PHASE_FAILED, "why");
	expect_job("{\"status\": \"Failed\", \"reason\": \"top\"}", 0, CCE_PHASE_FAILED, "top");
	expect_job("{\"status\": {\"phase\": \"Cancelled\"}}", -EBADMSG, 0, NULL);
	expect_job("{\"status\": {}}", -EBADMSG, 0, NULL);
	expect_job("{\"status\": 3}", -EBADMSG, 0, NULL);
	expect_job("{}", -EBADMSG, 0, NULL);
	expect_job("[\"Success\"]", -EBADMSG, 0, NULL);
	expect_job("Success", -EBADMSG, 0, NULL);
}

/* ---- the custom files ---- */

struct material {
	uint8_t *cert_pem, *cert_der, *key_pem, *key_der, *key_enc, *other_key;
	size_t cert_pem_len, cert_der_len, key_pem_len, key_der_len, key_enc_len, other_key_len;
};

static uint8_t *bio_bytes(BIO *b, size_t *len)
{
	char *p;
	long n = BIO_get_mem_data(b, &p);
	uint8_t *out = malloc((size_t)n);

	assert_non_null(out);
	memcpy(out, p, (size_t)n);
	*len = (size_t)n;
	BIO_free(b);
	return out;
}

static int setup_material(void **state)
{
	struct material *m = calloc(1, sizeof(*m));
	EVP_PKEY *k = EVP_EC_gen("P-256"), *k2 = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	unsigned char *der = NULL;
	BIO *b;
	int n;

	assert_non_null(m);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8, (const unsigned char *)"t", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);

	b = BIO_new(BIO_s_mem());
	PEM_write_bio_X509(b, x);
	m->cert_pem = bio_bytes(b, &m->cert_pem_len);
	n = i2d_X509(x, &der);
	m->cert_der = malloc((size_t)n);
	memcpy(m->cert_der, der, (size_t)n);
	m->cert_der_len = (size_t)n;
	OPENSSL_free(der);
	b = BIO_new(BIO_s_mem());
	PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
	m->key_pem = bio_bytes(b, &m->key_pem_len);
	b = BIO_new(BIO_s_mem());
	i2d_PrivateKey_bio(b, k);
	m->key_der = bio_bytes(b, &m->key_der_len);
	b = BIO_new(BIO_s_mem());
	PEM_write_bio_PKCS8PrivateKey(b, k, EVP_aes_128_cbc(), NULL, 0, NULL, (void *)"secret");
	m->key_enc = bio_bytes(b, &m->key_enc_len);
	b = BIO_new(BIO_s_mem());
	PEM_write_bio_PrivateKey(b, k2, NULL, NULL, 0, NULL, NULL);
	m->other_key = bio_bytes(b, &m->other_key_len);
	X509_free(x);
	EVP_PKEY_free(k);
	EVP_PKEY_free(k2);
	*state = m;
	return 0;
}

static int teardown_material(void **state)
{
	struct material *m = *state;

	free(m->cert_pem);
	free(m->cert_der);
	free(m->key_pem);
	free(m->key_der);
	free(m->key_enc);
	free(m->other_key);
	free(m);
	return 0;
}

static void test_check_files(void **state)
{
	struct material *m = *state;
	char err[CCE_ERR_MAX];
	static const uint8_t junk[] = "hello, not a certificate\n";

	assert_int_equal(cce_check_cert(m->cert_pem, m->cert_pem_len, err), 0);
	assert_int_equal(cce_check_cert(m->cert_der, m->cert_der_len, err), 0);
	assert_int_equal(cce_check_cert(junk, sizeof(junk) - 1, err), -EBADMSG);
	assert_non_null(strstr(err, "not an X.509 certificate"));
	assert_int_equal(cce_check_cert(m->key_pem, m->key_pem_len, err), -EBADMSG);

	assert_int_equal(cce_check_key(m->key_pem, m->key_pem_len, err), 0);
	assert_int_equal(cce_check_key(m->key_der, m->key_der_len, err), 0);
	assert_int_equal(cce_check_key(m->cert_pem, m->cert_pem_len, err), -EBADMSG);
	assert_non_null(strstr(err, "not a private key"));
	assert_int_equal(cce_check_key(m->key_enc, m->key_enc_len, err), -EBADMSG);
	assert_non_null(strstr(err, "encrypted"));
	assert_int_equal(cce_check_key(junk, sizeof(junk) - 1, err), -EBADMSG);

	assert_int_equal(cce_check_pair(m->cert_pem, m->cert_pem_len, m->key_der, m->key_der_len, err), 0);
	assert_int_equal(cce_check_pair(m->cert_der, m->cert_der_len, m->other_key, m->other_key_len, err),
			 -EKEYREJECTED);
	assert_non_null(strstr(err, "not for this private key"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_component),
		cmocka_unit_test(test_ids),
		cmocka_unit_test(test_endpoint),
		cmocka_unit_test(test_urls),
		cmocka_unit_test(test_body_simple),
		cmocka_unit_test(test_body_refused),
		cmocka_unit_test(test_body_custom),
		cmocka_unit_test(test_jobid),
		cmocka_unit_test(test_error_shapes),
		cmocka_unit_test(test_format_error),
		cmocka_unit_test(test_job),
		cmocka_unit_test_setup_teardown(test_check_files, setup_material, teardown_material),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
