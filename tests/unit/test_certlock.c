/*
 * The per-certificate lock of the renewal clients (certlock.h): a second
 * holder waits a bounded time then gets KS_EXIT_BUSY, the lock is free
 * again after release, the lock file is 0600 beside the certificate, and
 * a symlink planted in its place is refused, not followed, and one made by
 * root belongs to the certificate's owner. flock() locks
 * belong to open file descriptions, so two holders in one process
 * contend like two processes.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "clients/renew/common/certlock.h"
#include "clients/renew/common/climsg.h"

static char dir[64];
static char cert[128];
static char lockpath[160];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "%s", "/tmp/ks-certlock.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(lockpath, sizeof(lockpath), "%s.lock", cert);
	ks_cli_init("test_certlock", 0);
	return 0;
}

static int teardown(void **state)
{
	char path[192];

	(void)state;
	unlink(lockpath);
	unlink(cert);
	snprintf(path, sizeof(path), "%s/elsewhere", dir);
	unlink(path);
	rmdir(dir);
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_second_holder_busy_then_free(void **state)
{
	struct ks_cert_lock first, second;
	struct stat st;
	double t0, waited;

	(void)state;
	assert_int_equal(ks_cert_lock(cert, 0, &first), 0);
	assert_int_equal(stat(lockpath, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);

	assert_int_equal(ks_cert_lock(cert, 0, &second), KS_EXIT_BUSY);
	assert_int_equal(second.fd, -1);
	assert_non_null(strstr(ks_last_error(), "another run holds the lock on"));

	/* The wait is bounded: about --lock-wait, not forever, not at once. */
	t0 = now_s();
	assert_int_equal(ks_cert_lock(cert, 1, &second), KS_EXIT_BUSY);
	waited = now_s() - t0;
	assert_true(waited >= 0.9 && waited < 5);

	ks_cert_unlock(&first);
	assert_int_equal(first.fd, -1);
	ks_cert_unlock(&first);   /* twice: nothing */
	assert_int_equal(ks_cert_lock(cert, 0, &second), 0);
	ks_cert_unlock(&second);
}

static void test_symlink_refused(void **state)
{
	struct ks_cert_lock lock;
	char target[192];

	(void)state;
	unlink(lockpath);
	snprintf(target, sizeof(target), "%s/elsewhere", dir);
	assert_int_equal(symlink(target, lockpath), 0);
	assert_int_equal(ks_cert_lock(cert, 0, &lock), KS_EXIT_USAGE);
	assert_int_equal(lock.fd, -1);
	assert_int_equal(access(target, F_OK), -1);
	unlink(lockpath);
}

/*
 * A manual run as root makes the lock file; the timer's user must still be
 * able to take it afterwards.
 */
static void test_root_gives_it_to_the_cert_owner(void **state)
{
	const uid_t user = 65534;
	struct ks_cert_lock lock;
	struct stat st;
	pid_t pid;
	int status, fd;

	(void)state;
	if (geteuid() != 0)
		skip();
	assert_int_equal(chmod(dir, 0755), 0);
	assert_true((fd = open(cert, O_WRONLY | O_CREAT | O_TRUNC, 0644)) >= 0);
	assert_int_equal(fchown(fd, user, user), 0);
	close(fd);
	assert_int_equal(ks_cert_lock(cert, 0, &lock), 0);
	assert_int_equal(stat(lockpath, &st), 0);
	assert_int_equal(st.st_uid, user);
	assert_int_equal(st.st_gid, user);
	ks_cert_unlock(&lock);

	if ((pid = fork()) == 0) {
		if (setgid(user) != 0 || setuid(user) != 0)
			_exit(100);
		_exit(ks_cert_lock(cert, 0, &lock));
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	unlink(cert);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_second_holder_busy_then_free, setup, teardown),
		cmocka_unit_test_setup_teardown(test_symlink_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_root_gives_it_to_the_cert_owner, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
