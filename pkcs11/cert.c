/*
 * Certificate objects stored next to a key (same CKA_ID and label):
 * replacing one and reading it back.
 */

#include "pkcs11/token_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

#include "proto/log.h"

/* ---- certificates ---------------------------------------------------------------- */

struct cert_arg {
	struct key_ref k;
	const uint8_t *der;
	size_t der_len;
	unsigned char *subject, *issuer, *serial;
	int subject_len, issuer_len, serial_len;
	uint8_t *out;
	size_t out_len;
};

static CK_RV cert_put_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
			 int *err)
{
	struct cert_arg *ca = arg;
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ctype = CKC_X_509;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_OBJECT_HANDLE old[16], created = CK_INVALID_HANDLE;
	CK_ULONG nold = 0;
	CK_RV rv;

	(void)retry;
	if ((rv = ks_tok_resolve_key(tok, s, &ca->k, err)) != CKR_OK || *err != 0)
		return rv;
	{
		CK_ATTRIBUTE tmpl[] = {
			{ CKA_CLASS, &cls, sizeof(cls) },
			{ CKA_CERTIFICATE_TYPE, &ctype, sizeof(ctype) },
			{ CKA_TOKEN, &yes, sizeof(yes) },
			{ CKA_PRIVATE, &no, sizeof(no) },
			{ CKA_LABEL, (void *)(uintptr_t)ca->k.name, strlen(ca->k.name) },
			{ CKA_ID, ca->k.id, ca->k.id_len },
			{ CKA_SUBJECT, ca->subject, (CK_ULONG)ca->subject_len },
			{ CKA_ISSUER, ca->issuer, (CK_ULONG)ca->issuer_len },
			{ CKA_SERIAL_NUMBER, ca->serial, (CK_ULONG)ca->serial_len },
			{ CKA_VALUE, (void *)(uintptr_t)ca->der, ca->der_len },
		};

		if ((rv = ks_tok_find_related(tok, s, CKO_CERTIFICATE, &ca->k, old, 16,
					      &nold)) != CKR_OK)
			return rv;
		/* The old certificate goes only once the new one is on the token. */
		if ((rv = ks_tok_objects_wrlock(tok)) != CKR_OK)
			return rv;
		rv = P11(tok, C_CreateObject, s, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &created);
		pthread_rwlock_unlock(&tok->objects_rw);
		if (rv != CKR_OK)
			return rv;
	}
	for (CK_ULONG i = 0; i < nold; i++)
		if ((rv = P11(tok, C_DestroyObject, s, old[i])) != CKR_OK)
			return rv;
	return CKR_OK;
}

int ks_token_cert_put(struct ks_token *tok, const char *name, const uint8_t *der,
		      size_t der_len)
{
	struct cert_arg ca;
	const unsigned char *p = der;
	X509 *x = NULL;
	int r;

	if (!ks_key_name_valid(name) || der == NULL || der_len == 0 || der_len > KS_CERT_MAX)
		return -EINVAL;
	memset(&ca, 0, sizeof(ca));
	ca.k.name = name;
	ca.der = der;
	ca.der_len = der_len;
	/* Exactly one certificate and nothing after it. */
	if ((x = d2i_X509(NULL, &p, (long)der_len)) == NULL || p != der + der_len) {
		r = -EINVAL;
		goto out;
	}
	ca.subject_len = i2d_X509_NAME(X509_get_subject_name(x), &ca.subject);
	ca.issuer_len = i2d_X509_NAME(X509_get_issuer_name(x), &ca.issuer);
	ca.serial_len = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &ca.serial);
	if (ca.subject_len <= 0 || ca.issuer_len <= 0 || ca.serial_len <= 0) {
		r = -EINVAL;
		goto out;
	}
	if ((r = ks_tok_run_key_op(tok, "store certificate", cert_put_op, &ca)) == 0)
		ks_info("stored a certificate for key %s", name);
out:
	OPENSSL_free(ca.subject);
	OPENSSL_free(ca.issuer);
	OPENSSL_free(ca.serial);
	X509_free(x);
	return r;
}

static CK_RV cert_get_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
			 int *err)
{
	struct cert_arg *ca = arg;
	CK_OBJECT_HANDLE h[2];
	CK_ULONG n = 0;
	CK_ATTRIBUTE a = { CKA_VALUE, NULL, 0 };
	CK_RV rv;

	(void)retry;
	if ((rv = ks_tok_resolve_key(tok, s, &ca->k, err)) != CKR_OK || *err != 0)
		return rv;
	if ((rv = ks_tok_find_related(tok, s, CKO_CERTIFICATE, &ca->k, h, 2, &n)) != CKR_OK)
		return rv;
	if (n == 0) {
		*err = -ENOENT;
		return CKR_OK;
	}
	if ((rv = P11(tok, C_GetAttributeValue, s, h[0], &a, 1)) != CKR_OK)
		return rv;
	if (a.ulValueLen == 0 || a.ulValueLen > KS_CERT_MAX) {
		ks_err("key %s: certificate object of unexpected size", ca->k.name);
		*err = -EIO;
		return CKR_OK;
	}
	free(ca->out);
	ca->out_len = 0;
	if ((ca->out = malloc(a.ulValueLen)) == NULL) {
		*err = -ENOMEM;
		return CKR_OK;
	}
	a.pValue = ca->out;
	if ((rv = P11(tok, C_GetAttributeValue, s, h[0], &a, 1)) != CKR_OK)
		return rv;
	ca->out_len = a.ulValueLen;
	return CKR_OK;
}

int ks_token_cert_get(struct ks_token *tok, const char *name, uint8_t **der, size_t *der_len)
{
	struct cert_arg ca;
	int r;

	*der = NULL;
	*der_len = 0;
	if (!ks_key_name_valid(name))
		return -EINVAL;
	memset(&ca, 0, sizeof(ca));
	ca.k.name = name;
	if ((r = ks_tok_run_key_op(tok, "read certificate", cert_get_op, &ca)) != 0) {
		free(ca.out);
		return r;
	}
	*der = ca.out;
	*der_len = ca.out_len;
	return 0;
}
