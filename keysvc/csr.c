#include "keysvc/csr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#define KS_DN_VALUE_MAX 256
#define KS_DN_MAX_AVAS 64
#define KS_SAN_MAX 100
#define KS_NAME_MAX 1024

/* ---- RFC 4514 ------------------------------------------------------------ */

static const struct {
	const char *name;
	int nid;
} dn_types[] = {
	{ "CN", NID_commonName },
	{ "C", NID_countryName },
	{ "L", NID_localityName },
	{ "ST", NID_stateOrProvinceName },
	{ "O", NID_organizationName },
	{ "OU", NID_organizationalUnitName },
	{ "STREET", NID_streetAddress },
	{ "DC", NID_domainComponent },
	{ "UID", NID_userId },
	{ "SERIALNUMBER", NID_serialNumber },
	{ "emailAddress", NID_pkcs9_emailAddress },
};

struct ava {
	ASN1_OBJECT *obj;
	unsigned char value[KS_DN_VALUE_MAX];
	size_t len;
	int new_rdn;          /* first AVA of its RDN */
};

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int utf8_valid(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		size_t n;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			n = 1;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		for (size_t k = 1; k <= n; k++) {
			if (i + k >= len || (s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		/* No overlong forms, no surrogates, nothing past U+10FFFF. */
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return 0;
		i += n + 1;
	}
	return 1;
}

static int printable_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       strchr(" '()+,-./:=?", c) != NULL;
}

static int all_printable(const unsigned char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!printable_char(s[i]))
			return 0;
	return 1;
}

static int all_ascii(const unsigned char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] == 0 || s[i] > 0x7e)
			return 0;
	return 1;
}

static int dotted_oid(const char *s, size_t len)
{
	int dots = 0, digits = 0;

	for (size_t i = 0; i < len; i++) {
		if (s[i] == '.') {
			if (digits == 0)
				return 0;
			dots++;
			digits = 0;
		} else if (s[i] >= '0' && s[i] <= '9') {
			digits++;
		} else {
			return 0;
		}
	}
	return dots >= 1 && digits > 0;
}

static ASN1_OBJECT *dn_type(const char *s, size_t len)
{
	char buf[128];

	if (len == 0 || len >= sizeof(buf))
		return NULL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	for (size_t i = 0; i < sizeof(dn_types) / sizeof(dn_types[0]); i++)
		if (strcasecmp(dn_types[i].name, buf) == 0)
			return OBJ_nid2obj(dn_types[i].nid);
	if (dotted_oid(buf, len))
		return OBJ_txt2obj(buf, 1);
	return NULL;
}

/* The ASN.1 string type an attribute's value is encoded as. */
static int value_type(const ASN1_OBJECT *obj, const unsigned char *v, size_t len,
		      const char **err)
{
	switch (OBJ_obj2nid(obj)) {
	case NID_countryName:
		if (len != 2 || !((v[0] | 0x20) >= 'a' && (v[0] | 0x20) <= 'z') ||
		    !((v[1] | 0x20) >= 'a' && (v[1] | 0x20) <= 'z')) {
			*err = "subject: C must be a two-letter country code";
			return -1;
		}
		return V_ASN1_PRINTABLESTRING;
	case NID_serialNumber:
		if (!all_printable(v, len)) {
			*err = "subject: SERIALNUMBER must be a PrintableString";
			return -1;
		}
		return V_ASN1_PRINTABLESTRING;
	case NID_domainComponent:
	case NID_pkcs9_emailAddress:
		if (!all_ascii(v, len)) {
			*err = "subject: DC and emailAddress must be ASCII";
			return -1;
		}
		return V_ASN1_IA5STRING;
	default:
		return V_ASN1_UTF8STRING;
	}
}

/* Parse one attribute value at s[*pos]; stops before an unescaped ',' or '+' or the end. */
static int parse_value(const char *s, size_t *pos, struct ava *a, const char **err)
{
	size_t i = *pos;
	int last_escaped = 0;

	a->len = 0;
	if (s[i] == '#') {
		*err = "subject: #hex (BER) values are not supported";
		return -EINVAL;
	}
	if (s[i] == ' ') {
		*err = "subject: a value must not start with an unescaped space";
		return -EINVAL;
	}
	while (s[i] != '\0' && s[i] != ',' && s[i] != '+') {
		unsigned char c = (unsigned char)s[i];

		if (a->len >= KS_DN_VALUE_MAX) {
			*err = "subject: a value is longer than 256 bytes";
			return -EINVAL;
		}
		if (c == '\\') {
			int h1 = hexval(s[i + 1]), h2 = h1 >= 0 ? hexval(s[i + 2]) : -1;

			if (h1 >= 0 && h2 >= 0) {
				a->value[a->len++] = (unsigned char)(h1 << 4 | h2);
				i += 3;
			} else if (s[i + 1] != '\0' && strchr(",+\"\\<>;= #", s[i + 1]) != NULL) {
				a->value[a->len++] = (unsigned char)s[i + 1];
				i += 2;
			} else {
				*err = "subject: bad escape sequence";
				return -EINVAL;
			}
			last_escaped = 1;
			continue;
		}
		if (c == '"' || c == ';' || c == '<' || c == '>') {
			*err = "subject: unescaped special character in a value";
			return -EINVAL;
		}
		a->value[a->len++] = c;
		last_escaped = 0;
		i++;
	}
	if (a->len == 0) {
		*err = "subject: empty value";
		return -EINVAL;
	}
	if (!last_escaped && a->value[a->len - 1] == ' ') {
		*err = "subject: a value must not end with an unescaped space";
		return -EINVAL;
	}
	if (memchr(a->value, '\0', a->len) != NULL || !utf8_valid(a->value, a->len)) {
		*err = "subject: a value is not valid UTF-8 (or contains NUL)";
		return -EINVAL;
	}
	*pos = i;
	return 0;
}

int ks_rfc4514_parse(const char *s, X509_NAME **out, const char **err)
{
	struct ava *avas = NULL;
	X509_NAME *name = NULL;
	size_t navas = 0, pos = 0, start;
	int r = -EINVAL, new_rdn = 1;

	*out = NULL;
	*err = NULL;
	if (s == NULL || s[0] == '\0') {
		*err = "subject: empty";
		return -EINVAL;
	}
	if (strlen(s) > 4096) {
		*err = "subject: too long";
		return -EINVAL;
	}
	if ((avas = calloc(KS_DN_MAX_AVAS, sizeof(*avas))) == NULL)
		return -ENOMEM;
	for (;;) {
		struct ava *a;

		if (navas == KS_DN_MAX_AVAS) {
			*err = "subject: too many attributes";
			goto out;
		}
		a = &avas[navas];
		start = pos;
		while (s[pos] != '\0' && s[pos] != '=')
			pos++;
		if (s[pos] != '=' || (a->obj = dn_type(s + start, pos - start)) == NULL) {
			*err = "subject: unknown or malformed attribute type";
			goto out;
		}
		navas++;
		a->new_rdn = new_rdn;
		pos++;
		if ((r = parse_value(s, &pos, a, err)) != 0)
			goto out;
		r = -EINVAL;
		if (value_type(a->obj, a->value, a->len, err) < 0)
			goto out;
		if (s[pos] == '\0')
			break;
		new_rdn = s[pos] == ',';
		pos++;
		if (s[pos] == '\0') {
			*err = "subject: trailing separator";
			goto out;
		}
	}

	if ((name = X509_NAME_new()) == NULL) {
		r = -ENOMEM;
		goto out;
	}
	/* RFC 4514 lists the most specific RDN first; the encoding starts with the least. */
	for (size_t end = navas; end > 0;) {
		size_t first = end - 1;

		while (!avas[first].new_rdn)
			first--;
		/* Within an RDN too, so that printing in RFC 2253 order gives the string back. */
		for (size_t i = end; i-- > first;) {
			int type = value_type(avas[i].obj, avas[i].value, avas[i].len, err);

			if (X509_NAME_add_entry_by_OBJ(name, avas[i].obj, type, avas[i].value,
						       (int)avas[i].len, -1, i == end - 1 ? 0 : -1) != 1) {
				*err = "subject: cannot encode an attribute";
				goto out;
			}
		}
		end = first;
	}
	*out = name;
	name = NULL;
	r = 0;
out:
	for (size_t i = 0; i < navas; i++)
		ASN1_OBJECT_free(avas[i].obj);
	free(avas);
	X509_NAME_free(name);
	return r;
}

/* ---- extensions -------------------------------------------------------------- */

unsigned ks_key_usage_from_name(const char *name)
{
	static const struct {
		const char *name;
		unsigned bit;
	} usages[] = {
		{ "digitalSignature", KS_KU_DIGITAL_SIGNATURE },
		{ "nonRepudiation", KS_KU_NON_REPUDIATION },
		{ "contentCommitment", KS_KU_NON_REPUDIATION },
		{ "keyEncipherment", KS_KU_KEY_ENCIPHERMENT },
		{ "dataEncipherment", KS_KU_DATA_ENCIPHERMENT },
		{ "keyAgreement", KS_KU_KEY_AGREEMENT },
		{ "keyCertSign", KS_KU_KEY_CERT_SIGN },
		{ "cRLSign", KS_KU_CRL_SIGN },
	};

	for (size_t i = 0; name != NULL && i < sizeof(usages) / sizeof(usages[0]); i++)
		if (strcmp(usages[i].name, name) == 0)
			return usages[i].bit;
	return 0;
}

static int dns_name_ok(const char *s)
{
	size_t n = strlen(s), label = 0;

	if (strncmp(s, "*.", 2) == 0) {
		s += 2;
		n -= 2;
	}
	if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return 0;
		if (++label > 63)
			return 0;
	}
	return 1;
}

static int push_ia5(GENERAL_NAMES *gens, int type, const char *s)
{
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();

	if (gn == NULL || ia5 == NULL || ASN1_STRING_set(ia5, s, (int)strlen(s)) != 1) {
		GENERAL_NAME_free(gn);
		ASN1_IA5STRING_free(ia5);
		return -ENOMEM;
	}
	GENERAL_NAME_set0_value(gn, type, ia5);
	if (sk_GENERAL_NAME_push(gens, gn) <= 0) {
		GENERAL_NAME_free(gn);
		return -ENOMEM;
	}
	return 0;
}

static int push_ip(GENERAL_NAMES *gens, const char *s)
{
	unsigned char buf[16];
	GENERAL_NAME *gn;
	ASN1_OCTET_STRING *os;
	int len;

	/* inet_pton is stricter than OpenSSL's parser (no "1.2.3", no trailing junk). */
	if (inet_pton(AF_INET, s, buf) == 1)
		len = 4;
	else if (inet_pton(AF_INET6, s, buf) == 1)
		len = 16;
	else
		return -EINVAL;
	gn = GENERAL_NAME_new();
	os = ASN1_OCTET_STRING_new();
	if (gn == NULL || os == NULL || ASN1_OCTET_STRING_set(os, buf, len) != 1) {
		GENERAL_NAME_free(gn);
		ASN1_OCTET_STRING_free(os);
		return -ENOMEM;
	}
	GENERAL_NAME_set0_value(gn, GEN_IPADD, os);
	if (sk_GENERAL_NAME_push(gens, gn) <= 0) {
		GENERAL_NAME_free(gn);
		return -ENOMEM;
	}
	return 0;
}

static int string_ok(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= KS_NAME_MAX && all_ascii((const unsigned char *)s, n);
}

/* Encode @value as extension @nid and append it; @value stays the caller's. */
static int push_ext(STACK_OF(X509_EXTENSION) *exts, int nid, int critical, void *value)
{
	X509_EXTENSION *ext = X509V3_EXT_i2d(nid, critical, value);

	if (ext == NULL)
		return -ENOMEM;
	if (sk_X509_EXTENSION_push(exts, ext) <= 0) {
		X509_EXTENSION_free(ext);
		return -ENOMEM;
	}
	return 0;
}

static int add_san(STACK_OF(X509_EXTENSION) *exts, const struct ks_csr_params *p,
		   const char **err)
{
	GENERAL_NAMES *gens;
	int r = -EINVAL;

	if (p->n_dns + p->n_ip + p->n_uri + p->n_email == 0)
		return 0;
	if (p->n_dns + p->n_ip + p->n_uri + p->n_email > KS_SAN_MAX) {
		*err = "san: more than 100 names";
		return -EINVAL;
	}
	if ((gens = GENERAL_NAMES_new()) == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < p->n_dns; i++) {
		if (!dns_name_ok(p->dns[i])) {
			*err = "san.dns: not a DNS name";
			goto out;
		}
		if ((r = push_ia5(gens, GEN_DNS, p->dns[i])) != 0)
			goto out;
	}
	for (size_t i = 0; i < p->n_ip; i++) {
		if ((r = push_ip(gens, p->ip[i])) != 0) {
			*err = "san.ip: not an IPv4 or IPv6 address";
			goto out;
		}
	}
	r = -EINVAL;
	for (size_t i = 0; i < p->n_uri; i++) {
		if (!string_ok(p->uri[i]) || strchr(p->uri[i], ':') == NULL ||
		    strpbrk(p->uri[i], " \t\r\n") != NULL) {
			*err = "san.uri: not a URI";
			goto out;
		}
		if ((r = push_ia5(gens, GEN_URI, p->uri[i])) != 0)
			goto out;
	}
	r = -EINVAL;
	for (size_t i = 0; i < p->n_email; i++) {
		const char *at = strchr(p->email[i], '@');

		if (!string_ok(p->email[i]) || at == NULL || at == p->email[i] || at[1] == '\0' ||
		    strchr(at + 1, '@') != NULL || strpbrk(p->email[i], " \t\r\n") != NULL) {
			*err = "san.email: not an email address";
			goto out;
		}
		if ((r = push_ia5(gens, GEN_EMAIL, p->email[i])) != 0)
			goto out;
	}
	r = push_ext(exts, NID_subject_alt_name, 0, gens);
out:
	GENERAL_NAMES_free(gens);
	return r;
}

static int add_key_usage(STACK_OF(X509_EXTENSION) *exts, unsigned bits)
{
	ASN1_BIT_STRING *ku;
	int r = -ENOMEM;

	if (bits == 0)
		return 0;
	if ((ku = ASN1_BIT_STRING_new()) == NULL)
		return -ENOMEM;
	for (int bit = 0; bit < 7; bit++)
		if ((bits & (1u << bit)) && ASN1_BIT_STRING_set_bit(ku, bit, 1) != 1)
			goto out;
	/* keyUsage is critical, as RFC 5280 recommends. */
	r = push_ext(exts, NID_key_usage, 1, ku);
out:
	ASN1_BIT_STRING_free(ku);
	return r;
}

static ASN1_OBJECT *eku_object(const char *s)
{
	static const struct {
		const char *name;
		int nid;
	} ekus[] = {
		{ "serverAuth", NID_server_auth },
		{ "clientAuth", NID_client_auth },
		{ "codeSigning", NID_code_sign },
		{ "emailProtection", NID_email_protect },
		{ "timeStamping", NID_time_stamp },
		{ "OCSPSigning", NID_OCSP_sign },
	};

	for (size_t i = 0; i < sizeof(ekus) / sizeof(ekus[0]); i++)
		if (strcmp(ekus[i].name, s) == 0)
			return OBJ_nid2obj(ekus[i].nid);
	if (strlen(s) < 128 && dotted_oid(s, strlen(s)))
		return OBJ_txt2obj(s, 1);
	return NULL;
}

static int add_eku(STACK_OF(X509_EXTENSION) *exts, const struct ks_csr_params *p,
		   const char **err)
{
	EXTENDED_KEY_USAGE *eku;
	int r = -EINVAL;

	if (p->n_ext_key_usage == 0)
		return 0;
	if ((eku = sk_ASN1_OBJECT_new_null()) == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < p->n_ext_key_usage; i++) {
		ASN1_OBJECT *obj = eku_object(p->ext_key_usage[i]);

		if (obj == NULL) {
			*err = "ext_key_usage: unknown usage (use a name or a dotted OID)";
			goto out;
		}
		if (sk_ASN1_OBJECT_push(eku, obj) <= 0) {
			ASN1_OBJECT_free(obj);
			r = -ENOMEM;
			goto out;
		}
	}
	r = push_ext(exts, NID_ext_key_usage, 0, eku);
out:
	sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
	return r;
}

static int add_attrs(X509_REQ *req, const struct ks_csr_params *p, const char **err)
{
	for (size_t i = 0; i < p->n_attrs; i++) {
		const struct ks_csr_attr *a = &p->attrs[i];
		const char *t = a->string_type ? a->string_type : "utf8";
		size_t len = a->value ? strlen(a->value) : 0;
		ASN1_OBJECT *obj;
		int type, ok;

		if (a->oid == NULL || strlen(a->oid) >= 128 || !dotted_oid(a->oid, strlen(a->oid))) {
			*err = "attributes: oid must be a dotted OID";
			return -EINVAL;
		}
		if (len == 0 || len > KS_NAME_MAX) {
			*err = "attributes: value must be 1..1024 bytes";
			return -EINVAL;
		}
		if (strcmp(t, "utf8") == 0) {
			type = V_ASN1_UTF8STRING;
			ok = utf8_valid((const unsigned char *)a->value, len);
		} else if (strcmp(t, "printable") == 0) {
			type = V_ASN1_PRINTABLESTRING;
			ok = all_printable((const unsigned char *)a->value, len);
		} else if (strcmp(t, "ia5") == 0) {
			type = V_ASN1_IA5STRING;
			ok = all_ascii((const unsigned char *)a->value, len);
		} else {
			*err = "attributes: type must be utf8, printable or ia5";
			return -EINVAL;
		}
		if (!ok) {
			*err = "attributes: value does not fit its string type";
			return -EINVAL;
		}
		if ((obj = OBJ_txt2obj(a->oid, 1)) == NULL)
			return -ENOMEM;
		/* Extensions travel in their own attribute, built from the fields above. */
		if (OBJ_obj2nid(obj) == NID_ext_req || OBJ_obj2nid(obj) == NID_ms_ext_req) {
			ASN1_OBJECT_free(obj);
			*err = "attributes: extensionRequest is built from san, key_usage and ext_key_usage";
			return -EINVAL;
		}
		ok = X509_REQ_add1_attr_by_OBJ(req, obj, type, (const unsigned char *)a->value,
					       (int)len);
		ASN1_OBJECT_free(obj);
		if (ok != 1)
			return -ENOMEM;
	}
	return 0;
}

/* ---- the request ---------------------------------------------------------- */

static int sig_algor_nid(enum ks_sig_alg alg)
{
	switch (alg) {
	case KS_SIG_RSA_PKCS1_SHA256:
		return NID_sha256WithRSAEncryption;
	case KS_SIG_RSA_PKCS1_SHA384:
		return NID_sha384WithRSAEncryption;
	case KS_SIG_RSA_PKCS1_SHA512:
		return NID_sha512WithRSAEncryption;
	case KS_SIG_ECDSA_SHA256:
		return NID_ecdsa_with_SHA256;
	case KS_SIG_ECDSA_SHA384:
		return NID_ecdsa_with_SHA384;
	default:
		return NID_undef;
	}
}

int ks_csr_create(EVP_PKEY *pub, const struct ks_csr_params *params,
		  ks_csr_sign_fn sign, void *sign_arg, char **pem, const char **err)
{
	STACK_OF(X509_EXTENSION) *exts = NULL;
	X509_REQ *req = NULL;
	X509_NAME *subject = NULL;
	X509_ALGOR *algor = NULL;
	ASN1_BIT_STRING *bits = NULL;
	unsigned char *tbs = NULL;
	uint8_t md[EVP_MAX_MD_SIZE], *sig = NULL;
	unsigned md_len = 0;
	size_t sig_len = 0;
	enum ks_key_family fam;
	BIO *bio = NULL;
	char *data;
	long n;
	int tbs_len, nid, r;

	*pem = NULL;
	*err = NULL;
	fam = EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA ? KS_FAMILY_RSA :
	      EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC ? KS_FAMILY_EC : KS_FAMILY_NONE;
	if (ks_sig_alg_is_pss(params->alg)) {
		*err = "RSA-PSS signatures on CSRs are not supported; use PKCS#1 v1.5";
		return -EINVAL;
	}
	if ((nid = sig_algor_nid(params->alg)) == NID_undef || ks_sig_alg_family(params->alg) != fam) {
		*err = "the signature algorithm does not fit the key";
		return -EINVAL;
	}
	if ((r = ks_rfc4514_parse(params->subject, &subject, err)) != 0)
		return r;

	r = -ENOMEM;
	if ((req = X509_REQ_new()) == NULL || (exts = sk_X509_EXTENSION_new_null()) == NULL)
		goto out;
	if (X509_REQ_set_version(req, 0) != 1 || X509_REQ_set_subject_name(req, subject) != 1 ||
	    X509_REQ_set_pubkey(req, pub) != 1)
		goto out;
	if ((r = add_san(exts, params, err)) != 0 ||
	    (r = add_key_usage(exts, params->key_usage)) != 0 ||
	    (r = add_eku(exts, params, err)) != 0)
		goto out;
	r = -ENOMEM;
	if (sk_X509_EXTENSION_num(exts) > 0 && X509_REQ_add_extensions(req, exts) != 1)
		goto out;
	if ((r = add_attrs(req, params, err)) != 0)
		goto out;

	r = -ENOMEM;
	if ((algor = X509_ALGOR_new()) == NULL ||
	    X509_ALGOR_set0(algor, OBJ_nid2obj(nid),
			    fam == KS_FAMILY_RSA ? V_ASN1_NULL : V_ASN1_UNDEF, NULL) != 1 ||
	    X509_REQ_set1_signature_algo(req, algor) != 1)
		goto out;
	if ((tbs_len = i2d_re_X509_REQ_tbs(req, &tbs)) <= 0)
		goto out;
	r = -EIO;
	if (EVP_Digest(tbs, (size_t)tbs_len, md, &md_len,
		       EVP_get_digestbyname(ks_sig_alg_digest(params->alg)), NULL) != 1)
		goto out;
	if ((r = sign(sign_arg, params->alg, md, md_len, &sig, &sig_len)) != 0)
		goto out;
	r = -ENOMEM;
	if ((bits = ASN1_BIT_STRING_new()) == NULL || ASN1_BIT_STRING_set(bits, sig, (int)sig_len) != 1)
		goto out;
	/* A signature has no unused bits; say so rather than let the encoder trim zeros. */
	bits->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
	bits->flags |= ASN1_STRING_FLAG_BITS_LEFT;
	X509_REQ_set0_signature(req, bits);
	bits = NULL;
	if (X509_REQ_verify(req, pub) != 1) {
		*err = "the token's signature does not verify with the key's public key";
		r = -EIO;
		goto out;
	}
	if ((bio = BIO_new(BIO_s_mem())) == NULL || PEM_write_bio_X509_REQ(bio, req) != 1)
		goto out;
	n = BIO_get_mem_data(bio, &data);
	if (n <= 0 || (*pem = strndup(data, (size_t)n)) == NULL)
		goto out;
	r = 0;
out:
	BIO_free(bio);
	ASN1_BIT_STRING_free(bits);
	free(sig);
	OPENSSL_free(tbs);
	X509_ALGOR_free(algor);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(subject);
	X509_REQ_free(req);
	return r;
}
