/*
 * keysvcd on its socket, driven with raw frames: hostile framing, many
 * clients at once, a stalled client, the PIN canary in the logs, signals.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/common/softhsm.h"

#define CLIENTS 300

static struct ks_test_token tt;
static char base[PATH_MAX], sock_path[PATH_MAX], conf_path[PATH_MAX];
static char log_path[PATH_MAX], audit_path[PATH_MAX], state_path[PATH_MAX];
static pid_t daemon_pid = -1;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int connect_socket(void)
{
	struct sockaddr_un sun;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock_path) >= (int)sizeof(sun.sun_path) ||
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n > 0) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);

		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static int send_frame(int fd, const void *body, uint32_t len)
{
	uint8_t hdr[4] = { (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len };

	return write_all(fd, hdr, 4) == 0 && write_all(fd, body, len) == 0 ? 0 : -1;
}

/* Read exactly @n bytes within @timeout_ms; 0, or -1 on EOF/timeout. */
static int read_all(int fd, void *p, size_t n, int timeout_ms)
{
	uint8_t *b = p;
	int64_t end = now_ms() + timeout_ms;

	while (n > 0) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		int64_t left = end - now_ms();
		ssize_t r;

		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
			return -1;
		r = recv(fd, b, n, 0);
		if (r <= 0)
			return -1;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

/* One response frame parsed, or NULL on EOF/timeout. */
static json_t *read_response(int fd, int timeout_ms)
{
	uint8_t hdr[4];
	uint32_t len;
	char *body;
	json_t *o;

	if (read_all(fd, hdr, 4, timeout_ms) != 0)
		return NULL;
	len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	if (len == 0 || len > 65536 || (body = malloc(len)) == NULL)
		return NULL;
	if (read_all(fd, body, len, timeout_ms) != 0) {
		free(body);
		return NULL;
	}
	o = json_loadb(body, len, 0, NULL);
	free(body);
	return o;
}

/* 1 if the peer closed the connection within @timeout_ms. */
static int closed_by_peer(int fd, int timeout_ms)
{
	uint8_t b;
	int64_t end = now_ms() + timeout_ms;

	while (now_ms() < end) {
		struct pollfd pfd = { fd, POLLIN, 0 };

		if (poll(&pfd, 1, 50) > 0)
			return recv(fd, &b, 1, 0) == 0;
	}
	return 0;
}

static json_t *request(int fd, const char *json)
{
	if (send_frame(fd, json, (uint32_t)strlen(json)) != 0)
		return NULL;
	return read_response(fd, 10000);
}

static const char *error_of(json_t *o)
{
	return o != NULL ? json_string_value(json_object_get(o, "error")) : "(no answer)";
}

static int is_ok(json_t *o)
{
	return o != NULL && json_is_true(json_object_get(o, "ok"));
}

static void assert_hello_works(void)
{
	int fd = connect_socket();
	json_t *o;

	assert_true(fd >= 0);
	o = request(fd, "{\"id\":1,\"op\":\"hello\"}");
	assert_true(is_ok(o));
	json_decref(o);
	close(fd);
}

static void write_config(const char *extra)
{
	FILE *fp = fopen(conf_path, "w");

	assert_non_null(fp);
	fprintf(fp,
		"{\"module\": \"%s\", \"token\": {\"label\": \"%s\"}, \"pin_file\": \"%s\", \"state_dir\": \"%s\",\n"
		" \"socket\": \"%s\", \"audit_log\": \"%s\", \"log_level\": \"debug\",\n"
		" \"client_timeout_ms\": 1000, \"max_clients\": 1000, \"max_clients_per_uid\": 1000%s,\n"
		" \"policy\": [{\"uid\": 0, \"keys\": [\"*\"], \"ops\": [\"key.generate\", \"key.list\","
		" \"key.public\", \"key.delete\", \"csr.create\", \"sign\", \"cert.put\", \"cert.get\"]}]}\n",
		tt.module, tt.label, tt.pin_file, state_path, sock_path, audit_path, extra ? extra : "");
	assert_int_equal(fclose(fp), 0);
	chmod(conf_path, 0644);
}

static int start_daemon(void)
{
	const char *keysvcd = getenv("KS_KEYSVCD");
	int64_t end;

	if (keysvcd == NULL)
		return -1;
	daemon_pid = fork();
	if (daemon_pid == 0) {
		int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);

		dup2(fd, STDERR_FILENO);
		execl(keysvcd, "keysvcd", "-c", conf_path, (char *)NULL);
		_exit(127);
	}
	for (end = now_ms() + 10000; now_ms() < end; usleep(50 * 1000)) {
		int fd = connect_socket();

		if (fd >= 0) {
			close(fd);
			return 0;
		}
		if (waitpid(daemon_pid, NULL, WNOHANG) == daemon_pid) {
			daemon_pid = -1;
			return -1;
		}
	}
	return -1;
}

/* Run keysvcd where it is expected to refuse to start; its exit status (-1 if it keeps running). */
static int run_daemon_once(void)
{
	int64_t end = now_ms() + 10000;
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open(log_path, O_WRONLY | O_APPEND);

		dup2(fd, STDERR_FILENO);
		execl(getenv("KS_KEYSVCD"), "keysvcd", "-c", conf_path, (char *)NULL);
		_exit(127);
	}
	while (now_ms() < end) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		usleep(20 * 1000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

/* SIGTERM and the exit status (-1 if it did not end within 5 s). */
static int stop_daemon(void)
{
	int64_t end = now_ms() + 5000;
	int status;

	if (daemon_pid < 0)
		return -1;
	kill(daemon_pid, SIGTERM);
	while (now_ms() < end) {
		if (waitpid(daemon_pid, &status, WNOHANG) == daemon_pid) {
			daemon_pid = -1;
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		}
		usleep(20 * 1000);
	}
	kill(daemon_pid, SIGKILL);
	waitpid(daemon_pid, NULL, 0);
	daemon_pid = -1;
	return -1;
}

static int setup(void **state)
{
	struct rlimit rl;
	char *slash;

	(void)state;
	if (ks_test_token_setup(&tt, "wire") != 0)
		return -1;
	snprintf(base, sizeof(base), "%s", tt.dir);
	if ((slash = strrchr(base, '/')) != NULL)
		*slash = '\0';
	if (snprintf(sock_path, sizeof(sock_path), "%s/run/keysvc.sock", base) >= (int)sizeof(sock_path) ||
	    snprintf(conf_path, sizeof(conf_path), "%s/keysvcd.json", base) >= (int)sizeof(conf_path) ||
	    snprintf(log_path, sizeof(log_path), "%s/daemon.log", base) >= (int)sizeof(log_path) ||
	    snprintf(audit_path, sizeof(audit_path), "%s/audit.log", base) >= (int)sizeof(audit_path) ||
	    snprintf(state_path, sizeof(state_path), "%s/state", base) >= (int)sizeof(state_path))
		return -1;
	if (mkdir(state_path, 0700) != 0)
		return -1;
	/* Hundreds of clients in one process, and as many threads in the daemon. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096) {
		rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	write_config(NULL);
	return start_daemon();
}

static int teardown(void **state)
{
	(void)state;
	if (daemon_pid > 0)
		stop_daemon();
	ks_test_token_teardown(&tt);
	return 0;
}

static void test_bad_frames_close(void **state)
{
	static const uint32_t lengths[] = { 0, 65537, 0x7fffffff, 0xffffffff };
	uint8_t hdr[4];

	(void)state;
	for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		int fd = connect_socket();
		json_t *o;

		assert_true(fd >= 0);
		hdr[0] = (uint8_t)(lengths[i] >> 24);
		hdr[1] = (uint8_t)(lengths[i] >> 16);
		hdr[2] = (uint8_t)(lengths[i] >> 8);
		hdr[3] = (uint8_t)lengths[i];
		assert_int_equal(write_all(fd, hdr, 4), 0);
		/* One bad-request answer, then the daemon hangs up: the stream is out of sync. */
		o = read_response(fd, 5000);
		assert_string_equal(error_of(o), "bad-request");
		assert_true(json_is_null(json_object_get(o, "id")));
		json_decref(o);
		assert_true(closed_by_peer(fd, 5000));
		close(fd);
		assert_hello_works();
	}
}

static void test_truncated_frame(void **state)
{
	int fd = connect_socket();

	(void)state;
	assert_true(fd >= 0);
	/* Says 100 bytes, sends 10, then closes: no answer, no harm. */
	assert_int_equal(write_all(fd, "\0\0\0\x64{\"id\":1,\"op", 14), 0);
	shutdown(fd, SHUT_WR);
	assert_true(closed_by_peer(fd, 5000));
	close(fd);
	assert_hello_works();
}

static void test_bad_requests_keep_connection(void **state)
{
	static const struct {
		const char *body;
		const char *error;
	} cases[] = {
		{ "{\"id\":2,\"op\":\"hello\xc3\x28\"}", "bad-request" },      /* invalid UTF-8 */
		{ "{\"id\":3,\"op\":\"hello\",\"op\":\"sign\"}", "bad-request" },  /* duplicate key */
		{ "{\"id\":4,\"op\":\"key.public\",\"key\":5}", "bad-request" },   /* wrong type */
		{ "{\"id\":5,\"op\":\"explode\"}", "unsupported" },             /* unknown op */
		{ "{\"op\":\"hello\"}", "bad-request" },                        /* no id */
		{ "{\"id\":6,\"op\":\"hello\",\"surprise\":1}", "bad-request" }, /* unknown field */
		{ "not json at all", "bad-request" },
		{ "{\"id\":7,\"op\":\"hello\",\"x\":\"a\\u0000b\"}", "bad-request" },
		/* A forged log line in an op name must stay inside its own line. */
		{ "{\"id\":9,\"op\":\"x\\nkeysvcd[err]: forged\"}", "unsupported" },
	};
	int fd = connect_socket();
	json_t *o;
	char *deep;
	size_t depth = 10000;

	(void)state;
	assert_true(fd >= 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		o = request(fd, cases[i].body);
		if (o == NULL || strcmp(error_of(o), cases[i].error) != 0)
			fail_msg("case %zu: expected %s, got %s", i, cases[i].error, error_of(o));
		json_decref(o);
	}
	/* Deep nesting inside an object. */
	deep = malloc(2 * depth + 64);
	assert_non_null(deep);
	{
		size_t n = (size_t)sprintf(deep, "{\"id\":8,\"op\":\"hello\",\"versions\":");

		memset(deep + n, '[', depth);
		memset(deep + n + depth, ']', depth);
		strcpy(deep + n + 2 * depth, "}");
	}
	o = request(fd, deep);
	assert_string_equal(error_of(o), "bad-request");
	json_decref(o);
	free(deep);
	/* The same connection still serves. */
	o = request(fd, "{\"id\":\"again\",\"op\":\"hello\"}");
	assert_true(is_ok(o));
	assert_string_equal(json_string_value(json_object_get(o, "id")), "again");
	json_decref(o);
	close(fd);
}

struct client_result {
	int ok;
};

static void *client_main(void *arg)
{
	struct client_result *res = arg;
	int fd = connect_socket();
	json_t *a, *b;

	res->ok = 0;
	if (fd < 0)
		return NULL;
	a = request(fd, "{\"id\":1,\"op\":\"hello\"}");
	b = request(fd, "{\"id\":2,\"op\":\"sign\",\"key\":\"wire-ec\",\"alg\":\"ecdsa-sha256\","
		    "\"digest\":\"n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=\"}");
	res->ok = is_ok(a) && is_ok(b);
	json_decref(a);
	json_decref(b);
	close(fd);
	return NULL;
}

static void test_many_clients(void **state)
{
	static pthread_t threads[CLIENTS];
	static struct client_result results[CLIENTS];
	pthread_attr_t attr;
	int fd = connect_socket(), failures = 0;
	json_t *o;

	(void)state;
	assert_true(fd >= 0);
	o = request(fd, "{\"id\":1,\"op\":\"key.generate\",\"key\":\"wire-ec\",\"type\":\"ec-p256\",\"purposes\":[\"csr\",\"sign\"]}");
	assert_true(is_ok(o) || strcmp(error_of(o), "exists") == 0);
	json_decref(o);
	close(fd);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 128 * 1024);
	for (int i = 0; i < CLIENTS; i++)
		assert_int_equal(pthread_create(&threads[i], &attr, client_main, &results[i]), 0);
	for (int i = 0; i < CLIENTS; i++) {
		pthread_join(threads[i], NULL);
		failures += !results[i].ok;
	}
	pthread_attr_destroy(&attr);
	assert_int_equal(failures, 0);
}

static void test_stalled_client(void **state)
{
	int stalled = connect_socket(), fd;
	int64_t start;
	json_t *o;

	(void)state;
	assert_true(stalled >= 0);
	assert_int_equal(write_all(stalled, "\0\0", 2), 0);
	/* Others are served at once while it stalls... */
	start = now_ms();
	fd = connect_socket();
	o = request(fd, "{\"id\":1,\"op\":\"hello\"}");
	assert_true(is_ok(o));
	assert_true(now_ms() - start < 2000);
	json_decref(o);
	close(fd);
	/* ...and it is dropped after client_timeout_ms (1 s here, 4 s for a whole frame). */
	assert_true(closed_by_peer(stalled, 8000));
	close(stalled);
}

static char *slurp(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *buf;
	long n;

	if (fp == NULL)
		return strdup("");
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	rewind(fp);
	buf = calloc(1, (size_t)n + 1);
	if (buf != NULL && fread(buf, 1, (size_t)n, fp) != (size_t)n)
		buf[0] = '\0';
	fclose(fp);
	return buf;
}

static void test_audit_lines(void **state)
{
	char *audit = slurp(audit_path), *line, *save = NULL;
	int lines = 0;

	(void)state;
	assert_non_null(audit);
	for (line = strtok_r(audit, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, NULL);

		assert_non_null(o);
		assert_true(json_is_string(json_object_get(o, "time")));
		assert_true(json_is_integer(json_object_get(o, "uid")));
		assert_true(json_is_integer(json_object_get(o, "gid")));
		assert_true(json_is_integer(json_object_get(o, "pid")));
		assert_non_null(json_object_get(o, "op"));
		/* An intent record has no outcome yet: the next record for its seq has it. */
		assert_true(json_is_string(json_object_get(o, "outcome")) ||
			    json_is_string(json_object_get(o, "phase")));
		json_decref(o);
		lines++;
	}
	/* At least one line per request made so far. */
	assert_true(lines >= 2 * CLIENTS);
	free(audit);
}

static void test_pin_never_logged(void **state)
{
	char *log = slurp(log_path), *audit = slurp(audit_path);

	(void)state;
	assert_true(tt.pin_len >= 16);
	assert_null(strstr(log, tt.pin));
	assert_null(strstr(audit, tt.pin));
	/* The debug log did record requests, so the check had something to look at. */
	assert_non_null(strstr(log, "sign"));
	assert_non_null(strstr(log, "forged"));
	assert_null(strstr(log, "\nkeysvcd[err]: forged"));
	free(log);
	free(audit);
}

static void test_sigterm_and_restart(void **state)
{
	struct stat st;

	(void)state;
	assert_int_equal(stop_daemon(), 0);
	assert_int_equal(stat(sock_path, &st), -1);
	/* A socket left behind by a killed daemon is replaced. */
	assert_int_equal(start_daemon(), 0);
	kill(daemon_pid, SIGKILL);
	waitpid(daemon_pid, NULL, 0);
	daemon_pid = -1;
	assert_int_equal(stat(sock_path, &st), 0);
	assert_int_equal(start_daemon(), 0);
	assert_hello_works();
	/* A second daemon on a live socket refuses to start. */
	assert_int_not_equal(run_daemon_once(), 0);
	assert_hello_works();
	/* A file that is not a socket is never replaced. */
	assert_int_equal(stop_daemon(), 0);
	{
		FILE *fp = fopen(sock_path, "w");

		assert_non_null(fp);
		fclose(fp);
	}
	assert_int_not_equal(run_daemon_once(), 0);
	assert_int_equal(stat(sock_path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	unlink(sock_path);
	assert_int_equal(start_daemon(), 0);
}

static void test_sighup_reload(void **state)
{
	int fd;
	json_t *o;

	(void)state;
	/* The new policy grants uid 0 nothing but key.public on "other-*". */
	{
		FILE *fp = fopen(conf_path, "w");

		assert_non_null(fp);
		fprintf(fp,
			"{\"module\": \"%s\", \"token\": {\"label\": \"%s\"}, \"pin_file\": \"%s\", \"state_dir\": \"%s\",\n"
			" \"socket\": \"%s\", \"audit_log\": \"%s\", \"log_level\": \"debug\",\n"
			" \"policy\": [{\"uid\": 0, \"keys\": [\"other-*\"], \"ops\": [\"key.public\"]}]}\n",
			tt.module, tt.label, tt.pin_file, state_path, sock_path, audit_path);
		assert_int_equal(fclose(fp), 0);
	}
	kill(daemon_pid, SIGHUP);
	for (int i = 0; i < 100; i++) {
		fd = connect_socket();
		o = request(fd, "{\"id\":1,\"op\":\"key.public\",\"key\":\"wire-ec\"}");
		close(fd);
		if (o != NULL && strcmp(error_of(o), "denied") == 0) {
			json_decref(o);
			break;
		}
		json_decref(o);
		assert_true(i < 99);
		usleep(50 * 1000);
	}
	/* A broken file on SIGHUP keeps the policy in force. */
	{
		FILE *fp = fopen(conf_path, "w");

		assert_non_null(fp);
		fputs("{ this is not json", fp);
		assert_int_equal(fclose(fp), 0);
	}
	kill(daemon_pid, SIGHUP);
	usleep(300 * 1000);
	fd = connect_socket();
	o = request(fd, "{\"id\":1,\"op\":\"key.public\",\"key\":\"wire-ec\"}");
	assert_string_equal(error_of(o), "denied");
	json_decref(o);
	close(fd);
	write_config(NULL);
}

static void test_refuses_bad_pin_file(void **state)
{
	(void)state;
	assert_int_equal(stop_daemon(), 0);
	assert_int_equal(chmod(tt.pin_file, 0644), 0);
	assert_int_equal(run_daemon_once(), 4);
	assert_int_equal(chmod(tt.pin_file, 0600), 0);
	/* A configuration others may write is refused before anything else. */
	assert_int_equal(chmod(conf_path, 0666), 0);
	assert_int_equal(run_daemon_once(), 3);
	assert_int_equal(chmod(conf_path, 0644), 0);
	assert_int_equal(start_daemon(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_frames_close),
		cmocka_unit_test(test_truncated_frame),
		cmocka_unit_test(test_bad_requests_keep_connection),
		cmocka_unit_test(test_many_clients),
		cmocka_unit_test(test_stalled_client),
		cmocka_unit_test(test_audit_lines),
		cmocka_unit_test(test_pin_never_logged),
		cmocka_unit_test(test_sighup_reload),
		cmocka_unit_test(test_sigterm_and_restart),
		cmocka_unit_test(test_refuses_bad_pin_file),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
