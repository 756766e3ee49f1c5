/*
 * The audit log's file, apart from the records written to it
 * (keysvc/audit.h): opening it safely, and finding where its chain
 * stands after a restart or a crash.
 */
#ifndef KEYSVC_AUDIT_FILE_H
#define KEYSVC_AUDIT_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "proto/auditchain.h"

/* Where the chain stands at the end of a file. */
struct ks_audit_tail {
	char head[KS_AUDIT_HASH_HEX];  /* the last record's hash: the next record's "prev" */
	uint64_t seq;                  /* the last record's seq; 0 when none */
	const char *chain;             /* "new", "restart" for the next record, or NULL */
};

/*
 * Open @path for appending (created 0640, O_NOFOLLOW, O_CLOEXEC) into
 * *@out. Refused (-EACCES, with @err naming the path and why) when any
 * directory above it fails ks_config_check_dirs(), or the file is a
 * symbolic link, not a regular file, not owned by the effective uid, or
 * writable by group or others. A FIFO planted at the path does not block
 * the open. 0 or a negative errno.
 */
int ks_audit_file_open(const char *path, int *out, char *err, size_t err_len);

/*
 * fsync the directory of @path, so that a file just created survives a
 * power loss with the records synced into it. A failure is logged.
 */
void ks_audit_file_sync_dir(const char *path);

/*
 * Repair the end of the open file @fd (@path names it in messages): an
 * incomplete last line (a record cut by a crash) is truncated away, and
 * a tail longer than any record is ended with a newline. With @tail, also
 * read where the chain stands: after the last record, or a new chain
 * ("new" for an empty file, "restart" when the last line is not a
 * record). 0 or a negative errno with @err filled.
 */
int ks_audit_file_tail(const char *path, int fd, struct ks_audit_tail *tail, char *err,
		       size_t err_len);

#endif
