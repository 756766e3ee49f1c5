/*
 * keysvcd's event workers (keysvc/server.h): connections wait in one epoll
 * set and a few workers serve the requests that are complete, so
 *   - idle connections hold no thread (the daemon's thread count stays
 *     near its workers with 40 connections open) and are still closed
 *     after idle_timeout_ms, and SIGTERM still drains them at once;
 *   - peers slow to send (a partial frame) or never reading (answers
 *     piling up in their socket) are handed to threads of their own: more
 *     of them than there are workers do not delay another client's sign;
 *   - a client that sends two requests at once gets both answers, in order,
 *     also when the first is larger than the fast path's single peek.
 * keysvcd runs with `sessions` 2, so 2 workers unless the token's latency
 * makes the controller add some.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/common/daemon.h"

#define WORKERS 2
#define SLOW_PEERS 6            /* of each kind: together six times the workers */
#define IDLE_CONNS 40
#define HELLO "{\"id\":1,\"op\":\"hello\"}"
#define SIGN "{\"id\":7,\"op\":\"sign\",\"key\":\"ev\",\"alg\":\"ecdsa-sha256\"," \
	"\"digest\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}"

static void start(struct ks_td *d, unsigned idle_ms, unsigned frame_ms)
{
	char policy[256];
	json_error_t jerr;
	json_t *cfg, *resp;
	char *text;

	snprintf(policy, sizeof(policy), "[{\"uid\":%u,\"keys\":[\"*\"],\"ops\":[\"key.generate\","
		 "\"sign\"]}]", (unsigned)getuid());
	assert_int_equal(ks_td_init(d, "keysvc-events", policy, 0, 0), 0);
	d->idle_timeout_ms = idle_ms;
	d->frame_timeout_ms = frame_ms;
	d->max_clients = 200;
	d->max_clients_per_uid = 200;
	assert_int_equal(ks_td_write_config(d), 0);
	assert_non_null(cfg = json_load_file(d->config, 0, &jerr));
	json_object_set_new(cfg, "sessions", json_integer(WORKERS));
	assert_non_null(text = json_dumps(cfg, 0));
	assert_int_equal(ks_td_write_config_raw(d, text), 0);
	free(text);
	json_decref(cfg);
	assert_int_equal(ks_td_start(d), 0);
	resp = ks_td_request_once(d, "{\"id\":1,\"op\":\"key.generate\",\"key\":\"ev\","
				  "\"type\":\"ec-p256\",\"purposes\":[\"sign\"]}");
	assert_non_null(resp);
	assert_string_equal(ks_td_outcome(resp), "ok");
	json_decref(resp);
}

static void request_ok(int fd, const char *req, const char *what)
{
	json_t *resp = ks_td_request(fd, req);

	if (resp == NULL || strcmp(ks_td_outcome(resp), "ok") != 0)
		fail_msg("%s: no ok answer", what);
	json_decref(resp);
}

/*
 * @req as one frame in one write, as libkeysvc sends (the harness's
 * ks_td_request() writes header and body apart, which may reach the daemon
 * as a partial frame and go through a thread), and its answer ok.
 */
static void request_ok_whole(int fd, const char *req, const char *what)
{
	size_t len = strlen(req);
	uint8_t buf[512];
	json_t *resp;

	assert_true(len + 4 <= sizeof(buf));
	buf[0] = 0;
	buf[1] = 0;
	buf[2] = (uint8_t)(len >> 8);
	buf[3] = (uint8_t)len;
	memcpy(buf + 4, req, len);
	assert_int_equal(ks_td_send_raw(fd, buf, len + 4), 0);
	resp = ks_td_read_json(fd, 10000, NULL);
	if (resp == NULL || strcmp(ks_td_outcome(resp), "ok") != 0)
		fail_msg("%s: no ok answer", what);
	json_decref(resp);
}

/* The Threads: line of /proc/PID/status. */
static int thread_count(pid_t pid)
{
	char path[64], line[128];
	int n = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "Threads: %d", &n) == 1)
			break;
	fclose(f);
	return n;
}

/* 40 served, then idle connections: no thread each; closed when idle; SIGTERM drains them. */
static void test_idle_connections(void **state)
{
	struct ks_td *d = *state;
	int fds[IDLE_CONNS], before, during;
	int64_t t0, took;

	start(d, 1500, 5000);
	before = thread_count(d->pid);
	assert_true(before > 0);
	for (int i = 0; i < IDLE_CONNS; i++) {
		assert_true((fds[i] = ks_td_connect(d)) >= 0);
		request_ok_whole(fds[i], HELLO, "hello on an idle-to-be connection");
	}
	during = thread_count(d->pid);
	/* One thread per connection would be 40 more. */
	if (during > before + 4)
		fail_msg("%d connections made keysvcd go from %d to %d threads", IDLE_CONNS,
			 before, during);
	t0 = ks_td_now_ms();
	for (int i = 0; i < IDLE_CONNS; i++) {
		assert_int_equal(ks_td_wait_closed(fds[i], 5000), 0);
		close(fds[i]);
	}
	took = ks_td_now_ms() - t0;
	if (took < 1000 || took > 4000)
		fail_msg("idle connections closed after %lld ms (idle_timeout_ms 1500)", (long long)took);
	assert_int_equal(ks_td_wait_log(d, "idle for 1500 ms; closing", IDLE_CONNS, 2000), 0);

	/* Open and idle at SIGTERM: the daemon still ends at once and cleanly. */
	for (int i = 0; i < IDLE_CONNS; i++) {
		assert_true((fds[i] = ks_td_connect(d)) >= 0);
		request_ok(fds[i], HELLO, "hello before SIGTERM");
		/* One through a thread and back, one answered by a worker. */
		request_ok_whole(fds[i], HELLO, "second hello before SIGTERM");
	}
	t0 = ks_td_now_ms();
	assert_int_equal(ks_td_stop(d), 0);
	took = ks_td_now_ms() - t0;
	if (took > 2000)
		fail_msg("SIGTERM with %d idle connections took %lld ms", IDLE_CONNS, (long long)took);
	for (int i = 0; i < IDLE_CONNS; i++)
		close(fds[i]);
}

/*
 * Slow-loris peers (half a header, then nothing) and peers that send many
 * requests and never read: each is handed to a thread, and a sign on
 * another connection is answered at once, not after frame_timeout_ms.
 */
static void test_slow_peers_hold_no_worker(void **state)
{
	struct ks_td *d = *state;
	int loris[SLOW_PEERS], deaf[SLOW_PEERS], fd;
	uint8_t hdr[2] = { 0, 0 };
	uint8_t *burst;
	size_t one, n = 4000;
	int64_t t0, took;

	start(d, 30000, 6000);
	for (int i = 0; i < SLOW_PEERS; i++) {
		assert_true((loris[i] = ks_td_connect(d)) >= 0);
		assert_int_equal(ks_td_send_raw(loris[i], hdr, sizeof(hdr)), 0);
	}
	/* 4000 hellos at once, never read: the answers (~1 MB) fill the socket many times over. */
	one = 4 + strlen(HELLO);
	assert_non_null(burst = malloc(n * one));
	for (size_t i = 0; i < n; i++) {
		uint8_t *p = burst + i * one;

		p[0] = 0;
		p[1] = 0;
		p[2] = (uint8_t)(strlen(HELLO) >> 8);
		p[3] = (uint8_t)strlen(HELLO);
		memcpy(p + 4, HELLO, strlen(HELLO));
	}
	for (int i = 0; i < SLOW_PEERS; i++) {
		assert_true((deaf[i] = ks_td_connect(d)) >= 0);
		assert_int_equal(fcntl(deaf[i], F_SETFL, O_NONBLOCK), 0);
		/* As much as the socket takes; the rest is of no interest. */
		(void)!send(deaf[i], burst, n * one, MSG_NOSIGNAL);
	}
	free(burst);
	/* Let the daemon reach the point where every slow peer is stuck. */
	{
		struct timespec ts = { 0, 500 * 1000000L };

		nanosleep(&ts, NULL);
	}
	assert_true((fd = ks_td_connect(d)) >= 0);
	t0 = ks_td_now_ms();
	request_ok(fd, SIGN, "sign beside slow peers");
	request_ok(fd, HELLO, "hello beside slow peers");
	took = ks_td_now_ms() - t0;
	if (took > 2000)
		fail_msg("a sign beside %d slow peers took %lld ms (frame_timeout_ms 6000)",
			 2 * SLOW_PEERS, (long long)took);
	close(fd);
	/* Their threads still apply frame_timeout_ms to them. */
	for (int i = 0; i < SLOW_PEERS; i++) {
		assert_int_equal(ks_td_wait_closed(loris[i], 10000), 0);
		close(loris[i]);
	}
	assert_int_equal(ks_td_wait_log(d, "request frame not complete within 6000 ms",
					 SLOW_PEERS, 3000), 0);
	assert_int_equal(ks_td_wait_log(d, "response not read within 6000 ms", SLOW_PEERS, 10000), 0);
	for (int i = 0; i < SLOW_PEERS; i++)
		close(deaf[i]);
	assert_int_equal(ks_td_stop(d), 0);
}

/* Request @a (id 7) and @b (id 8) in one write, @rounds times: both answered ok, in order. */
static void two_in_one_write(int fd, const char *a, const char *b, int rounds)
{
	static uint8_t buf[16384];
	size_t la = strlen(a), lb = strlen(b);
	json_t *r1, *r2;

	assert_true(8 + la + lb <= sizeof(buf));
	for (int round = 0; round < rounds; round++) {
		buf[0] = 0;
		buf[1] = 0;
		buf[2] = (uint8_t)(la >> 8);
		buf[3] = (uint8_t)la;
		memcpy(buf + 4, a, la);
		buf[4 + la] = 0;
		buf[5 + la] = 0;
		buf[6 + la] = (uint8_t)(lb >> 8);
		buf[7 + la] = (uint8_t)lb;
		memcpy(buf + 8 + la, b, lb);
		assert_int_equal(ks_td_send_raw(fd, buf, 8 + la + lb), 0);
		assert_non_null(r1 = ks_td_read_json(fd, 5000, NULL));
		assert_non_null(r2 = ks_td_read_json(fd, 5000, NULL));
		assert_int_equal(json_integer_value(json_object_get(r1, "id")), 7);
		assert_string_equal(ks_td_outcome(r1), "ok");
		assert_int_equal(json_integer_value(json_object_get(r2, "id")), 8);
		assert_string_equal(ks_td_outcome(r2), "ok");
		json_decref(r1);
		json_decref(r2);
	}
}

/* Two requests in one write: two answers, in the order asked, on the same connection. */
static void test_pipelined_requests(void **state)
{
	struct ks_td *d = *state;
	int fd;

	start(d, 30000, 6000);
	assert_true((fd = ks_td_connect(d)) >= 0);
	two_in_one_write(fd, SIGN, "{\"id\":8,\"op\":\"hello\"}", 20);
	close(fd);
	assert_int_equal(ks_td_stop(d), 0);
}

/*
 * A request larger than one peek of the fast path (a sign of 6000 bytes of
 * data, in one write) with a hello right behind it: both answered, in
 * order, ten times over.
 */
static void test_large_frame_then_another(void **state)
{
	struct ks_td *d = *state;
	static char big[12000];
	int fd;

	/* 6000 zero bytes are 8000 'A's in base64. */
	snprintf(big, sizeof(big), "{\"id\":7,\"op\":\"sign\",\"key\":\"ev\","
		 "\"alg\":\"ecdsa-sha256\",\"data\":\"%0*d\"}", 8000, 0);
	for (char *p = strchr(big, '0'); p != NULL && *p == '0'; p++)
		*p = 'A';
	assert_true(strlen(big) > 8000);
	start(d, 30000, 6000);
	assert_true((fd = ks_td_connect(d)) >= 0);
	two_in_one_write(fd, big, "{\"id\":8,\"op\":\"hello\"}", 10);
	close(fd);
	assert_int_equal(ks_td_stop(d), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_idle_connections, ks_td_fixture_alloc,
						ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_slow_peers_hold_no_worker, ks_td_fixture_alloc,
						ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_large_frame_then_another, ks_td_fixture_alloc,
						ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_pipelined_requests, ks_td_fixture_alloc,
						ks_td_fixture_free),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
