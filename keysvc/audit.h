/*
 * The audit log: one JSON object per line per request, appended with a
 * single write(2) so lines from concurrent requests never interleave:
 *   {"time":"2026-11-24T09:21:48.123Z","uid":1000,"gid":1000,"pid":42,
 *    "op":"sign","key":"web","outcome":"ok"}
 * No payloads, signatures, CSRs or secrets are ever written.
 */
#ifndef KEYSVC_AUDIT_H
#define KEYSVC_AUDIT_H

#include "keysvc/policy.h"

struct ks_audit;

/*
 * Open @path for appending (created 0640, not following symlinks), or
 * stderr when @path is NULL. 0 or a negative errno.
 */
int ks_audit_open(const char *path, struct ks_audit **out);

/* Reopen the file (after log rotation, on SIGHUP). 0 or a negative errno; the old file stays in use on failure. */
int ks_audit_reopen(struct ks_audit *a);

void ks_audit_close(struct ks_audit *a);

/*
 * Write one line. @op is the wire operation name or NULL when the request
 * did not get that far; @key may be NULL; @outcome is "ok" or an error name.
 * A write failure is reported once to the diagnostic log and otherwise
 * ignored: losing the audit file must not stop signing (the journal still
 * has the diagnostic line).
 */
void ks_audit_log(struct ks_audit *a, const struct ks_peer *peer,
		  const char *op, const char *key, const char *outcome);

#endif
