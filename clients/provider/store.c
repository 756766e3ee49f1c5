/*
 * The store loader for "keysvc:NAME" URIs: one object, the key. A private
 * key (what signing needs) is passed to the key manager by reference, so it
 * stays an opaque keysvc key; when the caller expects a public key only
 * (OSSL_STORE_expect, "-pubin"), the public key is passed as data, a DER
 * SubjectPublicKeyInfo, which OpenSSL decodes into an ordinary public key.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/params.h>
#include <openssl/store.h>
#include <openssl/x509.h>

#include "clients/provider/provider.h"

struct ksp_store {
	struct ksp_ctx *ctx;
	char name[KSP_NAME_MAX + 1];
	int expect;                  /* OSSL_STORE_INFO_*; 0: anything */
	int done;
};

static void *ksp_store_open(void *provctx, const char *uri)
{
	struct ksp_ctx *ctx = provctx;
	struct ksp_store *st;
	const char *name;

	if (uri == NULL || strncmp(uri, KSP_URI_SCHEME, strlen(KSP_URI_SCHEME)) != 0)
		return NULL;
	name = uri + strlen(KSP_URI_SCHEME);
	/* "keysvc:NAME" and "keysvc:///NAME" name the same key. */
	if (strncmp(name, "///", 3) == 0)
		name += 3;
	if (!ks_key_name_valid(name)) {
		ksp_raise(ctx, KSP_R_BAD_URI, "%s: expected keysvc:NAME with a keysvc key name", uri);
		return NULL;
	}
	if ((st = calloc(1, sizeof(*st))) == NULL)
		return NULL;
	st->ctx = ctx;
	memcpy(st->name, name, strlen(name) + 1);
	return st;
}

static int ksp_store_load(void *loaderctx, OSSL_CALLBACK *object_cb, void *object_cbarg,
			  OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
	struct ksp_store *st = loaderctx;
	struct ksp_key *key = NULL;
	OSSL_PARAM params[5];
	unsigned char *der = NULL;
	int type = OSSL_OBJECT_PKEY, len, r = 0;
	char *data_type;

	(void)pw_cb;
	(void)pw_cbarg;
	if (st->done)
		goto out;
	st->done = 1;
	/* Certificates, CRLs, parameters, names: there is none here, and no reason to ask keysvcd. */
	if (st->expect != 0 && st->expect != OSSL_STORE_INFO_PKEY && st->expect != OSSL_STORE_INFO_PUBKEY)
		goto out;
	if ((key = ksp_key_fetch(st->ctx, st->name)) == NULL)
		goto out;
	data_type = key->is_ec ? (char *)"EC" : (char *)"RSA";
	params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE, data_type, 0);
	if (st->expect == OSSL_STORE_INFO_PUBKEY) {
		if ((len = i2d_PUBKEY(key->pub, &der)) <= 0) {
			ksp_raise(st->ctx, KSP_R_INTERNAL, "key %s: cannot encode its public key", st->name);
			goto out;
		}
		params[2] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE,
							     (char *)"SubjectPublicKeyInfo", 0);
		params[3] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, der, (size_t)len);
		params[4] = OSSL_PARAM_construct_end();
	} else {
		/* The key manager's load takes its own reference; ours is dropped below. */
		params[2] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &key, sizeof(key));
		params[3] = OSSL_PARAM_construct_end();
	}
	r = object_cb(params, object_cbarg);
out:
	OPENSSL_free(der);
	ksp_key_free(key);
	return r;
}

static int ksp_store_eof(void *loaderctx)
{
	return ((struct ksp_store *)loaderctx)->done;
}

static int ksp_store_close(void *loaderctx)
{
	free(loaderctx);
	return 1;
}

static const OSSL_PARAM *ksp_store_settable(void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_int(OSSL_STORE_PARAM_EXPECT, NULL),
		OSSL_PARAM_END,
	};

	(void)provctx;
	return params;
}

static int ksp_store_set_params(void *loaderctx, const OSSL_PARAM params[])
{
	struct ksp_store *st = loaderctx;
	const OSSL_PARAM *p;

	if (params == NULL)
		return 1;
	if ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_EXPECT)) != NULL &&
	    !OSSL_PARAM_get_int(p, &st->expect))
		return 0;
	return 1;
}

#define FN(id, f) { id, (void (*)(void))(f) }

const OSSL_DISPATCH ksp_store_functions[] = {
	FN(OSSL_FUNC_STORE_OPEN, ksp_store_open),
	FN(OSSL_FUNC_STORE_LOAD, ksp_store_load),
	FN(OSSL_FUNC_STORE_EOF, ksp_store_eof),
	FN(OSSL_FUNC_STORE_CLOSE, ksp_store_close),
	FN(OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS, ksp_store_settable),
	FN(OSSL_FUNC_STORE_SET_CTX_PARAMS, ksp_store_set_params),
	{ 0, NULL },
};
