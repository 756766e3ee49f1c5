/*
 * The request dispatcher: a pure function from one request body to one
 * response body (after p11-kit's rpc-server). It knows nothing of sockets,
 * so unit tests and fuzzers call it directly with any bytes and any peer.
 *
 * For every request it parses the JSON against the operation's schema,
 * checks the policy before touching the token, runs the operation, maps
 * the result to a named wire error (proto/PROTOCOL.md), encodes the
 * answer and then writes one audit record with the outcome the client got.
 * An operation that uses or changes the token (key.generate, key.delete,
 * csr.create, sign, cert.put) first writes an intent record naming what
 * is signed; when that cannot be written it is answered audit-unavailable
 * and the token is not used. key.generate, key.delete and cert.put wait
 * until it is durable before the token is asked (ks_audit_intent()); sign
 * and csr.create let the token sign while it is synced and answer only
 * once it is durable, else audit-unavailable with the signature wiped
 * (ks_audit_intent_start(), ks_audit_intent_wait()).
 */
#ifndef KEYSVC_DISPATCH_H
#define KEYSVC_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include "keysvc/audit.h"
#include "keysvc/policy.h"
#include "pkcs11/token.h"

struct ks_ctx;

/*
 * A dispatcher context over @token (not owned), @audit (not owned, may be
 * NULL) and @policy (the reference is taken over). 0 or -ENOMEM.
 */
int ks_ctx_new(struct ks_token *token, struct ks_audit *audit,
	       struct ks_policy *policy, struct ks_ctx **out);

/* Replace the policy (SIGHUP); takes over the reference. Requests in flight finish with the old one. */
void ks_ctx_set_policy(struct ks_ctx *ctx, struct ks_policy *policy);

/*
 * For tests: encode answers as if a frame held only @max bytes (at most
 * KS_FRAME_MAX, the default), to reach the path of an answer too large
 * to send. keysvcd never calls it.
 */
void ks_ctx_set_response_max(struct ks_ctx *ctx, size_t max);

/*
 * For tests: answer key.list with at most @max keys (at most 512, the
 * default), to reach "truncated" without 513 keys on a SoftHSM token.
 */
void ks_ctx_set_list_max(struct ks_ctx *ctx, size_t max);

void ks_ctx_free(struct ks_ctx *ctx);

/*
 * Handle one request body of @len bytes from @peer. Always produces a
 * response body in *@resp (malloc'd, at most KS_FRAME_MAX bytes, not
 * NUL-terminated, caller frees) unless memory runs out, in which case it
 * returns -ENOMEM and the caller should drop the connection.
 */
int ks_dispatch(struct ks_ctx *ctx, const struct ks_peer *peer,
		const uint8_t *req, size_t len, uint8_t **resp, size_t *resp_len);

/*
 * The response for a frame that could not be read as a request (zero or
 * oversized length): a bad-request with a null id, audited like a request.
 */
int ks_dispatch_frame_error(struct ks_ctx *ctx, const struct ks_peer *peer,
			    const char *why, uint8_t **resp, size_t *resp_len);

/* 1 if the policy in force has a rule naming @peer (ks_policy_knows_peer()). */
int ks_ctx_knows_peer(struct ks_ctx *ctx, const struct ks_peer *peer);

/*
 * The answer to a connection refused before any request was read (over a
 * connection limit): a "denied" error with a null id and @message, built
 * by the same reply encoder as every other answer into *@resp (malloc'd,
 * caller frees), and audited: outcome "denied", no operation, no key. The
 * caller sends it and logs the refusal (rate-limited); nothing is logged
 * here, so a peer reconnecting in a loop fills the audit log, not the
 * journal. 0, or -ENOMEM with no answer (the refusal is audited anyway).
 */
int ks_dispatch_refusal(struct ks_ctx *ctx, const struct ks_peer *peer, const char *message,
			uint8_t **resp, size_t *resp_len);

/* The wire error name for a negative errno from the lower layers. */
const char *ks_wire_error(int err);

#endif
