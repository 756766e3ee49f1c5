/*
 * keysvcd under systemd, without systemd: the test plays the service
 * manager.
 *   - ks_sd_listen_fd() (keysvc/sdnotify.h) on its own: activated, not
 *     ours, malformed, wrong kinds of fd 3; the variables always unset;
 *   - socket activation of keysvcd: a listening socket made by the test,
 *     passed as fd 3 with LISTEN_FDS=1 and LISTEN_PID; served, its file
 *     kept at stop, the configured socket never created, a connection
 *     queued while keysvcd was down served by the next one; wrong sockets
 *     refused at start;
 *   - sd_notify: READY=1, RELOADING=1 with MONOTONIC_USEC and READY=1 again
 *     on SIGHUP, STOPPING=1 on SIGTERM, to a path and to an abstract socket;
 *   - the PIN as a systemd credential in the shape systemd writes it
 *     (root-owned 0400 plus a POSIX ACL for the service user, so mode 0440),
 *     and group-readable credentials without that ACL refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "keysvc/sdnotify.h"
#include "tests/common/daemon.h"

#define HELLO "{\"id\":1,\"op\":\"hello\"}"
#define ROOT_ALL "[{\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"key.list\"]}]"

/* A socket of @type bound to @path (unlinked first); listening if @listening. */
static int bound_socket(const char *path, int type, int listening)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	assert_true(strlen(path) < sizeof(sun.sun_path));
	memcpy(sun.sun_path, path, strlen(path));
	unlink(path);
	assert_true((fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0)) >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	if (listening)
		assert_int_equal(listen(fd, 16), 0);
	return fd;
}

/* Runs a request on a new connection to @path; the outcome or "none". */
static const char *hello_at(const char *path, int timeout_ms)
{
	static char out[32];
	int fd = ks_td_connect_path(path);
	json_t *resp;

	snprintf(out, sizeof(out), "none");
	if (fd < 0)
		return out;
	if (ks_td_send_json(fd, HELLO) == 0 && (resp = ks_td_read_json(fd, timeout_ms, NULL)) != NULL) {
		snprintf(out, sizeof(out), "%s", ks_td_outcome(resp) ? ks_td_outcome(resp) : "none");
		json_decref(resp);
	}
	close(fd);
	return out;
}

/* ---- 1. ks_sd_listen_fd() in this process -------------------------------- */

static void set_listen_env(const char *pid, const char *fds)
{
	char self[32];

	if (pid == NULL) {
		snprintf(self, sizeof(self), "%ld", (long)getpid());
		pid = self;
	}
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDS", fds, 1);
	setenv("LISTEN_FDNAMES", "keysvcd.socket", 1);
}

static void assert_listen_env_unset(void)
{
	assert_null(getenv("LISTEN_PID"));
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_FDNAMES"));
}

/* Puts @fd at 3 for ks_sd_listen_fd(). */
static void put_at_3(int fd)
{
	assert_true(fd >= 0);
	if (fd == 3)
		return;
	assert_int_equal(dup2(fd, 3), 3);
	close(fd);
}

static void test_listen_fd_parsing(void **state)
{
	char dir[] = "/tmp/ks-sd-XXXXXX", path[64], name[128], err[256];
	int fd = -2, r, flags, saved3 = -1, saved3_flags = 0;

	(void)state;
	/* The test needs fd 3 for itself: whatever the test runner left there is put back after. */
	if (fcntl(3, F_GETFD) >= 0) {
		assert_true((saved3 = fcntl(3, F_DUPFD_CLOEXEC, 10)) >= 0);
		saved3_flags = fcntl(3, F_GETFD);
		close(3);
	}
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/s", dir);

	/* Not activated: nothing to do, nothing changed. */
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	assert_int_equal(ks_sd_listen_fd(&fd, name, sizeof(name), err, sizeof(err)), 0);
	assert_int_equal(fd, -1);

	/* Activated: fd 3, checked, made non-blocking and close-on-exec, variables gone. */
	put_at_3(bound_socket(path, SOCK_STREAM, 1));
	assert_int_equal(fcntl(3, F_SETFD, 0), 0);
	set_listen_env(NULL, "1");
	r = ks_sd_listen_fd(&fd, name, sizeof(name), err, sizeof(err));
	if (r != 1)
		fail_msg("activation refused: %s", err);
	assert_int_equal(fd, 3);
	assert_string_equal(name, path);
	assert_true((flags = fcntl(3, F_GETFL)) >= 0 && (flags & O_NONBLOCK));
	assert_true(fcntl(3, F_GETFD) & FD_CLOEXEC);
	assert_listen_env_unset();

	/* Variables of another process (inherited): not ours, ignored, and removed. */
	set_listen_env("1", "1");
	assert_int_equal(ks_sd_listen_fd(&fd, name, sizeof(name), err, sizeof(err)), 0);
	assert_int_equal(fd, -1);
	assert_listen_env_unset();

	/* Malformed or more than one socket. */
	static const char *const bad[][2] = {
		{ "x", "1" }, { "", "1" }, { "-1", "1" }, { NULL, "" }, { NULL, "1x" },
		{ NULL, "+1" }, { NULL, "2" }, { NULL, "0" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		set_listen_env(bad[i][0], bad[i][1]);
		assert_int_equal(ks_sd_listen_fd(&fd, name, sizeof(name), err, sizeof(err)), -EINVAL);
		assert_int_equal(fd, -1);
		assert_listen_env_unset();
	}

	/* fd 3 of the wrong kind. */
	close(3);
	set_listen_env(NULL, "1");
	assert_int_equal(ks_sd_listen_fd(&fd, name, sizeof(name), err, sizeof(err)), -EBADF);
	put_at_3(open("/dev/null", O_RDONLY));
	set_listen_env(NULL, "1");
	assert_int_equal(ks_sd_listen_fd(&fd, name, sizeof(name), err, sizeof(err)), -ENOTSOCK);
	close(3);
	put_at_3(bound_socket(path, SOCK_DGRAM, 0));
	set_listen_env(NULL, "1");
	assert_int_equal(ks_sd_listen_fd(&fd, name, sizeof(name), err, sizeof(err)), -ESOCKTNOSUPPORT);
	assert_non_null(strstr(err, "not a stream socket"));
	close(3);
	put_at_3(bound_socket(path, SOCK_STREAM, 0));
	set_listen_env(NULL, "1");
	assert_int_equal(ks_sd_listen_fd(&fd, name, sizeof(name), err, sizeof(err)), -EDESTADDRREQ);
	close(3);
	{
		int in = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		assert_true(in >= 0);
		assert_int_equal(listen(in, 1), 0);   /* bound to an ephemeral loopback-any port */
		put_at_3(in);
	}
	set_listen_env(NULL, "1");
	assert_int_equal(ks_sd_listen_fd(&fd, name, sizeof(name), err, sizeof(err)), -EAFNOSUPPORT);
	close(3);
	assert_listen_env_unset();
	unlink(path);
	rmdir(dir);
	if (saved3 >= 0) {
		assert_int_equal(dup2(saved3, 3), 3);
		fcntl(3, F_SETFD, saved3_flags);
		close(saved3);
	}
}

/* ---- 2. keysvcd socket-activated ----------------------------------------- */

static void test_socket_activation(void **state)
{
	struct ks_td *d = *state;
	struct ks_td_spawn_opts opts = { .listen_fd = -1 };
	char path[PATH_MAX + 32];
	struct stat st;
	json_t *resp;
	int lfd, queued;

	assert_int_equal(ks_td_init(d, "keysvc-sd", ROOT_ALL, 0, 0), 0);
	/* Not the configured path: keysvcd must use what it was given and create nothing. */
	snprintf(path, sizeof(path), "%s/activated.sock", d->run_dir);
	lfd = bound_socket(path, SOCK_STREAM, 1);
	opts.listen_fd = lfd;
	assert_int_equal(ks_td_spawn_with(d, &opts), 0);
	assert_string_equal(hello_at(path, 10000), "ok");
	assert_int_equal(ks_td_wait_log(d, "passed by systemd", 1, 2000), 0);
	assert_int_equal(lstat(d->socket_path, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(ks_td_stop(d), 0);
	/* The file is systemd's: still there after the stop. */
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));

	/* A client that comes while keysvcd is down waits in the backlog ... */
	assert_true((queued = ks_td_connect_path(path)) >= 0);
	assert_int_equal(ks_td_send_json(queued, HELLO), 0);
	/* ... and the next keysvcd, given the same socket, answers it. */
	assert_int_equal(ks_td_spawn_with(d, &opts), 0);
	resp = ks_td_read_json(queued, 10000, NULL);
	assert_non_null(resp);
	assert_string_equal(ks_td_outcome(resp), "ok");
	json_decref(resp);
	close(queued);
	assert_int_equal(ks_td_stop(d), 0);
	close(lfd);

	/* Wrong sockets are refused at start (exit 1), with the reason. */
	{
		static const struct {
			int type, listening;
			const char *fds, *log;
		} bad[] = {
			{ SOCK_STREAM, 1, "2", "keysvcd serves exactly one" },
			{ SOCK_DGRAM, 0, "1", "not a stream socket" },
			{ SOCK_STREAM, 0, "1", "not listening" },
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			lfd = bound_socket(path, bad[i].type, bad[i].listening);
			opts.listen_fd = lfd;
			opts.listen_fds = bad[i].fds;
			assert_int_equal(ks_td_spawn_with(d, &opts), 0);
			assert_int_equal(ks_td_wait_exit(d, 10000), 0);
			assert_true(WIFEXITED(d->status));
			assert_int_equal(WEXITSTATUS(d->status), 1);
			assert_int_equal(ks_td_log_count(d, bad[i].log), 1);
			close(lfd);
		}
	}
	unlink(path);
}

/* ---- 3. sd_notify -------------------------------------------------------- */

/* The next datagram within @timeout_ms, NUL-terminated in @buf; 0 or -1. */
static int next_notification(int fd, char *buf, size_t len, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	ssize_t n;

	if (poll(&pfd, 1, timeout_ms) != 1)
		return -1;
	if ((n = recv(fd, buf, len - 1, 0)) < 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

/* 1 if @msg has the line @line (assignments are newline-separated). */
static int has_line(const char *msg, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = msg; p != NULL; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
			return 1;
	return 0;
}

static void expect_notification(int fd, const char *line, char *msg, size_t len)
{
	if (next_notification(fd, msg, len, 10000) != 0)
		fail_msg("no notification (waiting for %s)", line);
	if (!has_line(msg, line))
		fail_msg("notification \"%s\" without %s", msg, line);
}

static void notify_cycle(struct ks_td *d, const char *notify_socket, int nfd)
{
	struct ks_td_spawn_opts opts = { .listen_fd = -1, .notify_socket = notify_socket };
	char msg[512];
	int status;

	assert_int_equal(ks_td_spawn_with(d, &opts), 0);
	expect_notification(nfd, "READY=1", msg, sizeof(msg));
	/* Ready means ready: the socket answers now. */
	assert_string_equal(hello_at(d->socket_path, 5000), "ok");

	assert_int_equal(ks_td_reload(d), 0);
	expect_notification(nfd, "RELOADING=1", msg, sizeof(msg));
	assert_non_null(strstr(msg, "MONOTONIC_USEC="));
	expect_notification(nfd, "READY=1", msg, sizeof(msg));

	status = ks_td_kill(d, SIGTERM, 5000);
	expect_notification(nfd, "STOPPING=1", msg, sizeof(msg));
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_notify(void **state)
{
	struct ks_td *d = *state;
	struct sockaddr_un sun;
	char path[PATH_MAX + 32], abstract[108];
	socklen_t len;
	int nfd;

	assert_int_equal(ks_td_init(d, "keysvc-sd", ROOT_ALL, 0, 0), 0);

	/* A path, as systemd's /run/systemd/notify. */
	snprintf(path, sizeof(path), "%s/notify", d->dir);
	nfd = bound_socket(path, SOCK_DGRAM, 0);
	notify_cycle(d, path, nfd);
	close(nfd);
	unlink(path);

	/* An abstract name, "@..." in NOTIFY_SOCKET. */
	snprintf(abstract, sizeof(abstract), "@keysvc-test-notify-%ld", (long)getpid());
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path + 1, abstract + 1, strlen(abstract) - 1);
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(abstract));
	assert_true((nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) >= 0);
	assert_int_equal(bind(nfd, (struct sockaddr *)&sun, len), 0);
	notify_cycle(d, abstract, nfd);
	close(nfd);
}

/* ---- 4. the PIN as a systemd credential ---------------------------------- */

static void le16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void le32(uint8_t *p, uint32_t v)
{
	le16(p, v & 0xffff);
	le16(p + 2, v >> 16);
}

/*
 * What systemd's write_credential() does for User=: mode 0400 and an ACL
 * entry giving @uid read. Returns -errno if the file system has no ACLs.
 */
static int systemd_credential_acl(const char *path, uint32_t uid)
{
	/* version; user::r, user:uid:r, group::-, mask::r, other::- */
	static const unsigned tags[] = { 0x01, 0x02, 0x04, 0x10, 0x20 };
	static const unsigned perms[] = { 4, 4, 0, 4, 0 };
	uint8_t acl[4 + 5 * 8];

	le32(acl, 2);
	for (size_t i = 0; i < 5; i++) {
		le16(acl + 4 + i * 8, tags[i]);
		le16(acl + 4 + i * 8 + 2, perms[i]);
		le32(acl + 4 + i * 8 + 4, tags[i] == 0x02 ? uid : 0xffffffffu);
	}
	if (chmod(path, 0400) != 0)
		return -errno;
	return setxattr(path, "system.posix_acl_access", acl, sizeof(acl), 0) == 0 ? 0 : -errno;
}

static void start_with_credential(struct ks_td *d, const char *creds, int want_exit)
{
	struct ks_td_spawn_opts opts = { .listen_fd = -1, .credentials_dir = creds };

	assert_int_equal(ks_td_spawn_with(d, &opts), 0);
	if (want_exit == 0) {
		assert_int_equal(ks_td_wait_ready(d, 10000), 0);
		assert_string_equal(hello_at(d->socket_path, 5000), "ok");
		assert_int_equal(ks_td_stop(d), 0);
		return;
	}
	assert_int_equal(ks_td_wait_exit(d, 10000), 0);
	assert_true(WIFEXITED(d->status));
	assert_int_equal(WEXITSTATUS(d->status), want_exit);
	assert_int_equal(ks_td_log_count(d, "PIN credential"), 1);
}

static void test_credential_pin(void **state)
{
	struct ks_td *d = *state;
	char creds[PATH_MAX + 16], cred[PATH_MAX + 32], cmd[3 * PATH_MAX];
	struct stat st;
	int r;

	assert_int_equal(ks_td_init(d, "keysvc-sd", ROOT_ALL, 0, 0), 0);
	/* No pin_file at all: the credential is the only source. */
	d->no_pin_file = 1;
	assert_int_equal(ks_td_write_config(d), 0);
	snprintf(creds, sizeof(creds), "%s/credentials", d->dir);
	snprintf(cred, sizeof(cred), "%s/keysvc-pin", creds);
	assert_int_equal(mkdir(creds, 0700), 0);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", d->pin_file, cred);
	assert_int_equal(system(cmd), 0);

	/* Plain 0400, ours. */
	assert_int_equal(chmod(cred, 0400), 0);
	start_with_credential(d, creds, 0);

	/* 0440 with no ACL behind it: a group could read the PIN. */
	assert_int_equal(chmod(cred, 0440), 0);
	start_with_credential(d, creds, 4);

	/* systemd's shape: 0400 plus an ACL for the service user, shown as 0440. */
	r = systemd_credential_acl(cred, (uint32_t)geteuid());
	if (r == -EOPNOTSUPP || r == -ENOTSUP) {
		fprintf(stderr, "no POSIX ACLs on %s: the ACL cases are skipped\n", creds);
		return;
	}
	assert_int_equal(r, 0);
	assert_int_equal(stat(cred, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0440);
	start_with_credential(d, creds, 0);

	/* The same ACL for another user: refused. */
	assert_int_equal(removexattr(cred, "system.posix_acl_access"), 0);
	assert_int_equal(systemd_credential_acl(cred, (uint32_t)geteuid() + 4242u), 0);
	start_with_credential(d, creds, 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_listen_fd_parsing),
		cmocka_unit_test_setup_teardown(test_socket_activation, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_notify, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_credential_pin, ks_td_fixture_alloc, ks_td_fixture_free),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
