/*
 * Diagnostic logging for keysvcd and its libraries (not the audit log).
 *
 * Lines go to stderr (journald adds the time when run under systemd) as
 * "keysvcd[LEVEL]: message"; when stderr is the journal's stream
 * ($JOURNAL_STREAM), with a "<N>" syslog priority prefix in front, which
 * journald takes as the line's priority. Callers never pass secrets: no PIN, no key
 * material, no request payloads beyond names and sizes.
 */
#ifndef KEYSVC_PROTO_LOG_H
#define KEYSVC_PROTO_LOG_H

#include <stdio.h>

enum ks_log_level {
	KS_LOG_ERR = 0,
	KS_LOG_WARNING,
	KS_LOG_NOTICE,
	KS_LOG_INFO,
	KS_LOG_DEBUG,
};

/* Messages above @level are dropped. Default KS_LOG_NOTICE. */
void ks_log_set_level(enum ks_log_level level);
enum ks_log_level ks_log_get_level(void);
/* "err", "warning", "notice", "info", "debug" to a level; -1 if unknown. */
int ks_log_level_from_name(const char *name);
/* Prefix for every line; defaults to "keysvc". The string is not copied. */
void ks_log_set_ident(const char *ident);

/*
 * For programs that print their own lines (the clients): "<N>", the
 * syslog priority of @level, when @f (stdout or stderr) is the journal's
 * stream as ks_log() detects it, else "". Put it in front of each line,
 * so that `journalctl -p err` shows a client's errors. Never NULL.
 */
const char *ks_log_journal_prefix(FILE *f, enum ks_log_level level);

void ks_log(enum ks_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define ks_err(...) ks_log(KS_LOG_ERR, __VA_ARGS__)
#define ks_warn(...) ks_log(KS_LOG_WARNING, __VA_ARGS__)
#define ks_notice(...) ks_log(KS_LOG_NOTICE, __VA_ARGS__)
#define ks_info(...) ks_log(KS_LOG_INFO, __VA_ARGS__)
#define ks_debug(...) ks_log(KS_LOG_DEBUG, __VA_ARGS__)

#endif
