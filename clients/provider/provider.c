#include "clients/provider/provider.h"
#include "clients/provider/decoder.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/provider.h>

#include "proto/sigform.h"

#define KSP_PROVIDER_NAME "keysvc provider (keys held by keysvcd)"

static const OSSL_ITEM reason_strings[] = {
	{ KSP_R_DENIED, "keysvcd denied the request (policy)" },
	{ KSP_R_NO_SUCH_KEY, "keysvcd has no such key" },
	{ KSP_R_TOKEN_UNAVAILABLE, "keysvcd's token is unavailable" },
	{ KSP_R_CANNOT_CONNECT, "cannot reach keysvcd" },
	{ KSP_R_UNSUPPORTED, "operation not supported by the keysvc provider" },
	{ KSP_R_BAD_URI, "not a keysvc: URI" },
	{ KSP_R_INTERNAL, "keysvc provider internal error" },
	{ KSP_R_BAD_CONFIG, "bad keysvc provider setting in openssl.cnf" },
	{ KSP_R_BUFFER_TOO_SMALL, "output buffer too small for the signature" },
	{ 0, NULL },
};

void ksp_raise(struct ksp_ctx *ctx, int reason, const char *fmt, ...)
{
	va_list ap;

	if (ctx == NULL || ctx->new_error == NULL || ctx->vset_error == NULL)
		return;
	ctx->new_error(ctx->handle);
	if (ctx->set_error_debug != NULL)
		ctx->set_error_debug(ctx->handle, OPENSSL_FILE, OPENSSL_LINE, "keysvc");
	va_start(ap, fmt);
	ctx->vset_error(ctx->handle, (uint32_t)reason, fmt, ap);
	va_end(ap);
}

static int reason_for(int err)
{
	switch (err) {
	case KEYSVC_E_DENIED:
		return KSP_R_DENIED;
	case KEYSVC_E_NO_SUCH_KEY:
		return KSP_R_NO_SUCH_KEY;
	case KEYSVC_E_TOKEN_UNAVAILABLE:
		return KSP_R_TOKEN_UNAVAILABLE;
	case KEYSVC_E_CONNECT:
	case KEYSVC_E_IO:
		return KSP_R_CANNOT_CONNECT;
	case KEYSVC_E_UNSUPPORTED:
	case KEYSVC_E_BAD_REQUEST:
		return KSP_R_UNSUPPORTED;
	default:
		return KSP_R_INTERNAL;
	}
}

static void raise_from(struct ksp_ctx *ctx, const keysvc *conn, int r, const char *what, const char *name)
{
	const char *msg = conn != NULL ? keysvc_error_message(conn) : "";

	ksp_raise(ctx, reason_for(r), "%s %s: %s%s%s", what, name, keysvc_strerror(r),
		  msg[0] ? ": " : "", msg);
}

/*
 * Take a connection of the pool for one request: an idle open one, else a
 * free slot (opened by the caller), else wait for one to be given back.
 * Each thread's request has a connection of its own, so up to
 * ctx->pool_size requests are with keysvcd at once.
 */
static struct ksp_conn *conn_borrow(struct ksp_ctx *ctx)
{
	struct ksp_conn *free_slot = NULL, *c;
	pid_t pid = getpid();

	pthread_mutex_lock(&ctx->lock);
	for (;;) {
		for (int i = 0; i < ctx->pool_size; i++) {
			c = &ctx->pool[i];
			/* After fork() parent and child would share the sockets and read
			 * each other's answers: the child's are its own, opened anew (a
			 * slot busy in a parent's thread is not busy here). */
			if (c->pid != pid) {
				keysvc_close(c->conn);
				c->conn = NULL;
				c->busy = 0;
				c->pid = pid;
			}
			if (c->busy)
				continue;
			if (c->conn != NULL) {
				free_slot = c;
				break;
			}
			if (free_slot == NULL)
				free_slot = c;
		}
		if (free_slot != NULL)
			break;
		pthread_cond_wait(&ctx->idle, &ctx->lock);
	}
	free_slot->busy = 1;
	pthread_mutex_unlock(&ctx->lock);
	return free_slot;
}

static void conn_return(struct ksp_ctx *ctx, struct ksp_conn *c)
{
	pthread_mutex_lock(&ctx->lock);
	c->busy = 0;
	pthread_cond_signal(&ctx->idle);
	pthread_mutex_unlock(&ctx->lock);
}

/* Open @c's connection (c is borrowed: no lock needed). */
static int conn_open(struct ksp_ctx *ctx, struct ksp_conn *c)
{
	int r;

	r = keysvc_connect(ctx->socket_path[0] ? ctx->socket_path : NULL, &c->conn);
	if (r != KEYSVC_OK) {
		c->conn = NULL;
		return r;
	}
	if ((r = keysvc_set_timeout(c->conn, ctx->timeout_ms)) != KEYSVC_OK) {
		keysvc_close(c->conn);
		c->conn = NULL;
	}
	return r;
}

static void conn_drop(struct ksp_conn *c)
{
	keysvc_close(c->conn);
	c->conn = NULL;
}

/*
 * Whether a request that failed on a connection kept from an earlier call
 * never reached keysvcd (the daemon had closed its end: idle timeout,
 * restart). Never a timeout or a failure after the request went out: the
 * daemon may have read it, and a sign request sent again would be a second
 * signature.
 */
static int never_sent(const keysvc *conn, int r)
{
	return r == KEYSVC_E_IO && keysvc_request_unsent(conn);
}

/* One request to keysvcd: @op on a connection of the pool. 1, or 0 with an OpenSSL error raised. */
static int request(struct ksp_ctx *ctx, int (*op)(keysvc *conn, void *arg), void *arg,
		   const char *what, const char *name)
{
	struct ksp_conn *c;
	const char *path;
	int r, reused, e;

	/* OpenSSL drops errors raised while it loads openssl.cnf: a bad setting
	 * is reported here, where the application sees it, and nothing is sent. */
	if (ctx->config_error[0] != '\0') {
		ksp_raise(ctx, KSP_R_BAD_CONFIG, "%s %s: %s", what, name, ctx->config_error);
		return 0;
	}
	c = conn_borrow(ctx);
	for (;;) {
		reused = c->conn != NULL;
		if (!reused && (r = conn_open(ctx, c)) != KEYSVC_OK) {
			e = errno;
			path = ctx->socket_path[0] ? ctx->socket_path : getenv(KSP_SOCKET_ENV);
			if (path == NULL || path[0] == '\0')
				path = KEYSVC_DEFAULT_SOCKET;
			ksp_raise(ctx, reason_for(r), "%s %s: %s %s: %s", what, name, keysvc_strerror(r),
				  path, strerror(e));
			break;
		}
		if ((r = op(c->conn, arg)) == KEYSVC_OK)
			break;
		/* Once only: the next try is on a new connection, which is not reused. */
		if (reused && never_sent(c->conn, r)) {
			conn_drop(c);
			continue;
		}
		/* libkeysvc's message lives in the handle: raise before dropping it. */
		raise_from(ctx, c->conn, r, what, name);
		if (r == KEYSVC_E_IO || r == KEYSVC_E_PROTOCOL)
			conn_drop(c);
		break;
	}
	conn_return(ctx, c);
	return r == KEYSVC_OK;
}

struct public_req {
	const char *name;
	char *pem, *type, *purposes;
};

static int do_public(keysvc *conn, void *arg)
{
	struct public_req *q = arg;
	int r = keysvc_key_public(conn, q->name, &q->pem, &q->type);

	/* key.public again, for its purposes (NULL from a daemon before them). */
	return r == KEYSVC_OK ? keysvc_key_purposes(conn, q->name, &q->purposes, NULL) : r;
}

struct ksp_key *ksp_key_fetch(struct ksp_ctx *ctx, const char *name)
{
	struct public_req q = { .name = name };
	struct ksp_key *key = NULL;
	const char *why = NULL;
	BIO *bio = NULL;

	if (!request(ctx, do_public, &q, "key", name))
		goto out;
	if ((key = calloc(1, sizeof(*key))) == NULL)
		goto out;
	atomic_init(&key->refs, 1);
	key->ctx = ctx;
	key->parts = OSSL_KEYMGMT_SELECT_ALL;
	snprintf(key->name, sizeof(key->name), "%s", name);
	if ((bio = BIO_new_mem_buf(q.pem, -1)) == NULL ||
	    (key->pub = PEM_read_bio_PUBKEY_ex(bio, NULL, NULL, NULL, ctx->libctx, KSP_OTHERS)) == NULL) {
		ksp_raise(ctx, KSP_R_INTERNAL, "key %s: keysvcd sent an unreadable public key", name);
		ksp_key_free(key);
		key = NULL;
		goto out;
	}
	key->is_ec = EVP_PKEY_is_a(key->pub, "EC");
	/* A purpose this provider does not know (a newer daemon's) leaves the digest form. */
	if (q.purposes != NULL && ks_purposes_parse(q.purposes, &key->purposes, &why) != 0)
		key->purposes = 0;
	if (!key->is_ec && !EVP_PKEY_is_a(key->pub, "RSA")) {
		ksp_raise(ctx, KSP_R_UNSUPPORTED, "key %s: neither RSA nor EC", name);
		ksp_key_free(key);
		key = NULL;
	}
out:
	BIO_free(bio);
	free(q.pem);
	free(q.type);
	free(q.purposes);
	return key;
}

int ksp_key_signs_messages(const struct ksp_key *key)
{
	return key->purposes != 0 && !(key->purposes & KS_PURPOSE_SIGN);
}

void ksp_key_free(struct ksp_key *key)
{
	if (key == NULL || atomic_fetch_sub(&key->refs, 1) != 1)
		return;
	EVP_PKEY_free(key->pub);
	free(key);
}

struct sign_req {
	const char *name, *alg;
	const uint8_t *digest;        /* or the message, when is_data */
	size_t digest_len;
	uint8_t **sig;
	size_t *sig_len;
	int is_data;
};

static int do_sign(keysvc *conn, void *arg)
{
	struct sign_req *q = arg;

	if (q->is_data)
		return keysvc_sign_data(conn, q->name, q->alg, q->digest, q->digest_len, q->sig, q->sig_len);
	return keysvc_sign_digest(conn, q->name, q->alg, q->digest, q->digest_len, q->sig, q->sig_len);
}

int ksp_sign_digest(struct ksp_key *key, const char *alg, const uint8_t *digest,
		    size_t digest_len, uint8_t **sig, size_t *sig_len)
{
	struct sign_req q = { key->name, alg, digest, digest_len, sig, sig_len, 0 };

	return request(key->ctx, do_sign, &q, "sign with key", key->name);
}

int ksp_sign_data(struct ksp_key *key, const char *alg, const uint8_t *data, size_t len,
		  uint8_t **sig, size_t *sig_len)
{
	struct sign_req q = { key->name, alg, data, len, sig, sig_len, 1 };

	return request(key->ctx, do_sign, &q, "sign with key", key->name);
}

/* ---- the provider ----------------------------------------------------------- */

static const OSSL_ALGORITHM keymgmts[] = {
	{ "RSA:rsaEncryption:1.2.840.113549.1.1.1", "provider=keysvc", ksp_rsa_keymgmt_functions,
	  "keysvc RSA keys" },
	{ "EC:id-ecPublicKey:1.2.840.10045.2.1", "provider=keysvc", ksp_ec_keymgmt_functions,
	  "keysvc EC keys" },
	{ NULL, NULL, NULL, NULL },
};

static const OSSL_ALGORITHM signatures[] = {
	{ "RSA:rsaEncryption:1.2.840.113549.1.1.1", "provider=keysvc", ksp_rsa_signature_functions,
	  "RSA PKCS#1 v1.5 and PSS signatures by keysvcd" },
	{ "ECDSA", "provider=keysvc", ksp_ecdsa_signature_functions, "ECDSA by keysvcd" },
	{ NULL, NULL, NULL, NULL },
};

/* The public key of a keysvc key, written without another provider's encoder. */
#define KSP_SPKI_ENCODER(names, output, fns) \
	{ names, "provider=keysvc,output=" output ",structure=SubjectPublicKeyInfo", fns, \
	  "public half of keysvc keys" }

static const OSSL_ALGORITHM encoders[] = {
	KSP_SPKI_ENCODER("RSA:rsaEncryption:1.2.840.113549.1.1.1", "der", ksp_spki_der_encoder_functions),
	KSP_SPKI_ENCODER("RSA:rsaEncryption:1.2.840.113549.1.1.1", "pem", ksp_spki_pem_encoder_functions),
	KSP_SPKI_ENCODER("EC:id-ecPublicKey:1.2.840.10045.2.1", "der", ksp_spki_der_encoder_functions),
	KSP_SPKI_ENCODER("EC:id-ecPublicKey:1.2.840.10045.2.1", "pem", ksp_spki_pem_encoder_functions),
	{ NULL, NULL, NULL, NULL },
};

static const OSSL_ALGORITHM stores[] = {
	{ "keysvc", "provider=keysvc", ksp_store_functions, "keys held by keysvcd (keysvc:NAME)" },
	{ NULL, NULL, NULL, NULL },
};

/* Key reference files (decoder.c): PEM to DER, then DER to a keysvc key. */
static const OSSL_ALGORITHM decoders[] = {
	{ "DER", "provider=keysvc,input=pem", ksp_pem_decoder_functions,
	  "keysvc key reference files (PEM)" },
	{ "RSA:rsaEncryption:1.2.840.113549.1.1.1", KSP_DECODER_DER_PROPS,
	  ksp_der_rsa_decoder_functions, "keysvc key references to RSA keys" },
	{ "EC:id-ecPublicKey:1.2.840.10045.2.1", KSP_DECODER_DER_PROPS,
	  ksp_der_ec_decoder_functions, "keysvc key references to EC keys" },
	{ NULL, NULL, NULL, NULL },
};

static const OSSL_ALGORITHM *ksp_query(void *provctx, int operation_id, int *no_cache)
{
	(void)provctx;
	*no_cache = 0;
	switch (operation_id) {
	case OSSL_OP_KEYMGMT:
		return keymgmts;
	case OSSL_OP_SIGNATURE:
		return signatures;
	case OSSL_OP_STORE:
		return stores;
	case OSSL_OP_DECODER:
		return decoders;
	case OSSL_OP_ENCODER:
		return encoders;
	default:
		return NULL;
	}
}

static const OSSL_PARAM *ksp_gettable_params(void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_DEFN(OSSL_PROV_PARAM_NAME, OSSL_PARAM_UTF8_PTR, NULL, 0),
		OSSL_PARAM_DEFN(OSSL_PROV_PARAM_VERSION, OSSL_PARAM_UTF8_PTR, NULL, 0),
		OSSL_PARAM_DEFN(OSSL_PROV_PARAM_BUILDINFO, OSSL_PARAM_UTF8_PTR, NULL, 0),
		OSSL_PARAM_DEFN(OSSL_PROV_PARAM_STATUS, OSSL_PARAM_INTEGER, NULL, 0),
		OSSL_PARAM_END,
	};

	(void)provctx;
	return params;
}

static int ksp_get_params(void *provctx, OSSL_PARAM params[])
{
	OSSL_PARAM *p;

	(void)provctx;
	if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME)) != NULL &&
	    !OSSL_PARAM_set_utf8_ptr(p, KSP_PROVIDER_NAME))
		return 0;
	if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION)) != NULL &&
	    !OSSL_PARAM_set_utf8_ptr(p, KEYSVC_VERSION))
		return 0;
	if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO)) != NULL &&
	    !OSSL_PARAM_set_utf8_ptr(p, "keysvc " KEYSVC_VERSION))
		return 0;
	if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS)) != NULL &&
	    !OSSL_PARAM_set_int(p, 1))
		return 0;
	return 1;
}

static const OSSL_ITEM *ksp_reasons(void *provctx)
{
	(void)provctx;
	return reason_strings;
}

static void ksp_teardown(void *provctx)
{
	struct ksp_ctx *ctx = provctx;

	if (ctx == NULL)
		return;
	for (int i = 0; i < KSP_POOL_MAX; i++)
		if (ctx->pool[i].pid == getpid())
			keysvc_close(ctx->pool[i].conn);
	OSSL_LIB_CTX_free(ctx->libctx);
	pthread_cond_destroy(&ctx->idle);
	pthread_mutex_destroy(&ctx->lock);
	free(ctx);
}

static const OSSL_DISPATCH provider_functions[] = {
	{ OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))ksp_query },
	{ OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))ksp_gettable_params },
	{ OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))ksp_get_params },
	{ OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, (void (*)(void))ksp_reasons },
	{ OSSL_FUNC_PROVIDER_GET_CAPABILITIES, (void (*)(void))ksp_get_capabilities },
	{ OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))ksp_teardown },
	{ 0, NULL },
};

/* A whole number from openssl.cnf, @min to @max, digits only. */
static int parse_count(const char *text, long min, long max, long *out)
{
	char *end = NULL;
	long v;

	if (text[0] < '0' || text[0] > '9')
		return 0;
	errno = 0;
	v = strtol(text, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return 0;
	*out = v;
	return 1;
}

__attribute__((visibility("default")))
int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
		       const OSSL_DISPATCH **out, void **provctx)
{
	OSSL_FUNC_core_get_params_fn *get_params = NULL;
	const OSSL_DISPATCH *core = in;
	struct ksp_ctx *ctx;
	char *socket = NULL, *timeout = NULL, *connections = NULL;
	OSSL_PARAM params[4];
	long v;
	int r = 0;

	if ((ctx = calloc(1, sizeof(*ctx))) == NULL)
		return 0;
	ctx->handle = handle;
	ctx->timeout_ms = KSP_DEFAULT_TIMEOUT_S * 1000;
	ctx->pool_size = KSP_DEFAULT_POOL;
	pthread_mutex_init(&ctx->lock, NULL);
	pthread_cond_init(&ctx->idle, NULL);
	for (; in->function_id != 0; in++) {
		switch (in->function_id) {
		case OSSL_FUNC_CORE_GET_PARAMS:
			get_params = OSSL_FUNC_core_get_params(in);
			break;
		case OSSL_FUNC_CORE_NEW_ERROR:
			ctx->new_error = OSSL_FUNC_core_new_error(in);
			break;
		case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
			ctx->set_error_debug = OSSL_FUNC_core_set_error_debug(in);
			break;
		case OSSL_FUNC_CORE_VSET_ERROR:
			ctx->vset_error = OSSL_FUNC_core_vset_error(in);
			break;
		default:
			break;
		}
	}
	/*
	 * From this provider's openssl.cnf section: "socket = PATH" (else
	 * libkeysvc's default), "timeout = SECONDS" (else KSP_DEFAULT_TIMEOUT_S)
	 * and "connections = N" (else KSP_DEFAULT_POOL).
	 */
	if (get_params != NULL) {
		params[0] = OSSL_PARAM_construct_utf8_ptr("socket", &socket, 0);
		params[1] = OSSL_PARAM_construct_utf8_ptr("timeout", &timeout, 0);
		params[2] = OSSL_PARAM_construct_utf8_ptr("connections", &connections, 0);
		params[3] = OSSL_PARAM_construct_end();
		if (!get_params(handle, params))
			socket = timeout = connections = NULL;
		if (socket != NULL && strlen(socket) >= sizeof(ctx->socket_path))
			/* Cut short, it would name another socket. */
			snprintf(ctx->config_error, sizeof(ctx->config_error),
				 "socket = %.40s...: longer than the %zu bytes of a Unix socket path",
				 socket, sizeof(ctx->socket_path) - 1);
		else if (socket != NULL && socket[0] != '\0')
			memcpy(ctx->socket_path, socket, strlen(socket) + 1);
		if (timeout != NULL && ctx->config_error[0] == '\0') {
			if (parse_count(timeout, 0, KSP_MAX_TIMEOUT_S, &v))
				ctx->timeout_ms = (int)v * 1000;
			else
				snprintf(ctx->config_error, sizeof(ctx->config_error),
					 "timeout = %.32s: expected whole seconds, 0 to %d", timeout, KSP_MAX_TIMEOUT_S);
		}
		if (connections != NULL && ctx->config_error[0] == '\0') {
			if (parse_count(connections, 1, KSP_POOL_MAX, &v))
				ctx->pool_size = (int)v;
			else
				snprintf(ctx->config_error, sizeof(ctx->config_error),
					 "connections = %.32s: expected a whole number, 1 to %d", connections,
					 KSP_POOL_MAX);
		}
	}
	/* Digests and the public halves of keys come from the application's other providers. */
	if ((ctx->libctx = OSSL_LIB_CTX_new_child(handle, core)) == NULL)
		goto out;
	*out = provider_functions;
	*provctx = ctx;
	r = 1;
out:
	if (!r) {
		pthread_cond_destroy(&ctx->idle);
		pthread_mutex_destroy(&ctx->lock);
		free(ctx);
	}
	return r;
}
