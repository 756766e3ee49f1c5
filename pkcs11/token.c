#include "pkcs11/token.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "proto/log.h"
#include "proto/secmem.h"

#define KS_MAX_SESSIONS 64
#define KS_MAX_OBJECTS 4096
#define KS_OBJ_ID_MAX 64
#define KS_SIG_MAX 1024
#define KS_BACKOFF_MIN_MS 1000
#define KS_BACKOFF_MAX_MS 60000

enum token_state {
	TOKEN_UP,
	TOKEN_DOWN,          /* reconnecting in the background */
	TOKEN_PIN_REJECTED,  /* never log in again */
};

struct ks_token {
	CK_FUNCTION_LIST *f;
	int initialized;
	char *module_path;
	P11KitUri *uri;
	char *label, *serial;
	char *pin;
	size_t pin_len;
	CK_SLOT_ID slot;

	/* Operations hold it shared; reopening and reconnecting hold it exclusively. */
	pthread_rwlock_t rw;
	unsigned generation;

	/* The session pool (contents change only under rw held exclusively). */
	pthread_mutex_t pool_lock;
	pthread_cond_t pool_cond;
	unsigned nsessions;
	CK_SESSION_HANDLE sessions[KS_MAX_SESSIONS];
	int busy[KS_MAX_SESSIONS];
	unsigned wait_ms;

	/* State, the reconnect thread and cached info for hello. */
	pthread_mutex_t state_lock;
	pthread_cond_t state_cond;
	enum token_state state;
	int closing;
	int thread_started;
	pthread_t reconnect_thread;
	struct ks_token_info info;

	pthread_mutex_t generate_lock;
};

/* ---- the one wrapper every C_* call goes through ------------------------ */

static const struct {
	CK_RV rv;
	const char *name;
} ckr_names[] = {
#define N(x) { x, #x }
	N(CKR_OK), N(CKR_CANCEL), N(CKR_HOST_MEMORY), N(CKR_SLOT_ID_INVALID),
	N(CKR_GENERAL_ERROR), N(CKR_FUNCTION_FAILED), N(CKR_ARGUMENTS_BAD),
	N(CKR_NO_EVENT), N(CKR_NEED_TO_CREATE_THREADS), N(CKR_CANT_LOCK),
	N(CKR_ATTRIBUTE_READ_ONLY), N(CKR_ATTRIBUTE_SENSITIVE),
	N(CKR_ATTRIBUTE_TYPE_INVALID), N(CKR_ATTRIBUTE_VALUE_INVALID),
	N(CKR_DATA_INVALID), N(CKR_DATA_LEN_RANGE), N(CKR_DEVICE_ERROR),
	N(CKR_DEVICE_MEMORY), N(CKR_DEVICE_REMOVED), N(CKR_FUNCTION_CANCELED),
	N(CKR_FUNCTION_NOT_PARALLEL), N(CKR_FUNCTION_NOT_SUPPORTED),
	N(CKR_KEY_HANDLE_INVALID), N(CKR_KEY_SIZE_RANGE), N(CKR_KEY_TYPE_INCONSISTENT),
	N(CKR_KEY_FUNCTION_NOT_PERMITTED), N(CKR_KEY_NOT_WRAPPABLE),
	N(CKR_KEY_UNEXTRACTABLE), N(CKR_MECHANISM_INVALID), N(CKR_MECHANISM_PARAM_INVALID),
	N(CKR_OBJECT_HANDLE_INVALID), N(CKR_OPERATION_ACTIVE), N(CKR_OPERATION_NOT_INITIALIZED),
	N(CKR_PIN_INCORRECT), N(CKR_PIN_INVALID), N(CKR_PIN_LEN_RANGE), N(CKR_PIN_EXPIRED),
	N(CKR_PIN_LOCKED), N(CKR_SESSION_CLOSED), N(CKR_SESSION_COUNT),
	N(CKR_SESSION_HANDLE_INVALID), N(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
	N(CKR_SESSION_READ_ONLY), N(CKR_SESSION_EXISTS), N(CKR_SESSION_READ_ONLY_EXISTS),
	N(CKR_SESSION_READ_WRITE_SO_EXISTS), N(CKR_SIGNATURE_INVALID),
	N(CKR_SIGNATURE_LEN_RANGE), N(CKR_TEMPLATE_INCOMPLETE), N(CKR_TEMPLATE_INCONSISTENT),
	N(CKR_TOKEN_NOT_PRESENT), N(CKR_TOKEN_NOT_RECOGNIZED), N(CKR_TOKEN_WRITE_PROTECTED),
	N(CKR_USER_ALREADY_LOGGED_IN), N(CKR_USER_NOT_LOGGED_IN), N(CKR_USER_PIN_NOT_INITIALIZED),
	N(CKR_USER_TYPE_INVALID), N(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
	N(CKR_USER_TOO_MANY_TYPES), N(CKR_BUFFER_TOO_SMALL), N(CKR_RANDOM_NO_RNG),
	N(CKR_DOMAIN_PARAMS_INVALID), N(CKR_CRYPTOKI_NOT_INITIALIZED),
	N(CKR_CRYPTOKI_ALREADY_INITIALIZED), N(CKR_FUNCTION_REJECTED),
#undef N
};

const char *ks_ckr_name(unsigned long rv)
{
	for (size_t i = 0; i < sizeof(ckr_names) / sizeof(ckr_names[0]); i++)
		if (ckr_names[i].rv == rv)
			return ckr_names[i].name;
	return "CKR_UNKNOWN";
}

/* Failures are logged here once, with the function's name; callers only classify. */
static CK_RV p11_result(const char *fn, CK_RV rv)
{
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN && rv != CKR_BUFFER_TOO_SMALL)
		ks_debug("%s: %s", fn, ks_ckr_name(rv));
	return rv;
}

#define P11(tok, fn, ...) p11_result(#fn, (tok)->f->fn(__VA_ARGS__))

enum rv_class { RV_OTHER, RV_SESSION, RV_DEVICE, RV_PIN };

static enum rv_class classify(CK_RV rv)
{
	switch (rv) {
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_USER_NOT_LOGGED_IN:
		return RV_SESSION;
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_DEVICE_ERROR:
	case CKR_SLOT_ID_INVALID:
	case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_CRYPTOKI_NOT_INITIALIZED:
		return RV_DEVICE;
	case CKR_PIN_INCORRECT:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
	case CKR_PIN_EXPIRED:
	case CKR_PIN_LOCKED:
		return RV_PIN;
	default:
		return RV_OTHER;
	}
}

static int rv_errno(CK_RV rv)
{
	switch (rv) {
	case CKR_OK:
		return 0;
	case CKR_HOST_MEMORY:
	case CKR_DEVICE_MEMORY:
		return -ENOMEM;
	case CKR_MECHANISM_INVALID:
	case CKR_MECHANISM_PARAM_INVALID:
	case CKR_FUNCTION_NOT_SUPPORTED:
	case CKR_KEY_SIZE_RANGE:
	case CKR_DOMAIN_PARAMS_INVALID:
		return -EOPNOTSUPP;
	case CKR_KEY_TYPE_INCONSISTENT:
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
	case CKR_DATA_LEN_RANGE:
		return -EINVAL;
	default:
		switch (classify(rv)) {
		case RV_DEVICE:
			return -ENODEV;
		case RV_PIN:
			return -EKEYREJECTED;
		default:
			return -EIO;
		}
	}
}

/* ---- names and small helpers -------------------------------------------- */

int ks_key_name_valid(const char *name)
{
	size_t n;

	if (name == NULL || (n = strlen(name)) == 0 || n > KS_KEY_NAME_MAX)
		return 0;
	if (name[0] == '.' || name[0] == '-')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/* CK_TOKEN_INFO strings are space padded, not NUL terminated. */
static void unpad(char *dst, size_t dst_len, const unsigned char *src, size_t src_len)
{
	size_t n = src_len;

	while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == '\0'))
		n--;
	if (n >= dst_len)
		n = dst_len - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

static const uint8_t oid_p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
static const uint8_t oid_p384[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };

static const uint8_t *ec_params_for(enum ks_key_type type, size_t *len)
{
	if (type == KS_KEY_EC_P256) {
		*len = sizeof(oid_p256);
		return oid_p256;
	}
	if (type == KS_KEY_EC_P384) {
		*len = sizeof(oid_p384);
		return oid_p384;
	}
	return NULL;
}

static enum ks_key_type ec_type_from_params(const uint8_t *p, size_t len)
{
	if (len == sizeof(oid_p256) && memcmp(p, oid_p256, len) == 0)
		return KS_KEY_EC_P256;
	if (len == sizeof(oid_p384) && memcmp(p, oid_p384, len) == 0)
		return KS_KEY_EC_P384;
	return KS_KEY_NONE;
}

static enum ks_key_type rsa_type_from_modulus(const uint8_t *m, size_t len)
{
	while (len > 0 && m[0] == 0) {
		m++;
		len--;
	}
	switch (len * 8) {
	case 2048:
		return KS_KEY_RSA_2048;
	case 3072:
		return KS_KEY_RSA_3072;
	case 4096:
		return KS_KEY_RSA_4096;
	default:
		return KS_KEY_NONE;
	}
}

static void deadline_in(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void cond_init_monotonic(pthread_cond_t *c)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(c, &attr);
	pthread_condattr_destroy(&attr);
}

/* ---- finding the token, logging in, the pool ----------------------------- */

static int token_matches(struct ks_token *tok, CK_TOKEN_INFO *ti)
{
	char buf[33];

	if (tok->uri != NULL)
		return p11_kit_uri_match_token_info(tok->uri, ti);
	if (tok->label != NULL) {
		unpad(buf, sizeof(buf), ti->label, sizeof(ti->label));
		if (strcmp(buf, tok->label) != 0)
			return 0;
	}
	if (tok->serial != NULL) {
		unpad(buf, sizeof(buf), ti->serialNumber, sizeof(ti->serialNumber));
		if (strcmp(buf, tok->serial) != 0)
			return 0;
	}
	return 1;
}

static void refresh_info(struct ks_token *tok, const CK_TOKEN_INFO *ti)
{
	CK_INFO ci;
	struct ks_token_info info;

	memset(&info, 0, sizeof(info));
	unpad(info.label, sizeof(info.label), ti->label, sizeof(ti->label));
	unpad(info.manufacturer, sizeof(info.manufacturer), ti->manufacturerID,
	      sizeof(ti->manufacturerID));
	unpad(info.model, sizeof(info.model), ti->model, sizeof(ti->model));
	unpad(info.serial, sizeof(info.serial), ti->serialNumber, sizeof(ti->serialNumber));
	if (P11(tok, C_GetInfo, &ci) == CKR_OK)
		unpad(info.library, sizeof(info.library), ci.libraryDescription,
		      sizeof(ci.libraryDescription));
	pthread_mutex_lock(&tok->state_lock);
	info.up = tok->info.up;
	tok->info = info;
	pthread_mutex_unlock(&tok->state_lock);
}

/* Find the configured token's slot. -ENODEV if absent, -EINVAL if ambiguous. */
static int find_slot(struct ks_token *tok)
{
	CK_SLOT_ID slots[256];
	CK_ULONG n = 256;
	CK_TOKEN_INFO ti, found_ti;
	int found = 0;
	CK_RV rv;

	if ((rv = P11(tok, C_GetSlotList, CK_TRUE, slots, &n)) != CKR_OK) {
		ks_err("C_GetSlotList: %s", ks_ckr_name(rv));
		return rv_errno(rv) == -EIO ? -ENODEV : rv_errno(rv);
	}
	for (CK_ULONG i = 0; i < n; i++) {
		if (P11(tok, C_GetTokenInfo, slots[i], &ti) != CKR_OK)
			continue;
		if (!(ti.flags & CKF_TOKEN_INITIALIZED) || !token_matches(tok, &ti))
			continue;
		if (found++ == 0) {
			tok->slot = slots[i];
			found_ti = ti;
		}
	}
	if (found == 0) {
		ks_warn("the configured token is not present");
		return -ENODEV;
	}
	if (found > 1) {
		ks_err("%d tokens match the configuration; name one by serial or URI", found);
		return -EINVAL;
	}
	refresh_info(tok, &found_ti);
	return 0;
}

static void close_pool(struct ks_token *tok)
{
	if (tok->initialized)
		P11(tok, C_CloseAllSessions, tok->slot);
	for (unsigned i = 0; i < tok->nsessions; i++) {
		tok->sessions[i] = CK_INVALID_HANDLE;
		tok->busy[i] = 0;
	}
}

/* Open the pool and log in; called with rw held exclusively (or before any thread). */
static int open_pool(struct ks_token *tok)
{
	CK_RV rv;

	if (tok->state == TOKEN_PIN_REJECTED)
		return -EKEYREJECTED;
	for (unsigned i = 0; i < tok->nsessions; i++) {
		rv = P11(tok, C_OpenSession, tok->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
			 NULL, NULL, &tok->sessions[i]);
		if (rv != CKR_OK) {
			ks_err("C_OpenSession: %s", ks_ckr_name(rv));
			close_pool(tok);
			return rv_errno(rv) == -EIO ? -ENODEV : rv_errno(rv);
		}
		tok->busy[i] = 0;
	}
	rv = P11(tok, C_Login, tok->sessions[0], CKU_USER, (CK_UTF8CHAR *)tok->pin,
		 (CK_ULONG)tok->pin_len);
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
		close_pool(tok);
		if (classify(rv) == RV_PIN) {
			/* Tokens lock after a few wrong PINs: this one is never presented again. */
			ks_err("the token rejected the PIN (%s); not trying it again", ks_ckr_name(rv));
			pthread_mutex_lock(&tok->state_lock);
			tok->state = TOKEN_PIN_REJECTED;
			tok->info.up = 0;
			pthread_mutex_unlock(&tok->state_lock);
			ks_secmem_free(tok->pin, tok->pin_len + 1);
			tok->pin = NULL;
			tok->pin_len = 0;
			return -EKEYREJECTED;
		}
		ks_err("C_Login: %s", ks_ckr_name(rv));
		return rv_errno(rv) == -EIO ? -ENODEV : rv_errno(rv);
	}
	return 0;
}

static void set_state(struct ks_token *tok, enum token_state st)
{
	pthread_mutex_lock(&tok->state_lock);
	if (tok->state != TOKEN_PIN_REJECTED)
		tok->state = st;
	tok->info.up = tok->state == TOKEN_UP;
	pthread_cond_broadcast(&tok->state_cond);
	pthread_mutex_unlock(&tok->state_lock);
}

static void mark_down(struct ks_token *tok, CK_RV rv)
{
	pthread_mutex_lock(&tok->state_lock);
	if (tok->state == TOKEN_UP) {
		ks_err("token unavailable (%s); reconnecting in the background", ks_ckr_name(rv));
		tok->state = TOKEN_DOWN;
		tok->info.up = 0;
		pthread_cond_broadcast(&tok->state_cond);
	}
	pthread_mutex_unlock(&tok->state_lock);
}

/* After a lost session or login: reopen everything once per generation. */
static int reopen(struct ks_token *tok, unsigned seen_generation)
{
	int r = 0;

	pthread_rwlock_wrlock(&tok->rw);
	if (tok->generation == seen_generation && tok->state == TOKEN_UP) {
		ks_warn("token sessions lost; reopening and logging in again");
		close_pool(tok);
		r = open_pool(tok);
		tok->generation++;
		if (r == -ENODEV)
			mark_down(tok, CKR_DEVICE_REMOVED);
	}
	pthread_rwlock_unlock(&tok->rw);
	return r;
}

static int reconnect_locked(struct ks_token *tok)
{
	CK_C_INITIALIZE_ARGS args;
	CK_RV rv;
	int r;

	close_pool(tok);
	if (tok->initialized) {
		P11(tok, C_Finalize, NULL);
		tok->initialized = 0;
	}
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	rv = P11(tok, C_Initialize, &args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
		return -ENODEV;
	tok->initialized = 1;
	if ((r = find_slot(tok)) != 0)
		return r;
	return open_pool(tok);
}

static void *reconnect_main(void *arg)
{
	struct ks_token *tok = arg;
	unsigned backoff = KS_BACKOFF_MIN_MS;
	struct timespec until;
	int r;

	for (;;) {
		pthread_mutex_lock(&tok->state_lock);
		while (!tok->closing && tok->state != TOKEN_DOWN)
			pthread_cond_wait(&tok->state_cond, &tok->state_lock);
		if (tok->closing) {
			pthread_mutex_unlock(&tok->state_lock);
			break;
		}
		pthread_mutex_unlock(&tok->state_lock);

		pthread_rwlock_wrlock(&tok->rw);
		r = reconnect_locked(tok);
		if (r == 0) {
			tok->generation++;
			set_state(tok, TOKEN_UP);
			ks_notice("token reconnected");
			backoff = KS_BACKOFF_MIN_MS;
		}
		pthread_rwlock_unlock(&tok->rw);
		if (r == 0 || r == -EKEYREJECTED)
			continue;

		ks_info("token still unavailable; next attempt in %u ms", backoff);
		deadline_in(&until, backoff);
		pthread_mutex_lock(&tok->state_lock);
		while (!tok->closing &&
		       pthread_cond_timedwait(&tok->state_cond, &tok->state_lock, &until) != ETIMEDOUT)
			;
		pthread_mutex_unlock(&tok->state_lock);
		backoff = backoff * 2 > KS_BACKOFF_MAX_MS ? KS_BACKOFF_MAX_MS : backoff * 2;
	}
	return NULL;
}

int ks_token_open(const struct ks_token_config *cfg, struct ks_token **out)
{
	struct ks_token *tok;
	pthread_rwlockattr_t rwattr;
	CK_C_INITIALIZE_ARGS args;
	CK_RV rv;
	int r;

	*out = NULL;
	if (cfg->module_path == NULL || cfg->module_path[0] != '/') {
		ks_err("the PKCS#11 module path must be absolute");
		return -EINVAL;
	}
	if (cfg->pin == NULL || cfg->pin_len == 0 || cfg->pin_len > 256)
		return -EINVAL;
	if ((tok = calloc(1, sizeof(*tok))) == NULL)
		return -ENOMEM;
	pthread_rwlockattr_init(&rwattr);
	/* A reconnect must not starve behind a stream of operations. */
	pthread_rwlockattr_setkind_np(&rwattr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&tok->rw, &rwattr);
	pthread_rwlockattr_destroy(&rwattr);
	pthread_mutex_init(&tok->pool_lock, NULL);
	cond_init_monotonic(&tok->pool_cond);
	pthread_mutex_init(&tok->state_lock, NULL);
	cond_init_monotonic(&tok->state_cond);
	pthread_mutex_init(&tok->generate_lock, NULL);
	tok->nsessions = cfg->sessions == 0 ? 4 : cfg->sessions;
	if (tok->nsessions > KS_MAX_SESSIONS)
		tok->nsessions = KS_MAX_SESSIONS;
	tok->wait_ms = cfg->session_wait_ms == 0 ? 30000 : cfg->session_wait_ms;
	tok->state = TOKEN_UP;

	r = -ENOMEM;
	if ((tok->module_path = strdup(cfg->module_path)) == NULL ||
	    (cfg->token_label != NULL && (tok->label = strdup(cfg->token_label)) == NULL) ||
	    (cfg->token_serial != NULL && (tok->serial = strdup(cfg->token_serial)) == NULL))
		goto fail;
	if ((tok->pin = ks_secmem_alloc(cfg->pin_len + 1)) == NULL)
		goto fail;
	memcpy(tok->pin, cfg->pin, cfg->pin_len);
	tok->pin_len = cfg->pin_len;
	if (cfg->token_uri != NULL) {
		tok->uri = p11_kit_uri_new();
		if (tok->uri == NULL)
			goto fail;
		if ((r = p11_kit_uri_parse(cfg->token_uri, P11_KIT_URI_FOR_TOKEN, tok->uri)) !=
		    P11_KIT_URI_OK) {
			ks_err("token URI: %s", p11_kit_uri_message(r));
			r = -EINVAL;
			goto fail;
		}
	}

	tok->f = p11_kit_module_load(tok->module_path,
				     P11_KIT_MODULE_UNMANAGED | P11_KIT_MODULE_CRITICAL);
	if (tok->f == NULL) {
		ks_err("cannot load PKCS#11 module %s: %s", tok->module_path, p11_kit_message());
		r = -ENODEV;
		goto fail;
	}
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	rv = P11(tok, C_Initialize, &args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		ks_err("C_Initialize: %s", ks_ckr_name(rv));
		r = -ENODEV;
		goto fail;
	}
	tok->initialized = 1;
	if ((r = find_slot(tok)) != 0 || (r = open_pool(tok)) != 0)
		goto fail;
	tok->info.up = 1;
	if (pthread_create(&tok->reconnect_thread, NULL, reconnect_main, tok) != 0) {
		r = -ENOMEM;
		goto fail;
	}
	tok->thread_started = 1;
	ks_info("token \"%s\" (serial %s) open with %u sessions", tok->info.label,
		tok->info.serial, tok->nsessions);
	*out = tok;
	return 0;
fail:
	ks_token_close(tok);
	return r;
}

void ks_token_close(struct ks_token *tok)
{
	if (tok == NULL)
		return;
	if (tok->thread_started) {
		pthread_mutex_lock(&tok->state_lock);
		tok->closing = 1;
		pthread_cond_broadcast(&tok->state_cond);
		pthread_mutex_unlock(&tok->state_lock);
		pthread_join(tok->reconnect_thread, NULL);
	}
	if (tok->f != NULL) {
		if (tok->initialized) {
			close_pool(tok);
			P11(tok, C_Finalize, NULL);
		}
		p11_kit_module_release(tok->f);
	}
	if (tok->pin != NULL)
		ks_secmem_free(tok->pin, tok->pin_len + 1);
	if (tok->uri != NULL)
		p11_kit_uri_free(tok->uri);
	free(tok->module_path);
	free(tok->label);
	free(tok->serial);
	pthread_rwlock_destroy(&tok->rw);
	pthread_mutex_destroy(&tok->pool_lock);
	pthread_cond_destroy(&tok->pool_cond);
	pthread_mutex_destroy(&tok->state_lock);
	pthread_cond_destroy(&tok->state_cond);
	pthread_mutex_destroy(&tok->generate_lock);
	free(tok);
}

int ks_token_get_info(struct ks_token *tok, struct ks_token_info *info)
{
	pthread_mutex_lock(&tok->state_lock);
	*info = tok->info;
	info->up = tok->state == TOKEN_UP;
	pthread_mutex_unlock(&tok->state_lock);
	return 0;
}

/* ---- running an operation with the recovery rules ----------------------- */

struct session_slot {
	unsigned index;
	CK_SESSION_HANDLE h;
	unsigned generation;
};

/* Take the shared lock and a free session. On error nothing is held. */
static int acquire(struct ks_token *tok, struct session_slot *ss)
{
	struct timespec until;
	enum token_state st;
	int r = 0;

	pthread_mutex_lock(&tok->state_lock);
	st = tok->state;
	pthread_mutex_unlock(&tok->state_lock);
	if (st == TOKEN_PIN_REJECTED)
		return -EKEYREJECTED;
	if (st == TOKEN_DOWN)
		return -ENODEV;
	pthread_rwlock_rdlock(&tok->rw);
	/* The state may have changed while we waited for the lock. */
	pthread_mutex_lock(&tok->state_lock);
	st = tok->state;
	pthread_mutex_unlock(&tok->state_lock);
	if (st != TOKEN_UP) {
		pthread_rwlock_unlock(&tok->rw);
		return st == TOKEN_PIN_REJECTED ? -EKEYREJECTED : -ENODEV;
	}
	deadline_in(&until, tok->wait_ms);
	pthread_mutex_lock(&tok->pool_lock);
	for (;;) {
		for (unsigned i = 0; i < tok->nsessions; i++) {
			if (!tok->busy[i]) {
				tok->busy[i] = 1;
				ss->index = i;
				ss->h = tok->sessions[i];
				ss->generation = tok->generation;
				pthread_mutex_unlock(&tok->pool_lock);
				return 0;
			}
		}
		if (pthread_cond_timedwait(&tok->pool_cond, &tok->pool_lock, &until) == ETIMEDOUT) {
			r = -ETIMEDOUT;
			break;
		}
	}
	pthread_mutex_unlock(&tok->pool_lock);
	pthread_rwlock_unlock(&tok->rw);
	return r;
}

static void release(struct ks_token *tok, const struct session_slot *ss)
{
	pthread_mutex_lock(&tok->pool_lock);
	tok->busy[ss->index] = 0;
	pthread_cond_signal(&tok->pool_cond);
	pthread_mutex_unlock(&tok->pool_lock);
	pthread_rwlock_unlock(&tok->rw);
}

/*
 * One attempt of an operation on session @s. Token errors are returned as
 * CK_RV; logical outcomes (no such key, wrong algorithm) as *@err with CKR_OK.
 * @retry is 1 on the second attempt: find objects by the CKA_ID saved then.
 */
typedef CK_RV (*op_fn)(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg,
		       int retry, int *err);

static int run_op(struct ks_token *tok, op_fn fn, void *arg)
{
	struct session_slot ss;
	CK_RV rv;
	int err, r;

	for (int attempt = 0; attempt < 2; attempt++) {
		if ((r = acquire(tok, &ss)) != 0)
			return r;
		err = 0;
		rv = fn(tok, ss.h, arg, attempt, &err);
		release(tok, &ss);
		if (rv == CKR_OK)
			return err;
		switch (classify(rv)) {
		case RV_SESSION:
			if (attempt == 0) {
				if ((r = reopen(tok, ss.generation)) != 0)
					return r;
				continue;
			}
			ks_err("token operation failed again after reopening: %s", ks_ckr_name(rv));
			return -EIO;
		case RV_DEVICE:
			mark_down(tok, rv);
			return -ENODEV;
		default:
			return rv_errno(rv);
		}
	}
	return -EIO;
}

/* ---- object lookup -------------------------------------------------------- */

/*
 * Find objects of @cls by label or by CKA_ID. Returns CKR_OK with *@n set
 * (up to @max handles); token errors as CK_RV.
 */
static CK_RV find_objects(struct ks_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
			  const char *label, const uint8_t *id, size_t id_len,
			  CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *n)
{
	CK_ATTRIBUTE tmpl[2];
	CK_ULONG nt = 0;
	CK_RV rv, rv2;

	tmpl[nt].type = CKA_CLASS;
	tmpl[nt].pValue = &cls;
	tmpl[nt++].ulValueLen = sizeof(cls);
	if (label != NULL) {
		tmpl[nt].type = CKA_LABEL;
		tmpl[nt].pValue = (void *)(uintptr_t)label;
		tmpl[nt++].ulValueLen = strlen(label);
	} else if (id != NULL) {
		tmpl[nt].type = CKA_ID;
		tmpl[nt].pValue = (void *)(uintptr_t)id;
		tmpl[nt++].ulValueLen = id_len;
	}
	*n = 0;
	if ((rv = P11(tok, C_FindObjectsInit, s, tmpl, nt)) != CKR_OK)
		return rv;
	rv = P11(tok, C_FindObjects, s, out, max, n);
	rv2 = P11(tok, C_FindObjectsFinal, s);
	return rv != CKR_OK ? rv : rv2;
}

struct key_ref {
	const char *name;
	uint8_t id[KS_OBJ_ID_MAX];
	size_t id_len;
	int have_id;
	CK_OBJECT_HANDLE priv;
	CK_KEY_TYPE key_type;
	enum ks_key_type type;
};

/* Resolve the private key: by label first, by the saved CKA_ID on a retry. */
static CK_RV resolve_key(struct ks_token *tok, CK_SESSION_HANDLE s, struct key_ref *k,
			 int *err)
{
	CK_OBJECT_HANDLE h[2];
	CK_ULONG n = 0;
	uint8_t params[64], modulus[1024];
	CK_ATTRIBUTE a[2];
	CK_RV rv;

	if (k->have_id)
		rv = find_objects(tok, s, CKO_PRIVATE_KEY, NULL, k->id, k->id_len, h, 2, &n);
	else
		rv = find_objects(tok, s, CKO_PRIVATE_KEY, k->name, NULL, 0, h, 2, &n);
	if (rv != CKR_OK)
		return rv;
	if (n == 0) {
		*err = -ENOENT;
		return CKR_OK;
	}
	if (n > 1) {
		ks_err("more than one private key is labelled %s; refusing to guess", k->name);
		*err = -EIO;
		return CKR_OK;
	}
	k->priv = h[0];
	a[0].type = CKA_ID;
	a[0].pValue = k->id;
	a[0].ulValueLen = sizeof(k->id);
	a[1].type = CKA_KEY_TYPE;
	a[1].pValue = &k->key_type;
	a[1].ulValueLen = sizeof(k->key_type);
	if ((rv = P11(tok, C_GetAttributeValue, s, k->priv, a, 2)) != CKR_OK)
		return rv;
	k->id_len = a[0].ulValueLen;
	k->have_id = 1;
	k->type = KS_KEY_NONE;
	if (k->key_type == CKK_EC) {
		a[0].type = CKA_EC_PARAMS;
		a[0].pValue = params;
		a[0].ulValueLen = sizeof(params);
		if (P11(tok, C_GetAttributeValue, s, k->priv, a, 1) == CKR_OK)
			k->type = ec_type_from_params(params, a[0].ulValueLen);
	} else if (k->key_type == CKK_RSA) {
		a[0].type = CKA_MODULUS;
		a[0].pValue = modulus;
		a[0].ulValueLen = sizeof(modulus);
		if (P11(tok, C_GetAttributeValue, s, k->priv, a, 1) == CKR_OK)
			k->type = rsa_type_from_modulus(modulus, a[0].ulValueLen);
	}
	return CKR_OK;
}

/* ---- public keys ------------------------------------------------------------ */

static int rsa_pkey(const uint8_t *n, size_t n_len, const uint8_t *e, size_t e_len,
		    EVP_PKEY **out)
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	BIGNUM *bn = BN_bin2bn(n, (int)n_len, NULL), *be = BN_bin2bn(e, (int)e_len, NULL);
	int r = -EIO;

	if (bld == NULL || bn == NULL || be == NULL ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) ||
	    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1)
		goto out;
	r = 0;
out:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	return r;
}

static int ec_pkey(enum ks_key_type type, const uint8_t *point, size_t len, EVP_PKEY **out)
{
	size_t raw_len = type == KS_KEY_EC_P256 ? 65 : 97;
	OSSL_PARAM params[3];
	EVP_PKEY_CTX *ctx = NULL;
	int r = -EIO;

	/* CKA_EC_POINT is a DER OCTET STRING around the point on most tokens, raw on some. */
	if (len == raw_len + 2 && point[0] == 0x04 && point[1] == raw_len) {
		point += 2;
		len -= 2;
	}
	if (len != raw_len || point[0] != 0x04)
		return -EIO;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
						     (char *)(uintptr_t)ks_key_type_group(type), 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY,
						      (void *)(uintptr_t)point, len);
	params[2] = OSSL_PARAM_construct_end();
	if ((ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1)
		goto out;
	r = 0;
out:
	EVP_PKEY_CTX_free(ctx);
	return r;
}

/* The public key of @k from its public key object (or, for RSA, the private one). */
static CK_RV read_public(struct ks_token *tok, CK_SESSION_HANDLE s, struct key_ref *k,
			 EVP_PKEY **pub, int *err)
{
	CK_OBJECT_HANDLE h[1], obj;
	CK_ULONG n = 0;
	uint8_t a0[1024], a1[1024];
	CK_ATTRIBUTE a[2];
	CK_RV rv;

	if ((rv = find_objects(tok, s, CKO_PUBLIC_KEY, NULL, k->id, k->id_len, h, 1, &n)) != CKR_OK)
		return rv;
	obj = n == 1 ? h[0] : k->priv;
	if (k->key_type == CKK_RSA) {
		a[0].type = CKA_MODULUS;
		a[1].type = CKA_PUBLIC_EXPONENT;
	} else if (k->key_type == CKK_EC && n == 1 && k->type != KS_KEY_NONE) {
		a[0].type = CKA_EC_POINT;
		a[1].type = CKA_EC_PARAMS;
	} else {
		*err = -EOPNOTSUPP;
		return CKR_OK;
	}
	a[0].pValue = a0;
	a[0].ulValueLen = sizeof(a0);
	a[1].pValue = a1;
	a[1].ulValueLen = sizeof(a1);
	if ((rv = P11(tok, C_GetAttributeValue, s, obj, a, 2)) != CKR_OK)
		return rv;
	if (k->key_type == CKK_RSA)
		*err = rsa_pkey(a0, a[0].ulValueLen, a1, a[1].ulValueLen, pub);
	else
		*err = ec_pkey(k->type, a0, a[0].ulValueLen, pub);
	return CKR_OK;
}

/* ---- generate ---------------------------------------------------------------- */

struct generate_arg {
	const char *name;
	enum ks_key_type type;
	uint8_t id[KS_KEY_ID_LEN];
	EVP_PKEY **pub;
};

static CK_RV exists_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
		       int *err)
{
	const char *name = arg;
	CK_OBJECT_HANDLE h[1];
	CK_ULONG n = 0;
	CK_RV rv;

	(void)retry;
	if ((rv = find_objects(tok, s, CKO_PRIVATE_KEY, name, NULL, 0, h, 1, &n)) != CKR_OK)
		return rv;
	*err = n > 0 ? -EEXIST : 0;
	return CKR_OK;
}

static CK_RV generate_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
			 int *err)
{
	struct generate_arg *g = arg;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG bits = ks_key_type_bits(g->type);
	CK_BYTE exponent[] = { 0x01, 0x00, 0x01 };
	CK_MECHANISM mech = { CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0 };
	CK_OBJECT_HANDLE hpub = CK_INVALID_HANDLE, hpriv = CK_INVALID_HANDLE;
	size_t params_len = 0;
	const uint8_t *params = ec_params_for(g->type, &params_len);
	size_t label_len = strlen(g->name);
	CK_ATTRIBUTE pub_tmpl[] = {
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &no, sizeof(no) },
		{ CKA_VERIFY, &yes, sizeof(yes) },
		{ CKA_ENCRYPT, &no, sizeof(no) },
		{ CKA_WRAP, &no, sizeof(no) },
		{ CKA_VERIFY_RECOVER, &no, sizeof(no) },
		{ CKA_LABEL, (void *)(uintptr_t)g->name, label_len },
		{ CKA_ID, g->id, sizeof(g->id) },
		/* The last entry is the type-specific one. */
		{ CKA_MODULUS_BITS, &bits, sizeof(bits) },
		{ CKA_PUBLIC_EXPONENT, exponent, sizeof(exponent) },
	};
	CK_ULONG npub = sizeof(pub_tmpl) / sizeof(pub_tmpl[0]);
	/* Invariant 1 of the project: sensitive, private, never extractable, sign only. */
	CK_ATTRIBUTE priv_tmpl[] = {
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_SIGN, &yes, sizeof(yes) },
		{ CKA_DECRYPT, &no, sizeof(no) },
		{ CKA_UNWRAP, &no, sizeof(no) },
		{ CKA_DERIVE, &no, sizeof(no) },
		{ CKA_SIGN_RECOVER, &no, sizeof(no) },
		{ CKA_LABEL, (void *)(uintptr_t)g->name, label_len },
		{ CKA_ID, g->id, sizeof(g->id) },
	};
	struct key_ref k;
	CK_RV rv;

	(void)retry;
	if (ks_key_type_family(g->type) == KS_FAMILY_EC) {
		mech.mechanism = CKM_EC_KEY_PAIR_GEN;
		pub_tmpl[npub - 2].type = CKA_EC_PARAMS;
		pub_tmpl[npub - 2].pValue = (void *)(uintptr_t)params;
		pub_tmpl[npub - 2].ulValueLen = params_len;
		npub--;
	}
	rv = P11(tok, C_GenerateKeyPair, s, &mech, pub_tmpl, npub, priv_tmpl,
		 sizeof(priv_tmpl) / sizeof(priv_tmpl[0]), &hpub, &hpriv);
	if (rv != CKR_OK)
		return rv;
	if (g->pub == NULL)
		return CKR_OK;
	memset(&k, 0, sizeof(k));
	k.name = g->name;
	if ((rv = resolve_key(tok, s, &k, err)) != CKR_OK || *err != 0)
		return rv;
	return read_public(tok, s, &k, g->pub, err);
}

int ks_token_generate(struct ks_token *tok, const char *name, enum ks_key_type type,
		      EVP_PKEY **pub)
{
	struct generate_arg g;
	int r;

	if (pub != NULL)
		*pub = NULL;
	if (!ks_key_name_valid(name) || ks_key_type_name(type) == NULL)
		return -EINVAL;
	memset(&g, 0, sizeof(g));
	g.name = name;
	g.type = type;
	g.pub = pub;
	if (RAND_bytes(g.id, sizeof(g.id)) != 1)
		return -EIO;
	/* One generation at a time, so two requests for one name cannot both create it. */
	pthread_mutex_lock(&tok->generate_lock);
	r = run_op(tok, exists_op, (void *)(uintptr_t)name);
	if (r == 0)
		r = run_op(tok, generate_op, &g);
	pthread_mutex_unlock(&tok->generate_lock);
	if (r == 0)
		ks_info("generated %s key %s", ks_key_type_name(type), name);
	return r;
}

/* ---- info, list, public key, delete ---------------------------------------- */

struct info_arg {
	struct key_ref k;
	struct ks_key_info *info;
	EVP_PKEY **pub;
};

static CK_RV has_cert(struct ks_token *tok, CK_SESSION_HANDLE s, const struct key_ref *k,
		      int *yes)
{
	CK_OBJECT_HANDLE h[1];
	CK_ULONG n = 0;
	CK_RV rv;

	rv = find_objects(tok, s, CKO_CERTIFICATE, NULL, k->id, k->id_len, h, 1, &n);
	*yes = n > 0;
	return rv;
}

static CK_RV info_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
		     int *err)
{
	struct info_arg *ia = arg;
	CK_RV rv;

	(void)retry;
	if ((rv = resolve_key(tok, s, &ia->k, err)) != CKR_OK || *err != 0)
		return rv;
	if (ia->pub != NULL)
		return read_public(tok, s, &ia->k, ia->pub, err);
	memset(ia->info, 0, sizeof(*ia->info));
	snprintf(ia->info->name, sizeof(ia->info->name), "%s", ia->k.name);
	ia->info->type = ia->k.type;
	ia->info->id_len = ia->k.id_len > KS_KEY_ID_LEN ? KS_KEY_ID_LEN : ia->k.id_len;
	memcpy(ia->info->id, ia->k.id, ia->info->id_len);
	return has_cert(tok, s, &ia->k, &ia->info->has_cert);
}

int ks_token_key_info(struct ks_token *tok, const char *name, struct ks_key_info *info)
{
	struct info_arg ia;

	if (!ks_key_name_valid(name))
		return -EINVAL;
	memset(&ia, 0, sizeof(ia));
	ia.k.name = name;
	ia.info = info;
	return run_op(tok, info_op, &ia);
}

int ks_token_public_key(struct ks_token *tok, const char *name, EVP_PKEY **pub)
{
	struct info_arg ia;

	*pub = NULL;
	if (!ks_key_name_valid(name))
		return -EINVAL;
	memset(&ia, 0, sizeof(ia));
	ia.k.name = name;
	ia.pub = pub;
	return run_op(tok, info_op, &ia);
}

struct list_arg {
	struct ks_key_info *keys;
	size_t n;
};

static int cmp_key_info(const void *a, const void *b)
{
	return strcmp(((const struct ks_key_info *)a)->name, ((const struct ks_key_info *)b)->name);
}

static CK_RV list_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
		     int *err)
{
	struct list_arg *la = arg;
	CK_OBJECT_HANDLE *h = NULL;
	CK_ULONG n = 0;
	char label[KS_KEY_NAME_MAX + 2];
	CK_RV rv;

	(void)retry;
	free(la->keys);
	la->keys = NULL;
	la->n = 0;
	if ((h = calloc(KS_MAX_OBJECTS, sizeof(*h))) == NULL) {
		*err = -ENOMEM;
		return CKR_OK;
	}
	if ((rv = find_objects(tok, s, CKO_PRIVATE_KEY, NULL, NULL, 0, h, KS_MAX_OBJECTS, &n)) != CKR_OK)
		goto out;
	if (n > 0 && (la->keys = calloc(n, sizeof(*la->keys))) == NULL) {
		*err = -ENOMEM;
		goto out;
	}
	for (CK_ULONG i = 0; i < n; i++) {
		CK_ATTRIBUTE a = { CKA_LABEL, label, sizeof(label) - 1 };
		struct key_ref k;

		rv = P11(tok, C_GetAttributeValue, s, h[i], &a, 1);
		if (rv == CKR_BUFFER_TOO_SMALL || rv == CKR_ATTRIBUTE_TYPE_INVALID ||
		    (rv == CKR_OK && a.ulValueLen == CK_UNAVAILABLE_INFORMATION))
			continue;
		if (rv != CKR_OK)
			goto out;
		label[a.ulValueLen] = '\0';
		if (!ks_key_name_valid(label))
			continue;
		memset(&k, 0, sizeof(k));
		k.name = label;
		if ((rv = resolve_key(tok, s, &k, err)) != CKR_OK)
			goto out;
		if (*err != 0) {
			/* Duplicate labels: shown once, used by nobody until resolved. */
			*err = 0;
			continue;
		}
		/* A valid name is at most KS_KEY_NAME_MAX bytes. */
		memcpy(la->keys[la->n].name, label, strlen(label) + 1);
		la->keys[la->n].type = k.type;
		la->keys[la->n].id_len = k.id_len > KS_KEY_ID_LEN ? KS_KEY_ID_LEN : k.id_len;
		memcpy(la->keys[la->n].id, k.id, la->keys[la->n].id_len);
		if ((rv = has_cert(tok, s, &k, &la->keys[la->n].has_cert)) != CKR_OK)
			goto out;
		la->n++;
	}
	rv = CKR_OK;
out:
	free(h);
	return rv;
}

int ks_token_list(struct ks_token *tok, struct ks_key_info **keys, size_t *n)
{
	struct list_arg la;
	int r;

	memset(&la, 0, sizeof(la));
	*keys = NULL;
	*n = 0;
	r = run_op(tok, list_op, &la);
	if (r != 0) {
		free(la.keys);
		return r;
	}
	if (la.n > 1)
		qsort(la.keys, la.n, sizeof(*la.keys), cmp_key_info);
	*keys = la.keys;
	*n = la.n;
	return 0;
}

static CK_RV delete_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
		       int *err)
{
	static const CK_OBJECT_CLASS classes[] = { CKO_CERTIFICATE, CKO_PUBLIC_KEY, CKO_PRIVATE_KEY };
	struct key_ref *k = arg;
	CK_OBJECT_HANDLE h[16];
	CK_ULONG n;
	CK_RV rv;

	(void)retry;
	if ((rv = resolve_key(tok, s, k, err)) != CKR_OK || *err != 0)
		return rv;
	/* The private key last: until it is gone the name still resolves, so a retry can finish. */
	for (size_t c = 0; c < sizeof(classes) / sizeof(classes[0]); c++) {
		if ((rv = find_objects(tok, s, classes[c], NULL, k->id, k->id_len, h, 16, &n)) != CKR_OK)
			return rv;
		for (CK_ULONG i = 0; i < n; i++)
			if ((rv = P11(tok, C_DestroyObject, s, h[i])) != CKR_OK)
				return rv;
	}
	return CKR_OK;
}

int ks_token_delete(struct ks_token *tok, const char *name)
{
	struct key_ref k;
	int r;

	if (!ks_key_name_valid(name))
		return -EINVAL;
	memset(&k, 0, sizeof(k));
	k.name = name;
	pthread_mutex_lock(&tok->generate_lock);
	r = run_op(tok, delete_op, &k);
	pthread_mutex_unlock(&tok->generate_lock);
	if (r == 0)
		ks_info("deleted key %s", name);
	return r;
}

/* ---- sign ------------------------------------------------------------------------ */

static const uint8_t di_sha256[] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
				     0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20 };
static const uint8_t di_sha384[] = { 0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
				     0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30 };
static const uint8_t di_sha512[] = { 0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
				     0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40 };

struct sign_arg {
	struct key_ref k;
	enum ks_sig_alg alg;
	const uint8_t *digest;
	size_t digest_len;
	uint8_t sig[KS_SIG_MAX];
	CK_ULONG sig_len;
};

static CK_RV sign_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
		     int *err)
{
	struct sign_arg *sa = arg;
	CK_RSA_PKCS_PSS_PARAMS pss;
	CK_MECHANISM mech = { CKM_RSA_PKCS, NULL, 0 };
	uint8_t input[19 + 64];
	size_t input_len = 0;
	const uint8_t *prefix = NULL;
	size_t prefix_len = 0;
	enum ks_key_family fam;
	CK_RV rv;

	(void)retry;
	if ((rv = resolve_key(tok, s, &sa->k, err)) != CKR_OK || *err != 0)
		return rv;
	fam = sa->k.key_type == CKK_RSA ? KS_FAMILY_RSA :
	      sa->k.key_type == CKK_EC ? KS_FAMILY_EC : KS_FAMILY_NONE;
	if (fam != ks_sig_alg_family(sa->alg)) {
		*err = -EINVAL;
		return CKR_OK;
	}
	if (fam == KS_FAMILY_EC) {
		mech.mechanism = CKM_ECDSA;
	} else if (ks_sig_alg_is_pss(sa->alg)) {
		mech.mechanism = CKM_RSA_PKCS_PSS;
		switch (sa->digest_len) {
		case 32:
			pss.hashAlg = CKM_SHA256;
			pss.mgf = CKG_MGF1_SHA256;
			break;
		case 48:
			pss.hashAlg = CKM_SHA384;
			pss.mgf = CKG_MGF1_SHA384;
			break;
		default:
			pss.hashAlg = CKM_SHA512;
			pss.mgf = CKG_MGF1_SHA512;
			break;
		}
		pss.sLen = sa->digest_len;
		mech.pParameter = &pss;
		mech.ulParameterLen = sizeof(pss);
	} else {
		prefix = sa->digest_len == 32 ? di_sha256 : sa->digest_len == 48 ? di_sha384 : di_sha512;
		prefix_len = sizeof(di_sha256);
	}
	if (prefix != NULL)
		memcpy(input, prefix, prefix_len);
	memcpy(input + prefix_len, sa->digest, sa->digest_len);
	input_len = prefix_len + sa->digest_len;
	if ((rv = P11(tok, C_SignInit, s, &mech, sa->k.priv)) != CKR_OK)
		return rv;
	sa->sig_len = sizeof(sa->sig);
	return P11(tok, C_Sign, s, input, input_len, sa->sig, &sa->sig_len);
}

/* r || s of length 2n to a DER ECDSA-Sig-Value. */
static int ecdsa_to_der(const uint8_t *rs, size_t len, uint8_t **der, size_t *der_len)
{
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *r = NULL, *s = NULL;
	unsigned char *out = NULL;
	int n, ret = -EIO;

	if (sig == NULL || len == 0 || len % 2 != 0)
		goto out;
	r = BN_bin2bn(rs, (int)(len / 2), NULL);
	s = BN_bin2bn(rs + len / 2, (int)(len / 2), NULL);
	if (r == NULL || s == NULL || ECDSA_SIG_set0(sig, r, s) != 1)
		goto out;
	r = s = NULL;
	if ((n = i2d_ECDSA_SIG(sig, &out)) <= 0)
		goto out;
	if ((*der = malloc((size_t)n)) == NULL) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(*der, out, (size_t)n);
	*der_len = (size_t)n;
	ret = 0;
out:
	OPENSSL_free(out);
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(sig);
	return ret;
}

int ks_token_sign_digest(struct ks_token *tok, const char *name, enum ks_sig_alg alg,
			 const uint8_t *digest, size_t digest_len, uint8_t **sig,
			 size_t *sig_len)
{
	struct sign_arg *sa;
	int r;

	*sig = NULL;
	*sig_len = 0;
	if (!ks_key_name_valid(name) || ks_sig_alg_name(alg) == NULL || digest == NULL ||
	    digest_len != ks_sig_alg_digest_len(alg))
		return -EINVAL;
	if ((sa = calloc(1, sizeof(*sa))) == NULL)
		return -ENOMEM;
	sa->k.name = name;
	sa->alg = alg;
	sa->digest = digest;
	sa->digest_len = digest_len;
	if ((r = run_op(tok, sign_op, sa)) != 0)
		goto out;
	if (ks_sig_alg_family(alg) == KS_FAMILY_EC) {
		r = ecdsa_to_der(sa->sig, sa->sig_len, sig, sig_len);
	} else if ((*sig = malloc(sa->sig_len)) == NULL) {
		r = -ENOMEM;
	} else {
		memcpy(*sig, sa->sig, sa->sig_len);
		*sig_len = sa->sig_len;
	}
out:
	free(sa);
	return r;
}

/* ---- certificates ---------------------------------------------------------------- */

struct cert_arg {
	struct key_ref k;
	const uint8_t *der;
	size_t der_len;
	uint8_t *out;
	size_t out_len;
};

static CK_RV cert_put_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
			 int *err)
{
	struct cert_arg *ca = arg;
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ctype = CKC_X_509;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_OBJECT_HANDLE old[16], created = CK_INVALID_HANDLE;
	CK_ULONG nold = 0;
	const unsigned char *p = ca->der;
	unsigned char *subject = NULL, *issuer = NULL, *serial = NULL;
	int subject_len, issuer_len, serial_len;
	X509 *x = NULL;
	CK_RV rv = CKR_OK;

	(void)retry;
	if ((rv = resolve_key(tok, s, &ca->k, err)) != CKR_OK || *err != 0)
		return rv;
	if ((x = d2i_X509(NULL, &p, (long)ca->der_len)) == NULL) {
		*err = -EINVAL;
		return CKR_OK;
	}
	subject_len = i2d_X509_NAME(X509_get_subject_name(x), &subject);
	issuer_len = i2d_X509_NAME(X509_get_issuer_name(x), &issuer);
	serial_len = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &serial);
	if (subject_len <= 0 || issuer_len <= 0 || serial_len <= 0) {
		*err = -EINVAL;
		goto out;
	}
	{
		CK_ATTRIBUTE tmpl[] = {
			{ CKA_CLASS, &cls, sizeof(cls) },
			{ CKA_CERTIFICATE_TYPE, &ctype, sizeof(ctype) },
			{ CKA_TOKEN, &yes, sizeof(yes) },
			{ CKA_PRIVATE, &no, sizeof(no) },
			{ CKA_LABEL, (void *)(uintptr_t)ca->k.name, strlen(ca->k.name) },
			{ CKA_ID, ca->k.id, ca->k.id_len },
			{ CKA_SUBJECT, subject, (CK_ULONG)subject_len },
			{ CKA_ISSUER, issuer, (CK_ULONG)issuer_len },
			{ CKA_SERIAL_NUMBER, serial, (CK_ULONG)serial_len },
			{ CKA_VALUE, (void *)(uintptr_t)ca->der, ca->der_len },
		};

		if ((rv = find_objects(tok, s, CKO_CERTIFICATE, NULL, ca->k.id, ca->k.id_len, old,
				       16, &nold)) != CKR_OK)
			goto out;
		/* The old certificate goes only once the new one is on the token. */
		if ((rv = P11(tok, C_CreateObject, s, tmpl, sizeof(tmpl) / sizeof(tmpl[0]),
			      &created)) != CKR_OK)
			goto out;
		for (CK_ULONG i = 0; i < nold; i++)
			if ((rv = P11(tok, C_DestroyObject, s, old[i])) != CKR_OK)
				goto out;
	}
out:
	OPENSSL_free(subject);
	OPENSSL_free(issuer);
	OPENSSL_free(serial);
	X509_free(x);
	return rv;
}

int ks_token_cert_put(struct ks_token *tok, const char *name, const uint8_t *der,
		      size_t der_len)
{
	struct cert_arg ca;

	if (!ks_key_name_valid(name) || der == NULL || der_len == 0 || der_len > 65536)
		return -EINVAL;
	memset(&ca, 0, sizeof(ca));
	ca.k.name = name;
	ca.der = der;
	ca.der_len = der_len;
	return run_op(tok, cert_put_op, &ca);
}

static CK_RV cert_get_op(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg, int retry,
			 int *err)
{
	struct cert_arg *ca = arg;
	CK_OBJECT_HANDLE h[2];
	CK_ULONG n = 0;
	CK_ATTRIBUTE a = { CKA_VALUE, NULL, 0 };
	CK_RV rv;

	(void)retry;
	if ((rv = resolve_key(tok, s, &ca->k, err)) != CKR_OK || *err != 0)
		return rv;
	if ((rv = find_objects(tok, s, CKO_CERTIFICATE, NULL, ca->k.id, ca->k.id_len, h, 2, &n)) != CKR_OK)
		return rv;
	if (n == 0) {
		*err = -ENOENT;
		return CKR_OK;
	}
	if ((rv = P11(tok, C_GetAttributeValue, s, h[0], &a, 1)) != CKR_OK)
		return rv;
	if (a.ulValueLen == 0 || a.ulValueLen > 65536) {
		*err = -EIO;
		return CKR_OK;
	}
	free(ca->out);
	if ((ca->out = malloc(a.ulValueLen)) == NULL) {
		*err = -ENOMEM;
		return CKR_OK;
	}
	a.pValue = ca->out;
	if ((rv = P11(tok, C_GetAttributeValue, s, h[0], &a, 1)) != CKR_OK)
		return rv;
	ca->out_len = a.ulValueLen;
	return CKR_OK;
}

int ks_token_cert_get(struct ks_token *tok, const char *name, uint8_t **der, size_t *der_len)
{
	struct cert_arg ca;
	int r;

	*der = NULL;
	*der_len = 0;
	if (!ks_key_name_valid(name))
		return -EINVAL;
	memset(&ca, 0, sizeof(ca));
	ca.k.name = name;
	if ((r = run_op(tok, cert_get_op, &ca)) != 0) {
		free(ca.out);
		return r;
	}
	*der = ca.out;
	*der_len = ca.out_len;
	return 0;
}
