/* PIN files: only the daemon's own, private, regular file; never echoed in errors. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "keysvc/pin.h"

#define CANARY "CANARY-PIN-1234"

static char dir[] = "/tmp/keysvc-pin-XXXXXX";
static char path[PATH_MAX];

static int setup(void **state)
{
	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/pin", dir);
	unsetenv("CREDENTIALS_DIRECTORY");
	return 0;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	(void)state;
	unsetenv("CREDENTIALS_DIRECTORY");
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void write_pin(const char *p, const void *data, size_t len, mode_t mode)
{
	int fd;

	unlink(p);
	fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
	assert_int_equal(chmod(p, mode), 0);
}

static int load(const char *file, char *err, size_t err_len, char **pin, size_t *len)
{
	err[0] = '\0';
	*pin = (char *)"sentinel";
	*len = 12345;
	return ks_pin_load(file, pin, len, err, err_len);
}

/* Loading @file fails with @expect; nothing is returned and the error never shows a PIN. */
static void refused(const char *file, int expect, const char *needle)
{
	char err[512], *pin;
	size_t len;
	int r = load(file, err, sizeof(err), &pin, &len);

	if (r == 0) {
		ks_pin_free(pin, len);
		fail_msg("%s accepted", file ? file : "(null)");
	}
	if (r != expect)
		fail_msg("%s: returned %d, expected %d (%s)", file ? file : "(null)", r, expect, err);
	assert_null(pin);
	assert_int_equal(len, 0);
	assert_true(err[0] != '\0');
	if (strstr(err, CANARY) != NULL || strstr(err, "CANARY") != NULL)
		fail_msg("error shows the PIN: %s", err);
	if (needle != NULL && strstr(err, needle) == NULL)
		fail_msg("\"%s\" does not mention %s", err, needle);
}

static void accepted(const char *file, const char *expect)
{
	char err[512], *pin = NULL;
	size_t len = 0;
	int r = load(file, err, sizeof(err), &pin, &len);

	if (r != 0)
		fail_msg("%s refused (%d): %s", file ? file : "(null)", r, err);
	assert_int_equal(len, strlen(expect));
	assert_memory_equal(pin, expect, len);
	/* NUL-terminated. */
	assert_int_equal(pin[len], '\0');
	ks_pin_free(pin, len);
}

static void test_good(void **state)
{
	(void)state;
	write_pin(path, CANARY "\n", strlen(CANARY) + 1, 0600);
	accepted(path, CANARY);
	write_pin(path, CANARY, strlen(CANARY), 0600);
	accepted(path, CANARY);
	write_pin(path, CANARY, strlen(CANARY), 0400);
	accepted(path, CANARY);
	/* One trailing CRLF is dropped as well. */
	write_pin(path, CANARY "\r\n", strlen(CANARY) + 2, 0600);
	accepted(path, CANARY);
	/* Spaces and other bytes are part of the PIN. */
	write_pin(path, " p i n \t\n", 9, 0600);
	accepted(path, " p i n \t");
	write_pin(path, "1", 1, 0600);
	accepted(path, "1");
	/* Execute bits for the owner do not matter; group/other bits do. */
	write_pin(path, "x\n", 2, 0700);
	accepted(path, "x");
}

static void test_mode(void **state)
{
	static const mode_t bad_modes[] = { 0640, 0644, 0604, 0660, 0606, 0610, 0601, 0666, 0440, 0404 };

	(void)state;
	for (size_t i = 0; i < sizeof(bad_modes) / sizeof(bad_modes[0]); i++) {
		write_pin(path, CANARY, strlen(CANARY), bad_modes[i]);
		refused(path, -EACCES, "mode");
	}
}

static void test_type(void **state)
{
	char linkpath[PATH_MAX], fifo[PATH_MAX];

	(void)state;
	/* A symlink, even to a good file. */
	write_pin(path, CANARY, strlen(CANARY), 0600);
	snprintf(linkpath, sizeof(linkpath), "%s/link", dir);
	unlink(linkpath);
	assert_int_equal(symlink(path, linkpath), 0);
	refused(linkpath, -EACCES, "symbolic link");
	/* A directory. */
	refused(dir, -EACCES, "not a regular file");
	/* A FIFO: refused, without blocking on it. */
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	unlink(fifo);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	refused(fifo, -EACCES, "not a regular file");
	/* A character device. */
	refused("/dev/null", -EACCES, NULL);
}

static void test_content(void **state)
{
	char big[600];

	(void)state;
	write_pin(path, "", 0, 0600);
	refused(path, -EINVAL, "empty");
	write_pin(path, "\n", 1, 0600);
	refused(path, -EINVAL, "empty");
	write_pin(path, "\r\n", 2, 0600);
	refused(path, -EINVAL, "empty");
	write_pin(path, "a\nb", 3, 0600);
	refused(path, -EINVAL, NULL);
	write_pin(path, CANARY "\n" CANARY, 2 * strlen(CANARY) + 1, 0600);
	refused(path, -EINVAL, NULL);
	/* Only one trailing newline is dropped. */
	write_pin(path, CANARY "\n\n", strlen(CANARY) + 2, 0600);
	refused(path, -EINVAL, NULL);
	write_pin(path, "a\0b", 3, 0600);
	refused(path, -EINVAL, NULL);
	write_pin(path, "\0", 1, 0600);
	refused(path, -EINVAL, NULL);

	/* 256 bytes are fine, with or without a newline; 257 are not. */
	memset(big, 'p', sizeof(big));
	memcpy(big, CANARY, strlen(CANARY));
	{
		char expect[KS_PIN_MAX + 1];

		memcpy(expect, big, KS_PIN_MAX);
		expect[KS_PIN_MAX] = '\0';
		write_pin(path, big, KS_PIN_MAX, 0600);
		accepted(path, expect);
		big[KS_PIN_MAX] = '\n';
		write_pin(path, big, KS_PIN_MAX + 1, 0600);
		accepted(path, expect);
		big[KS_PIN_MAX] = '\r';
		big[KS_PIN_MAX + 1] = '\n';
		write_pin(path, big, KS_PIN_MAX + 2, 0600);
		accepted(path, expect);
	}
	memset(big, 'p', sizeof(big));
	memcpy(big, CANARY, strlen(CANARY));
	write_pin(path, big, KS_PIN_MAX + 1, 0600);
	refused(path, -EINVAL, "longer");
	big[KS_PIN_MAX + 1] = '\n';
	write_pin(path, big, KS_PIN_MAX + 2, 0600);
	refused(path, -EINVAL, NULL);
	write_pin(path, big, sizeof(big), 0600);
	refused(path, -EINVAL, NULL);
	/* A full-length first line followed by more is not a PIN file either. */
	big[KS_PIN_MAX] = '\n';
	memcpy(big + KS_PIN_MAX + 1, "second line", 11);
	write_pin(path, big, KS_PIN_MAX + 12, 0600);
	refused(path, -EINVAL, NULL);
	memset(big, 'p', sizeof(big));
	big[KS_PIN_MAX] = '\r';
	write_pin(path, big, KS_PIN_MAX + 5, 0600);
	refused(path, -EINVAL, NULL);
	big[KS_PIN_MAX - 1] = '\r';
	big[KS_PIN_MAX] = '\n';
	write_pin(path, big, KS_PIN_MAX + 5, 0600);
	refused(path, -EINVAL, NULL);
}

static void test_missing(void **state)
{
	char missing[PATH_MAX];

	(void)state;
	snprintf(missing, sizeof(missing), "%s/no-such-pin", dir);
	refused(missing, -ENOENT, "no-such-pin");
	refused("/nonexistent/dir/pin", -ENOENT, NULL);
	/* No pin_file and no credential. */
	refused(NULL, -ENOENT, "keysvc-pin");
}

static void test_owner(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip();
	/* Someone else's file, however private, is not our PIN. */
	write_pin(path, CANARY, strlen(CANARY), 0600);
	assert_int_equal(chown(path, 65534, 65534), 0);
	refused(path, -EACCES, "owned by uid 65534");
	/* Root-owned is not enough for a daemon running as someone else, and vice versa. */
	unlink(path);
}

/*
 * The directories above the PIN file and the credential get the module's
 * check: whoever may replace one of them may replace the PIN with theirs.
 * A root-owned sticky directory (/tmp, above the test's own) stays fine.
 */
static void test_directory(void **state)
{
	char sub[PATH_MAX], file[PATH_MAX + 16];

	(void)state;
	snprintf(sub, sizeof(sub), "%s/sub", dir);
	snprintf(file, sizeof(file), "%s/pin", sub);
	assert_int_equal(mkdir(sub, 0700), 0);
	write_pin(file, "in-sub", 6, 0600);
	accepted(file, "in-sub");

	/* Writable by all, not sticky. */
	assert_int_equal(chmod(sub, 0777), 0);
	refused(file, -EACCES, "writable by group or others");
	/* Writable by the group only. */
	assert_int_equal(chmod(sub, 0770), 0);
	refused(file, -EACCES, "writable by group or others");
	/* Sticky but not root's: its owner may still swap entries. */
	if (geteuid() != 0) {
		assert_int_equal(chmod(sub, 01777), 0);
		refused(file, -EACCES, "writable by group or others");
	}
	assert_int_equal(chmod(sub, 0700), 0);
	accepted(file, "in-sub");

	/* The same for the credentials directory. */
	write_pin(file, "from-credential", 15, 0600);
	snprintf(file, sizeof(file), "%s/keysvc-pin", sub);
	write_pin(file, "from-credential", 15, 0400);
	setenv("CREDENTIALS_DIRECTORY", sub, 1);
	accepted(NULL, "from-credential");
	assert_int_equal(chmod(sub, 0777), 0);
	refused(NULL, -EACCES, "writable by group or others");
	assert_int_equal(chmod(sub, 0700), 0);
	unsetenv("CREDENTIALS_DIRECTORY");

	/* A directory owned by another user. */
	if (geteuid() == 0) {
		snprintf(file, sizeof(file), "%s/pin", sub);
		assert_int_equal(chmod(sub, 0755), 0);
		assert_int_equal(chown(sub, 65534, 65534), 0);
		refused(file, -EACCES, "owned by uid 65534");
	}
}

static void test_credential_wins(void **state)
{
	char cred[PATH_MAX], credlink[PATH_MAX], creddir[PATH_MAX], missing[PATH_MAX];

	(void)state;
	write_pin(path, "from-file", 9, 0600);
	snprintf(cred, sizeof(cred), "%s/keysvc-pin", dir);
	write_pin(cred, "from-credential\n", 16, 0400);
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	accepted(path, "from-credential");
	/* The credential alone is enough. */
	accepted(NULL, "from-credential");
	/* ...even when pin_file does not exist. */
	snprintf(missing, sizeof(missing), "%s/missing", dir);
	accepted(missing, "from-credential");
	/* A bad credential is refused, not skipped in favour of pin_file. */
	assert_int_equal(chmod(cred, 0644), 0);
	refused(path, -EACCES, "keysvc-pin");
	write_pin(cred, CANARY "\n\n", strlen(CANARY) + 2, 0600);
	refused(path, -EINVAL, "keysvc-pin");
	unlink(cred);
	snprintf(credlink, sizeof(credlink), "%s/keysvc-pin", dir);
	assert_int_equal(symlink(path, credlink), 0);
	refused(NULL, -EACCES, "symbolic link");
	unlink(credlink);

	/* A credentials directory without keysvc-pin: pin_file is used. */
	accepted(path, "from-file");
	refused(NULL, -ENOENT, NULL);
	/* A credentials directory that does not exist. */
	snprintf(creddir, sizeof(creddir), "%s/no-such-dir", dir);
	setenv("CREDENTIALS_DIRECTORY", creddir, 1);
	accepted(path, "from-file");
	/* A relative or empty CREDENTIALS_DIRECTORY is ignored. */
	write_pin(cred, "from-credential", 15, 0600);
	assert_int_equal(chdir(dir), 0);
	setenv("CREDENTIALS_DIRECTORY", ".", 1);
	accepted(path, "from-file");
	setenv("CREDENTIALS_DIRECTORY", "", 1);
	accepted(path, "from-file");
	assert_int_equal(chdir("/"), 0);
	unsetenv("CREDENTIALS_DIRECTORY");
	accepted(path, "from-file");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_mode),
		cmocka_unit_test(test_type),
		cmocka_unit_test(test_content),
		cmocka_unit_test(test_missing),
		cmocka_unit_test(test_owner),
		cmocka_unit_test(test_credential_wins),
		cmocka_unit_test(test_directory),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
