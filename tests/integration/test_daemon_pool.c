/*
 * keysvcd's session pool as configured (sessions, max_sessions): keysvcd
 * runs on tests/faultp11 in front of the test's SoftHSM token, each
 * signature slowed down (KS_FAULTP11_SIGN_DELAY_US) so that concurrent
 * requests overlap, and faultp11 counts keysvcd's sessions
 * (KS_FAULTP11_STATS). The pool serves concurrent clients with a session
 * each up to max_sessions, by default further than the 16 it keeps.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/common/daemon.h"

#define CLIENTS 24
/*
 * Enough for keysvcd's workers (keysvc/workerctl.h) to grow from the floor
 * of 16 while a burst lasts: they follow the token's latency in windows of
 * 100 ms or more, and with 3 signatures each 24 clients were done in
 * under 200 ms.
 */
#define SIGNS 10
#define SIGN "{\"id\":2,\"op\":\"sign\",\"key\":\"pk\",\"alg\":\"ecdsa-sha256\"," \
	"\"digest\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}"

struct pool_stats {
	long open, peak, opened, refused;
};

static char stats[PATH_MAX + 32];

static void read_stats(struct pool_stats *ps)
{
	FILE *f = fopen(stats, "r");

	assert_non_null(f);
	assert_int_equal(fscanf(f, "open %ld peak %ld opened %ld refused %ld", &ps->open, &ps->peak,
				&ps->opened, &ps->refused), 4);
	fclose(f);
}

/* keysvcd on the slow shim with @sessions and @max_sessions (0: not in the file), a key made. */
static void start(struct ks_td *d, unsigned sessions, unsigned max_sessions)
{
	const char *shim = getenv("KS_FAULTP11");
	char policy[256];
	json_error_t jerr;
	json_t *cfg, *resp;
	char *text;

	if (shim == NULL)
		fail_msg("KS_FAULTP11 is not set");
	snprintf(policy, sizeof(policy), "[{\"uid\":%u,\"keys\":[\"*\"],\"ops\":[\"key.generate\",\"sign\"]}]",
		 (unsigned)getuid());
	assert_int_equal(ks_td_init(d, "keysvc-dpool", policy, 0, 0), 0);
	snprintf(stats, sizeof(stats), "%s/session-stats", d->dir);
	/* keysvcd inherits these. */
	setenv("KS_FAULTP11_TARGET", d->token.module, 1);
	setenv("KS_FAULTP11_STATS", stats, 1);
	setenv("KS_FAULTP11_SIGN_DELAY_US", "40000", 1);
	snprintf(d->module, sizeof(d->module), "%s", shim);
	d->max_clients_per_uid = 1000;
	assert_int_equal(ks_td_write_config(d), 0);
	assert_non_null(cfg = json_load_file(d->config, 0, &jerr));
	json_object_set_new(cfg, "sessions", json_integer(sessions));
	if (max_sessions != 0)
		json_object_set_new(cfg, "max_sessions", json_integer(max_sessions));
	assert_non_null(text = json_dumps(cfg, 0));
	assert_int_equal(ks_td_write_config_raw(d, text), 0);
	free(text);
	json_decref(cfg);
	assert_int_equal(ks_td_start(d), 0);
	resp = ks_td_request_once(d, "{\"id\":1,\"op\":\"key.generate\",\"key\":\"pk\",\"type\":\"ec-p256\","
				  "\"purposes\":[\"sign\"]}");
	assert_non_null(resp);
	assert_string_equal(ks_td_outcome(resp), "ok");
	json_decref(resp);
}

struct client {
	struct ks_td *d;
	pthread_t th;
	int fd;
	int failed;
};

static pthread_barrier_t go;

static void *client_main(void *arg)
{
	struct client *c = arg;

	pthread_barrier_wait(&go);
	for (int i = 0; i < SIGNS; i++) {
		json_t *resp = ks_td_request(c->fd, SIGN);

		if (resp == NULL || strcmp(ks_td_outcome(resp), "ok") != 0)
			c->failed++;
		json_decref(resp);
	}
	return NULL;
}

/* CLIENTS connections sign at once, SIGNS times each; every signature must work. */
static void burst(struct ks_td *d)
{
	static struct client cl[CLIENTS];

	assert_int_equal(pthread_barrier_init(&go, NULL, CLIENTS), 0);
	for (int i = 0; i < CLIENTS; i++) {
		cl[i].d = d;
		cl[i].failed = 0;
		assert_true((cl[i].fd = ks_td_connect(d)) >= 0);
		assert_int_equal(pthread_create(&cl[i].th, NULL, client_main, &cl[i]), 0);
	}
	for (int i = 0; i < CLIENTS; i++) {
		pthread_join(cl[i].th, NULL);
		close(cl[i].fd);
		assert_int_equal(cl[i].failed, 0);
	}
	pthread_barrier_destroy(&go);
}

/* max_sessions 6: the pool of 2 grows to 6 for 24 clients, and no further. */
static void test_max_sessions_caps(void **state)
{
	struct ks_td *d = *state;
	struct pool_stats ps;

	start(d, 2, 6);
	read_stats(&ps);
	assert_int_equal(ps.open, 2);
	burst(d);
	read_stats(&ps);
	assert_int_equal(ps.peak, 6);
}

/* By default the pool grows past the 16 it keeps, to about one session per client. */
static void test_default_grows_past_sessions(void **state)
{
	struct ks_td *d = *state;
	struct pool_stats ps;

	start(d, 16, 0);
	read_stats(&ps);
	assert_int_equal(ps.open, 16);
	burst(d);
	read_stats(&ps);
	assert_true(ps.peak > 16);
	assert_true(ps.peak <= CLIENTS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_max_sessions_caps, ks_td_fixture_alloc,
						ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_default_grows_past_sessions, ks_td_fixture_alloc,
						ks_td_fixture_free),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
