/*
 * Token faults, injected by tests/faultp11 between the token layer and
 * SoftHSM: lost sessions and logins are recovered by one retry, a removed
 * token answers -ENODEV until a background reconnect brings it back, and a
 * hung token does not block ks_token_get_info().
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "pkcs11/token.h"
#include "tests/common/softhsm.h"

static struct ks_test_token tt;
static struct ks_token *tok;
static char control[PATH_MAX + 32];
static uint8_t digest[32];

static void set_fault(const char *line)
{
	char tmp[PATH_MAX + 64];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.new", control);
	f = fopen(tmp, "w");
	assert_non_null(f);
	fprintf(f, "%s\n", line);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(rename(tmp, control), 0);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int sign_once(void)
{
	uint8_t *sig = NULL;
	size_t sig_len = 0;
	int r;

	r = ks_token_sign_digest(tok, "fault-key", KS_SIG_ECDSA_SHA256, digest,
				 sizeof(digest), &sig, &sig_len);
	free(sig);
	return r;
}

static int setup(void **state)
{
	struct ks_token_config cfg;
	const char *shim = getenv("KS_FAULTP11");

	(void)state;
	if (shim == NULL) {
		fprintf(stderr, "KS_FAULTP11 is not set\n");
		return -1;
	}
	if (ks_test_token_setup(&tt, "faults") != 0)
		return -1;
	snprintf(control, sizeof(control), "%s/fault-control", tt.dir);
	setenv("KS_FAULTP11_TARGET", tt.module, 1);
	setenv("KS_FAULTP11_CONTROL", control, 1);
	set_fault("");
	ks_test_token_config(&tt, &cfg);
	cfg.module_path = shim;   /* faultp11, in front of SoftHSM */
	cfg.sessions = 2;
	if (ks_token_open(&cfg, &tok) != 0)
		return -1;
	if (ks_token_generate(tok, "fault-key", KS_KEY_EC_P256, NULL) != 0)
		return -1;
	EVP_Digest("fault", 5, digest, NULL, EVP_sha256(), NULL);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	set_fault("");
	ks_token_close(tok);
	ks_test_token_teardown(&tt);
	return 0;
}

static void test_session_lost_is_retried_once(void **state)
{
	(void)state;
	assert_int_equal(sign_once(), 0);
	set_fault("error CKR_SESSION_HANDLE_INVALID 1 C_SignInit");
	assert_int_equal(sign_once(), 0);
	set_fault("error CKR_SESSION_CLOSED 1 C_Sign");
	assert_int_equal(sign_once(), 0);
	set_fault("error CKR_USER_NOT_LOGGED_IN 1 C_SignInit");
	assert_int_equal(sign_once(), 0);
	/* Only one retry: a fault that survives it is reported, and the next call works. */
	set_fault("error CKR_SESSION_HANDLE_INVALID 2 C_SignInit");
	assert_int_not_equal(sign_once(), 0);
	assert_int_equal(sign_once(), 0);
}

static void test_removed_token_recovers(void **state)
{
	struct ks_token_info info;
	int64_t start;
	int r;

	(void)state;
	set_fault("error CKR_DEVICE_REMOVED always");
	assert_int_equal(sign_once(), -ENODEV);
	assert_int_equal(ks_token_get_info(tok, &info), 0);
	assert_int_equal(info.up, 0);
	/* While down, calls answer at once without waiting for the token. */
	start = now_ms();
	assert_int_equal(sign_once(), -ENODEV);
	assert_true(now_ms() - start < 1000);
	/* Reconnect attempts made while the token is still gone fail and leave it down. */
	usleep(1500 * 1000);
	assert_int_equal(sign_once(), -ENODEV);
	assert_int_equal(ks_token_get_info(tok, &info), 0);
	assert_int_equal(info.up, 0);
	set_fault("");
	/* Backoff starts at 1 s and doubles; allow a few rounds. */
	start = now_ms();
	do {
		usleep(100 * 1000);
		r = sign_once();
	} while (r != 0 && now_ms() - start < 20000);
	assert_int_equal(r, 0);
	assert_int_equal(ks_token_get_info(tok, &info), 0);
	assert_int_equal(info.up, 1);
}

static void test_token_not_present_recovers(void **state)
{
	int64_t start;
	int r;

	(void)state;
	set_fault("error CKR_TOKEN_NOT_PRESENT always");
	assert_int_equal(sign_once(), -ENODEV);
	set_fault("");
	start = now_ms();
	do {
		usleep(100 * 1000);
		r = sign_once();
	} while (r != 0 && now_ms() - start < 20000);
	assert_int_equal(r, 0);
}

static void *sign_thread(void *arg)
{
	*(int *)arg = sign_once();
	return NULL;
}

static void test_hung_token_does_not_block_info(void **state)
{
	struct ks_token_info info;
	pthread_t th;
	int64_t start;
	int result = 1;

	(void)state;
	set_fault("hang C_Sign");
	assert_int_equal(pthread_create(&th, NULL, sign_thread, &result), 0);
	usleep(200 * 1000);
	start = now_ms();
	assert_int_equal(ks_token_get_info(tok, &info), 0);
	assert_true(now_ms() - start < 1000);
	set_fault("");
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(result, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_session_lost_is_retried_once),
		cmocka_unit_test(test_removed_token_recovers),
		cmocka_unit_test(test_token_not_present_recovers),
		cmocka_unit_test(test_hung_token_does_not_block_info),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
