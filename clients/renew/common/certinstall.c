#include "clients/renew/common/certinstall.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "proto/file.h"

static int fail(char *err, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, int r, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL) {
		va_start(ap, fmt);
		vsnprintf(err, KS_CI_ERR_MAX, fmt, ap);
		va_end(ap);
	}
	return r;
}

static int only_space(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
			return 0;
	return 1;
}

/*
 * The messages do not say where the text came from (a CA's answer, a local
 * file): the callers do, and a file is no one's "answer".
 */
int ks_ci_parse_bundle(const char *pem, size_t len, STACK_OF(X509) **out, char *err)
{
	static const char begin[] = "-----BEGIN CERTIFICATE-----";
	static const char end[] = "-----END CERTIFICATE-----";
	STACK_OF(X509) *certs = NULL;
	const char *p = pem, *stop = pem + len;
	int r;

	*out = NULL;
	if (len > KS_CI_PEM_MAX)
		return fail(err, -EMSGSIZE, "certificate text of %zu bytes is over the %zu-byte limit",
			    len, KS_CI_PEM_MAX);
	if ((certs = sk_X509_new_null()) == NULL)
		return fail(err, -ENOMEM, "out of memory");
	/* Walk block by block so that anything between or around the
	 * certificates (a key, a stray line, HTML) is an error, not skipped. */
	for (;;) {
		const char *b = memmem(p, (size_t)(stop - p), begin, sizeof(begin) - 1), *e;
		BIO *bio;
		X509 *x;

		if (b == NULL) {
			if (!only_space(p, (size_t)(stop - p))) {
				r = fail(err, -EBADMSG, "something other than PEM certificates is in it");
				goto out;
			}
			break;
		}
		if (!only_space(p, (size_t)(b - p))) {
			r = fail(err, -EBADMSG, "something other than PEM certificates is in it");
			goto out;
		}
		e = memmem(b, (size_t)(stop - b), end, sizeof(end) - 1);
		if (e == NULL) {
			r = fail(err, -EBADMSG, "a PEM certificate is cut short");
			goto out;
		}
		e += sizeof(end) - 1;
		if ((bio = BIO_new_mem_buf(b, (int)(e - b))) == NULL) {
			r = fail(err, -ENOMEM, "out of memory");
			goto out;
		}
		x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
		BIO_free(bio);
		if (x == NULL) {
			ERR_clear_error();
			r = fail(err, -EBADMSG, "a PEM certificate does not parse");
			goto out;
		}
		if (!sk_X509_push(certs, x)) {
			X509_free(x);
			r = fail(err, -ENOMEM, "out of memory");
			goto out;
		}
		p = e;
	}
	if (sk_X509_num(certs) == 0) {
		r = fail(err, -EBADMSG, "no PEM certificate in it");
		goto out;
	}
	*out = certs;
	certs = NULL;
	r = 0;
out:
	sk_X509_pop_free(certs, X509_free);
	return r;
}

int ks_ci_parse_one(const char *pem, size_t len, X509 **out, char *err)
{
	STACK_OF(X509) *certs = NULL;
	int r;

	*out = NULL;
	if ((r = ks_ci_parse_bundle(pem, len, &certs, err)) < 0)
		return r;
	if (sk_X509_num(certs) != 1) {
		r = fail(err, -EBADMSG, "expected one certificate, got %d", sk_X509_num(certs));
		goto out;
	}
	*out = sk_X509_shift(certs);
	r = 0;
out:
	sk_X509_pop_free(certs, X509_free);
	return r;
}

int ks_ci_read_file(const char *path, char **out, size_t *len, char *err)
{
	uint8_t *data;
	int r;

	*out = NULL;
	*len = 0;
	switch ((r = ks_file_read(path, KS_CI_PEM_MAX, 0, NULL, NULL, &data, len))) {
	case 0:
		*out = (char *)data;
		return 0;
	case -EISDIR:
	case -EBADFD:
		return fail(err, -EINVAL, "%s: not a regular file", path);
	case -EFBIG:
		return fail(err, -EMSGSIZE, "%s: larger than %zu bytes", path, KS_CI_PEM_MAX);
	case -ENOMEM:
		return fail(err, r, "out of memory");
	default:
		return fail(err, r, "%s: %s", path, strerror(-r));
	}
}

int ks_ci_load_bundle(const char *path, STACK_OF(X509) **out, char *err)
{
	char *text = NULL;
	size_t len;
	int r;

	*out = NULL;
	if ((r = ks_ci_read_file(path, &text, &len, err)) == 0)
		r = ks_ci_parse_bundle(text, len, out, err);
	free(text);
	return r;
}

int ks_ci_parse_pubkey(const char *pem, EVP_PKEY **out, char *err)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);

	*out = bio != NULL ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	if (*out == NULL) {
		ERR_clear_error();
		return fail(err, -EBADMSG, "keysvcd's public key does not parse");
	}
	return 0;
}

long long ks_ci_seconds_until(const ASN1_TIME *t, time_t now)
{
	int days = 0, secs = 0;
	ASN1_TIME *n = ASN1_TIME_set(NULL, now);

	if (n == NULL || !ASN1_TIME_diff(&days, &secs, n, t)) {
		ASN1_TIME_free(n);
		return 0;
	}
	ASN1_TIME_free(n);
	return (long long)days * 86400 + secs;
}

void ks_ci_format_time(const ASN1_TIME *t, char *buf, size_t len)
{
	struct tm tm;

	if (len == 0)
		return;
	if (t == NULL || !ASN1_TIME_to_tm(t, &tm) || strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(buf, len, "(unreadable time)");
}

static int common_name(X509 *cert, char *buf, size_t len)
{
	X509_NAME *name = X509_get_subject_name(cert);
	int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	unsigned char *utf8 = NULL;
	int n;

	if (idx < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, idx) >= 0)
		return -1;    /* none, or more than one */
	n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
	if (n < 0 || (size_t)n >= len || memchr(utf8, '\0', (size_t)n) != NULL) {
		OPENSSL_free(utf8);
		return -1;
	}
	memcpy(buf, utf8, (size_t)n);
	buf[n] = '\0';
	OPENSSL_free(utf8);
	return 0;
}

/*
 * OpenSSL stops at the first error, top of the chain first: if only the
 * default callback ran, an expired CA would hide an unchecked leaf
 * signature (and an expired intermediate would pass for an expired leaf).
 * Only the leaf's own dates are let through, so that the rest of the chain
 * is still fully verified and the caller can say "expired" only when that
 * is the one thing wrong.
 */
static int verify_tolerating_leaf_time(int ok, X509_STORE_CTX *ctx)
{
	int e = X509_STORE_CTX_get_error(ctx);

	if (ok)
		return 1;
	return X509_STORE_CTX_get_error_depth(ctx) == 0 &&
	       (e == X509_V_ERR_CERT_HAS_EXPIRED || e == X509_V_ERR_CERT_NOT_YET_VALID);
}

/*
 * X.509 path validation of @cert to one of @trusted at @now, with @chain as
 * untrusted intermediates. Every certificate of @trusted is an anchor
 * (X509_V_FLAG_PARTIAL_CHAIN), self-signed or not: an operator may pin the
 * signing CA alone, as a UCL connector hands out only that one. 0 (also when only the leaf's dates are wrong: the caller
 * checks those itself), or -EPERM with the reason in @err.
 */
static int verify_path(X509 *cert, STACK_OF(X509) *chain, STACK_OF(X509) *trusted, time_t now, char *err)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	char subject[256] = "";
	int r, ok = 0, verr = X509_V_ERR_UNSPECIFIED, depth = -1;

	if (store == NULL || ctx == NULL) {
		r = fail(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < sk_X509_num(trusted); i++)
		if (!X509_STORE_add_cert(store, sk_X509_value(trusted, i))) {
			r = fail(err, -ENOMEM, "out of memory");
			goto out;
		}
	X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
	if (X509_STORE_CTX_init(ctx, store, cert, chain)) {
		X509_STORE_CTX_set_time(ctx, 0, now);
		X509_STORE_CTX_set_verify_cb(ctx, verify_tolerating_leaf_time);
		ok = X509_verify_cert(ctx) == 1;
		verr = X509_STORE_CTX_get_error(ctx);
		depth = X509_STORE_CTX_get_error_depth(ctx);
		if (!ok && X509_STORE_CTX_get_current_cert(ctx) != NULL)
			X509_NAME_oneline(X509_get_subject_name(X509_STORE_CTX_get_current_cert(ctx)), subject,
					  sizeof(subject));
	}
	if (!ok) {
		if (depth > 0 && subject[0] != '\0')
			r = fail(err, -EPERM, "the certificate does not chain to the pinned CA: %s (at %.200s)",
				 X509_verify_cert_error_string(verr), subject);
		else
			r = fail(err, -EPERM, "the certificate does not chain to the pinned CA: %s",
				 X509_verify_cert_error_string(verr));
		goto out;
	}
	r = 0;
out:
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	ERR_clear_error();
	return r;
}

int ks_ci_check(X509 *cert, STACK_OF(X509) *chain, const struct ks_ci_expect *exp, char *err)
{
	time_t now = exp->now != 0 ? exp->now : time(NULL);
	char when[64], cn[256];
	int r;

	if (exp->public_key != NULL) {
		EVP_PKEY *pub = X509_get0_pubkey(cert);

		if (pub == NULL || EVP_PKEY_eq(pub, exp->public_key) != 1) {
			ERR_clear_error();
			return fail(err, -EKEYREJECTED, "the certificate is for another public key than the token key");
		}
	}
	/* A leaf whose only fault is its dates passes here and gets the -ETIME message below. */
	if (exp->trusted != NULL && (r = verify_path(cert, chain, exp->trusted, now, err)) < 0)
		return r;
	if (X509_cmp_time(X509_get0_notAfter(cert), &now) <= 0) {
		ks_ci_format_time(X509_get0_notAfter(cert), when, sizeof(when));
		return fail(err, -ETIME, "the certificate expired at %s", when);
	}
	if (X509_cmp_time(X509_get0_notBefore(cert), &now) > 0) {
		ks_ci_format_time(X509_get0_notBefore(cert), when, sizeof(when));
		return fail(err, -ETIME, "the certificate is not valid before %s", when);
	}
	if (exp->common_name != NULL) {
		if (common_name(cert, cn, sizeof(cn)) != 0)
			return fail(err, -EBADMSG, "the certificate's subject has no single common name");
		if (strcmp(cn, exp->common_name) != 0)
			return fail(err, -EBADMSG, "the certificate is for CN=%.100s, not %.100s", cn,
				    exp->common_name);
	}
	if (exp->later_than != NULL) {
		r = ASN1_TIME_compare(X509_get0_notAfter(cert), exp->later_than);
		if (r != 1) {
			ks_ci_format_time(X509_get0_notAfter(cert), when, sizeof(when));
			return fail(err, -ESTALE, "the new certificate ends at %s, no later than the current one",
				    when);
		}
	}
	return 0;
}

static int is_one_of(X509 *x, STACK_OF(X509) *set)
{
	for (int i = 0; i < sk_X509_num(set); i++)
		if (X509_cmp(x, sk_X509_value(set, i)) == 0)
			return 1;
	return 0;
}

int ks_ci_vouched(STACK_OF(X509) *certs, STACK_OF(X509) *anchors, STACK_OF(X509) *pool, time_t now,
		  STACK_OF(X509) **kept, char *err)
{
	STACK_OF(X509) *out = sk_X509_new_null(), *untrusted = sk_X509_new_null();
	struct ks_ci_expect exp = { .trusted = anchors, .now = now != 0 ? now : time(NULL) };
	char why[KS_CI_ERR_MAX], subject[256];
	int r, left_out = 0;

	*kept = NULL;
	if (err != NULL)
		err[0] = '\0';
	if (out == NULL || untrusted == NULL) {
		r = fail(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < sk_X509_num(certs); i++)
		if (!sk_X509_push(untrusted, sk_X509_value(certs, i))) {
			r = fail(err, -ENOMEM, "out of memory");
			goto out;
		}
	for (int i = 0; i < sk_X509_num(pool); i++)
		if (!sk_X509_push(untrusted, sk_X509_value(pool, i))) {
			r = fail(err, -ENOMEM, "out of memory");
			goto out;
		}
	for (int i = 0; i < sk_X509_num(certs); i++) {
		X509 *x = sk_X509_value(certs, i);
		int vouched = is_one_of(x, anchors);

		/* Not an anchor: a CA certificate that a pinned one vouches for, fully valid (a leaf
		 * check's tolerance of expired leaves does not apply to a CA). A CA by
		 * basicConstraints CA:TRUE only: X509_check_ca() also counts keyUsage
		 * keyCertSign alone, v1 self-signed and Netscape types (other values). */
		if (!vouched && X509_check_ca(x) == 1 && verify_path(x, untrusted, anchors, exp.now, why) == 0)
			vouched = X509_cmp_time(X509_get0_notAfter(x), &exp.now) > 0 &&
				  X509_cmp_time(X509_get0_notBefore(x), &exp.now) <= 0;
		if (vouched) {
			if (!sk_X509_push(out, x)) {
				r = fail(err, -ENOMEM, "out of memory");
				goto out;
			}
			X509_up_ref(x);
			continue;
		}
		if (left_out++ == 0) {
			X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject));
			fail(err, 0, "%.200s", subject);
		}
	}
	*kept = out;
	out = NULL;
	r = left_out;
out:
	sk_X509_pop_free(out, X509_free);
	sk_X509_free(untrusted);
	ERR_clear_error();
	return r;
}

int ks_ci_pem_of(STACK_OF(X509) *certs, char **pem, size_t *len, char *err)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long n;
	int r;

	*pem = NULL;
	*len = 0;
	if (bio == NULL) {
		r = fail(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < sk_X509_num(certs); i++)
		if (!PEM_write_bio_X509(bio, sk_X509_value(certs, i))) {
			r = fail(err, -ENOMEM, "out of memory");
			goto out;
		}
	n = BIO_get_mem_data(bio, &data);
	if (n < 0 || (*pem = malloc((size_t)n + 1)) == NULL) {
		r = fail(err, -ENOMEM, "out of memory");
		goto out;
	}
	memcpy(*pem, data, (size_t)n);
	(*pem)[n] = '\0';
	*len = (size_t)n;
	r = 0;
out:
	BIO_free(bio);
	ERR_clear_error();
	return r;
}

/*
 * A new version of a file is written and fsync'd under proto/file's
 * temporary name, PATH.ks-tmp.XXXXXX, before anything is replaced. The
 * current file is kept as PATH.prev through a hard link named
 * PATH.ks-tmp.XXXXXX.prev, which proto/file removes with the temporary
 * file should the installer die before it is renamed into place.
 */

/* Write @data to a temporary file next to @path, fsync'd and with @mode. On failure nothing is left. */
static int stage(const char *path, const void *data, size_t len, mode_t mode, struct ks_file_tmp *st, char *err)
{
	char prev[PATH_MAX];
	int r;

	st->fd = -1;
	st->tmp[0] = '\0';
	if (snprintf(prev, sizeof(prev), "%s.prev", path) >= (int)sizeof(prev))
		return fail(err, -ENAMETOOLONG, "%s: path too long", path);
	if ((r = ks_file_tmp_open(st, path)) < 0) {
		if (r == -ENAMETOOLONG)
			return fail(err, r, "%s: path too long", path);
		return fail(err, r, "%s: cannot create a temporary file: %s", path, strerror(-r));
	}
	if ((r = ks_file_tmp_write(st, data, len)) < 0) {
		r = fail(err, r, "%s: write: %s", st->tmp, strerror(-r));
		goto out;
	}
	if ((r = ks_file_tmp_sync(st, mode)) < 0) {
		r = fail(err, r, "%s: %s", st->tmp, strerror(-r));
		goto out;
	}
	r = 0;
out:
	if (r < 0)
		ks_file_tmp_discard(st);
	return r;
}

/* Rename the staged file over @path, first keeping the current @path as .prev when @keep_prev. */
static int commit(const char *path, struct ks_file_tmp *st, int keep_prev, char *err)
{
	char prev[PATH_MAX + 8], prev_tmp[PATH_MAX + 8];
	int r;

	/* No overflow: stage() made sure both fit in PATH_MAX. */
	snprintf(prev, sizeof(prev), "%s.prev", path);
	snprintf(prev_tmp, sizeof(prev_tmp), "%s.prev", st->tmp);
	/* Keep the current file as .prev: a hard link, so that @path itself
	 * never goes missing, placed by rename so that .prev is never half. */
	if (keep_prev && access(path, F_OK) == 0) {
		if (link(path, prev_tmp) != 0 || rename(prev_tmp, prev) != 0) {
			int e = errno;

			unlink(prev_tmp);
			return fail(err, -e, "%s: cannot keep the previous file: %s", prev, strerror(e));
		}
		/* When PATH.prev already was PATH (the same inode, as after an
		 * install that stopped here), rename() succeeds without doing
		 * anything and leaves the link. */
		unlink(prev_tmp);
	}
	if ((r = ks_file_tmp_commit(st, 0)) < 0)
		return fail(err, r, "%s: rename: %s", path, strerror(-r));
	(void)ks_file_sync_dir(path);
	return 0;
}

/* Both ks_ci_install() (@keep_prev) and ks_ci_write_atomic(). */
static int write_atomic(const char *path, const void *data, size_t len, mode_t mode, int keep_prev, char *err)
{
	struct ks_file_tmp st;
	int r;

	if ((r = stage(path, data, len, mode, &st, err)) < 0)
		return r;
	r = commit(path, &st, keep_prev, err);
	ks_file_tmp_discard(&st);
	return r;
}

int ks_ci_install(const char *path, const void *data, size_t len, mode_t mode, char *err)
{
	return write_atomic(path, data, len, mode, 1, err);
}

int ks_ci_write_atomic(const char *path, const void *data, size_t len, mode_t mode, char *err)
{
	return write_atomic(path, data, len, mode, 0, err);
}

/* Put @path back as it was before commit(): from its .prev, or gone if it did not exist. */
static int roll_back(const char *path, int existed)
{
	char prev[PATH_MAX + 8];
	int r = 0;

	/* No overflow: stage() made sure PATH.prev fits in PATH_MAX. */
	snprintf(prev, sizeof(prev), "%s.prev", path);
	if (existed ? rename(prev, path) != 0 : unlink(path) != 0)
		r = -errno;
	(void)ks_file_sync_dir(path);
	return r;
}

int ks_ci_install_all(const struct ks_ci_file *files, size_t n, char *err)
{
	struct ks_file_tmp st[KS_CI_INSTALL_ALL_MAX];
	int existed[KS_CI_INSTALL_ALL_MAX];
	size_t staged = 0, committed = 0;
	int r;

	if (n > KS_CI_INSTALL_ALL_MAX)
		return fail(err, -E2BIG, "at most %d files at once", KS_CI_INSTALL_ALL_MAX);
	/* Everything that can run out of room or permission happens before any file is replaced. */
	for (; staged < n; staged++)
		if ((r = stage(files[staged].path, files[staged].data, files[staged].len, files[staged].mode,
			       &st[staged], err)) < 0)
			goto out;
	for (; committed < n; committed++) {
		existed[committed] = access(files[committed].path, F_OK) == 0;
		if ((r = commit(files[committed].path, &st[committed], 1, err)) < 0)
			break;
	}
	if (committed == n) {
		r = 0;
		goto out;
	}
	/* A rename failed half-way: the ones already in place go back. */
	while (committed-- > 0) {
		int rr = roll_back(files[committed].path, existed[committed]);

		if (rr < 0 && err != NULL) {
			size_t used = strlen(err);

			snprintf(err + used, KS_CI_ERR_MAX - used, "; and %s could not be put back: %s",
				 files[committed].path, strerror(-rr));
		}
	}
out:
	while (staged-- > 0)
		ks_file_tmp_discard(&st[staged]);
	return r;
}
