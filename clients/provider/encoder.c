/*
 * Encoders of the public half of this provider's keys, as a DER or PEM
 * SubjectPublicKeyInfo ("openssl pkey -pubout"). Without them writing the
 * public key of a keysvc key needs another provider's encoder and an export
 * to it, and fails when keysvc is the only provider loaded. There is no
 * private-key encoder: a keysvcd key's private half cannot be written.
 */
#include <stdlib.h>

#include <openssl/bio.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "clients/provider/provider.h"

struct ksp_enc {
	struct ksp_ctx *ctx;
	int pem;
};

static void *enc_newctx(struct ksp_ctx *ctx, int pem)
{
	struct ksp_enc *e = calloc(1, sizeof(*e));

	if (e == NULL)
		return NULL;
	e->ctx = ctx;
	e->pem = pem;
	return e;
}

static void *enc_der_newctx(void *provctx)
{
	return enc_newctx(provctx, 0);
}

static void *enc_pem_newctx(void *provctx)
{
	return enc_newctx(provctx, 1);
}

static void enc_freectx(void *vctx)
{
	free(vctx);
}

/* The public key alone, not with the private key (which OpenSSL asks for a key pair). */
static int enc_does_selection(void *provctx, int selection)
{
	(void)provctx;
	return (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0 &&
	       (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) == 0;
}

static int enc_encode(void *vctx, OSSL_CORE_BIO *cout, const void *obj_raw, const OSSL_PARAM obj_abstract[],
		      int selection, OSSL_PASSPHRASE_CALLBACK *cb, void *cbarg)
{
	struct ksp_enc *e = vctx;
	const struct ksp_key *key = obj_raw;
	BIO *out;
	int ok;

	(void)cb;
	(void)cbarg;
	if (key == NULL || obj_abstract != NULL || !enc_does_selection(NULL, selection) || key->pub == NULL ||
	    !(key->parts & OSSL_KEYMGMT_SELECT_PUBLIC_KEY))
		return 0;
	if ((out = BIO_new_from_core_bio(e->ctx->libctx, cout)) == NULL)
		return 0;
	ok = e->pem ? PEM_write_bio_PUBKEY(out, key->pub) : i2d_PUBKEY_bio(out, key->pub);
	BIO_free(out);
	return ok == 1;
}

#define FN(id, f) { id, (void (*)(void))(f) }

const OSSL_DISPATCH ksp_spki_der_encoder_functions[] = {
	FN(OSSL_FUNC_ENCODER_NEWCTX, enc_der_newctx),
	FN(OSSL_FUNC_ENCODER_FREECTX, enc_freectx),
	FN(OSSL_FUNC_ENCODER_DOES_SELECTION, enc_does_selection),
	FN(OSSL_FUNC_ENCODER_ENCODE, enc_encode),
	{ 0, NULL },
};

const OSSL_DISPATCH ksp_spki_pem_encoder_functions[] = {
	FN(OSSL_FUNC_ENCODER_NEWCTX, enc_pem_newctx),
	FN(OSSL_FUNC_ENCODER_FREECTX, enc_freectx),
	FN(OSSL_FUNC_ENCODER_DOES_SELECTION, enc_does_selection),
	FN(OSSL_FUNC_ENCODER_ENCODE, enc_encode),
	{ 0, NULL },
};
