/*
 * What the token can do: read from its mechanism list when the module is
 * (re)initialised, never assumed. A token that cannot list its mechanisms
 * is taken to do everything, and its refusals then come from the token.
 */

#include "pkcs11/token_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "proto/log.h"

/* More than any token lists; a token that lists more is taken to list nothing. */
#define KS_MECHS_MAX 1024

#define BIT(x) (1u << (unsigned)(x))

/* The token's hash-and-sign mechanism of an RSA PKCS#1 v1.5 algorithm, 0 for others. */
static CK_MECHANISM_TYPE hash_sign_mech(enum ks_sig_alg alg)
{
	switch (alg) {
	case KS_SIG_RSA_PKCS1_SHA256: return CKM_SHA256_RSA_PKCS;
	case KS_SIG_RSA_PKCS1_SHA384: return CKM_SHA384_RSA_PKCS;
	case KS_SIG_RSA_PKCS1_SHA512: return CKM_SHA512_RSA_PKCS;
	default: return 0;
	}
}

static int is_pkcs1(enum ks_sig_alg alg)
{
	return hash_sign_mech(alg) != 0;
}

/* @info of @mech into *@out; 0 when the token does not list it or cannot describe it. */
static int mech_info(struct ks_token *tok, const CK_MECHANISM_TYPE *list, CK_ULONG n,
		     CK_MECHANISM_TYPE mech, CK_MECHANISM_INFO *out)
{
	CK_ULONG i;

	for (i = 0; i < n && list[i] != mech; i++)
		;
	if (i == n)
		return 0;
	memset(out, 0, sizeof(*out));
	return P11(tok, C_GetMechanismInfo, tok->slot, mech, out) == CKR_OK;
}

static int can_sign(struct ks_token *tok, const CK_MECHANISM_TYPE *list, CK_ULONG n,
		    CK_MECHANISM_TYPE mech)
{
	CK_MECHANISM_INFO mi;

	return mech_info(tok, list, n, mech, &mi) && (mi.flags & CKF_SIGN);
}

/* Within [min, max]; a token that gives no range (0, 0) sets no limit. */
static int size_fits(CK_ULONG bits, CK_ULONG min, CK_ULONG max)
{
	if (min == 0 && max == 0)
		return 1;
	return bits >= min && bits <= max;
}

/* What the capabilities allow, from the mechanisms' answers. */
static void derive(struct ks_caps *c)
{
	c->key_types = 0;
	c->sig_algs = 0;
	c->digest_algs = 0;
	for (int a = KS_SIG_NONE + 1; ks_sig_alg_name((enum ks_sig_alg)a) != NULL; a++) {
		enum ks_sig_alg alg = (enum ks_sig_alg)a;
		int raw, hashed = (c->hash_sign & BIT(alg)) != 0;

		if (is_pkcs1(alg))
			raw = c->rsa_pkcs && !c->rsa_pkcs_needs_decrypt;
		else if (ks_sig_alg_is_pss(alg))
			raw = c->rsa_pss;
		else
			raw = c->ecdsa;
		if (raw || hashed)
			c->sig_algs |= BIT(alg);
		if (raw)
			c->digest_algs |= BIT(alg);
	}
	for (int t = KS_KEY_NONE + 1; ks_key_type_name((enum ks_key_type)t) != NULL; t++) {
		enum ks_key_type type = (enum ks_key_type)t;
		int rsa = ks_key_type_family(type) == KS_FAMILY_RSA;
		CK_ULONG bits = ks_key_type_bits(type);
		unsigned family_algs = 0;

		for (int a = KS_SIG_NONE + 1; ks_sig_alg_name((enum ks_sig_alg)a) != NULL; a++)
			if (ks_sig_alg_family((enum ks_sig_alg)a) == ks_key_type_family(type))
				family_algs |= BIT(a);
		/* A key that nothing can sign with is of no use to anyone. */
		if ((c->sig_algs & family_algs) == 0)
			continue;
		if (rsa ? c->rsa_gen && size_fits(bits, c->rsa_min, c->rsa_max) :
			  c->ec_gen && size_fits(bits, c->ec_min, c->ec_max))
			c->key_types |= BIT(type);
	}
}

void ks_tok_probe_caps(struct ks_token *tok)
{
	CK_MECHANISM_TYPE *list = NULL;
	CK_MECHANISM_INFO mi;
	CK_ULONG n = 0;
	struct ks_caps c;
	CK_RV rv;

	memset(&c, 0, sizeof(c));
	/*
	 * Room for all of it first, not the size the token gives for NULL:
	 * tpm2-pkcs11 1.9 was seen to give fewer mechanisms than it lists
	 * (10 of 28, on a token made with C_InitToken) and to fill a list of
	 * that size without CKR_BUFFER_TOO_SMALL.
	 */
	n = KS_MECHS_MAX;
	if ((list = calloc(n, sizeof(*list))) == NULL)
		rv = CKR_HOST_MEMORY;
	else
		rv = P11(tok, C_GetMechanismList, tok->slot, list, &n);
	if (rv == CKR_OK && n > KS_MECHS_MAX)
		rv = CKR_BUFFER_TOO_SMALL;
	if (rv != CKR_OK) {
		ks_warn("the token's mechanisms cannot be read (%s): every key type and "
			"algorithm is offered, and the token refuses what it cannot do",
			ks_ckr_name(rv));
		free(list);
		pthread_mutex_lock(&tok->info_lock);
		memset(&tok->caps, 0, sizeof(tok->caps));
		tok->caps.key_types = tok->caps.sig_algs = tok->caps.digest_algs = ~0u;
		pthread_mutex_unlock(&tok->info_lock);
		return;
	}
	c.known = 1;
	if (mech_info(tok, list, n, CKM_RSA_PKCS_KEY_PAIR_GEN, &mi) &&
	    (mi.flags & CKF_GENERATE_KEY_PAIR)) {
		c.rsa_gen = 1;
		c.rsa_min = mi.ulMinKeySize;
		c.rsa_max = mi.ulMaxKeySize;
	}
	if (mech_info(tok, list, n, CKM_EC_KEY_PAIR_GEN, &mi) && (mi.flags & CKF_GENERATE_KEY_PAIR)) {
		c.ec_gen = 1;
		c.ec_min = mi.ulMinKeySize;
		c.ec_max = mi.ulMaxKeySize;
	}
	c.rsa_pkcs = can_sign(tok, list, n, CKM_RSA_PKCS);
	c.rsa_pss = can_sign(tok, list, n, CKM_RSA_PKCS_PSS);
	c.ecdsa = can_sign(tok, list, n, CKM_ECDSA);
	for (int a = KS_SIG_NONE + 1; ks_sig_alg_name((enum ks_sig_alg)a) != NULL; a++)
		if (is_pkcs1((enum ks_sig_alg)a) &&
		    can_sign(tok, list, n, hash_sign_mech((enum ks_sig_alg)a)))
			c.hash_sign |= BIT(a);
	free(list);

	pthread_mutex_lock(&tok->info_lock);
	/* What a signature taught about this token outlives a re-initialisation of its module. */
	c.rsa_pkcs_needs_decrypt = tok->caps.rsa_pkcs_needs_decrypt;
	derive(&c);
	tok->caps = c;
	pthread_mutex_unlock(&tok->info_lock);
	ks_info("token mechanisms (%lu): RSA key pairs %s%lu..%lu bits, EC key pairs %s%lu..%lu bits; "
		"signs RSA PKCS#1 v1.5 %s, hash-and-sign %s, RSA-PSS %s, ECDSA %s",
		(unsigned long)n, c.rsa_gen ? "" : "none, ", (unsigned long)c.rsa_min, (unsigned long)c.rsa_max,
		c.ec_gen ? "" : "none, ", (unsigned long)c.ec_min, (unsigned long)c.ec_max,
		c.rsa_pkcs ? "yes" : "no", c.hash_sign ? "yes" : "no", c.rsa_pss ? "yes" : "no",
		c.ecdsa ? "yes" : "no");
}

void ks_tok_caps_get(struct ks_token *tok, struct ks_caps *out)
{
	pthread_mutex_lock(&tok->info_lock);
	*out = tok->caps;
	pthread_mutex_unlock(&tok->info_lock);
}

void ks_tok_learn_rsa_pkcs_needs_decrypt(struct ks_token *tok)
{
	int first;

	pthread_mutex_lock(&tok->info_lock);
	first = !tok->caps.rsa_pkcs_needs_decrypt;
	tok->caps.rsa_pkcs_needs_decrypt = 1;
	if (tok->caps.known)
		derive(&tok->caps);
	pthread_mutex_unlock(&tok->info_lock);
	if (first)
		ks_warn("the token makes RSA PKCS#1 v1.5 signatures (CKM_RSA_PKCS) only with keys "
			"that can decrypt; keysvcd keeps its keys sign-only and signs PKCS#1 v1.5 "
			"only from the data (hash-and-sign), not from a digest");
}

CK_MECHANISM_TYPE ks_tok_hash_sign_mech(struct ks_token *tok, enum ks_sig_alg alg)
{
	struct ks_caps c;

	if (!is_pkcs1(alg))
		return 0;
	ks_tok_caps_get(tok, &c);
	return (c.hash_sign & BIT(alg)) ? hash_sign_mech(alg) : 0;
}

/* "1024..3072 bits", or "any size" when the token sets no limit. */
static void describe_range(char *buf, size_t len, CK_ULONG min, CK_ULONG max)
{
	if (min == 0 && max == 0)
		snprintf(buf, len, "any size");
	else
		snprintf(buf, len, "%lu..%lu bits", (unsigned long)min, (unsigned long)max);
}

int ks_token_check_key_type(struct ks_token *tok, enum ks_key_type type, char *why,
			    size_t why_len)
{
	struct ks_caps c;
	char range[48];
	int rsa = ks_key_type_family(type) == KS_FAMILY_RSA;

	if (ks_key_type_name(type) == NULL)
		return -EINVAL;
	ks_tok_caps_get(tok, &c);
	if (c.key_types & BIT(type))
		return 0;
	if (rsa ? !c.rsa_gen : !c.ec_gen)
		snprintf(why, why_len, "the token cannot generate %s key pairs", rsa ? "RSA" : "EC");
	else if (rsa ? !size_fits(ks_key_type_bits(type), c.rsa_min, c.rsa_max) :
		       !size_fits(ks_key_type_bits(type), c.ec_min, c.ec_max)) {
		describe_range(range, sizeof(range), rsa ? c.rsa_min : c.ec_min,
			       rsa ? c.rsa_max : c.ec_max);
		snprintf(why, why_len, "the token's %s key sizes are %s", rsa ? "RSA" : "EC", range);
	} else
		snprintf(why, why_len, "the token cannot sign with %s keys", rsa ? "RSA" : "EC");
	return -EOPNOTSUPP;
}

int ks_token_check_sig_alg(struct ks_token *tok, enum ks_sig_alg alg, int digest_only,
			   char *why, size_t why_len)
{
	struct ks_caps c;
	const char *name = ks_sig_alg_name(alg);

	if (name == NULL)
		return -EINVAL;
	ks_tok_caps_get(tok, &c);
	if (c.digest_algs & BIT(alg))
		return 0;
	if ((c.sig_algs & BIT(alg)) && !digest_only)
		return 0;
	if (c.sig_algs & BIT(alg))
		snprintf(why, why_len, "the token makes %s signatures only from the data, not from a "
			 "digest (its CKM_RSA_PKCS needs a key that can decrypt, and keysvcd's "
			 "keys cannot): send data, or use rsa-pss", name);
	else
		snprintf(why, why_len, "the token cannot make %s signatures (its mechanism list "
			 "has no %s)", name,
			 is_pkcs1(alg) ? "CKM_RSA_PKCS" : ks_sig_alg_is_pss(alg) ? "CKM_RSA_PKCS_PSS" :
			 "CKM_ECDSA");
	return -EOPNOTSUPP;
}
