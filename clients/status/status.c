#include "clients/status/status.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "clients/renew/common/certinstall.h"
#include "proto/utf8.h"

static int fail(char *err, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, int r, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL) {
		va_start(ap, fmt);
		vsnprintf(err, KS_STATUS_ERR_MAX, fmt, ap);
		va_end(ap);
	}
	return r;
}

int ks_cert_not_yet_valid(const X509 *cert, time_t now)
{
	return ks_ci_seconds_until(X509_get0_notBefore(cert), now) > 0;
}

enum ks_class ks_status_classify(const struct ks_status_facts *f, const struct ks_conf_thresholds *t,
				 time_t now)
{
	long long left;

	if (f->file_missing || f->key_missing)
		return KS_CLASS_REMOVED;
	if (f->cert == NULL)
		return KS_CLASS_ERROR;
	if (f->revoked)
		return KS_CLASS_REVOKED;
	if (f->outcome == KS_INV_PUSH_FAILED)
		return KS_CLASS_PUSH_FAILED;
	left = ks_ci_seconds_until(X509_get0_notAfter(f->cert), now);
	if (left < 0 || ks_cert_not_yet_valid(f->cert, now))
		return KS_CLASS_EXPIRED;
	if (left < (long long)t->critical_days * 86400)
		return KS_CLASS_CRITICAL;
	if (left < (long long)t->warning_days * 86400)
		return KS_CLASS_WARNING;
	/* The certificate is fine for now, but nothing will renew it until someone looks. */
	if (f->outcome == KS_INV_FAILED)
		return KS_CLASS_WARNING;
	if (left < (long long)t->notice_days * 86400)
		return KS_CLASS_NOTICE;
	return KS_CLASS_VALID;
}

static const struct {
	const char *name, *colour, *ansi;
} classes[] = {
	[KS_CLASS_VALID] = { "valid", "green", "\033[32m" },
	[KS_CLASS_NOTICE] = { "notice", "blue", "\033[34m" },
	[KS_CLASS_WARNING] = { "warning", "yellow", "\033[33m" },
	[KS_CLASS_CRITICAL] = { "critical", "orange", "\033[38;5;208m" },
	[KS_CLASS_EXPIRED] = { "expired", "red", "\033[31m" },
	[KS_CLASS_PUSH_FAILED] = { "push-failed", "gray", "\033[90m" },
	/* Black text would vanish on a dark terminal: white on black instead. */
	[KS_CLASS_REVOKED] = { "revoked", "black", "\033[97;40m" },
	[KS_CLASS_REMOVED] = { "removed", "purple", "\033[35m" },
	[KS_CLASS_ERROR] = { "error", "none", "" },
};

const char *ks_class_name(enum ks_class c)
{
	return (unsigned)c <= KS_CLASS_ERROR ? classes[c].name : "error";
}

const char *ks_class_colour(enum ks_class c)
{
	return (unsigned)c <= KS_CLASS_ERROR ? classes[c].colour : "none";
}

const char *ks_class_ansi(enum ks_class c)
{
	return (unsigned)c <= KS_CLASS_ERROR ? classes[c].ansi : "";
}

int ks_class_needs_attention(enum ks_class c)
{
	return c != KS_CLASS_VALID && c != KS_CLASS_NOTICE && c != KS_CLASS_ERROR;
}

int ks_status_exit(const enum ks_class *cls, size_t n, size_t errors)
{
	int attention = 0;

	for (size_t i = 0; i < n; i++) {
		if (cls[i] == KS_CLASS_ERROR)
			errors++;
		attention |= ks_class_needs_attention(cls[i]);
	}
	if (errors > 0)
		return KS_EXIT_INTERNAL;
	return attention ? KS_EXIT_ATTENTION : KS_EXIT_OK;
}

size_t ks_prom_escape(const char *in, char *out, size_t len)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t need = 0, w = 0;
	int full = len == 0;

	while (*s != '\0') {
		char piece[4];
		size_t n = ks_utf8_char_len(s, strnlen((const char *)s, 4)), step = n;
		const char *src = (const char *)s;

		if (*s == '\\' || *s == '"' || *s == '\n') {
			piece[0] = '\\';
			piece[1] = *s == '\n' ? 'n' : (char)*s;
			src = piece;
			n = 2;
			step = 1;
		} else if (n == 0) {
			src = "\xef\xbf\xbd";   /* U+FFFD */
			n = 3;
			step = 1;
		}
		need += n;
		if (!full && w + n < len) {
			memcpy(out + w, src, n);
			w += n;
		} else {
			full = 1;
		}
		s += step;
	}
	if (len > 0)
		out[w] = '\0';
	return need;
}

static X509_CRL *load_crl(const char *path, char *err)
{
	char why[KS_CI_ERR_MAX], *text = NULL;
	const unsigned char *p;
	X509_CRL *crl = NULL;
	size_t len;
	BIO *bio;

	if (ks_ci_read_file(path, &text, &len, why) < 0) {
		fail(err, -EIO, "CRL %s", why);
		return NULL;
	}
	if ((bio = BIO_new_mem_buf(text, (int)len)) != NULL) {
		crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL);
		BIO_free(bio);
	}
	if (crl == NULL) {
		p = (const unsigned char *)text;
		crl = d2i_X509_CRL(NULL, &p, (long)len);
	}
	ERR_clear_error();
	free(text);
	if (crl == NULL)
		fail(err, -EBADMSG, "%s: not a CRL (PEM or DER)", path);
	return crl;
}

int ks_crl_check(X509 *cert, const char *crl_path, const char *ca_file, time_t now, int *revoked,
		 int *stale, char *err)
{
	STACK_OF(X509) *cas = NULL;
	X509_CRL *crl = NULL;
	X509_REVOKED *entry = NULL;
	char why[KS_CI_ERR_MAX];
	const ASN1_TIME *next;
	int r, signed_ok = 0;

	*revoked = 0;
	*stale = 0;
	if ((crl = load_crl(crl_path, err)) == NULL)
		return -EBADMSG;
	if ((r = ks_ci_load_bundle(ca_file, &cas, why)) < 0) {
		r = fail(err, r, "CA file: %s", why);
		goto out;
	}
	if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(cert)) != 0) {
		r = fail(err, -EBADMSG, "the CRL %s is not issued by the certificate's issuer", crl_path);
		goto out;
	}
	for (int i = 0; i < sk_X509_num(cas) && !signed_ok; i++) {
		X509 *ca = sk_X509_value(cas, i);

		if (X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) == 0)
			signed_ok = X509_CRL_verify(crl, X509_get0_pubkey(ca)) == 1;
	}
	if (!signed_ok) {
		r = fail(err, -EPERM, "the CRL %s is not signed by a CA certificate in %s", crl_path, ca_file);
		goto out;
	}
	next = X509_CRL_get0_nextUpdate(crl);
	*stale = next != NULL && ks_ci_seconds_until(next, now) < 0;
	*revoked = X509_CRL_get0_by_cert(crl, &entry, cert) == 1;
	r = 0;
out:
	ERR_clear_error();
	sk_X509_pop_free(cas, X509_free);
	X509_CRL_free(crl);
	return r;
}
