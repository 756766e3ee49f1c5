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
/* Everything required, to prepend to the field under test. */
#define BASE "\"module\": \"" MODULE "\", \"token\": \"t\", " POLICY

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

static void write_at(const char *p, const char *text, mode_t mode)
{
	FILE *f;

	unlink(p);
	f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(p, mode), 0);
}

static void write_file(const char *text, mode_t mode)
{
	write_at(path, text, mode);
}

static int load(const char *text, int check_owner, struct ks_config **cfg, char *err, size_t len)
{
	write_file(text, 0644);
	err[0] = '\0';
	*cfg = (struct ks_config *)&len;
	return ks_config_load(path, check_owner, cfg, err, len);
}

/* The text must load; returns the config. */
static struct ks_config *good(const char *text, int check_owner)
{
	struct ks_config *cfg;
	char err[512];
	int r = load(text, check_owner, &cfg, err, sizeof(err));

	if (r != 0)
		fail_msg("refused (%d): %s\n%s", r, err, text);
	assert_non_null(cfg);
	return cfg;
}

/* The text must be refused with @expect and an error mentioning @needle. */
static void bad(const char *text, int check_owner, int expect, const char *needle)
{
	struct ks_config *cfg;
	char err[512];
	int r = load(text, check_owner, &cfg, err, sizeof(err));

	if (r == 0) {
		ks_config_free(cfg);
		fail_msg("accepted: %s", text);
	}
	if (r != expect)
		fail_msg("returned %d, expected %d (%s): %s", r, expect, err, text);
	assert_null(cfg);
	if (needle != NULL && strstr(err, needle) == NULL)
		fail_msg("\"%s\" does not mention %s", err, needle);
}

static void test_defaults(void **state)
{
	struct ks_config *cfg;

	(void)state;
	cfg = good("{\"module\": \"" MODULE "\", \"token\": \"keysvc\", "
		   "\"pin_file\": \"/etc/keysvc/pin\", " POLICY "}", 1);
	/* The module's symlink is resolved to the file that is checked and loaded. */
	{
		char *real = realpath(MODULE, NULL);

		assert_non_null(real);
		assert_string_equal(cfg->module, real);
		assert_string_not_equal(cfg->module, MODULE);
		free(real);
	}
	assert_string_equal(cfg->token_label, "keysvc");
	assert_null(cfg->token_uri);
	assert_null(cfg->token_serial);
	assert_string_equal(cfg->pin_file, "/etc/keysvc/pin");
	assert_string_equal(cfg->state_dir, "/var/lib/keysvc");
	assert_string_equal(cfg->socket_path, KS_DEFAULT_SOCKET);
	assert_string_equal(cfg->socket_path, "/run/keysvc/keysvc.sock");
	assert_int_equal(cfg->socket_mode, 0660);
	assert_int_equal(cfg->has_socket_gid, 0);
	assert_int_equal(cfg->sessions, 16);
	assert_int_equal(cfg->max_clients, 512);
	assert_int_equal(cfg->client_timeout_ms, 30000);
	assert_int_equal(cfg->max_clients_per_uid, 64);
	/* Both deadlines default to client_timeout_ms. */
	assert_int_equal(cfg->idle_timeout_ms, 30000);
	assert_int_equal(cfg->frame_timeout_ms, 30000);
	assert_int_equal(cfg->key_recheck_ms, 1000);
	assert_null(cfg->audit_log);
	assert_int_equal(cfg->audit_continue, 0);      /* refuse */
	assert_int_equal(cfg->audit_sync_none, 0);     /* data */
	assert_int_equal(cfg->rescan_reinitialize, 0); /* search */
	assert_null(cfg->log_level);
	assert_non_null(cfg->policy);
	assert_int_equal(ks_policy_size(cfg->policy), 1);
	ks_config_free(cfg);

	/* Without check_owner the module path is kept as written, and no pin_file is fine. */
	cfg = good("{" BASE "}", 0);
	assert_string_equal(cfg->module, MODULE);
	assert_null(cfg->pin_file);
	assert_string_equal(cfg->token_label, "t");
	ks_config_free(cfg);
	cfg = good("{" BASE ", \"state_dir\": \"/srv/keysvc-state\"}", 0);
	assert_string_equal(cfg->state_dir, "/srv/keysvc-state");
	ks_config_free(cfg);
	ks_config_free(NULL);
}

static void test_full(void **state)
{
	struct ks_config *cfg;
	struct ks_peer root = { .uid = 0, .gid = 0 }, other = { .uid = 1, .gid = 1 };

	(void)state;
	cfg = good("{\"module\": \"" MODULE "\", \"token\": \"pkcs11:token=hsm;serial=1\","
		   " \"pin_file\": \"/etc/keysvc/pin\","
		   " \"socket\": \"/run/k/s.sock\", \"socket_group\": 0, \"socket_mode\": \"0600\","
		   " \"audit_log\": \"/var/log/k.log\", \"audit_failure\": \"continue\","
		   " \"audit_sync\": \"none\", \"log_level\": \"debug\", \"sessions\": 8,"
		   " \"max_clients\": 100, \"client_timeout_ms\": 5000, " POLICY "}", 0);
	assert_string_equal(cfg->module, MODULE);
	assert_string_equal(cfg->token_uri, "pkcs11:token=hsm;serial=1");
	assert_null(cfg->token_label);
	assert_null(cfg->token_serial);
	assert_string_equal(cfg->pin_file, "/etc/keysvc/pin");
	assert_string_equal(cfg->socket_path, "/run/k/s.sock");
	assert_int_equal(cfg->socket_mode, 0600);
	assert_int_equal(cfg->has_socket_gid, 1);
	assert_int_equal(cfg->socket_gid, 0);
	assert_string_equal(cfg->audit_log, "/var/log/k.log");
	assert_int_equal(cfg->audit_continue, 1);
	assert_int_equal(cfg->audit_sync_none, 1);
	assert_string_equal(cfg->log_level, "debug");
	assert_int_equal(cfg->sessions, 8);
	assert_int_equal(cfg->max_clients, 100);
	assert_int_equal(cfg->client_timeout_ms, 5000);
	assert_int_equal(cfg->idle_timeout_ms, 5000);
	assert_int_equal(cfg->frame_timeout_ms, 5000);
	/* The policy is the one in the file. */
	assert_true(ks_policy_allows(cfg->policy, &root, KS_OP_SIGN, "k"));
	assert_false(ks_policy_allows(cfg->policy, &root, KS_OP_KEY_DELETE, "k"));
	assert_false(ks_policy_allows(cfg->policy, &other, KS_OP_SIGN, "k"));
	ks_config_free(cfg);
}

static void test_token_forms(void **state)
{
	struct ks_config *cfg;

	(void)state;
	cfg = good("{\"module\": \"" MODULE "\", \"token\": \"pkcs11:token=x\", " POLICY "}", 0);
	assert_string_equal(cfg->token_uri, "pkcs11:token=x");
	assert_null(cfg->token_label);
	assert_null(cfg->token_serial);
	ks_config_free(cfg);
	/* A label that merely contains "pkcs11:" later on is a label. */
	cfg = good("{\"module\": \"" MODULE "\", \"token\": \"my pkcs11:token\", " POLICY "}", 0);
	assert_null(cfg->token_uri);
	assert_string_equal(cfg->token_label, "my pkcs11:token");
	ks_config_free(cfg);
	cfg = good("{\"module\": \"" MODULE "\", \"token\": {\"label\": \"lbl\"}, " POLICY "}", 0);
	assert_string_equal(cfg->token_label, "lbl");
	assert_null(cfg->token_uri);
	assert_null(cfg->token_serial);
	ks_config_free(cfg);
	cfg = good("{\"module\": \"" MODULE "\", \"token\": {\"serial\": \"abc\"}, " POLICY "}", 0);
	assert_string_equal(cfg->token_serial, "abc");
	assert_null(cfg->token_uri);
	assert_null(cfg->token_label);
	ks_config_free(cfg);
	cfg = good("{\"module\": \"" MODULE "\", \"token\": {\"uri\": \"pkcs11:serial=42\"}, " POLICY "}", 0);
	assert_string_equal(cfg->token_uri, "pkcs11:serial=42");
	assert_null(cfg->token_label);
	assert_null(cfg->token_serial);
	ks_config_free(cfg);
	cfg = good("{\"module\": \"" MODULE "\", \"token\": {\"label\": \"l\", \"serial\": \"s\"}, " POLICY "}", 0);
	assert_string_equal(cfg->token_label, "l");
	assert_string_equal(cfg->token_serial, "s");
	ks_config_free(cfg);
	/* PKCS#11 limits: labels 32 bytes, serials 16. */
	cfg = good("{\"module\": \"" MODULE "\", \"token\": {\"label\": \"0123456789abcdef0123456789abcdef\","
		   " \"serial\": \"0123456789abcdef\"}, " POLICY "}", 0);
	assert_int_equal(strlen(cfg->token_label), 32);
	assert_int_equal(strlen(cfg->token_serial), 16);
	ks_config_free(cfg);
}

static void test_refusals(void **state)
{
	static const struct {
		const char *json, *needle;
	} cases[] = {
		/* Required fields. */
		{ "{\"token\": \"t\", " POLICY "}", "module" },
		{ "{\"module\": \"" MODULE "\", " POLICY "}", "token" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\"}", "policy" },
		{ "{}", "module" },
		/* Relative paths. */
		{ "{\"module\": \"libsofthsm2.so\", \"token\": \"t\", " POLICY "}", "module" },
		{ "{\"module\": \"./libsofthsm2.so\", \"token\": \"t\", " POLICY "}", "module" },
		{ "{\"module\": \"\", \"token\": \"t\", " POLICY "}", "module" },
		{ "{" BASE ", \"pin_file\": \"pin\"}", "pin_file" },
		{ "{" BASE ", \"pin_file\": \"\"}", "pin_file" },
		{ "{" BASE ", \"socket\": \"s.sock\"}", "socket" },
		{ "{" BASE ", \"socket\": \"@abstract\"}", "socket" },
		{ "{" BASE ", \"audit_log\": \"a\"}", "audit_log" },
		{ "{" BASE ", \"audit_log\": \"log/a\"}", "audit_log" },
		{ "{" BASE ", \"state_dir\": \"state\"}", "state_dir" },
		{ "{" BASE ", \"state_dir\": \"\"}", "state_dir" },
		{ "{" BASE ", \"state_dir\": 1}", "state_dir" },
		/* Wrong types. */
		{ "{\"module\": 1, \"token\": \"t\", " POLICY "}", "module" },
		{ "{" BASE ", \"pin_file\": null}", "pin_file" },
		{ "{" BASE ", \"sessions\": \"4\"}", "sessions" },
		{ "{" BASE ", \"socket_mode\": 432}", "socket_mode" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"policy\": {}}", "policy" },
		/* Unknown fields. */
		{ "{" BASE ", \"mystery\": 1}", "mystery" },
		{ "{" BASE ", \"Module\": \"/x\"}", "Module" },
		{ "{" BASE ", \"pin\": \"1234\"}", "pin" },
		/* socket_mode: world bits, execute bits, not octal. */
		{ "{" BASE ", \"socket_mode\": \"0666\"}", "socket_mode" },
		{ "{" BASE ", \"socket_mode\": \"0777\"}", "socket_mode" },
		{ "{" BASE ", \"socket_mode\": \"0662\"}", "socket_mode" },
		{ "{" BASE ", \"socket_mode\": \"0664\"}", "socket_mode" },
		{ "{" BASE ", \"socket_mode\": \"0604\"}", "socket_mode" },
		{ "{" BASE ", \"socket_mode\": \"0661\"}", "socket_mode" },
		{ "{" BASE ", \"socket_mode\": \"0770\"}", "socket_mode" },
		{ "{" BASE ", \"socket_mode\": \"0760\"}", "socket_mode" },
		{ "{" BASE ", \"socket_mode\": \"0670\"}", "socket_mode" },
		{ "{" BASE ", \"socket_mode\": \"abc\"}", "socket_mode" },
		{ "{" BASE ", \"socket_mode\": \"\"}", "socket_mode" },
		{ "{" BASE ", \"socket_mode\": \"0680\"}", "socket_mode" },
		{ "{" BASE ", \"socket_mode\": \"-1\"}", "socket_mode" },
		{ "{" BASE ", \"socket_mode\": \"1660\"}", "socket_mode" },
		{ "{" BASE ", \"socket_mode\": \"00660\"}", "socket_mode" },
		{ "{" BASE ", \"socket_mode\": \"660 \"}", "socket_mode" },
		/* The audit log's failure mode and sync. */
		{ "{" BASE ", \"audit_failure\": \"ignore\"}", "audit_failure" },
		{ "{" BASE ", \"audit_failure\": true}", "audit_failure" },
		{ "{" BASE ", \"audit_sync\": \"full\"}", "audit_sync" },
		{ "{" BASE ", \"audit_sync\": \"\"}", "audit_sync" },
		/* What a miss of an unknown key name does. */
		{ "{" BASE ", \"rescan\": \"reinit\"}", "rescan" },
		{ "{" BASE ", \"rescan\": \"\"}", "rescan" },
		{ "{" BASE ", \"rescan\": true}", "rescan" },
		/* log_level. */
		{ "{" BASE ", \"log_level\": \"loud\"}", "log_level" },
		{ "{" BASE ", \"log_level\": \"DEBUG\"}", "log_level" },
		{ "{" BASE ", \"log_level\": \"error\"}", "log_level" },
		{ "{" BASE ", \"log_level\": \"\"}", "log_level" },
		/* Numbers out of range. */
		{ "{" BASE ", \"sessions\": 1025}", "sessions" },
		{ "{" BASE ", \"max_sessions\": 1025}", "max_sessions" },
		{ "{" BASE ", \"max_sessions\": -1}", "max_sessions" },
		/* A pool kept larger than it may grow. */
		{ "{" BASE ", \"sessions\": 32, \"max_sessions\": 16}", "max_sessions" },
		{ "{" BASE ", \"sessions\": -1}", "sessions" },
		{ "{" BASE ", \"sessions\": 1.5}", "sessions" },
		{ "{" BASE ", \"max_clients\": 65537}", "max_clients" },
		{ "{" BASE ", \"max_clients\": 4294967297}", "max_clients" },
		{ "{" BASE ", \"client_timeout_ms\": 5}", "client_timeout_ms" },
		{ "{" BASE ", \"client_timeout_ms\": 99}", "client_timeout_ms" },
		{ "{" BASE ", \"client_timeout_ms\": 3600001}", "client_timeout_ms" },
		{ "{" BASE ", \"client_timeout_ms\": 9007199254740992}", "client_timeout_ms" },
		{ "{" BASE ", \"max_clients_per_uid\": 65537}", "max_clients_per_uid" },
		{ "{" BASE ", \"max_clients_per_uid\": -1}", "max_clients_per_uid" },
		{ "{" BASE ", \"max_clients_per_uid\": \"8\"}", "max_clients_per_uid" },
		{ "{" BASE ", \"idle_timeout_ms\": 99}", "idle_timeout_ms" },
		{ "{" BASE ", \"idle_timeout_ms\": 3600001}", "idle_timeout_ms" },
		{ "{" BASE ", \"frame_timeout_ms\": 99}", "frame_timeout_ms" },
		{ "{" BASE ", \"frame_timeout_ms\": 3600001}", "frame_timeout_ms" },
		{ "{" BASE ", \"frame_timeout_ms\": 1.5}", "frame_timeout_ms" },
		{ "{" BASE ", \"key_recheck_ms\": 3600001}", "key_recheck_ms" },
		{ "{" BASE ", \"key_recheck_ms\": -1}", "key_recheck_ms" },
		/* Token forms. */
		{ "{\"module\": \"" MODULE "\", \"token\": {}, " POLICY "}", "token" },
		{ "{\"module\": \"" MODULE "\", \"token\": {\"uri\": \"x:y\"}, " POLICY "}", "pkcs11:" },
		{ "{\"module\": \"" MODULE "\", \"token\": {\"uri\": \"PKCS11:token=x\"}, " POLICY "}", "pkcs11:" },
		{ "{\"module\": \"" MODULE "\", \"token\": {\"label\": \"x\", \"uri\": \"token=x\"}, " POLICY "}", "pkcs11:" },
		{ "{\"module\": \"" MODULE "\", \"token\": {\"name\": \"x\"}, " POLICY "}", "name" },
		{ "{\"module\": \"" MODULE "\", \"token\": {\"label\": 1}, " POLICY "}", "label" },
		{ "{\"module\": \"" MODULE "\", \"token\": {\"label\": \"0123456789abcdef0123456789abcdefX\"}, " POLICY "}", "label" },
		{ "{\"module\": \"" MODULE "\", \"token\": {\"serial\": \"0123456789abcdefX\"}, " POLICY "}", "serial" },
		{ "{\"module\": \"" MODULE "\", \"token\": 5, " POLICY "}", "token" },
		{ "{\"module\": \"" MODULE "\", \"token\": [\"t\"], " POLICY "}", "token" },
		{ "{\"module\": \"" MODULE "\", \"token\": null, " POLICY "}", "token" },
		/* socket_group. */
		{ "{" BASE ", \"socket_group\": \"no-such-group-xyz\"}", "socket_group" },
		{ "{" BASE ", \"socket_group\": -1}", "socket_group" },
		{ "{" BASE ", \"socket_group\": \"\"}", "socket_group" },
		{ "{" BASE ", \"socket_group\": true}", "socket_group" },
		{ "{" BASE ", \"socket_group\": \" 0\"}", "socket_group" },
		{ "{" BASE ", \"socket_group\": \"nobody\"}", "socket_group" },
		/* Policy errors propagate, rule number and all. */
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"policy\": [{\"uid\": 0}]}", "policy rule 1: keys" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"policy\": [{\"uid\": 0, \"keys\": [\"*\"],"
		  " \"ops\": [\"sign\"]}, {\"uid\": \"no-such-user-xyz\", \"keys\": [\"*\"], \"ops\": [\"sign\"]}]}",
		  "policy rule 2: uid \"no-such-user-xyz\": unknown user" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"policy\": [{\"uid\": 0, \"keys\": [\"*\"],"
		  " \"ops\": [\"delete\"]}]}", "policy rule 1: ops \"delete\": unknown operation" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"policy\": [1]}", "policy rule 1" },
		/* Not JSON, duplicate keys, not an object. */
		{ "{\"module\": \"" MODULE "\", \"module\": \"/x\", \"token\": \"t\", " POLICY "}", "duplicate" },
		{ "not json", "JSON" },
		{ "", "JSON" },
		{ "[]", "JSON object" },
		{ "{" BASE "", "JSON" },
		{ "{" BASE "} {}", "JSON" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		bad(cases[i].json, 0, -EINVAL, cases[i].needle);
}

/*
 * What an administrator needs to find the mistake: a JSON error says the
 * file, line and column; any other refusal quotes the value it refused.
 */
static void test_error_places(void **state)
{
	static const struct {
		const char *json, *needle;
	} cases[] = {
		/* The stray comma on line 3, column 16 (jansson points after the token it stopped at). */
		{ "{\n  \"module\": \"" MODULE "\",\n  \"token\": \"t\",,\n  " POLICY "\n}\n",
		  ".json:3:16: malformed JSON: " },
		/* The file ends inside the object: the end of the file is the place. */
		{ "{\n  \"module\": \"" MODULE "\",\n", ".json:3:0: malformed JSON: " },
		{ "{\n\"module\": \"" MODULE "\", \"module\": \"/x\",\n \"token\": \"t\", " POLICY "}",
		  ".json:2:" },
		{ "{" BASE ", \"log_level\": \"loud\"}", "log_level \"loud\": " },
		{ "{" BASE ", \"audit_failure\": \"ignore\"}", "audit_failure \"ignore\": " },
		{ "{" BASE ", \"audit_sync\": \"full\"}", "audit_sync \"full\": " },
		{ "{" BASE ", \"rescan\": \"always\"}", "rescan \"always\": search or reinitialize" },
		{ "{" BASE ", \"socket_mode\": \"0666\"}", "socket_mode \"0666\": " },
		{ "{" BASE ", \"socket_group\": \"no-such-group-xyz\"}",
		  "socket_group \"no-such-group-xyz\": unknown group" },
		{ "{" BASE ", \"pin_file\": \"etc/pin\"}", "pin_file \"etc/pin\": " },
		{ "{\"module\": \"libsofthsm2.so\", \"token\": \"t\", " POLICY "}",
		  "module \"libsofthsm2.so\": must be an absolute path" },
		{ "{\"module\": \"" MODULE "\", \"token\": \"t\", \"policy\": [{\"uid\": \"bob-no-such-user\","
		  " \"keys\": [\"*\"], \"ops\": [\"sign\"]}]}", "policy rule 1: uid \"bob-no-such-user\": unknown user" },
	};
	struct ks_config *cfg;
	char err[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = load(cases[i].json, 0, &cfg, err, sizeof(err));

		if (r != -EINVAL || strstr(err, cases[i].needle) == NULL)
			fail_msg("case %zu: returned %d, \"%s\" lacks \"%s\"", i, r, err,
				 cases[i].needle);
	}
}

static void test_accepted_values(void **state)
{
	static const struct {
		const char *mode;
		mode_t value;
	} modes[] = {
		{ "0660", 0660 }, { "0600", 0600 }, { "0640", 0640 }, { "0620", 0620 },
		{ "660", 0660 }, { "0", 0 }, { "0400", 0400 },
	};
	static const char *const levels[] = { "err", "warning", "notice", "info", "debug" };
	struct ks_config *cfg;
	char text[1024];

	(void)state;
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		snprintf(text, sizeof(text), "{" BASE ", \"socket_mode\": \"%s\"}", modes[i].mode);
		cfg = good(text, 0);
		assert_int_equal(cfg->socket_mode, modes[i].value);
		ks_config_free(cfg);
	}
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		snprintf(text, sizeof(text), "{" BASE ", \"log_level\": \"%s\"}", levels[i]);
		cfg = good(text, 0);
		assert_string_equal(cfg->log_level, levels[i]);
		ks_config_free(cfg);
	}
	/* Range edges. */
	cfg = good("{" BASE ", \"sessions\": 64, \"max_clients\": 65536, \"client_timeout_ms\": 3600000}", 0);
	assert_int_equal(cfg->sessions, 64);
	assert_int_equal(cfg->max_clients, 65536);
	assert_int_equal(cfg->client_timeout_ms, 3600000);
	ks_config_free(cfg);
	cfg = good("{" BASE ", \"sessions\": 1, \"max_clients\": 1, \"client_timeout_ms\": 100}", 0);
	assert_int_equal(cfg->sessions, 1);
	/* Absent: sized at start from the descriptor limit. */
	assert_int_equal(cfg->max_sessions, 0);
	assert_int_equal(cfg->max_clients, 1);
	assert_int_equal(cfg->client_timeout_ms, 100);
	ks_config_free(cfg);
	/* The pool: kept sessions up to 1024, the cap at least that. */
	cfg = good("{" BASE ", \"sessions\": 1024, \"max_sessions\": 1024}", 0);
	assert_int_equal(cfg->sessions, 1024);
	assert_int_equal(cfg->max_sessions, 1024);
	ks_config_free(cfg);
	cfg = good("{" BASE ", \"sessions\": 100}", 0);
	assert_int_equal(cfg->sessions, 100);
	assert_int_equal(cfg->max_sessions, 0);
	ks_config_free(cfg);
	cfg = good("{" BASE ", \"sessions\": 2, \"max_sessions\": 2}", 0);
	assert_int_equal(cfg->max_sessions, 2);
	ks_config_free(cfg);
	/* The new limits at their edges, each independent of client_timeout_ms. */
	cfg = good("{" BASE ", \"max_clients_per_uid\": 1, \"idle_timeout_ms\": 100,"
		   " \"frame_timeout_ms\": 3600000}", 0);
	assert_int_equal(cfg->max_clients_per_uid, 1);
	assert_int_equal(cfg->idle_timeout_ms, 100);
	assert_int_equal(cfg->frame_timeout_ms, 3600000);
	assert_int_equal(cfg->client_timeout_ms, 30000);
	ks_config_free(cfg);
	cfg = good("{" BASE ", \"max_clients_per_uid\": 65536, \"client_timeout_ms\": 2000,"
		   " \"idle_timeout_ms\": 3600000, \"frame_timeout_ms\": 100}", 0);
	assert_int_equal(cfg->max_clients_per_uid, 65536);
	assert_int_equal(cfg->idle_timeout_ms, 3600000);
	assert_int_equal(cfg->frame_timeout_ms, 100);
	ks_config_free(cfg);
	cfg = good("{" BASE ", \"rescan\": \"reinitialize\"}", 0);
	assert_int_equal(cfg->rescan_reinitialize, 1);
	ks_config_free(cfg);
	cfg = good("{" BASE ", \"rescan\": \"search\"}", 0);
	assert_int_equal(cfg->rescan_reinitialize, 0);
	ks_config_free(cfg);
	/* 0 is a value of its own (read back on every use), not "the default". */
	cfg = good("{" BASE ", \"key_recheck_ms\": 0}", 0);
	assert_int_equal(cfg->key_recheck_ms, 0);
	ks_config_free(cfg);
	cfg = good("{" BASE ", \"key_recheck_ms\": 3600000}", 0);
	assert_int_equal(cfg->key_recheck_ms, 3600000);
	ks_config_free(cfg);
	/* socket_group by number, numeric string and name. */
	cfg = good("{" BASE ", \"socket_group\": 65534}", 0);
	assert_int_equal(cfg->has_socket_gid, 1);
	assert_int_equal(cfg->socket_gid, 65534);
	ks_config_free(cfg);
	cfg = good("{" BASE ", \"socket_group\": \"1234\"}", 0);
	assert_int_equal(cfg->has_socket_gid, 1);
	assert_int_equal(cfg->socket_gid, 1234);
	ks_config_free(cfg);
	cfg = good("{" BASE ", \"socket_group\": \"nogroup\"}", 0);
	assert_int_equal(cfg->socket_gid, 65534);
	ks_config_free(cfg);
	cfg = good("{" BASE ", \"socket_group\": \"root\"}", 0);
	assert_int_equal(cfg->has_socket_gid, 1);
	assert_int_equal(cfg->socket_gid, 0);
	ks_config_free(cfg);
	/* A socket path fits sun_path: 107 bytes and the NUL. */
	{
		char sock[128];

		sock[0] = '/';
		memset(sock + 1, 's', 106);
		sock[107] = '\0';
		snprintf(text, sizeof(text), "{" BASE ", \"socket\": \"%s\"}", sock);
		cfg = good(text, 0);
		assert_string_equal(cfg->socket_path, sock);
		ks_config_free(cfg);
		sock[107] = 's';
		sock[108] = '\0';
		snprintf(text, sizeof(text), "{" BASE ", \"socket\": \"%s\"}", sock);
		bad(text, 0, -EINVAL, "socket");
	}
	/* An empty policy loads (and denies everything). */
	cfg = good("{\"module\": \"" MODULE "\", \"token\": \"t\", \"policy\": []}", 0);
	assert_int_equal(ks_policy_size(cfg->policy), 0);
	ks_config_free(cfg);
}

static void test_too_big(void **state)
{
	struct ks_config *cfg = NULL;
	char err[512];
	size_t n = 1024 * 1024 + 1;
	char *text = malloc(n + 1);

	(void)state;
	assert_non_null(text);
	/* Valid JSON with padding whitespace, one byte over 1 MiB. */
	memset(text, ' ', n);
	memcpy(text, "{" BASE "}", strlen("{" BASE "}"));
	text[n] = '\0';
	write_file(text, 0644);
	assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), -EINVAL);
	assert_null(cfg);
	assert_non_null(strstr(err, "larger"));
	/* Exactly 1 MiB is fine. */
	text[n - 1] = '\0';
	write_file(text, 0644);
	assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), 0);
	ks_config_free(cfg);
	free(text);
}

static void test_file_checks(void **state)
{
	static const char good_text[] = "{" BASE "}";
	struct ks_config *cfg = NULL;
	char err[512], link[PATH_MAX];

	(void)state;
	/* Writable by group or others. */
	write_file(good_text, 0664);
	assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "writable"));
	assert_null(cfg);
	write_file(good_text, 0646);
	assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), -EACCES);
	write_file(good_text, 0666);
	assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), -EACCES);
	assert_null(cfg);
	/* ...but without check_owner the mode is not looked at. */
	assert_int_equal(ks_config_load(path, 0, &cfg, err, sizeof(err)), 0);
	ks_config_free(cfg);
	cfg = NULL;
	/* Readable by others is fine, and so is read-only. */
	write_file(good_text, 0600);
	assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), 0);
	ks_config_free(cfg);
	cfg = NULL;
	write_file(good_text, 0444);
	assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), 0);
	ks_config_free(cfg);
	cfg = NULL;

	/* A symlink to a good config is refused, with or without check_owner. */
	write_file(good_text, 0644);
	snprintf(link, sizeof(link), "%s/link.json", dir);
	unlink(link);
	assert_int_equal(symlink(path, link), 0);
	assert_int_equal(ks_config_load(link, 1, &cfg, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "symbolic link"));
	assert_null(cfg);
	assert_int_equal(ks_config_load(link, 0, &cfg, err, sizeof(err)), -EACCES);
	assert_null(cfg);
	/* A directory. */
	assert_int_equal(ks_config_load(dir, 1, &cfg, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "not a regular file"));
	assert_null(cfg);
	assert_int_equal(ks_config_load(dir, 0, &cfg, err, sizeof(err)), -EINVAL);
	assert_null(cfg);
	/* A FIFO is refused without blocking on it. */
	{
		char fifo[PATH_MAX];

		snprintf(fifo, sizeof(fifo), "%s/fifo.json", dir);
		assert_int_equal(mkfifo(fifo, 0600), 0);
		assert_int_equal(ks_config_load(fifo, 1, &cfg, err, sizeof(err)), -EACCES);
		assert_null(cfg);
	}
	/* Missing. */
	assert_int_equal(ks_config_load("/nonexistent/keysvcd.json", 1, &cfg, err, sizeof(err)), -ENOENT);
	assert_null(cfg);
	assert_int_equal(ks_config_load("/nonexistent/keysvcd.json", 0, &cfg, err, sizeof(err)), -ENOENT);
	assert_null(cfg);
	assert_non_null(strstr(err, "/nonexistent/keysvcd.json"));
	if (geteuid() == 0) {
		/* Someone else's config. */
		write_file(good_text, 0644);
		assert_int_equal(chown(path, 65534, 65534), 0);
		assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), -EACCES);
		assert_non_null(strstr(err, "owned by uid 65534"));
		assert_null(cfg);
		unlink(path);
	}
}

static void test_module_checks(void **state)
{
	struct ks_config *cfg = NULL;
	char err[512], mod[PATH_MAX], modlink[PATH_MAX], text[2 * PATH_MAX];

	(void)state;
	/* The module must exist... */
	write_file("{\"module\": \"/nonexistent/module.so\", \"token\": \"t\", " POLICY "}", 0644);
	assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "module"));
	assert_null(cfg);
	/* (not checked without check_owner) */
	assert_int_equal(ks_config_load(path, 0, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->module, "/nonexistent/module.so");
	ks_config_free(cfg);
	cfg = NULL;

	/* ...be a regular file... */
	write_file("{\"module\": \"/usr/lib\", \"token\": \"t\", " POLICY "}", 0644);
	assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "module"));
	assert_null(cfg);

	/* ...not writable by group or others... */
	snprintf(mod, sizeof(mod), "%s/module.so", dir);
	write_at(mod, "not really ELF", 0664);
	snprintf(text, sizeof(text), "{\"module\": \"%s\", \"token\": \"t\", " POLICY "}", mod);
	write_file(text, 0644);
	assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "module"));
	assert_non_null(strstr(err, "writable"));
	assert_null(cfg);
	assert_int_equal(chmod(mod, 0755), 0);
	assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->module, mod);
	ks_config_free(cfg);
	cfg = NULL;

	/* ...and a symlink to it is followed, the real file checked and named. */
	snprintf(modlink, sizeof(modlink), "%s/module-link.so", dir);
	unlink(modlink);
	assert_int_equal(symlink(mod, modlink), 0);
	snprintf(text, sizeof(text), "{\"module\": \"%s\", \"token\": \"t\", " POLICY "}", modlink);
	write_file(text, 0644);
	assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->module, mod);
	ks_config_free(cfg);
	cfg = NULL;
	assert_int_equal(chmod(mod, 0666), 0);
	assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), -EACCES);
	assert_null(cfg);

	if (geteuid() == 0) {
		/* ...owned by root or us. */
		assert_int_equal(chmod(mod, 0755), 0);
		assert_int_equal(chown(mod, 65534, 65534), 0);
		snprintf(text, sizeof(text), "{\"module\": \"%s\", \"token\": \"t\", " POLICY "}", mod);
		write_file(text, 0644);
		assert_int_equal(ks_config_load(path, 1, &cfg, err, sizeof(err)), -EACCES);
		assert_non_null(strstr(err, "owned by uid 65534"));
		assert_null(cfg);
	}
}

static void test_check_file(void **state)
{
	char err[512], f[PATH_MAX];

	(void)state;
	snprintf(f, sizeof(f), "%s/plain", dir);
	write_at(f, "x", 0644);
	err[0] = '\0';
	assert_int_equal(ks_config_check_file(f, "thing", err, sizeof(err)), 0);
	assert_int_equal(chmod(f, 0620), 0);
	assert_int_equal(ks_config_check_file(f, "thing", err, sizeof(err)), -EACCES);
	/* The message names what and where. */
	assert_non_null(strstr(err, "thing"));
	assert_non_null(strstr(err, f));
	assert_int_equal(ks_config_check_file("/nonexistent/x", "thing", err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "thing"));
}

/*
 * The module's directories: a group- or world-writable one on the way, or
 * one owned by another user, would let someone swap the module.
 */
static void test_check_dirs(void **state)
{
	char err[512], sub[PATH_MAX], f[PATH_MAX + 16];

	(void)state;
	snprintf(sub, sizeof(sub), "%s/lib", dir);
	assert_int_equal(mkdir(sub, 0755), 0);
	snprintf(f, sizeof(f), "%s/module.so", sub);
	write_at(f, "x", 0644);
	err[0] = '\0';
	assert_int_equal(ks_config_check_dirs(f, "module", err, sizeof(err)), 0);
	assert_int_equal(chmod(sub, 0775), 0);
	assert_int_equal(ks_config_check_dirs(f, "module", err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, sub));
	assert_non_null(strstr(err, "writable"));
	assert_int_equal(chmod(sub, 0757), 0);
	assert_int_equal(ks_config_check_dirs(f, "module", err, sizeof(err)), -EACCES);
	/* Sticky, as /tmp: others cannot move our entries. Only when root owns it. */
	assert_int_equal(chmod(sub, 01777), 0);
	if (geteuid() == 0) {
		assert_int_equal(ks_config_check_dirs(f, "module", err, sizeof(err)), 0);
		assert_int_equal(chown(sub, 65534, 65534), 0);
		assert_int_equal(ks_config_check_dirs(f, "module", err, sizeof(err)), -EACCES);
		assert_int_equal(chmod(sub, 0755), 0);
		assert_int_equal(ks_config_check_dirs(f, "module", err, sizeof(err)), -EACCES);
		assert_non_null(strstr(err, "uid 65534"));
		assert_int_equal(chown(sub, 0, 0), 0);
	} else {
		assert_int_equal(ks_config_check_dirs(f, "module", err, sizeof(err)), -EACCES);
	}
	assert_int_equal(chmod(sub, 0755), 0);
	assert_int_equal(ks_config_check_dirs(f, "module", err, sizeof(err)), 0);
	assert_int_equal(ks_config_check_dirs("relative/module.so", "module", err, sizeof(err)), -EINVAL);
	assert_int_equal(unlink(f), 0);
	assert_int_equal(rmdir(sub), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_token_forms),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_error_places),
		cmocka_unit_test(test_accepted_values),
		cmocka_unit_test(test_too_big),
		cmocka_unit_test(test_file_checks),
		cmocka_unit_test(test_module_checks),
		cmocka_unit_test(test_check_file),
		cmocka_unit_test(test_check_dirs),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
