/*
 * The renewal clients' skeleton (renewcli.h): a client's own options and
 * the common ones it takes are one table, a common one it does not take
 * and any prefix of a long option are refused, --version and --help end
 * the run with 0 (help = the client's usage + the exit-code table), an
 * unknown or missing command is a usage error, and ks_rc_main() runs the
 * client's check, sets KEYSVC_SOCKET and returns the command's exit code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clients/renew/common/climsg.h"
#include "clients/renew/common/renewcli.h"
#include "proto/exitcode.h"
#include "keysvc/keysvc.h"

struct test_opts {
	struct ks_rc_opts c;
	const char *name;
	int flag, usage_calls, check_calls, ran;
};

static struct test_opts o;

enum { T_NAME = 256, T_FLAG };

static const struct option options[] = {
	{ "name", required_argument, NULL, T_NAME },
	{ "flag", no_argument, NULL, T_FLAG },
	{ NULL, 0, NULL, 0 },
};

static void usage(FILE *f)
{
	(void)f;
	o.usage_calls++;
}

static int option(void *ctx, int c, const char *arg)
{
	struct test_opts *t = ctx;

	if (c == T_NAME) {
		if (strcmp(arg, "bad") == 0)
			return ks_die(KS_EXIT_USAGE, "--name: bad");
		t->name = arg;
	} else if (c == T_FLAG) {
		t->flag = 1;
	}
	return 0;
}

static int check(void *ctx, struct ks_rc_run *run)
{
	struct test_opts *t = ctx;

	t->check_calls++;
	assert_string_equal(run->command, "go");
	return t->name != NULL && strcmp(t->name, "refuse") == 0 ? ks_die(KS_EXIT_USAGE, "refused") : 0;
}

static int run_go(void *ctx, struct ks_rc_run *run)
{
	struct test_opts *t = ctx;

	(void)run;
	t->ran++;
	return KS_EXIT_NOT_DUE;
}

static const struct ks_rc_command commands[] = {
	{ "go", "went", 0, run_go },
	{ NULL, NULL, 0, NULL },
};

static struct ks_rc_client client(unsigned common)
{
	return (struct ks_rc_client){
		.program = "test_renewcli", .inventory_client = "test", .common = common, .usage = usage,
		.options = options, .option = option, .check = check, .commands = commands,
		.common_opts = &o.c, .ctx = &o,
	};
}

static int setup(void **state)
{
	(void)state;
	memset(&o, 0, sizeof(o));
	unsetenv(KEYSVC_SOCKET_ENV);
	return 0;
}

#define PARSE(common, cmd, ...) \
	({ char *argv_[] = { "test_renewcli", __VA_ARGS__, NULL }; \
	   struct ks_rc_client cl_ = client(common); \
	   ks_rc_parse(&cl_, (int)(sizeof(argv_) / sizeof(argv_[0])) - 1, argv_, (cmd)); })

static void test_merged(void **state)
{
	const struct ks_rc_command *cmd;

	(void)state;
	assert_int_equal(PARSE(KS_RC_OPT_SOCKET | KS_RC_OPT_LOCK_WAIT, &cmd, "--name", "n1", "--timeout", "5",
			       "--socket", "/s", "--flag", "--lock-wait=7", "--json", "go"), KS_EXIT_OK);
	assert_non_null(cmd);
	assert_string_equal(cmd->name, "go");
	assert_string_equal(o.name, "n1");
	assert_int_equal(o.flag, 1);
	assert_int_equal(o.c.timeout_s, 5);
	assert_string_equal(o.c.socket, "/s");
	assert_int_equal(o.c.lock_wait_s, 7);
	assert_int_equal(o.c.json, 1);
	assert_int_equal(ks_cli_json(), 1);
	ks_cli_set_json(0);
}

static void test_defaults(void **state)
{
	const struct ks_rc_command *cmd;

	(void)state;
	assert_int_equal(PARSE(KS_RC_OPT_LOCK_WAIT, &cmd, "go"), KS_EXIT_OK);
	assert_non_null(cmd);
	assert_int_equal(o.c.timeout_s, 60);
	assert_int_equal(o.c.lock_wait_s, 60);
}

static void test_not_taken(void **state)
{
	const struct ks_rc_command *cmd;

	(void)state;
	/* A client without KS_RC_OPT_SOCKET / _INVENTORY / _LOCK_WAIT does not know them. */
	assert_int_equal(PARSE(0, &cmd, "--socket", "/s", "go"), KS_EXIT_USAGE);
	assert_null(cmd);
	assert_int_equal(PARSE(0, &cmd, "--inventory", "/d", "go"), KS_EXIT_USAGE);
	assert_int_equal(PARSE(0, &cmd, "--lock-wait", "1", "go"), KS_EXIT_USAGE);
	assert_int_equal(PARSE(KS_RC_OPT_INVENTORY, &cmd, "--config", "/c", "go"), KS_EXIT_OK);
	assert_string_equal(o.c.config, "/c");
	assert_int_equal(o.check_calls, 0);
}

static void test_prefix_refused(void **state)
{
	const struct ks_rc_command *cmd;

	(void)state;
	/* getopt_long alone takes these unambiguous prefixes. */
	assert_int_equal(PARSE(0, &cmd, "--nam", "x", "go"), KS_EXIT_USAGE);
	assert_null(cmd);
	assert_null(o.name);
	assert_int_equal(PARSE(0, &cmd, "--time", "5", "go"), KS_EXIT_USAGE);
	assert_int_equal(PARSE(0, &cmd, "--vers"), KS_EXIT_USAGE);
	/* After "--" nothing is an option. */
	assert_int_equal(PARSE(0, &cmd, "--", "--nam"), KS_EXIT_USAGE);
}

static void test_version_help(void **state)
{
	const struct ks_rc_command *cmd;

	(void)state;
	assert_int_equal(PARSE(0, &cmd, "--version"), KS_EXIT_OK);
	assert_null(cmd);
	assert_int_equal(o.usage_calls, 0);
	assert_int_equal(PARSE(0, &cmd, "--help", "go"), KS_EXIT_OK);
	assert_null(cmd);
	assert_int_equal(o.usage_calls, 1);
	assert_int_equal(PARSE(0, &cmd, "-h"), KS_EXIT_OK);
	assert_null(cmd);
	assert_int_equal(o.usage_calls, 2);
	/* Usage on stderr for a usage error. */
	assert_int_equal(PARSE(0, &cmd, "-x", "go"), KS_EXIT_USAGE);
	assert_int_equal(o.usage_calls, 3);
}

static void test_commands(void **state)
{
	const struct ks_rc_command *cmd;

	(void)state;
	assert_int_equal(PARSE(0, &cmd, "frobnicate"), KS_EXIT_USAGE);
	assert_null(cmd);
	assert_string_equal(ks_last_error(), "unknown command 'frobnicate' (see --help)");
	assert_int_equal(PARSE(0, &cmd, "--flag"), KS_EXIT_USAGE);
	assert_null(cmd);
	assert_int_equal(PARSE(0, &cmd, "go", "go"), KS_EXIT_USAGE);
	assert_null(cmd);
}

static void test_bad_values(void **state)
{
	const struct ks_rc_command *cmd;

	(void)state;
	assert_int_equal(PARSE(0, &cmd, "--timeout", "0", "go"), KS_EXIT_USAGE);
	assert_null(cmd);
	assert_int_equal(PARSE(0, &cmd, "--timeout", "3601", "go"), KS_EXIT_USAGE);
	assert_int_equal(PARSE(KS_RC_OPT_LOCK_WAIT, &cmd, "--lock-wait", "-1", "go"), KS_EXIT_USAGE);
	/* The client's handler's exit code stops the parse. */
	assert_int_equal(PARSE(0, &cmd, "--name", "bad", "go"), KS_EXIT_USAGE);
	assert_null(cmd);
}

static void test_main(void **state)
{
	char *argv[] = { "test_renewcli", "--socket", "/run/t.sock", "go", NULL };
	char *refused[] = { "test_renewcli", "--name", "refuse", "go", NULL };
	struct ks_rc_client cl = client(KS_RC_OPT_SOCKET);

	(void)state;
	assert_int_equal(ks_rc_main(&cl, 4, argv), KS_EXIT_NOT_DUE);
	assert_int_equal(o.check_calls, 1);
	assert_int_equal(o.ran, 1);
	assert_non_null(getenv(KEYSVC_SOCKET_ENV));
	assert_string_equal(getenv(KEYSVC_SOCKET_ENV), "/run/t.sock");
	/* A refusing check: the command never runs. */
	memset(&o, 0, sizeof(o));
	assert_int_equal(ks_rc_main(&cl, 4, refused), KS_EXIT_USAGE);
	assert_int_equal(o.check_calls, 1);
	assert_int_equal(o.ran, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_merged, setup),
		cmocka_unit_test_setup(test_defaults, setup),
		cmocka_unit_test_setup(test_not_taken, setup),
		cmocka_unit_test_setup(test_prefix_refused, setup),
		cmocka_unit_test_setup(test_version_help, setup),
		cmocka_unit_test_setup(test_commands, setup),
		cmocka_unit_test_setup(test_bad_values, setup),
		cmocka_unit_test_setup(test_main, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
