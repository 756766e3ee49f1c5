/*
 * Key management for keysvc keys: opaque RSA and EC keys whose public
 * parameters are answered from the public key keysvcd gave us, and whose
 * private half exists only in the token.
 *
 * OpenSSL fetches a key manager by algorithm name alone ("EC") for keys it
 * makes itself, and gets the one of the provider activated first. With
 * keysvc before default that is this one: libssl makes its ephemeral ECDHE
 * keys, the peer's key shares and its list of TLS groups through it. So the
 * key managers also hold "plain" keys (provider.h): generated, imported or
 * given parameters here, they are ordinary keys of the other providers
 * (KSP_OTHERS, in the child library context), exported to them for key
 * exchange and encoding. A private key of another provider is never
 * imported: its operations stay with its own provider.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/prov_ssl.h>

#include "clients/provider/provider.h"

#define KEYPAIR_AND_PARAMS (OSSL_KEYMGMT_SELECT_KEYPAIR | OSSL_KEYMGMT_SELECT_ALL_PARAMETERS)

static void *ksp_km_load(const void *reference, size_t reference_sz)
{
	struct ksp_key *key;

	/* The store hands over its reference to a key it fetched (store.c). */
	if (reference == NULL || reference_sz != sizeof(key))
		return NULL;
	memcpy(&key, reference, sizeof(key));
	atomic_fetch_add(&key->refs, 1);
	return key;
}

static void ksp_km_free(void *keydata)
{
	ksp_key_free(keydata);
}

/* OpenSSL's setters take non-const parameters they only read. */
static OSSL_PARAM *unconst(const OSSL_PARAM *params)
{
	OSSL_PARAM *p;

	memcpy(&p, &params, sizeof(p));
	return p;
}

/* A plain key with nothing in it yet (new, or gen's result before the EVP_PKEY). */
static struct ksp_key *plain_new(struct ksp_ctx *ctx, int is_ec)
{
	struct ksp_key *key = calloc(1, sizeof(*key));

	if (key == NULL)
		return NULL;
	atomic_init(&key->refs, 1);
	key->ctx = ctx;
	key->is_ec = is_ec;
	key->plain = 1;
	return key;
}

static void *ksp_rsa_new(void *provctx)
{
	return plain_new(provctx, 0);
}

static void *ksp_ec_new(void *provctx)
{
	return plain_new(provctx, 1);
}

static int ksp_km_has(const void *keydata, int selection)
{
	const struct ksp_key *key = keydata;

	if (key == NULL)
		return 0;
	/* RSA keys have no domain parameters: any key has all of them. */
	if (!key->is_ec)
		selection &= ~OSSL_KEYMGMT_SELECT_ALL_PARAMETERS;
	/* A keysvcd key's private half is in the token; for OpenSSL's purposes the key has it. */
	return key->pub != NULL && (key->parts & selection) == (selection & KEYPAIR_AND_PARAMS);
}

static int ksp_km_match(const void *a, const void *b, int selection)
{
	const struct ksp_key *ka = a, *kb = b;

	if (ka == NULL || kb == NULL || ka->is_ec != kb->is_ec || ka->pub == NULL || kb->pub == NULL)
		return 0;
	/* Two keys are the same key when their public halves are. */
	if (selection & OSSL_KEYMGMT_SELECT_KEYPAIR)
		return EVP_PKEY_eq(ka->pub, kb->pub) == 1;
	/* Parameters only: the curve for EC; RSA keys have none to differ in. */
	if ((selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) && ka->is_ec)
		return EVP_PKEY_parameters_eq(ka->pub, kb->pub) == 1;
	return 1;
}

static void *ksp_km_dup(const void *keydata, int selection)
{
	struct ksp_key *key, *copy;

	(void)selection;
	/* OpenSSL hands the key over as const; its reference count is ours to change. */
	memcpy(&key, &keydata, sizeof(key));
	if (key == NULL)
		return NULL;
	/* A keysvcd key is never changed once made: a duplicate is another reference. */
	if (!key->plain) {
		atomic_fetch_add(&key->refs, 1);
		return key;
	}
	/* A plain key can be changed (set_params): a duplicate is a copy. */
	if ((copy = plain_new(key->ctx, key->is_ec)) == NULL)
		return NULL;
	copy->parts = key->parts;
	if (key->pub != NULL && (copy->pub = EVP_PKEY_dup(key->pub)) == NULL) {
		ksp_key_free(copy);
		return NULL;
	}
	return copy;
}

static int ksp_km_get_params(void *keydata, OSSL_PARAM params[])
{
	struct ksp_key *key = keydata;

	if (key == NULL || key->pub == NULL)
		return 0;
	/* bits, security-bits, max-size, group, n, e, pub: all answered by the key's public half. */
	return EVP_PKEY_get_params(key->pub, params);
}

static int ksp_km_set_params(void *keydata, const OSSL_PARAM params[])
{
	struct ksp_key *key = keydata;

	if (key == NULL)
		return 0;
	if (params == NULL || params[0].key == NULL)
		return 1;
	/* A keysvcd key is what the token holds: nothing about it can be set. */
	if (!key->plain || key->pub == NULL || EVP_PKEY_set_params(key->pub, unconst(params)) != 1)
		return 0;
	/* A peer's key share: parameters first (gen), then its public point. */
	if (OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY) != NULL ||
	    OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PUB_KEY) != NULL)
		key->parts |= OSSL_KEYMGMT_SELECT_PUBLIC_KEY;
	return 1;
}

static const OSSL_PARAM *ksp_ec_settable(void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
		OSSL_PARAM_END,
	};

	(void)provctx;
	return params;
}

static const OSSL_PARAM *ksp_rsa_settable(void *provctx)
{
	static const OSSL_PARAM params[] = { OSSL_PARAM_END };

	(void)provctx;
	return params;
}

static const OSSL_PARAM *ksp_rsa_gettable(void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
		OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
		OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
		OSSL_PARAM_END,
	};

	(void)provctx;
	return params;
}

static const OSSL_PARAM *ksp_ec_gettable(void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
		OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
		OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
		OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
		OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
		OSSL_PARAM_END,
	};

	(void)provctx;
	return params;
}

/* EVP_PKEY_todata/fromdata's selection for a key manager selection. */
static int evp_selection(int selection)
{
	if (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY)
		return EVP_PKEY_KEYPAIR;
	if (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY)
		return EVP_PKEY_PUBLIC_KEY;
	return EVP_PKEY_KEY_PARAMETERS;
}

static int ksp_km_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
	struct ksp_key *key = keydata;
	OSSL_PARAM *params = NULL;
	int ok;

	if (key == NULL || key->pub == NULL)
		return 0;
	/* A keysvcd key gives its public parts only: there is nothing else here. */
	if (!key->plain && (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY))
		return 0;
	if (EVP_PKEY_todata(key->pub, evp_selection(selection & key->parts), &params) != 1)
		return 0;
	ok = cb(params, cbarg);
	OSSL_PARAM_free(params);
	return ok;
}

/*
 * A key of another provider imported here: its public half or parameters
 * only. Refused (quietly: OpenSSL then uses the key's own provider) when it
 * carries a private key, so this provider never holds one.
 */
static int ksp_km_import(void *keydata, int selection, const OSSL_PARAM params[])
{
	struct ksp_key *key = keydata;
	EVP_PKEY_CTX *pc = NULL;
	EVP_PKEY *pkey = NULL;
	int parts = 0, r = 0;

	if (key == NULL || !key->plain || key->pub != NULL || params == NULL)
		return 0;
	if (OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PRIV_KEY) != NULL ||
	    OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_D) != NULL)
		return 0;
	if (OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PUB_KEY) != NULL ||
	    OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY) != NULL ||
	    OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_N) != NULL)
		parts |= OSSL_KEYMGMT_SELECT_PUBLIC_KEY;
	if (key->is_ec ? OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_GROUP_NAME) != NULL :
			 (parts & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0)
		parts |= OSSL_KEYMGMT_SELECT_ALL_PARAMETERS;
	parts &= selection | (key->is_ec ? 0 : OSSL_KEYMGMT_SELECT_ALL_PARAMETERS);
	if (parts == 0)
		return 0;
	ERR_set_mark();
	if ((pc = EVP_PKEY_CTX_new_from_name(key->ctx->libctx, key->is_ec ? "EC" : "RSA", KSP_OTHERS)) == NULL ||
	    EVP_PKEY_fromdata_init(pc) != 1 ||
	    EVP_PKEY_fromdata(pc, &pkey, evp_selection(parts), unconst(params)) != 1) {
		ERR_pop_to_mark();
		goto out;
	}
	ERR_clear_last_mark();
	key->pub = pkey;
	key->parts = parts;
	r = 1;
out:
	EVP_PKEY_CTX_free(pc);
	return r;
}

static const OSSL_PARAM *ksp_rsa_io_types(int selection)
{
	static const OSSL_PARAM pub[] = {
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
		OSSL_PARAM_END,
	};
	/* Only a plain key (made here by another provider) has these. */
	static const OSSL_PARAM all[] = {
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_D, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_FACTOR1, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_FACTOR2, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_EXPONENT1, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_EXPONENT2, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_COEFFICIENT1, NULL, 0),
		OSSL_PARAM_END,
	};

	return (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) ? all : pub;
}

static const OSSL_PARAM *ksp_ec_io_types(int selection)
{
	static const OSSL_PARAM pub[] = {
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
		OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
		OSSL_PARAM_END,
	};
	static const OSSL_PARAM all[] = {
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
		OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_PRIV_KEY, NULL, 0),
		OSSL_PARAM_END,
	};

	return (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) ? all : pub;
}

/* ---- generating plain keys, by the other providers ----------------------- */

struct ksp_gen {
	struct ksp_ctx *ctx;
	int is_ec;
	int parts;                    /* what the generated key will have */
	EVP_PKEY_CTX *pc;             /* in ctx->libctx, KSP_OTHERS */
};

static void ksp_gen_cleanup(void *genctx)
{
	struct ksp_gen *g = genctx;

	if (g == NULL)
		return;
	EVP_PKEY_CTX_free(g->pc);
	free(g);
}

static int ksp_gen_set_params(void *genctx, const OSSL_PARAM params[])
{
	struct ksp_gen *g = genctx;

	if (params == NULL || params[0].key == NULL)
		return 1;
	return EVP_PKEY_CTX_set_params(g->pc, params) == 1;
}

static void *gen_init(struct ksp_ctx *ctx, int is_ec, int selection, const OSSL_PARAM params[])
{
	struct ksp_gen *g = calloc(1, sizeof(*g));
	int keypair = (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0;

	if (g == NULL)
		return NULL;
	g->ctx = ctx;
	g->is_ec = is_ec;
	g->parts = keypair ? KEYPAIR_AND_PARAMS : OSSL_KEYMGMT_SELECT_ALL_PARAMETERS;
	if ((g->pc = EVP_PKEY_CTX_new_from_name(ctx->libctx, is_ec ? "EC" : "RSA", KSP_OTHERS)) == NULL ||
	    (keypair ? EVP_PKEY_keygen_init(g->pc) : EVP_PKEY_paramgen_init(g->pc)) != 1 ||
	    !ksp_gen_set_params(g, params)) {
		ksp_gen_cleanup(g);
		return NULL;
	}
	return g;
}

static void *ksp_rsa_gen_init(void *provctx, int selection, const OSSL_PARAM params[])
{
	return gen_init(provctx, 0, selection, params);
}

static void *ksp_ec_gen_init(void *provctx, int selection, const OSSL_PARAM params[])
{
	return gen_init(provctx, 1, selection, params);
}

/* A new key like @templ: for EC its curve (a TLS 1.2 client's key for the server's share). */
static int ksp_gen_set_template(void *genctx, void *templ)
{
	struct ksp_gen *g = genctx;
	struct ksp_key *t = templ;
	char group[64];

	if (t == NULL || t->pub == NULL)
		return 0;
	if (!g->is_ec)
		return 1;
	return EVP_PKEY_get_utf8_string_param(t->pub, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL) == 1 &&
	       EVP_PKEY_CTX_set_group_name(g->pc, group) == 1;
}

static void *ksp_gen(void *genctx, OSSL_CALLBACK *cb, void *cbarg)
{
	struct ksp_gen *g = genctx;
	struct ksp_key *key;

	(void)cb;
	(void)cbarg;
	if ((key = plain_new(g->ctx, g->is_ec)) == NULL)
		return NULL;
	if (EVP_PKEY_generate(g->pc, &key->pub) != 1) {
		ksp_key_free(key);
		return NULL;
	}
	key->parts = g->parts;
	return key;
}

static const OSSL_PARAM *ksp_rsa_gen_settable(void *genctx, void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_size_t(OSSL_PKEY_PARAM_RSA_BITS, NULL),
		OSSL_PARAM_size_t(OSSL_PKEY_PARAM_RSA_PRIMES, NULL),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
		OSSL_PARAM_END,
	};

	(void)genctx;
	(void)provctx;
	return params;
}

static const OSSL_PARAM *ksp_ec_gen_settable(void *genctx, void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
		OSSL_PARAM_END,
	};

	(void)genctx;
	(void)provctx;
	return params;
}

/* ---- TLS groups ---------------------------------------------------------- */

/*
 * libssl keeps a TLS group only if the provider that advertises it is the
 * one whose key manager a fetch of the group's algorithm returns. With
 * keysvc activated first that is this provider for "EC", so it advertises
 * the NIST curves (as the default provider does, same IDs and limits) and
 * makes their keys as plain keys; activated after default, libssl ignores
 * these entries and keeps default's.
 */
static struct {
	char name[16], internal[16];
	unsigned int id, secbits;
} tls_groups[] = {
	{ "secp256r1", "prime256v1", 23, 128 },
	{ "P-256", "prime256v1", 23, 128 },
	{ "secp384r1", "secp384r1", 24, 192 },
	{ "P-384", "secp384r1", 24, 192 },
	{ "secp521r1", "secp521r1", 25, 256 },
	{ "P-521", "secp521r1", 25, 256 },
};

int ksp_get_capabilities(void *provctx, const char *capability, OSSL_CALLBACK *cb, void *arg)
{
	(void)provctx;
	if (capability == NULL || strcasecmp(capability, "TLS-GROUP") != 0)
		return 0;
	for (size_t i = 0; i < sizeof(tls_groups) / sizeof(tls_groups[0]); i++) {
		unsigned int id = tls_groups[i].id, secbits = tls_groups[i].secbits;
		char alg[] = "EC";
		int min_tls = TLS1_VERSION, max_tls = 0, min_dtls = DTLS1_VERSION, max_dtls = 0;
		OSSL_PARAM p[] = {
			OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_NAME, tls_groups[i].name,
					       strlen(tls_groups[i].name) + 1),
			OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_NAME_INTERNAL, tls_groups[i].internal,
					       strlen(tls_groups[i].internal) + 1),
			OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_ALG, alg, sizeof(alg)),
			OSSL_PARAM_uint(OSSL_CAPABILITY_TLS_GROUP_ID, &id),
			OSSL_PARAM_uint(OSSL_CAPABILITY_TLS_GROUP_SECURITY_BITS, &secbits),
			OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MIN_TLS, &min_tls),
			OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MAX_TLS, &max_tls),
			OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MIN_DTLS, &min_dtls),
			OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MAX_DTLS, &max_dtls),
			OSSL_PARAM_END,
		};

		if (!cb(p, arg))
			return 0;
	}
	return 1;
}

static const char *ksp_ec_operation_name(int operation_id)
{
	switch (operation_id) {
	case OSSL_OP_SIGNATURE:
		return "ECDSA";
	case OSSL_OP_KEYEXCH:
		return "ECDH";
	default:
		return NULL;
	}
}

static const char *ksp_rsa_operation_name(int operation_id)
{
	return operation_id == OSSL_OP_SIGNATURE ? "RSA" : NULL;
}

#define FN(id, f) { id, (void (*)(void))(f) }

const OSSL_DISPATCH ksp_rsa_keymgmt_functions[] = {
	FN(OSSL_FUNC_KEYMGMT_NEW, ksp_rsa_new),
	FN(OSSL_FUNC_KEYMGMT_LOAD, ksp_km_load),
	FN(OSSL_FUNC_KEYMGMT_FREE, ksp_km_free),
	FN(OSSL_FUNC_KEYMGMT_HAS, ksp_km_has),
	FN(OSSL_FUNC_KEYMGMT_MATCH, ksp_km_match),
	FN(OSSL_FUNC_KEYMGMT_DUP, ksp_km_dup),
	FN(OSSL_FUNC_KEYMGMT_GET_PARAMS, ksp_km_get_params),
	FN(OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, ksp_rsa_gettable),
	FN(OSSL_FUNC_KEYMGMT_SET_PARAMS, ksp_km_set_params),
	FN(OSSL_FUNC_KEYMGMT_SETTABLE_PARAMS, ksp_rsa_settable),
	FN(OSSL_FUNC_KEYMGMT_IMPORT, ksp_km_import),
	FN(OSSL_FUNC_KEYMGMT_IMPORT_TYPES, ksp_rsa_io_types),
	FN(OSSL_FUNC_KEYMGMT_EXPORT, ksp_km_export),
	FN(OSSL_FUNC_KEYMGMT_EXPORT_TYPES, ksp_rsa_io_types),
	FN(OSSL_FUNC_KEYMGMT_GEN_INIT, ksp_rsa_gen_init),
	FN(OSSL_FUNC_KEYMGMT_GEN_SET_PARAMS, ksp_gen_set_params),
	FN(OSSL_FUNC_KEYMGMT_GEN_SETTABLE_PARAMS, ksp_rsa_gen_settable),
	FN(OSSL_FUNC_KEYMGMT_GEN_SET_TEMPLATE, ksp_gen_set_template),
	FN(OSSL_FUNC_KEYMGMT_GEN, ksp_gen),
	FN(OSSL_FUNC_KEYMGMT_GEN_CLEANUP, ksp_gen_cleanup),
	FN(OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, ksp_rsa_operation_name),
	{ 0, NULL },
};

const OSSL_DISPATCH ksp_ec_keymgmt_functions[] = {
	FN(OSSL_FUNC_KEYMGMT_NEW, ksp_ec_new),
	FN(OSSL_FUNC_KEYMGMT_LOAD, ksp_km_load),
	FN(OSSL_FUNC_KEYMGMT_FREE, ksp_km_free),
	FN(OSSL_FUNC_KEYMGMT_HAS, ksp_km_has),
	FN(OSSL_FUNC_KEYMGMT_MATCH, ksp_km_match),
	FN(OSSL_FUNC_KEYMGMT_DUP, ksp_km_dup),
	FN(OSSL_FUNC_KEYMGMT_GET_PARAMS, ksp_km_get_params),
	FN(OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, ksp_ec_gettable),
	FN(OSSL_FUNC_KEYMGMT_SET_PARAMS, ksp_km_set_params),
	FN(OSSL_FUNC_KEYMGMT_SETTABLE_PARAMS, ksp_ec_settable),
	FN(OSSL_FUNC_KEYMGMT_IMPORT, ksp_km_import),
	FN(OSSL_FUNC_KEYMGMT_IMPORT_TYPES, ksp_ec_io_types),
	FN(OSSL_FUNC_KEYMGMT_EXPORT, ksp_km_export),
	FN(OSSL_FUNC_KEYMGMT_EXPORT_TYPES, ksp_ec_io_types),
	FN(OSSL_FUNC_KEYMGMT_GEN_INIT, ksp_ec_gen_init),
	FN(OSSL_FUNC_KEYMGMT_GEN_SET_PARAMS, ksp_gen_set_params),
	FN(OSSL_FUNC_KEYMGMT_GEN_SETTABLE_PARAMS, ksp_ec_gen_settable),
	FN(OSSL_FUNC_KEYMGMT_GEN_SET_TEMPLATE, ksp_gen_set_template),
	FN(OSSL_FUNC_KEYMGMT_GEN, ksp_gen),
	FN(OSSL_FUNC_KEYMGMT_GEN_CLEANUP, ksp_gen_cleanup),
	FN(OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, ksp_ec_operation_name),
	{ 0, NULL },
};
