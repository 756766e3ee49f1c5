#include "clients/openvox/openvox.h"

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
		snprintf(msg, len, "the CA refused the certificate: it was not signed by this CA "
			 "(\"%s\")", said);
		return OVX_NOT_THIS_CA;
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
