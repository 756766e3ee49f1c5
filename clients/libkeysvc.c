#include "clients/keysvc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "proto/b64.h"
#include "proto/buf.h"
#include "proto/frame.h"
#include "proto/json.h"

#define KEYSVC_EXPORT __attribute__((visibility("default")))
#define KS_SIG_MAX_BYTES 1024
#define KS_DATA_MAX (48 * 1024)

struct keysvc {
	int fd;
	int timeout_ms;
	int broken;
	uint64_t next_id;
	char message[512];
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
};

KEYSVC_EXPORT const char *keysvc_strerror(int err)
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

static int fail(keysvc *ks, int code, const char *msg)
{
	snprintf(ks->message, sizeof(ks->message), "%s", msg);
	if (code == KEYSVC_E_IO || code == KEYSVC_E_PROTOCOL)
		ks->broken = 1;
	return code;
}

KEYSVC_EXPORT int keysvc_connect(const char *socket_path, keysvc **out)
{
	struct sockaddr_un sun;
	keysvc *ks;
	int fd;

	if (out == NULL)
		return KEYSVC_E_INVALID;
	*out = NULL;
	if (socket_path == NULL)
		socket_path = getenv("KEYSVC_SOCKET");
	if (socket_path == NULL || socket_path[0] == '\0')
		socket_path = KEYSVC_DEFAULT_SOCKET;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(socket_path) >= sizeof(sun.sun_path))
		return KEYSVC_E_INVALID;
	memcpy(sun.sun_path, socket_path, strlen(socket_path));
	if ((ks = calloc(1, sizeof(*ks))) == NULL)
		return KEYSVC_E_NOMEM;
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
		free(ks);
		return KEYSVC_E_CONNECT;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		close(fd);
		free(ks);
		return KEYSVC_E_CONNECT;
	}
	ks->fd = fd;
	ks->timeout_ms = 30000;
	ks->next_id = 1;
	*out = ks;
	return KEYSVC_OK;
}

KEYSVC_EXPORT void keysvc_close(keysvc *ks)
{
	if (ks == NULL)
		return;
	close(ks->fd);
	free(ks);
}

KEYSVC_EXPORT int keysvc_set_timeout(keysvc *ks, int timeout_ms)
{
	if (ks == NULL || timeout_ms < 0)
		return KEYSVC_E_INVALID;
	ks->timeout_ms = timeout_ms;
	return KEYSVC_OK;
}

/*
 * Send @req (reference taken) and read the answer. On success *@resp is the
 * response object (caller decrefs); a named error from the daemon returns
 * its code with the message kept in the handle.
 */
static int transact(keysvc *ks, json_t *req, json_t **resp)
{
	struct ks_buf body;
	const char *why = NULL, *err_name;
	char *s = NULL;
	size_t len = 0;
	uint64_t id;
	json_t *root = NULL, *v;
	int r, code;

	*resp = NULL;
	ks->message[0] = '\0';
	ks_buf_init(&body, KS_FRAME_MAX);
	if (req == NULL)
		return fail(ks, KEYSVC_E_NOMEM, "out of memory");
	if (ks->broken) {
		json_decref(req);
		return fail(ks, KEYSVC_E_IO, "the connection is broken; reconnect");
	}
	id = ks->next_id++;
	json_object_set_new(req, "id", json_integer((json_int_t)id));
	r = ks_json_serialize(req, KS_FRAME_MAX, &s, &len);
	json_decref(req);
	if (r == -EMSGSIZE)
		return fail(ks, KEYSVC_E_INVALID, "request larger than a frame");
	if (r != 0)
		return fail(ks, KEYSVC_E_NOMEM, "out of memory");
	r = ks_frame_write(ks->fd, s, len, ks->timeout_ms);
	free(s);
	if (r != 0)
		return fail(ks, KEYSVC_E_IO, strerror(-r));
	r = ks_frame_read(ks->fd, &body, ks->timeout_ms);
	if (r == -EMSGSIZE || r == -EBADMSG) {
		code = fail(ks, KEYSVC_E_PROTOCOL, "bad response frame");
		goto out;
	}
	if (r != 0) {
		code = fail(ks, KEYSVC_E_IO, r == -ECONNRESET || r == -EPIPE ?
			    "keysvcd closed the connection" : strerror(-r));
		goto out;
	}
	if ((root = ks_json_parse(body.data, body.len, &why)) == NULL) {
		code = fail(ks, KEYSVC_E_PROTOCOL, why);
		goto out;
	}
	v = json_object_get(root, "id");
	if (!json_is_integer(v) || (uint64_t)json_integer_value(v) != id) {
		code = fail(ks, KEYSVC_E_PROTOCOL, "response id does not match the request");
		goto out;
	}
	v = json_object_get(root, "ok");
	if (!json_is_boolean(v)) {
		code = fail(ks, KEYSVC_E_PROTOCOL, "response without ok");
		goto out;
	}
	if (json_is_true(v)) {
		*resp = root;
		root = NULL;
		code = KEYSVC_OK;
		goto out;
	}
	err_name = json_string_value(json_object_get(root, "error"));
	if (err_name == NULL) {
		code = fail(ks, KEYSVC_E_PROTOCOL, "error response without error");
		goto out;
	}
	code = KEYSVC_E_INTERNAL;
	for (size_t i = 0; i < sizeof(wire_errors) / sizeof(wire_errors[0]); i++)
		if (strcmp(wire_errors[i].name, err_name) == 0)
			code = wire_errors[i].code;
	v = json_object_get(root, "message");
	if (code == KEYSVC_E_INTERNAL && strcmp(err_name, "internal") != 0)
		snprintf(ks->message, sizeof(ks->message), "%.64s: %.400s", err_name,
			 json_is_string(v) ? json_string_value(v) : "");
	else
		snprintf(ks->message, sizeof(ks->message), "%s",
			 json_is_string(v) ? json_string_value(v) : "");
out:
	json_decref(root);
	ks_buf_free(&body);
	return code;
}

/* Read a response with @table into @target; protocol error if it does not fit. */
static int decode(keysvc *ks, json_t *resp, const struct ks_json_field *table, void *target)
{
	const char *field = NULL, *why = NULL;
	char msg[160];

	if (ks_json_dispatch(resp, table, target, KS_JSON_ALLOW_UNKNOWN, &field, &why) != 0) {
		snprintf(msg, sizeof(msg), "response field %.64s: %s", field ? field : "?", why);
		return fail(ks, KEYSVC_E_PROTOCOL, msg);
	}
	return KEYSVC_OK;
}

static int dup_out(keysvc *ks, const char *s, char **out)
{
	if (out == NULL)
		return KEYSVC_OK;
	if (s == NULL) {
		*out = NULL;
		return KEYSVC_OK;
	}
	if ((*out = strdup(s)) == NULL)
		return fail(ks, KEYSVC_E_NOMEM, "out of memory");
	return KEYSVC_OK;
}

static int check_name(keysvc *ks, const char *name)
{
	if (ks == NULL)
		return KEYSVC_E_INVALID;
	if (name == NULL || name[0] == '\0')
		return fail(ks, KEYSVC_E_INVALID, "key name missing");
	return KEYSVC_OK;
}

/*
 * Send @req and copy the string field @field (at most @max bytes) of the
 * answer to *@out; @field NULL: only the outcome matters.
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

	if (out != NULL)
		*out = NULL;
	r = transact(ks, req, &resp);
	if (r == KEYSVC_OK && field != NULL && (r = decode(ks, resp, table, &value)) == KEYSVC_OK)
		r = dup_out(ks, value, out);
	json_decref(resp);
	return r;
}

/* ---- hello ---- */

struct hello_resp {
	uint64_t version;
	const char *server;
	json_t *token;
	const char *health;
};

static const struct ks_json_field hello_fields[] = {
	{ "version", KS_JSON_UINT, offsetof(struct hello_resp, version), KS_JSON_REQUIRED, 0 },
	{ "server", KS_JSON_STRING, offsetof(struct hello_resp, server), KS_JSON_REQUIRED, 256 },
	{ "token", KS_JSON_OBJECT, offsetof(struct hello_resp, token), KS_JSON_REQUIRED, 0 },
	{ "health", KS_JSON_STRING, offsetof(struct hello_resp, health), KS_JSON_REQUIRED, 64 },
	{ NULL, 0, 0, 0, 0 },
};

struct token_resp {
	const char *label, *manufacturer, *model, *serial;
};

static const struct ks_json_field token_fields[] = {
	{ "label", KS_JSON_STRING, offsetof(struct token_resp, label), 0, 64 },
	{ "manufacturer", KS_JSON_STRING, offsetof(struct token_resp, manufacturer), 0, 64 },
	{ "model", KS_JSON_STRING, offsetof(struct token_resp, model), 0, 64 },
	{ "serial", KS_JSON_STRING, offsetof(struct token_resp, serial), 0, 64 },
	{ NULL, 0, 0, 0, 0 },
};

KEYSVC_EXPORT void keysvc_hello_free(struct keysvc_hello *h)
{
	if (h == NULL)
		return;
	free(h->server);
	free(h->token_label);
	free(h->token_manufacturer);
	free(h->token_model);
	free(h->token_serial);
	free(h);
}

KEYSVC_EXPORT int keysvc_hello(keysvc *ks, struct keysvc_hello **out)
{
	struct hello_resp hr;
	struct token_resp tr;
	struct keysvc_hello *h = NULL;
	json_t *resp = NULL;
	int r;

	if (ks == NULL || out == NULL)
		return KEYSVC_E_INVALID;
	*out = NULL;
	memset(&hr, 0, sizeof(hr));
	memset(&tr, 0, sizeof(tr));
	r = transact(ks, json_pack("{s:s, s:[i]}", "op", "hello", "versions", KEYSVC_PROTOCOL_VERSION),
		     &resp);
	if (r != KEYSVC_OK)
		return r;
	if ((r = decode(ks, resp, hello_fields, &hr)) != KEYSVC_OK ||
	    (r = decode(ks, hr.token, token_fields, &tr)) != KEYSVC_OK)
		goto out;
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		r = fail(ks, KEYSVC_E_NOMEM, "out of memory");
		goto out;
	}
	h->version = (int)hr.version;
	h->token_up = strcmp(hr.health, "ok") == 0;
	if ((r = dup_out(ks, hr.server, &h->server)) != KEYSVC_OK ||
	    (r = dup_out(ks, tr.label ? tr.label : "", &h->token_label)) != KEYSVC_OK ||
	    (r = dup_out(ks, tr.manufacturer ? tr.manufacturer : "", &h->token_manufacturer)) != KEYSVC_OK ||
	    (r = dup_out(ks, tr.model ? tr.model : "", &h->token_model)) != KEYSVC_OK ||
	    (r = dup_out(ks, tr.serial ? tr.serial : "", &h->token_serial)) != KEYSVC_OK)
		goto out;
	*out = h;
	h = NULL;
out:
	keysvc_hello_free(h);
	json_decref(resp);
	return r;
}

/* ---- keys ---- */

struct key_resp {
	const char *key;
	const char *public_key;
	json_t *type_any;
};

static const struct ks_json_field public_fields[] = {
	{ "key", KS_JSON_STRING, offsetof(struct key_resp, key), KS_JSON_REQUIRED, 64 },
	{ "type", KS_JSON_ANY, offsetof(struct key_resp, type_any), 0, 0 },
	{ "public_key", KS_JSON_STRING, offsetof(struct key_resp, public_key), KS_JSON_REQUIRED, 16384 },
	{ NULL, 0, 0, 0, 0 },
};

KEYSVC_EXPORT int keysvc_key_generate(keysvc *ks, const char *name, const char *type,
				      char **public_key_pem)
{
	int r;

	if ((r = check_name(ks, name)) != KEYSVC_OK)
		return r;
	if (public_key_pem != NULL)
		*public_key_pem = NULL;
	if (type == NULL)
		return fail(ks, KEYSVC_E_INVALID, "key type missing");
	return call(ks, json_pack("{s:s, s:s, s:s}", "op", "key.generate", "key", name, "type", type),
		    "public_key", 16384, public_key_pem);
}

KEYSVC_EXPORT int keysvc_key_public(keysvc *ks, const char *name, char **public_key_pem,
				    char **type)
{
	struct key_resp kr;
	json_t *resp = NULL;
	int r;

	if ((r = check_name(ks, name)) != KEYSVC_OK)
		return r;
	if (public_key_pem != NULL)
		*public_key_pem = NULL;
	if (type != NULL)
		*type = NULL;
	memset(&kr, 0, sizeof(kr));
	r = transact(ks, json_pack("{s:s, s:s}", "op", "key.public", "key", name), &resp);
	if (r == KEYSVC_OK && (r = decode(ks, resp, public_fields, &kr)) == KEYSVC_OK &&
	    (r = dup_out(ks, kr.public_key, public_key_pem)) == KEYSVC_OK)
		r = dup_out(ks, json_string_value(kr.type_any), type);
	if (r != KEYSVC_OK && public_key_pem != NULL) {
		free(*public_key_pem);
		*public_key_pem = NULL;
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
};

static const struct ks_json_field list_fields[] = {
	{ "keys", KS_JSON_ARRAY, offsetof(struct list_resp, keys), KS_JSON_REQUIRED, 4096 },
	{ NULL, 0, 0, 0, 0 },
};

struct list_entry {
	const char *key;
	json_t *type;
	int has_cert;
};

static const struct ks_json_field list_entry_fields[] = {
	{ "key", KS_JSON_STRING, offsetof(struct list_entry, key), KS_JSON_REQUIRED, 64 },
	{ "type", KS_JSON_ANY, offsetof(struct list_entry, type), 0, 0 },
	{ "has_cert", KS_JSON_BOOL, offsetof(struct list_entry, has_cert), 0, 0 },
	{ NULL, 0, 0, 0, 0 },
};

KEYSVC_EXPORT int keysvc_key_list(keysvc *ks, struct keysvc_key **keys, size_t *n)
{
	struct list_resp lr;
	struct keysvc_key *out = NULL;
	size_t count = 0, i;
	json_t *resp = NULL, *e;
	int r;

	if (ks == NULL || keys == NULL || n == NULL)
		return KEYSVC_E_INVALID;
	*keys = NULL;
	*n = 0;
	memset(&lr, 0, sizeof(lr));
	r = transact(ks, json_pack("{s:s}", "op", "key.list"), &resp);
	if (r != KEYSVC_OK || (r = decode(ks, resp, list_fields, &lr)) != KEYSVC_OK)
		goto out;
	if (json_array_size(lr.keys) > 0 &&
	    (out = calloc(json_array_size(lr.keys), sizeof(*out))) == NULL) {
		r = fail(ks, KEYSVC_E_NOMEM, "out of memory");
		goto out;
	}
	json_array_foreach(lr.keys, i, e) {
		struct list_entry le;

		memset(&le, 0, sizeof(le));
		if ((r = decode(ks, e, list_entry_fields, &le)) != KEYSVC_OK)
			goto out;
		out[count].has_cert = le.has_cert;
		count++;
		if ((r = dup_out(ks, le.key, &out[count - 1].name)) != KEYSVC_OK ||
		    (r = dup_out(ks, json_string_value(le.type), &out[count - 1].type)) != KEYSVC_OK)
			goto out;
	}
	*keys = out;
	*n = count;
	out = NULL;
out:
	keysvc_key_list_free(out, count);
	json_decref(resp);
	return r;
}

KEYSVC_EXPORT int keysvc_key_delete(keysvc *ks, const char *name)
{
	int r;

	if ((r = check_name(ks, name)) != KEYSVC_OK)
		return r;
	return call(ks, json_pack("{s:s, s:s}", "op", "key.delete", "key", name), NULL, 0, NULL);
}

/* ---- CSRs ---- */

static json_t *strv_json(const char *const *v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a != NULL && i < n; i++) {
		if (v[i] == NULL || json_array_append_new(a, json_string(v[i])) != 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

KEYSVC_EXPORT int keysvc_csr_create(keysvc *ks, const char *name,
				    const struct keysvc_csr_params *p, char **csr_pem)
{
	json_t *req, *san;
	int r;

	if ((r = check_name(ks, name)) != KEYSVC_OK)
		return r;
	if (p == NULL || p->subject == NULL || csr_pem == NULL)
		return fail(ks, KEYSVC_E_INVALID, "subject missing");
	*csr_pem = NULL;
	req = json_pack("{s:s, s:s, s:s}", "op", "csr.create", "key", name, "subject", p->subject);
	if (req == NULL)
		return fail(ks, KEYSVC_E_INVALID, "subject is not UTF-8");
	if (p->n_dns + p->n_ip + p->n_uri + p->n_email > 0) {
		san = json_object();
		if (p->n_dns)
			json_object_set_new(san, "dns", strv_json(p->dns, p->n_dns));
		if (p->n_ip)
			json_object_set_new(san, "ip", strv_json(p->ip, p->n_ip));
		if (p->n_uri)
			json_object_set_new(san, "uri", strv_json(p->uri, p->n_uri));
		if (p->n_email)
			json_object_set_new(san, "email", strv_json(p->email, p->n_email));
		json_object_set_new(req, "san", san);
	}
	if (p->n_key_usage)
		json_object_set_new(req, "key_usage", strv_json(p->key_usage, p->n_key_usage));
	if (p->n_ext_key_usage)
		json_object_set_new(req, "ext_key_usage",
				    strv_json(p->ext_key_usage, p->n_ext_key_usage));
	if (p->n_attrs) {
		json_t *attrs = json_array();

		for (size_t i = 0; i < p->n_attrs; i++)
			json_array_append_new(attrs, json_pack("{s:s, s:s, s:s}",
				"oid", p->attrs[i].oid ? p->attrs[i].oid : "",
				"value", p->attrs[i].value ? p->attrs[i].value : "",
				"type", p->attrs[i].type ? p->attrs[i].type : "utf8"));
		json_object_set_new(req, "attributes", attrs);
	}
	if (p->digest != NULL)
		json_object_set_new(req, "digest", json_string(p->digest));
	return call(ks, req, "csr", 65536, csr_pem);
}

/* ---- signatures ---- */

struct sign_resp {
	const char *signature;
};

static const struct ks_json_field sign_fields[] = {
	{ "signature", KS_JSON_STRING, offsetof(struct sign_resp, signature), KS_JSON_REQUIRED, 4096 },
	{ NULL, 0, 0, 0, 0 },
};

static int sign_common(keysvc *ks, const char *name, const char *alg, const char *field,
		       const uint8_t *in, size_t in_len, uint8_t **sig, size_t *sig_len)
{
	struct sign_resp sr;
	json_t *resp = NULL;
	char *b64 = NULL;
	int r;

	if ((r = check_name(ks, name)) != KEYSVC_OK)
		return r;
	if (alg == NULL || in == NULL || sig == NULL || sig_len == NULL)
		return fail(ks, KEYSVC_E_INVALID, "missing argument");
	*sig = NULL;
	*sig_len = 0;
	if (in_len > KS_DATA_MAX)
		return fail(ks, KEYSVC_E_INVALID, "more than 48 KiB to sign");
	if (ks_b64_encode(in, in_len, &b64) != 0)
		return fail(ks, KEYSVC_E_NOMEM, "out of memory");
	memset(&sr, 0, sizeof(sr));
	r = transact(ks, json_pack("{s:s, s:s, s:s, s:s}", "op", "sign", "key", name, "alg", alg,
				   field, b64), &resp);
	free(b64);
	if (r == KEYSVC_OK && (r = decode(ks, resp, sign_fields, &sr)) == KEYSVC_OK) {
		if (ks_b64_decode(sr.signature, strlen(sr.signature), KS_SIG_MAX_BYTES, sig,
				  sig_len) != 0 || *sig_len == 0) {
			free(*sig);
			*sig = NULL;
			*sig_len = 0;
			r = fail(ks, KEYSVC_E_PROTOCOL, "signature is not base64");
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
	int r;

	if ((r = check_name(ks, name)) != KEYSVC_OK)
		return r;
	if (cert_pem == NULL)
		return fail(ks, KEYSVC_E_INVALID, "certificate missing");
	return call(ks, json_pack("{s:s, s:s, s:s}", "op", "cert.put", "key", name, "cert", cert_pem),
		    NULL, 0, NULL);
}

KEYSVC_EXPORT int keysvc_cert_get(keysvc *ks, const char *name, char **cert_pem)
{
	int r;

	if ((r = check_name(ks, name)) != KEYSVC_OK)
		return r;
	if (cert_pem == NULL)
		return fail(ks, KEYSVC_E_INVALID, "missing argument");
	return call(ks, json_pack("{s:s, s:s}", "op", "cert.get", "key", name), "cert", 65536, cert_pem);
}
