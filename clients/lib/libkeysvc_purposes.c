/*
 * Key purposes in libkeysvc (since KEYSVC_1.2): generate with purposes,
 * read them from key.public and key.list. On the wire they are an array
 * of names; callers see "csr,tls", the form of `keysvc keygen --purpose`.
 */
#include "libkeysvc_internal.h"

#include <stdlib.h>
#include <string.h>

#include "proto/sigform.h"
#include "proto/wire.h"

/* More than the four purposes of v1 leaves room for a newer daemon's. */
#define PURPOSES_MAX_ENTRIES 16
#define PURPOSE_NAME_MAX 32

/* A purpose name as a daemon may send it: lower case, digits and '-', bounded. */
static int purpose_name_ok(const char *s, size_t len)
{
	if (len == 0 || len > PURPOSE_NAME_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return 0;
	return 1;
}

int libks_purposes_read(keysvc *ks, json_t *obj, char **out, int *legacy)
{
	json_t *arr = json_object_get(obj, "purposes"), *lg = json_object_get(obj, "purposes_legacy"), *v;
	char buf[PURPOSES_MAX_ENTRIES * (PURPOSE_NAME_MAX + 1)];
	size_t i, len = 0;

	*out = NULL;
	*legacy = 0;
	if (lg != NULL && !json_is_boolean(lg))
		return libks_fail(ks, KEYSVC_E_PROTOCOL, "response field purposes_legacy: not a boolean");
	*legacy = json_is_true(lg);
	if (arr == NULL)
		return KEYSVC_OK;
	/* Empty: a key whose stored purposes do not parse, which may sign nothing. */
	if (!json_is_array(arr) || json_array_size(arr) > PURPOSES_MAX_ENTRIES)
		return libks_fail(ks, KEYSVC_E_PROTOCOL, "response field purposes: not 0..%d names",
				  PURPOSES_MAX_ENTRIES);
	json_array_foreach(arr, i, v) {
		size_t n = json_is_string(v) ? json_string_length(v) : 0;

		if (!json_is_string(v) || !purpose_name_ok(json_string_value(v), n))
			return libks_fail(ks, KEYSVC_E_PROTOCOL, "response field purposes: not a "
					  "purpose name");
		if (i > 0)
			buf[len++] = ',';
		memcpy(buf + len, json_string_value(v), n);
		len += n;
	}
	buf[len] = '\0';
	return libks_dup_out(ks, buf, out);
}

void libks_list_purposes_clear(keysvc *ks)
{
	for (size_t i = 0; i < ks->list_n; i++)
		free(ks->list_purposes[i]);
	free(ks->list_purposes);
	free(ks->list_legacy);
	ks->list_purposes = NULL;
	ks->list_legacy = NULL;
	ks->list_n = 0;
}

int libks_list_purposes_keep(keysvc *ks, json_t *keys)
{
	size_t n = json_array_size(keys), i;
	json_t *e;
	int r;

	libks_list_purposes_clear(ks);
	if (n == 0)
		return KEYSVC_OK;
	if ((ks->list_purposes = calloc(n, sizeof(*ks->list_purposes))) == NULL ||
	    (ks->list_legacy = calloc(n, sizeof(*ks->list_legacy))) == NULL) {
		libks_list_purposes_clear(ks);
		return libks_nomem(ks);
	}
	ks->list_n = n;
	json_array_foreach(keys, i, e) {
		if ((r = libks_purposes_read(ks, e, &ks->list_purposes[i], &ks->list_legacy[i])) != KEYSVC_OK) {
			libks_list_purposes_clear(ks);
			return r;
		}
	}
	return KEYSVC_OK;
}

KEYSVC_EXPORT const char *keysvc_key_list_purposes(const keysvc *ks, size_t i, int *legacy)
{
	if (legacy != NULL)
		*legacy = 0;
	if (ks == NULL || i >= ks->list_n)
		return NULL;
	if (legacy != NULL)
		*legacy = ks->list_legacy[i];
	return ks->list_purposes[i];
}

KEYSVC_EXPORT int keysvc_key_generate_purposes(keysvc *ks, const char *name, const char *type,
					       const char *purposes, char **public_key_pem)
{
	const char *names[KS_PURPOSES_MAX];
	const char *why = NULL;
	unsigned set = 0;
	size_t n = 0;
	json_t *req;
	int r;

	if (public_key_pem != NULL)
		*public_key_pem = NULL;
	if (purposes != NULL && ks_purposes_parse(purposes, &set, &why) != 0)
		return libks_fail(ks, KEYSVC_E_INVALID, "purposes %.64s: %s", purposes, why);
	for (unsigned bit = 1; bit <= KS_PURPOSE_ALL; bit <<= 1)
		if (set & bit)
			names[n++] = ks_purpose_name(bit);
	if ((r = libks_req_new_key(ks, ks_op_name(KS_OP_KEY_GENERATE), name, &req)) != KEYSVC_OK)
		return r;
	if ((r = libks_put_str(ks, req, "type", type)) != KEYSVC_OK ||
	    (r = libks_put_strv(ks, req, "purposes", names, n)) != KEYSVC_OK) {
		json_decref(req);
		return r;
	}
	return libks_call(ks, req, "public_key", PEM_MAX_BYTES, public_key_pem);
}

KEYSVC_EXPORT int keysvc_key_purposes(keysvc *ks, const char *name, char **purposes, int *legacy)
{
	char *p = NULL;
	json_t *req, *resp = NULL;
	int lg = 0, r;

	if (purposes != NULL)
		*purposes = NULL;
	if (legacy != NULL)
		*legacy = 0;
	if ((r = libks_req_new_key(ks, ks_op_name(KS_OP_KEY_PUBLIC), name, &req)) != KEYSVC_OK)
		return r;
	if ((r = libks_transact(ks, req, &resp)) != KEYSVC_OK ||
	    (r = libks_purposes_read(ks, resp, &p, &lg)) != KEYSVC_OK)
		goto out;
	if (purposes != NULL) {
		*purposes = p;
		p = NULL;
	}
	if (legacy != NULL)
		*legacy = lg;
out:
	free(p);
	json_decref(resp);
	return r;
}
