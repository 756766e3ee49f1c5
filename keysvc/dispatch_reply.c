/*
 * The answer side of the dispatcher: the wire error names, the reply a
 * request produced (a result or an error with its message) and its
 * encoding into one response frame, with a fixed frame when the proper
 * answer cannot be built.
 */
#include "keysvc/dispatch.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keysvc/dispatch_internal.h"
#include "proto/frame.h"
#include "proto/json.h"
#include "proto/log.h"
#include "proto/utf8.h"
#include "proto/wire.h"

/* The one mapping from the lower layers' negative errno values to wire errors. */
static enum ks_wire_err wire_err_from_errno(int err)
{
	switch (err) {
	case -EINVAL:
	case -EBADMSG:
	case -EMSGSIZE:
		return KS_WIRE_BAD_REQUEST;
	case -EACCES:
	case -EPERM:
		return KS_WIRE_DENIED;
	case -ENOENT:
		return KS_WIRE_NO_SUCH_KEY;
	case -EEXIST:
		return KS_WIRE_EXISTS;
	case -EOPNOTSUPP:
		return KS_WIRE_UNSUPPORTED;
	case -ENODEV:
	case -EKEYREJECTED:
	case -ETIMEDOUT:
		return KS_WIRE_TOKEN_UNAVAILABLE;
	default:
		return KS_WIRE_INTERNAL;
	}
}

const char *ks_wire_error(int err)
{
	return ks_wire_err_name(wire_err_from_errno(err));
}

int ks_reply_error(struct ks_reply *rep, int err, const char *fmt, ...)
{
	va_list ap;

	rep->err = err;
	va_start(ap, fmt);
	vsnprintf(rep->message, sizeof(rep->message), fmt, ap);
	va_end(ap);
	/* vsnprintf cuts at a byte count, maybe inside a character the client sent. */
	ks_utf8_sanitize(rep->message);
	return err;
}

/* A message for an error of the token layer, naming the key. */
int ks_reply_token_error(struct ks_reply *rep, int err, const char *key)
{
	switch (err) {
	case -ENOENT:
		return ks_reply_error(rep, err, "no key named %s", key);
	case -EEXIST:
		return ks_reply_error(rep, err, "a key named %s exists", key);
	case -ENODEV:
		return ks_reply_error(rep, err, "the token is not available");
	case -EKEYREJECTED:
		return ks_reply_error(rep, err, "the token rejected the PIN; fix the PIN and restart keysvcd");
	case -ETIMEDOUT:
		return ks_reply_error(rep, err, "the token is busy; try again");
	case -EOPNOTSUPP:
		return ks_reply_error(rep, err, "the token does not support this operation");
	case -EINVAL:
		return ks_reply_error(rep, err, "the key %s does not fit this request", key);
	case -ENOMEM:
		return ks_reply_error(rep, err, "out of memory");
	default:
		return ks_reply_error(rep, err, "token error (see the daemon log)");
	}
}

int ks_reply_set_result(struct ks_reply *rep, json_t *result)
{
	if (result == NULL)
		return ks_reply_error(rep, -ENOMEM, "out of memory");
	rep->result = result;
	return 0;
}

/* ---- framing the answer ------------------------------------------------ */

int ks_reply_id_valid(json_t *id)
{
	if (json_is_string(id))
		return json_string_length(id) >= 1 && json_string_length(id) <= KS_ID_MAX;
	if (json_is_integer(id))
		return json_integer_value(id) >= 0 &&
		       json_integer_value(id) < ((json_int_t)1 << 53);
	return 0;
}

/*
 * The answer when the proper one cannot be built: the id (which the parser
 * already accepted), rep->outcome and rep->message, which the callers set
 * to fixed ASCII. If even that cannot be built, a constant frame with a
 * null id. -ENOMEM only when not even that copy can be made.
 */
static int encode_fixed(json_t *id, struct ks_reply *rep, uint8_t **resp, size_t *resp_len)
{
	/* When nothing can be built any more: a constant (the names are proto/wire.c's). */
	static const char last[] = "{\"id\":null,\"ok\":false,\"error\":\"internal\","
				   "\"message\":\"out of memory\"}";
	json_t *o;
	char *s = NULL;
	size_t n = 0;
	int r = -ENOMEM;

	o = json_pack("{s:O?, s:b, s:s, s:s}", "id", id, "ok", 0, "error", rep->outcome,
		      "message", rep->message);
	if (o != NULL) {
		r = ks_json_serialize(o, KS_FRAME_MAX, &s, &n);
		json_decref(o);
	}
	if (r != 0) {
		rep->outcome = ks_wire_err_name(KS_WIRE_INTERNAL);
		snprintf(rep->message, sizeof(rep->message), "out of memory");
		if ((s = strdup(last)) == NULL)
			return -ENOMEM;
		n = sizeof(last) - 1;
	}
	*resp = (uint8_t *)s;
	*resp_len = n;
	return 0;
}

/*
 * Encode the answer for @rep and set rep->outcome to what the client is
 * told: "ok" or the wire error name. A reply that cannot be encoded is
 * answered with a fixed frame instead, never by dropping the connection.
 */
int ks_reply_encode(struct ks_ctx *ctx, json_t *id, struct ks_reply *rep,
			uint8_t **resp, size_t *resp_len)
{
	json_t *o;
	char *s = NULL;
	size_t n = 0;
	int r = -ENOMEM, ok = rep->result != NULL;

	if (ok) {
		o = rep->result;
		rep->result = NULL;
		rep->outcome = "ok";
		if (json_object_set(o, "id", id ? id : json_null()) != 0 ||
		    json_object_set_new(o, "ok", json_true()) != 0) {
			json_decref(o);
			o = NULL;
		}
	} else {
		rep->outcome = rep->wire ? ks_wire_err_name(rep->wire) : ks_wire_error(rep->err);
		o = json_pack("{s:O?, s:b, s:s, s:s}", "id", id, "ok", 0, "error", rep->outcome,
			      "message", rep->message);
	}
	if (o != NULL) {
		r = ks_json_serialize(o, ctx->response_max, &s, &n);
		json_decref(o);
	}
	if (r == 0) {
		*resp = (uint8_t *)s;
		*resp_len = n;
		return 0;
	}
	if (r == -EMSGSIZE) {
		/* Every result is bounded well below the cap; this is a bug, not the client's fault. */
		ks_err("response larger than a frame; answering internal");
		rep->outcome = ks_wire_err_name(KS_WIRE_INTERNAL);
		snprintf(rep->message, sizeof(rep->message), "response too large");
	} else if (ok) {
		ks_err("cannot encode a response: %s; answering internal", strerror(-r));
		rep->outcome = ks_wire_err_name(KS_WIRE_INTERNAL);
		snprintf(rep->message, sizeof(rep->message), "out of memory");
	} else {
		/* The error stands; only its message is lost. */
		ks_err("cannot encode a %s response; answering it without its message",
		       rep->outcome);
		snprintf(rep->message, sizeof(rep->message), "(the message could not be encoded)");
	}
	return encode_fixed(id, rep, resp, resp_len);
}
