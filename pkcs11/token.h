/*
 * The token layer: everything keysvcd does with a PKCS#11 module.
 *
 * One struct ks_token owns a loaded module, the slot of the configured
 * token, a login and a pool of read-write sessions. Every C_* call goes
 * through one wrapper (module.c); CK_RV is mapped to the negative errno
 * values listed below, and run_op() (session.c) applies the recovery rules:
 *
 *  - CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_USER_NOT_LOGGED_IN:
 *    the session pool is reopened, the user logged in again, the key found
 *    again by its CKA_ID, and the operation retried once.
 *  - CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID, or any other
 *    refusal of a key handle (reading its attributes, its public key, or
 *    signing) that a search shows is no longer the key's (deleted, or
 *    deleted and made again, during the operation): the key is looked up
 *    again by name and the operation retried, at most twice; a key
 *    deleted under it on every attempt is -ENOENT. A sign racing a delete
 *    therefore answers a signature or -ENOENT.
 *  - CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, CKR_DEVICE_ERROR and the
 *    like: the token is marked down, the call answers -ENODEV, and a
 *    background thread reconnects (finalize, initialize, find the token,
 *    log in) with backoff (1 s doubling to 5 s, so that a token that comes
 *    back is in use again within about 5 s).
 *  - The token in doubt: a key known to exist (seen by a list, a lookup or
 *    its generation, and not deleted by us since) is not found, or
 *    CKR_GENERAL_ERROR, CKR_FUNCTION_FAILED, CKR_DEVICE_MEMORY or
 *    CKR_HOST_MEMORY come 3 times without a success in between: the call
 *    answers -ENODEV and the token is reconnected as above (SoftHSM whose
 *    token directory went away for a moment finds the keys again only
 *    after C_Finalize and C_Initialize). A known key still missing after
 *    the reconnect is taken as deleted elsewhere and answers -ENOENT from
 *    then on. Fault-driven reconnects are at least 1 s apart, doubling to
 *    60 s while the faults go on.
 *    A fault stays in the health record until the operation that met it
 *    succeeds or the module is initialised again, whatever else succeeds
 *    meanwhile (tpm2-pkcs11 out of TPM object contexts fails every
 *    generation while searches work).
 *  - A key name no search shows and nobody knew (key info, public key,
 *    sign, certificates): -ENOENT, from the lookup's own fresh search,
 *    which shows keys other programs made on SoftHSM and most HSMs. With
 *    cfg->rescan KS_RESCAN_REINITIALIZE the module is initialised again
 *    first, at most once every 10 s, and the operation retried once, so
 *    that keys made by other programs are found on modules that show a
 *    running process only the objects that existed when it initialised
 *    (tpm2-pkcs11).
 *  - CKR_PIN_INCORRECT, CKR_PIN_LOCKED, CKR_PIN_EXPIRED: the PIN is never
 *    presented again (tokens lock after a few failures); every later call
 *    answers -EKEYREJECTED until the daemon is restarted with a good PIN.
 *    cfg->pin_rejected is told, so that a restart does not present it either.
 *
 * Keys are named by CKA_LABEL; the private key, its public key and an
 * optional certificate share one CKA_ID (16 random bytes chosen at
 * generation). Private keys are always generated with CKA_TOKEN,
 * CKA_PRIVATE, CKA_SENSITIVE true, CKA_EXTRACTABLE false and CKA_SIGN as
 * their only capability; nothing in this module reads or exports private
 * key material. What the token can do is read from its mechanism list at
 * open and after every reconnect (ks_token_check_key_type(),
 * ks_token_check_sig_alg(), struct ks_token_info).
 *
 * Return values: 0 on success, or
 *   -ENOENT        no such key (or no certificate for that key)
 *   -EEXIST        a key with that name exists
 *   -EINVAL        bad argument (bad name, wrong digest length, key/alg mismatch)
 *   -EOPNOTSUPP    the token lacks the mechanism
 *   -ENODEV        token unavailable (removed, not present, reconnecting, in doubt)
 *   -EKEYREJECTED  the token rejected the PIN; no further login is tried
 *   -ENOMEM        allocation failure
 *   -ETIMEDOUT     no session became free in time, or a search waited as
 *                  long for a key generation to finish
 *   -EIO           any other token error (logged with its CKR_ name)
 *
 * Searches wait while this module creates a key or certificate: SoftHSM
 * shows a search an object still being written, without its attributes,
 * and then fails the generation.
 *
 * All functions are thread safe once ks_token_open() returned.
 */
#ifndef KEYSVC_PKCS11_TOKEN_H
#define KEYSVC_PKCS11_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "proto/alg.h"
#include "proto/wire.h"   /* key names: ks_key_name_valid(), KS_KEY_NAME_MAX */

#define KS_DEFAULT_KEY_RECHECK_MS 1000
/* The random part of a key's CKA_ID; keys of this version add their purposes (pkcs11/purpose.c). */
#define KS_KEY_ID_LEN 16
/* The most sessions a pool may be configured to hold. */
#define KS_MAX_SESSIONS_CAP 1024
/* The longest CKA_ID struct ks_key_info holds: ours, with every purpose, fit. */
#define KS_KEY_ID_MAX 64

struct ks_token;

/* struct ks_token_config's rescan. */
enum ks_rescan {
	KS_RESCAN_SEARCH,
	KS_RESCAN_REINITIALIZE,
};

/* The longest user PIN the token layer presents (the PIN file's limit too). */
#define KS_PIN_MAX 256

struct ks_token_config {
	/* Absolute path of the PKCS#11 module, from root-owned configuration only. */
	const char *module_path;
	/*
	 * Which token: an RFC 7512 "pkcs11:" URI (token=, serial=,
	 * manufacturer=, model= attributes are honoured), or NULL to use
	 * @token_label / @token_serial; if all are NULL the first token found
	 * is used only when exactly one slot has a token.
	 */
	const char *token_uri;
	const char *token_label;
	const char *token_serial;
	/*
	 * The user PIN. ks_token_open() copies it into locked memory kept for
	 * re-login after a session loss and wipes that copy in
	 * ks_token_close(); the caller wipes its own buffer.
	 */
	const char *pin;
	size_t pin_len;
	/*
	 * The session pool (session.c). @sessions are opened at start and
	 * kept open while idle (1..KS_MAX_SESSIONS_CAP; 0 means 16). Under
	 * load the pool grows, one session per request that finds none free,
	 * up to @max_sessions (0 means 64, or @sessions if that is more),
	 * never beyond the token's ulMaxSessionCount/ulMaxRwSessionCount, and
	 * while a C_OpenSession answers CKR_SESSION_COUNT not beyond what it
	 * has (requests then wait for a free session). Sessions beyond
	 * @sessions idle for @session_idle_ms (0 means 10000) are closed.
	 */
	unsigned sessions;
	unsigned max_sessions;
	unsigned session_idle_ms;
	/* How long a caller waits for a free session before -ETIMEDOUT; 0 means 30000. */
	unsigned session_wait_ms;
	/*
	 * A key found once is remembered by name with its object handle. For
	 * this many milliseconds after the handle was last read back (class,
	 * label and CKA_ID) a signature uses it without reading it again
	 * (every other operation reads it back); 0 reads it
	 * back on every use, negative means KS_DEFAULT_KEY_RECHECK_MS. A
	 * handle that went stale in between is refused by the token and the
	 * operation retried with the key looked up by name. What the interval
	 * lets through, until the next read-back: a key renamed by another
	 * application while its handle stays valid still signs under its old
	 * name; and, on a token that reuses the handles of deleted objects, a
	 * key deleted by another application whose handle went to a new
	 * signing key would sign with that key. Use 0 where other
	 * applications change keys on the same token.
	 */
	int key_recheck_ms;
	/*
	 * What a lookup does about a key name no search shows and nobody
	 * knew (key info, public key, sign, certificates). Every lookup is a
	 * fresh C_FindObjects, which on SoftHSM and most HSMs already shows
	 * keys other programs made since: KS_RESCAN_SEARCH (0, the default)
	 * answers -ENOENT at once and never re-initialises the module for it.
	 * KS_RESCAN_REINITIALIZE is for modules that show an initialised
	 * instance only the objects that existed when it was initialised
	 * (tpm2-pkcs11): the module is then initialised again (C_Finalize,
	 * C_Initialize, every session reopened and logged in; requests wait
	 * meanwhile), at most once every 10 s, and the lookup retried once.
	 */
	enum ks_rescan rescan;
	/*
	 * Called when the token refuses the PIN, whether at ks_token_open(),
	 * on a reopen after a lost login or in the background reconnect,
	 * once per process (the PIN is then wiped and never presented
	 * again), from the thread that saw it, with @pin_rejected_arg and the
	 * CKR_ value. keysvcd records the refusal there so that no restart
	 * presents the PIN either (keysvc/pinguard.h); this module stays
	 * free of files. NULL: nobody is told.
	 */
	void (*pin_rejected)(void *arg, unsigned long ckr);
	void *pin_rejected_arg;
};

enum ks_token_health {
	KS_HEALTH_OK,           /* up, and the last operation met no token fault */
	KS_HEALTH_DEGRADED,     /* up, but the latest operations met token faults */
	KS_HEALTH_UNAVAILABLE,  /* down and reconnecting, or the PIN was rejected */
};

struct ks_token_info {
	char label[33];
	char manufacturer[33];
	char model[17];
	char serial[17];
	char library[33];       /* CK_INFO.libraryDescription */
	int up;                 /* 1 if the token is logged in and usable now */
	/*
	 * From the token layer's live record, as of this call: the state,
	 * the faults in a row since the last success (which call, which
	 * CKR_, how many, since when).
	 */
	enum ks_token_health health;
	/*
	 * Why it is not ok, "" when ok: "C_SignInit: CKR_GENERAL_ERROR 2
	 * times since 2026-12-06T10:02:11Z", "CKR_DEVICE_REMOVED since
	 * ...; reconnecting", "the token rejected the PIN (...)...". It
	 * names no key: hello answers it to any peer of the policy.
	 */
	char health_reason[160];
	/*
	 * When the token last answered an operation without a fault (Unix
	 * time; the login at open counts): hello's last_token_ok, for
	 * monitoring a token that is up but idle or stuck. 0: not yet.
	 */
	long long last_ok;
	/*
	 * What the token can do, read from its mechanism list
	 * (C_GetMechanismList, C_GetMechanismInfo) at open and after every
	 * reconnect: bit 1u << type for each key type it can generate (key
	 * size within its range) and sign with; bit 1u << alg for each
	 * signature algorithm it can make from the data (sig_algs) and from a
	 * precomputed digest too (digest_algs, a subset). All bits are set
	 * when the token does not list its mechanisms.
	 */
	unsigned key_types;
	unsigned sig_algs;
	unsigned digest_algs;
};

struct ks_key_info {
	char name[KS_KEY_NAME_MAX + 1];
	enum ks_key_type type;
	uint8_t id[KS_KEY_ID_MAX];
	size_t id_len;          /* keys made elsewhere may have other CKA_ID lengths; capped at KS_KEY_ID_MAX */
	int has_cert;
	/*
	 * What the key may sign (proto/sigform.h's KS_PURPOSE_* bits), read
	 * from its CKA_ID (pkcs11/purpose.c); 0 for a key whose stored
	 * purposes do not parse (it may sign nothing). @purposes_legacy: the
	 * key carries no purposes (made before they existed, or by another
	 * program) and counts as KS_PURPOSE_ALL.
	 */
	unsigned purposes;
	int purposes_legacy;
};

/*
 * Load the module, initialize it, find the token, log in with the PIN and
 * open the session pool. A wrong PIN gives -EKEYREJECTED and is not retried.
 * A token that is absent at start gives -ENODEV (the daemon refuses to
 * start; later losses are recovered in the background).
 */
int ks_token_open(const struct ks_token_config *cfg, struct ks_token **out);

/*
 * What keysvcd --check-config asks before a start: load the module (is it
 * a PKCS#11 module at all), initialise it and find the configured token,
 * as ks_token_open() does, but without the PIN (@cfg->pin is ignored), a
 * login or sessions; then finalize and unload. 0 with @info's
 * description filled (up 0: nothing was tried that needs the PIN), or
 * ks_token_open()'s errors, logged: -ENODEV the module cannot be loaded
 * or initialised or no initialised token matches, -EINVAL more than one
 * matches or a bad URI.
 */
int ks_token_probe(const struct ks_token_config *cfg, struct ks_token_info *info);

/*
 * Close sessions, log out, finalize and unload; wipes the PIN. NULL is
 * fine. Returns 0, or -EBUSY when the background reconnect is still inside
 * a module call after 5 s: the PIN is wiped but nothing is freed or
 * finalized, and the caller should exit without unloading anything.
 * Operations of other threads must have ended before the call.
 */
int ks_token_close(struct ks_token *tok);

/*
 * Token and library description, whether it is usable now, and its health.
 * Never blocks on the token lock or calls the module, so it answers while
 * the module hangs.
 */
int ks_token_get_info(struct ks_token *tok, struct ks_token_info *info);

/*
 * Generate a key pair named @name of @type in the token. -EEXIST if a
 * private key with that label exists (checked and created under one lock);
 * -ENODEV if the name is of a key known to exist that the token does not
 * show now (see "in doubt" above); leftovers of a delete cut short are
 * removed first. Both keys are asked
 * for with CKA_MODIFIABLE false; a token that refuses that gets the
 * template without it and a warning in the log (once per open).
 * On success *@pub is the public key (caller frees) if @pub is not NULL.
 */
int ks_token_generate(struct ks_token *tok, const char *name,
		      enum ks_key_type type, EVP_PKEY **pub);

/*
 * 0 if the token can generate and sign with keys of @type, else
 * -EOPNOTSUPP with the token's limit in @why ("the token's RSA key sizes
 * are 1024..3072 bits"); -EINVAL for KS_KEY_NONE.
 */
int ks_token_check_key_type(struct ks_token *tok, enum ks_key_type type, char *why,
			    size_t why_len);

/*
 * 0 if the token can make @alg signatures, from a precomputed digest if
 * @digest_only, else from the data; otherwise -EOPNOTSUPP with the reason
 * in @why. -EINVAL for KS_SIG_NONE.
 */
int ks_token_check_sig_alg(struct ks_token *tok, enum ks_sig_alg alg, int digest_only,
			   char *why, size_t why_len);

/*
 * ks_token_generate() of a key bound to @purposes (a ks_purposes_valid()
 * set of proto/sigform.h, else -EINVAL), stored in the key's CKA_ID
 * (16 random bytes, "ksp1:", the list) where nothing can change or
 * remove them apart from the key. ks_token_generate() is this with
 * KS_PURPOSE_ALL, for tests and tools that want a general signing key;
 * keysvcd always names the purposes.
 */
int ks_token_generate_purposes(struct ks_token *tok, const char *name, enum ks_key_type type,
			       unsigned purposes, EVP_PKEY **pub);

/*
 * The purposes of @name as ks_key_info has them, so that keysvcd can
 * refuse a use outside them before the token signs anything. A key found
 * before is answered from the key cache (the CKA_ID the signature then
 * uses) without a module call; otherwise it is looked up like a
 * signature looks it up.
 */
int ks_token_key_purposes(struct ks_token *tok, const char *name, unsigned *purposes,
			  int *legacy);

/* Describe the key @name. */
int ks_token_key_info(struct ks_token *tok, const char *name,
		      struct ks_key_info *info);

/*
 * All private keys on the token whose label is a valid key name, sorted by
 * name. *@keys is an array of *@n entries the caller frees with free().
 */
int ks_token_list(struct ks_token *tok, struct ks_key_info **keys, size_t *n);

/* The public key of @name as an EVP_PKEY (caller frees). */
int ks_token_public_key(struct ks_token *tok, const char *name, EVP_PKEY **pub);

/*
 * Destroy the private key, then the public key and certificates of @name.
 * The private key goes first: after a kill at any step the name no longer
 * resolves, and the public key and certificate left behind (those labelled
 * @name whose CKA_ID no private key has) are removed by the next
 * ks_token_delete() (which then answers 0; -ENOENT when there was nothing
 * at all) or ks_token_generate() of the name.
 */
int ks_token_delete(struct ks_token *tok, const char *name);

/*
 * Sign the pre-computed @digest (exactly ks_sig_alg_digest_len(@alg)
 * bytes, else -EINVAL) with key @name; -EOPNOTSUPP if the token cannot
 * (ks_token_check_sig_alg()). The algorithm's family must match
 * the key's (-EINVAL otherwise). RSA PKCS#1 v1.5 uses CKM_RSA_PKCS over the
 * DigestInfo, RSA-PSS uses CKM_RSA_PKCS_PSS with MGF1 of the same digest
 * and a salt as long as the digest, ECDSA uses CKM_ECDSA and the result is
 * converted to a DER ECDSA-Sig-Value. *@sig is allocated (caller frees),
 * *@sig_len set.
 */
int ks_token_sign_digest(struct ks_token *tok, const char *name,
			 enum ks_sig_alg alg, const uint8_t *digest,
			 size_t digest_len, uint8_t **sig, size_t *sig_len);

/*
 * ks_token_sign_digest(), with the @data the @digest was computed from
 * (NULL: not known). RSA PKCS#1 v1.5 then uses the token's hash-and-sign
 * mechanism (CKM_SHA256_RSA_PKCS, ...) over @data when the token has it:
 * tokens that make CKM_RSA_PKCS signatures with a raw RSA decrypt
 * (tpm2-pkcs11) refuse those for keys that cannot decrypt. Without @data
 * on such a token (learned from the first refusal, confirmed by the same
 * key signing with PSS): -EOPNOTSUPP, and ks_token_check_sig_alg() says so
 * from then on. A key is never given the decrypt capability for it.
 */
int ks_token_sign(struct ks_token *tok, const char *name, enum ks_sig_alg alg,
		  const uint8_t *data, size_t data_len, const uint8_t *digest,
		  size_t digest_len, uint8_t **sig, size_t *sig_len);

/*
 * Store the DER certificate @der as a CKO_CERTIFICATE object (CKC_X_509,
 * CKA_TOKEN true, CKA_PRIVATE false) with the key's CKA_ID and label,
 * replacing an existing one. The caller has checked that it matches the
 * key; the old object is destroyed only after the new one was created.
 */
int ks_token_cert_put(struct ks_token *tok, const char *name,
		      const uint8_t *der, size_t der_len);

/* The DER certificate stored for @name (caller frees); -ENOENT if none. */
int ks_token_cert_get(struct ks_token *tok, const char *name,
		      uint8_t **der, size_t *der_len);

/*
 * Signatures the token has made since ks_token_open() and their summed
 * latency in ns, from C_SignInit to C_Sign's answer, so time spent queued
 * inside the module counts (a network HSM's queue shows as latency). Both
 * only grow; a caller takes differences over its own window. Lock-free,
 * cheap enough for every tick of a controller; the two are read apart, so
 * a window may count a signature whose ns falls into the next one.
 */
void ks_token_sign_stats(struct ks_token *tok, uint64_t *count, uint64_t *sum_ns);

/* The CKR_ name of @rv ("CKR_DEVICE_REMOVED"), or "CKR_0x..." for unknown values. */
const char *ks_ckr_name(unsigned long rv);

#endif
