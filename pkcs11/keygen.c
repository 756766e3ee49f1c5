/*
 * Public keys read from the token, and key generation: the templates (keys
 * sensitive, non-extractable, sign-only), the name check, and the removal
 * of what a generation or delete cut short left behind.
 */

#include "pkcs11/token_internal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <p11-kit/pkcs11.h>

#include "proto/log.h"
#include "proto/sigform.h"

/* ---- public keys ------------------------------------------------------------ */

/*
 * The public key of @type ("RSA", "EC") from the parameters in @bld,
 * which is freed. 0 or -EIO (logged).
 */
static int pkey_from_params(const char *type, OSSL_PARAM_BLD *bld, EVP_PKEY **out)
{
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	int r = -EIO;

	if ((params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    (ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1) {
		ks_err("cannot build an %s public key from the token's attributes", type);
		goto out;
	}
	r = 0;
out:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	return r;
}

static int rsa_pkey(const uint8_t *n, size_t n_len, const uint8_t *e, size_t e_len,
		    EVP_PKEY **out)
{
	OSSL_PARAM_BLD *bld = NULL;
	BIGNUM *bn = NULL, *be = NULL;
	int r = -EIO;

	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    (bn = BN_bin2bn(n, (int)n_len, NULL)) == NULL ||
	    (be = BN_bin2bn(e, (int)e_len, NULL)) == NULL ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be)) {
		ks_err("cannot build an RSA public key from the token's attributes");
		OSSL_PARAM_BLD_free(bld);
		goto out;
	}
	r = pkey_from_params("RSA", bld, out);
out:
	BN_free(bn);
	BN_free(be);
	return r;
}

/*
 * CKA_EC_POINT is the DER OCTET STRING around the point per PKCS#11 (SoftHSM
 * does that); some modules store the bare point. Accept both.
 */
static int ec_point_unwrap(const uint8_t **p, size_t *len, size_t raw_len)
{
	const uint8_t *q = *p;
	size_t hl = 0, l = 0;

	if (*len == raw_len && q[0] == 0x04)
		return 0;
	if (*len >= 2 && q[0] == 0x04) {
		if (q[1] < 0x80) {
			hl = 2;
			l = q[1];
		} else if (q[1] == 0x81 && *len >= 3) {
			hl = 3;
			l = q[2];
		}
		if (hl != 0 && hl + l == *len && l == raw_len && q[hl] == 0x04) {
			*p = q + hl;
			*len = l;
			return 0;
		}
	}
	return -1;
}

static int ec_pkey(enum ks_key_type type, const uint8_t *point, size_t len, EVP_PKEY **out)
{
	size_t raw_len = 1 + 2 * ((ks_key_type_bits(type) + 7) / 8);
	const char *group = ks_key_type_group(type);
	OSSL_PARAM_BLD *bld = NULL;

	if (group == NULL || ec_point_unwrap(&point, &len, raw_len) != 0) {
		ks_err("unexpected CKA_EC_POINT encoding (%zu bytes)", len);
		return -EIO;
	}
	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, len)) {
		ks_err("cannot build an EC public key from the token's attributes");
		OSSL_PARAM_BLD_free(bld);
		return -EIO;
	}
	return pkey_from_params("EC", bld, out);
}

/*
 * The public key of @k from its public key object. RSA falls back to the
 * modulus and public exponent of the private object, which are public
 * attributes; an EC private key carries no point.
 *
 * No public key object for an EC key is an ordinary race when the key was
 * deleted since it was found (the delete takes the private key first, then
 * its public key): *@err -ENOENT, not logged as an error, for the caller
 * to decide. Only a private key still there without its public key is an
 * error.
 */
CK_RV ks_tok_read_public(struct ks_token *tok, CK_SESSION_HANDLE s, struct key_ref *k,
			 EVP_PKEY **pub, int *err)
{
	CK_OBJECT_HANDLE h[1], obj;
	CK_ULONG n = 0;
	uint8_t a0[KS_MODULUS_MAX], a1[KS_MODULUS_MAX];
	CK_ATTRIBUTE a[2];
	CK_RV rv;

	if ((rv = ks_tok_find_related(tok, s, CKO_PUBLIC_KEY, k, h, 1, &n)) != CKR_OK)
		return rv;
	if (k->key_type == CKK_EC && n == 0 && ks_tok_key_gone(tok, s, k)) {
		*err = -ENOENT;
		return CKR_OK;
	}
	obj = n == 1 ? h[0] : k->priv;
	a[0].pValue = a0;
	a[0].ulValueLen = sizeof(a0);
	a[1].pValue = a1;
	a[1].ulValueLen = sizeof(a1);
	if (k->key_type == CKK_RSA) {
		a[0].type = CKA_MODULUS;
		a[1].type = CKA_PUBLIC_EXPONENT;
		rv = P11(tok, C_GetAttributeValue, s, obj, a, 2);
	} else if (k->key_type == CKK_EC && k->type != KS_KEY_NONE && n == 1) {
		a[0].type = CKA_EC_POINT;
		rv = P11(tok, C_GetAttributeValue, s, obj, a, 1);
	} else {
		ks_err("key %s: no public key this service can read", k->name);
		*err = k->key_type == CKK_EC && n == 0 ? -EIO : -EOPNOTSUPP;
		return CKR_OK;
	}
	if (rv == CKR_BUFFER_TOO_SMALL || rv == CKR_ATTRIBUTE_TYPE_INVALID) {
		*err = -EOPNOTSUPP;
		return CKR_OK;
	}
	if (rv != CKR_OK)
		return rv;
	if (k->key_type == CKK_RSA)
		*err = rsa_pkey(a0, a[0].ulValueLen, a1, a[1].ulValueLen, pub);
	else
		*err = ec_pkey(k->type, a0, a[0].ulValueLen, pub);
	return CKR_OK;
}

/* ---- generate ---------------------------------------------------------------- */

struct generate_arg {
	const char *name;
	enum ks_key_type type;
	uint8_t id[KS_OBJ_ID_MAX];      /* with the purposes (pkcs11/purpose.c) */
	size_t id_len;
	EVP_PKEY **pub;
};

#define KS_LEFTOVERS_MAX 64

/*
 * Public keys and certificates labelled @name whose CKA_ID no private key
 * has: what a delete cut short after its first step (the private key)
 * leaves behind. They are destroyed and counted in *@removed. Called only
 * when no private key is named @name; an object whose CKA_ID a private key
 * of another name has (renamed by another application) is kept.
 */
CK_RV ks_tok_remove_leftovers(struct ks_token *tok, CK_SESSION_HANDLE s, const char *name,
			      int *removed)
{
	static const CK_OBJECT_CLASS classes[] = { CKO_PUBLIC_KEY, CKO_CERTIFICATE };
	CK_OBJECT_HANDLE h[KS_LEFTOVERS_MAX], owner[1];
	uint8_t id[KS_OBJ_ID_MAX];
	CK_ULONG n, nowner;
	CK_RV rv;

	*removed = 0;
	for (size_t c = 0; c < sizeof(classes) / sizeof(classes[0]); c++) {
		if ((rv = ks_tok_find_objects(tok, s, classes[c], name, NULL, 0, h,
					      KS_LEFTOVERS_MAX, &n)) != CKR_OK)
			return rv;
		for (CK_ULONG i = 0; i < n; i++) {
			CK_ATTRIBUTE a = { CKA_ID, id, sizeof(id) };

			rv = P11(tok, C_GetAttributeValue, s, h[i], &a, 1);
			if (ks_tok_classify(rv) == RV_STALE || rv == CKR_BUFFER_TOO_SMALL)
				continue;
			if (rv == CKR_ATTRIBUTE_TYPE_INVALID || a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
				a.ulValueLen = 0;
			else if (rv != CKR_OK)
				return rv;
			nowner = 0;
			if (a.ulValueLen > 0 &&
			    (rv = ks_tok_find_objects(tok, s, CKO_PRIVATE_KEY, NULL, id,
						      a.ulValueLen, owner, 1, &nowner)) != CKR_OK)
				return rv;
			if (nowner > 0)
				continue;
			rv = P11(tok, C_DestroyObject, s, h[i]);
			if (rv == CKR_OK)
				(*removed)++;
			else if (ks_tok_classify(rv) != RV_STALE)
				return rv;
		}
	}
	if (*removed > 0)
		ks_notice("removed %d leftover object%s of key %s (a delete cut short)", *removed,
			  *removed == 1 ? "" : "s", name);
	return CKR_OK;
}

/* Is the name free? Clears what a delete cut short left under it. */
static CK_RV exists_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
		       int *err)
{
	const char *name = arg;
	CK_OBJECT_HANDLE h[1];
	CK_ULONG n = 0;
	unsigned long snap = ks_tok_known_snapshot(tok);
	int removed;
	CK_RV rv;

	(void)retry;
	if ((rv = ks_tok_find_objects(tok, s, CKO_PRIVATE_KEY, name, NULL, 0, h, 1, &n)) != CKR_OK)
		return rv;
	/* Logged out, the key would be invisible and created a second time. */
	if (n == 0 && (rv = ks_tok_require_login(tok, s)) != CKR_OK)
		return rv;
	if (n > 0) {
		*err = -EEXIST;
		return CKR_OK;
	}
	/* A key known to exist that the token does not show: not a free name until that is settled. */
	if (ks_tok_key_missing(tok, name, snap) == -ENODEV) {
		*err = -ENODEV;
		return CKR_OK;
	}
	return ks_tok_remove_leftovers(tok, s, name, &removed);
}

static CK_RV generate_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
			 int *err)
{
	struct generate_arg *g = arg;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG bits = ks_key_type_bits(g->type);
	CK_BYTE exponent[] = { 0x01, 0x00, 0x01 };
	CK_MECHANISM mech = { CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0 };
	CK_OBJECT_HANDLE hpub = CK_INVALID_HANDLE, hpriv = CK_INVALID_HANDLE;
	size_t params_len = 0;
	const uint8_t *params = ks_tok_ec_params_for(g->type, &params_len);
	size_t label_len = strlen(g->name);
	/*
	 * CKA_MODIFIABLE comes first in both templates, so that a token that
	 * refuses it can be given the rest (see below).
	 *
	 * CKA_VERIFY and CKA_ENCRYPT are left to the token: tpm2-pkcs11
	 * derives them from the private key (verify from its decrypt, encrypt
	 * from its sign) and refuses a template that states other values
	 * (CKR_GENERAL_ERROR). What a public key may do grants nothing: only
	 * the private key's attributes below decide what the key can be used
	 * for.
	 */
	CK_ATTRIBUTE pub_tmpl[] = {
		{ CKA_MODIFIABLE, &no, sizeof(no) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &no, sizeof(no) },
		{ CKA_WRAP, &no, sizeof(no) },
		{ CKA_VERIFY_RECOVER, &no, sizeof(no) },
		{ CKA_LABEL, (void *)(uintptr_t)g->name, label_len },
		{ CKA_ID, g->id, g->id_len },
		/* The type-specific entries stay last. */
		{ CKA_MODULUS_BITS, &bits, sizeof(bits) },
		{ CKA_PUBLIC_EXPONENT, exponent, sizeof(exponent) },
	};
	CK_ULONG npub = sizeof(pub_tmpl) / sizeof(pub_tmpl[0]);
	/*
	 * The project's first invariant: sensitive, private, never extractable,
	 * sign only; not modifiable, so that nobody with the PIN can turn on
	 * decrypt, unwrap or derive later.
	 */
	CK_ATTRIBUTE priv_tmpl[] = {
		{ CKA_MODIFIABLE, &no, sizeof(no) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_SIGN, &yes, sizeof(yes) },
		{ CKA_DECRYPT, &no, sizeof(no) },
		{ CKA_UNWRAP, &no, sizeof(no) },
		{ CKA_DERIVE, &no, sizeof(no) },
		{ CKA_SIGN_RECOVER, &no, sizeof(no) },
		{ CKA_LABEL, (void *)(uintptr_t)g->name, label_len },
		{ CKA_ID, g->id, g->id_len },
	};
	CK_ULONG npriv = sizeof(priv_tmpl) / sizeof(priv_tmpl[0]);
	CK_ULONG skip = __atomic_load_n(&tok->modifiable_refused, __ATOMIC_RELAXED) ? 1 : 0;
	struct key_ref k;
	CK_OBJECT_HANDLE h[1];
	CK_ULONG n = 0;
	CK_RV rv;

	memset(&k, 0, sizeof(k));
	k.name = g->name;
	memcpy(k.id, g->id, g->id_len);
	k.id_len = g->id_len;
	k.have_id = 1;
	/* The first attempt may have created the pair before the session was lost. */
	if (retry) {
		if ((rv = ks_tok_find_related(tok, s, CKO_PRIVATE_KEY, &k, h, 1, &n)) != CKR_OK)
			return rv;
		if (n == 0 && (rv = ks_tok_require_login(tok, s)) != CKR_OK)
			return rv;
		if (n > 0)
			hpriv = h[0];
	}
	if (n == 0) {
		if (ks_key_type_family(g->type) == KS_FAMILY_EC) {
			mech.mechanism = CKM_EC_KEY_PAIR_GEN;
			pub_tmpl[npub - 2].type = CKA_EC_PARAMS;
			pub_tmpl[npub - 2].pValue = (void *)(uintptr_t)params;
			pub_tmpl[npub - 2].ulValueLen = params_len;
			npub--;
		}
		if ((rv = ks_tok_objects_wrlock(tok)) != CKR_OK)
			return rv;
		rv = P11(tok, C_GenerateKeyPair, s, &mech, pub_tmpl + skip, npub - skip,
			 priv_tmpl + skip, npriv - skip, &hpub, &hpriv);
		if (skip == 0 && (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_VALUE_INVALID ||
				  rv == CKR_ATTRIBUTE_READ_ONLY || rv == CKR_TEMPLATE_INCONSISTENT)) {
			/* Said once per token open; the keys are still sensitive and sign-only. */
			ks_warn("the token refuses CKA_MODIFIABLE false (%s): anyone with the PIN "
				"can change the attributes of the keys it generates", ks_ckr_name(rv));
			__atomic_store_n(&tok->modifiable_refused, 1, __ATOMIC_RELAXED);
			skip = 1;
			rv = P11(tok, C_GenerateKeyPair, s, &mech, pub_tmpl + skip, npub - skip,
				 priv_tmpl + skip, npriv - skip, &hpub, &hpriv);
		}
		pthread_rwlock_unlock(&tok->objects_rw);
		if (rv != CKR_OK)
			return rv;
	}
	if (g->pub == NULL)
		return CKR_OK;
	/*
	 * The key just made is read by its handle: a search right after the
	 * generation does not always find it on SoftHSM while other sessions
	 * search the token.
	 */
	if ((rv = ks_tok_describe_key(tok, s, hpriv, &k, err)) != CKR_OK || *err != 0)
		return rv;
	rv = ks_tok_read_public(tok, s, &k, g->pub, err);
	/*
	 * Gone right after it was made (another program deleted it, or a
	 * search missed the new objects): an error, never a second generation
	 * on a retry.
	 */
	if (rv == CKR_OK && *err == -ENOENT) {
		ks_err("key %s: not found right after its generation", g->name);
		*err = -EIO;
	}
	return rv;
}

int ks_token_generate(struct ks_token *tok, const char *name, enum ks_key_type type,
		      EVP_PKEY **pub)
{
	return ks_token_generate_purposes(tok, name, type, KS_PURPOSE_ALL, pub);
}

int ks_token_generate_purposes(struct ks_token *tok, const char *name, enum ks_key_type type,
			       unsigned purposes, EVP_PKEY **pub)
{
	struct generate_arg g;
	int r;

	if (pub != NULL)
		*pub = NULL;
	char why[160];

	if (!ks_key_name_valid(name) || ks_key_type_name(type) == NULL)
		return -EINVAL;
	/* Asking the token for a size it cannot make fails only after a round trip, or worse. */
	if (ks_token_check_key_type(tok, type, why, sizeof(why)) != 0) {
		ks_info("generate %s key %s: %s", ks_key_type_name(type), name, why);
		return -EOPNOTSUPP;
	}
	memset(&g, 0, sizeof(g));
	g.name = name;
	g.type = type;
	g.pub = pub;
	if ((r = ks_tok_purpose_id(purposes, g.id, sizeof(g.id), &g.id_len)) != 0)
		return r;
	pthread_mutex_lock(&tok->generate_lock);
	r = ks_tok_run_op(tok, "check key name", exists_op, (void *)(uintptr_t)name);
	if (r == 0)
		r = ks_tok_run_op(tok, "generate key", generate_op, &g);
	ks_tok_cache_drop(tok, name);
	if (r == 0)
		ks_tok_known_add(tok, name, ULONG_MAX);
	pthread_mutex_unlock(&tok->generate_lock);
	if (r == 0)
		ks_info("generated %s key %s", ks_key_type_name(type), name);
	else if (pub != NULL) {
		EVP_PKEY_free(*pub);
		*pub = NULL;
	}
	return r;
}
