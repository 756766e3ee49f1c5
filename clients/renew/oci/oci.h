/*
 * The pure parts of keysvc-oci (no network, no keysvcd), kept apart so the
 * unit tests can drive them: the Roving Edge certificate lifecycle, the
 * retry backoff and its state file, and the renewCertificate documents.
 *
 * Lifecycle (the seed "Renewing a Certificate"): a certificate lasts 60
 * days from issue; once it is more than 30 days old a replacement is
 * requested; a certificate not renewed by its end expires and only a
 * re-bootstrap recovers. Both points are configurable.
 *
 * Errors are negative errno values.
 */
#ifndef KEYSVC_CLIENTS_OCI_OCI_H
#define KEYSVC_CLIENTS_OCI_OCI_H

#include <stddef.h>
#include <time.h>

#define OCI_DAY 86400LL
#define OCI_DEFAULT_RENEW_AFTER_S (30 * OCI_DAY)
#define OCI_DEFAULT_LIFETIME_S (60 * OCI_DAY)
/* The renewCertificate API refuses a CSR over 10240 characters. */
#define OCI_CSR_MAX 10240

enum oci_phase {
	OCI_PHASE_CURRENT = 0,        /* younger than the renewal point */
	OCI_PHASE_RENEWAL_DUE = 1,    /* past the renewal point, not yet expired */
	OCI_PHASE_EXPIRED = 2,        /* past its end: re-bootstrap required */
	/*
	 * Before its notBefore. Not set by oci_lifecycle(): keysvc-oci decides
	 * it with ks_cert_not_yet_valid() (clients/status/status.h), the rule
	 * keysvc status classes certificates by, and exits as for expired.
	 */
	OCI_PHASE_NOT_YET_VALID = 3,
};

struct oci_status {
	time_t issued;                /* the certificate's notBefore */
	time_t renew_at;              /* issued + renew_after, at most expires_at */
	time_t expires_at;            /* the earlier of notAfter and issued + lifetime */
	long long age_s;              /* now - issued (negative if not yet valid) */
	enum oci_phase phase;
};

/*
 * Where a certificate valid from @not_before to @not_after stands at @now,
 * with a renewal point @renew_after_s and a lifetime @lifetime_s after
 * issue. The certificate's own notAfter wins when it is earlier than the
 * lifetime says: past it the certificate is unusable whatever the policy.
 * -EINVAL if @renew_after_s is not in (0, @lifetime_s] or the times are
 * inverted.
 */
int oci_lifecycle(time_t not_before, time_t not_after, time_t now, long long renew_after_s,
		  long long lifetime_s, struct oci_status *st);

/* "current", "renewal-due", "expired-rebootstrap-required", "not-yet-valid". */
const char *oci_phase_name(enum oci_phase p);

/* ---- retry backoff, kept in a small JSON state file between runs ---- */

struct oci_backoff {
	unsigned failures;            /* consecutive failed renewals; 0: none */
	time_t next_attempt;          /* --when-due waits until then; 0: at once */
	char last_error[256];         /* the last failure's one-line reason */
};

/*
 * The delay after the @failures-th consecutive failure (>= 1): @base_s
 * doubled per earlier failure, capped at @max_s, then "equal jitter": half
 * of it fixed and half scaled by @jitter01 in [0, 1], so many devices that
 * failed together do not all come back at the same second.
 */
long long oci_backoff_delay(unsigned failures, long long base_s, long long max_s, double jitter01);

/*
 * Read @path into @b. A missing file is a clean state (0, all zero).
 * -EBADMSG for a file that is not our JSON (a broken state never blocks
 * renewal for long: the caller may treat it as clean), -EIO, -ENOMEM.
 */
int oci_backoff_load(const char *path, struct oci_backoff *b);

/* Write @b to @path atomically (temporary file, fsync, rename), mode 0600. */
int oci_backoff_save(const char *path, const struct oci_backoff *b);

/* ---- the renewCertificate documents ---- */

/*
 * The request body of POST /roverNodes/{id}/actions/renewCertificate:
 * {"csr": "<PEM>", "timeCertValidityEnd": "<RFC 3339 UTC of @validity_end>"}.
 * *@out is malloc'd. -EMSGSIZE for a CSR over OCI_CSR_MAX, -ENOMEM.
 */
int oci_renew_body(const char *csr_pem, time_t validity_end, char **out);

/*
 * What the answer to renewCertificate (or to a certificate bundle fetch)
 * carries. The Rover API answers {"roverNodeId", "certificateDetails":
 * {"certificateId", "certificateName"}}: the certificate itself is then
 * fetched from the Certificates service (GET
 * /20210224/certificateBundles/{certificateId}), whose answer holds
 * "certificatePem" and "certChainPem". A server that puts
 * "certificatePem" straight into the renewal answer is accepted too.
 */
struct oci_renew_answer {
	char *certificate_id;         /* NULL if absent */
	char *certificate_pem;        /* NULL if absent */
	char *chain_pem;              /* NULL if absent */
};

/*
 * Parse @body (@len bytes). At least one of certificate_id and
 * certificate_pem must be there. -EBADMSG (with a reason in @err, @err_len
 * bytes) for anything else: not JSON, duplicate keys, wrong types.
 */
int oci_renew_answer_parse(const char *body, size_t len, struct oci_renew_answer *a, char *err,
			   size_t err_len);

void oci_renew_answer_free(struct oci_renew_answer *a);

/*
 * The OCI error of a non-2xx answer: {"code": "...", "message": "..."} into
 * "CODE: MESSAGE" (control characters replaced), or the first line of a
 * non-JSON body quoted. Always NUL-terminates @buf.
 */
void oci_error_text(const char *body, size_t len, char *buf, size_t buf_len);

/* ---- re-bootstrap (the seed's steps 5 to 7) ---- */

/* The exported session token zip is small; anything bigger is not one. */
#define OCI_TOKEN_ZIP_MAX ((size_t)1024 * 1024)

/*
 * Check that @data (@len bytes) is a real zip archive: a local file header
 * at the start and an end-of-central-directory record whose central
 * directory lies inside the file. -EBADMSG (reason in @err) otherwise,
 * -EMSGSIZE over OCI_TOKEN_ZIP_MAX.
 */
int oci_zip_check(const unsigned char *data, size_t len, char *err, size_t err_len);

/*
 * The multipart/form-data body curl sends for
 *   -F 'file=@PATH;type=application/zip' -F 'infrastructure_id=ID;type=text/plain'
 * with @boundary (1..70 of [A-Za-z0-9'()+_,-./:=?], not in the data) and
 * @filename (the zip's base name, no '"', CR or LF). *@out and *@out_len get
 * the body (malloc'd, binary). -EINVAL, -ENOMEM.
 */
int oci_multipart(const char *boundary, const char *filename, const unsigned char *zip, size_t zip_len,
		  const char *infrastructure_id, unsigned char **out, size_t *out_len);

/*
 * Whether @name is a DNS host name as a URL may carry it: labels of 1 to
 * 63 letters, digits and hyphens (none at either end of a label), at most
 * 253 bytes in all, no empty label (so no leading, trailing or doubled
 * dot) and at least two labels. 0, or -EINVAL with the reason in @err.
 */
int oci_dns_name_check(const char *name, char *err, size_t err_len);

/*
 * The RPS base URL for --rps-fqdn @host: "https://" + @host, the host name
 * used as given. It must pass oci_dns_name_check() and have the form
 * rps.<FQDN> the Roving Edge steps give: earlier versions put "rps." in
 * front of the value themselves, so a value in that old form would now
 * name another host, and is refused rather than used. 0, or -EINVAL with
 * the reason in @err (@err_len bytes); @url gets at least 264 bytes.
 */
int oci_rps_url(const char *host, char *url, size_t url_len, char *err, size_t err_len);

/* "2026-12-01T10:00:00Z" into @buf (at least 32 bytes). */
void oci_rfc3339(time_t t, char *buf, size_t len);

#endif
