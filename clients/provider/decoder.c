/*
 * Decoders for key reference files (keyref.h), so that a program reading
 * a PEM private key through OpenSSL 3 (PEM_read_bio_PrivateKey,
 * SSL_CTX_use_PrivateKey_file, OSSL_DECODER) gets a keysvc key. Two steps,
 * as OpenSSL chains its own decoders and as pkcs11-provider does for its
 * URI files:
 *   PEM -> DER         the "KEYSVC KEY REFERENCE" block, passed on as
 *                      DER with structure KeysvcKeyReference; any other
 *                      PEM is left to the other providers' decoders
 *   DER -> RSA or EC   keysvcd is asked for the named key (key.public);
 *                      the key goes to kmgmt.c by reference, the same
 *                      object the keysvc: store loader makes
 * A decoder that does not recognise its input returns 1 without an object
 * ("carry on"): OpenSSL then tries the next one, and drops the errors it
 * raised. A reference that cannot be used (bad field, another keysvcd,
 * a key keysvcd does not have or refuses) returns 0: no other decoder
 * could read it, and OpenSSL keeps the error that says why for the program.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/params.h>
#include <openssl/pem.h>

#include "clients/provider/keyref.h"
#include "clients/provider/provider.h"

/* A line of a PEM block (64 base64 characters), and a whole reference block, with room to spare. */
#define KEYREF_LINE_MAX 256
#define KEYREF_PEM_MAX 4096
/* Text before the first PEM block that is read through, as PEM readers skip it. */
#define KEYREF_SKIP_MAX (64 * 1024)

/* Read at most @max bytes of @cin; *@len > @max says there was more. NULL on failure. */
static unsigned char *read_bounded(struct ksp_ctx *ctx, OSSL_CORE_BIO *cin, size_t max, size_t *len)
{
	unsigned char *buf;
	BIO *bio;
	int n;

	*len = 0;
	if ((bio = BIO_new_from_core_bio(ctx->libctx, cin)) == NULL)
		return NULL;
	if ((buf = malloc(max + 2)) == NULL) {
		BIO_free(bio);
		return NULL;
	}
	while (*len <= max && (n = BIO_read(bio, buf + *len, (int)(max + 1 - *len))) > 0)
		*len += (size_t)n;
	buf[*len] = '\0';
	BIO_free(bio);
	return buf;
}

static void *ksp_dec_newctx(void *provctx)
{
	/* Nothing per decoding: the provider's context is the decoder's. */
	return provctx;
}

static void ksp_dec_freectx(void *dctx)
{
	(void)dctx;
}

/*
 * The first PEM block of the input, as every PEM reader takes it (text
 * before it skipped), read line by line so that the input is left just
 * after it, where a store reading several objects continues. Only a
 * KEYSVC KEY REFERENCE block is read further; it is at most
 * KEYREF_PEM_MAX bytes, a few times what key-ref writes.
 */
static int ksp_pem_decode(void *dctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *object_cb,
			  void *object_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
	static const char begin[] = "-----BEGIN " KSP_KEYREF_PEM_LABEL "-----";
	struct ksp_ctx *ctx = dctx;
	char line[KEYREF_LINE_MAX], text[KEYREF_PEM_MAX], *label = NULL, *header = NULL;
	unsigned char *der = NULL;
	size_t used = 0, skipped = 0, n;
	long der_len = 0;
	int got;
	OSSL_PARAM params[3];
	BIO *in, *mem = NULL;
	int r = 1;

	(void)selection;
	(void)pw_cb;
	(void)pw_cbarg;
	if ((in = BIO_new_from_core_bio(ctx->libctx, cin)) == NULL)
		return 1;
	do {
		/* No PEM block at all, or not near the start: not what key-ref writes. */
		if (skipped > KEYREF_SKIP_MAX || (got = BIO_gets(in, line, sizeof(line))) <= 0)
			goto out;
		skipped += (size_t)got;
	} while (strncmp(line, "-----BEGIN ", 11) != 0);
	/* Another block (a PEM key, a certificate): the other decoders' business. */
	if (strncmp(line, begin, sizeof(begin) - 1) != 0 || strspn(line + sizeof(begin) - 1, "\r\n") !=
	    strlen(line + sizeof(begin) - 1))
		goto out;
	r = 0;
	for (;;) {
		n = strlen(line);
		if (used + n >= sizeof(text)) {
			ksp_raise(ctx, KSP_R_BAD_URI, "key reference: a " KSP_KEYREF_PEM_LABEL
				  " block longer than %d bytes", KEYREF_PEM_MAX);
			goto out;
		}
		memcpy(text + used, line, n);
		used += n;
		if (strncmp(line, "-----END ", 9) == 0)
			break;
		if (BIO_gets(in, line, sizeof(line)) <= 0)
			break;          /* cut short: PEM_read_bio below says so */
	}
	if ((mem = BIO_new_mem_buf(text, (int)used)) == NULL)
		goto out;
	if (PEM_read_bio(mem, &label, &header, &der, &der_len) <= 0 ||
	    strcmp(label, KSP_KEYREF_PEM_LABEL) != 0) {
		ksp_raise(ctx, KSP_R_BAD_URI, "key reference: a " KSP_KEYREF_PEM_LABEL " block that is not valid PEM");
		goto out;
	}
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, der, (size_t)der_len);
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE,
						     (char *)KSP_KEYREF_STRUCTURE, 0);
	params[2] = OSSL_PARAM_construct_end();
	r = object_cb(params, object_cbarg);
out:
	OPENSSL_free(label);
	OPENSSL_free(header);
	OPENSSL_free(der);
	BIO_free(mem);
	BIO_free(in);
	return r;
}

/* The socket the provider talks to: openssl.cnf's, else $KEYSVC_SOCKET, else the default. */
static const char *provider_socket(const struct ksp_ctx *ctx)
{
	const char *path = ctx->socket_path[0] ? ctx->socket_path : getenv(KSP_SOCKET_ENV);

	return path != NULL && path[0] != '\0' ? path : KEYSVC_DEFAULT_SOCKET;
}

/* Whether @a and @b name one socket: the same path, or the same file under two paths. */
static int same_socket(const char *a, const char *b)
{
	struct stat sa, sb;

	if (strcmp(a, b) == 0)
		return 1;
	return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* The DER body of a key reference to a key of type @want ("RSA" or "EC"). */
static int der_decode(struct ksp_ctx *ctx, const char *want, OSSL_CORE_BIO *cin,
		      OSSL_CALLBACK *object_cb, void *object_cbarg)
{
	struct ksp_keyref ref;
	struct ksp_key *key = NULL;
	unsigned char *der;
	OSSL_PARAM params[4];
	char why[160];
	size_t len;
	int type = OSSL_OBJECT_PKEY, r = 1, e;

	if ((der = read_bounded(ctx, cin, KSP_KEYREF_DER_MAX, &len)) == NULL)
		return 1;
	if (len > KSP_KEYREF_DER_MAX || (e = ksp_keyref_decode(der, len, &ref, why, sizeof(why))) == -ENOMSG)
		goto out;
	r = 0;
	if (e < 0) {
		ksp_raise(ctx, KSP_R_BAD_URI, "key reference: %s", why);
		goto out;
	}
	/*
	 * One connection serves every key of this provider: a reference made
	 * for another keysvcd would sign with whatever key of that name this
	 * one has. Said, not guessed.
	 */
	if (ref.socket[0] != '\0' && !same_socket(ref.socket, provider_socket(ctx))) {
		ksp_raise(ctx, KSP_R_BAD_CONFIG, "key reference to %s: made for keysvcd at %s, but the "
			  "keysvc provider uses %s; set socket = %s in its openssl.cnf section",
			  ref.name, ref.socket, provider_socket(ctx), ref.socket);
		goto out;
	}
	if ((key = ksp_key_fetch(ctx, ref.name)) == NULL)
		goto out;
	/* The other type's decoder takes it. */
	if (strcmp(key->is_ec ? "EC" : "RSA", want) != 0) {
		r = 1;
		goto out;
	}
	params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE,
						     key->is_ec ? (char *)"EC" : (char *)"RSA", 0);
	/* The key manager's load takes its own reference; ours is dropped below. */
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &key, sizeof(key));
	params[3] = OSSL_PARAM_construct_end();
	r = object_cb(params, object_cbarg);
out:
	ksp_key_free(key);
	free(der);
	return r;
}

static int ksp_der_rsa_decode(void *dctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *object_cb,
			      void *object_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
	(void)selection;
	(void)pw_cb;
	(void)pw_cbarg;
	return der_decode(dctx, "RSA", cin, object_cb, object_cbarg);
}

static int ksp_der_ec_decode(void *dctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *object_cb,
			     void *object_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
	(void)selection;
	(void)pw_cb;
	(void)pw_cbarg;
	return der_decode(dctx, "EC", cin, object_cb, object_cbarg);
}

#define FN(id, f) { id, (void (*)(void))(f) }

const OSSL_DISPATCH ksp_pem_decoder_functions[] = {
	FN(OSSL_FUNC_DECODER_NEWCTX, ksp_dec_newctx),
	FN(OSSL_FUNC_DECODER_FREECTX, ksp_dec_freectx),
	FN(OSSL_FUNC_DECODER_DECODE, ksp_pem_decode),
	{ 0, NULL },
};

const OSSL_DISPATCH ksp_der_rsa_decoder_functions[] = {
	FN(OSSL_FUNC_DECODER_NEWCTX, ksp_dec_newctx),
	FN(OSSL_FUNC_DECODER_FREECTX, ksp_dec_freectx),
	FN(OSSL_FUNC_DECODER_DECODE, ksp_der_rsa_decode),
	{ 0, NULL },
};

const OSSL_DISPATCH ksp_der_ec_decoder_functions[] = {
	FN(OSSL_FUNC_DECODER_NEWCTX, ksp_dec_newctx),
	FN(OSSL_FUNC_DECODER_FREECTX, ksp_dec_freectx),
	FN(OSSL_FUNC_DECODER_DECODE, ksp_der_ec_decode),
	{ 0, NULL },
};
