/*
 * Keys on the token: key types from their attributes, the set of names
 * known to exist (the token in doubt when one goes missing), object
 * searches, the cache of found private keys and resolve_key(); and the
 * operations that read or remove keys: info, list, public key, delete.
 */

#include "pkcs11/token_internal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <p11-kit/pkcs11.h>

#include "proto/log.h"

/* ---- key types and their token attributes --------------------------------- */

static const uint8_t oid_p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
static const uint8_t oid_p384[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };

const uint8_t *ks_tok_ec_params_for(enum ks_key_type type, size_t *len)
{
	switch (type) {
	case KS_KEY_EC_P256:
		*len = sizeof(oid_p256);
		return oid_p256;
	case KS_KEY_EC_P384:
		*len = sizeof(oid_p384);
		return oid_p384;
	default:
		*len = 0;
		return NULL;
	}
}

static enum ks_key_type ec_type_from_params(const uint8_t *p, size_t len)
{
	if (len == sizeof(oid_p256) && memcmp(p, oid_p256, len) == 0)
		return KS_KEY_EC_P256;
	if (len == sizeof(oid_p384) && memcmp(p, oid_p384, len) == 0)
		return KS_KEY_EC_P384;
	return KS_KEY_NONE;
}

static enum ks_key_type rsa_type_from_bits(size_t bits)
{
	switch (bits) {
	case 2048:
		return KS_KEY_RSA_2048;
	case 3072:
		return KS_KEY_RSA_3072;
	case 4096:
		return KS_KEY_RSA_4096;
	default:
		return KS_KEY_NONE;
	}
}
/* ---- keys known to exist ------------------------------------------------------ */

static struct known_key *known_find(struct ks_token *tok, const char *name)
{
	for (size_t i = 0; i < tok->nknown; i++)
		if (strcmp(tok->known[i].name, name) == 0)
			return &tok->known[i];
	return NULL;
}

/* Taken before a search, for ks_tok_known_add() and ks_tok_key_missing(). */
unsigned long ks_tok_known_snapshot(struct ks_token *tok)
{
	unsigned long seq;

	pthread_mutex_lock(&tok->known_lock);
	seq = tok->known_seq;
	pthread_mutex_unlock(&tok->known_lock);
	return seq;
}

/*
 * @name was seen on the token by a search that began at @snap, or created
 * (@snap is ULONG_MAX). A search older than the last removal may have seen
 * a key deleted since: it teaches nothing.
 */
void ks_tok_known_add(struct ks_token *tok, const char *name, unsigned long snap)
{
	struct known_key *e, *tmp;

	if (strlen(name) > KS_KEY_NAME_MAX)
		return;
	pthread_mutex_lock(&tok->known_lock);
	if (snap != ULONG_MAX && (tok->forget_seq > snap || strcmp(tok->deleting, name) == 0))
		goto out;
	if ((e = known_find(tok, name)) == NULL && tok->nknown < KS_MAX_KNOWN) {
		if (tok->nknown == tok->known_cap) {
			size_t cap = tok->known_cap == 0 ? 16 : tok->known_cap * 2;

			if ((tmp = realloc(tok->known, cap * sizeof(*tmp))) == NULL)
				goto out;
			tok->known = tmp;
			tok->known_cap = cap;
		}
		e = &tok->known[tok->nknown++];
		snprintf(e->name, sizeof(e->name), "%s", name);
		e->added_seq = ++tok->known_seq;
	}
	if (e != NULL)
		e->doubted = 0;
out:
	pthread_mutex_unlock(&tok->known_lock);
}

/*
 * A delete of @name begins (@name) or ends (NULL): the name is forgotten,
 * and lookups that see the key until it is destroyed do not teach it again.
 */
static void known_deleting(struct ks_token *tok, const char *name)
{
	struct known_key *e;

	pthread_mutex_lock(&tok->known_lock);
	if (name != NULL && (e = known_find(tok, name)) != NULL)
		*e = tok->known[--tok->nknown];
	snprintf(tok->deleting, sizeof(tok->deleting), "%s", name != NULL ? name : "");
	tok->forget_seq = ++tok->known_seq;
	pthread_mutex_unlock(&tok->known_lock);
}

/*
 * No private key named @name was found, though the login is intact. If the
 * name is known to exist, the token is in doubt rather than the key gone:
 * SoftHSM whose token directory went away for a moment answers empty
 * searches until the module is finalized and initialised again. The first
 * miss therefore takes the token down for the background reconnect and
 * answers -ENODEV (a renewal client told "no such key" might make a new
 * one); a miss after a re-initialisation means the key is gone (another
 * application deleted it): it is forgotten and -ENOENT answered from then
 * on. Unknown names, and names learned after the search began at @snap
 * (a generate that raced it), answer -ENOENT at once.
 */
int ks_tok_key_missing(struct ks_token *tok, const char *name, unsigned long snap)
{
	struct known_key *e;
	unsigned reinit;

	pthread_mutex_lock(&tok->state_lock);
	reinit = tok->reinit_count;
	pthread_mutex_unlock(&tok->state_lock);
	pthread_mutex_lock(&tok->known_lock);
	if ((e = known_find(tok, name)) == NULL || e->added_seq > snap) {
		pthread_mutex_unlock(&tok->known_lock);
		return -ENOENT;
	}
	if (e->doubted && e->doubt_reinit != reinit) {
		*e = tok->known[--tok->nknown];
		pthread_mutex_unlock(&tok->known_lock);
		ks_notice("key %s is no longer on the token after the module was initialised "
			  "again; taking it as deleted", name);
		return -ENOENT;
	}
	e->doubted = 1;
	e->doubt_reinit = reinit;
	pthread_mutex_unlock(&tok->known_lock);
	/* The name only in the log: hello's reason goes to peers that may not know the key. */
	ks_warn("key %s, known to exist, not found; initialising the module again", name);
	ks_tok_go_down(tok, "a key known to exist not found");
	return -ENODEV;
}

/* ---- object lookup ------------------------------------------------------------ */

/* objects_rw exclusive for creating an object; bounded, a search may hang in the module. */
CK_RV ks_tok_objects_wrlock(struct ks_token *tok)
{
	struct timespec until;

	ks_tok_deadline_in(&until, tok->wait_ms);
	if (pthread_rwlock_clockwrlock(&tok->objects_rw, CLOCK_MONOTONIC, &until) != 0) {
		ks_warn("searches kept the token's objects busy for more than %u ms", tok->wait_ms);
		return KS_CKR_BUSY;
	}
	return CKR_OK;
}

/*
 * objects_rw shared for a search, bounded like every wait for the token: a
 * generation hung in the module must not hold every lookup for ever.
 */
static CK_RV objects_rdlock(struct ks_token *tok)
{
	struct timespec until;

	ks_tok_deadline_in(&until, tok->wait_ms);
	if (pthread_rwlock_clockrdlock(&tok->objects_rw, CLOCK_MONOTONIC, &until) != 0) {
		ks_warn("a key generation kept the token's objects busy for more than %u ms",
			tok->wait_ms);
		return KS_CKR_BUSY;
	}
	return CKR_OK;
}

/*
 * Up to @max objects of class @cls with the given label and/or CKA_ID (a
 * NULL label or id is not part of the template).
 */
CK_RV ks_tok_find_objects(struct ks_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
			  const char *label, const uint8_t *id, size_t id_len,
			  CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *n)
{
	CK_ATTRIBUTE tmpl[3];
	CK_ULONG nt = 0;
	CK_RV rv, rv2;

	tmpl[nt].type = CKA_CLASS;
	tmpl[nt].pValue = &cls;
	tmpl[nt++].ulValueLen = sizeof(cls);
	if (label != NULL) {
		tmpl[nt].type = CKA_LABEL;
		tmpl[nt].pValue = (void *)(uintptr_t)label;
		tmpl[nt++].ulValueLen = strlen(label);
	}
	if (id != NULL) {
		tmpl[nt].type = CKA_ID;
		tmpl[nt].pValue = (void *)(uintptr_t)id;
		tmpl[nt++].ulValueLen = id_len;
	}
	*n = 0;
	if ((rv = objects_rdlock(tok)) != CKR_OK)
		return rv;
	if ((rv = P11(tok, C_FindObjectsInit, s, tmpl, nt)) != CKR_OK) {
		pthread_rwlock_unlock(&tok->objects_rw);
		return rv;
	}
	rv = P11(tok, C_FindObjects, s, out, max, n);
	/* Always finished, or the session keeps an active search. */
	rv2 = P11(tok, C_FindObjectsFinal, s);
	pthread_rwlock_unlock(&tok->objects_rw);
	return rv != CKR_OK ? rv : rv2;
}

/*
 * Objects belonging to key @k: those with its CKA_ID. A key made elsewhere
 * with an empty CKA_ID would match every other such object, so then the
 * label must match too.
 */
CK_RV ks_tok_find_related(struct ks_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
			  const struct key_ref *k, CK_OBJECT_HANDLE *out, CK_ULONG max,
			  CK_ULONG *n)
{
	return ks_tok_find_objects(tok, s, cls, k->id_len == 0 ? k->name : NULL, k->id,
				   k->id_len, out, max, n);
}

enum ks_key_family ks_tok_key_family(const struct key_ref *k)
{
	return k->key_type == CKK_RSA ? KS_FAMILY_RSA :
	       k->key_type == CKK_EC ? KS_FAMILY_EC : KS_FAMILY_NONE;
}

/*
 * CKA_ID, key type and size of the private key @h. Only public attributes
 * are read. @k is filled only from answers that succeeded: a key deleted
 * while it is read leaves @k as it was, for ks_tok_key_gone_check().
 */
CK_RV ks_tok_describe_key(struct ks_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
			  struct key_ref *k, int *err)
{
	uint8_t buf[KS_MODULUS_MAX], id[KS_OBJ_ID_MAX];
	CK_KEY_TYPE key_type = 0;
	size_t len;
	CK_ATTRIBUTE a[2];
	CK_RV rv;

	a[0].type = CKA_ID;
	a[0].pValue = id;
	a[0].ulValueLen = sizeof(id);
	a[1].type = CKA_KEY_TYPE;
	a[1].pValue = &key_type;
	a[1].ulValueLen = sizeof(key_type);
	rv = P11(tok, C_GetAttributeValue, s, h, a, 2);
	if (rv == CKR_BUFFER_TOO_SMALL || rv == CKR_ATTRIBUTE_TYPE_INVALID) {
		ks_err("private key %s: unusable CKA_ID or CKA_KEY_TYPE", k->name);
		*err = -EIO;
		return CKR_OK;
	}
	if (rv != CKR_OK)
		return rv;
	k->priv = h;
	memcpy(k->id, id, a[0].ulValueLen);
	k->id_len = a[0].ulValueLen;
	k->key_type = key_type;
	k->have_id = 1;
	k->type = KS_KEY_NONE;
	k->raw_sig_len = 0;
	k->always_auth = 0;

	{
		CK_BBOOL always = CK_FALSE;
		CK_ATTRIBUTE aa = { CKA_ALWAYS_AUTHENTICATE, &always, sizeof(always) };

		/* Tokens older than v2.20 may not know the attribute: then it is false. */
		rv = P11(tok, C_GetAttributeValue, s, h, &aa, 1);
		if (rv == CKR_OK)
			k->always_auth = always == CK_TRUE;
		else if (rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE)
			return rv;
	}
	{
		CK_BBOOL decrypt = CK_FALSE;
		CK_ATTRIBUTE ad = { CKA_DECRYPT, &decrypt, sizeof(decrypt) };

		k->can_decrypt = 0;
		rv = P11(tok, C_GetAttributeValue, s, h, &ad, 1);
		if (rv == CKR_OK)
			k->can_decrypt = decrypt == CK_TRUE;
		else if (rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE)
			return rv;
	}

	a[0].pValue = buf;
	a[0].ulValueLen = sizeof(buf);
	if (k->key_type == CKK_EC)
		a[0].type = CKA_EC_PARAMS;
	else if (k->key_type == CKK_RSA)
		a[0].type = CKA_MODULUS;
	else
		return CKR_OK;
	rv = P11(tok, C_GetAttributeValue, s, h, a, 1);
	if (rv == CKR_BUFFER_TOO_SMALL || rv == CKR_ATTRIBUTE_TYPE_INVALID)
		return CKR_OK;
	if (rv != CKR_OK)
		return rv;
	len = a[0].ulValueLen;
	if (k->key_type == CKK_EC) {
		k->type = ec_type_from_params(buf, len);
		k->raw_sig_len = 2 * ((ks_key_type_bits(k->type) + 7) / 8);
	} else {
		size_t skip = 0;

		while (skip < len && buf[skip] == 0)
			skip++;
		k->raw_sig_len = len - skip;
		k->type = rsa_type_from_bits((len - skip) * 8);
	}
	return CKR_OK;
}

/* ---- the cache of found keys ----------------------------------------------- */

/* Called with rw held (shared or exclusive), so tok->generation is stable. */
static int cache_get(struct ks_token *tok, struct key_ref *k)
{
	int hit = 0;

	pthread_mutex_lock(&tok->cache_lock);
	for (unsigned i = 0; i < KS_KEY_CACHE && !hit; i++) {
		const struct key_cache_entry *e = &tok->cache[i];

		if (e->used && e->generation == tok->generation && strcmp(e->name, k->name) == 0) {
			memcpy(k->id, e->id, e->id_len);
			k->id_len = e->id_len;
			k->have_id = 1;
			k->priv = e->priv;
			k->key_type = e->key_type;
			k->type = e->type;
			k->raw_sig_len = e->raw_sig_len;
			k->always_auth = e->always_auth;
			k->checked_ms = e->checked_ms;
			hit = 1;
		}
	}
	pthread_mutex_unlock(&tok->cache_lock);
	return hit;
}

static void cache_put(struct ks_token *tok, const struct key_ref *k)
{
	struct key_cache_entry *e = NULL;

	if (strlen(k->name) > KS_KEY_NAME_MAX || k->id_len > sizeof(e->id))
		return;
	pthread_mutex_lock(&tok->cache_lock);
	for (unsigned i = 0; i < KS_KEY_CACHE && e == NULL; i++)
		if (tok->cache[i].used && strcmp(tok->cache[i].name, k->name) == 0)
			e = &tok->cache[i];
	for (unsigned i = 0; i < KS_KEY_CACHE && e == NULL; i++)
		if (!tok->cache[i].used)
			e = &tok->cache[i];
	if (e == NULL)
		e = &tok->cache[tok->cache_next++ % KS_KEY_CACHE];
	memset(e, 0, sizeof(*e));
	e->used = 1;
	e->generation = tok->generation;
	snprintf(e->name, sizeof(e->name), "%s", k->name);
	memcpy(e->id, k->id, k->id_len);
	e->id_len = k->id_len;
	e->priv = k->priv;
	e->key_type = k->key_type;
	e->type = k->type;
	e->raw_sig_len = k->raw_sig_len;
	e->always_auth = k->always_auth;
	e->checked_ms = ks_tok_mono_ms();
	pthread_mutex_unlock(&tok->cache_lock);
}

/* The entry of @k was read back and matched just now. */
static void cache_checked(struct ks_token *tok, const struct key_ref *k)
{
	int64_t now = ks_tok_mono_ms();

	pthread_mutex_lock(&tok->cache_lock);
	for (unsigned i = 0; i < KS_KEY_CACHE; i++)
		if (tok->cache[i].used && tok->cache[i].priv == k->priv &&
		    strcmp(tok->cache[i].name, k->name) == 0)
			tok->cache[i].checked_ms = now;
	pthread_mutex_unlock(&tok->cache_lock);
}

void ks_tok_cache_drop(struct ks_token *tok, const char *name)
{
	pthread_mutex_lock(&tok->cache_lock);
	for (unsigned i = 0; i < KS_KEY_CACHE; i++)
		if (tok->cache[i].used && strcmp(tok->cache[i].name, name) == 0)
			memset(&tok->cache[i], 0, sizeof(tok->cache[i]));
	pthread_mutex_unlock(&tok->cache_lock);
}

/*
 * Is the cached handle in @k still the private key of that name and CKA_ID?
 * A handle can go stale (the key deleted by another application) or, on
 * some tokens, be reused for another object: either is a mismatch, and the
 * key is looked up afresh. Token errors are returned for ks_tok_run_op().
 */
static CK_RV cache_check(struct ks_token *tok, CK_SESSION_HANDLE s, const struct key_ref *k,
			 int *match)
{
	CK_OBJECT_CLASS cls = 0;
	char label[KS_KEY_NAME_MAX + 1];
	uint8_t id[KS_OBJ_ID_MAX];
	CK_ATTRIBUTE a[3] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, label, sizeof(label) },
		{ CKA_ID, id, sizeof(id) },
	};
	size_t name_len = strlen(k->name);
	CK_RV rv;

	*match = 0;
	rv = P11(tok, C_GetAttributeValue, s, k->priv, a, 3);
	/*
	 * SoftHSM answers CKR_GENERAL_ERROR for an object deleted under the
	 * handle: any refusal that is not about the session or the device
	 * sends the caller to look the key up by name, which tells.
	 */
	if (ks_tok_classify(rv) == RV_STALE || ks_tok_classify(rv) == RV_OTHER)
		return CKR_OK;
	if (rv != CKR_OK)
		return rv;
	*match = cls == CKO_PRIVATE_KEY && a[1].ulValueLen == name_len &&
		 memcmp(label, k->name, name_len) == 0 && a[2].ulValueLen == k->id_len &&
		 memcmp(id, k->id, k->id_len) == 0;
	return CKR_OK;
}

/*
 * After a call on @h failed with @rv: was the key deleted under the handle
 * (by a concurrent delete, here or elsewhere)? Tokens answer that in many
 * ways (SoftHSM: CKR_GENERAL_ERROR, CKR_ATTRIBUTE_VALUE_INVALID,
 * CKR_KEY_TYPE_INCONSISTENT...), so a search decides: by the key's label
 * and CKA_ID once known, by its label alone for a handle just found by
 * name whose CKA_ID could not be read. A search never shows a deleted
 * object (SoftHSM skips those it invalidated, and gives one found while
 * its delete is under way a new handle), so if @h is not among the
 * results, CKR_KEY_HANDLE_INVALID is returned for ks_tok_run_op() to retry
 * with the key looked up by name, else @rv.
 */
static int handle_gone(struct ks_token *tok, CK_SESSION_HANDLE s, const struct key_ref *k,
		       CK_OBJECT_HANDLE h)
{
	CK_OBJECT_HANDLE found[4];
	CK_ULONG n = 0;

	if (ks_tok_find_objects(tok, s, CKO_PRIVATE_KEY, k->name, k->have_id ? k->id : NULL,
				k->id_len, found, 4, &n) != CKR_OK)
		return 0;
	for (CK_ULONG i = 0; i < n; i++)
		if (found[i] == h)
			return 0;
	ks_debug("key %s: deleted while in use; looking it up again", k->name);
	return 1;
}

static CK_RV handle_gone_check(struct ks_token *tok, CK_SESSION_HANDLE s,
			       const struct key_ref *k, CK_OBJECT_HANDLE h, CK_RV rv)
{
	if (ks_tok_classify(rv) != RV_OTHER)
		return rv;
	return handle_gone(tok, s, k, h) ? CKR_KEY_HANDLE_INVALID : rv;
}

CK_RV ks_tok_key_gone_check(struct ks_token *tok, CK_SESSION_HANDLE s, const struct key_ref *k,
			    CK_RV rv)
{
	return handle_gone_check(tok, s, k, k->priv, rv);
}

int ks_tok_key_gone(struct ks_token *tok, CK_SESSION_HANDLE s, const struct key_ref *k)
{
	return handle_gone(tok, s, k, k->priv);
}

/* The private key: by label first, by the saved CKA_ID on a retry. */
CK_RV ks_tok_resolve_key(struct ks_token *tok, CK_SESSION_HANDLE s, struct key_ref *k,
			 int *err)
{
	CK_OBJECT_HANDLE h[2];
	CK_ULONG n = 0;
	unsigned long snap;
	CK_RV rv;

	if (k->have_id && k->unchecked) {
		/*
		 * The failed attempt used a cached handle without reading it
		 * back: the key of that name may be another object now, so
		 * the retry looks it up by name, not by the old CKA_ID.
		 */
		ks_tok_cache_drop(tok, k->name);
		k->have_id = 0;
		k->id_len = 0;
		k->unchecked = 0;
	}
	if (!k->have_id && cache_get(tok, k)) {
		int match;

		/*
		 * Reading the attributes back costs more than the signature on
		 * some tokens (SoftHSM decrypts them), so a handle checked less
		 * than key_recheck_ms ago is used as is; if it went stale the
		 * token refuses it and the operation is retried by name.
		 */
		if (k->may_skip_check && tok->key_recheck_ms > 0 &&
		    ks_tok_mono_ms() - k->checked_ms < (int64_t)tok->key_recheck_ms) {
			k->unchecked = 1;
			return CKR_OK;
		}
		if ((rv = cache_check(tok, s, k, &match)) != CKR_OK)
			return rv;
		if (match) {
			cache_checked(tok, k);
			return CKR_OK;
		}
		ks_debug("key %s: the cached handle is stale; looking it up again", k->name);
		ks_tok_cache_drop(tok, k->name);
		k->have_id = 0;
		k->id_len = 0;
	} else if (k->have_id) {
		/* A retry: the handle that failed may be the cached one. */
		ks_tok_cache_drop(tok, k->name);
	}
	snap = ks_tok_known_snapshot(tok);
	if (k->have_id) {
		rv = ks_tok_find_related(tok, s, CKO_PRIVATE_KEY, k, h, 2, &n);
		/*
		 * The key of the first attempt is gone (deleted, maybe made
		 * again under the name): what the name is now decides.
		 */
		if (rv == CKR_OK && n == 0) {
			k->have_id = 0;
			k->id_len = 0;
			rv = ks_tok_find_objects(tok, s, CKO_PRIVATE_KEY, k->name, NULL, 0,
						 h, 2, &n);
		}
	} else {
		rv = ks_tok_find_objects(tok, s, CKO_PRIVATE_KEY, k->name, NULL, 0, h, 2, &n);
	}
	if (rv != CKR_OK)
		return rv;
	if (n == 0) {
		if ((rv = ks_tok_require_login(tok, s)) != CKR_OK)
			return rv;
		*err = ks_tok_key_missing(tok, k->name, snap);
		if (*err == -ENOENT)
			ks_tok_missed_unknown = 1;
		return CKR_OK;
	}
	if (n > 1) {
		ks_err("several private keys are named %s; refusing to guess", k->name);
		*err = -EIO;
		return CKR_OK;
	}
	if ((rv = ks_tok_describe_key(tok, s, h[0], k, err)) == CKR_OK && *err == 0) {
		cache_put(tok, k);
		ks_tok_known_add(tok, k->name, snap);
		/* keysvcd never makes such a key: it was imported or made by another program. */
		if (k->can_decrypt)
			ks_warn("key %s can decrypt (CKA_DECRYPT true): keysvcd signs with it, but "
				"whoever holds the PIN can also decrypt with it", k->name);
	}
	/*
	 * Found, then deleted before its attributes were read: on the first
	 * attempt the CKA_ID is not known yet, and the label alone decides.
	 */
	if (rv != CKR_OK)
		rv = handle_gone_check(tok, s, k, h[0], rv);
	return rv;
}

/* ---- info, list, public key, delete ---------------------------------------- */

static CK_RV has_cert(struct ks_token *tok, CK_SESSION_HANDLE s, const struct key_ref *k,
		      int *yes)
{
	CK_OBJECT_HANDLE h[1];
	CK_ULONG n = 0;
	CK_RV rv;

	rv = ks_tok_find_related(tok, s, CKO_CERTIFICATE, k, h, 1, &n);
	*yes = n > 0;
	return rv;
}

static void fill_info(struct ks_key_info *info, const struct key_ref *k)
{
	memset(info, 0, sizeof(*info));
	/* The name is valid, so at most KS_KEY_NAME_MAX bytes. */
	memcpy(info->name, k->name, strlen(k->name) + 1);
	info->type = k->type;
	info->id_len = k->id_len > KS_KEY_ID_MAX ? KS_KEY_ID_MAX : k->id_len;
	memcpy(info->id, k->id, info->id_len);
	info->purposes = ks_tok_purposes_from_id(k->id, k->id_len, &info->purposes_legacy);
}

struct info_arg {
	struct key_ref k;
	struct ks_key_info *info;
	EVP_PKEY **pub;
};

static CK_RV info_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
		     int *err)
{
	struct info_arg *ia = arg;
	CK_RV rv;

	(void)retry;
	if ((rv = ks_tok_resolve_key(tok, s, &ia->k, err)) != CKR_OK || *err != 0)
		return rv;
	if (ia->pub != NULL) {
		EVP_PKEY_free(*ia->pub);
		*ia->pub = NULL;
		rv = ks_tok_read_public(tok, s, &ia->k, ia->pub, err);
		/*
		 * The key deleted after it was found, its public key object
		 * with it (no public key, or a token error reading it):
		 * looked up again, never "internal".
		 */
		if (rv == CKR_OK && *err == -ENOENT) {
			*err = 0;
			return CKR_KEY_HANDLE_INVALID;
		}
		return ks_tok_key_gone_check(tok, s, &ia->k, rv);
	}
	fill_info(ia->info, &ia->k);
	return has_cert(tok, s, &ia->k, &ia->info->has_cert);
}

int ks_token_key_info(struct ks_token *tok, const char *name, struct ks_key_info *info)
{
	struct info_arg ia;

	if (!ks_key_name_valid(name) || info == NULL)
		return -EINVAL;
	memset(&ia, 0, sizeof(ia));
	ia.k.name = name;
	ia.info = info;
	return ks_tok_run_key_op(tok, "key info", info_op, &ia);
}

int ks_token_public_key(struct ks_token *tok, const char *name, EVP_PKEY **pub)
{
	struct info_arg ia;
	int r;

	*pub = NULL;
	if (!ks_key_name_valid(name))
		return -EINVAL;
	memset(&ia, 0, sizeof(ia));
	ia.k.name = name;
	ia.pub = pub;
	if ((r = ks_tok_run_key_op(tok, "public key", info_op, &ia)) != 0) {
		EVP_PKEY_free(*pub);
		*pub = NULL;
	}
	return r;
}

struct list_arg {
	struct ks_key_info *keys;
	size_t n;
};

static int cmp_key_info(const void *a, const void *b)
{
	return strcmp(((const struct ks_key_info *)a)->name, ((const struct ks_key_info *)b)->name);
}

/* Every private key handle, in chunks. */
static CK_RV find_all_private(struct ks_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE **out,
			      CK_ULONG *n, int *err)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl = { CKA_CLASS, &cls, sizeof(cls) };
	CK_OBJECT_HANDLE *h = NULL, *tmp;
	CK_ULONG got = 0, cap = 0;
	CK_RV rv, rv2;

	*out = NULL;
	*n = 0;
	if ((rv = objects_rdlock(tok)) != CKR_OK)
		return rv;
	if ((rv = P11(tok, C_FindObjectsInit, s, &tmpl, 1)) != CKR_OK) {
		pthread_rwlock_unlock(&tok->objects_rw);
		return rv;
	}
	for (;;) {
		if (cap - *n < KS_FIND_CHUNK) {
			if (cap >= KS_MAX_OBJECTS) {
				ks_warn("more than %d private keys; listing only those", KS_MAX_OBJECTS);
				break;
			}
			if ((tmp = realloc(h, (cap + KS_FIND_CHUNK * 4) * sizeof(*h))) == NULL) {
				*err = -ENOMEM;
				break;
			}
			h = tmp;
			cap += KS_FIND_CHUNK * 4;
		}
		if ((rv = P11(tok, C_FindObjects, s, h + *n, KS_FIND_CHUNK, &got)) != CKR_OK)
			break;
		*n += got;
		if (got < KS_FIND_CHUNK)
			break;
	}
	rv2 = P11(tok, C_FindObjectsFinal, s);
	pthread_rwlock_unlock(&tok->objects_rw);
	if (rv == CKR_OK)
		rv = rv2;
	if (rv != CKR_OK || *err != 0) {
		free(h);
		*n = 0;
		return rv;
	}
	*out = h;
	return CKR_OK;
}

/*
 * A listing that met an object it could not read tries again this many
 * times: a key deleted after the search found it (SoftHSM then answers
 * CKR_OBJECT_HANDLE_INVALID, CKR_GENERAL_ERROR or
 * CKR_ATTRIBUTE_VALUE_INVALID for its attributes) is simply not in the
 * next search. SoftHSM still finds a key for a moment while its delete
 * goes on, so the passes are spaced 1, 2, 4 ... ms apart (at most about
 * 130 ms in all).
 */
#define KS_LIST_ATTEMPTS 8

/*
 * One pass over the token's private keys into @la. CKR_OK and *@err 0: a
 * complete list; an object that could not be read ends the pass with its
 * CKR_* value (the caller decides whether to try again).
 */
static CK_RV list_pass(struct ks_token *tok, CK_SESSION_HANDLE s, struct list_arg *la, int *err)
{
	CK_OBJECT_HANDLE *h = NULL;
	CK_ULONG n = 0;
	char label[KS_KEY_NAME_MAX + 1];
	CK_RV rv;

	free(la->keys);
	la->keys = NULL;
	la->n = 0;
	if ((rv = find_all_private(tok, s, &h, &n, err)) != CKR_OK || *err != 0)
		return rv;
	if (n == 0) {
		rv = ks_tok_require_login(tok, s);
		goto out;
	}
	if ((la->keys = calloc(n, sizeof(*la->keys))) == NULL) {
		*err = -ENOMEM;
		goto out;
	}
	for (CK_ULONG i = 0; i < n; i++) {
		CK_ATTRIBUTE a = { CKA_LABEL, label, sizeof(label) - 1 };
		struct key_ref k;

		rv = P11(tok, C_GetAttributeValue, s, h[i], &a, 1);
		/* Too long for a valid name, or no label: not one of ours to show. */
		if (rv == CKR_BUFFER_TOO_SMALL || rv == CKR_ATTRIBUTE_TYPE_INVALID ||
		    (rv == CKR_OK && a.ulValueLen == CK_UNAVAILABLE_INFORMATION))
			continue;
		if (rv != CKR_OK)
			goto out;
		label[a.ulValueLen] = '\0';
		if (!ks_key_name_valid(label))
			continue;
		memset(&k, 0, sizeof(k));
		k.name = label;
		if ((rv = ks_tok_describe_key(tok, s, h[i], &k, err)) != CKR_OK)
			goto out;
		if (*err != 0) {
			*err = 0;
			continue;
		}
		fill_info(&la->keys[la->n], &k);
		if ((rv = has_cert(tok, s, &k, &la->keys[la->n].has_cert)) != CKR_OK)
			goto out;
		la->n++;
	}
	rv = CKR_OK;
out:
	free(h);
	return rv;
}

static CK_RV list_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
		     int *err)
{
	struct list_arg *la = arg;
	CK_RV rv = CKR_OK;

	(void)retry;
	for (int attempt = 1; attempt <= KS_LIST_ATTEMPTS; attempt++) {
		rv = list_pass(tok, s, la, err);
		if (rv == CKR_OK || *err != 0)
			break;
		/* The session itself failing is run_op()'s to handle, not a key that went away. */
		if (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED ||
		    rv == CKR_USER_NOT_LOGGED_IN || rv == CKR_DEVICE_REMOVED ||
		    rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_DEVICE_ERROR)
			break;
		if (attempt < KS_LIST_ATTEMPTS)
			usleep(1000u << (attempt - 1));
	}
	return rv;
}

/*
 * Every key known to exist before the listing began at @snap must be in
 * @keys (sorted); a missing one puts the token in doubt (see ks_tok_key_missing()).
 */
static int list_check_known(struct ks_token *tok, const struct ks_key_info *keys, size_t n,
			    unsigned long snap)
{
	struct ks_key_info want;
	int found, r;

	for (;;) {
		found = 0;
		pthread_mutex_lock(&tok->known_lock);
		for (size_t i = 0; i < tok->nknown && !found; i++) {
			if (tok->known[i].added_seq > snap)
				continue;
			memcpy(want.name, tok->known[i].name, sizeof(want.name));
			found = n == 0 || bsearch(&want, keys, n, sizeof(*keys), cmp_key_info) == NULL;
		}
		pthread_mutex_unlock(&tok->known_lock);
		if (!found)
			return 0;
		/* Either -ENODEV, or the name is forgotten and the loop moves on. */
		if ((r = ks_tok_key_missing(tok, want.name, snap)) == -ENODEV)
			return r;
	}
}

int ks_token_list(struct ks_token *tok, struct ks_key_info **keys, size_t *n)
{
	struct list_arg la;
	unsigned long snap = ks_tok_known_snapshot(tok);
	size_t j = 0;
	int r;

	*keys = NULL;
	*n = 0;
	memset(&la, 0, sizeof(la));
	if ((r = ks_tok_run_op(tok, "list keys", list_op, &la)) != 0) {
		free(la.keys);
		return r;
	}
	if (la.n > 1)
		qsort(la.keys, la.n, sizeof(*la.keys), cmp_key_info);
	/* Two keys under one name: listed once, and refused by name until one is renamed. */
	for (size_t i = 0; i < la.n; i++) {
		if (j > 0 && strcmp(la.keys[j - 1].name, la.keys[i].name) == 0) {
			ks_warn("several private keys are named %s", la.keys[i].name);
			continue;
		}
		if (j != i)
			la.keys[j] = la.keys[i];
		ks_tok_known_add(tok, la.keys[j].name, snap);
		j++;
	}
	if ((r = list_check_known(tok, la.keys, j, snap)) != 0) {
		free(la.keys);
		return r;
	}
	*keys = la.keys;
	*n = j;
	return 0;
}

static CK_RV delete_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
		       int *err)
{
	static const CK_OBJECT_CLASS classes[] = { CKO_PUBLIC_KEY, CKO_CERTIFICATE };
	struct key_ref *k = arg;
	CK_OBJECT_HANDLE h[16];
	CK_ULONG n;
	int removed;
	CK_RV rv;

	(void)retry;
	if ((rv = ks_tok_resolve_key(tok, s, k, err)) != CKR_OK)
		return rv;
	if (*err == -ENOENT) {
		/* No private key: finish a delete cut short (here, or before a restart). */
		*err = 0;
		if ((rv = ks_tok_remove_leftovers(tok, s, k->name, &removed)) == CKR_OK &&
		    removed == 0)
			*err = -ENOENT;
		return rv;
	}
	if (*err != 0)
		return rv;
	/*
	 * The private key first: once it is gone the name resolves no more
	 * (sign, key.public and cert.get answer -ENOENT), and whatever a kill
	 * leaves behind is removed by the next generate or delete of the name.
	 */
	if ((rv = P11(tok, C_DestroyObject, s, k->priv)) != CKR_OK)
		return rv;
	for (size_t c = 0; c < sizeof(classes) / sizeof(classes[0]); c++) {
		do {
			if ((rv = ks_tok_find_related(tok, s, classes[c], k, h, 16, &n)) != CKR_OK)
				return rv;
			for (CK_ULONG i = 0; i < n; i++)
				if ((rv = P11(tok, C_DestroyObject, s, h[i])) != CKR_OK)
					return rv;
		} while (n == 16);
	}
	return CKR_OK;
}

int ks_token_delete(struct ks_token *tok, const char *name)
{
	struct key_ref k;
	int r;

	if (!ks_key_name_valid(name))
		return -EINVAL;
	memset(&k, 0, sizeof(k));
	k.name = name;
	pthread_mutex_lock(&tok->generate_lock);
	/* Before the search, so that no lookup racing the delete doubts the token when the key is gone. */
	known_deleting(tok, name);
	r = ks_tok_run_op(tok, "delete key", delete_op, &k);
	known_deleting(tok, NULL);
	ks_tok_cache_drop(tok, name);
	pthread_mutex_unlock(&tok->generate_lock);
	if (r == 0)
		ks_info("deleted key %s", name);
	return r;
}
