/*
 * Signatures with keysvc keys. Hashing happens here (in the application's
 * providers); only the digest travels to keysvcd, which signs it in the
 * token. Except for a key without the purpose "sign" (a tls or
 * http-signature key, proto/sigform.h): keysvcd signs for it only messages
 * whose form it has checked, so digest-sign buffers the message (at most
 * KS_SIGN_DATA_MAX bytes) and sends it whole. RSA: PKCS#1 v1.5 and PSS with salt = digest length (what TLS 1.3
 * uses); EC: ECDSA, DER output. Verification needs no private key and is
 * done here with the public key, by the application's providers; so is
 * everything with a plain key (kmgmt.c), which keysvcd does not hold.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "clients/provider/provider.h"
#include "proto/alg.h"

struct ksp_sig {
	struct ksp_ctx *ctx;
	struct ksp_key *key;
	int is_ec;
	int verify;                  /* the operation initialised last is a verification */
	char mdname[32];             /* "SHA256", ...; empty until chosen */
	EVP_MD_CTX *mdctx;           /* digest-sign only */
	uint8_t *msg;                /* digest-sign of a key that signs messages: the message so far */
	size_t msg_len;
	int msg_over;                /* it went past KS_SIGN_DATA_MAX */
	int pad;                     /* RSA_PKCS1_PADDING or RSA_PKCS1_PSS_PADDING */
	int saltlen;                 /* RSA_PSS_SALTLEN_DIGEST or a byte count */
};

static void *sig_newctx(void *provctx, int is_ec)
{
	struct ksp_sig *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->ctx = provctx;
	s->is_ec = is_ec;
	s->pad = RSA_PKCS1_PADDING;
	s->saltlen = RSA_PSS_SALTLEN_DIGEST;
	return s;
}

static void *rsa_newctx(void *provctx, const char *propq)
{
	(void)propq;
	return sig_newctx(provctx, 0);
}

static void *ecdsa_newctx(void *provctx, const char *propq)
{
	(void)propq;
	return sig_newctx(provctx, 1);
}

static void sig_freectx(void *vctx)
{
	struct ksp_sig *s = vctx;

	if (s == NULL)
		return;
	ksp_key_free(s->key);
	EVP_MD_CTX_free(s->mdctx);
	free(s->msg);
	free(s);
}

static void *sig_dupctx(void *vctx)
{
	struct ksp_sig *s = vctx, *d = malloc(sizeof(*d));

	if (d == NULL)
		return NULL;
	*d = *s;
	d->mdctx = NULL;
	d->msg = NULL;
	if (s->msg != NULL) {
		if ((d->msg = malloc(KS_SIGN_DATA_MAX)) == NULL) {
			free(d);
			return NULL;
		}
		memcpy(d->msg, s->msg, s->msg_len);
	}
	if (s->mdctx != NULL) {
		if ((d->mdctx = EVP_MD_CTX_new()) == NULL || !EVP_MD_CTX_copy_ex(d->mdctx, s->mdctx)) {
			EVP_MD_CTX_free(d->mdctx);
			free(d->msg);
			free(d);
			return NULL;
		}
	}
	if (d->key != NULL)
		atomic_fetch_add(&d->key->refs, 1);
	return d;
}

/*
 * Whether the operation is done here by the other providers rather than by
 * keysvcd: a verification (with the public key), or anything with a plain
 * key (kmgmt.c). Those take whatever options the other providers take.
 */
static int done_here(const struct ksp_sig *s)
{
	return s->verify || (s->key != NULL && s->key->plain);
}

/*
 * "SHA2-256", "sha256", "SHA256" all name one digest; keep OpenSSL's short
 * name. Signing takes what keysvcd offers; verifying is done here with the
 * public key, so any digest the application's providers have will do.
 */
static int set_digest(struct ksp_sig *s, const char *name)
{
	EVP_MD *md;
	const char *canon;

	if (name == NULL || name[0] == '\0')
		return 1;
	if ((md = EVP_MD_fetch(s->ctx->libctx, name, KSP_OTHERS)) == NULL)
		return 0;
	canon = NULL;
	for (int a = KS_SIG_NONE + 1; canon == NULL && ks_sig_alg_name((enum ks_sig_alg)a) != NULL; a++)
		if (EVP_MD_is_a(md, ks_sig_alg_digest((enum ks_sig_alg)a)))
			canon = ks_sig_alg_digest((enum ks_sig_alg)a);
	if (done_here(s) && canon == NULL)
		canon = EVP_MD_get0_name(md);
	if (canon == NULL || strlen(canon) >= sizeof(s->mdname) ||
	    (!done_here(s) && ks_sig_alg_find(s->is_ec ? KS_FAMILY_EC : KS_FAMILY_RSA, 0,
					   (size_t)EVP_MD_get_size(md)) == KS_SIG_NONE)) {
		EVP_MD_free(md);
		ksp_raise(s->ctx, KSP_R_UNSUPPORTED, "digest %s is not offered by keysvcd for this key", name);
		return 0;
	}
	memcpy(s->mdname, canon, strlen(canon) + 1);
	EVP_MD_free(md);
	return 1;
}

/*
 * rsa_pss_saltlen as OpenSSL's own RSA signature reads it: "digest", "max",
 * "auto" or a number, where -1, -2 and -3 are RSA_PSS_SALTLEN_DIGEST,
 * _AUTO and _MAX. keysvcd signs with salt = digest length only: "digest",
 * -1 or that number of bytes (checked against the digest when signing).
 */
static int set_saltlen(struct ksp_sig *s, const OSSL_PARAM *p)
{
	char buf[32], *str = buf, *end = NULL;
	long v;
	int len = 0;

	if (p->data_type == OSSL_PARAM_UTF8_STRING) {
		if (!OSSL_PARAM_get_utf8_string(p, &str, sizeof(buf)))
			return 0;
		if (strcmp(buf, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) == 0) {
			len = RSA_PSS_SALTLEN_DIGEST;
		} else if (strcmp(buf, OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO) == 0) {
			len = RSA_PSS_SALTLEN_AUTO;
		} else if (strcmp(buf, OSSL_PKEY_RSA_PSS_SALT_LEN_MAX) == 0) {
			len = RSA_PSS_SALTLEN_MAX;
		} else {
			errno = 0;
			v = strtol(buf, &end, 10);
			if (buf[0] == '\0' || *end != '\0' || errno != 0 || v < RSA_PSS_SALTLEN_MAX || v > 4096) {
				ksp_raise(s->ctx, KSP_R_UNSUPPORTED, "rsa_pss_saltlen:%s: expected digest, max, "
					  "auto or a length in bytes", buf);
				return 0;
			}
			len = (int)v;
		}
	} else if (!OSSL_PARAM_get_int(p, &len)) {
		return 0;
	}
	if (len < RSA_PSS_SALTLEN_MAX ||
	    (!done_here(s) && len < 0 && len != RSA_PSS_SALTLEN_DIGEST)) {
		ksp_raise(s->ctx, KSP_R_UNSUPPORTED, "keysvcd signs PSS with a salt as long as the digest "
			  "only (rsa_pss_saltlen:digest, -1 or the digest's length)");
		return 0;
	}
	s->saltlen = len;
	return 1;
}

static int sig_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
	struct ksp_sig *s = vctx;
	const OSSL_PARAM *p;
	char buf[32], *str = buf;

	if (params == NULL)
		return 1;
	if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL) {
		if (!OSSL_PARAM_get_utf8_string(p, &str, sizeof(buf)) || !set_digest(s, buf))
			return 0;
	}
	if (s->is_ec)
		return 1;
	if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL) {
		int pad = 0;

		if (p->data_type == OSSL_PARAM_UTF8_STRING) {
			if (!OSSL_PARAM_get_utf8_string(p, &str, sizeof(buf)))
				return 0;
			pad = strcasecmp(buf, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0 ? RSA_PKCS1_PADDING :
			      strcasecmp(buf, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0 ? RSA_PKCS1_PSS_PADDING : 0;
		} else if (!OSSL_PARAM_get_int(p, &pad)) {
			return 0;
		}
		if (pad != RSA_PKCS1_PADDING && pad != RSA_PKCS1_PSS_PADDING) {
			ksp_raise(s->ctx, KSP_R_UNSUPPORTED, "keysvcd signs with PKCS#1 v1.5 or PSS padding only");
			return 0;
		}
		s->pad = pad;
	}
	if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL &&
	    !set_saltlen(s, p))
		return 0;
	if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL) {
		struct ksp_sig tmp = *s;

		/* MGF1 always uses the signature's digest in keysvcd. */
		if (!OSSL_PARAM_get_utf8_string(p, &str, sizeof(buf)) || !set_digest(&tmp, buf) ||
		    (s->mdname[0] != '\0' && strcmp(tmp.mdname, s->mdname) != 0)) {
			ksp_raise(s->ctx, KSP_R_UNSUPPORTED, "MGF1 digest must be the signature digest");
			return 0;
		}
	}
	return 1;
}

/*
 * A NULL key is OpenSSL re-initialising the operation with the key it
 * already has (EVP_DigestSignInit(ctx, NULL, NULL, NULL, NULL) and the like
 * pass NULL on purpose): keep ours, fail only if there is none.
 */
static int sig_init_op(struct ksp_sig *s, void *keydata, const OSSL_PARAM params[], int verify)
{
	struct ksp_key *key = keydata;

	s->verify = verify;
	if (key == NULL) {
		if (s->key == NULL) {
			ksp_raise(s->ctx, KSP_R_INTERNAL, "signature operation initialised without a key");
			return 0;
		}
	} else {
		if (key->is_ec != s->is_ec)
			return 0;
		atomic_fetch_add(&key->refs, 1);
		ksp_key_free(s->key);
		s->key = key;
	}
	return sig_set_ctx_params(s, params);
}

static int sig_init(void *vctx, void *keydata, const OSSL_PARAM params[])
{
	return sig_init_op(vctx, keydata, params, 0);
}

static int sig_verify_init(void *vctx, void *keydata, const OSSL_PARAM params[])
{
	return sig_init_op(vctx, keydata, params, 1);
}

static int sig_max_size(struct ksp_sig *s, size_t *siglen)
{
	int n = EVP_PKEY_get_size(s->key->pub);

	if (n <= 0)
		return 0;
	*siglen = (size_t)n;
	return 1;
}

/* The wire algorithm (proto/alg.h) for this context and digest length. */
static const char *wire_alg(struct ksp_sig *s, size_t digest_len)
{
	int pss = !s->is_ec && s->pad == RSA_PKCS1_PSS_PADDING;

	if (pss && s->saltlen != RSA_PSS_SALTLEN_DIGEST && (size_t)s->saltlen != digest_len)
		return NULL;
	return ks_sig_alg_name(ks_sig_alg_find(s->is_ec ? KS_FAMILY_EC : KS_FAMILY_RSA, pss, digest_len));
}

/* The digest inside @in if it is exactly a DigestInfo of a hash keysvcd signs with PKCS#1 v1.5, else NULL. */
static const unsigned char *unwrap_digest_info(const unsigned char *in, size_t *len)
{
	for (int a = KS_SIG_NONE + 1; ks_sig_alg_name((enum ks_sig_alg)a) != NULL; a++) {
		size_t n = 0, dlen = ks_sig_alg_digest_len((enum ks_sig_alg)a);
		const uint8_t *prefix = ks_sig_alg_digest_info((enum ks_sig_alg)a, &n);

		if (ks_sig_alg_family((enum ks_sig_alg)a) == KS_FAMILY_RSA && !ks_sig_alg_is_pss((enum ks_sig_alg)a) &&
		    *len == n + dlen && memcmp(in, prefix, n) == 0) {
			*len = dlen;
			return in + n;
		}
	}
	return NULL;
}

/*
 * An EVP_PKEY_CTX on the key's public half (a plain key: the whole key) in
 * the other providers, set up as this context is: for verification, and
 * for signing with a plain key.
 */
static EVP_PKEY_CTX *pkey_ctx_here(struct ksp_sig *s, int sign)
{
	EVP_PKEY_CTX *pc = NULL;
	EVP_MD *md = NULL;
	int ok = 0;

	if ((pc = EVP_PKEY_CTX_new_from_pkey(s->ctx->libctx, s->key->pub, KSP_OTHERS)) == NULL ||
	    (sign ? EVP_PKEY_sign_init(pc) : EVP_PKEY_verify_init(pc)) <= 0)
		goto out;
	if (s->mdname[0] != '\0' && ((md = EVP_MD_fetch(s->ctx->libctx, s->mdname, KSP_OTHERS)) == NULL ||
				     EVP_PKEY_CTX_set_signature_md(pc, md) <= 0))
		goto out;
	if (!s->is_ec && EVP_PKEY_CTX_set_rsa_padding(pc, s->pad) <= 0)
		goto out;
	if (!s->is_ec && s->pad == RSA_PKCS1_PSS_PADDING &&
	    (EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, s->saltlen) <= 0 ||
	     (md != NULL && EVP_PKEY_CTX_set_rsa_mgf1_md(pc, md) <= 0)))
		goto out;
	ok = 1;
out:
	EVP_MD_free(md);
	if (!ok) {
		EVP_PKEY_CTX_free(pc);
		pc = NULL;
	}
	return pc;
}

/* A plain key's signature, by the other providers: nothing goes to keysvcd. */
static int sign_here(struct ksp_sig *s, unsigned char *sig, size_t *siglen, size_t sigsize,
		     const unsigned char *tbs, size_t tbslen)
{
	EVP_PKEY_CTX *pc = pkey_ctx_here(s, 1);
	size_t len = sigsize;
	int r;

	r = pc != NULL && EVP_PKEY_sign(pc, sig, &len, tbs, tbslen) == 1;
	if (r)
		*siglen = len;
	EVP_PKEY_CTX_free(pc);
	return r;
}

static int sign_digest(struct ksp_sig *s, unsigned char *sig, size_t *siglen, size_t sigsize,
		       const unsigned char *tbs, size_t tbslen)
{
	uint8_t *out = NULL;
	size_t out_len = 0, max = 0;
	const char *alg;

	if (s->key->plain)
		return sign_here(s, sig, siglen, sigsize, tbs, tbslen);
	/*
	 * RSA with no digest set means, to OpenSSL, PKCS#1 v1.5 padding of the
	 * input as given. keysvcd builds the DigestInfo itself, so it can do
	 * that only for an input that is one: sign its digest. Anything else
	 * (a bare digest, PSS) would be signed differently from what was asked.
	 * ECDSA signs the input hash as given either way; its length names the
	 * wire algorithm (the daemon takes 32 or 48 bytes).
	 */
	if (!s->is_ec && s->mdname[0] == '\0' &&
	    (s->pad != RSA_PKCS1_PADDING || (tbs = unwrap_digest_info(tbs, &tbslen)) == NULL)) {
		ksp_raise(s->ctx, KSP_R_UNSUPPORTED,
			  "set a digest: keysvcd signs digests (RSA with no digest set takes only a "
			  "DER DigestInfo of SHA-256/384/512, with PKCS#1 v1.5 padding)");
		return 0;
	}
	if (s->mdname[0] != '\0' && (size_t)EVP_MD_get_size(EVP_get_digestbyname(s->mdname)) != tbslen) {
		ksp_raise(s->ctx, KSP_R_UNSUPPORTED, "input is not a %s digest", s->mdname);
		return 0;
	}
	if ((alg = wire_alg(s, tbslen)) == NULL) {
		if (s->is_ec)
			ksp_raise(s->ctx, KSP_R_UNSUPPORTED, "keysvcd signs ECDSA on SHA-256 or SHA-384 "
				  "digests (32 or 48 bytes) only, not %zu bytes", tbslen);
		else if (s->pad == RSA_PKCS1_PSS_PADDING)
			ksp_raise(s->ctx, KSP_R_UNSUPPORTED, "keysvcd signs RSA-PSS on SHA-256/384/512 "
				  "digests with a salt as long as the digest only");
		else
			ksp_raise(s->ctx, KSP_R_UNSUPPORTED, "keysvcd signs RSA PKCS#1 v1.5 on SHA-256/384/512 "
				  "digests only, not %zu bytes", tbslen);
		return 0;
	}
	/* Before the daemon signs: a signature it made (and audited) must not be thrown away. */
	if (!sig_max_size(s, &max))
		return 0;
	if (sigsize < max) {
		ksp_raise(s->ctx, KSP_R_BUFFER_TOO_SMALL, "%zu bytes for a signature of up to %zu", sigsize, max);
		return 0;
	}
	if (!ksp_sign_digest(s->key, alg, tbs, tbslen, &out, &out_len))
		return 0;
	if (out_len > sigsize) {
		free(out);
		ksp_raise(s->ctx, KSP_R_INTERNAL, "signature larger than the buffer");
		return 0;
	}
	memcpy(sig, out, out_len);
	*siglen = out_len;
	free(out);
	return 1;
}

static int sig_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
		    const unsigned char *tbs, size_t tbslen)
{
	struct ksp_sig *s = vctx;

	if (s->key == NULL)
		return 0;
	if (sig == NULL)
		return sig_max_size(s, siglen);
	return sign_digest(s, sig, siglen, sigsize, tbs, tbslen);
}

static int digest_init(struct ksp_sig *s, const char *mdname, void *keydata, const OSSL_PARAM params[],
		       int verify)
{
	EVP_MD *md = NULL;
	int r = 0;

	/* Whatever happens below, the digest of an earlier message is gone: a
	 * failed (re-)initialisation must leave nothing that could be signed. */
	EVP_MD_CTX_free(s->mdctx);
	s->mdctx = NULL;
	free(s->msg);
	s->msg = NULL;
	s->msg_len = 0;
	s->msg_over = 0;
	if (!sig_init_op(s, keydata, NULL, verify))
		goto out;
	/* A re-initialisation without a digest name keeps the digest in use. */
	if (mdname != NULL && mdname[0] != '\0') {
		if (!set_digest(s, mdname))
			goto out;
	} else if (s->mdname[0] == '\0' && !set_digest(s, "SHA256")) {
		goto out;
	}
	if (!sig_set_ctx_params(s, params))
		goto out;
	if ((s->mdctx = EVP_MD_CTX_new()) == NULL ||
	    (md = EVP_MD_fetch(s->ctx->libctx, s->mdname, KSP_OTHERS)) == NULL ||
	    !EVP_DigestInit_ex2(s->mdctx, md, NULL))
		goto out;
	r = 1;
out:
	if (!r) {
		EVP_MD_CTX_free(s->mdctx);
		s->mdctx = NULL;
	}
	EVP_MD_free(md);
	return r;
}

static int sig_digest_sign_init(void *vctx, const char *mdname, void *keydata,
				const OSSL_PARAM params[])
{
	return digest_init(vctx, mdname, keydata, params, 0);
}

static int sig_digest_verify_init(void *vctx, const char *mdname, void *keydata,
				  const OSSL_PARAM params[])
{
	return digest_init(vctx, mdname, keydata, params, 1);
}

static int sig_digest_sign_update(void *vctx, const unsigned char *data, size_t len)
{
	struct ksp_sig *s = vctx;

	if (s->mdctx == NULL)
		return 0;
	if (s->verify || !ksp_key_signs_messages(s->key))
		return EVP_DigestUpdate(s->mdctx, data, len);
	/* Refused at the final call, with the reason, rather than as a failed update. */
	if (s->msg_over || len > KS_SIGN_DATA_MAX - s->msg_len) {
		s->msg_over = 1;
		return 1;
	}
	if (s->msg == NULL && (s->msg = malloc(KS_SIGN_DATA_MAX)) == NULL)
		return 0;
	memcpy(s->msg + s->msg_len, data, len);
	s->msg_len += len;
	return 1;
}

/* The message buffered by digest-sign, signed by keysvcd with the context's digest. */
static int sign_message(struct ksp_sig *s, unsigned char *sig, size_t *siglen, size_t sigsize)
{
	uint8_t *out = NULL;
	size_t out_len = 0, max = 0;
	const char *alg;

	if (s->msg_over) {
		ksp_raise(s->ctx, KSP_R_UNSUPPORTED,
			  "key %s signs whole messages of at most %d bytes (it lacks the purpose sign)",
			  s->key->name, KS_SIGN_DATA_MAX);
		return 0;
	}
	if ((alg = wire_alg(s, (size_t)EVP_MD_get_size(EVP_MD_CTX_get0_md(s->mdctx)))) == NULL) {
		ksp_raise(s->ctx, KSP_R_UNSUPPORTED,
			  "keysvcd signs with SHA-256/384/512 (PSS with salt = digest length) only");
		return 0;
	}
	if (!sig_max_size(s, &max))
		return 0;
	if (sigsize < max) {
		ksp_raise(s->ctx, KSP_R_BUFFER_TOO_SMALL, "%zu bytes for a signature of up to %zu", sigsize, max);
		return 0;
	}
	if (!ksp_sign_data(s->key, alg, s->msg != NULL ? s->msg : (const uint8_t *)"", s->msg_len,
			   &out, &out_len))
		return 0;
	if (out_len > sigsize) {
		free(out);
		ksp_raise(s->ctx, KSP_R_INTERNAL, "signature larger than the buffer");
		return 0;
	}
	memcpy(sig, out, out_len);
	*siglen = out_len;
	free(out);
	return 1;
}

static int sig_digest_sign_final(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize)
{
	struct ksp_sig *s = vctx;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	if (s->key == NULL || s->mdctx == NULL)
		return 0;
	/* A size query must leave the digest running for the real call. */
	if (sig == NULL)
		return sig_max_size(s, siglen);
	if (ksp_key_signs_messages(s->key))
		return sign_message(s, sig, siglen, sigsize);
	if (!EVP_DigestFinal_ex(s->mdctx, md, &md_len))
		return 0;
	return sign_digest(s, sig, siglen, sigsize, md, md_len);
}

/*
 * Verification needs no private key: it is done with the public key we hold,
 * by the application's providers (ctx->libctx), and nothing goes to keysvcd.
 * OpenSSL 3.0 verifies with the key's own provider and does not fall back.
 */
static int verify_with_public(struct ksp_sig *s, const unsigned char *sig, size_t siglen,
			      const unsigned char *tbs, size_t tbslen)
{
	EVP_PKEY_CTX *pc;
	int r;

	if (s->key == NULL || (pc = pkey_ctx_here(s, 0)) == NULL)
		return 0;
	r = EVP_PKEY_verify(pc, sig, siglen, tbs, tbslen) == 1;
	EVP_PKEY_CTX_free(pc);
	return r;
}

static int sig_verify(void *vctx, const unsigned char *sig, size_t siglen,
		      const unsigned char *tbs, size_t tbslen)
{
	return verify_with_public(vctx, sig, siglen, tbs, tbslen);
}

static int sig_digest_verify_final(void *vctx, const unsigned char *sig, size_t siglen)
{
	struct ksp_sig *s = vctx;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	if (s->key == NULL || s->mdctx == NULL || !EVP_DigestFinal_ex(s->mdctx, md, &md_len))
		return 0;
	return verify_with_public(s, sig, siglen, md, md_len);
}

/* DER AlgorithmIdentifier for X.509 and CSR signing with PKCS#1 v1.5 or ECDSA. */
static int algorithm_id(struct ksp_sig *s, OSSL_PARAM *p)
{
	X509_ALGOR *a = X509_ALGOR_new();
	unsigned char *der = NULL;
	const char *md = s->mdname[0] ? s->mdname : "SHA256";
	int nid, len, ok = 0;

	if (s->is_ec)
		nid = strcmp(md, "SHA384") == 0 ? NID_ecdsa_with_SHA384 :
		      strcmp(md, "SHA512") == 0 ? NID_ecdsa_with_SHA512 : NID_ecdsa_with_SHA256;
	else if (s->pad == RSA_PKCS1_PADDING)
		nid = strcmp(md, "SHA384") == 0 ? NID_sha384WithRSAEncryption :
		      strcmp(md, "SHA512") == 0 ? NID_sha512WithRSAEncryption : NID_sha256WithRSAEncryption;
	else {
		/* RSASSA-PSS AlgorithmIdentifiers carry parameters we do not build. */
		ksp_raise(s->ctx, KSP_R_UNSUPPORTED,
			  "certificates and CSRs signed with RSA-PSS are not offered; use PKCS#1 v1.5");
		nid = NID_undef;
	}
	if (a != NULL && nid != NID_undef &&
	    X509_ALGOR_set0(a, OBJ_nid2obj(nid), s->is_ec ? V_ASN1_UNDEF : V_ASN1_NULL, NULL) &&
	    (len = i2d_X509_ALGOR(a, &der)) > 0)
		ok = OSSL_PARAM_set_octet_string(p, der, (size_t)len);
	OPENSSL_free(der);
	X509_ALGOR_free(a);
	return ok;
}

static int sig_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
	struct ksp_sig *s = vctx;
	EVP_PKEY_CTX *pc;
	OSSL_PARAM *p;
	int r;

	/* A plain key's AlgorithmIdentifier (RSA-PSS too) is the other providers'. */
	if (s->key != NULL && s->key->plain) {
		if ((pc = pkey_ctx_here(s, !s->verify)) == NULL)
			return 0;
		r = EVP_PKEY_CTX_get_params(pc, params) == 1;
		EVP_PKEY_CTX_free(pc);
		return r;
	}
	if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID)) != NULL &&
	    !algorithm_id(s, p))
		return 0;
	if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL &&
	    !OSSL_PARAM_set_utf8_string(p, s->mdname))
		return 0;
	if (!s->is_ec) {
		if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL &&
		    !(p->data_type == OSSL_PARAM_INTEGER ? OSSL_PARAM_set_int(p, s->pad) :
		      OSSL_PARAM_set_utf8_string(p, s->pad == RSA_PKCS1_PSS_PADDING ?
						 OSSL_PKEY_RSA_PAD_MODE_PSS : OSSL_PKEY_RSA_PAD_MODE_PKCSV15)))
			return 0;
		if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL &&
		    !(p->data_type == OSSL_PARAM_INTEGER ? OSSL_PARAM_set_int(p, s->saltlen) :
		      OSSL_PARAM_set_utf8_string(p, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST)))
			return 0;
	}
	return 1;
}

static const OSSL_PARAM *sig_gettable_ctx_params(void *vctx, void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
		OSSL_PARAM_END,
	};

	(void)vctx;
	(void)provctx;
	return params;
}

static const OSSL_PARAM *sig_settable_ctx_params(void *vctx, void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
		OSSL_PARAM_END,
	};

	(void)vctx;
	(void)provctx;
	return params;
}

#define FN(id, f) { id, (void (*)(void))(f) }

const OSSL_DISPATCH ksp_rsa_signature_functions[] = {
	FN(OSSL_FUNC_SIGNATURE_NEWCTX, rsa_newctx),
	FN(OSSL_FUNC_SIGNATURE_FREECTX, sig_freectx),
	FN(OSSL_FUNC_SIGNATURE_DUPCTX, sig_dupctx),
	FN(OSSL_FUNC_SIGNATURE_SIGN_INIT, sig_init),
	FN(OSSL_FUNC_SIGNATURE_SIGN, sig_sign),
	FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, sig_digest_sign_init),
	FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, sig_digest_sign_update),
	FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, sig_digest_sign_final),
	FN(OSSL_FUNC_SIGNATURE_VERIFY_INIT, sig_verify_init),
	FN(OSSL_FUNC_SIGNATURE_VERIFY, sig_verify),
	FN(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, sig_digest_verify_init),
	FN(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, sig_digest_sign_update),
	FN(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, sig_digest_verify_final),
	FN(OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, sig_get_ctx_params),
	FN(OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, sig_gettable_ctx_params),
	FN(OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, sig_set_ctx_params),
	FN(OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, sig_settable_ctx_params),
	{ 0, NULL },
};

const OSSL_DISPATCH ksp_ecdsa_signature_functions[] = {
	FN(OSSL_FUNC_SIGNATURE_NEWCTX, ecdsa_newctx),
	FN(OSSL_FUNC_SIGNATURE_FREECTX, sig_freectx),
	FN(OSSL_FUNC_SIGNATURE_DUPCTX, sig_dupctx),
	FN(OSSL_FUNC_SIGNATURE_SIGN_INIT, sig_init),
	FN(OSSL_FUNC_SIGNATURE_SIGN, sig_sign),
	FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, sig_digest_sign_init),
	FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, sig_digest_sign_update),
	FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, sig_digest_sign_final),
	FN(OSSL_FUNC_SIGNATURE_VERIFY_INIT, sig_verify_init),
	FN(OSSL_FUNC_SIGNATURE_VERIFY, sig_verify),
	FN(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, sig_digest_verify_init),
	FN(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, sig_digest_sign_update),
	FN(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, sig_digest_verify_final),
	FN(OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, sig_get_ctx_params),
	FN(OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, sig_gettable_ctx_params),
	FN(OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, sig_set_ctx_params),
	FN(OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, sig_settable_ctx_params),
	{ 0, NULL },
};
