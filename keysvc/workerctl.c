#include "keysvc/workerctl.h"

void ks_wctl_init(struct ks_wctl *c, unsigned floor, unsigned cap)
{
	*c = (struct ks_wctl){ 0 };
	c->floor = floor > 0 ? floor : 1;
	c->cap = cap > c->floor ? cap : c->floor;
	c->limit = c->floor;
	c->fit = c->cap;
}

static unsigned clamp(const struct ks_wctl *c, unsigned long long n)
{
	return n < c->floor ? c->floor : n > c->cap ? c->cap : (unsigned)n;
}

/* Signatures per second in @w; 0 when its length is unknown. */
static uint64_t window_rate(const struct ks_wctl_window *w)
{
	return w->window_ns == 0 ? 0 : w->signs * 1000000000ull / w->window_ns;
}

/* Starts a probe of one window at @limit, from the current limit and window @w. */
static void start_probe(struct ks_wctl *c, const struct ks_wctl_window *w, uint64_t avg,
			unsigned limit)
{
	c->probe_from = c->limit;
	c->probe_ref_ns = avg;
	c->probe_ref_rate = window_rate(w);
	c->limit = limit;
	c->windows = 0;
}

/* The window after a probe: was the latency before it the token's, or a queue's? */
static void end_probe(struct ks_wctl *c, const struct ks_wctl_window *w, uint64_t avg)
{
	unsigned from = c->probe_from;
	/* In a queue latency falls with the workers (Little's law); unqueued it stays. */
	uint64_t queued = c->probe_ref_ns * c->limit / from, rate = window_rate(w);
	int fell = avg <= (c->probe_ref_ns + queued) / 2;
	/* ... and a queue, unlike a token with room left, signs as much with fewer. */
	int signed_as_much = rate == 0 || c->probe_ref_rate == 0 ||
			     rate * 100 >= c->probe_ref_rate * KS_WCTL_PROBE_KEEP_PCT;

	c->probe_from = 0;
	c->windows = 0;
	if (fell && signed_as_much) {
		/* The token was queueing: the lower limit is better. */
		if (avg < c->base_ns)
			c->base_ns = avg;
		c->fit = c->limit;
		return;
	}
	/*
	 * Quicker but fewer signatures: fewer workers took load off the host's
	 * CPUs, the token had room. The limit stays, not probed again at once
	 * for the same latency; the unqueued latency is kept, so the limit
	 * does not grow on it either (more workers would only queue).
	 */
	if (fell)
		c->hold = KS_WCTL_PROBE_WINDOWS;
	else
		c->base_ns = avg;
	c->limit = from;
}

unsigned ks_wctl_stalled(struct ks_wctl *c)
{
	/* A probe in progress would take the limit back down at its end. */
	c->probe_from = 0;
	c->limit = clamp(c, (unsigned long long)c->limit + c->floor);
	return c->limit;
}

unsigned ks_wctl_step(struct ks_wctl *c, const struct ks_wctl_window *w)
{
	uint64_t avg;

	if (w->signs < KS_WCTL_MIN_SIGNS) {
		if (c->probe_from != 0) {
			c->limit = c->probe_from;
			c->probe_from = 0;
		}
		return c->limit;
	}
	avg = w->sign_ns / w->signs;
	if (c->probe_from != 0) {
		end_probe(c, w, avg);
		return c->limit;
	}
	if (c->base_ns == 0 || avg < c->base_ns)
		c->base_ns = avg;
	if (avg * 100 > c->base_ns * KS_WCTL_QUEUED_PCT) {
		if (c->hold > 0) {
			c->hold--;
		} else if (c->limit > c->floor) {
			unsigned long long fit = (unsigned long long)c->limit * c->base_ns / avg + 1;

			/*
			 * A queue or a slower host? Only a queue gets quicker with
			 * fewer workers: the lower limit is tried for one window and
			 * kept only if the latency falls as a queue's would
			 * (end_probe()). A burst of other work on the host makes
			 * every signature slower without any queue; shrinking on it
			 * lost signatures during the burst and for seconds after.
			 */
			start_probe(c, w, avg, clamp(c, fit < c->limit ? fit : c->limit - 1));
			c->floor_slow = 0;
			return c->limit;
		} else if (++c->floor_slow >= KS_WCTL_FLOOR_RELEARN) {
			/* Nothing below the floor to compare with: the token is this slow now. */
			c->base_ns = avg;
			c->floor_slow = 0;
		}
	} else {
		c->floor_slow = 0;
		/* The hold is for the latency that was judged; a new one is judged afresh. */
		c->hold = 0;
		if (w->busy * 10 >= c->limit * 9.0 && c->limit < c->fit)
			c->limit = clamp(c, 2ull * c->limit < c->fit ? 2ull * c->limit : c->fit);
		else if (w->busy * 10 >= c->limit * 9.0)
			c->limit = clamp(c, c->limit + 1ull + c->limit / 16);
	}
	if (++c->windows >= KS_WCTL_PROBE_WINDOWS && c->limit > c->floor &&
	    w->busy * 10 >= c->limit * 9.0)
		start_probe(c, w, avg, clamp(c, c->limit * 3ull / 4));
	return c->limit;
}
