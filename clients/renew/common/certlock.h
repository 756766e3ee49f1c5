/*
 * One renewal at a time per managed certificate. Two runs at once (the
 * timer and a manual run) would both renew, and the second install would
 * push the first renewal into PATH.prev: the certificate meant for a
 * rollback would be gone. Every client holds this lock from before it reads
 * the certificate until after the install and the inventory record.
 *
 * The lock is flock(2) on PATH.lock, beside the certificate: the kernel
 * drops it when the process ends however it ends, so a crashed run never
 * leaves it held. The file itself is left in place (removing it would let
 * a third run lock a new file while the second still holds the old one).
 */
#ifndef KEYSVC_CLIENTS_CERTLOCK_H
#define KEYSVC_CLIENTS_CERTLOCK_H

/* How long a second run waits for the first, unless --lock-wait says otherwise. */
#define KS_CERT_LOCK_WAIT_DEFAULT_S 60L
/* The largest --lock-wait: a renewal itself is bounded by its timeouts. */
#define KS_CERT_LOCK_WAIT_MAX_S 86400L

/* A held lock; -1 when none. */
struct ks_cert_lock {
	int fd;
};

/*
 * Lock @cert_path's PATH.lock (created 0600 if missing, never through a
 * symlink; made by root, it is given to the certificate's owner, else to
 * its directory's), trying again every 100 ms for up to @wait_s seconds
 * (0: once).
 * 0 with @lock held; KS_EXIT_BUSY ("another run holds the lock on CERT")
 * when the wait ran out, KS_EXIT_USAGE when the lock file cannot be opened
 * or locked, each with the reason printed.
 */
int ks_cert_lock(const char *cert_path, long wait_s, struct ks_cert_lock *lock);

/* Release @lock (nothing if not held); it is then not held. */
void ks_cert_unlock(struct ks_cert_lock *lock);

#endif
