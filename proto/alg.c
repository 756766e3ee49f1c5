#include "proto/alg.h"

#include <string.h>

static const struct {
	const char *name;
	enum ks_key_family family;
	unsigned bits;
	const char *group;
} key_types[] = {
	[KS_KEY_RSA_2048] = { "rsa-2048", KS_FAMILY_RSA, 2048, NULL },
	[KS_KEY_RSA_3072] = { "rsa-3072", KS_FAMILY_RSA, 3072, NULL },
	[KS_KEY_RSA_4096] = { "rsa-4096", KS_FAMILY_RSA, 4096, NULL },
	[KS_KEY_EC_P256] = { "ec-p256", KS_FAMILY_EC, 256, "prime256v1" },
	[KS_KEY_EC_P384] = { "ec-p384", KS_FAMILY_EC, 384, "secp384r1" },
};

/* DER DigestInfo prefixes (RFC 8017, section 9.2, note 1), by digest length. */
#define KS_DIGEST_INFO_LEN 19
static const uint8_t di_sha256[KS_DIGEST_INFO_LEN] = {
	0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
	0x05, 0x00, 0x04, 0x20 };
static const uint8_t di_sha384[KS_DIGEST_INFO_LEN] = {
	0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
	0x05, 0x00, 0x04, 0x30 };
static const uint8_t di_sha512[KS_DIGEST_INFO_LEN] = {
	0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
	0x05, 0x00, 0x04, 0x40 };

static const struct {
	const char *name;
	enum ks_key_family family;
	int pss;
	const char *digest;
	size_t digest_len;
} sig_algs[] = {
	[KS_SIG_RSA_PKCS1_SHA256] = { "rsa-pkcs1-sha256", KS_FAMILY_RSA, 0, "SHA256", 32 },
	[KS_SIG_RSA_PKCS1_SHA384] = { "rsa-pkcs1-sha384", KS_FAMILY_RSA, 0, "SHA384", 48 },
	[KS_SIG_RSA_PKCS1_SHA512] = { "rsa-pkcs1-sha512", KS_FAMILY_RSA, 0, "SHA512", 64 },
	[KS_SIG_RSA_PSS_SHA256] = { "rsa-pss-sha256", KS_FAMILY_RSA, 1, "SHA256", 32 },
	[KS_SIG_RSA_PSS_SHA384] = { "rsa-pss-sha384", KS_FAMILY_RSA, 1, "SHA384", 48 },
	[KS_SIG_RSA_PSS_SHA512] = { "rsa-pss-sha512", KS_FAMILY_RSA, 1, "SHA512", 64 },
	[KS_SIG_ECDSA_SHA256] = { "ecdsa-sha256", KS_FAMILY_EC, 0, "SHA256", 32 },
	[KS_SIG_ECDSA_SHA384] = { "ecdsa-sha384", KS_FAMILY_EC, 0, "SHA384", 48 },
};

#define N_KEY_TYPES (sizeof(key_types) / sizeof(key_types[0]))
#define N_SIG_ALGS (sizeof(sig_algs) / sizeof(sig_algs[0]))

static int key_type_valid(enum ks_key_type t)
{
	return t > KS_KEY_NONE && (size_t)t < N_KEY_TYPES;
}

static int sig_alg_valid(enum ks_sig_alg a)
{
	return a > KS_SIG_NONE && (size_t)a < N_SIG_ALGS;
}

enum ks_key_type ks_key_type_from_name(const char *name)
{
	if (name == NULL)
		return KS_KEY_NONE;
	for (size_t i = 1; i < N_KEY_TYPES; i++)
		if (strcmp(key_types[i].name, name) == 0)
			return (enum ks_key_type)i;
	return KS_KEY_NONE;
}

const char *ks_key_type_name(enum ks_key_type type)
{
	return key_type_valid(type) ? key_types[type].name : NULL;
}

enum ks_key_family ks_key_type_family(enum ks_key_type type)
{
	return key_type_valid(type) ? key_types[type].family : KS_FAMILY_NONE;
}

unsigned ks_key_type_bits(enum ks_key_type type)
{
	return key_type_valid(type) ? key_types[type].bits : 0;
}

const char *ks_key_type_group(enum ks_key_type type)
{
	return key_type_valid(type) ? key_types[type].group : NULL;
}

enum ks_sig_alg ks_sig_alg_from_name(const char *name)
{
	if (name == NULL)
		return KS_SIG_NONE;
	for (size_t i = 1; i < N_SIG_ALGS; i++)
		if (strcmp(sig_algs[i].name, name) == 0)
			return (enum ks_sig_alg)i;
	return KS_SIG_NONE;
}

const char *ks_sig_alg_name(enum ks_sig_alg alg)
{
	return sig_alg_valid(alg) ? sig_algs[alg].name : NULL;
}

enum ks_key_family ks_sig_alg_family(enum ks_sig_alg alg)
{
	return sig_alg_valid(alg) ? sig_algs[alg].family : KS_FAMILY_NONE;
}

int ks_sig_alg_is_pss(enum ks_sig_alg alg)
{
	return sig_alg_valid(alg) ? sig_algs[alg].pss : 0;
}

const char *ks_sig_alg_digest(enum ks_sig_alg alg)
{
	return sig_alg_valid(alg) ? sig_algs[alg].digest : NULL;
}

size_t ks_sig_alg_digest_len(enum ks_sig_alg alg)
{
	return sig_alg_valid(alg) ? sig_algs[alg].digest_len : 0;
}

const uint8_t *ks_sig_alg_digest_info(enum ks_sig_alg alg, size_t *len)
{
	const uint8_t *di;

	switch (ks_sig_alg_digest_len(alg)) {
	case 32: di = di_sha256; break;
	case 48: di = di_sha384; break;
	case 64: di = di_sha512; break;
	default: return NULL;
	}
	*len = KS_DIGEST_INFO_LEN;
	return di;
}

enum ks_sig_alg ks_sig_alg_find(enum ks_key_family family, int pss, size_t digest_len)
{
	for (size_t i = 1; i < N_SIG_ALGS; i++)
		if (sig_algs[i].family == family && sig_algs[i].pss == (pss != 0) &&
		    sig_algs[i].digest_len == digest_len)
			return (enum ks_sig_alg)i;
	return KS_SIG_NONE;
}

enum ks_sig_alg ks_sig_alg_for_digest(enum ks_key_family family, const char *digest)
{
	if (digest == NULL)
		return KS_SIG_NONE;
	if (family == KS_FAMILY_RSA) {
		if (strcmp(digest, "sha256") == 0)
			return KS_SIG_RSA_PKCS1_SHA256;
		if (strcmp(digest, "sha384") == 0)
			return KS_SIG_RSA_PKCS1_SHA384;
		if (strcmp(digest, "sha512") == 0)
			return KS_SIG_RSA_PKCS1_SHA512;
	} else if (family == KS_FAMILY_EC) {
		if (strcmp(digest, "sha256") == 0)
			return KS_SIG_ECDSA_SHA256;
		if (strcmp(digest, "sha384") == 0)
			return KS_SIG_ECDSA_SHA384;
	}
	return KS_SIG_NONE;
}
