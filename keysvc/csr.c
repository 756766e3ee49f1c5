#include "keysvc/csr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "proto/utf8.h"
#include "proto/wire.h"

#define KS_DN_VALUE_MAX 256
#define KS_DN_MAX_AVAS 64
/* X.520 ub-common-name: characters, not bytes. */
#define KS_CN_CHARS_MAX 64
/* KS_SUBJECT_MAX, KS_SAN_MAX, KS_SAN_ENTRY_MAX, KS_OID_TEXT_MAX, KS_ATTR_VALUE_MAX: proto/wire.h. */
_Static_assert(KS_SUBJECT_MAX == 4096 && KS_SAN_MAX == 100 && KS_SAN_ENTRY_MAX == 1024 &&
	       KS_ATTR_VALUE_MAX == 1024, "the messages below spell out the limits of proto/wire.h");
#define KS_DNS_NAME_MAX 253
#define KS_DNS_LABEL_MAX 63
#define KS_KU_ALL 0x7fu

/* ---- character classes ---------------------------------------------------- */

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

static int is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* X.680 PrintableString. */
static int all_printable(const unsigned char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!is_alpha(s[i]) && !is_digit(s[i]) && strchr(" '()+,-./:=?", s[i]) == NULL)
			return 0;
	return 1;
}

/* IA5String minus NUL (which no C string here can carry anyway). */
static int all_ia5(const unsigned char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] == 0 || s[i] > 0x7f)
			return 0;
	return 1;
}

/* The code point of the valid UTF-8 sequence of @n bytes at @s. */
static uint32_t utf8_code_point(const unsigned char *s, size_t n)
{
	static const unsigned char lead_mask[5] = { 0, 0x7f, 0x1f, 0x0f, 0x07 };
	uint32_t cp = s[0] & lead_mask[n];

	for (size_t i = 1; i < n; i++)
		cp = cp << 6 | (s[i] & 0x3f);
	return cp;
}

/*
 * Why the valid UTF-8 @s may not go into a subject a CA signs, or NULL. A
 * relying party shows a name to people: control characters can end or
 * rewrite the line they are shown on, bidirectional overrides show the
 * characters in another order than they are compared in ("moc.elpmaxe"
 * read as "example.com"), and zero-width characters make two names that
 * differ look the same.
 */
static const char *subject_text_refusal(const unsigned char *s, size_t len)
{
	size_t n;

	for (size_t i = 0; i < len; i += n) {
		uint32_t cp;

		if ((n = ks_utf8_char_len(s + i, len - i)) == 0)
			return "subject: a value is not valid UTF-8";
		cp = utf8_code_point(s + i, n);
		if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
			return "subject: a value contains a control character (C0, DEL or C1)";
		if ((cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069))
			return "subject: a value contains a bidirectional override (U+202A..U+202E, U+2066..U+2069)";
		if ((cp >= 0x200b && cp <= 0x200d) || cp == 0x2060 || cp == 0xfeff)
			return "subject: a value contains a zero-width character (U+200B..U+200D, U+2060, U+FEFF)";
	}
	return NULL;
}

/* Characters (code points) of the valid UTF-8 @s. */
static size_t utf8_chars(const unsigned char *s, size_t len)
{
	size_t chars = 0, n;

	for (size_t i = 0; i < len; i += n ? n : 1) {
		n = ks_utf8_char_len(s + i, len - i);
		chars++;
	}
	return chars;
}

/* Visible ASCII: what a SAN URI or mailbox may contain (no spaces, no controls). */
static int all_visible(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return 0;
	return 1;
}

/*
 * RFC 4512 numericoid: at least two arcs, no empty arcs and no leading
 * zeros, so that every accepted text has exactly one meaning.
 */
static int dotted_oid(const char *s, size_t len)
{
	size_t arcs = 0, digits = 0;

	if (len == 0 || len >= KS_OID_TEXT_MAX)
		return 0;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || s[i] == '.') {
			if (digits == 0)
				return 0;
			arcs++;
			digits = 0;
		} else if (is_digit((unsigned char)s[i])) {
			if (digits == 1 && s[i - 1] == '0')
				return 0;
			digits++;
		} else {
			return 0;
		}
	}
	return arcs >= 2;
}

/* A dotted OID as an object; NULL if malformed or not encodable (e.g. "3.1"). */
static ASN1_OBJECT *oid_object(const char *s, size_t len)
{
	char buf[KS_OID_TEXT_MAX];

	if (!dotted_oid(s, len))
		return NULL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return OBJ_txt2obj(buf, 1);
}

/* ---- RFC 4514 ------------------------------------------------------------- */

/*
 * The grammar is RFC 4514 section 3, read strictly: a typo in a subject
 * ends up signed by a CA, so anything the RFC does not allow is an error
 * rather than something quietly repaired.
 *  - No whitespace around ',', '+' or '=' (RFC 2253 parsers tolerated it;
 *    RFC 4514 does not). "CN=x, O=y" is rejected.
 *  - A value must not begin or end with an unescaped space: the RFC
 *    requires those to be escaped, and trimming them instead would sign a
 *    different name than the caller wrote. Escaped spaces are kept as is.
 *  - ';' as a separator (RFC 1779) and "#hex" BER values are rejected.
 *  - '=' and a non-leading '#' are ordinary value characters, as the RFC's
 *    stringchar allows.
 * Inside a multi-valued RDN the AVAs form a SET, which DER sorts by
 * encoding; the order written in the string therefore survives only in
 * memory, not in the encoded name.
 */

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
	int type;             /* V_ASN1_* string type of the value */
	unsigned char value[KS_DN_VALUE_MAX];
	size_t len;
	int new_rdn;          /* first AVA of its RDN in the string */
};

static ASN1_OBJECT *dn_type(const char *s, size_t len)
{
	for (size_t i = 0; i < sizeof(dn_types) / sizeof(dn_types[0]); i++)
		if (strlen(dn_types[i].name) == len && strncasecmp(dn_types[i].name, s, len) == 0)
			return OBJ_nid2obj(dn_types[i].nid);
	return oid_object(s, len);
}

/* The ASN.1 string type an attribute's value is encoded as, or -1 (with *err). */
static int value_type(const ASN1_OBJECT *obj, const unsigned char *v, size_t len,
		      const char **err)
{
	switch (OBJ_obj2nid(obj)) {
	case NID_commonName:
		if (utf8_chars(v, len) > KS_CN_CHARS_MAX) {
			*err = "subject: CN longer than 64 characters (X.520 ub-common-name)";
			return -1;
		}
		return V_ASN1_UTF8STRING;
	case NID_countryName:
		if (len != 2 || !is_alpha(v[0]) || !is_alpha(v[1])) {
			*err = "subject: C must be a two-letter country code";
			return -1;
		}
		return V_ASN1_PRINTABLESTRING;
	case NID_serialNumber:
		/* X.520 fixes serialNumber as PrintableString. */
		if (!all_printable(v, len)) {
			*err = "subject: SERIALNUMBER must contain only PrintableString characters";
			return -1;
		}
		return V_ASN1_PRINTABLESTRING;
	case NID_domainComponent:
	case NID_pkcs9_emailAddress:
		/* RFC 4519 and PKCS#9 fix these as IA5String. */
		if (!all_ia5(v, len)) {
			*err = "subject: DC and emailAddress must be ASCII";
			return -1;
		}
		return V_ASN1_IA5STRING;
	default:
		return V_ASN1_UTF8STRING;
	}
}

/* Parse one value at s[*pos], stopping before an unescaped ',' or '+' or the end. */
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
		*err = "subject: a value must not start with an unescaped space (write \"\\ \")";
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
				*err = "subject: bad escape sequence (only \\ before one of ,+\"\\<>;= # or two hex digits)";
				return -EINVAL;
			}
			last_escaped = 1;
			continue;
		}
		if (c == '"' || c == ';' || c == '<' || c == '>') {
			*err = "subject: unescaped special character (\" ; < >) in a value";
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
		*err = "subject: a value must not end with an unescaped space (write \"\\ \")";
		return -EINVAL;
	}
	if (memchr(a->value, '\0', a->len) != NULL) {
		*err = "subject: a value contains NUL";
		return -EINVAL;
	}
	if (!ks_utf8_valid(a->value, a->len)) {
		*err = "subject: a value is not valid UTF-8";
		return -EINVAL;
	}
	if ((*err = subject_text_refusal(a->value, a->len)) != NULL)
		return -EINVAL;
	*pos = i;
	return 0;
}

int ks_rfc4514_parse(const char *s, X509_NAME **out, const char **err)
{
	struct ava *avas = NULL;
	X509_NAME *name = NULL;
	const char *err_sink;
	size_t navas = 0, pos = 0, start, slen;
	int r = -EINVAL, new_rdn = 1;

	if (err == NULL)
		err = &err_sink;
	*err = NULL;
	if (out == NULL) {
		*err = "subject: no output";
		return -EINVAL;
	}
	*out = NULL;
	if (s == NULL || s[0] == '\0') {
		*err = "subject: empty";
		return -EINVAL;
	}
	if ((slen = strnlen(s, KS_SUBJECT_MAX + 1)) > KS_SUBJECT_MAX) {
		*err = "subject: longer than 4096 bytes";
		return -EINVAL;
	}
	if ((avas = calloc(KS_DN_MAX_AVAS, sizeof(*avas))) == NULL)
		return -ENOMEM;
	for (;;) {
		struct ava *a;

		if (navas == KS_DN_MAX_AVAS) {
			*err = "subject: more than 64 attributes";
			goto out;
		}
		a = &avas[navas];
		start = pos;
		while (s[pos] != '\0' && s[pos] != '=' && s[pos] != ',' && s[pos] != '+')
			pos++;
		if (s[pos] != '=') {
			*err = pos == start && (s[pos] == ',' || s[pos] == '+') ?
			       "subject: empty RDN (stray or doubled separator)" :
			       "subject: an attribute has no '='";
			goto out;
		}
		if (pos == start) {
			*err = "subject: missing attribute type before '='";
			goto out;
		}
		if ((a->obj = dn_type(s + start, pos - start)) == NULL) {
			*err = "subject: unknown attribute type (use CN, C, L, ST, O, OU, STREET, DC, UID, SERIALNUMBER, emailAddress or a dotted OID)";
			goto out;
		}
		navas++;
		a->new_rdn = new_rdn;
		pos++;
		if ((r = parse_value(s, &pos, a, err)) != 0)
			goto out;
		r = -EINVAL;
		if ((a->type = value_type(a->obj, a->value, a->len, err)) < 0)
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

	r = -ENOMEM;
	if ((name = X509_NAME_new()) == NULL)
		goto out;
	/*
	 * RFC 4514 lists the most specific RDN first; the encoding starts with
	 * the least. The AVAs of one RDN are reversed too so that printing the
	 * in-memory name in RFC 2253 order gives the string back; -1 then
	 * joins each AVA to the RDN (SET) just opened with 0.
	 */
	for (size_t end = navas; end > 0;) {
		size_t first = end - 1;

		while (!avas[first].new_rdn)
			first--;
		for (size_t i = end; i-- > first;) {
			if (X509_NAME_add_entry_by_OBJ(name, avas[i].obj, avas[i].type, avas[i].value,
						       (int)avas[i].len, -1, i == end - 1 ? 0 : -1) != 1)
				goto out;
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

/* ---- extensions and attributes --------------------------------------------- */

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

/*
 * RFC 5280 4.2.1.6 wants dNSName in the RFC 1034 preferred syntax: LDH
 * labels of 1..63 characters that neither start nor end with '-'
 * (internationalized names arrive as A-labels). The only wildcard is a
 * whole leftmost "*" label. No trailing dot: certificates never carry one.
 */
static int dns_name_ok(const char *s, int allow_wildcard)
{
	size_t n = strlen(s), label = 0;

	if (allow_wildcard && strncmp(s, "*.", 2) == 0) {
		s += 2;
		n -= 2;
	}
	if (n == 0 || n > KS_DNS_NAME_MAX)
		return 0;
	for (size_t i = 0; i <= n; i++) {
		unsigned char c = i < n ? (unsigned char)s[i] : '.';

		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return 0;
			label = 0;
			continue;
		}
		if (!is_alpha(c) && !is_digit(c) && c != '-')
			return 0;
		if (c == '-' && label == 0)
			return 0;
		if (++label > KS_DNS_LABEL_MAX)
			return 0;
	}
	return 1;
}

/* RFC 3986 URI: a scheme, ':', and something after it. */
static int uri_ok(const char *s)
{
	size_t n = strlen(s), i = 0;

	if (n == 0 || n > KS_SAN_ENTRY_MAX || !all_visible(s, n) || !is_alpha((unsigned char)s[0]))
		return 0;
	while (is_alpha((unsigned char)s[i]) || is_digit((unsigned char)s[i]) ||
	       s[i] == '+' || s[i] == '-' || s[i] == '.')
		i++;
	return s[i] == ':' && s[i + 1] != '\0';
}

/* An RFC 5321 mailbox without quoted local parts: local@domain. */
static int email_ok(const char *s)
{
	size_t n = strlen(s);
	const char *at = strchr(s, '@');

	if (n == 0 || n > KS_SAN_ENTRY_MAX || !all_visible(s, n) || at == NULL || at == s ||
	    strchr(at + 1, '@') != NULL || strchr(s, '"') != NULL)
		return 0;
	return dns_name_ok(at + 1, 0);
}

/* Append a GENERAL_NAME of @type holding an IA5String or OCTET STRING copy of @data. */
static int push_gen(GENERAL_NAMES *gens, int type, const void *data, size_t len)
{
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_STRING *str = type == GEN_IPADD ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();

	if (gn == NULL || str == NULL || ASN1_STRING_set(str, data, (int)len) != 1) {
		GENERAL_NAME_free(gn);
		ASN1_STRING_free(str);
		return -ENOMEM;
	}
	GENERAL_NAME_set0_value(gn, type, str);
	if (sk_GENERAL_NAME_push(gens, gn) <= 0) {
		GENERAL_NAME_free(gn);
		return -ENOMEM;
	}
	return 0;
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
	GENERAL_NAMES *gens = NULL;
	int r = -EINVAL;

	/* Each count alone first, so the sum below cannot wrap. */
	if (p->n_dns > KS_SAN_MAX || p->n_ip > KS_SAN_MAX || p->n_uri > KS_SAN_MAX ||
	    p->n_email > KS_SAN_MAX || p->n_dns + p->n_ip + p->n_uri + p->n_email > KS_SAN_MAX) {
		*err = "san: more than 100 names";
		return -EINVAL;
	}
	if (p->n_dns + p->n_ip + p->n_uri + p->n_email == 0)
		return 0;
	if ((p->n_dns && p->dns == NULL) || (p->n_ip && p->ip == NULL) ||
	    (p->n_uri && p->uri == NULL) || (p->n_email && p->email == NULL)) {
		*err = "san: a name list is missing";
		return -EINVAL;
	}
	if ((gens = GENERAL_NAMES_new()) == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < p->n_dns; i++) {
		if (p->dns[i] == NULL || !dns_name_ok(p->dns[i], 1)) {
			*err = "san.dns: not a DNS name (letters, digits, '-' in labels of 1..63, optional leading \"*.\")";
			r = -EINVAL;
			goto out;
		}
		if ((r = push_gen(gens, GEN_DNS, p->dns[i], strlen(p->dns[i]))) != 0)
			goto out;
	}
	for (size_t i = 0; i < p->n_ip; i++) {
		unsigned char addr[16];
		size_t len;

		/* inet_pton, unlike a2i_IPADDRESS, refuses "1.2.3", octal and trailing junk. */
		if (p->ip[i] != NULL && inet_pton(AF_INET, p->ip[i], addr) == 1) {
			len = 4;
		} else if (p->ip[i] != NULL && inet_pton(AF_INET6, p->ip[i], addr) == 1) {
			len = 16;
		} else {
			*err = "san.ip: not an IPv4 or IPv6 address";
			r = -EINVAL;
			goto out;
		}
		if ((r = push_gen(gens, GEN_IPADD, addr, len)) != 0)
			goto out;
	}
	for (size_t i = 0; i < p->n_uri; i++) {
		if (p->uri[i] == NULL || !uri_ok(p->uri[i])) {
			*err = "san.uri: not a URI (scheme:rest, visible ASCII, at most 1024 bytes)";
			r = -EINVAL;
			goto out;
		}
		if ((r = push_gen(gens, GEN_URI, p->uri[i], strlen(p->uri[i]))) != 0)
			goto out;
	}
	for (size_t i = 0; i < p->n_email; i++) {
		if (p->email[i] == NULL || !email_ok(p->email[i])) {
			*err = "san.email: not an email address (local@domain, at most 1024 bytes)";
			r = -EINVAL;
			goto out;
		}
		if ((r = push_gen(gens, GEN_EMAIL, p->email[i], strlen(p->email[i]))) != 0)
			goto out;
	}
	r = push_ext(exts, NID_subject_alt_name, 0, gens);
out:
	GENERAL_NAMES_free(gens);
	return r;
}

static int add_key_usage(STACK_OF(X509_EXTENSION) *exts, unsigned bits, const char **err)
{
	ASN1_BIT_STRING *ku;
	int r = -ENOMEM;

	if (bits == 0)
		return 0;
	if (bits & ~KS_KU_ALL) {
		*err = "key_usage: unknown bit";
		return -EINVAL;
	}
	if ((ku = ASN1_BIT_STRING_new()) == NULL)
		return -ENOMEM;
	/* enum ks_key_usage uses the RFC 5280 bit numbers, so bit n is bit n. */
	for (int bit = 0; bit < 7; bit++)
		if ((bits & (1u << bit)) && ASN1_BIT_STRING_set_bit(ku, bit, 1) != 1)
			goto out;
	/* Critical, as RFC 5280 4.2.1.3 says it SHOULD be. */
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

	if (s == NULL)
		return NULL;
	for (size_t i = 0; i < sizeof(ekus) / sizeof(ekus[0]); i++)
		if (strcmp(ekus[i].name, s) == 0)
			return OBJ_nid2obj(ekus[i].nid);
	return oid_object(s, strlen(s));
}

static int add_eku(STACK_OF(X509_EXTENSION) *exts, const struct ks_csr_params *p,
		   const char **err)
{
	EXTENDED_KEY_USAGE *eku;
	int r = -EINVAL;

	if (p->n_ext_key_usage == 0)
		return 0;
	if (p->ext_key_usage == NULL) {
		*err = "ext_key_usage: the list is missing";
		return -EINVAL;
	}
	if ((eku = sk_ASN1_OBJECT_new_null()) == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < p->n_ext_key_usage; i++) {
		ASN1_OBJECT *obj = eku_object(p->ext_key_usage[i]);

		if (obj == NULL) {
			*err = "ext_key_usage: unknown usage (serverAuth, clientAuth, codeSigning, emailProtection, timeStamping, OCSPSigning or a dotted OID)";
			r = -EINVAL;
			goto out;
		}
		/* By OID, so that "serverAuth" and "1.3.6.1.5.5.7.3.1" are one usage. */
		for (int j = 0; j < sk_ASN1_OBJECT_num(eku); j++)
			if (OBJ_cmp(sk_ASN1_OBJECT_value(eku, j), obj) == 0) {
				ASN1_OBJECT_free(obj);
				*err = "ext_key_usage: an entry is given twice";
				r = -EINVAL;
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
	if (p->n_attrs > 0 && p->attrs == NULL) {
		*err = "attributes: the list is missing";
		return -EINVAL;
	}
	for (size_t i = 0; i < p->n_attrs; i++) {
		const struct ks_csr_attr *a = &p->attrs[i];
		const char *t = a->string_type ? a->string_type : "utf8";
		size_t len = a->value ? strnlen(a->value, KS_ATTR_VALUE_MAX + 1) : 0;
		ASN1_OBJECT *obj;
		int type, ok, nid;

		if (a->oid == NULL || !dotted_oid(a->oid, strlen(a->oid))) {
			*err = "attributes: oid must be a dotted OID";
			return -EINVAL;
		}
		if (len == 0 || len > KS_ATTR_VALUE_MAX) {
			*err = "attributes: value must be 1..1024 bytes";
			return -EINVAL;
		}
		if (strcmp(t, "utf8") == 0) {
			type = V_ASN1_UTF8STRING;
			ok = ks_utf8_valid(a->value, len);
		} else if (strcmp(t, "printable") == 0) {
			type = V_ASN1_PRINTABLESTRING;
			ok = all_printable((const unsigned char *)a->value, len);
		} else if (strcmp(t, "ia5") == 0) {
			type = V_ASN1_IA5STRING;
			ok = all_ia5((const unsigned char *)a->value, len);
		} else {
			*err = "attributes: type must be utf8, printable or ia5";
			return -EINVAL;
		}
		if (!ok) {
			*err = "attributes: value has characters its string type cannot hold";
			return -EINVAL;
		}
		if ((obj = OBJ_txt2obj(a->oid, 1)) == NULL) {
			*err = "attributes: oid cannot be encoded";
			return -EINVAL;
		}
		nid = OBJ_obj2nid(obj);
		/* The extensions travel in their own attribute, built from the fields above. */
		if (nid == NID_ext_req || nid == NID_ms_ext_req) {
			ASN1_OBJECT_free(obj);
			*err = "attributes: extensionRequest is built from san, key_usage and ext_key_usage";
			return -EINVAL;
		}
		/* PKCS#10 attributes are a SET keyed by type; a second value would be ambiguous. */
		if (X509_REQ_get_attr_by_OBJ(req, obj, -1) >= 0) {
			ASN1_OBJECT_free(obj);
			*err = "attributes: the same oid twice";
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

static enum ks_key_family key_family(EVP_PKEY *pub)
{
	switch (EVP_PKEY_get_base_id(pub)) {
	case EVP_PKEY_RSA:
		return KS_FAMILY_RSA;
	case EVP_PKEY_EC:
		return KS_FAMILY_EC;
	default:
		return KS_FAMILY_NONE;
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
	EVP_MD *md = NULL;
	unsigned char *tbs = NULL;
	uint8_t hash[EVP_MAX_MD_SIZE], *sig = NULL;
	unsigned hash_len = 0;
	size_t sig_len = 0;
	const char *err_sink;
	BIO *bio = NULL;
	char *data;
	long n;
	int tbs_len, nid, r;

	if (err == NULL)
		err = &err_sink;
	*err = NULL;
	if (pem == NULL || pub == NULL || params == NULL || sign == NULL) {
		*err = "csr: missing argument";
		return -EINVAL;
	}
	*pem = NULL;
	/*
	 * PSS would need RSASSA-PSS-params matching whatever salt the token
	 * uses, and csr.create only ever asks for PKCS#1 v1.5 or ECDSA
	 * (ks_sig_alg_for_digest()), so it is refused rather than half done.
	 */
	if (ks_sig_alg_is_pss(params->alg)) {
		*err = "csr: RSA-PSS signatures on CSRs are not supported; use PKCS#1 v1.5";
		return -EINVAL;
	}
	if ((nid = sig_algor_nid(params->alg)) == NID_undef) {
		*err = "csr: unknown signature algorithm";
		return -EINVAL;
	}
	if (ks_sig_alg_family(params->alg) != key_family(pub)) {
		*err = "csr: the signature algorithm does not fit the key type";
		return -EINVAL;
	}
	if ((r = ks_rfc4514_parse(params->subject, &subject, err)) != 0)
		return r;

	r = -ENOMEM;
	if ((req = X509_REQ_new()) == NULL || (exts = sk_X509_EXTENSION_new_null()) == NULL)
		goto out;
	/* PKCS#10 knows only version 1, encoded as 0. */
	if (X509_REQ_set_version(req, 0) != 1 || X509_REQ_set_subject_name(req, subject) != 1)
		goto out;
	if (X509_REQ_set_pubkey(req, pub) != 1) {
		*err = "csr: the public key cannot be encoded";
		r = -EINVAL;
		goto out;
	}
	if ((r = add_san(exts, params, err)) != 0 ||
	    (r = add_key_usage(exts, params->key_usage, err)) != 0 ||
	    (r = add_eku(exts, params, err)) != 0)
		goto out;
	r = -ENOMEM;
	if (sk_X509_EXTENSION_num(exts) > 0 && X509_REQ_add_extensions(req, exts) != 1)
		goto out;
	if ((r = add_attrs(req, params, err)) != 0)
		goto out;

	/* RFC 4055 wants NULL parameters for RSA; RFC 5758 wants none for ECDSA. */
	r = -ENOMEM;
	if ((algor = X509_ALGOR_new()) == NULL ||
	    X509_ALGOR_set0(algor, OBJ_nid2obj(nid),
			    ks_sig_alg_family(params->alg) == KS_FAMILY_RSA ? V_ASN1_NULL : V_ASN1_UNDEF,
			    NULL) != 1 ||
	    X509_REQ_set1_signature_algo(req, algor) != 1)
		goto out;
	/* i2d_re_: the cached encoding predates the fields just set. */
	if ((tbs_len = i2d_re_X509_REQ_tbs(req, &tbs)) <= 0)
		goto out;
	r = -EIO;
	if ((md = EVP_MD_fetch(NULL, ks_sig_alg_digest(params->alg), NULL)) == NULL ||
	    EVP_Digest(tbs, (size_t)tbs_len, hash, &hash_len, md, NULL) != 1 ||
	    hash_len != ks_sig_alg_digest_len(params->alg)) {
		*err = "csr: cannot hash the request";
		goto out;
	}
	if ((r = sign(sign_arg, params->alg, tbs, (size_t)tbs_len, hash, hash_len, &sig, &sig_len)) != 0) {
		/* The contract is a negative errno; anything else is the callback's bug. */
		if (r > 0)
			r = -EIO;
		goto out;
	}
	if (sig == NULL || sig_len == 0 || sig_len > INT_MAX) {
		*err = "csr: the signer returned no signature";
		r = -EIO;
		goto out;
	}
	r = -ENOMEM;
	if ((bits = ASN1_BIT_STRING_new()) == NULL || ASN1_BIT_STRING_set(bits, sig, (int)sig_len) != 1)
		goto out;
	/* A signature has no unused bits; say so rather than let the encoder trim zero bits. */
	bits->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
	bits->flags |= ASN1_STRING_FLAG_BITS_LEFT;
	X509_REQ_set0_signature(req, bits);
	bits = NULL;
	/* A token that signed with another key must not hand out a CSR for this one. */
	if (X509_REQ_verify(req, pub) != 1) {
		*err = "csr: the token's signature does not verify with the key's public key";
		r = -EIO;
		goto out;
	}
	r = -ENOMEM;
	if ((bio = BIO_new(BIO_s_mem())) == NULL || PEM_write_bio_X509_REQ(bio, req) != 1)
		goto out;
	n = BIO_get_mem_data(bio, &data);
	if (n <= 0 || (*pem = strndup(data, (size_t)n)) == NULL)
		goto out;
	r = 0;
out:
	/* Leave no stale OpenSSL errors for the next, unrelated, failure report. */
	if (r != 0)
		ERR_clear_error();
	BIO_free(bio);
	ASN1_BIT_STRING_free(bits);
	free(sig);
	OPENSSL_free(tbs);
	EVP_MD_free(md);
	X509_ALGOR_free(algor);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(subject);
	X509_REQ_free(req);
	return r;
}
