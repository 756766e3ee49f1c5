#include "tests/bench/benchutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

double bench_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), bench_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void bench_cpu_now(pid_t pid, double *self, double *other)
{
	struct rusage ru;
	char path[64], buf[1024], *p;
	unsigned long ut = 0, st = 0;
	FILE *f;

	getrusage(RUSAGE_SELF, &ru);
	*self = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		(double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	*other = 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (pid <= 0 || (f = fopen(path, "r")) == NULL)
		return;
	/* Fields 14 and 15 (utime, stime), counted after the ")" closing the name. */
	if (fgets(buf, sizeof(buf), f) != NULL && (p = strrchr(buf, ')')) != NULL &&
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
		*other = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
	fclose(f);
}

void bench_sleep_until(double t)
{
	double left;

	while ((left = t - bench_now()) > 0)
		usleep(left > 0.1 ? 100000 : (useconds_t)(left * 1e6) + 1);
}

int bench_parse_counts(const char *list, int *out, int max_n, int max_value)
{
	char *copy = strdup(list), *save = NULL;
	int n = 0;

	if (copy == NULL)
		return -1;
	for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
		int v = atoi(t);

		if (v < 1 || v > max_value || n == max_n) {
			n = -1;
			break;
		}
		out[n++] = v;
	}
	free(copy);
	return n > 0 ? n : -1;
}
