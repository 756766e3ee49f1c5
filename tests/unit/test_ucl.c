/* The UCL connector protocol without a network: documents, answers, subjects, the due rule. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "clients/renew/ucl/ucl.h"
#include "proto/b64.h"

static const char *query_of(const char *body, json_t **root)
{
	json_error_t e;

	*root = json_loads(body, JSON_REJECT_DUPLICATES, &e);
	assert_non_null(*root);
	return json_string_value(json_object_get(*root, "query"));
}

static void test_requests(void **state)
{
	char *b = ucl_config_request(1), *pem, *b64;
	json_t *root;
	const char *q;

	(void)state;
	q = query_of(b, &root);
	assert_non_null(strstr(q, "result: configuration"));
	assert_non_null(strstr(q, "token { token }"));
	assert_non_null(strstr(q, "certificateSecuredConnectorURL"));
	json_decref(root);
	free(b);
	b = ucl_config_request(0);
	q = query_of(b, &root);
	assert_null(strstr(q, "token"));
	json_decref(root);
	free(b);

	pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
	assert_int_equal(ks_b64_encode((const uint8_t *)pem, strlen(pem), &b64), 0);
	b = ucl_sign_request(pem);
	q = query_of(b, &root);
	assert_non_null(strstr(q, "signCertificateSigningRequest(csr: \""));
	assert_non_null(strstr(q, b64));
	assert_non_null(strstr(q, "certificateChain caCertificate clientCertificate"));
	json_decref(root);
	free(b);
	free(b64);
	b = ucl_revoke_request();
	q = query_of(b, &root);
	assert_string_equal(q, "mutation { result: revokeCertificate }");
	json_decref(root);
	free(b);
}

#define CONFIG_OK "{\"data\":{\"result\":{\"token\":{\"token\":\"t2\"},"                           \
		  "\"certificateSigningRequestInfo\":{\"subject\":\"O=Org,CN=app\",\"keyAlgorithm\":\"rsa2048\"}," \
		  "\"managementPlaneInfo\":{\"directorURL\":\"https://d/graphql\","                 \
		  "\"certificateSecuredConnectorURL\":\"https://m/graphql\"}}}}"

static void test_parse_config(void **state)
{
	struct ucl_config c;
	char err[UCL_ERR_MAX];
	const char *partial = "{\"data\":{\"result\":{\"certificateSigningRequestInfo\":{\"subject\":\"CN=x\","
			      "\"keyAlgorithm\":\"rsa2048\"}}},\"errors\":[{\"message\":\"token expired\"}]}";

	(void)state;
	assert_int_equal(ucl_parse_config(CONFIG_OK, strlen(CONFIG_OK), &c, err), 0);
	assert_string_equal(c.token, "t2");
	assert_string_equal(c.subject, "O=Org,CN=app");
	assert_string_equal(c.key_algorithm, "rsa2048");
	assert_string_equal(c.connector_url, "https://m/graphql");
	assert_string_equal(c.director_url, "https://d/graphql");
	ucl_config_free(&c);

	/* Errors win over data: a partial answer is never used. */
	assert_int_equal(ucl_parse_config(partial, strlen(partial), &c, err), -EREMOTEIO);
	assert_non_null(strstr(err, "token expired"));
	assert_null(c.subject);
	assert_int_equal(ucl_parse_config("{\"data\":null,\"errors\":[{\"message\":\"a\\u001bb\"},{\"message\":\"c\"}]}",
					  63, &c, err), -EREMOTEIO);
	assert_non_null(strstr(err, "a?b; c"));
	assert_int_equal(ucl_parse_config("{\"data\":{\"result\":null}}", 24, &c, err), -EBADMSG);
	assert_int_equal(ucl_parse_config("<html>", 6, &c, err), -EBADMSG);
	assert_int_equal(ucl_parse_config("{\"data\":{},\"data\":{}}", 21, &c, err), -EBADMSG);
	assert_int_equal(ucl_parse_config("{\"data\":{\"result\":{\"certificateSigningRequestInfo\":"
					  "{\"subject\":1,\"keyAlgorithm\":\"rsa2048\"}}}}", 89, &c, err), -EBADMSG);
	assert_int_equal(ucl_parse_config("{\"data\":{\"result\":{}}}", 22, &c, err), -EBADMSG);
}

static void test_parse_certs(void **state)
{
	struct ucl_certs c;
	char err[UCL_ERR_MAX], body[512];
	int revoked;

	(void)state;
	/* "QUJD" is "ABC"; line breaks inside base64 are tolerated (openssl base64 makes them). */
	snprintf(body, sizeof(body), "{\"data\":{\"result\":{\"certificateChain\":\"QUJD\\nREVG\","
		 "\"caCertificate\":\"QUJD\",\"clientCertificate\":\"REVG\"}}}");
	assert_int_equal(ucl_parse_certs(body, strlen(body), &c, err), 0);
	assert_string_equal(c.chain_pem, "ABCDEF");
	assert_string_equal(c.ca_pem, "ABC");
	assert_string_equal(c.client_pem, "DEF");
	ucl_certs_free(&c);
	snprintf(body, sizeof(body), "{\"data\":{\"result\":{\"certificateChain\":\"QUJD\","
		 "\"caCertificate\":\"QUJD\",\"clientCertificate\":\"!!!\"}}}");
	assert_int_equal(ucl_parse_certs(body, strlen(body), &c, err), -EBADMSG);
	assert_non_null(strstr(err, "clientCertificate is not valid base64"));
	assert_null(c.chain_pem);
	snprintf(body, sizeof(body), "{\"data\":{\"result\":{\"caCertificate\":\"QUJD\"}}}");
	assert_int_equal(ucl_parse_certs(body, strlen(body), &c, err), -EBADMSG);

	assert_int_equal(ucl_parse_revoke("{\"data\":{\"result\":true}}", 24, &revoked, err), 0);
	assert_int_equal(revoked, 1);
	assert_int_equal(ucl_parse_revoke("{\"data\":{\"result\":false}}", 25, &revoked, err), 0);
	assert_int_equal(revoked, 0);
	assert_int_equal(ucl_parse_revoke("{\"data\":{\"result\":\"yes\"}}", 25, &revoked, err), -EBADMSG);
	assert_int_equal(ucl_parse_revoke("{\"errors\":[{\"message\":\"no\"}]}", 29, &revoked, err), -EREMOTEIO);
}

static void test_key_types(void **state)
{
	(void)state;
	assert_string_equal(ucl_key_type("rsa2048"), "rsa-2048");
	assert_string_equal(ucl_key_type("rsa4096"), "rsa-4096");
	assert_null(ucl_key_type("rsa1024"));
	assert_null(ucl_key_type("ed25519"));
	assert_null(ucl_key_type("RSA2048"));
	assert_null(ucl_key_type(NULL));
}

static X509 *cert_with(const char *const *types, const char *const *values, int n, long from, long to)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *x = X509_new();
	X509_NAME *name = X509_get_subject_name(x);

	for (int i = 0; i < n; i++)
		X509_NAME_add_entry_by_txt(name, types[i], MBSTRING_UTF8, (const unsigned char *)values[i], -1, -1, 0);
	X509_set_issuer_name(x, name);
	X509_gmtime_adj(X509_getm_notBefore(x), from);
	X509_gmtime_adj(X509_getm_notAfter(x), to);
	X509_set_pubkey(x, k);
	X509_sign(x, k, EVP_sha256());
	EVP_PKEY_free(k);
	return x;
}

static void test_subject(void **state)
{
	static const char *const t[] = { "C", "ST", "L", "O", "OU", "CN" };
	static const char *const v[] = { "US", "Virginia", "Blacksburg", "Test", "Test", "app-1" };
	X509 *x = cert_with(t, v, 6, -60, 86400);
	X509 *fewer = cert_with(t, v, 5, -60, 86400);
	static const char *const v2[] = { "US", "Virginia", "Blacksburg", "Test, Inc", "Test", "app-1" };
	X509 *comma = cert_with(t, v2, 6, -60, 86400);
	char err[UCL_ERR_MAX];

	(void)state;
	assert_int_equal(ucl_subject_matches(x, "OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US,CN=app-1", err), 0);
	/* Any order: the connector compares attribute by attribute. */
	assert_int_equal(ucl_subject_matches(x, "CN=app-1, C=US, ST=Virginia, L=Blacksburg, O=Test, OU=Test", err), 0);
	assert_int_equal(ucl_subject_matches(x, "OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US,CN=app-2", err),
			 -EBADMSG);
	assert_int_equal(ucl_subject_matches(fewer, "OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US,CN=app-1", err),
			 -EBADMSG);
	assert_int_equal(ucl_subject_matches(x, "OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US", err), -EBADMSG);
	assert_int_equal(ucl_subject_matches(comma, "OU=Test,O=Test\\, Inc,L=Blacksburg,ST=Virginia,C=US,CN=app-1",
					     err), 0);
	assert_int_equal(ucl_subject_matches(x, "garbage", err), -EBADMSG);
	X509_free(x);
	X509_free(fewer);
	X509_free(comma);
}

static void test_due(void **state)
{
	static const char *const t[] = { "CN" };
	static const char *const v[] = { "x" };
	/* Valid 100 days, 80 left: 80% left, not due at 30%. */
	X509 *x = cert_with(t, v, 1, -20L * 86400, 80L * 86400);
	time_t now = time(NULL);

	(void)state;
	assert_int_equal(ucl_is_due(x, now, 30), 0);
	assert_int_equal(ucl_is_due(x, now + 50L * 86400 - 60, 30), 0);   /* just over 30% left */
	assert_int_equal(ucl_is_due(x, now + 51L * 86400, 30), 1);
	assert_int_equal(ucl_is_due(x, now, 90), 1);
	X509_free(x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_requests),
		cmocka_unit_test(test_parse_config),
		cmocka_unit_test(test_parse_certs),
		cmocka_unit_test(test_key_types),
		cmocka_unit_test(test_subject),
		cmocka_unit_test(test_due),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
