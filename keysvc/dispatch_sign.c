/*
 * The sign operation (PROTOCOL.md "sign"): a digest, or data whose form
 * the key's purposes are checked against (dispatch_purpose.c), signed by
 * the token after the intent record is written.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "keysvc/dispatch_internal.h"
#include "proto/b64.h"
#include "proto/frame.h"
#include "proto/json.h"
#include "proto/wire.h"

const struct ks_json_field ks_sign_fields[] = {
	{ "id", KS_JSON_SKIP, 0, 0, 0 },
	{ "op", KS_JSON_SKIP, 0, 0, 0 },
	{ "key", KS_JSON_SKIP, 0, 0, 0 },
	{ "alg", KS_JSON_STRING, offsetof(struct ks_sign_req, alg), KS_JSON_REQUIRED, KS_WIRE_NAME_MAX,
	  ks_wire_check_sig_alg, offsetof(struct ks_sign_req, sig_alg) },
	{ "digest", KS_JSON_STRING, offsetof(struct ks_sign_req, digest), 0, 128,
	  ks_wire_check_digest, offsetof(struct ks_sign_req, digest_bytes) },
	{ "data", KS_JSON_STRING, offsetof(struct ks_sign_req, data), 0, KS_FRAME_MAX,
	  ks_wire_check_data, offsetof(struct ks_sign_req, data_bytes) },
	{ NULL, 0, 0, 0, 0 },
};

void ks_sign_req_clear(void *arg)
{
	struct ks_sign_req *s = arg;

	ks_wire_bytes_clear(&s->digest_bytes);
	ks_wire_bytes_clear(&s->data_bytes);
}

int ks_op_sign(struct ks_ctx *ctx, struct ks_request *rq, void *arg, struct ks_reply *rep)
{
	struct ks_sign_req *s = arg;
	enum ks_sig_alg alg = s->sig_alg;
	const uint8_t *in = s->data_bytes.data;
	size_t in_len = s->data_bytes.len, sig_len = 0;
	uint8_t md[EVP_MAX_MD_SIZE], *sig = NULL;
	unsigned md_len = 0;
	char *b64 = NULL, signed_hex[2 * EVP_MAX_MD_SIZE + 1], why[256];
	const char *signed_name;
	int r;

	if ((s->digest == NULL) == (s->data == NULL))
		return ks_reply_error(rep, -EINVAL, "exactly one of digest and data is required");
	if (ks_token_check_sig_alg(ctx->token, alg, s->digest != NULL, why, sizeof(why)) != 0)
		return ks_reply_error(rep, -EOPNOTSUPP, "%s", why);
	if (s->digest != NULL) {
		if (s->digest_bytes.len != ks_sig_alg_digest_len(alg))
			return ks_reply_error(rep, -EINVAL, "digest: must be base64 of %zu bytes for %s",
					   ks_sig_alg_digest_len(alg), s->alg);
		if ((r = ks_purpose_authorize(ctx, rq->policy, rq->peer, rq->op, rq->key, NULL, 0, 0,
					      &rq->purpose, rep)) != 0)
			return r;
		memcpy(md, s->digest_bytes.data, s->digest_bytes.len);
		md_len = (unsigned)s->digest_bytes.len;
		signed_name = "digest";
		ks_hex(md, md_len, signed_hex);
	} else {
		/* The form of what is signed is checked on the bytes themselves, before hashing. */
		if ((r = ks_purpose_authorize(ctx, rq->policy, rq->peer, rq->op, rq->key, in, in_len,
					      1, &rq->purpose, rep)) != 0)
			return r;
		if (EVP_Digest(in, in_len, md, &md_len,
			       EVP_get_digestbyname(ks_sig_alg_digest(alg)), NULL) != 1) {
			r = ks_reply_error(rep, -EIO, "digest failed");
			goto out;
		}
		/* The data's SHA-256 whatever the algorithm's hash, so records compare. */
		signed_name = "sha256";
		if (md_len == 32 && strcmp(ks_sig_alg_digest(alg), "sha256") == 0) {
			ks_hex(md, md_len, signed_hex);
		} else if (ks_sha256_hex(in, in_len, signed_hex) != 0) {
			r = ks_reply_error(rep, -EIO, "digest failed");
			goto out;
		}
	}
	/*
	 * The record is in the file before the token is asked; its sync runs
	 * while the token signs, and the signature leaves only once it is
	 * durable (below).
	 */
	if ((r = ks_dispatch_audit_intent_start(ctx, rq, rep, signed_name, signed_hex)) != 0)
		goto out;
	r = ks_token_sign(ctx->token, rq->key, alg, s->data != NULL ? in : NULL, in_len, md, md_len,
			  &sig, &sig_len);
	if (r == -EOPNOTSUPP &&
	    ks_token_check_sig_alg(ctx->token, alg, s->digest != NULL, why, sizeof(why)) != 0) {
		ks_reply_error(rep, r, "%s", why);
		goto out;
	}
	if (r == -EINVAL) {
		ks_reply_error(rep, r, "%s does not fit key %s", s->alg, rq->key);
		goto out;
	}
	if (r != 0) {
		ks_reply_token_error(rep, r, rq->key);
		goto out;
	}
	if ((r = ks_dispatch_audit_intent_wait(ctx, rq, rep)) != 0)
		goto out;       /* the signature is wiped below, never sent */
	if ((r = ks_b64_encode(sig, sig_len, &b64)) != 0) {
		ks_reply_error(rep, r, "out of memory");
		goto out;
	}
	r = ks_reply_set_result(rep, json_pack("{s:s, s:s, s:s}", "key", rq->key, "alg", s->alg,
				      "signature", b64));
out:
	if (sig != NULL)
		explicit_bzero(sig, sig_len);
	free(sig);
	if (b64 != NULL)
		explicit_bzero(b64, strlen(b64));
	free(b64);
	return r;
}

