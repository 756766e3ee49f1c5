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
	return ks_pin_load(file, pin, len, err, err_len);
}

static void test_good(void **state)
{
	char err[256], *pin = NULL;
	size_t len = 0;

	(void)state;
	write_pin(path, CANARY "\n", strlen(CANARY) + 1, 0600);
	assert_int_equal(load(path, err, sizeof(err), &pin, &len), 0);
	assert_int_equal(len, strlen(CANARY));
	assert_string_equal(pin, CANARY);
	ks_pin_free(pin, len);
	write_pin(path, CANARY, strlen(CANARY), 0400);
	assert_int_equal(load(path, err, sizeof(err), &pin, &len), 0);
	assert_string_equal(pin, CANARY);
	ks_pin_free(pin, len);
}

static void test_refused(void **state)
{
	char err[256], *pin = NULL, big[300], linkpath[PATH_MAX];
	size_t len = 0;

	(void)state;
	write_pin(path, CANARY, strlen(CANARY), 0640);
	assert_int_equal(load(path, err, sizeof(err), &pin, &len), -EACCES);
	assert_null(strstr(err, CANARY));
	assert_non_null(strstr(err, "mode"));
	write_pin(path, CANARY, strlen(CANARY), 0644);
	assert_int_equal(load(path, err, sizeof(err), &pin, &len), -EACCES);
	write_pin(path, CANARY, strlen(CANARY), 0600);
	snprintf(linkpath, sizeof(linkpath), "%s/link", dir);
	assert_int_equal(symlink(path, linkpath), 0);
	assert_int_equal(load(linkpath, err, sizeof(err), &pin, &len), -EACCES);
	assert_non_null(strstr(err, "symbolic link"));
	assert_int_equal(load(dir, err, sizeof(err), &pin, &len), -EACCES);
	write_pin(path, "", 0, 0600);
	assert_int_equal(load(path, err, sizeof(err), &pin, &len), -EINVAL);
	write_pin(path, "a\nb", 3, 0600);
	assert_int_equal(load(path, err, sizeof(err), &pin, &len), -EINVAL);
	memset(big, 'p', sizeof(big));
	write_pin(path, big, KS_PIN_MAX, 0600);
	assert_int_equal(load(path, err, sizeof(err), &pin, &len), 0);
	assert_int_equal(len, KS_PIN_MAX);
	ks_pin_free(pin, len);
	write_pin(path, big, KS_PIN_MAX + 1, 0600);
	assert_int_equal(load(path, err, sizeof(err), &pin, &len), -EINVAL);
	unlink(path);
	assert_int_equal(load(path, err, sizeof(err), &pin, &len), -ENOENT);
	assert_int_equal(load(NULL, err, sizeof(err), &pin, &len), -ENOENT);
	if (geteuid() == 0) {
		/* Someone else's file, however private, is not our PIN. */
		write_pin(path, CANARY, strlen(CANARY), 0600);
		assert_int_equal(chown(path, 65534, 65534), 0);
		assert_int_equal(load(path, err, sizeof(err), &pin, &len), -EACCES);
		assert_null(strstr(err, CANARY));
	}
}

static void test_credential_wins(void **state)
{
	char err[256], cred[PATH_MAX], *pin = NULL;
	size_t len = 0;

	(void)state;
	write_pin(path, "from-file", 9, 0600);
	snprintf(cred, sizeof(cred), "%s/keysvc-pin", dir);
	write_pin(cred, "from-credential", 15, 0400);
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	assert_int_equal(load(path, err, sizeof(err), &pin, &len), 0);
	assert_string_equal(pin, "from-credential");
	ks_pin_free(pin, len);
	/* The credential alone is enough. */
	assert_int_equal(load(NULL, err, sizeof(err), &pin, &len), 0);
	ks_pin_free(pin, len);
	unsetenv("CREDENTIALS_DIRECTORY");
	assert_int_equal(load(path, err, sizeof(err), &pin, &len), 0);
	assert_string_equal(pin, "from-file");
	ks_pin_free(pin, len);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_credential_wins),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
