/*
 * Token faults through the running daemon: keysvcd loads tests/faultp11
 * (wrapping the test's SoftHSM token) as its module, and each fault of
 * issue 8 is switched on and off through faultp11's control file while
 * clients talk to keysvcd over its socket. For each: a clear wire error
 * (or the transparent retry), no crash, recovery by itself once the fault
 * clears, and `hello` answering throughout, also while the token hangs.
 * (tests/unit/test_faults.c covers the same faults at the token layer.)
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/common/daemon.h"

#define HELLO "{\"id\":1,\"op\":\"hello\"}"
#define ALL_OPS "[\"key.generate\",\"key.list\",\"key.public\",\"key.delete\"," \
	"\"csr.create\",\"sign\",\"cert.put\",\"cert.get\"]"
#define ROOT_ALL "[{\"uid\":0,\"keys\":[\"*\"],\"ops\":" ALL_OPS "}]"
/* SHA-256 of "fault", base64. */
#define SIGN "{\"id\":2,\"op\":\"sign\",\"key\":\"fk\",\"alg\":\"ecdsa-sha256\"," \
	"\"digest\":\"n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=\"}"
#define CSR "{\"id\":3,\"op\":\"csr.create\",\"key\":\"fk\",\"subject\":\"CN=fault\"}"
#define LIST "{\"id\":4,\"op\":\"key.list\"}"

static struct ks_td td;
static char control[PATH_MAX + 32];

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* faultp11's control line, replaced atomically. */
static void set_fault(const char *line)
{
	char tmp[PATH_MAX + 64];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.new", control);
	assert_non_null(f = fopen(tmp, "w"));
	fprintf(f, "%s\n", line);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(rename(tmp, control), 0);
}

/* The outcome of @json on a new connection ("none" if no answer came); *@msg gets the message. */
static char *outcome_of(const char *json, char *msg, size_t msg_len)
{
	static char out[64];
	json_t *resp = ks_td_request_once(&td, json);
	const char *o = resp ? ks_td_outcome(resp) : NULL;
	const char *m = resp ? json_string_value(json_object_get(resp, "message")) : NULL;

	snprintf(out, sizeof(out), "%s", o ? o : "none");
	if (msg != NULL)
		snprintf(msg, msg_len, "%s", m ? m : "");
	json_decref(resp);
	return out;
}

static void expect(const char *json, const char *want, const char *what)
{
	char msg[512];
	const char *got = outcome_of(json, msg, sizeof(msg));

	if (strcmp(got, want) != 0)
		fail_msg("%s: expected %s, got %s (%s)", what, want, got, msg);
	/* An error always says what happened, for the humans reading it. */
	if (strcmp(want, "ok") != 0 && msg[0] == '\0')
		fail_msg("%s: %s without a message", what, got);
}

/* hello answers, with this health. */
static void expect_health(const char *health, const char *what)
{
	json_t *resp = ks_td_request_once(&td, HELLO);
	const char *h = json_string_value(json_object_get(resp, "health"));

	if (resp == NULL || strcmp(ks_td_outcome(resp), "ok") != 0 || h == NULL ||
	    strcmp(h, health) != 0)
		fail_msg("%s: hello health %s, expected %s", what, h ? h : "(no answer)", health);
	json_decref(resp);
}

/* Retry @json until it succeeds (the daemon's own reconnect), at most @ms. */
static void recovers(const char *json, int ms, const char *what)
{
	int64_t deadline = ks_td_now_ms() + ms;

	while (strcmp(outcome_of(json, NULL, 0), "ok") != 0) {
		if (ks_td_now_ms() >= deadline)
			fail_msg("%s: no recovery within %d ms", what, ms);
		sleep_ms(200);
	}
}

static int setup(void **state)
{
	const char *shim = getenv("KS_FAULTP11");
	json_t *resp;

	(void)state;
	if (shim == NULL) {
		fprintf(stderr, "KS_FAULTP11 is not set\n");
		return -1;
	}
	if (ks_td_init(&td, "keysvc-dfaults", ROOT_ALL, 0, 0) != 0)
		return -1;
	snprintf(control, sizeof(control), "%s/fault-control", td.dir);
	/* keysvcd inherits these: faultp11 takes its target and control file from them. */
	setenv("KS_FAULTP11_TARGET", td.token.module, 1);
	setenv("KS_FAULTP11_CONTROL", control, 1);
	snprintf(td.module, sizeof(td.module), "%s", shim);
	set_fault("");
	if (ks_td_write_config(&td) != 0 || ks_td_start(&td) != 0)
		return -1;
	resp = ks_td_request_once(&td, "{\"id\":1,\"op\":\"key.generate\",\"key\":\"fk\","
				  "\"type\":\"ec-p256\",\"purposes\":[\"csr\",\"sign\"]}");
	if (resp == NULL || strcmp(ks_td_outcome(resp), "ok") != 0) {
		json_decref(resp);
		return -1;
	}
	json_decref(resp);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	set_fault("");
	ks_td_teardown(&td);
	return 0;
}

/* Lost sessions and logins: one fault is retried away, a lasting one is an error. */
static void test_session_faults(void **state)
{
	static const char *const faults[] = {
		"CKR_SESSION_HANDLE_INVALID", "CKR_USER_NOT_LOGGED_IN",
	};
	char line[128];

	(void)state;
	expect(SIGN, "ok", "sign before any fault");
	for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
		snprintf(line, sizeof(line), "error %s 1 C_SignInit", faults[i]);
		set_fault(line);
		expect(SIGN, "ok", faults[i]);
		snprintf(line, sizeof(line), "error %s 1 C_FindObjectsInit", faults[i]);
		set_fault(line);
		expect(CSR, "ok", faults[i]);
		/* A fault that outlives the retry is reported, and the daemon stays up. */
		snprintf(line, sizeof(line), "error %s always C_SignInit", faults[i]);
		set_fault(line);
		expect(SIGN, "internal", faults[i]);
		expect_health("ok", faults[i]);
		set_fault("");
		expect(SIGN, "ok", "after the fault cleared");
	}
	assert_true(ks_td_wait_log(&td, "retrying once", 2, 2000) == 0);
	assert_true(ks_td_alive(&td));
}

/* A removed, absent or failing token: token-unavailable at once, hello up, reconnect alone. */
static void test_device_faults(void **state)
{
	static const char *const faults[] = {
		"CKR_DEVICE_REMOVED", "CKR_TOKEN_NOT_PRESENT", "CKR_DEVICE_ERROR",
	};
	char line[128];

	(void)state;
	for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
		snprintf(line, sizeof(line), "error %s always", faults[i]);
		set_fault(line);
		expect(SIGN, "token-unavailable", faults[i]);
		expect(CSR, "token-unavailable", faults[i]);
		expect(LIST, "token-unavailable", faults[i]);
		expect_health("token-unavailable", faults[i]);
		/* Reconnect attempts while it lasts fail and change nothing. */
		sleep_ms(1200);
		expect(SIGN, "token-unavailable", faults[i]);
		set_fault("");
		/* Back-off starts at 1 s and doubles: a few rounds at most. */
		recovers(SIGN, 20000, faults[i]);
		expect(CSR, "ok", faults[i]);
		expect_health("ok", faults[i]);
	}
	assert_true(ks_td_alive(&td));
}

/* hello's health_reason contains @needle. */
static void expect_reason(const char *needle, const char *what)
{
	json_t *resp = ks_td_request_once(&td, HELLO);
	const char *r = json_string_value(json_object_get(resp, "health_reason"));

	if (r == NULL || strstr(r, needle) == NULL)
		fail_msg("%s: hello health_reason \"%s\", expected it to contain \"%s\"", what,
			 r ? r : "(none)", needle);
	json_decref(resp);
}

/*
 * hello's health follows the token's record: degraded with the failing call
 * while token faults repeat, ok after a success; and a key known to exist
 * that a search no longer shows (SoftHSM after its token directory was
 * away) answers token-unavailable, never an empty list or no-such-key,
 * until the module initialised again shows it.
 */
static void test_health_follows_the_token(void **state)
{
	char msg[512], *dump;
	json_t *resp;

	(void)state;
	expect(SIGN, "ok", "sign before any fault");
	expect_health("ok", "before any fault");
	set_fault("error CKR_GENERAL_ERROR 2 C_SignInit");
	expect(SIGN, "internal", "first CKR_GENERAL_ERROR");
	expect_health("degraded", "one CKR_GENERAL_ERROR");
	expect_reason("C_SignInit: CKR_GENERAL_ERROR 1 time since ", "one CKR_GENERAL_ERROR");
	expect(SIGN, "internal", "second CKR_GENERAL_ERROR");
	expect_reason("C_SignInit: CKR_GENERAL_ERROR 2 times since ", "two CKR_GENERAL_ERROR");
	expect(SIGN, "ok", "after the faults");
	expect_health("ok", "after a success");

	set_fault("empty-until-reinit");
	snprintf(msg, sizeof(msg), "%s", outcome_of(LIST, NULL, 0));
	assert_string_equal(msg, "token-unavailable");
	recovers(LIST, 10000, "keys seen again");
	resp = ks_td_request_once(&td, LIST);
	assert_non_null(resp);
	assert_non_null(dump = json_dumps(resp, 0));
	assert_non_null(strstr(dump, "\"fk\""));
	free(dump);
	json_decref(resp);
	expect_health("ok", "after the keys came back");
}

/*
 * The real SoftHSM token directory moved away for 12 s and back, under
 * keysvcd: sign never answers no-such-key meanwhile, hello says the token
 * is not ok, and signing works again within 10 s of the return, without a
 * restart.
 */
static void test_token_directory_away_and_back(void **state)
{
	char dir[PATH_MAX + 16], away[PATH_MAX + 32], msg[512], health[64];
	int64_t start;
	int unavailable = 0, not_ok = 0;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/tokens", td.token.dir);
	snprintf(away, sizeof(away), "%s/tokens.away", td.token.dir);
	expect(SIGN, "ok", "before the directory goes");
	assert_int_equal(rename(dir, away), 0);
	start = ks_td_now_ms();
	while (ks_td_now_ms() - start < 12000) {
		json_t *resp;
		const char *h;

		snprintf(msg, sizeof(msg), "%s", outcome_of(SIGN, NULL, 0));
		if (strcmp(msg, "no-such-key") == 0 || strcmp(msg, "none") == 0) {
			rename(away, dir);
			fail_msg("sign answered %s while the token directory was away", msg);
		}
		unavailable += strcmp(msg, "token-unavailable") == 0;
		resp = ks_td_request_once(&td, HELLO);
		h = json_string_value(json_object_get(resp, "health"));
		snprintf(health, sizeof(health), "%s", h != NULL ? h : "(none)");
		json_decref(resp);
		not_ok += strcmp(health, "ok") != 0;
		sleep_ms(200);
	}
	assert_int_equal(rename(away, dir), 0);
	assert_true(unavailable > 0);
	assert_true(not_ok > 0);
	recovers(SIGN, 10000, "the token directory back");
	expect_health("ok", "the token directory back");
}

/*
 * A hung token holds only the requests that need it: also when there are
 * more of them (20) than keysvcd's event workers (the floor of 16), which
 * then add workers rather than leave hello waiting.
 */
#define HUNG 20
static void test_hang(void **state)
{
	json_t *resp;
	int hung[HUNG];
	int64_t t0;

	(void)state;
	set_fault("hang C_Sign");
	for (int i = 0; i < HUNG; i++) {
		assert_true((hung[i] = ks_td_connect(&td)) >= 0);
		assert_int_equal(ks_td_send_json(hung[i], SIGN), 0);
	}
	sleep_ms(300);
	/* Nothing yet on the hung requests ... */
	resp = ks_td_read_json(hung[0], 200, NULL);
	assert_null(resp);
	/* ... but hello answers at once on other connections, more than once. */
	t0 = ks_td_now_ms();
	for (int i = 0; i < 3; i++)
		expect_health("ok", "hello while the token hangs");
	if (ks_td_now_ms() - t0 > 3000)
		fail_msg("three hellos beside %d hung signs took %lld ms", HUNG,
			 (long long)(ks_td_now_ms() - t0));
	set_fault("");
	/* The hung requests complete once the token answers again. */
	for (int i = 0; i < HUNG; i++) {
		resp = ks_td_read_json(hung[i], 10000, NULL);
		assert_non_null(resp);
		assert_string_equal(ks_td_outcome(resp), "ok");
		json_decref(resp);
		close(hung[i]);
	}
	expect(SIGN, "ok", "after the hang");
	/* A clean stop: no request left inside the token. */
	assert_int_equal(ks_td_stop(&td), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_session_faults),
		cmocka_unit_test(test_device_faults),
		cmocka_unit_test(test_health_follows_the_token),
		cmocka_unit_test(test_token_directory_away_and_back),
		cmocka_unit_test(test_hang),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
