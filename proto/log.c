#include "proto/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static _Atomic int log_level = KS_LOG_NOTICE;
static const char *log_ident = "keysvc";

static const char *const level_names[] = {
	[KS_LOG_ERR] = "err",
	[KS_LOG_WARNING] = "warning",
	[KS_LOG_NOTICE] = "notice",
	[KS_LOG_INFO] = "info",
	[KS_LOG_DEBUG] = "debug",
};

/* syslog(3) priorities, as journald reads them from a "<N>" line prefix. */
static const int level_priorities[] = {
	[KS_LOG_ERR] = 3,
	[KS_LOG_WARNING] = 4,
	[KS_LOG_NOTICE] = 5,
	[KS_LOG_INFO] = 6,
	[KS_LOG_DEBUG] = 7,
};

static pthread_once_t journal_once = PTHREAD_ONCE_INIT;
static int stdout_is_journal, stderr_is_journal;

/*
 * systemd sets JOURNAL_STREAM to the device and inode of the stream it
 * connected stdout and stderr to (systemd.exec(5)). Only when stderr is
 * still that stream do lines get the "<N>" prefix: without it journald
 * files every line at the unit's default priority (info), and
 * `journalctl -p err` would show none of keysvcd's errors. Anywhere else
 * (a terminal, a test's log file) the prefix would only be noise.
 */
static int fd_is_journal(int fd)
{
	const char *env = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	return env != NULL && sscanf(env, "%llu:%llu", &dev, &ino) == 2 && fstat(fd, &st) == 0 &&
	       (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* Once per process: the answer holds for as long as nobody redirects the two. */
static void detect_journal(void)
{
	stdout_is_journal = fd_is_journal(STDOUT_FILENO);
	stderr_is_journal = fd_is_journal(STDERR_FILENO);
}

const char *ks_log_journal_prefix(FILE *f, enum ks_log_level level)
{
	static const char *const prefixes[] = {
		[KS_LOG_ERR] = "<3>",
		[KS_LOG_WARNING] = "<4>",
		[KS_LOG_NOTICE] = "<5>",
		[KS_LOG_INFO] = "<6>",
		[KS_LOG_DEBUG] = "<7>",
	};

	pthread_once(&journal_once, detect_journal);
	if ((int)level < 0 || (size_t)level >= sizeof(prefixes) / sizeof(prefixes[0]))
		level = KS_LOG_ERR;
	if ((f == stderr && stderr_is_journal) || (f == stdout && stdout_is_journal))
		return prefixes[level];
	return "";
}

void ks_log_set_level(enum ks_log_level level)
{
	atomic_store(&log_level, (int)level);
}

enum ks_log_level ks_log_get_level(void)
{
	return (enum ks_log_level)atomic_load(&log_level);
}

int ks_log_level_from_name(const char *name)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (name != NULL && strcmp(name, level_names[i]) == 0)
			return (int)i;
	return -1;
}

void ks_log_set_ident(const char *ident)
{
	log_ident = ident;
}

void ks_log(enum ks_log_level level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	if ((int)level > atomic_load(&log_level))
		return;
	pthread_once(&journal_once, detect_journal);
	if (stderr_is_journal)
		n = snprintf(line, sizeof(line), "<%d>%s[%s]: ", level_priorities[level], log_ident,
			     level_names[level]);
	else
		n = snprintf(line, sizeof(line), "%s[%s]: ", log_ident, level_names[level]);
	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	/* Messages may quote client input; no client gets to start a log line of its own. */
	for (char *p = line + n; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	/* One write per line so concurrent threads never interleave inside a line. */
	flockfile(stderr);
	fputs(line, stderr);
	fputc('\n', stderr);
	funlockfile(stderr);
}
