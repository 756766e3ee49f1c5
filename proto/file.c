#include "proto/file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "proto/secmem.h"

/* What a pipe or device is first given room for; regular files get their size. */
#define READ_CHUNK 4096

static int open_for_reading(const char *path, unsigned flags)
{
	int oflags = O_RDONLY | O_CLOEXEC | O_NOCTTY, fd;

	if (flags & KS_FILE_NOFOLLOW)
		oflags |= O_NOFOLLOW;
	if (flags & KS_FILE_NONBLOCK)
		oflags |= O_NONBLOCK;
	fd = open(path, oflags);
	return fd < 0 ? -errno : fd;
}

int ks_file_keep_stat(int fd, const struct stat *st, void *arg)
{
	(void)fd;
	*(struct stat *)arg = *st;
	return 0;
}

/* Everything that is decided before a byte is read. */
static int check_before_reading(int fd, size_t max, unsigned flags, ks_file_check_fn *check, void *arg,
				struct stat *st)
{
	int r;

	if (fstat(fd, st) != 0)
		return -errno;
	if (S_ISDIR(st->st_mode))
		return -EISDIR;
	if (!S_ISREG(st->st_mode) && !(flags & KS_FILE_ANY_TYPE))
		return -EBADFD;
	if (check != NULL && (r = check(fd, st, arg)) != 0)
		return r < 0 ? r : -EACCES;
	if (S_ISREG(st->st_mode) && (st->st_size < 0 || (uintmax_t)st->st_size > max))
		return -EFBIG;
	return 0;
}

/* Make *@buf @cap bytes, the first @used kept; with KS_FILE_WIPE the old buffer is wiped, not left to realloc. */
static int grow(uint8_t **buf, size_t *old_cap, size_t cap, size_t used, unsigned flags)
{
	uint8_t *nb;

	if (!(flags & KS_FILE_WIPE)) {
		if ((nb = realloc(*buf, cap)) == NULL)
			return -ENOMEM;
	} else {
		if ((nb = malloc(cap)) == NULL)
			return -ENOMEM;
		memcpy(nb, *buf, used);
		ks_freezero(*buf, *old_cap);
	}
	*buf = nb;
	*old_cap = cap;
	return 0;
}

int ks_file_read_fd(int fd, size_t max, unsigned flags, ks_file_check_fn *check, void *arg, uint8_t **out,
		    size_t *len)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t cap = 0, got = 0;
	int r;

	*out = NULL;
	*len = 0;
	if (max > SIZE_MAX - 2)
		return -EINVAL;
	if ((r = check_before_reading(fd, max, flags, check, arg, &st)) < 0)
		return r;
	/* What fstat promises, one byte more to see a file grown past @max, and the NUL. */
	cap = (S_ISREG(st.st_mode) ? (size_t)st.st_size : (max < READ_CHUNK ? max : READ_CHUNK)) + 2;
	if ((buf = malloc(cap)) == NULL)
		return -ENOMEM;
	for (;;) {
		ssize_t n;

		if (got == cap - 1) {
			if (got > max) {
				r = -EFBIG;
				goto out;
			}
			if ((r = grow(&buf, &cap, cap > (max + 2) / 2 ? max + 2 : 2 * cap, got, flags)) < 0)
				goto out;
		}
		n = read(fd, buf + got, cap - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got > max) {
		r = -EFBIG;
		goto out;
	}
	buf[got] = '\0';
	*out = buf;
	*len = got;
	buf = NULL;
	r = 0;
out:
	if (buf != NULL && (flags & KS_FILE_WIPE))
		ks_freezero(buf, cap);
	else
		free(buf);
	return r;
}

int ks_file_read(const char *path, size_t max, unsigned flags, ks_file_check_fn *check, void *arg,
		 uint8_t **out, size_t *len)
{
	int fd, r;

	*out = NULL;
	*len = 0;
	if ((fd = open_for_reading(path, flags)) < 0)
		return fd;
	r = ks_file_read_fd(fd, max, flags, check, arg, out, len);
	close(fd);
	return r;
}

int ks_file_read_buf(const char *path, unsigned flags, ks_file_check_fn *check, void *arg, void *buf,
		     size_t max, size_t *len)
{
	uint8_t *p = buf, probe = 0;
	struct stat st;
	size_t got = 0;
	ssize_t n = 0;
	int fd, r;

	*len = 0;
	p[0] = '\0';
	if ((fd = open_for_reading(path, flags)) < 0)
		return fd;
	if ((r = check_before_reading(fd, max, flags, check, arg, &st)) < 0)
		goto out;
	while (got < max) {
		n = read(fd, p + got, max - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	/* Full: one byte more tells a file at the limit from a longer one (grown since fstat). */
	while (got == max && (n = read(fd, &probe, 1)) < 0 && errno == EINTR)
		;
	explicit_bzero(&probe, sizeof(probe));
	if (n < 0) {
		r = -errno;
		goto out;
	}
	if (got == max && n > 0) {
		r = -EFBIG;
		goto out;
	}
	p[got] = '\0';
	*len = got;
	r = 0;
out:
	close(fd);
	return r;
}

/* ---- writing ---- */

/* PATH.ks-tmp.XXXXXX: see proto/file.h. */
#define TMP_INFIX ".ks-tmp."
#define TMP_RANDOM 6   /* the XXXXXX of mkostemp() */

/* The directory @path is in: "." for a bare name, "/" for a file at the root. */
static void dir_of(const char *path, char dir[PATH_MAX])
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		snprintf(dir, PATH_MAX, ".");
	else if (slash == path)
		snprintf(dir, PATH_MAX, "/");
	else
		snprintf(dir, PATH_MAX, "%.*s", (int)(slash - path), path);
}

int ks_file_sync_dir(const char *path)
{
	char dir[PATH_MAX];
	int fd, r = 0;

	dir_of(path, dir);
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -errno;
	if (fsync(fd) != 0)
		r = -errno;
	close(fd);
	return r;
}

static int alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/*
 * After "PATH.ks-tmp.": the XXXXXX of mkostemp(), then nothing (the
 * temporary file) or "." and a word (a caller's file named after it).
 * 1 for a temporary file, 2 for a caller's, 0 for anything else.
 */
static int tmp_kind(const char *rest)
{
	size_t i;

	for (i = 0; i < TMP_RANDOM; i++)
		if (!alnum(rest[i]))
			return 0;
	if (rest[i] == '\0')
		return 1;
	if (rest[i++] != '.' || rest[i] == '\0')
		return 0;
	for (; rest[i] != '\0'; i++)
		if (!alnum(rest[i]) || i > TMP_RANDOM + KS_FILE_TMP_SUFFIX_MAX)
			return 0;
	return 2;
}

/* Remove the temporary files (and the callers' files named after them) of writers of @path that died. */
static void remove_stale_tmp(const char *path)
{
	char dir[PATH_MAX], stem[PATH_MAX], entry[PATH_MAX], base[NAME_MAX + 1];
	const char *slash = strrchr(path, '/');
	size_t blen;
	struct dirent *e;
	DIR *d;

	dir_of(path, dir);
	if (snprintf(base, sizeof(base), "%s%s", slash != NULL ? slash + 1 : path, TMP_INFIX) >=
	    (int)sizeof(base) || (d = opendir(dir)) == NULL)
		return;
	blen = strlen(base);
	while ((e = readdir(d)) != NULL) {
		int fd, kind, orphan;

		if (strncmp(e->d_name, base, blen) != 0 || (kind = tmp_kind(e->d_name + blen)) == 0)
			continue;
		if (snprintf(stem, sizeof(stem), "%s/%.*s", dir, (int)(blen + TMP_RANDOM), e->d_name) >=
		    (int)sizeof(stem) || snprintf(entry, sizeof(entry), "%s/%s", dir, e->d_name) >= (int)sizeof(entry))
			continue;
		/* Its writer, if alive, holds the lock on the temporary file. */
		fd = open(stem, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
		if (fd < 0)
			/* No temporary file: a caller's file whose writer is gone. */
			orphan = errno == ENOENT && kind == 2;
		else
			orphan = flock(fd, LOCK_EX | LOCK_NB) == 0;
		if (orphan) {
			/* A caller's file first: it exists only while the temporary file does. */
			if (kind == 2)
				unlink(entry);
			if (fd >= 0)
				unlink(stem);
		}
		if (fd >= 0)
			close(fd);
	}
	closedir(d);
}

int ks_file_tmp_open(struct ks_file_tmp *t, const char *path)
{
	int r;

	t->path = path;
	t->fd = -1;
	if (snprintf(t->tmp, sizeof(t->tmp), "%s" TMP_INFIX "XXXXXX", path) >=
	    (int)(sizeof(t->tmp) - KS_FILE_TMP_SUFFIX_MAX)) {
		t->tmp[0] = '\0';
		return -ENAMETOOLONG;
	}
	remove_stale_tmp(path);
	if ((t->fd = mkostemp(t->tmp, O_CLOEXEC)) < 0) {
		r = -errno;
		t->tmp[0] = '\0';
		return r;
	}
	/* Held until ks_file_tmp_discard(): marks the temporary file as in use. */
	if (flock(t->fd, LOCK_EX) != 0) {
		r = -errno;
		ks_file_tmp_discard(t);
		return r;
	}
	return 0;
}

int ks_file_tmp_write(struct ks_file_tmp *t, const void *data, size_t len)
{
	const uint8_t *p = data;
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(t->fd, p + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

int ks_file_tmp_sync(struct ks_file_tmp *t, mode_t mode)
{
	if (fchmod(t->fd, mode) != 0 || fsync(t->fd) != 0)
		return -errno;
	return 0;
}

int ks_file_tmp_commit(struct ks_file_tmp *t, unsigned flags)
{
	if (t->tmp[0] == '\0')
		return -EBADF;
	if (flags & KS_FILE_NOREPLACE) {
		if (link(t->tmp, t->path) != 0)
			return -errno;
		(void)unlink(t->tmp);
	} else if (rename(t->tmp, t->path) != 0) {
		return -errno;
	}
	t->tmp[0] = '\0';
	return 0;
}

void ks_file_tmp_discard(struct ks_file_tmp *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
	if (t->tmp[0] != '\0')
		unlink(t->tmp);
	t->tmp[0] = '\0';
}

int ks_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode, unsigned flags)
{
	struct ks_file_tmp t;
	int r;

	if ((r = ks_file_tmp_open(&t, path)) == 0 && (r = ks_file_tmp_write(&t, data, len)) == 0 &&
	    (r = ks_file_tmp_sync(&t, mode)) == 0 && (r = ks_file_tmp_commit(&t, flags)) == 0)
		r = ks_file_sync_dir(path);
	ks_file_tmp_discard(&t);
	return r;
}
