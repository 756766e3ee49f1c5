/*
 * What every benchmark measures with: a monotonic clock, medians, CPU
 * time of this process and of a server process, sleeping to a deadline.
 */
#ifndef KEYSVC_TESTS_BENCH_BENCHUTIL_H
#define KEYSVC_TESTS_BENCH_BENCHUTIL_H

#include <sys/types.h>

/* Seconds on CLOCK_MONOTONIC. */
double bench_now(void);

/* qsort() comparison of two doubles, ascending. */
int bench_cmp_double(const void *a, const void *b);

/* The median of @v (sorted in place), @n >= 1 values. */
double bench_median(double *v, int n);

/*
 * CPU seconds (user + system) used so far by this process (*@self) and by
 * process @pid (*@other, from /proc/PID/stat; 0 when @pid <= 0 or it cannot
 * be read).
 */
void bench_cpu_now(pid_t pid, double *self, double *other);

/* Sleep until bench_now() reaches @t (at most 100 ms per nap). */
void bench_sleep_until(double t);

/*
 * Parse @list, comma-separated counts each in 1..@max_value, into @out
 * (at most @max_n of them). The number parsed, or -1 when an entry is out
 * of range, there are more than @max_n, or there are none.
 */
int bench_parse_counts(const char *list, int *out, int max_n, int max_value);

#endif
