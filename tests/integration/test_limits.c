/*
 * keysvcd's resource limits and process hardening, through the running
 * daemon (tests/common/daemon.h):
 *   - max_clients_per_uid: the connection over it gets one denied frame and
 *     is closed, the others of that uid and other uids keep working;
 *   - peers no policy rule names hold at most max_clients less the reserve
 *     for named peers, get one answer per connection, and every refusal is
 *     audited;
 *   - idle_timeout_ms and frame_timeout_ms, separately: an idle client, a
 *     client dribbling one byte at a time (dropped by the whole-frame
 *     deadline, however regular its bytes) and a slow but timely one;
 *   - a client that never reads its answers is dropped after the write
 *     deadline, having received no more than the socket buffer holds;
 *   - at the descriptor limit (EMFILE) keysvcd keeps serving open
 *     connections, does not spin, warns once, and accepts again later;
 *   - no core dumps: RLIMIT_CORE 0 in /proc/PID/limits, not dumpable (a
 *     same-uid process without CAP_SYS_PTRACE cannot open /proc/PID/mem),
 *     and SIGSEGV leaves no core.
 *
 * Timing bounds are generous and only check that a deadline is enforced
 * at about its configured value, never how fast anything runs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/common/daemon.h"

#define NOBODY 65534
#define HELLO "{\"id\":1,\"op\":\"hello\"}"
#define ALL_OPS "[\"key.generate\",\"key.list\",\"key.public\",\"key.delete\"," \
	"\"csr.create\",\"sign\",\"cert.put\",\"cert.get\"]"
#define ROOT_ALL "[{\"uid\":0,\"keys\":[\"*\"],\"ops\":" ALL_OPS "}]"
#define ROOT_AND_NOBODY "[{\"uid\":0,\"keys\":[\"*\"],\"ops\":" ALL_OPS "}," \
	"{\"uid\":65534,\"keys\":[\"*\"],\"ops\":[\"key.list\"]}]"

/* ---- helpers ----------------------------------------------------------- */

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void check_outcome(json_t *resp, const char *want, const char *what)
{
	const char *got = resp ? ks_td_outcome(resp) : NULL;

	if (got == NULL || strcmp(got, want) != 0) {
		char *s = resp ? json_dumps(resp, JSON_COMPACT) : NULL;

		fprintf(stderr, "%s: %s\n", what, s ? s : "(no response)");
		free(s);
		fail_msg("%s: expected %s, got %s", what, want, got ? got : "(nothing)");
	}
}

static void hello_ok(int fd, const char *what)
{
	json_t *resp = ks_td_request(fd, HELLO);

	check_outcome(resp, "ok", what);
	json_decref(resp);
}

/*
 * A new connection, answered: hello ok. The fd, or fails the test. A
 * connection refused for a limit is retried for a while: the daemon counts
 * a closed connection (such as ks_td_wait_ready()'s probe) only once its
 * thread has noticed the close.
 */
static int served(struct ks_td *d, const char *what)
{
	int64_t deadline = ks_td_now_ms() + 5000;
	json_t *resp = NULL;
	int fd = -1;

	for (;;) {
		if ((fd = ks_td_connect(d)) < 0)
			fail_msg("%s: connect: %s", what, strerror(-fd));
		resp = ks_td_request(fd, HELLO);
		if (resp != NULL && ks_td_outcome(resp) != NULL &&
		    strcmp(ks_td_outcome(resp), "ok") == 0)
			break;
		if (ks_td_now_ms() >= deadline)
			check_outcome(resp, "ok", what);
		json_decref(resp);
		close(fd);
		sleep_ms(50);
	}
	json_decref(resp);
	return fd;
}

/* Writes the configuration from @d's fields and starts the daemon. */
static void start(struct ks_td *d)
{
	assert_int_equal(ks_td_write_config(d), 0);
	assert_int_equal(ks_td_start(d), 0);
}

/* ---- 1. connections per uid -------------------------------------------- */

/* In a child that becomes nobody: one hello on a new connection; the outcome on @out. */
static void hello_as_nobody(struct ks_td *d, char *out, size_t out_len)
{
	int p[2], status;
	ssize_t n;
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		json_t *resp;
		int fd;

		close(p[0]);
		if (setgroups(0, NULL) != 0 || setresgid(NOBODY, NOBODY, NOBODY) != 0 ||
		    setresuid(NOBODY, NOBODY, NOBODY) != 0)
			_exit(99);
		if ((fd = ks_td_connect(d)) < 0) {
			dprintf(p[1], "connect: %s", strerror(-fd));
			_exit(0);
		}
		resp = ks_td_request(fd, HELLO);
		dprintf(p[1], "%s", resp && ks_td_outcome(resp) ? ks_td_outcome(resp) : "none");
		_exit(0);
	}
	close(p[1]);
	n = read(p[0], out, out_len - 1);
	out[n > 0 ? n : 0] = '\0';
	close(p[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_per_uid_limit(void **state)
{
	struct ks_td *d = *state;
	int fds[3], extra;
	json_t *resp;
	const char *msg;
	char out[128];

	assert_int_equal(ks_td_init(d, "keysvc-limits", ROOT_AND_NOBODY, 0, 0), 0);
	d->max_clients_per_uid = 3;
	start(d);
	for (int i = 0; i < 3; i++)
		fds[i] = served(d, "connection within the per-uid limit");

	/* The fourth of this uid: one denied frame with a null id, then the close. */
	assert_true((extra = ks_td_connect(d)) >= 0);
	resp = ks_td_read_json(extra, 5000, NULL);
	check_outcome(resp, "denied", "fourth connection of uid 0");
	assert_true(json_is_null(json_object_get(resp, "id")));
	msg = json_string_value(json_object_get(resp, "message"));
	assert_non_null(msg);
	assert_non_null(strstr(msg, "too many connections for this uid (limit 3)"));
	json_decref(resp);
	assert_int_equal(ks_td_wait_closed(extra, 5000), 0);
	close(extra);
	assert_int_equal(ks_td_wait_log(d, "too many connections for this uid (limit 3)", 1, 5000), 0);

	/* The three are unaffected ... */
	for (int i = 0; i < 3; i++)
		hello_ok(fds[i], "connection within the limit, after a refusal");
	/* ... and so is another uid (root only: the child must become nobody). */
	if (geteuid() == 0) {
		/* The socket is 0660 root:root; nobody needs the way in to be counted at all. */
		assert_int_equal(chmod(d->socket_path, 0666), 0);
		hello_as_nobody(d, out, sizeof(out));
		assert_string_equal(out, "ok");
	}
	/* A freed slot is usable again. */
	close(fds[0]);
	fds[0] = served(d, "connection in a freed slot");
	close(fds[0]);
	for (int i = 1; i < 3; i++)
		close(fds[i]);
	assert_int_equal(ks_td_stop(d), 0);
}

/* ---- 1b. peers the policy does not name --------------------------------- */

#define UNKNOWN_UID 20001   /* no rule names these uids (nor their gid) */
#define UNKNOWN_PEERS 4
#define CONNS_EACH 3

/*
 * In a child that becomes @uid: open @n connections, each either held (no
 * frame within 300 ms) or refused (a denied frame naming the unknown-peer
 * limit). Writes "HELD REFUSED" to @report, then keeps the held ones open
 * until @hold is closed by the parent.
 */
static void unknown_holder(struct ks_td *d, uid_t uid, int n, int report, int hold)
{
	int fds[CONNS_EACH], held = 0, refused = 0;
	char c;

	if (setgroups(0, NULL) != 0 || setresgid(uid, uid, uid) != 0 ||
	    setresuid(uid, uid, uid) != 0)
		_exit(99);
	for (int i = 0; i < n; i++) {
		json_t *resp;
		int err = 0;

		if ((fds[i] = ks_td_connect(d)) < 0)
			_exit(98);
		resp = ks_td_read_json(fds[i], 300, &err);
		if (resp == NULL && err == -ETIMEDOUT) {
			held++;
			continue;
		}
		if (resp != NULL && strcmp(ks_td_outcome(resp), "denied") == 0 &&
		    strstr(json_string_value(json_object_get(resp, "message")),
			   "no policy rule names") != NULL)
			refused++;
		json_decref(resp);
		close(fds[i]);
		fds[i] = -1;
	}
	dprintf(report, "%d %d\n", held, refused);
	close(report);
	if (read(hold, &c, 1) < 0)
		_exit(95);
	_exit(0);
}

/* Audit lines for @uid with @op_and_outcome ("\"op\":null,\"outcome\":\"denied\"" say). */
static int audit_count(struct ks_td *d, uid_t uid, const char *op_and_outcome)
{
	char *log = ks_td_audit_log(d, NULL), *line, *save = NULL, uid_field[32];
	int n = 0;

	snprintf(uid_field, sizeof(uid_field), "\"uid\":%u,", (unsigned)uid);
	for (line = log ? strtok_r(log, "\n", &save) : NULL; line != NULL;
	     line = strtok_r(NULL, "\n", &save))
		n += strstr(line, uid_field) != NULL && strstr(line, op_and_outcome) != NULL;
	free(log);
	return n;
}

static void test_unknown_peers(void **state)
{
	struct ks_td *d = *state;
	int hold[2], report[2], fds[2], held = 0, refused = 0, status;
	pid_t pids[UNKNOWN_PEERS + 1];

	if (geteuid() != 0)
		skip();
	/* 8 slots: 2 kept for named peers, 6 for all the others together. */
	assert_int_equal(ks_td_init(d, "keysvc-limits", ROOT_ALL, 0, 0), 0);
	d->max_clients = 8;
	d->idle_timeout_ms = 20000;
	d->frame_timeout_ms = 20000;
	start(d);
	assert_int_equal(chmod(d->socket_path, 0666), 0);

	/* Four unknown uids try three idle connections each, one after the other. */
	assert_int_equal(pipe(hold), 0);
	assert_int_equal(pipe(report), 0);
	for (int i = 0; i < UNKNOWN_PEERS; i++) {
		fflush(NULL);
		assert_true((pids[i] = fork()) >= 0);
		if (pids[i] == 0) {
			close(hold[1]);
			close(report[0]);
			unknown_holder(d, UNKNOWN_UID + (uid_t)i, CONNS_EACH, report[1], hold[0]);
		}
		/* The next starts once this one has said how it went. */
		{
			char line[32];
			ssize_t n = read(report[0], line, sizeof(line) - 1);
			int h = 0, r = 0;

			assert_true(n > 0);
			line[n] = '\0';
			assert_int_equal(sscanf(line, "%d %d", &h, &r), 2);
			held += h;
			refused += r;
		}
	}
	close(report[1]);
	close(hold[0]);
	/* Only 6 held, whatever uid; the other 6 refused for the unknown-peer limit. */
	assert_int_equal(held, 6);
	assert_int_equal(refused, 6);

	/* Named peers still get the 2 reserved slots, at once. */
	fds[0] = served(d, "uid 0 with unknown peers holding their share");
	fds[1] = served(d, "a second uid 0 connection in the reserve");
	close(fds[0]);
	close(fds[1]);

	/* Each refusal is in the audit log: denied, no operation. */
	{
		int audited = 0;

		for (int i = 0; i < UNKNOWN_PEERS; i++)
			audited += audit_count(d, UNKNOWN_UID + (uid_t)i,
					       "\"op\":null,\"outcome\":\"denied\"");
		assert_int_equal(audited, 6);
	}
	assert_int_equal(ks_td_wait_log(d, "too many connections from peers no policy rule names "
					"(limit 6)", 1, 5000), 0);

	/* The holders leave; an unknown peer is answered once, then closed. */
	close(hold[1]);
	for (int i = 0; i < UNKNOWN_PEERS; i++) {
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	fflush(NULL);
	assert_true((pids[UNKNOWN_PEERS] = fork()) >= 0);
	if (pids[UNKNOWN_PEERS] == 0) {
		int64_t deadline = ks_td_now_ms() + 5000;
		json_t *resp = NULL;
		int fd = -1;

		if (setgroups(0, NULL) != 0 || setresgid(UNKNOWN_UID + 10, UNKNOWN_UID + 10, UNKNOWN_UID + 10) != 0 ||
		    setresuid(UNKNOWN_UID + 10, UNKNOWN_UID + 10, UNKNOWN_UID + 10) != 0)
			_exit(99);
		/* The holders' slots are free once their threads saw the close. */
		for (;;) {
			if ((fd = ks_td_connect(d)) < 0)
				_exit(98);
			resp = ks_td_request(fd, HELLO);
			if (resp != NULL && strstr(json_string_value(json_object_get(resp, "message")),
						   "is not granted hello") != NULL)
				break;
			json_decref(resp);
			close(fd);
			if (ks_td_now_ms() >= deadline)
				_exit(97);
			sleep_ms(50);
		}
		json_decref(resp);
		/* Answered once (denied): then closed, not left to idle for 20 s. */
		_exit(ks_td_wait_closed(fd, 2000) == 0 ? 0 : 96);
	}
	assert_int_equal(waitpid(pids[UNKNOWN_PEERS], &status, 0), pids[UNKNOWN_PEERS]);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) != 0)
		fail_msg("unknown peer's connection: child exit %d (96: not closed after its "
			 "answer)", WEXITSTATUS(status));
	assert_int_equal(audit_count(d, UNKNOWN_UID + 10, "\"op\":\"hello\",\"outcome\":\"denied\""), 1);
	assert_int_equal(ks_td_stop(d), 0);
}

/* ---- 2. idle and whole-frame deadlines --------------------------------- */

/* Sends @hdr then @byte one at a time, @gap_ms apart, until the daemon hangs up; ms taken. */
static int64_t dribble_until_dropped(int fd, int gap_ms, int64_t max_ms)
{
	uint8_t hdr[4] = { 0, 0, 0, 200 }, byte = ' ';
	int64_t t0 = ks_td_now_ms();
	int sent = 0;

	while (ks_td_now_ms() - t0 < max_ms) {
		if (ks_td_send_raw(fd, sent < 4 ? &hdr[sent] : &byte, 1) != 0)
			break;   /* EPIPE: the daemon hung up */
		sent++;
		if (ks_td_wait_closed(fd, gap_ms) == 0)
			break;
	}
	return ks_td_now_ms() - t0;
}

static void test_deadlines(void **state)
{
	struct ks_td *d = *state;
	const char *req = HELLO;
	uint8_t frame[64];
	size_t len = strlen(req);
	int64_t t0, took;
	int idle, fd;

	/* Different values, so each drop can be told apart by when it happens. */
	assert_int_equal(ks_td_init(d, "keysvc-limits", ROOT_ALL, 0, 0), 0);
	d->idle_timeout_ms = 3000;
	d->frame_timeout_ms = 1000;
	start(d);

	/* A client that connects and says nothing: dropped after idle_timeout_ms. */
	assert_true((idle = ks_td_connect(d)) >= 0);
	t0 = ks_td_now_ms();

	/* One byte every 300 ms: each in time, the frame not: dropped after frame_timeout_ms. */
	assert_true((fd = ks_td_connect(d)) >= 0);
	took = dribble_until_dropped(fd, 300, 10000);
	close(fd);
	if (took < 800 || took > 2500)
		fail_msg("dribbling client dropped after %lld ms (frame_timeout_ms 1000)",
			 (long long)took);
	assert_int_equal(ks_td_wait_log(d, "request frame not complete within 1000 ms", 1, 2000), 0);

	assert_int_equal(ks_td_wait_closed(idle, 6000), 0);
	took = ks_td_now_ms() - t0;
	close(idle);
	if (took < 2500 || took > 6000)
		fail_msg("idle client dropped after %lld ms (idle_timeout_ms 3000)", (long long)took);
	assert_int_equal(ks_td_wait_log(d, "idle for 3000 ms; closing", 1, 2000), 0);

	/* Pauses shorter than idle_timeout_ms between requests are fine, each time anew. */
	assert_true((fd = ks_td_connect(d)) >= 0);
	hello_ok(fd, "first request");
	sleep_ms(1500);
	hello_ok(fd, "after 1.5 s idle");
	sleep_ms(1500);
	hello_ok(fd, "after another 1.5 s idle");

	/* A frame in four pieces 150 ms apart arrives within its deadline and is answered. */
	frame[0] = 0;
	frame[1] = 0;
	frame[2] = (uint8_t)(len >> 8);
	frame[3] = (uint8_t)len;
	memcpy(frame + 4, req, len);
	assert_int_equal(ks_td_send_raw(fd, frame, 2), 0);
	sleep_ms(150);
	assert_int_equal(ks_td_send_raw(fd, frame + 2, 6), 0);
	sleep_ms(150);
	assert_int_equal(ks_td_send_raw(fd, frame + 8, 6), 0);
	sleep_ms(150);
	assert_int_equal(ks_td_send_raw(fd, frame + 14, len + 4 - 14), 0);
	{
		json_t *resp = ks_td_read_json(fd, 5000, NULL);

		check_outcome(resp, "ok", "frame sent in pieces");
		json_decref(resp);
	}
	close(fd);
	assert_int_equal(ks_td_stop(d), 0);
}

/* ---- 3. a client that never reads -------------------------------------- */

static void test_unread_responses(void **state)
{
	struct ks_td *d = *state;
	static char buf[65536];
	size_t sent = 0, received = 0, frames, hdr_got = 0, body_left = 0;
	int fd, other, flags;
	ssize_t n;

	assert_int_equal(ks_td_init(d, "keysvc-limits", ROOT_ALL, 0, 0), 0);
	d->frame_timeout_ms = 1000;
	d->idle_timeout_ms = 30000;
	start(d);

	/* Requests until our side would block; never an answer read. */
	assert_true((fd = ks_td_connect(d)) >= 0);
	assert_true((flags = fcntl(fd, F_GETFL)) >= 0);
	assert_int_equal(fcntl(fd, F_SETFL, flags | O_NONBLOCK), 0);
	for (int i = 0; i < 20000; i++) {
		uint8_t frame[4 + sizeof(HELLO)];
		size_t len = strlen(HELLO);

		frame[0] = frame[1] = 0;
		frame[2] = (uint8_t)(len >> 8);
		frame[3] = (uint8_t)len;
		memcpy(frame + 4, HELLO, len);
		n = send(fd, frame, 4 + len, MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		/* Past the daemon's close: not expected this early, but not wrong. */
		if (n < 0)
			break;
		assert_int_equal((size_t)n, 4 + len);   /* small sends go whole or not at all */
		sent++;
	}
	assert_true(sent > 100);

	/* The daemon's writer gives up after frame_timeout_ms and closes the connection ... */
	assert_int_equal(ks_td_wait_log(d, "response not read within 1000 ms; closing", 1, 10000), 0);
	/* ... while everybody else is served as usual. */
	other = served(d, "another client while one does not read");
	close(other);

	/* What it did get is what the kernel buffered, then the end of the stream. */
	frames = 0;
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };

		if (poll(&pfd, 1, 5000) <= 0)
			fail_msg("the connection that never read stays open");
		n = recv(fd, buf, sizeof(buf), 0);
		if (n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE)))
			break;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		assert_true(n > 0);
		received += (size_t)n;
		/* Count whole answers: 4 header bytes, then the body they announce. */
		for (ssize_t i = 0; i < n; i++) {
			if (hdr_got < 4) {
				body_left = body_left << 8 | (uint8_t)buf[i];
				if (++hdr_got == 4 && body_left == 0)
					fail_msg("empty frame from keysvcd");
			} else if (--body_left == 0) {
				frames++;
				hdr_got = 0;
			}
		}
	}
	close(fd);
	/* Fewer answers than requests: it was dropped, not served to the end. */
	if (frames >= sent)
		fail_msg("%zu answers for %zu requests: not dropped", frames, sent);
	assert_true(frames > 0);
	/* A few socket buffers at most, never a queue of everything asked for. */
	assert_true(received < 8u * 1024 * 1024);
	assert_int_equal(ks_td_stop(d), 0);
}

/* ---- 4. the descriptor limit ------------------------------------------- */

/* utime + stime of @pid in clock ticks, from /proc/PID/stat. */
static long long cpu_ticks(pid_t pid)
{
	char path[64], *stat, *p;
	unsigned long long ut = 0, st = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	assert_non_null(stat = ks_td_read_file(path, NULL));
	/* The command name may hold spaces and parentheses; fields follow the last ')'. */
	assert_non_null(p = strrchr(stat, ')'));
	/* state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime */
	assert_int_equal(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
				&ut, &st), 2);
	free(stat);
	return (long long)(ut + st);
}

/* Descriptors @pid holds now, or -1. */
static int open_fds(pid_t pid)
{
	char path[64];
	struct dirent *de;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	if ((dir = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(dir)) != NULL)
		n += de->d_name[0] != '.';
	closedir(dir);
	return n;
}

/* Socket descriptors of @pid: the listening socket and one per connection; -1 if /proc cannot tell. */
static int open_sockets(pid_t pid)
{
	char dir_path[64], link_path[PATH_MAX], target[64];
	struct dirent *de;
	DIR *dir;
	ssize_t len;
	int n = 0;

	snprintf(dir_path, sizeof(dir_path), "/proc/%d/fd", (int)pid);
	if ((dir = opendir(dir_path)) == NULL)
		return -1;
	while ((de = readdir(dir)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(link_path, sizeof(link_path), "%s/%s", dir_path, de->d_name);
		if ((len = readlink(link_path, target, sizeof(target) - 1)) > 0) {
			target[len] = '\0';
			n += strncmp(target, "socket:", 7) == 0;
		}
	}
	closedir(dir);
	return n;
}

/* Print the socket descriptors @pid holds, with their inodes (what a leak would show). */
static void print_sockets(pid_t pid)
{
	char dir_path[64], link_path[PATH_MAX], target[64];
	struct dirent *de;
	DIR *dir;
	ssize_t len;

	snprintf(dir_path, sizeof(dir_path), "/proc/%d/fd", (int)pid);
	if ((dir = opendir(dir_path)) == NULL)
		return;
	while ((de = readdir(dir)) != NULL) {
		snprintf(link_path, sizeof(link_path), "%s/%s", dir_path, de->d_name);
		if ((len = readlink(link_path, target, sizeof(target) - 1)) > 0) {
			target[len] = '\0';
			if (strncmp(target, "socket:", 7) == 0)
				fprintf(stderr, "keysvcd fd %s: %s\n", de->d_name, target);
		}
	}
	closedir(dir);
}

/*
 * Until keysvcd holds no connection, only its listening socket. The
 * readiness probe's connection is closed by a worker some time after the
 * probe itself closed, and a descriptor count taken before that includes
 * it. A hello answered first shows the event loop is serving, so what is
 * left is that close; the deadline is long because a sanitizer build on
 * a loaded machine can take seconds to get to it. A connection never
 * closed still fails the test, with the sockets printed.
 */
static void wait_no_connections(struct ks_td *d)
{
	int64_t deadline;
	json_t *resp;
	int fd, err = 0;

	assert_true((fd = ks_td_connect(d)) >= 0);
	assert_int_equal(ks_td_send_json(fd, HELLO), 0);
	resp = ks_td_read_json(fd, 10000, &err);
	check_outcome(resp, "ok", "hello before counting descriptors");
	json_decref(resp);
	close(fd);
	deadline = ks_td_now_ms() + 20000;
	while (open_sockets(d->pid) > 1 && ks_td_now_ms() < deadline)
		sleep_ms(10);
	if (open_sockets(d->pid) > 1)
		print_sockets(d->pid);
	assert_true(open_sockets(d->pid) <= 1);
}

/*
 * keysvcd under RLIMIT_NOFILE @nofile, with no per-uid limit in the way
 * (the descriptor tests open many connections from one uid), ready.
 */
static void spawn_with_nofile(struct ks_td *d, unsigned long nofile)
{
	struct ks_td_spawn_opts opts = { .listen_fd = -1, .nofile = nofile };

	assert_int_equal(ks_td_init(d, "keysvc-limits", ROOT_ALL, 0, 0), 0);
	d->max_clients_per_uid = 1000;
	assert_int_equal(ks_td_write_config(d), 0);
	assert_int_equal(ks_td_spawn_with(d, &opts), 0);
	assert_int_equal(ks_td_wait_ready(d, 10000), 0);
}

#define SIGN_REQ "{\"id\":3,\"op\":\"sign\",\"key\":\"fdkey\",\"alg\":\"ecdsa-sha256\"," \
	"\"digest\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}"

/*
 * The descriptor limit at start leaves room for fewer connections than
 * max_clients: keysvcd serves that many, refuses the next with a denied
 * frame, and keeps descriptors for the token, so signing on the open
 * connections goes on working (SoftHSM opens files for every operation).
 */
static void test_descriptor_budget(void **state)
{
	struct ks_td *d = *state;
	/*
	 * The default 16 sessions keep 16 + 4 * 16 = 80 descriptors for the token
	 * (max_sessions, sized from the descriptor limit, is no more than those).
	 */
	int kept[128], nkept = 0, refused = 0;
	json_t *resp;

	spawn_with_nofile(d, 120);
	assert_int_equal(ks_td_wait_log(d, "serving at most that many", 1, 5000), 0);
	resp = ks_td_request_once(d, "{\"id\":2,\"op\":\"key.generate\",\"key\":\"fdkey\",\"type\":\"ec-p256\",\"purposes\":[\"csr\",\"sign\"]}");
	check_outcome(resp, "ok", "generate");
	json_decref(resp);

	while (nkept < (int)(sizeof(kept) / sizeof(kept[0])) && !refused) {
		int fd = ks_td_connect(d);

		assert_true(fd >= 0);
		resp = ks_td_request(fd, HELLO);
		assert_non_null(resp);
		if (strcmp(ks_td_outcome(resp), "denied") == 0) {
			refused = 1;
			close(fd);
		} else {
			check_outcome(resp, "ok", "connection within the budget");
			kept[nkept++] = fd;
		}
		json_decref(resp);
	}
	assert_true(refused);
	assert_true(nkept >= 3 && nkept < 120 - 80);
	/* Every open connection can still use the token. */
	for (int i = 0; i < nkept; i++) {
		resp = ks_td_request(kept[i], SIGN_REQ);
		check_outcome(resp, "ok", "sign at the descriptor budget");
		json_decref(resp);
	}
	assert_true(open_fds(d->pid) < 120);
	while (nkept > 0)
		close(kept[--nkept]);
	assert_true(ks_td_alive(d));
	assert_int_equal(ks_td_stop(d), 0);
}

/* A limit that leaves nothing for connections: keysvcd says so and does not start. */
static void test_descriptor_budget_none(void **state)
{
	struct ks_td *d = *state;
	struct ks_td_spawn_opts opts = { .listen_fd = -1, .nofile = 60 };

	assert_int_equal(ks_td_init(d, "keysvc-limits", ROOT_ALL, 0, 0), 0);
	assert_int_equal(ks_td_spawn_with(d, &opts), 0);
	assert_int_equal(ks_td_wait_exit(d, 10000), 0);
	assert_true(WIFEXITED(d->status) && WEXITSTATUS(d->status) != 0);
	assert_true(ks_td_log_count(d, "raise RLIMIT_NOFILE") >= 1);
	/* Nothing left behind: the socket file goes with the daemon, as on any exit. */
	assert_int_equal(access(d->socket_path, F_OK), -1);
}

/*
 * The limit lowered while keysvcd runs (prlimit), below what it counted
 * on at start: accept() fails with EMFILE, and keysvcd pauses accepting
 * without spinning while it serves the open connections.
 */
static void test_emfile(void **state)
{
	struct ks_td *d = *state;
	int kept[64], nkept = 0, pending = -1, baseline;
	long long t0_ticks, ticks, hz = sysconf(_SC_CLK_TCK);
	struct rlimit rl;
	int64_t t0;
	json_t *resp;

	spawn_with_nofile(d, 1024);
	wait_no_connections(d);
	baseline = open_fds(d->pid);
	assert_true(baseline > 0);
	/* Room for a few connections, then EMFILE. */
	rl.rlim_cur = (rlim_t)baseline + 8;
	rl.rlim_max = 1024;
	assert_int_equal(prlimit(d->pid, RLIMIT_NOFILE, &rl, NULL), 0);

	/* Connections until one is not accepted: the daemon is at its descriptor limit. */
	while (nkept < (int)(sizeof(kept) / sizeof(kept[0]))) {
		int fd = ks_td_connect(d);
		int err = 0;

		/* The kernel queues it in the backlog even when keysvcd cannot accept. */
		assert_true(fd >= 0);
		assert_int_equal(ks_td_send_json(fd, HELLO), 0);
		resp = ks_td_read_json(fd, 2000, &err);
		if (resp == NULL && err == -ETIMEDOUT) {
			pending = fd;
			break;
		}
		check_outcome(resp, "ok", "connection below the descriptor limit");
		json_decref(resp);
		kept[nkept++] = fd;
	}
	assert_true(pending >= 0);
	assert_true(nkept >= 3);
	assert_int_equal(ks_td_wait_log(d, "Too many open files", 1, 5000), 0);
	assert_int_equal(ks_td_wait_log(d, "pausing new connections", 1, 5000), 0);

	/* It neither spins nor floods the log while connections wait, and serves open ones. */
	t0 = ks_td_now_ms();
	t0_ticks = cpu_ticks(d->pid);
	for (int i = 0; i < 4; i++) {
		sleep_ms(500);
		hello_ok(kept[i % nkept], "open connection at the descriptor limit");
	}
	ticks = cpu_ticks(d->pid) - t0_ticks;
	/* A busy accept loop would burn about one tick per tick of wall time. */
	if (ticks * 1000 > (ks_td_now_ms() - t0) * hz / 2)
		fail_msg("keysvcd used %lld ticks of CPU in %lld ms at the descriptor limit",
			 ticks, (long long)(ks_td_now_ms() - t0));
	assert_int_equal(ks_td_log_count(d, "pausing new connections"), 1);
	assert_true(ks_td_alive(d));

	/* Descriptors freed: the waiting connection is accepted and its request answered. */
	for (int i = 0; i < 4; i++)
		close(kept[--nkept]);
	resp = ks_td_read_json(pending, 10000, NULL);
	check_outcome(resp, "ok", "the connection that waited at the limit");
	json_decref(resp);
	close(pending);
	assert_int_equal(ks_td_wait_log(d, "accepting connections again", 1, 5000), 0);
	while (nkept > 0)
		close(kept[--nkept]);
	assert_int_equal(ks_td_stop(d), 0);
}

/* ---- 5. no core dumps -------------------------------------------------- */

/* Drop CAP_SYS_PTRACE, so only the dumpable flag decides what /proc/PID/ gives a same-uid peer. */
static int drop_ptrace_cap(void)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];

	if (syscall(SYS_capget, &hdr, data) != 0)
		return -1;
	data[CAP_SYS_PTRACE / 32].effective &= ~(1u << (CAP_SYS_PTRACE % 32));
	data[CAP_SYS_PTRACE / 32].permitted &= ~(1u << (CAP_SYS_PTRACE % 32));
	data[CAP_SYS_PTRACE / 32].inheritable &= ~(1u << (CAP_SYS_PTRACE % 32));
	return (int)syscall(SYS_capset, &hdr, data);
}

/*
 * From a child of the same uid without CAP_SYS_PTRACE: the errno of
 * opening /proc/@pid/mem (0 if it opened). The kernel allows it only to a
 * ptrace-capable opener or, for a same-uid one, if @pid is dumpable.
 * (/proc/PID/environ is no such test: recent kernels let the same uid
 * open it either way.)
 */
static int mem_open_errno(pid_t pid)
{
	char path[64];
	int p[2], status, err = -1;
	pid_t child;

	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	assert_int_equal(pipe(p), 0);
	fflush(NULL);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		int fd, e = 0;

		close(p[0]);
		if (drop_ptrace_cap() != 0)
			_exit(98);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			e = errno;
		if (write(p[1], &e, sizeof(e)) != sizeof(e))
			_exit(97);
		_exit(0);
	}
	close(p[1]);
	assert_int_equal(read(p[0], &err, sizeof(err)), (ssize_t)sizeof(err));
	close(p[0]);
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return err;
}

static void test_no_core_dumps(void **state)
{
	struct ks_td *d = *state;
	char path[64], *limits, *line;
	struct ks_td_spawn_opts opts = { .listen_fd = -1, .drop_cap_sys_ptrace = 1 };
	unsigned long long soft = 1, hard = 1;
	int status, control_errno;
	pid_t control;

	assert_int_equal(ks_td_init(d, "keysvc-limits", ROOT_ALL, 0, 0), 0);
	assert_int_equal(ks_td_write_config(d), 0);
	assert_int_equal(ks_td_spawn_with(d, &opts), 0);
	assert_int_equal(ks_td_wait_ready(d, 10000), 0);

	/* RLIMIT_CORE 0, soft and hard, as the kernel reports it. */
	snprintf(path, sizeof(path), "/proc/%d/limits", (int)d->pid);
	assert_non_null(limits = ks_td_read_file(path, NULL));
	assert_non_null(line = strstr(limits, "Max core file size"));
	assert_int_equal(sscanf(line + strlen("Max core file size"), "%llu %llu", &soft, &hard), 2);
	assert_int_equal(soft, 0);
	assert_int_equal(hard, 0);
	free(limits);

	/*
	 * PR_SET_DUMPABLE 0: a process of the same uid, without CAP_SYS_PTRACE,
	 * may not open keysvcd's memory. The control: it may open ours
	 * (dumpable), so the refusal is the flag, not the setup.
	 */
	fflush(NULL);
	control = fork();
	assert_true(control >= 0);
	if (control == 0) {
		/* Dumpable, and no capability the prober lacks. */
		if (drop_ptrace_cap() != 0)
			_exit(98);
		pause();
		_exit(0);
	}
	sleep_ms(100);
	control_errno = mem_open_errno(control);
	kill(control, SIGKILL);
	waitpid(control, NULL, 0);
	assert_int_equal(control_errno, 0);
	assert_int_equal(mem_open_errno(d->pid), EACCES);

	/* A crash leaves no core, whatever core_pattern says (pipes ignore RLIMIT_CORE). */
	status = ks_td_kill(d, SIGSEGV, 5000);
	assert_true(status != -1);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSEGV);
	assert_false(WCOREDUMP(status));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_per_uid_limit, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_unknown_peers, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_deadlines, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_unread_responses, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_emfile, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_descriptor_budget, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_descriptor_budget_none, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_no_core_dumps, ks_td_fixture_alloc, ks_td_fixture_free),
	};

	/* Writes to a connection the daemon dropped must fail with EPIPE, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
