/*
 * libkeysvc: one call per operation of wire protocol v1 (proto/PROTOCOL.md).
 *
 * Every exchange goes through transact(): build the request as a JSON
 * object, give it an id, refuse it locally if it does not fit in a frame,
 * send it, read one bounded frame, check the envelope (id, ok, error) with
 * a schema, and hand the result object to the operation, which reads its
 * fields with a schema of its own. Any I/O or protocol failure closes the
 * socket: the handle is then broken for good.
 */
#include "clients/keysvc.h"

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

#define KEYSVC_EXPORT __attribute__((visibility("default")))

/* Caps on what we accept from the daemon (all far above what v1 sends). */
#define NAME_MAX_BYTES 256       /* key names (v1: 64) */
#define SHORT_MAX_BYTES 256      /* type names, token fields, server string */
#define PEM_MAX_BYTES 65536      /* public keys, CSRs, certificates */
#define SIG_B64_MAX_BYTES 4096
#define SIG_MAX_BYTES 1024       /* RSA-4096 is 512 bytes, ECDSA P-384 DER about 104 */
#define LIST_MAX_ENTRIES 8192    /* a 64 KiB frame holds fewer */

struct keysvc {
	int fd;                  /* -1 once broken */
	int timeout_ms;
	uint64_t next_id;
	int unsent;              /* the last request certainly never reached the daemon */
	int list_truncated;      /* the last key.list left out keys the peer may list */
	char message[KEYSVC_MESSAGE_MAX];
};

static const struct {
	const char *name;
	int code;
} wire_errors[] = {
	{ "bad-request", KEYSVC_E_BAD_REQUEST },
	{ "denied", KEYSVC_E_DENIED },
	{ "no-such-key", KEYSVC_E_NO_SUCH_KEY },
	{ "exists", KEYSVC_E_EXISTS },
	{ "unsupported", KEYSVC_E_UNSUPPORTED },
	{ "token-unavailable", KEYSVC_E_TOKEN_UNAVAILABLE },
	{ "internal", KEYSVC_E_INTERNAL },
	{ "audit-unavailable", KEYSVC_E_AUDIT_UNAVAILABLE },
};

KEYSVC_EXPORT const char *keysvc_error_name(int err)
{
	switch (err) {
	case KEYSVC_OK: return "ok";
	case KEYSVC_E_BAD_REQUEST: return "bad-request";
	case KEYSVC_E_DENIED: return "denied";
	case KEYSVC_E_NO_SUCH_KEY: return "no-such-key";
	case KEYSVC_E_EXISTS: return "exists";
	case KEYSVC_E_UNSUPPORTED: return "unsupported";
	case KEYSVC_E_TOKEN_UNAVAILABLE: return "token-unavailable";
	case KEYSVC_E_INTERNAL: return "internal";
	case KEYSVC_E_AUDIT_UNAVAILABLE: return "audit-unavailable";
	case KEYSVC_E_CONNECT: return "connect";
	case KEYSVC_E_IO: return "io";
	case KEYSVC_E_PROTOCOL: return "protocol";
	case KEYSVC_E_NOMEM: return "nomem";
	case KEYSVC_E_INVALID: return "invalid";
	default: return "unknown";
	}
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

static int fail(keysvc *ks, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(keysvc *ks, int code, const char *fmt, ...)
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

static int nomem(keysvc *ks)
{
	return fail(ks, KEYSVC_E_NOMEM, "out of memory");
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
		goto fail;
	/*
	 * connect() on a Unix stream socket blocks while the daemon's backlog is
	 * full; Linux bounds that wait by SO_SNDTIMEO. Frame I/O later uses
	 * MSG_DONTWAIT and poll(), so the option has no other effect.
	 */
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (connect(fd, (const struct sockaddr *)&sun, sizeof(sun)) != 0) {
		if (errno != EINTR)
			goto fail;
	}
	ks->fd = fd;
	ks->timeout_ms = KEYSVC_DEFAULT_TIMEOUT_MS;
	ks->next_id = 1;
	*out = ks;
	return KEYSVC_OK;
fail:
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
	free(ks);
	errno = e;
}

KEYSVC_EXPORT int keysvc_set_timeout(keysvc *ks, int timeout_ms)
{
	if (ks == NULL)
		return KEYSVC_E_INVALID;
	if (timeout_ms < 0)
		return fail(ks, KEYSVC_E_INVALID, "negative timeout");
	ks->timeout_ms = timeout_ms;
	ks->message[0] = '\0';
	return KEYSVC_OK;
}

/* ---- request building ---- */

/* Strict UTF-8 as JSON needs it (no overlongs, no surrogates, <= U+10FFFF). */
static int utf8_ok(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p != '\0') {
		unsigned c = *p, n;
		uint32_t cp;

		if (c < 0x80) {
			p++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		for (unsigned i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		p += n + 1;
	}
	return 1;
}

/* A JSON string for @value, or a KEYSVC_E_INVALID/NOMEM naming @what. */
static int mkstr(keysvc *ks, const char *what, const char *value, json_t **out)
{
	*out = NULL;
	if (value == NULL)
		return fail(ks, KEYSVC_E_INVALID, "%s missing", what);
	if (!utf8_ok(value))
		return fail(ks, KEYSVC_E_INVALID, "%s is not valid UTF-8", what);
	if ((*out = json_string_nocheck(value)) == NULL)
		return nomem(ks);
	return KEYSVC_OK;
}

/* Set @obj[@field] = @value (a string; see mkstr()). */
static int put_str(keysvc *ks, json_t *obj, const char *field, const char *value)
{
	json_t *s;
	int r;

	if ((r = mkstr(ks, field, value, &s)) != KEYSVC_OK)
		return r;
	if (json_object_set_new(obj, field, s) != 0)
		return nomem(ks);
	return KEYSVC_OK;
}

/* Set @obj[@field] to the array of strings @v[0..@n) (nothing if @n is 0). */
static int put_strv(keysvc *ks, json_t *obj, const char *field, const char *const *v, size_t n)
{
	char what[64];
	json_t *a, *s;
	int r;

	if (n == 0)
		return KEYSVC_OK;
	if (v == NULL)
		return fail(ks, KEYSVC_E_INVALID, "%s: a count without an array", field);
	if ((a = json_array()) == NULL)
		return nomem(ks);
	for (size_t i = 0; i < n; i++) {
		snprintf(what, sizeof(what), "%s[%zu]", field, i);
		if ((r = mkstr(ks, what, v[i], &s)) != KEYSVC_OK) {
			json_decref(a);
			return r;
		}
		if (json_array_append_new(a, s) != 0) {
			json_decref(a);
			return nomem(ks);
		}
	}
	if (json_object_set_new(obj, field, a) != 0)
		return nomem(ks);
	return KEYSVC_OK;
}

/* A new request {"op": @op}. Checks the handle first. On error *@req is NULL. */
static int req_new(keysvc *ks, const char *op, json_t **req)
{
	*req = NULL;
	if (ks == NULL)
		return KEYSVC_E_INVALID;
	ks->message[0] = '\0';
	if ((*req = json_object()) == NULL)
		return nomem(ks);
	if (json_object_set_new(*req, "op", json_string(op)) != 0) {
		json_decref(*req);
		*req = NULL;
		return nomem(ks);
	}
	return KEYSVC_OK;
}

/* A new request {"op": @op, "key": @name}; @name must be a non-empty string. */
static int req_new_key(keysvc *ks, const char *op, const char *name, json_t **req)
{
	int r;

	if ((r = req_new(ks, op, req)) != KEYSVC_OK)
		return r;
	if (name != NULL && name[0] == '\0')
		r = fail(ks, KEYSVC_E_INVALID, "key name empty");
	else
		r = put_str(ks, *req, "key", name);
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
static int decode(keysvc *ks, json_t *obj, const struct ks_json_field *table, void *target)
{
	const char *field = NULL, *why = "malformed";

	if (ks_json_dispatch(obj, table, target, KS_JSON_ALLOW_UNKNOWN, &field, &why) != 0)
		return fail(ks, KEYSVC_E_PROTOCOL, "response field %.64s: %s",
			    field != NULL ? field : "(top)", why);
	return KEYSVC_OK;
}

/* The wire error of a failed response, its message kept for keysvc_error_message(). */
static int wire_error(keysvc *ks, const struct envelope *env)
{
	int code = KEYSVC_E_INTERNAL;

	if (env->error == NULL)
		return fail(ks, KEYSVC_E_PROTOCOL, "error response without an error name");
	for (size_t i = 0; i < sizeof(wire_errors) / sizeof(wire_errors[0]); i++)
		if (strcmp(wire_errors[i].name, env->error) == 0)
			code = wire_errors[i].code;
	if (code == KEYSVC_E_INTERNAL && strcmp(env->error, "internal") != 0)
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
		code = fail(ks, KEYSVC_E_IO, "sending: %s",
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
static int transact(keysvc *ks, json_t *req, json_t **resp)
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
		return fail(ks, KEYSVC_E_IO, "the connection was broken by an earlier error; reconnect");
	}
	id = ks->next_id;
	r = json_object_set_new(req, "id", json_integer((json_int_t)id));
	if (r == 0)
		r = ks_json_serialize(req, KS_FRAME_MAX, &s, &len);
	json_decref(req);
	if (r == -EMSGSIZE)
		return fail(ks, KEYSVC_E_INVALID, "request larger than the %u-byte frame limit",
			    KS_FRAME_MAX);
	if (r != 0)
		return nomem(ks);
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
		code = fail(ks, KEYSVC_E_PROTOCOL, "response frame over %u bytes", KS_FRAME_MAX);
		goto out;
	case -EBADMSG:
		code = fail(ks, KEYSVC_E_PROTOCOL, "empty response frame");
		goto out;
	case -ECONNRESET:
	case -EPIPE:
		code = fail(ks, KEYSVC_E_IO, "keysvcd closed the connection");
		goto out;
	case -ETIMEDOUT:
		code = fail(ks, KEYSVC_E_IO, "no answer within %d ms", ks->timeout_ms);
		goto out;
	default:
		code = fail(ks, KEYSVC_E_IO, "receiving: %s", strerror(-r));
		goto out;
	}
	if ((root = ks_json_parse(body.data, body.len, &why)) == NULL) {
		code = fail(ks, KEYSVC_E_PROTOCOL, "response: %s", why);
		goto out;
	}
	memset(&env, 0, sizeof(env));
	if ((code = decode(ks, root, envelope_fields, &env)) != KEYSVC_OK)
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
		code = fail(ks, KEYSVC_E_PROTOCOL, "response id does not match request id %llu",
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
static int dup_out(keysvc *ks, const char *s, char **out)
{
	if (out == NULL)
		return KEYSVC_OK;
	*out = NULL;
	if (s != NULL && (*out = strdup(s)) == NULL)
		return nomem(ks);
	return KEYSVC_OK;
}

/*
 * Send @req; on success copy the string result field @field (at most @max
 * bytes) to *@out. @field NULL: only the outcome matters.
 */
static int call(keysvc *ks, json_t *req, const char *field, size_t max, char **out)
{
	const char *value = NULL;
	const struct ks_json_field table[] = {
		{ field, KS_JSON_STRING, 0, KS_JSON_REQUIRED, max },
		{ NULL, 0, 0, 0, 0 },
	};
	json_t *resp = NULL;
	int r;

	r = transact(ks, req, &resp);
	if (r == KEYSVC_OK && field != NULL && (r = decode(ks, resp, table, &value)) == KEYSVC_OK)
		r = dup_out(ks, value, out);
	json_decref(resp);
	return r;
}

/* Check that @v is a string of at most @max bytes or null (*@s = NULL then). */
static int string_or_null(keysvc *ks, const char *what, json_t *v, size_t max, const char **s)
{
	*s = NULL;
	if (json_is_null(v))
		return KEYSVC_OK;
	if (!json_is_string(v) || json_string_length(v) > max)
		return fail(ks, KEYSVC_E_PROTOCOL, "response field %s: must be a short string or null",
			    what);
	*s = json_string_value(v);
	return KEYSVC_OK;
}

/* ---- hello ---- */

struct hello_resp {
	uint64_t version;
	const char *server;
	json_t *token;
	const char *health;
	const char *health_reason;
	struct ks_strv key_types;
	struct ks_strv algorithms;
};

static const struct ks_json_field hello_fields[] = {
	{ "version", KS_JSON_UINT, offsetof(struct hello_resp, version), KS_JSON_REQUIRED, 0 },
	{ "server", KS_JSON_STRING, offsetof(struct hello_resp, server), KS_JSON_REQUIRED, SHORT_MAX_BYTES },
	{ "token", KS_JSON_OBJECT, offsetof(struct hello_resp, token), KS_JSON_REQUIRED, 0 },
	{ "health", KS_JSON_STRING, offsetof(struct hello_resp, health), KS_JSON_REQUIRED, SHORT_MAX_BYTES },
	{ "health_reason", KS_JSON_STRING, offsetof(struct hello_resp, health_reason), 0, SHORT_MAX_BYTES },
	{ "key_types", KS_JSON_STRV, offsetof(struct hello_resp, key_types), 0, 0 },
	{ "algorithms", KS_JSON_STRV, offsetof(struct hello_resp, algorithms), 0, 0 },
	{ NULL, 0, 0, 0, 0 },
};

struct token_resp {
	const char *label, *manufacturer, *model, *serial;
};

static const struct ks_json_field token_fields[] = {
	{ "label", KS_JSON_STRING, offsetof(struct token_resp, label), 0, SHORT_MAX_BYTES },
	{ "manufacturer", KS_JSON_STRING, offsetof(struct token_resp, manufacturer), 0, SHORT_MAX_BYTES },
	{ "model", KS_JSON_STRING, offsetof(struct token_resp, model), 0, SHORT_MAX_BYTES },
	{ "serial", KS_JSON_STRING, offsetof(struct token_resp, serial), 0, SHORT_MAX_BYTES },
	{ NULL, 0, 0, 0, 0 },
};

static void strv_free(char **v, size_t n)
{
	if (v == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static int strv_dup(keysvc *ks, const struct ks_strv *sv, char ***out, size_t *n)
{
	*out = NULL;
	*n = 0;
	if (sv->n == 0)
		return KEYSVC_OK;
	if ((*out = calloc(sv->n, sizeof(**out))) == NULL)
		return nomem(ks);
	for (size_t i = 0; i < sv->n; i++) {
		if (((*out)[i] = strdup(sv->v[i])) == NULL) {
			strv_free(*out, i);
			*out = NULL;
			return nomem(ks);
		}
	}
	*n = sv->n;
	return KEYSVC_OK;
}

KEYSVC_EXPORT void keysvc_hello_free(struct keysvc_hello *h)
{
	if (h == NULL)
		return;
	free(h->server);
	free(h->token_label);
	free(h->token_manufacturer);
	free(h->token_model);
	free(h->token_serial);
	strv_free(h->key_types, h->n_key_types);
	strv_free(h->algorithms, h->n_algorithms);
	free(h->health_reason);
	free(h);
}

KEYSVC_EXPORT int keysvc_hello(keysvc *ks, struct keysvc_hello **out)
{
	struct hello_resp hr;
	struct token_resp tr;
	struct keysvc_hello *h = NULL;
	json_t *req, *resp = NULL, *versions;
	int r;

	if (out != NULL)
		*out = NULL;
	if ((r = req_new(ks, "hello", &req)) != KEYSVC_OK)
		return r;
	if (out == NULL) {
		json_decref(req);
		return fail(ks, KEYSVC_E_INVALID, "no result pointer");
	}
	versions = json_pack("[i]", KEYSVC_PROTOCOL_VERSION);
	if (json_object_set_new(req, "versions", versions) != 0) {
		json_decref(req);
		return nomem(ks);
	}
	if ((r = transact(ks, req, &resp)) != KEYSVC_OK)
		return r;
	memset(&hr, 0, sizeof(hr));
	memset(&tr, 0, sizeof(tr));
	if ((r = decode(ks, resp, hello_fields, &hr)) != KEYSVC_OK ||
	    (r = decode(ks, hr.token, token_fields, &tr)) != KEYSVC_OK)
		goto out;
	if (hr.version > INT_MAX) {
		r = fail(ks, KEYSVC_E_PROTOCOL, "response field version: out of range");
		goto out;
	}
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		r = nomem(ks);
		goto out;
	}
	h->version = (int)hr.version;
	if (strcmp(hr.health, "ok") == 0)
		h->health = KEYSVC_HEALTH_OK;
	else if (strcmp(hr.health, "token-unavailable") == 0)
		h->health = KEYSVC_HEALTH_TOKEN_UNAVAILABLE;
	else if (strcmp(hr.health, "degraded") == 0)
		h->health = KEYSVC_HEALTH_DEGRADED;
	else
		h->health = KEYSVC_HEALTH_UNKNOWN;
	if ((r = dup_out(ks, hr.server, &h->server)) != KEYSVC_OK ||
	    (r = dup_out(ks, tr.label ? tr.label : "", &h->token_label)) != KEYSVC_OK ||
	    (r = dup_out(ks, tr.manufacturer ? tr.manufacturer : "", &h->token_manufacturer)) != KEYSVC_OK ||
	    (r = dup_out(ks, tr.model ? tr.model : "", &h->token_model)) != KEYSVC_OK ||
	    (r = dup_out(ks, tr.serial ? tr.serial : "", &h->token_serial)) != KEYSVC_OK ||
	    (r = dup_out(ks, hr.health_reason ? hr.health_reason : "", &h->health_reason)) != KEYSVC_OK ||
	    (r = strv_dup(ks, &hr.key_types, &h->key_types, &h->n_key_types)) != KEYSVC_OK ||
	    (r = strv_dup(ks, &hr.algorithms, &h->algorithms, &h->n_algorithms)) != KEYSVC_OK)
		goto out;
	*out = h;
	h = NULL;
out:
	keysvc_hello_free(h);
	json_decref(resp);
	return r;
}

/* ---- keys ---- */

KEYSVC_EXPORT int keysvc_key_generate(keysvc *ks, const char *name, const char *type,
				      char **public_key_pem)
{
	json_t *req;
	int r;

	if (public_key_pem != NULL)
		*public_key_pem = NULL;
	if ((r = req_new_key(ks, "key.generate", name, &req)) != KEYSVC_OK)
		return r;
	if ((r = put_str(ks, req, "type", type)) != KEYSVC_OK) {
		json_decref(req);
		return r;
	}
	return call(ks, req, "public_key", PEM_MAX_BYTES, public_key_pem);
}

struct public_resp {
	const char *public_key;
	json_t *type;
};

static const struct ks_json_field public_fields[] = {
	{ "public_key", KS_JSON_STRING, offsetof(struct public_resp, public_key), KS_JSON_REQUIRED, PEM_MAX_BYTES },
	{ "type", KS_JSON_ANY, offsetof(struct public_resp, type), KS_JSON_REQUIRED, 0 },
	{ NULL, 0, 0, 0, 0 },
};

KEYSVC_EXPORT int keysvc_key_public(keysvc *ks, const char *name, char **public_key_pem,
				    char **type)
{
	struct public_resp pr;
	const char *t = NULL;
	json_t *req, *resp = NULL;
	int r;

	if (public_key_pem != NULL)
		*public_key_pem = NULL;
	if (type != NULL)
		*type = NULL;
	if ((r = req_new_key(ks, "key.public", name, &req)) != KEYSVC_OK)
		return r;
	memset(&pr, 0, sizeof(pr));
	if ((r = transact(ks, req, &resp)) != KEYSVC_OK ||
	    (r = decode(ks, resp, public_fields, &pr)) != KEYSVC_OK ||
	    (r = string_or_null(ks, "type", pr.type, SHORT_MAX_BYTES, &t)) != KEYSVC_OK ||
	    (r = dup_out(ks, pr.public_key, public_key_pem)) != KEYSVC_OK ||
	    (r = dup_out(ks, t, type)) != KEYSVC_OK) {
		if (public_key_pem != NULL) {
			free(*public_key_pem);
			*public_key_pem = NULL;
		}
	}
	json_decref(resp);
	return r;
}

KEYSVC_EXPORT void keysvc_key_list_free(struct keysvc_key *keys, size_t n)
{
	if (keys == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(keys[i].name);
		free(keys[i].type);
	}
	free(keys);
}

struct list_resp {
	json_t *keys;
	int truncated;
};

static const struct ks_json_field list_fields[] = {
	{ "keys", KS_JSON_ARRAY, offsetof(struct list_resp, keys), KS_JSON_REQUIRED, LIST_MAX_ENTRIES },
	/* Optional: daemons before it was documented may not send it. */
	{ "truncated", KS_JSON_BOOL, offsetof(struct list_resp, truncated), 0, 0 },
	{ NULL, 0, 0, 0, 0 },
};

struct list_entry {
	const char *key;
	json_t *type;
	int has_cert;
};

static const struct ks_json_field list_entry_fields[] = {
	{ "key", KS_JSON_STRING, offsetof(struct list_entry, key), KS_JSON_REQUIRED, NAME_MAX_BYTES },
	{ "type", KS_JSON_ANY, offsetof(struct list_entry, type), KS_JSON_REQUIRED, 0 },
	{ "has_cert", KS_JSON_BOOL, offsetof(struct list_entry, has_cert), KS_JSON_REQUIRED, 0 },
	{ NULL, 0, 0, 0, 0 },
};

KEYSVC_EXPORT int keysvc_key_list(keysvc *ks, struct keysvc_key **keys, size_t *n)
{
	struct list_resp lr;
	struct keysvc_key *out = NULL;
	size_t count = 0, i;
	json_t *req, *resp = NULL, *e;
	int r;

	if (keys != NULL)
		*keys = NULL;
	if (n != NULL)
		*n = 0;
	if (ks != NULL)
		ks->list_truncated = 0;
	if ((r = req_new(ks, "key.list", &req)) != KEYSVC_OK)
		return r;
	if (keys == NULL || n == NULL) {
		json_decref(req);
		return fail(ks, KEYSVC_E_INVALID, "no result pointer");
	}
	memset(&lr, 0, sizeof(lr));
	if ((r = transact(ks, req, &resp)) != KEYSVC_OK ||
	    (r = decode(ks, resp, list_fields, &lr)) != KEYSVC_OK)
		goto out;
	if (json_array_size(lr.keys) > 0 &&
	    (out = calloc(json_array_size(lr.keys), sizeof(*out))) == NULL) {
		r = nomem(ks);
		goto out;
	}
	json_array_foreach(lr.keys, i, e) {
		struct list_entry le;
		const char *t = NULL;

		memset(&le, 0, sizeof(le));
		if ((r = decode(ks, e, list_entry_fields, &le)) != KEYSVC_OK ||
		    (r = string_or_null(ks, "type", le.type, SHORT_MAX_BYTES, &t)) != KEYSVC_OK)
			goto out;
		out[count].has_cert = le.has_cert;
		count++;
		if ((r = dup_out(ks, le.key, &out[count - 1].name)) != KEYSVC_OK ||
		    (r = dup_out(ks, t, &out[count - 1].type)) != KEYSVC_OK)
			goto out;
	}
	*keys = out;
	*n = count;
	ks->list_truncated = lr.truncated;
	out = NULL;
out:
	keysvc_key_list_free(out, count);
	json_decref(resp);
	return r;
}

KEYSVC_EXPORT int keysvc_key_delete(keysvc *ks, const char *name)
{
	json_t *req;
	int r;

	if ((r = req_new_key(ks, "key.delete", name, &req)) != KEYSVC_OK)
		return r;
	return call(ks, req, NULL, 0, NULL);
}

/* ---- CSRs ---- */

static int csr_request(keysvc *ks, json_t *req, const struct keysvc_csr_params *p)
{
	json_t *san = NULL, *attrs = NULL;
	int r;

	for (size_t i = 0; i < sizeof(p->reserved) / sizeof(p->reserved[0]); i++)
		if (p->reserved[i] != NULL)
			return fail(ks, KEYSVC_E_INVALID,
				    "reserved CSR parameters set (a newer keysvc.h than this library?)");
	if ((r = put_str(ks, req, "subject", p->subject)) != KEYSVC_OK)
		return r;
	if (p->n_dns + p->n_ip + p->n_uri + p->n_email > 0) {
		if ((san = json_object()) == NULL)
			return nomem(ks);
		if ((r = put_strv(ks, san, "dns", p->dns, p->n_dns)) != KEYSVC_OK ||
		    (r = put_strv(ks, san, "ip", p->ip, p->n_ip)) != KEYSVC_OK ||
		    (r = put_strv(ks, san, "uri", p->uri, p->n_uri)) != KEYSVC_OK ||
		    (r = put_strv(ks, san, "email", p->email, p->n_email)) != KEYSVC_OK)
			goto out;
		if (json_object_set(req, "san", san) != 0) {
			r = nomem(ks);
			goto out;
		}
	}
	if ((r = put_strv(ks, req, "key_usage", p->key_usage, p->n_key_usage)) != KEYSVC_OK ||
	    (r = put_strv(ks, req, "ext_key_usage", p->ext_key_usage, p->n_ext_key_usage)) != KEYSVC_OK)
		goto out;
	if (p->n_attrs > 0) {
		if (p->attrs == NULL) {
			r = fail(ks, KEYSVC_E_INVALID, "attributes: a count without an array");
			goto out;
		}
		if ((attrs = json_array()) == NULL) {
			r = nomem(ks);
			goto out;
		}
		for (size_t i = 0; i < p->n_attrs; i++) {
			json_t *a = json_object();

			if (a == NULL || json_array_append_new(attrs, a) != 0) {
				r = nomem(ks);
				goto out;
			}
			if ((r = put_str(ks, a, "oid", p->attrs[i].oid)) != KEYSVC_OK ||
			    (r = put_str(ks, a, "value", p->attrs[i].value)) != KEYSVC_OK ||
			    (p->attrs[i].type != NULL &&
			     (r = put_str(ks, a, "type", p->attrs[i].type)) != KEYSVC_OK))
				goto out;
		}
		if (json_object_set(req, "attributes", attrs) != 0) {
			r = nomem(ks);
			goto out;
		}
	}
	if (p->digest != NULL)
		r = put_str(ks, req, "digest", p->digest);
out:
	json_decref(san);
	json_decref(attrs);
	return r;
}

KEYSVC_EXPORT int keysvc_csr_create(keysvc *ks, const char *name,
				    const struct keysvc_csr_params *p, char **csr_pem)
{
	json_t *req;
	int r;

	if (csr_pem != NULL)
		*csr_pem = NULL;
	if ((r = req_new_key(ks, "csr.create", name, &req)) != KEYSVC_OK)
		return r;
	if (p == NULL || csr_pem == NULL)
		r = fail(ks, KEYSVC_E_INVALID, "%s missing", p == NULL ? "parameters" : "result pointer");
	else
		r = csr_request(ks, req, p);
	if (r != KEYSVC_OK) {
		json_decref(req);
		return r;
	}
	return call(ks, req, "csr", PEM_MAX_BYTES, csr_pem);
}

/* ---- signatures ---- */

struct sign_resp {
	const char *signature;
};

static const struct ks_json_field sign_fields[] = {
	{ "signature", KS_JSON_STRING, offsetof(struct sign_resp, signature), KS_JSON_REQUIRED, SIG_B64_MAX_BYTES },
	{ NULL, 0, 0, 0, 0 },
};

static int sign_common(keysvc *ks, const char *name, const char *alg, const char *field,
		       const uint8_t *in, size_t in_len, uint8_t **sig, size_t *sig_len)
{
	static const uint8_t empty[1];
	struct sign_resp sr;
	json_t *req, *resp = NULL;
	char *b64 = NULL;
	int r;

	if (sig != NULL)
		*sig = NULL;
	if (sig_len != NULL)
		*sig_len = 0;
	if ((r = req_new_key(ks, "sign", name, &req)) != KEYSVC_OK)
		return r;
	if (sig == NULL || sig_len == NULL || (in == NULL && in_len > 0))
		r = fail(ks, KEYSVC_E_INVALID, "%s missing", sig == NULL || sig_len == NULL ?
			 "result pointer" : field);
	else if (in_len > KEYSVC_SIGN_DATA_MAX)
		r = fail(ks, KEYSVC_E_INVALID, "%zu bytes to sign; at most %d", in_len,
			 KEYSVC_SIGN_DATA_MAX);
	else if ((r = put_str(ks, req, "alg", alg)) == KEYSVC_OK &&
		 ks_b64_encode(in != NULL ? in : empty, in_len, &b64) != 0)
		r = nomem(ks);
	if (r == KEYSVC_OK && json_object_set_new(req, field, json_string_nocheck(b64)) != 0)
		r = nomem(ks);
	free(b64);
	if (r != KEYSVC_OK) {
		json_decref(req);
		return r;
	}
	memset(&sr, 0, sizeof(sr));
	if ((r = transact(ks, req, &resp)) == KEYSVC_OK &&
	    (r = decode(ks, resp, sign_fields, &sr)) == KEYSVC_OK) {
		if (ks_b64_decode(sr.signature, strlen(sr.signature), SIG_MAX_BYTES, sig,
				  sig_len) != 0 || *sig_len == 0) {
			free(*sig);
			*sig = NULL;
			*sig_len = 0;
			r = fail(ks, KEYSVC_E_PROTOCOL,
				 "response field signature: not base64 of 1..%d bytes", SIG_MAX_BYTES);
		}
	}
	json_decref(resp);
	return r;
}

KEYSVC_EXPORT int keysvc_sign_digest(keysvc *ks, const char *name, const char *alg,
				     const uint8_t *digest, size_t digest_len, uint8_t **sig,
				     size_t *sig_len)
{
	return sign_common(ks, name, alg, "digest", digest, digest_len, sig, sig_len);
}

KEYSVC_EXPORT int keysvc_sign_data(keysvc *ks, const char *name, const char *alg,
				   const uint8_t *data, size_t data_len, uint8_t **sig,
				   size_t *sig_len)
{
	return sign_common(ks, name, alg, "data", data, data_len, sig, sig_len);
}

/* ---- certificates ---- */

KEYSVC_EXPORT int keysvc_cert_put(keysvc *ks, const char *name, const char *cert_pem)
{
	json_t *req;
	int r;

	if ((r = req_new_key(ks, "cert.put", name, &req)) != KEYSVC_OK)
		return r;
	if ((r = put_str(ks, req, "cert", cert_pem)) != KEYSVC_OK) {
		json_decref(req);
		return r;
	}
	return call(ks, req, NULL, 0, NULL);
}

KEYSVC_EXPORT int keysvc_cert_get(keysvc *ks, const char *name, char **cert_pem)
{
	json_t *req;
	int r;

	if (cert_pem != NULL)
		*cert_pem = NULL;
	if ((r = req_new_key(ks, "cert.get", name, &req)) != KEYSVC_OK)
		return r;
	if (cert_pem == NULL) {
		json_decref(req);
		return fail(ks, KEYSVC_E_INVALID, "result pointer missing");
	}
	return call(ks, req, "cert", PEM_MAX_BYTES, cert_pem);
}
