#include "keysvc/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "proto/log.h"

struct ks_audit {
	char *path;
	/*
	 * Never changes while the daemon runs: a reopen puts the new file
	 * under this number with dup3(), so writers need no lock and a
	 * write racing the reopen lands whole in the old file or the new.
	 */
	int fd;
	int warned;     /* atomic: one diagnostic per failing file */
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
	int fd, r = 0;

	if (a == NULL || a->path == NULL)
		return 0;
	if ((fd = open_log(a->path)) < 0)
		return -errno;
	if (dup3(fd, a->fd, O_CLOEXEC) < 0)
		r = -errno;
	else
		__atomic_store_n(&a->warned, 0, __ATOMIC_RELAXED);
	close(fd);
	return r;
}

void ks_audit_close(struct ks_audit *a)
{
	if (a == NULL)
		return;
	if (a->path != NULL)
		close(a->fd);
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
	/* O_APPEND: the kernel keeps concurrent lines apart, no lock of ours is held across the write. */
	if (write(a->fd, line, len + 1) != (ssize_t)(len + 1) &&
	    !__atomic_exchange_n(&a->warned, 1, __ATOMIC_RELAXED))
		ks_err("audit log write failed: %s", strerror(errno));
	free(heap);
}
