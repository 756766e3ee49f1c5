/*
 * fake-openvox-ca: a local test CA server that imitates the CA of an
 * OpenVox / Puppet Server (the puppet-ca v1 HTTP API over TLS) for the
 * tests of keysvc-openvox. Test code only: it listens on loopback and
 * keeps its CA key in a plain file.
 *
 *   fake-openvox-ca --dir DIR [--listen 127.0.0.1|::1] [--port-file FILE]
 *                   [--control FILE] [--ttl SECONDS] [--renewal-ttl SECONDS]
 *                   [--autosign] [--header-cert] [--strict-auth]
 *                   [--allow-subject-alt-names]
 *
 *   --dir DIR        CA state (created if missing):
 *                      ca.pem, ca.key (0600)   the CA; reused if both exist
 *                      crl.pem                 empty CRL, rewritten at start
 *                      foreign-crl.pem         the same from foreign-ca
 *                      server.pem, server.key  TLS cert for localhost,
 *                                              127.0.0.1 and ::1, new at start
 *                      foreign-ca.pem, .key    an unrelated CA, for client
 *                                              certs this CA did not sign
 *                      requests/NAME.pem       pending CSRs
 *                      signed/NAME.pem         issued (and renewed) certs
 *                      sign/NAME               touch it to sign NAME's CSR
 *   --listen ADDR    127.0.0.1 (default) or ::1; nothing else is accepted.
 *   --port-file F    the port (bound as port 0) is written to F (temp file
 *                    + rename) once the server listens.
 *   --control F      fault modes, read on every request: one word per line,
 *                    see modes[] below; "sign NAME" signs NAME's CSR.
 *                    Missing or empty file: normal.
 *   --ttl S          validity of first certificates (default 90 days).
 *   --renewal-ttl S  auto-renewal-cert-ttl: renewed certificates, and first
 *                    certificates whose CSR has pp_auth_auto_renew=true
 *                    (default 90 days).
 *   --autosign       sign CSRs when they arrive.
 *   --header-cert    allow-header-cert-info: the renewal certificate comes
 *                    ONLY from the URL-encoded PEM in X-Client-Cert.
 *   --strict-auth    behave like the whole real stack instead of the CA
 *                    handler alone: client certificates that do not verify
 *                    against this CA fail the TLS handshake, and the stock
 *                    auth.conf rules apply (renewal needs an authenticated
 *                    client, unknown routes are denied), both with 403.
 *   --allow-subject-alt-names  accept CSRs with extra SANs.
 *
 * Every response carries X-Puppet-Version and "Connection: close"; one line
 * per request goes to stderr. SIGTERM/SIGINT end the server with status 0.
 *
 * The answers follow OpenVox Server's certificate_authority(_core).clj:
 * texts, status codes and the order of the checks. Where this server differs
 * on purpose, a comment says so.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "fakesrv.h"

#define PUPPET_VERSION "8.0.0-fake"
#define MAX_BODY_BYTES (64 * 1024)
#define HUGE_BODY_BYTES (64L * 1024 * 1024)
#define DAY FS_DAY
#define DEFAULT_TTL (90 * DAY)
#define MAX_TTL (50 * 365 * DAY)
/* Puppet's default ca_ttl. */
#define CA_TTL (15 * 365 * DAY)
/* Certnames become file names NAME.pem. */
#define MAX_CERTNAME 250
#define MAX_CONTROL_SIGN 16

#define OID_PP_REG "1.3.6.1.4.1.34380.1.1"
#define OID_PP_PRIV "1.3.6.1.4.1.34380.1.2"
#define OID_PP_AUTH "1.3.6.1.4.1.34380.1.3"
#define OID_PP_CLI_AUTH "1.3.6.1.4.1.34380.1.3.39"
#define OID_PP_AUTO_RENEW "1.3.6.1.4.1.34380.1.3.2"
#define OID_SAN "2.5.29.17"

#define P_CERT "/puppet-ca/v1/certificate/"
#define P_CSR "/puppet-ca/v1/certificate_request/"
#define P_CRL "/puppet-ca/v1/certificate_revocation_list/"
#define P_RENEW "/puppet-ca/v1/certificate_renewal"

enum mode {
	MODE_RENEWAL_DISABLED = 1u << 0,
	MODE_GARBAGE = 1u << 1,
	MODE_OTHER_KEY = 1u << 2,
	MODE_EXPIRED = 1u << 3,
	MODE_SHORTER = 1u << 4,
	MODE_HANG = 1u << 5,
	MODE_HUGE = 1u << 6,
	MODE_STATUS_500 = 1u << 7,
	MODE_SIGN_PENDING = 1u << 8,
	MODE_EXTRA_CA = 1u << 9,
	MODE_FOREIGN_CERT = 1u << 10,
	MODE_SLOW = 1u << 11,
	MODE_NO_RENEWAL_RULE = 1u << 12,
	MODE_CRL_EMPTY = 1u << 13,
	MODE_CRL_GARBAGE = 1u << 14,
	MODE_CRL_FOREIGN = 1u << 15,
};

/* Control-file words. Renewal faults apply in this order when several are
 * set; they replace the success answer, after the 404/400/403 checks, so
 * those stay testable whatever the mode. */
static const struct {
	const char *word;
	unsigned mode;
	const char *effect;
} modes[] = {
	{ "normal", 0, "behave like the real CA" },
	{ "renewal-disabled", MODE_RENEWAL_DISABLED, "renewal: 404 Not Found (allow-auto-renewal false)" },
	{ "status-500", MODE_STATUS_500, "renewal: 500 with a text body" },
	{ "hang", MODE_HANG, "renewal: read the request, never answer" },
	/* A busy CA: what makes a timer run and a manual run overlap. */
	{ "slow", MODE_SLOW, "renewal: answer normally, but after 2 s" },
	{ "huge", MODE_HUGE, "renewal: 200 with a 64 MiB body" },
	{ "garbage", MODE_GARBAGE, "renewal: 200 with a body that is not PEM" },
	{ "other-key", MODE_OTHER_KEY, "renewal: 200, CA-signed cert for another public key" },
	{ "expired", MODE_EXPIRED, "renewal: 200, cert whose notAfter has passed" },
	{ "shorter", MODE_SHORTER, "renewal: 200, notAfter earlier than the presented cert's" },
	{ "sign-pending", MODE_SIGN_PENDING, "enrollment: never sign" },
	/* A man in the middle: his CA next to the genuine one, and the agent's certificate issued by it. */
	{ "extra-ca", MODE_EXTRA_CA, "certificate/ca: the bundle has foreign-ca.pem after ca.pem" },
	{ "foreign-cert", MODE_FOREIGN_CERT, "certificate/NAME: the signed cert re-issued by the foreign CA" },
	/* Puppet Server 7's stock auth.conf: it has no rule for the renewal route (7 has no such route). */
	{ "no-renewal-rule", MODE_NO_RENEWAL_RULE,
	  "renewal: 403 \"Forbidden request: ...\" from tk-authorization, whatever the client certificate" },
	{ "crl-empty", MODE_CRL_EMPTY, "certificate_revocation_list/ca: 200 with an empty body (empty crl.pem)" },
	{ "crl-garbage", MODE_CRL_GARBAGE, "certificate_revocation_list/ca: 200 with a body that is not PEM" },
	{ "crl-foreign", MODE_CRL_FOREIGN, "certificate_revocation_list/ca: foreign-crl.pem, signed by foreign-ca" },
};

struct control {
	unsigned modes;
	int nsign;
	char sign[MAX_CONTROL_SIGN][MAX_CERTNAME + 1];
};

struct config {
	const char *dir;
	const char *listen_addr;
	const char *port_file;
	const char *control_file;
	long ttl;
	long renewal_ttl;
	bool autosign;
	bool header_cert;
	bool strict_auth;
	bool allow_san;
};

enum resp_kind { RESP_NORMAL, RESP_HANG, RESP_HUGE };

struct response {
	int status;
	enum resp_kind kind;
	const char *content_type;
	char *body;
	size_t body_len;
	char note[256];
};

static struct config cfg = {
	.listen_addr = "127.0.0.1",
	.ttl = DEFAULT_TTL,
	.renewal_ttl = DEFAULT_TTL,
};

static X509 *ca_cert, *foreign_cert;
static EVP_PKEY *ca_key, *foreign_key;

/* Serialises everything that touches requests/, signed/ and sign/. */
static pthread_mutex_t ca_lock = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

/* A name that is harmless as a file name below requests/ or signed/. */
static bool safe_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > MAX_CERTNAME || s[0] == '.')
		return false;
	for (; *s; s++) {
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '-' || *s == '_'))
			return false;
	}
	return true;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Like ring's url-decode: %XX only ('+' stays), malformed escapes stay as
 * they are. out needs strlen(in) + 1 bytes; returns the decoded length. */
static size_t url_decode(const char *in, char *out)
{
	size_t n = 0;

	while (*in) {
		if (in[0] == '%' && hexval(in[1]) >= 0 && hexval(in[2]) >= 0) {
			out[n++] = (char)(hexval(in[1]) * 16 + hexval(in[2]));
			in += 3;
		} else {
			out[n++] = *in++;
		}
	}
	out[n] = '\0';
	return n;
}

/* ------------------------------------------------------------------ */
/* X.509 helpers                                                       */

static char *csr_pem(X509_REQ *req, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *out = NULL;

	if (b && PEM_write_bio_X509_REQ(b, req))
		out = fs_bio_take(b, len);
	BIO_free(b);
	return out;
}

/* An empty CRL of @issuer, signed with @key, into DIR/@file. */
static int write_empty_crl(X509 *issuer, EVP_PKEY *key, const char *file)
{
	char path[PATH_MAX];
	time_t now = time(NULL);
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *t = ASN1_TIME_set(NULL, now);
	ASN1_INTEGER *num = ASN1_INTEGER_new();
	X509_EXTENSION *aki = NULL;
	X509V3_CTX ctx;
	BIO *b = BIO_new(BIO_s_mem());
	char *pem = NULL;
	size_t len;
	int r = -1;

	if (!crl || !t || !num || !b || !fs_pathf(path, sizeof path, "%s/%s", cfg.dir, file))
		goto out;
	if (!X509_CRL_set_version(crl, X509_CRL_VERSION_2) ||
	    !X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer)) || !X509_CRL_set1_lastUpdate(crl, t) ||
	    !ASN1_TIME_set(t, now + 5 * 365 * DAY) || !X509_CRL_set1_nextUpdate(crl, t))
		goto out;
	X509V3_set_ctx(&ctx, issuer, NULL, NULL, crl, 0);
	aki = X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always");
	if (!aki || !X509_CRL_add_ext(crl, aki, -1) || !ASN1_INTEGER_set(num, 0) ||
	    !X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0) || !X509_CRL_sign(crl, key, EVP_sha256()) ||
	    !PEM_write_bio_X509_CRL(b, crl))
		goto out;
	pem = fs_bio_take(b, &len);
	if (pem && fs_write_file_atomic(path, pem, len, 0644) == 0)
		r = 0;
out:
	if (r != 0)
		fs_log_ssl("writing the CRL");
	free(pem);
	BIO_free(b);
	X509_EXTENSION_free(aki);
	ASN1_INTEGER_free(num);
	ASN1_TIME_free(t);
	X509_CRL_free(crl);
	return r;
}

/* ------------------------------------------------------------------ */
/* Control file                                                        */

/* quiet: the sign poller reads it five times a second; complaints about
 * unknown words come from the request path only. */
static void read_control(struct control *ctl, bool quiet)
{
	char *text, *line, *save = NULL;

	memset(ctl, 0, sizeof *ctl);
	if (!cfg.control_file)
		return;
	text = fs_read_file(cfg.control_file, 4096, NULL);
	if (!text)
		return;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *end = line + strlen(line);
		size_t i;
		bool known = false;

		while (*line == ' ' || *line == '\t')
			line++;
		while (end > line && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
			*--end = '\0';
		if (*line == '\0' || *line == '#')
			continue;
		if (strncmp(line, "sign ", 5) == 0) {
			const char *name = line + 5;

			while (*name == ' ')
				name++;
			if (ctl->nsign < MAX_CONTROL_SIGN && strlen(name) <= MAX_CERTNAME)
				strcpy(ctl->sign[ctl->nsign++], name);
			continue;
		}
		for (i = 0; i < sizeof modes / sizeof modes[0]; i++) {
			if (strcmp(line, modes[i].word) == 0) {
				ctl->modes |= modes[i].mode;
				known = true;
			}
		}
		if (!known && !quiet)
			fs_log("control: ignoring unknown word \"%.64s\"", line);
	}
	free(text);
}

static bool control_signs(const struct control *ctl, const char *name)
{
	int i;

	for (i = 0; i < ctl->nsign; i++)
		if (strcmp(ctl->sign[i], name) == 0)
			return true;
	return false;
}

/* ------------------------------------------------------------------ */
/* CSR validation, in the order of process-csr-submission!             */

static void set_text(struct response *rs, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_text(struct response *rs, int status, const char *fmt, ...)
{
	va_list ap;
	int n;

	free(rs->body);
	rs->body = NULL;
	rs->body_len = 0;
	rs->status = status;
	rs->content_type = "text/plain";
	va_start(ap, fmt);
	n = vasprintf(&rs->body, fmt, ap);
	va_end(ap);
	if (n < 0)
		rs->body = NULL;
	else
		rs->body_len = (size_t)n;
}

static bool oid_under(const char *oid, const char *arc)
{
	size_t n = strlen(arc);

	return strncmp(oid, arc, n) == 0 && oid[n] == '.';
}

/* validate-subject!: the URL's certname against the CSR's CN. */
static bool subject_ok(const char *certname, const char *cn, struct response *rs)
{
	const char *seg, *p, *last;
	size_t len;

	if (!cn || strcmp(certname, cn) != 0) {
		set_text(rs, 400, "Instance name \"%s\" does not match requested key \"%s\"", cn ? cn : "null", certname);
		return false;
	}
	for (p = certname; *p; p++) {
		if (*p >= 'A' && *p <= 'Z') {
			set_text(rs, 400, "Certificate names must be lower case.");
			return false;
		}
	}
	if (strchr(cn, '*')) {
		set_text(rs, 400, "Subject contains a wildcard, which is not allowed: %s", cn);
		return false;
	}
	len = strlen(cn);
	/* Java's split drops trailing empty segments, so "host." passes there
	 * as it does here; an empty name or one of dots does not. */
	last = cn + len;
	while (last > cn && last[-1] == '.')
		last--;
	if (len == 0 || cn[len - 1] == '-' || last == cn)
		goto invalid;
	if (!((cn[0] >= 'a' && cn[0] <= 'z') || (cn[0] >= '0' && cn[0] <= '9') || cn[0] == '_'))
		goto invalid;
	for (seg = cn; seg < last; seg = p + 1) {
		for (p = seg; p < last && *p != '.'; p++) {
			if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
				goto invalid;
		}
		if (p == seg || p[-1] == '-')
			goto invalid;
	}
	return true;
invalid:
	set_text(rs, 400, "Subject hostname format is invalid");
	return false;
}

static X509_EXTENSION *find_ext(const STACK_OF(X509_EXTENSION) *exts, int nid)
{
	int i;

	for (i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);

		if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == nid)
			return e;
	}
	return NULL;
}

static void append(char *buf, size_t n, const char *sep, const char *item)
{
	size_t used = strlen(buf);

	if (used + 1 >= n)
		return;
	snprintf(buf + used, n - used, "%s%s", used ? sep : "", item);
}

/* Addresses as Java's InetAddress.getHostAddress() writes them. */
static void format_ip(const ASN1_OCTET_STRING *ip, char *out, size_t n)
{
	const unsigned char *d = ASN1_STRING_get0_data(ip);
	int len = ASN1_STRING_length(ip);

	if (len == 4)
		snprintf(out, n, "IP:%u.%u.%u.%u", d[0], d[1], d[2], d[3]);
	else if (len == 16)
		snprintf(out, n, "IP:%x:%x:%x:%x:%x:%x:%x:%x", d[0] << 8 | d[1], d[2] << 8 | d[3], d[4] << 8 | d[5],
			 d[6] << 8 | d[7], d[8] << 8 | d[9], d[10] << 8 | d[11], d[12] << 8 | d[13],
			 d[14] << 8 | d[15]);
	else
		snprintf(out, n, "IP:?");
}

/* ensure-subject-alt-names-allowed!: only "DNS:<cn>" may be there unless
 * --allow-subject-alt-names. Like the real CA it looks at DNS and IP names
 * only, IPs listed first. */
static bool sans_ok(const STACK_OF(X509_EXTENSION) *exts, const char *cn, struct response *rs)
{
	X509_EXTENSION *ext = find_ext(exts, NID_subject_alt_name);
	GENERAL_NAMES *gens;
	char ips[1024] = "", dns[1024] = "", bad[2048] = "", item[512], cn_alt[MAX_CERTNAME + 8];
	int i, total = 0, cn_hits = 0;

	if (cfg.allow_san || !ext)
		return true;
	gens = X509V3_EXT_d2i(ext);
	if (!gens)
		return true;
	snprintf(cn_alt, sizeof cn_alt, "DNS:%s", cn ? cn : "null");
	for (i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);

		if (g->type == GEN_IPADD) {
			format_ip(g->d.iPAddress, item, sizeof item);
			append(ips, sizeof ips, ", ", item);
		} else if (g->type == GEN_DNS) {
			snprintf(item, sizeof item, "DNS:%.*s", ASN1_STRING_length(g->d.dNSName),
				 (const char *)ASN1_STRING_get0_data(g->d.dNSName));
			if (strcmp(item, cn_alt) == 0) {
				cn_hits++;
			} else {
				append(dns, sizeof dns, ", ", item);
			}
		} else {
			continue;
		}
		total++;
	}
	GENERAL_NAMES_free(gens);
	if (total == 0 || (total == 1 && cn_hits == 1))
		return true;
	append(bad, sizeof bad, ", ", ips);
	if (dns[0])
		append(bad, sizeof bad, ", ", dns);
	set_text(rs, 400,
		 "CSR '%s' contains extra subject alternative names (%s), which are disallowed. "
		 "To allow subject alternative names, set allow-subject-alt-names to true in your ca.conf file. "
		 "Then restart the puppetserver and try signing this certificate again.",
		 cn ? cn : "null", bad);
	return false;
}

/* The checks the real CA makes before it signs (autosign or not). */
static bool csr_policy_ok(X509_REQ *req, const char *cn, struct response *rs)
{
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
	char oid[128], bad[1024] = "";
	bool ok = false;
	int i;

	if (!sans_ok(exts, cn, rs))
		goto out;
	for (i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		OBJ_obj2txt(oid, sizeof oid, X509_EXTENSION_get_object(sk_X509_EXTENSION_value(exts, i)), 1);
		if (oid_under(oid, OID_PP_AUTH)) {
			set_text(rs, 400,
				 "CSR '%s' contains an authorization extension, which is disallowed. "
				 "To allow authorization extensions, set allow-authorization-extensions to true in your "
				 "ca.conf file. Then restart the puppetserver and try signing this certificate again.",
				 cn ? cn : "null");
			goto out;
		}
	}
	for (i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		OBJ_obj2txt(oid, sizeof oid, X509_EXTENSION_get_object(sk_X509_EXTENSION_value(exts, i)), 1);
		if (strcmp(oid, OID_SAN) == 0 || (oid_under(oid, OID_PP_AUTH) && strcmp(oid, OID_PP_CLI_AUTH) != 0) ||
		    oid_under(oid, OID_PP_REG) || oid_under(oid, OID_PP_PRIV))
			continue;
		append(bad, sizeof bad, ", ", oid);
	}
	if (bad[0]) {
		set_text(rs, 400, "Found extensions that are not permitted: %s", bad);
		goto out;
	}
	if (X509_REQ_verify(req, X509_REQ_get0_pubkey(req)) != 1) {
		ERR_clear_error();
		set_text(rs, 400, "CSR contains a public key that does not correspond to the signing key");
		goto out;
	}
	ok = true;
out:
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return ok;
}

/* supports-auto-renewal?: attribute pp_auth_auto_renew, any string type,
 * value "true". */
static bool csr_wants_auto_renew(X509_REQ *req)
{
	ASN1_OBJECT *obj = OBJ_txt2obj(OID_PP_AUTO_RENEW, 1);
	X509_ATTRIBUTE *attr;
	ASN1_TYPE *t;
	unsigned char *utf8 = NULL;
	bool yes = false;
	int idx, n;

	if (!obj)
		return false;
	idx = X509_REQ_get_attr_by_OBJ(req, obj, -1);
	ASN1_OBJECT_free(obj);
	if (idx < 0)
		return false;
	attr = X509_REQ_get_attr(req, idx);
	t = attr ? X509_ATTRIBUTE_get0_type(attr, 0) : NULL;
	if (!t)
		return false;
	switch (t->type) {
	case V_ASN1_UTF8STRING:
	case V_ASN1_PRINTABLESTRING:
	case V_ASN1_IA5STRING:
	case V_ASN1_T61STRING:
	case V_ASN1_VISIBLESTRING:
	case V_ASN1_BMPSTRING:
	case V_ASN1_UNIVERSALSTRING:
		n = ASN1_STRING_to_UTF8(&utf8, t->value.asn1_string);
		yes = n == 4 && memcmp(utf8, "true", 4) == 0;
		OPENSSL_free(utf8);
		break;
	default:
		break;
	}
	return yes;
}

/* ------------------------------------------------------------------ */
/* Issuing                                                             */

static bool san_has_dns(const GENERAL_NAMES *gens, const char *name)
{
	int i;

	for (i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);

		if (g->type == GEN_DNS && (size_t)ASN1_STRING_length(g->d.dNSName) == strlen(name) &&
		    memcmp(ASN1_STRING_get0_data(g->d.dNSName), name, strlen(name)) == 0)
			return true;
	}
	return false;
}

/* The CSR's SAN extension (if any) with DNS:<certname> added, as
 * ensure-ext-list-has-cn-san does. */
static int add_agent_san(X509 *x, const STACK_OF(X509_EXTENSION) *exts, const char *certname)
{
	X509_EXTENSION *ext = find_ext(exts, NID_subject_alt_name);
	GENERAL_NAMES *gens = NULL;
	GENERAL_NAME *g = NULL;
	ASN1_IA5STRING *s = NULL;
	int crit = 0, r = -1;

	if (ext) {
		gens = X509V3_EXT_d2i(ext);
		crit = X509_EXTENSION_get_critical(ext);
	}
	if (!gens)
		gens = GENERAL_NAMES_new();
	if (!gens)
		goto out;
	if (!san_has_dns(gens, certname)) {
		g = GENERAL_NAME_new();
		s = ASN1_IA5STRING_new();
		if (!g || !s || !ASN1_STRING_set(s, certname, -1))
			goto out;
		GENERAL_NAME_set0_value(g, GEN_DNS, s);
		s = NULL;
		if (!sk_GENERAL_NAME_push(gens, g))
			goto out;
		g = NULL;
	}
	if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, crit, X509V3_ADD_DEFAULT) != 1)
		goto out;
	r = 0;
out:
	ASN1_IA5STRING_free(s);
	GENERAL_NAME_free(g);
	GENERAL_NAMES_free(gens);
	return r;
}

/* autosign-certificate-request! / create-agent-extensions. */
static X509 *issue_from_csr(X509_REQ *req, const char *certname, long ttl)
{
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
	X509_NAME *subject = fs_cn_name(certname);
	time_t now = time(NULL);
	X509 *x = NULL;
	int i;

	if (!subject)
		goto fail;
	x = fs_new_cert(X509_get_subject_name(ca_cert), subject, X509_REQ_get0_pubkey(req), now - DAY, now + ttl);
	if (!x || fs_add_ext(ca_cert, x, NID_netscape_comment, "Puppet Server Internal Certificate") ||
	    fs_add_ext(ca_cert, x, NID_authority_key_identifier, "keyid:always,issuer:always") ||
	    fs_add_ext(ca_cert, x, NID_basic_constraints, "critical,CA:FALSE") ||
	    fs_add_ext(ca_cert, x, NID_ext_key_usage, "critical,serverAuth,clientAuth") ||
	    fs_add_ext(ca_cert, x, NID_key_usage, "critical,digitalSignature,keyEncipherment") ||
	    fs_add_ext(ca_cert, x, NID_subject_key_identifier, "hash") || add_agent_san(x, exts, certname))
		goto fail;
	for (i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);

		if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) != NID_subject_alt_name && !X509_add_ext(x, e, -1))
			goto fail;
	}
	if (fs_sign_cert(x, ca_key) != 0)
		goto fail;
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(subject);
	return x;
fail:
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(subject);
	X509_free(x);
	return NULL;
}

static X509_REQ *parse_csr(const char *pem, size_t len)
{
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	X509_REQ *req = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;

	BIO_free(b);
	ERR_clear_error();
	return req;
}

/* Names that failed the signing checks, so a "sign NAME" control line does
 * not log the same complaint five times a second. */
static char complained[8][MAX_CERTNAME + 1];
static unsigned complained_next;

/* Sign requests/NAME.pem. Caller holds ca_lock. */
static int sign_stored_locked(const char *name, const struct control *ctl)
{
	char csr_path[PATH_MAX], cert_path[PATH_MAX], trigger[PATH_MAX];
	struct response why = { 0 };
	X509_REQ *req = NULL;
	X509 *x = NULL;
	char *pem, *cn = NULL;
	size_t len;
	long ttl;
	unsigned i;
	int r = -1;

	if (!fs_pathf(csr_path, sizeof csr_path, "%s/requests/%s.pem", cfg.dir, name) ||
	    !fs_pathf(cert_path, sizeof cert_path, "%s/signed/%s.pem", cfg.dir, name) ||
	    !fs_pathf(trigger, sizeof trigger, "%s/sign/%s", cfg.dir, name))
		return -1;
	pem = fs_read_file(csr_path, MAX_BODY_BYTES, &len);
	if (!pem)
		return -1;
	req = parse_csr(pem, len);
	free(pem);
	if (req)
		cn = fs_name_entry(X509_REQ_get_subject_name(req), NID_commonName);
	if (!req || !csr_policy_ok(req, cn, &why)) {
		/* The real CA refuses to sign such a request (409 on
		 * certificate_status) and leaves it pending. */
		unlink(trigger);
		for (i = 0; i < sizeof complained / sizeof complained[0]; i++)
			if (strcmp(complained[i], name) == 0)
				goto out;
		fs_log("not signing %s: %s", name, why.body ? why.body : "unreadable CSR");
		snprintf(complained[complained_next++ % 8], sizeof complained[0], "%s", name);
		goto out;
	}
	ttl = csr_wants_auto_renew(req) && !(ctl->modes & MODE_RENEWAL_DISABLED) ? cfg.renewal_ttl : cfg.ttl;
	x = issue_from_csr(req, name, ttl);
	if (!x || fs_write_cert(cert_path, x) != 0)
		goto out;
	unlink(csr_path);
	unlink(trigger);
	fs_log("signed %s for %ld s", name, ttl);
	r = 0;
out:
	free(why.body);
	free(cn);
	X509_free(x);
	X509_REQ_free(req);
	return r;
}

/* Sign what the test asked for: sign/NAME files, "sign NAME" control
 * lines, and with --autosign requests left over from sign-pending. */
static void process_sign_triggers(bool quiet)
{
	struct control ctl;
	char dir_path[PATH_MAX], trigger[PATH_MAX];
	struct dirent *de;
	DIR *d;

	read_control(&ctl, quiet);
	if (ctl.modes & MODE_SIGN_PENDING)
		return;
	if (!fs_pathf(dir_path, sizeof dir_path, "%s/requests", cfg.dir))
		return;
	pthread_mutex_lock(&ca_lock);
	d = opendir(dir_path);
	while (d && (de = readdir(d)) != NULL) {
		char name[MAX_CERTNAME + 1];
		size_t n = strlen(de->d_name);

		if (n <= 4 || n - 4 > MAX_CERTNAME || strcmp(de->d_name + n - 4, ".pem") != 0)
			continue;
		memcpy(name, de->d_name, n - 4);
		name[n - 4] = '\0';
		if (!safe_name(name) || !fs_pathf(trigger, sizeof trigger, "%s/sign/%s", cfg.dir, name))
			continue;
		if (fs_file_exists(trigger) || control_signs(&ctl, name))
			sign_stored_locked(name, &ctl);
	}
	if (d)
		closedir(d);
	pthread_mutex_unlock(&ca_lock);
}

enum renew_kind { RENEW_NORMAL, RENEW_OTHER_KEY, RENEW_EXPIRED, RENEW_SHORTER, RENEW_FOREIGN };

/* renew-certificate!: same subject, key and extensions, new AKI/SKI and
 * serial; the fault kinds bend exactly one property. */
static X509 *renew_cert(X509 *old, enum renew_kind kind)
{
	time_t now = time(NULL), nb = now - DAY, na = now + cfg.renewal_ttl;
	EVP_PKEY *pub = X509_get0_pubkey(old), *other = NULL;
	X509 *issuer = kind == RENEW_FOREIGN ? foreign_cert : ca_cert;
	EVP_PKEY *issuer_key = kind == RENEW_FOREIGN ? foreign_key : ca_key;
	X509 *x = NULL;
	int i, days, secs;
	long left;

	switch (kind) {
	case RENEW_NORMAL:
	case RENEW_FOREIGN:
		break;
	case RENEW_OTHER_KEY:
		other = EVP_EC_gen("P-256");
		if (!other)
			return NULL;
		pub = other;
		break;
	case RENEW_EXPIRED:
		nb = now - 2 * DAY;
		na = now - 3600;
		break;
	case RENEW_SHORTER:
		if (!ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(old)))
			return NULL;
		left = (long)days * DAY + secs;
		/* Halfway to the old expiry: still valid, only shorter. */
		na = left > 2 ? now + left / 2 : now + left - DAY;
		if (na <= nb)
			nb = na - 3600;
		break;
	}
	x = fs_new_cert(X509_get_subject_name(issuer), X509_get_subject_name(old), pub, nb, na);
	if (!x || fs_add_ext(issuer, x, NID_subject_key_identifier, "hash") ||
	    fs_add_ext(issuer, x, NID_authority_key_identifier, "keyid:always,issuer:always"))
		goto fail;
	for (i = 0; i < X509_get_ext_count(old); i++) {
		X509_EXTENSION *e = X509_get_ext(old, i);
		int nid = OBJ_obj2nid(X509_EXTENSION_get_object(e));

		if (nid != NID_subject_key_identifier && nid != NID_authority_key_identifier && !X509_add_ext(x, e, -1))
			goto fail;
	}
	if (fs_sign_cert(x, issuer_key) != 0)
		goto fail;
	EVP_PKEY_free(other);
	return x;
fail:
	EVP_PKEY_free(other);
	X509_free(x);
	return NULL;
}

/* cert-authority-id-match-ca-subject-id? compares the AKI with the CA's SKI;
 * the signature check on top keeps a copied AKI from passing. */
static bool signed_by_ca(X509 *cert)
{
	const ASN1_OCTET_STRING *akid = X509_get0_authority_key_id(cert);
	const ASN1_OCTET_STRING *skid = X509_get0_subject_key_id(ca_cert);
	bool ok;

	if (!akid || !skid || ASN1_OCTET_STRING_cmp(akid, skid) != 0)
		return false;
	ok = X509_verify(cert, X509_get0_pubkey(ca_cert)) == 1;
	ERR_clear_error();
	return ok;
}

/* ------------------------------------------------------------------ */
/* Endpoints                                                           */

/* If-Modified-Since as handle-get-certificate does it: 304 unless the file
 * changed after the given second. */
static bool not_modified(const struct fs_request *rq, const struct stat *st)
{
	const char *value = fs_header(rq, "If-Modified-Since");
	char since[128];
	struct tm tm;
	const char *end;
	long long mtime_ms, since_ms;

	if (!value || !*value)
		return false;
	snprintf(since, sizeof since, "%s", value);
	memset(&tm, 0, sizeof tm);
	end = strptime(since, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	if (!end || *end)
		return false;
	since_ms = (long long)timegm(&tm) * 1000;
	mtime_ms = (long long)st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000;
	return mtime_ms <= since_ms;
}

/* 404 text: missing followed by name. */
static void serve_file(const char *path, const struct fs_request *rq, struct response *rs, const char *missing,
		       const char *name)
{
	struct stat st;

	if (stat(path, &st) != 0) {
		set_text(rs, 404, "%s%s", missing, name);
		return;
	}
	if (not_modified(rq, &st)) {
		rs->status = 304;
		rs->content_type = "text/plain";
		return;
	}
	rs->body = fs_read_file(path, 1024 * 1024, &rs->body_len);
	if (!rs->body) {
		set_text(rs, 500, "Internal Server Error: cannot read %s", path);
		return;
	}
	rs->status = 200;
	rs->content_type = "text/plain";
}

static void get_certificate(const char *name, const struct fs_request *rq, struct response *rs,
			    const struct control *ctl)
{
	static const char missing[] = "Could not find certificate ";
	char path[PATH_MAX];

	if (strcmp(name, "ca") == 0) {
		if (fs_pathf(path, sizeof path, "%s/ca.pem", cfg.dir))
			serve_file(path, rq, rs, missing, name);
		if (rs->status == 200 && (ctl->modes & MODE_EXTRA_CA)) {
			size_t len;
			char *extra = fs_cert_pem(foreign_cert, &len), *both = NULL;

			if (!extra || asprintf(&both, "%s%s", rs->body, extra) < 0) {
				free(extra);
				set_text(rs, 500, "Internal Server Error: extra-ca");
				return;
			}
			free(extra);
			free(rs->body);
			rs->body = both;
			rs->body_len = strlen(both);
			snprintf(rs->note, sizeof rs->note, "fault: extra-ca");
		}
		return;
	}
	if (!safe_name(name) || !fs_pathf(path, sizeof path, "%s/signed/%s.pem", cfg.dir, name)) {
		set_text(rs, 404, "%s%s", missing, name);
		return;
	}
	serve_file(path, rq, rs, missing, name);
	if (rs->status == 200 && (ctl->modes & MODE_FOREIGN_CERT)) {
		BIO *b = BIO_new_mem_buf(rs->body, (int)rs->body_len);
		X509 *signed_cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL, *x = NULL;

		BIO_free(b);
		pthread_mutex_lock(&ca_lock);
		x = signed_cert ? renew_cert(signed_cert, RENEW_FOREIGN) : NULL;
		pthread_mutex_unlock(&ca_lock);
		free(rs->body);
		rs->body = x ? fs_cert_pem(x, &rs->body_len) : NULL;
		if (!rs->body)
			set_text(rs, 500, "Internal Server Error: foreign-cert");
		else
			snprintf(rs->note, sizeof rs->note, "fault: foreign-cert");
		X509_free(signed_cert);
		X509_free(x);
	}
}

static void get_certificate_request(const char *name, const struct fs_request *rq, struct response *rs)
{
	static const char missing[] = "Could not find certificate_request ";
	char path[PATH_MAX];

	if (safe_name(name) && fs_pathf(path, sizeof path, "%s/requests/%s.pem", cfg.dir, name))
		serve_file(path, rq, rs, missing, name);
	else
		set_text(rs, 404, "%s%s", missing, name);
}

static void put_certificate_request(const char *name, const struct fs_request *rq, struct response *rs,
				    const struct control *ctl)
{
	char path[PATH_MAX];
	X509_REQ *req = parse_csr(rq->body ? rq->body : "", rq->body_len);
	char *cn = NULL, *pem = NULL;
	size_t len;

	if (!req) {
		/* The real CA has no check for this; the exception becomes a 500. */
		set_text(rs, 500, "Internal Server Error: no PEM certificate request found in the request body");
		return;
	}
	cn = fs_name_entry(X509_REQ_get_subject_name(req), NID_commonName);
	pthread_mutex_lock(&ca_lock);
	/* validate-duplicate-cert-policy! goes by the CSR's CN, before the
	 * CN is compared with the URL. */
	if (cn && safe_name(cn)) {
		if (fs_pathf(path, sizeof path, "%s/signed/%s.pem", cfg.dir, cn) && fs_file_exists(path)) {
			set_text(rs, 400, "%s already has a signed certificate; ignoring certificate request", cn);
			goto out;
		}
		if (fs_pathf(path, sizeof path, "%s/requests/%s.pem", cfg.dir, cn) && fs_file_exists(path)) {
			set_text(rs, 400, "%s already has a requested certificate; ignoring certificate request", cn);
			goto out;
		}
	}
	if (!subject_ok(name, cn, rs))
		goto out;
	/* Stored before the extension and signature checks, as on the real
	 * CA: a refused request stays pending and blocks a second PUT. */
	pem = csr_pem(req, &len);
	if (!pem || !fs_pathf(path, sizeof path, "%s/requests/%s.pem", cfg.dir, name) ||
	    fs_write_file_atomic(path, pem, len, 0644) != 0) {
		set_text(rs, 500, "Internal Server Error: cannot store the certificate request");
		goto out;
	}
	/* Deliberate difference: the real CA runs these checks at PUT only
	 * when it autosigns, otherwise when an operator signs. Refusing here
	 * in both cases lets tests see the 400 without an operator step. */
	if (!csr_policy_ok(req, cn, rs))
		goto out;
	if (cfg.autosign) {
		if (ctl->modes & MODE_SIGN_PENDING) {
			/* Leave a trigger so the request is signed once the
			 * mode is lifted. */
			if (fs_pathf(path, sizeof path, "%s/sign/%s", cfg.dir, name))
				fs_write_file_atomic(path, "", 0, 0644);
		} else if (sign_stored_locked(name, ctl) != 0) {
			set_text(rs, 500, "Internal Server Error: signing failed");
			goto out;
		}
	}
	rs->status = 200;
	rs->content_type = "text/plain";
out:
	pthread_mutex_unlock(&ca_lock);
	free(pem);
	free(cn);
	X509_REQ_free(req);
}

static void set_garbage(struct response *rs)
{
	set_text(rs, 200, "<html><body>\nThis is not a certificate.\n\x01\x02\x03 MIIBogus==\n</body></html>\n");
}

static void post_certificate_renewal(const struct fs_conn *c, const struct fs_request *rq, struct response *rs,
				     const struct control *ctl, X509 *header_cert)
{
	X509 *cert, *x = NULL;
	enum renew_kind kind = RENEW_NORMAL;
	char path[PATH_MAX], *cn = NULL;

	if (ctl->modes & MODE_RENEWAL_DISABLED) {
		set_text(rs, 404, "Not Found");
		return;
	}
	if (cfg.header_cert) {
		cert = header_cert;
	} else if (fs_header(rq, "X-Client-Cert")) {
		/* request->cert: a TLS client that also sends X-Client-Cert
		 * must be on the infra list, which this CA keeps empty. */
		cert = NULL;
		snprintf(rs->note, sizeof rs->note, "X-Client-Cert without --header-cert");
	} else {
		cert = c->peer;
	}
	if (!cert) {
		set_text(rs, 400, "No valid certificate found in renewal request");
		return;
	}
	if (!signed_by_ca(cert)) {
		set_text(rs, 403, "Certificate present, but does not match signature");
		return;
	}
	if (ctl->modes & MODE_STATUS_500) {
		set_text(rs, 500, "Internal Server Error: java.lang.IllegalStateException: simulated failure "
				  "(fake-openvox-ca control mode status-500)");
		return;
	}
	if (ctl->modes & MODE_HANG) {
		rs->kind = RESP_HANG;
		return;
	}
	if (ctl->modes & MODE_SLOW) {
		struct timespec ts = { .tv_sec = 2 };

		while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !fs_stopping())
			;
	}
	if (ctl->modes & MODE_HUGE) {
		rs->kind = RESP_HUGE;
		rs->status = 200;
		rs->content_type = "text/plain";
		return;
	}
	if (ctl->modes & MODE_GARBAGE) {
		set_garbage(rs);
		return;
	}
	if (ctl->modes & MODE_OTHER_KEY)
		kind = RENEW_OTHER_KEY;
	else if (ctl->modes & MODE_EXPIRED)
		kind = RENEW_EXPIRED;
	else if (ctl->modes & MODE_SHORTER)
		kind = RENEW_SHORTER;
	pthread_mutex_lock(&ca_lock);
	x = renew_cert(cert, kind);
	if (!x) {
		pthread_mutex_unlock(&ca_lock);
		set_text(rs, 500, "Internal Server Error: renewal failed");
		return;
	}
	/* Only a real renewal replaces signed/NAME.pem, as on the real CA. */
	cn = fs_name_entry(X509_get_subject_name(x), NID_commonName);
	if (kind == RENEW_NORMAL && cn && safe_name(cn) && fs_pathf(path, sizeof path, "%s/signed/%s.pem", cfg.dir, cn))
		fs_write_cert(path, x);
	pthread_mutex_unlock(&ca_lock);
	rs->body = fs_cert_pem(x, &rs->body_len);
	rs->status = rs->body ? 200 : 500;
	rs->content_type = "text/plain";
	if (kind != RENEW_NORMAL)
		snprintf(rs->note, sizeof rs->note, "fault: %s",
			 kind == RENEW_OTHER_KEY ? "other-key" : kind == RENEW_EXPIRED ? "expired" : "shorter");
	free(cn);
	X509_free(x);
}

/* auth-middleware header->cert: in header mode a malformed X-Client-Cert is
 * refused for every route, before the rules and the handler. */
static int parse_header_cert(const char *value, X509 **out, struct response *rs)
{
	size_t n = strlen(value);
	char *pem = malloc(n + 1);
	BIO *b = NULL;
	X509 *first = NULL;
	int count = 0, r = -1;

	if (!pem)
		goto out;
	n = url_decode(value, pem);
	b = BIO_new_mem_buf(pem, (int)n);
	if (!b)
		goto out;
	for (;;) {
		char *name = NULL, *header = NULL;
		unsigned char *data = NULL;
		const unsigned char *p;
		long len = 0;
		X509 *x;

		if (!PEM_read_bio(b, &name, &header, &data, &len)) {
			unsigned long e = ERR_peek_last_error();

			if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
				ERR_clear_error();
				break;
			}
			set_text(rs, 400, "Unable to parse x-client-cert into certificate: %s",
				 ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "bad PEM");
			ERR_clear_error();
			goto out;
		}
		if (strcmp(name, PEM_STRING_X509) == 0 || strcmp(name, PEM_STRING_X509_OLD) == 0) {
			p = data;
			x = d2i_X509(NULL, &p, len);
			if (!x) {
				set_text(rs, 400, "Unable to parse x-client-cert into certificate: bad DER");
				ERR_clear_error();
			} else if (++count == 1) {
				first = x;
			} else {
				X509_free(x);
			}
		}
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_free(data);
		if (rs->status == 400)
			goto out;
	}
	if (count == 0) {
		set_text(rs, 400, "No certs found in PEM read from x-client-cert");
		goto out;
	}
	if (count > 1) {
		set_text(rs, 400, "Only 1 PEM should be supplied for x-client-cert but %d found", count);
		goto out;
	}
	*out = first;
	first = NULL;
	r = 0;
out:
	X509_free(first);
	BIO_free(b);
	free(pem);
	return r;
}

/* The CN of X-Client-DN, RFC 2253 ("CN=a,O=b") or OpenSSL ("/O=b/CN=a"). */
static bool dn_has_cn(const char *dn)
{
	const char *p = dn;

	while ((p = strstr(p, "CN=")) != NULL) {
		if (p == dn || p[-1] == ',' || p[-1] == '/')
			return p[3] != '\0' && p[3] != ',' && p[3] != '/';
		p += 3;
	}
	return false;
}

/* The stock auth.conf rules for the puppet-ca routes (tk-authorization,
 * "path" rules match by prefix); anything else is denied. */
static const struct {
	const char *methods[2];
	const char *prefix;
	bool unauthenticated;
} auth_rules[] = {
	{ { "GET" }, "/puppet-ca/v1/certificate/", true },
	{ { "GET" }, "/puppet-ca/v1/certificate_revocation_list/ca", true },
	{ { "GET", "PUT" }, "/puppet-ca/v1/certificate_request", true },
	{ { "POST" }, "/puppet-ca/v1/certificate_renewal", false },
};

static bool auth_allows(const struct fs_conn *c, const struct fs_request *rq)
{
	const char *verify = fs_header(rq, "X-Client-Verify"), *dn = fs_header(rq, "X-Client-DN");
	char verify_text[64], dn_text[1024];
	size_t i, m;
	char *cn;
	bool authenticated;

	/* The sizes the header values had in the request this was written
	 * for; a longer value is cut, as it was there. */
	snprintf(verify_text, sizeof verify_text, "%s", verify ? verify : "");
	snprintf(dn_text, sizeof dn_text, "%s", dn ? dn : "");
	for (i = 0; i < sizeof auth_rules / sizeof auth_rules[0]; i++) {
		if (strncmp(rq->path, auth_rules[i].prefix, strlen(auth_rules[i].prefix)) != 0)
			continue;
		for (m = 0; m < 2; m++) {
			if (!auth_rules[i].methods[m] || strcmp(auth_rules[i].methods[m], rq->method) != 0)
				continue;
			if (auth_rules[i].unauthenticated)
				return true;
			if (cfg.header_cert) {
				authenticated = strcmp(verify_text, "SUCCESS") == 0 && dn_has_cn(dn_text);
			} else {
				cn = c->peer ? fs_name_entry(X509_get_subject_name(c->peer), NID_commonName) : NULL;
				authenticated = cn && *cn && c->verify_result == X509_V_OK;
				free(cn);
			}
			return authenticated;
		}
	}
	return false;
}

static bool route_name(const char *path, const char *prefix, char *name, size_t n)
{
	size_t plen = strlen(prefix);
	const char *rest = path + plen;

	if (strncmp(path, prefix, plen) != 0 || *rest == '\0' || strchr(rest, '/') || strlen(rest) >= n)
		return false;
	url_decode(rest, name);
	return true;
}

static void handle(const struct fs_conn *c, const struct fs_request *rq, struct response *rs)
{
	const char *client_cert = fs_header(rq, "X-Client-Cert");
	struct control ctl;
	X509 *header_cert = NULL;
	char name[1024], method[24];
	size_t i;

	read_control(&ctl, false);
	if (cfg.header_cert && client_cert && parse_header_cert(client_cert, &header_cert, rs) != 0)
		return;
	if ((cfg.strict_auth && !auth_allows(c, rq)) ||
	    ((ctl.modes & MODE_NO_RENEWAL_RULE) && strcmp(rq->path, P_RENEW) == 0)) {
		for (i = 0; rq->method[i] && i < sizeof method - 2; i++)
			method[i] = (char)(rq->method[i] | 0x20);
		method[i] = '\0';
		set_text(rs, 403, "Forbidden request: %s (method :%s). Please see the server logs for details.",
			 rq->path, method);
		goto out;
	}
	if (strcmp(rq->method, "GET") == 0 && route_name(rq->path, P_CERT, name, sizeof name)) {
		get_certificate(name, rq, rs, &ctl);
	} else if (strcmp(rq->method, "GET") == 0 && route_name(rq->path, P_CRL, name, sizeof name)) {
		char path[PATH_MAX];

		if (ctl.modes & MODE_CRL_EMPTY)
			set_text(rs, 200, "%s", "");
		else if (ctl.modes & MODE_CRL_GARBAGE)
			set_garbage(rs);
		else if (fs_pathf(path, sizeof path, "%s/%s", cfg.dir,
				  (ctl.modes & MODE_CRL_FOREIGN) ? "foreign-crl.pem" : "crl.pem"))
			serve_file(path, rq, rs, "Not Found", "");
	} else if (strcmp(rq->method, "GET") == 0 && route_name(rq->path, P_CSR, name, sizeof name)) {
		get_certificate_request(name, rq, rs);
	} else if (strcmp(rq->method, "PUT") == 0 && route_name(rq->path, P_CSR, name, sizeof name)) {
		if (strlen(name) > MAX_CERTNAME)
			set_text(rs, 400, "Certificate name longer than %d bytes (fake-openvox-ca limit)", MAX_CERTNAME);
		else
			put_certificate_request(name, rq, rs, &ctl);
	} else if (strcmp(rq->method, "POST") == 0 && strcmp(rq->path, P_RENEW) == 0) {
		post_certificate_renewal(c, rq, rs, &ctl, header_cert);
	} else {
		set_text(rs, 404, "Not Found");
	}
out:
	X509_free(header_cert);
}

/* ------------------------------------------------------------------ */
/* HTTP over TLS                                                       */

static int send_huge(struct fs_conn *c)
{
	static const char head[] = "-----BEGIN CERTIFICATE-----\n";
	char *chunk = malloc(64 * 1024);
	long left = HUGE_BODY_BYTES;
	size_t i;
	int r = -1;

	if (!chunk)
		return -1;
	for (i = 0; i < 64 * 1024; i++)
		chunk[i] = (i % 65 == 64) ? '\n' : 'A';
	memcpy(chunk, head, sizeof head - 1);
	while (left > 0 && !fs_stopping()) {
		size_t n = left < 64 * 1024 ? (size_t)left : 64 * 1024;

		if (fs_write(c, chunk, n) != 0)
			goto out;
		left -= (long)n;
		if (left < HUGE_BODY_BYTES - 64 * 1024)
			memset(chunk, 'A', sizeof head - 1);
	}
	r = left == 0 ? 0 : -1;
out:
	free(chunk);
	return r;
}

static void send_response(struct fs_conn *c, const struct response *rs)
{
	char lines[256];

	/* A 304 has no body, so no Content-Length either. */
	snprintf(lines, sizeof lines, "X-Puppet-Version: " PUPPET_VERSION "\r\nContent-Type: %s\r\n",
		 rs->content_type ? rs->content_type : "text/plain");
	if (fs_send_head(c, rs->status, NULL, lines,
			 rs->status == 304 ? -1 : rs->kind == RESP_HUGE ? HUGE_BODY_BYTES : (long)rs->body_len) != 0)
		return;
	if (rs->kind == RESP_HUGE)
		send_huge(c);
	else if (rs->status != 304 && rs->body_len > 0)
		fs_write(c, rs->body, rs->body_len);
}

/* The fakesrv handler: one request, its answer and its log line. */
static void serve(struct fs_conn *c, struct fs_request *rq)
{
	struct response rs;

	memset(&rs, 0, sizeof rs);
	switch (rq->error) {
	case 0:
		/* Signing on the request path too, so a GET right after
		 * touching sign/NAME already sees the certificate. */
		process_sign_triggers(true);
		handle(c, rq, &rs);
		break;
	case 411: set_text(&rs, 411, "Length Required"); break;
	case 413: set_text(&rs, 413, "Request body larger than %d bytes", MAX_BODY_BYTES); break;
	case 431: set_text(&rs, 431, "Request header too large"); break;
	default: set_text(&rs, 400, "Bad Request"); break;
	}
	if (rs.kind == RESP_HANG) {
		fs_log("%s %s hang (%s)", rq->method, rq->path, c->verdict);
		fs_wait_until_client_leaves(c);
		goto out;
	}
	send_response(c, &rs);
	fs_log("%s %s %d (%s%s%s)", rq->method[0] ? rq->method : "-", rq->path[0] ? rq->path : "-", rs.status,
	       c->verdict, rs.note[0] ? "; " : "", rs.note);
out:
	free(rs.body);
}

static void *sign_poller(void *arg)
{
	int i;

	(void)arg;
	fs_block_stop_signals();
	while (!fs_stopping()) {
		process_sign_triggers(true);
		for (i = 0; i < 4 && !fs_stopping(); i++) {
			struct timespec ts = { .tv_nsec = 50 * 1000 * 1000 };

			nanosleep(&ts, NULL);
		}
	}
	OPENSSL_thread_stop();
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Startup and main loop                                               */

/* What puppetserver's create-ca-extensions puts on its CA. */
static const struct fs_ext ca_exts[] = {
	{ NID_netscape_comment, "Puppet Server Internal Certificate" },
	{ NID_basic_constraints, "critical,CA:TRUE" },
	{ NID_key_usage, "critical,keyCertSign,cRLSign" },
	{ NID_subject_key_identifier, "hash" },
	{ NID_authority_key_identifier, "keyid:always" },
	{ 0, NULL },
};

static const struct fs_ext server_exts[] = {
	{ NID_basic_constraints, "critical,CA:FALSE" },
	{ NID_key_usage, "critical,digitalSignature,keyEncipherment" },
	{ NID_ext_key_usage, "serverAuth,clientAuth" },
	{ NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1" },
	{ NID_subject_key_identifier, "hash" },
	{ NID_authority_key_identifier, "keyid:always" },
	{ 0, NULL },
};

/* Ask for a client certificate, never insist: enrollment runs without
 * one, like Jetty's client-auth "want". Every certificate gets through
 * to the HTTP layer, which answers 400/403 itself; --strict-auth fails
 * the handshake for one that does not verify, like Jetty does. */
static SSL_CTX *init_tls(void)
{
	return fs_tls_server_minted(cfg.dir, ca_cert, ca_key, 365 * DAY, server_exts, ca_cert,
				    cfg.strict_auth ? FS_CLIENT_CERT_WANT_VALID : FS_CLIENT_CERT_WANT);
}

static int init_ca(void)
{
	char path[PATH_MAX];
	static const char *const subdirs[] = { "requests", "signed", "sign" };
	size_t i;
	int r = -1;

	if (fs_make_dir(cfg.dir, 0755) != 0)
		return -1;
	for (i = 0; i < sizeof subdirs / sizeof subdirs[0]; i++)
		if (!fs_pathf(path, sizeof path, "%s/%s", cfg.dir, subdirs[i]) || fs_make_dir(path, 0755) != 0)
			return -1;
	/* Half a pair is an error, as for puppetserver ("need all files or
	 * none"). */
	if (fs_load_or_make_ca(cfg.dir, "ca", "Puppet CA: fake-openvox-ca", CA_TTL, ca_exts, &ca_cert, &ca_key) != 0)
		goto out;
	if (!X509_get0_subject_key_id(ca_cert)) {
		fs_log("the CA certificate has no subject key identifier; renewal cannot match it");
		goto out;
	}
	if (fs_load_or_make_ca(cfg.dir, "foreign-ca", "Foreign Test CA (not trusted by fake-openvox-ca)", CA_TTL,
			       ca_exts, &foreign_cert, &foreign_key) != 0)
		goto out;
	if (write_empty_crl(ca_cert, ca_key, "crl.pem") != 0 ||
	    write_empty_crl(foreign_cert, foreign_key, "foreign-crl.pem") != 0)
		goto out;
	r = 0;
out:
	return r;
}

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: fake-openvox-ca --dir DIR [--listen 127.0.0.1|::1] [--port-file FILE]\n"
		   "       [--control FILE] [--ttl SECONDS] [--renewal-ttl SECONDS] [--autosign]\n"
		   "       [--header-cert] [--strict-auth] [--allow-subject-alt-names]\n"
		   "control file words (one per line; \"sign NAME\" signs NAME's CSR):\n");
	for (i = 0; i < sizeof modes / sizeof modes[0]; i++)
		fprintf(f, "  %-17s %s\n", modes[i].word, modes[i].effect);
}

int main(int argc, char **argv)
{
	enum { O_DIR = 1, O_LISTEN, O_PORT_FILE, O_CONTROL, O_TTL, O_RENEWAL_TTL, O_AUTOSIGN, O_HEADER_CERT,
	       O_STRICT_AUTH, O_ALLOW_SAN, O_HELP };
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, O_DIR },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "port-file", required_argument, NULL, O_PORT_FILE },
		{ "control", required_argument, NULL, O_CONTROL },
		{ "ttl", required_argument, NULL, O_TTL },
		{ "renewal-ttl", required_argument, NULL, O_RENEWAL_TTL },
		{ "autosign", no_argument, NULL, O_AUTOSIGN },
		{ "header-cert", no_argument, NULL, O_HEADER_CERT },
		{ "strict-auth", no_argument, NULL, O_STRICT_AUTH },
		{ "allow-subject-alt-names", no_argument, NULL, O_ALLOW_SAN },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	struct fs_server srv = {
		.handle = serve,
		.max_body_bytes = MAX_BODY_BYTES,
		.linger = true,
	};
	pthread_t poller;
	bool poller_started = false;
	int opt, lfd, port, r = 1;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case O_DIR: cfg.dir = optarg; break;
		case O_LISTEN: cfg.listen_addr = optarg; break;
		case O_PORT_FILE: cfg.port_file = optarg; break;
		case O_CONTROL: cfg.control_file = optarg; break;
		case O_TTL:
			if (!fs_parse_seconds(optarg, MAX_TTL, &cfg.ttl)) {
				fprintf(stderr, "fake-openvox-ca: bad --ttl %s\n", optarg);
				return 2;
			}
			break;
		case O_RENEWAL_TTL:
			if (!fs_parse_seconds(optarg, MAX_TTL, &cfg.renewal_ttl)) {
				fprintf(stderr, "fake-openvox-ca: bad --renewal-ttl %s\n", optarg);
				return 2;
			}
			break;
		case O_AUTOSIGN: cfg.autosign = true; break;
		case O_HEADER_CERT: cfg.header_cert = true; break;
		case O_STRICT_AUTH: cfg.strict_auth = true; break;
		case O_ALLOW_SAN: cfg.allow_san = true; break;
		case O_HELP: usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || !cfg.dir) {
		usage(stderr);
		return 2;
	}
	fs_log_init("fake-openvox-ca");
	/* A test CA with its key in a file must never be reachable from
	 * another host. */
	if (!fs_listen_addr_ok(cfg.listen_addr)) {
		fs_log("refusing to listen on %s: only 127.0.0.1 or ::1", cfg.listen_addr);
		return 2;
	}
	if (fs_signals_init() != 0)
		return 1;
	if (init_ca() != 0 || (srv.ctx = init_tls()) == NULL)
		goto out;
	if ((lfd = fs_listen_announced(cfg.listen_addr, cfg.port_file, &port)) < 0)
		goto out;
	if (pthread_create(&poller, NULL, sign_poller, NULL) != 0) {
		close(lfd);
		goto out;
	}
	poller_started = true;
	fs_log("listening on https://%s%s%s:%d/ (dir %s%s%s%s)", strchr(cfg.listen_addr, ':') ? "[" : "",
	       cfg.listen_addr, strchr(cfg.listen_addr, ':') ? "]" : "", port, cfg.dir,
	       cfg.autosign ? ", autosign" : "", cfg.header_cert ? ", header-cert" : "",
	       cfg.strict_auth ? ", strict-auth" : "");
	if (fs_serve(lfd, &srv) != 0)
		goto out;
	fs_log("stopping");
	r = 0;
out:
	/* fs_serve has stopped (or never ran): the poller sees fs_stopping. */
	if (poller_started)
		pthread_join(poller, NULL);
	SSL_CTX_free(srv.ctx);
	X509_free(ca_cert);
	EVP_PKEY_free(ca_key);
	X509_free(foreign_cert);
	EVP_PKEY_free(foreign_key);
	return r;
}
