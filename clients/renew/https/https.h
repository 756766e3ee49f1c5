/*
 * The HTTPS helper shared by the renewal clients: one request, mutual TLS
 * with a key held by keysvcd, the server checked against a pinned CA.
 *
 * Why a module of its own: every renewal client talks to a CA over HTTPS
 * with a client certificate whose key must stay in the token. Getting the
 * TLS settings right once (pinned trust, no silent downgrade, no redirects
 * to other schemes, bounded responses and time) is safer than letting each
 * client configure libcurl by itself.
 *
 * The private key is never read: "keysvc:NAME" is loaded through OSSL_STORE
 * from the keysvc OpenSSL provider, which hands libssl an opaque key whose
 * signatures are made by keysvcd. A PEM key file is accepted as well, for
 * the bootstrap case where a client authenticates with a provisioning key
 * before it has a token key.
 *
 * Errors are negative errno values; each failure also leaves a one-line
 * English reason (with the OpenSSL and keysvcd texts that explain it) in
 * the response's err buffer, meant to be printed as is by a CLI. Nothing
 * is ever logged by this module, and no request or response body, header
 * value or key material goes into an error text.
 *
 * Threads: after ks_https_init(), requests may run from several threads at
 * once (each has its own curl handle; the keysvc provider serialises its
 * daemon connection). libcurl is used with CURLOPT_NOSIGNAL, so a process
 * that writes to sockets must ignore SIGPIPE itself (the CLIs do).
 */
#ifndef KEYSVC_CLIENTS_HTTPS_H
#define KEYSVC_CLIENTS_HTTPS_H

#include <stddef.h>

/*
 * Room for an error text, NUL included: OpenSSL's reasons plus the keysvc
 * provider's whole detail (up to OpenSSL's 1024 bytes, keysvcd's message
 * in it) fit; a longer text ends after a whole word with "…".
 */
#define KS_HTTPS_ERR_MAX 2048

/* Defaults used when the corresponding option is 0. */
#define KS_HTTPS_DEFAULT_CONNECT_TIMEOUT_MS 10000L
#define KS_HTTPS_DEFAULT_TOTAL_TIMEOUT_MS 60000L
#define KS_HTTPS_DEFAULT_MAX_RESPONSE ((size_t)1024 * 1024)
/* The largest max_response_bytes accepted: the body is held in memory. */
#define KS_HTTPS_MAX_RESPONSE_LIMIT ((size_t)1 << 30)
/* Redirects followed at most, when following is asked for. */
#define KS_HTTPS_MAX_REDIRECTS 5L

struct ks_https_opts {
	/*
	 * PEM bundle of the CAs trusted for the server, and the only ones:
	 * the system store is never consulted, so a renewal client cannot be
	 * talked into trusting a certificate some public CA issued. Required
	 * unless @insecure.
	 */
	const char *ca_file;
	/*
	 * Client certificate, followed by any intermediates, in one PEM file.
	 * Optional; if set, @key_uri must be set too, and the pair is checked
	 * to match before any connection is made, so a renewal that stored
	 * the wrong certificate fails locally instead of as a vague alert.
	 */
	const char *cert_file;
	/*
	 * "keysvc:NAME" for a token key (through the keysvc provider), or the
	 * path of an unencrypted PEM private key file (bootstrap only).
	 */
	const char *key_uri;
	long connect_timeout_ms;      /* TCP + TLS handshake; 0: default */
	long total_timeout_ms;        /* the whole request; 0: default */
	size_t max_response_bytes;    /* body cap; 0: default; at most KS_HTTPS_MAX_RESPONSE_LIMIT.
				       * A CA answer is small: a bigger one is an error, not
				       * a truncation */
	int follow_redirects;         /* 0 (default): a 3xx is returned to the caller as is.
				       * Otherwise at most KS_HTTPS_MAX_REDIRECTS, https only */
	/*
	 * Skip the server's certificate and name checks. Only for a first
	 * contact where the CA certificate itself is being fetched and is
	 * then checked out of band; a warning goes to stderr on every request
	 * so that it can never be on silently.
	 */
	int insecure;
	const char *user_agent;       /* NULL: "keysvc/VERSION" */
	/*
	 * Proxy URL, e.g. "http://proxy:3128". NULL: no proxy at all, whatever
	 * the environment says (http_proxy and friends are ignored: a renewal
	 * client's traffic must go where its configuration says).
	 */
	const char *proxy;
};

struct ks_https_response {
	long status;                  /* HTTP status; 0 if no response came */
	char *body;                   /* NUL-terminated (the NUL is not counted); non-NULL on success */
	size_t body_len;
	char *content_type;           /* NULL if the server sent none */
	char *redirect_url;           /* for a 3xx not followed: where it pointed, else NULL */
	char err[KS_HTTPS_ERR_MAX];   /* why the request failed; "" on success */
	/*
	 * For -ENOKEY caused by keysvcd's answer: the keysvc provider's reason
	 * (enum ksp_reason in clients/provider/provider.h: denied, no such
	 * key, token unavailable, cannot connect...), so that the caller can
	 * tell them apart; else 0.
	 */
	int keysvc_reason;
};

/*
 * Load OpenSSL's "default" provider into the default library context and
 * initialise libcurl. The keysvc provider is loaded later, by the first
 * request whose key_uri is "keysvc:...", so that requests without a token
 * key work where keysvc.so is not installed. The order matters: with
 * keysvc activated before "default", libssl's TLS 1.2 group detection
 * loses the EC groups and ECDHE handshakes fail.
 *
 * keysvc.so is searched in @provider_dir, else $OPENSSL_MODULES, else
 * OpenSSL's built-in modules directory; a directory given here (or in the
 * environment) becomes the process's default provider search path. A
 * request that cannot load it fails with -ENOKEY and names that directory.
 * The provider finds keysvcd through $KEYSVC_SOCKET (or its openssl.cnf
 * "socket"), read when a key is first used, not here.
 *
 * Call once, before any thread makes a request; later calls return 0 and
 * change nothing. 0, or a negative errno with a reason in @err (@err_len
 * bytes, may be NULL/0): -ENOENT if the default provider cannot be loaded,
 * -EIO if libcurl cannot be initialised, -ENOMEM.
 */
int ks_https_init(const char *provider_dir, char *err, size_t err_len);

/*
 * Undo ks_https_init() (unload the providers, clean up libcurl), for
 * programs and tests that want a clean exit. No request may be running.
 */
void ks_https_cleanup(void);

/*
 * One HTTPS request. @method is an upper-case token ("GET", "POST", "PUT",
 * "DELETE", "HEAD", ...); @url must be https://; @headers is NULL or a
 * NULL-terminated list of "Name: value" lines (at most 64, none with CR or
 * LF); @body (NULL if @body_len is 0) is sent as is, with any method.
 *
 * Any HTTP status is a success here (0 with out->status set): what a 4xx
 * means is the caller's business. *@out is always reset first and must be
 * released with ks_https_response_free(), on failure as well.
 *
 * Errors (out->err says more):
 *   -EINVAL          a bad argument or option, ks_https_init() not called,
 *                    an unreadable CA bundle or client certificate
 *   -EPROTONOSUPPORT the URL (or a redirect) is not https://
 *   -ENOKEY          the private key could not be loaded (for "keysvc:"
 *                    keys also: keysvc.so not found), or keysvcd would
 *                    not sign the handshake with it: keysvcd unreachable,
 *                    "no such key", "denied" (key.public before connecting,
 *                    sign during the handshake), token unavailable
 *   -EKEYREJECTED    the client certificate does not match the key (found
 *                    before connecting)
 *   -EACCES          the server's certificate does not chain to ca_file,
 *                    or does not name the host of the URL
 *   -EPROTO          the TLS handshake failed: the server refused us with
 *                    an alert (our CA is not one it trusts, no certificate
 *                    sent...), no common protocol version or cipher, or a
 *                    malformed HTTP answer
 *   -ETIMEDOUT       connect_timeout_ms or total_timeout_ms ran out
 *   -EMSGSIZE        the body is larger than max_response_bytes
 *   -ECONNREFUSED, -EHOSTUNREACH  the server (or the proxy) cannot be reached
 *   -ELOOP           more than KS_HTTPS_MAX_REDIRECTS redirects
 *   -ENOMEM, -EIO    out of memory; any other transfer failure. With TLS
 *                    1.3 the server checks our certificate after our side
 *                    of the handshake is done: one that refuses it and
 *                    resets the connection at once, without letting us
 *                    read its alert, shows as -EIO ("connection lost")
 */
int ks_https_request(const struct ks_https_opts *opts, const char *method, const char *url,
		     const char *const *headers, const void *body, size_t body_len,
		     struct ks_https_response *out);

/* Free what a response holds and reset it. NULL is allowed. */
void ks_https_response_free(struct ks_https_response *resp);

#endif
