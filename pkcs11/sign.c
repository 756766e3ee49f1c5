/*
 * Signing a digest with a key on the token: PKCS#1 v1.5 DigestInfo, PSS
 * and ECDSA, whose raw r|s is converted to DER.
 */

#include "pkcs11/token_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <p11-kit/pkcs11.h>

#include "proto/log.h"

/* ---- sign ------------------------------------------------------------------------ */

/* DER DigestInfo prefixes (RFC 8017, section 9.2, note 1). */
static const uint8_t di_sha256[] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
				     0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20 };
static const uint8_t di_sha384[] = { 0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
				     0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30 };
static const uint8_t di_sha512[] = { 0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
				     0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40 };

struct sign_arg {
	struct key_ref k;
	enum ks_sig_alg alg;
	const uint8_t *digest;
	size_t digest_len;
	uint8_t sig[KS_SIG_MAX];
	CK_ULONG sig_len;
};

static CK_RV sign_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
		     int *err)
{
	struct sign_arg *sa = arg;
	CK_RSA_PKCS_PSS_PARAMS pss;
	CK_MECHANISM mech = { CKM_RSA_PKCS, NULL, 0 };
	uint8_t input[sizeof(di_sha512) + 64];
	size_t input_len;
	const uint8_t *prefix = NULL;
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
	memset(&pss, 0, sizeof(pss));
	switch (sa->alg) {
	case KS_SIG_RSA_PKCS1_SHA256:
		prefix = di_sha256;
		break;
	case KS_SIG_RSA_PKCS1_SHA384:
		prefix = di_sha384;
		break;
	case KS_SIG_RSA_PKCS1_SHA512:
		prefix = di_sha512;
		break;
	case KS_SIG_RSA_PSS_SHA256:
		pss.hashAlg = CKM_SHA256;
		pss.mgf = CKG_MGF1_SHA256;
		break;
	case KS_SIG_RSA_PSS_SHA384:
		pss.hashAlg = CKM_SHA384;
		pss.mgf = CKG_MGF1_SHA384;
		break;
	case KS_SIG_RSA_PSS_SHA512:
		pss.hashAlg = CKM_SHA512;
		pss.mgf = CKG_MGF1_SHA512;
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
	if (prefix != NULL) {
		/* All three prefixes have the same length. */
		memcpy(input, prefix, sizeof(di_sha256));
		input_len = sizeof(di_sha256);
	} else if (ks_sig_alg_is_pss(sa->alg)) {
		mech.mechanism = CKM_RSA_PKCS_PSS;
		pss.sLen = sa->digest_len;
		mech.pParameter = &pss;
		mech.ulParameterLen = sizeof(pss);
	}
	memcpy(input + input_len, sa->digest, sa->digest_len);
	input_len += sa->digest_len;
	rv = P11(tok, C_SignInit, s, &mech, sa->k.priv);
	/* An unchecked cached handle that now names some other object. */
	if (sa->k.unchecked && (rv == CKR_KEY_TYPE_INCONSISTENT || rv == CKR_KEY_FUNCTION_NOT_PERMITTED))
		rv = CKR_KEY_HANDLE_INVALID;
	if (rv == CKR_OK) {
		sa->sig_len = sa->k.raw_sig_len;
		rv = P11(tok, C_Sign, s, input, input_len, sa->sig, &sa->sig_len);
	}
	explicit_bzero(input, sizeof(input));
	/* A delete of the key between the lookup and here: retried by name, never "unsupported". */
	return rv == CKR_OK ? rv : ks_tok_key_gone_check(tok, s, &sa->k, rv);
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
	struct sign_arg sa;
	int r;

	*sig = NULL;
	*sig_len = 0;
	if (!ks_key_name_valid(name) || ks_sig_alg_name(alg) == NULL || digest == NULL ||
	    digest_len != ks_sig_alg_digest_len(alg))
		return -EINVAL;
	memset(&sa, 0, sizeof(sa));
	sa.k.name = name;
	sa.k.may_skip_check = 1;
	sa.alg = alg;
	sa.digest = digest;
	sa.digest_len = digest_len;
	if ((r = ks_tok_run_op(tok, "sign", sign_op, &sa)) != 0)
		return r;
	if (ks_sig_alg_family(alg) == KS_FAMILY_EC)
		return ecdsa_to_der(sa.sig, sa.sig_len, sig, sig_len);
	if ((*sig = malloc(sa.sig_len)) == NULL)
		return -ENOMEM;
	memcpy(*sig, sa.sig, sa.sig_len);
	*sig_len = sa.sig_len;
	return 0;
}
