/*
 * The audit log: every line is one JSON object with exactly the documented
 * fields, whether ks_audit_log() formats it directly (names that need no
 * escaping, the daemon's case) or through jansson (anything else).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "keysvc/audit.h"

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines),
		cmocka_unit_test(test_null),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
