/* keysvcd configuration: defaults, every refusal, file ownership checks. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "keysvc/config.h"

#define MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define POLICY "\"policy\": [{\"uid\": 0, \"keys\": [\"*\"], \"ops\": [\"sign\"]}]"

static char dir[] = "/tmp/keysvc-config-XXXXXX";
static char path[PATH_MAX];

static int setup(void **state)
{
	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/keysvcd.json", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *text, mode_t mode)
{
	FILE *f;

	unlink(path);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
}

static int load(const char *text, int check_owner, struct ks_config **cfg, char *err, size_t len)
{
	write_file(text, 0644);
	err[0] = '\0';
	return ks_config_load(path, check_owner, cfg, err, len);
}

static void test_defaults(void **state)
{
	struct ks_config *cfg = NULL;
	char err[512];

	(void)state;
	assert_int_equal(load("{\"module\": \"" MODULE "\", \"token\": \"keysvc\", "
			      "\"pin_file\": \"/etc/keysvc/pin\", " POLICY "}", 1, &cfg, err,
			      sizeof(err)), 0);
	/* The module's symlink is resolved to the file that is checked and loaded. */
	{
		char *real = realpath(MODULE, NULL);

		assert_non_null(real);
		assert_string_equal(cfg->module, real);
		free(real);
	}
	assert_string_equal(cfg->token_label, "keysvc");
	assert_null(cfg->token_uri);
	assert_string_equal(cfg->socket_path, KS_DEFAULT_SOCKET);
	assert_int_equal(cfg->socket_mode, 0660);
	assert_int_equal(cfg->has_socket_gid, 0);
	assert_int_equal(cfg->sessions, 4);
	assert_int_equal(cfg->max_clients, 512);
	assert_int_equal(cfg->client_timeout_ms, 30000);
	assert_null(cfg->audit_log);
	assert_int_equal(ks_policy_size(cfg->policy), 1);
	ks_config_free(cfg);
}

static void test_full(void **state)
{
	struct ks_config *cfg = NULL;
	char err[512];

	(void)state;
	assert_int_equal(load("{\"module\": \"" MODULE "\", \"token\": \"pkcs11:token=hsm;serial=1\","
			      " \"socket\": \"/run/k/s.sock\", \"socket_group\": 0, \"socket_mode\": \"0600\","
			      " \"audit_log\": \"/var/log/k.log\", \"log_level\": \"debug\", \"sessions\": 8,"
			      " \"max_clients\": 100, \"client_timeout_ms\": 5000, " POLICY "}",
			      0, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->token_uri, "pkcs11:token=hsm;serial=1");
	assert_string_equal(cfg->socket_path, "/run/k/s.sock");
	assert_int_equal(cfg->socket_mode, 0600);
	assert_int_equal(cfg->has_socket_gid, 1);
	assert_int_equal(cfg->socket_gid, 0);
	assert_int_equal(cfg->sessions, 8);
	assert_string_equal(cfg->log_level, "debug");
	ks_config_free(cfg);
	assert_int_equal(load("{\"module\": \"" MODULE "\", \"token\": {\"serial\": \"abc\"}, " POLICY "}",
			      0, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->token_serial, "abc");
	ks_config_free(cfg);
}

static void test_refusals(void **state)
{
	static const struct {
		const char *json, *needle;
	} cases[] = {
		{ "{\"token\": \"t\", " POLICY "}", "module" },
		{ "{\"module\": \"" MODULE "\", " POLICY "}", "token" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\"}", "policy" },
		{ "{\"module\": \"libsofthsm2.so\", \"token\": \"t\", " POLICY "}", "absolute" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"pin_file\": \"pin\", " POLICY "}", "pin_file" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"socket\": \"s.sock\", " POLICY "}", "socket" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"audit_log\": \"a\", " POLICY "}", "audit_log" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"mystery\": 1, " POLICY "}", "mystery" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"socket_mode\": \"0666\", " POLICY "}", "socket_mode" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"socket_mode\": \"0770\", " POLICY "}", "socket_mode" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"socket_mode\": \"abc\", " POLICY "}", "socket_mode" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"log_level\": \"loud\", " POLICY "}", "log_level" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"sessions\": 65, " POLICY "}", "sessions" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"client_timeout_ms\": 5, " POLICY "}", "client_timeout_ms" },
		{ "{\"module\": \"" MODULE "\", \"token\": {}, " POLICY "}", "token" },
		{ "{\"module\": \"" MODULE "\", \"token\": {\"uri\": \"x:y\"}, " POLICY "}", "pkcs11:" },
		{ "{\"module\": \"" MODULE "\", \"token\": 5, " POLICY "}", "token" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"socket_group\": \"no-such-group-xyz\", " POLICY "}", "socket_group" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"policy\": [{\"uid\": 0}]}", "policy rule 1" },
		{ "{\"module\": \"" MODULE "\", \"module\": \"/x\", \"token\": \"t\", " POLICY "}", "duplicate" },
		{ "not json", "JSON" },
	};
	struct ks_config *cfg;
	char err[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cfg = NULL;
		if (load(cases[i].json, 0, &cfg, err, sizeof(err)) == 0)
			fail_msg("case %zu accepted", i);
		assert_null(cfg);
		if (strstr(err, cases[i].needle) == NULL)
			fail_msg("case %zu: \"%s\" does not mention %s", i, err, cases[i].needle);
	}
}

static void test_file_checks(void **state)
{
	static const char good[] = "{\"module\": \"" MODULE "\", \"token\": \"t\", " POLICY "}";
	struct ks_config *cfg = NULL;
	char err[512], link[PATH_MAX];

	(void)state;
	write_file(good, 0664);
	assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "writable"));
	write_file(good, 0644);
	snprintf(link, sizeof(link), "%s/link.json", dir);
	assert_int_equal(symlink(path, link), 0);
	assert_true(ks_config_load(link, 1, &cfg, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "symbolic link"));
	assert_true(ks_config_load(dir, 1, &cfg, err, sizeof(err)) < 0);
	assert_int_equal(ks_config_load("/nonexistent/keysvcd.json", 1, &cfg, err, sizeof(err)), -ENOENT);
	/* The module must exist and be root's or ours, and not writable by others. */
	write_file("{\"module\": \"/nonexistent/module.so\", \"token\": \"t\", " POLICY "}", 0644);
	assert_true(ks_config_load(path, 1, &cfg, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "module"));
	if (geteuid() == 0) {
		char mod[PATH_MAX], text[PATH_MAX + 128];
		FILE *f;

		snprintf(mod, sizeof(mod), "%s/evil.so", dir);
		f = fopen(mod, "w");
		assert_non_null(f);
		fclose(f);
		assert_int_equal(chown(mod, 65534, 65534), 0);
		snprintf(text, sizeof(text), "{\"module\": \"%s\", \"token\": \"t\", " POLICY "}", mod);
		write_file(text, 0644);
		assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), -EACCES);
		assert_non_null(strstr(err, "owned by uid 65534"));
	}
	assert_null(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_file_checks),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
