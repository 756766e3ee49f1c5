/*
 * LD_PRELOAD shim for the crash-safety test: counts the file-system calls
 * a program makes between ks_crash_arm() and ks_crash_disarm() and kills
 * the process with SIGKILL at the Nth one (KS_CRASH_AT=N), as a power cut
 * or an OOM kill would, with no chance to clean up.
 *
 * Counted: open/openat (all variants), mkstemp/mkostemp, write, fchmod,
 * fsync/fdatasync, flock, link/linkat, rename/renameat/renameat2,
 * unlink/unlinkat. The kill comes before the call runs, except for write,
 * which first writes half of its buffer (a torn write). KS_CRASH_TRACE=1
 * prints each counted call to stderr as "ks-crash: step N: ...".
 *
 * The program finds the two functions with dlsym(RTLD_DEFAULT, ...), so it
 * runs unchanged without the shim.
 */
#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE 1

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* The interface the driver looks up; and the interposed glibc entry points
 * that no header declares. */
void ks_crash_arm(void);
long ks_crash_disarm(void);
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);

static int armed;
static long steps, crash_at = -1;
static int trace;

void ks_crash_arm(void)
{
	const char *at = getenv("KS_CRASH_AT"), *t = getenv("KS_CRASH_TRACE");

	crash_at = at != NULL && *at != '\0' ? atol(at) : -1;
	trace = t != NULL && *t == '1';
	steps = 0;
	armed = 1;
}

long ks_crash_disarm(void)
{
	armed = 0;
	return steps;
}

static void *next(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);

	if (f == NULL) {
		fprintf(stderr, "ks-crash: no %s\n", name);
		abort();
	}
	return f;
}

/* 1 if this call is the one to die at (the caller then kills). */
static int step(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int step(const char *fmt, ...)
{
	char line[600];
	va_list ap;
	int n;

	if (!armed)
		return 0;
	steps++;
	if (trace || steps == crash_at) {
		n = snprintf(line, sizeof(line), "ks-crash: step %ld%s: ", steps,
			     steps == crash_at ? " (SIGKILL)" : "");
		va_start(ap, fmt);
		vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
		va_end(ap);
		n = (int)strlen(line);
		line[n < (int)sizeof(line) - 1 ? n : (int)sizeof(line) - 2] = '\n';
		((ssize_t(*)(int, const void *, size_t))next("write"))(2, line, strlen(line));
	}
	return steps == crash_at;
}

static void die_now(void)
{
	raise(SIGKILL);
	_exit(137);   /* not reached */
}

#define KILL_IF(...) do { if (step(__VA_ARGS__)) die_now(); } while (0)

static mode_t mode_arg(int flags, va_list ap)
{
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	KILL_IF("open(%s)", path);
	return ((int (*)(const char *, int, ...))next("open"))(path, flags, m);
}

int open64(const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	KILL_IF("open(%s)", path);
	return ((int (*)(const char *, int, ...))next("open64"))(path, flags, m);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	KILL_IF("openat(%s)", path);
	return ((int (*)(int, const char *, int, ...))next("openat"))(dirfd, path, flags, m);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	KILL_IF("openat(%s)", path);
	return ((int (*)(int, const char *, int, ...))next("openat64"))(dirfd, path, flags, m);
}

int __open_2(const char *path, int flags)
{
	KILL_IF("open(%s)", path);
	return ((int (*)(const char *, int))next("__open_2"))(path, flags);
}

int __open64_2(const char *path, int flags)
{
	KILL_IF("open(%s)", path);
	return ((int (*)(const char *, int))next("__open64_2"))(path, flags);
}

int __openat_2(int dirfd, const char *path, int flags)
{
	KILL_IF("openat(%s)", path);
	return ((int (*)(int, const char *, int))next("__openat_2"))(dirfd, path, flags);
}

int __openat64_2(int dirfd, const char *path, int flags)
{
	KILL_IF("openat(%s)", path);
	return ((int (*)(int, const char *, int))next("__openat64_2"))(dirfd, path, flags);
}

/* glibc's mkstemp family opens through an internal call the shim cannot see. */
int mkstemp(char *tmpl)
{
	KILL_IF("mkstemp(%s)", tmpl);
	return ((int (*)(char *))next("mkstemp"))(tmpl);
}

int mkostemp(char *tmpl, int flags)
{
	KILL_IF("mkostemp(%s)", tmpl);
	return ((int (*)(char *, int))next("mkostemp"))(tmpl, flags);
}

int mkostemp64(char *tmpl, int flags)
{
	KILL_IF("mkostemp(%s)", tmpl);
	return ((int (*)(char *, int))next("mkostemp64"))(tmpl, flags);
}

ssize_t write(int fd, const void *buf, size_t len)
{
	ssize_t (*real)(int, const void *, size_t) = (ssize_t(*)(int, const void *, size_t))next("write");

	if (step("write(fd %d, %zu bytes)", fd, len)) {
		if (len > 1)
			real(fd, buf, len / 2);   /* torn: half of it reaches the file */
		die_now();
	}
	return real(fd, buf, len);
}

int fchmod(int fd, mode_t mode)
{
	KILL_IF("fchmod(fd %d, %o)", fd, (unsigned)mode);
	return ((int (*)(int, mode_t))next("fchmod"))(fd, mode);
}

int fsync(int fd)
{
	KILL_IF("fsync(fd %d)", fd);
	return ((int (*)(int))next("fsync"))(fd);
}

int fdatasync(int fd)
{
	KILL_IF("fdatasync(fd %d)", fd);
	return ((int (*)(int))next("fdatasync"))(fd);
}

int flock(int fd, int op)
{
	KILL_IF("flock(fd %d, %d)", fd, op);
	return ((int (*)(int, int))next("flock"))(fd, op);
}

int link(const char *from, const char *to)
{
	KILL_IF("link(%s, %s)", from, to);
	return ((int (*)(const char *, const char *))next("link"))(from, to);
}

int linkat(int fd1, const char *from, int fd2, const char *to, int flags)
{
	KILL_IF("linkat(%s, %s)", from, to);
	return ((int (*)(int, const char *, int, const char *, int))next("linkat"))(fd1, from, fd2, to, flags);
}

int rename(const char *from, const char *to)
{
	KILL_IF("rename(%s, %s)", from, to);
	return ((int (*)(const char *, const char *))next("rename"))(from, to);
}

int renameat(int fd1, const char *from, int fd2, const char *to)
{
	KILL_IF("renameat(%s, %s)", from, to);
	return ((int (*)(int, const char *, int, const char *))next("renameat"))(fd1, from, fd2, to);
}

int renameat2(int fd1, const char *from, int fd2, const char *to, unsigned flags)
{
	KILL_IF("renameat2(%s, %s)", from, to);
	return ((int (*)(int, const char *, int, const char *, unsigned))next("renameat2"))(fd1, from, fd2,
											   to, flags);
}

int unlink(const char *path)
{
	KILL_IF("unlink(%s)", path);
	return ((int (*)(const char *))next("unlink"))(path);
}

int unlinkat(int dirfd, const char *path, int flags)
{
	KILL_IF("unlinkat(%s)", path);
	return ((int (*)(int, const char *, int))next("unlinkat"))(dirfd, path, flags);
}
