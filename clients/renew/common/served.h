/*
 * What an endpoint serves: connect to host:port, do a TLS handshake with
 * the configured server name, and compare the leaf certificate it presents
 * with the one installed (and the one before it, <cert>.prev).
 *
 * The server's certificate is deliberately not validated: the question is
 * "is the file we installed the one being served", answered by comparing
 * certificates, and a chain or name problem must not hide the answer.
 * Nothing is sent but a ClientHello, so nothing is exposed by not
 * validating. Every step is bounded: a non-blocking connect waited for
 * with poll(), then a non-blocking handshake with its own deadline.
 * (Name resolution is the system resolver's, with its own timeouts; use IP
 * addresses in the configuration where that matters.)
 */
#ifndef KEYSVC_CLIENTS_SERVED_H
#define KEYSVC_CLIENTS_SERVED_H

#include <openssl/x509.h>

#define KS_SERVED_ERR_MAX 256

enum ks_served {
	KS_SERVED_EXPECTED,       /* In Sync: the installed certificate */
	KS_SERVED_PREVIOUS,       /* Out of Sync: the previous certificate (<cert>.prev) is still served */
	KS_SERVED_OTHER,          /* Out of Sync: a certificate that is neither */
	KS_SERVED_UNREACHABLE,    /* Out of Sync: no connection, no handshake, or no certificate */
};

/* "in-sync", "previous", "other", "unreachable". */
const char *ks_served_name(enum ks_served s);

/*
 * The leaf certificate @host:@port presents, with SNI @sni (NULL: none).
 * 0 with *@leaf set (caller frees), or a negative errno with the reason in
 * @err (KS_SERVED_ERR_MAX): -ETIMEDOUT, -ECONNREFUSED, -EPROTO (handshake
 * failed), -ENOENT (no such host), -ENODATA (no certificate).
 */
int ks_served_fetch(const char *host, int port, const char *sni, int connect_timeout_ms,
		    int handshake_timeout_ms, X509 **leaf, char *err);

/* Compare @served with @expected and @previous (NULL if there is none). Never UNREACHABLE. */
enum ks_served ks_served_compare(X509 *served, X509 *expected, X509 *previous);

/*
 * Fetch and compare in one: the state, and in @detail (KS_SERVED_ERR_MAX)
 * a one-line explanation for anything but EXPECTED (the served subject
 * and notAfter, or why there was nothing to compare).
 */
enum ks_served ks_served_check(const char *host, int port, const char *sni, int connect_timeout_ms,
			       int handshake_timeout_ms, X509 *expected, X509 *previous, char *detail);

#endif
