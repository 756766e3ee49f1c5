/*
 * What dispatch.c (the operations and the request loop),
 * dispatch_sign.c (the sign operation), dispatch_reply.c (the answer:
 * wire errors, messages, encoding) and dispatch_purpose.c (key purposes)
 * share.
 * Not for other modules: they see only keysvc/dispatch.h.
 */
#ifndef KEYSVC_DISPATCH_INTERNAL_H
#define KEYSVC_DISPATCH_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "keysvc/audit.h"
#include "keysvc/policy.h"
#include "pkcs11/token.h"
#include "proto/json.h"
#include "proto/wire.h"

struct ks_ctx {
	struct ks_token *token;
	struct ks_audit *audit;
	pthread_mutex_t policy_lock;
	struct ks_policy *policy;
	size_t response_max;       /* KS_FRAME_MAX; smaller only in tests */
	size_t list_max;           /* KS_LIST_MAX; smaller only in tests */
};

/* One request while it is handled: what it asked and what it was decided under. */
struct ks_request {
	json_t *root;
	json_t *id;
	enum ks_op op;
	const char *key;
	const struct ks_peer *peer;
	const struct ks_policy *policy;  /* the one the request was decided under */
	const char *purpose;       /* the key purpose a use was decided under, for the audit; NULL: none */
	uint64_t audit_seq;        /* the intent record's seq; 0: none */
	struct ks_audit_pending audit_pending;  /* an intent whose sync runs (sign, csr.create) */
};

/* What one request produced: a result object or an error. */
struct ks_reply {
	json_t *result;            /* fields for a success response */
	int err;                   /* negative errno when result is NULL */
	enum ks_wire_err wire;     /* overrides ks_wire_error(err) unless KS_WIRE_ERR_NONE */
	const char *outcome;       /* set by ks_reply_encode(): "ok" or the error sent */
	char message[KS_MESSAGE_MAX];
};

/*
 * Make @rep an error @err with a printf message (cut to KS_MESSAGE_MAX,
 * then made valid UTF-8, since it may quote client text). Returns @err.
 */
int ks_reply_error(struct ks_reply *rep, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ks_reply_error() with the message for an error of the token layer, naming @key. */
int ks_reply_token_error(struct ks_reply *rep, int err, const char *key);

/* Make @result (taken over) the answer; NULL (failed allocation) answers -ENOMEM. 0 or -ENOMEM. */
int ks_reply_set_result(struct ks_reply *rep, json_t *result);

/* 1 when @id is a request id the protocol allows (string of 1..KS_ID_MAX bytes or integer 0..2^53-1). */
int ks_reply_id_valid(json_t *id);

/*
 * Encode the answer for @rep with @id into *@resp (malloc'd, *@resp_len
 * bytes, at most ctx->response_max) and set rep->outcome to what the
 * client is told: "ok" or the wire error name. A reply that cannot be
 * encoded is answered with a fixed frame instead, never by dropping the
 * connection. 0, or -ENOMEM when not even the fixed frame can be copied.
 */
int ks_reply_encode(struct ks_ctx *ctx, json_t *id, struct ks_reply *rep,
		    uint8_t **resp, size_t *resp_len);

/* ---- dispatch.c: helpers of the operations ---- */

/* @out (2 * @n + 1 bytes) = lowercase hex of the @n bytes at @b, NUL-terminated. */
void ks_hex(const uint8_t *b, size_t n, char *out);

/* @out = lowercase hex SHA-256 of the @len bytes at @data; 0 or -EIO. */
int ks_sha256_hex(const uint8_t *data, size_t len, char out[65]);

/*
 * The intent record of an operation that changes the token (key.generate,
 * key.delete, cert.put): called right before the token is asked, after
 * every check that can refuse the request; it returns when the record is
 * durable (ks_audit_intent()). When it cannot be written (and audit_failure is
 * refuse) @rep is made audit-unavailable and the error returned: the
 * caller returns without touching the token. @hash_name/@hash_hex: what
 * the key is about to sign, or NULL. Sets rq->audit_seq.
 */
int ks_dispatch_audit_intent(struct ks_ctx *ctx, struct ks_request *rq, struct ks_reply *rep,
			     const char *hash_name, const char *hash_hex);

/*
 * The intent record of an operation that only produces an answer (sign,
 * csr.create): written (refused like ks_dispatch_audit_intent() when it
 * cannot be, before the token is asked), its sync started but not waited
 * for (ks_audit_intent_start()), so the token signs while it runs. Sets
 * rq->audit_seq and rq->audit_pending.
 */
int ks_dispatch_audit_intent_start(struct ks_ctx *ctx, struct ks_request *rq,
				   struct ks_reply *rep, const char *hash_name, const char *hash_hex);

/*
 * After the token signed, before the answer is made: wait until the
 * intent of ks_dispatch_audit_intent_start() is durable. 0, or (the sync
 * failed, audit_failure refuse) the error put in @rep as
 * audit-unavailable: the caller wipes and discards what the token made.
 */
int ks_dispatch_audit_intent_wait(struct ks_ctx *ctx, struct ks_request *rq,
				  struct ks_reply *rep);

/* ---- dispatch_sign.c: the sign operation ---- */

struct ks_sign_req {
	const char *alg;
	const char *digest;
	const char *data;
	enum ks_sig_alg sig_alg;
	struct ks_wire_bytes digest_bytes;
	struct ks_wire_bytes data_bytes;     /* what is signed: wiped when done */
};

/* The fields of a sign request (PROTOCOL.md "sign"), read into struct ks_sign_req. */
extern const struct ks_json_field ks_sign_fields[];

/* Wipe and free what ks_sign_fields' checks decoded into the struct ks_sign_req @arg. */
void ks_sign_req_clear(void *arg);

/*
 * The sign operation on @arg (struct ks_sign_req): exactly one of digest
 * and data, the algorithm the token offers, the purpose authorised
 * (ks_purpose_authorize()), the intent written, then the token signs
 * while the intent is synced; the signature is answered only once the
 * intent is durable (else wiped, and audit-unavailable).
 * The answer (or the error) is put in @rep. 0 or a negative errno.
 */
int ks_op_sign(struct ks_ctx *ctx, struct ks_request *rq, void *arg, struct ks_reply *rep);

/* ---- dispatch_purpose.c ---- */

/* @set as a JSON array of purpose names in proto/sigform's order; NULL when out of memory. */
json_t *ks_purposes_json(unsigned set);

/*
 * Add "purposes" (and "purposes_legacy": true for a key that carries
 * none) to the object @result. 0 or -ENOMEM (also for a NULL @result).
 */
int ks_purposes_set_in(json_t *result, unsigned set, int legacy);

/*
 * Whether @peer may use @key for @op (KS_OP_SIGN or KS_OP_CSR_CREATE)
 * under the purpose the request's form asks for: csr for csr.create, sign
 * for a digest, for data (@is_data, @data_len bytes at @data) the first
 * of the key's purposes the policy grants whose form it has
 * (ks_sigform_match()), else the form it has (tls, http-signature, or
 * sign for anything else). The key's purposes are read from the token
 * (ks_token_key_purposes(), before anything is signed); the policy's are
 * ks_policy_purposes(). *@purpose is the name of the purpose decided
 * (for the audit record, granted or refused; NULL when the key could not
 * be read). 0, or an error put in @rep: "denied" naming the key's
 * purposes (or the policy's limit), or the token's error.
 */
int ks_purpose_authorize(struct ks_ctx *ctx, const struct ks_policy *policy,
			 const struct ks_peer *peer, enum ks_op op, const char *key,
			 const uint8_t *data, size_t data_len, int is_data,
			 const char **purpose, struct ks_reply *rep);

#endif
