/* One renewal at a time per managed certificate (certlock.h). */
#include "clients/renew/common/certlock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clients/renew/common/climsg.h"

#define RETRY_NS (100L * 1000 * 1000)

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * A lock file root has just made belongs to whoever owns the certificate
 * (else its directory): the usual holder is the renewal timer's unprivileged
 * user, which could not open a root-owned 0600 file after one manual run
 * as root, and would then fail on every run.
 */
static int give_to_cert_owner(int fd, const char *cert_path, const char *path)
{
	char parent[PATH_MAX], *slash;
	struct stat st;

	if (geteuid() != 0)
		return 0;
	if (stat(cert_path, &st) != 0) {
		snprintf(parent, sizeof(parent), "%s", path);
		slash = strrchr(parent, '/');
		if (slash == NULL)
			snprintf(parent, sizeof(parent), ".");
		else if (slash == parent)
			parent[1] = '\0';
		else
			*slash = '\0';
		if (stat(parent, &st) != 0)
			return -errno;
	}
	if ((st.st_uid != 0 || st.st_gid != 0) && fchown(fd, st.st_uid, st.st_gid) != 0)
		return -errno;
	return 0;
}

int ks_cert_lock(const char *cert_path, long wait_s, struct ks_cert_lock *lock)
{
	char path[PATH_MAX];
	struct timespec pause = { .tv_nsec = RETRY_NS };
	struct stat st;
	long long deadline;
	int fd = -1, r, said = 0, created = 0;

	lock->fd = -1;
	if (snprintf(path, sizeof(path), "%s.lock", cert_path) >= (int)sizeof(path))
		return ks_die(KS_EXIT_USAGE, "%s: path too long for its lock file", cert_path);
	/* O_NOFOLLOW: a symlink planted beside the certificate must not make us create files elsewhere. */
	for (int tries = 0; fd < 0 && tries < 3; tries++) {
		if ((fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600)) >= 0)
			created = 1;
		else if (errno == EEXIST)
			fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
		if (fd < 0 && errno != ENOENT)
			break;
	}
	if (fd < 0)
		return ks_die(KS_EXIT_USAGE, "lock file %s: %s", path, strerror(errno));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		r = ks_die(KS_EXIT_USAGE, "lock file %s: not a regular file", path);
		goto fail;
	}
	if (created && (r = give_to_cert_owner(fd, cert_path, path)) < 0) {
		r = ks_die(KS_EXIT_USAGE, "lock file %s: cannot give it to the certificate's owner: %s", path,
			   strerror(-r));
		goto fail;
	}
	deadline = now_ms() + (long long)wait_s * 1000;
	while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK) {
			r = ks_die(KS_EXIT_USAGE, "lock file %s: %s", path, strerror(errno));
			goto fail;
		}
		if (now_ms() >= deadline) {
			r = ks_die(KS_EXIT_BUSY, "another run holds the lock on %s (%s); gave up after %ld s",
				   cert_path, path, wait_s);
			goto fail;
		}
		if (!said) {
			ks_say("waiting up to %ld s for another run that holds the lock on %s", wait_s, cert_path);
			said = 1;
		}
		nanosleep(&pause, NULL);
	}
	lock->fd = fd;
	return 0;
fail:
	close(fd);
	return r;
}

void ks_cert_unlock(struct ks_cert_lock *lock)
{
	if (lock->fd < 0)
		return;
	/* Closing the only descriptor releases the flock. */
	close(lock->fd);
	lock->fd = -1;
}
