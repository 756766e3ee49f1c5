/*
 * The audit log's file (keysvc/audit_file.h): opened only if no other
 * user could have placed or could rewrite it, its tail repaired after a
 * crash, and the chain state read from its last record.
 */
#include "keysvc/audit_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keysvc/config.h"
#include "proto/log.h"

int ks_audit_file_open(const char *path, int *out, char *err, size_t err_len)
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

void ks_audit_file_sync_dir(const char *path)
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

int ks_audit_file_tail(const char *path, int fd, struct ks_audit_tail *tail, char *err,
		       size_t err_len)
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
		if (tail != NULL) {
			tail->chain = "new";
			memcpy(tail->head, ks_auditchain_zero, KS_AUDIT_HASH_HEX);
			tail->seq = 0;
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
	if (tail == NULL)
		return 0;
	tail->seq = 0;
	memcpy(tail->head, ks_auditchain_zero, KS_AUDIT_HASH_HEX);
	if (want == 0 && start == 0) {
		tail->chain = "new";
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
			ks_auditchain_hash(line, strlen(line), tail->head);
			tail->seq = link.seq;
			tail->chain = NULL;
			return 0;
		}
	}
	ks_warn("audit log %s: the last line is not an audit record; a new chain starts "
		"(\"chain\":\"restart\")", path);
	tail->chain = "restart";
	return 0;
io:
	r = -errno;
	snprintf(err, err_len, "audit log %s: %s", path, strerror(-r));
	return r;
}
