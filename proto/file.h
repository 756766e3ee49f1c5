/*
 * Whole files: the one bounded reader and the one atomic writer of the
 * tree (the daemon's configuration, PIN and PIN guard; the clients'
 * certificates, state, inputs, outputs and credentials).
 *
 * Reading: the file is opened O_CLOEXEC|O_NOCTTY, fstat'd, must be a
 * regular file (unless KS_FILE_ANY_TYPE), passes the caller's check on
 * the open descriptor (owner, mode, ACL: the file that is read is the one
 * that was checked), and is refused when it is larger than @max before
 * anything is allocated, and again when it grows past @max while it is
 * read. Reads go on across EINTR and short reads. The data is always
 * NUL-terminated (not counted in the length).
 *
 * Writing: the new contents go to a temporary file PATH.ks-tmp.XXXXXX in
 * the same directory (mkostemp: O_CREAT|O_EXCL, mode 0600 until the
 * final mode is set), are written whole, given their mode and fsync'd,
 * then renamed over PATH (or linked, for a file that must not be
 * replaced) and the directory fsync'd. PATH is therefore always either
 * the complete old file or the complete new one. While a temporary file
 * exists its writer holds an flock on it; one that can be locked was left
 * by a writer that died (SIGKILL, a power cut), and the next write of
 * PATH removes it, along with the files a caller named after it plus a
 * suffix (certinstall's TMP.prev link). No other file ever matches those
 * names.
 *
 * Errors are negative errno values; the callers word the messages.
 */
#ifndef KEYSVC_PROTO_FILE_H
#define KEYSVC_PROTO_FILE_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Flags of the readers. */
/* O_NOFOLLOW: a symbolic link as the last component is refused with -ELOOP. */
#define KS_FILE_NOFOLLOW 0x1u
/*
 * O_NONBLOCK on open, so that a FIFO put at the path cannot block; it is
 * then refused as no regular file (with KS_FILE_ANY_TYPE a FIFO without
 * data fails with -EAGAIN instead).
 */
#define KS_FILE_NONBLOCK 0x2u
/* Pipes, terminals and devices are read too, with the same bound (a directory never is). */
#define KS_FILE_ANY_TYPE 0x4u
/* ks_file_read() only: every buffer that held the data is wiped when let go (growing it included). */
#define KS_FILE_WIPE 0x8u

/* Flags of the writers. */
/* Link the new file into place instead of renaming: -EEXIST if @path exists (a file made once). */
#define KS_FILE_NOREPLACE 0x10u

/*
 * A check of the open file before anything is read: @fd is the file to be
 * read, @st its fstat. Returns 0 to read it, or a negative errno that the
 * reader returns as is. @arg is the caller's. The caller may record
 * there that it ran: then open and fstat succeeded.
 */
typedef int ks_file_check_fn(int fd, const struct stat *st, void *arg);

/*
 * A check that refuses nothing and copies the file's stat into @arg (a
 * struct stat, zeroed by the caller): its size or age for a message, and
 * st_mode != 0 tells that open and fstat succeeded, so that a failure is
 * the contents' and not the path's.
 */
int ks_file_keep_stat(int fd, const struct stat *st, void *arg);

/*
 * Read all of @path, at most @max bytes, into a new buffer *@out (malloc'd,
 * NUL-terminated; free(), or ks_freezero(*@out, *@len + 1) with
 * KS_FILE_WIPE) of *@len bytes. @check may be NULL. Returns 0 or:
 *   the errno of open() or fstat() (-ELOOP: a symlink with KS_FILE_NOFOLLOW),
 *   -EISDIR a directory, -EBADFD another file that is not regular,
 *   what @check returned,
 *   -EFBIG more than @max bytes (checked before allocating, and while reading),
 *   the errno of read(), -ENOMEM.
 * *@out is NULL and *@len 0 on failure.
 */
int ks_file_read(const char *path, size_t max, unsigned flags, ks_file_check_fn *check, void *arg,
		 uint8_t **out, size_t *len);

/* ks_file_read() of the open @fd (standard input, say), which stays open and the caller's. */
int ks_file_read_fd(int fd, size_t max, unsigned flags, ks_file_check_fn *check, void *arg, uint8_t **out,
		    size_t *len);

/*
 * ks_file_read() into the caller's @buf of @max + 1 bytes: for secrets in
 * memory of the caller's choosing (locked, for the PIN) and for small
 * files read into fixed buffers. Nothing but @buf holds the data (the
 * byte read to tell a larger file is wiped). The same errors, but for
 * -ENOMEM; on failure @buf may hold part of the file: the caller wipes it.
 */
int ks_file_read_buf(const char *path, unsigned flags, ks_file_check_fn *check, void *arg, void *buf,
		     size_t max, size_t *len);

/* A new version of @path being written under a temporary name next to it. */
struct ks_file_tmp {
	const char *path;             /* the caller's: must outlive the tmp */
	char tmp[PATH_MAX];           /* "" when there is none (never made, or renamed into place) */
	int fd;                       /* -1 when closed; holds the flock that marks tmp as in use */
};

/* Room left after the temporary name for a caller's suffix (certinstall's ".prev"). */
#define KS_FILE_TMP_SUFFIX_MAX 15

/*
 * Remove the stale temporary files of @path that dead writers left, then
 * make a new one, locked, in @t. -ENAMETOOLONG if @path leaves no room
 * for the temporary name and a suffix, the errno of mkostemp() (the
 * directory is not writable, full, ...) or of flock(). On failure nothing
 * is left and @t can be discarded.
 */
int ks_file_tmp_open(struct ks_file_tmp *t, const char *path);

/* Append @len bytes of @data (all of them, across EINTR and short writes). -errno, -EIO for a 0-byte write. */
int ks_file_tmp_write(struct ks_file_tmp *t, const void *data, size_t len);

/* Give the written file @mode and fsync it: what is renamed into place is complete. -errno. */
int ks_file_tmp_sync(struct ks_file_tmp *t, mode_t mode);

/*
 * Rename the temporary file over t->path (KS_FILE_NOREPLACE: link it
 * there, -EEXIST if t->path exists, and remove the temporary name). Does
 * not fsync the directory: ks_file_sync_dir() does, as the caller needs
 * it. On failure the temporary file stays, for ks_file_tmp_discard().
 */
int ks_file_tmp_commit(struct ks_file_tmp *t, unsigned flags);

/* Close @t and remove its temporary file if it is still there. Safe to repeat. */
void ks_file_tmp_discard(struct ks_file_tmp *t);

/* fsync the directory @path is in ("." for a bare name), so that a rename in it is durable. -errno. */
int ks_file_sync_dir(const char *path);

/*
 * All of the above: replace @path with @len bytes of @data and @mode,
 * atomically and durably (the directory fsync'd: its failure is an error
 * too, though @path is then already replaced). On any failure before the
 * rename @path is untouched and no temporary file is left.
 */
int ks_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode, unsigned flags);

#endif
