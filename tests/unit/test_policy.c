/* The access policy: parsing that refuses typos, matching that denies by default. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "keysvc/policy.h"

static struct ks_policy *load(const char *json, int expect, char *err, size_t err_len)
{
	struct ks_policy *p = NULL;
	json_t *rules = json_loads(json, 0, NULL);

	assert_non_null(rules);
	err[0] = '\0';
	assert_int_equal(ks_policy_from_json(rules, &p, err, err_len), expect);
	json_decref(rules);
	return p;
}

static void test_op_names(void **state)
{
	(void)state;
	for (int op = 0; op < KS_OP_COUNT; op++)
		assert_int_equal(ks_op_from_name(ks_op_name((enum ks_op)op)), op);
	assert_int_equal(ks_op_from_name("sign"), KS_OP_SIGN);
	assert_int_equal(ks_op_from_name("Sign"), -1);
	assert_int_equal(ks_op_from_name(NULL), -1);
	assert_null(ks_op_name(KS_OP_COUNT));
}

static void test_parse_errors(void **state)
{
	static const struct {
		const char *json, *needle;
	} cases[] = {
		{ "{}", "array" },
		{ "[{\"keys\":[\"*\"],\"ops\":[\"sign\"]}]", "rule 1" },
		{ "[{\"uid\":0,\"keys\":[],\"ops\":[\"sign\"]}]", "keys" },
		{ "[{\"uid\":0,\"keys\":[\"*\"],\"ops\":[]}]", "ops" },
		{ "[{\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"sing\"]}]", "unknown operation" },
		{ "[{\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"sign\"],\"extra\":1}]", "extra" },
		{ "[{\"uid\":\"no-such-user-xyz\",\"keys\":[\"*\"],\"ops\":[\"sign\"]}]", "unknown user" },
		{ "[{\"gid\":\"no-such-group-xyz\",\"keys\":[\"*\"],\"ops\":[\"sign\"]}]", "unknown group" },
		{ "[{\"uid\":-1,\"keys\":[\"*\"],\"ops\":[\"sign\"]}]", "uid" },
		{ "[{\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"sign\"]},{\"uid\":0}]", "rule 2" },
	};
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_null(load(cases[i].json, -EINVAL, err, sizeof(err)));
		if (strstr(err, cases[i].needle) == NULL)
			fail_msg("case %zu: \"%s\" does not mention %s", i, err, cases[i].needle);
	}
}

static void test_matching(void **state)
{
	char err[256];
	struct ks_policy *p = load(
		"[{\"uid\": 1000, \"keys\": [\"web-*\", \"exact\"], \"ops\": [\"sign\", \"csr.create\"]},"
		" {\"gid\": 2000, \"keys\": [\"*\"], \"ops\": [\"key.public\"]},"
		" {\"uid\": 1001, \"gid\": 3000, \"keys\": [\"both\"], \"ops\": [\"sign\"]},"
		" {\"uid\": \"root\", \"keys\": [\"r-*\"], \"ops\": [\"key.generate\", \"key.list\"], \"comment\": \"ops\"}]",
		0, err, sizeof(err));
	struct ks_peer alice = { .uid = 1000, .gid = 1000 };
	struct ks_peer grp = { .uid = 5000, .gid = 5000, .ngroups = 2, .groups = { 17, 2000 } };
	struct ks_peer both = { .uid = 1001, .gid = 3000 };
	struct ks_peer half = { .uid = 1001, .gid = 1001 };
	struct ks_peer root = { .uid = 0, .gid = 0 };
	struct ks_peer nobody = { .uid = 65534, .gid = 65534 };

	(void)state;
	assert_non_null(p);
	assert_int_equal(ks_policy_size(p), 4);
	assert_true(ks_policy_allows(p, &alice, KS_OP_SIGN, "web-1"));
	assert_true(ks_policy_allows(p, &alice, KS_OP_CSR_CREATE, "exact"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_SIGN, "exact-not"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_SIGN, "db-1"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_KEY_GENERATE, "web-1"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_KEY_DELETE, "web-1"));
	/* A supplementary group counts. */
	assert_true(ks_policy_allows(p, &grp, KS_OP_KEY_PUBLIC, "anything"));
	assert_false(ks_policy_allows(p, &grp, KS_OP_SIGN, "anything"));
	/* uid and gid together: both must match. */
	assert_true(ks_policy_allows(p, &both, KS_OP_SIGN, "both"));
	assert_false(ks_policy_allows(p, &half, KS_OP_SIGN, "both"));
	/* Names resolved at load; root has only what a rule gives it. */
	assert_true(ks_policy_allows(p, &root, KS_OP_KEY_GENERATE, "r-1"));
	assert_false(ks_policy_allows(p, &root, KS_OP_SIGN, "r-1"));
	/* hello: any peer some rule names; nobody else. */
	assert_true(ks_policy_allows(p, &alice, KS_OP_HELLO, NULL));
	assert_true(ks_policy_allows(p, &grp, KS_OP_HELLO, NULL));
	assert_false(ks_policy_allows(p, &nobody, KS_OP_HELLO, NULL));
	assert_false(ks_policy_allows(p, &half, KS_OP_HELLO, NULL));
	/* key.list without a key: is the op granted at all. */
	assert_true(ks_policy_allows(p, &root, KS_OP_KEY_LIST, NULL));
	assert_false(ks_policy_allows(p, &alice, KS_OP_KEY_LIST, NULL));
	/* Nothing for nobody, nothing from an empty or missing policy. */
	assert_false(ks_policy_allows(p, &nobody, KS_OP_SIGN, "web-1"));
	assert_false(ks_policy_allows(NULL, &alice, KS_OP_SIGN, "web-1"));
	assert_false(ks_policy_allows(p, &alice, KS_OP_COUNT, "web-1"));
	ks_policy_unref(p);

	p = load("[]", 0, err, sizeof(err));
	assert_false(ks_policy_allows(p, &root, KS_OP_HELLO, NULL));
	assert_false(ks_policy_allows(p, &root, KS_OP_SIGN, "x"));
	ks_policy_unref(p);
}

static void test_refcount(void **state)
{
	char err[256];
	struct ks_policy *p = load("[{\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"sign\"]}]", 0, err, sizeof(err));
	struct ks_peer root = { .uid = 0 };

	(void)state;
	assert_ptr_equal(ks_policy_ref(p), p);
	ks_policy_unref(p);
	/* Still alive with one reference left. */
	assert_true(ks_policy_allows(p, &root, KS_OP_SIGN, "k"));
	ks_policy_unref(p);
	ks_policy_unref(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_op_names),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_matching),
		cmocka_unit_test(test_refcount),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
