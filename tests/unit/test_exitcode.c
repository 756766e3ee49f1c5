/*
 * proto/exitcode: the one exit-code table of every keysvc program, and
 * the exit code for each libkeysvc error (clients/renew/common/clikeysvc.h).
 * The numbers are an interface (scripts, systemd units): this pins them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clients/renew/common/clikeysvc.h"
#include "keysvc/keysvc.h"
#include "proto/exitcode.h"

static void test_numbers(void **state)
{
	(void)state;
	/* keysvcd's 0..6 and the clients' 10..13 keep the numbers the shipped units name. */
	assert_int_equal(KS_EXIT_OK, 0);
	assert_int_equal(KS_EXIT_INTERNAL, 1);
	assert_int_equal(KS_EXIT_USAGE, 2);
	assert_int_equal(KS_EXIT_CONFIG, 3);
	assert_int_equal(KS_EXIT_PIN_FILE, 4);
	assert_int_equal(KS_EXIT_TOKEN, 5);
	assert_int_equal(KS_EXIT_PIN_REJECTED, 6);
	assert_int_equal(KS_EXIT_CONNECT, 7);
	assert_int_equal(KS_EXIT_DENIED, 8);
	assert_int_equal(KS_EXIT_AUDIT, 9);
	assert_int_equal(KS_EXIT_NOT_DUE, 10);
	assert_int_equal(KS_EXIT_RENEWAL_DUE, 11);
	assert_int_equal(KS_EXIT_EXPIRED, 12);
	assert_int_equal(KS_EXIT_BUSY, 13);
	assert_int_equal(KS_EXIT_NO_SUCH_KEY, 14);
	assert_int_equal(KS_EXIT_EXISTS, 15);
	assert_int_equal(KS_EXIT_UNSUPPORTED, 16);
	assert_int_equal(KS_EXIT_CA_REFUSED, 17);
	assert_int_equal(KS_EXIT_CA_ANSWER, 18);
	assert_int_equal(KS_EXIT_NETWORK, 19);
	assert_int_equal(KS_EXIT_REGISTER_FAILED, 20);
	assert_int_equal(KS_EXIT_CHECK_READY_FAILED, 21);
	assert_int_equal(KS_EXIT_NOT_IN_TIME, 22);
	assert_int_equal(KS_EXIT_PUSH_FAILED, 23);
	assert_int_equal(KS_EXIT_ATTENTION, 24);
}

/* Every code 0..24 once, in order, each with a one-line meaning. */
static void test_table(void **state)
{
	(void)state;
	assert_int_equal(ks_exit_table_len, 25);
	for (size_t i = 0; i < ks_exit_table_len; i++) {
		assert_int_equal(ks_exit_table[i].code, (int)i);
		assert_non_null(ks_exit_table[i].meaning);
		assert_true(strlen(ks_exit_table[i].meaning) > 0);
		assert_null(strchr(ks_exit_table[i].meaning, '\n'));
		assert_ptr_equal(ks_exit_meaning((int)i), ks_exit_table[i].meaning);
	}
	assert_null(ks_exit_meaning(-1));
	assert_null(ks_exit_meaning(25));
	assert_string_equal(ks_exit_meaning(KS_EXIT_DENIED), "denied by keysvcd's policy");
}

/* The printed table: the heading, then "  CODE  MEANING" per code. */
static void test_print(void **state)
{
	char *text = NULL, line[512];
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	(void)state;
	assert_non_null(f);
	ks_exit_print_table(f);
	assert_int_equal(fclose(f), 0);
	assert_non_null(strstr(text, "\nExit codes (all keysvc programs):\n"));
	for (size_t i = 0; i < ks_exit_table_len; i++) {
		snprintf(line, sizeof(line), "\n  %2d  %s\n", (int)i, ks_exit_table[i].meaning);
		assert_non_null(strstr(text, line));
	}
	free(text);
}

/* KEYSVC_KEYSVC used to lump these together as 6. */
static void test_keysvc_errors(void **state)
{
	(void)state;
	assert_int_equal(ks_exit_for_keysvc(KEYSVC_OK), KS_EXIT_OK);
	assert_int_equal(ks_exit_for_keysvc(KEYSVC_E_CONNECT), KS_EXIT_CONNECT);
	assert_int_equal(ks_exit_for_keysvc(KEYSVC_E_IO), KS_EXIT_CONNECT);
	assert_int_equal(ks_exit_for_keysvc(KEYSVC_E_DENIED), KS_EXIT_DENIED);
	assert_int_equal(ks_exit_for_keysvc(KEYSVC_E_AUDIT_UNAVAILABLE), KS_EXIT_AUDIT);
	assert_int_equal(ks_exit_for_keysvc(KEYSVC_E_TOKEN_UNAVAILABLE), KS_EXIT_TOKEN);
	assert_int_equal(ks_exit_for_keysvc(KEYSVC_E_NO_SUCH_KEY), KS_EXIT_NO_SUCH_KEY);
	assert_int_equal(ks_exit_for_keysvc(KEYSVC_E_EXISTS), KS_EXIT_EXISTS);
	assert_int_equal(ks_exit_for_keysvc(KEYSVC_E_UNSUPPORTED), KS_EXIT_UNSUPPORTED);
	assert_int_equal(ks_exit_for_keysvc(KEYSVC_E_BAD_REQUEST), KS_EXIT_USAGE);
	assert_int_equal(ks_exit_for_keysvc(KEYSVC_E_INVALID), KS_EXIT_USAGE);
	assert_int_equal(ks_exit_for_keysvc(KEYSVC_E_INTERNAL), KS_EXIT_INTERNAL);
	assert_int_equal(ks_exit_for_keysvc(KEYSVC_E_PROTOCOL), KS_EXIT_INTERNAL);
	assert_int_equal(ks_exit_for_keysvc(KEYSVC_E_NOMEM), KS_EXIT_INTERNAL);
	assert_int_equal(ks_exit_for_keysvc(-1000), KS_EXIT_INTERNAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_print),
		cmocka_unit_test(test_keysvc_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
