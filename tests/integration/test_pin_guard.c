/*
 * A PIN the token rejected is never presented again, by any path
 * (keysvc/pinguard.h): keysvcd runs on tests/faultp11 in front of the
 * test's SoftHSM token, and faultp11 appends a line for every C_Login it
 * sees (KS_FAULTP11_COUNT), so each test counts how often the token was
 * shown a PIN.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
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
#include <jansson.h>

#include "tests/common/daemon.h"

#define ROOT_ALL "[{\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"key.generate\",\"key.list\"]}]"
#define LIST "{\"id\":4,\"op\":\"key.list\"}"
#define EXIT_CONFIG 3
#define EXIT_PIN_REJECTED 6

struct guard_test {
	struct ks_td td;
	char control[PATH_MAX + 32];
	char count[PATH_MAX + 32];
	char marker[PATH_MAX + 32];
	char wrong_pin_file[PATH_MAX];
};

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void write_text(const char *path, const char *text, mode_t mode)
{
	char tmp[PATH_MAX + 64];
	int fd;

	snprintf(tmp, sizeof(tmp), "%s.new", path);
	unlink(tmp);
	assert_true((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)) >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(close(fd), 0);
	assert_int_equal(rename(tmp, path), 0);
}

/* C_Login calls faultp11 saw so far. */
static int logins(const struct guard_test *g)
{
	return ks_test_count_lines(g->count, "C_Login");
}

static int log_has(const struct ks_td *d, const char *needle)
{
	return ks_td_log_count(d, needle) > 0;
}

static int setup(void **state)
{
	const char *shim = getenv("KS_FAULTP11");
	struct guard_test *g;

	if (shim == NULL) {
		fprintf(stderr, "KS_FAULTP11 is not set\n");
		return -1;
	}
	if ((g = calloc(1, sizeof(*g))) == NULL)
		return -1;
	*state = g;
	if (ks_td_init(&g->td, "keysvc-guard", ROOT_ALL, 0, 0) != 0)
		return -1;
	snprintf(g->control, sizeof(g->control), "%s/fault-control", g->td.dir);
	snprintf(g->count, sizeof(g->count), "%s/logins", g->td.dir);
	snprintf(g->marker, sizeof(g->marker), "%s/pin-rejected", g->td.state_dir);
	if (snprintf(g->wrong_pin_file, sizeof(g->wrong_pin_file), "%s/wrong-pin", g->td.dir) >=
	    (int)sizeof(g->wrong_pin_file))
		return -1;
	/* keysvcd inherits these. */
	setenv("KS_FAULTP11_TARGET", g->td.token.module, 1);
	setenv("KS_FAULTP11_CONTROL", g->control, 1);
	setenv("KS_FAULTP11_COUNT", g->count, 1);
	snprintf(g->td.module, sizeof(g->td.module), "%s", shim);
	write_text(g->control, "\n", 0600);
	return ks_td_write_config(&g->td) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	struct guard_test *g = *state;

	if (g != NULL) {
		ks_td_teardown(&g->td);
		free(g);
	}
	unsetenv("KS_FAULTP11_COUNT");
	return 0;
}

/* Start keysvcd and expect it to exit with @code, its log saying @log_says. */
static void refused(struct guard_test *g, int code, const char *log_says)
{
	assert_int_equal(ks_td_spawn(&g->td), 0);
	if (ks_td_wait_exit(&g->td, 10000) != 0)
		fail_msg("keysvcd did not exit (expected exit code %d)", code);
	assert_true(WIFEXITED(g->td.status));
	if (WEXITSTATUS(g->td.status) != code || !log_has(&g->td, log_says)) {
		char *log = ks_td_daemon_log(&g->td, NULL);

		fprintf(stderr, "daemon log:\n%s\n", log ? log : "");
		free(log);
		fail_msg("exit code %d, expected %d with \"%s\" in the log",
			 WEXITSTATUS(g->td.status), code, log_says);
	}
}

/* keysvcd --check-config: its exit code, its output in DIR/check.log. */
static int check_config(struct guard_test *g)
{
	char out[PATH_MAX + 32];
	int status, fd;
	pid_t pid;

	snprintf(out, sizeof(out), "%s/check.log", g->td.dir);
	fflush(NULL);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		if ((fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0 ||
		    dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(125);
		execl(getenv("KS_KEYSVCD"), "keysvcd", "-c", g->td.config, "--check-config",
		      (char *)NULL);
		_exit(126);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void use_pin_file(struct guard_test *g, const char *path)
{
	snprintf(g->td.pin_file, sizeof(g->td.pin_file), "%s", path);
	assert_int_equal(ks_td_write_config(&g->td), 0);
}

static void assert_file_lacks(const char *path, const char *needle)
{
	char *text = ks_td_read_file(path, NULL);

	assert_non_null(text);
	if (strstr(text, needle) != NULL)
		fail_msg("%s contains \"%s\"", path, needle);
	free(text);
}

/* Started again and again with one wrong PIN, keysvcd shows it to the token once. */
static void test_restarts(void **state)
{
	struct guard_test *g = *state;
	struct stat st;

	write_text(g->wrong_pin_file, "0badc0ffee0badc0\n", 0600);
	use_pin_file(g, g->wrong_pin_file);

	refused(g, EXIT_PIN_REJECTED, "PIN rejected");
	assert_int_equal(logins(g), 1);
	assert_true(log_has(&g->td, "recorded the rejected PIN"));
	assert_int_equal(lstat(g->marker, &st), 0);
	assert_true(S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0600);
	assert_file_lacks(g->marker, "0badc0ffee0badc0");
	assert_file_lacks(g->marker, g->td.token.pin);

	for (int i = 0; i < 3; i++) {
		refused(g, EXIT_PIN_REJECTED, "rejected this PIN before");
		assert_true(log_has(&g->td, g->wrong_pin_file));
		assert_true(log_has(&g->td, "Replace the PIN"));
		assert_true(log_has(&g->td, "CKR_PIN_INCORRECT"));
		assert_int_equal(logins(g), 1);
	}
	assert_int_equal(ks_td_log_count(&g->td, "0badc0ffee0badc0"), 0);
	/* --check-config says so too, and changes nothing. */
	assert_int_equal(check_config(g), EXIT_PIN_REJECTED);
	assert_int_equal(logins(g), 1);
	assert_int_equal(lstat(g->marker, &st), 0);

	/* Another PIN in the file: it gets its one try (--check-config leaves the marker). */
	write_text(g->wrong_pin_file, "0badc0ffee0badc1\n", 0600);
	assert_int_equal(check_config(g), 0);
	assert_int_equal(lstat(g->marker, &st), 0);
	refused(g, EXIT_PIN_REJECTED, "PIN was replaced since the token rejected one");
	assert_int_equal(logins(g), 2);
	refused(g, EXIT_PIN_REJECTED, "rejected this PIN before");
	assert_int_equal(logins(g), 2);

	/* The right PIN: the marker goes, keysvcd serves. */
	use_pin_file(g, g->td.token.pin_file);
	assert_int_equal(ks_td_start(&g->td), 0);
	assert_int_equal(logins(g), 3);
	assert_int_equal(lstat(g->marker, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(ks_td_stop(&g->td), 0);
}

/*
 * The token refuses the PIN in the background reconnect: that process
 * never logs in again, and the next keysvcd does not either.
 */
static void test_reconnect(void **state)
{
	struct guard_test *g = *state;
	json_t *resp;
	int seen;

	assert_int_equal(ks_td_start(&g->td), 0);
	assert_int_equal(logins(g), 1);
	/* The token goes away: the next request marks it down, the reconnect begins. */
	write_text(g->control, "error CKR_DEVICE_REMOVED always\n", 0600);
	resp = ks_td_request_once(&g->td, LIST);
	assert_non_null(resp);
	assert_string_equal(ks_td_outcome(resp), "token-unavailable");
	json_decref(resp);
	/* It comes back refusing the PIN (changed by its security officer, say). */
	write_text(g->control, "error CKR_PIN_INCORRECT always C_Login\n", 0600);
	assert_int_equal(ks_td_wait_log(&g->td, "recorded the rejected PIN", 1, 15000), 0);
	seen = logins(g);
	assert_int_equal(seen, 2);
	/* The token is fine again; still no login: the backoff would have tried by now. */
	write_text(g->control, "\n", 0600);
	sleep_ms(3000);
	assert_int_equal(logins(g), seen);
	resp = ks_td_request_once(&g->td, LIST);
	assert_non_null(resp);
	assert_string_equal(ks_td_outcome(resp), "token-unavailable");
	assert_non_null(strstr(json_string_value(json_object_get(resp, "message")), "rejected the PIN"));
	json_decref(resp);
	assert_int_equal(logins(g), seen);
	assert_int_equal(ks_td_stop(&g->td), 0);

	/* The same PIN at the next start: refused before the token sees it. */
	refused(g, EXIT_PIN_REJECTED, "rejected this PIN before");
	assert_int_equal(logins(g), seen);
	/* What the message tells the administrator to do once the PIN is known good. */
	assert_int_equal(unlink(g->marker), 0);
	assert_int_equal(ks_td_start(&g->td), 0);
	assert_int_equal(logins(g), seen + 1);
	assert_int_equal(ks_td_stop(&g->td), 0);
}

/* A guard that cannot record is no guard: keysvcd does not start without one. */
static void test_state_dir(void **state)
{
	struct guard_test *g = *state;
	char key[PATH_MAX + 32], *text;

	/* --check-config makes nothing, not even the key. */
	assert_int_equal(check_config(g), 0);
	snprintf(key, sizeof(key), "%s/pin-guard.key", g->td.state_dir);
	assert_null(ks_td_read_file(key, NULL));

	assert_int_equal(chmod(g->td.state_dir, 0770), 0);
	assert_int_equal(check_config(g), EXIT_CONFIG);
	refused(g, EXIT_CONFIG, "writable by group or others");
	assert_int_equal(chmod(g->td.state_dir, 0700), 0);
	if (geteuid() == 0) {
		assert_int_equal(chown(g->td.state_dir, 65534, 65534), 0);
		refused(g, EXIT_CONFIG, "owned by uid 65534");
		assert_int_equal(chown(g->td.state_dir, 0, 0), 0);
	}
	assert_int_equal(rmdir(g->td.state_dir), 0);
	refused(g, EXIT_CONFIG, "No such file or directory");
	assert_int_equal(logins(g), 0);
	assert_int_equal(mkdir(g->td.state_dir, 0700), 0);

	/*
	 * A marker whose key is gone cannot tell which PIN it stands for: a
	 * new key would make it look like another PIN's, so it refuses.
	 */
	write_text(g->wrong_pin_file, "0badc0ffee0badc0\n", 0600);
	use_pin_file(g, g->wrong_pin_file);
	refused(g, EXIT_PIN_REJECTED, "PIN rejected");
	assert_int_equal(logins(g), 1);
	assert_int_equal(unlink(key), 0);
	refused(g, EXIT_PIN_REJECTED, "cannot tell whether this PIN is the one");
	assert_int_equal(check_config(g), EXIT_PIN_REJECTED);
	assert_int_equal(logins(g), 1);
	assert_null(ks_td_read_file(key, NULL));
	assert_int_equal(unlink(g->marker), 0);
	use_pin_file(g, g->td.token.pin_file);

	/* The right PIN: the key is made again. */
	assert_int_equal(ks_td_start(&g->td), 0);
	assert_int_equal(logins(g), 2);
	assert_int_equal(ks_td_stop(&g->td), 0);
	assert_non_null(text = ks_td_read_file(key, NULL));
	free(text);

	/* A marker keysvcd did not write is not ignored. */
	write_text(g->marker, "garbage\n", 0600);
	refused(g, EXIT_PIN_REJECTED, "not a marker keysvcd wrote");
	assert_int_equal(logins(g), 2);
	assert_int_equal(unlink(g->marker), 0);

	assert_int_equal(ks_td_start(&g->td), 0);
	assert_int_equal(logins(g), 3);
	assert_int_equal(ks_td_stop(&g->td), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_restarts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconnect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_dir, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("pin-guard", tests, NULL, NULL);
}
