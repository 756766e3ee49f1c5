#include "keysvc/dispatch.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "keysvc/audit.h"
#include "proto/auditchain.h"
#include "keysvc/csr.h"
#include "keysvc/dispatch_internal.h"
#include "proto/frame.h"
#include "proto/json.h"
#include "proto/log.h"
#include "proto/secmem.h"
#include "proto/sigform.h"
#include "proto/utf8.h"
#include "proto/wire.h"

/* The limits (KS_SIGN_DATA_MAX, KS_CSR_TEXT_MAX, ...) are proto/wire.h's. */

int ks_ctx_new(struct ks_token *token, struct ks_audit *audit,
	       struct ks_policy *policy, struct ks_ctx **out)
{
	struct ks_ctx *ctx;

	if ((ctx = calloc(1, sizeof(*ctx))) == NULL)
		return -ENOMEM;
	ctx->token = token;
	ctx->audit = audit;
	ctx->policy = policy;
	ctx->response_max = KS_FRAME_MAX;
	ctx->list_max = KS_LIST_MAX;
	pthread_mutex_init(&ctx->policy_lock, NULL);
	*out = ctx;
	return 0;
}

void ks_ctx_set_policy(struct ks_ctx *ctx, struct ks_policy *policy)
{
	struct ks_policy *old;

	pthread_mutex_lock(&ctx->policy_lock);
	old = ctx->policy;
	ctx->policy = policy;
	pthread_mutex_unlock(&ctx->policy_lock);
	ks_policy_unref(old);
}

void ks_ctx_set_response_max(struct ks_ctx *ctx, size_t max)
{
	ctx->response_max = max < KS_FRAME_MAX ? max : KS_FRAME_MAX;
}

void ks_ctx_set_list_max(struct ks_ctx *ctx, size_t max)
{
	ctx->list_max = max < KS_LIST_MAX ? max : KS_LIST_MAX;
}

void ks_ctx_free(struct ks_ctx *ctx)
{
	if (ctx == NULL)
		return;
	ks_policy_unref(ctx->policy);
	pthread_mutex_destroy(&ctx->policy_lock);
	free(ctx);
}

static struct ks_policy *ctx_policy(struct ks_ctx *ctx)
{
	struct ks_policy *p;

	pthread_mutex_lock(&ctx->policy_lock);
	p = ks_policy_ref(ctx->policy);
	pthread_mutex_unlock(&ctx->policy_lock);
	return p;
}

static int pubkey_pem(EVP_PKEY *pub, char **pem)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long n;
	int r = -ENOMEM;

	if (bio == NULL)
		return -ENOMEM;
	if (PEM_write_bio_PUBKEY(bio, pub) != 1) {
		r = -EIO;
		goto out;
	}
	n = BIO_get_mem_data(bio, &data);
	if (n <= 0 || (*pem = strndup(data, (size_t)n)) == NULL)
		goto out;
	r = 0;
out:
	BIO_free(bio);
	return r;
}

void ks_hex(const uint8_t *b, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

int ks_sha256_hex(const uint8_t *data, size_t len, char out[65])
{
	uint8_t md[32];
	unsigned md_len = 0;

	if (ks_sha256_md() == NULL ||
	    EVP_Digest(data, len, md, &md_len, ks_sha256_md(), NULL) != 1 || md_len != 32)
		return -EIO;
	ks_hex(md, 32, out);
	return 0;
}

int ks_dispatch_audit_intent(struct ks_ctx *ctx, struct ks_request *rq, struct ks_reply *rep,
			     const char *hash_name, const char *hash_hex)
{
	int r = ks_audit_intent(ctx->audit, rq->peer, ks_op_name(rq->op), rq->key, hash_name,
				hash_hex, rq->purpose, &rq->audit_seq);

	if (r == 0)
		return 0;
	rep->wire = KS_WIRE_AUDIT_UNAVAILABLE;
	return ks_reply_error(rep, r, "the audit log cannot be written; refused before the token "
			   "was used (see the daemon log)");
}

int ks_dispatch_audit_intent_start(struct ks_ctx *ctx, struct ks_request *rq,
				   struct ks_reply *rep, const char *hash_name, const char *hash_hex)
{
	int r = ks_audit_intent_start(ctx->audit, rq->peer, ks_op_name(rq->op), rq->key, hash_name,
				      hash_hex, rq->purpose, &rq->audit_pending);

	rq->audit_seq = rq->audit_pending.seq;
	if (r == 0)
		return 0;
	rep->wire = KS_WIRE_AUDIT_UNAVAILABLE;
	return ks_reply_error(rep, r, "the audit log cannot be written; refused before the token "
			   "was used (see the daemon log)");
}

int ks_dispatch_audit_intent_wait(struct ks_ctx *ctx, struct ks_request *rq,
				  struct ks_reply *rep)
{
	int r = ks_audit_intent_wait(ctx->audit, rq->peer, ks_op_name(rq->op), rq->key,
				     &rq->audit_pending);

	if (r == 0)
		return 0;
	rep->wire = KS_WIRE_AUDIT_UNAVAILABLE;
	return ks_reply_error(rep, r, "the audit log cannot be synced; the %s made by the token "
			   "was discarded (see the daemon log)",
			   rq->op == KS_OP_SIGN ? "signature" : "signed request");
}

/* ---- operations -------------------------------------------------------- */

struct hello_req {
	json_t *versions;
};

static const struct ks_json_field hello_fields[] = {
	{ "id", KS_JSON_SKIP, 0, 0, 0 },
	{ "op", KS_JSON_SKIP, 0, 0, 0 },
	{ "versions", KS_JSON_ARRAY, offsetof(struct hello_req, versions), 0, KS_VERSIONS_MAX },
	{ NULL, 0, 0, 0, 0 },
};

static int op_hello(struct ks_ctx *ctx, struct ks_request *rq, void *arg,
		    struct ks_reply *rep)
{
	struct hello_req *h = arg;
	struct ks_token_info info;
	json_t *types, *algs, *data_only, *tok, *result;
	const char *health;
	size_t i;
	json_t *v;
	int speaks_v1 = h->versions == NULL;

	(void)rq;
	if (h->versions != NULL) {
		json_array_foreach(h->versions, i, v) {
			if (!json_is_integer(v))
				return ks_reply_error(rep, -EINVAL, "versions: must be integers");
			if (json_integer_value(v) == 1)
				speaks_v1 = 1;
		}
	}
	if (!speaks_v1)
		return ks_reply_error(rep, -EOPNOTSUPP, "this server speaks protocol version 1 only");
	memset(&info, 0, sizeof(info));
	if (ks_token_get_info(ctx->token, &info) != 0)
		info.health = KS_HEALTH_UNAVAILABLE;
	health = ks_wire_health_name(info.health == KS_HEALTH_OK ? KS_WIRE_HEALTH_OK :
				     info.health == KS_HEALTH_DEGRADED ? KS_WIRE_HEALTH_DEGRADED :
				     KS_WIRE_HEALTH_TOKEN_UNAVAILABLE);
	/* Only what the token can do (pkcs11/caps.c). */
	types = json_array();
	algs = json_array();
	data_only = json_array();
	for (int t = KS_KEY_NONE + 1; ks_key_type_name((enum ks_key_type)t) != NULL; t++)
		if (info.key_types & (1u << t))
			json_array_append_new(types, json_string(ks_key_type_name((enum ks_key_type)t)));
	for (int a = KS_SIG_NONE + 1; ks_sig_alg_name((enum ks_sig_alg)a) != NULL; a++) {
		if (!(info.sig_algs & (1u << a)))
			continue;
		json_array_append_new(algs, json_string(ks_sig_alg_name((enum ks_sig_alg)a)));
		if (!(info.digest_algs & (1u << a)))
			json_array_append_new(data_only, json_string(ks_sig_alg_name((enum ks_sig_alg)a)));
	}
	tok = json_pack("{s:s, s:s, s:s, s:s, s:s}",
			"label", info.label, "manufacturer", info.manufacturer,
			"model", info.model, "serial", info.serial,
			"library", info.library);
	result = json_pack("{s:i, s:s, s:o?, s:s, s:o?, s:o?}",
			   "version", 1,
			   "server", "keysvcd " KEYSVC_VERSION,
			   "token", tok,
			   "health", health,
			   "key_types", types,
			   "algorithms", algs);
	if (result != NULL && info.health_reason[0] != '\0' &&
	    json_object_set_new(result, "health_reason", json_string(info.health_reason)) != 0) {
		json_decref(result);
		result = NULL;
	}
	if (result != NULL && info.last_ok > 0 &&
	    json_object_set_new(result, "last_token_ok", json_integer(info.last_ok)) != 0) {
		json_decref(result);
		result = NULL;
	}
	if (result != NULL && json_array_size(data_only) > 0 &&
	    json_object_set(result, "data_only", data_only) != 0) {
		json_decref(result);
		result = NULL;
	}
	json_decref(data_only);
	return ks_reply_set_result(rep, result);
}

/*
 * "key" of the operations on one key: the request's key name, read into
 * struct ks_request by request_key_fields, so the tables below only allow it.
 */
struct key_req {
	const char *type;
	enum ks_key_type key_type;
	struct ks_strv purposes;
	unsigned purpose_set;      /* 0: none named, KS_PURPOSE_DEFAULT */
};

static const struct ks_json_field key_fields[] = {
	{ "id", KS_JSON_SKIP, 0, 0, 0 },
	{ "op", KS_JSON_SKIP, 0, 0, 0 },
	{ "key", KS_JSON_SKIP, 0, 0, 0 },
	{ NULL, 0, 0, 0, 0 },
};

static const struct ks_json_field generate_fields[] = {
	{ "id", KS_JSON_SKIP, 0, 0, 0 },
	{ "op", KS_JSON_SKIP, 0, 0, 0 },
	{ "key", KS_JSON_SKIP, 0, 0, 0 },
	{ "type", KS_JSON_STRING, offsetof(struct key_req, type), KS_JSON_REQUIRED, KS_WIRE_NAME_MAX,
	  ks_wire_check_key_type, offsetof(struct key_req, key_type) },
	{ "purposes", KS_JSON_STRV, offsetof(struct key_req, purposes), 0, KS_PURPOSES_MAX,
	  ks_purposes_check_strv, offsetof(struct key_req, purpose_set) },
	{ NULL, 0, 0, 0, 0 },
};

static const struct ks_json_field list_fields[] = {
	{ "id", KS_JSON_SKIP, 0, 0, 0 },
	{ "op", KS_JSON_SKIP, 0, 0, 0 },
	{ NULL, 0, 0, 0, 0 },
};

static int reply_public_key(struct ks_reply *rep, const char *key, enum ks_key_type type,
			    EVP_PKEY *pub, unsigned purposes, int legacy)
{
	char *pem = NULL;
	json_t *result;
	int r;

	if ((r = pubkey_pem(pub, &pem)) != 0)
		return ks_reply_error(rep, r, "cannot encode the public key");
	result = json_pack("{s:s, s:s?, s:s}", "key", key, "type", ks_key_type_name(type),
			   "public_key", pem);
	free(pem);
	if (ks_purposes_set_in(result, purposes, legacy) != 0) {
		json_decref(result);
		result = NULL;
	}
	return ks_reply_set_result(rep, result);
}

static int op_generate(struct ks_ctx *ctx, struct ks_request *rq, void *arg,
		       struct ks_reply *rep)
{
	struct key_req *k = arg;
	enum ks_key_type type = k->key_type;
	unsigned purposes = k->purpose_set != 0 ? k->purpose_set : KS_PURPOSE_DEFAULT;
	EVP_PKEY *pub = NULL;
	char why[160];
	int r;

	if (ks_token_check_key_type(ctx->token, type, why, sizeof(why)) != 0)
		return ks_reply_error(rep, -EOPNOTSUPP, "%s: %s", k->type, why);
	if ((r = ks_dispatch_audit_intent(ctx, rq, rep, NULL, NULL)) != 0)
		return r;
	if ((r = ks_token_generate_purposes(ctx->token, rq->key, type, purposes, &pub)) != 0)
		return ks_reply_token_error(rep, r, rq->key);
	r = reply_public_key(rep, rq->key, type, pub, purposes, 0);
	EVP_PKEY_free(pub);
	return r;
}

static int op_public(struct ks_ctx *ctx, struct ks_request *rq, void *arg,
		     struct ks_reply *rep)
{
	struct ks_key_info info;
	EVP_PKEY *pub = NULL;
	int r;

	(void)arg;
	if ((r = ks_token_key_info(ctx->token, rq->key, &info)) != 0)
		return ks_reply_token_error(rep, r, rq->key);
	if ((r = ks_token_public_key(ctx->token, rq->key, &pub)) != 0)
		return ks_reply_token_error(rep, r, rq->key);
	r = reply_public_key(rep, rq->key, info.type, pub, info.purposes, info.purposes_legacy);
	EVP_PKEY_free(pub);
	return r;
}

static int op_delete(struct ks_ctx *ctx, struct ks_request *rq, void *arg,
		     struct ks_reply *rep)
{
	int r;

	(void)arg;
	if ((r = ks_dispatch_audit_intent(ctx, rq, rep, NULL, NULL)) != 0)
		return r;
	if ((r = ks_token_delete(ctx->token, rq->key)) != 0)
		return ks_reply_token_error(rep, r, rq->key);
	return ks_reply_set_result(rep, json_pack("{s:s}", "key", rq->key));
}

static int op_list(struct ks_ctx *ctx, struct ks_request *rq, void *arg,
		   struct ks_reply *rep)
{
	struct ks_policy *policy = ctx_policy(ctx);
	struct ks_key_info *keys = NULL;
	size_t n = 0, shown = 0, used, entry_len;
	json_t *arr = NULL, *entry;
	int truncated = 0, r;

	(void)arg;
	/* The answer's envelope around "keys": {"id":..,"ok":true,"keys":[],"truncated":false}. */
	used = 64 + (rq->id != NULL ? json_dumpb(rq->id, NULL, 0, JSON_ENCODE_ANY) : 4);
	if ((r = ks_token_list(ctx->token, &keys, &n)) != 0) {
		ks_reply_token_error(rep, r, "");
		goto out;
	}
	if ((arr = json_array()) == NULL) {
		r = ks_reply_error(rep, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		/* A peer sees only the keys it was granted key.list on. */
		if (!ks_policy_allows(policy, rq->peer, KS_OP_KEY_LIST, keys[i].name))
			continue;
		/*
		 * Stay inside one frame; "truncated" says that a key the peer
		 * may list was left out (keys it may not list never count).
		 */
		if (shown >= ctx->list_max) {
			truncated = 1;
			break;
		}
		entry = json_pack("{s:s, s:s?, s:b}", "key", keys[i].name,
				  "type", ks_key_type_name(keys[i].type), "has_cert", keys[i].has_cert);
		if (ks_purposes_set_in(entry, keys[i].purposes, keys[i].purposes_legacy) != 0) {
			json_decref(entry);
			r = ks_reply_error(rep, -ENOMEM, "out of memory");
			goto out;
		}
		/* 512 entries of long names with their purposes exceed a frame: bytes count too. */
		entry_len = json_dumpb(entry, NULL, 0, JSON_COMPACT) + 1;
		if (used + entry_len > ctx->response_max) {
			json_decref(entry);
			truncated = 1;
			break;
		}
		if (json_array_append_new(arr, entry) != 0) {
			r = ks_reply_error(rep, -ENOMEM, "out of memory");
			goto out;
		}
		used += entry_len;
		shown++;
	}
	r = ks_reply_set_result(rep, json_pack("{s:O, s:b}", "keys", arr, "truncated", truncated));
out:
	json_decref(arr);
	free(keys);
	ks_policy_unref(policy);
	return r;
}

struct csr_req {
	const char *subject;
	json_t *san;
	struct ks_strv key_usage;
	struct ks_strv ext_key_usage;
	json_t *attributes;
	const char *digest;
};

static const struct ks_json_field csr_fields[] = {
	{ "id", KS_JSON_SKIP, 0, 0, 0 },
	{ "op", KS_JSON_SKIP, 0, 0, 0 },
	{ "key", KS_JSON_SKIP, 0, 0, 0 },
	{ "subject", KS_JSON_STRING, offsetof(struct csr_req, subject), KS_JSON_REQUIRED, KS_SUBJECT_MAX },
	{ "san", KS_JSON_OBJECT, offsetof(struct csr_req, san), 0, 0 },
	{ "key_usage", KS_JSON_STRV, offsetof(struct csr_req, key_usage), 0, KS_KEY_USAGE_MAX },
	{ "ext_key_usage", KS_JSON_STRV, offsetof(struct csr_req, ext_key_usage), 0, KS_EXT_KEY_USAGE_MAX },
	{ "attributes", KS_JSON_ARRAY, offsetof(struct csr_req, attributes), 0, KS_CSR_ATTRS_MAX },
	{ "digest", KS_JSON_STRING, offsetof(struct csr_req, digest), 0, KS_DIGEST_NAME_MAX },
	{ NULL, 0, 0, 0, 0 },
};

struct san_req {
	struct ks_strv dns, ip, uri, email;
};

static const struct ks_json_field san_fields[] = {
	{ "dns", KS_JSON_STRV, offsetof(struct san_req, dns), 0, KS_SAN_MAX },
	{ "ip", KS_JSON_STRV, offsetof(struct san_req, ip), 0, KS_SAN_MAX },
	{ "uri", KS_JSON_STRV, offsetof(struct san_req, uri), 0, KS_SAN_MAX },
	{ "email", KS_JSON_STRV, offsetof(struct san_req, email), 0, KS_SAN_MAX },
	{ NULL, 0, 0, 0, 0 },
};

static const struct ks_json_field attr_fields[] = {
	{ "oid", KS_JSON_STRING, offsetof(struct ks_csr_attr, oid), KS_JSON_REQUIRED, KS_OID_TEXT_MAX },
	{ "value", KS_JSON_STRING, offsetof(struct ks_csr_attr, value), KS_JSON_REQUIRED, KS_ATTR_VALUE_MAX },
	{ "type", KS_JSON_STRING, offsetof(struct ks_csr_attr, string_type), 0, KS_ATTR_TYPE_MAX },
	{ NULL, 0, 0, 0, 0 },
};

static size_t strv_bytes(const struct ks_strv *v)
{
	size_t n = 0;

	for (size_t i = 0; i < v->n; i++)
		n += strlen(v->v[i]);
	return n;
}

struct token_signer {
	struct ks_ctx *ctx;
	struct ks_request *rq;
	struct ks_reply *rep;
};

/*
 * The intent names the SHA-256 of the CertificationRequestInfo the key
 * signs. Its sync runs while the token signs; op_csr() waits for it
 * before the CSR is answered.
 */
static int csr_sign_with_token(void *arg, enum ks_sig_alg alg,
			       const uint8_t *tbs, size_t tbs_len,
			       const uint8_t *digest, size_t digest_len,
			       uint8_t **sig, size_t *sig_len)
{
	struct token_signer *ts = arg;
	char tbs_hash[65];
	int r;

	if ((r = ks_sha256_hex(tbs, tbs_len, tbs_hash)) != 0)
		return r;
	if ((r = ks_dispatch_audit_intent_start(ts->ctx, ts->rq, ts->rep, "sha256", tbs_hash)) != 0)
		return r;
	return ks_token_sign(ts->ctx->token, ts->rq->key, alg, tbs, tbs_len, digest, digest_len,
			     sig, sig_len);
}

static int op_csr(struct ks_ctx *ctx, struct ks_request *rq, void *arg,
		  struct ks_reply *rep)
{
	struct csr_req *c = arg;
	struct san_req san;
	struct ks_csr_attr attrs[KS_CSR_ATTRS_MAX];
	struct ks_csr_params params;
	struct ks_key_info info;
	struct token_signer signer = { ctx, rq, rep };
	const char *field = NULL, *why = NULL, *err = NULL;
	EVP_PKEY *pub = NULL;
	char *pem = NULL, why_not[256];
	size_t i, text;
	json_t *v;
	int r;

	memset(&san, 0, sizeof(san));
	memset(attrs, 0, sizeof(attrs));
	memset(&params, 0, sizeof(params));
	if (c->san != NULL &&
	    ks_json_dispatch(c->san, san_fields, &san, 0, &field, &why) != 0)
		return ks_reply_error(rep, -EINVAL, "san.%.*s: %s",
				   field ? ks_utf8_prefix(field, KS_QUOTE_MAX) : 0,
				   field ? field : "", why);
	if (san.dns.n + san.ip.n + san.uri.n + san.email.n > KS_SAN_MAX)
		return ks_reply_error(rep, -EINVAL, "san: more than %d names", KS_SAN_MAX);
	for (i = 0; i < c->key_usage.n; i++) {
		unsigned bit = ks_key_usage_from_name(c->key_usage.v[i]);

		if (bit == 0)
			return ks_reply_error(rep, -EINVAL, "key_usage: unknown usage %.*s",
					   ks_utf8_prefix(c->key_usage.v[i], KS_QUOTE_MAX),
					   c->key_usage.v[i]);
		params.key_usage |= bit;
	}
	if (c->attributes != NULL) {
		json_array_foreach(c->attributes, i, v) {
			if (ks_json_dispatch(v, attr_fields, &attrs[i], 0, &field, &why) != 0)
				return ks_reply_error(rep, -EINVAL, "attributes[%zu].%.*s: %s", i,
						   field ? ks_utf8_prefix(field, KS_QUOTE_MAX) : 0,
						   field ? field : "", why);
		}
		params.attrs = attrs;
		params.n_attrs = json_array_size(c->attributes);
	}
	/* Every string is at most 64 KiB (one frame) and there are at most 280: no overflow. */
	text = strlen(c->subject) + strv_bytes(&san.dns) + strv_bytes(&san.ip) +
	       strv_bytes(&san.uri) + strv_bytes(&san.email) + strv_bytes(&c->ext_key_usage);
	for (i = 0; i < params.n_attrs; i++)
		text += strlen(attrs[i].oid) + strlen(attrs[i].value);
	/* Checked before the token is touched, so a CSR too large to send is never signed. */
	if (text > KS_CSR_TEXT_MAX)
		return ks_reply_error(rep, -EINVAL, "subject, san, ext_key_usage and attributes: "
				   "%zu bytes in all, more than %d", text, KS_CSR_TEXT_MAX);
	/* The request is well formed: is the key for CSRs, and is the peer granted that? */
	if ((r = ks_purpose_authorize(ctx, rq->policy, rq->peer, rq->op, rq->key, NULL, 0, 0,
				      &rq->purpose, rep)) != 0)
		return r;
	if ((r = ks_token_key_info(ctx->token, rq->key, &info)) != 0)
		return ks_reply_token_error(rep, r, rq->key);
	params.alg = ks_sig_alg_for_digest(ks_key_type_family(info.type),
					   c->digest ? c->digest : "sha256");
	if (params.alg == KS_SIG_NONE)
		return ks_reply_error(rep, -EINVAL, "digest %s is not available for key %s",
				   c->digest ? c->digest : "sha256", rq->key);
	if (ks_token_check_sig_alg(ctx->token, params.alg, 0, why_not, sizeof(why_not)) != 0)
		return ks_reply_error(rep, -EOPNOTSUPP, "%s", why_not);
	params.subject = c->subject;
	params.dns = san.dns.v;
	params.n_dns = san.dns.n;
	params.ip = san.ip.v;
	params.n_ip = san.ip.n;
	params.uri = san.uri.v;
	params.n_uri = san.uri.n;
	params.email = san.email.v;
	params.n_email = san.email.n;
	params.ext_key_usage = c->ext_key_usage.v;
	params.n_ext_key_usage = c->ext_key_usage.n;
	if ((r = ks_token_public_key(ctx->token, rq->key, &pub)) != 0)
		return ks_reply_token_error(rep, r, rq->key);
	r = ks_csr_create(pub, &params, csr_sign_with_token, &signer, &pem, &err);
	/* No signed request leaves unless its intent record is durable. */
	if (r == 0 && (r = ks_dispatch_audit_intent_wait(ctx, rq, rep)) != 0)
		;       /* @rep says audit-unavailable; the CSR is discarded below */
	else if (r != 0 && rep->wire != KS_WIRE_ERR_NONE)
		;       /* ks_dispatch_audit_intent_start() refused it and said so in @rep */
	else if (r == -EINVAL && err != NULL)
		ks_reply_error(rep, r, "%s", err);
	else if (r != 0)
		ks_reply_token_error(rep, r, rq->key);
	else
		r = ks_reply_set_result(rep, json_pack("{s:s, s:s}", "key", rq->key, "csr", pem));
	free(pem);
	EVP_PKEY_free(pub);
	return r;
}

struct cert_req {
	const char *cert;
};

static const struct ks_json_field cert_put_fields[] = {
	{ "id", KS_JSON_SKIP, 0, 0, 0 },
	{ "op", KS_JSON_SKIP, 0, 0, 0 },
	{ "key", KS_JSON_SKIP, 0, 0, 0 },
	{ "cert", KS_JSON_STRING, offsetof(struct cert_req, cert), KS_JSON_REQUIRED, KS_CERT_PEM_MAX },
	{ NULL, 0, 0, 0, 0 },
};

/* Exactly one PEM certificate and nothing else of substance. */
static X509 *parse_one_cert(const char *pem)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)strlen(pem));
	X509 *cert = NULL, *extra = NULL;

	if (bio == NULL)
		return NULL;
	cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	if (cert != NULL && (extra = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		X509_free(extra);
		X509_free(cert);
		cert = NULL;
	}
	BIO_free(bio);
	return cert;
}

static int op_cert_put(struct ks_ctx *ctx, struct ks_request *rq, void *arg,
		       struct ks_reply *rep)
{
	struct cert_req *c = arg;
	EVP_PKEY *pub = NULL;
	X509 *cert = NULL;
	uint8_t *der = NULL;
	char cert_hash[65];
	int der_len, r;

	if ((cert = parse_one_cert(c->cert)) == NULL)
		return ks_reply_error(rep, -EINVAL, "cert: must be exactly one PEM certificate");
	if ((r = ks_token_public_key(ctx->token, rq->key, &pub)) != 0) {
		ks_reply_token_error(rep, r, rq->key);
		goto out;
	}
	if (X509_get0_pubkey(cert) == NULL || EVP_PKEY_eq(X509_get0_pubkey(cert), pub) != 1) {
		r = ks_reply_error(rep, -EINVAL, "cert: its public key is not the public key of %s",
				rq->key);
		goto out;
	}
	if ((der_len = i2d_X509(cert, &der)) <= 0) {
		r = ks_reply_error(rep, -EIO, "cannot encode the certificate");
		goto out;
	}
	if ((r = ks_sha256_hex(der, (size_t)der_len, cert_hash)) != 0) {
		ks_reply_error(rep, r, "cannot hash the certificate");
		goto out;
	}
	if ((r = ks_dispatch_audit_intent(ctx, rq, rep, "sha256", cert_hash)) != 0)
		goto out;
	if ((r = ks_token_cert_put(ctx->token, rq->key, der, (size_t)der_len)) != 0) {
		ks_reply_token_error(rep, r, rq->key);
		goto out;
	}
	r = ks_reply_set_result(rep, json_pack("{s:s}", "key", rq->key));
out:
	OPENSSL_free(der);
	X509_free(cert);
	EVP_PKEY_free(pub);
	return r;
}

static int op_cert_get(struct ks_ctx *ctx, struct ks_request *rq, void *arg,
		       struct ks_reply *rep)
{
	uint8_t *der = NULL;
	size_t der_len = 0;
	const unsigned char *p;
	X509 *cert = NULL;
	BIO *bio = NULL;
	char *data;
	long n;
	int r;

	(void)arg;
	if ((r = ks_token_cert_get(ctx->token, rq->key, &der, &der_len)) != 0) {
		if (r == -ENOENT)
			return ks_reply_error(rep, r, "no certificate stored for key %s", rq->key);
		return ks_reply_token_error(rep, r, rq->key);
	}
	p = der;
	if (der_len > KS_CERT_PEM_MAX || (cert = d2i_X509(NULL, &p, (long)der_len)) == NULL) {
		r = ks_reply_error(rep, -EIO, "the stored certificate of %s is not valid", rq->key);
		goto out;
	}
	if ((bio = BIO_new(BIO_s_mem())) == NULL || PEM_write_bio_X509(bio, cert) != 1) {
		r = ks_reply_error(rep, -ENOMEM, "out of memory");
		goto out;
	}
	n = BIO_get_mem_data(bio, &data);
	{
		json_t *pem = json_stringn(data, (size_t)n);

		r = ks_reply_set_result(rep, json_pack("{s:s, s:o}", "key", rq->key, "cert", pem));
	}
out:
	BIO_free(bio);
	X509_free(cert);
	free(der);
	return r;
}

/* ---- the table --------------------------------------------------------- */

typedef int (*ks_op_fn)(struct ks_ctx *ctx, struct ks_request *rq, void *arg,
			struct ks_reply *rep);

union ks_op_args {
	struct hello_req hello;
	struct key_req key;
	struct csr_req csr;
	struct ks_sign_req sign;
	struct cert_req cert;
};

static const struct {
	const struct ks_json_field *fields;
	ks_op_fn fn;
	void (*clear)(void *arg);  /* frees what the fields' checks made; NULL: nothing */
} op_table[KS_OP_COUNT] = {
	[KS_OP_HELLO] = { hello_fields, op_hello, NULL },
	[KS_OP_KEY_GENERATE] = { generate_fields, op_generate, NULL },
	[KS_OP_KEY_LIST] = { list_fields, op_list, NULL },
	[KS_OP_KEY_PUBLIC] = { key_fields, op_public, NULL },
	[KS_OP_KEY_DELETE] = { key_fields, op_delete, NULL },
	[KS_OP_CSR_CREATE] = { csr_fields, op_csr, NULL },
	[KS_OP_SIGN] = { ks_sign_fields, ks_op_sign, ks_sign_req_clear },
	[KS_OP_CERT_PUT] = { cert_put_fields, op_cert_put, NULL },
	[KS_OP_CERT_GET] = { key_fields, op_cert_get, NULL },
};

/* The key an operation on one key names (ks_op_takes_key()), checked before the policy is asked. */
static const struct ks_json_field request_key_fields[] = {
	{ "key", KS_JSON_STRING, offsetof(struct ks_request, key), KS_JSON_REQUIRED, KS_KEY_NAME_MAX,
	  ks_wire_check_key_name, 0 },
	{ NULL, 0, 0, 0, 0 },
};

/*
 * A field of the request refused: the field and why, or for a name the
 * protocol does not define (a check's -EOPNOTSUPP) the name itself.
 */
static void reply_field_error(struct ks_reply *rep, json_t *root, int err, const char *field,
			      const char *why)
{
	json_t *v = field != NULL ? json_object_get(root, field) : NULL;

	if (field == NULL)
		field = "request";
	if (err == -ENOMEM)
		ks_reply_error(rep, err, "out of memory");
	else if (err == -EOPNOTSUPP && json_is_string(v))
		ks_reply_error(rep, err, "%s %.*s", why, ks_utf8_prefix(json_string_value(v), KS_QUOTE_MAX),
			       json_string_value(v));
	else
		ks_reply_error(rep, err, "%.*s: %s", ks_utf8_prefix(field, KS_QUOTE_MAX), field, why);
}

/*
 * After ks_reply_encode(): the audit record says what the client was told,
 * linked to the intent record (@intent, 0 for none) written before the
 * token was used.
 */
static void audit_and_log(struct ks_ctx *ctx, const struct ks_peer *peer,
			  const char *op, const char *key, const char *purpose, uint64_t intent,
			  const struct ks_reply *rep)
{
	const char *outcome = rep->outcome;

	ks_audit_outcome(ctx->audit, peer, op, key, purpose, intent, outcome);
	if (strcmp(outcome, "ok") == 0)
		ks_debug("uid %u pid %d %s %s: ok", (unsigned)peer->uid, (int)peer->pid,
			 op ? op : "-", key ? key : "-");
	else
		ks_info("uid %u pid %d %s %s: %s: %s", (unsigned)peer->uid, (int)peer->pid,
			op ? op : "-", key ? key : "-", outcome, rep->message);
}

int ks_dispatch(struct ks_ctx *ctx, const struct ks_peer *peer,
		const uint8_t *req, size_t len, uint8_t **resp, size_t *resp_len)
{
	struct ks_request rq;
	struct ks_reply rep;
	struct ks_policy *policy = NULL;
	union ks_op_args args;
	const char *why = NULL, *field = NULL, *op_audit = NULL, *key_audit = NULL;
	json_t *opv, *keyv;
	int op, r;

	memset(&rq, 0, sizeof(rq));
	memset(&rep, 0, sizeof(rep));
	memset(&args, 0, sizeof(args));
	rq.peer = peer;
	*resp = NULL;
	*resp_len = 0;

	if (len == 0 || len > KS_FRAME_MAX) {
		ks_reply_error(&rep, -EINVAL, "request length out of range");
		goto answer;
	}
	if ((rq.root = ks_json_parse(req, len, &why)) == NULL) {
		ks_reply_error(&rep, -EINVAL, "%s", why);
		goto answer;
	}
	/*
	 * What the audit line names, taken before any check can refuse the
	 * request: the operation if it is one, and the key if it is a valid
	 * name (the whole string: jansson keeps a "\u0000" that would cut it
	 * short), unless the operation is one that takes no key. A refused
	 * request is audited with what it asked for.
	 */
	opv = json_object_get(rq.root, "op");
	if (json_is_string(opv) && (op = ks_op_from_name(json_string_value(opv))) >= 0)
		op_audit = ks_op_name((enum ks_op)op);
	keyv = json_object_get(rq.root, "key");
	if (!(op_audit != NULL && !ks_op_takes_key((enum ks_op)op)) && json_is_string(keyv) &&
	    json_string_length(keyv) == strlen(json_string_value(keyv)) &&
	    ks_key_name_valid(json_string_value(keyv)))
		key_audit = json_string_value(keyv);
	rq.id = json_object_get(rq.root, "id");
	if (rq.id == NULL || !ks_reply_id_valid(rq.id)) {
		rq.id = NULL;
		ks_reply_error(&rep, -EINVAL, "id: must be a string of 1..%d bytes or a "
			    "non-negative integer", KS_ID_MAX);
		goto answer;
	}
	if (!json_is_string(opv)) {
		ks_reply_error(&rep, -EINVAL, "op: must be a string");
		goto answer;
	}
	if ((op = ks_op_from_name(json_string_value(opv))) < 0) {
		ks_reply_error(&rep, -EOPNOTSUPP, "unknown operation %.*s",
			    ks_utf8_prefix(json_string_value(opv), KS_QUOTE_MAX), json_string_value(opv));
		goto answer;
	}
	rq.op = (enum ks_op)op;
	/* The fields' types now, their values (but the key's) only for a peer the policy lets ask. */
	if ((r = ks_json_dispatch(rq.root, op_table[op].fields, &args, KS_JSON_NO_CHECKS,
				  &field, &why)) != 0) {
		reply_field_error(&rep, rq.root, r, field, why);
		goto answer;
	}
	if (ks_op_takes_key(rq.op) &&
	    (r = ks_json_dispatch(rq.root, request_key_fields, &rq, KS_JSON_ALLOW_UNKNOWN,
				  &field, &why)) != 0) {
		reply_field_error(&rep, rq.root, r, field, why);
		rq.key = NULL;
		goto answer;
	}
	/* Default deny, decided before anything touches the token. */
	policy = ctx_policy(ctx);
	rq.policy = policy;
	if (!ks_policy_allows(policy, peer, rq.op, rq.key)) {
		if (rq.op == KS_OP_HELLO || rq.op == KS_OP_KEY_LIST)
			ks_reply_error(&rep, -EACCES, "uid %u is not granted %s",
				    (unsigned)peer->uid, op_audit);
		else
			ks_reply_error(&rep, -EACCES, "uid %u is not granted %s on key %s",
				    (unsigned)peer->uid, op_audit, rq.key);
		goto answer;
	}
	if ((r = ks_json_check(rq.root, op_table[op].fields, &args, &field, &why)) != 0)
		reply_field_error(&rep, rq.root, r, field, why);
	else
		op_table[op].fn(ctx, &rq, &args, &rep);
	if (op_table[op].clear != NULL)
		op_table[op].clear(&args);

answer:
	if ((r = ks_reply_encode(ctx, rq.id, &rep, resp, resp_len)) != 0)
		ks_err("uid %u pid %d: out of memory; no answer, closing the connection",
		       (unsigned)peer->uid, (int)peer->pid);
	audit_and_log(ctx, peer, op_audit, key_audit, rq.purpose, rq.audit_seq, &rep);
	json_decref(rep.result);
	json_decref(rq.root);
	ks_policy_unref(policy);
	return r;
}

int ks_dispatch_frame_error(struct ks_ctx *ctx, const struct ks_peer *peer,
			    const char *why, uint8_t **resp, size_t *resp_len)
{
	struct ks_reply rep;
	int r;

	memset(&rep, 0, sizeof(rep));
	ks_reply_error(&rep, -EINVAL, "%s", why);
	r = ks_reply_encode(ctx, NULL, &rep, resp, resp_len);
	audit_and_log(ctx, peer, NULL, NULL, NULL, 0, &rep);
	return r;
}

int ks_ctx_knows_peer(struct ks_ctx *ctx, const struct ks_peer *peer)
{
	struct ks_policy *policy = ctx_policy(ctx);
	int known = ks_policy_knows_peer(policy, peer);

	ks_policy_unref(policy);
	return known;
}

int ks_dispatch_refusal(struct ks_ctx *ctx, const struct ks_peer *peer, const char *message,
			uint8_t **resp, size_t *resp_len)
{
	struct ks_reply rep;
	int r;

	memset(&rep, 0, sizeof(rep));
	ks_reply_error(&rep, -EACCES, "%s", message);
	r = ks_reply_encode(ctx, NULL, &rep, resp, resp_len);
	ks_audit_log(ctx->audit, peer, NULL, NULL, ks_wire_err_name(KS_WIRE_DENIED));
	return r;
}
