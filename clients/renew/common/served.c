#include "clients/renew/common/served.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "clients/renew/common/certinstall.h"

static int fail(char *err, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, int r, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL) {
		va_start(ap, fmt);
		vsnprintf(err, KS_SERVED_ERR_MAX, fmt, ap);
		va_end(ap);
	}
	return r;
}

const char *ks_served_name(enum ks_served s)
{
	switch (s) {
	case KS_SERVED_EXPECTED: return "in-sync";
	case KS_SERVED_PREVIOUS: return "previous";
	case KS_SERVED_OTHER: return "other";
	default: return "unreachable";
	}
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for @events on @fd until @deadline (monotonic ms). 1 ready, 0 timed out, -errno. */
static int wait_fd(int fd, short events, long long deadline)
{
	struct pollfd p = { .fd = fd, .events = events };

	for (;;) {
		long long left = deadline - now_ms();
		int n;

		if (left <= 0)
			return 0;
		n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
		if (n > 0)
			return 1;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

/* A connected socket to one of @host's addresses, within @timeout_ms in all. */
static int connect_to(const char *host, int port, int timeout_ms, char *err)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG };
	struct addrinfo *res = NULL, *ai;
	long long deadline = now_ms() + timeout_ms;
	char service[16];
	int fd = -1, r, last = ECONNREFUSED;

	snprintf(service, sizeof(service), "%d", port);
	if ((r = getaddrinfo(host, service, &hints, &res)) != 0)
		return fail(err, -ENOENT, "%s: %s", host, gai_strerror(r));
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		int so = 0;
		socklen_t sl = sizeof(so);

		if ((fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol)) < 0) {
			last = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			r = wait_fd(fd, POLLOUT, deadline);
			if (r > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) == 0 && so == 0)
				break;
			last = r == 0 ? ETIMEDOUT : r < 0 ? -r : so;
		} else {
			last = errno;
		}
		close(fd);
		fd = -1;
		if (last == ETIMEDOUT)
			break;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return fail(err, -last, "connect to %s port %d: %s", host, port,
			    last == ETIMEDOUT ? "timed out" : strerror(last));
	return fd;
}

int ks_served_fetch(const char *host, int port, const char *sni, int connect_timeout_ms,
		    int handshake_timeout_ms, X509 **leaf, char *err)
{
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	long long deadline;
	int fd, r;

	*leaf = NULL;
	if ((fd = connect_to(host, port, connect_timeout_ms, err)) < 0)
		return fd;
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL || (ssl = SSL_new(ctx)) == NULL) {
		r = fail(err, -ENOMEM, "cannot make a TLS context");
		goto out;
	}
	/* Only the leaf is compared (see served.h): accept what any server offers. */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_set_security_level(ssl, 0);
	if (!SSL_set_fd(ssl, fd) || (sni != NULL && !SSL_set_tlsext_host_name(ssl, sni))) {
		r = fail(err, -ENOMEM, "cannot set up TLS");
		goto out;
	}
	deadline = now_ms() + handshake_timeout_ms;
	ERR_clear_error();
	for (;;) {
		int ret = SSL_connect(ssl), e, w;

		if (ret == 1)
			break;
		e = SSL_get_error(ssl, ret);
		if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
			unsigned long code = ERR_peek_last_error();

			r = fail(err, -EPROTO, "TLS handshake with %s port %d failed: %s", host, port,
				 code != 0 ? ERR_reason_error_string(code) : "connection closed");
			goto out;
		}
		w = wait_fd(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
		if (w <= 0) {
			r = fail(err, w == 0 ? -ETIMEDOUT : w, "TLS handshake with %s port %d: %s", host, port,
				 w == 0 ? "timed out" : strerror(-w));
			goto out;
		}
	}
	if ((*leaf = SSL_get1_peer_certificate(ssl)) == NULL) {
		r = fail(err, -ENODATA, "%s port %d presented no certificate", host, port);
		goto out;
	}
	(void)SSL_shutdown(ssl);
	r = 0;
out:
	ERR_clear_error();
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	return r;
}

enum ks_served ks_served_compare(X509 *served, X509 *expected, X509 *previous)
{
	if (expected != NULL && X509_cmp(served, expected) == 0)
		return KS_SERVED_EXPECTED;
	if (previous != NULL && X509_cmp(served, previous) == 0)
		return KS_SERVED_PREVIOUS;
	return KS_SERVED_OTHER;
}

enum ks_served ks_served_check(const char *host, int port, const char *sni, int connect_timeout_ms,
			       int handshake_timeout_ms, X509 *expected, X509 *previous, char *detail)
{
	enum ks_served s;
	X509 *leaf = NULL;
	char subject[160] = "?", until[64];
	BIO *bio;

	detail[0] = '\0';
	if (ks_served_fetch(host, port, sni, connect_timeout_ms, handshake_timeout_ms, &leaf, detail) < 0)
		return KS_SERVED_UNREACHABLE;
	s = ks_served_compare(leaf, expected, previous);
	if (s != KS_SERVED_EXPECTED) {
		if ((bio = BIO_new(BIO_s_mem())) != NULL) {
			int n;

			X509_NAME_print_ex(bio, X509_get_subject_name(leaf), 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
			n = BIO_read(bio, subject, (int)sizeof(subject) - 1);
			subject[n > 0 ? n : 0] = '\0';
			BIO_free(bio);
		}
		for (char *p = subject; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = '?';
		ks_ci_format_time(X509_get0_notAfter(leaf), until, sizeof(until));
		snprintf(detail, KS_SERVED_ERR_MAX, "%s certificate served: %s, valid until %s",
			 s == KS_SERVED_PREVIOUS ? "the previous" : "another", subject, until);
	}
	X509_free(leaf);
	return s;
}
