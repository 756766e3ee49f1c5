/*
 * The pool of logged-in sessions, reopened when the sessions or the login
 * are lost, and run_op(), which runs one operation on a pooled session
 * with the recovery rules of token.h.
 */

#include "pkcs11/token_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "proto/log.h"
#include "proto/secmem.h"

/* ---- the pool and the login ------------------------------------------------- */

void ks_tok_close_pool(struct ks_token *tok)
{
	if (tok->initialized)
		P11(tok, C_CloseAllSessions, tok->slot);
	for (unsigned i = 0; i < tok->nsessions; i++) {
		tok->sessions[i] = CK_INVALID_HANDLE;
		tok->busy[i] = 0;
	}
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
	CK_RV rv;
	int r;

	if (ks_tok_get_state(tok) == TOKEN_PIN_REJECTED || tok->pin == NULL)
		return -EKEYREJECTED;
	for (unsigned i = 0; i < tok->nsessions; i++) {
		rv = P11(tok, C_OpenSession, tok->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
			 NULL, NULL, &tok->sessions[i]);
		if (rv != CKR_OK) {
			r = ks_tok_classify(rv) == RV_OTHER ? -EIO : -ENODEV;
			goto fail;
		}
		tok->busy[i] = 0;
	}
	rv = P11(tok, C_Login, tok->sessions[0], CKU_USER, (CK_UTF8CHAR *)tok->pin,
		 (CK_ULONG)tok->pin_len);
	if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN)
		return 0;
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
			tok->nsessions);
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
	ks_warn("no token session became free within %u ms", tok->wait_ms);
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

int ks_tok_run_op(struct ks_token *tok, const char *what, op_fn fn, void *arg)
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
			if (stale_retries++ >= KS_STALE_RETRIES)
				break;
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

_Thread_local int ks_tok_missed_unknown;

int ks_tok_run_key_op(struct ks_token *tok, const char *what, op_fn fn, void *arg)
{
	int r;

	ks_tok_missed_unknown = 0;
	r = ks_tok_run_op(tok, what, fn, arg);
	if (r == -ENOENT && ks_tok_missed_unknown &&
	    ks_tok_rescan(tok, ((const struct key_ref *)arg)->name) == 0)
		r = ks_tok_run_op(tok, what, fn, arg);
	return r;
}
