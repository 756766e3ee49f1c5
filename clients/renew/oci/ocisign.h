/*
 * OCI request signing: the "Signature version=1" scheme of Oracle Cloud
 * Infrastructure (draft-cavage-http-signatures-08, rsa-sha256), as the
 * OCI SDKs implement it and as Oracle's "Request Signatures" page documents
 * it with test values (tests/oci/test_ocisign.c checks those byte for byte).
 *
 * Why a pure module: the signing string is the part that has to be exactly
 * right, and it depends on nothing but the request. The signature itself
 * comes from a callback, so keysvc-oci makes it with keysvcd (the key stays
 * in the token) while the unit tests make it with OpenSSL and the
 * published test key.
 *
 * What is signed:
 *   GET, HEAD, DELETE, OPTIONS:  date (request-target) host
 *   POST, PUT, PATCH:            date (request-target) host content-length
 *                                content-type x-content-sha256
 * (the order of Oracle's published example; the lines are joined with "\n",
 * no trailing newline). (request-target) is the lower-case method, a space,
 * and the path with the query exactly as it will be sent (no re-encoding).
 * host is the URL's authority (host, and ":port" if the URL has one): the
 * caller must send exactly that Host header, which oci_headers() includes.
 *
 * No function here logs anything; error texts never contain the signature
 * or the keyId (a session token keyId "ST$..." is a bearer secret).
 */
#ifndef KEYSVC_CLIENTS_OCI_OCISIGN_H
#define KEYSVC_CLIENTS_OCI_OCISIGN_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Bounds: an OCI URL, a keyId (session tokens are JWTs of a few KiB), a signature. */
#define OCI_URL_MAX 4096
#define OCI_KEY_ID_MAX 8192
#define OCI_HOST_MAX 256
#define OCI_SIG_MAX 1024
/* Room for "Thu, 05 Jan 2014 21:31:40 GMT" and its NUL. */
#define OCI_DATE_MAX 40
/* At most this many header lines come out of oci_headers() (NULL not counted). */
#define OCI_HEADERS_MAX 6

/*
 * Make an RSASSA-PKCS1-v1_5 signature with SHA-256 over the @len bytes of
 * @data, the signing string itself (not its digest): a key whose purposes
 * are http-signature signs only what keysvcd has seen to be a signing
 * string (proto/sigform.h), so the string travels, not a hash of it. On
 * success return 0 with *@sig (malloc'd, the caller frees) and *@sig_len
 * (at most OCI_SIG_MAX); else a negative errno. @arg is the caller's.
 * keysvc-oci maps this to keysvc_sign_data("rsa-pkcs1-sha256").
 */
typedef int (*oci_sign_fn)(void *arg, const uint8_t *data, size_t len, uint8_t **sig, size_t *sig_len);

struct oci_request {
	const char *method;        /* "GET", "post", ...: an HTTP token, any case */
	const char *url;           /* https://host[:port]/path[?query], at most OCI_URL_MAX */
	const char *date;          /* the Date header as it will be sent; NULL: now (RFC 7231) */
	const char *content_type;  /* body methods only; NULL: "application/json" */
	const void *body;          /* body methods only; may be NULL when body_len is 0 */
	size_t body_len;
};

/* What oci_sign() made. Release with oci_signed_free(). */
struct oci_signed {
	int has_body;                   /* POST/PUT/PATCH: the three body headers are signed */
	char date[OCI_DATE_MAX];
	char host[OCI_HOST_MAX];
	char content_type[128];
	char content_length[24];
	char content_sha256[48];        /* base64 of SHA-256 of the body */
	char *signing_string;           /* exactly what was signed */
	char *signature_b64;
	char *authorization;            /* the value of the Authorization header */
	char *header_lines[OCI_HEADERS_MAX + 1]; /* oci_headers(): "Name: value", NULL-terminated */
};

/*
 * Format @t as an HTTP date ("Sun, 06 Nov 1994 08:49:37 GMT") into @buf
 * (@len >= OCI_DATE_MAX). 0 or -EINVAL.
 */
int oci_http_date(time_t t, char *buf, size_t len);

/*
 * Split an https:// URL: *@host gets the authority (host[:port]),
 * *@target the path and query as given ("/" if the URL has no path). Both
 * malloc'd. -EINVAL for anything else: not https, empty host, user info,
 * a fragment, spaces or control characters, over OCI_URL_MAX.
 */
int oci_url_split(const char *url, char **host, char **target);

/*
 * Build the signing string for @rq into @out (which is reset first):
 * date, host, the body headers and out->signing_string. Nothing is signed.
 * -EINVAL for a bad method, URL, date or content type (CR, LF or other
 * control characters anywhere are refused), -ENOMEM.
 */
int oci_signing_string(const struct oci_request *rq, struct oci_signed *out);

/*
 * oci_signing_string(), the signature over it from @fn, and
 * out->authorization:
 *   Signature version="1",headers="...",keyId="KEYID",algorithm="rsa-sha256",signature="B64"
 * @key_id is 1..OCI_KEY_ID_MAX printable ASCII characters without '"' or
 * '\\'. 0, or -EINVAL, -ENOMEM, or @fn's error. *@out must be freed with
 * oci_signed_free() in every case.
 */
int oci_sign(const struct oci_request *rq, const char *key_id, oci_sign_fn fn, void *arg,
	     struct oci_signed *out);

/*
 * The request headers to send, in out->header_lines and returned:
 * "date: ...", "host: ...", for body methods "content-length: ...",
 * "content-type: ...", "x-content-sha256: ...", then "authorization: ...".
 * Valid until oci_signed_free(). NULL if @s is not signed or on ENOMEM.
 */
const char *const *oci_headers(struct oci_signed *s);

/* Free what @s holds and reset it. NULL is allowed. */
void oci_signed_free(struct oci_signed *s);

#endif
