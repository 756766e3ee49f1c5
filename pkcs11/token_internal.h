/*
 * Internals of the token layer (pkcs11/token.h), shared by its files and
 * by nothing else:
 *
 *   module.c   CKR names, the P11() wrapper and the recovery classes,
 *              module load and (re)initialisation, finding the slot, the
 *              up/down state, the health record, the reconnect thread,
 *              ks_token_open/close/get_info
 *   session.c  the session pool, login, run_op() and its recovery rules
 *   keys.c     key types, keys known to exist, object search, the key
 *              cache, resolve_key(); key info, list, public key, delete
 *   keygen.c   public keys read from the token, key generation and the
 *              leftovers of a generation or delete cut short
 *   sign.c     signatures
 *   cert.c     certificate objects
 *   caps.c     what the token can do, from its mechanism list
 *   locking.c  the mutexes offered to the module in C_Initialize
 *   purpose.c  key purposes, stored in the key's CKA_ID
 *
 * Locks of struct ks_token, outermost first; a lock may be taken while
 * holding only locks above it in this list:
 *
 *   generate_lock  name checks, creation and deletion of keys
 *                  (ks_token_generate, ks_token_delete), held across
 *                  run_op() and the cache and known-key updates after it.
 *   rw             shared by an operation for as long as it uses a pooled
 *                  session (acquire to release); exclusive while the pool
 *                  is reopened or the module reconnected (reopen, the
 *                  reconnect thread, ks_tok_rescan()), so no session is closed under a
 *                  running operation. Protects the pool's handles,
 *                  generation, slot, initialized/owns_init and the PIN.
 *                  Never taken exclusively while holding it shared:
 *                  run_op() releases before it reopens.
 *   objects_rw     shared by a search, exclusive around C_GenerateKeyPair
 *                  and C_CreateObject; taken under rw shared and held
 *                  only across those module calls, never with another
 *                  lock taken inside it.
 *   pool_lock      the pool's slots, free stack and counts, its limits,
 *                  pool_closing (with pool_cond and trim_cond); taken
 *                  under rw, or alone by the trim thread between rounds.
 *                  Never held across a module call: a session is opened
 *                  or closed with its slot marked OPENING or CLOSING and
 *                  the lock dropped (rw stays shared).
 *   state_lock     state, closing, reinit_count, rescan_ms (with state_cond).
 *   info_lock      info, the fault record, down_reason, caps: taken inside
 *                  state_lock (go_down, pin_rejected) or alone; never held
 *                  across a module call, so "hello" cannot hang on the token.
 *   cache_lock     cache[], cache_next; a leaf.
 *   known_lock     known[], known_seq, forget_seq, deleting; a leaf
 *                  (key_missing() drops state_lock before taking it, and
 *                  takes state_lock again via go_down() only after).
 *
 * pool_lock, cache_lock and known_lock are leaves: nothing is taken while
 * holding one. Only objects_rw, generate_lock and rw are held across
 * module calls.
 */
#ifndef KEYSVC_PKCS11_TOKEN_INTERNAL_H
#define KEYSVC_PKCS11_TOKEN_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "pkcs11/token.h"

#define KS_MAX_SESSIONS KS_MAX_SESSIONS_CAP
#define KS_DEFAULT_SESSIONS 16
/* The default cap of a growing pool (token.h: max_sessions). */
#define KS_DEFAULT_MAX_SESSIONS 64
#define KS_DEFAULT_SESSION_IDLE_MS 10000
/*
 * After a C_OpenSession refused with CKR_SESSION_COUNT, the pool stays at
 * the size it had (other applications hold the rest) for this long; after
 * any other refusal it does not try to grow for KS_GROW_RETRY_MS.
 */
#define KS_SESSION_COUNT_HOLD_MS 60000
#define KS_GROW_RETRY_MS 1000
#define KS_DEFAULT_WAIT_MS 30000
#define KS_MAX_OBJECTS 10000
#define KS_FIND_CHUNK 64
#define KS_OBJ_ID_MAX 256
#define KS_MODULUS_MAX 1024     /* RSA-8192 */
#define KS_SIG_MAX 1024         /* the largest raw signature we size for */
#define KS_CERT_MAX 65536
/* How long ks_token_close() waits for the reconnect thread. */
#define KS_CLOSE_WAIT_MS 5000
#define KS_BACKOFF_MIN_MS 1000
/* A token that comes back is in use again within this (plus one attempt). */
#define KS_BACKOFF_MAX_MS 5000
/* Token faults in a row (no success in between) that make the module be initialised again. */
#define KS_FAULT_THRESHOLD 3
/* Lookups again by name after a key was deleted or replaced under its handle. */
#define KS_STALE_RETRIES 2
/* The least and most time between two such re-initialisations while the faults go on. */
#define KS_FAULT_REINIT_MIN_MS 1000
#define KS_FAULT_REINIT_MAX_MS 60000
/*
 * The least time between two re-initialisations made to find a key no
 * search showed (ks_tok_rescan()): a client asking for names that do not
 * exist cannot make keysvcd re-initialise the module in a loop.
 */
#define KS_RESCAN_MIN_MS 10000
/* Bounds the set of key names known to exist; names beyond it simply get no doubt. */
#define KS_MAX_KNOWN KS_MAX_OBJECTS

enum token_state {
	TOKEN_UP,
	TOKEN_DOWN,          /* the reconnect thread is working on it */
	TOKEN_PIN_REJECTED,  /* permanent: the PIN is never presented again */
};

#define KS_KEY_CACHE 32

enum pool_slot_state {
	SLOT_EMPTY,
	SLOT_OPENING,   /* C_OpenSession in flight, by the request that will use it */
	SLOT_FREE,      /* open, on the free stack */
	SLOT_BUSY,      /* open, used by one operation */
	SLOT_CLOSING,   /* C_CloseSession in flight, by the trim thread */
};

struct pool_slot {
	CK_SESSION_HANDLE h;
	enum pool_slot_state state;
	int64_t idle_since_ms;  /* when it last went back on the free stack */
};

struct key_cache_entry {
	int used;
	unsigned generation;
	char name[KS_KEY_NAME_MAX + 1];
	uint8_t id[KS_OBJ_ID_MAX];
	size_t id_len;
	CK_OBJECT_HANDLE priv;
	CK_KEY_TYPE key_type;
	enum ks_key_type type;
	size_t raw_sig_len;
	int always_auth;
	int64_t checked_ms;     /* when the handle was last read back (CLOCK_MONOTONIC) */
};

/*
 * What the token can do (caps.c), under info_lock. Bits are 1u << enum
 * ks_key_type or enum ks_sig_alg.
 */
struct ks_caps {
	int known;              /* the mechanism list was read; else everything is offered */
	int rsa_gen, ec_gen;    /* CKF_GENERATE_KEY_PAIR of CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_EC_KEY_PAIR_GEN */
	CK_ULONG rsa_min, rsa_max, ec_min, ec_max; /* their key sizes in bits */
	int rsa_pkcs, rsa_pss, ecdsa; /* CKF_SIGN of CKM_RSA_PKCS, CKM_RSA_PKCS_PSS, CKM_ECDSA */
	unsigned hash_sign;     /* PKCS#1 v1.5 algorithms whose CKM_SHAx_RSA_PKCS signs */
	/*
	 * Learned from a signature: the token's CKM_RSA_PKCS is a raw RSA
	 * decrypt (tpm2-pkcs11), refused for a sign-only key.
	 */
	int rsa_pkcs_needs_decrypt;
	unsigned key_types;     /* generated and signed with */
	unsigned sig_algs;      /* signed from the data */
	unsigned digest_algs;   /* signed from a digest as well */
};

/* A key name seen on the token (list, generate, lookup); see ks_tok_key_missing(). */
struct known_key {
	char name[KS_KEY_NAME_MAX + 1];
	int doubted;            /* once found missing: then the module was initialised again */
	unsigned doubt_reinit;  /* the reinit_count when it was found missing */
	unsigned long added_seq;
};

struct ks_token {
	CK_FUNCTION_LIST *f;
	int initialized;        /* C_Initialize answered and no C_Finalize since */
	int owns_init;          /* our C_Initialize did it, so C_Finalize at close is ours too */
	int own_locking;        /* the module refused our mutexes: it is initialised without them */
	char *module_path;
	P11KitUri *uri;
	char *label, *serial;
	char *pin;              /* ks_secmem; NULL once rejected */
	size_t pin_len;
	void (*pin_rejected_cb)(void *arg, unsigned long ckr);
	void *pin_rejected_arg;
	CK_SLOT_ID slot;

	/*
	 * Operations hold it shared for as long as they use a pooled session;
	 * reopening and reconnecting hold it exclusively, so no session is
	 * closed under a running operation.
	 */
	pthread_rwlock_t rw;
	unsigned generation;    /* bumped (under rw exclusive) whenever the pool is reopened */

	/*
	 * The session pool (session.c), under pool_lock. slots[] has
	 * pool_cap entries; the free stack holds the indexes of SLOT_FREE
	 * slots, the most recently released on top, so a light load keeps
	 * using the same few sessions and the bottom ones age until the trim
	 * thread closes them.
	 */
	pthread_mutex_t pool_lock;
	pthread_cond_t pool_cond;      /* a session was released, or growth became possible */
	pthread_cond_t trim_cond;      /* wakes the trim thread early: closing */
	struct pool_slot *slots;
	unsigned *free_stack;
	unsigned nfree;
	unsigned nopen;                /* slots FREE, BUSY or CLOSING */
	unsigned nopening;             /* slots OPENING */
	unsigned pool_floor;           /* kept open while idle (config sessions) */
	unsigned pool_cap;             /* config max_sessions */
	unsigned token_max;            /* the token's session limit at the last find_slot; 0 none */
	unsigned held_limit;           /* after CKR_SESSION_COUNT: no growth beyond this ... */
	int64_t held_until_ms;         /* ... until then */
	int64_t grow_retry_ms;         /* no growth before then, after another refusal */
	unsigned peak;                 /* the most sessions open at once, for the log */
	unsigned idle_ms;
	int pool_closing;
	int trim_started;
	pthread_t trim_thread;
	unsigned wait_ms;
	unsigned key_recheck_ms; /* 0: a cached key handle is read back on every use */
	enum ks_rescan rescan;   /* config: what a miss of an unknown name does */

	pthread_mutex_t state_lock;
	pthread_cond_t state_cond;
	enum token_state state;
	int closing;
	int thread_started;
	pthread_t reconnect_thread;
	unsigned reinit_count;  /* successful reconnects (module initialised again), under state_lock */
	int64_t rescan_ms;      /* the last ks_tok_rescan(), under state_lock; 0: none yet */

	/* Never held across a module call, so answering "hello" cannot hang on the token. */
	pthread_mutex_t info_lock;
	struct ks_token_info info;
	/*
	 * The live record health is computed from, under info_lock: token
	 * faults in a row (no success in between), the last one and when the
	 * first happened; why and since when the token is down.
	 */
	unsigned faults;
	CK_RV fault_rv;
	const char *fault_fn;   /* a string literal: the C_* name */
	const char *fault_what; /* a string literal: the operation that met it; NULL once it succeeded */
	time_t fault_since;
	time_t last_ok;         /* the last operation without a fault (ks_token_info.last_ok) */
	int64_t fault_reinit_ms; /* when faults last made the module be initialised again */
	unsigned fault_backoff_ms;
	char down_reason[sizeof(((struct ks_token_info *)0)->health_reason)];
	int modifiable_refused; /* the token refused CKA_MODIFIABLE false; warned once */
	/*
	 * Signatures the token made and the ns they took from C_SignInit to
	 * C_Sign's answer (queueing inside the module included): atomics, no
	 * lock, read by ks_token_sign_stats().
	 */
	uint64_t sign_count;
	uint64_t sign_ns;
	struct ks_caps caps;    /* under info_lock */

	/*
	 * Names of keys known to exist (see ks_tok_key_missing()); never held
	 * across a module call.
	 */
	pthread_mutex_t known_lock;
	struct known_key *known;
	size_t nknown, known_cap;
	/*
	 * Counts additions and removals; forget_seq is its value at the last
	 * removal. A lookup compares them with the value when its search
	 * began, so a search that raced a delete or a generate neither
	 * doubts a name learned after it nor brings back one forgotten.
	 */
	unsigned long known_seq, forget_seq;
	/* The name a delete is working on ("" if none): no lookup may teach it meanwhile. */
	char deleting[KS_KEY_NAME_MAX + 1];

	/* Name checks and creation/deletion happen under it, so a name is taken once. */
	pthread_mutex_t generate_lock;
	/*
	 * Searches hold it shared, object creation exclusively. SoftHSM
	 * matches a search against every object's attributes, and one that
	 * reads an object while C_GenerateKeyPair is still writing it shows
	 * the searcher a key without its attributes ("unsupported") and
	 * fails the generation (CKR_GENERAL_ERROR).
	 */
	pthread_rwlock_t objects_rw;

	/*
	 * Private keys already found, by name (see ks_tok_resolve_key()): a
	 * signature then costs no search of the whole token, and its handle is
	 * read back at most once per key_recheck_ms. Entries of an older pool
	 * generation are never used.
	 */
	pthread_mutex_t cache_lock;
	struct key_cache_entry cache[KS_KEY_CACHE];
	unsigned cache_next;
};

/* Every C_* call goes through it: the function is named in the log and the health record. */
#define P11(tok, fn, ...) ks_tok_p11_call(#fn, (tok)->f->fn(__VA_ARGS__))

/*
 * Not from a module: a search waited longer than the session wait for a
 * key generation of ours to finish (see objects_rw). Answers -ETIMEDOUT.
 */
#define KS_CKR_BUSY (CKR_VENDOR_DEFINED | 0x4b5301UL)

enum rv_class {
	RV_OK,
	RV_OTHER,
	RV_SESSION,   /* the session or the login is gone: reopen, log in, retry once */
	RV_STALE,     /* an object handle went stale: find the key again, retry once */
	RV_DEVICE,    /* the token or the module is gone: down, reconnect in the background */
	RV_PIN,       /* the PIN is refused: never present it again */
};

/* The private key one operation works on, as ks_tok_resolve_key() found it. */
struct key_ref {
	const char *name;
	uint8_t id[KS_OBJ_ID_MAX];
	size_t id_len;
	int have_id;
	CK_OBJECT_HANDLE priv;
	CK_KEY_TYPE key_type;
	enum ks_key_type type;
	size_t raw_sig_len;     /* modulus bytes, or 2 * field bytes; 0 when unknown */
	int always_auth;        /* CKA_ALWAYS_AUTHENTICATE: a login for every signature */
	int can_decrypt;        /* CKA_DECRYPT true: made elsewhere, warned when looked up */
	int64_t checked_ms;     /* the cache entry's, when @priv came from the cache */
	int unchecked;          /* @priv is a cached handle this request has not read back */
	/*
	 * Set by sign only: a cached handle younger than key_recheck_ms may be
	 * used unread. Everything else (delete, certificates, public keys)
	 * reads it back, so a renamed or replaced key is never destroyed,
	 * given a certificate or described under the old name.
	 */
	int may_skip_check;
};

/*
 * One attempt of an operation on session @s. Token errors are returned as
 * CK_RV; logical outcomes (no such key, wrong algorithm) as *@err with CKR_OK.
 * @retry is 1 on the second attempt, which finds the key by the CKA_ID the
 * first attempt saved.
 */
typedef CK_RV (*op_fn)(struct ks_token *tok, CK_SESSION_HANDLE s, void *arg,
		       int retry, int *err);

/* ---- module.c ---------------------------------------------------------------- */

/*
 * Logs a failed C_* call once, named @fn (the normal-flow answers only at
 * debug level), notes @fn in ks_tok_p11_failed_fn and returns @rv.
 */
CK_RV ks_tok_p11_call(const char *fn, CK_RV rv);

/* The C_* name of the last call of this thread that failed, for the health record. */
extern _Thread_local const char *ks_tok_p11_failed_fn;

/* Which recovery rule applies to @rv. */
enum rv_class ks_tok_classify(CK_RV rv);

/* The negative errno a caller of token.h gets for @rv (0 for CKR_OK). */
int ks_tok_rv_errno(CK_RV rv);

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t ks_tok_mono_ms(void);

/* *@ts = now + @ms on CLOCK_MONOTONIC, for the clock* waits. */
void ks_tok_deadline_in(struct timespec *ts, unsigned ms);

/* The state, read under state_lock. */
enum token_state ks_tok_get_state(struct ks_token *tok);

/*
 * The token counts as down from now, for @reason (kept for health if it is
 * the first of the outage): requests answer -ENODEV and the reconnect
 * thread initialises the module again. Takes state_lock, then info_lock.
 */
void ks_tok_go_down(struct ks_token *tok, const char *reason);

/* ks_tok_go_down() with @rv's CKR_ name as the reason. */
void ks_tok_mark_down(struct ks_token *tok, CK_RV rv);

/*
 * Records the outcome @rv of the operation @what (a string literal; @fn
 * the failed call) in the fault record. Returns 1 when it is the fault
 * that makes the module due to be initialised again (the caller then goes
 * down), else 0. Faults are cleared only by a success of the operation
 * that met them (or a re-initialisation): a search that still works says
 * nothing about the generations or signatures that fail, as when
 * tpm2-pkcs11 is out of TPM object contexts (CKR_GENERAL_ERROR or
 * CKR_DEVICE_MEMORY) while the name check before each generation succeeds.
 */
int ks_tok_note_result(struct ks_token *tok, CK_RV rv, const char *fn, const char *what);

/*
 * A key name no search showed and nobody knew: tpm2-pkcs11 shows an open
 * module instance no object another program made since, until the module
 * is initialised again. Re-initialises the module (rw exclusively, as the
 * reconnect does) unless that was done for this less than
 * KS_RESCAN_MIN_MS ago or the token is not up: 0 if it did, -EAGAIN if
 * not, or the reconnect's error (the token then goes down and the
 * reconnect thread takes over). No lock held.
 */
int ks_tok_rescan(struct ks_token *tok, const char *name);

/* ---- locking.c --------------------------------------------------------------- */

/*
 * Fills @args for C_Initialize: CKF_OS_LOCKING_OK and, with @offer_mutexes,
 * keysvcd's four mutex functions (adaptive pthread mutexes: a contended
 * lock spins briefly before it sleeps). They behave as the OS's default
 * mutex: not recursive, an unlock by another thread not detected.
 */
void ks_tok_init_args(CK_C_INITIALIZE_ARGS *args, int offer_mutexes);

/* ---- session.c --------------------------------------------------------------- */

/*
 * The pool's sizes from @cfg and its arrays (pool_lock and pool_cond are
 * initialised by the caller). -EINVAL for sizes out of range, -ENOMEM.
 */
int ks_tok_pool_init(struct ks_token *tok, const struct ks_token_config *cfg);

/*
 * The token's own session limit, from the CK_TOKEN_INFO of its slot:
 * ulMaxSessionCount and ulMaxRwSessionCount (the pool's sessions are
 * read-write), CK_EFFECTIVELY_INFINITE and CK_UNAVAILABLE_INFORMATION
 * meaning none. Called whenever the slot is found (start, reconnect);
 * rw held exclusively, or no other thread exists yet.
 */
void ks_tok_pool_token_limit(struct ks_token *tok, const CK_TOKEN_INFO *ti);

/* One open session of the pool (for C_Logout at close), or CK_INVALID_HANDLE. */
CK_SESSION_HANDLE ks_tok_pool_any(struct ks_token *tok);

/*
 * Stops the trim thread, waiting at most KS_CLOSE_WAIT_MS: -EBUSY if it
 * is stuck in the module (nothing may then be finalized or freed).
 */
int ks_tok_pool_stop(struct ks_token *tok);

/* Frees the arrays and trim_cond; after ks_tok_pool_stop() and ks_tok_close_pool(). */
void ks_tok_pool_free(struct ks_token *tok);

/*
 * Closes every session of the pool and empties the key cache. rw held
 * exclusively, or no other thread exists yet.
 */
void ks_tok_close_pool(struct ks_token *tok);

/*
 * Opens the pool's floor of sessions (fewer if the token refuses more
 * with CKR_SESSION_COUNT), logs in, and starts the trim thread the first
 * time. rw held exclusively, or no other thread exists yet. -EKEYREJECTED once the PIN was rejected (it is then wiped
 * and the state final), -ENODEV or -EIO otherwise; the pool is closed
 * again on failure.
 */
int ks_tok_open_pool(struct ks_token *tok);

/* CKR_USER_NOT_LOGGED_IN if session @s lost its login, or the call's error. */
CK_RV ks_tok_require_login(struct ks_token *tok, CK_SESSION_HANDLE s);

/*
 * Runs @fn on a pooled session with the recovery rules of token.h
 * (reopen and retry once, look the key up again, go down); @what names
 * the operation in the log. Returns 0, @fn's *err, or a negative errno.
 * Must not be called with rw, pool_lock or any lower lock held.
 */
int ks_tok_run_op(struct ks_token *tok, const char *what, op_fn fn, void *arg);

/*
 * Set by ks_tok_resolve_key() on this thread when a name was not found and
 * is not of a key known to exist; ks_tok_run_key_op() clears it first.
 */
extern _Thread_local int ks_tok_missed_unknown;

/*
 * ks_tok_run_op() for an operation on the existing key named in @arg
 * (whose struct begins with its struct key_ref). When it answers -ENOENT
 * for a name nobody knew and the configuration says the module needs it
 * (KS_RESCAN_REINITIALIZE), the module is re-initialised (ks_tok_rescan(),
 * rate-limited) and the operation run once more, so that keys made by
 * other programs are found without a restart; otherwise the miss of the
 * operation's own fresh search stands. A key deleted under it on every
 * attempt (KS_STALE_RETRIES retries) answers -ENOENT.
 */
int ks_tok_run_key_op(struct ks_token *tok, const char *what, op_fn fn, void *arg);

/* ---- keys.c ------------------------------------------------------------------ */

/* The DER curve OID of an EC @type, its length in *@len; NULL for others. */
const uint8_t *ks_tok_ec_params_for(enum ks_key_type type, size_t *len);

/* The known-key sequence, taken before a search for ks_tok_known_add()/key_missing(). */
unsigned long ks_tok_known_snapshot(struct ks_token *tok);

/*
 * @name was seen on the token by a search that began at @snap, or created
 * (@snap is ULONG_MAX); a search older than the last removal teaches nothing.
 */
void ks_tok_known_add(struct ks_token *tok, const char *name, unsigned long snap);

/*
 * No private key @name was found with the login intact (search begun at
 * @snap): -ENOENT if the name is unknown or already doubted once since a
 * re-initialisation, else the token goes down and -ENODEV.
 */
int ks_tok_key_missing(struct ks_token *tok, const char *name, unsigned long snap);

/* objects_rw exclusive, waiting at most wait_ms (then KS_CKR_BUSY); unlocked by the caller. */
CK_RV ks_tok_objects_wrlock(struct ks_token *tok);

/*
 * Up to @max objects of class @cls with the given label and/or CKA_ID (a
 * NULL label or id is not part of the template), their number in *@n.
 * Takes objects_rw shared.
 */
CK_RV ks_tok_find_objects(struct ks_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
			  const char *label, const uint8_t *id, size_t id_len,
			  CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *n);

/* Objects of class @cls belonging to key @k (its CKA_ID; also its label if that is empty). */
CK_RV ks_tok_find_related(struct ks_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
			  const struct key_ref *k, CK_OBJECT_HANDLE *out, CK_ULONG max,
			  CK_ULONG *n);

/* RSA, EC or none, from @k's CKA_KEY_TYPE. */
enum ks_key_family ks_tok_key_family(const struct key_ref *k);

/*
 * Fills @k (handle, CKA_ID, key type and size) from the private key @h,
 * reading only public attributes; an unusable CKA_ID or type is *@err -EIO.
 * A token error leaves @k's handle and CKA_ID as they were.
 */
CK_RV ks_tok_describe_key(struct ks_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
			  struct key_ref *k, int *err);

/* Forgets the cached handle of @name. */
void ks_tok_cache_drop(struct ks_token *tok, const char *name);

/*
 * After a call on @k->priv failed with @rv: CKR_KEY_HANDLE_INVALID if a
 * search shows the handle is no longer the key's (so run_op() looks it up
 * again), else @rv.
 */
CK_RV ks_tok_key_gone_check(struct ks_token *tok, CK_SESSION_HANDLE s, const struct key_ref *k,
			    CK_RV rv);

/*
 * 1 if a search by @k's name (and CKA_ID) no longer shows @k->priv: the key
 * was deleted since it was found (logged at debug level only). 0 if it is
 * still there or the search failed.
 */
int ks_tok_key_gone(struct ks_token *tok, CK_SESSION_HANDLE s, const struct key_ref *k);

/*
 * Finds the private key named @k->name (cache, label, or on a retry the
 * saved CKA_ID) and fills @k. Token errors are returned for run_op();
 * -ENOENT, -ENODEV (in doubt) or -EIO (ambiguous) go to *@err.
 */
CK_RV ks_tok_resolve_key(struct ks_token *tok, CK_SESSION_HANDLE s, struct key_ref *k,
			 int *err);

/* ---- purpose.c --------------------------------------------------------------- */

/*
 * A new key's CKA_ID for @purposes into @id (@cap bytes): 16 random
 * bytes, "ksp1:", the list. Its length in *@len. 0, -EINVAL (not a valid
 * set), -ENOSPC or -EIO (no randomness).
 */
int ks_tok_purpose_id(unsigned purposes, uint8_t *id, size_t cap, size_t *len);

/*
 * The purposes a CKA_ID stores: KS_PURPOSE_ALL with *@legacy 1 when it
 * carries none, 0 (nothing) when what it carries does not parse.
 */
unsigned ks_tok_purposes_from_id(const uint8_t *id, size_t len, int *legacy);

/* ---- keygen.c ---------------------------------------------------------------- */

/*
 * The public key of @k (resolved) into *@pub: from its public key object,
 * for RSA else from the private object's public attributes. A key deleted
 * since it was resolved is *@err -ENOENT (logged at debug level only), or
 * the token's refusal of its handle; a key without a public key this
 * service can read is *@err -EIO or -EOPNOTSUPP (logged as an error).
 */
CK_RV ks_tok_read_public(struct ks_token *tok, CK_SESSION_HANDLE s, struct key_ref *k,
			 EVP_PKEY **pub, int *err);

/*
 * Destroys the public keys and certificates labelled @name whose CKA_ID no
 * private key has (a delete cut short), counted in *@removed. Only when no
 * private key is named @name.
 */
CK_RV ks_tok_remove_leftovers(struct ks_token *tok, CK_SESSION_HANDLE s, const char *name,
			      int *removed);

/* ---- caps.c ------------------------------------------------------------------ */

/*
 * Reads the token's mechanism list and their information into tok->caps
 * (module initialised, tok->slot set; at open and after every reconnect).
 */
void ks_tok_probe_caps(struct ks_token *tok);

/* A copy of tok->caps. */
void ks_tok_caps_get(struct ks_token *tok, struct ks_caps *out);

/*
 * A sign-only key's CKM_RSA_PKCS signature was refused while the same key
 * signed with PSS: from now on PKCS#1 v1.5 is made only by hash-and-sign
 * (warned once).
 */
void ks_tok_learn_rsa_pkcs_needs_decrypt(struct ks_token *tok);

/* CKM_SHAx_RSA_PKCS for a PKCS#1 v1.5 @alg when the token signs with it, else 0. */
CK_MECHANISM_TYPE ks_tok_hash_sign_mech(struct ks_token *tok, enum ks_sig_alg alg);

#endif
