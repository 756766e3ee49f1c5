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

#include "keysvc/audit_file.h"
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
	 * answer_min_ns the shortest time callers took from
	 * ks_audit_intent_start() to ks_audit_intent_wait() (the token's time)
	 * over the last one to two ANSWER_WINDOW_NS: an answer is never due
	 * sooner than the token's quickest, whatever its queue does to the
	 * others; sync_est_ns how long a sync takes. A caller that comes
	 * before the sync syncs at once itself: a late sync costs one answer
	 * a sync's time, never durability.
	 */
	int64_t unsynced_since;
	/* Atomics, updated without the lock: the minimum of this window and of the last. */
	int64_t answer_min_ns, answer_min_prev_ns, answer_window_start;
	int64_t sync_est_ns;
	uint64_t syncs;                /* fdatasync calls, for the tests */
	/* Per record, under the lock: kept so no record allocates or reformats them. */
	EVP_MD_CTX *md_ctx;            /* the chain hash's */
	time_t when_sec;               /* the second when_prefix names */
	size_t when_prefix_len;        /* 0: none yet */
	char when_prefix[48];          /* "2026-11-24T09:21:48." */
	/*
	 * Outcome records chained but not yet in the file: the first
	 * pend_len bytes of buf (whole lines), written with the next record
	 * in one write(2) (intents are never held), by a sync, a reopen or
	 * close, or by the syncer at pend_since + hold_ns. An outcome
	 * is held only while an intent is outstanding (inflight: some request
	 * is between its intent and its outcome, so another record follows
	 * soon); otherwise it is written at once.
	 * If their write fails, the chain goes back to the last record in
	 * the file (file_seq, file_head, file_chain) and pend_lost is added
	 * to lost: each held record and the "lost" it carried.
	 */
	char *buf;                     /* PEND_MAX + one record and its newline */
	size_t pend_len;
	uint64_t pend_n, pend_lost;
	int64_t pend_since;            /* CLOCK_MONOTONIC when the first was held */
	uint64_t file_seq;
	char file_head[KS_AUDIT_HASH_HEX];
	const char *file_chain;
	uint64_t inflight;
	int64_t hold_ns;               /* the longest a record is held: PEND_DELAY_NS */
	int64_t syncer_wake_ns;        /* the syncer's timed wait ends then; 0: it waits untimed */
	uint64_t writes;               /* write(2) calls that carried records, for the tests */
};

/* The longest an outcome record is held before it is written. */
#define PEND_DELAY_NS 10000000LL
/* The most bytes of held records: past it they are written with the record that comes. */
#define PEND_MAX 4096

static int flush(struct ks_audit *a);

/* How much of the token's expected time the sync may wait before it starts. */
#define SYNC_DELAY_SHARE_NUM 3
#define SYNC_DELAY_SHARE_DEN 4
/* How long an answer time counts for the minimum (between one and two of these). */
#define ANSWER_WINDOW_NS 1000000000LL
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
		n = snprintf(a->when_prefix, sizeof(a->when_prefix),
			     "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
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
	a->hold_ns = PEND_DELAY_NS;
	if ((a->md_ctx = EVP_MD_CTX_new()) == NULL ||
	    (a->buf = malloc(PEND_MAX + KS_AUDIT_LINE_MAX + 2)) == NULL) {
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
		struct ks_audit_tail tail;

		if ((r = ks_audit_file_open(path, &a->fd, err, err_len)) != 0)
			goto fail;
		if (a->sync == KS_AUDIT_SYNC_DATA)
			ks_audit_file_sync_dir(path);
		if ((r = ks_audit_file_tail(path, a->fd, &tail, err, err_len)) != 0) {
			close(a->fd);
			goto fail;
		}
		memcpy(a->head, tail.head, sizeof(a->head));
		a->seq = tail.seq;
		a->chain = tail.chain;
	}
	*out = a;
	return 0;
fail:
	EVP_MD_CTX_free(a->md_ctx);
	free(a->buf);
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
	if ((r = ks_audit_file_open(a->path, &fd, err, sizeof(err))) != 0) {
		ks_err("reload: %s; the audit log stays open as before", err);
		return r;
	}
	if (a->sync == KS_AUDIT_SYNC_DATA)
		ks_audit_file_sync_dir(a->path);
	/* The chain continues from memory; the new file's tail is only repaired. */
	if ((r = ks_audit_file_tail(a->path, fd, NULL, err, sizeof(err))) != 0) {
		ks_err("reload: %s; the audit log stays open as before", err);
		close(fd);
		return r;
	}
	pthread_mutex_lock(&a->lock);
	/* A sync running unlocked on the old file must finish before the number changes. */
	while (a->syncing)
		pthread_cond_wait(&a->sync_done, &a->lock);
	/* The held outcome records belong at the end of the old file, before its sync. */
	(void)flush(a);
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
	pthread_mutex_lock(&a->lock);
	(void)flush(a);
	pthread_mutex_unlock(&a->lock);
	if (a->path != NULL) {
		if (a->sync == KS_AUDIT_SYNC_DATA && a->synced < a->written && fdatasync(a->fd) != 0)
			ks_err("audit log %s: fdatasync: %s", a->path, strerror(errno));
		close(a->fd);
	}
	EVP_MD_CTX_free(a->md_ctx);
	free(a->buf);
	pthread_cond_destroy(&a->sync_kick);
	pthread_cond_destroy(&a->sync_done);
	pthread_mutex_destroy(&a->lock);
	free(a->path);
	free(a);
}

/*
 * @n records were not written. Called with the lock held. A failure is
 * logged when it starts or its errno changes.
 */
static void note_failure(struct ks_audit *a, const char *what, int err, uint64_t n)
{
	a->lost += n;
	if (!a->failing || a->failing_errno != err)
		ks_err("audit log %s: %s: %s", a->path ? a->path : "(stderr)", what, strerror(err));
	a->failing = 1;
	a->failing_errno = err;
}

/*
 * Append @data (@total bytes of whole lines) whole, or leave the file as
 * it was. Called with the lock held. 0 or a negative errno (logged; the
 * caller counts what was lost).
 * The file is O_APPEND and only written under the lock, so after a short
 * write of @done bytes the records start at the size minus @done: the
 * size is read only then, not before every write (an fstat per record).
 */
static int append(struct ks_audit *a, const char *data, size_t total)
{
	size_t done = 0;
	struct stat st;
	off_t before = -1;
	ssize_t n;
	int err = 0;

	if (a->path != NULL && a->truncate_to >= 0) {
		if (ftruncate(a->fd, a->truncate_to) != 0) {
			err = errno;
			note_failure(a, "cannot remove a partial record", err, 0);
			return -err;
		}
		a->truncate_to = -1;
	}
	a->writes++;
	while (done < total) {
		n = write(a->fd, data + done, total - done);
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
		note_failure(a, what, err, 0);
	} else {
		note_failure(a, "write failed", err, 0);
	}
	return -err;
}

/*
 * Chain @rec, whose tail (ks_auditchain_format_tail()) is @tail, after
 * the held records in buf: its time, seq, prev, chain and lost are set
 * here. Called with the lock held. 0 or a negative errno (the record is
 * counted as lost).
 */
static int chain_record(struct ks_audit *a, struct ks_audit_record *rec, const char *tail,
			size_t tail_len)
{
	char when[64], *line = a->buf + a->pend_len;
	size_t head_len = 0, len;
	int r;

	now(a, when);
	rec->time = when;
	rec->seq = a->seq + 1;
	rec->prev = a->head;
	rec->chain = a->chain;
	rec->lost = a->lost;
	if ((r = ks_auditchain_format_head(rec, line, KS_AUDIT_LINE_MAX + 2, &head_len)) != 0 ||
	    (head_len + tail_len > KS_AUDIT_LINE_MAX && (r = -EMSGSIZE) != 0)) {
		note_failure(a, "cannot format a record", -r, 1);
		return r;
	}
	if (a->pend_n == 0) {
		a->file_seq = a->seq;
		memcpy(a->file_head, a->head, KS_AUDIT_HASH_HEX);
		a->file_chain = a->chain;
	}
	memcpy(line + head_len, tail, tail_len);
	len = head_len + tail_len;
	line[len] = '\n';
	ks_auditchain_hash_ctx(a->md_ctx, line, len, a->head);
	a->seq = rec->seq;
	a->chain = NULL;
	a->pend_lost += a->lost + 1;
	a->lost = 0;
	a->pend_len += len + 1;
	a->pend_n++;
	return 0;
}

/*
 * Write the chained records in buf with one write(2). Called with the
 * lock held. On failure none of them is in the file: the chain goes back
 * to the last record that is, and all of them count as lost. 0 or a
 * negative errno.
 */
static int flush(struct ks_audit *a)
{
	uint64_t first = a->file_seq + 1;
	int r;

	if (a->pend_n == 0)
		return 0;
	r = append(a, a->buf, a->pend_len);
	if (r == 0) {
		if (a->failing)
			ks_notice("audit log %s: written again (%" PRIu64 " records could not be "
				  "written; \"lost\" in record %" PRIu64 ")",
				  a->path ? a->path : "(stderr)", a->pend_lost - a->pend_n, first);
		a->failing = 0;
		a->written += a->pend_n;
	} else {
		a->seq = a->file_seq;
		memcpy(a->head, a->file_head, KS_AUDIT_HASH_HEX);
		a->chain = a->file_chain;
		a->lost += a->pend_lost;
	}
	a->pend_len = 0;
	a->pend_n = 0;
	a->pend_lost = 0;
	a->pend_since = 0;
	return r;
}

/*
 * One fdatasync covering every record chained so far, by the calling
 * thread. Called with the lock held and no sync running; the lock is
 * released while syncing. Everyone waiting is woken when it ends.
 */
static void sync_now(struct ks_audit *a)
{
	uint64_t target;
	int64_t t0, took;
	int r;

	/* A sync covers every record chained before it: the held ones are written first. */
	(void)flush(a);
	target = a->written;
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
 * When the syncer should sync the intents waiting for it: three quarters
 * of the token's quickest recent answer after the first of them was
 * written, less the sync's own time (no answer comes sooner than the
 * quickest, and the quarter leaves room for a late wake-up); at once when
 * the token is quicker than a sync; never more than SYNC_DELAY_MAX_NS
 * later. Called with the lock held.
 */
static int64_t sync_deadline(const struct ks_audit *a)
{
	int64_t cur = __atomic_load_n(&a->answer_min_ns, __ATOMIC_RELAXED);
	int64_t prev = __atomic_load_n(&a->answer_min_prev_ns, __ATOMIC_RELAXED);
	int64_t answer = cur == 0 ? prev : prev == 0 || cur < prev ? cur : prev;
	int64_t delay = answer / SYNC_DELAY_SHARE_DEN * SYNC_DELAY_SHARE_NUM - a->sync_est_ns;

	if (delay <= 0 || a->unsynced_since == 0)
		return 0;
	return a->unsynced_since + (delay < SYNC_DELAY_MAX_NS ? delay : SYNC_DELAY_MAX_NS);
}

/*
 * Syncs the records asked for by ks_audit_intent_start() by their
 * deadline, and writes held outcome records hold_ns after the first
 * of them was held if no other record has written them by then.
 */
static void *syncer_main(void *arg)
{
	struct ks_audit *a = arg;
	struct timespec until;
	int64_t now_ns, wake, deadline;

	pthread_mutex_lock(&a->lock);
	while (!a->syncer_stop) {
		now_ns = mono_ns();
		wake = 0;
		if (a->pend_n > 0) {
			if (a->pend_since + a->hold_ns <= now_ns) {
				(void)flush(a);
				continue;
			}
			wake = a->pend_since + a->hold_ns;
		}
		if (!a->syncing && a->sync_wanted > a->synced && a->sync_wanted > a->sync_failed) {
			if ((deadline = sync_deadline(a)) <= now_ns) {
				sync_now(a);
				continue;
			}
			if (wake == 0 || deadline < wake)
				wake = deadline;
		}
		/*
		 * Woken early only to stop or for an earlier deadline; a
		 * waiter that cannot wait syncs itself.
		 */
		a->syncer_wake_ns = wake;
		if (wake == 0) {
			pthread_cond_wait(&a->sync_kick, &a->lock);
		} else {
			until.tv_sec = wake / 1000000000LL;
			until.tv_nsec = wake % 1000000000LL;
			(void)pthread_cond_timedwait(&a->sync_kick, &a->lock, &until);
		}
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

/* Start the syncer thread if it is not running. Called with the lock held. 0 or -1 (logged). */
static int syncer_started(struct ks_audit *a)
{
	int r;

	if (a->syncer_running)
		return 0;
	if ((r = pthread_create(&a->syncer, NULL, syncer_main, a)) != 0) {
		ks_warn("audit log %s: cannot start the syncer thread (%s); intents are synced "
			"by the requests themselves, outcomes written at once", a->path,
			strerror(r));
		return -1;
	}
	a->syncer_running = 1;
	return 0;
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
	if (syncer_started(a) != 0)
		return;
	/*
	 * The syncer waits for the first unsynced intent's deadline; a later
	 * intent's is later still, so only the first wakes it (a wake-up per
	 * request would cost more than it saves).
	 */
	if (first)
		pthread_cond_signal(&a->sync_kick);
}

/*
 * Keep the outcome record just chained in buf for the next write. The
 * syncer is woken only when it would not wake by the held record's
 * deadline anyway (one wake-up per hold_ns at most, not one per
 * record). Called with the lock held. 0, or -1 when the record must be
 * written now.
 */
static int hold(struct ks_audit *a)
{
	int64_t due;

	if (a->path == NULL || a->inflight == 0 || a->pend_len > PEND_MAX || syncer_started(a) != 0)
		return -1;
	if (a->pend_since == 0) {
		a->pend_since = mono_ns();
		due = a->pend_since + a->hold_ns;
		if (a->syncer_wake_ns == 0 || a->syncer_wake_ns > due) {
			a->syncer_wake_ns = due;
			pthread_cond_signal(&a->sync_kick);
		}
	}
	return 0;
}

/*
 * Append @rec to the chain. @how: HOLD an outcome, which may be held for
 * the next write (hold()); WRITE_DURABLE wait until it is
 * durable; WRITE_SYNC_STARTED start its sync (*@gen: its number for
 * wait_synced(), 0 when nothing is synced). Any records held are written
 * with it in one write(2). 0 or a negative errno.
 */
enum { HOLD = 0, WRITE_DURABLE = 1, WRITE_SYNC_STARTED = 2 };

static int write_record(struct ks_audit *a, struct ks_audit_record *rec, int how,
			uint64_t *seq, uint64_t *gen_out)
{
	char tail[KS_AUDIT_LINE_MAX + 2];
	size_t tail_len = 0;
	uint64_t gen;
	int r;

	/* What does not depend on the chain is formatted before the lock. */
	r = ks_auditchain_format_tail(rec, tail, sizeof(tail), &tail_len);
	pthread_mutex_lock(&a->lock);
	if (r != 0) {
		note_failure(a, "cannot format a record", -r, 1);
		goto out;
	}
	if (how == HOLD && rec->intent > 0 && a->inflight > 0)
		a->inflight--;
	if ((r = chain_record(a, rec, tail, tail_len)) != 0)
		goto out;
	if (how == HOLD && hold(a) == 0)
		goto out;
	if ((r = flush(a)) != 0)
		goto out;
	gen = a->written;
	if (how == HOLD)
		goto out;
	a->inflight++;
	if (seq != NULL)
		*seq = rec->seq;
	if (a->path != NULL && a->sync == KS_AUDIT_SYNC_DATA) {
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
 * One more start-to-wait interval for the minimum the syncer plans with
 * (0 in a window: none seen yet). Without the lock: a sample lost to a
 * race only leaves the minimum a little higher for one window.
 */
static void learn_answer_time(struct ks_audit *a, int64_t sample)
{
	int64_t now = mono_ns(), start = __atomic_load_n(&a->answer_window_start, __ATOMIC_RELAXED);
	int64_t min;

	if (sample <= 0)
		return;
	if (now - start >= ANSWER_WINDOW_NS &&
	    __atomic_compare_exchange_n(&a->answer_window_start, &start, now, 0, __ATOMIC_RELAXED,
					__ATOMIC_RELAXED)) {
		__atomic_store_n(&a->answer_min_prev_ns,
				 __atomic_load_n(&a->answer_min_ns, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
		__atomic_store_n(&a->answer_min_ns, sample, __ATOMIC_RELAXED);
		return;
	}
	min = __atomic_load_n(&a->answer_min_ns, __ATOMIC_RELAXED);
	while ((min == 0 || sample < min) &&
	       !__atomic_compare_exchange_n(&a->answer_min_ns, &min, sample, 0, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED))
		;
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
	(void)write_record(a, &rec, HOLD, NULL, NULL);
}

void ks_audit_log(struct ks_audit *a, const struct ks_peer *peer,
		  const char *op, const char *key, const char *outcome)
{
	ks_audit_outcome(a, peer, op, key, NULL, 0, outcome);
}

int ks_audit_flush(struct ks_audit *a)
{
	int r;

	if (a == NULL)
		return 0;
	pthread_mutex_lock(&a->lock);
	r = flush(a);
	pthread_mutex_unlock(&a->lock);
	return r;
}

void ks_audit_set_hold_ns(struct ks_audit *a, int64_t ns)
{
	pthread_mutex_lock(&a->lock);
	a->hold_ns = ns > 0 ? ns : PEND_DELAY_NS;
	pthread_mutex_unlock(&a->lock);
}

uint64_t ks_audit_writes(struct ks_audit *a)
{
	uint64_t n;

	if (a == NULL)
		return 0;
	pthread_mutex_lock(&a->lock);
	n = a->writes;
	pthread_mutex_unlock(&a->lock);
	return n;
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
