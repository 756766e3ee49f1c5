#include "proto/sigform.h"

#include <errno.h>
#include <string.h>

#include "proto/json.h"
#include "proto/utf8.h"
#include "proto/wire.h"

/* In the order ks_purposes_format() writes them. */
static const struct {
	unsigned bit;
	const char *name;
} purposes[] = {
	{ KS_PURPOSE_CSR, "csr" },
	{ KS_PURPOSE_TLS, "tls" },
	{ KS_PURPOSE_HTTP_SIGNATURE, "http-signature" },
	{ KS_PURPOSE_SIGN, "sign" },
};

#define N_PURPOSES (sizeof(purposes) / sizeof(purposes[0]))

const char *ks_purpose_name(unsigned p)
{
	for (size_t i = 0; i < N_PURPOSES; i++)
		if (purposes[i].bit == p)
			return purposes[i].name;
	return NULL;
}

unsigned ks_purpose_from_name(const char *name)
{
	for (size_t i = 0; name != NULL && i < N_PURPOSES; i++)
		if (strcmp(purposes[i].name, name) == 0)
			return purposes[i].bit;
	return 0;
}

int ks_purposes_valid(unsigned set)
{
	return set != 0 && (set & ~(unsigned)KS_PURPOSE_ALL) == 0;
}

int ks_purposes_from_names(const char *const *names, size_t n, unsigned *out, int *bad,
			   const char **why)
{
	unsigned set = 0, bit;

	if (bad != NULL)
		*bad = -1;
	if (n == 0) {
		*why = "purposes must not be empty";
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if (bad != NULL)
			*bad = (int)i;
		if (names[i] == NULL) {
			*why = "a purpose must be a string";
			return -EINVAL;
		}
		if ((bit = ks_purpose_from_name(names[i])) == 0) {
			*why = "unknown purpose (csr, tls, http-signature, sign)";
			return -EOPNOTSUPP;
		}
		if (set & bit) {
			*why = "duplicate purpose";
			return -EINVAL;
		}
		set |= bit;
	}
	if (bad != NULL)
		*bad = -1;
	*out = set;
	return 0;
}

int ks_purposes_parse(const char *list, unsigned *out, const char **why)
{
	/* Longer than every valid list: a list this long has a bad entry anyway. */
	char copy[2 * KS_PURPOSES_TEXT_MAX], *p, *comma;
	const char *names[KS_PURPOSES_MAX + 1] = { NULL };
	size_t n = 0, len;

	if (list == NULL || list[0] == '\0')
		return ks_purposes_from_names(names, 0, out, NULL, why);
	if ((len = strlen(list)) >= sizeof(copy)) {
		*why = "unknown purpose (csr, tls, http-signature, sign)";
		return -EOPNOTSUPP;
	}
	memcpy(copy, list, len + 1);
	for (p = copy;; p = comma + 1) {
		if ((comma = strchr(p, ',')) != NULL)
			*comma = '\0';
		if (*p == '\0') {
			*why = "empty entry in the purpose list";
			return -EINVAL;
		}
		/* A fifth name is a duplicate or unknown: let the names say which. */
		if (n == KS_PURPOSES_MAX + 1)
			break;
		names[n++] = p;
		if (comma == NULL)
			break;
	}
	return ks_purposes_from_names(names, n, out, NULL, why);
}

int ks_purposes_format(unsigned set, char *buf, size_t len)
{
	size_t used = 0, l;

	if (!ks_purposes_valid(set))
		return -EINVAL;
	for (size_t i = 0; i < N_PURPOSES; i++) {
		if (!(set & purposes[i].bit))
			continue;
		l = strlen(purposes[i].name);
		if (used + (used > 0) + l + 1 > len)
			return -ENOSPC;
		if (used > 0)
			buf[used++] = ',';
		memcpy(buf + used, purposes[i].name, l);
		used += l;
		buf[used] = '\0';
	}
	return (int)used;
}

int ks_purposes_check_strv(const void *value, void *typed, const char **why)
{
	const struct ks_strv *v = value;

	if (v->n > KS_PURPOSES_MAX) {
		/* Five or more names cannot all be distinct purposes. */
		*why = "duplicate purpose";
		return -EINVAL;
	}
	return ks_purposes_from_names(v->v, v->n, typed, NULL, why);
}

/* ---- tls ------------------------------------------------------------------ */

#define TLS13_PAD 64
#define TLS13_CONTEXT_LEN 33
#define TLS_RANDOM 32
#define TLS_HS_HDR 4

enum tls_hs_type {
	HS_CLIENT_HELLO = 1,
	HS_SERVER_HELLO = 2,
	HS_CERTIFICATE = 11,
	HS_SERVER_KEY_EXCHANGE = 12,
	HS_CERTIFICATE_REQUEST = 13,
	HS_SERVER_HELLO_DONE = 14,
	HS_CLIENT_KEY_EXCHANGE = 16,
	HS_CERTIFICATE_STATUS = 22,
};

static const char tls13_server_context[] = "TLS 1.3, server CertificateVerify";
static const char tls13_client_context[] = "TLS 1.3, client CertificateVerify";

/*
 * RFC 8446 4.4.3. The 64 spaces come first so that a TLS 1.3 signature
 * cannot be a prefix of any earlier protocol's signed data; a client that
 * sends them shows it means TLS 1.3, and then the rest must be exact.
 */
static int check_tls13_cv(const uint8_t *m, size_t len, const char **why)
{
	size_t hash;

	for (size_t i = 0; i < TLS13_PAD; i++)
		if (m[i] != 0x20) {
			*why = "not a TLS 1.3 CertificateVerify content (64 spaces)";
			return -EPERM;
		}
	if (len < TLS13_PAD + TLS13_CONTEXT_LEN + 1 ||
	    (memcmp(m + TLS13_PAD, tls13_server_context, TLS13_CONTEXT_LEN) != 0 &&
	     memcmp(m + TLS13_PAD, tls13_client_context, TLS13_CONTEXT_LEN) != 0) ||
	    m[TLS13_PAD + TLS13_CONTEXT_LEN] != 0x00) {
		*why = "TLS 1.3 CertificateVerify content with a wrong context string";
		return -EPERM;
	}
	hash = len - (TLS13_PAD + TLS13_CONTEXT_LEN + 1);
	if (hash != 32 && hash != 48) {
		*why = "TLS 1.3 CertificateVerify content whose transcript hash is not 32 or 48 bytes";
		return -EPERM;
	}
	return 0;
}

/* RFC 8422 5.1.1 and RFC 8446 4.2.7: the ECDHE groups of TLS 1.2 and their point lengths. */
static const struct {
	uint16_t group;
	uint8_t point_len;
	uint8_t uncompressed;   /* the point starts with 0x04 (X9.62 uncompressed) */
} ec_groups[] = {
	{ 23, 65, 1 },    /* secp256r1 */
	{ 24, 97, 1 },    /* secp384r1 */
	{ 25, 133, 1 },   /* secp521r1 */
	{ 26, 65, 1 },    /* brainpoolP256r1 */
	{ 27, 97, 1 },    /* brainpoolP384r1 */
	{ 28, 129, 1 },   /* brainpoolP512r1 */
	{ 29, 32, 0 },    /* x25519 */
	{ 30, 56, 0 },    /* x448 */
};

#define EC_CURVE_TYPE_NAMED 3
static uint32_t get16(const uint8_t *p)
{
	return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t get24(const uint8_t *p)
{
	return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}

static int check_ecdh_params(const uint8_t *p, size_t len, const char **why)
{
	uint32_t group;

	/* curve_type, named group, point length, point of at least one byte. */
	if (len < 5) {
		*why = "TLS 1.2 ServerKeyExchange params cut short";
		return -EPERM;
	}
	group = get16(p + 1);
	for (size_t i = 0; i < sizeof(ec_groups) / sizeof(ec_groups[0]); i++) {
		if (ec_groups[i].group != group)
			continue;
		if (p[3] != ec_groups[i].point_len || len != 4u + p[3]) {
			*why = "TLS 1.2 ServerKeyExchange point of the wrong length for its group, or bytes after it";
			return -EPERM;
		}
		if (ec_groups[i].uncompressed && p[4] != 0x04) {
			*why = "TLS 1.2 ServerKeyExchange point not uncompressed";
			return -EPERM;
		}
		return 0;
	}
	*why = "TLS 1.2 ServerKeyExchange with an unknown named group";
	return -EPERM;
}

/*
 * RFC 5246 7.4.3 and RFC 8422 5.4: client_random + server_random +
 * ServerECDHParams. Not ServerDHParams: a prime, a generator and a
 * public value of free lengths and contents leave room enough to lay a
 * DER structure (a TBSCertificate) over them, while ECDHE params have
 * one length per group and too little room after the randoms for one.
 */
static int check_tls12_ske(const uint8_t *m, size_t len, const char **why)
{
	const uint8_t *p = m + 2 * TLS_RANDOM;
	size_t plen = len - 2 * TLS_RANDOM;

	if (len <= 2 * TLS_RANDOM) {
		*why = "TLS 1.2 ServerKeyExchange params cut short";
		return -EPERM;
	}
	if (p[0] != EC_CURVE_TYPE_NAMED) {
		*why = "TLS 1.2 ServerKeyExchange params not ECDHE with a named group (DHE is not signed)";
		return -EPERM;
	}
	return check_ecdh_params(p, plen, why);
}

/* A handshake message header at @m: type and the body's length, if it is whole within @len. */
static int hs_message(const uint8_t *m, size_t len, unsigned *type, size_t *body)
{
	if (len < TLS_HS_HDR || len - TLS_HS_HDR < get24(m + 1))
		return -1;
	*type = m[0];
	*body = get24(m + 1);
	return 0;
}

/*
 * RFC 5246 7.4.8: the client signs handshake_messages, everything from
 * its ClientHello up to its ClientKeyExchange. Only a transcript in which
 * the server asked for a client certificate ends in a client
 * CertificateVerify, so the order is fixed but for the server's optional
 * messages.
 */
static int check_tls12_transcript(const uint8_t *m, size_t len, const char **why)
{
	enum { SERVER_FLIGHT, AFTER_DONE, AFTER_CLIENT_CERT, END } state = SERVER_FLIGHT;
	size_t off = 0, body;
	unsigned type, n = 0;
	int requested = 0;

	while (off < len) {
		if (hs_message(m + off, len - off, &type, &body) < 0) {
			*why = "TLS 1.2 handshake transcript with a message cut short";
			return -EPERM;
		}
		if (n == 0 || n == 1) {
			unsigned want = n == 0 ? HS_CLIENT_HELLO : HS_SERVER_HELLO;

			/* legacy_version, then at least the 32-byte random. */
			if (type != want || body < 2 + TLS_RANDOM || get16(m + off + TLS_HS_HDR) != 0x0303) {
				*why = n == 0 ? "TLS 1.2 handshake transcript not starting with a TLS 1.2 ClientHello"
					      : "TLS 1.2 handshake transcript without a TLS 1.2 ServerHello second";
				return -EPERM;
			}
		} else if (state == SERVER_FLIGHT) {
			if (type == HS_CERTIFICATE_REQUEST)
				requested = 1;
			else if (type == HS_SERVER_HELLO_DONE)
				state = AFTER_DONE;
			else if (type != HS_CERTIFICATE && type != HS_CERTIFICATE_STATUS &&
				 type != HS_SERVER_KEY_EXCHANGE)
				goto order;
		} else if (state == AFTER_DONE && type == HS_CERTIFICATE) {
			state = AFTER_CLIENT_CERT;
		} else if (state == AFTER_CLIENT_CERT && type == HS_CLIENT_KEY_EXCHANGE) {
			state = END;
		} else {
			goto order;
		}
		off += TLS_HS_HDR + body;
		n++;
	}
	if (state == END && requested)
		return 0;
order:
	*why = "TLS 1.2 handshake transcript not ending in the client's Certificate and ClientKeyExchange "
	       "after a CertificateRequest";
	return -EPERM;
}

/*
 * Any of the three forms. A message may pass as more than one (a server
 * chooses its random freely, so 64 spaces or 0x01 can start one); it is
 * enough that one accepts it. When none does, the message is the one of
 * the form the first bytes point to.
 */
static int check_tls(const uint8_t *m, size_t len, const char **why)
{
	const char *w13 = NULL, *w12 = NULL, *wske = NULL;
	int spaces = len >= TLS13_PAD && m[0] == 0x20;

	if (spaces && check_tls13_cv(m, len, &w13) == 0)
		return 0;
	if (m[0] == HS_CLIENT_HELLO && check_tls12_transcript(m, len, &w12) == 0)
		return 0;
	if (check_tls12_ske(m, len, &wske) == 0)
		return 0;
	if (w13 != NULL && strncmp(w13, "not a", 5) != 0)
		*why = w13;
	else if (w12 != NULL)
		*why = w12;
	else if (len > 2 * TLS_RANDOM && !spaces && m[0] != HS_CLIENT_HELLO &&
		 (m[2 * TLS_RANDOM] == EC_CURVE_TYPE_NAMED || m[2 * TLS_RANDOM] <= 4))
		/* ECDHE params or what looks like DHE's (a prime of 128..1024 bytes). */
		*why = wske;
	else
		*why = "not a TLS handshake signature input (TLS 1.3 CertificateVerify content, "
		       "TLS 1.2 ServerKeyExchange params or client transcript)";
	return -EPERM;
}

/* ---- http-signature ------------------------------------------------------ */

static int is_name_char(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

/* C0, DEL and C1 (U+0080..U+009F, UTF-8 C2 80..C2 9F). */
static int has_control(const uint8_t *v, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (v[i] < 0x20 || v[i] == 0x7f)
			return 1;
		if (v[i] == 0xc2 && i + 1 < len && v[i + 1] >= 0x80 && v[i + 1] <= 0x9f)
			return 1;
	}
	return 0;
}

/* "(request-target): get /path?query": a lower-case method, one space, a target from '/'. */
static int check_request_target(const uint8_t *v, size_t len)
{
	size_t i = 0;

	while (i < len && v[i] >= 'a' && v[i] <= 'z')
		i++;
	return i > 0 && i <= 16 && i + 2 <= len && v[i] == ' ' && v[i + 1] == '/' &&
	       memchr(v + i + 1, ' ', len - i - 1) == NULL;
}

enum seen_header {
	SEEN_TARGET = 1u << 0,
	SEEN_HOST = 1u << 1,
	SEEN_DATE = 1u << 2,
	SEEN_X_DATE = 1u << 3,
};

#define HTTP_SIG_NAMES_MAX 32

static int check_http_signature(const uint8_t *m, size_t len, const char **why)
{
	/* Each name once: the names seen so far, as (offset, length) in @m. */
	size_t name_off[HTTP_SIG_NAMES_MAX], name_len[HTTP_SIG_NAMES_MAX], n = 0;
	size_t off = 0, end, colon;
	unsigned seen = 0;

	if (!ks_utf8_valid(m, len)) {
		*why = "HTTP signature signing string not valid UTF-8";
		return -EPERM;
	}
	while (off <= len) {
		const uint8_t *nl = memchr(m + off, '\n', len - off);
		const uint8_t *line = m + off, *value;
		size_t vlen;

		end = nl != NULL ? (size_t)(nl - m) : len;
		if (end == off) {
			*why = "HTTP signature signing string with an empty line";
			return -EPERM;
		}
		for (colon = off; colon < end && m[colon] != ':'; colon++)
			;
		if (colon == end || colon + 1 == end || m[colon + 1] != ' ') {
			*why = "HTTP signature signing string line not \"name: value\"";
			return -EPERM;
		}
		value = m + colon + 2;
		vlen = end - colon - 2;
		if (colon - off == 16 && memcmp(line, "(request-target)", 16) == 0) {
			if (!check_request_target(value, vlen)) {
				*why = "HTTP signature (request-target) not \"method /target\"";
				return -EPERM;
			}
			seen |= SEEN_TARGET;
		} else {
			for (size_t i = off; i < colon; i++)
				if (!is_name_char(m[i])) {
					*why = "HTTP signature header name not lower-case [a-z0-9-]";
					return -EPERM;
				}
			if (colon - off == 4 && memcmp(line, "host", 4) == 0)
				seen |= SEEN_HOST;
			else if (colon - off == 4 && memcmp(line, "date", 4) == 0)
				seen |= SEEN_DATE;
			else if (colon - off == 6 && memcmp(line, "x-date", 6) == 0)
				seen |= SEEN_X_DATE;
		}
		if (has_control(value, vlen)) {
			*why = "HTTP signature header value with a control character";
			return -EPERM;
		}
		for (size_t i = 0; i < n; i++)
			if (name_len[i] == colon - off && memcmp(m + name_off[i], line, colon - off) == 0) {
				*why = "HTTP signature signing string names a header twice";
				return -EPERM;
			}
		if (n == HTTP_SIG_NAMES_MAX) {
			*why = "HTTP signature signing string with too many headers";
			return -EPERM;
		}
		name_off[n] = off;
		name_len[n++] = colon - off;
		if (nl == NULL)
			break;
		off = end + 1;
	}
	if (!(seen & SEEN_TARGET) || !(seen & SEEN_HOST) || !(seen & (SEEN_DATE | SEEN_X_DATE))) {
		*why = "HTTP signature signing string without (request-target), host and date or x-date";
		return -EPERM;
	}
	return 0;
}

/* ---- the entry points ---------------------------------------------------- */

int ks_sigform_check(unsigned purpose, const uint8_t *msg, size_t len, const char **why)
{
	if (ks_purpose_name(purpose) == NULL) {
		*why = "not a purpose";
		return -EINVAL;
	}
	if (len > KS_SIGN_DATA_MAX) {
		*why = "signature input over the sign data limit";
		return -EPERM;
	}
	if (len > 0 && msg == NULL) {
		*why = "no signature input";
		return -EINVAL;
	}
	switch (purpose) {
	case KS_PURPOSE_SIGN:
		return 0;
	case KS_PURPOSE_CSR:
		*why = "a csr key signs only the requests keysvcd builds in csr.create";
		return -EPERM;
	case KS_PURPOSE_TLS:
		if (len == 0) {
			*why = "not a TLS handshake signature input (empty)";
			return -EPERM;
		}
		return check_tls(msg, len, why);
	case KS_PURPOSE_HTTP_SIGNATURE:
		if (len == 0) {
			*why = "HTTP signature signing string empty";
			return -EPERM;
		}
		return check_http_signature(msg, len, why);
	}
	return -EINVAL;
}

int ks_sigform_match(unsigned allowed, const uint8_t *msg, size_t len, unsigned *purpose,
		     const char **why)
{
	static const unsigned order[] = { KS_PURPOSE_TLS, KS_PURPOSE_HTTP_SIGNATURE, KS_PURPOSE_SIGN };
	const char *first = NULL, *w = NULL;

	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		if (!(allowed & order[i]))
			continue;
		if (ks_sigform_check(order[i], msg, len, &w) == 0) {
			*purpose = order[i];
			return 0;
		}
		if (first == NULL)
			first = w;
	}
	*why = first != NULL ? first : "key purposes do not allow signing client data";
	return -EPERM;
}
