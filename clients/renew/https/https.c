/*
 * The HTTPS helper (https.h): libcurl with its OpenSSL backend, the client
 * key put into curl's SSL_CTX by hand so that it can come from OSSL_STORE
 * (and so from keysvcd through the keysvc provider).
 */
#include "clients/renew/https/https.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/store.h>

#include "proto/utf8.h"
#include "proto/log.h"

#ifndef KEYSVC_VERSION
#define KEYSVC_VERSION "0"
#endif

#define URL_MAX 8192
/* Room for a Huawei IAM token (X-Auth-Token, up to 16384 bytes) and its name. */
#define HEADER_MAX (16 * 1024 + 256)
#define HEADERS_MAX 64
#define METHOD_MAX 16
#define PATH_ARG_MAX 4096
#define STORE_OBJECTS_MAX 64

/* ---- global state ----------------------------------------------------------- */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_ready;
static OSSL_PROVIDER *g_default, *g_keysvc;
static int g_ex_index = -1;

/* ---- error texts -------------------------------------------------------------- */

/*
 * The most detail OpenSSL keeps with one error (its ERR_MAX_DATA_SIZE):
 * the keysvc provider's text, keysvcd's message after a key name, fits
 * whole, so a name is never shown cut short (it would name another key).
 */
#define DETAIL_MAX 1024

/* Append to a bounded, always NUL-terminated text; a cut is marked (ks_utf8_mark_cut()). */
__attribute__((format(printf, 3, 4)))
static void append(char *buf, size_t len, const char *fmt, ...)
{
	size_t used;
	va_list ap;
	int n;

	if (buf == NULL || len == 0)
		return;
	used = strnlen(buf, len - 1);
	buf[used] = '\0';
	va_start(ap, fmt);
	n = vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n >= len - used)
		ks_utf8_mark_cut(buf, len);
}

/* Replace the text; a cut is marked (ks_utf8_mark_cut()). */
__attribute__((format(printf, 3, 4)))
static void set_err(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (buf == NULL || len == 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n >= len)
		ks_utf8_mark_cut(buf, len);
}

#define ERRS_MAX 16

static int from_keysvc(unsigned long e)
{
	const char *lib = ERR_lib_error_string(e);

	return lib != NULL && strcmp(lib, "keysvc") == 0;
}

/* Layers restating a failure, and curl's own SSL_shutdown() of a failed handshake: noise. */
static int is_noise(unsigned long e)
{
	if (ERR_SYSTEM_ERROR(e))
		return 0;
	return (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_SHUTDOWN_WHILE_IN_INIT) ||
		ERR_GET_REASON(e) == ERR_R_SYS_LIB || ERR_GET_REASON(e) == ERR_R_EVP_LIB;
}

/*
 * Drain this thread's OpenSSL error queue into @buf as "reason (detail);
 * ...". The keysvc provider's errors carry keysvcd's answer in the detail,
 * which is what a user needs to see ("denied", "no such key"): when there
 * are any, they are shown alone, without the stack of generic errors other
 * layers pile on. File names and line numbers are left out. Returns the
 * number of errors shown.
 */
static int drain_ossl_errors_reason(char *buf, size_t len, const char *prefix, int *keysvc_reason)
{
	struct {
		unsigned long e;
		char data[DETAIL_MAX];
	} errs[ERRS_MAX];
	const char *data, *reason;
	char code[64];
	int flags, n = 0, shown = 0, any_keysvc = 0;
	unsigned long e;

	for (;;) {
		data = NULL;
		flags = 0;
		if ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) == 0)
			break;
		if (n == ERRS_MAX || is_noise(e))
			continue;
		errs[n].e = e;
		set_err(errs[n].data, sizeof(errs[n].data), "%s",
			(flags & ERR_TXT_STRING) && data != NULL ? data : "");
		if (from_keysvc(e) && !any_keysvc && keysvc_reason != NULL)
			*keysvc_reason = ERR_GET_REASON(e);
		any_keysvc |= from_keysvc(e);
		n++;
	}
	for (int i = 0; i < n; i++) {
		e = errs[i].e;
		if (any_keysvc && !from_keysvc(e))
			continue;
		if (i > 0 && e == errs[i - 1].e && errs[i].data[0] == '\0')
			continue;
		if (ERR_SYSTEM_ERROR(e))
			reason = strerror(ERR_GET_REASON(e));
		else if ((reason = ERR_reason_error_string(e)) == NULL) {
			snprintf(code, sizeof(code), "error %08lX", e);
			reason = code;
		}
		append(buf, len, "%s%s", shown == 0 ? prefix : "; ", reason);
		if (errs[i].data[0] != '\0')
			append(buf, len, " (%s)", errs[i].data);
		shown++;
	}
	return shown;
}

/* drain_ossl_errors_reason() for callers that need no provider reason. */
static int drain_ossl_errors(char *buf, size_t len, const char *prefix)
{
	return drain_ossl_errors_reason(buf, len, prefix, NULL);
}

/* ---- init ----------------------------------------------------------------------- */

/* Where keysvc.so is looked for, and why there: set by ks_https_init(). */
static char g_provider_dir[PATH_ARG_MAX + 1];
static const char *g_provider_dir_from;

int ks_https_init(const char *provider_dir, char *err, size_t err_len)
{
	const char *dir = provider_dir, *from = "--provider-dir";
	CURLcode cr;
	int r;

	if (err != NULL && err_len > 0)
		err[0] = '\0';
	pthread_mutex_lock(&g_lock);
	if (g_ready) {
		r = 0;
		goto out;
	}
	ERR_clear_error();
	if (dir == NULL || dir[0] == '\0') {
		dir = secure_getenv("OPENSSL_MODULES");
		from = "$OPENSSL_MODULES";
	}
	if (dir == NULL || dir[0] == '\0') {
		/* What OpenSSL falls back to itself: named so that a failure can say where it looked. */
		dir = OPENSSL_info(OPENSSL_INFO_MODULES_DIR);
		from = "OpenSSL's modules directory";
	} else if (!OSSL_PROVIDER_set_default_search_path(NULL, dir)) {
		set_err(err, err_len, "cannot set the OpenSSL provider path to %s", dir);
		drain_ossl_errors(err, err_len, ": ");
		r = -ENOMEM;
		goto out;
	}
	snprintf(g_provider_dir, sizeof(g_provider_dir), "%s", dir != NULL ? dir : "(unknown)");
	g_provider_dir_from = from;
	/* libcurl first: it loads openssl.cnf, which may activate providers of its own. */
	if ((cr = curl_global_init(CURL_GLOBAL_DEFAULT)) != CURLE_OK) {
		set_err(err, err_len, "cannot initialise libcurl: %s", curl_easy_strerror(cr));
		r = -EIO;
		goto out;
	}
	/* "default" strictly before "keysvc" (loaded by the first request that needs it): see https.h. */
	if ((g_default = OSSL_PROVIDER_load(NULL, "default")) == NULL) {
		set_err(err, err_len, "cannot load the OpenSSL default provider");
		drain_ossl_errors(err, err_len, ": ");
		r = -ENOENT;
		goto fail_curl;
	}
	/* One index for the life of the process, kept across cleanup and a new init. */
	if (g_ex_index < 0 &&
	    (g_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL)) < 0) {
		set_err(err, err_len, "cannot allocate an OpenSSL ex_data index");
		r = -ENOMEM;
		goto fail_default;
	}
	g_ready = 1;
	r = 0;
	goto out;
fail_default:
	OSSL_PROVIDER_unload(g_default);
	g_default = NULL;
fail_curl:
	curl_global_cleanup();
out:
	ERR_clear_error();
	pthread_mutex_unlock(&g_lock);
	return r;
}

/*
 * The keysvc provider, loaded on first use: commands whose requests use no
 * token key (enrollment, a bootstrap with a key file) must work on a host
 * where keysvc.so is not installed. -ENOKEY, with the directory searched
 * in @err, if it cannot be loaded.
 */
static int need_keysvc_provider(char *err, size_t err_len)
{
	int r;

	pthread_mutex_lock(&g_lock);
	if (g_keysvc != NULL) {
		r = 0;
		goto out;
	}
	ERR_clear_error();
	if ((g_keysvc = OSSL_PROVIDER_load(NULL, "keysvc")) == NULL) {
		set_err(err, err_len, "cannot load the keysvc OpenSSL provider: no usable keysvc.so in %s "
			"(%s; --provider-dir DIR names another)", g_provider_dir, g_provider_dir_from);
		drain_ossl_errors(err, err_len, ": ");
		r = -ENOKEY;
		goto out;
	}
	r = 0;
out:
	ERR_clear_error();
	pthread_mutex_unlock(&g_lock);
	return r;
}

void ks_https_cleanup(void)
{
	pthread_mutex_lock(&g_lock);
	if (g_ready) {
		if (g_keysvc != NULL)
			OSSL_PROVIDER_unload(g_keysvc);
		OSSL_PROVIDER_unload(g_default);
		g_keysvc = NULL;
		g_default = NULL;
		curl_global_cleanup();
		g_ready = 0;
	}
	pthread_mutex_unlock(&g_lock);
}

static int is_ready(void)
{
	int ready;

	pthread_mutex_lock(&g_lock);
	ready = g_ready;
	pthread_mutex_unlock(&g_lock);
	return ready;
}

/* ---- one request ---------------------------------------------------------------- */

struct req {
	const struct ks_https_opts *opts;
	EVP_PKEY *pkey;         /* the client key, loaded and checked before connecting */
	char *body;
	size_t body_len, body_cap, max;
	int too_big;
	int cb_failed;          /* the SSL_CTX callback refused; cb_r and err say why */
	int cb_r;
	int alert_received;     /* a fatal TLS alert from the server; alert_desc is its code */
	int alert_desc;
	/*
	 * Why we aborted a handshake ourselves: the first OpenSSL error when
	 * we sent a fatal alert. curl keeps only the error's code; the detail
	 * (keysvcd's answer, the key name) is read here before it is lost.
	 */
	char cause[DETAIL_MAX + 128];
	int cause_keysvc;       /* ...and it came from the keysvc provider */
	int cause_reason;       /* ...with this reason (enum ksp_reason) */
	int *keysvc_reason;     /* the response's keysvc_reason */
	char *err;              /* the response's err buffer */
	size_t err_len;
};

static size_t write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct req *q = arg;
	size_t n = size * nmemb, cap;
	char *nb;

	if (size != 0 && n / size != nmemb)
		return 0;
	if (n > q->max - q->body_len) {
		q->too_big = 1;
		return 0;
	}
	if (q->body_len + n + 1 > q->body_cap) {
		cap = q->body_cap ? q->body_cap : 4096;
		while (cap < q->body_len + n + 1)
			cap *= 2;
		if (cap > q->max + 1)
			cap = q->max + 1;
		if ((nb = realloc(q->body, cap)) == NULL)
			return 0;
		q->body = nb;
		q->body_cap = cap;
	}
	memcpy(q->body + q->body_len, data, n);
	q->body_len += n;
	q->body[q->body_len] = '\0';
	return n;
}

/*
 * Fatal alerts, both ways. One from the server is the only account of why
 * it refused us. One we send comes right after the error that made us
 * give up, still first in this thread's OpenSSL queue.
 */
static void info_cb(const SSL *ssl, int where, int ret)
{
	const char *data = NULL, *reason;
	unsigned long e;
	struct req *q;
	int flags = 0;

	if (!(where & SSL_CB_ALERT) || (ret >> 8) != SSL3_AL_FATAL)
		return;
	if ((q = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), g_ex_index)) == NULL)
		return;
	if ((where & SSL_CB_READ) && !q->alert_received) {
		q->alert_received = 1;
		q->alert_desc = ret & 0xff;
	}
	if ((where & SSL_CB_WRITE) && q->cause[0] == '\0' &&
	    (e = ERR_peek_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		reason = ERR_reason_error_string(e);
		set_err(q->cause, sizeof(q->cause), "%s", reason ? reason : "unknown error");
		if ((flags & ERR_TXT_STRING) && data != NULL && data[0] != '\0')
			append(q->cause, sizeof(q->cause), " (%s)", data);
		q->cause_keysvc = from_keysvc(e);
		q->cause_reason = q->cause_keysvc ? ERR_GET_REASON(e) : 0;
	}
}

/* The first private key @uri names, through OSSL_STORE (any provider's scheme, or a file). */
static EVP_PKEY *load_key(const char *uri)
{
	OSSL_STORE_CTX *st;
	OSSL_STORE_INFO *info;
	EVP_PKEY *pkey = NULL;
	int i;

	if ((st = OSSL_STORE_open_ex(uri, NULL, NULL, NULL, NULL, NULL, NULL, NULL)) == NULL)
		return NULL;
	OSSL_STORE_expect(st, OSSL_STORE_INFO_PKEY);
	for (i = 0; i < STORE_OBJECTS_MAX && pkey == NULL && !OSSL_STORE_eof(st); i++) {
		if ((info = OSSL_STORE_load(st)) == NULL) {
			if (OSSL_STORE_error(st))
				break;
			continue;
		}
		if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
			pkey = OSSL_STORE_INFO_get1_PKEY(info);
		OSSL_STORE_INFO_free(info);
	}
	OSSL_STORE_close(st);
	return pkey;
}

/*
 * curl's SSL_CTX, before the handshake: the client certificate and key,
 * and the alert recorder. Failing here stops the request before any
 * connection is attempted.
 */
static CURLcode ssl_ctx_cb(CURL *curl, void *sslctx, void *arg)
{
	SSL_CTX *ctx = sslctx;
	struct req *q = arg;
	const struct ks_https_opts *o = q->opts;
	CURLcode rc;

	(void)curl;
	ERR_clear_error();
	if (!SSL_CTX_set_ex_data(ctx, g_ex_index, q)) {
		q->cb_r = -ENOMEM;
		set_err(q->err, q->err_len, "cannot attach request data to the TLS context");
		rc = CURLE_OUT_OF_MEMORY;
		goto out;
	}
	SSL_CTX_set_info_callback(ctx, info_cb);
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
		q->cb_r = -EIO;
		set_err(q->err, q->err_len, "cannot require TLS 1.2 or later");
		rc = CURLE_SSL_CONNECT_ERROR;
		goto out;
	}
	if (o->cert_file == NULL) {
		rc = CURLE_OK;
		goto out;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1) {
		q->cb_r = -EINVAL;
		set_err(q->err, q->err_len, "cannot use client certificate %s", o->cert_file);
		drain_ossl_errors(q->err, q->err_len, ": ");
		rc = CURLE_SSL_CERTPROBLEM;
		goto out;
	}
	/*
	 * Checked before connecting already (the file might have changed
	 * since). Both calls compare public halves only: the keysvc key
	 * manager answers from its public key, and nothing is signed yet.
	 */
	if (SSL_CTX_use_PrivateKey(ctx, q->pkey) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
		q->cb_r = -EKEYREJECTED;
		set_err(q->err, q->err_len, "client certificate %s does not match private key %s",
			o->cert_file, o->key_uri);
		drain_ossl_errors(q->err, q->err_len, ": ");
		rc = CURLE_SSL_CERTPROBLEM;
		goto out;
	}
	rc = CURLE_OK;
out:
	if (rc != CURLE_OK)
		q->cb_failed = 1;
	ERR_clear_error();
	return rc;
}

static const char *key_type(const EVP_PKEY *k)
{
	const char *t = k != NULL ? EVP_PKEY_get0_type_name(k) : NULL;

	return t != NULL ? t : "unknown";
}

/*
 * The client certificate and key, before any connection: a missing key or
 * a certificate that is not the key's is a local fault, and should not
 * look like the server refusing us. Keeps the key in q->pkey.
 */
static int load_client_credentials(struct req *q)
{
	const struct ks_https_opts *o = q->opts;
	X509 *leaf = NULL;
	BIO *bio = NULL;
	int r;

	ERR_clear_error();
	if ((bio = BIO_new_file(o->cert_file, "r")) == NULL ||
	    (leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL) {
		set_err(q->err, q->err_len, "cannot read client certificate %s", o->cert_file);
		drain_ossl_errors(q->err, q->err_len, ": ");
		r = -EINVAL;
		goto out;
	}
	if ((q->pkey = load_key(o->key_uri)) == NULL) {
		set_err(q->err, q->err_len, "cannot load private key %s", o->key_uri);
		if (!drain_ossl_errors_reason(q->err, q->err_len, ": ", q->keysvc_reason))
			append(q->err, q->err_len, ": no private key found there");
		r = -ENOKEY;
		goto out;
	}
	if (EVP_PKEY_eq(X509_get0_pubkey(leaf), q->pkey) != 1) {
		set_err(q->err, q->err_len, "client certificate %s (%s key) does not match "
			"private key %s (%s key)", o->cert_file, key_type(X509_get0_pubkey(leaf)),
			o->key_uri, key_type(q->pkey));
		r = -EKEYREJECTED;
		goto out;
	}
	r = 0;
out:
	X509_free(leaf);
	BIO_free(bio);
	ERR_clear_error();
	return r;
}

static int method_ok(const char *m)
{
	size_t n = strlen(m);

	return n >= 1 && n <= METHOD_MAX && strspn(m, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == n;
}

/* No control characters (CR/LF would let a value inject headers), bounded. */
static int text_ok(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);

	if (n > max)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f)
			return 0;
	}
	return 1;
}

static int check_args(const struct ks_https_opts *o, const char *method, const char *url,
		      const char *const *headers, const void *body, size_t body_len,
		      char *err, size_t err_len)
{
	size_t i;

	if (o == NULL || method == NULL || url == NULL) {
		set_err(err, err_len, "missing options, method or URL");
		return -EINVAL;
	}
	if (!is_ready()) {
		set_err(err, err_len, "ks_https_init() has not been called");
		return -EINVAL;
	}
	if (!method_ok(method)) {
		set_err(err, err_len, "bad HTTP method (expected an upper-case token)");
		return -EINVAL;
	}
	if (!text_ok(url, URL_MAX) || strchr(url, ' ') != NULL) {
		set_err(err, err_len, "bad URL (empty, too long, or with spaces or control characters)");
		return -EINVAL;
	}
	if (strncasecmp(url, "https://", 8) != 0) {
		set_err(err, err_len, "only https:// URLs are allowed");
		return -EPROTONOSUPPORT;
	}
	if (!o->insecure && (o->ca_file == NULL || o->ca_file[0] == '\0')) {
		set_err(err, err_len, "a CA bundle (ca_file) is required to check the server");
		return -EINVAL;
	}
	if ((o->cert_file == NULL) != (o->key_uri == NULL) ||
	    (o->cert_file != NULL && (o->cert_file[0] == '\0' || o->key_uri[0] == '\0'))) {
		set_err(err, err_len, "a client certificate and its key go together: set both or neither");
		return -EINVAL;
	}
	if ((o->ca_file != NULL && !text_ok(o->ca_file, PATH_ARG_MAX)) ||
	    (o->cert_file != NULL && !text_ok(o->cert_file, PATH_ARG_MAX)) ||
	    (o->key_uri != NULL && !text_ok(o->key_uri, PATH_ARG_MAX)) ||
	    (o->user_agent != NULL && !text_ok(o->user_agent, HEADER_MAX)) ||
	    (o->proxy != NULL && !text_ok(o->proxy, URL_MAX))) {
		set_err(err, err_len, "an option holds control characters or is too long");
		return -EINVAL;
	}
	if (o->connect_timeout_ms < 0 || o->total_timeout_ms < 0) {
		set_err(err, err_len, "negative timeout");
		return -EINVAL;
	}
	if (o->max_response_bytes > KS_HTTPS_MAX_RESPONSE_LIMIT) {
		set_err(err, err_len, "max_response_bytes is over %zu", KS_HTTPS_MAX_RESPONSE_LIMIT);
		return -EINVAL;
	}
	if (body == NULL && body_len > 0) {
		set_err(err, err_len, "body length without a body");
		return -EINVAL;
	}
	for (i = 0; headers != NULL && headers[i] != NULL; i++) {
		const char *colon = strchr(headers[i], ':');

		if (i >= HEADERS_MAX || !text_ok(headers[i], HEADER_MAX) || colon == NULL ||
		    colon == headers[i]) {
			set_err(err, err_len, "header %zu is not a single \"Name: value\" line "
				"(or more than %d headers)", i + 1, HEADERS_MAX);
			return -EINVAL;
		}
	}
	return 0;
}

static int has_header(const char *const *headers, const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
		if (strncasecmp(headers[i], name, n) == 0 && headers[i][n] == ':')
			return 1;
	}
	return 0;
}

static const char *alert_name(int desc)
{
	/* TLS 1.3 alerts OpenSSL 3.0 has no text for. */
	switch (desc) {
	case 109:
		return "missing extension";
	case 116:
		return "certificate required";
	case 120:
		return "no application protocol";
	default:
		return SSL_alert_desc_string_long(desc);
	}
}

/* A curl failure as a negative errno and a reason in q->err. */
static int curl_failure(struct req *q, CURLcode rc, const char *curl_err)
{
	const char *detail = curl_err[0] != '\0' ? curl_err : curl_easy_strerror(rc);
	int r;

	if (q->cb_failed) {
		/* The SSL_CTX callback already wrote the reason. */
		return q->cb_r != 0 ? q->cb_r : -EIO;
	}
	if (q->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
		set_err(q->err, q->err_len, "the response is larger than the %zu bytes allowed", q->max);
		return -EMSGSIZE;
	}
	if (rc == CURLE_PEER_FAILED_VERIFICATION) {
		set_err(q->err, q->err_len, "the server's certificate is not trusted for this "
			"host (pinned CA %s): %s", q->opts->ca_file ? q->opts->ca_file : "-", detail);
		r = -EACCES;
		goto ossl;
	}
	if (q->cause_keysvc) {
		/* keysvcd would not sign the handshake: a policy or token matter, not a TLS one. */
		set_err(q->err, q->err_len, "keysvcd refused to sign the TLS handshake with %s: %s",
			q->opts->key_uri, q->cause);
		*q->keysvc_reason = q->cause_reason;
		ERR_clear_error();
		return -ENOKEY;
	}
	if (q->alert_received) {
		/* The server stopped the handshake: with mutual TLS, nearly always our certificate. */
		set_err(q->err, q->err_len, "the server refused the TLS connection (alert: %s; %s): %s",
			alert_name(q->alert_desc), q->opts->cert_file != NULL ?
			"is the client certificate valid and issued by a CA the server trusts?" :
			"does the server require a client certificate?", detail);
		r = -EPROTO;
		goto ossl;
	}
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		set_err(q->err, q->err_len, "timed out: %s", detail);
		r = -ETIMEDOUT;
		break;
	case CURLE_UNSUPPORTED_PROTOCOL:
		set_err(q->err, q->err_len, "only https:// is allowed: %s", detail);
		r = -EPROTONOSUPPORT;
		break;
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
		set_err(q->err, q->err_len, "bad CA bundle or client certificate: %s", detail);
		r = -EINVAL;
		break;
	case CURLE_URL_MALFORMAT:
		set_err(q->err, q->err_len, "bad URL: %s", detail);
		r = -EINVAL;
		break;
	case CURLE_COULDNT_CONNECT:
		set_err(q->err, q->err_len, "cannot connect: %s", detail);
		r = -ECONNREFUSED;
		break;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		set_err(q->err, q->err_len, "cannot resolve: %s", detail);
		r = -EHOSTUNREACH;
		break;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CIPHER:
		set_err(q->err, q->err_len, "TLS handshake failed: %s", detail);
		if (q->cause[0] != '\0')
			append(q->err, q->err_len, " (cause: %s)", q->cause);
		r = -EPROTO;
		break;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
		set_err(q->err, q->err_len, "connection lost: %s", detail);
		/* TLS 1.3 checks our certificate after our side of the handshake is done. */
		if (q->opts->cert_file != NULL)
			append(q->err, q->err_len, " (a server that refuses the client certificate "
			       "may just hang up)");
		r = -EIO;
		break;
	case CURLE_TOO_MANY_REDIRECTS:
		set_err(q->err, q->err_len, "too many redirects: %s", detail);
		r = -ELOOP;
		break;
	case CURLE_OUT_OF_MEMORY:
		set_err(q->err, q->err_len, "out of memory");
		r = -ENOMEM;
		break;
	case CURLE_WEIRD_SERVER_REPLY:
		set_err(q->err, q->err_len, "malformed HTTP response: %s", detail);
		r = -EPROTO;
		break;
	case CURLE_WRITE_ERROR:
		/* Not too big, so the buffer could not grow. */
		set_err(q->err, q->err_len, "out of memory for the response");
		r = -ENOMEM;
		break;
	default:
		set_err(q->err, q->err_len, "HTTPS request failed: %s", detail);
		r = -EIO;
		break;
	}
ossl:
	/* curl reports only the first OpenSSL error; keysvcd's answer may be in the others. */
	if (drain_ossl_errors(q->err, q->err_len, " [") > 0)
		append(q->err, q->err_len, "]");
	return r;
}

static char *dup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

#define SETOPT(opt, val) do {						\
		CURLcode setopt_rc_ = curl_easy_setopt(h, opt, val);	\
		if (setopt_rc_ != CURLE_OK) {				\
			set_err(out->err, sizeof(out->err), "libcurl refused %s: %s", \
				#opt, curl_easy_strerror(setopt_rc_));	\
			r = setopt_rc_ == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EIO; \
			goto out;					\
		}							\
	} while (0)

int ks_https_request(const struct ks_https_opts *opts, const char *method, const char *url,
		     const char *const *headers, const void *body, size_t body_len,
		     struct ks_https_response *out)
{
	char curl_err[CURL_ERROR_SIZE];
	struct curl_slist *hdrs = NULL, *nh;
	struct req q;
	CURL *h = NULL;
	const char *ctype = NULL, *redirect = NULL;
	CURLcode rc;
	long status = 0;
	size_t i;
	int r;

	if (out == NULL)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	memset(&q, 0, sizeof(q));
	curl_err[0] = '\0';
	if ((r = check_args(opts, method, url, headers, body, body_len,
			    out->err, sizeof(out->err))) != 0)
		return r;
	q.opts = opts;
	q.max = opts->max_response_bytes ? opts->max_response_bytes : KS_HTTPS_DEFAULT_MAX_RESPONSE;
	q.err = out->err;
	q.err_len = sizeof(out->err);
	q.keysvc_reason = &out->keysvc_reason;

	if (opts->insecure)
		fprintf(stderr, "%sWARNING: TLS verification disabled (--insecure): the server's "
			"certificate and name are NOT checked; anyone on the network path can "
			"impersonate it\n", ks_log_journal_prefix(stderr, KS_LOG_WARNING));
	if (opts->key_uri != NULL && strncasecmp(opts->key_uri, "keysvc:", 7) == 0 &&
	    (r = need_keysvc_provider(out->err, sizeof(out->err))) != 0)
		goto out;
	if (opts->cert_file != NULL && (r = load_client_credentials(&q)) != 0)
		goto out;

	if ((h = curl_easy_init()) == NULL) {
		set_err(out->err, sizeof(out->err), "cannot create a libcurl handle");
		r = -ENOMEM;
		goto out;
	}
	SETOPT(CURLOPT_ERRORBUFFER, curl_err);
	SETOPT(CURLOPT_NOSIGNAL, 1L);
	SETOPT(CURLOPT_URL, url);
	SETOPT(CURLOPT_PROTOCOLS_STR, "https");
	SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "https");
	/* "" rather than NULL: NULL would let http_proxy/https_proxy from the environment in. */
	SETOPT(CURLOPT_PROXY, opts->proxy != NULL ? opts->proxy : "");
	SETOPT(CURLOPT_FOLLOWLOCATION, opts->follow_redirects ? 1L : 0L);
	SETOPT(CURLOPT_MAXREDIRS, opts->follow_redirects ? KS_HTTPS_MAX_REDIRECTS : 0L);
	SETOPT(CURLOPT_CONNECTTIMEOUT_MS, opts->connect_timeout_ms ? opts->connect_timeout_ms
	       : KS_HTTPS_DEFAULT_CONNECT_TIMEOUT_MS);
	SETOPT(CURLOPT_TIMEOUT_MS, opts->total_timeout_ms ? opts->total_timeout_ms
	       : KS_HTTPS_DEFAULT_TOTAL_TIMEOUT_MS);
	SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)q.max);
	SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
	SETOPT(CURLOPT_WRITEDATA, &q);
	/* One request per handle: HTTP/1.1 is all a CA exchange needs, and the simplest to reason about. */
	SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	SETOPT(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	SETOPT(CURLOPT_SSL_SESSIONID_CACHE, 0L);
	/* The pinned bundle and nothing else: no CA directory, no native store. */
	SETOPT(CURLOPT_CAINFO, opts->ca_file);
	SETOPT(CURLOPT_CAPATH, (char *)NULL);
	SETOPT(CURLOPT_SSL_OPTIONS, 0L);
	SETOPT(CURLOPT_SSL_VERIFYPEER, opts->insecure ? 0L : 1L);
	SETOPT(CURLOPT_SSL_VERIFYHOST, opts->insecure ? 0L : 2L);
	SETOPT(CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
	SETOPT(CURLOPT_SSL_CTX_DATA, &q);
	SETOPT(CURLOPT_USERAGENT, opts->user_agent != NULL ? opts->user_agent
	       : "keysvc/" KEYSVC_VERSION);

	for (i = 0; headers != NULL && headers[i] != NULL; i++) {
		if ((nh = curl_slist_append(hdrs, headers[i])) == NULL)
			goto nomem;
		hdrs = nh;
	}
	/* No "Expect: 100-continue" round trip (and its wait) for larger bodies. */
	if (!has_header(headers, "Expect")) {
		if ((nh = curl_slist_append(hdrs, "Expect:")) == NULL)
			goto nomem;
		hdrs = nh;
	}
	SETOPT(CURLOPT_HTTPHEADER, hdrs);

	if (strcmp(method, "HEAD") == 0 && body_len == 0) {
		SETOPT(CURLOPT_NOBODY, 1L);
	} else if (strcmp(method, "GET") == 0 && body_len == 0) {
		SETOPT(CURLOPT_HTTPGET, 1L);
	} else if (body_len > 0 || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
		   strcmp(method, "PATCH") == 0) {
		SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
		SETOPT(CURLOPT_POSTFIELDS, body_len > 0 ? (const char *)body : "");
		if (strcmp(method, "POST") != 0)
			SETOPT(CURLOPT_CUSTOMREQUEST, method);
	} else {
		SETOPT(CURLOPT_CUSTOMREQUEST, method);
	}

	ERR_clear_error();
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	out->status = status;
	if (rc != CURLE_OK) {
		r = curl_failure(&q, rc, curl_err);
		goto out;
	}
	if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ctype) != CURLE_OK)
		ctype = NULL;
	if (status >= 300 && status < 400 &&
	    curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &redirect) != CURLE_OK)
		redirect = NULL;
	if ((ctype != NULL && (out->content_type = strdup(ctype)) == NULL) ||
	    (redirect != NULL && (out->redirect_url = strdup(redirect)) == NULL))
		goto nomem;
	if (q.body == NULL && (q.body = dup_or_null("")) == NULL)
		goto nomem;
	out->body = q.body;
	out->body_len = q.body_len;
	q.body = NULL;
	r = 0;
	goto out;
nomem:
	set_err(out->err, sizeof(out->err), "out of memory");
	r = -ENOMEM;
out:
	/* Whatever curl left in this thread's error queue belongs to this request only. */
	ERR_clear_error();
	if (h != NULL)
		curl_easy_cleanup(h);
	curl_slist_free_all(hdrs);
	EVP_PKEY_free(q.pkey);
	free(q.body);
	if (r != 0) {
		free(out->content_type);
		free(out->redirect_url);
		out->content_type = NULL;
		out->redirect_url = NULL;
	}
	return r;
}

void ks_https_response_free(struct ks_https_response *resp)
{
	if (resp == NULL)
		return;
	free(resp->body);
	free(resp->content_type);
	free(resp->redirect_url);
	memset(resp, 0, sizeof(*resp));
}
