/*
 * The HTTPS helper (clients/renew/https/https.h) end to end: a real keysvcd on a
 * private SoftHSM token holds the client keys; the keysvc provider signs
 * the TLS handshakes with them; a throwaway CA made here issues the
 * certificates; a small OpenSSL server on 127.0.0.1 in a thread of this
 * program plays the CA's HTTPS endpoint, with one behaviour per test.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "clients/renew/https/https.h"
#include "clients/provider/provider.h"
#include "keysvc/keysvc.h"
#include "tests/common/daemon.h"

#define OK_BODY "hello from the test server"
#define FINAL_BODY "final destination"
/* Keys the test makes in the token; "nosign-*" may be read but not used to sign. */
#define KEY_EC "client-ec"
#define KEY_RSA "client-rsa"
/* The longest name keysvcd takes (64 bytes): its refusal to sign is long too. */
#define KEY_NOSIGN "nosign-ec-a-key-name-as-long-as-keysvcd-allows-0123456789abcdefg"
#define SERVER_IO_TIMEOUT_S 20
#define SERVER_WAIT_MS 30000

/* ---- the test PKI ---------------------------------------------------------------- */

struct pki {
	char dir[PATH_MAX];
	EVP_PKEY *ca_key, *ca2_key, *srv_key;
	X509 *ca, *ca2;
	X509 *srv;           /* CA1, IP 127.0.0.1 and DNS localhost */
	X509 *srv_ca2;       /* CA2, same names */
	X509 *srv_wrong;     /* CA1, DNS wrong.example only */
	char ca_file[PATH_MAX];        /* CA1: what clients pin */
	char ca2_file[PATH_MAX];
	char ec_cert[PATH_MAX];        /* client-ec by CA1 (leaf + CA) */
	char rsa_cert[PATH_MAX];       /* client-rsa by CA1 */
	char ec_cert_ca2[PATH_MAX];    /* client-ec by CA2: the server does not trust it */
	char nosign_cert[PATH_MAX];    /* nosign-ec by CA1 */
	char boot_key[PATH_MAX];       /* a PEM key file (bootstrap) */
	char boot_cert[PATH_MAX];
	char stderr_file[PATH_MAX];
};

struct fixture {
	struct ks_td d;
	struct pki p;
};

static int join(char *out, const char *dir, const char *name)
{
	if (snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX) {
		fprintf(stderr, "path too long: %s/%s\n", dir, name);
		return -1;
	}
	return 0;
}

static void print_ossl(const char *what)
{
	fprintf(stderr, "%s failed:\n", what);
	ERR_print_errors_fp(stderr);
}

/* Keys of the test CA and server come from the default provider explicitly, never keysvc. */
static EVP_PKEY *ec_key(void)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, "provider=default", "EC", "P-256");

	if (k == NULL)
		print_ossl("EC key generation");
	return k;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
	if ((ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value)) == NULL) {
		print_ossl(value);
		return 0;
	}
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok;
}

/*
 * A certificate for @pub named CN=@cn, issued by @issuer/@issuer_key, or
 * self-signed by @issuer_key when @issuer is NULL.
 */
static X509 *make_cert(EVP_PKEY *pub, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
		       int is_ca, const char *eku, const char *san)
{
	X509 *x = X509_new();
	X509_NAME *name;
	BIGNUM *bn = BN_new();
	int ok = 0;

	if (x == NULL || bn == NULL)
		goto out;
	if (!X509_set_version(x, X509_VERSION_3) ||
	    !BN_rand(bn, 63, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
	    X509_gmtime_adj(X509_getm_notBefore(x), -300) == NULL ||
	    X509_gmtime_adj(X509_getm_notAfter(x), 86400) == NULL ||
	    !X509_set_pubkey(x, pub))
		goto out;
	name = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
					(const unsigned char *)"keysvc https test", -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
					(const unsigned char *)cn, -1, -1, 0) ||
	    !X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name))
		goto out;
	if (!add_ext(x, issuer ? issuer : x, NID_basic_constraints,
		     is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE") ||
	    !add_ext(x, issuer ? issuer : x, NID_key_usage,
		     is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature,keyEncipherment") ||
	    !add_ext(x, issuer ? issuer : x, NID_subject_key_identifier, "hash") ||
	    (issuer != NULL && !add_ext(x, issuer, NID_authority_key_identifier, "keyid:always")) ||
	    (eku != NULL && !add_ext(x, issuer ? issuer : x, NID_ext_key_usage, eku)) ||
	    (san != NULL && !add_ext(x, issuer ? issuer : x, NID_subject_alt_name, san)))
		goto out;
	if (X509_sign(x, issuer_key, EVP_sha256()) <= 0)
		goto out;
	ok = 1;
out:
	BN_free(bn);
	if (!ok) {
		print_ossl(cn);
		X509_free(x);
		x = NULL;
	}
	return x;
}

/* Write certificates (leaf first) to @path. */
static int write_certs(const char *path, X509 *a, X509 *b)
{
	FILE *f = fopen(path, "w");
	int ok;

	if (f == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	ok = PEM_write_X509(f, a) && (b == NULL || PEM_write_X509(f, b));
	if (fclose(f) != 0 || !ok) {
		fprintf(stderr, "cannot write %s\n", path);
		return -1;
	}
	return 0;
}

/* keysvcd makes the key and a CSR; CA1 or CA2 issues a client certificate from the CSR. */
static X509 *token_client_cert(keysvc *ks, const char *name, const char *type,
			       X509 *issuer, EVP_PKEY *issuer_key, int generate)
{
	struct keysvc_csr_params params;
	const char *eku[] = { "clientAuth" };
	char subject[128], *csr_pem = NULL;
	X509_REQ *req = NULL;
	X509 *cert = NULL;
	BIO *bio = NULL;
	int r;

	if (generate && (r = keysvc_key_generate(ks, name, type, NULL)) != KEYSVC_OK) {
		fprintf(stderr, "key_generate %s: %s: %s\n", name, keysvc_strerror(r),
			keysvc_error_message(ks));
		return NULL;
	}
	memset(&params, 0, sizeof(params));
	snprintf(subject, sizeof(subject), "CN=%s,O=keysvc https test", name);
	params.subject = subject;
	params.ext_key_usage = eku;
	params.n_ext_key_usage = 1;
	if ((r = keysvc_csr_create(ks, name, &params, &csr_pem)) != KEYSVC_OK) {
		fprintf(stderr, "csr_create %s: %s: %s\n", name, keysvc_strerror(r),
			keysvc_error_message(ks));
		return NULL;
	}
	if ((bio = BIO_new_mem_buf(csr_pem, -1)) == NULL ||
	    (req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL)) == NULL ||
	    X509_REQ_verify(req, X509_REQ_get0_pubkey(req)) != 1) {
		print_ossl("reading the CSR");
		goto out;
	}
	cert = make_cert(X509_REQ_get0_pubkey(req), name, issuer, issuer_key, 0, "clientAuth", NULL);
out:
	X509_REQ_free(req);
	BIO_free(bio);
	free(csr_pem);
	return cert;
}

static int make_pki(struct pki *p, const char *socket_path)
{
	const char *tmp = getenv("TMPDIR");
	X509 *ec = NULL, *rsa = NULL, *ec2 = NULL, *nosign = NULL, *boot = NULL;
	EVP_PKEY *boot_key = NULL;
	keysvc *ks = NULL;
	FILE *f;
	int r = -1;

	if (snprintf(p->dir, sizeof(p->dir), "%s/ks-https-XXXXXX",
		     tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp") >= (int)sizeof(p->dir) ||
	    mkdtemp(p->dir) == NULL) {
		fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
		p->dir[0] = '\0';
		return -1;
	}
	if (join(p->ca_file, p->dir, "ca.pem") || join(p->ca2_file, p->dir, "ca2.pem") ||
	    join(p->ec_cert, p->dir, "client-ec.pem") || join(p->rsa_cert, p->dir, "client-rsa.pem") ||
	    join(p->ec_cert_ca2, p->dir, "client-ec-ca2.pem") ||
	    join(p->nosign_cert, p->dir, "nosign-ec.pem") ||
	    join(p->boot_key, p->dir, "boot-key.pem") || join(p->boot_cert, p->dir, "boot.pem") ||
	    join(p->stderr_file, p->dir, "stderr.txt"))
		return -1;

	if ((p->ca_key = ec_key()) == NULL || (p->ca2_key = ec_key()) == NULL ||
	    (p->srv_key = ec_key()) == NULL || (boot_key = ec_key()) == NULL)
		goto out;
	if ((p->ca = make_cert(p->ca_key, "keysvc test CA", NULL, p->ca_key, 1, NULL, NULL)) == NULL ||
	    (p->ca2 = make_cert(p->ca2_key, "another CA", NULL, p->ca2_key, 1, NULL, NULL)) == NULL ||
	    (p->srv = make_cert(p->srv_key, "127.0.0.1", p->ca, p->ca_key, 0, "serverAuth",
				"IP:127.0.0.1,DNS:localhost")) == NULL ||
	    (p->srv_ca2 = make_cert(p->srv_key, "127.0.0.1", p->ca2, p->ca2_key, 0, "serverAuth",
				    "IP:127.0.0.1,DNS:localhost")) == NULL ||
	    (p->srv_wrong = make_cert(p->srv_key, "wrong.example", p->ca, p->ca_key, 0, "serverAuth",
				      "DNS:wrong.example")) == NULL ||
	    (boot = make_cert(boot_key, "bootstrap", p->ca, p->ca_key, 0, "clientAuth", NULL)) == NULL)
		goto out;

	if (keysvc_connect(socket_path, &ks) != KEYSVC_OK) {
		fprintf(stderr, "cannot connect to keysvcd at %s\n", socket_path);
		goto out;
	}
	/* RSA generation in SoftHSM may take a while on a slow machine. */
	keysvc_set_timeout(ks, 120000);
	if ((ec = token_client_cert(ks, KEY_EC, "ec-p256", p->ca, p->ca_key, 1)) == NULL ||
	    (rsa = token_client_cert(ks, KEY_RSA, "rsa-2048", p->ca, p->ca_key, 1)) == NULL ||
	    (ec2 = token_client_cert(ks, KEY_EC, "ec-p256", p->ca2, p->ca2_key, 0)) == NULL ||
	    (nosign = token_client_cert(ks, KEY_NOSIGN, "ec-p256", p->ca, p->ca_key, 1)) == NULL)
		goto out;

	if (write_certs(p->ca_file, p->ca, NULL) || write_certs(p->ca2_file, p->ca2, NULL) ||
	    write_certs(p->ec_cert, ec, p->ca) || write_certs(p->rsa_cert, rsa, NULL) ||
	    write_certs(p->ec_cert_ca2, ec2, p->ca2) || write_certs(p->nosign_cert, nosign, NULL) ||
	    write_certs(p->boot_cert, boot, NULL))
		goto out;
	if ((f = fopen(p->boot_key, "w")) == NULL)
		goto out;
	fchmod(fileno(f), 0600);
	if (!PEM_write_PrivateKey(f, boot_key, NULL, NULL, 0, NULL, NULL)) {
		fclose(f);
		goto out;
	}
	if (fclose(f) != 0)
		goto out;
	r = 0;
out:
	keysvc_close(ks);
	X509_free(ec);
	X509_free(rsa);
	X509_free(ec2);
	X509_free(nosign);
	X509_free(boot);
	EVP_PKEY_free(boot_key);
	return r;
}

static void free_pki(struct pki *p)
{
	const char *files[] = {
		p->ca_file, p->ca2_file, p->ec_cert, p->rsa_cert, p->ec_cert_ca2, p->nosign_cert,
		p->boot_key, p->boot_cert, p->stderr_file,
	};

	X509_free(p->ca);
	X509_free(p->ca2);
	X509_free(p->srv);
	X509_free(p->srv_ca2);
	X509_free(p->srv_wrong);
	EVP_PKEY_free(p->ca_key);
	EVP_PKEY_free(p->ca2_key);
	EVP_PKEY_free(p->srv_key);
	if (p->dir[0] == '\0')
		return;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		if (files[i][0] != '\0')
			unlink(files[i]);
	}
	if (rmdir(p->dir) != 0)
		fprintf(stderr, "rmdir %s: %s\n", p->dir, strerror(errno));
}

/* ---- the test server ------------------------------------------------------------- */

enum srv_mode {
	SRV_OK,             /* 200 with OK_BODY */
	SRV_BIG_LENGTH,     /* 200 announcing and sending srv.big bytes */
	SRV_BIG_CLOSE,      /* 200 with srv.big bytes delimited by the close */
	SRV_REDIRECT,       /* 302 to /final on the same server; /final is 200 FINAL_BODY */
	SRV_REDIRECT_HTTP,  /* 302 to http://.../final */
	SRV_SILENT_TCP,     /* accepts, never speaks TLS */
	SRV_SILENT_TLS,     /* handshakes and reads the request, never answers */
};

struct srv {
	enum srv_mode mode;
	size_t big;
	SSL_CTX *ctx;
	int lfd;
	int port;
	int stop[2];
	pthread_t thread;
	int started;
	/* What the server saw; written by its thread, read after srv_stop(). */
	int conns;
	int handshakes;
	int handshake_failures;
	int version;                /* of the last handshake */
	char peer_cn[128];          /* of the last client certificate */
	char request[4096];         /* the last request's head */
	char body[512];             /* and body */
	char failure[512];          /* why the last handshake failed */
};

static void srv_reason(struct srv *s)
{
	unsigned long e = ERR_get_error();

	if (e != 0)
		ERR_error_string_n(e, s->failure, sizeof(s->failure));
	else
		snprintf(s->failure, sizeof(s->failure), "handshake failed without an OpenSSL error");
	ERR_clear_error();
}

/*
 * Read and drop whatever the client sends until it closes (or the test
 * stops the server). Closing with unread data would reset the connection
 * and race away the alert or answer the client has yet to read.
 */
static void srv_wait_client(struct srv *s, int fd)
{
	struct pollfd p[2] = { { fd, POLLIN, 0 }, { s->stop[0], POLLIN, 0 } };
	char scratch[4096];
	ssize_t n;
	int r;

	for (;;) {
		p[0].revents = p[1].revents = 0;
		r = poll(p, 2, SERVER_WAIT_MS);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || p[1].revents)
			return;
		n = recv(fd, scratch, sizeof(scratch), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
	}
}

/* Our side is done: say so, and let the client read all we sent before the socket goes. */
static void srv_linger(struct srv *s, int fd)
{
	shutdown(fd, SHUT_WR);
	srv_wait_client(s, fd);
}

static int ssl_write_all(SSL *ssl, const void *buf, size_t len)
{
	size_t done = 0, n;

	while (done < len) {
		if (SSL_write_ex(ssl, (const char *)buf + done, len - done, &n) != 1)
			return -1;
		done += n;
	}
	return 0;
}

/* The request head (and a Content-Length body), kept for the tests to look at. */
static int srv_read_request(struct srv *s, SSL *ssl)
{
	char buf[8192];
	size_t len = 0, n, want = 0;
	const char *end = NULL, *cl;

	while (end == NULL) {
		if (len == sizeof(buf) - 1 || SSL_read_ex(ssl, buf + len, sizeof(buf) - 1 - len, &n) != 1)
			return -1;
		len += n;
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	snprintf(s->request, sizeof(s->request), "%.*s", (int)(end - buf), buf);
	if ((cl = strcasestr(s->request, "\r\nContent-Length:")) != NULL)
		want = strtoul(cl + strlen("\r\nContent-Length:"), NULL, 10);
	end += 4;
	while ((size_t)(buf + len - end) < want && len < sizeof(buf) - 1) {
		if (SSL_read_ex(ssl, buf + len, sizeof(buf) - 1 - len, &n) != 1)
			return -1;
		len += n;
		buf[len] = '\0';
	}
	snprintf(s->body, sizeof(s->body), "%.*s", (int)(buf + len - end), end);
	return 0;
}

static void srv_respond(struct srv *s, SSL *ssl)
{
	char head[512];
	char *big = NULL;
	int is_final = strncmp(s->request, "GET /final ", 11) == 0;

	switch (s->mode) {
	case SRV_REDIRECT:
	case SRV_REDIRECT_HTTP:
		if (!is_final) {
			snprintf(head, sizeof(head), "HTTP/1.1 302 Found\r\n"
				 "Location: %s://127.0.0.1:%d/final\r\nContent-Type: text/plain\r\n"
				 "Content-Length: 5\r\nConnection: close\r\n\r\nmoved",
				 s->mode == SRV_REDIRECT ? "https" : "http", s->port);
			ssl_write_all(ssl, head, strlen(head));
			return;
		}
		snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
			 strlen(FINAL_BODY), FINAL_BODY);
		ssl_write_all(ssl, head, strlen(head));
		return;
	case SRV_BIG_LENGTH:
	case SRV_BIG_CLOSE:
		if ((big = malloc(s->big)) == NULL)
			return;
		memset(big, 'x', s->big);
		if (s->mode == SRV_BIG_LENGTH)
			snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
				 "Content-Length: %zu\r\nConnection: close\r\n\r\n", s->big);
		else
			snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
				 "Connection: close\r\n\r\n");
		/* The client may hang up early (that is the point); a failed write is fine. */
		if (ssl_write_all(ssl, head, strlen(head)) == 0)
			ssl_write_all(ssl, big, s->big);
		free(big);
		return;
	default:
		snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
			 strlen(OK_BODY), OK_BODY);
		ssl_write_all(ssl, head, strlen(head));
		return;
	}
}

static void srv_handle(struct srv *s, int fd)
{
	struct timeval tv = { SERVER_IO_TIMEOUT_S, 0 };
	X509 *peer;
	SSL *ssl;

	s->conns++;
	/* A guard only: the tests never rely on it. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (s->mode == SRV_SILENT_TCP) {
		srv_wait_client(s, fd);
		return;
	}
	if ((ssl = SSL_new(s->ctx)) == NULL || !SSL_set_fd(ssl, fd)) {
		srv_reason(s);
		SSL_free(ssl);
		return;
	}
	ERR_clear_error();
	if (SSL_accept(ssl) != 1) {
		s->handshake_failures++;
		srv_reason(s);
		SSL_free(ssl);
		srv_linger(s, fd);
		return;
	}
	s->handshakes++;
	s->version = SSL_version(ssl);
	s->peer_cn[0] = '\0';
	if ((peer = SSL_get0_peer_certificate(ssl)) != NULL)
		X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName,
					  s->peer_cn, sizeof(s->peer_cn));
	if (srv_read_request(s, ssl) != 0) {
		/* TLS 1.3: a client certificate refused after the handshake shows here. */
		s->handshake_failures++;
		srv_reason(s);
		SSL_free(ssl);
		srv_linger(s, fd);
		return;
	}
	if (s->mode == SRV_SILENT_TLS)
		srv_wait_client(s, fd);
	else
		srv_respond(s, ssl);
	SSL_shutdown(ssl);
	SSL_free(ssl);
	ERR_clear_error();
	srv_linger(s, fd);
}

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	struct pollfd p[2];
	int fd;

	for (;;) {
		p[0] = (struct pollfd){ s->lfd, POLLIN, 0 };
		p[1] = (struct pollfd){ s->stop[0], POLLIN, 0 };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		/* Connections already made are served before a stop is obeyed. */
		if (p[0].revents & POLLIN) {
			if ((fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
				srv_handle(s, fd);
				close(fd);
			}
			continue;
		}
		if (p[1].revents)
			break;
	}
	ERR_clear_error();
	OPENSSL_thread_stop();
	return NULL;
}

/*
 * Listen on 127.0.0.1 (a port the kernel picks) with @cert/@key, TLS
 * @min..@max, requiring a client certificate from the test CA.
 */
static void srv_start_big(struct srv *s, const struct pki *p, X509 *cert, int min, int max,
			  enum srv_mode mode, size_t big)
{
	struct sockaddr_in sin;
	socklen_t slen = sizeof(sin);
	int one = 1;

	memset(s, 0, sizeof(*s));
	s->lfd = s->stop[0] = s->stop[1] = -1;
	s->mode = mode;
	s->big = big;
	s->ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(s->ctx);
	assert_int_equal(SSL_CTX_use_certificate(s->ctx, cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(s->ctx, p->srv_key), 1);
	assert_int_equal(SSL_CTX_set_min_proto_version(s->ctx, min), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(s->ctx, max), 1);
	assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(s->ctx), p->ca), 1);
	SSL_CTX_set_verify(s->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_session_cache_mode(s->ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(s->ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(s->ctx, 0);

	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s->lfd >= 0);
	setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(s->lfd, 16), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sin, &slen), 0);
	s->port = ntohs(sin.sin_port);
	assert_int_equal(pipe2(s->stop, O_CLOEXEC), 0);
	assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
	s->started = 1;
}

static void srv_start(struct srv *s, const struct pki *p, X509 *cert, int min, int max,
		      enum srv_mode mode)
{
	srv_start_big(s, p, cert, min, max, mode, 0);
}

static void srv_stop(struct srv *s)
{
	if (s->started) {
		if (write(s->stop[1], "x", 1) != 1)
			fprintf(stderr, "cannot stop the test server: %s\n", strerror(errno));
		pthread_join(s->thread, NULL);
		s->started = 0;
	}
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->stop[0] >= 0)
		close(s->stop[0]);
	if (s->stop[1] >= 0)
		close(s->stop[1]);
	s->lfd = s->stop[0] = s->stop[1] = -1;
	SSL_CTX_free(s->ctx);
	s->ctx = NULL;
}

static void url_of(char *url, size_t len, const struct srv *s, const char *path)
{
	snprintf(url, len, "https://127.0.0.1:%d%s", s->port, path);
}

/* ---- helpers ------------------------------------------------------------------------ */

static struct ks_https_opts opts_with(const struct pki *p, const char *cert, const char *key)
{
	struct ks_https_opts o;

	memset(&o, 0, sizeof(o));
	o.ca_file = p->ca_file;
	o.cert_file = cert;
	o.key_uri = key;
	/* Generous: under valgrind a handshake signed by keysvcd is slow. */
	o.connect_timeout_ms = 60000;
	o.total_timeout_ms = 120000;
	return o;
}

static int get(const struct ks_https_opts *o, const struct srv *s, const char *path,
	       struct ks_https_response *resp)
{
	char url[128];

	url_of(url, sizeof(url), s, path);
	return ks_https_request(o, "GET", url, NULL, NULL, 0, resp);
}

/* Fails unless @r is @want and, for a failure, the error text holds @needle (if not NULL). */
static void expect_result(int r, const struct ks_https_response *resp, int want, const char *needle)
{
	if (r != want) {
		fprintf(stderr, "error text: %s\n", resp->err);
		fail_msg("expected %d (%s), got %d (%s)", want, strerror(-want), r,
			 r < 0 ? strerror(-r) : "success");
	}
	if (want != 0 && resp->err[0] == '\0')
		fail_msg("failure %d without an error text", r);
	if (needle != NULL && strcasestr(resp->err, needle) == NULL)
		fail_msg("error text \"%s\" lacks \"%s\"", resp->err, needle);
	if (want != 0)
		fprintf(stderr, "  (expected failure) %s\n", resp->err);
}

static void expect_ok_body(int r, const struct ks_https_response *resp, const char *body)
{
	expect_result(r, resp, 0, NULL);
	assert_int_equal(resp->status, 200);
	assert_non_null(resp->body);
	assert_int_equal(resp->body_len, strlen(body));
	assert_string_equal(resp->body, body);
	assert_string_equal(resp->err, "");
}

/* stderr into a file around a call, to see the warnings it prints. */
struct capture {
	int saved;
	const char *path;
};

static void capture_begin(struct capture *c, const char *path)
{
	int fd;

	fflush(stderr);
	c->path = path;
	c->saved = dup(STDERR_FILENO);
	assert_true(c->saved >= 0);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	close(fd);
}

static char *capture_end(struct capture *c)
{
	fflush(stderr);
	dup2(c->saved, STDERR_FILENO);
	close(c->saved);
	return ks_td_read_file(c->path, NULL);
}

/* ---- group set-up -------------------------------------------------------------------- */

static int group_setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char policy[1024], err[KS_HTTPS_ERR_MAX];
	unsigned uid = (unsigned)getuid();
	int r;

	if (f == NULL)
		return -1;
	*state = f;
	/* libcurl runs with CURLOPT_NOSIGNAL: a peer that hangs up must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	snprintf(policy, sizeof(policy),
		 "[{\"uid\":%u,\"keys\":[\"client-*\"],\"ops\":[\"key.generate\",\"key.public\","
		 "\"csr.create\",\"sign\",\"key.list\"]},"
		 "{\"uid\":%u,\"keys\":[\"nosign-*\"],\"ops\":[\"key.generate\",\"key.public\","
		 "\"csr.create\"]}]", uid, uid);
	if (ks_td_setup(&f->d, "keysvc-https", policy, 0, 0) != 0) {
		fprintf(stderr, "cannot start keysvcd\n");
		return -1;
	}
	/* The provider reaches keysvcd through libkeysvc's default: $KEYSVC_SOCKET. */
	setenv("KEYSVC_SOCKET", f->d.socket_path, 1);
	if ((r = ks_https_init(getenv("KS_PROVIDER_DIR"), err, sizeof(err))) != 0) {
		fprintf(stderr, "ks_https_init: %d: %s\n", r, err);
		return -1;
	}
	if (make_pki(&f->p, f->d.socket_path) != 0) {
		fprintf(stderr, "cannot make the test PKI\n");
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	struct fixture *f = *state;

	if (f == NULL)
		return 0;
	free_pki(&f->p);
	ks_https_cleanup();
	ks_td_teardown(&f->d);
	free(f);
	return 0;
}

/* ---- 1. accepted ---------------------------------------------------------------------- */

static void accepted(void **state, const char *cert_of, const char *key, int version,
		     const char *cn)
{
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, cert_of, key);
	struct ks_https_response resp;
	struct srv s;
	int r;

	srv_start(&s, &f->p, f->p.srv, version, version, SRV_OK);
	r = get(&o, &s, "/simple/ca/v1/cacerts", &resp);
	srv_stop(&s);
	expect_ok_body(r, &resp, OK_BODY);
	assert_non_null(resp.content_type);
	assert_string_equal(resp.content_type, "text/plain");
	assert_null(resp.redirect_url);
	ks_https_response_free(&resp);
	assert_int_equal(s.handshakes, 1);
	assert_int_equal(s.version, version);
	assert_string_equal(s.peer_cn, cn);
	assert_non_null(strstr(s.request, "GET /simple/ca/v1/cacerts HTTP/1.1\r\n"));
	assert_non_null(strcasestr(s.request, "\r\nUser-Agent: keysvc/"));
}

static void test_ec_tls13(void **state)
{
	accepted(state, ((struct fixture *)*state)->p.ec_cert, "keysvc:" KEY_EC, TLS1_3_VERSION, KEY_EC);
}

static void test_ec_tls12(void **state)
{
	accepted(state, ((struct fixture *)*state)->p.ec_cert, "keysvc:" KEY_EC, TLS1_2_VERSION, KEY_EC);
}

static void test_rsa_tls13(void **state)
{
	accepted(state, ((struct fixture *)*state)->p.rsa_cert, "keysvc:" KEY_RSA, TLS1_3_VERSION, KEY_RSA);
}

static void test_rsa_tls12(void **state)
{
	accepted(state, ((struct fixture *)*state)->p.rsa_cert, "keysvc:" KEY_RSA, TLS1_2_VERSION, KEY_RSA);
}

/* The bootstrap case: a PEM key file instead of a token key. */
static void test_pem_key_file(void **state)
{
	struct fixture *f = *state;

	accepted(state, f->p.boot_cert, f->p.boot_key, TLS1_3_VERSION, "bootstrap");
}

/* A POST carries its body and the caller's headers; the 4xx it gets is a result, not an error. */
static void test_post(void **state)
{
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, f->p.ec_cert, "keysvc:" KEY_EC);
	const char *headers[] = { "Content-Type: application/pkcs10", "X-Test: 42", NULL };
	const char body[] = "-----BEGIN CERTIFICATE REQUEST-----";
	struct ks_https_response resp;
	char url[128];
	struct srv s;
	int r;

	srv_start(&s, &f->p, f->p.srv, TLS1_2_VERSION, TLS1_3_VERSION, SRV_OK);
	url_of(url, sizeof(url), &s, "/enroll");
	r = ks_https_request(&o, "POST", url, headers, body, strlen(body), &resp);
	srv_stop(&s);
	expect_ok_body(r, &resp, OK_BODY);
	ks_https_response_free(&resp);
	assert_non_null(strstr(s.request, "POST /enroll HTTP/1.1\r\n"));
	assert_non_null(strcasestr(s.request, "\r\nContent-Type: application/pkcs10"));
	assert_non_null(strcasestr(s.request, "\r\nX-Test: 42"));
	assert_null(strcasestr(s.request, "\r\nExpect:"));
	assert_string_equal(s.body, body);
}

/* ---- 2. refused: the client side ------------------------------------------------------ */

/* A certificate that is not the key's fails before any connection is made. */
static void test_cert_key_mismatch(void **state)
{
	struct fixture *f = *state;
	struct ks_https_opts o;
	struct ks_https_response resp;
	struct srv s;
	int r;

	srv_start(&s, &f->p, f->p.srv, TLS1_2_VERSION, TLS1_3_VERSION, SRV_OK);
	/* RSA certificate, EC key. */
	o = opts_with(&f->p, f->p.rsa_cert, "keysvc:" KEY_EC);
	r = get(&o, &s, "/", &resp);
	expect_result(r, &resp, -EKEYREJECTED, "does not match");
	ks_https_response_free(&resp);
	/* Both EC, different keys. */
	o = opts_with(&f->p, f->p.nosign_cert, "keysvc:" KEY_EC);
	r = get(&o, &s, "/", &resp);
	expect_result(r, &resp, -EKEYREJECTED, "does not match");
	ks_https_response_free(&resp);
	srv_stop(&s);
	assert_int_equal(s.conns, 0);
}

/* The server does not trust the CA of our certificate: its alert becomes a clear error. */
static void untrusted_client_ca(void **state, int version)
{
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, f->p.ec_cert_ca2, "keysvc:" KEY_EC);
	struct ks_https_response resp;
	struct srv s;
	int r;

	srv_start(&s, &f->p, f->p.srv, version, version, SRV_OK);
	r = get(&o, &s, "/", &resp);
	srv_stop(&s);
	expect_result(r, &resp, -EPROTO, "server refused the TLS connection");
	assert_non_null(strcasestr(resp.err, "unknown CA"));
	assert_null(resp.body);
	ks_https_response_free(&resp);
	assert_int_equal(s.handshake_failures, 1);
	assert_non_null(strstr(s.failure, "certificate verify failed"));
}

static void test_untrusted_client_ca_tls12(void **state)
{
	untrusted_client_ca(state, TLS1_2_VERSION);
}

static void test_untrusted_client_ca_tls13(void **state)
{
	untrusted_client_ca(state, TLS1_3_VERSION);
}

/* No client certificate at all, to a server that requires one. */
static void test_no_client_cert(void **state)
{
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, NULL, NULL);
	struct ks_https_response resp;
	struct srv s;
	int r;

	srv_start(&s, &f->p, f->p.srv, TLS1_2_VERSION, TLS1_3_VERSION, SRV_OK);
	r = get(&o, &s, "/", &resp);
	srv_stop(&s);
	expect_result(r, &resp, -EPROTO, "server refused the TLS connection");
	ks_https_response_free(&resp);
	assert_int_equal(s.handshake_failures, 1);
}

/* ---- 3. the server's certificate ---------------------------------------------------------- */

static void server_cert_refused(void **state, int which_wrong, const char *needle)
{
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, f->p.ec_cert, "keysvc:" KEY_EC);
	struct ks_https_response resp;
	struct capture c;
	char *warn;
	struct srv s;
	int r;

	srv_start(&s, &f->p, which_wrong ? f->p.srv_wrong : f->p.srv_ca2,
		  TLS1_2_VERSION, TLS1_3_VERSION, SRV_OK);
	r = get(&o, &s, "/", &resp);
	expect_result(r, &resp, -EACCES, needle);
	assert_null(resp.body);
	ks_https_response_free(&resp);

	/* Accepted with insecure, and said so on stderr. */
	o.insecure = 1;
	capture_begin(&c, f->p.stderr_file);
	r = get(&o, &s, "/", &resp);
	warn = capture_end(&c);
	srv_stop(&s);
	expect_ok_body(r, &resp, OK_BODY);
	ks_https_response_free(&resp);
	assert_non_null(warn);
	assert_non_null(strstr(warn, "WARNING: TLS verification disabled (--insecure)"));
	free(warn);
	assert_int_equal(s.conns, 2);
}

static void test_server_other_ca(void **state)
{
	server_cert_refused(state, 0, "not trusted");
}

static void test_server_wrong_name(void **state)
{
	server_cert_refused(state, 1, "127.0.0.1");
}

/* A CA bundle that cannot be read is an argument error, not a silent fallback. */
static void test_ca_file_unreadable(void **state)
{
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, f->p.ec_cert, "keysvc:" KEY_EC);
	struct ks_https_response resp;
	struct srv s;
	int r;

	o.ca_file = "/nonexistent/ca.pem";
	srv_start(&s, &f->p, f->p.srv, TLS1_2_VERSION, TLS1_3_VERSION, SRV_OK);
	r = get(&o, &s, "/", &resp);
	srv_stop(&s);
	expect_result(r, &resp, -EINVAL, "/nonexistent/ca.pem");
	ks_https_response_free(&resp);
	assert_int_equal(s.handshakes, 0);
}

/* ---- 4. limits ------------------------------------------------------------------------------- */

static void too_big(void **state, enum srv_mode mode)
{
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, f->p.ec_cert, "keysvc:" KEY_EC);
	struct ks_https_response resp;
	struct srv s;
	int r;

	srv_start_big(&s, &f->p, f->p.srv, TLS1_2_VERSION, TLS1_3_VERSION, mode, 4096);
	/* Exactly the cap is fine... */
	o.max_response_bytes = 4096;
	r = get(&o, &s, "/", &resp);
	expect_result(r, &resp, 0, NULL);
	assert_int_equal(resp.body_len, 4096);
	assert_int_equal(resp.body[4095], 'x');
	assert_int_equal(resp.body[4096], '\0');
	ks_https_response_free(&resp);
	/* ...one byte more is not. */
	o.max_response_bytes = 4095;
	r = get(&o, &s, "/", &resp);
	expect_result(r, &resp, -EMSGSIZE, "larger than the 4095 bytes");
	assert_null(resp.body);
	ks_https_response_free(&resp);
	srv_stop(&s);
}

static void test_too_big_length(void **state)
{
	too_big(state, SRV_BIG_LENGTH);
}

static void test_too_big_close(void **state)
{
	too_big(state, SRV_BIG_CLOSE);
}

static void test_redirect(void **state)
{
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, f->p.ec_cert, "keysvc:" KEY_EC);
	struct ks_https_response resp;
	struct srv s;
	int r;

	srv_start(&s, &f->p, f->p.srv, TLS1_2_VERSION, TLS1_3_VERSION, SRV_REDIRECT);
	/* Not followed by default: the caller sees the 302 and where it points. */
	r = get(&o, &s, "/start", &resp);
	expect_result(r, &resp, 0, NULL);
	assert_int_equal(resp.status, 302);
	assert_string_equal(resp.body, "moved");
	assert_non_null(resp.redirect_url);
	assert_non_null(strstr(resp.redirect_url, "/final"));
	ks_https_response_free(&resp);
	assert_int_equal(s.handshakes, 1);
	/* Followed when asked. */
	o.follow_redirects = 1;
	r = get(&o, &s, "/start", &resp);
	expect_ok_body(r, &resp, FINAL_BODY);
	ks_https_response_free(&resp);
	srv_stop(&s);
	assert_int_equal(s.handshakes, 3);
}

static void test_redirect_to_http(void **state)
{
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, f->p.ec_cert, "keysvc:" KEY_EC);
	struct ks_https_response resp;
	struct srv s;
	int r;

	o.follow_redirects = 1;
	srv_start(&s, &f->p, f->p.srv, TLS1_2_VERSION, TLS1_3_VERSION, SRV_REDIRECT_HTTP);
	r = get(&o, &s, "/start", &resp);
	srv_stop(&s);
	expect_result(r, &resp, -EPROTONOSUPPORT, "https");
	ks_https_response_free(&resp);
	assert_int_equal(s.conns, 1);
}

static void test_http_refused(void **state)
{
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, f->p.ec_cert, "keysvc:" KEY_EC);
	struct ks_https_response resp;
	char url[128];
	struct srv s;
	int r;

	srv_start(&s, &f->p, f->p.srv, TLS1_2_VERSION, TLS1_3_VERSION, SRV_OK);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", s.port);
	r = ks_https_request(&o, "GET", url, NULL, NULL, 0, &resp);
	expect_result(r, &resp, -EPROTONOSUPPORT, "https://");
	ks_https_response_free(&resp);
	srv_stop(&s);
	assert_int_equal(s.conns, 0);
}

/* A free port on 127.0.0.1 with no listener, kept reserved by @fd (bound, not listening). */
static int closed_port(int *fd)
{
	struct sockaddr_in sin;
	socklen_t slen = sizeof(sin);

	*fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(*fd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(*fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(*fd, (struct sockaddr *)&sin, &slen), 0);
	return ntohs(sin.sin_port);
}

static void timeout_case(void **state, enum srv_mode mode, long connect_ms, long total_ms)
{
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, f->p.ec_cert, "keysvc:" KEY_EC);
	struct ks_https_response resp;
	struct srv s;
	int r;

	o.connect_timeout_ms = connect_ms;
	o.total_timeout_ms = total_ms;
	srv_start(&s, &f->p, f->p.srv, TLS1_2_VERSION, TLS1_3_VERSION, mode);
	r = get(&o, &s, "/", &resp);
	srv_stop(&s);
	expect_result(r, &resp, -ETIMEDOUT, "timed out");
	ks_https_response_free(&resp);
	assert_int_equal(s.conns, 1);
}

/* The server accepts the TCP connection and never starts TLS. */
static void test_connect_timeout(void **state)
{
	timeout_case(state, SRV_SILENT_TCP, 300, 60000);
}

/* The server reads the request and never answers. */
static void test_total_timeout(void **state)
{
	timeout_case(state, SRV_SILENT_TLS, 60000, 300);
}

static void test_connection_refused(void **state)
{
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, f->p.ec_cert, "keysvc:" KEY_EC);
	struct ks_https_response resp;
	char url[128];
	int fd, r;

	snprintf(url, sizeof(url), "https://127.0.0.1:%d/", closed_port(&fd));
	r = ks_https_request(&o, "GET", url, NULL, NULL, 0, &resp);
	close(fd);
	expect_result(r, &resp, -ECONNREFUSED, NULL);
	ks_https_response_free(&resp);
}

/* Proxies from the environment are ignored; one given in the options is used. */
static void test_proxy(void **state)
{
	static const char *vars[] = { "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY" };
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, f->p.ec_cert, "keysvc:" KEY_EC);
	struct ks_https_response resp;
	char proxy[64];
	struct srv s;
	int fd, r;

	snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%d", closed_port(&fd));
	srv_start(&s, &f->p, f->p.srv, TLS1_2_VERSION, TLS1_3_VERSION, SRV_OK);
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		setenv(vars[i], proxy, 1);
	r = get(&o, &s, "/", &resp);
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	expect_ok_body(r, &resp, OK_BODY);
	ks_https_response_free(&resp);

	o.proxy = proxy;
	r = get(&o, &s, "/", &resp);
	expect_result(r, &resp, -ECONNREFUSED, NULL);
	ks_https_response_free(&resp);
	srv_stop(&s);
	close(fd);
	assert_int_equal(s.conns, 1);
}

/* ---- 5. keysvcd says no ------------------------------------------------------------------------ */

/*
 * The policy lets this peer read nosign-ec's public key but not sign with
 * it: the handshake stops at our CertificateVerify, with keysvcd's answer.
 */
static void sign_denied(void **state, int version)
{
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, f->p.nosign_cert, "keysvc:" KEY_NOSIGN);
	struct ks_https_response resp;
	struct srv s;
	char *audit;
	int r;

	srv_start(&s, &f->p, f->p.srv, version, version, SRV_OK);
	r = get(&o, &s, "/", &resp);
	srv_stop(&s);
	expect_result(r, &resp, -ENOKEY, "denied");
	assert_int_equal(resp.keysvc_reason, KSP_R_DENIED);
	assert_non_null(strstr(resp.err, "sign with key " KEY_NOSIGN));
	/* keysvcd's whole message, not cut inside a word by a buffer on the way. */
	if (strstr(resp.err, "is not granted sign on key " KEY_NOSIGN) == NULL)
		fail_msg("keysvcd's message is cut: %s", resp.err);
	ks_https_response_free(&resp);
	assert_int_equal(s.handshakes, 0);
	audit = ks_td_audit_log(&f->d, NULL);
	assert_non_null(audit);
	assert_non_null(strstr(audit, "\"op\":\"sign\",\"key\":\"" KEY_NOSIGN "\",\"outcome\":\"denied\""));
	free(audit);
}

static void test_sign_denied_tls12(void **state)
{
	sign_denied(state, TLS1_2_VERSION);
}

static void test_sign_denied_tls13(void **state)
{
	sign_denied(state, TLS1_3_VERSION);
}

/* A key this peer may not even read, and a key that does not exist: nothing is sent. */
static void test_key_not_loadable(void **state)
{
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, f->p.ec_cert, "keysvc:other-key");
	struct ks_https_response resp;
	struct srv s;
	int r;

	srv_start(&s, &f->p, f->p.srv, TLS1_2_VERSION, TLS1_3_VERSION, SRV_OK);
	r = get(&o, &s, "/", &resp);
	expect_result(r, &resp, -ENOKEY, "denied");
	assert_int_equal(resp.keysvc_reason, KSP_R_DENIED);
	assert_non_null(strstr(resp.err, "keysvc:other-key"));
	ks_https_response_free(&resp);

	/* A name of 64 bytes: keysvcd's refusal arrives whole, ending with the name, not cut inside a word. */
#define OTHER_LONG "other-key-with-a-name-as-long-as-keysvcd-allows-0123456789abcdef"
	o.key_uri = "keysvc:" OTHER_LONG;
	r = get(&o, &s, "/", &resp);
	expect_result(r, &resp, -ENOKEY, "denied");
	if (strstr(resp.err, "is not granted key.public on key " OTHER_LONG ")") == NULL)
		fail_msg("keysvcd's message is cut: %s", resp.err);
	ks_https_response_free(&resp);
#undef OTHER_LONG

	o.key_uri = "keysvc:client-missing";
	r = get(&o, &s, "/", &resp);
	expect_result(r, &resp, -ENOKEY, "no such key");
	assert_int_equal(resp.keysvc_reason, KSP_R_NO_SUCH_KEY);
	ks_https_response_free(&resp);

	o.key_uri = "keysvc:bad/name";
	r = get(&o, &s, "/", &resp);
	expect_result(r, &resp, -ENOKEY, "keysvc:bad/name");
	ks_https_response_free(&resp);
	srv_stop(&s);
	assert_int_equal(s.conns, 0);
}

/* ---- arguments ----------------------------------------------------------------------------------- */

static void test_bad_arguments(void **state)
{
	struct fixture *f = *state;
	struct ks_https_opts o = opts_with(&f->p, f->p.ec_cert, "keysvc:" KEY_EC);
	struct ks_https_response resp;
	const char *crlf[] = { "X-Evil: a\r\nX-Injected: b", NULL };
	const char *noname[] = { ": value", NULL };
	const char *url = "https://127.0.0.1:1/";

	assert_int_equal(ks_https_request(&o, "GET", url, NULL, NULL, 0, NULL), -EINVAL);
	expect_result(ks_https_request(NULL, "GET", url, NULL, NULL, 0, &resp), &resp, -EINVAL, NULL);
	expect_result(ks_https_request(&o, NULL, url, NULL, NULL, 0, &resp), &resp, -EINVAL, NULL);
	expect_result(ks_https_request(&o, "GET", NULL, NULL, NULL, 0, &resp), &resp, -EINVAL, NULL);
	expect_result(ks_https_request(&o, "get", url, NULL, NULL, 0, &resp), &resp, -EINVAL, "method");
	expect_result(ks_https_request(&o, "GET", "ftp://127.0.0.1/", NULL, NULL, 0, &resp), &resp,
		      -EPROTONOSUPPORT, NULL);
	expect_result(ks_https_request(&o, "GET", "https://127.0.0.1/a b", NULL, NULL, 0, &resp),
		      &resp, -EINVAL, "URL");
	expect_result(ks_https_request(&o, "GET", url, crlf, NULL, 0, &resp), &resp, -EINVAL, "header");
	expect_result(ks_https_request(&o, "GET", url, noname, NULL, 0, &resp), &resp, -EINVAL, "header");
	expect_result(ks_https_request(&o, "POST", url, NULL, NULL, 3, &resp), &resp, -EINVAL, "body");

	o.ca_file = NULL;
	expect_result(ks_https_request(&o, "GET", url, NULL, NULL, 0, &resp), &resp, -EINVAL, "ca_file");
	o.ca_file = f->p.ca_file;
	o.key_uri = NULL;
	expect_result(ks_https_request(&o, "GET", url, NULL, NULL, 0, &resp), &resp, -EINVAL, "together");
	o.key_uri = "keysvc:" KEY_EC;
	o.cert_file = NULL;
	expect_result(ks_https_request(&o, "GET", url, NULL, NULL, 0, &resp), &resp, -EINVAL, "together");
	o.cert_file = f->p.ec_cert;
	o.total_timeout_ms = -1;
	expect_result(ks_https_request(&o, "GET", url, NULL, NULL, 0, &resp), &resp, -EINVAL, "timeout");
	o.total_timeout_ms = 0;
	o.max_response_bytes = KS_HTTPS_MAX_RESPONSE_LIMIT + 1;
	expect_result(ks_https_request(&o, "GET", url, NULL, NULL, 0, &resp), &resp, -EINVAL,
		      "max_response_bytes");
	o.max_response_bytes = 0;
	o.user_agent = "agent\n";
	expect_result(ks_https_request(&o, "GET", url, NULL, NULL, 0, &resp), &resp, -EINVAL, NULL);
	ks_https_response_free(&resp);
	ks_https_response_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ec_tls13),
		cmocka_unit_test(test_ec_tls12),
		cmocka_unit_test(test_rsa_tls13),
		cmocka_unit_test(test_rsa_tls12),
		cmocka_unit_test(test_pem_key_file),
		cmocka_unit_test(test_post),
		cmocka_unit_test(test_cert_key_mismatch),
		cmocka_unit_test(test_untrusted_client_ca_tls12),
		cmocka_unit_test(test_untrusted_client_ca_tls13),
		cmocka_unit_test(test_no_client_cert),
		cmocka_unit_test(test_server_other_ca),
		cmocka_unit_test(test_server_wrong_name),
		cmocka_unit_test(test_ca_file_unreadable),
		cmocka_unit_test(test_too_big_length),
		cmocka_unit_test(test_too_big_close),
		cmocka_unit_test(test_redirect),
		cmocka_unit_test(test_redirect_to_http),
		cmocka_unit_test(test_http_refused),
		cmocka_unit_test(test_connect_timeout),
		cmocka_unit_test(test_total_timeout),
		cmocka_unit_test(test_connection_refused),
		cmocka_unit_test(test_proxy),
		cmocka_unit_test(test_sign_denied_tls12),
		cmocka_unit_test(test_sign_denied_tls13),
		cmocka_unit_test(test_key_not_loadable),
		cmocka_unit_test(test_bad_arguments),
	};

	return cmocka_run_group_tests_name("https", tests, group_setup, group_teardown);
}
