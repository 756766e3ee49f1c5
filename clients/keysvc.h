/*
 * libkeysvc: the client library of keysvcd (wire protocol v1,
 * see proto/PROTOCOL.md in the keysvc sources).
 *
 * keysvcd keeps private keys in a PKCS#11 token and makes CSRs and
 * signatures with them for the local processes its policy allows. This
 * library connects to its Unix socket and offers one call per operation.
 *
 * Conventions:
 *  - Every call returns KEYSVC_OK (0) or a negative enum keysvc_error.
 *  - Results are allocated by the library and owned by the caller: free
 *    strings and byte buffers with free(), structured results with their
 *    keysvc_*_free() function.
 *  - A handle is used by one thread at a time; use one handle per thread.
 *    The library keeps no global state.
 *  - After KEYSVC_E_IO or KEYSVC_E_PROTOCOL the handle is broken: later
 *    calls return KEYSVC_E_IO without touching the socket; close it and
 *    connect again. Other errors leave it usable.
 *  - keysvc_error_message() gives the daemon's text for the last error.
 */
#ifndef KEYSVC_H
#define KEYSVC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KEYSVC_DEFAULT_SOCKET "/run/keysvc/keysvc.sock"
#define KEYSVC_PROTOCOL_VERSION 1

enum keysvc_error {
	KEYSVC_OK = 0,
	/* Named errors of the daemon. */
	KEYSVC_E_BAD_REQUEST = -1,       /* "bad-request" */
	KEYSVC_E_DENIED = -2,            /* "denied" */
	KEYSVC_E_NO_SUCH_KEY = -3,       /* "no-such-key" */
	KEYSVC_E_EXISTS = -4,            /* "exists" */
	KEYSVC_E_UNSUPPORTED = -5,       /* "unsupported" */
	KEYSVC_E_TOKEN_UNAVAILABLE = -6, /* "token-unavailable" */
	KEYSVC_E_INTERNAL = -7,          /* "internal", or an error name this library does not know */
	/* Local errors. */
	KEYSVC_E_CONNECT = -20,          /* cannot connect to the socket */
	KEYSVC_E_IO = -21,               /* the connection broke or timed out */
	KEYSVC_E_PROTOCOL = -22,         /* the daemon's answer was malformed */
	KEYSVC_E_NOMEM = -23,
	KEYSVC_E_INVALID = -24,          /* a bad argument to the library (NULL, too large) */
};

typedef struct keysvc keysvc;

/*
 * Connect to @socket_path; NULL means $KEYSVC_SOCKET, else
 * KEYSVC_DEFAULT_SOCKET. On success *@out is a new handle.
 */
int keysvc_connect(const char *socket_path, keysvc **out);

/* Close the connection and free the handle. NULL is fine. */
void keysvc_close(keysvc *ks);

/* Deadline for each read and write, in milliseconds (default 30000; 0 waits forever). */
int keysvc_set_timeout(keysvc *ks, int timeout_ms);

/* A static text for @err ("denied", "cannot connect", ...). */
const char *keysvc_strerror(int err);

/* The daemon's message for the last error of @ks, or "" if none. Valid until the next call. */
const char *keysvc_error_message(const keysvc *ks);

/* ---- hello ---- */

struct keysvc_hello {
	int version;                  /* protocol version the daemon speaks */
	char *server;                 /* "keysvcd 0.1.0" */
	char *token_label;
	char *token_manufacturer;
	char *token_model;
	char *token_serial;
	int token_up;                 /* 1 if health is "ok", 0 if "token-unavailable" */
};

int keysvc_hello(keysvc *ks, struct keysvc_hello **out);
void keysvc_hello_free(struct keysvc_hello *h);

/* ---- keys ---- */

/*
 * Generate key @name of @type ("rsa-2048", "rsa-3072", "rsa-4096",
 * "ec-p256", "ec-p384") in the token; *@public_key_pem (may be NULL) gets
 * the PEM public key.
 */
int keysvc_key_generate(keysvc *ks, const char *name, const char *type,
			char **public_key_pem);

struct keysvc_key {
	char *name;
	char *type;                   /* NULL for a key kind protocol v1 does not name */
	int has_cert;
};

/* The keys this peer may list. *@keys has *@n entries; free with keysvc_key_list_free(). */
int keysvc_key_list(keysvc *ks, struct keysvc_key **keys, size_t *n);
void keysvc_key_list_free(struct keysvc_key *keys, size_t n);

/* PEM public key and type (either out pointer may be NULL). */
int keysvc_key_public(keysvc *ks, const char *name, char **public_key_pem, char **type);

/* Destroy the key pair and its certificate. */
int keysvc_key_delete(keysvc *ks, const char *name);

/* ---- CSRs ---- */

struct keysvc_csr_attr {
	const char *oid;              /* dotted, e.g. "1.3.6.1.4.1.34380.1.3.2" */
	const char *value;
	const char *type;             /* "utf8" (NULL), "printable" or "ia5" */
};

struct keysvc_csr_params {
	const char *subject;          /* RFC 4514, e.g. "CN=host,O=Example,C=US"; required */
	const char *const *dns; size_t n_dns;
	const char *const *ip; size_t n_ip;
	const char *const *uri; size_t n_uri;
	const char *const *email; size_t n_email;
	const char *const *key_usage; size_t n_key_usage;         /* "digitalSignature", ... */
	const char *const *ext_key_usage; size_t n_ext_key_usage; /* "clientAuth", OIDs, ... */
	const struct keysvc_csr_attr *attrs; size_t n_attrs;
	const char *digest;           /* "sha256" (NULL), "sha384", "sha512" */
};

/* A CSR for key @name signed inside the token; *@csr_pem is PEM. */
int keysvc_csr_create(keysvc *ks, const char *name, const struct keysvc_csr_params *params,
		      char **csr_pem);

/* ---- signatures ---- */

/*
 * Sign a digest computed by the caller (exactly the hash length of @alg)
 * with key @name. @alg is one of "rsa-pkcs1-sha256/384/512",
 * "rsa-pss-sha256/384/512", "ecdsa-sha256/384". *@sig gets the signature
 * (ECDSA as DER), *@sig_len its length.
 */
int keysvc_sign_digest(keysvc *ks, const char *name, const char *alg,
		       const uint8_t *digest, size_t digest_len,
		       uint8_t **sig, size_t *sig_len);

/* Sign @data (at most 48 KiB), hashed by the daemon with @alg's hash. */
int keysvc_sign_data(keysvc *ks, const char *name, const char *alg,
		     const uint8_t *data, size_t data_len,
		     uint8_t **sig, size_t *sig_len);

/* ---- certificates kept on the token ---- */

/* Store one PEM certificate beside key @name; it must be for that key. */
int keysvc_cert_put(keysvc *ks, const char *name, const char *cert_pem);

/* The certificate stored for @name; KEYSVC_E_NO_SUCH_KEY if none. */
int keysvc_cert_get(keysvc *ks, const char *name, char **cert_pem);

#ifdef __cplusplus
}
#endif

#endif
