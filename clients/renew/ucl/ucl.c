#include "clients/renew/ucl/ucl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/objects.h>

#include "proto/b64.h"

#define UCL_FIELD_MAX (256 * 1024)
#define UCL_SUBJECT_PARTS 16

static int fail(char *err, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, int r, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL) {
		va_start(ap, fmt);
		vsnprintf(err, UCL_ERR_MAX, fmt, ap);
		va_end(ap);
	}
	return r;
}

static char *query_body(const char *document)
{
	json_t *o = json_pack("{s:s}", "query", document);
	char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;

	json_decref(o);
	return s;
}

char *ucl_config_request(int with_token)
{
	/* The reference clients' document, field for field. */
	return query_body(with_token ?
		"query { result: configuration { token { token } "
		"certificateSigningRequestInfo { subject keyAlgorithm } "
		"managementPlaneInfo { directorURL certificateSecuredConnectorURL } } }" :
		"query { result: configuration { "
		"certificateSigningRequestInfo { subject keyAlgorithm } "
		"managementPlaneInfo { directorURL certificateSecuredConnectorURL } } }");
}

char *ucl_sign_request(const char *csr_pem)
{
	char *b64 = NULL, *doc = NULL, *body = NULL;

	/* Base64 has no character that needs escaping in a GraphQL string. */
	if (ks_b64_encode((const uint8_t *)csr_pem, strlen(csr_pem), &b64) != 0)
		return NULL;
	if (asprintf(&doc, "mutation { result: signCertificateSigningRequest(csr: \"%s\") "
		     "{ certificateChain caCertificate clientCertificate } }", b64) >= 0)
		body = query_body(doc);
	free(doc);
	free(b64);
	return body;
}

char *ucl_revoke_request(void)
{
	return query_body("mutation { result: revokeCertificate }");
}

/* The server's messages, printable, joined; then -EREMOTEIO. */
static int graphql_errors(json_t *errors, char *err)
{
	char buf[UCL_ERR_MAX];
	size_t o = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < json_array_size(errors) && i < 3; i++) {
		const char *m = json_string_value(json_object_get(json_array_get(errors, i), "message"));

		if (m == NULL)
			m = "(no message)";
		for (size_t j = 0; m[j] != '\0' && o + 4 < sizeof(buf) && j < 200; j++)
			buf[o++] = ((unsigned char)m[j] < 0x20 || m[j] == 0x7f) ? '?' : m[j];
		if (i + 1 < json_array_size(errors) && i < 2 && o + 3 < sizeof(buf)) {
			buf[o++] = ';';
			buf[o++] = ' ';
		}
		buf[o] = '\0';
	}
	return fail(err, -EREMOTEIO, "the connector answered with errors: %s", buf);
}

/* data.result of a GraphQL answer, or an error. *@root is to be decref'd. */
static int result_of(const char *body, size_t len, json_t **root, json_t **result, char *err)
{
	json_error_t jerr;
	json_t *errors, *data;

	*result = NULL;
	*root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (*root == NULL || !json_is_object(*root))
		return fail(err, -EBADMSG, "the connector's answer is not a JSON object");
	errors = json_object_get(*root, "errors");
	if (errors != NULL && !json_is_null(errors)) {
		if (!json_is_array(errors))
			return fail(err, -EBADMSG, "the connector's \"errors\" is not an array");
		if (json_array_size(errors) > 0)
			return graphql_errors(errors, err);
	}
	data = json_object_get(*root, "data");
	*result = json_object_get(data, "result");
	if (!json_is_object(data) || *result == NULL || json_is_null(*result))
		return fail(err, -EBADMSG, "the connector's answer has no data.result");
	return 0;
}

int ucl_parse_errors(const char *body, size_t len, char *err)
{
	json_error_t jerr;
	json_t *root = body != NULL ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
	json_t *errors = json_is_object(root) ? json_object_get(root, "errors") : NULL;
	int r;

	if (json_is_array(errors) && json_array_size(errors) > 0)
		r = graphql_errors(errors, err);
	else
		r = fail(err, -EBADMSG, "no GraphQL errors in the answer");
	json_decref(root);
	return r;
}

/* A string at @path under @o ("a.b"); NULL if absent or null, -1 through *@bad if of another type. */
static const char *string_at(json_t *o, const char *a, const char *b, int *bad)
{
	json_t *v = json_object_get(o, a);

	if (b != NULL)
		v = json_is_object(v) ? json_object_get(v, b) : NULL;
	if (v == NULL || json_is_null(v))
		return NULL;
	if (!json_is_string(v)) {
		*bad = 1;
		return NULL;
	}
	return json_string_value(v);
}

static char *dup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

int ucl_parse_config(const char *body, size_t len, struct ucl_config *out, char *err)
{
	json_t *root = NULL, *res;
	const char *subject, *alg;
	int r, bad = 0;

	memset(out, 0, sizeof(*out));
	if ((r = result_of(body, len, &root, &res, err)) < 0)
		goto out;
	subject = string_at(res, "certificateSigningRequestInfo", "subject", &bad);
	alg = string_at(res, "certificateSigningRequestInfo", "keyAlgorithm", &bad);
	if (bad || subject == NULL || alg == NULL) {
		r = fail(err, -EBADMSG, "the connector's configuration has no certificateSigningRequestInfo");
		goto out;
	}
	out->subject = strdup(subject);
	out->key_algorithm = strdup(alg);
	out->token = dup_or_null(string_at(res, "token", "token", &bad));
	out->director_url = dup_or_null(string_at(res, "managementPlaneInfo", "directorURL", &bad));
	out->connector_url = dup_or_null(string_at(res, "managementPlaneInfo",
						   "certificateSecuredConnectorURL", &bad));
	if (bad) {
		r = fail(err, -EBADMSG, "the connector's configuration has a field of the wrong type");
		goto out;
	}
	if (out->subject == NULL || out->key_algorithm == NULL) {
		r = fail(err, -ENOMEM, "out of memory");
		goto out;
	}
	r = 0;
out:
	if (r < 0)
		ucl_config_free(out);
	json_decref(root);
	return r;
}

/* Base64 of a PEM document into a NUL-terminated string; line breaks tolerated. */
static int decode_field(json_t *res, const char *name, char **out, size_t *out_len, char *err)
{
	const char *v = json_string_value(json_object_get(res, name));
	char *clean = NULL;
	uint8_t *bin = NULL;
	size_t n = 0, bin_len = 0;
	int r;

	*out = NULL;
	if (v == NULL)
		return fail(err, -EBADMSG, "the connector's answer has no %s", name);
	if (strlen(v) > UCL_FIELD_MAX)
		return fail(err, -EMSGSIZE, "%s is over %d bytes", name, UCL_FIELD_MAX);
	if ((clean = malloc(strlen(v) + 1)) == NULL)
		return fail(err, -ENOMEM, "out of memory");
	for (const char *p = v; *p != '\0'; p++)
		if (*p != '\n' && *p != '\r')
			clean[n++] = *p;
	r = ks_b64_decode(clean, n, UCL_FIELD_MAX, &bin, &bin_len);
	free(clean);
	if (r < 0)
		return fail(err, -EBADMSG, "%s is not valid base64", name);
	if ((*out = malloc(bin_len + 1)) == NULL) {
		free(bin);
		return fail(err, -ENOMEM, "out of memory");
	}
	memcpy(*out, bin, bin_len);
	(*out)[bin_len] = '\0';
	*out_len = bin_len;
	free(bin);
	return 0;
}

int ucl_parse_certs(const char *body, size_t len, struct ucl_certs *out, char *err)
{
	json_t *root = NULL, *res;
	int r;

	memset(out, 0, sizeof(*out));
	if ((r = result_of(body, len, &root, &res, err)) < 0 ||
	    (r = decode_field(res, "certificateChain", &out->chain_pem, &out->chain_len, err)) < 0 ||
	    (r = decode_field(res, "caCertificate", &out->ca_pem, &out->ca_len, err)) < 0 ||
	    (r = decode_field(res, "clientCertificate", &out->client_pem, &out->client_len, err)) < 0)
		ucl_certs_free(out);
	json_decref(root);
	return r;
}

int ucl_parse_revoke(const char *body, size_t len, int *revoked, char *err)
{
	json_error_t jerr;
	json_t *root, *errors, *v;
	int r;

	*revoked = 0;
	/* revokeCertificate is a Boolean: data.result is true or false, not an object. */
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL || !json_is_object(root)) {
		r = fail(err, -EBADMSG, "the connector's answer is not a JSON object");
		goto out;
	}
	errors = json_object_get(root, "errors");
	if (json_is_array(errors) && json_array_size(errors) > 0) {
		r = graphql_errors(errors, err);
		goto out;
	}
	v = json_object_get(json_object_get(root, "data"), "result");
	if (!json_is_boolean(v)) {
		r = fail(err, -EBADMSG, "the connector's answer has no boolean data.result");
		goto out;
	}
	*revoked = json_is_true(v);
	r = 0;
out:
	json_decref(root);
	return r;
}

void ucl_config_free(struct ucl_config *c)
{
	if (c == NULL)
		return;
	free(c->token);
	free(c->subject);
	free(c->key_algorithm);
	free(c->director_url);
	free(c->connector_url);
	memset(c, 0, sizeof(*c));
}

void ucl_certs_free(struct ucl_certs *c)
{
	if (c == NULL)
		return;
	free(c->chain_pem);
	free(c->ca_pem);
	free(c->client_pem);
	memset(c, 0, sizeof(*c));
}

const char *ucl_key_type(const char *alg)
{
	static const struct { const char *ucl, *keysvc; } map[] = {
		{ "rsa2048", "rsa-2048" }, { "rsa3072", "rsa-3072" }, { "rsa4096", "rsa-4096" },
	};

	for (size_t i = 0; alg != NULL && i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(alg, map[i].ucl) == 0)
			return map[i].keysvc;
	return NULL;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "TYPE=VALUE" items of @subject (split at unescaped commas, escapes removed). */
static int split_subject(const char *subject, char **items, int *n, char *err)
{
	const char *p = subject;

	*n = 0;
	while (*p != '\0') {
		char buf[512];
		size_t o = 0;

		while (*p == ' ')
			p++;
		for (; *p != '\0' && *p != ','; p++) {
			if (*p == '\\' && p[1] != '\0')
				p++;
			if (o + 1 >= sizeof(buf))
				return fail(err, -EBADMSG, "the connector's subject has an over-long part");
			buf[o++] = *p;
		}
		buf[o] = '\0';
		if (*p == ',')
			p++;
		if (strchr(buf, '=') == NULL || *n == UCL_SUBJECT_PARTS)
			return fail(err, -EBADMSG, "the connector's subject \"%.200s\" is not TYPE=VALUE,...", subject);
		if ((items[(*n)++] = strdup(buf)) == NULL)
			return fail(err, -ENOMEM, "out of memory");
	}
	return 0;
}

int ucl_subject_matches(X509 *cert, const char *subject, char *err)
{
	char *want[UCL_SUBJECT_PARTS] = { NULL }, *have[UCL_SUBJECT_PARTS] = { NULL };
	X509_NAME *name = X509_get_subject_name(cert);
	int n_want = 0, n_have = 0, r;

	if ((r = split_subject(subject, want, &n_want, err)) < 0)
		goto out;
	for (int i = 0; i < X509_NAME_entry_count(name); i++) {
		X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
		const char *sn = OBJ_nid2sn(OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)));
		unsigned char *utf8 = NULL;
		int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));

		if (len < 0 || n_have == UCL_SUBJECT_PARTS || sn == NULL ||
		    asprintf(&have[n_have], "%s=%.*s", sn, len, utf8) < 0) {
			OPENSSL_free(utf8);
			r = fail(err, -EBADMSG, "the certificate's subject cannot be read");
			goto out;
		}
		n_have++;
		OPENSSL_free(utf8);
	}
	qsort(want, (size_t)n_want, sizeof(want[0]), cmp_str);
	qsort(have, (size_t)n_have, sizeof(have[0]), cmp_str);
	for (int i = 0; i < n_want || i < n_have; i++) {
		if (i >= n_want || i >= n_have || strcmp(want[i], have[i]) != 0) {
			r = fail(err, -EBADMSG, "the certificate's subject is not the requested \"%.200s\" "
				 "(first difference: %.100s)", subject,
				 i < n_have ? have[i] : i < n_want ? want[i] : "?");
			goto out;
		}
	}
	r = 0;
out:
	for (int i = 0; i < UCL_SUBJECT_PARTS; i++) {
		free(want[i]);
		free(have[i]);
	}
	return r;
}

int ucl_is_due(X509 *cert, time_t now, int share_percent)
{
	int d_total = 0, s_total = 0, d_left = 0, s_left = 0;
	ASN1_TIME *n = ASN1_TIME_set(NULL, now);
	long long total, left;
	int ok;

	ok = n != NULL &&
	     ASN1_TIME_diff(&d_total, &s_total, X509_get0_notBefore(cert), X509_get0_notAfter(cert)) &&
	     ASN1_TIME_diff(&d_left, &s_left, n, X509_get0_notAfter(cert));
	ASN1_TIME_free(n);
	if (!ok)
		return 1;
	total = (long long)d_total * 86400 + s_total;
	left = (long long)d_left * 86400 + s_left;
	return left * 100 < total * share_percent;
}
