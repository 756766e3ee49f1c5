/*
 * libFuzzer target for the CSR builder (keysvc/csr.c): the RFC 4514 subject
 * parser and ks_csr_create() with every kind of parameter, with a software
 * key in place of the token, so it runs thousands of times faster than
 * through fuzz_dispatch.
 *
 * Input: lines. The first is the subject; each later line is "TAG:value"
 * with TAG one of dns, ip, uri, email, eku, ku, attr (value "OID=text" or
 * "OID=text;type"), digest. Unknown lines are ignored. See corpus/csr/.
 *
 * Checks:
 *  - a subject the parser accepts prints back in RFC 2253 form (UTF-8 as
 *    is, types as OIDs) to a string the parser accepts again, giving the
 *    same name; a refusal always says why;
 *  - ks_csr_create() either refuses with a reason or returns one PEM CSR
 *    whose signature verifies with the key and whose subject is the parsed
 *    one.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "keysvc/csr.h"
#include "tests/fuzz/fuzz.h"


#define MAX_EACH 16

static EVP_PKEY *key;

static int soft_sign(void *arg, enum ks_sig_alg alg, const uint8_t *tbs, size_t tbs_len,
		     const uint8_t *digest, size_t digest_len, uint8_t **sig, size_t *sig_len)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);
	size_t len = 0;

	(void)tbs;
	(void)tbs_len;
	(void)arg;
	CHECK(ctx != NULL && EVP_PKEY_sign_init(ctx) == 1);
	CHECK(EVP_PKEY_CTX_set_signature_md(ctx, EVP_get_digestbyname(ks_sig_alg_digest(alg))) == 1);
	CHECK(EVP_PKEY_sign(ctx, NULL, &len, digest, digest_len) == 1);
	CHECK((*sig = malloc(len)) != NULL);
	CHECK(EVP_PKEY_sign(ctx, *sig, &len, digest, digest_len) == 1);
	*sig_len = len;
	EVP_PKEY_CTX_free(ctx);
	return 0;
}

static char *rfc2253(const X509_NAME *name)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;

	CHECK(bio != NULL);
	/*
	 * RFC 2253 form with UTF-8 as is, and every attribute type as a dotted
	 * OID: OpenSSL knows short names (1.3 is "ORG") the parser rightly
	 * does not take.
	 */
	CHECK(X509_NAME_print_ex(bio, name, 0,
				 ((XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) & ~XN_FLAG_FN_MASK) |
				 XN_FLAG_FN_OID) >= 0);
	n = BIO_get_mem_data(bio, &data);
	CHECK((out = malloc((size_t)n + 1)) != NULL);
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	BIO_free(bio);
	return out;
}

static void check_subject(const char *subject)
{
	X509_NAME *name = NULL, *again = NULL;
	const char *err = NULL;
	char *printed;
	int r;

	r = ks_rfc4514_parse(subject, &name, &err);
	if (r != 0) {
		CHECK(r == -EINVAL && err != NULL && name == NULL);
		return;
	}
	CHECK(name != NULL && X509_NAME_entry_count(name) > 0);
	printed = rfc2253(name);
	err = NULL;
	r = ks_rfc4514_parse(printed, &again, &err);
	/*
	 * OpenSSL prints a value it cannot show as text (an attribute type it
	 * has no name for) as #hex, which the parser refuses by design.
	 */
	if (r != 0 && strstr(printed, "=#") != NULL) {
		free(printed);
		X509_NAME_free(name);
		return;
	}
	if (r != 0 || X509_NAME_cmp(name, again) != 0) {
		fprintf(stderr, "subject \"%s\" printed as \"%s\" %s (%s)\n", subject, printed,
			r != 0 ? "is refused" : "parses to another name", err ? err : "");
		abort();
	}
	free(printed);
	X509_NAME_free(again);
	X509_NAME_free(name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *dns[MAX_EACH], *ip[MAX_EACH], *uri[MAX_EACH], *email[MAX_EACH], *eku[MAX_EACH];
	struct ks_csr_attr attrs[MAX_EACH];
	struct ks_csr_params p;
	const char *err = NULL, *digest = "sha256";
	char *text, *line, *save = NULL, *pem = NULL;
	X509_REQ *req;
	X509_NAME *subject = NULL;
	BIO *bio;
	int r;

	if (key == NULL)
		CHECK((key = EVP_EC_gen("P-256")) != NULL);
	/* The daemon's strings never hold NUL (the JSON layer refuses \u0000). */
	if (memchr(data, '\0', size) != NULL)
		return 0;
	CHECK((text = malloc(size + 1)) != NULL);
	memcpy(text, data, size);
	text[size] = '\0';

	memset(&p, 0, sizeof(p));
	p.dns = dns;
	p.ip = ip;
	p.uri = uri;
	p.email = email;
	p.ext_key_usage = eku;
	p.attrs = attrs;
	p.subject = text;
	if ((line = strchr(text, '\n')) != NULL) {
		*line++ = '\0';
		for (line = strtok_r(line, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
			char *v = strchr(line, ':');

			if (v == NULL)
				continue;
			*v++ = '\0';
			if (strcmp(line, "dns") == 0 && p.n_dns < MAX_EACH)
				dns[p.n_dns++] = v;
			else if (strcmp(line, "ip") == 0 && p.n_ip < MAX_EACH)
				ip[p.n_ip++] = v;
			else if (strcmp(line, "uri") == 0 && p.n_uri < MAX_EACH)
				uri[p.n_uri++] = v;
			else if (strcmp(line, "email") == 0 && p.n_email < MAX_EACH)
				email[p.n_email++] = v;
			else if (strcmp(line, "eku") == 0 && p.n_ext_key_usage < MAX_EACH)
				eku[p.n_ext_key_usage++] = v;
			else if (strcmp(line, "ku") == 0)
				p.key_usage |= ks_key_usage_from_name(v);
			else if (strcmp(line, "digest") == 0)
				digest = v;
			else if (strcmp(line, "attr") == 0 && p.n_attrs < MAX_EACH) {
				char *eq = strchr(v, '='), *semi;

				if (eq == NULL)
					continue;
				*eq++ = '\0';
				semi = strchr(eq, ';');
				if (semi != NULL)
					*semi++ = '\0';
				attrs[p.n_attrs].oid = v;
				attrs[p.n_attrs].value = eq;
				attrs[p.n_attrs].string_type = semi;
				p.n_attrs++;
			}
		}
	}
	check_subject(p.subject);

	p.alg = ks_sig_alg_for_digest(KS_FAMILY_EC, digest);
	if (p.alg == KS_SIG_NONE)
		goto out;
	r = ks_csr_create(key, &p, soft_sign, NULL, &pem, &err);
	if (r != 0) {
		CHECK(r == -EINVAL && err != NULL && pem == NULL);
		goto out;
	}
	CHECK(pem != NULL);
	CHECK((bio = BIO_new_mem_buf(pem, -1)) != NULL);
	req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
	BIO_free(bio);
	CHECK(req != NULL);
	CHECK(X509_REQ_verify(req, key) == 1);
	CHECK(ks_rfc4514_parse(p.subject, &subject, &err) == 0);
	CHECK(X509_NAME_cmp(X509_REQ_get_subject_name(req), subject) == 0);
	X509_NAME_free(subject);
	X509_REQ_free(req);
out:
	free(pem);
	free(text);
	return 0;
}
