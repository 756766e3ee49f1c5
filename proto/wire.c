#include "proto/wire.h"

#include <errno.h>
#include <string.h>

#include "proto/alg.h"
#include "proto/b64.h"
#include "proto/secmem.h"

static const char *const op_names[KS_OP_COUNT] = {
	[KS_OP_HELLO] = "hello",
	[KS_OP_KEY_GENERATE] = "key.generate",
	[KS_OP_KEY_LIST] = "key.list",
	[KS_OP_KEY_PUBLIC] = "key.public",
	[KS_OP_KEY_DELETE] = "key.delete",
	[KS_OP_CSR_CREATE] = "csr.create",
	[KS_OP_SIGN] = "sign",
	[KS_OP_CERT_PUT] = "cert.put",
	[KS_OP_CERT_GET] = "cert.get",
};

static const char *const wire_err_names[KS_WIRE_ERR_COUNT] = {
	[KS_WIRE_BAD_REQUEST] = "bad-request",
	[KS_WIRE_DENIED] = "denied",
	[KS_WIRE_NO_SUCH_KEY] = "no-such-key",
	[KS_WIRE_EXISTS] = "exists",
	[KS_WIRE_UNSUPPORTED] = "unsupported",
	[KS_WIRE_TOKEN_UNAVAILABLE] = "token-unavailable",
	[KS_WIRE_AUDIT_UNAVAILABLE] = "audit-unavailable",
	[KS_WIRE_INTERNAL] = "internal",
};

static const char *const health_names[KS_WIRE_HEALTH_COUNT] = {
	[KS_WIRE_HEALTH_OK] = "ok",
	[KS_WIRE_HEALTH_DEGRADED] = "degraded",
	/* The unavailable state's wire name since version 1: the error's. */
	[KS_WIRE_HEALTH_TOKEN_UNAVAILABLE] = "token-unavailable",
};

const char *ks_op_name(enum ks_op op)
{
	return (unsigned)op < KS_OP_COUNT ? op_names[op] : NULL;
}

int ks_op_from_name(const char *name)
{
	for (int i = 0; name != NULL && i < KS_OP_COUNT; i++)
		if (strcmp(op_names[i], name) == 0)
			return i;
	return -1;
}

int ks_op_takes_key(enum ks_op op)
{
	return (unsigned)op < KS_OP_COUNT && op != KS_OP_HELLO && op != KS_OP_KEY_LIST;
}

const char *ks_wire_err_name(enum ks_wire_err err)
{
	return (unsigned)err < KS_WIRE_ERR_COUNT ? wire_err_names[err] : NULL;
}

enum ks_wire_err ks_wire_err_from_name(const char *name)
{
	for (int i = KS_WIRE_ERR_NONE + 1; name != NULL && i < KS_WIRE_ERR_COUNT; i++)
		if (strcmp(wire_err_names[i], name) == 0)
			return (enum ks_wire_err)i;
	return KS_WIRE_ERR_NONE;
}

const char *ks_wire_health_name(enum ks_wire_health h)
{
	return (unsigned)h < KS_WIRE_HEALTH_COUNT ? health_names[h] : NULL;
}

int ks_wire_health_from_name(const char *name)
{
	for (int i = 0; name != NULL && i < KS_WIRE_HEALTH_COUNT; i++)
		if (strcmp(health_names[i], name) == 0)
			return i;
	return -1;
}

int ks_key_name_valid(const char *name)
{
	size_t n;

	if (name == NULL || (n = strlen(name)) == 0 || n > KS_KEY_NAME_MAX)
		return 0;
	if (name[0] == '.' || name[0] == '-')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

void ks_wire_bytes_clear(struct ks_wire_bytes *b)
{
	ks_freezero(b->data, b->len);
	b->data = NULL;
	b->len = 0;
}

int ks_wire_check_key_name(const void *value, void *typed, const char **why)
{
	(void)typed;
	if (ks_key_name_valid(*(const char *const *)value))
		return 0;
	*why = "not a valid key name";
	return -EINVAL;
}

int ks_wire_check_key_type(const void *value, void *typed, const char **why)
{
	enum ks_key_type t = ks_key_type_from_name(*(const char *const *)value);

	if (t == KS_KEY_NONE) {
		*why = "unknown key type";
		return -EOPNOTSUPP;
	}
	*(enum ks_key_type *)typed = t;
	return 0;
}

int ks_wire_check_sig_alg(const void *value, void *typed, const char **why)
{
	enum ks_sig_alg a = ks_sig_alg_from_name(*(const char *const *)value);

	if (a == KS_SIG_NONE) {
		*why = "unknown signature algorithm";
		return -EOPNOTSUPP;
	}
	*(enum ks_sig_alg *)typed = a;
	return 0;
}

static int check_b64(const void *value, void *typed, size_t max, const char *too_long,
		     const char **why)
{
	const char *s = *(const char *const *)value;
	struct ks_wire_bytes *b = typed;
	int r;

	ks_wire_bytes_clear(b);
	r = ks_b64_decode(s, strlen(s), max, &b->data, &b->len);
	if (r == -EINVAL || r == -EMSGSIZE) {
		*why = too_long;
		return -EINVAL;
	}
	if (r != 0)
		*why = "out of memory";
	return r;
}

/* The messages spell the limits out. */
_Static_assert(KS_DIGEST_MAX == 64 && KS_SIGN_DATA_MAX == 49152, "the messages name the limits");

int ks_wire_check_digest(const void *value, void *typed, const char **why)
{
	return check_b64(value, typed, KS_DIGEST_MAX, "must be base64 of at most 64 bytes", why);
}

int ks_wire_check_data(const void *value, void *typed, const char **why)
{
	return check_b64(value, typed, KS_SIGN_DATA_MAX, "must be base64 of at most 49152 bytes", why);
}
