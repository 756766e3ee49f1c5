/*
 * Key purposes (issue 21) and the forms of the signature inputs each
 * purpose allows: the one definition the daemon (which refuses a sign
 * request outside a key's purposes before the token is touched), the
 * token layer (which stores the purposes with the key), libkeysvc, the
 * CLI and the OpenSSL provider (which picks the message or the digest
 * form from a key's purposes) share.
 *
 * A purpose says what a key may sign:
 *   csr             only the CertificationRequestInfo keysvcd builds
 *                   itself in csr.create; never bytes a client sent;
 *   tls             only messages with the structure of a TLS handshake
 *                   signature input (ks_sigform_check());
 *   http-signature  only HTTP signature signing strings as keysvc-oci
 *                   sends for OCI request signing;
 *   sign            raw data or digests: anything (the behaviour before
 *                   purposes existed), only when asked for explicitly.
 *
 * The checks are pure (no allocation, no I/O, no OpenSSL) and bounded by
 * KS_SIGN_DATA_MAX, so the daemon runs them on client bytes before it
 * hashes them, and a fuzzer runs them on anything.
 */
#ifndef KEYSVC_PROTO_SIGFORM_H
#define KEYSVC_PROTO_SIGFORM_H

#include <stddef.h>
#include <stdint.h>

/* ---- the purpose vocabulary --------------------------------------------- */

/* One bit per purpose; a key's purposes are a non-empty set of them. */
enum ks_purpose {
	KS_PURPOSE_CSR = 1u << 0,
	KS_PURPOSE_TLS = 1u << 1,
	KS_PURPOSE_HTTP_SIGNATURE = 1u << 2,
	KS_PURPOSE_SIGN = 1u << 3,
};

/* Every purpose: what a key made before purposes existed may do. */
#define KS_PURPOSE_ALL \
	(KS_PURPOSE_CSR | KS_PURPOSE_TLS | KS_PURPOSE_HTTP_SIGNATURE | KS_PURPOSE_SIGN)
/* A new key's purposes when the request names none. */
#define KS_PURPOSE_DEFAULT (KS_PURPOSE_CSR | KS_PURPOSE_TLS)
/* Bytes of the longest formatted set ("csr,tls,http-signature,sign") with its NUL. */
#define KS_PURPOSES_TEXT_MAX 32
/* Entries of a purposes list on the wire: each purpose at most once. */
#define KS_PURPOSES_MAX 4

/* Wire name of the single purpose @p ("http-signature"); NULL if @p is not exactly one known bit. */
const char *ks_purpose_name(unsigned p);

/* Wire name to its bit; 0 if unknown (names are exact: no case folding). */
unsigned ks_purpose_from_name(const char *name);

/* 1 if @set is a non-empty set of known purpose bits, else 0. */
int ks_purposes_valid(unsigned set);

/*
 * The @n names at @names (a JSON array's strings, a CLI's list) to a set
 * in *@out. 0, or -EINVAL with *@why a static message: no names ("purposes
 * must not be empty"), a name given twice ("duplicate purpose"), a NULL
 * name; -EOPNOTSUPP "unknown purpose" for a name that is none of the four.
 * On error *@bad (if not NULL) is the index of the offending name, or -1.
 */
int ks_purposes_from_names(const char *const *names, size_t n, unsigned *out, int *bad,
			   const char **why);

/*
 * A comma-separated list ("csr,tls", no spaces, no empty entries) to a
 * set, with ks_purposes_from_names()'s rules and messages, plus -EINVAL
 * "empty entry in the purpose list" for ",," or a leading or trailing
 * comma. For `keysvc keygen --purpose`.
 */
int ks_purposes_parse(const char *list, unsigned *out, const char **why);

/*
 * The set @set as "csr,tls,http-signature,sign" (in that order, only the
 * members) into @buf of @len bytes. Returns the length written, -EINVAL if
 * @set is not ks_purposes_valid(), -ENOSPC if @buf is too short
 * (KS_PURPOSES_TEXT_MAX always suffices).
 */
int ks_purposes_format(unsigned set, char *buf, size_t len);

/*
 * A proto/json.h check (ks_json_check_fn) for a KS_JSON_STRV field of
 * purpose names: @value points at the field's struct ks_strv, @typed at an
 * unsigned that receives the set. Messages as ks_purposes_from_names().
 */
int ks_purposes_check_strv(const void *value, void *typed, const char **why);

/* ---- the forms of signature inputs ------------------------------------- */

/*
 * Whether the @len bytes at @msg are a signature input of the form the
 * single purpose @purpose allows, checked on the message itself (before
 * any hashing): 0 if they are, -EPERM with *@why a static message naming
 * what is wrong if not, -EINVAL if @purpose is not one known bit.
 *
 *  KS_PURPOSE_TLS: one of
 *   - TLS 1.3 CertificateVerify content (RFC 8446 4.4.3): 64 bytes 0x20,
 *     "TLS 1.3, server CertificateVerify" or "TLS 1.3, client
 *     CertificateVerify", 0x00, then a transcript hash of 32 (SHA-256) or
 *     48 (SHA-384) bytes, the two hashes TLS 1.3's cipher suites use;
 *   - TLS 1.2 ServerKeyExchange signed params (RFC 5246 7.4.3, RFC 8422
 *     5.4): client_random[32], server_random[32], then ServerECDHParams:
 *     curve_type 3 (named_curve), a named group among secp256r1/384r1/
 *     521r1, x25519, x448, brainpoolP256r1/384r1/512r1, a point<1..255>
 *     of exactly that group's length, uncompressed (0x04) for the prime
 *     curves; nothing after. Not DHE's ServerDHParams: their free-form
 *     prime, generator and public value leave room to lay a DER structure
 *     over them (TLS 1.2 peers all offer ECDHE);
 *   - a TLS 1.2 client CertificateVerify input (RFC 5246 7.4.8): the
 *     handshake transcript, whole handshake messages (type, 3-byte
 *     length, body) to the last byte: a ClientHello with legacy_version
 *     0x0303, a ServerHello with 0x0303, then certificate, certificate
 *     status, server key exchange and a certificate request in any order,
 *     a ServerHelloDone, the client's Certificate and last its
 *     ClientKeyExchange.
 *   Within these forms a client still chooses 64 bytes of randoms, a
 *   hash, a point or a ClientHello's contents; what it cannot make the
 *   key sign is a DER structure (a CertificationRequestInfo or a
 *   TBSCertificate for the key: the first form starts with 0x20, the
 *   third with 0x01, and the second leaves at most 133 bytes after a
 *   64-byte prefix, too few for a validity, a name and the key's
 *   SubjectPublicKeyInfo), nor a message of another protocol that does
 *   not begin with 64 free bytes.
 *  KS_PURPOSE_HTTP_SIGNATURE: a draft-cavage HTTP signature signing
 *   string as keysvc-oci builds it: lines "name: value" joined by "\n",
 *   no empty line and no final newline; names lower-case [a-z0-9-] or
 *   "(request-target)", each at most once; values valid UTF-8 without
 *   control characters (C0, DEL, C1); "(request-target)" is "method
 *   /target" with a lower-case method; "host" and "date" or "x-date"
 *   are present.
 *  KS_PURPOSE_SIGN: any bytes, up to KS_SIGN_DATA_MAX.
 *  KS_PURPOSE_CSR: never: a csr key signs only what csr.create builds.
 *
 * Every form is bounded by KS_SIGN_DATA_MAX (proto/wire.h).
 */
int ks_sigform_check(unsigned purpose, const uint8_t *msg, size_t len, const char **why);

/*
 * The purpose among @allowed under which the message @msg may be signed:
 * tls, then http-signature, then sign (the structured purposes first, so
 * that the audit names the narrowest one that allows it). 0 with
 * *@purpose set, or -EPERM with *@why the message of the first
 * structured purpose tried (or "key purposes do not allow signing client
 * data" when @allowed has neither those nor sign).
 */
int ks_sigform_match(unsigned allowed, const uint8_t *msg, size_t len, unsigned *purpose,
		     const char **why);

#endif
