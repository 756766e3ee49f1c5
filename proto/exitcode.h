/*
 * The exit codes of every keysvc program (keysvcd, keysvc and its
 * subcommands, the renewal clients), defined once: scripts, systemd units
 * (RestartPreventExitStatus=, SuccessExitStatus=) and monitoring read them,
 * so a number means the same thing whichever program returns it. The
 * table in docs/exit-codes.md and every --help print ks_exit_table.
 * Numbers are never reused or renumbered; a new meaning gets a new number.
 */
#ifndef KEYSVC_PROTO_EXITCODE_H
#define KEYSVC_PROTO_EXITCODE_H

#include <stddef.h>
#include <stdio.h>

enum ks_exit {
	KS_EXIT_OK = 0,
	KS_EXIT_INTERNAL = 1,
	KS_EXIT_USAGE = 2,
	KS_EXIT_CONFIG = 3,
	KS_EXIT_PIN_FILE = 4,
	KS_EXIT_TOKEN = 5,
	KS_EXIT_PIN_REJECTED = 6,
	KS_EXIT_CONNECT = 7,
	KS_EXIT_DENIED = 8,
	KS_EXIT_AUDIT = 9,
	KS_EXIT_NOT_DUE = 10,
	KS_EXIT_RENEWAL_DUE = 11,
	KS_EXIT_EXPIRED = 12,
	KS_EXIT_BUSY = 13,
	KS_EXIT_NO_SUCH_KEY = 14,
	KS_EXIT_EXISTS = 15,
	KS_EXIT_UNSUPPORTED = 16,
	KS_EXIT_CA_REFUSED = 17,
	KS_EXIT_CA_ANSWER = 18,
	KS_EXIT_NETWORK = 19,
	KS_EXIT_REGISTER_FAILED = 20,
	KS_EXIT_CHECK_READY_FAILED = 21,
	KS_EXIT_NOT_IN_TIME = 22,
	KS_EXIT_PUSH_FAILED = 23,
	KS_EXIT_ATTENTION = 24,
};

struct ks_exit_meaning {
	enum ks_exit code;
	const char *meaning;     /* one line, no trailing newline */
};

/* Every code, in ascending order; ks_exit_table_len entries. */
extern const struct ks_exit_meaning ks_exit_table[];
extern const size_t ks_exit_table_len;

/* The meaning of @code, or NULL if it is not one of ks_exit_table. */
const char *ks_exit_meaning(int code);

/*
 * Print the table to @f under "Exit codes (all keysvc programs):", one
 * "  CODE  MEANING" line each: the same text in every program's --help.
 */
void ks_exit_print_table(FILE *f);

/* Print "@program keysvc VERSION" (--version of every program) on stdout. */
void ks_print_version(const char *program);

#endif
