/*
 * proto/file: the one bounded reader and the one atomic writer.
 *
 * Reader: contents and NUL, the bound at @max and @max + 1 (a file, a
 * pipe, a caller's buffer), a 1 TiB sparse file refused before any
 * allocation, directories, FIFOs, devices and symlinks by flag, the
 * caller's check run on the open file and its error returned.
 *
 * Writer: contents and exact mode (whatever the umask), no temporary file
 * left, the old file intact byte for byte when a write fails (RLIMIT_FSIZE)
 * or the fsync fails (fsync is interposed here: it also records that the
 * new file and then its directory were fsync'd), a file made once
 * (KS_FILE_NOREPLACE) not replaced, stale temporary files of dead writers
 * removed and a live writer's kept.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "proto/file.h"

static char dir[PATH_MAX];

/* ---- fsync, interposed: every call recorded, a failure on command ---- */

static int fsync_fail;                 /* errno to fail the next fsync of a regular file with */
static int fsync_calls;
static struct { dev_t dev; ino_t ino; int is_dir; } fsynced[16];

int fsync(int fd)
{
	static int (*real)(int);
	struct stat st;

	if (real == NULL)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	if (fstat(fd, &st) == 0 && fsync_calls < 16) {
		fsynced[fsync_calls].dev = st.st_dev;
		fsynced[fsync_calls].ino = st.st_ino;
		fsynced[fsync_calls].is_dir = S_ISDIR(st.st_mode);
		fsync_calls++;
		if (fsync_fail != 0 && S_ISREG(st.st_mode)) {
			errno = fsync_fail;
			fsync_fail = 0;
			return -1;
		}
	}
	return real(fd);
}

/* ---- helpers ---- */

static void path_of(char *out, size_t len, const char *name)
{
	assert_true((size_t)snprintf(out, len, "%s/%s", dir, name) < len);
}

static void put(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static void expect_contents(const char *path, const char *want)
{
	uint8_t *got;
	size_t len;

	assert_int_equal(ks_file_read(path, 1 << 20, 0, NULL, NULL, &got, &len), 0);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(got, want, len);
	free(got);
}

/* Entries of the test's own directory, "." and ".." aside. */
static int entries(void)
{
	char cmd[PATH_MAX + 64];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dir);
	assert_non_null(p = popen(cmd, "r"));
	assert_int_equal(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "%s/ks-file-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	return mkdtemp(dir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- reader ---- */

static void test_read_contents_and_bound(void **state)
{
	char path[PATH_MAX];
	uint8_t *got = (uint8_t *)"x";
	size_t len = 99;

	(void)state;
	path_of(path, sizeof(path), "f");
	put(path, "0123456789", 10);
	assert_int_equal(ks_file_read(path, 10, 0, NULL, NULL, &got, &len), 0);
	assert_int_equal(len, 10);
	assert_string_equal((char *)got, "0123456789");
	free(got);
	assert_int_equal(ks_file_read(path, 9, 0, NULL, NULL, &got, &len), -EFBIG);
	assert_null(got);
	assert_int_equal(len, 0);
	put(path, "", 0);
	assert_int_equal(ks_file_read(path, 10, KS_FILE_WIPE, NULL, NULL, &got, &len), 0);
	assert_int_equal(len, 0);
	assert_string_equal((char *)got, "");
	free(got);
	path_of(path, sizeof(path), "missing");
	assert_int_equal(ks_file_read(path, 10, 0, NULL, NULL, &got, &len), -ENOENT);
}

/* A 1 TiB sparse file: refused from its size, never allocated or read. */
static void test_read_refuses_before_allocating(void **state)
{
	char path[PATH_MAX];
	uint8_t *got;
	size_t len;
	int fd;

	(void)state;
	path_of(path, sizeof(path), "huge");
	assert_true((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) >= 0);
	assert_int_equal(ftruncate(fd, (off_t)1 << 40), 0);
	close(fd);
	assert_int_equal(ks_file_read(path, 1 << 20, 0, NULL, NULL, &got, &len), -EFBIG);
	assert_int_equal(ks_file_read(path, 1 << 20, KS_FILE_WIPE, NULL, NULL, &got, &len), -EFBIG);
	unlink(path);
}

/* A pipe has no size: the bound holds while reading, across buffer growth, with and without wiping. */
static void test_read_pipe(void **state)
{
	static char data[20000];
	uint8_t *got;
	size_t len;
	int pfd[2];

	(void)state;
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (char)('a' + i % 26);
	for (unsigned flags = 0; flags <= KS_FILE_WIPE; flags += KS_FILE_WIPE) {
		assert_int_equal(pipe(pfd), 0);
		assert_int_equal(fcntl(pfd[1], F_SETPIPE_SZ, 65536) >= 0, 1);
		assert_int_equal(write(pfd[1], data, sizeof(data)), (ssize_t)sizeof(data));
		close(pfd[1]);
		assert_int_equal(ks_file_read_fd(pfd[0], sizeof(data), flags | KS_FILE_ANY_TYPE, NULL, NULL, &got,
						 &len), 0);
		assert_int_equal(len, sizeof(data));
		assert_memory_equal(got, data, len);
		assert_int_equal(got[len], '\0');
		free(got);
		close(pfd[0]);

		assert_int_equal(pipe(pfd), 0);
		assert_int_equal(fcntl(pfd[1], F_SETPIPE_SZ, 65536) >= 0, 1);
		assert_int_equal(write(pfd[1], data, sizeof(data)), (ssize_t)sizeof(data));
		close(pfd[1]);
		assert_int_equal(ks_file_read_fd(pfd[0], sizeof(data) - 1, flags | KS_FILE_ANY_TYPE, NULL, NULL,
						 &got, &len), -EFBIG);
		assert_null(got);
		close(pfd[0]);
	}
	/* Without KS_FILE_ANY_TYPE a pipe is no file to read. */
	assert_int_equal(pipe(pfd), 0);
	assert_int_equal(ks_file_read_fd(pfd[0], 10, 0, NULL, NULL, &got, &len), -EBADFD);
	close(pfd[0]);
	close(pfd[1]);
}

static void test_read_types_and_links(void **state)
{
	char path[PATH_MAX], link_path[PATH_MAX], fifo[PATH_MAX];
	uint8_t *got;
	size_t len;

	(void)state;
	assert_int_equal(ks_file_read(dir, 10, 0, NULL, NULL, &got, &len), -EISDIR);
	assert_int_equal(ks_file_read(dir, 10, KS_FILE_ANY_TYPE, NULL, NULL, &got, &len), -EISDIR);
	assert_int_equal(ks_file_read("/dev/null", 10, 0, NULL, NULL, &got, &len), -EBADFD);
	assert_int_equal(ks_file_read("/dev/null", 10, KS_FILE_ANY_TYPE, NULL, NULL, &got, &len), 0);
	assert_int_equal(len, 0);
	free(got);
	/* A FIFO with no writer would block open() without KS_FILE_NONBLOCK. */
	path_of(fifo, sizeof(fifo), "fifo");
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(ks_file_read(fifo, 10, KS_FILE_NONBLOCK, NULL, NULL, &got, &len), -EBADFD);
	unlink(fifo);

	path_of(path, sizeof(path), "target");
	path_of(link_path, sizeof(link_path), "link");
	put(path, "via link", 8);
	assert_int_equal(symlink(path, link_path), 0);
	assert_int_equal(ks_file_read(link_path, 10, KS_FILE_NOFOLLOW, NULL, NULL, &got, &len), -ELOOP);
	assert_int_equal(ks_file_read(link_path, 10, 0, NULL, NULL, &got, &len), 0);
	assert_string_equal((char *)got, "via link");
	free(got);
	unlink(link_path);
}

struct seen {
	int calls;
	mode_t mode;
	int answer;
};

static int check_mode(int fd, const struct stat *st, void *arg)
{
	struct seen *s = arg;
	struct stat again;

	/* The descriptor is the file read: the caller can check it (an ACL, say). */
	assert_int_equal(fstat(fd, &again), 0);
	assert_int_equal(again.st_ino, st->st_ino);
	s->calls++;
	s->mode = st->st_mode & 0777;
	return s->answer;
}

static void test_read_check(void **state)
{
	char path[PATH_MAX], missing[PATH_MAX], buf[8];
	struct seen s = { 0, 0, -EACCES };
	struct stat st;
	uint8_t *got;
	size_t len;

	(void)state;
	path_of(path, sizeof(path), "checked");
	put(path, "secret", 6);
	assert_int_equal(chmod(path, 0640), 0);
	assert_int_equal(ks_file_read(path, 10, 0, check_mode, &s, &got, &len), -EACCES);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.mode, 0640);
	assert_int_equal(ks_file_read_buf(path, 0, check_mode, &s, buf, sizeof(buf) - 1, &len), -EACCES);
	assert_int_equal(s.calls, 2);
	s.answer = 0;
	assert_int_equal(ks_file_read_buf(path, 0, check_mode, &s, buf, sizeof(buf) - 1, &len), 0);
	assert_int_equal(len, 6);
	assert_string_equal(buf, "secret");
	/* The stock check: the stat, once open and fstat succeeded. */
	memset(&st, 0, sizeof(st));
	assert_int_equal(ks_file_read(path, 10, 0, ks_file_keep_stat, &st, &got, &len), 0);
	assert_int_equal(st.st_size, 6);
	assert_true(S_ISREG(st.st_mode));
	free(got);
	memset(&st, 0, sizeof(st));
	assert_int_equal(ks_file_read(path, 5, 0, ks_file_keep_stat, &st, &got, &len), -EFBIG);
	assert_int_not_equal(st.st_mode, 0);
	path_of(missing, sizeof(missing), "missing");
	memset(&st, 0, sizeof(st));
	assert_int_equal(ks_file_read(missing, 10, 0, ks_file_keep_stat, &st, &got, &len), -ENOENT);
	assert_int_equal(st.st_mode, 0);
	/* Not a regular file: refused before the check. */
	assert_int_equal(ks_file_read(dir, 10, 0, check_mode, &s, &got, &len), -EISDIR);
	assert_int_equal(s.calls, 3);
}

static void test_read_buf_bound(void **state)
{
	char path[PATH_MAX], buf[6];
	size_t len;
	int fd;

	(void)state;
	path_of(path, sizeof(path), "small");
	put(path, "12345", 5);
	assert_int_equal(ks_file_read_buf(path, KS_FILE_NOFOLLOW, NULL, NULL, buf, 5, &len), 0);
	assert_int_equal(len, 5);
	assert_string_equal(buf, "12345");
	assert_int_equal(ks_file_read_buf(path, 0, NULL, NULL, buf, 4, &len), -EFBIG);
	put(path, "123456", 6);
	assert_int_equal(ks_file_read_buf(path, 0, NULL, NULL, buf, 5, &len), -EFBIG);
	/* A file that grows past the limit after fstat (a FIFO has no size): the probe byte tells. */
	path_of(path, sizeof(path), "fifo");
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_true((fd = open(path, O_RDWR | O_CLOEXEC)) >= 0);
	assert_int_equal(write(fd, "123456", 6), 6);
	assert_int_equal(ks_file_read_buf(path, KS_FILE_ANY_TYPE | KS_FILE_NONBLOCK, NULL, NULL, buf, 5, &len),
			 -EFBIG);
	close(fd);
	unlink(path);
	path_of(path, sizeof(path), "small");
	put(path, "1\n", 2);
	assert_int_equal(ks_file_read_buf(path, 0, NULL, NULL, buf, 5, &len), 0);
	assert_int_equal(len, 2);
	assert_string_equal(buf, "1\n");
}

/* ---- writer ---- */

static void test_write_mode_contents_sync(void **state)
{
	char path[PATH_MAX];
	struct stat st, dst;
	mode_t old = umask(077);

	(void)state;
	path_of(path, sizeof(path), "out.pem");
	fsync_calls = 0;
	assert_int_equal(ks_file_write_atomic(path, "new\n", 4, 0644, 0), 0);
	umask(old);
	expect_contents(path, "new\n");
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(entries(), 1);
	/* The new file's data, then the directory holding the rename. */
	assert_int_equal(stat(dir, &dst), 0);
	assert_int_equal(fsync_calls, 2);
	assert_false(fsynced[0].is_dir);
	assert_true(fsynced[0].ino == st.st_ino && fsynced[0].dev == st.st_dev);
	assert_true(fsynced[1].is_dir);
	assert_true(fsynced[1].ino == dst.st_ino && fsynced[1].dev == dst.st_dev);

	assert_int_equal(ks_file_write_atomic(path, "newer\n", 6, 0600, 0), 0);
	expect_contents(path, "newer\n");
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(entries(), 1);
	unlink(path);
}

static void test_write_failures_keep_old(void **state)
{
	char path[PATH_MAX], big[4096];
	struct rlimit old, small = { 100, 100 };

	(void)state;
	memset(big, 'x', sizeof(big));
	path_of(path, sizeof(path), "state.json");
	assert_int_equal(ks_file_write_atomic(path, "old", 3, 0600, 0), 0);

	/* A write cut short by the file size limit (as a full disk would). */
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_IGN);
	small.rlim_max = old.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	assert_int_equal(ks_file_write_atomic(path, big, sizeof(big), 0600, 0), -EFBIG);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	expect_contents(path, "old");
	assert_int_equal(entries(), 1);

	/* fsync of the new file failing. */
	fsync_fail = EIO;
	assert_int_equal(ks_file_write_atomic(path, "new", 3, 0600, 0), -EIO);
	expect_contents(path, "old");
	assert_int_equal(entries(), 1);

	/* No directory to write in. */
	path_of(path, sizeof(path), "nodir/x");
	assert_int_equal(ks_file_write_atomic(path, "new", 3, 0600, 0), -ENOENT);
	path_of(path, sizeof(path), "state.json");
	unlink(path);
}

static void test_write_noreplace(void **state)
{
	char path[PATH_MAX];
	struct stat st;

	(void)state;
	path_of(path, sizeof(path), "key");
	assert_int_equal(ks_file_write_atomic(path, "first", 5, 0600, KS_FILE_NOREPLACE), 0);
	assert_int_equal(ks_file_write_atomic(path, "second", 6, 0600, KS_FILE_NOREPLACE), -EEXIST);
	expect_contents(path, "first");
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(entries(), 1);
	unlink(path);
}

static void test_write_stale_tmp(void **state)
{
	char path[PATH_MAX], f[PATH_MAX];
	struct ks_file_tmp live;

	(void)state;
	path_of(path, sizeof(path), "cert.pem");
	/* A dead writer's temporary file, and a caller's file named after it. */
	path_of(f, sizeof(f), "cert.pem.ks-tmp.Stale1");
	put(f, "torn", 4);
	path_of(f, sizeof(f), "cert.pem.ks-tmp.Stale1.prev");
	put(f, "old", 3);
	/* A caller's file whose temporary file is already gone. */
	path_of(f, sizeof(f), "cert.pem.ks-tmp.Gone22.prev");
	put(f, "old", 3);
	/* Not ours: kept. */
	path_of(f, sizeof(f), "cert.pem.backup");
	put(f, "mine", 4);
	path_of(f, sizeof(f), "cert.pem.ks-tmp.short");
	put(f, "mine", 4);
	/* A live writer of the same path: its temporary file stays. */
	assert_int_equal(ks_file_tmp_open(&live, path), 0);
	assert_int_equal(ks_file_tmp_write(&live, "live", 4), 0);

	assert_int_equal(ks_file_write_atomic(path, "new", 3, 0644, 0), 0);
	expect_contents(path, "new");
	/* cert.pem, the backup, the short name and the live temporary file. */
	assert_int_equal(entries(), 4);
	assert_int_equal(access(live.tmp, F_OK), 0);
	assert_int_equal(ks_file_tmp_sync(&live, 0644), 0);
	assert_int_equal(ks_file_tmp_commit(&live, 0), 0);
	ks_file_tmp_discard(&live);
	expect_contents(path, "live");
	assert_int_equal(entries(), 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_read_contents_and_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_refuses_before_allocating, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_pipe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_types_and_links, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_check, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_buf_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_mode_contents_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_failures_keep_old, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_noreplace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_stale_tmp, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
