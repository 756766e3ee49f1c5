/*
 * The token layer's session pool (pkcs11/session.c) on tests/faultp11 in
 * front of SoftHSM, whose KS_FAULTP11_STATS file counts the sessions the
 * token actually has: the pool grows under parallel load beyond the
 * sessions it keeps, never beyond the token's limit (reported in
 * CK_TOKEN_INFO, or learned from CKR_SESSION_COUNT) or max_sessions, and
 * closes the sessions beyond its floor once they are idle. And faultp11's
 * bound on parallel signatures holds, and its KS_FAULTP11_TIMES counts.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "pkcs11/token.h"
#include "tests/common/softhsm.h"

#define THREADS 16
#define SIGNS_PER_THREAD 4
/* Long enough per signature that the threads' signatures overlap even on a loaded machine. */
#define SIGN_DELAY_US "30000"

static struct ks_test_token tt;
static struct ks_token *tok;
static char stats[PATH_MAX + 32];
static uint8_t digest[32];

struct pool_stats {
	long open, peak, opened, refused;
};

static void read_stats(struct pool_stats *ps)
{
	FILE *f = fopen(stats, "r");

	assert_non_null(f);
	assert_int_equal(fscanf(f, "open %ld peak %ld opened %ld refused %ld", &ps->open, &ps->peak,
				&ps->opened, &ps->refused), 4);
	fclose(f);
}

static void open_token(unsigned sessions, unsigned max_sessions, unsigned idle_ms)
{
	struct ks_token_config cfg;

	ks_test_token_config(&tt, &cfg);
	cfg.module_path = getenv("KS_FAULTP11");
	cfg.sessions = sessions;
	cfg.max_sessions = max_sessions;
	cfg.session_idle_ms = idle_ms;
	cfg.session_wait_ms = 20000;
	assert_int_equal(ks_token_open(&cfg, &tok), 0);
}

static void close_token(void)
{
	assert_int_equal(ks_token_close(tok), 0);
	tok = NULL;
}

static int sign_once(void)
{
	uint8_t *sig = NULL;
	size_t sig_len = 0;
	int r = ks_token_sign_digest(tok, "pool-key", KS_SIG_ECDSA_SHA256, digest, sizeof(digest),
				     &sig, &sig_len);

	free(sig);
	return r;
}

static pthread_barrier_t start;

static void *signer(void *arg)
{
	int *failed = arg;

	pthread_barrier_wait(&start);
	for (int i = 0; i < SIGNS_PER_THREAD; i++)
		if (sign_once() != 0)
			(*failed)++;
	return NULL;
}

/* THREADS threads sign at once, SIGNS_PER_THREAD times each; every signature must work. */
static void burst(void)
{
	pthread_t th[THREADS];
	int failed[THREADS] = { 0 };

	assert_int_equal(pthread_barrier_init(&start, NULL, THREADS), 0);
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, signer, &failed[i]), 0);
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(failed[i], 0);
	}
	pthread_barrier_destroy(&start);
}

static int setup(void **state)
{
	(void)state;
	if (getenv("KS_FAULTP11") == NULL) {
		fprintf(stderr, "KS_FAULTP11 is not set\n");
		return -1;
	}
	if (ks_test_token_setup(&tt, "pool") != 0)
		return -1;
	snprintf(stats, sizeof(stats), "%s/session-stats", tt.dir);
	setenv("KS_FAULTP11_TARGET", tt.module, 1);
	setenv("KS_FAULTP11_STATS", stats, 1);
	EVP_Digest("pool", 4, digest, NULL, EVP_sha256(), NULL);
	open_token(1, 1, 0);
	if (ks_token_generate(tok, "pool-key", KS_KEY_EC_P256, NULL) != 0)
		return -1;
	close_token();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (tok != NULL)
		ks_token_close(tok);
	ks_test_token_teardown(&tt);
	return 0;
}

/* Each test sets the slow token up afresh (read at C_Initialize, so before opening). */
static int slow_token(void **state)
{
	(void)state;
	setenv("KS_FAULTP11_SIGN_DELAY_US", SIGN_DELAY_US, 1);
	unsetenv("KS_FAULTP11_PARALLEL");
	unsetenv("KS_FAULTP11_MAX_SESSIONS");
	return 0;
}

static int close_after(void **state)
{
	(void)state;
	if (tok != NULL)
		close_token();
	return 0;
}

/* 2 sessions kept, 16 signers at once: the pool grows to serve them in parallel. */
static void test_grows_under_parallel_load(void **state)
{
	struct pool_stats ps;

	(void)state;
	open_token(2, 32, 60000);
	read_stats(&ps);
	assert_int_equal(ps.open, 2);
	burst();
	read_stats(&ps);
	/* One session per signer at most; near that many, since their signatures overlap. */
	assert_true(ps.peak >= THREADS * 3 / 4);
	assert_true(ps.peak <= THREADS);
	assert_int_equal(ps.refused, 0);
}

/* max_sessions caps the growth, and the signers beyond it wait their turn. */
static void test_max_sessions_caps(void **state)
{
	struct pool_stats ps;

	(void)state;
	open_token(1, 5, 60000);
	burst();
	read_stats(&ps);
	assert_int_equal(ps.peak, 5);
}

/*
 * A token that reports 4 sessions in CK_TOKEN_INFO: the pool keeps at most
 * that many, even its floor (8), and never asks for a fifth.
 */
static void test_reported_token_limit(void **state)
{
	struct pool_stats ps;

	(void)state;
	setenv("KS_FAULTP11_MAX_SESSIONS", "4", 1);
	open_token(8, 32, 60000);
	read_stats(&ps);
	assert_int_equal(ps.open, 4);
	burst();
	read_stats(&ps);
	assert_int_equal(ps.peak, 4);
	assert_int_equal(ps.refused, 0);
}

/*
 * A token that does not say (CK_UNAVAILABLE_INFORMATION) and answers
 * CKR_SESSION_COUNT beyond 4: every signature still works, the pool stops
 * at 4, and a later burst does not ask again while the limit is held.
 */
static void test_session_count_learned(void **state)
{
	struct pool_stats ps, again;
	struct ks_token_info info;

	(void)state;
	setenv("KS_FAULTP11_MAX_SESSIONS", "4,unreported", 1);
	open_token(2, 32, 60000);
	burst();
	read_stats(&ps);
	assert_int_equal(ps.peak, 4);
	assert_true(ps.refused >= 1);
	burst();
	read_stats(&again);
	assert_int_equal(again.peak, 4);
	assert_int_equal(again.refused, ps.refused);
	/* The refusal is the pool's business, not a token fault. */
	assert_int_equal(ks_token_get_info(tok, &info), 0);
	assert_int_equal(info.health, KS_HEALTH_OK);
}

/* Once the burst is over, the sessions beyond the floor are closed; signing goes on. */
static void test_shrinks_when_idle(void **state)
{
	struct pool_stats ps;

	(void)state;
	open_token(2, 32, 200);
	burst();
	read_stats(&ps);
	assert_true(ps.open > 2);
	/* Idle 200 ms, looked at every 100 ms. */
	for (int i = 0; i < 50 && ps.open > 2; i++) {
		usleep(100 * 1000);
		read_stats(&ps);
	}
	assert_int_equal(ps.open, 2);
	assert_int_equal(sign_once(), 0);
	read_stats(&ps);
	assert_int_equal(ps.open, 2);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * faultp11's bound on parallel signatures, which hsm-latency relies on:
 * 16 signers x 4 signatures of 30 ms, at most 4 at once, cannot take less
 * than 64 / 4 x 30 ms = 480 ms (unbounded, about 120 ms).
 */
static void test_faultp11_parallel_bound(void **state)
{
	int64_t t0;

	(void)state;
	setenv("KS_FAULTP11_PARALLEL", "4", 1);
	open_token(2, 32, 60000);
	t0 = now_ms();
	burst();
	assert_true(now_ms() - t0 >= THREADS * SIGNS_PER_THREAD / 4 * 30);
}

/* The sum of one line ("signinit", "sign", "turn") of faultp11's KS_FAULTP11_TIMES; *@last: its last bucket. */
static unsigned long times_line(const char *path, const char *kind, unsigned long *last)
{
	char name[16];
	unsigned long v, sum = 0;
	FILE *f = fopen(path, "r");

	assert_non_null(f);
	while (fscanf(f, "%15s", name) == 1) {
		int mine = strcmp(name, kind) == 0;

		for (int i = 0; i < 200; i++) {
			assert_int_equal(fscanf(f, "%lu", &v), 1);
			if (mine) {
				sum += v;
				*last = v;
			}
		}
	}
	fclose(f);
	return sum;
}

/*
 * faultp11's KS_FAULTP11_TIMES counts every C_SignInit and slow C_Sign; the
 * 30 ms delay is in neither, and the waits for one of 4 slots among 16
 * signers are counted apart, some of them a whole delay long.
 */
static void test_faultp11_times(void **state)
{
	char path[PATH_MAX + 32];
	unsigned long last = 0;
	struct timespec pause = { 0, 30 * 1000 * 1000 };

	(void)state;
	snprintf(path, sizeof(path), "%s/times", tt.dir);
	setenv("KS_FAULTP11_TIMES", path, 1);
	setenv("KS_FAULTP11_PARALLEL", "4", 1);
	open_token(2, 32, 60000);
	burst();
	/* The file is rewritten at most every 20 ms: one more signature after that writes all. */
	nanosleep(&pause, NULL);
	assert_int_equal(sign_once(), 0);
	assert_int_equal(times_line(path, "signinit", &last), THREADS * SIGNS_PER_THREAD + 1);
	assert_int_equal(times_line(path, "sign", &last), THREADS * SIGNS_PER_THREAD + 1);
	assert_int_equal(last, 0);
	assert_int_equal(times_line(path, "turn", &last), THREADS * SIGNS_PER_THREAD + 1);
	assert_true(last > 0);
	unsetenv("KS_FAULTP11_TIMES");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_grows_under_parallel_load, slow_token, close_after),
		cmocka_unit_test_setup_teardown(test_max_sessions_caps, slow_token, close_after),
		cmocka_unit_test_setup_teardown(test_reported_token_limit, slow_token, close_after),
		cmocka_unit_test_setup_teardown(test_session_count_learned, slow_token, close_after),
		cmocka_unit_test_setup_teardown(test_shrinks_when_idle, slow_token, close_after),
		cmocka_unit_test_setup_teardown(test_faultp11_parallel_bound, slow_token, close_after),
		cmocka_unit_test_setup_teardown(test_faultp11_times, slow_token, close_after),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
