/* The access policy: parsing that refuses typos, matching that denies by default. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keysvc/policy.h"
#include "proto/sigform.h"

static struct ks_policy *load(const char *json, int expect, char *err, size_t err_len)
{
	struct ks_policy *p = (struct ks_policy *)&p;
	json_error_t jerr;
	json_t *rules = json_loads(json, JSON_DECODE_ANY, &jerr);

	if (rules == NULL)
		fail_msg("test JSON does not parse: %s: %s", json, jerr.text);
	err[0] = '\0';
	assert_int_equal(ks_policy_from_json(rules, &p, err, err_len), expect);
	json_decref(rules);
	if (expect != 0)
		assert_null(p);
	else
		assert_non_null(p);
	return p;
}

static void test_op_names(void **state)
{
	static const char *const names[KS_OP_COUNT] = {
		"hello", "key.generate", "key.list", "key.public", "key.delete",
		"csr.create", "sign", "cert.put", "cert.get",
	};

	(void)state;
	for (int op = 0; op < KS_OP_COUNT; op++) {
		assert_string_equal(ks_op_name((enum ks_op)op), names[op]);
		assert_int_equal(ks_op_from_name(names[op]), op);
		assert_int_equal(ks_op_from_name(ks_op_name((enum ks_op)op)), op);
	}
	assert_int_equal(ks_op_from_name("sign"), KS_OP_SIGN);
	assert_int_equal(ks_op_from_name("csr.create"), KS_OP_CSR_CREATE);
	assert_int_equal(ks_op_from_name("Sign"), -1);
	assert_int_equal(ks_op_from_name("sign "), -1);
	assert_int_equal(ks_op_from_name("key"), -1);
	assert_int_equal(ks_op_from_name("key.*"), -1);
	assert_int_equal(ks_op_from_name("*"), -1);
	assert_int_equal(ks_op_from_name(""), -1);
	assert_int_equal(ks_op_from_name(NULL), -1);
	assert_null(ks_op_name(KS_OP_COUNT));
	assert_null(ks_op_name((enum ks_op)-1));
	assert_null(ks_op_name((enum ks_op)1000));
}

#define R(body) "{" body "}"
#define OK_RULE R("\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"sign\"]")

static void test_parse_errors(void **state)
{
	static const struct {
		const char *json, *msg;
	} cases[] = {
		/* Not an array of rules. */
		{ "{}", "policy: must be an array of rules" },
		{ "\"rules\"", "policy: must be an array of rules" },
		{ "null", "policy: must be an array of rules" },
		/* A rule that is not an object. */
		{ "[1]", "policy rule 1: " },
		{ "[" OK_RULE ",[]]", "policy rule 2: " },
		/* No uid, no gid. */
		{ "[" R("\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: uid: a rule needs uid or gid" },
		{ "[" R("\"comment\":\"x\",\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: uid: a rule needs uid or gid" },
		/* keys and ops: required, non-empty, well typed. */
		{ "[" R("\"uid\":0,\"ops\":[\"sign\"]") "]", "policy rule 1: keys: required field missing" },
		{ "[" R("\"uid\":0,\"keys\":[\"*\"]") "]", "policy rule 1: ops: required field missing" },
		{ "[" R("\"uid\":0,\"keys\":[],\"ops\":[\"sign\"]") "]", "policy rule 1: keys: must not be empty" },
		{ "[" R("\"uid\":0,\"keys\":[\"*\"],\"ops\":[]") "]", "policy rule 1: ops: must not be empty" },
		{ "[" R("\"uid\":0,\"keys\":\"*\",\"ops\":[\"sign\"]") "]", "policy rule 1: keys: " },
		{ "[" R("\"uid\":0,\"keys\":[\"*\"],\"ops\":\"sign\"") "]", "policy rule 1: ops: " },
		{ "[" R("\"uid\":0,\"keys\":[1],\"ops\":[\"sign\"]") "]", "policy rule 1: keys: " },
		/* Unknown operations. */
		{ "[" R("\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"sing\"]") "]", "policy rule 1: ops \"sing\": unknown operation" },
		{ "[" R("\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"sign\",\"Sign\"]") "]", "policy rule 1: ops \"Sign\": unknown operation" },
		{ "[" R("\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"*\"]") "]", "policy rule 1: ops \"*\": unknown operation" },
		/* Purposes: known names, each once, only on a rule that grants a use of a key. */
		{ "[" R("\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"sign\"],\"purposes\":[\"tsl\"]") "]",
		  "policy rule 1: purposes: unknown purpose" },
		{ "[" R("\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"sign\"],\"purposes\":[\"tls\",\"tls\"]") "]",
		  "policy rule 1: purposes: duplicate purpose" },
		{ "[" R("\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"sign\"],\"purposes\":[]") "]",
		  "policy rule 1: purposes: " },
		{ "[" R("\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"sign\"],\"purposes\":\"tls\"") "]",
		  "policy rule 1: purposes: " },
		{ "[" R("\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"key.public\"],\"purposes\":[\"tls\"]") "]",
		  "policy rule 1: purposes: limits sign and csr.create, which the rule does not grant" },
		/* Unknown fields, including near misses. */
		{ "[" R("\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"sign\"],\"extra\":1") "]", "policy rule 1: extra: unknown field" },
		{ "[" R("\"uid\":0,\"key\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: key: unknown field" },
		{ "[" R("\"user\":\"root\",\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: user: unknown field" },
		/* Unknown users and groups. */
		{ "[" R("\"uid\":\"no-such-user-xyz\",\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: uid \"no-such-user-xyz\": unknown user" },
		{ "[" R("\"gid\":\"no-such-group-xyz\",\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: gid \"no-such-group-xyz\": unknown group" },
		{ "[" R("\"uid\":0,\"gid\":\"no-such-group-xyz\",\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: gid \"no-such-group-xyz\": unknown group" },
		/* A group name is not a user name. */
		{ "[" R("\"uid\":\"nogroup\",\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: uid \"nogroup\": unknown user" },
		/* Ids out of range or of the wrong type. */
		{ "[" R("\"uid\":-1,\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: uid: " },
		{ "[" R("\"uid\":4294967295,\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: uid: " },
		{ "[" R("\"gid\":4294967296,\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: gid: " },
		{ "[" R("\"uid\":\"-1\",\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: uid \"-1\": " },
		{ "[" R("\"uid\":\"4294967295\",\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: uid \"4294967295\": " },
		{ "[" R("\"uid\":\"\",\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: uid \"\": " },
		{ "[" R("\"uid\":1.5,\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: uid: " },
		{ "[" R("\"uid\":true,\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: uid: " },
		{ "[" R("\"uid\":null,\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: uid: " },
		{ "[" R("\"gid\":[0],\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: gid: " },
		/* Not quite a number: looked up as a name, and there is none. */
		{ "[" R("\"uid\":\" 0\",\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: uid \" 0\": unknown user" },
		{ "[" R("\"uid\":\"+0\",\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: uid \"+0\": unknown user" },
		{ "[" R("\"uid\":\"0x10\",\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: uid \"0x10\": unknown user" },
		{ "[" R("\"gid\":\" -18446744073709551615\",\"keys\":[\"*\"],\"ops\":[\"sign\"]") "]", "policy rule 1: gid \" -18446744073709551615\": unknown group" },
		/* Patterns: empty or longer than 128 bytes. */
		{ "[" R("\"uid\":0,\"keys\":[\"\"],\"ops\":[\"sign\"]") "]", "policy rule 1: keys \"\": pattern empty or too long" },
		{ "[" R("\"uid\":0,\"keys\":[\"a\",\""
			"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
			"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
			"\"],\"ops\":[\"sign\"]") "]", "policy rule 1: keys \"xxxxxxxx" },
		/* comment must be a string. */
		{ "[" R("\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"sign\"],\"comment\":1") "]", "policy rule 1: comment: " },
		/* The rule number is the failing one. */
		{ "[" OK_RULE "," R("\"uid\":0") "]", "policy rule 2: keys: required field missing" },
		{ "[" OK_RULE "," OK_RULE "," R("\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"sign\"],\"x\":1") "]",
		  "policy rule 3: x: unknown field" },
	};
	char err[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ks_policy *p = (struct ks_policy *)err;
		json_t *rules = json_loads(cases[i].json, JSON_DECODE_ANY, NULL);
		int r;

		assert_non_null(rules);
		err[0] = '\0';
		r = ks_policy_from_json(rules, &p, err, sizeof(err));
		json_decref(rules);
		if (r != -EINVAL) {
			ks_policy_unref(p);
			fail_msg("case %zu: %s: returned %d, expected -EINVAL", i, cases[i].json, r);
		}
		assert_null(p);
		if (strncmp(err, cases[i].msg, strlen(cases[i].msg)) != 0)
			fail_msg("case %zu: \"%s\" does not start with \"%s\"", i, err, cases[i].msg);
	}
}

static void test_parse_limits(void **state)
{
	char err[512], pat[200], *json;
	struct ks_policy *p;
	size_t n;

	(void)state;
	/* A 128-byte pattern is fine. */
	memset(pat, 'k', 128);
	pat[128] = '\0';
	json = malloc(512);
	assert_non_null(json);
	snprintf(json, 512, "[{\"uid\":0,\"keys\":[\"%s\"],\"ops\":[\"sign\"]}]", pat);
	p = load(json, 0, err, sizeof(err));
	{
		struct ks_peer root = { .uid = 0, .gid = 0 };

		assert_true(ks_policy_allows(p, &root, KS_OP_SIGN, pat));
		pat[127] = 'j';
		assert_false(ks_policy_allows(p, &root, KS_OP_SIGN, pat));
	}
	ks_policy_unref(p);
	free(json);

	/* 1024 rules are fine, 1025 are refused. */
	json = malloc(1025 * (sizeof(OK_RULE) + 1) + 4);
	assert_non_null(json);
	for (size_t rules = 1024; rules <= 1025; rules++) {
		n = 0;
		json[n++] = '[';
		for (size_t i = 0; i < rules; i++)
			n += (size_t)sprintf(json + n, "%s" OK_RULE, i ? "," : "");
		json[n++] = ']';
		json[n] = '\0';
		p = load(json, rules == 1024 ? 0 : -EINVAL, err, sizeof(err));
		if (rules == 1024) {
			assert_int_equal(ks_policy_size(p), 1024);
			ks_policy_unref(p);
		} else {
			assert_non_null(strstr(err, "1024"));
		}
	}
	free(json);

	/* An error after earlier rules and patterns were built frees them (valgrind). */
	load("[" OK_RULE ",{\"uid\":0,\"keys\":[\"a\",\"b\",\"\"],\"ops\":[\"sign\"]}]", -EINVAL,
	     err, sizeof(err));
	assert_string_equal(err, "policy rule 2: keys \"\": pattern empty or too long");

	/* A small error buffer is never overrun and stays terminated. */
	{
		char small[12];
		struct ks_policy *q = NULL;
		json_t *rules = json_loads("[{\"uid\":\"no-such-user-xyz\",\"keys\":[\"*\"],\"ops\":[\"sign\"]}]", 0, NULL);

		memset(small, 'Z', sizeof(small));
		assert_int_equal(ks_policy_from_json(rules, &q, small, 8), -EINVAL);
		assert_string_equal(small, "policy ");
		assert_int_equal(small[8], 'Z');
		json_decref(rules);
	}
}

static void test_ids(void **state)
{
	char err[256];
	struct ks_policy *p = load(
		"[{\"uid\": \"root\", \"keys\": [\"u-root\"], \"ops\": [\"sign\"]},"
		" {\"uid\": \"nobody\", \"keys\": [\"u-nobody\"], \"ops\": [\"sign\"]},"
		" {\"uid\": \"1234\", \"keys\": [\"u-1234\"], \"ops\": [\"sign\"]},"
		" {\"uid\": 4294967294, \"keys\": [\"u-max\"], \"ops\": [\"sign\"]},"
		" {\"gid\": \"nogroup\", \"keys\": [\"g-nogroup\"], \"ops\": [\"sign\"]},"
		" {\"gid\": \"root\", \"keys\": [\"g-root\"], \"ops\": [\"sign\"]},"
		" {\"gid\": \"4321\", \"keys\": [\"g-4321\"], \"ops\": [\"sign\"]},"
		" {\"gid\": 0, \"keys\": [\"g-0\"], \"ops\": [\"sign\"]}]",
		0, err, sizeof(err));
	struct ks_peer root = { .uid = 0, .gid = 0 };
	struct ks_peer nobody = { .uid = 65534, .gid = 65534 };
	struct ks_peer u1234 = { .uid = 1234, .gid = 1234 };
	struct ks_peer umax = { .uid = 4294967294u, .gid = 1 };
	struct ks_peer g4321 = { .uid = 999, .gid = 4321 };

	(void)state;
	assert_int_equal(ks_policy_size(p), 8);
	assert_true(ks_policy_allows(p, &root, KS_OP_SIGN, "u-root"));
	assert_true(ks_policy_allows(p, &root, KS_OP_SIGN, "g-root"));
	assert_true(ks_policy_allows(p, &root, KS_OP_SIGN, "g-0"));
	assert_false(ks_policy_allows(p, &root, KS_OP_SIGN, "u-nobody"));
	assert_true(ks_policy_allows(p, &nobody, KS_OP_SIGN, "u-nobody"));
	assert_true(ks_policy_allows(p, &nobody, KS_OP_SIGN, "g-nogroup"));
	assert_false(ks_policy_allows(p, &nobody, KS_OP_SIGN, "u-root"));
	assert_false(ks_policy_allows(p, &nobody, KS_OP_SIGN, "g-root"));
	assert_true(ks_policy_allows(p, &u1234, KS_OP_SIGN, "u-1234"));
	assert_false(ks_policy_allows(p, &u1234, KS_OP_SIGN, "g-4321"));
	assert_true(ks_policy_allows(p, &umax, KS_OP_SIGN, "u-max"));
	assert_true(ks_policy_allows(p, &g4321, KS_OP_SIGN, "g-4321"));
	assert_false(ks_policy_allows(p, &g4321, KS_OP_SIGN, "u-1234"));
	ks_policy_unref(p);
}

static void test_matching(void **state)
{
	char err[256];
	struct ks_policy *p = load(
		"[{\"uid\": 1000, \"keys\": [\"web-*\", \"exact\"], \"ops\": [\"sign\", \"csr.create\"]},"
		" {\"gid\": 2000, \"keys\": [\"*\"], \"ops\": [\"key.public\"]},"
		" {\"uid\": 1001, \"gid\": 3000, \"keys\": [\"both\"], \"ops\": [\"sign\"]},"
		" {\"uid\": \"root\", \"keys\": [\"r-*\"], \"ops\": [\"key.generate\", \"key.list\"], \"comment\": \"ops\"},"
		" {\"uid\": 1002, \"keys\": [\"*\"], \"ops\": [\"key.delete\"]},"
		" {\"uid\": 1003, \"keys\": [\"k-?\", \"[ab]-*\"], \"ops\": [\"cert.get\"]}]",
		0, err, sizeof(err));
	struct ks_peer alice = { .uid = 1000, .gid = 1000 };
	struct ks_peer grp = { .uid = 5000, .gid = 5000, .ngroups = 2, .groups = { 17, 2000 } };
	struct ks_peer primary = { .uid = 5001, .gid = 2000 };
	struct ks_peer both = { .uid = 1001, .gid = 3000 };
	struct ks_peer both_supp = { .uid = 1001, .gid = 1001, .ngroups = 1, .groups = { 3000 } };
	struct ks_peer half = { .uid = 1001, .gid = 1001 };
	struct ks_peer other_half = { .uid = 1111, .gid = 3000 };
	struct ks_peer root = { .uid = 0, .gid = 0 };
	struct ks_peer nobody = { .uid = 65534, .gid = 65534 };
	struct ks_peer deleter = { .uid = 1002, .gid = 1002 };
	struct ks_peer globber = { .uid = 1003, .gid = 1003 };
	struct ks_peer stale = { .uid = 5000, .gid = 5000, .ngroups = 0, .groups = { 2000 } };

	(void)state;
	assert_int_equal(ks_policy_size(p), 6);
	/* uid rule, prefix pattern and exact name. */
	assert_true(ks_policy_allows(p, &alice, KS_OP_SIGN, "web-1"));
	assert_true(ks_policy_allows(p, &alice, KS_OP_SIGN, "web-"));
	assert_true(ks_policy_allows(p, &alice, KS_OP_CSR_CREATE, "web-a.b"));
	assert_true(ks_policy_allows(p, &alice, KS_OP_CSR_CREATE, "exact"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_SIGN, "exact-not"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_SIGN, "xexact"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_SIGN, "Exact"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_SIGN, "xweb-1"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_SIGN, "WEB-1"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_SIGN, "web"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_SIGN, "db-1"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_SIGN, ""));
	/* Ops not granted. */
	assert_false(ks_policy_allows(p, &alice, KS_OP_KEY_GENERATE, "web-1"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_KEY_DELETE, "web-1"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_KEY_PUBLIC, "web-1"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_CERT_PUT, "web-1"));
	/* gid rule: a supplementary group alone counts, and so does the primary group. */
	assert_true(ks_policy_allows(p, &grp, KS_OP_KEY_PUBLIC, "anything"));
	assert_false(ks_policy_allows(p, &grp, KS_OP_SIGN, "anything"));
	assert_true(ks_policy_allows(p, &primary, KS_OP_KEY_PUBLIC, "anything"));
	/* Groups beyond ngroups are not the peer's. */
	assert_false(ks_policy_allows(p, &stale, KS_OP_KEY_PUBLIC, "anything"));
	/* uid and gid together: both must match (the gid may be supplementary). */
	assert_true(ks_policy_allows(p, &both, KS_OP_SIGN, "both"));
	assert_true(ks_policy_allows(p, &both_supp, KS_OP_SIGN, "both"));
	assert_false(ks_policy_allows(p, &half, KS_OP_SIGN, "both"));
	assert_false(ks_policy_allows(p, &other_half, KS_OP_SIGN, "both"));
	/* Names resolved at load; root has only what a rule gives it. */
	assert_true(ks_policy_allows(p, &root, KS_OP_KEY_GENERATE, "r-1"));
	assert_false(ks_policy_allows(p, &root, KS_OP_SIGN, "r-1"));
	assert_false(ks_policy_allows(p, &root, KS_OP_KEY_GENERATE, "web-1"));
	assert_false(ks_policy_allows(p, &root, KS_OP_KEY_DELETE, "r-1"));
	/* "*" matches any name, but not one with a leading period (FNM_PERIOD). */
	assert_true(ks_policy_allows(p, &deleter, KS_OP_KEY_DELETE, "anything-at-all"));
	assert_true(ks_policy_allows(p, &deleter, KS_OP_KEY_DELETE, "a.b"));
	assert_true(ks_policy_allows(p, &deleter, KS_OP_KEY_DELETE, "x"));
	assert_false(ks_policy_allows(p, &deleter, KS_OP_KEY_DELETE, ".hidden"));
	assert_false(ks_policy_allows(p, &deleter, KS_OP_SIGN, "anything"));
	/* Other fnmatch forms. */
	assert_true(ks_policy_allows(p, &globber, KS_OP_CERT_GET, "k-1"));
	assert_false(ks_policy_allows(p, &globber, KS_OP_CERT_GET, "k-12"));
	assert_false(ks_policy_allows(p, &globber, KS_OP_CERT_GET, "k-"));
	assert_true(ks_policy_allows(p, &globber, KS_OP_CERT_GET, "a-x"));
	assert_true(ks_policy_allows(p, &globber, KS_OP_CERT_GET, "b-"));
	assert_false(ks_policy_allows(p, &globber, KS_OP_CERT_GET, "c-x"));
	/* hello: any peer some rule names, whatever the rule's ops; nobody else. */
	assert_true(ks_policy_allows(p, &alice, KS_OP_HELLO, NULL));
	assert_true(ks_policy_allows(p, &alice, KS_OP_HELLO, "ignored-key"));
	assert_true(ks_policy_allows(p, &grp, KS_OP_HELLO, NULL));
	assert_true(ks_policy_allows(p, &root, KS_OP_HELLO, NULL));
	assert_true(ks_policy_allows(p, &both, KS_OP_HELLO, NULL));
	assert_false(ks_policy_allows(p, &nobody, KS_OP_HELLO, NULL));
	assert_false(ks_policy_allows(p, &half, KS_OP_HELLO, NULL));
	assert_false(ks_policy_allows(p, &other_half, KS_OP_HELLO, NULL));
	/* A NULL key asks whether the op is granted on some key (key.list). */
	assert_true(ks_policy_allows(p, &root, KS_OP_KEY_LIST, NULL));
	assert_true(ks_policy_allows(p, &root, KS_OP_KEY_LIST, "r-1"));
	assert_false(ks_policy_allows(p, &root, KS_OP_KEY_LIST, "web-1"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_KEY_LIST, NULL));
	assert_false(ks_policy_allows(p, &nobody, KS_OP_KEY_LIST, NULL));
	assert_true(ks_policy_allows(p, &alice, KS_OP_SIGN, NULL));
	assert_false(ks_policy_allows(p, &grp, KS_OP_SIGN, NULL));
	/* Nothing for nobody, nothing from a missing policy or for a missing peer. */
	for (int op = 0; op < KS_OP_COUNT; op++) {
		assert_false(ks_policy_allows(p, &nobody, (enum ks_op)op, "web-1"));
		assert_false(ks_policy_allows(NULL, &alice, (enum ks_op)op, "web-1"));
		assert_false(ks_policy_allows(NULL, &root, (enum ks_op)op, NULL));
		assert_false(ks_policy_allows(p, NULL, (enum ks_op)op, "web-1"));
	}
	assert_false(ks_policy_allows(p, &alice, KS_OP_COUNT, "web-1"));
	assert_false(ks_policy_allows(p, &root, (enum ks_op)-1, NULL));
	assert_int_equal(ks_policy_size(NULL), 0);
	ks_policy_unref(p);

	/* An empty policy denies everything, hello included. */
	p = load("[]", 0, err, sizeof(err));
	assert_int_equal(ks_policy_size(p), 0);
	for (int op = 0; op < KS_OP_COUNT; op++) {
		assert_false(ks_policy_allows(p, &root, (enum ks_op)op, "x"));
		assert_false(ks_policy_allows(p, &root, (enum ks_op)op, NULL));
	}
	ks_policy_unref(p);
}

/* ks_policy_purposes(): the union of the matching rules' purposes, a rule without any granting all. */
static void test_purposes(void **state)
{
	char err[256];
	struct ks_policy *p = load(
		"[{\"uid\": 1000, \"keys\": [\"web-*\"], \"ops\": [\"sign\"], \"purposes\": [\"tls\"]},"
		" {\"uid\": 1000, \"keys\": [\"web-csr\"], \"ops\": [\"csr.create\", \"sign\"],"
		" \"purposes\": [\"csr\"]},"
		" {\"uid\": 1001, \"keys\": [\"*\"], \"ops\": [\"sign\"]}]",
		0, err, sizeof(err));
	struct ks_peer web = { .uid = 1000, .gid = 1000 };
	struct ks_peer ops = { .uid = 1001, .gid = 1001 };
	struct ks_peer nobody = { .uid = 65534, .gid = 65534 };

	(void)state;
	assert_int_equal(ks_policy_purposes(p, &web, KS_OP_SIGN, "web-1"), KS_PURPOSE_TLS);
	assert_int_equal(ks_policy_purposes(p, &web, KS_OP_SIGN, "web-csr"),
			 KS_PURPOSE_TLS | KS_PURPOSE_CSR);
	assert_int_equal(ks_policy_purposes(p, &web, KS_OP_CSR_CREATE, "web-csr"), KS_PURPOSE_CSR);
	assert_int_equal(ks_policy_purposes(p, &web, KS_OP_CSR_CREATE, "web-1"), 0);
	assert_int_equal(ks_policy_purposes(p, &web, KS_OP_SIGN, "other"), 0);
	assert_int_equal(ks_policy_purposes(p, &ops, KS_OP_SIGN, "anything"), KS_PURPOSE_ALL);
	assert_int_equal(ks_policy_purposes(p, &nobody, KS_OP_SIGN, "web-1"), 0);
	assert_int_equal(ks_policy_purposes(NULL, &web, KS_OP_SIGN, "web-1"), 0);
	/* The grant itself is unchanged: purposes narrow a use, ks_policy_allows() says whether. */
	assert_true(ks_policy_allows(p, &web, KS_OP_SIGN, "web-1"));
	ks_policy_unref(p);
}

static void test_hello_explicit(void **state)
{
	char err[256];
	/* "hello" may be named; it grants nothing else. */
	struct ks_policy *p = load("[{\"uid\": 7, \"keys\": [\"*\"], \"ops\": [\"hello\"]}]", 0, err, sizeof(err));
	struct ks_peer seven = { .uid = 7, .gid = 7 };

	(void)state;
	assert_true(ks_policy_allows(p, &seven, KS_OP_HELLO, NULL));
	for (int op = KS_OP_HELLO + 1; op < KS_OP_COUNT; op++) {
		assert_false(ks_policy_allows(p, &seven, (enum ks_op)op, "k"));
		assert_false(ks_policy_allows(p, &seven, (enum ks_op)op, NULL));
	}
	ks_policy_unref(p);
}

static void test_many_groups(void **state)
{
	char err[256];
	struct ks_policy *p = load("[{\"gid\": 9999, \"keys\": [\"*\"], \"ops\": [\"sign\"]}]", 0, err, sizeof(err));
	struct ks_peer peer = { .uid = 1, .gid = 1, .ngroups = KS_PEER_MAX_GROUPS };
	struct ks_peer liar = { .uid = 1, .gid = 1, .ngroups = (size_t)-1 };

	(void)state;
	for (size_t i = 0; i < KS_PEER_MAX_GROUPS; i++)
		peer.groups[i] = (gid_t)(100 + i);
	assert_false(ks_policy_allows(p, &peer, KS_OP_SIGN, "k"));
	peer.groups[KS_PEER_MAX_GROUPS - 1] = 9999;
	assert_true(ks_policy_allows(p, &peer, KS_OP_SIGN, "k"));
	/* ngroups above the array is bounded by it. */
	assert_false(ks_policy_allows(p, &liar, KS_OP_SIGN, "k"));
	ks_policy_unref(p);
}

/* Named by a rule: by uid, by primary or supplementary group, or both at once. */
static void test_knows_peer(void **state)
{
	char err[256];
	struct ks_policy *p = load("[{\"uid\": 7, \"keys\": [\"a\"], \"ops\": [\"sign\"]},"
				   " {\"gid\": 50, \"keys\": [\"*\"], \"ops\": [\"key.list\"]},"
				   " {\"uid\": 8, \"gid\": 60, \"keys\": [\"*\"], \"ops\": [\"sign\"]}]",
				   0, err, sizeof(err));
	struct ks_peer seven = { .uid = 7, .gid = 1 };
	struct ks_peer in50 = { .uid = 9, .gid = 50 };
	struct ks_peer sup50 = { .uid = 9, .gid = 1, .ngroups = 2, .groups = { 3, 50 } };
	struct ks_peer eight = { .uid = 8, .gid = 1 };
	struct ks_peer eight60 = { .uid = 8, .gid = 60 };
	struct ks_peer other = { .uid = 9, .gid = 1, .ngroups = 1, .groups = { 60 } };

	(void)state;
	assert_true(ks_policy_knows_peer(p, &seven));
	assert_true(ks_policy_knows_peer(p, &in50));
	assert_true(ks_policy_knows_peer(p, &sup50));
	assert_true(ks_policy_knows_peer(p, &eight60));
	/* A rule naming uid and gid names only a peer with both. */
	assert_false(ks_policy_knows_peer(p, &eight));
	assert_false(ks_policy_knows_peer(p, &other));
	assert_false(ks_policy_knows_peer(NULL, &seven));
	ks_policy_unref(p);
}

static void test_refcount(void **state)
{
	char err[256];
	struct ks_policy *p = load("[{\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"sign\"]}]", 0, err, sizeof(err));
	struct ks_peer root = { .uid = 0 };

	(void)state;
	assert_ptr_equal(ks_policy_ref(p), p);
	assert_ptr_equal(ks_policy_ref(p), p);
	ks_policy_unref(p);
	ks_policy_unref(p);
	/* Still alive with one reference left (valgrind would flag a use after free). */
	assert_true(ks_policy_allows(p, &root, KS_OP_SIGN, "k"));
	assert_int_equal(ks_policy_size(p), 1);
	ks_policy_unref(p);
	assert_null(ks_policy_ref(NULL));
	ks_policy_unref(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_op_names),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_parse_limits),
		cmocka_unit_test(test_ids),
		cmocka_unit_test(test_matching),
		cmocka_unit_test(test_purposes),
		cmocka_unit_test(test_hello_explicit),
		cmocka_unit_test(test_many_groups),
		cmocka_unit_test(test_refcount),
		cmocka_unit_test(test_knows_peer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
