/*
 * libkeysvc: the client library of keysvcd (wire protocol v1, see
 * proto/PROTOCOL.md in the keysvc sources).
 *
 * keysvcd keeps private keys inside a PKCS#11 token and makes CSRs and
 * signatures with them for the local processes its policy allows. This
 * library connects to its Unix socket and offers one call per operation.
 * Link with -lkeysvc. The interface is stable: symbols are versioned
 * (KEYSVC_1.0) and the numeric values below never change.
 *
 * Conventions, for every function below unless it says otherwise:
 *
 *  - Return value: KEYSVC_OK (0) or a negative enum keysvc_error. Later
 *    versions may add codes; treat any unknown negative value as an error
 *    (keysvc_strerror() still describes it).
 *  - Arguments: a NULL handle, a NULL required pointer or a malformed
 *    argument (a string that is not UTF-8, a count without an array) gives
 *    KEYSVC_E_INVALID and nothing is sent.
 *  - Results: returned through out-pointers, allocated by the library,
 *    owned by the caller. Free strings and byte buffers with free(),
 *    structured results with their keysvc_*_free() function. On any
 *    error every out-pointer is set to NULL (and every count to 0), so
 *    freeing them unconditionally is always correct.
 *  - Threads: the library has no global state; distinct handles may be
 *    used from distinct threads at the same time. One handle must not be
 *    used by two threads at once (one handle per thread, or a lock of the
 *    caller's). Functions that take no handle are thread-safe.
 *  - Broken handles: after KEYSVC_E_IO or KEYSVC_E_PROTOCOL the connection
 *    cannot be trusted to be in step with the daemon. The library closes
 *    it, and every later call on the handle returns KEYSVC_E_IO without
 *    touching any socket: keysvc_close() it and connect again. All other
 *    errors (the daemon's named errors, KEYSVC_E_INVALID, KEYSVC_E_NOMEM)
 *    leave the handle usable, except KEYSVC_E_DENIED for a connection
 *    keysvcd refused as a whole (over its per-uid or total connection
 *    limit; the message names the limit): that handle is closed too.
 *  - Messages: keysvc_error_message() gives a human text for the last
 *    error of a handle: the daemon's message, or the library's reason.
 *  - Signals: the library never raises SIGPIPE and retries after EINTR.
 *    Sockets are close-on-exec. A handle must not be used on both sides
 *    of a fork().
 */
#ifndef KEYSVC_H
#define KEYSVC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KEYSVC_DEFAULT_SOCKET "/run/keysvc/keysvc.sock"
#define KEYSVC_SOCKET_ENV "KEYSVC_SOCKET"
#define KEYSVC_PROTOCOL_VERSION 1
#define KEYSVC_DEFAULT_TIMEOUT_MS 30000
/* keysvc_error_message() is at most this long, including the NUL. */
#define KEYSVC_MESSAGE_MAX 512

enum keysvc_error {
	KEYSVC_OK = 0,
	/* Named errors of the daemon (the wire name in quotes). */
	KEYSVC_E_BAD_REQUEST = -1,       /* "bad-request": a field or argument the daemon rejected */
	KEYSVC_E_DENIED = -2,            /* "denied": the policy does not allow this */
	KEYSVC_E_NO_SUCH_KEY = -3,       /* "no-such-key": no such key (cert_get: no certificate) */
	KEYSVC_E_EXISTS = -4,            /* "exists": key_generate of a name in use */
	KEYSVC_E_UNSUPPORTED = -5,       /* "unsupported": operation, type or algorithm unknown */
	KEYSVC_E_TOKEN_UNAVAILABLE = -6, /* "token-unavailable": token absent or not logged in */
	KEYSVC_E_INTERNAL = -7,          /* "internal", or an error name this library does not
					    know (the name is then kept in the message) */
	KEYSVC_E_AUDIT_UNAVAILABLE = -8, /* "audit-unavailable": the daemon cannot write its audit
					    log, so it refused to use or change the token */
	/* Local errors. */
	KEYSVC_E_CONNECT = -20,          /* cannot connect to the socket (errno is kept) */
	KEYSVC_E_IO = -21,               /* the connection broke, timed out, or was broken before */
	KEYSVC_E_PROTOCOL = -22,         /* the daemon's answer was malformed, oversized or not ours */
	KEYSVC_E_NOMEM = -23,            /* out of memory */
	KEYSVC_E_INVALID = -24,          /* a bad argument to the library; nothing was sent */
};

/* A connection to keysvcd. Opaque. */
typedef struct keysvc keysvc;

/* ---- connection ---- */

/*
 * Connect to keysvcd at @socket_path. NULL means the environment variable
 * KEYSVC_SOCKET if set and non-empty, else KEYSVC_DEFAULT_SOCKET.
 *
 * On success *@out is a new handle (free with keysvc_close()) whose
 * timeout is KEYSVC_DEFAULT_TIMEOUT_MS. Errors: KEYSVC_E_INVALID (NULL
 * @out, empty path or one too long for a Unix socket address),
 * KEYSVC_E_CONNECT (errno tells why: ENOENT, EACCES, ECONNREFUSED,
 * EAGAIN for a daemon too busy to accept within the default timeout...),
 * KEYSVC_E_NOMEM. On error *@out is NULL. Nothing is sent yet: call
 * keysvc_hello() to check the daemon and the token.
 */
int keysvc_connect(const char *socket_path, keysvc **out);

/* Close the connection and free the handle. NULL is allowed. Keeps errno. */
void keysvc_close(keysvc *ks);

/*
 * Set how long each request may wait for the daemon, in milliseconds:
 * each wait for the socket to become readable or writable is bounded by
 * @timeout_ms, a whole response by four times that. 0 waits forever. The
 * default is KEYSVC_DEFAULT_TIMEOUT_MS; generating an RSA-4096 key on a
 * slow token can take longer. A timeout gives KEYSVC_E_IO (and a broken
 * handle). Errors: KEYSVC_E_INVALID for a NULL handle or @timeout_ms < 0.
 */
int keysvc_set_timeout(keysvc *ks, int timeout_ms);

/* ---- errors ---- */

/*
 * A stable, lower-case identifier for @err: the wire name for the daemon's
 * errors ("denied", "no-such-key", ...), else "ok", "connect", "io",
 * "protocol", "nomem", "invalid", or "unknown". Static storage.
 */
const char *keysvc_error_name(int err);

/* A short English description of @err ("denied by the daemon's policy", ...). Static storage. */
const char *keysvc_strerror(int err);

/*
 * The message for the last error of @ks: the daemon's text for its named
 * errors (control characters replaced by '?', at most KEYSVC_MESSAGE_MAX - 1
 * bytes: a longer one ends after a whole word with "…"), or the library's
 * reason for a local one; "" after a success or
 * for a NULL handle. Valid until the next call on @ks.
 */
const char *keysvc_error_message(const keysvc *ks);

/*
 * After a call failed with KEYSVC_E_IO: 1 if its request certainly never
 * reached keysvcd (the handle was already broken, or the daemon had closed
 * the connection before the request was whole there, as after its idle
 * timeout or a restart), so sending it again on a new connection cannot
 * make it happen twice; 0 otherwise (a timeout, or a failure after the
 * request went out: the daemon may have acted on it). 0 for a NULL handle.
 * Since KEYSVC_1.1.
 */
int keysvc_request_unsent(const keysvc *ks);

/* ---- hello ---- */

enum keysvc_health {
	KEYSVC_HEALTH_UNKNOWN = 0,            /* a state this library does not know */
	KEYSVC_HEALTH_OK = 1,                 /* "ok": the token is logged in */
	KEYSVC_HEALTH_TOKEN_UNAVAILABLE = 2,  /* "token-unavailable": down, reconnecting, or the PIN rejected */
	KEYSVC_HEALTH_DEGRADED = 3,           /* "degraded": up, but operations meet token faults (see health_reason) */
};

/*
 * The daemon's answer to hello. Allocated by the library only (later
 * versions may append fields); free with keysvc_hello_free().
 */
struct keysvc_hello {
	int version;                  /* protocol version the daemon speaks (1) */
	char *server;                 /* e.g. "keysvcd 0.1.0" */
	char *token_label;            /* token fields are "" when the daemon does not say */
	char *token_manufacturer;
	char *token_model;
	char *token_serial;
	enum keysvc_health health;
	char **key_types;             /* key types the token supports; may be NULL if n is 0 */
	size_t n_key_types;
	char **algorithms;            /* signature algorithms the token supports */
	size_t n_algorithms;
	/* Why health is not ok: "" when ok or when the daemon does not say; never NULL */
	char *health_reason;
	/*
	 * When the token last answered an operation without a fault (Unix
	 * time), 0 when the daemon does not say (an older keysvcd, or none
	 * yet). Since KEYSVC_1.1's keysvcd 0.1.0.
	 */
	long long last_token_ok;
};

/*
 * Ask the daemon who it is, announcing protocol version 1. Succeeds while
 * the token is down (health then says so): use it for monitoring.
 * KEYSVC_E_UNSUPPORTED if the daemon does not speak version 1.
 */
int keysvc_hello(keysvc *ks, struct keysvc_hello **out);

/* Free a result of keysvc_hello(). NULL is allowed. */
void keysvc_hello_free(struct keysvc_hello *h);

/* ---- keys ---- */

/*
 * Generate key pair @name of @type ("rsa-2048", "rsa-3072", "rsa-4096",
 * "ec-p256", "ec-p384") inside the token; the private key never leaves it.
 * Names are 1..64 of A-Z a-z 0-9 . _ - and do not start with '.' or '-'.
 * *@public_key_pem gets the PEM SubjectPublicKeyInfo; @public_key_pem may
 * be NULL if the caller does not want it. KEYSVC_E_EXISTS if the name is
 * taken, KEYSVC_E_UNSUPPORTED for a type the token lacks.
 */
int keysvc_key_generate(keysvc *ks, const char *name, const char *type,
			char **public_key_pem);

/* One entry of keysvc_key_list(). */
struct keysvc_key {
	char *name;
	char *type;                   /* NULL for a key kind protocol v1 does not name */
	int has_cert;                 /* 1 if a certificate is stored for the key */
};

/*
 * The keys this peer may list: *@keys gets an array of *@n entries (NULL
 * when *@n is 0). Free with keysvc_key_list_free(*keys, *n).
 */
int keysvc_key_list(keysvc *ks, struct keysvc_key **keys, size_t *n);

/*
 * 1 if the last keysvc_key_list() on @ks succeeded and keysvcd left out
 * keys this peer may list (it answers at most 512, fewer when they would
 * not fit one frame, the first by name); else 0. Since KEYSVC_1.1.
 */
int keysvc_key_list_truncated(const keysvc *ks);

/* Free a result of keysvc_key_list(). NULL is allowed. */
void keysvc_key_list_free(struct keysvc_key *keys, size_t n);

/*
 * Key purposes (since KEYSVC_1.2): what a key may sign, fixed when it is
 * generated and stored with it in the token. A list of "csr" (only
 * csr.create), "tls" (only TLS handshake signature inputs, sent as data),
 * "http-signature" (only HTTP signature signing strings, sent as data)
 * and "sign" (any data or digest), written "csr,tls".
 */

/*
 * keysvc_key_generate() of a key with @purposes ("csr,tls"; NULL: the
 * daemon's default, "csr,tls"). A list that is not one (empty, unknown
 * or repeated names) is KEYSVC_E_INVALID before anything is sent.
 */
int keysvc_key_generate_purposes(keysvc *ks, const char *name, const char *type,
				 const char *purposes, char **public_key_pem);

/*
 * The purposes of key @name: *@purposes gets "csr,tls" (caller frees;
 * NULL from a daemon before purposes; "" for a key whose stored purposes
 * keysvcd cannot read, which may sign nothing), *@legacy 1 for a key made
 * before purposes existed (it has them all). Either out-pointer may be NULL.
 */
int keysvc_key_purposes(keysvc *ks, const char *name, char **purposes, int *legacy);

/*
 * The purposes of entry @i of the last successful keysvc_key_list() on
 * @ks, as "csr,tls", valid until the next keysvc_key_list() or
 * keysvc_close() on @ks; NULL when @i is out of range or the daemon did
 * not say. *@legacy (may be NULL) as keysvc_key_purposes().
 */
const char *keysvc_key_list_purposes(const keysvc *ks, size_t i, int *legacy);

/*
 * The public key of @name: *@public_key_pem gets the PEM, *@type the key
 * type (NULL for a kind v1 does not name). Either out-pointer may be NULL.
 */
int keysvc_key_public(keysvc *ks, const char *name, char **public_key_pem, char **type);

/* Destroy key pair @name and any certificate stored for it. */
int keysvc_key_delete(keysvc *ks, const char *name);

/* ---- CSRs ---- */

/* An extra attribute of the certification request. */
struct keysvc_csr_attr {
	const char *oid;              /* dotted, e.g. "1.3.6.1.4.1.34380.1.3.2"; required */
	const char *value;            /* required */
	const char *type;             /* NULL (= "utf8"), "utf8", "printable" or "ia5" */
};

/*
 * What a CSR asks for. The caller owns it and everything it points to;
 * initialise it to zero ({0} or memset) and set what is needed, so that
 * fields added later in the reserved space stay zero. Each (array, count)
 * pair may be (NULL, 0); no entry may be NULL.
 */
struct keysvc_csr_params {
	const char *subject;          /* RFC 4514, e.g. "CN=host,O=Example,C=US"; required */
	const char *const *dns;       /* subjectAltName entries (at most 100 in all) */
	size_t n_dns;
	const char *const *ip;        /* "192.0.2.1", "2001:db8::1" */
	size_t n_ip;
	const char *const *uri;
	size_t n_uri;
	const char *const *email;
	size_t n_email;
	const char *const *key_usage; /* "digitalSignature", "keyEncipherment", ... (critical) */
	size_t n_key_usage;
	const char *const *ext_key_usage; /* "serverAuth", "clientAuth", ... or dotted OIDs */
	size_t n_ext_key_usage;
	const struct keysvc_csr_attr *attrs;
	size_t n_attrs;
	const char *digest;           /* NULL (= "sha256"), "sha256", "sha384", "sha512" (RSA only) */
	const void *reserved[8];      /* must be NULL */
};

/*
 * A PKCS#10 CSR for key @name, signed inside the token (the daemon checks
 * the signature before answering); *@csr_pem gets the PEM.
 * KEYSVC_E_BAD_REQUEST for a subject, SAN or usage the daemon rejects
 * (keysvc_error_message() names it).
 */
int keysvc_csr_create(keysvc *ks, const char *name, const struct keysvc_csr_params *params,
		      char **csr_pem);

/* ---- signatures ---- */

/*
 * Sign a digest the caller computed with key @name. @alg is one of
 * "rsa-pkcs1-sha256", "rsa-pkcs1-sha384", "rsa-pkcs1-sha512",
 * "rsa-pss-sha256", "rsa-pss-sha384", "rsa-pss-sha512" (salt length =
 * hash length), "ecdsa-sha256", "ecdsa-sha384"; @digest_len must be that
 * hash's length (32, 48 or 64). *@sig gets the signature (RSA: modulus
 * length; ECDSA: a DER Ecdsa-Sig-Value), *@sig_len its length.
 */
int keysvc_sign_digest(keysvc *ks, const char *name, const char *alg,
		       const uint8_t *digest, size_t digest_len,
		       uint8_t **sig, size_t *sig_len);

/*
 * Like keysvc_sign_digest(), but the daemon hashes @data (at most
 * KEYSVC_SIGN_DATA_MAX bytes; more is KEYSVC_E_INVALID) with @alg's hash.
 * @data may be NULL if @data_len is 0.
 */
#define KEYSVC_SIGN_DATA_MAX (48 * 1024)
int keysvc_sign_data(keysvc *ks, const char *name, const char *alg,
		     const uint8_t *data, size_t data_len,
		     uint8_t **sig, size_t *sig_len);

/* ---- certificates kept on the token ---- */

/*
 * Store one PEM certificate beside key @name, replacing any earlier one.
 * Its public key must be the key's (KEYSVC_E_BAD_REQUEST otherwise).
 */
int keysvc_cert_put(keysvc *ks, const char *name, const char *cert_pem);

/* The PEM certificate stored for @name; KEYSVC_E_NO_SUCH_KEY if there is none. */
int keysvc_cert_get(keysvc *ks, const char *name, char **cert_pem);

#ifdef __cplusplus
}
#endif

#endif
