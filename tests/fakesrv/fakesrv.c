/*
 * fakesrv: the infrastructure the local fake servers of the tests share.
 * See fakesrv.h for the contracts.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "fakesrv.h"

#define MAX_CONNS 128
#define IO_TIMEOUT_SECS 30

static const char *progname = "fakesrv";

/* ------------------------------------------------------------------ */
/* Logging                                                             */

void fs_log_init(const char *name)
{
	progname = name;
}

void fs_log(const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: %s\n", progname, line);
}

void fs_log_ssl(const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "unknown error";

	if (e)
		ERR_error_string_n(e, buf, sizeof buf);
	fs_log("%s: %s", what, buf);
	ERR_clear_error();
}

/* ------------------------------------------------------------------ */
/* Files and small parsers                                             */

bool fs_pathf(char *out, size_t n, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vsnprintf(out, n, fmt, ap);
	va_end(ap);
	return r >= 0 && (size_t)r < n;
}

bool fs_file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

char *fs_read_file(const char *path, size_t max, size_t *len_out)
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

int fs_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	char tmp[PATH_MAX];
	const char *p = data;
	int fd, r = -1;

	if (!fs_pathf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path)) {
		fs_log("cannot write %s: name too long", path);
		return -1;
	}
	fd = mkstemp(tmp);
	if (fd < 0) {
		fs_log("cannot write %s: %s", path, strerror(errno));
		return -1;
	}
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
		fs_log("cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
	}
	return r;
}

int fs_make_dir(const char *path, mode_t mode)
{
	if (mkdir(path, mode) == 0 || errno == EEXIST)
		return 0;
	fs_log("cannot create %s: %s", path, strerror(errno));
	return -1;
}

void fs_trim(char **s)
{
	char *p = *s, *end = p + strlen(p);

	while (*p == ' ' || *p == '\t')
		p++;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		*--end = '\0';
	*s = p;
}

bool fs_parse_seconds(const char *s, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v <= 0 || v > max)
		return false;
	*out = v;
	return true;
}

/* ------------------------------------------------------------------ */
/* Certificates                                                        */

EVP_PKEY *fs_mint_key(void)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");

	if (!key)
		fs_log_ssl("generating a P-256 key");
	return key;
}

X509_NAME *fs_cn_name(const char *cn)
{
	X509_NAME *n = X509_NAME_new();

	if (n && !X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0)) {
		X509_NAME_free(n);
		n = NULL;
	}
	return n;
}

char *fs_name_entry(const X509_NAME *name, int nid)
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

int fs_add_ext(X509 *issuer, X509 *subject, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&ctx, issuer, subject, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext) {
		fs_log_ssl(OBJ_nid2sn(nid));
		return -1;
	}
	ok = X509_add_ext(subject, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

static int set_random_serial(X509 *x)
{
	unsigned char b[16];
	BIGNUM *bn;
	int ok;

	if (RAND_bytes(b, sizeof b) != 1)
		return -1;
	/* Positive, and always 16 bytes long. */
	b[0] = (unsigned char)((b[0] & 0x7f) | 0x01);
	bn = BN_bin2bn(b, sizeof b, NULL);
	ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
	BN_free(bn);
	return ok ? 0 : -1;
}

X509 *fs_new_cert(const X509_NAME *issuer, const X509_NAME *subject, EVP_PKEY *pub, time_t not_before,
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

int fs_sign_cert(X509 *x, EVP_PKEY *key)
{
	if (X509_sign(x, key, EVP_sha256()) <= 0) {
		fs_log_ssl("signing a certificate");
		return -1;
	}
	return 0;
}

X509 *fs_mint_cert(const X509_NAME *subject, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *issuer_key, time_t not_before,
		   time_t not_after, const struct fs_ext *exts)
{
	X509 *x;

	x = fs_new_cert(issuer ? X509_get_subject_name(issuer) : subject, subject, pub, not_before, not_after);
	if (!x)
		return NULL;
	/* Self-signed: the key identifiers come from the certificate itself. */
	if (!issuer)
		issuer = x;
	for (; exts && exts->nid; exts++)
		if (fs_add_ext(issuer, x, exts->nid, exts->value) != 0)
			goto fail;
	if (fs_sign_cert(x, issuer_key) != 0)
		goto fail;
	return x;
fail:
	X509_free(x);
	return NULL;
}

char *fs_bio_take(BIO *b, size_t *len_out)
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

char *fs_cert_pem(X509 *x, size_t *len_out)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *out = NULL;

	if (b && PEM_write_bio_X509(b, x))
		out = fs_bio_take(b, len_out);
	BIO_free(b);
	return out;
}

int fs_write_cert(const char *path, X509 *x)
{
	size_t len;
	char *pem = fs_cert_pem(x, &len);
	int r = -1;

	if (pem)
		r = fs_write_file_atomic(path, pem, len, 0644);
	free(pem);
	return r;
}

int fs_write_key(const char *path, EVP_PKEY *key)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *pem = NULL;
	size_t len = 0;
	int r = -1;

	if (!b || !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL))
		goto out;
	pem = fs_bio_take(b, &len);
	if (pem)
		r = fs_write_file_atomic(path, pem, len, 0600);
	OPENSSL_cleanse(pem, pem ? len : 0);
out:
	free(pem);
	BIO_free(b);
	return r;
}

int fs_mint_server_cert(const char *dir, X509 *ca, EVP_PKEY *ca_key, time_t not_before, time_t not_after,
			const struct fs_ext *exts, X509 **cert_out, EVP_PKEY **key_out)
{
	char cp[PATH_MAX], kp[PATH_MAX];
	EVP_PKEY *key = fs_mint_key();
	X509_NAME *name = fs_cn_name("localhost");
	X509 *x = NULL;
	int r = -1;

	if (!key || !name)
		goto out;
	x = fs_mint_cert(name, key, ca, ca_key, not_before, not_after, exts);
	if (!x)
		goto out;
	if (dir && (!fs_pathf(cp, sizeof cp, "%s/server.pem", dir) || !fs_pathf(kp, sizeof kp, "%s/server.key", dir) ||
		    fs_write_key(kp, key) != 0 || fs_write_cert(cp, x) != 0))
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
		fs_log_ssl("loading a CA");
		fs_log("%s and %s are not a matching certificate and key", cert_path, key_path);
		X509_free(x);
		EVP_PKEY_free(k);
		return -1;
	}
	*cert_out = x;
	*key_out = k;
	return 0;
}

int fs_mint_ca(const char *cn, long lifetime, const struct fs_ext *exts, X509 **cert_out, EVP_PKEY **key_out)
{
	time_t now = time(NULL);
	EVP_PKEY *key = fs_mint_key();
	X509_NAME *name = fs_cn_name(cn);
	X509 *x = NULL;
	int r = -1;

	if (!key || !name)
		goto out;
	x = fs_mint_cert(name, key, NULL, key, now - FS_DAY, now + lifetime, exts);
	if (!x)
		goto out;
	*cert_out = x;
	*key_out = key;
	key = NULL;
	r = 0;
out:
	EVP_PKEY_free(key);
	X509_NAME_free(name);
	return r;
}

int fs_load_or_make_ca(const char *dir, const char *base, const char *cn, long lifetime, const struct fs_ext *exts,
		       X509 **cert_out, EVP_PKEY **key_out)
{
	char cp[PATH_MAX], kp[PATH_MAX];
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	bool have_c, have_k;
	int r = -1;

	if (!fs_pathf(cp, sizeof cp, "%s/%s.pem", dir, base) || !fs_pathf(kp, sizeof kp, "%s/%s.key", dir, base))
		return -1;
	have_c = fs_file_exists(cp);
	have_k = fs_file_exists(kp);
	if (have_c && have_k)
		return load_pair(cp, kp, cert_out, key_out);
	if (have_c || have_k) {
		fs_log("found only one of %s and %s; remove it or supply the other", cp, kp);
		return -1;
	}
	if (fs_mint_ca(cn, lifetime, exts, &x, &key) != 0)
		return -1;
	/* The key first: a certificate without its key would block the
	 * next start. */
	if (fs_write_key(kp, key) != 0 || fs_write_cert(cp, x) != 0)
		goto out;
	fs_log("created %s", cp);
	*cert_out = x;
	*key_out = key;
	x = NULL;
	key = NULL;
	r = 0;
out:
	X509_free(x);
	EVP_PKEY_free(key);
	return r;
}

/* ------------------------------------------------------------------ */
/* TLS and the listener                                                */

static int verify_want(int preverify_ok, X509_STORE_CTX *ctx)
{
	(void)preverify_ok;
	(void)ctx;
	/* Let every client certificate through to the HTTP layer, which
	 * answers for itself; SSL_get_verify_result keeps the verdict. */
	return 1;
}

SSL_CTX *fs_tls_server_minted(const char *dir, X509 *ca, EVP_PKEY *ca_key, long lifetime,
			      const struct fs_ext *exts, X509 *client_ca, enum fs_client_auth auth)
{
	time_t now = time(NULL);
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	SSL_CTX *ctx = NULL;

	if (fs_mint_server_cert(dir, ca, ca_key, now - FS_DAY, now + lifetime, exts, &cert, &key) == 0)
		ctx = fs_tls_server_ctx(cert, key, client_ca, auth);
	X509_free(cert);
	EVP_PKEY_free(key);
	return ctx;
}

SSL_CTX *fs_tls_server_ctx(X509 *cert, EVP_PKEY *key, X509 *client_ca, enum fs_client_auth auth)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
		goto fail;
	if (auth != FS_CLIENT_CERT_NONE) {
		if (!client_ca || X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), client_ca) != 1 ||
		    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)progname,
						   (unsigned)strnlen(progname, SSL_MAX_SID_CTX_LENGTH)) != 1 ||
		    SSL_CTX_add_client_CA(ctx, client_ca) != 1)
			goto fail;
		/* No resumption: every connection shows its certificate. */
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		/* SSL_VERIFY_PEER without FAIL_IF_NO_PEER_CERT: like Jetty's
		 * client-auth "want", requests without a certificate go on. */
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, auth == FS_CLIENT_CERT_WANT ? verify_want : NULL);
	}
	if (SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1)
		goto fail;
	return ctx;
fail:
	fs_log_ssl("TLS setup");
	SSL_CTX_free(ctx);
	return NULL;
}

bool fs_listen_addr_ok(const char *addr)
{
	return strcmp(addr, "127.0.0.1") == 0 || strcmp(addr, "::1") == 0;
}

int fs_listen_announced(const char *addr, const char *port_file, int *port_out)
{
	int fd = fs_listen(addr, port_out);

	if (fd >= 0 && port_file != NULL && fs_write_port_file(port_file, *port_out) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

int fs_listen(const char *addr, int *port_out)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd = -1, one = 1;
	bool v6 = strcmp(addr, "::1") == 0;

	if (!fs_listen_addr_ok(addr)) {
		fs_log("refusing to listen on %s: only 127.0.0.1 or ::1", addr);
		return -1;
	}
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
	fs_log("cannot listen on %s: %s", addr, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

int fs_write_port_file(const char *path, int port)
{
	char text[16];

	snprintf(text, sizeof text, "%d\n", port);
	return fs_write_file_atomic(path, text, strlen(text), 0644);
}

/* ------------------------------------------------------------------ */
/* Signals                                                             */

static volatile sig_atomic_t got_signal;
/* Self-pipe: the signal handler wakes the accept loop through it. */
static int signal_pipe[2] = { -1, -1 };
static atomic_bool stopping;

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

int fs_signals_init(void)
{
	struct sigaction sa;

	signal(SIGPIPE, SIG_IGN);
	if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
		fs_log("pipe: %s", strerror(errno));
		return -1;
	}
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	return 0;
}

void fs_block_stop_signals(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

bool fs_stopping(void)
{
	return got_signal || atomic_load(&stopping);
}

/* ------------------------------------------------------------------ */
/* HTTP                                                                */

const char *fs_header(const struct fs_request *rq, const char *name)
{
	const char *v = NULL;
	size_t i;

	for (i = 0; i < rq->nheaders; i++)
		if (strcasecmp(rq->headers[i].name, name) == 0)
			v = rq->headers[i].value;
	return v;
}

size_t fs_header_count(const struct fs_request *rq, const char *name)
{
	size_t i, n = 0;

	for (i = 0; i < rq->nheaders; i++)
		if (strcasecmp(rq->headers[i].name, name) == 0)
			n++;
	return n;
}

const char *fs_reason_phrase(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 411: return "Length Required";
	case 413: return "Payload Too Large";
	case 422: return "Unprocessable Entity";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	default: return "Unknown";
	}
}

int fs_write(struct fs_conn *c, const void *data, size_t len)
{
	size_t done;

	while (len > 0) {
		if (SSL_write_ex(c->ssl, data, len, &done) != 1) {
			ERR_clear_error();
			return -1;
		}
		data = (const char *)data + done;
		len -= done;
	}
	return 0;
}

int fs_send_head(struct fs_conn *c, int status, const char *reason, const char *header_lines, long content_length)
{
	char head[1024], length[48] = "";
	int n;

	c->responded = true;
	if (content_length >= 0)
		snprintf(length, sizeof length, "Content-Length: %ld\r\n", content_length);
	n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\n%s%sConnection: close\r\n\r\n", status,
		     reason ? reason : fs_reason_phrase(status), header_lines ? header_lines : "", length);
	if (n < 0 || (size_t)n >= sizeof head) {
		fs_log("response header too long");
		return -1;
	}
	return fs_write(c, head, (size_t)n);
}

void fs_wait_until_client_leaves(struct fs_conn *c)
{
	char junk[4096];

	/* Raw reads: what the client still sends does not matter any more. */
	while (!fs_stopping()) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN | POLLRDHUP };
		int n = poll(&p, 1, 200);

		if (n < 0 && errno != EINTR)
			return;
		if (n <= 0)
			continue;
		if (p.revents & (POLLRDHUP | POLLHUP | POLLERR))
			return;
		if (recv(c->fd, junk, sizeof junk, 0) <= 0)
			return;
	}
}

/* Reads and parses one request. 0: read (rq->error says whether whole);
 * -1: the client went away. */
static int read_request(struct fs_conn *c, struct fs_request *rq, size_t max_body)
{
	char *buf = malloc(FS_MAX_HEADER_BYTES + 1), *hdr_end = NULL, *line, *next, *sp, *p;
	size_t have = 0, got, body_have, nlines = 1;
	unsigned long long content_length = 0;
	bool has_length = false, chunked = false, expect_continue = false;
	const char *te, *expect;
	struct fs_header *h;

	if (!buf)
		return -1;
	rq->head = buf;
	while (!hdr_end) {
		if (have == FS_MAX_HEADER_BYTES) {
			rq->error = 431;
			return 0;
		}
		if (SSL_read_ex(c->ssl, buf + have, FS_MAX_HEADER_BYTES - have, &got) != 1) {
			ERR_clear_error();
			return -1;
		}
		have += got;
		buf[have] = '\0';
		hdr_end = memmem(buf, have, "\r\n\r\n", 4);
	}
	*hdr_end = '\0';
	for (p = buf; (p = strstr(p, "\r\n")) != NULL; p += 2)
		nlines++;
	rq->headers = calloc(nlines, sizeof *rq->headers);
	if (!rq->headers)
		return -1;
	line = buf;
	next = strstr(line, "\r\n");
	if (next)
		*next = '\0';
	/* Request line: METHOD SP TARGET SP HTTP/1.x */
	sp = strchr(line, ' ');
	if (!sp || (size_t)(sp - line) >= sizeof rq->method)
		goto bad;
	memcpy(rq->method, line, (size_t)(sp - line));
	line = sp + 1;
	sp = strchr(line, ' ');
	if (!sp || (size_t)(sp - line) >= sizeof rq->target || line[0] != '/' || strncmp(sp + 1, "HTTP/1.", 7) != 0)
		goto bad;
	memcpy(rq->target, line, (size_t)(sp - line));
	memcpy(rq->path, rq->target, sizeof rq->path);
	rq->path[strcspn(rq->path, "?#")] = '\0';
	p = strchr(rq->target, '?');
	rq->query = p ? p + 1 : NULL;
	for (line = next ? next + 2 : NULL; line && *line; line = next ? next + 2 : NULL) {
		char *colon, *value;

		next = strstr(line, "\r\n");
		if (next)
			*next = '\0';
		colon = strchr(line, ':');
		if (!colon)
			goto bad;
		*colon = '\0';
		value = colon + 1;
		fs_trim(&value);
		h = &rq->headers[rq->nheaders++];
		h->name = line;
		h->value = value;
		if (strcasecmp(line, "Content-Length") == 0) {
			char *e;

			errno = 0;
			content_length = strtoull(value, &e, 10);
			if (has_length || errno || e == value || *e || value[0] == '-')
				goto bad;
			has_length = true;
		}
	}
	te = fs_header(rq, "Transfer-Encoding");
	chunked = te && strcasecmp(te, "identity") != 0;
	expect = fs_header(rq, "Expect");
	expect_continue = expect && strcasecmp(expect, "100-continue") == 0;
	if (chunked) {
		/* Only Content-Length bodies; the clients and curl send those. */
		rq->error = 411;
		return 0;
	}
	if (content_length > max_body) {
		rq->error = 413;
		return 0;
	}
	if (expect_continue && content_length > 0) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

		if (fs_write(c, cont, sizeof cont - 1) != 0)
			return -1;
	}
	rq->body = malloc((size_t)content_length + 1);
	if (!rq->body)
		return -1;
	body_have = have - (size_t)(hdr_end + 4 - buf);
	if (body_have > content_length)
		body_have = (size_t)content_length;
	memcpy(rq->body, hdr_end + 4, body_have);
	while (body_have < content_length) {
		if (SSL_read_ex(c->ssl, rq->body + body_have, (size_t)content_length - body_have, &got) != 1) {
			ERR_clear_error();
			return -1;
		}
		body_have += got;
	}
	rq->body[body_have] = '\0';
	rq->body_len = body_have;
	return 0;
bad:
	rq->error = 400;
	return 0;
}

/* Requests may carry tokens and keys: wiped before they are freed. */
static void free_request(struct fs_request *rq)
{
	if (rq->head)
		OPENSSL_cleanse(rq->head, FS_MAX_HEADER_BYTES + 1);
	free(rq->head);
	if (rq->body)
		OPENSSL_cleanse(rq->body, rq->body_len);
	free(rq->body);
	free(rq->headers);
}

/* Closing with unread input makes the kernel send a reset, which can
 * destroy the answer before the client reads it (413 with a body still on
 * its way): read and drop for a moment first. */
static void linger_close(struct fs_conn *c)
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

/* The connection table: the accept loop reaps finished threads, and a
 * stop shuts down the sockets of the running ones to wake them. */
struct slot {
	bool used;
	bool done;
	int fd;
	pthread_t tid;
};

static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot slots[MAX_CONNS];
static const struct fs_server *server;

static void serve_conn(struct fs_conn *c)
{
	struct fs_request rq;

	memset(&rq, 0, sizeof rq);
	c->ssl = SSL_new(server->ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
		fs_log_ssl("SSL_new");
		goto out;
	}
	if (SSL_accept(c->ssl) != 1) {
		fs_log_ssl("TLS handshake failed");
		goto out;
	}
	c->peer = SSL_get1_peer_certificate(c->ssl);
	c->verify_result = SSL_get_verify_result(c->ssl);
	if (!c->peer)
		snprintf(c->verdict, sizeof c->verdict, "no client cert");
	else if (c->verify_result == X509_V_OK)
		snprintf(c->verdict, sizeof c->verdict, "client cert verifies");
	else
		snprintf(c->verdict, sizeof c->verdict, "client cert does not verify: %s",
			 X509_verify_cert_error_string(c->verify_result));
	if (read_request(c, &rq, server->max_body_bytes) != 0)
		goto out;
	server->handle(c, &rq);
	if (c->responded) {
		if (server->linger)
			linger_close(c);
		else if (SSL_shutdown(c->ssl) < 0)
			ERR_clear_error();
	}
out:
	free_request(&rq);
	SSL_free(c->ssl);
	c->ssl = NULL;
	X509_free(c->peer);
	c->peer = NULL;
	ERR_clear_error();
}

static void *conn_main(void *arg)
{
	struct fs_conn *c = arg;

	fs_block_stop_signals();
	serve_conn(c);
	pthread_mutex_lock(&slot_lock);
	slots[c->slot].fd = -1;
	pthread_mutex_unlock(&slot_lock);
	close(c->fd);
	pthread_mutex_lock(&slot_lock);
	slots[c->slot].done = true;
	pthread_mutex_unlock(&slot_lock);
	free(c);
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
	struct fs_conn *c;
	int i;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	c = calloc(1, sizeof *c);
	if (!c)
		goto drop;
	c->fd = fd;
	if (server->serial) {
		serve_conn(c);
		goto drop;
	}
	reap_finished(false);
	pthread_mutex_lock(&slot_lock);
	for (i = 0; i < MAX_CONNS && slots[i].used; i++)
		;
	if (i == MAX_CONNS) {
		pthread_mutex_unlock(&slot_lock);
		fs_log("more than %d connections at once; dropping one", MAX_CONNS);
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

int fs_serve(int lfd, const struct fs_server *srv)
{
	int i, r = -1;

	server = srv;
	while (!got_signal) {
		struct pollfd p[2] = { { .fd = lfd, .events = POLLIN }, { .fd = signal_pipe[0], .events = POLLIN } };
		int n;

		if (srv->tick)
			srv->tick();
		n = poll(p, 2, srv->tick_ms > 0 ? srv->tick_ms : 1000);
		if (n < 0 && errno != EINTR) {
			fs_log("poll: %s", strerror(errno));
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
	r = 0;
out:
	atomic_store(&stopping, true);
	close(lfd);
	/* Wake every connection blocked in a read or write. */
	pthread_mutex_lock(&slot_lock);
	for (i = 0; i < MAX_CONNS; i++)
		if (slots[i].used && !slots[i].done && slots[i].fd >= 0)
			shutdown(slots[i].fd, SHUT_RDWR);
	pthread_mutex_unlock(&slot_lock);
	reap_finished(true);
	return r;
}
