/*
 * How many of keysvcd's event workers may serve requests at once: a pure
 * controller over windows of the token's sign latency, so that requests
 * beyond what the token signs in parallel wait in their sockets (costing
 * nothing) instead of in threads parked inside the token (a wake-up
 * each). No clock, no threads: keysvc/server.c feeds it one window per
 * tick and tests/unit/test_workerctl.c feeds it simulated tokens.
 */
#ifndef KEYSVC_WORKERCTL_H
#define KEYSVC_WORKERCTL_H

#include <stdint.h>

/* A window with fewer signatures says nothing about the token: no change. */
#define KS_WCTL_MIN_SIGNS 8
/* An average latency this many per cent of the unqueued one means queueing. */
#define KS_WCTL_QUEUED_PCT 125
/* Windows between probes below the limit (a probe is one window). */
#define KS_WCTL_PROBE_WINDOWS 30
/* Windows in a row at the floor, latency looking queued, before it is taken as the token's own. */
#define KS_WCTL_FLOOR_RELEARN 10
/* A lower limit is kept only if it signs at least this many per cent of what the window before did. */
#define KS_WCTL_PROBE_KEEP_PCT 95

struct ks_wctl {
	unsigned floor;        /* never fewer workers: the `sessions` setting */
	unsigned cap;          /* never more: max_sessions */
	unsigned limit;        /* workers allowed now */
	uint64_t base_ns;      /* the token's unqueued sign latency as last learned; 0 none yet */
	unsigned fit;          /* the limit queueing last brought it down to (cap: none yet) */
	unsigned windows;      /* busy windows since the last probe */
	unsigned probe_from;   /* nonzero: the last window was a probe below this limit */
	uint64_t probe_ref_ns; /* the average latency in the window before the probe */
	uint64_t probe_ref_rate; /* and its signatures per second; 0 unknown */
	unsigned floor_slow;   /* windows in a row at the floor with latency above the queued mark */
	unsigned hold;         /* queued-looking windows left that start no probe (after one that signed less) */
};

/* What the workers did in one window. */
struct ks_wctl_window {
	uint64_t signs;        /* signatures the token made */
	uint64_t sign_ns;      /* their summed latency (ks_token_sign_stats() differences) */
	double busy;           /* mean number of workers serving a request over the window */
	uint64_t window_ns;    /* how long the window was; 0 unknown */
};

/* Start at @floor (at least 1) workers, never above @cap (raised to @floor if lower). */
void ks_wctl_init(struct ks_wctl *c, unsigned floor, unsigned cap);

/*
 * Take one window and return the new limit, always within [floor, cap].
 * Grows while the average latency stays within KS_WCTL_QUEUED_PCT of the
 * unqueued one and the workers are saturated (busy >= 90 % of the limit):
 * doubling up to the limit queueing last brought it down to (the cap
 * before any), beyond that by one and a sixteenth per window.
 * When the average shows queueing it tries, for one window, what Little's
 * law says the token runs in parallel (limit * unqueued / average, plus
 * one), and keeps that only if the latency fell as a queue's would and the
 * signatures per second did not (at least KS_WCTL_PROBE_KEEP_PCT of the
 * window before): a queue signs as much with fewer workers. If the latency
 * stayed (a busier host, not a queue) the limit goes back and that latency
 * is taken as the unqueued one; if it fell but fewer signatures were made
 * (fewer workers only took load off the host's CPUs, the token was not
 * full) the limit goes back and stays: no probe for the next
 * KS_WCTL_PROBE_WINDOWS windows while the latency keeps looking queued,
 * and no growth while it does. Every
 * KS_WCTL_PROBE_WINDOWS busy windows it probes one window at 3/4 of the
 * limit (not below the floor), judged the same way (a latency that stayed
 * is relearned, so a token that got slower is not taken for a queue). A
 * window of fewer than KS_WCTL_MIN_SIGNS signatures (idle, or requests
 * other than sign) changes nothing but ends a probe.
 */
unsigned ks_wctl_step(struct ks_wctl *c, const struct ks_wctl_window *w);

/*
 * Every worker was busy for a whole tick and none finished a request (a
 * hung token, slow key generations): the limit grows by the floor, up to
 * the cap, so that requests that do not need the token (hello) are still
 * answered. Returns the new limit.
 */
unsigned ks_wctl_stalled(struct ks_wctl *c);

#endif
