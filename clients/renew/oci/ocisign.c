#include "clients/renew/oci/ocisign.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "proto/wire.h"

static int has_ctl(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
			return 1;
	return 0;
}

/* "@a@b" in a new string (asprintf's pointer is undefined on failure; this is NULL). */
static char *cat2(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s = malloc(la + lb + 1);

	if (s != NULL) {
		memcpy(s, a, la);
		memcpy(s + la, b, lb + 1);
	}
	return s;
}

/* Base64 of @len bytes into a new string. */
static char *b64(const unsigned char *in, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out != NULL)
		EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

int oci_http_date(time_t t, char *buf, size_t len)
{
	struct tm tm;

	/* strftime's %a/%b follow the locale; HTTP wants the C names. */
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	int n;

	if (buf == NULL || len < OCI_DATE_MAX || gmtime_r(&t, &tm) == NULL)
		return -EINVAL;
	n = snprintf(buf, len, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
		     months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
	return n > 0 && (size_t)n < len ? 0 : -EINVAL;
}

int oci_url_split(const char *url, char **host, char **target)
{
	const char *a, *p;
	size_t n, hl;

	*host = *target = NULL;
	if (url == NULL || (n = strnlen(url, OCI_URL_MAX + 1)) > OCI_URL_MAX)
		return -EINVAL;
	if (strncasecmp(url, "https://", 8) != 0 || has_ctl(url) || strpbrk(url, " #") != NULL)
		return -EINVAL;
	a = url + 8;
	p = a + strcspn(a, "/?");
	hl = (size_t)(p - a);
	if (hl == 0 || hl >= OCI_HOST_MAX || memchr(a, '@', hl) != NULL)
		return -EINVAL;
	if ((*host = strndup(a, hl)) == NULL)
		return -ENOMEM;
	/* "https://h?x" has the query right after the host: the path is "/". */
	if (*p == '\0')
		*target = strdup("/");
	else if (*p == '?')
		*target = cat2("/", p);
	else
		*target = strdup(p);
	if (*target == NULL) {
		free(*host);
		*host = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* 1 for methods that sign the body headers, 0 for the others, -1 if not an HTTP token. */
static int body_method(const char *m)
{
	static const char *const with_body[] = { "POST", "PUT", "PATCH" };
	size_t n = m != NULL ? strlen(m) : 0;

	if (n == 0 || n > 16)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (!isalpha((unsigned char)m[i]))
			return -1;
	for (size_t i = 0; i < sizeof(with_body) / sizeof(with_body[0]); i++)
		if (strcasecmp(m, with_body[i]) == 0)
			return 1;
	return 0;
}

int oci_signing_string(const struct oci_request *rq, struct oci_signed *out)
{
	unsigned char md[32];
	char *host = NULL, *target = NULL, method[17], *b = NULL;
	size_t i;
	int r, n;

	oci_signed_free(out);
	if (rq == NULL || (out->has_body = body_method(rq->method)) < 0) {
		out->has_body = 0;
		return -EINVAL;
	}
	for (i = 0; rq->method[i] != '\0'; i++)
		method[i] = (char)tolower((unsigned char)rq->method[i]);
	method[i] = '\0';
	if ((r = oci_url_split(rq->url, &host, &target)) < 0)
		goto out;
	snprintf(out->host, sizeof(out->host), "%s", host);
	if (rq->date != NULL) {
		if (strlen(rq->date) >= sizeof(out->date) || has_ctl(rq->date) || rq->date[0] == '\0') {
			r = -EINVAL;
			goto out;
		}
		snprintf(out->date, sizeof(out->date), "%s", rq->date);
	} else if ((r = oci_http_date(time(NULL), out->date, sizeof(out->date))) < 0) {
		goto out;
	}
	if (out->has_body) {
		const char *ct = rq->content_type != NULL ? rq->content_type : "application/json";

		if (ct[0] == '\0' || strlen(ct) >= sizeof(out->content_type) || has_ctl(ct) ||
		    (rq->body == NULL && rq->body_len != 0)) {
			r = -EINVAL;
			goto out;
		}
		snprintf(out->content_type, sizeof(out->content_type), "%s", ct);
		snprintf(out->content_length, sizeof(out->content_length), "%zu", rq->body_len);
		if (EVP_Digest(rq->body != NULL ? rq->body : "", rq->body_len, md, NULL, EVP_sha256(), NULL) != 1 ||
		    (b = b64(md, sizeof(md))) == NULL) {
			r = -ENOMEM;
			goto out;
		}
		snprintf(out->content_sha256, sizeof(out->content_sha256), "%s", b);
		n = asprintf(&out->signing_string,
			     "date: %s\n(request-target): %s %s\nhost: %s\ncontent-length: %s\n"
			     "content-type: %s\nx-content-sha256: %s",
			     out->date, method, target, out->host, out->content_length, out->content_type,
			     out->content_sha256);
	} else {
		n = asprintf(&out->signing_string, "date: %s\n(request-target): %s %s\nhost: %s",
			     out->date, method, target, out->host);
	}
	if (n < 0) {
		out->signing_string = NULL;
		r = -ENOMEM;
		goto out;
	}
	r = 0;
out:
	free(host);
	free(target);
	free(b);
	return r;
}

static int key_id_ok(const char *k)
{
	size_t n = k != NULL ? strnlen(k, OCI_KEY_ID_MAX + 1) : 0;

	if (n == 0 || n > OCI_KEY_ID_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (k[i] <= 0x20 || k[i] >= 0x7f || k[i] == '"' || k[i] == '\\')
			return 0;
	return 1;
}

int oci_sign(const struct oci_request *rq, const char *key_id, oci_sign_fn fn, void *arg,
	     struct oci_signed *out)
{
	uint8_t *sig = NULL;
	size_t sig_len = 0, len;
	int r;

	if ((r = oci_signing_string(rq, out)) < 0)
		return r;
	len = strlen(out->signing_string);
	/* A URL of OCI_URL_MAX and the bounded headers are far below keysvcd's data limit. */
	if (!key_id_ok(key_id) || fn == NULL || len > KS_SIGN_DATA_MAX) {
		r = -EINVAL;
		goto out;
	}
	if ((r = fn(arg, (const uint8_t *)out->signing_string, len, &sig, &sig_len)) < 0)
		goto out;
	if (sig == NULL || sig_len == 0 || sig_len > OCI_SIG_MAX) {
		r = -EIO;
		goto out;
	}
	if ((out->signature_b64 = b64(sig, sig_len)) == NULL ||
	    asprintf(&out->authorization,
		     "Signature version=\"1\",headers=\"date (request-target) host%s\",keyId=\"%s\","
		     "algorithm=\"rsa-sha256\",signature=\"%s\"",
		     out->has_body ? " content-length content-type x-content-sha256" : "", key_id,
		     out->signature_b64) < 0) {
		out->authorization = NULL;
		r = -ENOMEM;
		goto out;
	}
	r = 0;
out:
	free(sig);
	return r;
}

const char *const *oci_headers(struct oci_signed *s)
{
	size_t n = 0;
	int ok = 1;

	if (s == NULL || s->authorization == NULL)
		return NULL;
	for (size_t i = 0; i <= OCI_HEADERS_MAX; i++) {
		free(s->header_lines[i]);
		s->header_lines[i] = NULL;
	}
	s->header_lines[n++] = cat2("date: ", s->date);
	s->header_lines[n++] = cat2("host: ", s->host);
	if (s->has_body) {
		s->header_lines[n++] = cat2("content-length: ", s->content_length);
		s->header_lines[n++] = cat2("content-type: ", s->content_type);
		s->header_lines[n++] = cat2("x-content-sha256: ", s->content_sha256);
	}
	s->header_lines[n++] = cat2("authorization: ", s->authorization);
	for (size_t i = 0; i < n; i++)
		ok &= s->header_lines[i] != NULL;
	if (!ok)
		return NULL;
	return (const char *const *)s->header_lines;
}

void oci_signed_free(struct oci_signed *s)
{
	if (s == NULL)
		return;
	free(s->signing_string);
	free(s->signature_b64);
	free(s->authorization);
	for (size_t i = 0; i <= OCI_HEADERS_MAX; i++)
		free(s->header_lines[i]);
	memset(s, 0, sizeof(*s));
}
