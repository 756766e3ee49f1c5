/*
 * Key types and signature algorithms of wire protocol v1.
 *
 * These names are part of the public protocol (proto/PROTOCOL.md); the
 * token layer, the CSR builder, the daemon and the client library all use
 * this one table so a name can never mean two things; so does the OpenSSL
 * provider, to choose the wire algorithm of what OpenSSL asks it to sign.
 */
#ifndef KEYSVC_PROTO_ALG_H
#define KEYSVC_PROTO_ALG_H

#include <stddef.h>
#include <stdint.h>

enum ks_key_type {
	KS_KEY_NONE = 0,
	KS_KEY_RSA_2048,
	KS_KEY_RSA_3072,
	KS_KEY_RSA_4096,
	KS_KEY_EC_P256,
	KS_KEY_EC_P384,
};

enum ks_key_family {
	KS_FAMILY_NONE = 0,
	KS_FAMILY_RSA,
	KS_FAMILY_EC,
};

enum ks_sig_alg {
	KS_SIG_NONE = 0,
	KS_SIG_RSA_PKCS1_SHA256,
	KS_SIG_RSA_PKCS1_SHA384,
	KS_SIG_RSA_PKCS1_SHA512,
	KS_SIG_RSA_PSS_SHA256,
	KS_SIG_RSA_PSS_SHA384,
	KS_SIG_RSA_PSS_SHA512,
	KS_SIG_ECDSA_SHA256,
	KS_SIG_ECDSA_SHA384,
};

/* Wire name ("rsa-2048", ...) to type; KS_KEY_NONE when unknown. */
enum ks_key_type ks_key_type_from_name(const char *name);
/* Type to wire name; NULL for KS_KEY_NONE or out of range. */
const char *ks_key_type_name(enum ks_key_type type);
enum ks_key_family ks_key_type_family(enum ks_key_type type);
/* RSA modulus bits or EC field bits; 0 for KS_KEY_NONE. */
unsigned ks_key_type_bits(enum ks_key_type type);
/* OpenSSL group name for EC types ("prime256v1", "secp384r1"); NULL for RSA. */
const char *ks_key_type_group(enum ks_key_type type);

/* Wire name ("rsa-pss-sha256", ...) to algorithm; KS_SIG_NONE when unknown. */
enum ks_sig_alg ks_sig_alg_from_name(const char *name);
const char *ks_sig_alg_name(enum ks_sig_alg alg);
enum ks_key_family ks_sig_alg_family(enum ks_sig_alg alg);
/* 1 for the RSA-PSS algorithms, 0 otherwise. */
int ks_sig_alg_is_pss(enum ks_sig_alg alg);
/* Digest name as OpenSSL knows it ("SHA256", ...); NULL for KS_SIG_NONE. */
const char *ks_sig_alg_digest(enum ks_sig_alg alg);
/* Digest length in bytes (32, 48, 64); 0 for KS_SIG_NONE. */
size_t ks_sig_alg_digest_len(enum ks_sig_alg alg);
/*
 * The DER DigestInfo prefix of @alg's hash with NULL parameters (RFC 8017,
 * 9.2 note 1), which PKCS#1 v1.5 puts before the digest: *@len bytes, or
 * NULL for KS_SIG_NONE.
 */
const uint8_t *ks_sig_alg_digest_info(enum ks_sig_alg alg, size_t *len);

/*
 * The algorithm a key of @family uses to sign a digest of @digest_len
 * bytes, with RSA-PSS when @pss (RSA only): KS_SIG_NONE when protocol v1
 * has none (ECDSA with SHA-512, PSS for EC, a length no hash has).
 */
enum ks_sig_alg ks_sig_alg_find(enum ks_key_family family, int pss, size_t digest_len);

/*
 * The algorithm a CSR or certificate signature uses for a key of @family
 * with digest @digest ("sha256", "sha384", "sha512"): PKCS#1 v1.5 for RSA,
 * ECDSA for EC. KS_SIG_NONE when the pair is not supported (ECDSA has no
 * SHA-512 variant in protocol v1).
 */
enum ks_sig_alg ks_sig_alg_for_digest(enum ks_key_family family, const char *digest);

#endif
