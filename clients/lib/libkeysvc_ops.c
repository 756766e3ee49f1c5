/*
 * libkeysvc: the operations of wire protocol v1, one call each (hello,
 * keys, CSRs, signatures, certificates): each builds its request, runs it
 * through libks_transact() (libkeysvc.c) and reads the result with a
 * schema of its own.
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

/* The public header cannot include proto/: the two must agree. */
_Static_assert(KEYSVC_SIGN_DATA_MAX == KS_SIGN_DATA_MAX, "<keysvc/keysvc.h> and proto/wire.h disagree");

/* ---- hello ---- */

struct hello_resp {
	uint64_t version;
	const char *server;
	json_t *token;
	const char *health;
	const char *health_reason;
	uint64_t last_token_ok;
	struct ks_strv key_types;
	struct ks_strv algorithms;
};

static const struct ks_json_field hello_fields[] = {
	{ "version", KS_JSON_UINT, offsetof(struct hello_resp, version), KS_JSON_REQUIRED, 0 },
	{ "server", KS_JSON_STRING, offsetof(struct hello_resp, server), KS_JSON_REQUIRED, SHORT_MAX_BYTES },
	{ "token", KS_JSON_OBJECT, offsetof(struct hello_resp, token), KS_JSON_REQUIRED, 0 },
	{ "health", KS_JSON_STRING, offsetof(struct hello_resp, health), KS_JSON_REQUIRED, SHORT_MAX_BYTES },
	{ "health_reason", KS_JSON_STRING, offsetof(struct hello_resp, health_reason), 0, SHORT_MAX_BYTES },
	{ "last_token_ok", KS_JSON_UINT, offsetof(struct hello_resp, last_token_ok), 0, 0 },
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
		return libks_nomem(ks);
	for (size_t i = 0; i < sv->n; i++) {
		if (((*out)[i] = strdup(sv->v[i])) == NULL) {
			strv_free(*out, i);
			*out = NULL;
			return libks_nomem(ks);
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
	if ((r = libks_req_new(ks, ks_op_name(KS_OP_HELLO), &req)) != KEYSVC_OK)
		return r;
	if (out == NULL) {
		json_decref(req);
		return libks_fail(ks, KEYSVC_E_INVALID, "no result pointer");
	}
	versions = json_pack("[i]", KEYSVC_PROTOCOL_VERSION);
	if (json_object_set_new(req, "versions", versions) != 0) {
		json_decref(req);
		return libks_nomem(ks);
	}
	if ((r = libks_transact(ks, req, &resp)) != KEYSVC_OK)
		return r;
	memset(&hr, 0, sizeof(hr));
	memset(&tr, 0, sizeof(tr));
	if ((r = libks_decode(ks, resp, hello_fields, &hr)) != KEYSVC_OK ||
	    (r = libks_decode(ks, hr.token, token_fields, &tr)) != KEYSVC_OK)
		goto out;
	if (hr.version > INT_MAX) {
		r = libks_fail(ks, KEYSVC_E_PROTOCOL, "response field version: out of range");
		goto out;
	}
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		r = libks_nomem(ks);
		goto out;
	}
	h->version = (int)hr.version;
	h->last_token_ok = (long long)hr.last_token_ok;
	switch (ks_wire_health_from_name(hr.health)) {
	case KS_WIRE_HEALTH_OK:
		h->health = KEYSVC_HEALTH_OK;
		break;
	case KS_WIRE_HEALTH_TOKEN_UNAVAILABLE:
		h->health = KEYSVC_HEALTH_TOKEN_UNAVAILABLE;
		break;
	case KS_WIRE_HEALTH_DEGRADED:
		h->health = KEYSVC_HEALTH_DEGRADED;
		break;
	default:
		h->health = KEYSVC_HEALTH_UNKNOWN;
		break;
	}
	if ((r = libks_dup_out(ks, hr.server, &h->server)) != KEYSVC_OK ||
	    (r = libks_dup_out(ks, tr.label ? tr.label : "", &h->token_label)) != KEYSVC_OK ||
	    (r = libks_dup_out(ks, tr.manufacturer ? tr.manufacturer : "", &h->token_manufacturer)) != KEYSVC_OK ||
	    (r = libks_dup_out(ks, tr.model ? tr.model : "", &h->token_model)) != KEYSVC_OK ||
	    (r = libks_dup_out(ks, tr.serial ? tr.serial : "", &h->token_serial)) != KEYSVC_OK ||
	    (r = libks_dup_out(ks, hr.health_reason ? hr.health_reason : "", &h->health_reason)) != KEYSVC_OK ||
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
	if ((r = libks_req_new_key(ks, ks_op_name(KS_OP_KEY_GENERATE), name, &req)) != KEYSVC_OK)
		return r;
	if ((r = libks_put_str(ks, req, "type", type)) != KEYSVC_OK) {
		json_decref(req);
		return r;
	}
	return libks_call(ks, req, "public_key", PEM_MAX_BYTES, public_key_pem);
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
	if ((r = libks_req_new_key(ks, ks_op_name(KS_OP_KEY_PUBLIC), name, &req)) != KEYSVC_OK)
		return r;
	memset(&pr, 0, sizeof(pr));
	if ((r = libks_transact(ks, req, &resp)) != KEYSVC_OK ||
	    (r = libks_decode(ks, resp, public_fields, &pr)) != KEYSVC_OK ||
	    (r = libks_string_or_null(ks, "type", pr.type, SHORT_MAX_BYTES, &t)) != KEYSVC_OK ||
	    (r = libks_dup_out(ks, pr.public_key, public_key_pem)) != KEYSVC_OK ||
	    (r = libks_dup_out(ks, t, type)) != KEYSVC_OK) {
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
	if (ks != NULL) {
		ks->list_truncated = 0;
		libks_list_purposes_clear(ks);
	}
	if ((r = libks_req_new(ks, ks_op_name(KS_OP_KEY_LIST), &req)) != KEYSVC_OK)
		return r;
	if (keys == NULL || n == NULL) {
		json_decref(req);
		return libks_fail(ks, KEYSVC_E_INVALID, "no result pointer");
	}
	memset(&lr, 0, sizeof(lr));
	if ((r = libks_transact(ks, req, &resp)) != KEYSVC_OK ||
	    (r = libks_decode(ks, resp, list_fields, &lr)) != KEYSVC_OK)
		goto out;
	if (json_array_size(lr.keys) > 0 &&
	    (out = calloc(json_array_size(lr.keys), sizeof(*out))) == NULL) {
		r = libks_nomem(ks);
		goto out;
	}
	json_array_foreach(lr.keys, i, e) {
		struct list_entry le;
		const char *t = NULL;

		memset(&le, 0, sizeof(le));
		if ((r = libks_decode(ks, e, list_entry_fields, &le)) != KEYSVC_OK ||
		    (r = libks_string_or_null(ks, "type", le.type, SHORT_MAX_BYTES, &t)) != KEYSVC_OK)
			goto out;
		out[count].has_cert = le.has_cert;
		count++;
		if ((r = libks_dup_out(ks, le.key, &out[count - 1].name)) != KEYSVC_OK ||
		    (r = libks_dup_out(ks, t, &out[count - 1].type)) != KEYSVC_OK)
			goto out;
	}
	if ((r = libks_list_purposes_keep(ks, lr.keys)) != KEYSVC_OK)
		goto out;
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

	if ((r = libks_req_new_key(ks, ks_op_name(KS_OP_KEY_DELETE), name, &req)) != KEYSVC_OK)
		return r;
	return libks_call(ks, req, NULL, 0, NULL);
}

/* ---- CSRs ---- */

static int csr_request(keysvc *ks, json_t *req, const struct keysvc_csr_params *p)
{
	json_t *san = NULL, *attrs = NULL;
	int r;

	for (size_t i = 0; i < sizeof(p->reserved) / sizeof(p->reserved[0]); i++)
		if (p->reserved[i] != NULL)
			return libks_fail(ks, KEYSVC_E_INVALID,
				    "reserved CSR parameters set (a newer keysvc.h than this library?)");
	if ((r = libks_put_str(ks, req, "subject", p->subject)) != KEYSVC_OK)
		return r;
	if (p->n_dns + p->n_ip + p->n_uri + p->n_email > 0) {
		if ((san = json_object()) == NULL)
			return libks_nomem(ks);
		if ((r = libks_put_strv(ks, san, "dns", p->dns, p->n_dns)) != KEYSVC_OK ||
		    (r = libks_put_strv(ks, san, "ip", p->ip, p->n_ip)) != KEYSVC_OK ||
		    (r = libks_put_strv(ks, san, "uri", p->uri, p->n_uri)) != KEYSVC_OK ||
		    (r = libks_put_strv(ks, san, "email", p->email, p->n_email)) != KEYSVC_OK)
			goto out;
		if (json_object_set(req, "san", san) != 0) {
			r = libks_nomem(ks);
			goto out;
		}
	}
	if ((r = libks_put_strv(ks, req, "key_usage", p->key_usage, p->n_key_usage)) != KEYSVC_OK ||
	    (r = libks_put_strv(ks, req, "ext_key_usage", p->ext_key_usage, p->n_ext_key_usage)) != KEYSVC_OK)
		goto out;
	if (p->n_attrs > 0) {
		if (p->attrs == NULL) {
			r = libks_fail(ks, KEYSVC_E_INVALID, "attributes: a count without an array");
			goto out;
		}
		if ((attrs = json_array()) == NULL) {
			r = libks_nomem(ks);
			goto out;
		}
		for (size_t i = 0; i < p->n_attrs; i++) {
			json_t *a = json_object();

			if (a == NULL || json_array_append_new(attrs, a) != 0) {
				r = libks_nomem(ks);
				goto out;
			}
			if ((r = libks_put_str(ks, a, "oid", p->attrs[i].oid)) != KEYSVC_OK ||
			    (r = libks_put_str(ks, a, "value", p->attrs[i].value)) != KEYSVC_OK ||
			    (p->attrs[i].type != NULL &&
			     (r = libks_put_str(ks, a, "type", p->attrs[i].type)) != KEYSVC_OK))
				goto out;
		}
		if (json_object_set(req, "attributes", attrs) != 0) {
			r = libks_nomem(ks);
			goto out;
		}
	}
	if (p->digest != NULL)
		r = libks_put_str(ks, req, "digest", p->digest);
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
	if ((r = libks_req_new_key(ks, ks_op_name(KS_OP_CSR_CREATE), name, &req)) != KEYSVC_OK)
		return r;
	if (p == NULL || csr_pem == NULL)
		r = libks_fail(ks, KEYSVC_E_INVALID, "%s missing", p == NULL ? "parameters" : "result pointer");
	else
		r = csr_request(ks, req, p);
	if (r != KEYSVC_OK) {
		json_decref(req);
		return r;
	}
	return libks_call(ks, req, "csr", PEM_MAX_BYTES, csr_pem);
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
	if ((r = libks_req_new_key(ks, ks_op_name(KS_OP_SIGN), name, &req)) != KEYSVC_OK)
		return r;
	if (sig == NULL || sig_len == NULL || (in == NULL && in_len > 0))
		r = libks_fail(ks, KEYSVC_E_INVALID, "%s missing", sig == NULL || sig_len == NULL ?
			 "result pointer" : field);
	else if (in_len > KEYSVC_SIGN_DATA_MAX)
		r = libks_fail(ks, KEYSVC_E_INVALID, "%zu bytes to sign; at most %d", in_len,
			 KEYSVC_SIGN_DATA_MAX);
	else if ((r = libks_put_str(ks, req, "alg", alg)) == KEYSVC_OK &&
		 ks_b64_encode(in != NULL ? in : empty, in_len, &b64) != 0)
		r = libks_nomem(ks);
	if (r == KEYSVC_OK && json_object_set_new(req, field, json_string_nocheck(b64)) != 0)
		r = libks_nomem(ks);
	free(b64);
	if (r != KEYSVC_OK) {
		json_decref(req);
		return r;
	}
	memset(&sr, 0, sizeof(sr));
	if ((r = libks_transact(ks, req, &resp)) == KEYSVC_OK &&
	    (r = libks_decode(ks, resp, sign_fields, &sr)) == KEYSVC_OK) {
		if (ks_b64_decode(sr.signature, strlen(sr.signature), SIG_MAX_BYTES, sig,
				  sig_len) != 0 || *sig_len == 0) {
			free(*sig);
			*sig = NULL;
			*sig_len = 0;
			r = libks_fail(ks, KEYSVC_E_PROTOCOL,
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

	if ((r = libks_req_new_key(ks, ks_op_name(KS_OP_CERT_PUT), name, &req)) != KEYSVC_OK)
		return r;
	if ((r = libks_put_str(ks, req, "cert", cert_pem)) != KEYSVC_OK) {
		json_decref(req);
		return r;
	}
	return libks_call(ks, req, NULL, 0, NULL);
}

KEYSVC_EXPORT int keysvc_cert_get(keysvc *ks, const char *name, char **cert_pem)
{
	json_t *req;
	int r;

	if (cert_pem != NULL)
		*cert_pem = NULL;
	if ((r = libks_req_new_key(ks, ks_op_name(KS_OP_CERT_GET), name, &req)) != KEYSVC_OK)
		return r;
	if (cert_pem == NULL) {
		json_decref(req);
		return libks_fail(ks, KEYSVC_E_INVALID, "result pointer missing");
	}
	return libks_call(ks, req, "cert", PEM_MAX_BYTES, cert_pem);
}
