/*
 * The CSR builder and the RFC 4514 parser, with software keys standing in
 * for the token so that every byte of the result can be checked, and the
 * openssl tool as an independent reader of what we produce.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "keysvc/csr.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers ---------------------------------------------------------------- */

struct soft_signer {
	EVP_PKEY *key;
	int fail_with;          /* returned instead of signing when non-zero */
	int no_signature;       /* return 0 without a signature */
	int calls;
	enum ks_sig_alg alg;
	uint8_t digest[EVP_MAX_MD_SIZE];
	size_t digest_len;
};

/* What the token does: sign an already computed digest. */
static int soft_sign(void *arg, enum ks_sig_alg alg, const uint8_t *tbs, size_t tbs_len,
		     const uint8_t *digest, size_t digest_len, uint8_t **sig, size_t *sig_len)
{
	struct soft_signer *s = arg;
	EVP_PKEY_CTX *ctx;
	size_t len = 0;

	(void)tbs;
	(void)tbs_len;
	s->calls++;
	s->alg = alg;
	assert_true(digest_len <= sizeof(s->digest));
	memcpy(s->digest, digest, digest_len);
	s->digest_len = digest_len;
	if (s->fail_with)
		return s->fail_with;
	if (s->no_signature) {
		*sig = NULL;
		*sig_len = 0;
		return 0;
	}
	assert_int_equal(digest_len, ks_sig_alg_digest_len(alg));
	ctx = EVP_PKEY_CTX_new(s->key, NULL);
	assert_non_null(ctx);
	assert_int_equal(EVP_PKEY_sign_init(ctx), 1);
	if (EVP_PKEY_get_base_id(s->key) == EVP_PKEY_RSA)
		assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING), 1);
	assert_int_equal(EVP_PKEY_CTX_set_signature_md(ctx,
		EVP_get_digestbyname(ks_sig_alg_digest(alg))), 1);
	assert_int_equal(EVP_PKEY_sign(ctx, NULL, &len, digest, digest_len), 1);
	*sig = malloc(len);
	assert_non_null(*sig);
	assert_int_equal(EVP_PKEY_sign(ctx, *sig, &len, digest, digest_len), 1);
	*sig_len = len;
	EVP_PKEY_CTX_free(ctx);
	return 0;
}

static char *name_print(const X509_NAME *name, unsigned long flags)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;

	assert_non_null(bio);
	assert_true(X509_NAME_print_ex(bio, name, 0, flags) >= 0);
	n = BIO_get_mem_data(bio, &data);
	out = strndup(data, (size_t)n);
	assert_non_null(out);
	BIO_free(bio);
	return out;
}

/* RFC 2253 order and escaping, but UTF-8 left as is. */
static char *name_rfc2253(const X509_NAME *name)
{
	return name_print(name, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
}

/* The name as it comes back from its DER encoding (what a CA will see). */
static X509_NAME *name_reencode(const X509_NAME *name)
{
	unsigned char *der = NULL;
	const unsigned char *p;
	X509_NAME *back;
	int len;

	len = i2d_X509_NAME(name, &der);
	assert_true(len > 0);
	p = der;
	back = d2i_X509_NAME(NULL, &p, len);
	assert_non_null(back);
	assert_ptr_equal(p, der + len);
	OPENSSL_free(der);
	return back;
}

/* Run @cmd with stderr folded into stdout; returns its exit status, output in @out. */
static int run(const char *cmd, char *out, size_t out_size)
{
	FILE *fp = popen(cmd, "r");
	size_t n = 0, k;
	int status;

	assert_non_null(fp);
	while (n + 1 < out_size && (k = fread(out + n, 1, out_size - 1 - n, fp)) > 0)
		n += k;
	out[n] = '\0';
	status = pclose(fp);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static X509_REQ *parse_csr(const char *pem)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	X509_REQ *req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);

	BIO_free(bio);
	assert_non_null(req);
	return req;
}

/* ---- RFC 4514 --------------------------------------------------------------- */

static void test_rfc4514_good(void **state)
{
	static const struct {
		const char *in;
		const char *printed;    /* in-memory name in RFC 2253 form; NULL: same as in */
		const char *der;        /* after a DER round trip; NULL: same as printed */
		int entries;
		int first_nid;          /* encoded entry 0 = the string's LAST RDN */
		const char *first_value;
		int first_type;
	} cases[] = {
		{ "OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US,CN=x", NULL, NULL, 6,
		  NID_commonName, "x", V_ASN1_UTF8STRING },
		{ "CN=host.example.org,O=Example\\, Inc.,C=DE", NULL, NULL, 3,
		  NID_countryName, "DE", V_ASN1_PRINTABLESTRING },
		{ "CN=a\\+b,O=x", NULL, NULL, 2, NID_organizationName, "x", V_ASN1_UTF8STRING },
		{ "O=a\\+b,CN=x", NULL, NULL, 2, NID_commonName, "x", V_ASN1_UTF8STRING },
		{ "CN=\\\"quoted\\\",O=x", NULL, NULL, 2, NID_organizationName, "x", V_ASN1_UTF8STRING },
		{ "O=x,CN=back\\\\slash", NULL, NULL, 2, NID_commonName, "back\\slash", V_ASN1_UTF8STRING },
		{ "CN=\\;\\<\\>", NULL, NULL, 1, NID_commonName, ";<>", V_ASN1_UTF8STRING },
		{ "CN=Caf\\C3\\A9", "CN=Caf\xc3\xa9", NULL, 1, NID_commonName, "Caf\xc3\xa9",
		  V_ASN1_UTF8STRING },
		{ "CN=caf\\c3\\a9", "CN=caf\xc3\xa9", NULL, 1, NID_commonName, "caf\xc3\xa9",
		  V_ASN1_UTF8STRING },
		{ "CN=Caf\xc3\xa9", NULL, NULL, 1, NID_commonName, "Caf\xc3\xa9", V_ASN1_UTF8STRING },
		{ "CN=\\41bc", "CN=Abc", NULL, 1, NID_commonName, "Abc", V_ASN1_UTF8STRING },
		/* A SET has no order: DER sorts it, and RFC 2253 printing reverses that. */
		{ "CN=a+UID=b,O=multi", NULL, "UID=b+CN=a,O=multi", 3,
		  NID_organizationName, "multi", V_ASN1_UTF8STRING },
		{ "O=multi,UID=b+CN=a", NULL, NULL, 3, NID_commonName, "a", V_ASN1_UTF8STRING },
		{ "2.5.4.3=by-oid,O=x", "CN=by-oid,O=x", NULL, 2,
		  NID_organizationName, "x", V_ASN1_UTF8STRING },
		/* RFC 4514 2.4: a type without a known name prints as #BER (UTF8String "private"). */
		{ "1.3.6.1.4.1.99999.1=private,O=x", "1.3.6.1.4.1.99999.1=#0C0770726976617465,O=x", NULL, 2,
		  NID_organizationName, "x", V_ASN1_UTF8STRING },
		{ "cn=lower,o=case,c=de", "CN=lower,O=case,C=de", NULL, 3,
		  NID_countryName, "de", V_ASN1_PRINTABLESTRING },
		{ "CN=x,DC=example,DC=org", NULL, NULL, 3, NID_domainComponent, "org", V_ASN1_IA5STRING },
		{ "emailAddress=ops@example.org,CN=x", NULL, NULL, 2, NID_commonName, "x",
		  V_ASN1_UTF8STRING },
		{ "CN=x,EMAILADDRESS=ops@example.org", "CN=x,emailAddress=ops@example.org", NULL, 2,
		  NID_pkcs9_emailAddress, "ops@example.org", V_ASN1_IA5STRING },
		{ "CN=x,SERIALNUMBER=A-1234", "CN=x,serialNumber=A-1234", NULL, 2,
		  NID_serialNumber, "A-1234", V_ASN1_PRINTABLESTRING },
		{ "CN=x,STREET=1 Main St,L=Town,ST=State", "CN=x,street=1 Main St,L=Town,ST=State", NULL, 4,
		  NID_stateOrProvinceName, "State", V_ASN1_UTF8STRING },
		{ "UID=jdoe", NULL, NULL, 1, NID_userId, "jdoe", V_ASN1_UTF8STRING },
		{ "CN=\\ lead and trail\\ ", NULL, NULL, 1, NID_commonName, " lead and trail ",
		  V_ASN1_UTF8STRING },
		{ "CN=in side", NULL, NULL, 1, NID_commonName, "in side", V_ASN1_UTF8STRING },
		{ "CN=\\#hash", NULL, NULL, 1, NID_commonName, "#hash", V_ASN1_UTF8STRING },
		{ "CN=a#b=c", NULL, NULL, 1, NID_commonName, "a#b=c", V_ASN1_UTF8STRING },
		/* OpenSSL leaves '=' unescaped, and RFC 4514 reads it back the same. */
		{ "CN=\\=x", "CN==x", NULL, 1, NID_commonName, "=x", V_ASN1_UTF8STRING },
		{ "CN==x", NULL, NULL, 1, NID_commonName, "=x", V_ASN1_UTF8STRING },
	};
	X509_NAME *name, *back;
	const X509_NAME_ENTRY *e;
	const ASN1_STRING *v;
	const char *err;
	char *got;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const char *printed = cases[i].printed ? cases[i].printed : cases[i].in;
		const char *der = cases[i].der ? cases[i].der : printed;

		err = "untouched";
		name = NULL;
		if (ks_rfc4514_parse(cases[i].in, &name, &err) != 0)
			fail_msg("case %zu (%s): %s", i, cases[i].in, err);
		assert_null(err);
		got = name_rfc2253(name);
		if (strcmp(got, printed) != 0)
			fail_msg("case %zu: %s printed back as %s", i, printed, got);
		free(got);

		back = name_reencode(name);
		got = name_rfc2253(back);
		if (strcmp(got, der) != 0)
			fail_msg("case %zu: %s came back from DER as %s", i, der, got);
		free(got);

		assert_int_equal(X509_NAME_entry_count(back), cases[i].entries);
		e = X509_NAME_get_entry(back, 0);
		if (OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)) != cases[i].first_nid)
			fail_msg("case %zu: first encoded entry is %s", i,
				 OBJ_nid2sn(OBJ_obj2nid(X509_NAME_ENTRY_get_object(e))));
		v = X509_NAME_ENTRY_get_data(e);
		assert_int_equal(ASN1_STRING_type(v), cases[i].first_type);
		assert_int_equal(ASN1_STRING_length(v), strlen(cases[i].first_value));
		assert_memory_equal(ASN1_STRING_get0_data(v), cases[i].first_value,
				    strlen(cases[i].first_value));
		X509_NAME_free(back);
		X509_NAME_free(name);
	}
}

/* Full RFC 2253 flags, as `openssl -nameopt RFC2253` uses: non-ASCII comes back as \XX. */
static void test_rfc4514_escaped_utf8_prints_back(void **state)
{
	X509_NAME *name;
	const char *err;
	char *got;

	(void)state;
	assert_int_equal(ks_rfc4514_parse("CN=Caf\\C3\\A9,O=x", &name, &err), 0);
	got = name_print(name, XN_FLAG_RFC2253);
	assert_string_equal(got, "CN=Caf\\C3\\A9,O=x");
	free(got);
	X509_NAME_free(name);
}

static void test_rfc4514_structure(void **state)
{
	static const struct {
		int nid, type;
	} want[] = {
		/* "CN=c+UID=u,SERIALNUMBER=7,emailAddress=e@x,DC=d,C=US" encoded, in order */
		{ NID_countryName, V_ASN1_PRINTABLESTRING },
		{ NID_domainComponent, V_ASN1_IA5STRING },
		{ NID_pkcs9_emailAddress, V_ASN1_IA5STRING },
		{ NID_serialNumber, V_ASN1_PRINTABLESTRING },
	};
	X509_NAME *name;
	const X509_NAME_ENTRY *e;
	const char *err;

	(void)state;
	assert_int_equal(ks_rfc4514_parse("CN=c+UID=u,SERIALNUMBER=7,emailAddress=e@x,DC=d,C=US",
					  &name, &err), 0);
	assert_int_equal(X509_NAME_entry_count(name), 6);
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		e = X509_NAME_get_entry(name, (int)i);
		assert_int_equal(OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)), want[i].nid);
		assert_int_equal(ASN1_STRING_type(X509_NAME_ENTRY_get_data(e)), want[i].type);
		/* Single-valued RDNs: each its own SET. */
		assert_int_equal(X509_NAME_ENTRY_set(e), (int)i);
	}
	/* The multi-valued RDN is one SET, the last one, holding both AVAs. */
	assert_int_equal(X509_NAME_ENTRY_set(X509_NAME_get_entry(name, 4)), 4);
	assert_int_equal(X509_NAME_ENTRY_set(X509_NAME_get_entry(name, 5)), 4);
	X509_NAME_free(name);

	/* Two RDNs of one type stay two RDNs. */
	assert_int_equal(ks_rfc4514_parse("OU=a,OU=b", &name, &err), 0);
	assert_int_equal(X509_NAME_ENTRY_set(X509_NAME_get_entry(name, 0)), 0);
	assert_int_equal(X509_NAME_ENTRY_set(X509_NAME_get_entry(name, 1)), 1);
	X509_NAME_free(name);
}

static void test_rfc4514_rejects(void **state)
{
	static const struct {
		const char *in;
		const char *why;        /* a word the error must contain */
	} bad[] = {
		{ "", "empty" },
		{ "CN", "no '='" },
		{ "CN=", "empty value" },
		{ "CN=,O=x", "empty value" },
		{ "=x", "missing attribute type" },
		{ "CN=x,", "trailing separator" },
		{ "CN=x+", "trailing separator" },
		{ "CN=x,O=y,", "trailing separator" },
		{ "CN=x,,O=y", "empty RDN" },
		{ ",CN=x", "empty RDN" },
		{ "+CN=x", "empty RDN" },
		{ "CN=x++O=y", "empty RDN" },
		{ "XX=unknown", "unknown attribute type" },
		{ "SN=surname", "unknown attribute type" },
		{ "OID.2.5.4.3=x", "unknown attribute type" },
		{ "2.5.04.3=x", "unknown attribute type" },
		{ "2=x", "unknown attribute type" },
		{ "1..2=x", "unknown attribute type" },
		{ "1.=x", "unknown attribute type" },
		{ "3.1=x", "unknown attribute type" },
		{ "CN =x", "unknown attribute type" },
		{ " CN=x", "unknown attribute type" },
		{ "CN=x, O=y", "unknown attribute type" },
		{ "CN=x;O=y", "unescaped special" },
		{ "CN=#04024869", "#hex" },
		{ "CN=a\"b", "unescaped special" },
		{ "CN=a;b", "unescaped special" },
		{ "CN=a<b", "unescaped special" },
		{ "CN=a>b", "unescaped special" },
		{ "CN= lead", "start with an unescaped space" },
		{ "CN=trail ", "end with an unescaped space" },
		{ "CN=trail \\  ", "end with an unescaped space" },
		{ "CN=bad\\escape", "bad escape" },
		{ "CN=x\\", "bad escape" },
		{ "CN=\\4", "bad escape" },
		{ "CN=\\4g", "bad escape" },
		{ "CN=\\00", "NUL" },
		{ "CN=a\\00b", "NUL" },
		{ "CN=\\C3", "UTF-8" },
		{ "CN=\\C3\\28", "UTF-8" },
		{ "CN=\\FF\\FE", "UTF-8" },
		{ "CN=\\E0\\80\\80", "UTF-8" },        /* overlong */
		{ "CN=\\ED\\A0\\80", "UTF-8" },        /* surrogate */
		{ "CN=\xc3", "UTF-8" },
		{ "C=USA", "two-letter" },
		{ "C=U", "two-letter" },
		{ "C=1A", "two-letter" },
		{ "SERIALNUMBER=a_b", "PrintableString" },
		{ "DC=\\C3\\A9", "ASCII" },
		{ "emailAddress=\\C3\\A9@x", "ASCII" },
		/* Issue 21: what a relying party shows a person must read as it compares. */
		{ "CN=a\x01b", "control character" },
		{ "CN=a\tb", "control character" },
		{ "CN=a\\0Ab", "control character" },
		{ "CN=a\\0Db", "control character" },
		{ "O=a\\1Bb", "control character" },
		{ "CN=a\x7f", "control character" },
		{ "OU=\\7F", "control character" },
		{ "CN=a\xc2\x80", "control character" },      /* U+0080 */
		{ "CN=a\\C2\\85b", "control character" },     /* U+0085 NEL */
		{ "L=\xc2\x9f", "control character" },        /* U+009F */
		{ "CN=moc.elpmaxe\xe2\x80\xae", "bidirectional override" },  /* U+202E */
		{ "CN=\xe2\x80\xaax", "bidirectional override" },            /* U+202A */
		{ "O=\\E2\\80\\AC", "bidirectional override" },             /* U+202C */
		{ "CN=\xe2\x81\xa6x", "bidirectional override" },            /* U+2066 */
		{ "ST=x\xe2\x81\xa9", "bidirectional override" },            /* U+2069 */
		{ "CN=ex\xe2\x80\x8b" "ample.com", "zero-width" },               /* U+200B */
		{ "CN=ex\xe2\x80\x8d" "ample.com", "zero-width" },               /* U+200D */
		{ "OU=\xe2\x81\xa0x", "zero-width" },                         /* U+2060 */
		{ "CN=\xef\xbb\xbfx", "zero-width" },                         /* U+FEFF */
		{ "CN=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "CN longer than 64" },
		{ "2.5.4.3=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "CN longer than 64" },
	};
	char buf[5000];
	X509_NAME *name = NULL;
	const char *err;
	size_t n;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		err = NULL;
		name = (X509_NAME *)&err;       /* must be reset to NULL on failure */
		if (ks_rfc4514_parse(bad[i].in, &name, &err) != -EINVAL)
			fail_msg("accepted bad subject \"%s\"", bad[i].in);
		assert_null(name);
		if (err == NULL || strstr(err, bad[i].why) == NULL)
			fail_msg("\"%s\": error \"%s\" does not say \"%s\"", bad[i].in,
				 err ? err : "(null)", bad[i].why);
	}
	assert_int_equal(ks_rfc4514_parse(NULL, &name, &err), -EINVAL);
	assert_non_null(err);

	/* Exactly 256 bytes is fine, 257 is not, counted after unescaping (OU: CN has its own limit). */
	memcpy(buf, "OU=", 3);
	memset(buf + 3, 'a', 256);
	buf[259] = '\0';
	assert_int_equal(ks_rfc4514_parse(buf, &name, &err), 0);
	X509_NAME_free(name);
	buf[259] = 'a';
	buf[260] = '\0';
	assert_int_equal(ks_rfc4514_parse(buf, &name, &err), -EINVAL);
	assert_non_null(strstr(err, "256"));
	/* 128 "\C3\A9" escapes are 768 characters but 256 bytes: accepted. */
	n = 3;
	for (int i = 0; i < 128; i++, n += 6)
		memcpy(buf + n, "\\C3\\A9", 6);
	buf[n] = '\0';
	assert_int_equal(ks_rfc4514_parse(buf, &name, &err), 0);
	X509_NAME_free(name);

	/* A CN of 64 characters is fine, counted in characters: 64 "é" are 128 bytes. */
	memcpy(buf, "CN=", 3);
	memset(buf + 3, 'a', 64);
	buf[67] = '\0';
	assert_int_equal(ks_rfc4514_parse(buf, &name, &err), 0);
	X509_NAME_free(name);
	n = 3;
	for (int i = 0; i < 64; i++, n += 2)
		memcpy(buf + n, "\xc3\xa9", 2);
	buf[n] = '\0';
	assert_int_equal(ks_rfc4514_parse(buf, &name, &err), 0);
	X509_NAME_free(name);
	memcpy(buf + n, "\xc3\xa9", 3);
	assert_int_equal(ks_rfc4514_parse(buf, &name, &err), -EINVAL);
	assert_non_null(strstr(err, "CN longer than 64 characters"));
	/* Neighbours of the refused characters are fine: U+00A0, U+200E, U+202F, U+2065, U+206A. */
	assert_int_equal(ks_rfc4514_parse("CN=a\xc2\xa0" "b\xe2\x80\x8e\xe2\x80\xaf\xe2\x81\xa5\xe2\x81\xaa", &name, &err), 0);
	X509_NAME_free(name);

	/* At most 64 attributes. */
	n = 0;
	for (int i = 0; i < 65; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%sOU=u%d", i ? "," : "", i);
	assert_int_equal(ks_rfc4514_parse(buf, &name, &err), -EINVAL);
	assert_non_null(strstr(err, "64"));

	/* At most 4096 bytes of input. */
	memset(buf, 'a', 4097);
	memcpy(buf, "CN=x,O=", 7);
	buf[4097] = '\0';
	assert_int_equal(ks_rfc4514_parse(buf, &name, &err), -EINVAL);
	assert_non_null(strstr(err, "4096"));
}

/* ---- CSRs --------------------------------------------------------------------- */

static const char *const full_dns[] = { "a.example.org", "*.b.example.org", "xn--caf-dma.example" };
static const char *const full_ip[] = { "192.0.2.1", "2001:db8::1" };
static const char *const full_uri[] = { "spiffe://example.org/agent" };
static const char *const full_email[] = { "ops@example.org" };
static const char *const full_eku[] = { "clientAuth", "serverAuth", "1.3.6.1.5.5.7.3.17" };
static const struct ks_csr_attr full_attrs[] = {
	{ "1.3.6.1.4.1.34380.1.3.2", "true", "printable" },
	{ "1.3.6.1.4.1.34380.1.1.1", "gr\xc3\xbc\xc3\x9f" "e", NULL },
	{ "1.3.6.1.4.1.34380.1.1.2", "ia5 text", "ia5" },
};

static struct ks_csr_params full_params(enum ks_sig_alg alg)
{
	struct ks_csr_params p = {
		.subject = "OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US,CN=agent",
		.dns = full_dns, .n_dns = ARRAY_SIZE(full_dns),
		.ip = full_ip, .n_ip = ARRAY_SIZE(full_ip),
		.uri = full_uri, .n_uri = ARRAY_SIZE(full_uri),
		.email = full_email, .n_email = ARRAY_SIZE(full_email),
		.key_usage = KS_KU_DIGITAL_SIGNATURE | KS_KU_KEY_ENCIPHERMENT | KS_KU_NON_REPUDIATION,
		.ext_key_usage = full_eku, .n_ext_key_usage = ARRAY_SIZE(full_eku),
		.attrs = full_attrs, .n_attrs = ARRAY_SIZE(full_attrs),
		.alg = alg,
	};

	return p;
}

static void check_gen_string(const GENERAL_NAME *gn, int type, const char *want)
{
	const ASN1_STRING *s;
	int t;

	s = GENERAL_NAME_get0_value(gn, &t);
	assert_int_equal(t, type);
	assert_int_equal(ASN1_STRING_type(s), type == GEN_IPADD ? V_ASN1_OCTET_STRING : V_ASN1_IA5STRING);
	assert_int_equal(ASN1_STRING_length(s), strlen(want));
	assert_memory_equal(ASN1_STRING_get0_data(s), want, strlen(want));
}

static void check_gen_ip(const GENERAL_NAME *gn, const void *want, int len)
{
	const ASN1_STRING *s;
	int t;

	s = GENERAL_NAME_get0_value(gn, &t);
	assert_int_equal(t, GEN_IPADD);
	assert_int_equal(ASN1_STRING_length(s), len);
	assert_memory_equal(ASN1_STRING_get0_data(s), want, (size_t)len);
}

static void check_attr(const X509_REQ *req, const char *oid, int type, const char *value)
{
	ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
	X509_ATTRIBUTE *xa;
	const ASN1_TYPE *av;
	int idx;

	assert_non_null(obj);
	idx = X509_REQ_get_attr_by_OBJ(req, obj, -1);
	assert_true(idx >= 0);
	assert_int_equal(X509_REQ_get_attr_by_OBJ(req, obj, idx), -1);
	ASN1_OBJECT_free(obj);
	xa = X509_REQ_get_attr(req, idx);
	assert_int_equal(X509_ATTRIBUTE_count(xa), 1);
	av = X509_ATTRIBUTE_get0_type(xa, 0);
	assert_int_equal(av->type, type);
	assert_int_equal(ASN1_STRING_length(av->value.asn1_string), strlen(value));
	assert_memory_equal(ASN1_STRING_get0_data(av->value.asn1_string), value, strlen(value));
}

static void check_full_csr(EVP_PKEY *key, enum ks_sig_alg alg, int want_sig_nid)
{
	static const unsigned char ip4[] = { 192, 0, 2, 1 };
	static const unsigned char ip6[] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
	struct ks_csr_params p = full_params(alg);
	struct soft_signer signer = { .key = key };
	STACK_OF(X509_EXTENSION) *exts;
	const X509_EXTENSION *ext;
	GENERAL_NAMES *gens;
	ASN1_BIT_STRING *ku;
	EXTENDED_KEY_USAGE *ekus;
	const ASN1_BIT_STRING *psig;
	const X509_ALGOR *palg;
	const ASN1_OBJECT *aobj;
	const void *pval;
	const char *err = "untouched";
	char *pem = NULL, *subj, path[] = "/tmp/keysvc-test-csr-XXXXXX", cmd[512], out[4096];
	char oid[64];
	unsigned char *tbs = NULL, hash[EVP_MAX_MD_SIZE];
	unsigned hash_len = 0;
	int tbs_len, ptype;
	X509_REQ *req;
	FILE *fp;
	int fd;

	assert_int_equal(ks_csr_create(key, &p, soft_sign, &signer, &pem, &err), 0);
	assert_null(err);
	assert_int_equal(signer.calls, 1);
	assert_int_equal(signer.alg, alg);
	assert_non_null(pem);
	assert_true(strncmp(pem, "-----BEGIN CERTIFICATE REQUEST-----\n", 36) == 0);
	assert_non_null(strstr(pem, "-----END CERTIFICATE REQUEST-----\n"));
	req = parse_csr(pem);

	assert_int_equal(X509_REQ_get_version(req), 0);
	assert_int_equal(X509_REQ_verify(req, key), 1);
	assert_int_equal(X509_REQ_get_signature_nid(req), want_sig_nid);
	X509_REQ_get0_signature(req, &psig, &palg);
	X509_ALGOR_get0(&aobj, &ptype, &pval, palg);
	assert_int_equal(OBJ_obj2nid(aobj), want_sig_nid);
	assert_int_equal(ptype, ks_sig_alg_family(alg) == KS_FAMILY_RSA ? V_ASN1_NULL : V_ASN1_UNDEF);
	if (ks_sig_alg_family(alg) == KS_FAMILY_RSA)
		assert_int_equal(ASN1_STRING_length(psig), EVP_PKEY_get_size(key));
	assert_int_equal(EVP_PKEY_eq(X509_REQ_get0_pubkey(req), key), 1);

	/* The callback was handed the hash of exactly the DER request info. */
	tbs_len = i2d_re_X509_REQ_tbs(req, &tbs);
	assert_true(tbs_len > 0);
	assert_int_equal(EVP_Digest(tbs, (size_t)tbs_len, hash, &hash_len,
				    EVP_get_digestbyname(ks_sig_alg_digest(alg)), NULL), 1);
	OPENSSL_free(tbs);
	assert_int_equal(hash_len, ks_sig_alg_digest_len(alg));
	assert_int_equal(signer.digest_len, hash_len);
	assert_memory_equal(signer.digest, hash, hash_len);

	subj = name_rfc2253(X509_REQ_get_subject_name(req));
	assert_string_equal(subj, p.subject);
	free(subj);
	assert_int_equal(OBJ_obj2nid(X509_NAME_ENTRY_get_object(
		X509_NAME_get_entry(X509_REQ_get_subject_name(req), 0))), NID_commonName);

	exts = X509_REQ_get_extensions(req);
	assert_non_null(exts);
	assert_int_equal(sk_X509_EXTENSION_num(exts), 3);

	gens = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
	assert_non_null(gens);
	assert_int_equal(sk_GENERAL_NAME_num(gens), 7);
	check_gen_string(sk_GENERAL_NAME_value(gens, 0), GEN_DNS, "a.example.org");
	check_gen_string(sk_GENERAL_NAME_value(gens, 1), GEN_DNS, "*.b.example.org");
	check_gen_string(sk_GENERAL_NAME_value(gens, 2), GEN_DNS, "xn--caf-dma.example");
	check_gen_ip(sk_GENERAL_NAME_value(gens, 3), ip4, 4);
	check_gen_ip(sk_GENERAL_NAME_value(gens, 4), ip6, 16);
	check_gen_string(sk_GENERAL_NAME_value(gens, 5), GEN_URI, "spiffe://example.org/agent");
	check_gen_string(sk_GENERAL_NAME_value(gens, 6), GEN_EMAIL, "ops@example.org");
	GENERAL_NAMES_free(gens);
	ext = sk_X509_EXTENSION_value(exts, X509v3_get_ext_by_NID(exts, NID_subject_alt_name, -1));
	assert_false(X509_EXTENSION_get_critical(ext));

	ku = X509V3_get_d2i(exts, NID_key_usage, NULL, NULL);
	assert_non_null(ku);
	for (int bit = 0; bit < 9; bit++)
		if (ASN1_BIT_STRING_get_bit(ku, bit) != (bit == 0 || bit == 1 || bit == 2))
			fail_msg("keyUsage bit %d is wrong", bit);
	ASN1_BIT_STRING_free(ku);
	ext = sk_X509_EXTENSION_value(exts, X509v3_get_ext_by_NID(exts, NID_key_usage, -1));
	assert_true(X509_EXTENSION_get_critical(ext));

	ekus = X509V3_get_d2i(exts, NID_ext_key_usage, NULL, NULL);
	assert_non_null(ekus);
	assert_int_equal(sk_ASN1_OBJECT_num(ekus), 3);
	assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(ekus, 0)), NID_client_auth);
	assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(ekus, 1)), NID_server_auth);
	assert_true(OBJ_obj2txt(oid, sizeof(oid), sk_ASN1_OBJECT_value(ekus, 2), 1) > 0);
	assert_string_equal(oid, "1.3.6.1.5.5.7.3.17");
	sk_ASN1_OBJECT_pop_free(ekus, ASN1_OBJECT_free);
	ext = sk_X509_EXTENSION_value(exts, X509v3_get_ext_by_NID(exts, NID_ext_key_usage, -1));
	assert_false(X509_EXTENSION_get_critical(ext));
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);

	/* extensionRequest plus the three asked for, each once with its string type. */
	assert_int_equal(X509_REQ_get_attr_count(req), 4);
	check_attr(req, "1.3.6.1.4.1.34380.1.3.2", V_ASN1_PRINTABLESTRING, "true");
	check_attr(req, "1.3.6.1.4.1.34380.1.1.1", V_ASN1_UTF8STRING, "gr\xc3\xbc\xc3\x9f" "e");
	check_attr(req, "1.3.6.1.4.1.34380.1.1.2", V_ASN1_IA5STRING, "ia5 text");
	X509_REQ_free(req);

	/* The openssl tool, an independent reader, agrees. */
	fd = mkstemp(path);
	assert_true(fd >= 0);
	fp = fdopen(fd, "w");
	assert_non_null(fp);
	assert_true(fputs(pem, fp) >= 0);
	assert_int_equal(fclose(fp), 0);
	snprintf(cmd, sizeof(cmd), "openssl req -in %s -noout -verify 2>&1", path);
	assert_int_equal(run(cmd, out, sizeof(out)), 0);
	if (strstr(out, "verify OK") == NULL)
		fail_msg("openssl req -verify said: %s", out);
	snprintf(cmd, sizeof(cmd), "openssl req -in %s -noout -subject -nameopt RFC2253 2>&1", path);
	assert_int_equal(run(cmd, out, sizeof(out)), 0);
	snprintf(cmd, sizeof(cmd), "subject=%s\n", p.subject);
	assert_string_equal(out, cmd);
	unlink(path);
	free(pem);
}

static void test_csr_rsa2048(void **state)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);

	(void)state;
	assert_non_null(key);
	check_full_csr(key, KS_SIG_RSA_PKCS1_SHA256, NID_sha256WithRSAEncryption);
	check_full_csr(key, KS_SIG_RSA_PKCS1_SHA384, NID_sha384WithRSAEncryption);
	check_full_csr(key, KS_SIG_RSA_PKCS1_SHA512, NID_sha512WithRSAEncryption);
	EVP_PKEY_free(key);
}

static void test_csr_p256(void **state)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

	(void)state;
	assert_non_null(key);
	check_full_csr(key, KS_SIG_ECDSA_SHA256, NID_ecdsa_with_SHA256);
	check_full_csr(key, KS_SIG_ECDSA_SHA384, NID_ecdsa_with_SHA384);
	EVP_PKEY_free(key);
}

static void test_csr_p384(void **state)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");

	(void)state;
	assert_non_null(key);
	check_full_csr(key, KS_SIG_ECDSA_SHA384, NID_ecdsa_with_SHA384);
	check_full_csr(key, KS_SIG_ECDSA_SHA256, NID_ecdsa_with_SHA256);
	EVP_PKEY_free(key);
}

/* Subject only: no extensionRequest, no attributes at all. */
static void test_csr_minimal(void **state)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	struct soft_signer signer = { .key = key };
	struct ks_csr_params p = { .subject = "CN=minimal", .alg = KS_SIG_ECDSA_SHA256 };
	STACK_OF(X509_EXTENSION) *exts;
	const char *err = NULL;
	char *pem = NULL;
	X509_REQ *req;

	(void)state;
	assert_int_equal(ks_csr_create(key, &p, soft_sign, &signer, &pem, &err), 0);
	req = parse_csr(pem);
	assert_int_equal(X509_REQ_verify(req, key), 1);
	assert_int_equal(X509_REQ_get_attr_count(req), 0);
	exts = X509_REQ_get_extensions(req);
	assert_true(exts == NULL || sk_X509_EXTENSION_num(exts) == 0);
	sk_X509_EXTENSION_free(exts);
	X509_REQ_free(req);
	free(pem);
	EVP_PKEY_free(key);
}

/* Exactly 100 names is the limit, not past it. */
static void test_csr_hundred_names(void **state)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	struct soft_signer signer = { .key = key };
	static char names[60][32];
	static const char *dns[60], *ip[40];
	struct ks_csr_params p = { .subject = "CN=many", .alg = KS_SIG_ECDSA_SHA256,
				   .dns = dns, .n_dns = 60, .ip = ip, .n_ip = 40 };
	STACK_OF(X509_EXTENSION) *exts;
	GENERAL_NAMES *gens;
	const char *err = NULL;
	char *pem = NULL;
	X509_REQ *req;

	(void)state;
	for (int i = 0; i < 60; i++) {
		snprintf(names[i], sizeof(names[i]), "h%d.example.org", i);
		dns[i] = names[i];
	}
	for (int i = 0; i < 40; i++)
		ip[i] = "10.0.0.1";
	assert_int_equal(ks_csr_create(key, &p, soft_sign, &signer, &pem, &err), 0);
	req = parse_csr(pem);
	exts = X509_REQ_get_extensions(req);
	gens = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
	assert_int_equal(sk_GENERAL_NAME_num(gens), 100);
	GENERAL_NAMES_free(gens);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	free(pem);

	p.n_ip = 41;
	err = NULL;
	assert_int_equal(ks_csr_create(key, &p, soft_sign, &signer, &pem, &err), -EINVAL);
	assert_non_null(err);
	assert_non_null(strstr(err, "100"));
	assert_null(pem);
	EVP_PKEY_free(key);
}

static void test_csr_signer_failures(void **state)
{
	EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *ec_other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	EVP_PKEY *rsa_other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	struct soft_signer s;
	struct ks_csr_params p = full_params(KS_SIG_ECDSA_SHA256);
	const char *err;
	char *pem;

	(void)state;
	assert_non_null(ec);
	assert_non_null(ec_other);
	assert_non_null(rsa);
	assert_non_null(rsa_other);

	/* A token that signed with another key is caught before anyone sees the CSR. */
	s = (struct soft_signer){ .key = ec_other };
	pem = NULL;
	err = NULL;
	assert_int_equal(ks_csr_create(ec, &p, soft_sign, &s, &pem, &err), -EIO);
	assert_int_equal(s.calls, 1);
	assert_null(pem);
	assert_non_null(err);
	p.alg = KS_SIG_RSA_PKCS1_SHA256;
	s = (struct soft_signer){ .key = rsa_other };
	assert_int_equal(ks_csr_create(rsa, &p, soft_sign, &s, &pem, &err), -EIO);
	assert_null(pem);

	/* The signer's errno comes back unchanged. */
	s = (struct soft_signer){ .key = rsa, .fail_with = -ENODEV };
	assert_int_equal(ks_csr_create(rsa, &p, soft_sign, &s, &pem, &err), -ENODEV);
	assert_int_equal(s.calls, 1);
	assert_null(pem);
	s = (struct soft_signer){ .key = rsa, .fail_with = -EACCES };
	assert_int_equal(ks_csr_create(rsa, &p, soft_sign, &s, &pem, &err), -EACCES);
	/* A positive return breaks the contract; it must not look like success. */
	s = (struct soft_signer){ .key = rsa, .fail_with = 1 };
	assert_int_equal(ks_csr_create(rsa, &p, soft_sign, &s, &pem, &err), -EIO);
	assert_null(pem);
	s = (struct soft_signer){ .key = rsa, .no_signature = 1 };
	assert_int_equal(ks_csr_create(rsa, &p, soft_sign, &s, &pem, &err), -EIO);
	assert_null(pem);

	EVP_PKEY_free(ec);
	EVP_PKEY_free(ec_other);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(rsa_other);
}

static void test_csr_alg_mismatch(void **state)
{
	EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	static const struct {
		int rsa_key;
		enum ks_sig_alg alg;
	} cases[] = {
		{ 0, KS_SIG_RSA_PKCS1_SHA256 },
		{ 0, KS_SIG_RSA_PKCS1_SHA512 },
		{ 0, KS_SIG_RSA_PSS_SHA256 },
		{ 0, KS_SIG_NONE },
		{ 1, KS_SIG_ECDSA_SHA256 },
		{ 1, KS_SIG_ECDSA_SHA384 },
		{ 1, KS_SIG_RSA_PSS_SHA256 },  /* PSS is refused for CSRs */
		{ 1, KS_SIG_RSA_PSS_SHA512 },
		{ 1, (enum ks_sig_alg)99 },
	};
	struct soft_signer s = { .key = rsa };
	struct ks_csr_params p = full_params(KS_SIG_NONE);
	const char *err;
	char *pem = NULL;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		p.alg = cases[i].alg;
		err = NULL;
		if (ks_csr_create(cases[i].rsa_key ? rsa : ec, &p, soft_sign, &s, &pem, &err) != -EINVAL)
			fail_msg("case %zu accepted", i);
		assert_non_null(err);
		assert_null(pem);
	}
	/* Neither RSA nor EC. */
	p.alg = KS_SIG_ECDSA_SHA256;
	assert_non_null(ed);
	assert_int_equal(ks_csr_create(ed, &p, soft_sign, &s, &pem, &err), -EINVAL);
	assert_int_equal(s.calls, 0);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ed);
}

/* Each bad parameter is an -EINVAL with a message, and nothing gets signed. */
static void test_csr_bad_params(void **state)
{
	static const char *const bad_ips[] = {
		"300.1.1.1", "1.2.3", "192.0.2.1 ", " 192.0.2.1", "fe80::1%eth0", "::g", "",
		"192.0.2.1/24", "010.1.1.1",
	};
	static const char *const bad_dns[] = {
		"", "a..b", ".a.b", "host.", "-a.b", "a-.b", "a_b.example", "a.*.b", "*", "*.",
		"**.b", "a b", "caf\xc3\xa9.example", "*.*.b",
		"ex\xe2\x80\x8b" "ample.com", "moc.elpmaxe\xe2\x80\xae", "a\x01.example", "a\x7f.example",
	};
	static const char *const bad_uris[] = { "", "no-scheme", "http://a b", "1http://x", "http:",
						"://x", "http://\xc3\xa9", "https://a\xe2\x80\xae",
						"https://a\xe2\x81\xa0", "https://a\x1b[0m", "https://a\xc2\x85" };
	static const char *const bad_emails[] = { "", "a@", "@b", "a@b@c", "a b@c.d", "a@-b.c",
						  "a@b..c", "\"a\"@b.c", "a\xe2\x80\xae@b.c", "a\xef\xbb\xbf@b.c",
						  "a\t@b.c" };
	static const char *const bad_ekus[] = { "sortOfAuth", "serverauth", "1", "1.x.3", "1.02.3", "" };
	static const struct ks_csr_attr bad_attrs[][2] = {
		{ { "1.3.6.1.4.1.34380.1.3.2", "a_b", "printable" } },
		{ { "1.3.6.1.4.1.34380.1.3.2", "\xc3\xa9", "ia5" } },
		{ { "1.3.6.1.4.1.34380.1.3.2", "\xc3", "utf8" } },
		{ { "1.3.6.1.4.1.34380.1.3.2", "x", "bmp" } },
		{ { "1.3.6.1.4.1.34380.1.3.2", "", NULL } },
		{ { "1.3.6.1.4.1.34380.1.3.2", NULL, NULL } },
		{ { "pp_uuid", "x", NULL } },
		{ { NULL, "x", NULL } },
		{ { "1.2.840.113549.1.9.14", "x", NULL } },   /* extensionRequest */
		{ { "1.2.3.4", "x", NULL }, { "1.2.3.4", "y", NULL } },
	};
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	struct soft_signer s = { .key = key };
	const char *one[1], *many[101];
	char long_name[1100];
	struct ks_csr_params base = { .subject = "CN=x", .alg = KS_SIG_ECDSA_SHA256 }, p;
	const char *err;
	char *pem = NULL;

	(void)state;
	assert_non_null(key);
#define EXPECT_EINVAL(prefix) do { \
		err = NULL; \
		if (ks_csr_create(key, &p, soft_sign, &s, &pem, &err) != -EINVAL) \
			fail_msg("line %d: accepted", __LINE__); \
		if (err == NULL || strncmp(err, prefix, strlen(prefix)) != 0) \
			fail_msg("line %d: error \"%s\" does not start with \"%s\"", __LINE__, \
				 err ? err : "(null)", prefix); \
		assert_null(pem); \
	} while (0)

	for (size_t i = 0; i < ARRAY_SIZE(bad_ips); i++) {
		p = base;
		one[0] = bad_ips[i];
		p.ip = one;
		p.n_ip = 1;
		EXPECT_EINVAL("san.ip");
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad_dns); i++) {
		p = base;
		one[0] = bad_dns[i];
		p.dns = one;
		p.n_dns = 1;
		EXPECT_EINVAL("san.dns");
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad_uris); i++) {
		p = base;
		one[0] = bad_uris[i];
		p.uri = one;
		p.n_uri = 1;
		EXPECT_EINVAL("san.uri");
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad_emails); i++) {
		p = base;
		one[0] = bad_emails[i];
		p.email = one;
		p.n_email = 1;
		EXPECT_EINVAL("san.email");
	}
	/* Overlong: a 64-character DNS label, a 1025-byte URI. */
	memset(long_name, 'a', 64);
	strcpy(long_name + 64, ".example");
	p = base;
	one[0] = long_name;
	p.dns = one;
	p.n_dns = 1;
	EXPECT_EINVAL("san.dns");
	memcpy(long_name, "https://", 8);
	memset(long_name + 8, 'a', 1017);
	long_name[1025] = '\0';
	p = base;
	p.uri = one;
	p.n_uri = 1;
	EXPECT_EINVAL("san.uri");
	long_name[1024] = '\0';     /* 1024 bytes is still fine */
	err = NULL;
	assert_int_equal(ks_csr_create(key, &p, soft_sign, &s, &pem, &err), 0);
	free(pem);
	pem = NULL;
	s.calls = 0;

	/* Too many names, in one list or spread over several. */
	for (size_t i = 0; i < ARRAY_SIZE(many); i++)
		many[i] = "x.example";
	p = base;
	p.dns = many;
	p.n_dns = 101;
	EXPECT_EINVAL("san");
	p.n_dns = 50;
	p.uri = many;   /* never looked at: the count is checked first */
	p.n_uri = 51;
	EXPECT_EINVAL("san");
	p = base;
	p.n_dns = 1;    /* a count without a list */
	EXPECT_EINVAL("san");

	for (size_t i = 0; i < ARRAY_SIZE(bad_ekus); i++) {
		p = base;
		one[0] = bad_ekus[i];
		p.ext_key_usage = one;
		p.n_ext_key_usage = 1;
		EXPECT_EINVAL("ext_key_usage");
	}
	/* Each usage once, a name and its OID being one usage. */
	{
		static const char *const dups[][3] = {
			{ "serverAuth", "serverAuth", NULL },
			{ "clientAuth", "serverAuth", "clientAuth" },
			{ "serverAuth", "1.3.6.1.5.5.7.3.1", NULL },
			{ "1.2.3.4", "1.2.3.4", NULL },
		};
		static const char *const distinct[] = { "serverAuth", "clientAuth", "1.3.6.1.5.5.7.3.9" };

		for (size_t i = 0; i < ARRAY_SIZE(dups); i++) {
			p = base;
			p.ext_key_usage = dups[i];
			p.n_ext_key_usage = dups[i][2] ? 3 : 2;
			EXPECT_EINVAL("ext_key_usage: an entry is given twice");
		}
		p = base;
		p.ext_key_usage = distinct;
		p.n_ext_key_usage = ARRAY_SIZE(distinct);
		err = NULL;
		assert_int_equal(ks_csr_create(key, &p, soft_sign, &s, &pem, &err), 0);
		free(pem);
		pem = NULL;
		s.calls = 0;
	}

	p = base;
	p.key_usage = KS_KU_DIGITAL_SIGNATURE | (1u << 7);
	EXPECT_EINVAL("key_usage");

	for (size_t i = 0; i < ARRAY_SIZE(bad_attrs); i++) {
		p = base;
		p.attrs = bad_attrs[i];
		p.n_attrs = bad_attrs[i][1].oid ? 2 : 1;
		EXPECT_EINVAL("attributes");
	}

	p = base;
	p.subject = "CN=x,";
	EXPECT_EINVAL("subject");
	p.subject = NULL;
	EXPECT_EINVAL("subject");
#undef EXPECT_EINVAL

	assert_int_equal(s.calls, 0);
	EVP_PKEY_free(key);
}

static void test_key_usage_names(void **state)
{
	static const struct {
		const char *name;
		unsigned bit;
	} cases[] = {
		{ "digitalSignature", KS_KU_DIGITAL_SIGNATURE },
		{ "nonRepudiation", KS_KU_NON_REPUDIATION },
		{ "contentCommitment", KS_KU_NON_REPUDIATION },
		{ "keyEncipherment", KS_KU_KEY_ENCIPHERMENT },
		{ "dataEncipherment", KS_KU_DATA_ENCIPHERMENT },
		{ "keyAgreement", KS_KU_KEY_AGREEMENT },
		{ "keyCertSign", KS_KU_KEY_CERT_SIGN },
		{ "cRLSign", KS_KU_CRL_SIGN },
		{ "crlsign", 0 },
		{ "DigitalSignature", 0 },
		{ "encipherOnly", 0 },
		{ "", 0 },
		{ NULL, 0 },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		assert_int_equal(ks_key_usage_from_name(cases[i].name), cases[i].bit);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc4514_good),
		cmocka_unit_test(test_rfc4514_escaped_utf8_prints_back),
		cmocka_unit_test(test_rfc4514_structure),
		cmocka_unit_test(test_rfc4514_rejects),
		cmocka_unit_test(test_csr_rsa2048),
		cmocka_unit_test(test_csr_p256),
		cmocka_unit_test(test_csr_p384),
		cmocka_unit_test(test_csr_minimal),
		cmocka_unit_test(test_csr_hundred_names),
		cmocka_unit_test(test_csr_signer_failures),
		cmocka_unit_test(test_csr_alg_mismatch),
		cmocka_unit_test(test_csr_bad_params),
		cmocka_unit_test(test_key_usage_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
