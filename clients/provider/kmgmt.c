/*
 * Key management for keysvc keys: opaque RSA and EC keys whose public
 * parameters are answered from the public key keysvcd gave us, and whose
 * private half exists only in the token.
 */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/params.h>

#include "clients/provider/provider.h"

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

static int ksp_km_has(const void *keydata, int selection)
{
	const struct ksp_key *key = keydata;

	/* The private half is in the token; for OpenSSL's purposes the key has it. */
	(void)selection;
	return key != NULL && key->pub != NULL;
}

static int ksp_km_match(const void *a, const void *b, int selection)
{
	const struct ksp_key *ka = a, *kb = b;

	if (ka == NULL || kb == NULL || ka->is_ec != kb->is_ec)
		return 0;
	/* Two keysvc keys are the same key when their public halves are. */
	if (selection & OSSL_KEYMGMT_SELECT_KEYPAIR)
		return EVP_PKEY_eq(ka->pub, kb->pub) == 1;
	/* Parameters only: the curve for EC; RSA keys have none to differ in. */
	if ((selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) && ka->is_ec)
		return EVP_PKEY_parameters_eq(ka->pub, kb->pub) == 1;
	return 1;
}

/* The key is never changed once made: a duplicate is another reference to it. */
static void *ksp_km_dup(const void *keydata, int selection)
{
	struct ksp_key *key;

	(void)selection;
	/* OpenSSL hands the key over as const; its reference count is ours to change. */
	memcpy(&key, &keydata, sizeof(key));
	if (key == NULL)
		return NULL;
	atomic_fetch_add(&key->refs, 1);
	return key;
}

static int ksp_km_get_params(void *keydata, OSSL_PARAM params[])
{
	struct ksp_key *key = keydata;

	if (key == NULL)
		return 0;
	/* bits, security-bits, max-size, group, n, e, pub: all public, all answered by the public key. */
	return EVP_PKEY_get_params(key->pub, params);
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

struct export_cb {
	OSSL_CALLBACK *cb;
	void *arg;
};

static int ksp_km_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
	struct ksp_key *key = keydata;
	OSSL_PARAM *params = NULL;
	int ok;

	if (key == NULL)
		return 0;
	/* Public parts only: there is nothing else here to give. */
	if (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY)
		return 0;
	if (EVP_PKEY_todata(key->pub, EVP_PKEY_PUBLIC_KEY, &params) != 1)
		return 0;
	ok = cb(params, cbarg);
	OSSL_PARAM_free(params);
	return ok;
}

static const OSSL_PARAM *ksp_rsa_export_types(int selection)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
		OSSL_PARAM_END,
	};

	return (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) ? NULL : params;
}

static const OSSL_PARAM *ksp_ec_export_types(int selection)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
		OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
		OSSL_PARAM_END,
	};

	return (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) ? NULL : params;
}

static const char *ksp_ec_operation_name(int operation_id)
{
	return operation_id == OSSL_OP_SIGNATURE ? "ECDSA" : NULL;
}

static const char *ksp_rsa_operation_name(int operation_id)
{
	return operation_id == OSSL_OP_SIGNATURE ? "RSA" : NULL;
}

#define FN(id, f) { id, (void (*)(void))(f) }

const OSSL_DISPATCH ksp_rsa_keymgmt_functions[] = {
	FN(OSSL_FUNC_KEYMGMT_LOAD, ksp_km_load),
	FN(OSSL_FUNC_KEYMGMT_FREE, ksp_km_free),
	FN(OSSL_FUNC_KEYMGMT_HAS, ksp_km_has),
	FN(OSSL_FUNC_KEYMGMT_MATCH, ksp_km_match),
	FN(OSSL_FUNC_KEYMGMT_DUP, ksp_km_dup),
	FN(OSSL_FUNC_KEYMGMT_GET_PARAMS, ksp_km_get_params),
	FN(OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, ksp_rsa_gettable),
	FN(OSSL_FUNC_KEYMGMT_EXPORT, ksp_km_export),
	FN(OSSL_FUNC_KEYMGMT_EXPORT_TYPES, ksp_rsa_export_types),
	FN(OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, ksp_rsa_operation_name),
	{ 0, NULL },
};

const OSSL_DISPATCH ksp_ec_keymgmt_functions[] = {
	FN(OSSL_FUNC_KEYMGMT_LOAD, ksp_km_load),
	FN(OSSL_FUNC_KEYMGMT_FREE, ksp_km_free),
	FN(OSSL_FUNC_KEYMGMT_HAS, ksp_km_has),
	FN(OSSL_FUNC_KEYMGMT_MATCH, ksp_km_match),
	FN(OSSL_FUNC_KEYMGMT_DUP, ksp_km_dup),
	FN(OSSL_FUNC_KEYMGMT_GET_PARAMS, ksp_km_get_params),
	FN(OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, ksp_ec_gettable),
	FN(OSSL_FUNC_KEYMGMT_EXPORT, ksp_km_export),
	FN(OSSL_FUNC_KEYMGMT_EXPORT_TYPES, ksp_ec_export_types),
	FN(OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, ksp_ec_operation_name),
	{ 0, NULL },
};
