/*
 * keysvc/workerctl.[ch], the controller of keysvcd's worker count, fed
 * windows of simulated tokens (100 ms each, every worker always finding a
 * ready request while there are clients):
 *   - P parallel slots and a fixed latency, a FIFO queue beyond P;
 *   - CPU-bound: latency grows with the requests in progress beyond 2;
 *   - P slots on a loaded host: each signature takes longer the more are in
 *     progress (the host's CPUs busier), without any queue in the token;
 *   - a worker's time outside the token (the request read, dispatched and
 *     answered, waiting for a CPU), so that keeping P signatures in the
 *     token takes more than P workers;
 *   - a token that gets twice as slow in the middle.
 * It must keep the token's throughput (>= 0.9 of what it can do), keep
 * few workers beyond its parallelism, and never go below the floor or above
 * the cap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "keysvc/workerctl.h"

#define WINDOW_NS 100000000.0

struct sim {
	unsigned clients;       /* each always has its next request ready */
	unsigned slots;         /* signatures the token makes at once; 0: CPU-bound on 2 CPUs */
	double latency_ns;      /* one signature, unqueued */
	double load;            /* with slots: latency this much longer with all slots busy, no queue */
	double outside_ns;      /* with slots: each request's time in a worker outside the token */
	int load_cubic;         /* the load grows with the cube of the busy share: CPUs filling up */
	double noise;           /* each window's rate and latency off by up to this share, at random */
	uint32_t seed;
	/* results of the last window */
	double rate;            /* signatures per second */
};

/* One window with @limit workers. */
static struct ks_wctl_window sim_window(struct sim *s, unsigned limit)
{
	unsigned n = limit < s->clients ? limit : s->clients;
	struct ks_wctl_window w = { 0 };
	double avg, rate;

	if (s->slots == 0) {
		/* Two CPUs: beyond two, everyone waits for a CPU. */
		avg = s->latency_ns * (n > 2 ? n / 2.0 : 1.0);
		rate = n / (avg / 1e9);
	} else {
		/* The workers' share in the token, and the latency that share makes (a fixed point). */
		double in_token = n, busy_ns = s->latency_ns;

		for (int i = 0; i < 20; i++) {
			double want = n * busy_ns / (busy_ns + s->outside_ns);

			double share;

			in_token = want < s->slots ? want : s->slots;
			share = in_token / s->slots;
			busy_ns = s->latency_ns *
				  (1.0 + s->load * (s->load_cubic ? share * share * share : share));
		}
		if (n * busy_ns / (busy_ns + s->outside_ns) <= s->slots) {
			avg = busy_ns;
			rate = n / ((busy_ns + s->outside_ns) / 1e9);
		} else {
			/* The slots full: the rest wait in the token's FIFO. */
			rate = s->slots / (busy_ns / 1e9);
			avg = n / rate * 1e9 - s->outside_ns;
		}
	}
	if (s->noise > 0) {
		/* A fixed sequence (an LCG), so that every run sees the same windows. */
		s->seed = s->seed * 1664525u + 1013904223u;
		rate *= 1.0 + s->noise * ((double)(s->seed >> 8) / (1u << 23) - 1.0);
		s->seed = s->seed * 1664525u + 1013904223u;
		avg *= 1.0 + s->noise * ((double)(s->seed >> 8) / (1u << 23) - 1.0);
	}
	s->rate = rate;
	w.signs = (uint64_t)(rate * WINDOW_NS / 1e9);
	w.sign_ns = (uint64_t)(w.signs * avg);
	w.busy = n;
	w.window_ns = (uint64_t)WINDOW_NS;
	return w;
}

struct run {
	double mean_limit, mean_rate;
	unsigned min_limit, max_limit;
};

/* @windows windows, the last @measured of them measured. */
static void run(struct ks_wctl *c, struct sim *s, unsigned windows, unsigned measured,
		struct run *out)
{
	unsigned limit = c->limit;

	*out = (struct run){ .min_limit = ~0u };
	for (unsigned i = 0; i < windows; i++) {
		struct ks_wctl_window w = sim_window(s, limit);

		limit = ks_wctl_step(c, &w);
		assert_true(limit >= c->floor);
		assert_true(limit <= c->cap);
		if (i >= windows - measured) {
			out->mean_limit += (double)limit / measured;
			out->mean_rate += s->rate / measured;
			out->min_limit = limit < out->min_limit ? limit : out->min_limit;
			out->max_limit = limit > out->max_limit ? limit : out->max_limit;
		}
	}
}

static void report(const char *what, const struct run *r)
{
	printf("# %s: workers mean %.1f (%u..%u), %.0f signatures/s\n", what, r->mean_limit,
	       r->min_limit, r->max_limit, r->mean_rate);
}

/* A controller as keysvcd starts it (16..256) on @s: 300 windows, the last 200 measured. */
static void settle(struct ks_wctl *c, struct sim *s, const char *what, struct run *r)
{
	ks_wctl_init(c, 16, 256);
	run(c, s, 300, 200, r);
	report(what, r);
}

/* 256 clients in front of 64 slots of 5 ms: about 64 workers, the token kept full. */
static void test_fixed_token_many_clients(void **state)
{
	struct ks_wctl c;
	struct sim s = { .clients = 256, .slots = 64, .latency_ns = 5e6 };
	struct run r;

	(void)state;
	settle(&c, &s, "64 slots, 256 clients", &r);
	assert_true(r.mean_rate >= 0.9 * 64 / 5e-3);
	/* Not one worker per client: the requests beyond the token wait in their sockets. */
	assert_true(r.mean_limit >= 60 && r.mean_limit <= 96);
}

/* 64 clients, 64 slots: a worker per client (the floor of 16 would cap it at a quarter). */
static void test_fixed_token_matching_clients(void **state)
{
	struct ks_wctl c;
	struct sim s = { .clients = 64, .slots = 64, .latency_ns = 5e6 };
	struct run r;

	(void)state;
	settle(&c, &s, "64 slots, 64 clients", &r);
	assert_true(r.mean_rate >= 0.9 * 64 / 5e-3);
	assert_true(r.min_limit >= 48);
}

/*
 * 64 clients, 64 slots on a loaded host: a signature takes 1.6 times as
 * long with every slot busy as with one, with no queue anywhere. Fewer
 * workers would only lose signatures; the latency is the token's now.
 */
static void test_loaded_host_is_not_a_queue(void **state)
{
	struct ks_wctl c;
	struct sim s = { .clients = 64, .slots = 64, .latency_ns = 5e6, .load = 0.6 };
	struct run r;
	double all = 64 / (5e-3 * 1.6);

	(void)state;
	settle(&c, &s, "64 slots, 64 clients, loaded host", &r);
	/* Probes below the limit cost a window in 31 at 3/4 of it. */
	assert_true(r.mean_rate >= 0.97 * all);
	assert_true(r.min_limit >= 48);
}

/*
 * 256 clients, 64 slots on a host whose CPUs fill up as the token does
 * (a signature 1.4 times as long with every slot busy, most of that in
 * the last quarter), each request 1 ms in its worker outside the token:
 * hsm-latency's 256 clients on two CPUs. Fewer workers make every
 * signature quicker, as a queue's would, but the token then has free
 * slots and signs less: the limit must stay where the token is kept full,
 * not at what Little's law makes of the loaded latency.
 */
static void test_loaded_host_many_clients(void **state)
{
	struct ks_wctl c;
	struct sim s = { .clients = 256, .slots = 64, .latency_ns = 5e6, .load = 0.4,
			 .outside_ns = 1e6, .load_cubic = 1 };
	struct run r;
	double all = 64 / (5e-3 * 1.4);

	(void)state;
	settle(&c, &s, "64 slots, 256 clients, loaded host, 1 ms outside the token", &r);
	assert_true(r.mean_rate >= 0.95 * all);
	/* Near what keeps the token full (about 73), not a worker per client. */
	assert_true(r.mean_limit <= 96);
	/*
	 * The same with every window's rate and latency off by up to 5 %, as
	 * real ones are: a probe wrongly judged now and then must not ratchet
	 * the limit up window after window.
	 */
	s.noise = 0.05;
	s.seed = 1;
	settle(&c, &s, "the same, windows off by up to 5 %", &r);
	assert_true(r.mean_rate >= 0.93 * all);
	assert_true(r.mean_limit <= 96);
}

/*
 * 64 clients, 64 slots, and now and then other work on the host makes
 * every signature take 1.6 times as long for half a second (no queue: the
 * token is as parallel as before). Shrinking then would only lose signatures
 * during the burst and while growing back after it.
 */
static void test_host_bursts_are_not_a_queue(void **state)
{
	struct ks_wctl c;
	struct sim s = { .clients = 64, .slots = 64, .latency_ns = 5e6 };
	struct run r;
	double got = 0, all = 0;
	unsigned lowest = ~0u;

	(void)state;
	ks_wctl_init(&c, 16, 256);
	run(&c, &s, 100, 1, &r);
	for (unsigned i = 0; i < 400; i++) {
		s.latency_ns = i % 20 < 5 ? 8e6 : 5e6;
		run(&c, &s, 1, 1, &r);
		got += r.mean_rate;
		all += 64 / (s.latency_ns / 1e9);
		lowest = r.min_limit < lowest ? r.min_limit : lowest;
	}
	printf("# 64 slots, 64 clients, host bursts: workers at least %u, %.3f of the "
	       "signatures 64 workers make\n", lowest, got / all);
	assert_true(got >= 0.97 * all);
	assert_true(lowest >= 48);
}

/* Workers added for a stalled token stay, even when a probe was under way. */
static void test_stall_during_probe(void **state)
{
	struct ks_wctl c;
	struct ks_wctl_window calm = { .signs = 1000, .sign_ns = 1000 * 5000000ull, .busy = 64 };
	struct ks_wctl_window slow = { .signs = 500, .sign_ns = 500 * 10000000ull, .busy = 64 };
	struct ks_wctl_window quiet = { 0 };
	unsigned limit;

	(void)state;
	ks_wctl_init(&c, 16, 256);
	while (c.limit < 64)
		ks_wctl_step(&c, &calm);
	limit = ks_wctl_step(&c, &slow);
	assert_true(limit < 64);
	for (int i = 0; i < 4; i++)
		limit = ks_wctl_stalled(&c);
	assert_true(limit > 64);
	assert_int_equal(ks_wctl_step(&c, &quiet), limit);
}

/* Fewer clients than the floor: the floor, unchanged. */
static void test_few_clients_keep_floor(void **state)
{
	struct ks_wctl c;
	struct sim s = { .clients = 8, .slots = 64, .latency_ns = 5e6 };
	struct run r;

	(void)state;
	ks_wctl_init(&c, 16, 256);
	run(&c, &s, 200, 200, &r);
	report("64 slots, 8 clients", &r);
	assert_int_equal(r.min_limit, 16);
	assert_int_equal(r.max_limit, 16);
}

/* A CPU-bound token gains nothing from more workers: they stay near the floor. */
static void test_cpu_bound_token(void **state)
{
	struct ks_wctl c;
	struct sim s = { .clients = 256, .slots = 0, .latency_ns = 1e6 };
	struct run r;

	(void)state;
	settle(&c, &s, "CPU-bound, 256 clients", &r);
	assert_true(r.mean_limit <= 24);
	assert_true(r.max_limit <= 24);
}

/* A token that gets twice as slow is not mistaken for a queue: the workers stay. */
static void test_token_gets_slower(void **state)
{
	struct ks_wctl c;
	struct sim s = { .clients = 256, .slots = 64, .latency_ns = 5e6 };
	struct run r;

	(void)state;
	ks_wctl_init(&c, 16, 256);
	run(&c, &s, 200, 100, &r);
	s.latency_ns = 10e6;
	run(&c, &s, 400, 200, &r);
	report("64 slots of 10 ms after 5 ms, 256 clients", &r);
	assert_true(r.mean_rate >= 0.9 * 64 / 10e-3);
	assert_true(r.mean_limit >= 60 && r.mean_limit <= 96);
	/* And quicker again. */
	s.latency_ns = 2e6;
	run(&c, &s, 400, 200, &r);
	report("64 slots of 2 ms after 10 ms, 256 clients", &r);
	assert_true(r.mean_rate >= 0.9 * 64 / 2e-3);
	assert_true(r.mean_limit >= 60 && r.mean_limit <= 96);
}

/* Load that goes and comes back starts where it left off, not with a doubling past the token. */
static void test_load_comes_back(void **state)
{
	struct ks_wctl c;
	struct sim s = { .clients = 256, .slots = 64, .latency_ns = 5e6 };
	struct ks_wctl_window quiet = { 0 };
	struct run r;

	(void)state;
	ks_wctl_init(&c, 16, 256);
	run(&c, &s, 200, 100, &r);
	for (int i = 0; i < 50; i++)
		ks_wctl_step(&c, &quiet);
	run(&c, &s, 20, 20, &r);
	report("256 clients again after a pause", &r);
	assert_true(r.max_limit <= 96);
	assert_true(r.mean_rate >= 0.9 * 64 / 5e-3);
}

/* The cap holds; windows without signatures (idle, other requests) change nothing. */
static void test_cap_and_quiet_windows(void **state)
{
	struct ks_wctl c;
	struct sim s = { .clients = 256, .slots = 64, .latency_ns = 5e6 };
	struct ks_wctl_window quiet = { .signs = 3, .sign_ns = 3 * 900000000ull, .busy = 16 };
	struct run r;
	unsigned limit;

	(void)state;
	ks_wctl_init(&c, 16, 40);
	run(&c, &s, 100, 50, &r);
	assert_int_equal(r.max_limit, 40);
	limit = c.limit;
	for (int i = 0; i < 50; i++)
		assert_int_equal(ks_wctl_step(&c, &quiet), limit);
	/* A floor above the cap wins. */
	ks_wctl_init(&c, 16, 4);
	assert_int_equal(c.limit, 16);
	assert_int_equal(c.cap, 16);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixed_token_many_clients),
		cmocka_unit_test(test_fixed_token_matching_clients),
		cmocka_unit_test(test_loaded_host_is_not_a_queue),
		cmocka_unit_test(test_host_bursts_are_not_a_queue),
		cmocka_unit_test(test_loaded_host_many_clients),
		cmocka_unit_test(test_stall_during_probe),
		cmocka_unit_test(test_few_clients_keep_floor),
		cmocka_unit_test(test_cpu_bound_token),
		cmocka_unit_test(test_token_gets_slower),
		cmocka_unit_test(test_load_comes_back),
		cmocka_unit_test(test_cap_and_quiet_windows),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
