/*
 * Signing a digest with a key on the token: PKCS#1 v1.5 DigestInfo, PSS
 * and ECDSA, whose raw r|s is converted to DER.
 */

#include "pkcs11/token_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <p11-kit/pkcs11.h>

#include "proto/log.h"

/* ---- sign ------------------------------------------------------------------------ */

/* The longest DigestInfo prefix (proto/alg.c: 19 bytes for each SHA-2 hash). */
#define DI_PREFIX_MAX 19

struct sign_arg {
	struct key_ref k;
	enum ks_sig_alg alg;
	const uint8_t *digest;
	size_t digest_len;
	const uint8_t *data;    /* what @digest was computed from; NULL if not known */
	size_t data_len;
	uint8_t sig[KS_SIG_MAX];
	CK_ULONG sig_len;
};

static void pss_params(enum ks_sig_alg alg, size_t digest_len, CK_RSA_PKCS_PSS_PARAMS *pss)
{
	memset(pss, 0, sizeof(*pss));
	switch (ks_sig_alg_digest_len(alg)) {
	case 48:
		pss->hashAlg = CKM_SHA384;
		pss->mgf = CKG_MGF1_SHA384;
		break;
	case 64:
		pss->hashAlg = CKM_SHA512;
		pss->mgf = CKG_MGF1_SHA512;
		break;
	default:
		pss->hashAlg = CKM_SHA256;
		pss->mgf = CKG_MGF1_SHA256;
		break;
	}
	pss->sLen = digest_len;
}

/*
 * CKM_RSA_PKCS over a DigestInfo failed with @rv. tpm2-pkcs11 makes such
 * signatures with a raw RSA decrypt, which a sign-only key may not do; it
 * answers CKR_GENERAL_ERROR like a token in trouble. It is taken for that
 * only when the key cannot decrypt and signs the same digest with PSS
 * right away (the PSS signature is thrown away): then 1, and the token
 * makes PKCS#1 v1.5 signatures by hash-and-sign only from now on.
 */
static int rsa_pkcs_needs_decrypt(struct ks_token *tok, CK_SESSION_HANDLE s,
				  const struct sign_arg *sa, CK_RV rv)
{
	struct ks_caps c;
	CK_BBOOL decrypt = CK_TRUE;
	CK_ATTRIBUTE a = { CKA_DECRYPT, &decrypt, sizeof(decrypt) };
	CK_RSA_PKCS_PSS_PARAMS pss;
	CK_MECHANISM mech = { CKM_RSA_PKCS_PSS, &pss, sizeof(pss) };
	uint8_t sig[KS_SIG_MAX];
	CK_ULONG sig_len = sa->k.raw_sig_len;

	if (rv != CKR_GENERAL_ERROR && rv != CKR_FUNCTION_FAILED &&
	    rv != CKR_KEY_FUNCTION_NOT_PERMITTED && rv != CKR_KEY_TYPE_INCONSISTENT)
		return 0;
	ks_tok_caps_get(tok, &c);
	if (!c.rsa_pss || P11(tok, C_GetAttributeValue, s, sa->k.priv, &a, 1) != CKR_OK ||
	    decrypt != CK_FALSE)
		return 0;
	pss_params(sa->alg, sa->digest_len, &pss);
	if (P11(tok, C_SignInit, s, &mech, sa->k.priv) != CKR_OK)
		return 0;
	rv = P11(tok, C_Sign, s, (CK_BYTE *)(uintptr_t)sa->digest, sa->digest_len, sig, &sig_len);
	explicit_bzero(sig, sizeof(sig));
	if (rv != CKR_OK)
		return 0;
	ks_tok_learn_rsa_pkcs_needs_decrypt(tok);
	return 1;
}

static int64_t sign_clock_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void ks_token_sign_stats(struct ks_token *tok, uint64_t *count, uint64_t *sum_ns)
{
	*count = __atomic_load_n(&tok->sign_count, __ATOMIC_RELAXED);
	*sum_ns = __atomic_load_n(&tok->sign_ns, __ATOMIC_RELAXED);
}

static CK_RV sign_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
		     int *err)
{
	struct sign_arg *sa = arg;
	CK_RSA_PKCS_PSS_PARAMS pss;
	CK_MECHANISM mech = { CKM_RSA_PKCS, NULL, 0 };
	uint8_t input[DI_PREFIX_MAX + 64];
	size_t input_len, prefix_len = 0;
	const uint8_t *prefix = NULL, *in = input;
	CK_MECHANISM_TYPE hashed = 0;
	int64_t t0;
	struct ks_caps caps;
	CK_RV rv;

	(void)retry;
	if ((rv = ks_tok_resolve_key(tok, s, &sa->k, err)) != CKR_OK || *err != 0)
		return rv;
	if (ks_tok_key_family(&sa->k) != ks_sig_alg_family(sa->alg)) {
		*err = -EINVAL;
		return CKR_OK;
	}
	/*
	 * Such a key wants the PIN again (CKU_CONTEXT_SPECIFIC) after every
	 * C_SignInit: a daemon that signs for others unattended must not
	 * satisfy a per-signature login meant for a person.
	 */
	if (sa->k.always_auth) {
		ks_err("key %s needs a login for every signature (CKA_ALWAYS_AUTHENTICATE); "
		       "keysvcd does not sign with such keys", sa->k.name);
		*err = -EOPNOTSUPP;
		return CKR_OK;
	}
	/*
	 * The output buffer is sized from the key, so C_Sign cannot answer
	 * CKR_BUFFER_TOO_SMALL and leave the operation active on a pooled session.
	 */
	if (sa->k.raw_sig_len == 0 || sa->k.raw_sig_len > sizeof(sa->sig)) {
		ks_err("key %s: size or curve not supported for signing", sa->k.name);
		*err = -EOPNOTSUPP;
		return CKR_OK;
	}
	switch (sa->alg) {
	case KS_SIG_RSA_PKCS1_SHA256:
	case KS_SIG_RSA_PKCS1_SHA384:
	case KS_SIG_RSA_PKCS1_SHA512:
		prefix = ks_sig_alg_digest_info(sa->alg, &prefix_len);
		if (prefix == NULL || prefix_len > DI_PREFIX_MAX || sa->digest_len > 64) {
			*err = -EINVAL;
			return CKR_OK;
		}
		break;
	case KS_SIG_RSA_PSS_SHA256:
	case KS_SIG_RSA_PSS_SHA384:
	case KS_SIG_RSA_PSS_SHA512:
		break;
	case KS_SIG_ECDSA_SHA256:
	case KS_SIG_ECDSA_SHA384:
		mech.mechanism = CKM_ECDSA;
		break;
	default:
		*err = -EINVAL;
		return CKR_OK;
	}
	input_len = 0;
	if (prefix != NULL && sa->data != NULL)
		hashed = ks_tok_hash_sign_mech(tok, sa->alg);
	if (prefix != NULL && hashed == 0) {
		ks_tok_caps_get(tok, &caps);
		if (caps.rsa_pkcs_needs_decrypt) {
			*err = -EOPNOTSUPP;
			return CKR_OK;
		}
	}
	if (hashed != 0) {
		mech.mechanism = hashed;
		in = sa->data;
		input_len = sa->data_len;
	} else if (prefix != NULL) {
		memcpy(input, prefix, prefix_len);
		input_len = prefix_len;
	} else if (ks_sig_alg_is_pss(sa->alg)) {
		mech.mechanism = CKM_RSA_PKCS_PSS;
		pss_params(sa->alg, sa->digest_len, &pss);
		mech.pParameter = &pss;
		mech.ulParameterLen = sizeof(pss);
	}
	if (hashed == 0) {
		memcpy(input + input_len, sa->digest, sa->digest_len);
		input_len += sa->digest_len;
	}
	t0 = sign_clock_ns();
	rv = P11(tok, C_SignInit, s, &mech, sa->k.priv);
	/* An unchecked cached handle that now names some other object. */
	if (sa->k.unchecked && (rv == CKR_KEY_TYPE_INCONSISTENT || rv == CKR_KEY_FUNCTION_NOT_PERMITTED))
		rv = CKR_KEY_HANDLE_INVALID;
	if (rv == CKR_OK) {
		sa->sig_len = sa->k.raw_sig_len;
		rv = P11(tok, C_Sign, s, (CK_BYTE *)(uintptr_t)in, input_len, sa->sig, &sa->sig_len);
	}
	explicit_bzero(input, sizeof(input));
	if (rv == CKR_OK) {
		__atomic_add_fetch(&tok->sign_ns, (uint64_t)(sign_clock_ns() - t0), __ATOMIC_RELAXED);
		__atomic_add_fetch(&tok->sign_count, 1, __ATOMIC_RELAXED);
		return rv;
	}
	/* A delete of the key between the lookup and here: retried by name, never "unsupported". */
	rv = ks_tok_key_gone_check(tok, s, &sa->k, rv);
	if (prefix != NULL && hashed == 0 && rsa_pkcs_needs_decrypt(tok, s, sa, rv)) {
		*err = -EOPNOTSUPP;
		return CKR_OK;
	}
	return rv;
}

/* r || s, each half the length, to a DER ECDSA-Sig-Value. */
static int ecdsa_to_der(const uint8_t *rs, size_t len, uint8_t **der, size_t *der_len)
{
	ECDSA_SIG *sig = NULL;
	BIGNUM *r = NULL, *s = NULL;
	unsigned char *out = NULL;
	int n, ret = -EIO;

	if (len == 0 || len % 2 != 0 || (sig = ECDSA_SIG_new()) == NULL)
		goto out;
	r = BN_bin2bn(rs, (int)(len / 2), NULL);
	s = BN_bin2bn(rs + len / 2, (int)(len / 2), NULL);
	if (r == NULL || s == NULL || ECDSA_SIG_set0(sig, r, s) != 1)
		goto out;
	r = s = NULL;   /* owned by sig now */
	if ((n = i2d_ECDSA_SIG(sig, &out)) <= 0)
		goto out;
	if ((*der = malloc((size_t)n)) == NULL) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(*der, out, (size_t)n);
	*der_len = (size_t)n;
	ret = 0;
out:
	OPENSSL_free(out);
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(sig);
	return ret;
}

int ks_token_sign_digest(struct ks_token *tok, const char *name, enum ks_sig_alg alg,
			 const uint8_t *digest, size_t digest_len, uint8_t **sig,
			 size_t *sig_len)
{
	return ks_token_sign(tok, name, alg, NULL, 0, digest, digest_len, sig, sig_len);
}

int ks_token_sign(struct ks_token *tok, const char *name, enum ks_sig_alg alg,
		  const uint8_t *data, size_t data_len, const uint8_t *digest,
		  size_t digest_len, uint8_t **sig, size_t *sig_len)
{
	struct sign_arg sa;
	char why[256];
	int r;

	*sig = NULL;
	*sig_len = 0;
	if (!ks_key_name_valid(name) || ks_sig_alg_name(alg) == NULL || digest == NULL ||
	    digest_len != ks_sig_alg_digest_len(alg))
		return -EINVAL;
	if (ks_token_check_sig_alg(tok, alg, data == NULL, why, sizeof(why)) != 0) {
		ks_info("sign with %s: %s", name, why);
		return -EOPNOTSUPP;
	}
	memset(&sa, 0, sizeof(sa));
	sa.k.name = name;
	sa.k.may_skip_check = 1;
	sa.alg = alg;
	sa.digest = digest;
	sa.digest_len = digest_len;
	sa.data = data;
	sa.data_len = data_len;
	if ((r = ks_tok_run_key_op(tok, "sign", sign_op, &sa)) != 0)
		return r;
	if (ks_sig_alg_family(alg) == KS_FAMILY_EC)
		return ecdsa_to_der(sa.sig, sa.sig_len, sig, sig_len);
	if ((*sig = malloc(sa.sig_len)) == NULL)
		return -ENOMEM;
	memcpy(*sig, sa.sig, sa.sig_len);
	*sig_len = sa.sig_len;
	return 0;
}
