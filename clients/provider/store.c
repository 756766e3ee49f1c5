/*
 * The store loader for "keysvc:NAME" URIs: one object, the key, passed to
 * the key manager by reference so that it never leaves this provider.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/params.h>

#include "clients/provider/provider.h"

struct ksp_store {
	struct ksp_ctx *ctx;
	char name[KSP_NAME_MAX + 1];
	int done;
};

static int name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > KSP_NAME_MAX || s[0] == '.' || s[0] == '-')
		return 0;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

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
	if (!name_ok(name)) {
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
	struct ksp_key *key;
	OSSL_PARAM params[4];
	int type = OSSL_OBJECT_PKEY, ok;

	(void)pw_cb;
	(void)pw_cbarg;
	if (st->done)
		return 0;
	st->done = 1;
	if ((key = ksp_key_fetch(st->ctx, st->name)) == NULL)
		return 0;
	params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE,
						     key->is_ec ? (char *)"EC" : (char *)"RSA", 0);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &key, sizeof(key));
	params[3] = OSSL_PARAM_construct_end();
	/* The key manager's load takes its own reference; ours is dropped here. */
	ok = object_cb(params, object_cbarg);
	ksp_key_free(key);
	return ok;
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
	static const OSSL_PARAM params[] = { OSSL_PARAM_END };

	(void)provctx;
	return params;
}

static int ksp_store_set_params(void *loaderctx, const OSSL_PARAM params[])
{
	(void)loaderctx;
	(void)params;
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
