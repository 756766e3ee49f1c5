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
	OVX_NOT_THIS_CA,            /* 403 "Certificate present, but does not match signature" */
	OVX_AUTH_DENIED,            /* 403 "Forbidden request: ...": the server's auth.conf, not the CA */
	OVX_NO_CLIENT_CERT,         /* 400: no client certificate reached the CA */
	OVX_UNEXPECTED,             /* anything else */
};

/*
 * Classify the CA's answer to a renewal and write a message for the
 * operator into @msg (@len bytes, OVX_MSG_MAX is enough): what happened
 * and what to do. A 403 is told apart by its body: the CA handler's
 * signature mismatch, or tk-authorization's "Forbidden request:" (no
 * auth.conf rule allows the route; Puppet Server before 8 has no such
 * route at all), for which the rule to add is part of the message. The
 * CA's own text is quoted (first line, at most 200 bytes, control
 * characters replaced).
 */
#define OVX_MSG_MAX 1024
enum ovx_renewal ovx_renewal_result(long status, const char *body, size_t body_len,
				    char *msg, size_t len);

/*
 * 1 if a certificate ending at @not_after is due at @now for renewal
 * interval @interval_s (the agent's rule: now >= notAfter - interval), else
 * 0. *@opens gets the time the window opens.
 */
int ovx_is_due(const ASN1_TIME *not_after, time_t now, long interval_s, time_t *opens);

/* What the CA's answer to PUT certificate_request means. */
enum ovx_csr_answer {
	OVX_CSR_SUBMITTED = 0,      /* 200: pending, or signed if the CA autosigns */
	OVX_CSR_ALREADY,            /* 400 "NAME already has a requested/signed certificate; ignoring
				     * certificate request": submitted before, the certificate may come */
	OVX_CSR_REFUSED,            /* any other 400: the CA refuses this CSR, the reason is the body */
	OVX_CSR_UNEXPECTED,         /* anything else */
};

/*
 * Classify the answer to PUT certificate_request for @certname. Only the
 * duplicate texts of a pending or signed request mean "ask for the
 * certificate"; a revoked one, or a CSR the CA's policy refuses (SANs,
 * extensions, the name), will never be signed by asking again.
 */
enum ovx_csr_answer ovx_csr_answer(long status, const char *body, size_t body_len, const char *certname);

/* The most of a CA's text ovx_escape() shows; the rest is cut with a note. */
#define OVX_REASON_MAX 1024
/* A buffer that holds any ovx_escape() result. */
#define OVX_ESCAPED_MAX (4 * OVX_REASON_MAX + 32)

/*
 * The CA's whole text (at most OVX_REASON_MAX bytes of it, trailing
 * whitespace dropped), safe for a terminal and for one inventory line:
 * every byte that is not printable ASCII, and '\', written as \xNN; a
 * longer text ends in " [cut at 1024 bytes]". Into @out (@len bytes,
 * OVX_ESCAPED_MAX is always enough; a smaller one cuts the result after
 * a whole escape, and leaves out the note if it does not fit whole).
 */
void ovx_escape(const char *body, size_t body_len, char *out, size_t len);

/* 1 if @name is a certname the CA accepts: 1..253 of [a-z0-9._-], not starting with '.' or '-'. */
int ovx_certname_ok(const char *name);

/* The first line of a CA's text, at most 200 bytes, control characters as '?', into @out. */
void ovx_quote(const char *body, size_t body_len, char *out, size_t len);

/* Percent-encode @in (everything but RFC 3986 unreserved characters), as X-Client-Cert wants. malloc'd. */
char *ovx_urlencode(const char *in);

/* "https://host:8140" + "/puppet-ca/v1" + @path, without a doubled '/'. malloc'd; NULL if not https. */
char *ovx_url(const char *server, const char *path);

#endif
