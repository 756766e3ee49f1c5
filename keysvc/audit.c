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

/* Letters, digits, '.', '_' and '-': nothing JSON would escape. */
static int plain(const char *s)
{
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-'))
			return 0;
	return 1;
}

/*
 * The line as jansson writes it; a general path for any strings. NULL on
 * failure. @when is already plain.
 */
static char *line_json(const char *when, const struct ks_peer *peer, const char *op,
		       const char *key, const char *outcome, size_t *len)
{
	json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:s?, s:s*, s:s}",
			      "time", when,
			      "uid", (json_int_t)peer->uid,
			      "gid", (json_int_t)peer->gid,
			      "pid", (json_int_t)peer->pid,
			      "op", op,
			      "key", key,
			      "outcome", outcome);
	char *line;

	if (o == NULL)
		return NULL;
	line = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (line != NULL)
		*len = strlen(line);
	return line;
}

void ks_audit_log(struct ks_audit *a, const struct ks_peer *peer,
		  const char *op, const char *key, const char *outcome)
{
	char when[64], buf[512], *line = buf, *heap = NULL;
	struct timespec ts;
	struct tm tm;
	size_t len = 0;
	int n = -1;

	if (a == NULL)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000));
	/*
	 * The daemon passes operation names, validated key names and error
	 * names, which need no JSON escaping: formatting them directly keeps
	 * jansson's allocations off the signing path. Anything else takes the
	 * general path, so the line is valid JSON whatever the caller passes.
	 */
	if ((op == NULL || plain(op)) && (key == NULL || plain(key)) && plain(outcome))
		n = snprintf(buf, sizeof(buf) - 1,
			     "{\"time\":\"%s\",\"uid\":%u,\"gid\":%u,\"pid\":%ld,\"op\":%s%s%s%s%s%s,\"outcome\":\"%s\"}",
			     when, (unsigned)peer->uid, (unsigned)peer->gid, (long)peer->pid,
			     op ? "\"" : "null", op ? op : "", op ? "\"" : "",
			     key ? ",\"key\":\"" : "", key ? key : "", key ? "\"" : "",
			     outcome);
	if (n > 0 && (size_t)n < sizeof(buf) - 1) {
		len = (size_t)n;
	} else {
		if ((heap = line_json(when, peer, op, key, outcome, &len)) == NULL)
			return;
		line = heap;
	}
	line[len] = '\n';      /* overwrite the NUL: one write carries the whole line */
	pthread_mutex_lock(&a->lock);
	if (write(a->fd, line, len + 1) != (ssize_t)(len + 1) && !a->warned) {
		a->warned = 1;
		ks_err("audit log write failed: %s", strerror(errno));
	}
	pthread_mutex_unlock(&a->lock);
	free(heap);
}
