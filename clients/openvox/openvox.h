/*
 * The OpenVox / Puppet Server CA protocol, the parts that need no network:
 * what a status code of the CA means, when a certificate is due, how a
 * certificate travels in the X-Client-Cert header, which certnames the CA
 * takes. keysvc-openvox.c does the I/O; these are unit-tested alone.
 */
#ifndef KEYSVC_CLIENTS_OPENVOX_H
#define KEYSVC_CLIENTS_OPENVOX_H

#include <stddef.h>
#include <time.h>

#include <openssl/asn1.h>

#define OVX_API "/puppet-ca/v1"
/* Puppet's own OID for "this agent can renew itself" (pp_auth_auto_renew). */
#define OVX_OID_AUTO_RENEW "1.3.6.1.4.1.34380.1.3.2"
#define OVX_DEFAULT_RENEWAL_INTERVAL_S (30L * 86400)
#define OVX_CERTNAME_MAX 253

/* Outcomes of POST certificate_renewal, each with its own exit code. */
enum ovx_renewal {
	OVX_RENEWED = 0,            /* 200: a certificate to check */
	OVX_RENEWAL_DISABLED,       /* 404: allow-auto-renewal is off on the CA */
	OVX_NOT_THIS_CA,            /* 403: our certificate was not signed by this CA */
	OVX_NO_CLIENT_CERT,         /* 400: no client certificate reached the CA */
	OVX_UNEXPECTED,             /* anything else */
};

/*
 * Classify the CA's answer to a renewal and write a message for the
 * operator into @msg (@len bytes): what happened and what to do. The
 * CA's own text is quoted (first line, at most 200 bytes, control
 * characters replaced) for the unexpected cases.
 */
enum ovx_renewal ovx_renewal_result(long status, const char *body, size_t body_len,
				    char *msg, size_t len);

/*
 * 1 if a certificate ending at @not_after is due at @now for renewal
 * interval @interval_s (the agent's rule: now >= notAfter - interval), else
 * 0. *@opens gets the time the window opens.
 */
int ovx_is_due(const ASN1_TIME *not_after, time_t now, long interval_s, time_t *opens);

/* 1 if @name is a certname the CA accepts: 1..253 of [a-z0-9._-], not starting with '.' or '-'. */
int ovx_certname_ok(const char *name);

/* The first line of a CA's text, at most 200 bytes, control characters as '?', into @out. */
void ovx_quote(const char *body, size_t body_len, char *out, size_t len);

/* Percent-encode @in (everything but RFC 3986 unreserved characters), as X-Client-Cert wants. malloc'd. */
char *ovx_urlencode(const char *in);

/* "https://host:8140" + "/puppet-ca/v1" + @path, without a doubled '/'. malloc'd; NULL if not https. */
char *ovx_url(const char *server, const char *path);

#endif
