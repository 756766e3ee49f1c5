#include "clients/renew/openvox/openvox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

/* The CA's first line, safe to print: no control characters, bounded. */
void ovx_quote(const char *body, size_t body_len, char *out, size_t len)
{
	if (len == 0)
		return;
	if (body == NULL)
		body_len = 0;
	size_t o = 0;

	for (size_t i = 0; i < body_len && o + 1 < len && o < 200; i++) {
		unsigned char c = (unsigned char)body[i];

		if (c == '\n' || c == '\r')
			break;
		out[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	out[o] = '\0';
}

/* 1 if @body begins with @prefix: the CA's texts are fixed, what follows may vary. */
static int body_starts(const char *body, size_t body_len, const char *prefix)
{
	size_t n = strlen(prefix);

	return body != NULL && body_len >= n && memcmp(body, prefix, n) == 0;
}

void ovx_escape(const char *body, size_t body_len, char *out, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = body != NULL ? body_len : 0, o = 0;
	int cut = n > OVX_REASON_MAX;

	if (len == 0)
		return;
	if (cut)
		n = OVX_REASON_MAX;
	while (!cut && n > 0 && (body[n - 1] == '\n' || body[n - 1] == '\r' || body[n - 1] == ' ' ||
				 body[n - 1] == '\t'))
		n--;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)body[i];

		if (c >= 0x20 && c < 0x7f && c != '\\') {
			if (o + 1 >= len)
				break;
			out[o++] = (char)c;
		} else {
			if (o + 4 >= len)
				break;
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	if (cut) {
		char note[40];
		size_t n_note = (size_t)snprintf(note, sizeof(note), " [cut at %d bytes]", OVX_REASON_MAX);

		/* Whole or not at all: half a note would read as the CA's text. */
		if (n_note < len - o)
			memcpy(out + o, note, n_note + 1);
	}
}

enum ovx_csr_answer ovx_csr_answer(long status, const char *body, size_t body_len, const char *certname)
{
	static const char *const duplicate[] = {
		" already has a requested certificate; ignoring certificate request",
		" already has a signed certificate; ignoring certificate request",
	};
	size_t cn = strlen(certname);

	if (status == 200)
		return OVX_CSR_SUBMITTED;
	if (status != 400)
		return OVX_CSR_UNEXPECTED;
	if (!body_starts(body, body_len, certname))
		return OVX_CSR_REFUSED;
	/* The whole body (but a line end), so that a policy text quoting one of these cannot pass for it. */
	while (body_len > cn && (body[body_len - 1] == '\n' || body[body_len - 1] == '\r'))
		body_len--;
	for (size_t i = 0; i < sizeof(duplicate) / sizeof(duplicate[0]); i++) {
		size_t n = strlen(duplicate[i]);

		if (body_len - cn == n && memcmp(body + cn, duplicate[i], n) == 0)
			return OVX_CSR_ALREADY;
	}
	return OVX_CSR_REFUSED;
}

enum ovx_renewal ovx_renewal_result(long status, const char *body, size_t body_len,
				    char *msg, size_t len)
{
	char said[256];

	ovx_quote(body, body_len, said, sizeof(said));
	switch (status) {
	case 200:
		snprintf(msg, len, "the CA answered with a renewed certificate");
		return OVX_RENEWED;
	case 404:
		snprintf(msg, len, "auto-renewal is disabled on this CA "
			 "(certificate-authority.allow-auto-renewal is false); "
			 "the current certificate is unchanged");
		return OVX_RENEWAL_DISABLED;
	case 403:
		if (body_starts(body, body_len, "Certificate present, but does not match signature")) {
			snprintf(msg, len, "the CA refused the certificate: it was not signed by this CA "
				 "(\"%s\"); enroll with this CA instead", said);
			return OVX_NOT_THIS_CA;
		}
		if (body_starts(body, body_len, "Forbidden request:")) {
			snprintf(msg, len, "the server's auth.conf denies the renewal (HTTP 403: \"%s\"): a server "
				 "setting, not a CA mismatch. Puppet Server and OpenVox Server before 8 have no "
				 "renewal endpoint: there, enroll a new certificate (on the CA: puppetserver ca clean "
				 "--certname NAME, then renew --rotate-key NEWKEY or enroll again). On 8 and later, add this rule to "
				 "authorization.rules in the server's auth.conf and restart it: {match-request: "
				 "{path: \"^/puppet-ca/v1/certificate_renewal$\", type: regex, method: post}, "
				 "allow: \"*\" (or the agents' certnames), sort-order: 500, name: \"certificate "
				 "renewal\"}", said);
			return OVX_AUTH_DENIED;
		}
		snprintf(msg, len, "the CA answered HTTP 403 (\"%s\"), neither a CA mismatch nor an auth.conf "
			 "denial that keysvc-openvox knows", said);
		return OVX_UNEXPECTED;
	case 400:
		snprintf(msg, len, "no client certificate reached the CA (\"%s\"); with a "
			 "TLS-terminating proxy use --header-cert", said);
		return OVX_NO_CLIENT_CERT;
	default:
		snprintf(msg, len, "unexpected answer from the CA: HTTP %ld (\"%s\")", status, said);
		return OVX_UNEXPECTED;
	}
}

int ovx_is_due(const ASN1_TIME *not_after, time_t now, long interval_s, time_t *opens)
{
	int days = 0, secs = 0;
	ASN1_TIME *n = ASN1_TIME_set(NULL, now);
	long long left;

	if (n == NULL || !ASN1_TIME_diff(&days, &secs, n, not_after)) {
		ASN1_TIME_free(n);
		if (opens != NULL)
			*opens = now;
		return 1;     /* an unreadable date is no reason to keep a certificate */
	}
	ASN1_TIME_free(n);
	left = (long long)days * 86400 + secs;
	if (opens != NULL)
		*opens = now + (time_t)(left - interval_s);
	return left <= interval_s;
}

int ovx_certname_ok(const char *name)
{
	size_t n = name != NULL ? strlen(name) : 0;

	if (n == 0 || n > OVX_CERTNAME_MAX || name[0] == '.' || name[0] == '-')
		return 0;
	return strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

char *ovx_urlencode(const char *in)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(in);
	char *out = malloc(3 * n + 1), *o = out;

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~') {
			*o++ = (char)c;
		} else {
			*o++ = '%';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
		}
	}
	*o = '\0';
	return out;
}

char *ovx_url(const char *server, const char *path)
{
	size_t n;
	char *url;

	if (server == NULL || strncmp(server, "https://", 8) != 0 || server[8] == '\0')
		return NULL;
	n = strlen(server);
	while (n > 8 && server[n - 1] == '/')
		n--;
	if (asprintf(&url, "%.*s%s%s", (int)n, server, OVX_API, path) < 0)
		return NULL;
	return url;
}
