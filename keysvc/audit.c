#include "keysvc/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keysvc/config.h"
#include "proto/auditchain.h"
#include "proto/log.h"

struct ks_audit {
	pthread_mutex_t lock;          /* everything below */
	pthread_cond_t sync_done;
	char *path;                    /* NULL: stderr */
	/*
	 * Never changes while the daemon runs: a reopen puts the new file
	 * under this number with dup3(), under the lock.
	 */
	int fd;
	enum ks_audit_sync sync;
	enum ks_audit_failure failure;
	uint64_t seq;                  /* of the last record written */
	char head[KS_AUDIT_HASH_HEX];  /* its hash; the next record's "prev" */
	const char *chain;             /* the next record starts a chain: "new", "restart"; or NULL */
	off_t truncate_to;             /* -1, or the size to cut a partial record back to first */
	uint64_t lost;                 /* records not written since the last one written */
	int failing;                   /* the last write failed (logged once per errno) */
	int failing_errno;
	/*
	 * Group commit: records written, covered by a finished sync, covered
	 * by a failed one. synced and sync_failed only grow, are written under
	 * the lock with atomic stores, and may be read without it.
	 */
	uint64_t written, synced, sync_failed;
	int sync_errno;
	int syncing;
	/*
	 * The syncer thread (started by the first ks_audit_intent_start()):
	 * it syncs while the caller uses the token, until sync_wanted is
	 * covered. It shares "syncing" with the waiters but waits on
	 * sync_kick of its own, so that asking for a sync wakes only it,
	 * not every request waiting for one.
	 */
	pthread_cond_t sync_kick;      /* CLOCK_MONOTONIC: the syncer waits until a deadline */
	uint64_t sync_wanted;
	pthread_t syncer;
	int syncer_running;
	int syncer_stop;
	/*
	 * When the syncer syncs. An intent started while the token works is
	 * needed only when the token answers, so the sync waits until shortly
	 * before that: one fdatasync then covers every intent written in the
	 * meantime instead of one per handful of requests (a sync costs the
	 * machine far more CPU than a record). unsynced_since is when the
	 * first intent not covered by a started sync was written (0: none);
	 * answer_est_ns how long callers take from ks_audit_intent_start()
	 * to ks_audit_intent_wait() (the token's time; it falls fast and
	 * rises slowly, so it follows the quick answers); sync_est_ns how long
	 * a sync takes. A caller that comes before the sync syncs at once
	 * itself: a late sync costs one answer a sync's time, never
	 * durability.
	 */
	int64_t unsynced_since;
	int64_t answer_est_ns;         /* atomic: updated without the lock */
	int64_t sync_est_ns;
	uint64_t syncs;                /* fdatasync calls, for the tests */
	/* Per record, under the lock: kept so no record allocates or reformats them. */
	EVP_MD_CTX *md_ctx;            /* the chain hash's */
	time_t when_sec;               /* the second when_prefix names */
	size_t when_prefix_len;        /* 0: none yet */
	char when_prefix[48];          /* "2026-11-24T09:21:48." */
	char line[KS_AUDIT_LINE_MAX + 2];  /* the record being written and its newline */
};

/* How much of the token's expected time the sync may wait before it starts. */
#define SYNC_DELAY_SHARE_NUM 3
#define SYNC_DELAY_SHARE_DEN 4
/* The longest an intent stays unsynced while the token works, whatever the token's time. */
#define SYNC_DELAY_MAX_NS 1000000000LL

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * The record's "time", RFC 3339 UTC with milliseconds. Called with the
 * lock held: the date and second are formatted once per second (gmtime_r
 * and snprintf cost more than the rest of a record's fields), only the
 * milliseconds per record.
 */
static void now(struct ks_audit *a, char when[64])
{
	struct timespec ts;
	struct tm tm;
	int ms, n;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (a->when_prefix_len == 0 || ts.tv_sec != a->when_sec) {
		gmtime_r(&ts.tv_sec, &tm);
		n = snprintf(a->when_prefix, sizeof(a->when_prefix), "%04d-%02d-%02dT%02d:%02d:%02d.",
			     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
			     tm.tm_min, tm.tm_sec);
		a->when_prefix_len = n > 0 && (size_t)n < sizeof(a->when_prefix) ? (size_t)n : 0;
		a->when_sec = ts.tv_sec;
	}
	ms = (int)(ts.tv_nsec / 1000000);
	memcpy(when, a->when_prefix, a->when_prefix_len);
	when[a->when_prefix_len] = (char)('0' + ms / 100);
	when[a->when_prefix_len + 1] = (char)('0' + ms / 10 % 10);
	when[a->when_prefix_len + 2] = (char)('0' + ms % 10);
	when[a->when_prefix_len + 3] = 'Z';
	when[a->when_prefix_len + 4] = '\0';
}

/*
 * Open @path and check what was opened: a file another user could have
 * placed or could rewrite is refused, as is a directory where another
 * user could swap it.
 */
static int open_checked(const char *path, int *out, char *err, size_t err_len)
{
	struct stat st;
	int fd, flags, r;

	if ((r = ks_config_check_dirs(path, "audit log", err, err_len)) != 0)
		return r;
	/* O_NONBLOCK: a FIFO planted at the path must not block the open. */
	fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0640);
	if (fd < 0) {
		r = errno == ELOOP ? -EACCES : -errno;
		snprintf(err, err_len, "audit log %s: %s", path,
			 errno == ELOOP ? "is a symbolic link" : strerror(errno));
		return r;
	}
	r = -EACCES;
	if (fstat(fd, &st) != 0) {
		r = -errno;
		snprintf(err, err_len, "audit log %s: %s", path, strerror(errno));
	} else if (!S_ISREG(st.st_mode)) {
		snprintf(err, err_len, "audit log %s: not a regular file", path);
	} else if (st.st_uid != geteuid()) {
		snprintf(err, err_len, "audit log %s: owned by uid %u, must be keysvcd's (uid %u)",
			 path, (unsigned)st.st_uid, (unsigned)geteuid());
	} else if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, err_len, "audit log %s: writable by group or others (mode %04o)",
			 path, (unsigned)(st.st_mode & 07777));
	} else if ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
		r = -errno;
		snprintf(err, err_len, "audit log %s: %s", path, strerror(errno));
	} else {
		*out = fd;
		return 0;
	}
	close(fd);
	return r;
}

/*
 * Make a file just created survive a power loss too: its directory entry
 * is synced once, so the intent records synced into it are found.
 */
static void sync_dir(const char *path)
{
	char *dir = strdup(path), *slash;
	int fd;

	if (dir == NULL)
		return;
	if ((slash = strrchr(dir, '/')) != NULL)
		slash[slash == dir ? 1 : 0] = '\0';
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		if (fsync(fd) != 0)
			ks_warn("audit log %s: fsync of its directory: %s", path, strerror(errno));
		close(fd);
	}
	free(dir);
}

/*
 * The chain state at the end of the file @fd: an incomplete last line (a
 * record whose write was cut by a crash) is truncated away; the last
 * record's hash and seq continue the chain. Sets a->head, a->seq and
 * a->chain when @continue_chain, else only repairs the tail. 0 or a
 * negative errno with @err filled.
 */
static int read_tail(struct ks_audit *a, const char *path, int fd, int continue_chain,
		     char *err, size_t err_len)
{
	char buf[KS_AUDIT_LINE_MAX + 2], *nl, *line;
	struct ks_audit_link link;
	struct stat st;
	size_t want, got = 0;
	off_t start;
	ssize_t n;
	int r;

	if (fstat(fd, &st) != 0)
		goto io;
	if (st.st_size == 0) {
		if (continue_chain) {
			a->chain = "new";
			memcpy(a->head, ks_auditchain_zero, KS_AUDIT_HASH_HEX);
			a->seq = 0;
		}
		return 0;
	}
	want = st.st_size < (off_t)sizeof(buf) ? (size_t)st.st_size : sizeof(buf);
	start = st.st_size - (off_t)want;
	while (got < want) {
		if ((n = pread(fd, buf + got, want - got, start + (off_t)got)) < 0) {
			if (errno == EINTR)
				continue;
			goto io;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	want = got;
	if (want == 0 || buf[want - 1] != '\n') {
		nl = want > 0 ? memrchr(buf, '\n', want) : NULL;
		if (nl != NULL || start == 0) {
			off_t keep = nl != NULL ? start + (nl - buf) + 1 : 0;

			if (ftruncate(fd, keep) != 0)
				goto io;
			ks_warn("audit log %s: removed an incomplete last record (%lld bytes)",
				path, (long long)(st.st_size - keep));
			want = nl != NULL ? (size_t)(nl - buf) + 1 : 0;
		} else {
			/* Longer than any record: not ours to cut. End it, and restart the chain. */
			if ((n = write(fd, "\n", 1)) != 1) {
				if (n == 0)
					errno = ENOSPC;
				goto io;
			}
			ks_warn("audit log %s: ends in %zu or more bytes that are not a record",
				path, want);
			want = 0;
			start = -1;
		}
	}
	if (!continue_chain)
		return 0;
	a->seq = 0;
	memcpy(a->head, ks_auditchain_zero, KS_AUDIT_HASH_HEX);
	if (want == 0 && start == 0) {
		a->chain = "new";
		return 0;
	}
	/* The last line: after the newline before the final one, if that is in the buffer. */
	if (want > 0) {
		buf[want - 1] = '\0';
		line = memrchr(buf, '\n', want - 1);
		if (line != NULL)
			line++;
		else if (start == 0)
			line = buf;
		if (line != NULL && ks_auditchain_parse(line, strlen(line), &link) == 0) {
			ks_auditchain_hash(line, strlen(line), a->head);
			a->seq = link.seq;
			a->chain = NULL;
			return 0;
		}
	}
	ks_warn("audit log %s: the last line is not an audit record; a new chain starts "
		"(\"chain\":\"restart\")", path);
	a->chain = "restart";
	return 0;
io:
	r = -errno;
	snprintf(err, err_len, "audit log %s: %s", path, strerror(-r));
	return r;
}

int ks_audit_open(const char *path, const struct ks_audit_options *opt, struct ks_audit **out,
		  char *err, size_t err_len)
{
	pthread_condattr_t mono;
	struct ks_audit *a;
	int r;

	if ((a = calloc(1, sizeof(*a))) == NULL) {
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->sync_done, NULL);
	pthread_condattr_init(&mono);
	pthread_condattr_setclock(&mono, CLOCK_MONOTONIC);
	pthread_cond_init(&a->sync_kick, &mono);
	pthread_condattr_destroy(&mono);
	a->fd = STDERR_FILENO;
	a->truncate_to = -1;
	if ((a->md_ctx = EVP_MD_CTX_new()) == NULL) {
		snprintf(err, err_len, "out of memory");
		r = -ENOMEM;
		goto fail;
	}
	a->chain = "new";
	memcpy(a->head, ks_auditchain_zero, KS_AUDIT_HASH_HEX);
	if (opt != NULL) {
		a->sync = opt->sync;
		a->failure = opt->failure;
	}
	if (path != NULL) {
		if ((a->path = strdup(path)) == NULL) {
			snprintf(err, err_len, "out of memory");
			r = -ENOMEM;
			goto fail;
		}
		if ((r = open_checked(path, &a->fd, err, err_len)) != 0)
			goto fail;
		if (a->sync == KS_AUDIT_SYNC_DATA)
			sync_dir(path);
		if ((r = read_tail(a, path, a->fd, 1, err, err_len)) != 0) {
			close(a->fd);
			goto fail;
		}
	}
	*out = a;
	return 0;
fail:
	EVP_MD_CTX_free(a->md_ctx);
	pthread_cond_destroy(&a->sync_kick);
	pthread_cond_destroy(&a->sync_done);
	pthread_mutex_destroy(&a->lock);
	free(a->path);
	free(a);
	return r;
}

int ks_audit_reopen(struct ks_audit *a)
{
	char err[512];
	int fd, r;

	if (a == NULL || a->path == NULL)
		return 0;
	if ((r = open_checked(a->path, &fd, err, sizeof(err))) != 0) {
		ks_err("reload: %s; the audit log stays open as before", err);
		return r;
	}
	if (a->sync == KS_AUDIT_SYNC_DATA)
		sync_dir(a->path);
	/* The chain continues from memory; the new file's tail is only repaired. */
	if ((r = read_tail(a, a->path, fd, 0, err, sizeof(err))) != 0) {
		ks_err("reload: %s; the audit log stays open as before", err);
		close(fd);
		return r;
	}
	pthread_mutex_lock(&a->lock);
	/* A sync running unlocked on the old file must finish before the number changes. */
	while (a->syncing)
		pthread_cond_wait(&a->sync_done, &a->lock);
	if (a->sync == KS_AUDIT_SYNC_DATA && a->synced < a->written) {
		if (fdatasync(a->fd) == 0) {
			__atomic_store_n(&a->synced, a->written, __ATOMIC_RELEASE);
		} else {
			a->sync_errno = errno;
			__atomic_store_n(&a->sync_failed, a->written, __ATOMIC_RELEASE);
			ks_err("audit log %s: fdatasync before reopening: %s", a->path, strerror(errno));
		}
	}
	if (dup3(fd, a->fd, O_CLOEXEC) < 0) {
		r = -errno;
		ks_err("reload: audit log %s: %s; the old file stays in use", a->path, strerror(errno));
	} else {
		a->truncate_to = -1;
	}
	pthread_mutex_unlock(&a->lock);
	close(fd);
	return r;
}

void ks_audit_close(struct ks_audit *a)
{
	if (a == NULL)
		return;
	if (a->syncer_running) {
		pthread_mutex_lock(&a->lock);
		a->syncer_stop = 1;
		pthread_cond_signal(&a->sync_kick);
		pthread_mutex_unlock(&a->lock);
		pthread_join(a->syncer, NULL);
	}
	if (a->path != NULL) {
		if (a->sync == KS_AUDIT_SYNC_DATA && a->synced < a->written && fdatasync(a->fd) != 0)
			ks_err("audit log %s: fdatasync: %s", a->path, strerror(errno));
		close(a->fd);
	}
	EVP_MD_CTX_free(a->md_ctx);
	pthread_cond_destroy(&a->sync_kick);
	pthread_cond_destroy(&a->sync_done);
	pthread_mutex_destroy(&a->lock);
	free(a->path);
	free(a);
}

/* Called with the lock held. A failure is logged when it starts or its errno changes. */
static void note_failure(struct ks_audit *a, const char *what, int err)
{
	a->lost++;
	if (!a->failing || a->failing_errno != err)
		ks_err("audit log %s: %s: %s", a->path ? a->path : "(stderr)", what, strerror(err));
	a->failing = 1;
	a->failing_errno = err;
}

/*
 * Append @line (@len bytes and a newline at line[len]) whole, or leave the
 * file as it was. Called with the lock held. 0 or a negative errno.
 * The file is O_APPEND and only written under the lock, so after a short
 * write of @done bytes the record starts at the size minus @done: the size
 * is read only then, not before every record (an fstat per record).
 */
static int append(struct ks_audit *a, const char *line, size_t len)
{
	size_t done = 0, total = len + 1;
	struct stat st;
	off_t before = -1;
	ssize_t n;
	int err = 0;

	if (a->path != NULL && a->truncate_to >= 0) {
		if (ftruncate(a->fd, a->truncate_to) != 0) {
			err = errno;
			note_failure(a, "cannot remove a partial record", err);
			return -err;
		}
		a->truncate_to = -1;
	}
	while (done < total) {
		n = write(a->fd, line + done, total - done);
		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		/* write(2) returning 0 leaves errno alone: say what it means. */
		err = n < 0 ? errno : ENOSPC;
		break;
	}
	if (done == total)
		return 0;
	if (done > 0 && a->path != NULL) {
		if (fstat(a->fd, &st) == 0 && st.st_size >= (off_t)done)
			before = st.st_size - (off_t)done;
		else
			ks_err("audit log %s: cannot find the partial record (%zu bytes) to "
			       "remove it", a->path, done);
	}
	if (done > 0 && before >= 0 && ftruncate(a->fd, before) != 0) {
		/* Not even that: the next record first cuts the file back, or is not written. */
		ks_err("audit log %s: cannot remove the partial record (%zu bytes): %s; trying "
		       "again before the next record", a->path, done, strerror(errno));
		a->truncate_to = before;
	}
	if (done > 0) {
		char what[96];

		snprintf(what, sizeof(what), "short write (%zu of %zu bytes), rolled back", done, total);
		note_failure(a, what, err);
	} else {
		note_failure(a, "write failed", err);
	}
	return -err;
}

/*
 * One fdatasync covering every record written so far, by the calling
 * thread. Called with the lock held and no sync running; the lock is
 * released while syncing. Everyone waiting is woken when it ends.
 */
static void sync_now(struct ks_audit *a)
{
	uint64_t target = a->written;
	int64_t t0, took;
	int r;

	a->syncing = 1;
	a->unsynced_since = 0;
	a->syncs++;
	pthread_mutex_unlock(&a->lock);
	t0 = mono_ns();
	r = fdatasync(a->fd) == 0 ? 0 : errno;
	took = mono_ns() - t0;
	pthread_mutex_lock(&a->lock);
	a->syncing = 0;
	a->sync_est_ns += (took - a->sync_est_ns) / 8;
	if (r == 0) {
		__atomic_store_n(&a->synced, target, __ATOMIC_RELEASE);
	} else {
		/* The records are in the file, maybe not on disk: not lost, not durable. */
		a->sync_errno = r;
		__atomic_store_n(&a->sync_failed, target, __ATOMIC_RELEASE);
		if (!a->failing || a->failing_errno != r)
			ks_err("audit log %s: fdatasync: %s", a->path, strerror(r));
		a->failing = 1;
		a->failing_errno = r;
	}
	pthread_cond_broadcast(&a->sync_done);
	if (a->syncer_running && a->sync_wanted > a->synced && a->sync_wanted > a->sync_failed)
		pthread_cond_signal(&a->sync_kick);
}

/*
 * Wait until a sync that started after record number @gen was written
 * has finished; one thread (the syncer or a waiter) syncs for all
 * waiting. Called with the lock held (released while waiting or
 * syncing). 0 or the sync's negative errno.
 */
static int wait_synced(struct ks_audit *a, uint64_t gen)
{
	for (;;) {
		if (a->sync_failed >= gen)
			return -a->sync_errno;
		if (a->synced >= gen)
			return 0;
		if (!a->syncing)
			sync_now(a);
		else
			pthread_cond_wait(&a->sync_done, &a->lock);
	}
}

/*
 * When the syncer should sync the intents waiting for it: the token's
 * expected time after the first of them was written, less the sync's
 * own time and a quarter of the token's for its variation; at once when
 * the token is quicker than a sync. Called with the lock held.
 */
static int64_t sync_deadline(const struct ks_audit *a)
{
	int64_t answer = __atomic_load_n(&a->answer_est_ns, __ATOMIC_RELAXED);
	int64_t delay = answer / SYNC_DELAY_SHARE_DEN * SYNC_DELAY_SHARE_NUM - a->sync_est_ns;

	if (delay <= 0 || a->unsynced_since == 0)
		return 0;
	return a->unsynced_since + (delay < SYNC_DELAY_MAX_NS ? delay : SYNC_DELAY_MAX_NS);
}

/* Syncs the records asked for by ks_audit_intent_start() by their deadline. */
static void *syncer_main(void *arg)
{
	struct ks_audit *a = arg;
	struct timespec until;
	int64_t deadline;

	pthread_mutex_lock(&a->lock);
	for (;;) {
		while (!a->syncer_stop &&
		       (a->syncing || a->sync_wanted <= a->synced || a->sync_wanted <= a->sync_failed))
			pthread_cond_wait(&a->sync_kick, &a->lock);
		if (a->syncer_stop)
			break;
		if ((deadline = sync_deadline(a)) > mono_ns()) {
			/* Woken early only to stop; a waiter that cannot wait syncs itself. */
			until.tv_sec = deadline / 1000000000LL;
			until.tv_nsec = deadline % 1000000000LL;
			(void)pthread_cond_timedwait(&a->sync_kick, &a->lock, &until);
			continue;
		}
		sync_now(a);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

/*
 * Ask for a sync covering record number @gen without waiting for it.
 * Called with the lock held. When the syncer thread cannot be started
 * nothing happens now: ks_audit_intent_wait() syncs itself.
 */
static void sync_start(struct ks_audit *a, uint64_t gen)
{
	int first = a->unsynced_since == 0;

	if (gen > a->sync_wanted)
		a->sync_wanted = gen;
	if (first)
		a->unsynced_since = mono_ns();
	if (!a->syncer_running) {
		int r = pthread_create(&a->syncer, NULL, syncer_main, a);

		if (r != 0) {
			ks_warn("audit log %s: cannot start the syncer thread (%s); intents are "
				"synced by the requests themselves", a->path, strerror(r));
			return;
		}
		a->syncer_running = 1;
	}
	/*
	 * The syncer waits for the first unsynced intent's deadline; a later
	 * intent's is later still, so only the first wakes it (a wake-up per
	 * request would cost more than it saves).
	 */
	if (first)
		pthread_cond_signal(&a->sync_kick);
}

/*
 * Append @rec to the chain. @how: 0 no sync, WRITE_DURABLE wait until it
 * is durable, WRITE_SYNC_STARTED start its sync (*@gen: its number for
 * wait_synced(), 0 when nothing is synced). 0 or a negative errno.
 */
enum { WRITE_DURABLE = 1, WRITE_SYNC_STARTED = 2 };

static int write_record(struct ks_audit *a, struct ks_audit_record *rec, int how,
			uint64_t *seq, uint64_t *gen_out)
{
	char when[64], tail[KS_AUDIT_LINE_MAX + 2], *line = NULL;
	size_t head_len = 0, tail_len = 0, len = 0;
	uint64_t gen;
	int r, tail_r;

	/* What does not depend on the chain is formatted before the lock. */
	tail_r = ks_auditchain_format_tail(rec, tail, sizeof(tail), &tail_len);
	pthread_mutex_lock(&a->lock);
	if ((r = tail_r) != 0) {
		note_failure(a, "cannot format a record", -r);
		goto out;
	}
	now(a, when);
	rec->time = when;
	rec->seq = a->seq + 1;
	rec->prev = a->head;
	rec->chain = a->chain;
	rec->lost = a->lost;
	line = a->line;
	if ((r = ks_auditchain_format_head(rec, line, sizeof(a->line), &head_len)) != 0 ||
	    (head_len + tail_len > KS_AUDIT_LINE_MAX && (r = -EMSGSIZE) != 0)) {
		note_failure(a, "cannot format a record", -r);
		goto out;
	}
	memcpy(line + head_len, tail, tail_len);
	len = head_len + tail_len;
	line[len] = '\n';      /* one write carries the whole line */
	if ((r = append(a, line, len)) != 0)
		goto out;
	ks_auditchain_hash_ctx(a->md_ctx, line, len, a->head);
	a->seq = rec->seq;
	a->chain = NULL;
	if (a->failing)
		ks_notice("audit log %s: written again (%" PRIu64 " records could not be written; "
			  "\"lost\" in record %" PRIu64 ")", a->path ? a->path : "(stderr)",
			  a->lost, a->seq);
	a->lost = 0;
	a->failing = 0;
	gen = ++a->written;
	if (seq != NULL)
		*seq = rec->seq;
	if (how != 0 && a->path != NULL && a->sync == KS_AUDIT_SYNC_DATA) {
		if (how == WRITE_DURABLE) {
			r = wait_synced(a, gen);
		} else {
			sync_start(a, gen);
			*gen_out = gen;
		}
	}
out:
	pthread_mutex_unlock(&a->lock);
	return r;
}

/* The per-request note of an intent not made durable while audit_failure is continue. */
static int intent_failed(struct ks_audit *a, const struct ks_peer *peer, const char *op,
			 const char *key, int r)
{
	if (a->failure != KS_AUDIT_CONTINUE)
		return r;
	/* The failure itself was logged once as an error; this is per request. */
	ks_info("uid %u %s %s: no durable intent record in the audit log (%s); going "
		"ahead as audit_failure is continue", (unsigned)peer->uid, op ? op : "-",
		key ? key : "-", strerror(-r));
	return 0;
}

int ks_audit_intent(struct ks_audit *a, const struct ks_peer *peer, const char *op,
		    const char *key, const char *hash_name, const char *hash_hex,
		    const char *purpose, uint64_t *seq)
{
	struct ks_audit_record rec = {
		.uid = (uint32_t)peer->uid, .gid = (uint32_t)peer->gid, .pid = peer->pid,
		.op = op, .key = key, .is_intent = 1,
		.hash_name = hash_name, .hash_hex = hash_hex, .purpose = purpose,
	};
	int r;

	*seq = 0;
	if (a == NULL)
		return 0;
	/* *seq stays set when the record was written but could not be synced. */
	if ((r = write_record(a, &rec, WRITE_DURABLE, seq, NULL)) == 0)
		return 0;
	return intent_failed(a, peer, op, key, r);
}

int ks_audit_intent_start(struct ks_audit *a, const struct ks_peer *peer, const char *op,
			  const char *key, const char *hash_name, const char *hash_hex,
			  const char *purpose, struct ks_audit_pending *pending)
{
	struct ks_audit_record rec = {
		.uid = (uint32_t)peer->uid, .gid = (uint32_t)peer->gid, .pid = peer->pid,
		.op = op, .key = key, .is_intent = 1,
		.hash_name = hash_name, .hash_hex = hash_hex, .purpose = purpose,
	};
	int r;

	memset(pending, 0, sizeof(*pending));
	if (a == NULL)
		return 0;
	if ((r = write_record(a, &rec, WRITE_SYNC_STARTED, &pending->seq, &pending->gen)) == 0) {
		pending->started_ns = mono_ns();
		return 0;
	}
	return intent_failed(a, peer, op, key, r);
}

/*
 * One more start-to-wait interval for the estimate of the token's time:
 * it falls by half the difference and rises by an eighth, so it follows
 * the quicker answers (a sync due too late costs one answer a sync's
 * time; one due too early only a sync more). Without the lock: a lost
 * update only delays the estimate by one sample.
 */
static void learn_answer_time(struct ks_audit *a, int64_t sample)
{
	int64_t est = __atomic_load_n(&a->answer_est_ns, __ATOMIC_RELAXED);

	if (sample < 0)
		return;
	est += sample < est ? (sample - est) / 2 : (sample - est) / 8;
	__atomic_store_n(&a->answer_est_ns, est, __ATOMIC_RELAXED);
}

int ks_audit_intent_wait(struct ks_audit *a, const struct ks_peer *peer, const char *op,
			 const char *key, const struct ks_audit_pending *pending)
{
	int r;

	if (a == NULL || pending->gen == 0)
		return 0;
	learn_answer_time(a, mono_ns() - pending->started_ns);
	/*
	 * Usually the sync has finished while the token signed: say so
	 * without the lock every record takes. synced is read first and both
	 * only grow, so this is what wait_synced() answered when it was read.
	 */
	if (__atomic_load_n(&a->synced, __ATOMIC_ACQUIRE) >= pending->gen &&
	    __atomic_load_n(&a->sync_failed, __ATOMIC_ACQUIRE) < pending->gen)
		return 0;
	pthread_mutex_lock(&a->lock);
	r = wait_synced(a, pending->gen);
	pthread_mutex_unlock(&a->lock);
	if (r == 0)
		return 0;
	return intent_failed(a, peer, op, key, r);
}

void ks_audit_outcome(struct ks_audit *a, const struct ks_peer *peer, const char *op,
		      const char *key, const char *purpose, uint64_t intent, const char *outcome)
{
	struct ks_audit_record rec = {
		.uid = (uint32_t)peer->uid, .gid = (uint32_t)peer->gid, .pid = peer->pid,
		.op = op, .key = key, .purpose = purpose, .intent = intent, .outcome = outcome,
	};

	if (a == NULL)
		return;
	(void)write_record(a, &rec, 0, NULL, NULL);
}

void ks_audit_log(struct ks_audit *a, const struct ks_peer *peer,
		  const char *op, const char *key, const char *outcome)
{
	ks_audit_outcome(a, peer, op, key, NULL, 0, outcome);
}

uint64_t ks_audit_syncs(struct ks_audit *a)
{
	uint64_t n;

	if (a == NULL)
		return 0;
	pthread_mutex_lock(&a->lock);
	n = a->syncs;
	pthread_mutex_unlock(&a->lock);
	return n;
}
