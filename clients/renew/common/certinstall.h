/*
 * Certificate checks and atomic installation, shared by the renewal
 * clients. A CA's answer is untrusted input: nothing is installed until it
 * is exactly one certificate, for the token key, chaining to the pinned CA,
 * currently valid and (on renewal) later than the one it replaces. The
 * file that was there stays, byte for byte, whenever anything fails, and
 * is kept as PATH.prev when a new one goes in.
 *
 * Errors are negative errno values with a one-line reason in @err (at
 * least KS_CI_ERR_MAX bytes), fit to print as is.
 */
#ifndef KEYSVC_CLIENTS_CERTINSTALL_H
#define KEYSVC_CLIENTS_CERTINSTALL_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#define KS_CI_ERR_MAX 512
/* Largest PEM document accepted from a CA or read from disk. */
#define KS_CI_PEM_MAX ((size_t)256 * 1024)

/*
 * Parse @pem (@len bytes, need not be NUL-terminated) as exactly one PEM
 * certificate, with nothing but whitespace around it. -EBADMSG if it is
 * anything else (garbage, a key, two certificates), -EMSGSIZE over
 * KS_CI_PEM_MAX.
 */
int ks_ci_parse_one(const char *pem, size_t len, X509 **out, char *err);

/*
 * Every certificate in a PEM bundle (at least one). -EBADMSG otherwise.
 * The messages ("no PEM certificate in it") leave naming the text, a CA's
 * answer or a local file, to the caller.
 */
int ks_ci_parse_bundle(const char *pem, size_t len, STACK_OF(X509) **out, char *err);

/*
 * Read a file of at most KS_CI_PEM_MAX bytes (proto/file's reader, with
 * this module's messages). *@out is NUL-terminated. -EINVAL not a regular
 * file, -EMSGSIZE too large, else the errno of open or read.
 */
int ks_ci_read_file(const char *path, char **out, size_t *len, char *err);

/* ks_ci_read_file() then ks_ci_parse_bundle(): the certificates of the PEM file @path. */
int ks_ci_load_bundle(const char *path, STACK_OF(X509) **out, char *err);

/* The public key in PEM (as keysvcd gives it). -EBADMSG if unreadable. */
int ks_ci_parse_pubkey(const char *pem, EVP_PKEY **out, char *err);

/* What a certificate from the CA must satisfy. Unset pointers are not checked. */
struct ks_ci_expect {
	EVP_PKEY *public_key;          /* the token key: the certificate must be for it */
	STACK_OF(X509) *trusted;       /* the pinned CA certificates: it must chain to one; each is
				        * an anchor, a pinned intermediate too */
	const char *common_name;       /* the subject's CN must equal this */
	const ASN1_TIME *later_than;   /* its notAfter must be strictly later (renewal) */
	time_t now;                    /* 0: time(NULL) */
};

/*
 * Check @cert against @exp: chain (X.509 path validation to a trusted
 * certificate, with the given untrusted @chain for intermediates, may be
 * NULL), validity at @exp->now, public key, CN, notAfter. 0 or
 * -EKEYREJECTED (another key), -EPERM (does not chain: any failure of the
 * path validation, an expired or not yet valid CA or intermediate
 * included), -ETIME (the chain verifies and only @cert itself is expired
 * or not yet valid), -EBADMSG (wrong CN), -ESTALE (not later than the
 * current one), with the reason in @err.
 */
int ks_ci_check(X509 *cert, STACK_OF(X509) *chain, const struct ks_ci_expect *exp, char *err);

/*
 * Which of @certs (a CA's bundle, an answer's CA certificates) the pinned
 * @anchors vouch for: each certificate that is one of @anchors, and each CA
 * certificate (basicConstraints CA:TRUE) that is currently valid and
 * verifies up to one of them (ks_ci_check's path validation at @now, 0:
 * time(NULL), with @certs and @pool, which may be NULL, as intermediates).
 * *@kept gets those, in the order of @certs, as new references (possibly
 * none). Returns how many of @certs were left out, with the subject of the
 * first of them in @err (empty when none), or -ENOMEM.
 */
int ks_ci_vouched(STACK_OF(X509) *certs, STACK_OF(X509) *anchors, STACK_OF(X509) *pool, time_t now,
		  STACK_OF(X509) **kept, char *err);

/* @certs as one PEM bundle, malloc'd and NUL-terminated (not counted in *@len). -ENOMEM. */
int ks_ci_pem_of(STACK_OF(X509) *certs, char **pem, size_t *len, char *err);

/*
 * Replace @path with @data atomically: a temporary file in the same
 * directory, written, fsync'd, given @mode, renamed over @path, directory
 * fsync'd (proto/file's writer, its failure to fsync the directory aside). When @path existed it is first hard-linked as @path.prev
 * (replacing an older .prev), so the previous version survives. On any
 * failure @path is untouched and the temporary file removed.
 */
int ks_ci_install(const char *path, const void *data, size_t len, mode_t mode, char *err);

/* One file of ks_ci_install_all(). */
struct ks_ci_file {
	const char *path;
	const void *data;
	size_t len;
	mode_t mode;
};

#define KS_CI_INSTALL_ALL_MAX 8

/*
 * ks_ci_install() of several files that belong together (a certificate,
 * its chain, its CA), all or none: every temporary file is written and
 * fsync'd first, so that a full disk or an unwritable directory fails
 * before anything is replaced; then each is renamed over its path, its
 * current version kept as .prev. Should a rename still fail, the files
 * already replaced are put back from their .prev (or removed if they did
 * not exist before), so that on any failure every path holds what it held
 * before (their older .prev versions are then gone). At most
 * KS_CI_INSTALL_ALL_MAX files; the error is that of the first failure.
 */
int ks_ci_install_all(const struct ks_ci_file *files, size_t n, char *err);

/*
 * Like ks_ci_install() but without keeping a .prev: for state that has no
 * use for an older version (inventory records, metrics files).
 */
int ks_ci_write_atomic(const char *path, const void *data, size_t len, mode_t mode, char *err);

/* Seconds from @now to @t (negative if @t is past). */
long long ks_ci_seconds_until(const ASN1_TIME *t, time_t now);

/* "2026-12-01 10:00:00 UTC" into @buf. */
void ks_ci_format_time(const ASN1_TIME *t, char *buf, size_t len);

#endif
