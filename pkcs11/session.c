/*
 * The pool of logged-in sessions, reopened when the sessions or the login
 * are lost, and run_op(), which runs one operation on a pooled session
 * with the recovery rules of token.h.
 *
 * The pool is sized from the token: it keeps a floor of sessions open,
 * opens another for a request that finds none free (so as many requests
 * reach the token at once as there are callers, which a network HSM
 * running many signatures in parallel needs), never beyond the token's
 * reported session limit, the configured cap, or what the token last
 * allowed (CKR_SESSION_COUNT), and a trim thread closes the sessions
 * beyond the floor once they have been idle for a while.
 */

#include "pkcs11/token_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "proto/log.h"
#include "proto/secmem.h"

/* ---- the pool's size -------------------------------------------------------- */

int ks_tok_pool_init(struct ks_token *tok, const struct ks_token_config *cfg)
{
	pthread_condattr_t attr;

	tok->pool_floor = cfg->sessions == 0 ? KS_DEFAULT_SESSIONS : cfg->sessions;
	tok->pool_cap = cfg->max_sessions != 0 ? cfg->max_sessions :
			tok->pool_floor > KS_DEFAULT_MAX_SESSIONS ? tok->pool_floor :
			KS_DEFAULT_MAX_SESSIONS;
	if (tok->pool_floor > KS_MAX_SESSIONS || tok->pool_cap > KS_MAX_SESSIONS ||
	    tok->pool_floor > tok->pool_cap) {
		ks_err("sessions (%u) and max_sessions (%u): 1..%d, sessions at most max_sessions",
		       tok->pool_floor, tok->pool_cap, KS_MAX_SESSIONS);
		return -EINVAL;
	}
	/* Set only here, with trim_cond: ks_tok_pool_free() destroys it when idle_ms is set. */
	tok->idle_ms = cfg->session_idle_ms == 0 ? KS_DEFAULT_SESSION_IDLE_MS : cfg->session_idle_ms;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&tok->trim_cond, &attr);
	pthread_condattr_destroy(&attr);
	tok->slots = calloc(tok->pool_cap, sizeof(*tok->slots));
	tok->free_stack = calloc(tok->pool_cap, sizeof(*tok->free_stack));
	if (tok->slots == NULL || tok->free_stack == NULL)
		return -ENOMEM;
	for (unsigned i = 0; i < tok->pool_cap; i++)
		tok->slots[i].h = CK_INVALID_HANDLE;
	return 0;
}

static unsigned session_limit(CK_ULONG v)
{
	/* Values the spec gives no number for; the pool then learns from CKR_SESSION_COUNT. */
	if (v == CK_EFFECTIVELY_INFINITE || v == CK_UNAVAILABLE_INFORMATION || v > KS_MAX_SESSIONS)
		return 0;
	return (unsigned)v;
}

void ks_tok_pool_token_limit(struct ks_token *tok, const CK_TOKEN_INFO *ti)
{
	unsigned all = session_limit(ti->ulMaxSessionCount);
	unsigned rw = session_limit(ti->ulMaxRwSessionCount);

	pthread_mutex_lock(&tok->pool_lock);
	tok->token_max = all == 0 ? rw : rw == 0 ? all : all < rw ? all : rw;
	/* A new token, or the same one again: what it refused before is forgotten. */
	tok->held_until_ms = 0;
	tok->grow_retry_ms = 0;
	pthread_mutex_unlock(&tok->pool_lock);
	if (tok->token_max != 0 && tok->token_max < tok->pool_cap)
		ks_info("the token allows %u sessions: the pool grows to at most that many "
			"(max_sessions %u)", tok->token_max, tok->pool_cap);
}

/* The most sessions the pool may hold now. pool_lock held. */
static unsigned pool_limit(const struct ks_token *tok, int64_t now)
{
	unsigned l = tok->pool_cap;

	if (tok->token_max != 0 && tok->token_max < l)
		l = tok->token_max;
	if (now < tok->held_until_ms && tok->held_limit < l)
		l = tok->held_limit;
	return l > 0 ? l : 1;
}

CK_SESSION_HANDLE ks_tok_pool_any(struct ks_token *tok)
{
	CK_SESSION_HANDLE h = CK_INVALID_HANDLE;

	pthread_mutex_lock(&tok->pool_lock);
	for (unsigned i = 0; i < tok->pool_cap && h == CK_INVALID_HANDLE; i++)
		if (tok->slots[i].state == SLOT_FREE || tok->slots[i].state == SLOT_BUSY)
			h = tok->slots[i].h;
	pthread_mutex_unlock(&tok->pool_lock);
	return h;
}

/* A session no longer in use goes on top of the free stack. pool_lock held. */
static void push_free(struct ks_token *tok, unsigned i, int64_t now)
{
	tok->slots[i].state = SLOT_FREE;
	tok->slots[i].idle_since_ms = now;
	tok->free_stack[tok->nfree++] = i;
}

/* An empty slot, or -1. pool_lock held; only called below the limit, so one exists. */
static int empty_slot(const struct ks_token *tok)
{
	for (unsigned i = 0; i < tok->pool_cap; i++)
		if (tok->slots[i].state == SLOT_EMPTY)
			return (int)i;
	return -1;
}

/*
 * After C_OpenSession failed with @rv while the pool held @open sessions:
 * no growth beyond them for a while. pool_lock held.
 */
static void growth_refused(struct ks_token *tok, CK_RV rv, unsigned open, int64_t now)
{
	if (rv == CKR_SESSION_COUNT) {
		/* The token's sessions are shared with other applications: this is our share now. */
		if (now >= tok->held_until_ms || open < tok->held_limit)
			ks_notice("the token refused another session (CKR_SESSION_COUNT): the pool "
				  "stays at %u sessions for %d s", open, KS_SESSION_COUNT_HOLD_MS / 1000);
		tok->held_limit = open > 0 ? open : 1;
		tok->held_until_ms = now + KS_SESSION_COUNT_HOLD_MS;
	} else {
		tok->grow_retry_ms = now + KS_GROW_RETRY_MS;
	}
}

/* ---- the trim thread: sessions beyond the floor, idle too long, are closed ---- */

static void trim_idle(struct ks_token *tok)
{
	CK_SESSION_HANDLE h[64];
	unsigned idx[64], n = 0, skip;
	int64_t now = ks_tok_mono_ms();

	/*
	 * Shared, like an operation; never waited for: a reopen or reconnect
	 * (exclusive, or queued for it) closes sessions itself.
	 */
	if (pthread_rwlock_tryrdlock(&tok->rw) != 0)
		return;
	if (ks_tok_get_state(tok) != TOKEN_UP) {
		pthread_rwlock_unlock(&tok->rw);
		return;
	}
	pthread_mutex_lock(&tok->pool_lock);
	/* The bottom of the free stack has been idle longest. */
	for (skip = 0; skip < tok->nfree && n < 64 && tok->nopen - n > tok->pool_floor; skip++) {
		unsigned i = tok->free_stack[skip];

		if (now - tok->slots[i].idle_since_ms < tok->idle_ms)
			break;
		tok->slots[i].state = SLOT_CLOSING;
		idx[n] = i;
		h[n++] = tok->slots[i].h;
	}
	memmove(tok->free_stack, tok->free_stack + skip, (tok->nfree - skip) * sizeof(*tok->free_stack));
	tok->nfree -= skip;
	pthread_mutex_unlock(&tok->pool_lock);

	for (unsigned k = 0; k < n; k++)
		P11(tok, C_CloseSession, h[k]);

	pthread_mutex_lock(&tok->pool_lock);
	for (unsigned k = 0; k < n; k++) {
		tok->slots[idx[k]].state = SLOT_EMPTY;
		tok->slots[idx[k]].h = CK_INVALID_HANDLE;
	}
	tok->nopen -= n;
	if (n > 0) {
		ks_debug("closed %u idle token sessions; %u open", n, tok->nopen);
		/* Room to grow again for a request waiting at the limit. */
		pthread_cond_broadcast(&tok->pool_cond);
	}
	pthread_mutex_unlock(&tok->pool_lock);
	pthread_rwlock_unlock(&tok->rw);
}

static void *trim_main(void *arg)
{
	struct ks_token *tok = arg;
	unsigned period = tok->idle_ms / 2;
	struct timespec until;

	if (period < 50)
		period = 50;
	if (period > 5000)
		period = 5000;
	pthread_mutex_lock(&tok->pool_lock);
	while (!tok->pool_closing) {
		ks_tok_deadline_in(&until, period);
		if (pthread_cond_timedwait(&tok->trim_cond, &tok->pool_lock, &until) != ETIMEDOUT ||
		    tok->pool_closing)
			continue;
		/* rw comes before pool_lock. */
		pthread_mutex_unlock(&tok->pool_lock);
		trim_idle(tok);
		pthread_mutex_lock(&tok->pool_lock);
	}
	pthread_mutex_unlock(&tok->pool_lock);
	return NULL;
}

int ks_tok_pool_stop(struct ks_token *tok)
{
	struct timespec until;

	if (!tok->trim_started)
		return 0;
	pthread_mutex_lock(&tok->pool_lock);
	tok->pool_closing = 1;
	pthread_cond_broadcast(&tok->trim_cond);
	pthread_mutex_unlock(&tok->pool_lock);
	ks_tok_deadline_in(&until, KS_CLOSE_WAIT_MS);
	if (pthread_clockjoin_np(tok->trim_thread, NULL, CLOCK_MONOTONIC, &until) != 0) {
		ks_warn("closing an idle token session is stuck in the PKCS#11 module; leaving it");
		return -EBUSY;
	}
	tok->trim_started = 0;
	return 0;
}

void ks_tok_pool_free(struct ks_token *tok)
{
	if (tok->idle_ms != 0)
		pthread_cond_destroy(&tok->trim_cond);
	tok->idle_ms = 0;
	free(tok->slots);
	free(tok->free_stack);
	tok->slots = NULL;
	tok->free_stack = NULL;
}

/* ---- the pool and the login ------------------------------------------------- */

void ks_tok_close_pool(struct ks_token *tok)
{
	if (tok->initialized)
		P11(tok, C_CloseAllSessions, tok->slot);
	pthread_mutex_lock(&tok->pool_lock);
	for (unsigned i = 0; tok->slots != NULL && i < tok->pool_cap; i++) {
		tok->slots[i].h = CK_INVALID_HANDLE;
		tok->slots[i].state = SLOT_EMPTY;
	}
	tok->nfree = tok->nopen = tok->nopening = 0;
	pthread_mutex_unlock(&tok->pool_lock);
	/* Handles may change with the sessions and the login. */
	pthread_mutex_lock(&tok->cache_lock);
	memset(tok->cache, 0, sizeof(tok->cache));
	pthread_mutex_unlock(&tok->cache_lock);
}

static void pin_rejected(struct ks_token *tok, CK_RV rv)
{
	/* Tokens lock after a few wrong PINs: this one is never presented again. */
	ks_err("the token rejected the PIN (%s); not trying it again until restarted",
	       ks_ckr_name(rv));
	if (tok->pin_rejected_cb != NULL)
		tok->pin_rejected_cb(tok->pin_rejected_arg, (unsigned long)rv);
	pthread_mutex_lock(&tok->state_lock);
	tok->state = TOKEN_PIN_REJECTED;
	pthread_mutex_lock(&tok->info_lock);
	snprintf(tok->down_reason, sizeof(tok->down_reason),
		 "the token rejected the PIN (%s); fix the PIN and restart keysvcd", ks_ckr_name(rv));
	pthread_mutex_unlock(&tok->info_lock);
	pthread_cond_broadcast(&tok->state_cond);
	pthread_mutex_unlock(&tok->state_lock);
	ks_secmem_free(tok->pin, tok->pin_len + 1);
	tok->pin = NULL;
	tok->pin_len = 0;
}

/* Open the pool and log in; rw held exclusively, or no other thread exists yet. */
int ks_tok_open_pool(struct ks_token *tok)
{
	CK_SESSION_HANDLE h, first = CK_INVALID_HANDLE;
	int64_t now = ks_tok_mono_ms();
	unsigned want;
	CK_RV rv;
	int r;

	if (ks_tok_get_state(tok) == TOKEN_PIN_REJECTED || tok->pin == NULL)
		return -EKEYREJECTED;
	pthread_mutex_lock(&tok->pool_lock);
	want = pool_limit(tok, now) < tok->pool_floor ? pool_limit(tok, now) : tok->pool_floor;
	pthread_mutex_unlock(&tok->pool_lock);
	/* No other thread uses the pool now: the slots are filled without pool_lock held. */
	for (unsigned i = 0; i < want; i++) {
		rv = P11(tok, C_OpenSession, tok->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
			 NULL, NULL, &h);
		if (rv == CKR_SESSION_COUNT && i > 0) {
			pthread_mutex_lock(&tok->pool_lock);
			growth_refused(tok, rv, i, now);
			pthread_mutex_unlock(&tok->pool_lock);
			break;
		}
		if (rv != CKR_OK) {
			r = ks_tok_classify(rv) == RV_OTHER ? -EIO : -ENODEV;
			goto fail;
		}
		pthread_mutex_lock(&tok->pool_lock);
		tok->slots[i].h = h;
		push_free(tok, i, now);
		tok->nopen++;
		pthread_mutex_unlock(&tok->pool_lock);
		if (first == CK_INVALID_HANDLE)
			first = h;
	}
	/* The login is the application's: every session, and every later one, has it. */
	rv = P11(tok, C_Login, first, CKU_USER, (CK_UTF8CHAR *)tok->pin, (CK_ULONG)tok->pin_len);
	if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
		if (!tok->trim_started && tok->pool_cap > tok->pool_floor) {
			if (pthread_create(&tok->trim_thread, NULL, trim_main, tok) == 0)
				tok->trim_started = 1;
			else
				ks_warn("cannot start the thread that closes idle token sessions; "
					"the pool will not shrink");
		}
		return 0;
	}
	if (ks_tok_classify(rv) == RV_PIN) {
		pin_rejected(tok, rv);
		r = -EKEYREJECTED;
	} else {
		r = ks_tok_classify(rv) == RV_OTHER ? -EIO : -ENODEV;
	}
fail:
	ks_tok_close_pool(tok);
	return r;
}

/* After a lost session or login: reopen once per generation, however many noticed. */
static int reopen(struct ks_token *tok, unsigned seen_generation)
{
	struct timespec until;
	enum token_state st;
	int r = 0;

	/*
	 * Every other operation has to finish first. One hung in the module
	 * would hold this thread (and its client) for ever: after wait_ms the
	 * token counts as down and the background reconnect takes over.
	 */
	ks_tok_deadline_in(&until, tok->wait_ms);
	if (pthread_rwlock_clockwrlock(&tok->rw, CLOCK_MONOTONIC, &until) != 0) {
		ks_tok_mark_down(tok, CKR_DEVICE_ERROR);
		return -ENODEV;
	}
	st = ks_tok_get_state(tok);
	if (st == TOKEN_PIN_REJECTED) {
		r = -EKEYREJECTED;
	} else if (st == TOKEN_DOWN) {
		r = -ENODEV;
	} else if (tok->generation == seen_generation) {
		ks_warn("token sessions or login lost; reopening %u sessions and logging in again",
			tok->pool_floor);
		ks_tok_close_pool(tok);
		r = ks_tok_open_pool(tok);
		tok->generation++;
		if (r != 0 && r != -EKEYREJECTED) {
			/* The background reconnect owns the token from here. */
			ks_tok_mark_down(tok, CKR_DEVICE_ERROR);
			r = -ENODEV;
		}
	}
	pthread_rwlock_unlock(&tok->rw);
	return r;
}

/* ---- running an operation with the recovery rules -------------------------- */

struct session_slot {
	unsigned index;
	CK_SESSION_HANDLE h;
	unsigned generation;
};

/*
 * A free session for the caller (pool_lock held, rw shared): the top of the
 * free stack, or a new one while the pool is below its limit, or wait for
 * one until @until. 0 with *@ss filled, or -ETIMEDOUT.
 */
static int take_session(struct ks_token *tok, struct session_slot *ss,
			const struct timespec *until)
{
	for (;;) {
		int64_t now;
		int i;

		if (tok->nfree > 0) {
			i = (int)tok->free_stack[--tok->nfree];
			tok->slots[i].state = SLOT_BUSY;
			ss->index = (unsigned)i;
			ss->h = tok->slots[i].h;
			ss->generation = tok->generation;
			return 0;
		}
		now = ks_tok_mono_ms();
		if (tok->nopen + tok->nopening < pool_limit(tok, now) && now >= tok->grow_retry_ms &&
		    (i = empty_slot(tok)) >= 0) {
			CK_SESSION_HANDLE h;
			CK_RV rv;

			/* Opened without pool_lock; the slot is ours meanwhile. */
			tok->slots[i].state = SLOT_OPENING;
			tok->nopening++;
			pthread_mutex_unlock(&tok->pool_lock);
			rv = P11(tok, C_OpenSession, tok->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
				 NULL, NULL, &h);
			pthread_mutex_lock(&tok->pool_lock);
			tok->nopening--;
			if (rv == CKR_OK) {
				tok->slots[i].h = h;
				tok->slots[i].state = SLOT_BUSY;
				tok->nopen++;
				if (tok->nopen > tok->peak) {
					tok->peak = tok->nopen;
					ks_debug("token session pool grew to %u sessions", tok->nopen);
				}
				ss->index = (unsigned)i;
				ss->h = h;
				ss->generation = tok->generation;
				return 0;
			}
			/*
			 * The sessions open still work: the request waits for one
			 * of them, and the token's answer is no fault of an
			 * operation (a token that is gone shows in those).
			 */
			tok->slots[i].state = SLOT_EMPTY;
			growth_refused(tok, rv, tok->nopen, ks_tok_mono_ms());
			continue;
		}
		if (pthread_cond_timedwait(&tok->pool_cond, &tok->pool_lock, until) == ETIMEDOUT)
			return -ETIMEDOUT;
	}
}

/* Take rw shared and a free session. On error nothing is held. */
static int acquire(struct ks_token *tok, struct session_slot *ss)
{
	struct timespec until;
	enum token_state st;
	int r;

	/* While down, answer at once: the module may hang, and rw may be held by the reconnect. */
	if ((st = ks_tok_get_state(tok)) != TOKEN_UP)
		return st == TOKEN_PIN_REJECTED ? -EKEYREJECTED : -ENODEV;
	ks_tok_deadline_in(&until, tok->wait_ms);
	/*
	 * Bounded: a reopen queued behind a call hung in the module blocks
	 * new readers (the lock prefers writers), and that wait must end
	 * like any wait for a session.
	 */
	if (pthread_rwlock_clockrdlock(&tok->rw, CLOCK_MONOTONIC, &until) != 0) {
		ks_warn("the token was busy recovering for more than %u ms", tok->wait_ms);
		return -ETIMEDOUT;
	}
	if ((st = ks_tok_get_state(tok)) != TOKEN_UP) {
		pthread_rwlock_unlock(&tok->rw);
		return st == TOKEN_PIN_REJECTED ? -EKEYREJECTED : -ENODEV;
	}
	pthread_mutex_lock(&tok->pool_lock);
	r = take_session(tok, ss, &until);
	pthread_mutex_unlock(&tok->pool_lock);
	if (r == 0)
		return 0;
	pthread_rwlock_unlock(&tok->rw);
	ks_warn("no token session became free within %u ms", tok->wait_ms);
	return r;
}

static void release(struct ks_token *tok, const struct session_slot *ss)
{
	pthread_mutex_lock(&tok->pool_lock);
	push_free(tok, ss->index, ks_tok_mono_ms());
	pthread_cond_signal(&tok->pool_cond);
	pthread_mutex_unlock(&tok->pool_lock);
	pthread_rwlock_unlock(&tok->rw);
}

/*
 * Private objects are invisible, not an error, once the login is gone, so
 * "not found" is checked against the session state before it is believed.
 */
CK_RV ks_tok_require_login(struct ks_token *tok, CK_SESSION_HANDLE s)
{
	CK_SESSION_INFO si;
	CK_RV rv;

	if ((rv = P11(tok, C_GetSessionInfo, s, &si)) != CKR_OK)
		return rv;
	if (si.state != CKS_RW_USER_FUNCTIONS && si.state != CKS_RO_USER_FUNCTIONS) {
		ks_debug("token session is no longer logged in");
		return CKR_USER_NOT_LOGGED_IN;
	}
	return CKR_OK;
}

/*
 * ks_tok_run_op(); with @key_op (an operation on an existing key, by
 * name), a stale handle after the last retry answers -ENOENT rather than
 * -EIO.
 */
static int run_op(struct ks_token *tok, const char *what, op_fn fn, void *arg, int key_op)
{
	struct session_slot ss;
	enum rv_class cls;
	CK_RV rv = CKR_OK;
	int err, r, session_retries = 0, stale_retries = 0;

	for (int attempt = 0;; attempt++) {
		if ((r = acquire(tok, &ss)) != 0)
			return r;
		err = 0;
		ks_tok_p11_failed_fn = NULL;
		rv = fn(tok, ss.h, arg, attempt, &err);
		cls = ks_tok_classify(rv);
		/* Handles of private objects die with the login. */
		if (cls == RV_STALE && ks_tok_require_login(tok, ss.h) != CKR_OK)
			cls = RV_SESSION;
		release(tok, &ss);
		if (ks_tok_note_result(tok, rv, ks_tok_p11_failed_fn, what)) {
			char reason[96];

			snprintf(reason, sizeof(reason), "%s: %s %d times in a row",
				 ks_tok_p11_failed_fn != NULL ? ks_tok_p11_failed_fn : what,
				 ks_ckr_name(rv), KS_FAULT_THRESHOLD);
			ks_tok_go_down(tok, reason);
			return -ENODEV;
		}
		switch (cls) {
		case RV_OK:
			return err;
		case RV_SESSION:
			if (session_retries++ > 0)
				break;
			if ((r = reopen(tok, ss.generation)) != 0)
				return r;
			ks_info("%s: %s; retrying once", what, ks_ckr_name(rv));
			continue;
		case RV_STALE:
			/*
			 * The key was deleted or replaced under its handle; the
			 * next attempt looks it up by name. A key deleted and made
			 * again between the lookup and its use, twice over, still
			 * gets an answer.
			 */
			if (stale_retries++ >= KS_STALE_RETRIES) {
				/*
				 * Each key the name had was deleted under the
				 * operation in turn (or one delete took that long:
				 * SoftHSM shows a search a key whose delete is under
				 * way, under a new handle already stale when used).
				 * At those moments the name had no key, and "no
				 * such key" is the answer.
				 */
				if (key_op) {
					ks_warn("%s: the key was deleted under the operation %d times "
						"in a row (%s); answering no such key", what,
						stale_retries, ks_ckr_name(rv));
					return -ENOENT;
				}
				break;
			}
			ks_info("%s: %s; looking the key up again", what, ks_ckr_name(rv));
			continue;
		case RV_DEVICE:
			ks_tok_mark_down(tok, rv);
			return -ENODEV;
		default:
			return ks_tok_rv_errno(rv);
		}
		break;
	}
	ks_err("%s failed again after recovery: %s", what, ks_ckr_name(rv));
	return -EIO;
}

int ks_tok_run_op(struct ks_token *tok, const char *what, op_fn fn, void *arg)
{
	return run_op(tok, what, fn, arg, 0);
}

_Thread_local int ks_tok_missed_unknown;

int ks_tok_run_key_op(struct ks_token *tok, const char *what, op_fn fn, void *arg)
{
	int r;

	ks_tok_missed_unknown = 0;
	r = run_op(tok, what, fn, arg, 1);
	if (r == -ENOENT && ks_tok_missed_unknown && tok->rescan == KS_RESCAN_REINITIALIZE &&
	    ks_tok_rescan(tok, ((const struct key_ref *)arg)->name) == 0)
		r = run_op(tok, what, fn, arg, 1);
	return r;
}
