/*
 * The vocabulary of wire protocol v1 (proto/PROTOCOL.md), defined once:
 * the operation names, the wire error names, the key-name rule and the
 * limits of requests and answers. keysvcd (policy, dispatcher, server),
 * the token layer (key names are labels), libkeysvc, the CLI and the
 * OpenSSL provider all take them from here, so a name or a limit cannot
 * mean one thing on one side of the socket and another on the other.
 *
 * Key types and signature algorithms are proto/alg.h; the frame cap
 * (KS_FRAME_MAX) is proto/frame.h. Nothing here needs jansson, so the
 * provider links it without the JSON layer; the schema checks at the end
 * have proto/json.h's ks_json_check_fn signature for the request tables.
 */
#ifndef KEYSVC_PROTO_WIRE_H
#define KEYSVC_PROTO_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* ---- limits -------------------------------------------------------------- */

/* Bytes of a key name (the token's CKA_LABEL); see ks_key_name_valid(). */
#define KS_KEY_NAME_MAX 64
/* Bytes of a request id that is a string (an integer id is 0 .. 2^53-1). */
#define KS_ID_MAX 64
/* An error message with its NUL: at most 255 bytes on the wire. */
#define KS_MESSAGE_MAX 256
/* Bytes of client text quoted in an error message, cut at a character boundary. */
#define KS_QUOTE_MAX 64
/* hello: entries of "versions". */
#define KS_VERSIONS_MAX 16
/* key.list: keys in one answer (512 of the longest entries take about 56 KiB). */
#define KS_LIST_MAX 512
/* sign: bytes of "data" after base64 decoding (= <keysvc/keysvc.h>'s KEYSVC_SIGN_DATA_MAX). */
#define KS_SIGN_DATA_MAX (48 * 1024)
/* sign: bytes of "digest" after decoding, the longest hash (SHA-512). */
#define KS_DIGEST_MAX 64
/* Bytes of a wire name field ("type", "alg"). */
#define KS_WIRE_NAME_MAX 32
/* cert.put: bytes of the PEM certificate. */
#define KS_CERT_PEM_MAX (32 * 1024)
/* csr.create: bytes of "subject". */
#define KS_SUBJECT_MAX 4096
/* csr.create: SAN names in all (dns, ip, uri and email together). */
#define KS_SAN_MAX 100
/* csr.create: entries of "key_usage", "ext_key_usage" and "attributes". */
#define KS_KEY_USAGE_MAX 16
#define KS_EXT_KEY_USAGE_MAX 32
#define KS_CSR_ATTRS_MAX 16
/* csr.create: bytes of an attribute's "oid" (an OID of at most 127 characters) and "value". */
#define KS_OID_TEXT_MAX 128
#define KS_ATTR_VALUE_MAX 1024
/* csr.create: bytes of an attribute's "type" ("utf8", ...). */
#define KS_ATTR_TYPE_MAX 16
/* csr.create: bytes of a SAN "uri" or "email" entry ("dns" names: 253, the DNS limit). */
#define KS_SAN_ENTRY_MAX 1024
/* csr.create: bytes of "digest" ("sha256", ...). */
#define KS_DIGEST_NAME_MAX 16
/*
 * csr.create: the bytes of text a CSR is built from (subject, SAN entries,
 * ext_key_usage entries, attribute OIDs and values) together. The DER
 * holds this plus at most about 6 KiB (tags and lengths of at most 212
 * strings, 16 bytes for an IPv6 address written "::", an RSA-4096 key
 * and signature), and the answer carries it as PEM in a JSON string,
 * 1.375 bytes per DER byte: under 54 KiB, so every CSR within this limit
 * is answered within one 64 KiB frame (test_dispatch.c builds the
 * largest).
 */
#define KS_CSR_TEXT_MAX (32 * 1024)

/* ---- operations ---------------------------------------------------------- */

/* Each operation is also the name of the policy grant it needs. */
enum ks_op {
	KS_OP_HELLO = 0,
	KS_OP_KEY_GENERATE,
	KS_OP_KEY_LIST,
	KS_OP_KEY_PUBLIC,
	KS_OP_KEY_DELETE,
	KS_OP_CSR_CREATE,
	KS_OP_SIGN,
	KS_OP_CERT_PUT,
	KS_OP_CERT_GET,
	KS_OP_COUNT,
};

/* Wire name of @op ("csr.create"); NULL if out of range. */
const char *ks_op_name(enum ks_op op);
/* Wire name to op; -1 if unknown (names are exact: no case folding, no patterns). */
int ks_op_from_name(const char *name);
/* 1 when @op acts on one key named by a "key" field; 0 for hello and key.list. */
int ks_op_takes_key(enum ks_op op);

/* ---- errors -------------------------------------------------------------- */

/*
 * The "error" of a failed response. 0 is no error. libkeysvc maps each
 * to its own KEYSVC_E_* (whose numbers are public ABI and do not follow
 * this order); a name it does not know it reports as KEYSVC_E_INTERNAL.
 */
enum ks_wire_err {
	KS_WIRE_ERR_NONE = 0,
	KS_WIRE_BAD_REQUEST,
	KS_WIRE_DENIED,
	KS_WIRE_NO_SUCH_KEY,
	KS_WIRE_EXISTS,
	KS_WIRE_UNSUPPORTED,
	KS_WIRE_TOKEN_UNAVAILABLE,
	KS_WIRE_AUDIT_UNAVAILABLE,
	KS_WIRE_INTERNAL,
	KS_WIRE_ERR_COUNT,
};

/* Wire name of @err ("no-such-key"); NULL for KS_WIRE_ERR_NONE or out of range. */
const char *ks_wire_err_name(enum ks_wire_err err);
/* Wire name to error; KS_WIRE_ERR_NONE if @name is not one (or NULL). */
enum ks_wire_err ks_wire_err_from_name(const char *name);

/* ---- health -------------------------------------------------------------- */

/* hello's "health". */
enum ks_wire_health {
	KS_WIRE_HEALTH_OK = 0,
	KS_WIRE_HEALTH_DEGRADED,
	KS_WIRE_HEALTH_TOKEN_UNAVAILABLE,
	KS_WIRE_HEALTH_COUNT,
};

/* "ok", "degraded", "token-unavailable"; NULL if out of range. */
const char *ks_wire_health_name(enum ks_wire_health h);
/* Wire name to state; -1 if unknown. */
int ks_wire_health_from_name(const char *name);

/* ---- key names ----------------------------------------------------------- */

/*
 * A key name is 1..KS_KEY_NAME_MAX characters of [A-Za-z0-9._-], not
 * starting with '.' or '-' (so it is never a path component of its own
 * nor taken for an option). Returns 1 if @name is one, 0 otherwise or for
 * NULL.
 */
int ks_key_name_valid(const char *name);

/* ---- schema checks --------------------------------------------------------- */

/*
 * Checks of request fields for proto/json.h's tables (ks_json_check_fn):
 * @value points at a KS_JSON_STRING field's const char *, @typed at where
 * the typed value goes; *@why is a static message.
 */

/* Base64 decoded by a check; the caller wipes it with ks_wire_bytes_clear(). */
struct ks_wire_bytes {
	uint8_t *data;
	size_t len;
};

/* Wipe and free @b's bytes and zero it; @b may be zeroed already. */
void ks_wire_bytes_clear(struct ks_wire_bytes *b);

/* A key name (ks_key_name_valid()); stores nothing. -EINVAL "not a valid key name". */
int ks_wire_check_key_name(const void *value, void *typed, const char **why);
/* A key type name (proto/alg.h) into an enum ks_key_type. -EOPNOTSUPP "unknown key type". */
int ks_wire_check_key_type(const void *value, void *typed, const char **why);
/* A signature algorithm name into an enum ks_sig_alg. -EOPNOTSUPP "unknown signature algorithm". */
int ks_wire_check_sig_alg(const void *value, void *typed, const char **why);
/*
 * Canonical base64 (proto/b64.h) of at most KS_DIGEST_MAX bytes
 * (ks_wire_check_digest) or KS_SIGN_DATA_MAX bytes (ks_wire_check_data)
 * into a struct ks_wire_bytes. -EINVAL naming the limit, or -ENOMEM.
 */
int ks_wire_check_digest(const void *value, void *typed, const char **why);
int ks_wire_check_data(const void *value, void *typed, const char **why);

#endif
