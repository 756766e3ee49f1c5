#include "clients/provider/keyref.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1t.h>
#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/pem.h>

typedef struct {
	ASN1_VISIBLESTRING *description;
	ASN1_UTF8STRING *key;
	ASN1_UTF8STRING *socket;
} KSP_KEYREF;

/* OpenSSL's template macros cast away const; they are its code, not ours. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wcast-qual"
ASN1_SEQUENCE(KSP_KEYREF) = {
	ASN1_SIMPLE(KSP_KEYREF, description, ASN1_VISIBLESTRING),
	ASN1_SIMPLE(KSP_KEYREF, key, ASN1_UTF8STRING),
	ASN1_IMP_OPT(KSP_KEYREF, socket, ASN1_UTF8STRING, 0),
} static_ASN1_SEQUENCE_END(KSP_KEYREF)
IMPLEMENT_STATIC_ASN1_ALLOC_FUNCTIONS(KSP_KEYREF)
IMPLEMENT_STATIC_ASN1_ENCODE_FUNCTIONS(KSP_KEYREF)
#pragma GCC diagnostic pop

/* A socket path: absolute, printable, short enough for sun_path. */
static int socket_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > KSP_KEYREF_SOCKET_MAX || s[0] != '/')
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

/* Copy ASN.1 string @s into @out (room for @max + 1): 0, or -1 if too long or holding a NUL. */
static int copy_string(const ASN1_STRING *s, char *out, size_t max)
{
	int len = ASN1_STRING_length(s);

	if (len < 0 || (size_t)len > max || memchr(ASN1_STRING_get0_data(s), '\0', (size_t)len) != NULL)
		return -1;
	memcpy(out, ASN1_STRING_get0_data(s), (size_t)len);
	out[len] = '\0';
	return 0;
}

int ksp_keyref_decode(const unsigned char *der, size_t len, struct ksp_keyref *ref,
		      char *why, size_t why_len)
{
	const unsigned char *p = der;
	KSP_KEYREF *obj = NULL;
	int r = -ENOMSG;

	memset(ref, 0, sizeof(*ref));
	if (len == 0 || len > KSP_KEYREF_DER_MAX)
		goto out;
	if ((obj = d2i_KSP_KEYREF(NULL, &p, (long)len)) == NULL || p != der + len)
		goto out;
	if (ASN1_STRING_length(obj->description) != (int)strlen(KSP_KEYREF_DESCRIPTION) ||
	    memcmp(ASN1_STRING_get0_data(obj->description), KSP_KEYREF_DESCRIPTION,
		   strlen(KSP_KEYREF_DESCRIPTION)) != 0)
		goto out;
	r = -EINVAL;
	if (copy_string(obj->key, ref->name, KSP_KEYREF_NAME_MAX) < 0 || !ks_key_name_valid(ref->name)) {
		snprintf(why, why_len, "the key name is not a keysvc key name "
			 "(1 to 64 of A-Z a-z 0-9 . _ -, not starting with . or -)");
		goto out;
	}
	if (obj->socket != NULL &&
	    (copy_string(obj->socket, ref->socket, KSP_KEYREF_SOCKET_MAX) < 0 || !socket_ok(ref->socket))) {
		snprintf(why, why_len, "the socket is not an absolute path of at most %d printable bytes",
			 KSP_KEYREF_SOCKET_MAX);
		goto out;
	}
	r = 0;
out:
	KSP_KEYREF_free(obj);
	if (r < 0)
		memset(ref, 0, sizeof(*ref));
	return r;
}

int ksp_keyref_pem(const char *name, const char *socket, char **pem)
{
	KSP_KEYREF *obj = NULL;
	unsigned char *der = NULL;
	BIO *bio = NULL;
	BUF_MEM *mem;
	int len, r = -ENOMEM;

	*pem = NULL;
	if (!ks_key_name_valid(name) || (socket != NULL && socket[0] != '\0' && !socket_ok(socket)))
		return -EINVAL;
	if ((obj = KSP_KEYREF_new()) == NULL ||
	    !ASN1_STRING_set(obj->description, KSP_KEYREF_DESCRIPTION, -1) ||
	    !ASN1_STRING_set(obj->key, name, -1))
		goto out;
	if (socket != NULL && socket[0] != '\0' &&
	    ((obj->socket = ASN1_UTF8STRING_new()) == NULL || !ASN1_STRING_set(obj->socket, socket, -1)))
		goto out;
	if ((len = i2d_KSP_KEYREF(obj, &der)) <= 0 || (bio = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio(bio, KSP_KEYREF_PEM_LABEL, "", der, len) <= 0)
		goto out;
	BIO_get_mem_ptr(bio, &mem);
	if ((*pem = strndup(mem->data, mem->length)) == NULL)
		goto out;
	r = 0;
out:
	OPENSSL_free(der);
	BIO_free(bio);
	KSP_KEYREF_free(obj);
	return r;
}
