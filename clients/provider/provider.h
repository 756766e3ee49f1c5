/*
 * The keysvc OpenSSL 3 provider: private-key operations on keys held by
 * keysvcd, forwarded through libkeysvc. The process never sees the token,
 * its module or its PIN; it needs only the socket and a policy grant.
 *
 * Split by operation, as OpenSSL is: provider.c (entry point, parameters,
 * errors, the pool of daemon connections), kmgmt.c (opaque RSA and EC keys),
 * store.c (the "keysvc:" URI loader), sig.c (RSA PKCS#1 v1.5, RSA-PSS,
 * ECDSA, with digest-sign; verification with the public key), encoder.c
 * (the public key as a SubjectPublicKeyInfo).
 */
#ifndef KEYSVC_PROVIDER_H
#define KEYSVC_PROVIDER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/evp.h>

#include "keysvc/keysvc.h"
#include "proto/wire.h"

#define KSP_NAME_MAX KS_KEY_NAME_MAX   /* key names are proto/wire.h's */
#define KSP_URI_SCHEME "keysvc:"
#define KSP_SOCKET_ENV "KEYSVC_SOCKET"
/* How long one wait for keysvcd may last unless openssl.cnf says (timeout = SECONDS). */
#define KSP_DEFAULT_TIMEOUT_S 10
#define KSP_MAX_TIMEOUT_S 3600
/* Connections to keysvcd per process unless openssl.cnf says (connections = N). */
#define KSP_DEFAULT_POOL 16
#define KSP_POOL_MAX 64

/* Reason codes of this provider's errors (texts in provider.c). */
enum ksp_reason {
	KSP_R_DENIED = 1,
	KSP_R_NO_SUCH_KEY,
	KSP_R_TOKEN_UNAVAILABLE,
	KSP_R_CANNOT_CONNECT,
	KSP_R_UNSUPPORTED,
	KSP_R_BAD_URI,
	KSP_R_INTERNAL,
	KSP_R_BAD_CONFIG,
	KSP_R_BUFFER_TOO_SMALL,
};

/*
 * One connection to keysvcd, used by one request at a time. The pool grows
 * on demand (a slot is opened when every open one is busy) up to
 * ksp_ctx.pool_size; a thread finding all busy waits for one.
 */
struct ksp_conn {
	keysvc *conn;                 /* NULL until first used, or after a failure */
	pid_t pid;                    /* the process this slot belongs to (fork) */
	int busy;
};

struct ksp_ctx {
	const OSSL_CORE_HANDLE *handle;
	OSSL_LIB_CTX *libctx;         /* a child of the application's, for digests and public keys */
	OSSL_FUNC_core_new_error_fn *new_error;
	OSSL_FUNC_core_set_error_debug_fn *set_error_debug;
	OSSL_FUNC_core_vset_error_fn *vset_error;
	char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* empty: libkeysvc's default ($KEYSVC_SOCKET, then /run/keysvc/keysvc.sock) */
	int timeout_ms;               /* keysvc_set_timeout() of each connection; 0 waits forever */
	char config_error[160];       /* a bad openssl.cnf setting: every request fails with this */
	pthread_mutex_t lock;         /* guards the pool's busy flags and pids */
	pthread_cond_t idle;          /* a connection was given back */
	int pool_size;                /* connections open at once at most ("connections = N") */
	struct ksp_conn pool[KSP_POOL_MAX];
};

/*
 * The property query of every fetch in ksp_ctx.libctx: the work done there
 * (digests, verification, ordinary keys) is the other providers', and must
 * never come back to this one.
 */
#define KSP_OTHERS "provider!=keysvc"

/*
 * A key of this provider's key managers. Either held by keysvcd (its name
 * and its public half), or "plain": an ordinary key that OpenSSL made or
 * imported through the RSA/EC key managers because they answered a fetch
 * for "RSA"/"EC" (keysvc loaded before default: TLS ephemeral keys, a peer's
 * public key). A plain key is an EVP_PKEY of the other providers, used
 * through them; it never goes to keysvcd.
 */
struct ksp_key {
	atomic_int refs;
	struct ksp_ctx *ctx;
	char name[KSP_NAME_MAX + 1];  /* empty for a plain key */
	int is_ec;
	int plain;
	int parts;                    /* OSSL_KEYMGMT_SELECT_* the key has */
	EVP_PKEY *pub;                /* built in ctx->libctx; a private part only if plain */
	/*
	 * proto/sigform.h's purposes keysvcd gave with the key; 0 when it did
	 * not say (a daemon before purposes). A key without "sign" signs only
	 * messages keysvcd can check (tls, http-signature): sig.c sends those
	 * whole, not their digest.
	 */
	unsigned purposes;
};

/* Raise an OpenSSL error from this provider. */
void ksp_raise(struct ksp_ctx *ctx, int reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Fetch key @name's public key from keysvcd into a new ksp_key (refs 1).
 * NULL with an OpenSSL error raised on failure.
 */
struct ksp_key *ksp_key_fetch(struct ksp_ctx *ctx, const char *name);
void ksp_key_free(struct ksp_key *key);

/*
 * Have keysvcd sign @digest with @key using wire algorithm @alg. 1 on
 * success with *@sig malloc'd; 0 with an OpenSSL error raised.
 */
int ksp_sign_digest(struct ksp_key *key, const char *alg, const uint8_t *digest,
		    size_t digest_len, uint8_t **sig, size_t *sig_len);

/* The TLS groups whose keys the EC key manager makes (kmgmt.c): see ksp_tls_groups(). */
int ksp_get_capabilities(void *provctx, const char *capability, OSSL_CALLBACK *cb, void *arg);

/*
 * Like ksp_sign_digest(), but keysvcd gets the message @data itself (at
 * most KS_SIGN_DATA_MAX bytes), checks its form against the key's
 * purposes and hashes it with @alg's digest.
 */
int ksp_sign_data(struct ksp_key *key, const char *alg, const uint8_t *data, size_t len,
		  uint8_t **sig, size_t *sig_len);

/* 1 if @key signs messages rather than digests: keysvcd named its purposes, and not "sign". */
int ksp_key_signs_messages(const struct ksp_key *key);

extern const OSSL_DISPATCH ksp_rsa_keymgmt_functions[];
extern const OSSL_DISPATCH ksp_ec_keymgmt_functions[];
extern const OSSL_DISPATCH ksp_rsa_signature_functions[];
extern const OSSL_DISPATCH ksp_ecdsa_signature_functions[];
extern const OSSL_DISPATCH ksp_store_functions[];
extern const OSSL_DISPATCH ksp_spki_der_encoder_functions[];
extern const OSSL_DISPATCH ksp_spki_pem_encoder_functions[];

#endif
