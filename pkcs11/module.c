/*
 * The PKCS#11 module and its token: CKR names, the P11() wrapper and the
 * recovery classes, loading and (re)initialising the module, finding the
 * configured token's slot, the up/down state and the health record, the
 * background reconnect, and ks_token_open/close/get_info.
 */

#include "pkcs11/token_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "proto/log.h"
#include "proto/secmem.h"
#include "proto/utf8.h"

/* ---- CKR names ------------------------------------------------------------ */

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
	N(CKR_ACTION_PROHIBITED), N(CKR_DATA_INVALID), N(CKR_DATA_LEN_RANGE),
	N(CKR_DEVICE_ERROR), N(CKR_DEVICE_MEMORY), N(CKR_DEVICE_REMOVED),
	N(CKR_ENCRYPTED_DATA_INVALID), N(CKR_ENCRYPTED_DATA_LEN_RANGE),
	N(CKR_FUNCTION_CANCELED), N(CKR_FUNCTION_NOT_PARALLEL),
	N(CKR_FUNCTION_NOT_SUPPORTED), N(CKR_KEY_HANDLE_INVALID), N(CKR_KEY_SIZE_RANGE),
	N(CKR_KEY_TYPE_INCONSISTENT), N(CKR_KEY_NOT_NEEDED), N(CKR_KEY_CHANGED),
	N(CKR_KEY_NEEDED), N(CKR_KEY_INDIGESTIBLE), N(CKR_KEY_FUNCTION_NOT_PERMITTED),
	N(CKR_KEY_NOT_WRAPPABLE), N(CKR_KEY_UNEXTRACTABLE), N(CKR_MECHANISM_INVALID),
	N(CKR_MECHANISM_PARAM_INVALID), N(CKR_OBJECT_HANDLE_INVALID),
	N(CKR_OPERATION_ACTIVE), N(CKR_OPERATION_NOT_INITIALIZED), N(CKR_PIN_INCORRECT),
	N(CKR_PIN_INVALID), N(CKR_PIN_LEN_RANGE), N(CKR_PIN_EXPIRED), N(CKR_PIN_LOCKED),
	N(CKR_SESSION_CLOSED), N(CKR_SESSION_COUNT), N(CKR_SESSION_HANDLE_INVALID),
	N(CKR_SESSION_PARALLEL_NOT_SUPPORTED), N(CKR_SESSION_READ_ONLY),
	N(CKR_SESSION_EXISTS), N(CKR_SESSION_READ_ONLY_EXISTS),
	N(CKR_SESSION_READ_WRITE_SO_EXISTS), N(CKR_SIGNATURE_INVALID),
	N(CKR_SIGNATURE_LEN_RANGE), N(CKR_TEMPLATE_INCOMPLETE), N(CKR_TEMPLATE_INCONSISTENT),
	N(CKR_TOKEN_NOT_PRESENT), N(CKR_TOKEN_NOT_RECOGNIZED), N(CKR_TOKEN_WRITE_PROTECTED),
	N(CKR_UNWRAPPING_KEY_HANDLE_INVALID), N(CKR_UNWRAPPING_KEY_SIZE_RANGE),
	N(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT), N(CKR_USER_ALREADY_LOGGED_IN),
	N(CKR_USER_NOT_LOGGED_IN), N(CKR_USER_PIN_NOT_INITIALIZED), N(CKR_USER_TYPE_INVALID),
	N(CKR_USER_ANOTHER_ALREADY_LOGGED_IN), N(CKR_USER_TOO_MANY_TYPES),
	N(CKR_WRAPPED_KEY_INVALID), N(CKR_WRAPPED_KEY_LEN_RANGE),
	N(CKR_WRAPPING_KEY_HANDLE_INVALID), N(CKR_WRAPPING_KEY_SIZE_RANGE),
	N(CKR_WRAPPING_KEY_TYPE_INCONSISTENT), N(CKR_RANDOM_SEED_NOT_SUPPORTED),
	N(CKR_RANDOM_NO_RNG), N(CKR_DOMAIN_PARAMS_INVALID), N(CKR_CURVE_NOT_SUPPORTED),
	N(CKR_BUFFER_TOO_SMALL), N(CKR_SAVED_STATE_INVALID), N(CKR_INFORMATION_SENSITIVE),
	N(CKR_STATE_UNSAVEABLE), N(CKR_CRYPTOKI_NOT_INITIALIZED),
	N(CKR_CRYPTOKI_ALREADY_INITIALIZED), N(CKR_MUTEX_BAD), N(CKR_MUTEX_NOT_LOCKED),
	N(CKR_NEW_PIN_MODE), N(CKR_NEXT_OTP), N(CKR_EXCEEDED_MAX_ITERATIONS),
	N(CKR_FIPS_SELF_TEST_FAILED), N(CKR_LIBRARY_LOAD_FAILED), N(CKR_PIN_TOO_WEAK),
	N(CKR_PUBLIC_KEY_INVALID), N(CKR_FUNCTION_REJECTED),
#undef N
};

const char *ks_ckr_name(unsigned long rv)
{
	/* Per thread, so concurrent callers never see each other's number. */
	static _Thread_local char unknown[sizeof("CKR_0x") + 2 * sizeof(unsigned long)];

	for (size_t i = 0; i < sizeof(ckr_names) / sizeof(ckr_names[0]); i++)
		if (ckr_names[i].rv == rv)
			return ckr_names[i].name;
	snprintf(unknown, sizeof(unknown), "CKR_0x%lx", rv);
	return unknown;
}

/* ---- the one wrapper every C_* call goes through ---------------------------- */

/* The last call of this thread that failed, for the health record. */
_Thread_local const char *ks_tok_p11_failed_fn;

/*
 * Each failure is logged here with the function's name; callers classify
 * the value and map it to an errno, they do not log it again.
 */
CK_RV ks_tok_p11_call(const char *fn, CK_RV rv)
{
	if (rv != CKR_OK)
		ks_tok_p11_failed_fn = fn;
	switch (rv) {
	case CKR_OK:
	case CKR_USER_ALREADY_LOGGED_IN:
	case CKR_CRYPTOKI_ALREADY_INITIALIZED:
		break;
	/* Answers that are part of normal control flow (length queries, optional attributes). */
	case CKR_BUFFER_TOO_SMALL:
	case CKR_ATTRIBUTE_TYPE_INVALID:
	case CKR_ATTRIBUTE_SENSITIVE:
	/* Only C_Initialize answers it, to mutexes it cannot use; initialize() says so itself. */
	case CKR_CANT_LOCK:
		ks_debug("%s: %s", fn, ks_ckr_name(rv));
		break;
	default:
		ks_warn("%s: %s", fn, ks_ckr_name(rv));
		break;
	}
	return rv;
}

enum rv_class ks_tok_classify(CK_RV rv)
{
	switch (rv) {
	case CKR_OK:
		return RV_OK;
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_USER_NOT_LOGGED_IN:
	/* An operation left unfinished on a pooled session: a fresh session clears it. */
	case CKR_OPERATION_ACTIVE:
		return RV_SESSION;
	case CKR_KEY_HANDLE_INVALID:
	case CKR_OBJECT_HANDLE_INVALID:
		return RV_STALE;
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

int ks_tok_rv_errno(CK_RV rv)
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
	case CKR_CURVE_NOT_SUPPORTED:
		return -EOPNOTSUPP;
	case CKR_KEY_TYPE_INCONSISTENT:
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
	case CKR_DATA_LEN_RANGE:
		return -EINVAL;
	case KS_CKR_BUSY:
		return -ETIMEDOUT;
	default:
		switch (ks_tok_classify(rv)) {
		case RV_DEVICE:
			return -ENODEV;
		case RV_PIN:
			return -EKEYREJECTED;
		default:
			return -EIO;
		}
	}
}

/* ---- names and small helpers ---------------------------------------------- */

/*
 * CK_TOKEN_INFO strings are blank padded, not NUL terminated, and meant
 * to be UTF-8, which not every module keeps to: invalid bytes become '?',
 * so that the text can go into a JSON answer.
 */
static void unpad(char *dst, size_t dst_len, const unsigned char *src, size_t src_len)
{
	size_t n = src_len;

	while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == '\0'))
		n--;
	if (n >= dst_len)
		n = dst_len - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
	ks_utf8_sanitize(dst);
}

/* @want equals the padded field exactly: same bytes, then only padding. */
static int padded_equal(const unsigned char *field, size_t field_len, const char *want)
{
	size_t n = strlen(want);

	if (n > field_len || memcmp(field, want, n) != 0)
		return 0;
	/* Blanks per the standard; some modules pad with NULs. */
	for (size_t i = n; i < field_len; i++)
		if (field[i] != ' ' && field[i] != '\0')
			return 0;
	return 1;
}

int64_t ks_tok_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ks_tok_deadline_in(struct timespec *ts, unsigned ms)
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

/* ---- state ------------------------------------------------------------------ */

enum token_state ks_tok_get_state(struct ks_token *tok)
{
	enum token_state st;

	pthread_mutex_lock(&tok->state_lock);
	st = tok->state;
	pthread_mutex_unlock(&tok->state_lock);
	return st;
}

static void set_state(struct ks_token *tok, enum token_state st)
{
	pthread_mutex_lock(&tok->state_lock);
	/* A rejected PIN is final. */
	if (tok->state != TOKEN_PIN_REJECTED)
		tok->state = st;
	pthread_cond_broadcast(&tok->state_cond);
	pthread_mutex_unlock(&tok->state_lock);
}

/* "2026-12-06T10:02:11Z": health reasons name wall-clock times an operator can match with logs. */
static void utc_stamp(char *buf, size_t len, time_t t)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "?");
}

/*
 * The token counts as down from now, for @reason: requests answer -ENODEV
 * and the background thread initialises the module again. The first
 * reason of an outage is the one kept.
 */
void ks_tok_go_down(struct ks_token *tok, const char *reason)
{
	char since[32];

	utc_stamp(since, sizeof(since), time(NULL));
	pthread_mutex_lock(&tok->state_lock);
	if (tok->state == TOKEN_UP) {
		ks_err("token unavailable (%s); reconnecting in the background", reason);
		tok->state = TOKEN_DOWN;
		pthread_mutex_lock(&tok->info_lock);
		snprintf(tok->down_reason, sizeof(tok->down_reason), "%s since %s; reconnecting",
			 reason, since);
		pthread_mutex_unlock(&tok->info_lock);
		pthread_cond_broadcast(&tok->state_cond);
	}
	pthread_mutex_unlock(&tok->state_lock);
}

void ks_tok_mark_down(struct ks_token *tok, CK_RV rv)
{
	ks_tok_go_down(tok, ks_ckr_name(rv));
}

/*
 * Failures that say the module itself is in trouble rather than the
 * request: SoftHSM with its token directory gone answers
 * CKR_GENERAL_ERROR, tpm2-pkcs11 out of object contexts
 * CKR_GENERAL_ERROR or CKR_DEVICE_MEMORY.
 */
static int is_fault(CK_RV rv)
{
	return rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED ||
	       rv == CKR_DEVICE_MEMORY || rv == CKR_HOST_MEMORY;
}

/*
 * Record the outcome of one operation's token calls for health. Returns 1
 * when @rv is the KS_FAULT_THRESHOLD-th fault in a row and the module is
 * due to be initialised again: not more often than a backoff that starts
 * at KS_FAULT_REINIT_MIN_MS and doubles while the faults go on, so a
 * fault that survives re-initialisation does not make a loop of them.
 */
static int is_exhaustion(CK_RV rv)
{
	return rv == CKR_DEVICE_MEMORY || rv == CKR_HOST_MEMORY;
}

int ks_tok_note_result(struct ks_token *tok, CK_RV rv, const char *fn, const char *what)
{
	int64_t now = ks_tok_mono_ms();
	int due = 0;

	if (rv != CKR_OK && !is_fault(rv))
		return 0;
	pthread_mutex_lock(&tok->info_lock);
	if (rv == CKR_OK) {
		if (tok->fault_what == NULL || what == NULL || strcmp(tok->fault_what, what) == 0) {
			tok->faults = 0;
			tok->fault_backoff_ms = 0;
			tok->fault_what = NULL;
		}
		tok->last_ok = time(NULL);
	} else {
		if (tok->faults++ == 0)
			tok->fault_since = time(NULL);
		tok->fault_rv = rv;
		tok->fault_fn = fn != NULL ? fn : "token";
		tok->fault_what = what;
		if (tok->faults >= KS_FAULT_THRESHOLD &&
		    (tok->fault_backoff_ms == 0 ||
		     now - tok->fault_reinit_ms >= (int64_t)tok->fault_backoff_ms)) {
			due = 1;
			tok->fault_reinit_ms = now;
			tok->fault_backoff_ms = tok->fault_backoff_ms == 0 ? KS_FAULT_REINIT_MIN_MS :
				tok->fault_backoff_ms >= KS_FAULT_REINIT_MAX_MS / 2 ?
				KS_FAULT_REINIT_MAX_MS : tok->fault_backoff_ms * 2;
		}
	}
	pthread_mutex_unlock(&tok->info_lock);
	return due;
}

/* ---- finding the token -------------------------------------------------------- */

static int token_matches(const struct ks_token *tok, const CK_TOKEN_INFO *ti)
{
	if (tok->uri != NULL)
		return p11_kit_uri_match_token_info(tok->uri, ti) == 1;
	if (tok->label != NULL && !padded_equal(ti->label, sizeof(ti->label), tok->label))
		return 0;
	if (tok->serial != NULL &&
	    !padded_equal(ti->serialNumber, sizeof(ti->serialNumber), tok->serial))
		return 0;
	return 1;
}

static void describe_selector(const struct ks_token *tok, char *buf, size_t len)
{
	if (tok->uri != NULL)
		snprintf(buf, len, "the configured pkcs11: URI");
	else if (tok->label != NULL && tok->serial != NULL)
		snprintf(buf, len, "label \"%s\" and serial \"%s\"", tok->label, tok->serial);
	else if (tok->label != NULL)
		snprintf(buf, len, "label \"%s\"", tok->label);
	else if (tok->serial != NULL)
		snprintf(buf, len, "serial \"%s\"", tok->serial);
	else
		snprintf(buf, len, "no selector (the only initialised token)");
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
	pthread_mutex_lock(&tok->info_lock);
	tok->info = info;
	pthread_mutex_unlock(&tok->info_lock);
}

/* Set tok->slot to the configured token's. -ENODEV if absent, -EINVAL if ambiguous. */
static int find_slot(struct ks_token *tok)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0;
	CK_TOKEN_INFO ti, found_ti;
	char sel[160];
	int found = 0, r;
	CK_RV rv;

	describe_selector(tok, sel, sizeof(sel));
	if ((rv = P11(tok, C_GetSlotList, CK_TRUE, NULL, &n)) != CKR_OK) {
		r = ks_tok_rv_errno(rv) == -EIO ? -ENODEV : ks_tok_rv_errno(rv);
		goto out;
	}
	if (n > 0) {
		if ((slots = calloc(n, sizeof(*slots))) == NULL) {
			r = -ENOMEM;
			goto out;
		}
		if ((rv = P11(tok, C_GetSlotList, CK_TRUE, slots, &n)) != CKR_OK) {
			r = ks_tok_rv_errno(rv) == -EIO ? -ENODEV : ks_tok_rv_errno(rv);
			goto out;
		}
	}
	for (CK_ULONG i = 0; i < n; i++) {
		if (P11(tok, C_GetTokenInfo, slots[i], &ti) != CKR_OK)
			continue;
		/* SoftHSM always offers one blank token; it is nobody's. */
		if (!(ti.flags & CKF_TOKEN_INITIALIZED) || !token_matches(tok, &ti))
			continue;
		if (found++ == 0) {
			tok->slot = slots[i];
			found_ti = ti;
		}
	}
	if (found == 0) {
		ks_err("no initialised token matches %s (%lu slots with a token)", sel,
		       (unsigned long)n);
		r = -ENODEV;
		goto out;
	}
	if (found > 1) {
		ks_err("%d tokens match %s; select one by serial or a pkcs11: URI", found, sel);
		r = -EINVAL;
		goto out;
	}
	refresh_info(tok, &found_ti);
	ks_tok_pool_token_limit(tok, &found_ti);
	ks_tok_probe_caps(tok);
	r = 0;
out:
	free(slots);
	return r;
}

static int initialize(struct ks_token *tok)
{
	CK_C_INITIALIZE_ARGS args;
	CK_RV rv;

	ks_tok_init_args(&args, !tok->own_locking);
	rv = P11(tok, C_Initialize, &args);
	/*
	 * CKR_CANT_LOCK is the spec's answer of a module that cannot use our
	 * mutexes; some answer CKR_ARGUMENTS_BAD instead. Either way nothing
	 * was initialised: once more without them, and so at every reconnect.
	 */
	if (!tok->own_locking && (rv == CKR_CANT_LOCK || rv == CKR_ARGUMENTS_BAD)) {
		ks_notice("PKCS#11 module %s does not take keysvcd's mutexes (%s); it locks "
			  "with its own", tok->module_path, ks_ckr_name(rv));
		tok->own_locking = 1;
		ks_tok_init_args(&args, 0);
		rv = P11(tok, C_Initialize, &args);
	}
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
		return -ENODEV;
	tok->initialized = 1;
	/* Someone else in this process initialised the module: their C_Finalize, not ours. */
	tok->owns_init = rv == CKR_OK;
	return 0;
}

/* rw held exclusively. */
static int reconnect_locked(struct ks_token *tok)
{
	int r;

	ks_tok_close_pool(tok);
	/*
	 * Another user's initialisation stays: finalizing it would end their
	 * sessions too. C_Initialize is called all the same: it is a no-op
	 * while they keep the module initialised, and makes the
	 * initialisation ours once they have finalized it.
	 */
	if (tok->initialized && tok->owns_init) {
		P11(tok, C_Finalize, NULL);
		tok->initialized = 0;
		tok->owns_init = 0;
	}
	if ((r = initialize(tok)) != 0 || (r = find_slot(tok)) != 0 ||
	    (r = ks_tok_open_pool(tok)) != 0)
		return r;
	/*
	 * The faults were the old module state's (what the token ran out of
	 * was freed with it); the backoff stays until an operation that
	 * faulted succeeds, so a fault that outlives this does not make a
	 * loop of re-initialisations.
	 */
	pthread_mutex_lock(&tok->info_lock);
	tok->faults = 0;
	pthread_mutex_unlock(&tok->info_lock);
	return 0;
}

int ks_tok_rescan(struct ks_token *tok, const char *name)
{
	int64_t now = ks_tok_mono_ms();
	char reason[96];
	int r;

	pthread_mutex_lock(&tok->state_lock);
	if (tok->state != TOKEN_UP || tok->closing ||
	    (tok->rescan_ms != 0 && now - tok->rescan_ms < KS_RESCAN_MIN_MS)) {
		pthread_mutex_unlock(&tok->state_lock);
		return -EAGAIN;
	}
	tok->rescan_ms = now;
	pthread_mutex_unlock(&tok->state_lock);
	ks_info("no key %s on the token: initialising the module again to see keys other "
		"programs made (at most once every %d s)", name, KS_RESCAN_MIN_MS / 1000);
	pthread_rwlock_wrlock(&tok->rw);
	r = reconnect_locked(tok);
	if (r == 0) {
		tok->generation++;
		pthread_mutex_lock(&tok->state_lock);
		tok->reinit_count++;
		pthread_mutex_unlock(&tok->state_lock);
	}
	pthread_rwlock_unlock(&tok->rw);
	if (r != 0 && r != -EKEYREJECTED) {
		snprintf(reason, sizeof(reason), "initialising the module again failed (%s)",
			 strerror(-r));
		ks_tok_go_down(tok, reason);
	}
	return r;
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
			pthread_mutex_lock(&tok->state_lock);
			tok->reinit_count++;
			pthread_mutex_unlock(&tok->state_lock);
			set_state(tok, TOKEN_UP);
			ks_notice("token reconnected");
			backoff = KS_BACKOFF_MIN_MS;
		}
		pthread_rwlock_unlock(&tok->rw);
		if (r == 0 || r == -EKEYREJECTED)
			continue;

		ks_info("token still unavailable; next attempt in %u ms", backoff);
		ks_tok_deadline_in(&until, backoff);
		pthread_mutex_lock(&tok->state_lock);
		while (!tok->closing &&
		       pthread_cond_timedwait(&tok->state_cond, &tok->state_lock, &until) != ETIMEDOUT)
			;
		pthread_mutex_unlock(&tok->state_lock);
		backoff = backoff >= KS_BACKOFF_MAX_MS / 2 ? KS_BACKOFF_MAX_MS : backoff * 2;
	}
	return NULL;
}

/* ks_token_open(), or with !@login ks_token_probe()'s part: no PIN, no sessions, no thread. */
static int token_open(const struct ks_token_config *cfg, int login, struct ks_token **out)
{
	struct ks_token *tok = NULL;
	pthread_rwlockattr_t rwattr;
	int r, ur;

	*out = NULL;
	if (cfg->module_path == NULL || cfg->module_path[0] != '/') {
		ks_err("the PKCS#11 module path must be absolute");
		return -EINVAL;
	}
	if (login && (cfg->pin == NULL || cfg->pin_len == 0 || cfg->pin_len > KS_PIN_MAX)) {
		ks_err("a user PIN of 1..%d bytes is required", KS_PIN_MAX);
		return -EINVAL;
	}
	if ((cfg->token_label != NULL && strlen(cfg->token_label) > 32) ||
	    (cfg->token_serial != NULL && strlen(cfg->token_serial) > 16)) {
		ks_err("a token label has at most 32 characters, a serial at most 16");
		return -EINVAL;
	}
	if ((tok = calloc(1, sizeof(*tok))) == NULL)
		return -ENOMEM;
	pthread_rwlockattr_init(&rwattr);
	/* A reopen or reconnect must not starve behind a steady stream of operations. */
	pthread_rwlockattr_setkind_np(&rwattr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&tok->rw, &rwattr);
	/* A generation must not starve behind a steady stream of searches either. */
	pthread_rwlock_init(&tok->objects_rw, &rwattr);
	pthread_rwlockattr_destroy(&rwattr);
	pthread_mutex_init(&tok->pool_lock, NULL);
	cond_init_monotonic(&tok->pool_cond);
	pthread_mutex_init(&tok->state_lock, NULL);
	cond_init_monotonic(&tok->state_cond);
	pthread_mutex_init(&tok->info_lock, NULL);
	pthread_mutex_init(&tok->generate_lock, NULL);
	pthread_mutex_init(&tok->cache_lock, NULL);
	pthread_mutex_init(&tok->known_lock, NULL);
	tok->wait_ms = cfg->session_wait_ms == 0 ? KS_DEFAULT_WAIT_MS : cfg->session_wait_ms;
	tok->key_recheck_ms = cfg->key_recheck_ms < 0 ? KS_DEFAULT_KEY_RECHECK_MS :
			      (unsigned)cfg->key_recheck_ms;
	tok->rescan = cfg->rescan == KS_RESCAN_REINITIALIZE ? KS_RESCAN_REINITIALIZE :
		      KS_RESCAN_SEARCH;
	tok->state = TOKEN_UP;
	tok->pin_rejected_cb = cfg->pin_rejected;
	tok->pin_rejected_arg = cfg->pin_rejected_arg;
	if ((r = ks_tok_pool_init(tok, cfg)) != 0)
		goto fail;

	r = -ENOMEM;
	if ((tok->module_path = strdup(cfg->module_path)) == NULL ||
	    (cfg->token_label != NULL && (tok->label = strdup(cfg->token_label)) == NULL) ||
	    (cfg->token_serial != NULL && (tok->serial = strdup(cfg->token_serial)) == NULL))
		goto fail;
	if (login) {
		if ((tok->pin = ks_secmem_alloc(cfg->pin_len + 1)) == NULL)
			goto fail;
		memcpy(tok->pin, cfg->pin, cfg->pin_len);
		tok->pin_len = cfg->pin_len;
	}
	if (cfg->token_uri != NULL) {
		if ((tok->uri = p11_kit_uri_new()) == NULL)
			goto fail;
		ur = p11_kit_uri_parse(cfg->token_uri, P11_KIT_URI_FOR_TOKEN, tok->uri);
		if (ur != P11_KIT_URI_OK) {
			ks_err("token URI: %s", p11_kit_uri_message(ur));
			r = -EINVAL;
			goto fail;
		}
		if (p11_kit_uri_get_pin_value(tok->uri) != NULL ||
		    p11_kit_uri_get_pin_source(tok->uri) != NULL)
			ks_warn("the token URI's pin-value/pin-source is ignored; the PIN comes from the PIN file");
		if (cfg->token_label != NULL || cfg->token_serial != NULL)
			ks_warn("token label/serial are ignored when a token URI is configured");
	}

	tok->f = p11_kit_module_load(tok->module_path,
				     P11_KIT_MODULE_UNMANAGED | P11_KIT_MODULE_CRITICAL);
	if (tok->f == NULL) {
		ks_err("cannot load PKCS#11 module %s: %s", tok->module_path, p11_kit_message());
		r = -ENODEV;
		goto fail;
	}
	if ((r = initialize(tok)) != 0) {
		ks_err("cannot initialise PKCS#11 module %s", tok->module_path);
		goto fail;
	}
	if ((r = find_slot(tok)) != 0)
		goto fail;
	if (!login) {
		*out = tok;
		return 0;
	}
	if ((r = ks_tok_open_pool(tok)) != 0)
		goto fail;
	tok->last_ok = time(NULL);
	if (pthread_create(&tok->reconnect_thread, NULL, reconnect_main, tok) != 0) {
		r = -ENOMEM;
		goto fail;
	}
	tok->thread_started = 1;
	ks_info("token \"%s\" (serial %s) open with %u sessions, growing to at most %u",
		tok->info.label, tok->info.serial, tok->nopen, tok->pool_cap);
	*out = tok;
	return 0;
fail:
	ks_token_close(tok);
	return r;
}

int ks_token_open(const struct ks_token_config *cfg, struct ks_token **out)
{
	return token_open(cfg, 1, out);
}

int ks_token_probe(const struct ks_token_config *cfg, struct ks_token_info *info)
{
	struct ks_token *tok;
	int r;

	memset(info, 0, sizeof(*info));
	if ((r = token_open(cfg, 0, &tok)) != 0)
		return r;
	pthread_mutex_lock(&tok->info_lock);
	*info = tok->info;
	pthread_mutex_unlock(&tok->info_lock);
	/* Not logged in: "up" would promise what the probe did not try. */
	info->up = 0;
	info->health = KS_HEALTH_OK;
	return ks_token_close(tok);
}

int ks_token_close(struct ks_token *tok)
{
	if (tok == NULL)
		return 0;
	if (tok->thread_started) {
		struct timespec until;

		pthread_mutex_lock(&tok->state_lock);
		tok->closing = 1;
		pthread_cond_broadcast(&tok->state_cond);
		pthread_mutex_unlock(&tok->state_lock);
		ks_tok_deadline_in(&until, KS_CLOSE_WAIT_MS);
		if (pthread_clockjoin_np(tok->reconnect_thread, NULL, CLOCK_MONOTONIC, &until) != 0) {
			/*
			 * It is inside the module: nothing it uses may be freed
			 * or finalized. The PIN is wiped all the same (a login
			 * it is in the middle of fails, harmlessly).
			 */
			ks_warn("the token reconnect is stuck in the PKCS#11 module; leaving it");
			if (tok->pin != NULL)
				explicit_bzero(tok->pin, tok->pin_len);
			return -EBUSY;
		}
	}
	if (ks_tok_pool_stop(tok) != 0) {
		/* As above: the trim thread is inside the module. */
		if (tok->pin != NULL)
			explicit_bzero(tok->pin, tok->pin_len);
		return -EBUSY;
	}
	if (tok->f != NULL) {
		CK_SESSION_HANDLE any = ks_tok_pool_any(tok);

		if (tok->initialized) {
			if (tok->state == TOKEN_UP && any != CK_INVALID_HANDLE)
				P11(tok, C_Logout, any);
			ks_tok_close_pool(tok);
			if (tok->owns_init)
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
	pthread_rwlock_destroy(&tok->objects_rw);
	pthread_mutex_destroy(&tok->pool_lock);
	pthread_cond_destroy(&tok->pool_cond);
	pthread_mutex_destroy(&tok->state_lock);
	pthread_cond_destroy(&tok->state_cond);
	pthread_mutex_destroy(&tok->info_lock);
	pthread_mutex_destroy(&tok->generate_lock);
	pthread_mutex_destroy(&tok->cache_lock);
	pthread_mutex_destroy(&tok->known_lock);
	ks_tok_pool_free(tok);
	free(tok->known);
	free(tok);
	return 0;
}

int ks_token_get_info(struct ks_token *tok, struct ks_token_info *info)
{
	enum token_state st;
	char since[32];

	if (tok == NULL || info == NULL)
		return -EINVAL;
	st = ks_tok_get_state(tok);
	pthread_mutex_lock(&tok->info_lock);
	*info = tok->info;
	info->up = st == TOKEN_UP;
	info->last_ok = (long long)tok->last_ok;
	info->key_types = tok->caps.key_types;
	info->sig_algs = tok->caps.sig_algs;
	info->digest_algs = tok->caps.digest_algs;
	info->health_reason[0] = '\0';
	if (st != TOKEN_UP) {
		info->health = KS_HEALTH_UNAVAILABLE;
		snprintf(info->health_reason, sizeof(info->health_reason), "%s",
			 tok->down_reason[0] != '\0' ? tok->down_reason : "reconnecting");
	} else if (tok->faults > 0) {
		info->health = KS_HEALTH_DEGRADED;
		utc_stamp(since, sizeof(since), tok->fault_since);
		snprintf(info->health_reason, sizeof(info->health_reason),
			 "%s: %s %u time%s since %s%s", tok->fault_fn, ks_ckr_name(tok->fault_rv),
			 tok->faults, tok->faults == 1 ? "" : "s", since,
			 is_exhaustion(tok->fault_rv) ? " (the token is out of memory)" : "");
	} else {
		info->health = KS_HEALTH_OK;
	}
	pthread_mutex_unlock(&tok->info_lock);
	return 0;
}
