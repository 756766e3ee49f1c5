/*
 * The rejected-PIN guard: a PIN the token refused is never presented
 * again, not by this process and not by the next one systemd starts.
 *
 * Tokens lock the user PIN after a few wrong tries, and only the security
 * officer can undo that. Within one process pkcs11/token.c never presents
 * a refused PIN twice; this module carries that across restarts and socket
 * activations. In the state directory (config "state_dir", default
 * /var/lib/keysvc):
 *
 *   pin-guard.key   32 random bytes, 0600, made once (O_EXCL, fsync)
 *   pin-rejected    "hmac-sha256=HEX ckr=CKR_NAME time=YYYY-MM-DDTHH:MM:SSZ\n",
 *                   written atomically (temp file, fsync, rename, fsync of
 *                   the directory) when the token refuses the PIN
 *
 * HEX is HMAC-SHA256(key, PIN): the marker identifies the PIN without
 * revealing it, and without the key (readable by keysvcd's user only) it
 * cannot be tested against guesses. The state directory must be a
 * directory owned by the effective uid or root, not writable by group or
 * others, with ks_config_check_dirs() true of the directories above it.
 */
#ifndef KEYSVC_PINGUARD_H
#define KEYSVC_PINGUARD_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#define KS_DEFAULT_STATE_DIR "/var/lib/keysvc"
#define KS_PIN_GUARD_KEY "pin-guard.key"
#define KS_PIN_GUARD_MARKER "pin-rejected"

struct ks_pin_guard {
	char dir[PATH_MAX];
	char marker[PATH_MAX];
	uint8_t mac[32];        /* HMAC-SHA256(key, PIN); the key itself is not kept */
	int armed;              /* mac is set: ks_pin_guard_record() may write */
};

/*
 * Check @state_dir, load (or make) the key, compute the PIN's HMAC into
 * @g and wipe the key. Then look at the marker:
 *   - none: 0;
 *   - for another PIN (the PIN file or credential was replaced): the
 *     marker is removed, 0;
 *   - for this PIN, or unreadable: -EKEYREJECTED; the token must not see
 *     this PIN, @err says why and names the marker.
 * A marker whose key file is gone also gives -EKEYREJECTED: it cannot
 * tell which PIN it stands for.
 * Other negative errnos (-EACCES, -ENOENT, -EROFS, ...) with @err filled
 * when the directory is unsafe or cannot be written: a guard that cannot
 * record a rejection is no guard, so the caller must not go on.
 */
int ks_pin_guard_open(struct ks_pin_guard *g, const char *state_dir,
		      const char *pin, size_t pin_len, char *err, size_t err_len);

/*
 * What ks_pin_guard_open() would answer, for --check-config: the same
 * checks (and -EACCES if keysvcd could not write @state_dir), but nothing
 * is made or removed. 0 also when there is no key yet.
 */
int ks_pin_guard_check(const char *state_dir, const char *pin, size_t pin_len,
		       char *err, size_t err_len);

/*
 * Record that the token refused the PIN of ks_pin_guard_open() with
 * @ckr. Safe from any thread (one writer at a time is the token layer's
 * doing: a PIN is refused once per process). 0 or a negative errno,
 * logged here.
 */
int ks_pin_guard_record(const struct ks_pin_guard *g, unsigned long ckr);

/* Forget the HMAC. */
void ks_pin_guard_clear(struct ks_pin_guard *g);

#endif
