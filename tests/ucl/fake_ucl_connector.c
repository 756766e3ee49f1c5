/*
 * fake-ucl-connector: a local test server that imitates the Kyma / SAP UCL
 * "Connector" (kyma-incubator/compass, component connector): GraphQL over
 * HTTPS, CSR signing with a one-time token and renewal over mutual TLS. For
 * the tests of keysvc-ucl. Test code only: it listens on loopback and keeps
 * its CA key in a plain file.
 *
 *   fake-ucl-connector --dir DIR --schema FILE.graphql
 *                      [--listen 127.0.0.1|::1] [--port-file F] [--control F]
 *                      [--token TOKEN] [--client-id ID] [--subject-base DN]
 *                      [--key-algorithm ALG] [--ttl SECONDS]
 *                      [--token-ttl SECONDS] [--validation-status CODE]
 *
 *   --dir DIR          state (created if missing):
 *                        ca.pem, ca.key (0600)      the CA; reused if both exist
 *                        foreign-ca.pem, .key       an unrelated CA (bad-chain, other-ca)
 *                        sub-ca.pem                 a signing CA under ca.pem, new at
 *                                                   start (sub-ca)
 *                        server.pem, server.key     TLS cert for localhost,
 *                                                   127.0.0.1 and ::1, new at start
 *                        token                      the one-time token (0600)
 *                        revoked.txt                revoked serials, hex, one a line
 *   --schema FILE      the Connector's SDL; every request is validated
 *                      against it (types, fields, arguments, descriptions).
 *   --listen ADDR      127.0.0.1 (default) or ::1; nothing else is accepted.
 *   --port-file F      the port (bound as port 0), written (temp + rename)
 *                      once the server listens.
 *   --control F        fault modes, read on every request; one word a line,
 *                      see modes[] below. "key-algorithm ALG" changes what
 *                      configuration asks for; "token VALUE" adds one more
 *                      one-time token (once per value); "ttl SECONDS"
 *                      overrides --ttl. Missing/empty: normal.
 *   --token TOKEN      the one-time token (default: random, see DIR/token),
 *                      valid --token-ttl seconds (default 300) from start.
 *   --client-id ID     the client the token belongs to (default test-app).
 *   --subject-base DN  C, O, OU, L and ST of the subject (default
 *                      "OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US").
 *   --key-algorithm A  rsa2048 (default), rsa4096, ec256 or ed25519.
 *   --ttl S            validity of issued certificates (default 90 days).
 *   --validation-status CODE  HTTP status of parse and validation errors
 *                      (default 422, as gqlgen; 200 for servers that do not).
 *
 * Endpoints, both POST with Content-Type application/json on one listener:
 *   /connector/graphql  the token-secured Connector (header Connector-Token)
 *   /mtls/graphql       the certificate-secured Connector (client cert)
 *
 * The real service is gqlgen behind Istio and Oathkeeper; the answers follow
 * that stack (status codes, error texts of the connector and of gqlparser).
 * Where this server differs on purpose, a comment says so. One line per
 * request goes to stderr; SIGTERM/SIGINT end the server with status 0.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "fakesrv.h"

#define MAX_BODY_BYTES (64 * 1024)
#define MAX_SCHEMA_BYTES (1024 * 1024)
#define HUGE_BODY_BYTES (64L * 1024 * 1024)
#define MAX_DEPTH 32
#define MAX_TOKENS 256
#define MAX_TOKEN_LEN 128
#define MAX_CONTROL_TOKENS 8
#define DAY FS_DAY
#define DEFAULT_TTL (90 * DAY)
#define MAX_TTL (50 * 365 * DAY)
#define CA_TTL (10 * 365 * DAY)

#define P_CONNECTOR "/connector/graphql"
#define P_MTLS "/mtls/graphql"

#define CODE_PARSE "GRAPHQL_PARSE_FAILED"
#define CODE_VALIDATION "GRAPHQL_VALIDATION_FAILED"

/* The connector's authenticator texts (Authenticate tries the token first,
 * then the certificate headers that Oathkeeper's hydrator set). */
#define MSG_AUTH                                                                                   \
	"Failed to authenticate request. Token authentication error: Failed to authenticate with one " \
	"time token.. Certificate authentication error: Failed to authenticate with Certificate. "     \
	"Invalid subject."
#define MSG_AUTH_CERT "Failed to authenticate with certificate: Failed to authenticate with Certificate. Invalid subject."
#define MSG_SIGN "Error while signing Certificate Signing Request: "

enum mode {
	MODE_GRAPHQL_ERROR = 1u << 0,
	MODE_PARTIAL = 1u << 1,
	MODE_HTTP_500 = 1u << 2,
	MODE_WRONG_SUBJECT = 1u << 3,
	MODE_OTHER_KEY = 1u << 4,
	MODE_BAD_BASE64 = 1u << 5,
	MODE_BAD_CHAIN = 1u << 6,
	MODE_HANG = 1u << 7,
	MODE_HUGE = 1u << 8,
	MODE_EXPIRED_TOKEN = 1u << 9,
	MODE_VALIDATION_ERROR = 1u << 10,
	MODE_OTHER_CA = 1u << 11,
	MODE_SUB_CA = 1u << 12,
};

static const struct {
	const char *word;
	unsigned mode;
	const char *effect;
} modes[] = {
	{ "normal", 0, "behave like the real Connector" },
	{ "graphql-error", MODE_GRAPHQL_ERROR, "valid requests: 200, data null, errors [Internal Server Error]" },
	{ "partial", MODE_PARTIAL, "valid requests: 200, data {<field>: null} plus errors" },
	{ "http-500", MODE_HTTP_500, "every request: 500 text/plain" },
	{ "wrong-subject", MODE_WRONG_SUBJECT, "sign: certificate CN is not the client id" },
	{ "other-key", MODE_OTHER_KEY, "sign: certificate for another public key" },
	{ "bad-base64", MODE_BAD_BASE64, "sign: clientCertificate is not base64" },
	{ "bad-chain", MODE_BAD_CHAIN, "sign: client certificate issued by the foreign CA" },
	{ "hang", MODE_HANG, "every request: read it, never answer" },
	{ "huge", MODE_HUGE, "every request: 200 with a 64 MiB body" },
	{ "expired-token", MODE_EXPIRED_TOKEN, "every token is treated as expired" },
	{ "validation-error", MODE_VALIDATION_ERROR,
	  "valid requests: --validation-status (422) with a validation error, as gqlgen" },
	{ "other-ca", MODE_OTHER_CA, "sign: client cert, chain and caCertificate all of the foreign CA" },
	{ "sub-ca", MODE_SUB_CA, "sign: issued by a signing CA under ca.pem; caCertificate is that CA" },
	{ "key-algorithm ALG", 0, "configuration asks for ALG, signing checks against ALG" },
	{ "token VALUE", 0, "one more one-time token for --client-id (once per value)" },
	{ "ttl SECONDS", 0, "validity of the certificates issued from now on" },
};

struct control {
	unsigned modes;
	char key_algorithm[32];
	long ttl; /* validity of issued certificates, s */
	int ntokens;
	char tokens[MAX_CONTROL_TOKENS][MAX_TOKEN_LEN + 1];
};

/* The subject fields the connector compares (CSRSubjectConsts). */
struct subject_base {
	char c[64], o[64], ou[64], l[64], st[64];
};

struct config {
	const char *dir;
	const char *schema_file;
	const char *listen_addr;
	const char *port_file;
	const char *control_file;
	const char *token;
	const char *client_id;
	const char *subject_base;
	const char *key_algorithm;
	long ttl;
	long token_ttl;
	int validation_status;
	int port;
	struct subject_base sb;
};

enum resp_kind { RESP_NORMAL, RESP_HANG, RESP_HUGE };

struct response {
	int status;
	enum resp_kind kind;
	const char *content_type;
	char *body;
	size_t body_len;
	char note[512];
};

static struct config cfg = {
	.listen_addr = "127.0.0.1",
	.client_id = "test-app",
	.subject_base = "OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US",
	.key_algorithm = "rsa2048",
	.ttl = DEFAULT_TTL,
	.token_ttl = 300,
	.validation_status = 422,
};

static X509 *ca_cert, *foreign_cert, *sub_cert;
static EVP_PKEY *ca_key, *foreign_key, *sub_key;
static char one_time_token[MAX_TOKEN_LEN + 1];

/* Serialises revoked.txt. */
static pthread_mutex_t ca_lock = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------------------ */
/* Base64                                                              */

/* Standard alphabet, no line breaks: Go's base64.StdEncoding. */
static char *b64_encode(const void *data, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out)
		EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

static int b64_val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* As strict as Go's base64.StdEncoding.DecodeString, which the connector
 * uses: padding required, nothing after it, only CR and LF skipped (so
 * `openssl base64` output with its line breaks is accepted). */
static unsigned char *b64_decode(const char *in, size_t *len_out)
{
	size_t n = strlen(in), out_len = 0, quad = 0;
	unsigned char *out = malloc(n / 4 * 3 + 3);
	int v[4], pad = 0;

	if (!out)
		return NULL;
	for (; *in; in++) {
		if (*in == '\r' || *in == '\n')
			continue;
		if (pad > 0 && *in != '=')
			goto bad;
		if (*in == '=') {
			if (quad < 2)
				goto bad;
			pad++;
			v[quad++] = 0;
		} else {
			v[quad] = b64_val(*in);
			if (v[quad] < 0)
				goto bad;
			quad++;
		}
		if (quad == 4) {
			out[out_len++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
			if (pad < 2)
				out[out_len++] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
			if (pad < 1)
				out[out_len++] = (unsigned char)((v[2] & 3) << 6 | v[3]);
			quad = 0;
			if (pad)
				break;
		}
	}
	if (quad != 0)
		goto bad;
	if (*in) {
		/* After the padded quad: only line breaks. */
		for (in++; *in; in++)
			if (*in != '\r' && *in != '\n')
				goto bad;
	}
	*len_out = out_len;
	return out;
bad:
	free(out);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Arena: the schema and each request's document live in one, freed at  */
/* once, so a syntax error can leave the parser by longjmp.            */

struct arena_block {
	struct arena_block *next;
	size_t used, cap;
	char data[];
};

struct arena {
	struct arena_block *head;
};

static void *arena_alloc(struct arena *a, size_t n)
{
	struct arena_block *b = a->head;
	void *p;

	n = (n + 7) & ~(size_t)7;
	if (!b || b->cap - b->used < n) {
		size_t cap = n > 16384 ? n : 16384;

		b = malloc(sizeof *b + cap);
		if (!b)
			return NULL;
		b->next = a->head;
		b->used = 0;
		b->cap = cap;
		a->head = b;
	}
	p = b->data + b->used;
	b->used += n;
	memset(p, 0, n);
	return p;
}

static void arena_free(struct arena *a)
{
	while (a->head) {
		struct arena_block *b = a->head;

		a->head = b->next;
		free(b);
	}
}

/* ------------------------------------------------------------------ */
/* GraphQL lexer, shared by the SDL and the request parser             */

enum tok { T_EOF, T_PUNCT, T_NAME, T_STRING, T_BLOCK_STRING, T_INT, T_FLOAT };

struct lexer {
	const char *src;
	size_t len, pos;
	int line;
	size_t line_start;
	/* The current token. punct is '.' for "...". */
	enum tok kind;
	char punct;
	char *text;
	size_t text_len, text_cap;
	size_t tok_start, tok_end;
	int tok_line, tok_col;
	struct arena *arena;
	jmp_buf *fail;
	char err[512];
	int err_line, err_col;
	int depth;
};

static void lx_fail(struct lexer *lx, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5), noreturn));
static void lx_fail(struct lexer *lx, int line, int col, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(lx->err, sizeof lx->err, fmt, ap);
	va_end(ap);
	lx->err_line = line;
	lx->err_col = col;
	longjmp(*lx->fail, 1);
}

static void *lx_alloc(struct lexer *lx, size_t n)
{
	void *p = arena_alloc(lx->arena, n);

	if (!p)
		lx_fail(lx, lx->tok_line, lx->tok_col, "out of memory");
	return p;
}

static char *lx_strndup(struct lexer *lx, const char *s, size_t n)
{
	char *p = lx_alloc(lx, n + 1);

	memcpy(p, s, n);
	return p;
}

static void text_put(struct lexer *lx, char c)
{
	if (lx->text_len + 2 > lx->text_cap) {
		size_t cap = lx->text_cap ? lx->text_cap * 2 : 256;
		char *t = realloc(lx->text, cap);

		if (!t)
			lx_fail(lx, lx->tok_line, lx->tok_col, "out of memory");
		lx->text = t;
		lx->text_cap = cap;
	}
	lx->text[lx->text_len++] = c;
	lx->text[lx->text_len] = '\0';
}

static void text_utf8(struct lexer *lx, unsigned long cp)
{
	if (cp < 0x80) {
		text_put(lx, (char)cp);
	} else if (cp < 0x800) {
		text_put(lx, (char)(0xc0 | cp >> 6));
		text_put(lx, (char)(0x80 | (cp & 0x3f)));
	} else if (cp < 0x10000) {
		text_put(lx, (char)(0xe0 | cp >> 12));
		text_put(lx, (char)(0x80 | ((cp >> 6) & 0x3f)));
		text_put(lx, (char)(0x80 | (cp & 0x3f)));
	} else {
		text_put(lx, (char)(0xf0 | cp >> 18));
		text_put(lx, (char)(0x80 | ((cp >> 12) & 0x3f)));
		text_put(lx, (char)(0x80 | ((cp >> 6) & 0x3f)));
		text_put(lx, (char)(0x80 | (cp & 0x3f)));
	}
}

static int col_of(const struct lexer *lx, size_t pos)
{
	return (int)(pos - lx->line_start) + 1;
}

static void newline(struct lexer *lx, size_t after)
{
	lx->line++;
	lx->line_start = after;
}

static bool is_name_start(char c)
{
	return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool is_name_char(char c)
{
	return is_name_start(c) || (c >= '0' && c <= '9');
}

static int hex4(const char *p)
{
	int v = 0, i;

	for (i = 0; i < 4; i++) {
		char c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

static void lex_string(struct lexer *lx)
{
	const char *s = lx->src;
	size_t p = lx->pos + 1;

	for (;;) {
		char c = p < lx->len ? s[p] : '\0';

		if (p >= lx->len || c == '\n' || c == '\r')
			lx_fail(lx, lx->tok_line, col_of(lx, p), "Unterminated string.");
		if (c == '"') {
			p++;
			break;
		}
		if ((unsigned char)c < 0x20 && c != '\t')
			lx_fail(lx, lx->tok_line, col_of(lx, p), "Invalid character within String: \\u%04x.", c);
		if (c != '\\') {
			text_put(lx, c);
			p++;
			continue;
		}
		c = p + 1 < lx->len ? s[p + 1] : '\0';
		switch (c) {
		case '"': text_put(lx, '"'); break;
		case '\\': text_put(lx, '\\'); break;
		case '/': text_put(lx, '/'); break;
		case 'b': text_put(lx, '\b'); break;
		case 'f': text_put(lx, '\f'); break;
		case 'n': text_put(lx, '\n'); break;
		case 'r': text_put(lx, '\r'); break;
		case 't': text_put(lx, '\t'); break;
		case 'u': {
			int hi = p + 6 <= lx->len ? hex4(s + p + 2) : -1;
			unsigned long cp = (unsigned long)hi;

			if (hi < 0)
				lx_fail(lx, lx->tok_line, col_of(lx, p), "Invalid character escape sequence.");
			if (hi >= 0xd800 && hi < 0xdc00 && p + 12 <= lx->len && s[p + 6] == '\\' && s[p + 7] == 'u') {
				int lo = hex4(s + p + 8);

				if (lo >= 0xdc00 && lo < 0xe000) {
					cp = 0x10000 + (((unsigned long)hi - 0xd800) << 10) + ((unsigned long)lo - 0xdc00);
					p += 6;
				}
			}
			if (cp >= 0xd800 && cp < 0xe000)
				lx_fail(lx, lx->tok_line, col_of(lx, p), "Invalid Unicode escape sequence.");
			text_utf8(lx, cp);
			p += 4;
			break;
		}
		default:
			lx_fail(lx, lx->tok_line, col_of(lx, p), "Invalid character escape sequence: \\%c.", c ? c : ' ');
		}
		p += 2;
	}
	lx->pos = p;
	lx->kind = T_STRING;
}

/* Block strings: raw up to the closing """ (\""" escapes it), then the
 * spec's BlockStringValue: common indentation removed, blank first and last
 * lines dropped. */
static void lex_block_string(struct lexer *lx)
{
	const char *s = lx->src;
	size_t p = lx->pos + 3, i, start, common = SIZE_MAX;
	char *raw;
	size_t raw_len = 0, line_no = 0;
	bool first_line = true;

	raw = lx_alloc(lx, lx->len - p + 1);
	for (;;) {
		if (p >= lx->len)
			lx_fail(lx, lx->tok_line, col_of(lx, p), "Unterminated string.");
		if (s[p] == '"' && p + 2 < lx->len && s[p + 1] == '"' && s[p + 2] == '"') {
			p += 3;
			break;
		}
		if (s[p] == '\\' && p + 3 < lx->len && memcmp(s + p + 1, "\"\"\"", 3) == 0) {
			memcpy(raw + raw_len, "\"\"\"", 3);
			raw_len += 3;
			p += 4;
			continue;
		}
		if (s[p] == '\n' || (s[p] == '\r' && !(p + 1 < lx->len && s[p + 1] == '\n')))
			newline(lx, p + 1);
		raw[raw_len++] = s[p++];
	}
	raw[raw_len] = '\0';
	/* Common indent of all lines but the first that hold more than
	 * white space. */
	for (i = 0, start = 0; i <= raw_len; i++) {
		if (i == raw_len || raw[i] == '\n') {
			size_t ind = 0;

			while (start + ind < i && (raw[start + ind] == ' ' || raw[start + ind] == '\t'))
				ind++;
			if (line_no > 0 && start + ind < i && ind < common)
				common = ind;
			line_no++;
			start = i + 1;
		}
	}
	/* Rebuild without the indent and without blank leading/trailing lines. */
	{
		size_t keep_end = 0;

		for (i = 0, start = 0, line_no = 0; i <= raw_len; i++) {
			if (i == raw_len || raw[i] == '\n') {
				size_t from = start, to = i, k;
				bool blank = true;

				if (to > from && raw[to - 1] == '\r')
					to--;
				if (line_no > 0 && common != SIZE_MAX)
					from = from + common < to ? from + common : to;
				for (k = from; k < to; k++)
					if (raw[k] != ' ' && raw[k] != '\t')
						blank = false;
				if (!(first_line && blank)) {
					if (!first_line)
						text_put(lx, '\n');
					for (k = from; k < to; k++)
						text_put(lx, raw[k]);
					first_line = false;
					if (!blank)
						keep_end = lx->text_len;
				}
				line_no++;
				start = i + 1;
			}
		}
		lx->text_len = keep_end;
		if (lx->text)
			lx->text[keep_end] = '\0';
	}
	lx->pos = p;
	lx->kind = T_BLOCK_STRING;
}

static void lex_number(struct lexer *lx)
{
	const char *s = lx->src;
	size_t p = lx->pos;
	bool is_float = false;

	if (s[p] == '-')
		p++;
	if (p < lx->len && s[p] == '0') {
		p++;
		if (p < lx->len && s[p] >= '0' && s[p] <= '9')
			lx_fail(lx, lx->tok_line, col_of(lx, p), "Invalid number, unexpected digit after 0: \"%c\".", s[p]);
	} else if (p < lx->len && s[p] >= '1' && s[p] <= '9') {
		while (p < lx->len && s[p] >= '0' && s[p] <= '9')
			p++;
	} else {
		lx_fail(lx, lx->tok_line, col_of(lx, p), "Invalid number, expected digit but got: %s.",
			p < lx->len ? "a character" : "<EOF>");
	}
	if (p < lx->len && s[p] == '.') {
		is_float = true;
		p++;
		if (!(p < lx->len && s[p] >= '0' && s[p] <= '9'))
			lx_fail(lx, lx->tok_line, col_of(lx, p), "Invalid number, expected digit.");
		while (p < lx->len && s[p] >= '0' && s[p] <= '9')
			p++;
	}
	if (p < lx->len && (s[p] == 'e' || s[p] == 'E')) {
		is_float = true;
		p++;
		if (p < lx->len && (s[p] == '+' || s[p] == '-'))
			p++;
		if (!(p < lx->len && s[p] >= '0' && s[p] <= '9'))
			lx_fail(lx, lx->tok_line, col_of(lx, p), "Invalid number, expected digit.");
		while (p < lx->len && s[p] >= '0' && s[p] <= '9')
			p++;
	}
	if (p < lx->len && (s[p] == '.' || is_name_start(s[p])))
		lx_fail(lx, lx->tok_line, col_of(lx, p), "Invalid number, expected digit but got: \"%c\".", s[p]);
	for (size_t i = lx->pos; i < p; i++)
		text_put(lx, s[i]);
	lx->pos = p;
	lx->kind = is_float ? T_FLOAT : T_INT;
}

static void next(struct lexer *lx)
{
	const char *s = lx->src;
	char c;

	/* Ignored tokens: white space, line ends, commas, comments, BOM. */
	while (lx->pos < lx->len) {
		c = s[lx->pos];
		if (c == ' ' || c == '\t' || c == ',') {
			lx->pos++;
		} else if (c == '\n') {
			newline(lx, ++lx->pos);
		} else if (c == '\r') {
			lx->pos++;
			if (lx->pos < lx->len && s[lx->pos] == '\n')
				lx->pos++;
			newline(lx, lx->pos);
		} else if (c == '#') {
			while (lx->pos < lx->len && s[lx->pos] != '\n' && s[lx->pos] != '\r')
				lx->pos++;
		} else if (lx->pos + 2 < lx->len && memcmp(s + lx->pos, "\xef\xbb\xbf", 3) == 0) {
			lx->pos += 3;
		} else {
			break;
		}
	}
	lx->text_len = 0;
	if (lx->text)
		lx->text[0] = '\0';
	lx->tok_start = lx->pos;
	lx->tok_line = lx->line;
	lx->tok_col = col_of(lx, lx->pos);
	if (lx->pos >= lx->len) {
		lx->kind = T_EOF;
		lx->tok_end = lx->pos;
		return;
	}
	c = s[lx->pos];
	if (strchr("!$&()[]{}:=@|", c)) {
		lx->kind = T_PUNCT;
		lx->punct = c;
		lx->pos++;
	} else if (c == '.') {
		if (lx->pos + 2 < lx->len && s[lx->pos + 1] == '.' && s[lx->pos + 2] == '.') {
			lx->kind = T_PUNCT;
			lx->punct = '.';
			lx->pos += 3;
		} else {
			lx_fail(lx, lx->tok_line, lx->tok_col, "Unexpected character \".\".");
		}
	} else if (is_name_start(c)) {
		while (lx->pos < lx->len && is_name_char(s[lx->pos]))
			text_put(lx, s[lx->pos++]);
		lx->kind = T_NAME;
	} else if (c == '-' || (c >= '0' && c <= '9')) {
		lex_number(lx);
	} else if (c == '"') {
		if (lx->pos + 2 < lx->len && s[lx->pos + 1] == '"' && s[lx->pos + 2] == '"')
			lex_block_string(lx);
		else
			lex_string(lx);
	} else if ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f) {
		lx_fail(lx, lx->tok_line, lx->tok_col, "Unexpected character \"%c\".", c);
	} else {
		lx_fail(lx, lx->tok_line, lx->tok_col, "Invalid character \"\\u%04x\".", (unsigned char)c);
	}
	lx->tok_end = lx->pos;
}

/* How gqlparser names a token in "Expected X, found Y". */
static const char *tok_desc(const struct lexer *lx, char *buf, size_t n)
{
	switch (lx->kind) {
	case T_EOF: return "<EOF>";
	case T_PUNCT:
		snprintf(buf, n, "%s", lx->punct == '.' ? "..." : (char[]){ lx->punct, 0 });
		return buf;
	case T_NAME: snprintf(buf, n, "Name \"%.64s\"", lx->text); return buf;
	case T_STRING: snprintf(buf, n, "String \"%.64s\"", lx->text); return buf;
	case T_BLOCK_STRING: snprintf(buf, n, "BlockString \"%.64s\"", lx->text); return buf;
	case T_INT: snprintf(buf, n, "Int \"%.64s\"", lx->text); return buf;
	case T_FLOAT: snprintf(buf, n, "Float \"%.64s\"", lx->text); return buf;
	}
	return "?";
}

static void __attribute__((noreturn)) unexpected(struct lexer *lx)
{
	char d[128];

	lx_fail(lx, lx->tok_line, lx->tok_col, "Unexpected %s", tok_desc(lx, d, sizeof d));
}

static bool is_punct(const struct lexer *lx, char c)
{
	return lx->kind == T_PUNCT && lx->punct == c;
}

static bool is_keyword(const struct lexer *lx, const char *kw)
{
	return lx->kind == T_NAME && strcmp(lx->text, kw) == 0;
}

static void expect_punct(struct lexer *lx, char c)
{
	char d[128];

	if (!is_punct(lx, c))
		lx_fail(lx, lx->tok_line, lx->tok_col, "Expected %s, found %s", c == '.' ? "..." : (char[]){ c, 0 },
			tok_desc(lx, d, sizeof d));
	next(lx);
}

static char *expect_name(struct lexer *lx)
{
	char d[128], *name;

	if (lx->kind != T_NAME)
		lx_fail(lx, lx->tok_line, lx->tok_col, "Expected Name, found %s", tok_desc(lx, d, sizeof d));
	name = lx_strndup(lx, lx->text, lx->text_len);
	next(lx);
	return name;
}

static void enter(struct lexer *lx)
{
	if (++lx->depth > MAX_DEPTH)
		lx_fail(lx, lx->tok_line, lx->tok_col, "Document nested deeper than %d levels (fake-ucl-connector limit)",
			MAX_DEPTH);
}

/* Type references come back as text ("String!", "[Int]"): what the error
 * messages print and what variable/argument compatibility compares. */
static char *parse_type(struct lexer *lx)
{
	char *inner, *out;
	size_t n;

	enter(lx);
	if (is_punct(lx, '[')) {
		next(lx);
		inner = parse_type(lx);
		expect_punct(lx, ']');
		n = strlen(inner) + 4;
		out = lx_alloc(lx, n);
		snprintf(out, n, "[%s]", inner);
	} else {
		inner = expect_name(lx);
		n = strlen(inner) + 2;
		out = lx_alloc(lx, n);
		snprintf(out, n, "%s", inner);
	}
	if (is_punct(lx, '!')) {
		next(lx);
		strcat(out, "!");
	}
	lx->depth--;
	return out;
}

/* "[String!]!" -> "String" (in buf). */
static const char *type_base(const char *type, char *buf, size_t n)
{
	size_t i = 0;

	while (*type == '[')
		type++;
	while (*type && *type != '!' && *type != ']' && i + 1 < n)
		buf[i++] = *type++;
	buf[i] = '\0';
	return buf;
}

static bool type_nonnull(const char *type)
{
	size_t n = strlen(type);

	return n > 0 && type[n - 1] == '!';
}

/* ------------------------------------------------------------------ */
/* Values (arguments, variable defaults)                                */

enum vkind { V_VAR, V_INT, V_FLOAT, V_STRING, V_BOOL, V_NULL, V_ENUM, V_LIST, V_OBJECT };

struct value {
	enum vkind kind;
	char *text; /* variable name, literal text or string contents */
	char *raw;  /* the source, for messages */
	int line, col;
};

static void parse_value(struct lexer *lx, struct value *v, bool is_const)
{
	size_t start = lx->tok_start, n;

	enter(lx);
	v->line = lx->tok_line;
	v->col = lx->tok_col;
	if (is_punct(lx, '$') && !is_const) {
		next(lx);
		v->kind = V_VAR;
		v->text = expect_name(lx);
	} else if (is_punct(lx, '[')) {
		next(lx);
		v->kind = V_LIST;
		while (!is_punct(lx, ']')) {
			struct value item;

			if (lx->kind == T_EOF)
				unexpected(lx);
			parse_value(lx, &item, is_const);
		}
		next(lx);
	} else if (is_punct(lx, '{')) {
		next(lx);
		v->kind = V_OBJECT;
		while (!is_punct(lx, '}')) {
			struct value item;

			expect_name(lx);
			expect_punct(lx, ':');
			parse_value(lx, &item, is_const);
		}
		next(lx);
	} else if (lx->kind == T_INT || lx->kind == T_FLOAT || lx->kind == T_STRING || lx->kind == T_BLOCK_STRING) {
		v->kind = lx->kind == T_INT ? V_INT : lx->kind == T_FLOAT ? V_FLOAT : V_STRING;
		v->text = lx_strndup(lx, lx->text ? lx->text : "", lx->text_len);
		next(lx);
	} else if (lx->kind == T_NAME) {
		v->kind = is_keyword(lx, "true") || is_keyword(lx, "false") ? V_BOOL
			  : is_keyword(lx, "null")			    ? V_NULL
									    : V_ENUM;
		v->text = lx_strndup(lx, lx->text, lx->text_len);
		next(lx);
	} else {
		unexpected(lx);
	}
	/* The previous token's end: tok_start of the current one may lie
	 * after ignored characters, so trim them. */
	n = lx->tok_start - start;
	while (n > 0 && strchr(" \t\r\n,", lx->src[start + n - 1]))
		n--;
	if (n > 64)
		n = 64;
	v->raw = lx_strndup(lx, lx->src + start, n);
	lx->depth--;
}

/* ------------------------------------------------------------------ */
/* Schema (SDL)                                                        */

struct sarg {
	char *name, *type;
	bool has_default;
	struct sarg *next;
};

struct sfield {
	char *name, *type;
	struct sarg *args;
	struct sfield *next;
};

struct stype {
	char *name;
	bool scalar;
	struct sfield *fields;
	struct stype *next;
};

struct schema {
	struct arena arena;
	struct stype *types;
	char *query_type, *mutation_type, *subscription_type;
};

static struct schema schema;

static const struct stype *find_type(const char *name)
{
	const struct stype *t;

	for (t = schema.types; t; t = t->next)
		if (strcmp(t->name, name) == 0)
			return t;
	return NULL;
}

static const struct sfield *find_field(const struct stype *t, const char *name)
{
	const struct sfield *f;

	for (f = t ? t->fields : NULL; f; f = f->next)
		if (strcmp(f->name, name) == 0)
			return f;
	return NULL;
}

static void skip_description(struct lexer *lx)
{
	if (lx->kind == T_STRING || lx->kind == T_BLOCK_STRING)
		next(lx);
}

static void skip_directives(struct lexer *lx)
{
	while (is_punct(lx, '@')) {
		next(lx);
		expect_name(lx);
		if (is_punct(lx, '(')) {
			next(lx);
			while (!is_punct(lx, ')')) {
				struct value v;

				expect_name(lx);
				expect_punct(lx, ':');
				parse_value(lx, &v, true);
			}
			next(lx);
		}
	}
}

static struct stype *add_type(struct lexer *lx, const char *name, bool scalar)
{
	struct stype *t = lx_alloc(lx, sizeof *t), **tail;

	if (find_type(name))
		lx_fail(lx, lx->tok_line, lx->tok_col, "There can be only one type named \"%s\".", name);
	t->name = lx_strndup(lx, name, strlen(name));
	t->scalar = scalar;
	for (tail = &schema.types; *tail; tail = &(*tail)->next)
		;
	*tail = t;
	return t;
}

static void parse_fields_def(struct lexer *lx, struct stype *t)
{
	struct sfield **ftail = &t->fields;

	expect_punct(lx, '{');
	while (!is_punct(lx, '}')) {
		struct sfield *f = lx_alloc(lx, sizeof *f);
		struct sarg **atail = &f->args;

		skip_description(lx);
		f->name = expect_name(lx);
		if (find_field(t, f->name))
			lx_fail(lx, lx->tok_line, lx->tok_col, "Field \"%s.%s\" can only be defined once.", t->name, f->name);
		if (is_punct(lx, '(')) {
			next(lx);
			while (!is_punct(lx, ')')) {
				struct sarg *a = lx_alloc(lx, sizeof *a);

				skip_description(lx);
				a->name = expect_name(lx);
				expect_punct(lx, ':');
				a->type = parse_type(lx);
				if (is_punct(lx, '=')) {
					struct value v;

					next(lx);
					parse_value(lx, &v, true);
					a->has_default = true;
				}
				skip_directives(lx);
				*atail = a;
				atail = &a->next;
			}
			next(lx);
		}
		expect_punct(lx, ':');
		f->type = parse_type(lx);
		skip_directives(lx);
		*ftail = f;
		ftail = &f->next;
	}
	next(lx);
}

/* Object types, scalars and a schema block: what the Connector's SDL uses.
 * Anything else is refused at startup rather than half-understood. */
static void parse_sdl(struct lexer *lx)
{
	next(lx);
	while (lx->kind != T_EOF) {
		skip_description(lx);
		if (is_keyword(lx, "type")) {
			struct stype *t;
			char *name;

			next(lx);
			name = expect_name(lx);
			t = add_type(lx, name, false);
			if (is_keyword(lx, "implements"))
				lx_fail(lx, lx->tok_line, lx->tok_col, "interfaces are not supported");
			skip_directives(lx);
			if (is_punct(lx, '{'))
				parse_fields_def(lx, t);
		} else if (is_keyword(lx, "scalar")) {
			next(lx);
			add_type(lx, expect_name(lx), true);
			skip_directives(lx);
		} else if (is_keyword(lx, "schema")) {
			next(lx);
			skip_directives(lx);
			expect_punct(lx, '{');
			while (!is_punct(lx, '}')) {
				char *op = expect_name(lx), *name;

				expect_punct(lx, ':');
				name = expect_name(lx);
				if (strcmp(op, "query") == 0)
					schema.query_type = name;
				else if (strcmp(op, "mutation") == 0)
					schema.mutation_type = name;
				else if (strcmp(op, "subscription") == 0)
					schema.subscription_type = name;
				else
					lx_fail(lx, lx->tok_line, lx->tok_col, "unknown operation type %s", op);
			}
			next(lx);
		} else if (lx->kind == T_NAME) {
			lx_fail(lx, lx->tok_line, lx->tok_col, "SDL definition \"%s\" is not supported by fake-ucl-connector",
				lx->text);
		} else {
			unexpected(lx);
		}
	}
}

/* setjmp in a function of its own: nothing of the caller's is live across
 * the longjmp. */
static int run_sdl(struct lexer *lx)
{
	jmp_buf jb;
	static const char *const builtins[] = { "String", "Int", "Float", "Boolean", "ID" };
	size_t i;

	lx->fail = &jb;
	if (setjmp(jb))
		return -1;
	for (i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
		add_type(lx, builtins[i], true);
	parse_sdl(lx);
	return 0;
}

static int load_schema(const char *path)
{
	struct lexer lx = { 0 };
	char *src;
	size_t len;
	const struct stype *t;
	int r = -1;

	src = fs_read_file(path, MAX_SCHEMA_BYTES, &len);
	if (!src) {
		fs_log("cannot read the schema %s: %s", path, strerror(errno));
		return -1;
	}
	lx.src = src;
	lx.len = len;
	lx.line = 1;
	lx.arena = &schema.arena;
	if (run_sdl(&lx) != 0) {
		fs_log("%s:%d:%d: %s", path, lx.err_line, lx.err_col, lx.err);
		goto out;
	}
	if (!schema.query_type && find_type("Query"))
		schema.query_type = "Query";
	if (!schema.mutation_type && find_type("Mutation"))
		schema.mutation_type = "Mutation";
	if (!schema.subscription_type && find_type("Subscription"))
		schema.subscription_type = "Subscription";
	if (!schema.query_type || !find_type(schema.query_type)) {
		fs_log("%s: no query type", path);
		goto out;
	}
	for (t = schema.types; t; t = t->next) {
		const struct sfield *f;
		const struct sarg *a;
		char base[128];

		if (!t->scalar && !t->fields) {
			fs_log("%s: type %s has no fields", path, t->name);
			goto out;
		}
		for (f = t->fields; f; f = f->next) {
			if (!find_type(type_base(f->type, base, sizeof base))) {
				fs_log("%s: %s.%s: unknown type %s", path, t->name, f->name, base);
				goto out;
			}
			for (a = f->args; a; a = a->next) {
				const struct stype *at = find_type(type_base(a->type, base, sizeof base));

				if (!at || !at->scalar) {
					fs_log("%s: %s.%s(%s:): %s is not a known input type", path, t->name, f->name, a->name,
					       base);
					goto out;
				}
			}
		}
	}
	r = 0;
out:
	free(lx.text);
	free(src);
	return r;
}

/* ------------------------------------------------------------------ */
/* Request documents                                                   */

struct arg {
	char *name;
	struct value v;
	int line, col;
	struct arg *next;
};

struct field {
	char *alias, *name;
	struct arg *args;
	struct field *sel; /* selection set, NULL if none */
	bool has_sel;
	bool has_directive;
	bool has_fragment; /* a "..." in its selection set */
	int line, col;
	struct field *next;
};

struct vardef {
	char *name, *type;
	bool has_default;
	struct value def;
	bool used;
	json_t *resolved; /* borrowed from the request's variables */
	int line, col;
	struct vardef *next;
};

enum op_type { OP_QUERY, OP_MUTATION, OP_SUBSCRIPTION };

struct operation {
	enum op_type type;
	char *name;
	struct vardef *vars;
	struct field *sel;
	bool has_directive;
	int line, col;
	struct operation *next;
};

struct document {
	struct operation *ops;
	int nops;
	bool has_fragment_def;
	int fragment_line, fragment_col;
};

static struct field *parse_selection_set(struct lexer *lx, bool *has_fragment);

static bool parse_directives(struct lexer *lx)
{
	bool any = is_punct(lx, '@');

	while (is_punct(lx, '@')) {
		next(lx);
		expect_name(lx);
		if (is_punct(lx, '(')) {
			next(lx);
			if (is_punct(lx, ')'))
				unexpected(lx);
			while (!is_punct(lx, ')')) {
				struct value v;

				expect_name(lx);
				expect_punct(lx, ':');
				parse_value(lx, &v, false);
			}
			next(lx);
		}
	}
	return any;
}

static struct field *parse_field(struct lexer *lx)
{
	struct field *f = lx_alloc(lx, sizeof *f);
	struct arg **atail = &f->args;
	char *name;

	f->line = lx->tok_line;
	f->col = lx->tok_col;
	name = expect_name(lx);
	if (is_punct(lx, ':')) {
		next(lx);
		f->alias = name;
		name = expect_name(lx);
	}
	f->name = name;
	if (is_punct(lx, '(')) {
		next(lx);
		if (is_punct(lx, ')'))
			unexpected(lx);
		while (!is_punct(lx, ')')) {
			struct arg *a = lx_alloc(lx, sizeof *a);

			a->line = lx->tok_line;
			a->col = lx->tok_col;
			a->name = expect_name(lx);
			expect_punct(lx, ':');
			parse_value(lx, &a->v, false);
			*atail = a;
			atail = &a->next;
		}
		next(lx);
	}
	f->has_directive = parse_directives(lx);
	if (is_punct(lx, '{')) {
		f->has_sel = true;
		f->sel = parse_selection_set(lx, &f->has_fragment);
	}
	return f;
}

static struct field *parse_selection_set(struct lexer *lx, bool *has_fragment)
{
	struct field *head = NULL, **tail = &head;

	enter(lx);
	expect_punct(lx, '{');
	if (is_punct(lx, '}'))
		unexpected(lx);
	while (!is_punct(lx, '}')) {
		if (is_punct(lx, '.')) {
			/* Fragments parse, and validation refuses them. */
			*has_fragment = true;
			next(lx);
			if (is_keyword(lx, "on")) {
				next(lx);
				expect_name(lx);
			} else if (lx->kind == T_NAME) {
				next(lx);
			}
			parse_directives(lx);
			if (is_punct(lx, '{')) {
				bool dummy = false;

				parse_selection_set(lx, &dummy);
			}
			continue;
		}
		*tail = parse_field(lx);
		tail = &(*tail)->next;
	}
	next(lx);
	lx->depth--;
	return head;
}

static struct operation *parse_operation(struct lexer *lx)
{
	struct operation *op = lx_alloc(lx, sizeof *op);
	struct vardef **vtail = &op->vars;
	bool dummy = false;

	op->line = lx->tok_line;
	op->col = lx->tok_col;
	if (is_punct(lx, '{')) {
		op->type = OP_QUERY;
		op->sel = parse_selection_set(lx, &dummy);
		return op;
	}
	if (is_keyword(lx, "query"))
		op->type = OP_QUERY;
	else if (is_keyword(lx, "mutation"))
		op->type = OP_MUTATION;
	else if (is_keyword(lx, "subscription"))
		op->type = OP_SUBSCRIPTION;
	else
		unexpected(lx);
	next(lx);
	if (lx->kind == T_NAME)
		op->name = expect_name(lx);
	if (is_punct(lx, '(')) {
		next(lx);
		if (is_punct(lx, ')'))
			unexpected(lx);
		while (!is_punct(lx, ')')) {
			struct vardef *v = lx_alloc(lx, sizeof *v);

			v->line = lx->tok_line;
			v->col = lx->tok_col;
			expect_punct(lx, '$');
			v->name = expect_name(lx);
			expect_punct(lx, ':');
			v->type = parse_type(lx);
			if (is_punct(lx, '=')) {
				next(lx);
				parse_value(lx, &v->def, true);
				v->has_default = true;
			}
			if (parse_directives(lx))
				op->has_directive = true;
			*vtail = v;
			vtail = &v->next;
		}
		next(lx);
	}
	if (parse_directives(lx))
		op->has_directive = true;
	op->sel = parse_selection_set(lx, &dummy);
	return op;
}

static void parse_document(struct lexer *lx, struct document *doc);

static int run_parse(struct lexer *lx, struct document *doc)
{
	jmp_buf jb;

	lx->fail = &jb;
	if (setjmp(jb))
		return -1;
	parse_document(lx, doc);
	return 0;
}

static void parse_document(struct lexer *lx, struct document *doc)
{
	struct operation **tail = &doc->ops;

	next(lx);
	if (lx->kind == T_EOF)
		unexpected(lx);
	while (lx->kind != T_EOF) {
		if (is_keyword(lx, "fragment")) {
			bool dummy = false;

			if (!doc->has_fragment_def) {
				doc->has_fragment_def = true;
				doc->fragment_line = lx->tok_line;
				doc->fragment_col = lx->tok_col;
			}
			next(lx);
			expect_name(lx);
			if (!is_keyword(lx, "on"))
				unexpected(lx);
			next(lx);
			expect_name(lx);
			parse_directives(lx);
			parse_selection_set(lx, &dummy);
			continue;
		}
		*tail = parse_operation(lx);
		tail = &(*tail)->next;
		doc->nops++;
	}
}

/* ------------------------------------------------------------------ */
/* Validation, with gqlparser's messages                               */

struct vctx {
	json_t *errors;
	const struct operation *op;
};

static json_t *gql_error_v(int line, int col, const char *code, json_t *path, const char *fmt, va_list ap)
{
	char msg[1024];
	json_t *e;

	vsnprintf(msg, sizeof msg, fmt, ap);
	e = json_object();
	json_object_set_new(e, "message", json_string(msg));
	if (line > 0)
		json_object_set_new(e, "locations", json_pack("[{s:i,s:i}]", "line", line, "column", col));
	if (path)
		json_object_set_new(e, "path", path);
	if (code)
		json_object_set_new(e, "extensions", json_pack("{s:s}", "code", code));
	return e;
}

static void add_error(json_t *errors, int line, int col, const char *code, json_t *path, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));
static void add_error(json_t *errors, int line, int col, const char *code, json_t *path, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	json_array_append_new(errors, gql_error_v(line, col, code, path, fmt, ap));
	va_end(ap);
}

#define VERR(ctx, line, col, ...) add_error((ctx)->errors, line, col, CODE_VALIDATION, NULL, __VA_ARGS__)

static struct vardef *find_var(const struct operation *op, const char *name)
{
	struct vardef *v;

	for (v = op->vars; v; v = v->next)
		if (strcmp(v->name, name) == 0)
			return v;
	return NULL;
}

/* A literal against an input type (scalars only: all the schema has). */
static bool literal_fits(const struct value *v, const char *type)
{
	char base[128];

	if (v->kind == V_NULL)
		return !type_nonnull(type);
	if (type[0] == '[') {
		char inner[128];
		size_t n = strlen(type);

		if (v->kind == V_LIST)
			return true;
		/* Input coercion turns one item into a list. */
		snprintf(inner, sizeof inner, "%.*s", (int)(n - (type_nonnull(type) ? 3 : 2)), type + 1);
		return literal_fits(v, inner);
	}
	type_base(type, base, sizeof base);
	if (strcmp(base, "String") == 0)
		return v->kind == V_STRING;
	if (strcmp(base, "ID") == 0)
		return v->kind == V_STRING || v->kind == V_INT;
	if (strcmp(base, "Int") == 0)
		return v->kind == V_INT;
	if (strcmp(base, "Float") == 0)
		return v->kind == V_INT || v->kind == V_FLOAT;
	if (strcmp(base, "Boolean") == 0)
		return v->kind == V_BOOL;
	/* Custom scalars take anything. */
	return v->kind != V_VAR;
}

/* Variable usage allowed: same type, or a non-null variable where a
 * nullable type is expected, or a nullable one with a default. */
static bool var_fits(const struct vardef *v, const char *type)
{
	size_t vn = strlen(v->type), tn = strlen(type);

	if (strcmp(v->type, type) == 0)
		return true;
	if (vn == tn + 1 && v->type[vn - 1] == '!' && strncmp(v->type, type, tn) == 0)
		return true;
	if (v->has_default && v->def.kind != V_NULL && tn == vn + 1 && type[tn - 1] == '!' &&
	    strncmp(v->type, type, vn) == 0)
		return true;
	return false;
}

static void check_value(struct vctx *ctx, const struct value *v, const char *type)
{
	if (v->kind == V_VAR) {
		struct vardef *d = find_var(ctx->op, v->text);

		if (!d) {
			if (ctx->op->name)
				VERR(ctx, v->line, v->col, "Variable \"$%s\" is not defined by operation \"%s\".", v->text,
				     ctx->op->name);
			else
				VERR(ctx, v->line, v->col, "Variable \"$%s\" is not defined.", v->text);
			return;
		}
		d->used = true;
		if (!var_fits(d, type))
			VERR(ctx, v->line, v->col, "Variable \"$%s\" of type \"%s\" used in position expecting type \"%s\".",
			     v->text, d->type, type);
		return;
	}
	if (!literal_fits(v, type))
		VERR(ctx, v->line, v->col, "Expected type %s, found %s.", type, v->raw);
}

static bool same_args(const struct field *a, const struct field *b)
{
	const struct arg *x, *y;
	int na = 0, nb = 0;

	for (x = a->args; x; x = x->next, na++) {
		for (y = b->args; y; y = y->next)
			if (strcmp(x->name, y->name) == 0)
				break;
		if (!y || x->v.kind != y->v.kind || strcmp(x->v.raw, y->v.raw) != 0)
			return false;
	}
	for (y = b->args; y; y = y->next)
		nb++;
	return na == nb;
}

static const char *response_name(const struct field *f)
{
	return f->alias ? f->alias : f->name;
}

static void validate_selection(struct vctx *ctx, const struct field *sel, const struct stype *parent)
{
	const struct field *f, *g;

	for (f = sel; f; f = f->next) {
		const struct sfield *sf;
		const struct stype *t;
		const struct arg *a, *b;
		const struct sarg *sa;

		if (f->has_directive)
			VERR(ctx, f->line, f->col, "Directives are not supported by fake-ucl-connector.");
		if (f->has_fragment)
			VERR(ctx, f->line, f->col, "Fragments are not supported by fake-ucl-connector.");
		if (strcmp(f->name, "__typename") == 0) {
			for (a = f->args; a; a = a->next)
				VERR(ctx, a->line, a->col, "Unknown argument \"%s\" on field \"%s.__typename\".", a->name,
				     parent->name);
			if (f->has_sel)
				VERR(ctx, f->line, f->col,
				     "Field \"__typename\" must not have a selection since type \"String!\" has no subfields.");
			continue;
		}
		if (strncmp(f->name, "__", 2) == 0) {
			/* Deliberate difference: no introspection. */
			VERR(ctx, f->line, f->col, "Introspection (%s) is not supported by fake-ucl-connector.", f->name);
			continue;
		}
		sf = find_field(parent, f->name);
		if (!sf) {
			VERR(ctx, f->line, f->col, "Cannot query field \"%s\" on type \"%s\".", f->name, parent->name);
			continue;
		}
		for (a = f->args; a; a = a->next) {
			for (b = f->args; b != a; b = b->next)
				if (strcmp(a->name, b->name) == 0)
					break;
			if (b != a) {
				VERR(ctx, a->line, a->col, "There can be only one argument named \"%s\".", a->name);
				continue;
			}
			for (sa = sf->args; sa; sa = sa->next)
				if (strcmp(sa->name, a->name) == 0)
					break;
			if (!sa) {
				VERR(ctx, a->line, a->col, "Unknown argument \"%s\" on field \"%s.%s\".", a->name, parent->name,
				     f->name);
				continue;
			}
			check_value(ctx, &a->v, sa->type);
		}
		for (sa = sf->args; sa; sa = sa->next) {
			if (!type_nonnull(sa->type) || sa->has_default)
				continue;
			for (a = f->args; a; a = a->next)
				if (strcmp(a->name, sa->name) == 0)
					break;
			if (!a)
				VERR(ctx, f->line, f->col,
				     "Field \"%s\" argument \"%s\" of type \"%s\" is required, but it was not provided.", f->name,
				     sa->name, sa->type);
		}
		{
			char base[128];

			t = find_type(type_base(sf->type, base, sizeof base));
		}
		if (t->scalar && f->has_sel)
			VERR(ctx, f->line, f->col, "Field \"%s\" must not have a selection since type \"%s\" has no subfields.",
			     f->name, sf->type);
		else if (!t->scalar && !f->has_sel)
			VERR(ctx, f->line, f->col,
			     "Field \"%s\" of type \"%s\" must have a selection of subfields. Did you mean \"%s { ... }\"?",
			     f->name, sf->type, f->name);
		else if (!t->scalar)
			validate_selection(ctx, f->sel, t);
	}
	/* OverlappingFieldsCanBeMerged, for one level: the same response
	 * name must mean the same field with the same arguments. */
	for (f = sel; f; f = f->next) {
		for (g = sel; g != f; g = g->next) {
			if (strcmp(response_name(f), response_name(g)) != 0)
				continue;
			if (strcmp(f->name, g->name) != 0) {
				VERR(ctx, f->line, f->col,
				     "Fields \"%s\" conflict because %s and %s are different fields. Use different aliases on "
				     "the fields to fetch both if this was intentional.",
				     response_name(f), g->name, f->name);
				break;
			}
			if (!same_args(f, g)) {
				VERR(ctx, f->line, f->col,
				     "Fields \"%s\" conflict because they have differing arguments. Use different aliases on "
				     "the fields to fetch both if this was intentional.",
				     response_name(f));
				break;
			}
		}
	}
}

static void validate_operation(struct vctx *ctx, const struct operation *op)
{
	const char *root = op->type == OP_QUERY ? schema.query_type
			   : op->type == OP_MUTATION ? schema.mutation_type
						     : schema.subscription_type;
	struct vardef *v, *w;

	ctx->op = op;
	if (op->has_directive)
		VERR(ctx, op->line, op->col, "Directives are not supported by fake-ucl-connector.");
	for (v = op->vars; v; v = v->next) {
		char base[128];
		const struct stype *t = find_type(type_base(v->type, base, sizeof base));

		for (w = op->vars; w != v; w = w->next)
			if (strcmp(w->name, v->name) == 0)
				break;
		if (w != v)
			VERR(ctx, v->line, v->col, "There can be only one variable named \"$%s\".", v->name);
		if (!t)
			VERR(ctx, v->line, v->col, "Unknown type \"%s\".", base);
		else if (!t->scalar)
			VERR(ctx, v->line, v->col, "Variable \"$%s\" cannot be non-input type \"%s\".", v->name, v->type);
		else if (v->has_default && !literal_fits(&v->def, v->type))
			VERR(ctx, v->def.line, v->def.col, "Expected type %s, found %s.", v->type, v->def.raw);
	}
	if (!root) {
		VERR(ctx, op->line, op->col, "Schema is not configured for %s.",
		     op->type == OP_MUTATION ? "mutations" : "subscriptions");
		return;
	}
	if (op->type == OP_SUBSCRIPTION) {
		VERR(ctx, op->line, op->col, "Subscriptions are not supported by fake-ucl-connector.");
		return;
	}
	validate_selection(ctx, op->sel, find_type(root));
	for (v = op->vars; v; v = v->next) {
		if (v->used)
			continue;
		if (op->name)
			VERR(ctx, v->line, v->col, "Variable \"$%s\" is never used in operation \"%s\".", v->name, op->name);
		else
			VERR(ctx, v->line, v->col, "Variable \"$%s\" is never used.", v->name);
	}
}

static void validate_document(json_t *errors, const struct document *doc)
{
	struct vctx ctx = { .errors = errors };
	const struct operation *op, *o;

	if (doc->has_fragment_def)
		VERR(&ctx, doc->fragment_line, doc->fragment_col, "Fragments are not supported by fake-ucl-connector.");
	for (op = doc->ops; op; op = op->next) {
		if (!op->name && doc->nops > 1)
			VERR(&ctx, op->line, op->col, "This anonymous operation must be the only defined operation.");
		for (o = doc->ops; op->name && o != op; o = o->next)
			if (o->name && strcmp(o->name, op->name) == 0) {
				VERR(&ctx, op->line, op->col, "There can be only one operation named \"%s\".", op->name);
				break;
			}
		validate_operation(&ctx, op);
	}
}

static const char *json_kind(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT: return "map[string]interface {}";
	case JSON_ARRAY: return "[]interface {}";
	case JSON_STRING: return "string";
	case JSON_INTEGER: return "json.Number";
	case JSON_REAL: return "json.Number";
	case JSON_TRUE:
	case JSON_FALSE: return "bool";
	case JSON_NULL: return "nil";
	}
	return "?";
}

/* The request's variables against the chosen operation, as gqlgen's
 * validator.VariableValues reports them (path ["variable", name]). */
static void coerce_variables(json_t *errors, struct operation *op, json_t *vars)
{
	struct vardef *v;

	for (v = op->vars; v; v = v->next) {
		json_t *j = vars ? json_object_get(vars, v->name) : NULL;
		json_t *path = json_pack("[s,s]", "variable", v->name);
		char base[128];
		bool ok;

		type_base(v->type, base, sizeof base);
		if (!j) {
			if (!v->has_default && type_nonnull(v->type)) {
				add_error(errors, 0, 0, CODE_VALIDATION, path, "must be defined");
				path = NULL;
			}
		} else if (json_is_null(j)) {
			if (type_nonnull(v->type)) {
				add_error(errors, 0, 0, CODE_VALIDATION, path, "cannot be null");
				path = NULL;
			}
			v->resolved = j;
		} else {
			if (v->type[0] == '[')
				ok = json_is_array(j);
			else if (strcmp(base, "String") == 0)
				ok = json_is_string(j);
			else if (strcmp(base, "ID") == 0)
				ok = json_is_string(j) || json_is_integer(j);
			else if (strcmp(base, "Int") == 0)
				ok = json_is_integer(j);
			else if (strcmp(base, "Float") == 0)
				ok = json_is_number(j);
			else if (strcmp(base, "Boolean") == 0)
				ok = json_is_boolean(j);
			else
				ok = true;
			if (!ok) {
				add_error(errors, 0, 0, CODE_VALIDATION, path, "cannot use %s as %s", json_kind(j), base);
				path = NULL;
			}
			v->resolved = j;
		}
		json_decref(path);
	}
}

/* ------------------------------------------------------------------ */
/* Tokens (what Oathkeeper's hydrator and the token cache do)           */

struct token_entry {
	bool used;
	bool consumed;
	char value[MAX_TOKEN_LEN + 1];
	char client_id[128];
	time_t expires;
};

static pthread_mutex_t token_lock = PTHREAD_MUTEX_INITIALIZER;
static struct token_entry tokens[MAX_TOKENS];

static void random_token(char *out, size_t n)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	unsigned char b[32];
	size_t i;

	if (RAND_bytes(b, sizeof b) != 1)
		memset(b, 0x5a, sizeof b);
	for (i = 0; i < sizeof b && i + 1 < n; i++)
		out[i] = alphabet[b[i] & 63];
	out[i] = '\0';
}

/* Consumed entries stay (as tombstones) so a "token VALUE" control line is
 * not re-armed; the oldest expired or consumed entry makes room. */
static void token_add_locked(const char *value, const char *client_id, long ttl)
{
	time_t now = time(NULL);
	int i, pick = -1;

	for (i = 0; i < MAX_TOKENS; i++) {
		if (!tokens[i].used) {
			pick = i;
			break;
		}
		if ((tokens[i].consumed || tokens[i].expires < now) &&
		    (pick < 0 || tokens[i].expires < tokens[pick].expires))
			pick = i;
	}
	if (pick < 0) {
		fs_log("token table full; not adding a token");
		return;
	}
	tokens[pick] = (struct token_entry){ .used = true, .expires = now + ttl };
	snprintf(tokens[pick].value, sizeof tokens[pick].value, "%s", value);
	snprintf(tokens[pick].client_id, sizeof tokens[pick].client_id, "%s", client_id);
}

static void new_token(const char *client_id, char *out, size_t n)
{
	random_token(out, n);
	pthread_mutex_lock(&token_lock);
	token_add_locked(out, client_id, cfg.token_ttl);
	pthread_mutex_unlock(&token_lock);
}

static void add_control_tokens(const struct control *ctl)
{
	int i, j;

	pthread_mutex_lock(&token_lock);
	for (i = 0; i < ctl->ntokens; i++) {
		for (j = 0; j < MAX_TOKENS; j++)
			if (tokens[j].used && strcmp(tokens[j].value, ctl->tokens[i]) == 0)
				break;
		if (j == MAX_TOKENS)
			token_add_locked(ctl->tokens[i], cfg.client_id, cfg.token_ttl);
	}
	pthread_mutex_unlock(&token_lock);
}

/* ResolveConnectorTokenHeader: a valid token is deleted on the spot, before
 * the connector even parses the request, so every use (even one with a bad
 * query) spends it. Returns false and a reason for the log otherwise. */
static bool token_consume(const char *value, bool force_expired, char *client_id, size_t n, const char **why)
{
	time_t now = time(NULL);
	bool ok = false;
	int i;

	*why = "unknown token";
	pthread_mutex_lock(&token_lock);
	for (i = 0; i < MAX_TOKENS; i++) {
		if (!tokens[i].used || strcmp(tokens[i].value, value) != 0)
			continue;
		if (tokens[i].consumed) {
			*why = "token already used";
		} else if (force_expired || tokens[i].expires < now) {
			*why = "token expired";
		} else {
			tokens[i].consumed = true;
			snprintf(client_id, n, "%s", tokens[i].client_id);
			*why = "token consumed";
			ok = true;
		}
		break;
	}
	pthread_mutex_unlock(&token_lock);
	return ok;
}

/* ------------------------------------------------------------------ */
/* Control file                                                        */

static void read_control(struct control *ctl)
{
	char *text, *line, *save = NULL;

	memset(ctl, 0, sizeof *ctl);
	snprintf(ctl->key_algorithm, sizeof ctl->key_algorithm, "%s", cfg.key_algorithm);
	ctl->ttl = cfg.ttl;
	if (!cfg.control_file)
		return;
	text = fs_read_file(cfg.control_file, 4096, NULL);
	if (!text)
		return;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t i;
		bool known = false;

		fs_trim(&line);
		if (*line == '\0' || *line == '#')
			continue;
		if (strncmp(line, "key-algorithm ", 14) == 0) {
			char *alg = line + 14;

			fs_trim(&alg);
			snprintf(ctl->key_algorithm, sizeof ctl->key_algorithm, "%s", alg);
			continue;
		}
		if (strncmp(line, "ttl ", 4) == 0) {
			char *ttl = line + 4;

			fs_trim(&ttl);
			if (!fs_parse_seconds(ttl, MAX_TTL, &ctl->ttl))
				fs_log("control: ignoring bad ttl \"%.32s\"", ttl);
			continue;
		}
		if (strncmp(line, "token ", 6) == 0) {
			char *tok = line + 6;

			fs_trim(&tok);
			if (ctl->ntokens < MAX_CONTROL_TOKENS && *tok && strlen(tok) <= MAX_TOKEN_LEN)
				strcpy(ctl->tokens[ctl->ntokens++], tok);
			continue;
		}
		for (i = 0; i < sizeof modes / sizeof modes[0]; i++) {
			if (strcmp(line, modes[i].word) == 0) {
				ctl->modes |= modes[i].mode;
				known = true;
			}
		}
		if (!known)
			fs_log("control: ignoring unknown word \"%.64s\"", line);
	}
	free(text);
}

/* ------------------------------------------------------------------ */
/* X.509                                                               */

/* --subject-base: exactly C, O, OU, L and ST, as CSRSubjectConsts has. */
static int parse_subject_base(const char *s)
{
	char buf[512], *item, *save = NULL;
	unsigned seen = 0;

	if (strlen(s) >= sizeof buf)
		return -1;
	strcpy(buf, s);
	for (item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(item, '='), *key = item, *val;
		char *dst;
		unsigned bit;

		if (!eq)
			return -1;
		*eq = '\0';
		val = eq + 1;
		fs_trim(&key);
		fs_trim(&val);
		if (strcmp(key, "C") == 0) {
			dst = cfg.sb.c;
			bit = 1;
		} else if (strcmp(key, "O") == 0) {
			dst = cfg.sb.o;
			bit = 2;
		} else if (strcmp(key, "OU") == 0) {
			dst = cfg.sb.ou;
			bit = 4;
		} else if (strcmp(key, "L") == 0) {
			dst = cfg.sb.l;
			bit = 8;
		} else if (strcmp(key, "ST") == 0) {
			dst = cfg.sb.st;
			bit = 16;
		} else {
			return -1;
		}
		if ((seen & bit) || !*val || strlen(val) >= sizeof cfg.sb.c)
			return -1;
		seen |= bit;
		strcpy(dst, val);
	}
	return seen == 31 ? 0 : -1;
}

/* The five fixed subject fields of a name, in the connector's order and
 * with its texts; NULL when they all match. */
static const char *subject_consts_mismatch(const X509_NAME *name)
{
	static const struct {
		int nid;
		size_t off;
		const char *missing, *invalid;
	} f[] = {
		{ NID_countryName, offsetof(struct subject_base, c), "CSR: No country provided.", "CSR: Invalid country provided." },
		{ NID_organizationName, offsetof(struct subject_base, o), "CSR: No organization provided.",
		  "CSR: Invalid organization provided." },
		{ NID_organizationalUnitName, offsetof(struct subject_base, ou), "CSR: No organizational unit provided.",
		  "CSR: Invalid organizational unit provided." },
		{ NID_localityName, offsetof(struct subject_base, l), "CSR: No locality provided.",
		  "CSR: Invalid locality provided." },
		{ NID_stateOrProvinceName, offsetof(struct subject_base, st), "CSR: No province provided.",
		  "CSR: Invalid province provided." },
	};
	size_t i;

	for (i = 0; i < sizeof f / sizeof f[0]; i++) {
		char *v = fs_name_entry(name, f[i].nid);
		bool same = v && strcmp(v, (const char *)&cfg.sb + f[i].off) == 0;

		if (!v)
			return f[i].missing;
		free(v);
		if (!same)
			return f[i].invalid;
	}
	return NULL;
}

/* Deliberate difference: the real connector never looks at the key (it
 * always says rsa2048, and its tutorial recommends 4096-bit keys). Here
 * rsaN means RSA with at least N bits, so a weak key is caught and the
 * documented 4096 still passes. */
static bool key_fits(EVP_PKEY *pub, const char *alg, char *why, size_t n)
{
	int bits = EVP_PKEY_get_bits(pub);
	char *end;
	long want;

	if (strncmp(alg, "rsa", 3) == 0 && alg[3] >= '1' && alg[3] <= '9') {
		want = strtol(alg + 3, &end, 10);
		if (*end == '\0') {
			if (EVP_PKEY_is_a(pub, "RSA") && bits >= want)
				return true;
			snprintf(why, n, "CSR: Invalid key algorithm provided: %s %d bits, expected %s.",
				 EVP_PKEY_get0_type_name(pub), bits, alg);
			return false;
		}
	}
	if (strcmp(alg, "ec256") == 0 || strcmp(alg, "ecdsa-p256") == 0) {
		char group[64] = "";

		if (EVP_PKEY_is_a(pub, "EC") &&
		    EVP_PKEY_get_utf8_string_param(pub, "group", group, sizeof group, NULL) == 1 &&
		    strcmp(group, "prime256v1") == 0)
			return true;
		snprintf(why, n, "CSR: Invalid key algorithm provided: %s %d bits, expected %s.",
			 EVP_PKEY_get0_type_name(pub), bits, alg);
		ERR_clear_error();
		return false;
	}
	if (strcmp(alg, "ed25519") == 0) {
		if (EVP_PKEY_is_a(pub, "ED25519"))
			return true;
		snprintf(why, n, "CSR: Invalid key algorithm provided: %s, expected ed25519.", EVP_PKEY_get0_type_name(pub));
		return false;
	}
	snprintf(why, n, "CSR: Unsupported key algorithm %s.", alg);
	return false;
}

/* Like the connector's SignCSR: the CSR's subject, KeyUsage
 * digitalSignature (critical, as Go writes it), EKU clientAuth. Faults bend
 * exactly one property. */
static X509 *issue(X509_REQ *req, unsigned faults, long ttl)
{
	static const struct fs_ext client_exts[] = {
		{ NID_key_usage, "critical,digitalSignature" },
		{ NID_ext_key_usage, "clientAuth" },
		{ NID_subject_key_identifier, "hash" },
		{ NID_authority_key_identifier, "keyid:always" },
		{ 0, NULL },
	};
	time_t now = time(NULL);
	EVP_PKEY *other = NULL, *pub = X509_REQ_get0_pubkey(req);
	X509_NAME *subject = X509_NAME_dup(X509_REQ_get_subject_name(req));
	X509 *issuer = ca_cert, *x = NULL;
	EVP_PKEY *issuer_key = ca_key;
	int idx;

	if (!subject)
		goto fail;
	if (faults & MODE_WRONG_SUBJECT) {
		char cn[256];

		snprintf(cn, sizeof cn, "not-%s", cfg.client_id);
		while ((idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1)) >= 0)
			X509_NAME_ENTRY_free(X509_NAME_delete_entry(subject, idx));
		if (!X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_UTF8, (unsigned char *)cn, -1, -1, 0))
			goto fail;
	}
	if (faults & MODE_OTHER_KEY) {
		other = EVP_EC_gen("P-256");
		if (!other)
			goto fail;
		pub = other;
	}
	if (faults & (MODE_BAD_CHAIN | MODE_OTHER_CA)) {
		issuer = foreign_cert;
		issuer_key = foreign_key;
	} else if (faults & MODE_SUB_CA) {
		issuer = sub_cert;
		issuer_key = sub_key;
	}
	x = fs_mint_cert(subject, pub, issuer, issuer_key, now - 60, now + ttl, client_exts);
	if (!x)
		goto fail;
	EVP_PKEY_free(other);
	X509_NAME_free(subject);
	return x;
fail:
	EVP_PKEY_free(other);
	X509_NAME_free(subject);
	X509_free(x);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Revocation list                                                     */

static char *serial_hex(X509 *x)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL, *out = hex ? strdup(hex) : NULL;

	OPENSSL_free(hex);
	BN_free(bn);
	return out;
}

static bool is_revoked(X509 *x)
{
	char path[PATH_MAX], *text, *serial = serial_hex(x), *line, *save = NULL;
	bool found = false;

	if (!serial || !fs_pathf(path, sizeof path, "%s/revoked.txt", cfg.dir)) {
		free(serial);
		return true;
	}
	pthread_mutex_lock(&ca_lock);
	text = fs_read_file(path, 1024 * 1024, NULL);
	pthread_mutex_unlock(&ca_lock);
	for (line = text ? strtok_r(text, "\n", &save) : NULL; line && !found; line = strtok_r(NULL, "\n", &save)) {
		fs_trim(&line);
		found = strcasecmp(line, serial) == 0;
	}
	free(text);
	free(serial);
	return found;
}

static int revoke_cert(X509 *x)
{
	char path[PATH_MAX], *text = NULL, *serial = serial_hex(x), *all = NULL;
	size_t len = 0;
	int r = -1;

	if (!serial || !fs_pathf(path, sizeof path, "%s/revoked.txt", cfg.dir))
		goto out;
	pthread_mutex_lock(&ca_lock);
	text = fs_read_file(path, 1024 * 1024, &len);
	if (asprintf(&all, "%s%s\n", text ? text : "", serial) >= 0)
		r = fs_write_file_atomic(path, all, strlen(all), 0644);
	pthread_mutex_unlock(&ca_lock);
out:
	free(all);
	free(text);
	free(serial);
	return r;
}

/* ------------------------------------------------------------------ */
/* Execution                                                           */

struct exec {
	const struct control *ctl;
	bool mtls;
	X509 *peer;
	const char *client_id; /* NULL: not authenticated */
	char note[256];
};

static void url_of(char *out, size_t n, const char *path)
{
	bool v6 = strchr(cfg.listen_addr, ':') != NULL;

	snprintf(out, n, "https://%s%s%s:%d%s", v6 ? "[" : "", cfg.listen_addr, v6 ? "]" : "", cfg.port, path);
}

/* Resolvers return the whole object; project() shapes it by the selection. */
static json_t *resolve_configuration(struct exec *ex, char *err, size_t n)
{
	char token[64], subject[512], director[128], mtls[128];

	if (!ex->client_id) {
		snprintf(err, n, "%s", MSG_AUTH);
		return NULL;
	}
	new_token(ex->client_id, token, sizeof token);
	snprintf(subject, sizeof subject, "%s,CN=%s", cfg.subject_base, ex->client_id);
	url_of(director, sizeof director, "/director/graphql");
	url_of(mtls, sizeof mtls, P_MTLS);
	return json_pack("{s:{s:s},s:{s:s,s:s},s:{s:s,s:s}}", "token", "token", token, "certificateSigningRequestInfo",
			 "subject", subject, "keyAlgorithm", ex->ctl->key_algorithm, "managementPlaneInfo", "directorURL",
			 director, "certificateSecuredConnectorURL", mtls);
}

static json_t *resolve_sign(struct exec *ex, const char *csr_b64, char *err, size_t n)
{
	unsigned faults = ex->ctl->modes & (MODE_WRONG_SUBJECT | MODE_OTHER_KEY | MODE_BAD_CHAIN | MODE_OTHER_CA |
					    MODE_SUB_CA);
	unsigned char *der = NULL;
	size_t der_len = 0, cert_len = 0, ca_len = 0;
	char *cert = NULL, *ca = NULL, *chain = NULL, *cn = NULL, why[256];
	const char *mismatch;
	X509_REQ *req = NULL;
	X509 *x = NULL;
	BIO *b = NULL;
	json_t *out = NULL;
	char *cert_b64 = NULL, *ca_b64 = NULL, *chain_b64 = NULL;

	if (!ex->client_id) {
		snprintf(err, n, "%s", MSG_AUTH);
		goto out;
	}
	der = csr_b64 ? b64_decode(csr_b64, &der_len) : NULL;
	if (!der) {
		snprintf(err, n, "Error while decoding Certificate Signing Request: Error while parsing base64 content. "
				 "Incorrect value provided.");
		goto out;
	}
	b = BIO_new_mem_buf(der, (int)der_len);
	req = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
	if (!req) {
		unsigned long e = ERR_peek_last_error();

		if (ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
			snprintf(err, n, MSG_SIGN "Error while decoding pem block.");
		else
			snprintf(err, n, MSG_SIGN "Error while parsing CSR: %s",
				 ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "asn1: syntax error");
		ERR_clear_error();
		goto out;
	}
	if (X509_REQ_verify(req, X509_REQ_get0_pubkey(req)) != 1) {
		ERR_clear_error();
		snprintf(err, n, MSG_SIGN "CSR signature invalid: crypto/rsa: verification error");
		goto out;
	}
	cn = fs_name_entry(X509_REQ_get_subject_name(req), NID_commonName);
	if (!cn || strcmp(cn, ex->client_id) != 0) {
		snprintf(err, n, MSG_SIGN "CSR: Invalid common name provided.");
		goto out;
	}
	mismatch = subject_consts_mismatch(X509_REQ_get_subject_name(req));
	if (mismatch) {
		snprintf(err, n, MSG_SIGN "%s", mismatch);
		goto out;
	}
	if (!key_fits(X509_REQ_get0_pubkey(req), ex->ctl->key_algorithm, why, sizeof why)) {
		snprintf(err, n, MSG_SIGN "%s", why);
		goto out;
	}
	x = issue(req, faults, ex->ctl->ttl);
	cert = x ? fs_cert_pem(x, &cert_len) : NULL;
	/* other-ca: a whole other, self-consistent PKI; sub-ca: only the signing CA, as the
	 * connector hands out without a root secret. */
	ca = fs_cert_pem(faults & MODE_OTHER_CA ? foreign_cert : faults & MODE_SUB_CA ? sub_cert : ca_cert, &ca_len);
	if (!cert || !ca || asprintf(&chain, "%s%s", cert, ca) < 0) {
		chain = NULL;
		snprintf(err, n, "Internal Server Error");
		goto out;
	}
	cert_b64 = b64_encode(cert, cert_len);
	ca_b64 = b64_encode(ca, ca_len);
	chain_b64 = b64_encode(chain, strlen(chain));
	if (!cert_b64 || !ca_b64 || !chain_b64) {
		snprintf(err, n, "Internal Server Error");
		goto out;
	}
	if (ex->ctl->modes & MODE_BAD_BASE64) {
		/* Base64 with characters outside the alphabet in the middle. */
		size_t mid = strlen(cert_b64) / 2;

		memcpy(cert_b64 + mid, "!*%$", 4);
		faults |= MODE_BAD_BASE64;
	}
	out = json_pack("{s:s,s:s,s:s}", "certificateChain", chain_b64, "caCertificate", ca_b64, "clientCertificate",
			cert_b64);
	{
		char *serial = serial_hex(x);

		snprintf(ex->note, sizeof ex->note, "signed serial %s for %s%s%s%s%s%s%s", serial ? serial : "?",
			 ex->client_id, faults & MODE_WRONG_SUBJECT ? " [wrong-subject]" : "",
			 faults & MODE_OTHER_KEY ? " [other-key]" : "", faults & MODE_BAD_CHAIN ? " [bad-chain]" : "",
			 faults & MODE_BAD_BASE64 ? " [bad-base64]" : "", faults & MODE_OTHER_CA ? " [other-ca]" : "",
			 faults & MODE_SUB_CA ? " [sub-ca]" : "");
		free(serial);
	}
out:
	free(cert_b64);
	free(ca_b64);
	free(chain_b64);
	free(chain);
	free(cert);
	free(ca);
	free(cn);
	X509_free(x);
	X509_REQ_free(req);
	BIO_free(b);
	free(der);
	return out;
}

static json_t *resolve_revoke(struct exec *ex, char *err, size_t n)
{
	/* revokeCertificate uses AuthenticateCertificate only: a token does
	 * not do. */
	if (!ex->mtls || !ex->client_id || !ex->peer) {
		snprintf(err, n, "%s", MSG_AUTH_CERT);
		return NULL;
	}
	if (revoke_cert(ex->peer) != 0) {
		snprintf(err, n, "Internal Server Error");
		return NULL;
	}
	snprintf(ex->note, sizeof ex->note, "revoked the presented certificate");
	return json_true();
}

/* The string an argument has after variables are applied; NULL for null. */
static const char *arg_string(const struct field *f, const char *name)
{
	const struct arg *a;

	for (a = f->args; a; a = a->next) {
		if (strcmp(a->name, name) != 0)
			continue;
		return a->v.kind == V_STRING ? a->v.text : NULL;
	}
	return NULL;
}

static const char *arg_string_op(const struct operation *op, const struct field *f, const char *name)
{
	const struct arg *a;

	for (a = f->args; a; a = a->next) {
		const struct vardef *v;

		if (strcmp(a->name, name) != 0 || a->v.kind != V_VAR)
			continue;
		v = find_var(op, a->v.text);
		if (v && v->resolved && json_is_string(v->resolved))
			return json_string_value(v->resolved);
		if (v && !v->resolved && v->has_default && v->def.kind == V_STRING)
			return v->def.text;
		return NULL;
	}
	return arg_string(f, name);
}

/* Fill out with full shaped by sel: aliases, __typename, repeated fields
 * merged. */
static void project(const struct field *sel, const struct stype *type, json_t *full, json_t *out)
{
	const struct field *f;

	for (f = sel; f; f = f->next) {
		const char *key = response_name(f);
		const struct sfield *sf;
		json_t *v, *have;
		char base[128];

		if (strcmp(f->name, "__typename") == 0) {
			json_object_set_new(out, key, json_string(type->name));
			continue;
		}
		sf = find_field(type, f->name);
		v = sf ? json_object_get(full, f->name) : NULL;
		if (!v || json_is_null(v) || !f->has_sel) {
			json_object_set(out, key, v ? v : json_null());
			continue;
		}
		have = json_object_get(out, key);
		if (!json_is_object(have)) {
			have = json_object();
			json_object_set_new(out, key, have);
		}
		project(f->sel, find_type(type_base(sf->type, base, sizeof base)), v, have);
	}
}

/* Root fields in order (mutations run one after the other). A root field
 * that fails nulls data: every root field of the schema is non-null. */
static json_t *execute(struct exec *ex, const struct operation *op, json_t *errors)
{
	const struct stype *root = find_type(op->type == OP_QUERY ? schema.query_type : schema.mutation_type);
	json_t *data = json_object();
	const struct field *f;
	bool failed = false;

	for (f = op->sel; f; f = f->next) {
		const char *key = response_name(f);
		const struct sfield *sf;
		json_t *full = NULL, *have;
		char err[1024] = "", base[128];

		if (strcmp(f->name, "__typename") == 0) {
			json_object_set_new(data, key, json_string(root->name));
			continue;
		}
		sf = find_field(root, f->name);
		if (op->type == OP_QUERY && strcmp(f->name, "configuration") == 0)
			full = resolve_configuration(ex, err, sizeof err);
		else if (op->type == OP_MUTATION && strcmp(f->name, "signCertificateSigningRequest") == 0)
			full = resolve_sign(ex, arg_string_op(op, f, "csr"), err, sizeof err);
		else if (op->type == OP_MUTATION && strcmp(f->name, "revokeCertificate") == 0)
			full = resolve_revoke(ex, err, sizeof err);
		else
			snprintf(err, sizeof err, "fake-ucl-connector has no resolver for %s.%s", root->name, f->name);
		if (!full) {
			json_t *e = json_pack("{s:s,s:[s]}", "message", err, "path", key);

			json_array_append_new(errors, e);
			failed = true;
			continue;
		}
		if (!json_is_object(full) || !f->has_sel) {
			json_object_set_new(data, key, full);
			continue;
		}
		have = json_object_get(data, key);
		if (!json_is_object(have)) {
			have = json_object();
			json_object_set_new(data, key, have);
		}
		project(f->sel, find_type(type_base(sf->type, base, sizeof base)), full, have);
		json_decref(full);
	}
	if (failed) {
		json_decref(data);
		return json_null();
	}
	return data;
}

/* ------------------------------------------------------------------ */
/* Responses                                                           */

static void set_text(struct response *rs, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_text(struct response *rs, int status, const char *fmt, ...)
{
	va_list ap;
	int n;

	free(rs->body);
	rs->body = NULL;
	rs->body_len = 0;
	rs->status = status;
	rs->content_type = "text/plain; charset=utf-8";
	va_start(ap, fmt);
	n = vasprintf(&rs->body, fmt, ap);
	va_end(ap);
	if (n < 0)
		rs->body = NULL;
	else
		rs->body_len = (size_t)n;
}

/* gqlgen's graphql.Response: errors (omitted when empty), then data. Takes
 * both references. */
static void set_graphql(struct response *rs, int status, json_t *errors, json_t *data)
{
	json_t *resp = json_object();

	if (errors && json_array_size(errors) > 0)
		json_object_set(resp, "errors", errors);
	json_object_set_new(resp, "data", data ? data : json_null());
	json_decref(errors);
	free(rs->body);
	rs->body = json_dumps(resp, JSON_COMPACT);
	rs->body_len = rs->body ? strlen(rs->body) : 0;
	rs->status = rs->body ? status : 500;
	rs->content_type = "application/json";
	json_decref(resp);
}

static void set_graphql_error(struct response *rs, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void set_graphql_error(struct response *rs, int status, const char *code, const char *fmt, ...)
{
	json_t *errors = json_array();
	va_list ap;

	va_start(ap, fmt);
	json_array_append_new(errors, gql_error_v(0, 0, code, NULL, fmt, ap));
	va_end(ap);
	set_graphql(rs, status, errors, NULL);
}

/* The log line's explanation grows as the request goes through. */
static void note_add(struct response *rs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_add(struct response *rs, const char *fmt, ...)
{
	size_t used = strlen(rs->note);
	va_list ap;

	if (used + 1 >= sizeof rs->note)
		return;
	va_start(ap, fmt);
	vsnprintf(rs->note + used, sizeof rs->note - used, fmt, ap);
	va_end(ap);
}

static bool is_json_content_type(const char *ct)
{
	size_t n = strcspn(ct, ";");

	while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
		n--;
	return n == strlen("application/json") && strncasecmp(ct, "application/json", n) == 0;
}

/* The certificate hydrator: a CA-verified, unrevoked certificate whose
 * fixed subject fields match gives its CN as the client id. */
static const char *cert_client_id(X509 *peer, char *buf, size_t n, const char **why)
{
	char *cn;

	if (is_revoked(peer)) {
		*why = "revoked certificate";
		return NULL;
	}
	if (subject_consts_mismatch(X509_get_subject_name(peer))) {
		*why = "certificate subject does not match";
		return NULL;
	}
	cn = fs_name_entry(X509_get_subject_name(peer), NID_commonName);
	if (!cn || !*cn) {
		free(cn);
		*why = "certificate without CN";
		return NULL;
	}
	snprintf(buf, n, "%s", cn);
	free(cn);
	*why = "certificate accepted";
	return buf;
}

static void handle(const struct fs_conn *c, const struct fs_request *rq, struct response *rs)
{
	const char *token = fs_header(rq, "Connector-Token"), *content_type = fs_header(rq, "Content-Type");
	char token_text[MAX_TOKEN_LEN + 1];
	struct control ctl;
	struct exec ex = { 0 };
	struct arena arena = { 0 };
	struct lexer lx = { 0 };
	struct document doc = { 0 };
	struct operation *op = NULL, *o;
	char client_id[128];
	const char *why = "no token", *query, *opname = NULL;
	json_t *body = NULL, *vars = NULL, *errors = NULL, *jq, *jo;
	json_error_t jerr;
	bool mtls;

	read_control(&ctl);
	add_control_tokens(&ctl);
	ex.ctl = &ctl;
	if (strcmp(rq->path, P_CONNECTOR) == 0) {
		mtls = false;
	} else if (strcmp(rq->path, P_MTLS) == 0) {
		mtls = true;
	} else {
		set_text(rs, 404, "404 page not found\n");
		return;
	}
	ex.mtls = mtls;
	/* The mTLS gateway (Istio, mode MUTUAL) refuses a missing or untrusted
	 * client certificate in the handshake. This listener also serves the
	 * token endpoint, so it cannot; 403 is the stand-in, before anything
	 * else happens. */
	if (mtls && (!c->peer || c->verify_result != X509_V_OK)) {
		set_text(rs, 403, "RBAC: access denied (fake-ucl-connector: %s)\n",
			 c->peer ? "client certificate does not verify against ca.pem" : "no client certificate");
		return;
	}
	/* Transport faults first: they stand for the ingress failing, before
	 * Oathkeeper could spend a token. */
	if (ctl.modes & MODE_HANG) {
		rs->kind = RESP_HANG;
		return;
	}
	if (ctl.modes & MODE_HUGE) {
		rs->kind = RESP_HUGE;
		rs->status = 200;
		rs->content_type = "application/json";
		return;
	}
	if (ctl.modes & MODE_HTTP_500) {
		set_text(rs, 500, "Internal Server Error\n");
		return;
	}
	/* Oathkeeper's hydrators, before the connector sees the request. */
	if (mtls) {
		ex.peer = c->peer;
		ex.client_id = cert_client_id(c->peer, client_id, sizeof client_id, &why);
	} else if (token && *token) {
		/* An over-long token is simply an unknown one. */
		snprintf(token_text, sizeof token_text, "%s", token);
		if (token_consume(token_text, ctl.modes & MODE_EXPIRED_TOKEN, client_id, sizeof client_id, &why))
			ex.client_id = client_id;
	}
	snprintf(rs->note, sizeof rs->note, "%s", why);
	/* gqlgen: only the POST transport with a JSON body is configured. */
	if (strcmp(rq->method, "POST") != 0 || !is_json_content_type(content_type ? content_type : "")) {
		set_graphql_error(rs, 400, NULL, "transport not supported");
		return;
	}
	body = json_loadb(rq->body ? rq->body : "", rq->body_len, JSON_DISABLE_EOF_CHECK, &jerr);
	if (!body || !json_is_object(body)) {
		set_graphql_error(rs, 400, NULL, "json request body could not be decoded: %s body:%.200s",
				  body ? "not an object" : jerr.text, rq->body ? rq->body : "");
		goto out;
	}
	jq = json_object_get(body, "query");
	jo = json_object_get(body, "operationName");
	vars = json_object_get(body, "variables");
	if ((jq && !json_is_string(jq) && !json_is_null(jq)) || (jo && !json_is_string(jo) && !json_is_null(jo)) ||
	    (vars && !json_is_object(vars) && !json_is_null(vars))) {
		set_graphql_error(rs, 400, NULL, "json request body could not be decoded: wrong type for query, "
						 "operationName or variables body:%.200s",
				  rq->body);
		goto out;
	}
	if (vars && json_is_null(vars))
		vars = NULL;
	query = jq && json_is_string(jq) ? json_string_value(jq) : "";
	if (jo && json_is_string(jo))
		opname = json_string_value(jo);
	if (!*query) {
		set_graphql_error(rs, cfg.validation_status, CODE_VALIDATION, "no operation provided");
		goto out;
	}
	lx.src = query;
	lx.len = json_string_length(jq);
	lx.line = 1;
	lx.arena = &arena;
	if (run_parse(&lx, &doc) != 0) {
		errors = json_array();
		add_error(errors, lx.err_line, lx.err_col, CODE_PARSE, NULL, "%s", lx.err);
		set_graphql(rs, cfg.validation_status, errors, NULL);
		note_add(rs, "; parse error: %s", lx.err);
		goto out;
	}
	errors = json_array();
	validate_document(errors, &doc);
	if (json_array_size(errors) > 0) {
		note_add(rs, "; invalid: %s",
			 json_string_value(json_object_get(json_array_get(errors, 0), "message")));
		set_graphql(rs, cfg.validation_status, errors, NULL);
		goto out;
	}
	for (o = doc.ops; o; o = o->next)
		if (opname ? o->name && strcmp(o->name, opname) == 0 : true)
			break;
	op = o;
	if (!op || (!opname && doc.nops > 1)) {
		if (opname)
			add_error(errors, 0, 0, CODE_VALIDATION, NULL, "operation %s not found", opname);
		else
			add_error(errors, 0, 0, CODE_VALIDATION, NULL, "operation name is required");
		set_graphql(rs, cfg.validation_status, errors, NULL);
		goto out;
	}
	coerce_variables(errors, op, vars);
	if (json_array_size(errors) > 0) {
		set_graphql(rs, cfg.validation_status, errors, NULL);
		goto out;
	}
	if (ctl.modes & MODE_VALIDATION_ERROR) {
		add_error(errors, 1, 1, CODE_VALIDATION, NULL,
			  "fake-ucl-connector: validation failed (control mode validation-error)");
		note_add(rs, "; fault: validation-error");
		set_graphql(rs, cfg.validation_status, errors, NULL);
		goto out;
	}
	if (ctl.modes & (MODE_GRAPHQL_ERROR | MODE_PARTIAL)) {
		json_t *data = (ctl.modes & MODE_GRAPHQL_ERROR) ? json_null() : json_object();
		const struct field *f;

		for (f = op->sel; f; f = f->next) {
			if (json_is_object(data))
				json_object_set_new(data, response_name(f), json_null());
			json_array_append_new(errors, json_pack("{s:s,s:[s],s:{s:s}}", "message",
								(ctl.modes & MODE_GRAPHQL_ERROR)
									? "Internal Server Error"
									: "fake-ucl-connector: partial result (control mode partial)",
								"path", response_name(f), "extensions", "error_id",
								"00000000-0000-0000-0000-000000000000"));
		}
		note_add(rs, "; fault: %s",
			 (ctl.modes & MODE_GRAPHQL_ERROR) ? "graphql-error" : "partial");
		set_graphql(rs, 200, errors, data);
		errors = NULL;
		goto out;
	}
	{
		json_t *data = execute(&ex, op, errors);

		if (json_array_size(errors) > 0)
			note_add(rs, "; error: %s",
				 json_string_value(json_object_get(json_array_get(errors, 0), "message")));
		if (ex.note[0])
			note_add(rs, "; %s", ex.note);
		set_graphql(rs, 200, errors, data);
	}
	errors = NULL;
out:
	free(lx.text);
	arena_free(&arena);
	json_decref(body);
}

/* ------------------------------------------------------------------ */
/* HTTP over TLS                                                       */

/* A JSON answer that looks like the start of a certificate and never
 * ends within any sane limit. */
static int send_huge(struct fs_conn *c)
{
	static const char head[] = "{\"data\":{\"result\":{\"certificateChain\":\"";
	static const char tail[] = "\"}}}";
	char *chunk = malloc(64 * 1024);
	long left = HUGE_BODY_BYTES;
	int r = -1;

	if (!chunk)
		return -1;
	memset(chunk, 'A', 64 * 1024);
	if (fs_write(c, head, sizeof head - 1) != 0)
		goto out;
	left -= (long)(sizeof head - 1) + (long)(sizeof tail - 1);
	while (left > 0 && !fs_stopping()) {
		size_t n = left < 64 * 1024 ? (size_t)left : 64 * 1024;

		if (fs_write(c, chunk, n) != 0)
			goto out;
		left -= (long)n;
	}
	if (left == 0 && fs_write(c, tail, sizeof tail - 1) == 0)
		r = 0;
out:
	free(chunk);
	return r;
}

static void send_response(struct fs_conn *c, const struct response *rs)
{
	char lines[320];

	snprintf(lines, sizeof lines, "Content-Type: %s\r\n", rs->content_type ? rs->content_type : "text/plain");
	if (fs_send_head(c, rs->status, NULL, lines, rs->kind == RESP_HUGE ? HUGE_BODY_BYTES : (long)rs->body_len) != 0)
		return;
	if (rs->kind == RESP_HUGE)
		send_huge(c);
	else if (rs->body_len > 0)
		fs_write(c, rs->body, rs->body_len);
}

/* The fakesrv handler: one request, its answer and its log line. */
static void serve(struct fs_conn *c, struct fs_request *rq)
{
	struct response rs;

	memset(&rs, 0, sizeof rs);
	switch (rq->error) {
	case 0: handle(c, rq, &rs); break;
	case 411: set_text(&rs, 411, "Length Required\n"); break;
	case 413: set_text(&rs, 413, "Request body larger than %d bytes (fake-ucl-connector limit)\n", MAX_BODY_BYTES); break;
	case 431: set_text(&rs, 431, "Request header too large\n"); break;
	default: set_text(&rs, 400, "Bad Request\n"); break;
	}
	if (rs.kind == RESP_HANG) {
		fs_log("%s %s hang (%s)", rq->method, rq->path, c->verdict);
		fs_wait_until_client_leaves(c);
		goto out;
	}
	send_response(c, &rs);
	fs_log("%s %s %d (%s%s%s)%s", rq->method[0] ? rq->method : "-", rq->path[0] ? rq->path : "-", rs.status,
	       c->verdict, rs.note[0] ? "; " : "", rs.note, rs.kind == RESP_HUGE ? " [huge]" : "");
out:
	free(rs.body);
}

/* ------------------------------------------------------------------ */
/* Startup and main loop                                               */

static const struct fs_ext ca_exts[] = {
	{ NID_basic_constraints, "critical,CA:TRUE" },
	{ NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature" },
	{ NID_subject_key_identifier, "hash" },
	{ NID_authority_key_identifier, "keyid:always" },
	{ 0, NULL },
};

static const struct fs_ext server_exts[] = {
	{ NID_basic_constraints, "critical,CA:FALSE" },
	{ NID_key_usage, "critical,digitalSignature,keyEncipherment" },
	{ NID_ext_key_usage, "serverAuth" },
	{ NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1" },
	{ NID_subject_key_identifier, "hash" },
	{ NID_authority_key_identifier, "keyid:always" },
	{ 0, NULL },
};

/* Ask for a client certificate, never insist, and let every one through
 * the handshake: the token endpoint shares the listener, and /mtls
 * judges fs_conn.verify_result itself. */
static SSL_CTX *init_tls(void)
{
	SSL_CTX *ctx = fs_tls_server_minted(cfg.dir, ca_cert, ca_key, 365 * DAY, server_exts, ca_cert,
					    FS_CLIENT_CERT_WANT);

	/* Clients issued by the signing CA (mode sub-ca) send only their own
	 * certificate, as a real client of such a connector would: the
	 * gateway knows the signing CA. */
	if (ctx && !X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), sub_cert)) {
		fs_log_ssl("adding the signing CA to the client trust");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static int init_state(void)
{
	char path[PATH_MAX], text[MAX_TOKEN_LEN + 2];

	if (fs_make_dir(cfg.dir, 0755) != 0)
		return -1;
	if (fs_load_or_make_ca(cfg.dir, "ca", "Kyma Test CA (fake-ucl-connector)", CA_TTL, ca_exts, &ca_cert,
			       &ca_key) != 0 ||
	    fs_load_or_make_ca(cfg.dir, "foreign-ca", "Foreign Test CA (not trusted by fake-ucl-connector)", CA_TTL,
			       ca_exts, &foreign_cert, &foreign_key) != 0)
		return -1;
	/* A signing CA under ca.pem, new at each start (mode sub-ca). */
	{
		X509_NAME *name = fs_cn_name("Kyma Test Signing CA (fake-ucl-connector)");
		time_t now = time(NULL);

		sub_key = fs_mint_key();
		sub_cert = name && sub_key ? fs_mint_cert(name, sub_key, ca_cert, ca_key, now - DAY, now + CA_TTL, ca_exts)
					   : NULL;
		X509_NAME_free(name);
		if (!sub_cert || !fs_pathf(path, sizeof path, "%s/sub-ca.pem", cfg.dir) ||
		    fs_write_cert(path, sub_cert) != 0)
			return -1;
	}
	if (cfg.token)
		snprintf(one_time_token, sizeof one_time_token, "%s", cfg.token);
	else
		random_token(one_time_token, sizeof one_time_token);
	snprintf(text, sizeof text, "%s\n", one_time_token);
	if (!fs_pathf(path, sizeof path, "%s/token", cfg.dir) || fs_write_file_atomic(path, text, strlen(text), 0600) != 0)
		return -1;
	pthread_mutex_lock(&token_lock);
	token_add_locked(one_time_token, cfg.client_id, cfg.token_ttl);
	pthread_mutex_unlock(&token_lock);
	return 0;
}

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: fake-ucl-connector --dir DIR --schema FILE.graphql [--listen 127.0.0.1|::1]\n"
		   "       [--port-file FILE] [--control FILE] [--token TOKEN] [--client-id ID]\n"
		   "       [--subject-base DN] [--key-algorithm ALG] [--ttl SECONDS] [--token-ttl SECONDS]\n"
		   "       [--validation-status CODE]\n"
		   "control file lines:\n");
	for (i = 0; i < sizeof modes / sizeof modes[0]; i++)
		fprintf(f, "  %-18s %s\n", modes[i].word, modes[i].effect);
}

int main(int argc, char **argv)
{
	enum { O_DIR = 1, O_SCHEMA, O_LISTEN, O_PORT_FILE, O_CONTROL, O_TOKEN, O_CLIENT_ID, O_SUBJECT_BASE,
	       O_KEY_ALG, O_TTL, O_TOKEN_TTL, O_VALIDATION_STATUS, O_HELP };
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, O_DIR },
		{ "schema", required_argument, NULL, O_SCHEMA },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "port-file", required_argument, NULL, O_PORT_FILE },
		{ "control", required_argument, NULL, O_CONTROL },
		{ "token", required_argument, NULL, O_TOKEN },
		{ "client-id", required_argument, NULL, O_CLIENT_ID },
		{ "subject-base", required_argument, NULL, O_SUBJECT_BASE },
		{ "key-algorithm", required_argument, NULL, O_KEY_ALG },
		{ "ttl", required_argument, NULL, O_TTL },
		{ "token-ttl", required_argument, NULL, O_TOKEN_TTL },
		{ "validation-status", required_argument, NULL, O_VALIDATION_STATUS },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	struct fs_server srv = {
		.handle = serve,
		.max_body_bytes = MAX_BODY_BYTES,
		.linger = true,
	};
	long v;
	int opt, lfd, port, r = 1;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case O_DIR: cfg.dir = optarg; break;
		case O_SCHEMA: cfg.schema_file = optarg; break;
		case O_LISTEN: cfg.listen_addr = optarg; break;
		case O_PORT_FILE: cfg.port_file = optarg; break;
		case O_CONTROL: cfg.control_file = optarg; break;
		case O_TOKEN: cfg.token = optarg; break;
		case O_CLIENT_ID: cfg.client_id = optarg; break;
		case O_SUBJECT_BASE: cfg.subject_base = optarg; break;
		case O_KEY_ALG: cfg.key_algorithm = optarg; break;
		case O_TTL:
		case O_TOKEN_TTL:
			if (!fs_parse_seconds(optarg, MAX_TTL, opt == O_TTL ? &cfg.ttl : &cfg.token_ttl)) {
				fprintf(stderr, "fake-ucl-connector: bad --%s %s\n", opt == O_TTL ? "ttl" : "token-ttl", optarg);
				return 2;
			}
			break;
		case O_VALIDATION_STATUS:
			if (!fs_parse_seconds(optarg, MAX_TTL, &v) || v < 200 || v > 599) {
				fprintf(stderr, "fake-ucl-connector: bad --validation-status %s\n", optarg);
				return 2;
			}
			cfg.validation_status = (int)v;
			break;
		case O_HELP: usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || !cfg.dir || !cfg.schema_file) {
		usage(stderr);
		return 2;
	}
	fs_log_init("fake-ucl-connector");
	/* A test CA with its key in a file must never be reachable from
	 * another host. */
	if (!fs_listen_addr_ok(cfg.listen_addr)) {
		fs_log("refusing to listen on %s: only 127.0.0.1 or ::1", cfg.listen_addr);
		return 2;
	}
	if (parse_subject_base(cfg.subject_base) != 0) {
		fprintf(stderr, "fake-ucl-connector: --subject-base needs exactly C, O, OU, L and ST, e.g. "
				"\"OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US\"\n");
		return 2;
	}
	if (!*cfg.client_id || strlen(cfg.client_id) >= 100 || (cfg.token && (!*cfg.token || strlen(cfg.token) > MAX_TOKEN_LEN)) ||
	    strlen(cfg.key_algorithm) >= sizeof ((struct control *)0)->key_algorithm) {
		fprintf(stderr, "fake-ucl-connector: bad --client-id, --token or --key-algorithm\n");
		return 2;
	}

	if (fs_signals_init() != 0)
		return 1;
	if (load_schema(cfg.schema_file) != 0 || init_state() != 0 || (srv.ctx = init_tls()) == NULL)
		goto out;
	if ((lfd = fs_listen_announced(cfg.listen_addr, cfg.port_file, &port)) < 0)
		goto out;
	cfg.port = port;
	fs_log("listening on https://%s%s%s:%d/ (dir %s, client id %s)", strchr(cfg.listen_addr, ':') ? "[" : "",
	       cfg.listen_addr, strchr(cfg.listen_addr, ':') ? "]" : "", port, cfg.dir, cfg.client_id);
	if (fs_serve(lfd, &srv) != 0)
		goto out;
	fs_log("stopping");
	r = 0;
out:
	SSL_CTX_free(srv.ctx);
	X509_free(ca_cert);
	EVP_PKEY_free(ca_key);
	X509_free(foreign_cert);
	EVP_PKEY_free(foreign_key);
	X509_free(sub_cert);
	EVP_PKEY_free(sub_key);
	arena_free(&schema.arena);
	return r;
}
