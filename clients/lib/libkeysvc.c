/*
 * libkeysvc: one call per operation of wire protocol v1 (proto/PROTOCOL.md).
 *
 * Every exchange goes through libks_transact(): build the request as a JSON
 * object, give it an id, refuse it locally if it does not fit in a frame,
 * send it, read one bounded frame, check the envelope (id, ok, error) with
 * a schema, and hand the result object to the operation, which reads its
 * fields with a schema of its own. Any I/O or protocol failure closes the
 * socket: the handle is then broken for good.
 *
 * This file holds the handle, the errors, the connection, request building
 * and the exchange; the operations are libkeysvc_ops.c
 * (libkeysvc_internal.h).
 */
#include "keysvc/keysvc.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "proto/b64.h"
#include "proto/buf.h"
#include "proto/frame.h"
#include "proto/json.h"
#include "proto/secmem.h"
#include "proto/utf8.h"
#include "proto/wire.h"
#include "clients/lib/libkeysvc_internal.h"

/*
 * The public code of each wire error (proto/wire.h). The KEYSVC_E_* values
 * are ABI and keep their numbers whatever order proto/wire.h lists the
 * names in; a name missing here is reported as KEYSVC_E_INTERNAL
 * (test_libkeysvc.c checks that none is).
 */
static const int wire_codes[KS_WIRE_ERR_COUNT] = {
	[KS_WIRE_BAD_REQUEST] = KEYSVC_E_BAD_REQUEST,
	[KS_WIRE_DENIED] = KEYSVC_E_DENIED,
	[KS_WIRE_NO_SUCH_KEY] = KEYSVC_E_NO_SUCH_KEY,
	[KS_WIRE_EXISTS] = KEYSVC_E_EXISTS,
	[KS_WIRE_UNSUPPORTED] = KEYSVC_E_UNSUPPORTED,
	[KS_WIRE_TOKEN_UNAVAILABLE] = KEYSVC_E_TOKEN_UNAVAILABLE,
	[KS_WIRE_INTERNAL] = KEYSVC_E_INTERNAL,
	[KS_WIRE_AUDIT_UNAVAILABLE] = KEYSVC_E_AUDIT_UNAVAILABLE,
};

KEYSVC_EXPORT const char *keysvc_error_name(int err)
{
	switch (err) {
	case KEYSVC_OK: return "ok";
	case KEYSVC_E_CONNECT: return "connect";
	case KEYSVC_E_IO: return "io";
	case KEYSVC_E_PROTOCOL: return "protocol";
	case KEYSVC_E_NOMEM: return "nomem";
	case KEYSVC_E_INVALID: return "invalid";
	}
	/* The daemon's errors are named as on the wire. */
	for (int e = KS_WIRE_ERR_NONE + 1; e < KS_WIRE_ERR_COUNT; e++)
		if (wire_codes[e] == err && err != KEYSVC_OK)
			return ks_wire_err_name((enum ks_wire_err)e);
	return "unknown";
}

KEYSVC_EXPORT const char *keysvc_strerror(int err)
{
	switch (err) {
	case KEYSVC_OK: return "success";
	case KEYSVC_E_BAD_REQUEST: return "request rejected by the daemon";
	case KEYSVC_E_DENIED: return "denied by the daemon's policy";
	case KEYSVC_E_NO_SUCH_KEY: return "no such key or certificate";
	case KEYSVC_E_EXISTS: return "a key of that name exists";
	case KEYSVC_E_UNSUPPORTED: return "not supported by the daemon or token";
	case KEYSVC_E_TOKEN_UNAVAILABLE: return "the token is unavailable";
	case KEYSVC_E_INTERNAL: return "internal error in the daemon";
	case KEYSVC_E_AUDIT_UNAVAILABLE: return "the daemon's audit log cannot be written";
	case KEYSVC_E_CONNECT: return "cannot connect to keysvcd";
	case KEYSVC_E_IO: return "connection to keysvcd broken";
	case KEYSVC_E_PROTOCOL: return "malformed answer from keysvcd";
	case KEYSVC_E_NOMEM: return "out of memory";
	case KEYSVC_E_INVALID: return "invalid argument";
	default: return "unknown error";
	}
}

KEYSVC_EXPORT const char *keysvc_error_message(const keysvc *ks)
{
	return ks != NULL ? ks->message : "";
}

KEYSVC_EXPORT int keysvc_request_unsent(const keysvc *ks)
{
	return ks != NULL && ks->unsent;
}

KEYSVC_EXPORT int keysvc_key_list_truncated(const keysvc *ks)
{
	return ks != NULL && ks->list_truncated;
}

/*
 * Keep a message in the handle: bounded, control characters replaced, and
 * a longer one ending after a whole word with "…", never inside a word or
 * a UTF-8 sequence (a key name cut short would name another key).
 */
static void set_message(keysvc *ks, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_message(keysvc *ks, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(ks->message, sizeof(ks->message), fmt, ap);
	va_end(ap);
	if (n < 0) {
		ks->message[0] = '\0';
		return;
	}
	/* Truncated: end after a whole word (and character) with "…". */
	if ((size_t)n >= sizeof(ks->message))
		ks_utf8_mark_cut(ks->message, sizeof(ks->message));
	for (char *p = ks->message; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
}

/* Break the handle for good: the stream may be out of step with the daemon. */
static void break_handle(keysvc *ks)
{
	if (ks->fd >= 0) {
		close(ks->fd);
		ks->fd = -1;
	}
}

int libks_fail(keysvc *ks, int code, const char *fmt, ...)
{
	char buf[KEYSVC_MESSAGE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	set_message(ks, "%s", buf);
	if (code == KEYSVC_E_IO || code == KEYSVC_E_PROTOCOL)
		break_handle(ks);
	return code;
}

int libks_nomem(keysvc *ks)
{
	return libks_fail(ks, KEYSVC_E_NOMEM, "out of memory");
}

/* ---- connection ---- */

KEYSVC_EXPORT int keysvc_connect(const char *socket_path, keysvc **out)
{
	struct sockaddr_un sun;
	struct timeval tv = { .tv_sec = KEYSVC_DEFAULT_TIMEOUT_MS / 1000 };
	size_t len;
	keysvc *ks;
	int fd, e;

	if (out == NULL)
		return KEYSVC_E_INVALID;
	*out = NULL;
	if (socket_path == NULL) {
		socket_path = getenv(KEYSVC_SOCKET_ENV);
		if (socket_path == NULL || socket_path[0] == '\0')
			socket_path = KEYSVC_DEFAULT_SOCKET;
	}
	len = strlen(socket_path);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (len == 0 || len >= sizeof(sun.sun_path)) {
		errno = len == 0 ? EINVAL : ENAMETOOLONG;
		return KEYSVC_E_INVALID;
	}
	memcpy(sun.sun_path, socket_path, len);
	if ((ks = calloc(1, sizeof(*ks))) == NULL)
		return KEYSVC_E_NOMEM;
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		goto libks_fail;
	/*
	 * connect() on a Unix stream socket blocks while the daemon's backlog is
	 * full; Linux bounds that wait by SO_SNDTIMEO. Frame I/O later uses
	 * MSG_DONTWAIT and poll(), so the option has no other effect.
	 */
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (connect(fd, (const struct sockaddr *)&sun, sizeof(sun)) != 0) {
		if (errno != EINTR)
			goto libks_fail;
	}
	ks->fd = fd;
	ks->timeout_ms = KEYSVC_DEFAULT_TIMEOUT_MS;
	ks->next_id = 1;
	*out = ks;
	return KEYSVC_OK;
libks_fail:
	e = errno;
	if (fd >= 0)
		close(fd);
	free(ks);
	errno = e;
	return KEYSVC_E_CONNECT;
}

KEYSVC_EXPORT void keysvc_close(keysvc *ks)
{
	int e = errno;

	if (ks == NULL)
		return;
	if (ks->fd >= 0)
		close(ks->fd);
	libks_list_purposes_clear(ks);
	free(ks);
	errno = e;
}

KEYSVC_EXPORT int keysvc_set_timeout(keysvc *ks, int timeout_ms)
{
	if (ks == NULL)
		return KEYSVC_E_INVALID;
	if (timeout_ms < 0)
		return libks_fail(ks, KEYSVC_E_INVALID, "negative timeout");
	ks->timeout_ms = timeout_ms;
	ks->message[0] = '\0';
	return KEYSVC_OK;
}

/* ---- request building ---- */

/* A JSON string for @value, or a KEYSVC_E_INVALID/NOMEM naming @what. */
static int mkstr(keysvc *ks, const char *what, const char *value, json_t **out)
{
	*out = NULL;
	if (value == NULL)
		return libks_fail(ks, KEYSVC_E_INVALID, "%s missing", what);
	if (!ks_utf8_valid(value, strlen(value)))
		return libks_fail(ks, KEYSVC_E_INVALID, "%s is not valid UTF-8", what);
	if ((*out = json_string_nocheck(value)) == NULL)
		return libks_nomem(ks);
	return KEYSVC_OK;
}

/* Set @obj[@field] = @value (a string; see mkstr()). */
int libks_put_str(keysvc *ks, json_t *obj, const char *field, const char *value)
{
	json_t *s;
	int r;

	if ((r = mkstr(ks, field, value, &s)) != KEYSVC_OK)
		return r;
	if (json_object_set_new(obj, field, s) != 0)
		return libks_nomem(ks);
	return KEYSVC_OK;
}

/* Set @obj[@field] to the array of strings @v[0..@n) (nothing if @n is 0). */
int libks_put_strv(keysvc *ks, json_t *obj, const char *field, const char *const *v, size_t n)
{
	char what[64];
	json_t *a, *s;
	int r;

	if (n == 0)
		return KEYSVC_OK;
	if (v == NULL)
		return libks_fail(ks, KEYSVC_E_INVALID, "%s: a count without an array", field);
	if ((a = json_array()) == NULL)
		return libks_nomem(ks);
	for (size_t i = 0; i < n; i++) {
		snprintf(what, sizeof(what), "%s[%zu]", field, i);
		if ((r = mkstr(ks, what, v[i], &s)) != KEYSVC_OK) {
			json_decref(a);
			return r;
		}
		if (json_array_append_new(a, s) != 0) {
			json_decref(a);
			return libks_nomem(ks);
		}
	}
	if (json_object_set_new(obj, field, a) != 0)
		return libks_nomem(ks);
	return KEYSVC_OK;
}

/* A new request {"op": @op}. Checks the handle first. On error *@req is NULL. */
int libks_req_new(keysvc *ks, const char *op, json_t **req)
{
	*req = NULL;
	if (ks == NULL)
		return KEYSVC_E_INVALID;
	ks->message[0] = '\0';
	if ((*req = json_object()) == NULL)
		return libks_nomem(ks);
	if (json_object_set_new(*req, "op", json_string(op)) != 0) {
		json_decref(*req);
		*req = NULL;
		return libks_nomem(ks);
	}
	return KEYSVC_OK;
}

/* A new request {"op": @op, "key": @name}; @name must be a non-empty string. */
int libks_req_new_key(keysvc *ks, const char *op, const char *name, json_t **req)
{
	int r;

	if ((r = libks_req_new(ks, op, req)) != KEYSVC_OK)
		return r;
	if (name != NULL && name[0] == '\0')
		r = libks_fail(ks, KEYSVC_E_INVALID, "key name empty");
	else
		r = libks_put_str(ks, *req, "key", name);
	if (r != KEYSVC_OK) {
		json_decref(*req);
		*req = NULL;
	}
	return r;
}

/* ---- one exchange ---- */

struct envelope {
	json_t *id;
	int ok;
	const char *error;
	const char *message;
};

static const struct ks_json_field envelope_fields[] = {
	{ "id", KS_JSON_ANY, offsetof(struct envelope, id), KS_JSON_REQUIRED, 0 },
	{ "ok", KS_JSON_BOOL, offsetof(struct envelope, ok), KS_JSON_REQUIRED, 0 },
	{ "error", KS_JSON_STRING, offsetof(struct envelope, error), 0, 64 },
	{ "message", KS_JSON_STRING, offsetof(struct envelope, message), 0, 0 },
	{ NULL, 0, 0, 0, 0 },
};

/* Read @obj with @table; a response that does not fit is a protocol error. */
int libks_decode(keysvc *ks, json_t *obj, const struct ks_json_field *table, void *target)
{
	const char *field = NULL, *why = "malformed";

	if (ks_json_dispatch(obj, table, target, KS_JSON_ALLOW_UNKNOWN, &field, &why) != 0)
		return libks_fail(ks, KEYSVC_E_PROTOCOL, "response field %.64s: %s",
			    field != NULL ? field : "(top)", why);
	return KEYSVC_OK;
}

/* The wire error of a failed response, its message kept for keysvc_error_message(). */
static int wire_error(keysvc *ks, const struct envelope *env)
{
	enum ks_wire_err e;
	int code;

	if (env->error == NULL)
		return libks_fail(ks, KEYSVC_E_PROTOCOL, "error response without an error name");
	e = ks_wire_err_from_name(env->error);
	code = wire_codes[e] != KEYSVC_OK ? wire_codes[e] : KEYSVC_E_INTERNAL;
	if (e != KS_WIRE_INTERNAL && code == KEYSVC_E_INTERNAL)
		set_message(ks, "%s: %s", env->error, env->message != NULL ? env->message : "");
	else
		set_message(ks, "%s", env->message != NULL ? env->message : "");
	return code;
}

/* After a refusal of the whole connection no request is read any more. */
static void drop_connection(keysvc *ks)
{
	if (ks->fd >= 0)
		close(ks->fd);
	ks->fd = -1;
}

/*
 * keysvcd refuses a connection over its limits with one error frame whose
 * id is null, then closes (proto/PROTOCOL.md, "Limits"). When sending
 * failed because of that close, the frame may still be waiting: read it so
 * the caller learns why. Otherwise KEYSVC_E_IO for @send_err.
 */
static int refusal_or_io(keysvc *ks, int send_err)
{
	struct envelope env;
	struct ks_buf body;
	json_t *root = NULL;
	const char *why = NULL, *field = NULL;
	int code;

	memset(&env, 0, sizeof(env));
	ks_buf_init(&body, KS_FRAME_MAX);
	if ((send_err == -EPIPE || send_err == -ECONNRESET) && ks_frame_read(ks->fd, &body, 100) == 0 &&
	    (root = ks_json_parse(body.data, body.len, &why)) != NULL &&
	    ks_json_dispatch(root, envelope_fields, &env, KS_JSON_ALLOW_UNKNOWN, &field, &why) == 0 &&
	    json_is_null(env.id) && !env.ok && env.error != NULL)
		code = wire_error(ks, &env);
	else {
		/*
		 * The daemon had closed its end before the frame was whole
		 * there: it cannot have read the request. A send that timed
		 * out may have left a whole frame in its queue.
		 */
		ks->unsent = send_err == -EPIPE || send_err == -ECONNRESET;
		code = libks_fail(ks, KEYSVC_E_IO, "sending: %s",
			    send_err == -ETIMEDOUT ? "timed out" : strerror(-send_err));
	}
	json_decref(root);
	ks_buf_free(&body);
	drop_connection(ks);
	return code;
}

/*
 * Send @req (always consumed) and read the answer. KEYSVC_OK with *@resp
 * the response object (caller decrefs), a named error of the daemon with
 * its message kept, or a local error.
 */
int libks_transact(keysvc *ks, json_t *req, json_t **resp)
{
	struct envelope env;
	struct ks_buf body;
	const char *why = NULL;
	char *s = NULL;
	size_t len = 0;
	uint64_t id;
	json_t *root = NULL;
	int r, code;

	*resp = NULL;
	ks->unsent = 0;
	if (ks->fd < 0) {
		json_decref(req);
		ks->unsent = 1;
		return libks_fail(ks, KEYSVC_E_IO, "the connection was broken by an earlier error; reconnect");
	}
	id = ks->next_id;
	r = json_object_set_new(req, "id", json_integer((json_int_t)id));
	if (r == 0)
		r = ks_json_serialize(req, KS_FRAME_MAX, &s, &len);
	json_decref(req);
	if (r == -EMSGSIZE)
		return libks_fail(ks, KEYSVC_E_INVALID, "request larger than the %u-byte frame limit",
			    KS_FRAME_MAX);
	if (r != 0)
		return libks_nomem(ks);
	ks->next_id++;
	r = ks_frame_write(ks->fd, s, len, ks->timeout_ms);
	/* The request may carry data to be signed. */
	ks_freezero(s, len + 1);
	if (r != 0)
		return refusal_or_io(ks, r);

	ks_buf_init(&body, KS_FRAME_MAX);
	r = ks_frame_read(ks->fd, &body, ks->timeout_ms);
	switch (r) {
	case 0:
		break;
	case -EMSGSIZE:
		code = libks_fail(ks, KEYSVC_E_PROTOCOL, "response frame over %u bytes", KS_FRAME_MAX);
		goto out;
	case -EBADMSG:
		code = libks_fail(ks, KEYSVC_E_PROTOCOL, "empty response frame");
		goto out;
	case -ECONNRESET:
	case -EPIPE:
		code = libks_fail(ks, KEYSVC_E_IO, "keysvcd closed the connection");
		goto out;
	case -ETIMEDOUT:
		code = libks_fail(ks, KEYSVC_E_IO, "no answer within %d ms", ks->timeout_ms);
		goto out;
	default:
		code = libks_fail(ks, KEYSVC_E_IO, "receiving: %s", strerror(-r));
		goto out;
	}
	if ((root = ks_json_parse(body.data, body.len, &why)) == NULL) {
		code = libks_fail(ks, KEYSVC_E_PROTOCOL, "response: %s", why);
		goto out;
	}
	memset(&env, 0, sizeof(env));
	if ((code = libks_decode(ks, root, envelope_fields, &env)) != KEYSVC_OK)
		goto out;
	if (json_is_null(env.id) && !env.ok) {
		/* The connection itself was refused (a limit); keysvcd has closed it. */
		code = wire_error(ks, &env);
		if (env.message == NULL && env.error != NULL)
			set_message(ks, "keysvcd ended the connection: %s", env.error);
		drop_connection(ks);
		goto out;
	}
	if (!json_is_integer(env.id) || json_integer_value(env.id) < 0 ||
	    (uint64_t)json_integer_value(env.id) != id) {
		code = libks_fail(ks, KEYSVC_E_PROTOCOL, "response id does not match request id %llu",
			    (unsigned long long)id);
		goto out;
	}
	if (env.ok) {
		*resp = root;
		root = NULL;
		code = KEYSVC_OK;
		goto out;
	}
	code = wire_error(ks, &env);
out:
	json_decref(root);
	ks_buf_free(&body);
	return code;
}

/* Copy @s (NULL allowed) to *@out if @out is not NULL. */
int libks_dup_out(keysvc *ks, const char *s, char **out)
{
	if (out == NULL)
		return KEYSVC_OK;
	*out = NULL;
	if (s != NULL && (*out = strdup(s)) == NULL)
		return libks_nomem(ks);
	return KEYSVC_OK;
}

/*
 * Send @req; on success copy the string result field @field (at most @max
 * bytes) to *@out. @field NULL: only the outcome matters.
 */
int libks_call(keysvc *ks, json_t *req, const char *field, size_t max, char **out)
{
	const char *value = NULL;
	const struct ks_json_field table[] = {
		{ field, KS_JSON_STRING, 0, KS_JSON_REQUIRED, max },
		{ NULL, 0, 0, 0, 0 },
	};
	json_t *resp = NULL;
	int r;

	r = libks_transact(ks, req, &resp);
	if (r == KEYSVC_OK && field != NULL && (r = libks_decode(ks, resp, table, &value)) == KEYSVC_OK)
		r = libks_dup_out(ks, value, out);
	json_decref(resp);
	return r;
}

/* Check that @v is a string of at most @max bytes or null (*@s = NULL then). */
int libks_string_or_null(keysvc *ks, const char *what, json_t *v, size_t max, const char **s)
{
	*s = NULL;
	if (json_is_null(v))
		return KEYSVC_OK;
	if (!json_is_string(v) || json_string_length(v) > max)
		return libks_fail(ks, KEYSVC_E_PROTOCOL, "response field %s: must be a short string or null",
			    what);
	*s = json_string_value(v);
	return KEYSVC_OK;
}
