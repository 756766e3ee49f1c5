/*
 * The audit log: every line is one JSON object with exactly the documented
 * fields, whether it is formatted directly (names that need no escaping,
 * the daemon's case) or through jansson (anything else); the hash chain
 * across rotation and restart; records written whole or rolled back; the
 * checks of `keysvc audit-verify`; the refusal of unsafe files.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "keysvc/audit.h"
#include "proto/auditchain.h"

/* Held records are written by what comes next, not by the clock, in the tests that say so. */
#define HOLD_LONG_NS 30000000000LL

struct audit_case {
	const char *op, *key, *outcome;
};

static const struct audit_case cases[] = {
	{ "sign", "web", "ok" },
	{ "csr.create", "host-01.example_key", "denied" },
	{ NULL, NULL, "invalid-request" },       /* a request that never named its op */
	{ "key.list", NULL, "ok" },
	{ "sign", "a\"b\\c", "ok" },             /* needs escaping: the general path */
	{ "sign", "caf\xc3\xa9", "ok" },         /* UTF-8 */
	{ "sign\n", "x", "not-found" },          /* a newline must not split the line */
	{ "sign", "web", "token \"down\"" },
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

static void check_line(const char *line, const struct ks_peer *peer, const struct audit_case *c)
{
	json_error_t jerr;
	json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &jerr), *v;
	const char *t;
	/* time uid gid pid op outcome seq prev [key] [chain: the first record] */
	size_t want_fields = (c->key != NULL ? 9 : 8) + (c == &cases[0]);

	if (o == NULL)
		fail_msg("not JSON: %s (%s)", line, jerr.text);
	assert_true(json_is_object(o));
	assert_int_equal(json_object_size(o), want_fields);
	assert_non_null(t = json_string_value(json_object_get(o, "time")));
	/* 2026-12-01T05:06:07.123Z */
	assert_int_equal(strlen(t), 24);
	assert_int_equal(t[10], 'T');
	assert_int_equal(t[23], 'Z');
	assert_int_equal(json_integer_value(json_object_get(o, "uid")), peer->uid);
	assert_int_equal(json_integer_value(json_object_get(o, "gid")), peer->gid);
	assert_int_equal(json_integer_value(json_object_get(o, "pid")), peer->pid);
	v = json_object_get(o, "op");
	assert_non_null(v);
	if (c->op == NULL)
		assert_true(json_is_null(v));
	else
		assert_string_equal(json_string_value(v), c->op);
	v = json_object_get(o, "key");
	if (c->key == NULL)
		assert_null(v);
	else
		assert_string_equal(json_string_value(v), c->key);
	assert_string_equal(json_string_value(json_object_get(o, "outcome")), c->outcome);
	json_decref(o);
}

static void test_lines(void **state)
{
	char path[] = "/tmp/ks-audit-XXXXXX", buf[8192], *line, *save = NULL, err[512];
	struct ks_peer peer = { .uid = 4294967294u, .gid = 1000, .pid = 2147483647 };
	struct ks_audit *a = NULL;
	size_t n = 0;
	ssize_t got;
	int fd;

	(void)state;
	assert_true((fd = mkstemp(path)) >= 0);
	assert_int_equal(ks_audit_open(path, NULL, &a, err, sizeof(err)), 0);
	for (size_t i = 0; i < NCASES; i++)
		ks_audit_log(a, &peer, cases[i].op, cases[i].key, cases[i].outcome);
	ks_audit_close(a);
	got = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	unlink(path);
	assert_true(got > 0);
	buf[got] = '\0';
	assert_int_equal(buf[got - 1], '\n');
	for (line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
	{
		if (n >= NCASES)
			fail_msg("more lines than calls: %s", line);
		check_line(line, &peer, &cases[n++]);
	}
	assert_int_equal(n, NCASES);
}

/* A NULL log is a no-op, as the dispatcher's tests use it. */
static void test_null(void **state)
{
	struct ks_peer peer = { .uid = 0 };

	(void)state;
	ks_audit_log(NULL, &peer, "sign", "k", "ok");
	ks_audit_close(NULL);
}


/*
 * fdatasync(2) as keysvcd's audit module calls it: this definition in the
 * test program takes the place of libc's, counts the calls and fails on
 * command (EIO), which no healthy file system here can be made to do.
 */
static int sync_calls, sync_fail;
static const char *sync_hold_path;   /* the first sync waits until this file has sync_hold_lines */
static int sync_hold_lines;

static int file_lines(const char *path)
{
	char buf[8192];
	ssize_t n;
	int fd = open(path, O_RDONLY), lines = 0;

	if (fd < 0)
		return 0;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < n; i++)
			lines += buf[i] == '\n';
	close(fd);
	return lines;
}

static const char *durable_path;     /* the file whose records each finished sync made durable */
static int durable_lines;            /* of durable_path: the lines a finished sync covered */

int fdatasync(int fd)
{
	int call = __atomic_add_fetch(&sync_calls, 1, __ATOMIC_SEQ_CST);
	int lines = durable_path != NULL ? file_lines(durable_path) : 0, r;

	if (call == 1 && sync_hold_path != NULL)
		for (int i = 0; i < 500 && file_lines(sync_hold_path) < sync_hold_lines; i++)
			usleep(10000);
	if (__atomic_load_n(&sync_fail, __ATOMIC_SEQ_CST)) {
		errno = EIO;
		return -1;
	}
	r = (int)syscall(SYS_fdatasync, fd);
	/* Only what was in the file when the sync began is durable once it ends. */
	if (r == 0 && durable_path != NULL) {
		int have = __atomic_load_n(&durable_lines, __ATOMIC_SEQ_CST);

		while (have < lines &&
		       !__atomic_compare_exchange_n(&durable_lines, &have, lines, 0,
						    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
			;
	}
	return r;
}

/* ---- chain, roll-back, ownership ---- */

static const struct ks_peer alice = { .uid = 1000, .gid = 1000, .pid = 4242 };

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *buf;
	size_t n;

	assert_non_null(f);
	assert_non_null(buf = malloc(1 << 20));
	n = fread(buf, 1, (1 << 20) - 1, f);
	fclose(f);
	buf[n] = '\0';
	if (len != NULL)
		*len = n;
	return buf;
}

static void spit(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* The line jansson makes of @rec's fields in the documented order: the reference format. */
static char *reference_line(const struct ks_audit_record *rec)
{
	json_t *o = json_object();
	char *s;

	assert_non_null(o);
	json_object_set_new(o, "time", json_string(rec->time));
	json_object_set_new(o, "seq", json_integer((json_int_t)rec->seq));
	json_object_set_new(o, "prev", json_string(rec->prev));
	if (rec->chain != NULL)
		json_object_set_new(o, "chain", json_string(rec->chain));
	if (rec->lost > 0)
		json_object_set_new(o, "lost", json_integer((json_int_t)rec->lost));
	json_object_set_new(o, "uid", json_integer(rec->uid));
	json_object_set_new(o, "gid", json_integer(rec->gid));
	json_object_set_new(o, "pid", json_integer(rec->pid));
	json_object_set_new(o, "op", rec->op ? json_string(rec->op) : json_null());
	if (rec->key != NULL)
		json_object_set_new(o, "key", json_string(rec->key));
	if (rec->is_intent)
		json_object_set_new(o, "phase", json_string("intent"));
	if (rec->hash_name != NULL)
		json_object_set_new(o, rec->hash_name, json_string(rec->hash_hex));
	if (rec->purpose != NULL)
		json_object_set_new(o, "purpose", json_string(rec->purpose));
	if (rec->intent > 0)
		json_object_set_new(o, "intent", json_integer((json_int_t)rec->intent));
	if (rec->outcome != NULL)
		json_object_set_new(o, "outcome", json_string(rec->outcome));
	assert_non_null(s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER));
	json_decref(o);
	return s;
}

/*
 * keysvcd formats a record in two parts (the tail before its lock, the
 * chain's head under it): their concatenation is ks_auditchain_format()'s
 * line, byte for byte what jansson makes of the same fields, on the direct
 * path and the escaping one, with every optional field present or not.
 */
static void test_format_parts(void **state)
{
	static const char *const keys[] = { "web", NULL, "a\"b\\c", "caf\xc3\xa9" };
	static const char *const outcomes[] = { "ok", NULL, "token \"down\"" };
	char line[KS_AUDIT_LINE_MAX + 2], head[KS_AUDIT_LINE_MAX + 2], tail[KS_AUDIT_LINE_MAX + 2];
	size_t len, head_len, tail_len;
	int n = 0;

	(void)state;
	for (int bits = 0; bits < 64; bits++)
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			for (size_t o = 0; o < sizeof(outcomes) / sizeof(outcomes[0]); o++) {
				struct ks_audit_record rec = {
					.time = bits & 32 ? "2026-12-06T10:00:00.120Z" : "9999-01-01T00:00:00.000Z",
					.seq = bits & 1 ? 9223372036854775807u : 41,
					.prev = ks_auditchain_zero,
					.chain = bits & 2 ? "restart" : NULL,
					.lost = bits & 4 ? 3 : 0,
					.uid = 4294967295u, .gid = 0,
					.pid = bits & 8 ? -7 : 2147483647,
					.op = bits & 16 ? "sign" : NULL,
					.key = keys[k],
					.is_intent = outcomes[o] == NULL,
					.hash_name = outcomes[o] == NULL ? "sha256" : NULL,
					.hash_hex = outcomes[o] == NULL ? "2cf2" : NULL,
					.purpose = bits & 4 ? "tls" : NULL,
					.intent = outcomes[o] != NULL && (bits & 8) ? 40 : 0,
					.outcome = outcomes[o],
				};
				char *want = reference_line(&rec);

				assert_int_equal(ks_auditchain_format(&rec, line, sizeof(line), &len), 0);
				assert_int_equal(len, strlen(line));
				assert_string_equal(line, want);
				assert_int_equal(ks_auditchain_format_head(&rec, head, sizeof(head), &head_len), 0);
				assert_int_equal(ks_auditchain_format_tail(&rec, tail, sizeof(tail), &tail_len), 0);
				assert_int_equal(head_len + tail_len, len);
				assert_memory_equal(head, want, head_len);
				assert_string_equal(tail, want + head_len);
				assert_memory_equal(tail, ",\"uid\":", 7);
				free(want);
				n++;
			}
	/* A line over the limit is refused, whichever part makes it long. */
	{
		char big[KS_AUDIT_LINE_MAX];
		struct ks_audit_record rec = { .time = "t", .seq = 1, .prev = ks_auditchain_zero,
					       .op = "sign", .key = big, .outcome = "ok" };

		memset(big, 'k', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		assert_int_equal(ks_auditchain_format(&rec, line, sizeof(line), &len), -EMSGSIZE);
		assert_int_equal(ks_auditchain_format(&rec, line, 100, &len), -EMSGSIZE);
		big[KS_AUDIT_LINE_MAX - 200] = '\0';
		assert_int_equal(ks_auditchain_format(&rec, line, sizeof(line), &len), 0);
		assert_int_equal(ks_auditchain_format(&rec, line, len + 1, &len), -EMSGSIZE);
	}
	/*
	 * Every byte in a key: the direct path takes exactly those jansson
	 * would write as they are; the rest are escaped as jansson escapes
	 * them, or the line refused where jansson refuses (invalid UTF-8).
	 */
	for (int c = 1; c < 256; c++) {
		char key[4] = { 'k', (char)c, 'k', '\0' };
		struct ks_audit_record rec = { .time = "2026-12-06T10:00:00.120Z", .seq = 2,
					       .prev = ks_auditchain_zero, .op = "sign", .key = key,
					       .outcome = "ok" };
		json_t *js = json_string(key);
		int r = ks_auditchain_format(&rec, line, sizeof(line), &len);

		if (js == NULL) {
			if (r == 0)
				fail_msg("byte %#x: not UTF-8, yet formatted: %s", c, line);
			continue;
		}
		json_decref(js);
		char *want = reference_line(&rec);

		if (r != 0 || strcmp(line, want) != 0)
			fail_msg("byte %#x: %s, not %s", c, r == 0 ? line : "refused", want);
		free(want);
	}
	print_message("%d records formatted in two parts\n", n);
}

/* A digest context reused record after record hashes as a fresh one does. */
static void test_hash_ctx(void **state)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	char a[KS_AUDIT_HASH_HEX], b[KS_AUDIT_HASH_HEX], text[300];

	(void)state;
	assert_non_null(ctx);
	ks_auditchain_hash("abc", 3, a);
	assert_string_equal(a, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	for (size_t i = 0; i < sizeof(text); i++) {
		text[i] = (char)('a' + i % 26);
		ks_auditchain_hash_ctx(ctx, text, i, a);
		ks_auditchain_hash(text, i, b);
		assert_string_equal(a, b);
	}
	EVP_MD_CTX_free(ctx);
}

/*
 * The record's "time" (its date and second formatted once per second):
 * each record's is the clock's when it was written, to the millisecond,
 * across second boundaries.
 */
static void test_time(void **state)
{
	char path[] = "/tmp/ks-audit-XXXXXX", err[512], *text, *line, *save = NULL;
	struct ks_audit *a = NULL;
	struct timespec before[40], after[40];
	int fd, n = 0;

	(void)state;
	assert_true((fd = mkstemp(path)) >= 0);
	close(fd);
	assert_int_equal(ks_audit_open(path, NULL, &a, err, sizeof(err)), 0);
	for (int i = 0; i < 40; i++) {
		clock_gettime(CLOCK_REALTIME, &before[i]);
		ks_audit_log(a, &alice, "hello", NULL, "ok");
		clock_gettime(CLOCK_REALTIME, &after[i]);
		usleep(77000);       /* 40 records over about three seconds */
	}
	ks_audit_close(a);
	text = slurp(path, NULL);
	unlink(path);
	for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		json_t *o = json_loads(line, 0, NULL);
		char lo[32], hi[32];
		struct tm tm;
		const char *t;

		assert_true(n < 40);
		assert_non_null(o);
		assert_non_null(t = json_string_value(json_object_get(o, "time")));
		gmtime_r(&before[n].tv_sec, &tm);
		strftime(lo, sizeof(lo), "%Y-%m-%dT%H:%M:%S", &tm);
		snprintf(lo + strlen(lo), sizeof(lo) - strlen(lo), ".%03dZ",
			 (int)(before[n].tv_nsec / 1000000));
		gmtime_r(&after[n].tv_sec, &tm);
		strftime(hi, sizeof(hi), "%Y-%m-%dT%H:%M:%S", &tm);
		snprintf(hi + strlen(hi), sizeof(hi) - strlen(hi), ".%03dZ",
			 (int)(after[n].tv_nsec / 1000000));
		/* Fixed digits: text order is time order. */
		if (strlen(t) != 24 || strcmp(t, lo) < 0 || strcmp(t, hi) > 0)
			fail_msg("record %d: time %s, the clock said %s to %s", n + 1, t, lo, hi);
		json_decref(o);
		n++;
	}
	assert_int_equal(n, 40);
	free(text);
}

/* @n signatures: an intent (with the hash of what is signed) and its outcome each. */
static void sign_n(struct ks_audit *a, int n)
{
	for (int i = 0; i < n; i++) {
		uint64_t seq = 0;

		assert_int_equal(ks_audit_intent(a, &alice, "sign", "web", "sha256",
						 "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "tls",
						 &seq), 0);
		assert_true(seq > 0);
		ks_audit_outcome(a, &alice, "sign", "web", NULL, seq, "ok");
	}
}

static struct ks_audit *open_ok(const char *path)
{
	struct ks_audit *a = NULL;
	char err[512] = "";

	if (ks_audit_open(path, NULL, &a, err, sizeof(err)) != 0)
		fail_msg("ks_audit_open %s: %s", path, err);
	return a;
}

/* Line @n (1-based) of @text, parsed. */
static json_t *line_json(const char *text, int n)
{
	const char *p = text, *e;
	json_t *o;

	for (int i = 1; i < n; i++) {
		assert_non_null(p = strchr(p, '\n'));
		p++;
	}
	assert_non_null(e = strchr(p, '\n'));
	if ((o = json_loadb(p, (size_t)(e - p), JSON_REJECT_DUPLICATES, NULL)) == NULL)
		fail_msg("line %d is not JSON", n);
	return o;
}

/* The hex SHA-256 of line @n of @text without its newline. */
static void line_hash(const char *text, int n, char hex[KS_AUDIT_HASH_HEX])
{
	const char *p = text, *e;

	for (int i = 1; i < n; i++)
		p = strchr(p, '\n') + 1;
	e = strchr(p, '\n');
	ks_auditchain_hash(p, (size_t)(e - p), hex);
}

static int count_lines(const char *text)
{
	int n = 0;

	for (; *text != '\0'; text++)
		n += *text == '\n';
	return n;
}

/*
 * keysvc audit-verify ARGS; its exit status, stdout in @out. -1 when the
 * CLI is not known (run outside meson).
 */
static int run_verify(const char *const *files, char *out, size_t out_len)
{
	const char *cli = getenv("KS_KEYSVC_CLI");
	const char *argv[16];
	int pipefd[2], st;
	size_t n = 0, got = 0;
	ssize_t r;
	pid_t pid;

	if (cli == NULL)
		return -1;
	argv[n++] = cli;
	argv[n++] = "audit-verify";
	for (; *files != NULL && n < 15; files++)
		argv[n++] = *files;
	argv[n] = NULL;
	assert_int_equal(pipe(pipefd), 0);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		int nul = open("/dev/null", O_WRONLY);

		if (dup2(pipefd[1], 1) < 0 || nul < 0 || dup2(nul, 2) < 0)
			_exit(127);
		execv(cli, (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	close(pipefd[1]);
	while (got + 1 < out_len && (r = read(pipefd[0], out + got, out_len - 1 - got)) > 0)
		got += (size_t)r;
	out[got] = '\0';
	close(pipefd[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void make_dir(char dir[64])
{
	snprintf(dir, 64, "/tmp/ks-audit-XXXXXX");
	assert_non_null(mkdtemp(dir));
}

static void remove_dir(const char *dir)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/*
 * Intent records name what is signed and outcome records their intent;
 * "prev" chains every record to the one before, across a rotation
 * (rename, then reopen as on SIGHUP) and a restart of keysvcd.
 */
static void test_chain_rotation_restart(void **state)
{
	char dir[64], path[96], old[96], h[KS_AUDIT_HASH_HEX], out[4096];
	char *t1, *t2;
	struct ks_audit *a;
	json_t *o;

	(void)state;
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	snprintf(old, sizeof(old), "%s/audit.log.1", dir);
	a = open_ok(path);
	sign_n(a, 2);
	assert_int_equal(rename(path, old), 0);
	assert_int_equal(ks_audit_reopen(a), 0);
	sign_n(a, 1);
	ks_audit_close(a);
	a = open_ok(path);           /* a restart */
	ks_audit_log(a, &alice, "key.list", NULL, "ok");
	ks_audit_close(a);

	t1 = slurp(old, NULL);
	t2 = slurp(path, NULL);
	assert_int_equal(count_lines(t1), 4);
	assert_int_equal(count_lines(t2), 3);
	o = line_json(t1, 1);
	assert_string_equal(json_string_value(json_object_get(o, "chain")), "new");
	assert_string_equal(json_string_value(json_object_get(o, "prev")), ks_auditchain_zero);
	assert_int_equal(json_integer_value(json_object_get(o, "seq")), 1);
	assert_string_equal(json_string_value(json_object_get(o, "phase")), "intent");
	assert_string_equal(json_string_value(json_object_get(o, "sha256")),
			    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
	assert_null(json_object_get(o, "outcome"));
	json_decref(o);
	o = line_json(t1, 2);
	assert_int_equal(json_integer_value(json_object_get(o, "intent")), 1);
	assert_string_equal(json_string_value(json_object_get(o, "outcome")), "ok");
	line_hash(t1, 1, h);
	assert_string_equal(json_string_value(json_object_get(o, "prev")), h);
	json_decref(o);
	/* The new file's first record names the old file's last. */
	o = line_json(t2, 1);
	line_hash(t1, 4, h);
	assert_string_equal(json_string_value(json_object_get(o, "prev")), h);
	assert_int_equal(json_integer_value(json_object_get(o, "seq")), 5);
	assert_null(json_object_get(o, "chain"));
	json_decref(o);
	/* The restart went on from the file's last record. */
	o = line_json(t2, 3);
	line_hash(t2, 2, h);
	assert_string_equal(json_string_value(json_object_get(o, "prev")), h);
	assert_int_equal(json_integer_value(json_object_get(o, "seq")), 7);
	json_decref(o);
	{
		const char *files[] = { old, path, NULL };
		int st = run_verify(files, out, sizeof(out));

		if (st >= 0) {
			assert_int_equal(st, 0);
			assert_non_null(strstr(out, "7 records in 2 files: intact"));
		}
	}
	free(t1);
	free(t2);
	remove_dir(dir);
}

/* Each way of tampering with a log is found, at the right line. */
static void test_verify_tampering(void **state)
{
	static const struct {
		const char *what;
		int swap, drop, edit, cut, forge, dup;    /* line numbers (1-based) */
		const char *want;
	} tamper[] = {
		{ "intact", 0, 0, 0, 0, 0, 0, NULL },
		{ "edited", 0, 0, 3, 0, 0, 0, ":3: edited" },
		{ "removed", 0, 3, 0, 0, 0, 0, ":3: records missing" },
		{ "reordered", 3, 0, 0, 0, 0, 0, ":3: records missing" },
		{ "repeated", 0, 0, 0, 0, 0, 3, ":4: out of order" },
		{ "cut", 0, 0, 0, 6, 0, 0, ":6: cut" },
		{ "cut inside", 0, 0, 0, 2, 0, 0, ":2: not an audit record" },
		{ "new chain forged", 0, 0, 0, 0, 4, 0, ":4: a new chain" },
	};
	char dir[64], path[96], bad[96], out[4096];
	char *text;
	size_t len;
	struct ks_audit *a;

	(void)state;
	if (getenv("KS_KEYSVC_CLI") == NULL)
		skip();
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	snprintf(bad, sizeof(bad), "%s/bad.log", dir);
	a = open_ok(path);
	sign_n(a, 3);
	ks_audit_close(a);
	text = slurp(path, &len);
	assert_int_equal(count_lines(text), 6);
	for (size_t c = 0; c < sizeof(tamper) / sizeof(tamper[0]); c++) {
		char *lines[8], *copy = strdup(text), *save = NULL, *l, buf[16384];
		const char *files[] = { bad, NULL };
		size_t n = 0, off = 0;
		int st;

		for (l = strtok_r(copy, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save))
			lines[n++] = l;
		assert_int_equal(n, 6);
		for (size_t i = 1; i <= n; i++) {
			char line[4096];

			if ((int)i == tamper[c].drop)
				continue;
			if ((int)i == tamper[c].swap)
				snprintf(line, sizeof(line), "%s\n%s\n", lines[i], lines[i - 1]);
			else if ((int)i == tamper[c].swap + 1 && tamper[c].swap != 0)
				continue;
			else
				snprintf(line, sizeof(line), "%s\n", lines[i - 1]);
			if ((int)i == tamper[c].edit)
				memcpy(strstr(line, "\"uid\":1000"), "\"uid\":1001", 10);
			if ((int)i == tamper[c].cut)
				strcpy(line + strlen(line) - 12, i == n ? "" : "\n");
			if ((int)i == tamper[c].dup) {
				memcpy(buf + off, line, strlen(line));
				off += strlen(line);
			}
			if ((int)i == tamper[c].forge) {
				char *prev = strstr(line, "\"prev\":\"") + 8;

				memcpy(prev, ks_auditchain_zero, 64);
				memmove(prev + 65 + 14, prev + 65, strlen(prev + 65) + 1);
				memcpy(prev + 65, ",\"chain\":\"new\"", 14);
			}
			memcpy(buf + off, line, strlen(line));
			off += strlen(line);
		}
		spit(bad, buf, off);
		st = run_verify(files, out, sizeof(out));
		if (tamper[c].want == NULL) {
			if (st != 0)
				fail_msg("%s: exit %d: %s", tamper[c].what, st, out);
		} else if (st != 1 || strstr(out, tamper[c].want) == NULL) {
			fail_msg("%s: exit %d, output %s; want 1 and %s", tamper[c].what, st, out,
				 tamper[c].want);
		}
		free(copy);
	}
	/* A line longer than any record is refused without being read whole. */
	{
		char *big = malloc(1 << 20);
		const char *files[] = { bad, NULL };

		assert_non_null(big);
		memset(big, 'x', 1 << 20);
		big[(1 << 20) - 1] = '\n';
		spit(bad, big, 1 << 20);
		free(big);
		assert_int_equal(run_verify(files, out, sizeof(out)), 1);
		assert_non_null(strstr(out, "bad.log:1: not an audit record (longer than"));
	}
	/* Rotated files: in order, out of order, one left out. */
	{
		char r1[96], r2[96];
		const char *files[4] = { NULL };

		snprintf(r1, sizeof(r1), "%s/audit.log.1", dir);
		snprintf(r2, sizeof(r2), "%s/audit.log.2", dir);
		a = open_ok(path);
		assert_int_equal(rename(path, r2), 0);
		assert_int_equal(ks_audit_reopen(a), 0);
		sign_n(a, 1);
		assert_int_equal(rename(path, r1), 0);
		assert_int_equal(ks_audit_reopen(a), 0);
		sign_n(a, 1);
		ks_audit_close(a);
		files[0] = r2, files[1] = r1, files[2] = path;
		assert_int_equal(run_verify(files, out, sizeof(out)), 0);
		files[0] = r1, files[1] = r2, files[2] = path;
		assert_int_equal(run_verify(files, out, sizeof(out)), 1);
		files[0] = r2, files[1] = path, files[2] = NULL;
		assert_int_equal(run_verify(files, out, sizeof(out)), 1);
		assert_non_null(strstr(out, "audit.log:1: records missing"));
	}
	/* keysvcd restarted on a fresh file after a rotation: a warning, not a failure. */
	{
		char r0[96];
		const char *files[] = { r0, path, NULL };

		snprintf(r0, sizeof(r0), "%s/audit.log.0", dir);
		assert_int_equal(rename(path, r0), 0);
		a = open_ok(path);
		sign_n(a, 1);
		ks_audit_close(a);
		assert_int_equal(run_verify(files, out, sizeof(out)), 0);
	}
	{
		const char *none[] = { NULL };
		const char *missing[] = { "/nonexistent/audit.log", NULL };

		assert_int_equal(run_verify(none, out, sizeof(out)), 2);
		assert_int_equal(run_verify(missing, out, sizeof(out)), 2);
	}
	free(text);
	remove_dir(dir);
}

/* A record cut by a crash is removed at the next start; the chain goes on from the last whole one. */
static void test_partial_tail_removed(void **state)
{
	static const char old_format[] = "{\"time\":\"2026-11-24T09:21:48.123Z\",\"uid\":0,\"op\":\"hello\"}\n";
	char dir[64], path[96], h[KS_AUDIT_HASH_HEX];
	char *text;
	size_t len, whole;
	struct ks_audit *a;
	json_t *o;
	FILE *f;

	(void)state;
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	a = open_ok(path);
	sign_n(a, 1);
	ks_audit_close(a);
	free(slurp(path, &whole));
	assert_non_null(f = fopen(path, "a"));
	fputs("{\"time\":\"2026-12-06T10:00:00.000Z\",\"seq\":3,\"pr", f);
	fclose(f);
	a = open_ok(path);
	free(slurp(path, &len));
	assert_int_equal(len, whole);
	ks_audit_log(a, &alice, "hello", NULL, "ok");
	ks_audit_close(a);
	text = slurp(path, NULL);
	assert_int_equal(count_lines(text), 3);
	o = line_json(text, 3);
	line_hash(text, 2, h);
	assert_string_equal(json_string_value(json_object_get(o, "prev")), h);
	assert_int_equal(json_integer_value(json_object_get(o, "seq")), 3);
	json_decref(o);
	free(text);

	/* A last line that is no record (a log of an older keysvcd): a new chain, said so. */
	spit(path, old_format, strlen(old_format));
	a = open_ok(path);
	ks_audit_log(a, &alice, "hello", NULL, "ok");
	ks_audit_close(a);
	text = slurp(path, NULL);
	o = line_json(text, 2);
	assert_string_equal(json_string_value(json_object_get(o, "chain")), "restart");
	assert_string_equal(json_string_value(json_object_get(o, "prev")), ks_auditchain_zero);
	assert_int_equal(json_integer_value(json_object_get(o, "seq")), 1);
	json_decref(o);
	free(text);
	remove_dir(dir);
}

/*
 * A write that falls short (here at RLIMIT_FSIZE, as on a full file
 * system) is rolled back: the file keeps whole records only, the intent
 * is refused with the real errno, and the next record written says how
 * many were lost and still chains to the last one written.
 */
static void test_short_write_rolled_back(void **state)
{
	char dir[64], path[96], h[KS_AUDIT_HASH_HEX];
	struct rlimit old, lim;
	struct stat st;
	off_t before, after_intent, after_outcome;
	uint64_t seq = 99;
	int r;
	char *text;
	struct ks_audit *a;
	json_t *o;

	(void)state;
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	a = open_ok(path);
	sign_n(a, 1);
	assert_int_equal(stat(path, &st), 0);
	before = st.st_size;
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)before + 40;       /* room for part of a record */
	/* Asserted only once the limit is lifted again, so a failure does not spill over. */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	r = ks_audit_intent(a, &alice, "sign", "web", NULL, NULL, NULL, &seq);
	after_intent = stat(path, &st) == 0 ? st.st_size : -1;
	ks_audit_outcome(a, &alice, "sign", "web", NULL, 0, "audit-unavailable");
	after_outcome = stat(path, &st) == 0 ? st.st_size : -1;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(r, -EFBIG);
	assert_int_equal(seq, 0);
	assert_int_equal(after_intent, before);
	assert_int_equal(after_outcome, before);
	ks_audit_log(a, &alice, "hello", NULL, "ok");
	ks_audit_close(a);
	text = slurp(path, NULL);
	assert_int_equal(count_lines(text), 3);
	o = line_json(text, 3);
	assert_int_equal(json_integer_value(json_object_get(o, "lost")), 2);
	assert_int_equal(json_integer_value(json_object_get(o, "seq")), 3);
	line_hash(text, 2, h);
	assert_string_equal(json_string_value(json_object_get(o, "prev")), h);
	json_decref(o);
	free(text);
	remove_dir(dir);
}

/* With audit_failure continue the intent fails but the caller may go ahead. */
static void test_continue_mode(void **state)
{
	struct ks_audit_options opt = { .failure = KS_AUDIT_CONTINUE };
	char dir[64], path[96], err[512];
	struct rlimit old, lim;
	uint64_t seq = 99;
	struct ks_audit *a = NULL;
	int r;

	(void)state;
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	assert_int_equal(ks_audit_open(path, &opt, &a, err, sizeof(err)), 0);
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 10;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	r = ks_audit_intent(a, &alice, "sign", "web", NULL, NULL, NULL, &seq);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(r, 0);
	assert_int_equal(seq, 0);
	ks_audit_close(a);
	remove_dir(dir);
}

#define SIGNERS 8
#define SIGNS_EACH 100

static void *signer_thread(void *arg)
{
	struct ks_audit *a = arg;

	for (int i = 0; i < SIGNS_EACH; i++) {
		uint64_t seq = 0;

		if (ks_audit_intent(a, &alice, "sign", "web", NULL, NULL, NULL, &seq) != 0 || seq == 0)
			return (void *)1;
		ks_audit_outcome(a, &alice, "sign", "web", NULL, seq, "ok");
	}
	return NULL;
}

/*
 * Concurrent signers share syncs (group commit) and the lock orders their
 * records: one chain with every intent before its outcome.
 */
static void test_concurrent_chain(void **state)
{
	char dir[64], path[96], why[256], *text, *line, *save = NULL;
	struct ks_auditchain_verifier v;
	pthread_t t[SIGNERS];
	struct ks_audit *a;
	uint8_t *seen;
	size_t n = 0;
	void *ret;

	(void)state;
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	a = open_ok(path);
	for (int i = 0; i < SIGNERS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, signer_thread, a), 0);
	for (int i = 0; i < SIGNERS; i++) {
		assert_int_equal(pthread_join(t[i], &ret), 0);
		assert_null(ret);
	}
	ks_audit_close(a);
	text = slurp(path, NULL);
	assert_non_null(seen = calloc(2 * SIGNERS * SIGNS_EACH + 1, 1));
	memset(&v, 0, sizeof(v));
	for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		json_t *o = json_loads(line, 0, NULL), *intent;

		if (ks_auditchain_verify(&v, line, strlen(line), n == 0, why, sizeof(why)) != KS_AUDIT_INTACT)
			fail_msg("line %zu: %s", n + 1, why);
		assert_non_null(o);
		n++;
		if ((intent = json_object_get(o, "intent")) != NULL) {
			json_int_t s = json_integer_value(intent);

			assert_true(s >= 1 && s < (json_int_t)n && seen[s] == 1);
			seen[s] = 2;     /* one outcome per intent */
		} else {
			seen[n] = 1;
		}
		json_decref(o);
	}
	assert_int_equal(n, 2 * SIGNERS * SIGNS_EACH);
	free(seen);
	free(text);
	remove_dir(dir);
}

static void *one_intent(void *arg)
{
	uint64_t seq = 0;

	return ks_audit_intent(arg, &alice, "sign", "web", NULL, NULL, NULL, &seq) == 0 ? NULL : arg;
}

/*
 * Group commit: while one sync runs, the intents written meanwhile wait
 * and then share a single sync rather than taking one each.
 */
static void test_group_commit(void **state)
{
	char dir[64], path[96];
	pthread_t t[5];
	struct ks_audit *a;
	void *ret;

	(void)state;
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	a = open_ok(path);
	sync_calls = 0;
	sync_hold_lines = 5;
	sync_hold_path = path;
	assert_int_equal(pthread_create(&t[0], NULL, one_intent, a), 0);
	while (__atomic_load_n(&sync_calls, __ATOMIC_SEQ_CST) == 0)
		usleep(1000);
	/* The first sync is held until these four intents are in the file. */
	for (int i = 1; i < 5; i++)
		assert_int_equal(pthread_create(&t[i], NULL, one_intent, a), 0);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(pthread_join(t[i], &ret), 0);
		assert_null(ret);
	}
	sync_hold_path = NULL;
	assert_int_equal(file_lines(path), 5);
	assert_int_equal(sync_calls, 2);
	ks_audit_close(a);
	remove_dir(dir);
}

/* ---- the sync of sign intents, due shortly before the token answers ---- */

#define DEFER_SIGNERS 8
#define DEFER_SIGNS_EACH 12
#define DEFER_TOKEN_MS 30

struct deferred_signer {
	struct ks_audit *a;
	unsigned seed;
	int not_durable;               /* waits that returned before their record was durable */
	int failed;
};

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* A sign as the dispatcher makes it: intent started, the token's time, then the wait. */
static void *deferred_sign(void *arg)
{
	struct deferred_signer *s = arg;
	struct ks_audit_pending p;

	for (int i = 0; i < DEFER_SIGNS_EACH; i++) {
		sleep_ms((int)(rand_r(&s->seed) % DEFER_TOKEN_MS));   /* the requests arrive apart */
		if (ks_audit_intent_start(s->a, &alice, "sign", "web", NULL, NULL, NULL, &p) != 0) {
			s->failed++;
			continue;
		}
		sleep_ms(DEFER_TOKEN_MS);
		if (ks_audit_intent_wait(s->a, &alice, "sign", "web", &p) != 0)
			s->failed++;
		else if (__atomic_load_n(&durable_lines, __ATOMIC_SEQ_CST) < (int)p.seq)
			s->not_durable++;
		ks_audit_outcome(s->a, &alice, "sign", "web", NULL, p.seq, "ok");
	}
	return NULL;
}

/*
 * With a token that takes DEFER_TOKEN_MS per signature and requests that
 * arrive apart, the syncer waits until shortly before the answers are due:
 * one fdatasync covers the intents of several requests (a sync started at
 * each intent would take about one each), and still no wait returns
 * before its record is durable.
 */
static void test_sync_deferred(void **state)
{
	struct deferred_signer s[DEFER_SIGNERS];
	pthread_t t[DEFER_SIGNERS];
	char dir[64], path[96];
	struct ks_audit *a;
	int intents = DEFER_SIGNERS * DEFER_SIGNS_EACH;

	(void)state;
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	a = open_ok(path);
	durable_lines = 0;
	durable_path = path;
	sync_calls = 0;
	for (int i = 0; i < DEFER_SIGNERS; i++) {
		s[i] = (struct deferred_signer){ .a = a, .seed = 7u * (unsigned)i + 1u };
		assert_int_equal(pthread_create(&t[i], NULL, deferred_sign, &s[i]), 0);
	}
	for (int i = 0; i < DEFER_SIGNERS; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(s[i].failed, 0);
		assert_int_equal(s[i].not_durable, 0);
	}
	print_message("%d intents, %d syncs (ks_audit_syncs: %llu)\n", intents, sync_calls,
		      (unsigned long long)ks_audit_syncs(a));
	assert_int_equal((uint64_t)sync_calls, ks_audit_syncs(a));
	/* About one sync per intent when each starts one; a third of that or fewer when deferred. */
	assert_true(sync_calls * 2 <= intents);
	ks_audit_close(a);
	durable_path = NULL;
	remove_dir(dir);
}

/*
 * A request the token answers sooner than it taught the log to expect
 * does not wait for the syncer's deadline: it syncs at once itself.
 */
static void test_sync_early_answer(void **state)
{
	struct ks_audit_pending p;
	char dir[64], path[96];
	struct ks_audit *a;
	struct timespec t0, t1;
	double waited_ms;

	(void)state;
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	a = open_ok(path);
	durable_lines = 0;
	durable_path = path;
	/* Taught: the token takes 400 ms, so the syncer would wait about 300 ms. */
	for (int i = 0; i < 4; i++) {
		assert_int_equal(ks_audit_intent_start(a, &alice, "sign", "web", NULL, NULL, NULL, &p), 0);
		sleep_ms(400);
		assert_int_equal(ks_audit_intent_wait(a, &alice, "sign", "web", &p), 0);
	}
	assert_int_equal(ks_audit_intent_start(a, &alice, "sign", "web", NULL, NULL, NULL, &p), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(ks_audit_intent_wait(a, &alice, "sign", "web", &p), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(__atomic_load_n(&durable_lines, __ATOMIC_SEQ_CST) >= (int)p.seq);
	waited_ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	print_message("an early answer waited %.1f ms for its sync\n", waited_ms);
	/* Far below the ~300 ms the syncer would have waited; a sync here takes a few ms. */
	assert_true(waited_ms < 150);
	ks_audit_close(a);
	durable_path = NULL;
	remove_dir(dir);
}

/*
 * "Durably written": each intent waits for a sync that started after it
 * was written (outcomes do not); with audit_sync none nothing is synced;
 * a failed sync refuses the intent (the record is in the file, and its
 * outcome names it) until a sync succeeds again.
 */
static void test_intent_synced(void **state)
{
	struct ks_audit_options none = { .sync = KS_AUDIT_SYNC_NONE };
	char dir[64], path[96], err[512], *text;
	struct ks_audit *a;
	uint64_t seq = 0;
	json_t *o;
	int r;

	(void)state;
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	a = open_ok(path);
	sync_calls = 0;
	sign_n(a, 3);
	assert_int_equal(sync_calls, 3);
	ks_audit_log(a, &alice, "hello", NULL, "ok");
	assert_int_equal(sync_calls, 3);

	sync_fail = 1;
	r = ks_audit_intent(a, &alice, "sign", "web", NULL, NULL, NULL, &seq);
	sync_fail = 0;
	assert_int_equal(r, -EIO);
	assert_int_equal(seq, 8);
	ks_audit_outcome(a, &alice, "sign", "web", NULL, seq, "audit-unavailable");
	assert_int_equal(ks_audit_intent(a, &alice, "sign", "web", NULL, NULL, NULL, &seq), 0);
	assert_int_equal(seq, 10);
	ks_audit_close(a);
	text = slurp(path, NULL);
	assert_int_equal(count_lines(text), 10);
	o = line_json(text, 9);
	assert_int_equal(json_integer_value(json_object_get(o, "intent")), 8);
	assert_null(json_object_get(o, "lost"));
	json_decref(o);
	free(text);
	assert_int_equal(unlink(path), 0);

	assert_int_equal(ks_audit_open(path, &none, &a, err, sizeof(err)), 0);
	sync_calls = 0;
	sign_n(a, 3);
	ks_audit_close(a);
	assert_int_equal(sync_calls, 0);
	remove_dir(dir);
}

/*
 * The case: the log on a full 64 KiB file system (a tmpfs in a
 * private mount namespace; root only). Every intent either is written
 * whole and durably, or is refused; the file ends with a newline and its
 * chain is intact. @coalesce: one intent stays outstanding throughout, so
 * every outcome record is held and written with the next intent (fewer
 * writes than intents and outcomes), and on the full file system each
 * such batch is rolled back whole.
 */
static void full_filesystem(int coalesce)
{
	char dir[64];
	pid_t pid;
	int st;

	if (geteuid() != 0)
		skip();
	make_dir(dir);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		char path[96], why[256], *text, *line, *save = NULL;
		struct ks_auditchain_verifier v;
		struct ks_audit *a;
		int written = 0, refused = 0, intents = 0;
		uint64_t outstanding = 0;
		size_t len;

		if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
		    mount("tmpfs", dir, "tmpfs", 0, "size=64k,mode=0700") != 0)
			_exit(77);
		snprintf(path, sizeof(path), "%s/audit.log", dir);
		a = open_ok(path);
		if (coalesce) {
			ks_audit_set_hold_ns(a, HOLD_LONG_NS);
			if (ks_audit_intent(a, &alice, "sign", "other", NULL, NULL, NULL, &outstanding) != 0)
				_exit(13);
			written++;
		}
		for (int i = 0; i < 1200; i++) {
			uint64_t seq = 0;

			if (ks_audit_intent(a, &alice, "sign", "web", "sha256", ks_auditchain_zero, NULL, &seq) == 0) {
				written++;
				ks_audit_outcome(a, &alice, "sign", "web", NULL, seq, "ok");
			} else {
				refused++;
				ks_audit_outcome(a, &alice, "sign", "web", NULL, 0, "audit-unavailable");
			}
		}
		/* About one write per intent: its own record and the outcome before it. */
		if (coalesce && ks_audit_writes(a) > 1200 + 10)
			_exit(14);
		ks_audit_close(a);
		text = slurp(path, &len);
		if (written == 0 || refused == 0 || len == 0 || text[len - 1] != '\n')
			_exit(10);
		memset(&v, 0, sizeof(v));
		for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
			if (ks_auditchain_verify(&v, line, strlen(line), 0, why, sizeof(why)) != KS_AUDIT_INTACT)
				_exit(11);
			intents += strstr(line, "\"phase\":\"intent\"") != NULL;
		}
		if (intents != written)
			_exit(12);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	rmdir(dir);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77)
		skip();
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_full_filesystem(void **state)
{
	(void)state;
	full_filesystem(0);
}

static void test_full_filesystem_coalesced(void **state)
{
	(void)state;
	full_filesystem(1);
}

/* ---- outcome records held and written with the next record ---- */

/* The last line of @path, parsed. */
static json_t *last_line(const char *path)
{
	char *text = slurp(path, NULL);
	json_t *o = line_json(text, count_lines(text));

	free(text);
	return o;
}

/* Wait up to @ms for @path to have @lines lines; the milliseconds it took, or -1. */
static int wait_lines(const char *path, int lines, int ms)
{
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &t1);
		int took = (int)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);

		if (file_lines(path) >= lines)
			return took;
		if (took > ms)
			return -1;
		usleep(500);
	}
}

/* Every line of @path chained to the one before. */
static void chain_intact(const char *path)
{
	char *text = slurp(path, NULL), *line, *save = NULL, why[256];
	struct ks_auditchain_verifier v;
	int n = 0;

	memset(&v, 0, sizeof(v));
	for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
		if (ks_auditchain_verify(&v, line, strlen(line), n++ == 0, why, sizeof(why)) ==
		    KS_AUDIT_BAD)
			fail_msg("%s line %d: %s", path, n, why);
	free(text);
}

/*
 * While another request's intent is outstanding, an outcome record is
 * held: it is not in the file when ks_audit_outcome() returns, and the
 * next intent writes it and itself with one write(2), in chain order.
 * With nothing outstanding it is written at once.
 */
static void test_outcomes_coalesced(void **state)
{
	char dir[64], path[96];
	uint64_t x = 0, s1 = 0, s2 = 0, w0;
	struct ks_audit *a;
	json_t *o;

	(void)state;
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	a = open_ok(path);
	ks_audit_set_hold_ns(a, HOLD_LONG_NS);
	assert_int_equal(ks_audit_intent(a, &alice, "sign", "other", NULL, NULL, NULL, &x), 0);
	assert_int_equal(ks_audit_intent(a, &alice, "sign", "web", NULL, NULL, NULL, &s1), 0);
	assert_int_equal(file_lines(path), 2);
	w0 = ks_audit_writes(a);
	ks_audit_outcome(a, &alice, "sign", "web", "tls", s1, "ok");
	ks_audit_log(a, &alice, "hello", NULL, "ok");
	assert_int_equal(file_lines(path), 2);
	assert_int_equal(ks_audit_writes(a), w0);
	assert_int_equal(ks_audit_intent(a, &alice, "sign", "web", NULL, NULL, NULL, &s2), 0);
	assert_int_equal(s2, 5);
	assert_int_equal(file_lines(path), 5);
	assert_int_equal(ks_audit_writes(a), w0 + 1);
	o = last_line(path);
	assert_string_equal(json_string_value(json_object_get(o, "phase")), "intent");
	json_decref(o);
	/* The intent outstanding is answered: nothing else is, so its outcome is written at once. */
	ks_audit_outcome(a, &alice, "sign", "web", NULL, s2, "ok");
	assert_int_equal(file_lines(path), 5);
	ks_audit_outcome(a, &alice, "sign", "other", NULL, x, "ok");
	assert_int_equal(file_lines(path), 7);
	assert_int_equal(ks_audit_writes(a), w0 + 2);
	o = last_line(path);
	assert_int_equal(json_integer_value(json_object_get(o, "intent")), 1);
	assert_int_equal(json_integer_value(json_object_get(o, "seq")), 7);
	json_decref(o);
	/* ks_audit_flush() (an exit with a request stuck in the token) writes what is held. */
	assert_int_equal(ks_audit_intent(a, &alice, "sign", "other", NULL, NULL, NULL, &x), 0);
	ks_audit_log(a, &alice, "hello", NULL, "ok");
	assert_int_equal(file_lines(path), 8);
	assert_int_equal(ks_audit_flush(a), 0);
	assert_int_equal(file_lines(path), 9);
	assert_int_equal(ks_audit_flush(NULL), 0);
	ks_audit_close(a);
	chain_intact(path);
	remove_dir(dir);
}

/*
 * A held outcome record with nothing written after it reaches the file
 * within the bound (10 ms; allowed far more here for a loaded machine),
 * with audit_sync data and none; close writes one still held.
 */
static void test_outcome_delay_bounded(void **state)
{
	struct ks_audit_options none = { .sync = KS_AUDIT_SYNC_NONE };
	char dir[64], path[96], err[512];
	struct ks_audit *a;
	uint64_t x = 0;
	int took;

	(void)state;
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	for (int mode = 0; mode < 2; mode++) {
		unlink(path);
		assert_int_equal(ks_audit_open(path, mode ? &none : NULL, &a, err, sizeof(err)), 0);
		assert_int_equal(ks_audit_intent(a, &alice, "sign", "other", NULL, NULL, NULL, &x), 0);
		for (int i = 0; i < 3; i++) {
			struct timespec t0, t1;
			int lines;

			clock_gettime(CLOCK_MONOTONIC, &t0);
			ks_audit_log(a, &alice, "hello", NULL, "ok");
			lines = file_lines(path);
			clock_gettime(CLOCK_MONOTONIC, &t1);
			/* Held, unless this thread was kept from running past the deadline. */
			if ((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec) < 5000000)
				assert_int_equal(lines, 1 + i);
			took = wait_lines(path, 2 + i, 2000);
			print_message("audit_sync %s: a held outcome written after %d ms\n",
				      mode ? "none" : "data", took);
			assert_true(took >= 0);
		}
		ks_audit_log(a, &alice, "hello", NULL, "ok");
		ks_audit_close(a);
		assert_int_equal(file_lines(path), 5);
		chain_intact(path);
	}
	remove_dir(dir);
}

/*
 * A sync covers every record chained before it: one held when a request
 * syncs its intent itself is written first and made durable with it.
 */
static void test_sync_covers_held(void **state)
{
	struct ks_audit_pending p;
	char dir[64], path[96];
	struct ks_audit *a;

	(void)state;
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	a = open_ok(path);
	ks_audit_set_hold_ns(a, HOLD_LONG_NS);
	durable_lines = 0;
	durable_path = path;
	/* Taught: the token takes 150 ms, so the syncer waits tens of ms after an intent. */
	for (int i = 0; i < 4; i++) {
		assert_int_equal(ks_audit_intent_start(a, &alice, "sign", "web", NULL, NULL, NULL, &p), 0);
		sleep_ms(150);
		assert_int_equal(ks_audit_intent_wait(a, &alice, "sign", "web", &p), 0);
	}
	assert_int_equal(ks_audit_intent_start(a, &alice, "sign", "web", NULL, NULL, NULL, &p), 0);
	ks_audit_log(a, &alice, "hello", NULL, "ok");   /* held: intents are outstanding */
	assert_int_equal(ks_audit_intent_wait(a, &alice, "sign", "web", &p), 0);
	assert_int_equal(file_lines(path), 6);
	assert_int_equal(__atomic_load_n(&durable_lines, __ATOMIC_SEQ_CST), 6);
	ks_audit_close(a);
	durable_path = NULL;
	remove_dir(dir);
}

/*
 * SIGHUP after a rotation: a held outcome goes to the end of the old file
 * (and its sync), the new file's first record chains to it.
 */
static void test_reopen_writes_held(void **state)
{
	char dir[64], path[96], old[96], out[4096];
	const char *files[] = { old, path, NULL };
	struct ks_audit *a;
	uint64_t x = 0;
	json_t *o;
	int r;

	(void)state;
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	snprintf(old, sizeof(old), "%s/audit.log.1", dir);
	a = open_ok(path);
	ks_audit_set_hold_ns(a, HOLD_LONG_NS);
	assert_int_equal(ks_audit_intent(a, &alice, "sign", "other", NULL, NULL, NULL, &x), 0);
	ks_audit_log(a, &alice, "hello", NULL, "ok");
	assert_int_equal(file_lines(path), 1);
	assert_int_equal(rename(path, old), 0);
	assert_int_equal(ks_audit_reopen(a), 0);
	assert_int_equal(file_lines(old), 2);
	o = last_line(old);
	assert_string_equal(json_string_value(json_object_get(o, "op")), "hello");
	json_decref(o);
	ks_audit_outcome(a, &alice, "sign", "other", NULL, x, "ok");
	ks_audit_close(a);
	assert_int_equal(file_lines(path), 1);
	if ((r = run_verify(files, out, sizeof(out))) != -1)
		assert_int_equal(r, 0);
	remove_dir(dir);
}

/*
 * A write of held outcome records and the intent after them that falls
 * short (RLIMIT_FSIZE) is rolled back whole: the file keeps its size, the
 * intent is refused, all four records count as lost in the next record
 * written, which chains to the last record in the file.
 */
static void test_batch_rolled_back(void **state)
{
	char dir[64], path[96], h[KS_AUDIT_HASH_HEX], out[4096];
	const char *files[] = { path, NULL };
	struct rlimit old, lim;
	struct stat st;
	uint64_t x = 0, s[3], d = 99;
	off_t before, after;
	struct ks_audit *a;
	char *text;
	json_t *o;
	int r;

	(void)state;
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	a = open_ok(path);
	ks_audit_set_hold_ns(a, HOLD_LONG_NS);
	assert_int_equal(ks_audit_intent(a, &alice, "sign", "other", NULL, NULL, NULL, &x), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(ks_audit_intent(a, &alice, "sign", "web", NULL, NULL, NULL, &s[i]), 0);
	for (int i = 0; i < 3; i++)
		ks_audit_outcome(a, &alice, "sign", "web", NULL, s[i], "ok");
	assert_int_equal(file_lines(path), 4);
	assert_int_equal(stat(path, &st), 0);
	before = st.st_size;
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)before + 300;      /* room for one or two records, not four */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	r = ks_audit_intent(a, &alice, "sign", "web", NULL, NULL, NULL, &d);
	after = stat(path, &st) == 0 ? st.st_size : -1;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(r, -EFBIG);
	assert_int_equal(d, 0);
	assert_int_equal(after, before);
	ks_audit_outcome(a, &alice, "sign", "other", NULL, x, "ok");
	ks_audit_close(a);
	text = slurp(path, NULL);
	assert_int_equal(count_lines(text), 5);
	o = line_json(text, 5);
	assert_int_equal(json_integer_value(json_object_get(o, "lost")), 4);
	assert_int_equal(json_integer_value(json_object_get(o, "seq")), 5);
	assert_int_equal(json_integer_value(json_object_get(o, "intent")), (json_int_t)x);
	line_hash(text, 4, h);
	assert_string_equal(json_string_value(json_object_get(o, "prev")), h);
	json_decref(o);
	free(text);
	chain_intact(path);
	if ((r = run_verify(files, out, sizeof(out))) != -1)
		assert_int_equal(r, 0);
	remove_dir(dir);
}

/* A file or directory another user could have placed or could rewrite is refused. */
static void test_refuses_unsafe(void **state)
{
	char dir[64], path[96], old[96], err[512];
	struct stat st;
	struct ks_audit *a = NULL;
	int fd;

	(void)state;
	make_dir(dir);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	snprintf(old, sizeof(old), "%s/audit.log.1", dir);

	assert_true((fd = open(path, O_WRONLY | O_CREAT, 0600)) >= 0);
	assert_int_equal(fchmod(fd, 0666), 0);
	close(fd);
	assert_int_equal(ks_audit_open(path, NULL, &a, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "writable by group or others"));
	assert_non_null(strstr(err, path));
	assert_int_equal(chmod(path, 0640), 0);

	if (geteuid() == 0) {
		assert_int_equal(chown(path, 65534, 65534), 0);
		assert_int_equal(ks_audit_open(path, NULL, &a, err, sizeof(err)), -EACCES);
		assert_non_null(strstr(err, "owned by uid 65534"));
		assert_int_equal(chown(path, 0, 0), 0);
	}

	assert_int_equal(chmod(dir, 0777), 0);
	assert_int_equal(ks_audit_open(path, NULL, &a, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "writable by group or others"));
	assert_int_equal(chmod(dir, 0700), 0);

	assert_int_equal(unlink(path), 0);
	assert_int_equal(symlink("/etc/passwd", path), 0);
	assert_int_equal(ks_audit_open(path, NULL, &a, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "symbolic link"));
	assert_int_equal(unlink(path), 0);

	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(ks_audit_open(path, NULL, &a, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "not a regular file"));
	assert_int_equal(unlink(path), 0);

	/* A reopen (SIGHUP) onto an unsafe file keeps writing to the old one. */
	a = open_ok(path);
	assert_int_equal(rename(path, old), 0);
	assert_true((fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600)) >= 0);
	assert_int_equal(fchmod(fd, 0622), 0);
	close(fd);
	assert_int_equal(ks_audit_reopen(a), -EACCES);
	ks_audit_log(a, &alice, "hello", NULL, "ok");
	ks_audit_close(a);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 0);
	assert_int_equal(stat(old, &st), 0);
	assert_true(st.st_size > 0);
	remove_dir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines),
		cmocka_unit_test(test_null),
		cmocka_unit_test(test_format_parts),
		cmocka_unit_test(test_hash_ctx),
		cmocka_unit_test(test_time),
		cmocka_unit_test(test_chain_rotation_restart),
		cmocka_unit_test(test_verify_tampering),
		cmocka_unit_test(test_partial_tail_removed),
		cmocka_unit_test(test_short_write_rolled_back),
		cmocka_unit_test(test_continue_mode),
		cmocka_unit_test(test_concurrent_chain),
		cmocka_unit_test(test_intent_synced),
		cmocka_unit_test(test_group_commit),
		cmocka_unit_test(test_sync_deferred),
		cmocka_unit_test(test_sync_early_answer),
		cmocka_unit_test(test_full_filesystem),
		cmocka_unit_test(test_full_filesystem_coalesced),
		cmocka_unit_test(test_outcomes_coalesced),
		cmocka_unit_test(test_outcome_delay_bounded),
		cmocka_unit_test(test_sync_covers_held),
		cmocka_unit_test(test_reopen_writes_held),
		cmocka_unit_test(test_batch_rolled_back),
		cmocka_unit_test(test_refuses_unsafe),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
