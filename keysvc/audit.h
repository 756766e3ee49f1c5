/*
 * The audit log: one JSON record per line, hash-chained (the format and
 * the chain are proto/auditchain.h; PROTOCOL.md "Audit" documents them):
 *   {"time":"2026-11-24T09:21:48.123Z","seq":8,"prev":"3f…","uid":1000,
 *    "gid":1000,"pid":42,"op":"sign","key":"web","phase":"intent",
 *    "sha256":"9a…","purpose":"tls"}
 *   {"time":…,"seq":9,"prev":"c1…",…,"op":"sign","key":"web","purpose":"tls",
 *    "intent":8,"outcome":"ok"}
 * No payloads, signatures, CSRs or secrets are ever written, only hashes.
 *
 * Records are serialised under one lock: each is chained with the hash
 * of the one before (only that part is formatted under the lock) and
 * written with one write(2); a write that fails or falls short is rolled
 * back (the file truncated to its size before it) before anything else is
 * appended, so the file only ever holds whole records. An outcome record
 * may be held (chained, not yet written) while another request's intent
 * is outstanding, and is then written in the same write(2) as the next
 * record, by a sync, a reopen or close, or at the latest 10 ms later;
 * when that write fails, every record in it is lost and the chain goes
 * back to the last record in the file. Intents are never held. Intent
 * records are made durable (fdatasync, one sync
 * for all records written before it: group commit): before the caller
 * touches the token (ks_audit_intent(), for operations that change the
 * token), or, for operations that only produce an answer (sign,
 * csr.create), while the token works and before the answer leaves
 * (ks_audit_intent_start(), then ks_audit_intent_wait()): a syncer thread
 * runs the sync meanwhile.
 */
#ifndef KEYSVC_AUDIT_H
#define KEYSVC_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "keysvc/policy.h"

struct ks_audit;

enum ks_audit_sync {
	KS_AUDIT_SYNC_DATA = 0,    /* fdatasync before an intent counts as written */
	KS_AUDIT_SYNC_NONE,        /* write(2) only: survives a crash of keysvcd, not of the machine */
};

enum ks_audit_failure {
	KS_AUDIT_REFUSE = 0,       /* an intent that cannot be written refuses the operation */
	KS_AUDIT_CONTINUE,         /* it is logged and the operation goes ahead */
};

struct ks_audit_options {
	enum ks_audit_sync sync;
	enum ks_audit_failure failure;
};

/*
 * Open @path for appending (created 0640, not following symlinks), or
 * stderr when @path is NULL (no sync, no roll-back). An existing file must
 * be a regular file owned by the effective uid and not writable by group
 * or others, and every directory above it pass ks_config_check_dirs();
 * otherwise -EACCES with @err naming the path and the problem. An
 * incomplete last line is truncated away (and logged); the chain goes on
 * from the last record, or restarts ("chain":"restart") when that is not
 * a record. @opt NULL: the defaults (sync data, refuse). 0 or a negative
 * errno with @err filled.
 */
int ks_audit_open(const char *path, const struct ks_audit_options *opt, struct ks_audit **out,
		  char *err, size_t err_len);

/*
 * Reopen the file (after log rotation, on SIGHUP), with the same checks
 * as ks_audit_open(); the chain goes on in the new file. Records written
 * to the old file are synced first. 0 or a negative errno (logged with
 * the reason); the old file stays in use on failure.
 */
int ks_audit_reopen(struct ks_audit *a);

void ks_audit_close(struct ks_audit *a);

/*
 * Write the outcome records held for the next write now (not synced), for
 * an exit that cannot call ks_audit_close(). 0 or a negative errno (the
 * records are then counted as lost). A NULL @a: 0.
 */
int ks_audit_flush(struct ks_audit *a);

/*
 * Write the intent record of a token-touching operation and wait until it
 * is durable. @hash_name ("sha256", "digest") and @hash_hex (lowercase
 * hex) name what is about to be signed, or NULL; @purpose the key purpose
 * it is signed under (proto/sigform.h's name), or NULL. Returns 0 with *@seq set
 * to the record's number (0 when it was not written but the failure mode
 * is continue), or the negative errno of the write or sync when it could
 * not be written and the failure mode is refuse: the caller must not
 * touch the token. The errno is in the diagnostic log. A NULL @a
 * (tests without a log) writes nothing and returns 0.
 */
int ks_audit_intent(struct ks_audit *a, const struct ks_peer *peer, const char *op,
		    const char *key, const char *hash_name, const char *hash_hex,
		    const char *purpose, uint64_t *seq);

/* An intent record written whose sync was started: what ks_audit_intent_wait() waits for. */
struct ks_audit_pending {
	uint64_t seq;              /* the record's number; 0 when not written (continue) */
	uint64_t gen;              /* the sync to wait for; 0: nothing to wait for */
	int64_t started_ns;        /* CLOCK_MONOTONIC when it was written */
};

/*
 * ks_audit_intent() for an operation that only produces an answer: the
 * record is written (in the file) when this returns, and its sync has
 * been started without waiting for it (the syncer thread, group commit),
 * so the token can be used while it runs. The caller must call
 * ks_audit_intent_wait() before anything the token made leaves keysvcd.
 * The sync starts shortly before the token can answer (three quarters of
 * its quickest recent start-to-wait interval; at once for a token
 * quicker than a sync; at most a second later), so that one sync covers
 * the intents of all the requests the token works on meanwhile.
 * Returns 0 with @pending set, or the negative errno of the write when
 * the record could not be written and the failure mode is refuse: the
 * caller must not touch the token.
 */
int ks_audit_intent_start(struct ks_audit *a, const struct ks_peer *peer, const char *op,
			  const char *key, const char *hash_name, const char *hash_hex,
			  const char *purpose, struct ks_audit_pending *pending);

/*
 * Wait until the intent record of @pending (ks_audit_intent_start()) is
 * durable, syncing at once when no sync covering it has started yet (a
 * sync writes the held outcome records first, and covers them). 0, or
 * the sync's negative errno when it failed and the failure
 * mode is refuse: the caller must then wipe and discard what the token
 * made and answer audit-unavailable. @peer, @op and @key only name the
 * request in the diagnostic log (failure mode continue).
 */
int ks_audit_intent_wait(struct ks_audit *a, const struct ks_peer *peer, const char *op,
			 const char *key, const struct ks_audit_pending *pending);

/*
 * Write one outcome record. @op is the wire operation name or NULL when
 * the request did not get that far; @key may be NULL; @purpose the key
 * purpose the request was decided under (granted or refused), or NULL; @intent is the seq
 * of the operation's intent record or 0; @outcome is "ok" or an error
 * name. Not waited for: while another intent is outstanding the record
 * is chained but held, and written with the next record (one write(2)
 * for both), or within 10 ms; otherwise it is written before this
 * returns. The next intent's sync covers it. A record that cannot be
 * written is counted ("lost" in the next record written) and the errno
 * logged to the diagnostic log; until a write succeeds again intents are
 * attempted and refused as they fail.
 */
void ks_audit_outcome(struct ks_audit *a, const struct ks_peer *peer, const char *op,
		      const char *key, const char *purpose, uint64_t intent, const char *outcome);

/* ks_audit_outcome() of a request without an intent record. */
void ks_audit_log(struct ks_audit *a, const struct ks_peer *peer,
		  const char *op, const char *key, const char *outcome);

/* The number of fdatasync calls made on the log so far (for tests and benchmarks). */
uint64_t ks_audit_syncs(struct ks_audit *a);

/* The number of write(2) calls that carried records so far, each one or more (likewise). */
uint64_t ks_audit_writes(struct ks_audit *a);

/*
 * For tests: hold outcome records up to @ns instead of 10 ms (0: 10 ms),
 * so that a check of what is held does not race the deadline on a loaded
 * machine.
 */
void ks_audit_set_hold_ns(struct ks_audit *a, int64_t ns);

#endif
