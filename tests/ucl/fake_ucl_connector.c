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
 *                        foreign-ca.pem, .key       an unrelated CA (bad-chain)
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
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

#define MAX_HEADER_BYTES (32 * 1024)
#define MAX_BODY_BYTES (64 * 1024)
#define MAX_SCHEMA_BYTES (1024 * 1024)
#define HUGE_BODY_BYTES (64L * 1024 * 1024)
#define MAX_DEPTH 32
#define MAX_CONNS 128
#define MAX_TOKENS 256
#define MAX_TOKEN_LEN 128
#define MAX_CONTROL_TOKENS 8
#define IO_TIMEOUT_SECS 30
#define DAY 86400L
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

struct request {
	char method[16];
	char path[2048];
	char content_type[256];
	char token[MAX_TOKEN_LEN + 1];
	bool has_token;
	char *body;
	size_t body_len;
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

struct conn {
	int fd;
	int slot;
	SSL *ssl;
	X509 *peer;
	long verify_result;
};

struct slot {
	bool used;
	bool done;
	int fd;
	pthread_t tid;
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

static X509 *ca_cert, *foreign_cert;
static EVP_PKEY *ca_key, *foreign_key;
static SSL_CTX *ssl_ctx;
static char one_time_token[MAX_TOKEN_LEN + 1];

/* Serialises revoked.txt. */
static pthread_mutex_t ca_lock = PTHREAD_MUTEX_INITIALIZER;

static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot slots[MAX_CONNS];

static volatile sig_atomic_t got_signal;
/* Self-pipe: the signal handler wakes the accept loop through it. */
static int signal_pipe[2] = { -1, -1 };
static atomic_bool stopping;

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	fprintf(stderr, "fake-ucl-connector: %s\n", line);
}

static void log_ssl(const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "unknown error";

	if (e)
		ERR_error_string_n(e, buf, sizeof buf);
	logmsg("%s: %s", what, buf);
	ERR_clear_error();
}

static bool pathf(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool pathf(char *out, size_t n, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vsnprintf(out, n, fmt, ap);
	va_end(ap);
	return r >= 0 && (size_t)r < n;
}

static bool file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* NUL-terminated contents, at most max bytes; NULL if missing or larger. */
static char *read_file(const char *path, size_t max, size_t *len_out)
{
	char *buf = NULL;
	size_t len = 0;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	buf = malloc(max + 1);
	if (!buf)
		goto fail;
	for (;;) {
		ssize_t n = read(fd, buf + len, max + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto fail;
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			errno = EFBIG;
			goto fail;
		}
	}
	close(fd);
	buf[len] = '\0';
	if (len_out)
		*len_out = len;
	return buf;
fail:
	close(fd);
	free(buf);
	return NULL;
}

/* Readers (tests, other threads) never see a half-written file. */
static int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	char tmp[PATH_MAX];
	const char *p = data;
	int fd, r = -1;

	if (!pathf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path))
		return -1;
	fd = mkstemp(tmp);
	if (fd < 0)
		return -1;
	if (fchmod(fd, mode) != 0)
		goto out;
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto out;
		p += n;
		len -= (size_t)n;
	}
	if (close(fd) != 0) {
		fd = -1;
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) != 0)
		goto out;
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	if (r != 0) {
		logmsg("cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
	}
	return r;
}

static int make_dir(const char *path)
{
	if (mkdir(path, 0755) == 0 || errno == EEXIST)
		return 0;
	logmsg("cannot create %s: %s", path, strerror(errno));
	return -1;
}

static void trim(char **s)
{
	char *p = *s, *end = p + strlen(p);

	while (*p == ' ' || *p == '\t')
		p++;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		*--end = '\0';
	*s = p;
}

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

	src = read_file(path, MAX_SCHEMA_BYTES, &len);
	if (!src) {
		logmsg("cannot read the schema %s: %s", path, strerror(errno));
		return -1;
	}
	lx.src = src;
	lx.len = len;
	lx.line = 1;
	lx.arena = &schema.arena;
	if (run_sdl(&lx) != 0) {
		logmsg("%s:%d:%d: %s", path, lx.err_line, lx.err_col, lx.err);
		goto out;
	}
	if (!schema.query_type && find_type("Query"))
		schema.query_type = "Query";
	if (!schema.mutation_type && find_type("Mutation"))
		schema.mutation_type = "Mutation";
	if (!schema.subscription_type && find_type("Subscription"))
		schema.subscription_type = "Subscription";
	if (!schema.query_type || !find_type(schema.query_type)) {
		logmsg("%s: no query type", path);
		goto out;
	}
	for (t = schema.types; t; t = t->next) {
		const struct sfield *f;
		const struct sarg *a;
		char base[128];

		if (!t->scalar && !t->fields) {
			logmsg("%s: type %s has no fields", path, t->name);
			goto out;
		}
		for (f = t->fields; f; f = f->next) {
			if (!find_type(type_base(f->type, base, sizeof base))) {
				logmsg("%s: %s.%s: unknown type %s", path, t->name, f->name, base);
				goto out;
			}
			for (a = f->args; a; a = a->next) {
				const struct stype *at = find_type(type_base(a->type, base, sizeof base));

				if (!at || !at->scalar) {
					logmsg("%s: %s.%s(%s:): %s is not a known input type", path, t->name, f->name, a->name,
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
		logmsg("token table full; not adding a token");
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

static bool parse_seconds(const char *s, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v <= 0 || v > MAX_TTL)
		return false;
	*out = v;
	return true;
}

static void read_control(struct control *ctl)
{
	char *text, *line, *save = NULL;

	memset(ctl, 0, sizeof *ctl);
	snprintf(ctl->key_algorithm, sizeof ctl->key_algorithm, "%s", cfg.key_algorithm);
	ctl->ttl = cfg.ttl;
	if (!cfg.control_file)
		return;
	text = read_file(cfg.control_file, 4096, NULL);
	if (!text)
		return;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t i;
		bool known = false;

		trim(&line);
		if (*line == '\0' || *line == '#')
			continue;
		if (strncmp(line, "key-algorithm ", 14) == 0) {
			char *alg = line + 14;

			trim(&alg);
			snprintf(ctl->key_algorithm, sizeof ctl->key_algorithm, "%s", alg);
			continue;
		}
		if (strncmp(line, "ttl ", 4) == 0) {
			char *ttl = line + 4;

			trim(&ttl);
			if (!parse_seconds(ttl, &ctl->ttl))
				logmsg("control: ignoring bad ttl \"%.32s\"", ttl);
			continue;
		}
		if (strncmp(line, "token ", 6) == 0) {
			char *tok = line + 6;

			trim(&tok);
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
			logmsg("control: ignoring unknown word \"%.64s\"", line);
	}
	free(text);
}

/* ------------------------------------------------------------------ */
/* X.509                                                               */

static char *bio_take(BIO *b, size_t *len_out)
{
	char *data, *out;
	long n = BIO_get_mem_data(b, &data);

	if (n < 0)
		return NULL;
	out = malloc((size_t)n + 1);
	if (!out)
		return NULL;
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	if (len_out)
		*len_out = (size_t)n;
	return out;
}

static char *cert_pem(X509 *x, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *out = NULL;

	if (b && PEM_write_bio_X509(b, x))
		out = bio_take(b, len);
	BIO_free(b);
	return out;
}

static int write_cert(const char *path, X509 *x)
{
	size_t len;
	char *pem = cert_pem(x, &len);
	int r = -1;

	if (pem)
		r = write_file_atomic(path, pem, len, 0644);
	free(pem);
	return r;
}

static int write_key(const char *path, EVP_PKEY *key)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *pem = NULL;
	size_t len;
	int r = -1;

	if (!b || !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL))
		goto out;
	pem = bio_take(b, &len);
	if (pem)
		r = write_file_atomic(path, pem, len, 0600);
	OPENSSL_cleanse(pem, pem ? len : 0);
out:
	free(pem);
	BIO_free(b);
	return r;
}

static X509_NAME *cn_name(const char *cn)
{
	X509_NAME *n = X509_NAME_new();

	if (n && !X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0)) {
		X509_NAME_free(n);
		n = NULL;
	}
	return n;
}

/* First entry of nid in name as UTF-8 (malloc), or NULL. */
static char *name_entry(const X509_NAME *name, int nid)
{
	int idx = X509_NAME_get_index_by_NID(name, nid, -1);
	unsigned char *utf8 = NULL;
	char *out = NULL;
	int n;

	if (idx < 0)
		return NULL;
	n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
	if (n < 0)
		return NULL;
	if (memchr(utf8, '\0', (size_t)n) == NULL)
		out = strdup((const char *)utf8);
	OPENSSL_free(utf8);
	return out;
}

static int add_ext(X509 *issuer, X509 *subject, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&ctx, issuer, subject, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext) {
		log_ssl(OBJ_nid2sn(nid));
		return -1;
	}
	ok = X509_add_ext(subject, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

/* Random positive 128-bit serials: certificates from earlier runs on the
 * same CA directory never collide, so revoked.txt stays meaningful. */
static int set_random_serial(X509 *x)
{
	unsigned char b[16];
	BIGNUM *bn;
	int ok;

	if (RAND_bytes(b, sizeof b) != 1)
		return -1;
	b[0] = (unsigned char)((b[0] & 0x7f) | 0x01);
	bn = BN_bin2bn(b, sizeof b, NULL);
	ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
	BN_free(bn);
	return ok ? 0 : -1;
}

static X509 *new_cert(const X509_NAME *issuer, const X509_NAME *subject, EVP_PKEY *pub, time_t not_before,
		      time_t not_after)
{
	X509 *x = X509_new();

	if (!x || !X509_set_version(x, X509_VERSION_3) || set_random_serial(x) != 0 ||
	    !X509_set_issuer_name(x, issuer) || !X509_set_subject_name(x, subject) || !X509_set_pubkey(x, pub) ||
	    !ASN1_TIME_set(X509_getm_notBefore(x), not_before) || !ASN1_TIME_set(X509_getm_notAfter(x), not_after)) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static int sign_cert(X509 *x, EVP_PKEY *key)
{
	if (X509_sign(x, key, EVP_sha256()) <= 0) {
		log_ssl("signing a certificate");
		return -1;
	}
	return 0;
}

static int make_ca(const char *cn, X509 **cert_out, EVP_PKEY **key_out)
{
	time_t now = time(NULL);
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509_NAME *name = cn_name(cn);
	X509 *x = NULL;
	int r = -1;

	if (!key || !name)
		goto out;
	x = new_cert(name, name, key, now - DAY, now + CA_TTL);
	if (!x || add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") ||
	    add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature") ||
	    add_ext(x, x, NID_subject_key_identifier, "hash") ||
	    add_ext(x, x, NID_authority_key_identifier, "keyid:always") || sign_cert(x, key))
		goto out;
	*cert_out = x;
	*key_out = key;
	x = NULL;
	key = NULL;
	r = 0;
out:
	X509_free(x);
	EVP_PKEY_free(key);
	X509_NAME_free(name);
	return r;
}

static int load_pair(const char *cert_path, const char *key_path, X509 **cert_out, EVP_PKEY **key_out)
{
	FILE *f;
	X509 *x = NULL;
	EVP_PKEY *k = NULL;

	f = fopen(cert_path, "r");
	if (f) {
		x = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
	}
	f = fopen(key_path, "r");
	if (f) {
		k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	}
	if (!x || !k || X509_check_private_key(x, k) != 1) {
		log_ssl("loading a CA");
		logmsg("%s and %s are not a matching certificate and key", cert_path, key_path);
		X509_free(x);
		EVP_PKEY_free(k);
		return -1;
	}
	*cert_out = x;
	*key_out = k;
	return 0;
}

/* Reuse DIR/NAME.pem + DIR/NAME.key, or make both; half a pair is an error. */
static int load_or_make_ca(const char *base, const char *cn, X509 **cert, EVP_PKEY **key)
{
	char cp[PATH_MAX], kp[PATH_MAX];
	bool have_c, have_k;

	if (!pathf(cp, sizeof cp, "%s/%s.pem", cfg.dir, base) || !pathf(kp, sizeof kp, "%s/%s.key", cfg.dir, base))
		return -1;
	have_c = file_exists(cp);
	have_k = file_exists(kp);
	if (have_c && have_k)
		return load_pair(cp, kp, cert, key);
	if (have_c || have_k) {
		logmsg("found only one of %s and %s; remove it or supply the other", cp, kp);
		return -1;
	}
	if (make_ca(cn, cert, key) != 0)
		return -1;
	if (write_key(kp, *key) != 0 || write_cert(cp, *cert) != 0)
		return -1;
	logmsg("created %s", cp);
	return 0;
}

static int make_server_cert(void)
{
	char cp[PATH_MAX], kp[PATH_MAX];
	time_t now = time(NULL);
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509_NAME *name = cn_name("localhost");
	X509 *x = NULL;
	int r = -1;

	if (!key || !name || !pathf(cp, sizeof cp, "%s/server.pem", cfg.dir) ||
	    !pathf(kp, sizeof kp, "%s/server.key", cfg.dir))
		goto out;
	x = new_cert(X509_get_subject_name(ca_cert), name, key, now - DAY, now + 365 * DAY);
	if (!x || add_ext(ca_cert, x, NID_basic_constraints, "critical,CA:FALSE") ||
	    add_ext(ca_cert, x, NID_key_usage, "critical,digitalSignature,keyEncipherment") ||
	    add_ext(ca_cert, x, NID_ext_key_usage, "serverAuth") ||
	    add_ext(ca_cert, x, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1") ||
	    add_ext(ca_cert, x, NID_subject_key_identifier, "hash") ||
	    add_ext(ca_cert, x, NID_authority_key_identifier, "keyid:always") || sign_cert(x, ca_key))
		goto out;
	if (write_key(kp, key) != 0 || write_cert(cp, x) != 0)
		goto out;
	if (SSL_CTX_use_certificate(ssl_ctx, x) != 1 || SSL_CTX_use_PrivateKey(ssl_ctx, key) != 1 ||
	    SSL_CTX_check_private_key(ssl_ctx) != 1) {
		log_ssl("server certificate");
		goto out;
	}
	r = 0;
out:
	X509_free(x);
	EVP_PKEY_free(key);
	X509_NAME_free(name);
	return r;
}

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
		trim(&key);
		trim(&val);
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
		char *v = name_entry(name, f[i].nid);
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
	if (faults & MODE_BAD_CHAIN) {
		issuer = foreign_cert;
		issuer_key = foreign_key;
	}
	x = new_cert(X509_get_subject_name(issuer), subject, pub, now - 60, now + ttl);
	if (!x || add_ext(issuer, x, NID_key_usage, "critical,digitalSignature") ||
	    add_ext(issuer, x, NID_ext_key_usage, "clientAuth") || add_ext(issuer, x, NID_subject_key_identifier, "hash") ||
	    add_ext(issuer, x, NID_authority_key_identifier, "keyid:always") || sign_cert(x, issuer_key))
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

	if (!serial || !pathf(path, sizeof path, "%s/revoked.txt", cfg.dir)) {
		free(serial);
		return true;
	}
	pthread_mutex_lock(&ca_lock);
	text = read_file(path, 1024 * 1024, NULL);
	pthread_mutex_unlock(&ca_lock);
	for (line = text ? strtok_r(text, "\n", &save) : NULL; line && !found; line = strtok_r(NULL, "\n", &save)) {
		trim(&line);
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

	if (!serial || !pathf(path, sizeof path, "%s/revoked.txt", cfg.dir))
		goto out;
	pthread_mutex_lock(&ca_lock);
	text = read_file(path, 1024 * 1024, &len);
	if (asprintf(&all, "%s%s\n", text ? text : "", serial) >= 0)
		r = write_file_atomic(path, all, strlen(all), 0644);
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
	unsigned faults = ex->ctl->modes & (MODE_WRONG_SUBJECT | MODE_OTHER_KEY | MODE_BAD_CHAIN);
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
	cn = name_entry(X509_REQ_get_subject_name(req), NID_commonName);
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
	cert = x ? cert_pem(x, &cert_len) : NULL;
	ca = cert_pem(ca_cert, &ca_len);
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

		snprintf(ex->note, sizeof ex->note, "signed serial %s for %s%s%s%s%s", serial ? serial : "?",
			 ex->client_id, faults & MODE_WRONG_SUBJECT ? " [wrong-subject]" : "",
			 faults & MODE_OTHER_KEY ? " [other-key]" : "", faults & MODE_BAD_CHAIN ? " [bad-chain]" : "",
			 faults & MODE_BAD_BASE64 ? " [bad-base64]" : "");
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
	cn = name_entry(X509_get_subject_name(peer), NID_commonName);
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

static void handle(const struct conn *c, const struct request *rq, struct response *rs)
{
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
	} else if (rq->has_token) {
		if (token_consume(rq->token, ctl.modes & MODE_EXPIRED_TOKEN, client_id, sizeof client_id, &why))
			ex.client_id = client_id;
	}
	snprintf(rs->note, sizeof rs->note, "%s", why);
	/* gqlgen: only the POST transport with a JSON body is configured. */
	if (strcmp(rq->method, "POST") != 0 || !is_json_content_type(rq->content_type)) {
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

static void on_signal(int sig)
{
	int saved = errno;

	(void)sig;
	got_signal = 1;
	if (write(signal_pipe[1], "x", 1) < 0) {
		/* Full pipe: the loop wakes up anyway. */
	}
	errno = saved;
}

/* Workers leave SIGTERM/SIGINT to the accept loop, so their reads and
 * writes are never interrupted. */
static void block_stop_signals(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static int ssl_write_all(SSL *ssl, const void *data, size_t len)
{
	size_t done;

	while (len > 0) {
		if (SSL_write_ex(ssl, data, len, &done) != 1) {
			ERR_clear_error();
			return -1;
		}
		data = (const char *)data + done;
		len -= done;
	}
	return 0;
}

static const char *reason_phrase(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 411: return "Length Required";
	case 413: return "Payload Too Large";
	case 422: return "Unprocessable Entity";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	default: return "Unknown";
	}
}

/* Reads and parses one request. 0: complete; 1: answer rs at once
 * (malformed, too large); -1: the client went away. */
static int read_request(struct conn *c, struct request *rq, struct response *rs)
{
	char *buf = malloc(MAX_HEADER_BYTES + 1), *hdr_end = NULL, *line, *next_line, *sp;
	size_t have = 0, got, body_have;
	unsigned long long content_length = 0;
	bool has_length = false, chunked = false, expect_continue = false;
	int r = -1;

	if (!buf)
		return -1;
	while (!hdr_end) {
		if (have == MAX_HEADER_BYTES) {
			set_text(rs, 431, "Request header too large\n");
			r = 1;
			goto out;
		}
		if (SSL_read_ex(c->ssl, buf + have, MAX_HEADER_BYTES - have, &got) != 1) {
			ERR_clear_error();
			goto out;
		}
		have += got;
		buf[have] = '\0';
		hdr_end = memmem(buf, have, "\r\n\r\n", 4);
	}
	*hdr_end = '\0';
	r = 1;
	line = buf;
	next_line = strstr(line, "\r\n");
	if (next_line)
		*next_line = '\0';
	/* Request line: METHOD SP TARGET SP HTTP/1.x */
	sp = strchr(line, ' ');
	if (!sp || (size_t)(sp - line) >= sizeof rq->method)
		goto bad;
	memcpy(rq->method, line, (size_t)(sp - line));
	line = sp + 1;
	sp = strchr(line, ' ');
	if (!sp || (size_t)(sp - line) >= sizeof rq->path || line[0] != '/' || strncmp(sp + 1, "HTTP/1.", 7) != 0)
		goto bad;
	memcpy(rq->path, line, (size_t)(sp - line));
	rq->path[strcspn(rq->path, "?#")] = '\0';
	for (line = next_line ? next_line + 2 : NULL; line && *line; line = next_line ? next_line + 2 : NULL) {
		char *colon, *value;

		next_line = strstr(line, "\r\n");
		if (next_line)
			*next_line = '\0';
		colon = strchr(line, ':');
		if (!colon)
			goto bad;
		*colon = '\0';
		value = colon + 1;
		trim(&value);
		if (strcasecmp(line, "Content-Length") == 0) {
			char *e;

			errno = 0;
			content_length = strtoull(value, &e, 10);
			if (has_length || errno || e == value || *e || value[0] == '-')
				goto bad;
			has_length = true;
		} else if (strcasecmp(line, "Transfer-Encoding") == 0) {
			chunked = strcasecmp(value, "identity") != 0;
		} else if (strcasecmp(line, "Expect") == 0) {
			expect_continue = strcasecmp(value, "100-continue") == 0;
		} else if (strcasecmp(line, "Content-Type") == 0) {
			snprintf(rq->content_type, sizeof rq->content_type, "%s", value);
		} else if (strcasecmp(line, "Connector-Token") == 0) {
			/* An over-long token is simply an unknown one. */
			snprintf(rq->token, sizeof rq->token, "%s", value);
			rq->has_token = *value != '\0';
		}
	}
	if (chunked) {
		/* Only Content-Length bodies; curl and Go's client send those. */
		set_text(rs, 411, "Length Required\n");
		goto out;
	}
	if (content_length > MAX_BODY_BYTES) {
		set_text(rs, 413, "Request body larger than %d bytes (fake-ucl-connector limit)\n", MAX_BODY_BYTES);
		goto out;
	}
	if (expect_continue && content_length > 0) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

		if (ssl_write_all(c->ssl, cont, sizeof cont - 1) != 0) {
			r = -1;
			goto out;
		}
	}
	rq->body = malloc((size_t)content_length + 1);
	if (!rq->body) {
		r = -1;
		goto out;
	}
	body_have = have - (size_t)(hdr_end + 4 - buf);
	if (body_have > content_length)
		body_have = (size_t)content_length;
	memcpy(rq->body, hdr_end + 4, body_have);
	while (body_have < content_length) {
		if (SSL_read_ex(c->ssl, rq->body + body_have, (size_t)content_length - body_have, &got) != 1) {
			ERR_clear_error();
			r = -1;
			goto out;
		}
		body_have += got;
	}
	rq->body[body_have] = '\0';
	rq->body_len = body_have;
	r = 0;
	goto out;
bad:
	set_text(rs, 400, "Bad Request\n");
out:
	free(buf);
	return r;
}

/* hang: say nothing until the client closes (or the server stops). */
static void wait_until_client_leaves(int fd)
{
	char junk[4096];

	while (!atomic_load(&stopping)) {
		struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
		int n = poll(&p, 1, 500);

		if (n < 0 && errno != EINTR)
			return;
		if (n <= 0)
			continue;
		if (p.revents & (POLLRDHUP | POLLHUP | POLLERR))
			return;
		if (recv(fd, junk, sizeof junk, 0) <= 0)
			return;
	}
}

/* A JSON answer that looks like the start of a certificate and never
 * ends within any sane limit. */
static int send_huge(SSL *ssl)
{
	static const char head[] = "{\"data\":{\"result\":{\"certificateChain\":\"";
	static const char tail[] = "\"}}}";
	char *chunk = malloc(64 * 1024);
	long left = HUGE_BODY_BYTES;
	int r = -1;

	if (!chunk)
		return -1;
	memset(chunk, 'A', 64 * 1024);
	if (ssl_write_all(ssl, head, sizeof head - 1) != 0)
		goto out;
	left -= (long)(sizeof head - 1) + (long)(sizeof tail - 1);
	while (left > 0 && !atomic_load(&stopping)) {
		size_t n = left < 64 * 1024 ? (size_t)left : 64 * 1024;

		if (ssl_write_all(ssl, chunk, n) != 0)
			goto out;
		left -= (long)n;
	}
	if (left == 0 && ssl_write_all(ssl, tail, sizeof tail - 1) == 0)
		r = 0;
out:
	free(chunk);
	return r;
}

static void send_response(struct conn *c, const struct response *rs)
{
	char head[512];
	int n;

	n = snprintf(head, sizeof head,
		     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %ld\r\nConnection: close\r\n\r\n",
		     rs->status, reason_phrase(rs->status), rs->content_type ? rs->content_type : "text/plain",
		     rs->kind == RESP_HUGE ? HUGE_BODY_BYTES : (long)rs->body_len);
	if (n < 0 || (size_t)n >= sizeof head || ssl_write_all(c->ssl, head, (size_t)n) != 0)
		return;
	if (rs->kind == RESP_HUGE)
		send_huge(c->ssl);
	else if (rs->body_len > 0)
		ssl_write_all(c->ssl, rs->body, rs->body_len);
}

/* Closing with unread input makes the kernel send a reset, which can
 * destroy the answer before the client reads it (413 with a body still on
 * its way): read and drop for a moment first. */
static void linger_close(struct conn *c)
{
	char junk[4096];
	size_t total = 0;
	int i;

	if (SSL_shutdown(c->ssl) < 0)
		ERR_clear_error();
	shutdown(c->fd, SHUT_WR);
	for (i = 0; i < 20 && total < 1024 * 1024; i++) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 100) <= 0)
			continue;
		n = recv(c->fd, junk, sizeof junk, 0);
		if (n <= 0)
			break;
		total += (size_t)n;
	}
}

static int verify_cb(int preverify_ok, X509_STORE_CTX *ctx)
{
	(void)preverify_ok;
	(void)ctx;
	/* Every client certificate gets through the handshake (the token
	 * endpoint shares the listener); SSL_get_verify_result keeps the
	 * verdict for /mtls. */
	return 1;
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct request rq;
	struct response rs;
	char verdict[160];
	int rr;

	block_stop_signals();
	memset(&rq, 0, sizeof rq);
	memset(&rs, 0, sizeof rs);
	c->ssl = SSL_new(ssl_ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
		log_ssl("SSL_new");
		goto out;
	}
	if (SSL_accept(c->ssl) != 1) {
		log_ssl("TLS handshake failed");
		goto out;
	}
	c->peer = SSL_get1_peer_certificate(c->ssl);
	c->verify_result = SSL_get_verify_result(c->ssl);
	if (!c->peer)
		snprintf(verdict, sizeof verdict, "no client cert");
	else if (c->verify_result == X509_V_OK)
		snprintf(verdict, sizeof verdict, "client cert verifies");
	else
		snprintf(verdict, sizeof verdict, "client cert does not verify: %s",
			 X509_verify_cert_error_string(c->verify_result));
	rr = read_request(c, &rq, &rs);
	if (rr < 0)
		goto out;
	if (rr == 0)
		handle(c, &rq, &rs);
	if (rs.kind == RESP_HANG) {
		logmsg("%s %s hang (%s)", rq.method, rq.path, verdict);
		wait_until_client_leaves(c->fd);
		goto out;
	}
	send_response(c, &rs);
	logmsg("%s %s %d (%s%s%s)%s", rq.method[0] ? rq.method : "-", rq.path[0] ? rq.path : "-", rs.status, verdict,
	       rs.note[0] ? "; " : "", rs.note, rs.kind == RESP_HUGE ? " [huge]" : "");
	linger_close(c);
out:
	pthread_mutex_lock(&slot_lock);
	slots[c->slot].fd = -1;
	pthread_mutex_unlock(&slot_lock);
	SSL_free(c->ssl);
	close(c->fd);
	X509_free(c->peer);
	free(rq.body);
	free(rs.body);
	pthread_mutex_lock(&slot_lock);
	slots[c->slot].done = true;
	pthread_mutex_unlock(&slot_lock);
	free(c);
	ERR_clear_error();
	OPENSSL_thread_stop();
	return NULL;
}

static void reap_finished(bool all)
{
	int i;

	for (i = 0; i < MAX_CONNS; i++) {
		bool join;

		pthread_mutex_lock(&slot_lock);
		join = slots[i].used && (slots[i].done || all);
		pthread_mutex_unlock(&slot_lock);
		if (!join)
			continue;
		pthread_join(slots[i].tid, NULL);
		pthread_mutex_lock(&slot_lock);
		slots[i].used = false;
		pthread_mutex_unlock(&slot_lock);
	}
}

static void start_conn(int fd)
{
	struct timeval tv = { .tv_sec = IO_TIMEOUT_SECS };
	struct conn *c;
	int i;

	reap_finished(false);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	c = calloc(1, sizeof *c);
	if (!c)
		goto drop;
	c->fd = fd;
	pthread_mutex_lock(&slot_lock);
	for (i = 0; i < MAX_CONNS && slots[i].used; i++)
		;
	if (i == MAX_CONNS) {
		pthread_mutex_unlock(&slot_lock);
		logmsg("more than %d connections at once; dropping one", MAX_CONNS);
		goto drop;
	}
	c->slot = i;
	slots[i] = (struct slot){ .used = true, .fd = fd };
	/* One thread per connection: a client that hangs holds only its own. */
	if (pthread_create(&slots[i].tid, NULL, conn_main, c) != 0) {
		slots[i].used = false;
		pthread_mutex_unlock(&slot_lock);
		goto drop;
	}
	pthread_mutex_unlock(&slot_lock);
	return;
drop:
	free(c);
	close(fd);
}

/* ------------------------------------------------------------------ */
/* Startup and main loop                                               */

static int init_tls(void)
{
	char ca_path[PATH_MAX];
	STACK_OF(X509_NAME) *names;
	static const unsigned char sid[] = "fake-ucl-connector";

	ssl_ctx = SSL_CTX_new(TLS_server_method());
	if (!ssl_ctx || SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION) != 1 ||
	    X509_STORE_add_cert(SSL_CTX_get_cert_store(ssl_ctx), ca_cert) != 1 ||
	    SSL_CTX_set_session_id_context(ssl_ctx, sid, sizeof sid - 1) != 1) {
		log_ssl("TLS setup");
		return -1;
	}
	SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_TICKET);
	/* Ask for a client certificate, never insist: the token endpoint
	 * runs without one. */
	SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, verify_cb);
	if (!pathf(ca_path, sizeof ca_path, "%s/ca.pem", cfg.dir))
		return -1;
	names = SSL_load_client_CA_file(ca_path);
	if (names)
		SSL_CTX_set_client_CA_list(ssl_ctx, names);
	return make_server_cert();
}

static int init_state(void)
{
	char path[PATH_MAX], text[MAX_TOKEN_LEN + 2];

	if (make_dir(cfg.dir) != 0)
		return -1;
	if (load_or_make_ca("ca", "Kyma Test CA (fake-ucl-connector)", &ca_cert, &ca_key) != 0 ||
	    load_or_make_ca("foreign-ca", "Foreign Test CA (not trusted by fake-ucl-connector)", &foreign_cert,
			    &foreign_key) != 0)
		return -1;
	if (cfg.token)
		snprintf(one_time_token, sizeof one_time_token, "%s", cfg.token);
	else
		random_token(one_time_token, sizeof one_time_token);
	snprintf(text, sizeof text, "%s\n", one_time_token);
	if (!pathf(path, sizeof path, "%s/token", cfg.dir) || write_file_atomic(path, text, strlen(text), 0600) != 0)
		return -1;
	pthread_mutex_lock(&token_lock);
	token_add_locked(one_time_token, cfg.client_id, cfg.token_ttl);
	pthread_mutex_unlock(&token_lock);
	return 0;
}

static int listen_socket(int *port_out)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd = -1, one = 1;
	bool v6 = strcmp(cfg.listen_addr, "::1") == 0;

	memset(&ss, 0, sizeof ss);
	if (v6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_addr = in6addr_loopback;
		sl = sizeof *s6;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof *s4;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (v6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 64) != 0)
		goto fail;
	sl = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
		goto fail;
	*port_out = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
fail:
	logmsg("cannot listen on %s: %s", cfg.listen_addr, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
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
	struct sigaction sa;
	char port_text[16];
	long v;
	int opt, lfd = -1, port, i, r = 1;

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
			if (!parse_seconds(optarg, opt == O_TTL ? &cfg.ttl : &cfg.token_ttl)) {
				fprintf(stderr, "fake-ucl-connector: bad --%s %s\n", opt == O_TTL ? "ttl" : "token-ttl", optarg);
				return 2;
			}
			break;
		case O_VALIDATION_STATUS:
			if (!parse_seconds(optarg, &v) || v < 200 || v > 599) {
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
	/* A test CA with its key in a file must never be reachable from
	 * another host. */
	if (strcmp(cfg.listen_addr, "127.0.0.1") != 0 && strcmp(cfg.listen_addr, "::1") != 0) {
		fprintf(stderr, "fake-ucl-connector: refusing to listen on %s: only 127.0.0.1 or ::1\n", cfg.listen_addr);
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

	signal(SIGPIPE, SIG_IGN);
	if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
		perror("fake-ucl-connector: pipe");
		return 1;
	}
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	if (load_schema(cfg.schema_file) != 0 || init_state() != 0 || init_tls() != 0)
		goto out;
	lfd = listen_socket(&port);
	if (lfd < 0)
		goto out;
	cfg.port = port;
	if (cfg.port_file) {
		snprintf(port_text, sizeof port_text, "%d\n", port);
		if (write_file_atomic(cfg.port_file, port_text, strlen(port_text), 0644) != 0)
			goto out;
	}
	logmsg("listening on https://%s%s%s:%d/ (dir %s, client id %s)", strchr(cfg.listen_addr, ':') ? "[" : "",
	       cfg.listen_addr, strchr(cfg.listen_addr, ':') ? "]" : "", port, cfg.dir, cfg.client_id);

	while (!got_signal) {
		struct pollfd p[2] = { { .fd = lfd, .events = POLLIN }, { .fd = signal_pipe[0], .events = POLLIN } };
		int n = poll(p, 2, 1000);

		if (n < 0 && errno != EINTR) {
			logmsg("poll: %s", strerror(errno));
			goto out;
		}
		if (n > 0 && (p[0].revents & POLLIN)) {
			int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

			if (fd >= 0)
				start_conn(fd);
		} else {
			reap_finished(false);
		}
	}
	logmsg("stopping");
	r = 0;
out:
	atomic_store(&stopping, true);
	if (lfd >= 0)
		close(lfd);
	/* Wake every connection blocked in a read or write. */
	pthread_mutex_lock(&slot_lock);
	for (i = 0; i < MAX_CONNS; i++)
		if (slots[i].used && !slots[i].done && slots[i].fd >= 0)
			shutdown(slots[i].fd, SHUT_RDWR);
	pthread_mutex_unlock(&slot_lock);
	reap_finished(true);
	SSL_CTX_free(ssl_ctx);
	X509_free(ca_cert);
	EVP_PKEY_free(ca_key);
	X509_free(foreign_cert);
	EVP_PKEY_free(foreign_key);
	arena_free(&schema.arena);
	close(signal_pipe[0]);
	close(signal_pipe[1]);
	return r;
}
