#include "clients/cce/cce.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "proto/b64.h"

static const char *const component_names[] = {
	[CCE_COMPONENT_ALL] = "all",
	[CCE_COMPONENT_SA_CONTROLLER] = "service-account-controller",
	[CCE_COMPONENT_CUSTOM] = "custom",
};

static void set_err(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(char *err, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(err, CCE_ERR_MAX, fmt, ap);
	va_end(ap);
}

/* Printable ASCII copy of @src (@n bytes), cut with "..." when it does not fit. */
static void printable(char *dst, size_t dst_len, const char *src, size_t n)
{
	size_t o = 0, i;

	if (dst_len == 0)
		return;
	for (i = 0; i < n && src[i] != '\0' && o + 1 < dst_len; i++) {
		unsigned char c = (unsigned char)src[i];

		/* A server's text must not be able to forge lines or escape sequences on a terminal. */
		dst[o++] = c >= 0x20 && c < 0x7f ? (char)c : c == '\n' || c == '\r' || c == '\t' ? ' ' : '?';
	}
	dst[o] = '\0';
	if (i < n && src[i] != '\0' && dst_len >= 4) {
		o = o > dst_len - 4 ? dst_len - 4 : o;
		memcpy(dst + o, "...", 4);
	}
}

int cce_component_parse(const char *s, enum cce_component *out)
{
	for (size_t i = 0; i < sizeof(component_names) / sizeof(component_names[0]); i++) {
		if (s != NULL && strcmp(s, component_names[i]) == 0) {
			*out = (enum cce_component)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *cce_component_name(enum cce_component c)
{
	return (size_t)c < sizeof(component_names) / sizeof(component_names[0]) ? component_names[c] : "?";
}

int cce_id_ok(const char *s)
{
	size_t n;

	if (s == NULL)
		return 0;
	for (n = 0; s[n] != '\0'; n++) {
		char c = s[n];

		if (n == CCE_ID_MAX)
			return 0;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
			return 0;
	}
	return n > 0;
}

int cce_endpoint_ok(const char *s)
{
	const char *p, *end;
	size_t n;

	if (s == NULL || (n = strlen(s)) > CCE_ENDPOINT_MAX || strncasecmp(s, "https://", 8) != 0)
		return 0;
	p = s + 8;
	end = s + n;
	if (end > p && end[-1] == '/')
		end--;
	if (p == end)
		return 0;
	if (*p == '[') {
		/* IPv6 literal: hex digits, ':' and '.' up to the bracket. */
		for (p++; p < end && *p != ']'; p++)
			if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F') ||
			      *p == ':' || *p == '.'))
				return 0;
		if (p == end || p == s + 9)
			return 0;
		p++;
	} else {
		const char *h = p;

		for (; p < end && *p != ':'; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
			      *p == '.' || *p == '-'))
				return 0;
		if (p == h)
			return 0;
	}
	if (p == end)
		return 1;
	if (*p != ':' || end - p < 2 || end - p > 6)
		return 0;
	for (p++; p < end; p++)
		if (*p < '0' || *p > '9')
			return 0;
	return 1;
}

/* @mid is "clusters" or "jobs"; @tail is "/rotatecredentials" or "". */
static char *make_url(const char *endpoint, const char *project_id, const char *mid, const char *id,
		      const char *tail)
{
	char *url = NULL;
	size_t n;

	if (!cce_endpoint_ok(endpoint) || !cce_id_ok(project_id) || !cce_id_ok(id))
		return NULL;
	n = strlen(endpoint);
	if (endpoint[n - 1] == '/')
		n--;
	if (asprintf(&url, "%.*s/api/v3/projects/%s/%s/%s%s", (int)n, endpoint, project_id, mid, id, tail) < 0)
		return NULL;
	return url;
}

char *cce_rotate_url(const char *endpoint, const char *project_id, const char *cluster_id)
{
	return make_url(endpoint, project_id, "clusters", cluster_id, "/rotatecredentials");
}

char *cce_job_url(const char *endpoint, const char *project_id, const char *job_id)
{
	return make_url(endpoint, project_id, "jobs", job_id, "");
}

/* ---- the request body ---- */

/* Appends to a buffer sized in advance: an overflow is a bug, reported as -EINVAL. */
struct out {
	char *buf;
	size_t len, cap;
};

static int put(struct out *o, const char *s, size_t n)
{
	if (n > o->cap - o->len - 1)
		return -1;
	memcpy(o->buf + o->len, s, n);
	o->len += n;
	o->buf[o->len] = '\0';
	return 0;
}

static int put_str(struct out *o, const char *s)
{
	return put(o, s, strlen(s));
}

/* @prefix, then "base64 of data"; the base64 copy is wiped once placed. */
static int put_b64(struct out *o, const char *prefix, const uint8_t *data, size_t len)
{
	char *b64 = NULL;
	int r;

	if (ks_b64_encode(data, len, &b64) != 0)
		return -ENOMEM;
	r = put_str(o, prefix) || put_str(o, b64) || put_str(o, "\"") ? -EINVAL : 0;
	OPENSSL_clear_free(b64, strlen(b64));
	return r;
}

int cce_rotate_body(enum cce_component component, long expiration_hours, const struct cce_custom *custom,
		    char **out, size_t *out_len, char *err)
{
	struct out o = { NULL, 0, 0 };
	char num[64];
	int r;

	*out = NULL;
	*out_len = 0;
	if ((size_t)component >= sizeof(component_names) / sizeof(component_names[0])) {
		set_err(err, "unknown component");
		return -EINVAL;
	}
	if (expiration_hours > CCE_EXPIRATION_MAX) {
		set_err(err, "certificateExpirationTime must be 0..%ld hours", CCE_EXPIRATION_MAX);
		return -EINVAL;
	}
	if ((component == CCE_COMPONENT_CUSTOM) != (custom != NULL)) {
		set_err(err, component == CCE_COMPONENT_CUSTOM ? "component custom needs the CA, certificate and key"
			: "certificate content goes only with component custom");
		return -EINVAL;
	}
	if (custom != NULL) {
		const size_t lens[3] = { custom->ca_len, custom->cert_len, custom->key_len };
		const uint8_t *data[3] = { custom->ca, custom->cert, custom->key };
		static const char *const what[3] = { "the CA", "the certificate", "the private key" };

		for (int i = 0; i < 3; i++) {
			if (data[i] == NULL || lens[i] == 0) {
				set_err(err, "%s is empty", what[i]);
				return -EINVAL;
			}
			if (lens[i] > CCE_CUSTOM_FILE_MAX) {
				set_err(err, "%s is over %zu bytes (CCE's limit)", what[i], CCE_CUSTOM_FILE_MAX);
				return -EINVAL;
			}
		}
	}
	/* Fixed text, the number, and three base64 strings of at most 4/3 of 1 MiB. */
	o.cap = 256;
	if (custom != NULL)
		o.cap += 4 * ((custom->ca_len + 2) / 3 + (custom->cert_len + 2) / 3 + (custom->key_len + 2) / 3);
	if ((o.buf = malloc(o.cap)) == NULL)
		return -ENOMEM;
	o.buf[0] = '\0';
	r = -EINVAL;
	if (put_str(&o, "{\"component\":\"") || put_str(&o, component_names[component]) || put_str(&o, "\""))
		goto out;
	if (expiration_hours >= 0) {
		snprintf(num, sizeof(num), ",\"certificateExpirationTime\":%ld", expiration_hours);
		if (put_str(&o, num))
			goto out;
	}
	if (custom != NULL &&
	    ((r = put_b64(&o, ",\"certContent\":{\"ca\":\"", custom->ca, custom->ca_len)) != 0 ||
	     (r = put_b64(&o, ",\"cert\":\"", custom->cert, custom->cert_len)) != 0 ||
	     (r = put_b64(&o, ",\"privateKey\":\"", custom->key, custom->key_len)) != 0 ||
	     (r = -EINVAL, put_str(&o, "}"))))
		goto out;
	r = -EINVAL;
	if (put_str(&o, "}"))
		goto out;
	*out = o.buf;
	*out_len = o.len;
	o.buf = NULL;
	r = 0;
out:
	if (r == -EINVAL)
		set_err(err, "internal error: the request body does not fit its buffer");
	if (o.buf != NULL)
		OPENSSL_clear_free(o.buf, o.cap);
	return r;
}

/* ---- answers ---- */

static json_t *load_object(const char *body, size_t len)
{
	json_t *j;

	if (body == NULL)
		return NULL;
	j = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
	if (j != NULL && !json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

int cce_parse_jobid(const char *body, size_t len, char *jobid, char *err)
{
	json_t *j = load_object(body, len), *v;
	int r = -EBADMSG;

	jobid[0] = '\0';
	if (j == NULL) {
		set_err(err, "the answer is not a JSON object");
		goto out;
	}
	v = json_object_get(j, "jobid");
	if (!json_is_string(v)) {
		set_err(err, "the answer has no jobid string");
		goto out;
	}
	if (!cce_id_ok(json_string_value(v))) {
		set_err(err, "the jobid is not 1..%d of A-Z a-z 0-9 -", CCE_ID_MAX);
		goto out;
	}
	memcpy(jobid, json_string_value(v), strlen(json_string_value(v)) + 1);
	r = 0;
out:
	json_decref(j);
	return r;
}

static void copy_json_text(json_t *v, char *dst, size_t dst_len)
{
	const char *s = json_string_value(v);

	if (s != NULL)
		printable(dst, dst_len, s, json_string_length(v));
	else if (json_is_integer(v))
		snprintf(dst, dst_len, "%lld", (long long)json_integer_value(v));
	else if (dst_len > 0)
		dst[0] = '\0';
}

int cce_parse_error(const char *body, size_t len, char *code, size_t code_len, char *msg, size_t msg_len)
{
	json_t *j = load_object(body, len), *c, *m, *gc, *gm;
	int r = -EBADMSG;

	if (code_len > 0)
		code[0] = '\0';
	if (msg_len > 0)
		msg[0] = '\0';
	if (j == NULL)
		return r;
	/* CCE's own answers carry both pairs: errorCode/errorMessage is the generic
	 * class (CCE.01404001 "Resource not found"), error_code/error_msg says what
	 * is actually wrong (CCE_CM.0004, the cluster). */
	c = json_object_get(j, "error_code");
	m = json_object_get(j, "error_msg");
	gc = json_object_get(j, "errorCode");
	gm = json_object_get(j, "errorMessage");
	if (!json_is_string(c) && !json_is_integer(c) && !json_is_string(m)) {
		c = gc;
		m = gm;
		gc = gm = NULL;
	}
	if ((json_is_string(c) || json_is_integer(c)) || json_is_string(m)) {
		copy_json_text(c, code, code_len);
		copy_json_text(m, msg, msg_len);
		if ((json_is_string(gc) || json_is_integer(gc) || json_is_string(gm)) && msg_len > 0) {
			char gcode[64], gmsg[256], both[sizeof(gcode) + sizeof(gmsg) + 4];
			size_t used = strlen(msg);

			copy_json_text(gc, gcode, sizeof(gcode));
			copy_json_text(gm, gmsg, sizeof(gmsg));
			snprintf(both, sizeof(both), "%s%s%s", gcode, gcode[0] && gmsg[0] ? ": " : "", gmsg);
			/* A gateway may repeat one pair under both spellings: say it once. */
			if (strcmp(gcode, code) != 0 || strcmp(gmsg, msg) != 0)
				snprintf(msg + used, msg_len - used, "%s%s", used > 0 ? "; " : "", both);
		}
		r = 0;
	}
	json_decref(j);
	return r;
}

static const char *status_meaning(long status)
{
	switch (status) {
	case 401: return "the token is invalid or expired";
	case 403: return "the token's user may not rotate this cluster's credentials";
	case 404: return "no such project or cluster";
	default: return NULL;
	}
}

void cce_format_error(const char *what, long status, const char *body, size_t len, char *buf, size_t buflen)
{
	char code[64], msg[400], detail[480];
	const char *meaning = status_meaning(status);

	if (buflen == 0)
		return;
	if (cce_parse_error(body, len, code, sizeof(code), msg, sizeof(msg)) == 0)
		snprintf(detail, sizeof(detail), "%s%s%s", code, code[0] && msg[0] ? ": " : "", msg);
	else if (body != NULL && len > 0) {
		char first[121];

		printable(first, sizeof(first), body, strcspn(body, "\r\n") < len ? strcspn(body, "\r\n") : len);
		snprintf(detail, sizeof(detail), "\"%s\"", first);
	} else
		detail[0] = '\0';
	snprintf(buf, buflen, "CCE refused %s: %s%s%s (HTTP %ld)", what, meaning ? meaning : "",
		 meaning && detail[0] ? ": " : "", detail[0] || meaning ? detail : "no explanation", status);
}

static const char *const pending_phases[] = { "Initializing", "Running", "Pending", "Waiting" };

int cce_parse_job(const char *body, size_t len, enum cce_phase *phase, char *phase_text, size_t phase_len,
		  char *reason, size_t reason_len, char *err)
{
	json_t *j = load_object(body, len), *status, *p = NULL, *why = NULL;
	const char *s;
	int r = -EBADMSG;

	if (phase_len > 0)
		phase_text[0] = '\0';
	if (reason_len > 0)
		reason[0] = '\0';
	if (j == NULL) {
		set_err(err, "the job status is not a JSON object");
		goto out;
	}
	status = json_object_get(j, "status");
	if (json_is_object(status)) {
		p = json_object_get(status, "phase");
		why = json_object_get(status, "reason");
		if (!json_is_string(why) || json_string_length(why) == 0)
			why = json_object_get(status, "message");
	} else if (json_is_string(status)) {
		p = status;
	} else {
		p = json_object_get(j, "phase");
	}
	if (!json_is_string(why) || json_string_length(why) == 0)
		why = json_object_get(j, "reason");
	if (!json_is_string(why) || json_string_length(why) == 0)
		why = json_object_get(j, "message");
	if (!json_is_string(p)) {
		set_err(err, "the job status has no phase (looked for status.phase, status, phase)");
		goto out;
	}
	s = json_string_value(p);
	printable(phase_text, phase_len, s, json_string_length(p));
	if (json_is_string(why))
		printable(reason, reason_len, json_string_value(why), json_string_length(why));
	if (strcasecmp(s, "Success") == 0) {
		*phase = CCE_PHASE_SUCCESS;
	} else if (strcasecmp(s, "Failed") == 0) {
		*phase = CCE_PHASE_FAILED;
	} else {
		size_t i;

		for (i = 0; i < sizeof(pending_phases) / sizeof(pending_phases[0]); i++)
			if (strcasecmp(s, pending_phases[i]) == 0)
				break;
		if (i == sizeof(pending_phases) / sizeof(pending_phases[0])) {
			char shown[64];

			/* Guessing would be worse: an unknown final phase would be waited on until --max-wait. */
			printable(shown, sizeof(shown), s, json_string_length(p));
			set_err(err, "the job has an unknown phase \"%s\"", shown);
			goto out;
		}
		*phase = CCE_PHASE_PENDING;
	}
	r = 0;
out:
	json_decref(j);
	return r;
}

/* ---- local checks of the custom files ---- */

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

static X509 *parse_cert(const uint8_t *data, size_t len)
{
	const unsigned char *p = data;
	X509 *x = NULL;
	BIO *bio;

	if (len > CCE_CUSTOM_FILE_MAX)
		return NULL;
	if ((bio = BIO_new_mem_buf(data, (int)len)) != NULL) {
		x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
		BIO_free(bio);
	}
	if (x == NULL)
		x = d2i_X509(NULL, &p, (long)len);
	ERR_clear_error();
	return x;
}

static EVP_PKEY *parse_key(const uint8_t *data, size_t len, int *encrypted)
{
	const unsigned char *p = data;
	EVP_PKEY *k = NULL;
	BIO *bio;

	*encrypted = 0;
	if (len > CCE_CUSTOM_FILE_MAX)
		return NULL;
	/* The PEM markers of PKCS#8 and of the traditional formats, when encrypted. */
	if (memmem(data, len, "ENCRYPTED PRIVATE KEY", 21) != NULL || memmem(data, len, "Proc-Type: 4,ENCRYPTED", 22) != NULL) {
		*encrypted = 1;
		return NULL;
	}
	if ((bio = BIO_new_mem_buf(data, (int)len)) != NULL) {
		k = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
		BIO_free(bio);
	}
	if (k == NULL)
		k = d2i_AutoPrivateKey(NULL, &p, (long)len);
	/* OpenSSL's error queue is dropped unread: it can quote parts of the input. */
	ERR_clear_error();
	return k;
}

int cce_check_cert(const uint8_t *data, size_t len, char *err)
{
	X509 *x = parse_cert(data, len);

	if (x == NULL) {
		set_err(err, "not an X.509 certificate (PEM or DER)");
		return -EBADMSG;
	}
	X509_free(x);
	return 0;
}

int cce_check_key(const uint8_t *data, size_t len, char *err)
{
	int encrypted;
	EVP_PKEY *k = parse_key(data, len, &encrypted);

	if (k == NULL) {
		set_err(err, encrypted ? "the private key is encrypted; CCE takes only an unencrypted key"
			: "not a private key (PEM or DER)");
		return -EBADMSG;
	}
	EVP_PKEY_free(k);
	return 0;
}

int cce_check_pair(const uint8_t *cert, size_t cert_len, const uint8_t *key, size_t key_len, char *err)
{
	int encrypted, r = -EBADMSG;
	X509 *x = parse_cert(cert, cert_len);
	EVP_PKEY *k = parse_key(key, key_len, &encrypted);

	if (x == NULL || k == NULL) {
		set_err(err, x == NULL ? "not an X.509 certificate" : "not a private key");
		goto out;
	}
	if (EVP_PKEY_eq(X509_get0_pubkey(x), k) != 1) {
		set_err(err, "the certificate is not for this private key");
		r = -EKEYREJECTED;
		goto out;
	}
	r = 0;
out:
	ERR_clear_error();
	X509_free(x);
	EVP_PKEY_free(k);
	return r;
}
