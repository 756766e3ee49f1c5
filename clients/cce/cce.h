/*
 * Huawei Cloud CCE credential rotation, the parts that need no network:
 * IDs and URLs checked, the rotatecredentials body built, CCE's answers
 * (job id, the two error shapes, job status) parsed. keysvc-cce.c does
 * the I/O; these are unit-tested alone (tests/cce/test_cce.c).
 *
 * Every error text written here is one printable line, bounded, and never
 * holds a request body: the body of a "custom" rotation carries a private
 * key, and the caller's token is never passed in at all.
 */
#ifndef KEYSVC_CLIENTS_CCE_H
#define KEYSVC_CLIENTS_CCE_H

#include <stddef.h>
#include <stdint.h>

#define CCE_ERR_MAX 512
/* Project, cluster and job IDs: CCE's are 32 hex digits or UUIDs. */
#define CCE_ID_MAX 64
/* certificateExpirationTime, hours (366 days); CCE's default is 24. */
#define CCE_EXPIRATION_MAX 8784L
/* Each of ca, cert, privateKey of certContent, before base64. */
#define CCE_CUSTOM_FILE_MAX ((size_t)1024 * 1024)
/* An endpoint URL, "https://host[:port]". */
#define CCE_ENDPOINT_MAX 256

enum cce_component {
	CCE_COMPONENT_ALL,            /* "all": the cluster's certificates */
	CCE_COMPONENT_SA_CONTROLLER,  /* "service-account-controller": the SA token signing cert */
	CCE_COMPONENT_CUSTOM,         /* "custom": certContent from the operator (authenticating proxy) */
};

enum cce_phase {
	CCE_PHASE_PENDING,            /* Initializing, Running (and Pending, Waiting) */
	CCE_PHASE_SUCCESS,
	CCE_PHASE_FAILED,
};

/* "all" etc. to the enum. 0, or -EINVAL for any other word (case matters, as for CCE). */
int cce_component_parse(const char *s, enum cce_component *out);

/* The wire name of @c. */
const char *cce_component_name(enum cce_component c);

/*
 * 1 if @s is an ID that may go into a URL path as is: 1..CCE_ID_MAX of
 * [A-Za-z0-9-]. Anything else (a '/', "..", '%', '?') could reach another
 * API, so it is refused before a URL is made. NULL gives 0.
 */
int cce_id_ok(const char *s);

/*
 * 1 if @s is "https://HOST[:PORT]" with an optional single trailing '/':
 * at most CCE_ENDPOINT_MAX characters, HOST of [A-Za-z0-9.-] or an IPv6
 * literal in brackets, no user info, path, query or fragment. The scheme
 * is compared without case. http:// and everything else give 0.
 */
int cce_endpoint_ok(const char *s);

/*
 * "ENDPOINT/api/v3/projects/P/clusters/C/rotatecredentials" and
 * "ENDPOINT/api/v3/projects/P/jobs/J" (a trailing '/' of @endpoint is
 * dropped). malloc'd; NULL if an argument fails cce_endpoint_ok or
 * cce_id_ok, or on out of memory.
 */
char *cce_rotate_url(const char *endpoint, const char *project_id, const char *cluster_id);
char *cce_job_url(const char *endpoint, const char *project_id, const char *job_id);

/* The custom certificate material: raw file bytes, not NUL-terminated. */
struct cce_custom {
	const uint8_t *ca;
	size_t ca_len;
	const uint8_t *cert;
	size_t cert_len;
	const uint8_t *key;
	size_t key_len;
};

/*
 * The rotatecredentials body:
 *   {"component":"C"[,"certificateExpirationTime":N][,"certContent":{"ca":B64,
 *    "cert":B64,"privateKey":B64}]}
 * @expiration_hours < 0 leaves certificateExpirationTime out (the server
 * then uses 24 h); otherwise it must be 0..CCE_EXPIRATION_MAX. @custom is
 * required for CCE_COMPONENT_CUSTOM (all three parts non-empty, each at
 * most CCE_CUSTOM_FILE_MAX) and must be NULL otherwise.
 *
 * The body is built by hand rather than with jansson so that every copy of
 * the key's base64 is under our control: the intermediate ones are wiped
 * here, and *@out (NUL-terminated, *@out_len bytes) must be released with
 * OPENSSL_clear_free(*out, *out_len).
 *
 * 0, or -EINVAL (with the reason in @err, CCE_ERR_MAX bytes), -ENOMEM.
 */
int cce_rotate_body(enum cce_component component, long expiration_hours, const struct cce_custom *custom,
		    char **out, size_t *out_len, char *err);

/*
 * The jobid of a 2xx answer to rotatecredentials ({"jobid": "..."}) into
 * @jobid (at least CCE_ID_MAX + 1 bytes). The job id goes into the URL of
 * the job query, so it must pass cce_id_ok. 0, or -EBADMSG (not JSON, no
 * jobid, not a string, not an ID) with the reason in @err.
 */
int cce_parse_jobid(const char *body, size_t len, char *jobid, char *err);

/*
 * CCE's code and message from an error body, either shape or both:
 *   {"errorCode": "CCE.01400001", "errorMessage": "..."}
 *   {"error_code": "APIGW.0301", "error_msg": "..."}
 * CCE's own errors carry both pairs, the generic class in errorCode/
 * errorMessage and the specific reason in error_code/error_msg: then
 * @code is error_code and @msg is "error_msg; errorCode: errorMessage"
 * (the second pair left out when it only repeats the first).
 * @code and @msg get printable text (control characters replaced, cut at
 * @code_len / @msg_len with "..."). 0, or -EBADMSG if @body is not JSON
 * or has neither shape (then both are "").
 */
int cce_parse_error(const char *body, size_t len, char *code, size_t code_len, char *msg, size_t msg_len);

/*
 * One line for a non-2xx answer, e.g.
 *   "CCE refused the rotation: CCE.01400001: bad component (HTTP 400)"
 *   "CCE refused the rotation: the token is invalid or expired: APIGW.0301: ... (HTTP 401)"
 * @what is "the rotation" or "the job query". 401, 403 and 404 get their
 * usual meaning in words before CCE's own code and message; a body in
 * neither shape is quoted (its first line, printable, at most 120
 * characters). Always NUL-terminates @buf (@len > 0).
 */
void cce_format_error(const char *what, long status, const char *body, size_t len, char *buf, size_t buflen);

/*
 * The phase of GET .../jobs/{id}. The field path is not documented, so
 * these are accepted, first match wins:
 *   {"status": {"phase": "Success", "reason": "..."}, ...}   (also with "spec", "metadata")
 *   {"status": "Success"}
 *   {"phase": "Success"}
 * Phases are compared without case: Success; Failed; Initializing,
 * Running, Pending, Waiting are CCE_PHASE_PENDING. The reason of a failed
 * job (status.reason, else status.message, else top-level "reason" or
 * "message") goes to @reason (printable, may be "").
 * @phase_text gets the phase as CCE wrote it (printable, for messages).
 * 0, or -EBADMSG (not JSON, no phase, an unknown phase) with @err set.
 */
int cce_parse_job(const char *body, size_t len, enum cce_phase *phase, char *phase_text, size_t phase_len,
		  char *reason, size_t reason_len, char *err);

/*
 * Local checks of the custom files, so that a mistake is found before
 * anything reaches CCE: the bytes must parse with OpenSSL as an X.509
 * certificate (PEM, first of a bundle, or DER), and as an unencrypted
 * private key (PEM or DER; CCE takes no passphrase). Nothing of the key
 * goes into @err. cce_check_pair: the certificate is for the key.
 * 0, or -EBADMSG / -EKEYREJECTED (pair) with the reason in @err.
 */
int cce_check_cert(const uint8_t *data, size_t len, char *err);
int cce_check_key(const uint8_t *data, size_t len, char *err);
int cce_check_pair(const uint8_t *cert, size_t cert_len, const uint8_t *key, size_t key_len, char *err);

#endif
