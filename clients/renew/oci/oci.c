#include "clients/renew/oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "proto/file.h"

int oci_lifecycle(time_t not_before, time_t not_after, time_t now, long long renew_after_s,
		  long long lifetime_s, struct oci_status *st)
{
	long long end;

	memset(st, 0, sizeof(*st));
	if (renew_after_s <= 0 || lifetime_s <= 0 || renew_after_s > lifetime_s || not_after < not_before)
		return -EINVAL;
	end = (long long)not_before + lifetime_s;
	st->issued = not_before;
	st->expires_at = (long long)not_after < end ? not_after : (time_t)end;
	st->renew_at = (time_t)((long long)not_before + renew_after_s);
	if (st->renew_at > st->expires_at)
		st->renew_at = st->expires_at;
	st->age_s = (long long)now - (long long)not_before;
	if (now >= st->expires_at)
		st->phase = OCI_PHASE_EXPIRED;
	else if (now >= st->renew_at)
		st->phase = OCI_PHASE_RENEWAL_DUE;
	else
		st->phase = OCI_PHASE_CURRENT;
	return 0;
}

const char *oci_phase_name(enum oci_phase p)
{
	switch (p) {
	case OCI_PHASE_CURRENT:
		return "current";
	case OCI_PHASE_RENEWAL_DUE:
		return "renewal-due";
	case OCI_PHASE_EXPIRED:
		return "expired-rebootstrap-required";
	case OCI_PHASE_NOT_YET_VALID:
		return "not-yet-valid";
	}
	return "unknown";
}

long long oci_backoff_delay(unsigned failures, long long base_s, long long max_s, double jitter01)
{
	long long d = base_s;

	if (failures == 0 || base_s <= 0)
		return 0;
	if (max_s < base_s)
		max_s = base_s;
	for (unsigned i = 1; i < failures && d < max_s; i++)
		d *= 2;
	if (d > max_s)
		d = max_s;
	if (jitter01 < 0)
		jitter01 = 0;
	if (jitter01 > 1)
		jitter01 = 1;
	return d - d / 2 + (long long)((double)(d / 2) * jitter01);
}

/* Three numbers and a line of text: anything larger is not our file. */
#define OCI_BACKOFF_FILE_MAX ((size_t)64 * 1024)

int oci_backoff_load(const char *path, struct oci_backoff *b)
{
	json_error_t jerr;
	json_t *root = NULL, *f, *n, *e;
	struct stat st;
	uint8_t *text;
	size_t len;
	int r;

	memset(b, 0, sizeof(*b));
	memset(&st, 0, sizeof(st));
	r = ks_file_read(path, OCI_BACKOFF_FILE_MAX, 0, ks_file_keep_stat, &st, &text, &len);
	if (r == -ENOENT || r == -ENOMEM)
		return r == -ENOENT ? 0 : r;
	/* Not there to be read (the path) is an I/O error; what cannot be read as our file is a bad state. */
	if (r < 0)
		return st.st_mode == 0 && r != -EISDIR && r != -EBADFD ? -EIO : -EBADMSG;
	root = json_loadb((const char *)text, len, JSON_REJECT_DUPLICATES, &jerr);
	free(text);
	if (root == NULL || !json_is_object(root)) {
		r = -EBADMSG;
		goto out;
	}
	f = json_object_get(root, "failures");
	n = json_object_get(root, "next_attempt");
	e = json_object_get(root, "last_error");
	if (!json_is_integer(f) || json_integer_value(f) < 0 || json_integer_value(f) > 1000000 ||
	    !json_is_integer(n) || json_integer_value(n) < 0 || (e != NULL && !json_is_string(e))) {
		r = -EBADMSG;
		goto out;
	}
	b->failures = (unsigned)json_integer_value(f);
	b->next_attempt = (time_t)json_integer_value(n);
	if (e != NULL)
		snprintf(b->last_error, sizeof(b->last_error), "%s", json_string_value(e));
	r = 0;
out:
	if (r < 0)
		memset(b, 0, sizeof(*b));
	json_decref(root);
	return r;
}

int oci_backoff_save(const char *path, const struct oci_backoff *b)
{
	char *text = NULL, *line = NULL;
	json_t *root;
	int r;

	root = json_pack("{s:I, s:I, s:s}", "failures", (json_int_t)b->failures, "next_attempt",
			 (json_int_t)b->next_attempt, "last_error", b->last_error);
	if (root == NULL || (text = json_dumps(root, JSON_SORT_KEYS)) == NULL ||
	    asprintf(&line, "%s\n", text) < 0) {
		line = NULL;
		r = -ENOMEM;
		goto out;
	}
	r = ks_file_write_atomic(path, line, strlen(line), 0600, 0);
out:
	free(line);
	free(text);
	json_decref(root);
	return r;
}

void oci_rfc3339(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "?");
}

int oci_renew_body(const char *csr_pem, time_t validity_end, char **out)
{
	char when[32];
	json_t *root;

	*out = NULL;
	if (strlen(csr_pem) > OCI_CSR_MAX)
		return -EMSGSIZE;
	oci_rfc3339(validity_end, when, sizeof(when));
	root = json_pack("{s:s, s:s}", "csr", csr_pem, "timeCertValidityEnd", when);
	if (root == NULL)
		return -ENOMEM;
	/* Key order fixed: what the API's examples show, and a stable body to sign. */
	*out = json_dumps(root, JSON_PRESERVE_ORDER | JSON_COMPACT);
	json_decref(root);
	return *out != NULL ? 0 : -ENOMEM;
}

static int take_string(json_t *obj, const char *key, char **out, char *err, size_t err_len)
{
	json_t *v = json_object_get(obj, key);

	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_string(v) || json_string_length(v) == 0) {
		snprintf(err, err_len, "\"%s\" is not a non-empty string", key);
		return -EBADMSG;
	}
	if ((*out = strdup(json_string_value(v))) == NULL)
		return -ENOMEM;
	return 0;
}

int oci_renew_answer_parse(const char *body, size_t len, struct oci_renew_answer *a, char *err,
			   size_t err_len)
{
	json_error_t jerr;
	json_t *root = NULL, *det;
	int r;

	memset(a, 0, sizeof(*a));
	snprintf(err, err_len, "%s", "");
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL || !json_is_object(root)) {
		snprintf(err, err_len, "the answer is not a JSON object");
		r = -EBADMSG;
		goto out;
	}
	det = json_object_get(root, "certificateDetails");
	if (det != NULL && !json_is_null(det)) {
		if (!json_is_object(det)) {
			snprintf(err, err_len, "\"certificateDetails\" is not an object");
			r = -EBADMSG;
			goto out;
		}
		if ((r = take_string(det, "certificateId", &a->certificate_id, err, err_len)) < 0)
			goto out;
	}
	if ((r = take_string(root, "certificatePem", &a->certificate_pem, err, err_len)) < 0 ||
	    (r = take_string(root, "certChainPem", &a->chain_pem, err, err_len)) < 0)
		goto out;
	if (a->certificate_id == NULL && a->certificate_pem == NULL) {
		snprintf(err, err_len, "the answer has neither certificateDetails.certificateId nor certificatePem");
		r = -EBADMSG;
		goto out;
	}
	r = 0;
out:
	if (r < 0)
		oci_renew_answer_free(a);
	json_decref(root);
	return r;
}

void oci_renew_answer_free(struct oci_renew_answer *a)
{
	if (a == NULL)
		return;
	free(a->certificate_id);
	free(a->certificate_pem);
	free(a->chain_pem);
	memset(a, 0, sizeof(*a));
}

/* Copy at most @max printable characters of @s into @buf, '?' for the others. */
static void printable(const char *s, size_t n, char *buf, size_t buf_len)
{
	size_t o = 0;

	for (size_t i = 0; i < n && s[i] != '\0' && s[i] != '\n' && o + 1 < buf_len; i++)
		buf[o++] = (unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f ? '?' : s[i];
	buf[o] = '\0';
}

void oci_error_text(const char *body, size_t len, char *buf, size_t buf_len)
{
	json_error_t jerr;
	json_t *root = NULL, *c, *m;
	char code[96], msg[320];

	if (buf_len == 0)
		return;
	buf[0] = '\0';
	if (body == NULL || len == 0) {
		snprintf(buf, buf_len, "(empty body)");
		return;
	}
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	c = json_object_get(root, "code");
	m = json_object_get(root, "message");
	if (json_is_string(c) || json_is_string(m)) {
		printable(json_is_string(c) ? json_string_value(c) : "?", 95, code, sizeof(code));
		printable(json_is_string(m) ? json_string_value(m) : "", 319, msg, sizeof(msg));
		snprintf(buf, buf_len, "%s: %s", code, msg);
	} else {
		printable(body, len < 200 ? len : 200, msg, sizeof(msg));
		snprintf(buf, buf_len, "\"%s\"", msg);
	}
	json_decref(root);
}

static unsigned rd16(const unsigned char *p)
{
	return (unsigned)p[0] | (unsigned)p[1] << 8;
}

static unsigned long rd32(const unsigned char *p)
{
	return (unsigned long)p[0] | (unsigned long)p[1] << 8 | (unsigned long)p[2] << 16 |
	       (unsigned long)p[3] << 24;
}

int oci_zip_check(const unsigned char *data, size_t len, char *err, size_t err_len)
{
	size_t min_start;

	if (len > OCI_TOKEN_ZIP_MAX) {
		snprintf(err, err_len, "larger than %zu bytes: not an exported session token", OCI_TOKEN_ZIP_MAX);
		return -EMSGSIZE;
	}
	if (len < 22 + 30 || memcmp(data, "PK\x03\x04", 4) != 0) {
		snprintf(err, err_len, "not a zip archive (no local file header at the start)");
		return -EBADMSG;
	}
	/* The end record is in the last 22 + 65535 bytes (its comment is at most 64 KiB). */
	min_start = len > 22 + 65535 ? len - 22 - 65535 : 0;
	for (size_t i = len - 22 + 1; i-- > min_start;) {
		unsigned long cd_size, cd_off;

		if (memcmp(data + i, "PK\x05\x06", 4) != 0 || i + 22 + rd16(data + i + 20) != len)
			continue;
		cd_size = rd32(data + i + 12);
		cd_off = rd32(data + i + 16);
		if (rd16(data + i + 10) == 0 || cd_off > i || cd_size > i - cd_off ||
		    memcmp(data + cd_off, "PK\x01\x02", 4) != 0) {
			snprintf(err, err_len, "a damaged zip archive (central directory out of place)");
			return -EBADMSG;
		}
		return 0;
	}
	snprintf(err, err_len, "a truncated zip archive (no end of central directory)");
	return -EBADMSG;
}

static int boundary_ok(const char *b)
{
	size_t n = b != NULL ? strlen(b) : 0;

	if (n == 0 || n > 70)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((b[i] >= 'a' && b[i] <= 'z') || (b[i] >= 'A' && b[i] <= 'Z') || (b[i] >= '0' && b[i] <= '9') ||
		      strchr("'()+_,-./:=?", b[i]) != NULL))
			return 0;
	return 1;
}

int oci_multipart(const char *boundary, const char *filename, const unsigned char *zip, size_t zip_len,
		  const char *infrastructure_id, unsigned char **out, size_t *out_len)
{
	char head1[512], head2[512], tail[128];
	int n1, n2, n3;
	unsigned char *buf;
	size_t total, o = 0;

	*out = NULL;
	*out_len = 0;
	if (!boundary_ok(boundary) || filename == NULL || filename[0] == '\0' || strpbrk(filename, "\"\r\n") != NULL ||
	    strlen(filename) > 255 || infrastructure_id == NULL || strpbrk(infrastructure_id, "\r\n") != NULL ||
	    strlen(infrastructure_id) > 255 || (zip == NULL && zip_len != 0))
		return -EINVAL;
	/* The boundary must not occur in the data it delimits. */
	if (memmem(zip, zip_len, boundary, strlen(boundary)) != NULL || strstr(infrastructure_id, boundary) != NULL)
		return -EINVAL;
	n1 = snprintf(head1, sizeof(head1), "--%s\r\nContent-Disposition: form-data; name=\"file\"; "
		      "filename=\"%s\"\r\nContent-Type: application/zip\r\n\r\n", boundary, filename);
	n2 = snprintf(head2, sizeof(head2), "\r\n--%s\r\nContent-Disposition: form-data; "
		      "name=\"infrastructure_id\"\r\nContent-Type: text/plain\r\n\r\n", boundary);
	n3 = snprintf(tail, sizeof(tail), "\r\n--%s--\r\n", boundary);
	if (n1 <= 0 || n2 <= 0 || n3 <= 0 || (size_t)n1 >= sizeof(head1) || (size_t)n2 >= sizeof(head2) ||
	    (size_t)n3 >= sizeof(tail))
		return -EINVAL;
	total = (size_t)n1 + zip_len + (size_t)n2 + strlen(infrastructure_id) + (size_t)n3;
	if ((buf = malloc(total)) == NULL)
		return -ENOMEM;
	memcpy(buf + o, head1, (size_t)n1);
	o += (size_t)n1;
	if (zip_len > 0)
		memcpy(buf + o, zip, zip_len);
	o += zip_len;
	memcpy(buf + o, head2, (size_t)n2);
	o += (size_t)n2;
	memcpy(buf + o, infrastructure_id, strlen(infrastructure_id));
	o += strlen(infrastructure_id);
	memcpy(buf + o, tail, (size_t)n3);
	*out = buf;
	*out_len = total;
	return 0;
}

int oci_dns_name_check(const char *name, char *err, size_t err_len)
{
	size_t len = strlen(name), label = 0, labels = 0;

	if (len == 0) {
		snprintf(err, err_len, "empty: a host name is needed");
		return -EINVAL;
	}
	if (len > 253) {
		snprintf(err, err_len, "longer than 253 bytes: not a host name");
		return -EINVAL;
	}
	for (size_t i = 0; i <= len; i++) {
		char c = name[i];

		if (c == '.' || c == '\0') {
			if (label == 0) {
				snprintf(err, err_len, "an empty label (a leading, trailing or doubled dot)");
				return -EINVAL;
			}
			if (name[i - 1] == '-') {
				snprintf(err, err_len, "a label ends with '-'");
				return -EINVAL;
			}
			labels++;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-')) {
			snprintf(err, err_len, "only letters, digits, '-' and '.' make a host name");
			return -EINVAL;
		}
		if (label == 0 && c == '-') {
			snprintf(err, err_len, "a label starts with '-'");
			return -EINVAL;
		}
		if (++label > 63) {
			snprintf(err, err_len, "a label longer than 63 bytes");
			return -EINVAL;
		}
	}
	if (labels < 2) {
		snprintf(err, err_len, "a single label: a fully qualified name is needed");
		return -EINVAL;
	}
	return 0;
}

int oci_rps_url(const char *host, char *url, size_t url_len, char *err, size_t err_len)
{
	if (oci_dns_name_check(host, err, err_len) < 0)
		return -EINVAL;
	if (strncasecmp(host, "rps.", 4) != 0) {
		snprintf(err, err_len, "give the RPS host name as the Roving Edge steps write it, rps.<FQDN>: it is "
			 "used as given (did you mean rps.%s?)", host);
		return -EINVAL;
	}
	if ((size_t)snprintf(url, url_len, "https://%s", host) >= url_len) {
		snprintf(err, err_len, "too long");
		return -EINVAL;
	}
	return 0;
}
