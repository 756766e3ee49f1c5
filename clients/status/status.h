/*
 * `keysvc status`: the pure parts, kept apart so the unit tests can drive
 * them with certificates of chosen dates and a fake clock. The command
 * itself (files, keysvcd, output) is in statuscmd.c.
 *
 * Classes, in order of precedence (the first that applies wins):
 *
 *   removed      purple  in the inventory or configuration, but the certificate
 *                        file is gone, or keysvcd says its key is gone
 *   revoked      black   the CA's CRL (its signature checked against the CA) lists it
 *   push-failed  gray    the last renewal installed it but the reload hook or
 *                        the check of the served certificate failed
 *   expired      red     now is past notAfter, or before notBefore
 *   critical     orange  less than critical_days (10) days left
 *   warning      yellow  less than warning_days (30) days left, or the last
 *                        renewal failed (outcome "failed")
 *   notice       blue    less than notice_days (90) days left
 *   valid        green   anything else
 *   error        -       the certificate file exists but cannot be read as one
 *
 * "N days left" is notAfter - now < N * 86400 seconds; a certificate is
 * valid up to and including the second of its notAfter (RFC 5280).
 */
#ifndef KEYSVC_CLIENTS_STATUS_H
#define KEYSVC_CLIENTS_STATUS_H

#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

#include "clients/renew/common/certconf.h"
#include "clients/renew/common/inventory.h"
#include "proto/exitcode.h"

#define KS_STATUS_ERR_MAX 512

enum ks_class {
	KS_CLASS_VALID,
	KS_CLASS_NOTICE,
	KS_CLASS_WARNING,
	KS_CLASS_CRITICAL,
	KS_CLASS_EXPIRED,
	KS_CLASS_PUSH_FAILED,
	KS_CLASS_REVOKED,
	KS_CLASS_REMOVED,
	KS_CLASS_ERROR,
};

/* What is known about one certificate. */
struct ks_status_facts {
	X509 *cert;                 /* NULL: no file, or not a certificate */
	int file_missing;           /* the file does not exist */
	int key_missing;            /* keysvcd answered no-such-key (not: unreachable or denied) */
	int revoked;                /* listed by a CRL whose signature was checked */
	enum ks_inv_outcome outcome;
};

/*
 * The one rule, for every tool, for a certificate whose validity has not
 * begun: 1 if @now is before @cert's notBefore (it cannot be used yet),
 * else 0. ks_status_classify() classes it expired; keysvc-oci status says
 * "not yet valid" and exits as for expired.
 */
int ks_cert_not_yet_valid(const X509 *cert, time_t now);

enum ks_class ks_status_classify(const struct ks_status_facts *f, const struct ks_conf_thresholds *t,
				 time_t now);

/* "valid", "notice", ..., "error" (the names in --json and the Prometheus class label). */
const char *ks_class_name(enum ks_class c);

/* "green", "blue", "yellow", "orange", "red", "gray", "black", "purple", "none". */
const char *ks_class_colour(enum ks_class c);

/* The ANSI SGR sequence that shows the colour on a terminal ("" for error). */
const char *ks_class_ansi(enum ks_class c);

/* Whether the class needs someone's attention: everything but valid, notice and error. */
int ks_class_needs_attention(enum ks_class c);

/*
 * A removed certificate whose record has seen no renewal attempt (nor a
 * `keysvc track`) for this long is no longer shown or counted: an
 * enrollment given up long ago must not keep every run at exit 24.
 */
#define KS_STATUS_REMOVED_AGE_OUT_DAYS 30

/*
 * `keysvc status` and `keysvc verify` exit with proto/exitcode.h's
 * KS_EXIT_OK (nothing needs attention / every endpoint in sync),
 * KS_EXIT_ATTENTION (a class that needs attention / an endpoint out of
 * sync), KS_EXIT_INTERNAL (something could not be checked: a file, a
 * record, a CRL, keys while keysvcd cannot be reached; wins over
 * attention), KS_EXIT_USAGE or KS_EXIT_CONFIG.
 */
/* The exit code for @n classes and @errors problems: errors win, then attention. */
int ks_status_exit(const enum ks_class *classes, size_t n, size_t errors);

/*
 * @in as a Prometheus label value (text format 0.0.4): backslash, double
 * quote and newline escaped, bytes that are not UTF-8 replaced by U+FFFD.
 * Writes at most @len bytes with a NUL (truncating at a character) and
 * returns the length the whole escaped value needs, like snprintf().
 */
size_t ks_prom_escape(const char *in, char *out, size_t len);

/*
 * Whether @cert is revoked by the CRL in @crl_path (PEM or DER). The CRL
 * must be issued by @cert's issuer and its signature must verify with a
 * certificate of that name in @ca_file; otherwise nothing is concluded
 * (error). *@stale is set when the CRL's nextUpdate is before @now (it is
 * still used: an old list of revocations is still a list of revocations).
 * 0 with *@revoked set, or a negative errno with a reason in @err.
 */
int ks_crl_check(X509 *cert, const char *crl_path, const char *ca_file, time_t now, int *revoked,
		 int *stale, char *err);

#endif
