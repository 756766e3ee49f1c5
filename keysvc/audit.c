#include "keysvc/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "proto/log.h"

struct ks_audit {
	pthread_mutex_t lock;
	char *path;
	int fd;
	int warned;
};

static int open_log(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
}

int ks_audit_open(const char *path, struct ks_audit **out)
{
	struct ks_audit *a;

	if ((a = calloc(1, sizeof(*a))) == NULL)
		return -ENOMEM;
	pthread_mutex_init(&a->lock, NULL);
	a->fd = STDERR_FILENO;
	if (path != NULL) {
		if ((a->path = strdup(path)) == NULL) {
			free(a);
			return -ENOMEM;
		}
		if ((a->fd = open_log(path)) < 0) {
			int r = -errno;

			free(a->path);
			free(a);
			return r;
		}
	}
	*out = a;
	return 0;
}

int ks_audit_reopen(struct ks_audit *a)
{
	int fd;

	if (a == NULL || a->path == NULL)
		return 0;
	if ((fd = open_log(a->path)) < 0)
		return -errno;
	pthread_mutex_lock(&a->lock);
	close(a->fd);
	a->fd = fd;
	a->warned = 0;
	pthread_mutex_unlock(&a->lock);
	return 0;
}

void ks_audit_close(struct ks_audit *a)
{
	if (a == NULL)
		return;
	if (a->path != NULL)
		close(a->fd);
	pthread_mutex_destroy(&a->lock);
	free(a->path);
	free(a);
}

void ks_audit_log(struct ks_audit *a, const struct ks_peer *peer,
		  const char *op, const char *key, const char *outcome)
{
	char when[64];
	struct timespec ts;
	struct tm tm;
	json_t *o;
	char *line = NULL;
	size_t len;

	if (a == NULL)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000));
	o = json_pack("{s:s, s:I, s:I, s:I, s:s?, s:s*, s:s}",
		      "time", when,
		      "uid", (json_int_t)peer->uid,
		      "gid", (json_int_t)peer->gid,
		      "pid", (json_int_t)peer->pid,
		      "op", op,
		      "key", key,
		      "outcome", outcome);
	if (o == NULL)
		return;
	line = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (line == NULL)
		return;
	len = strlen(line);
	line[len] = '\n';      /* overwrite the NUL: one write carries the whole line */
	pthread_mutex_lock(&a->lock);
	if (write(a->fd, line, len + 1) != (ssize_t)(len + 1) && !a->warned) {
		a->warned = 1;
		ks_err("audit log write failed: %s", strerror(errno));
	}
	pthread_mutex_unlock(&a->lock);
	free(line);
}
