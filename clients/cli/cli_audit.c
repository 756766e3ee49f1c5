/*
 * keysvc audit-verify: checks the hash chain of audit log files, with no
 * daemon involved.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "clients/cli/cli_cmd.h"
#include "keysvc/keysvc.h"
#include "clients/status/statuscmd.h"
#include "proto/auditchain.h"
#include "proto/exitcode.h"
#include "proto/log.h"

const char cli_audit_verify_usage[] =
	"Usage: keysvc audit-verify [--json] [--] FILE...\n"
	"Checks the hash chain of keysvcd's audit log: FILEs in rotation order, oldest\n"
	"first (audit.log.2 audit.log.1 audit.log). Each record must name the hash of\n"
	"the one before, across files, with seq counting up by one.\n"
	"Prints FILE:LINE: REASON for the first bad record (edited, removed, reordered,\n"
	"cut) and warnings for chains that start anew (keysvcd started on an empty\n"
	"file, or could not read the last record).\n"
	"With --json (here or before the command): one object, {\"intact\", \"records\", \"files\"} or {\"intact\": false,\n"
	"\"records\", \"file\", \"line\", \"reason\"}.\n"
	"Exits with 0 when intact, 1 when a record was edited, removed, reordered or cut,\n"
	"2 for usage or a file that cannot be read.\n";

struct audit_line_pos {
	const char *file;
	unsigned long line;
};

/*
 * The next line of @f into @line (at most KS_AUDIT_LINE_MAX bytes and the
 * newline; NUL bytes kept, counted in *@len). 1 a line, 0 end of file, -1
 * a line too long for a record, -2 a last line without its newline.
 */
static int read_record_line(FILE *f, char *line, size_t *len)
{
	size_t n = 0;
	int c;

	while ((c = getc(f)) != EOF) {
		if (c == '\n') {
			line[n] = '\0';
			*len = n;
			return 1;
		}
		if (n == KS_AUDIT_LINE_MAX)
			return -1;
		line[n++] = (char)c;
	}
	return n == 0 ? 0 : -2;
}

/* The first bad record (or unreadable file): printed as text, or as JSON with keysvc --json. */
struct audit_finding {
	const char *file;
	unsigned long line;          /* 0: the file could not be read */
	char why[256];
};

/* Check one file's lines; 0 intact so far, 1 a bad record, 2 an I/O error (both in @bad). */
static int audit_verify_file(const char *path, struct ks_auditchain_verifier *v,
			     struct audit_line_pos *last, unsigned long *records, struct audit_finding *bad)
{
	char line[KS_AUDIT_LINE_MAX + 1];
	size_t n = 0;
	unsigned long lineno = 0;
	int r = 0, got;
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");

	bad->file = path;
	bad->line = 0;
	if (f == NULL) {
		snprintf(bad->why, sizeof(bad->why), "%s", strerror(errno));
		return 2;
	}
	while ((got = read_record_line(f, line, &n)) != 0) {
		enum ks_audit_verdict verdict;

		lineno++;
		bad->line = lineno;
		if (got == -2 && !ferror(f)) {
			snprintf(bad->why, sizeof(bad->why), "cut: the last record has no newline");
			r = 1;
			break;
		}
		if (got == -1) {
			snprintf(bad->why, sizeof(bad->why), "not an audit record (longer than %d bytes)",
				 KS_AUDIT_LINE_MAX);
			r = 1;
			break;
		}
		if (got < 0)
			break;
		verdict = ks_auditchain_verify(v, line, (size_t)n, lineno == 1, bad->why, sizeof(bad->why));
		if (verdict == KS_AUDIT_BAD) {
			r = 1;
			break;
		}
		if (verdict == KS_AUDIT_BAD_BEFORE) {
			bad->file = last->file;
			bad->line = last->line;
			r = 1;
			break;
		}
		if (verdict == KS_AUDIT_WARNING)
			fprintf(stderr, "%s%s:%lu: %s\n", ks_log_journal_prefix(stderr, KS_LOG_ERR), path, lineno, bad->why);
		last->file = path;
		last->line = lineno;
		(*records)++;
	}
	if (r == 0 && ferror(f)) {
		bad->line = 0;
		snprintf(bad->why, sizeof(bad->why), "%s", strerror(errno));
		r = 2;
	}
	if (f != stdin)
		fclose(f);
	return r;
}

int cli_audit_verify_main(int argc, char **argv, const struct ks_cmd_global *g)
{
	struct ks_auditchain_verifier v;
	struct audit_line_pos last = { NULL, 0 };
	struct audit_finding bad;
	unsigned long records = 0;
	int i, first = 1, json = g->json, r = KS_EXIT_OK;

	/* Options before the files: --json as after keysvc; "--" before a file named like one. */
	for (; first < argc && argv[first][0] == '-' && argv[first][1] != '\0'; first++) {
		if (strcmp(argv[first], "--help") == 0 || strcmp(argv[first], "-h") == 0) {
			fputs(cli_audit_verify_usage, stdout);
			ks_exit_print_table(stdout);
			return KS_EXIT_OK;
		}
		if (strcmp(argv[first], "--json") == 0) {
			json = 1;
			continue;
		}
		if (strcmp(argv[first], "--") == 0) {
			first++;
			break;
		}
		fprintf(stderr, "%skeysvc: audit-verify: usage: unknown option %s\n", ks_log_journal_prefix(stderr, KS_LOG_ERR), argv[first]);
		return KS_EXIT_USAGE;
	}
	if (first >= argc) {
		fputs(cli_audit_verify_usage, stderr);
		return KS_EXIT_USAGE;
	}
	memset(&v, 0, sizeof(v));
	for (i = first; i < argc && r == KS_EXIT_OK; i++)
		r = audit_verify_file(argv[i], &v, &last, &records, &bad);
	if (r == 2) {
		fprintf(stderr, "%skeysvc: audit-verify: %s: %s\n", ks_log_journal_prefix(stderr, KS_LOG_ERR), bad.file, bad.why);
		if (json)
			cli_print_json(json_pack("{s:s, s:s, s:s}", "error", "input", "file", bad.file,
					     "message", bad.why));
		return KS_EXIT_USAGE;
	}
	if (json) {
		if (r == 0)
			cli_print_json(json_pack("{s:b, s:I, s:i}", "intact", 1, "records", (json_int_t)records,
					     "files", argc - first));
		else
			cli_print_json(json_pack("{s:b, s:I, s:s, s:I, s:s}", "intact", 0, "records",
					     (json_int_t)records, "file", bad.file, "line", (json_int_t)bad.line,
					     "reason", bad.why));
	} else if (r == 0) {
		printf("%lu records in %d file%s: intact\n", records, argc - first, argc - first == 1 ? "" : "s");
	} else {
		printf("%s:%lu: %s\n", bad.file, bad.line, bad.why);
	}
	return r == 0 ? KS_EXIT_OK : KS_EXIT_INTERNAL;
}
