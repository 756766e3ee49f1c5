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
#include <openssl/x509.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "pkcs11/token.h"
/* Only for objects_rw: whether a search is under way, to order a race. */
#include "pkcs11/token_internal.h"
#include "proto/log.h"
#include "tests/common/softhsm.h"

#define WAIT_MS 1500

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

/* The token layer on faultp11, in front of SoftHSM. */
static int open_token(void)
{
	struct ks_token_config cfg;

	ks_test_token_config(&tt, &cfg);
	cfg.module_path = getenv("KS_FAULTP11");
	cfg.sessions = 2;
	cfg.session_wait_ms = WAIT_MS;
	return ks_token_open(&cfg, &tok);
}

/* Sign until it works again, for at most 20 s (the reconnect backs off from 1 s). */
static int sign_when_recovered(void)
{
	int64_t start = now_ms();
	int r;

	do {
		usleep(100 * 1000);
		r = sign_once();
	} while (r != 0 && now_ms() - start < 20000);
	return r;
}

static int setup(void **state)
{
	(void)state;
	if (getenv("KS_FAULTP11") == NULL) {
		fprintf(stderr, "KS_FAULTP11 is not set\n");
		return -1;
	}
	if (ks_test_token_setup(&tt, "faults") != 0)
		return -1;
	snprintf(control, sizeof(control), "%s/fault-control", tt.dir);
	setenv("KS_FAULTP11_TARGET", tt.module, 1);
	setenv("KS_FAULTP11_CONTROL", control, 1);
	set_fault("");
	if (open_token() != 0)
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
	if (tok != NULL)
		assert_int_equal(ks_token_close(tok), 0);
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
	assert_int_equal(sign_when_recovered(), 0);
	assert_int_equal(ks_token_get_info(tok, &info), 0);
	assert_int_equal(info.up, 1);
}

static void test_token_not_present_recovers(void **state)
{

	(void)state;
	set_fault("error CKR_TOKEN_NOT_PRESENT always");
	assert_int_equal(sign_once(), -ENODEV);
	set_fault("");
	assert_int_equal(sign_when_recovered(), 0);
}

static void *sign_thread(void *arg)
{
	__atomic_store_n((int *)arg, sign_once(), __ATOMIC_RELEASE);
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

/*
 * Close every session of the token's slot, as another application of this
 * process would: SoftHSM behind faultp11 is the same module instance.
 */
static void close_all_sessions_from_outside(void)
{
	CK_FUNCTION_LIST *raw = p11_kit_module_load(tt.module, P11_KIT_MODULE_UNMANAGED);
	CK_SLOT_ID slots[16];
	CK_ULONG n = 16;
	CK_TOKEN_INFO ti;
	CK_RV rv;

	assert_non_null(raw);
	rv = p11_kit_module_initialize(raw);
	assert_true(rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED);
	assert_int_equal(raw->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
	for (CK_ULONG i = 0; i < n; i++)
		if (raw->C_GetTokenInfo(slots[i], &ti) == CKR_OK && memcmp(ti.label, "faults ", 7) == 0)
			assert_int_equal(raw->C_CloseAllSessions(slots[i]), CKR_OK);
	/* Not finalized: that would end the token layer's use of the module too. */
	p11_kit_module_release(raw);
}

static void *list_thread(void *arg)
{
	struct ks_key_info *keys = NULL;
	size_t n = 0;

	__atomic_store_n((int *)arg, ks_token_list(tok, &keys, &n), __ATOMIC_RELEASE);
	free(keys);
	return NULL;
}

/* Wait up to @ms for *@result to leave @unset; the time waited. */
static int64_t wait_result(const int *result, int unset, int64_t ms)
{
	int64_t start = now_ms();

	while (__atomic_load_n(result, __ATOMIC_ACQUIRE) == unset && now_ms() - start < ms)
		usleep(20 * 1000);
	return now_ms() - start;
}

/*
 * One request hangs in the token while the sessions are lost: the request
 * that notices the loss cannot reopen the pool until the hung one returns.
 * Neither it nor the requests after it may wait longer than the session
 * wait; the token counts as down and recovers once the hang clears.
 */
static void test_recovery_behind_hung_call_is_bounded(void **state)
{
	pthread_t hung, noticer, later;
	int hung_r = 1, noticer_r = 1, later_r = 1;

	(void)state;
	set_fault("hang C_Sign");
	assert_int_equal(pthread_create(&hung, NULL, sign_thread, &hung_r), 0);
	usleep(300 * 1000);
	close_all_sessions_from_outside();
	assert_int_equal(pthread_create(&noticer, NULL, list_thread, &noticer_r), 0);
	usleep(300 * 1000);
	assert_int_equal(pthread_create(&later, NULL, list_thread, &later_r), 0);
	assert_true(wait_result(&noticer_r, 1, 3 * WAIT_MS) < 3 * WAIT_MS);
	assert_true(wait_result(&later_r, 1, 3 * WAIT_MS) < 3 * WAIT_MS);
	assert_true(noticer_r == -ENODEV || noticer_r == -ETIMEDOUT);
	assert_true(later_r == -ENODEV || later_r == -ETIMEDOUT);
	assert_int_equal(__atomic_load_n(&hung_r, __ATOMIC_ACQUIRE), 1);
	set_fault("");
	assert_int_equal(pthread_join(hung, NULL), 0);
	assert_int_equal(pthread_join(noticer, NULL), 0);
	assert_int_equal(pthread_join(later, NULL), 0);
	assert_int_equal(sign_when_recovered(), 0);
}

static int sign_key(const char *name)
{
	uint8_t *sig = NULL;
	size_t sig_len = 0;
	int r;

	r = ks_token_sign_digest(tok, name, KS_SIG_ECDSA_SHA256, digest, sizeof(digest), &sig,
				 &sig_len);
	free(sig);
	return r;
}

static enum ks_token_health health(char *reason, size_t len)
{
	struct ks_token_info info;

	assert_int_equal(ks_token_get_info(tok, &info), 0);
	if (reason != NULL)
		snprintf(reason, len, "%s", info.health_reason);
	return info.health;
}

/* Wait up to 10 s for the token to be up again. */
static void wait_up(void)
{
	struct ks_token_info info;
	int64_t start = now_ms();

	do {
		usleep(50 * 1000);
		assert_int_equal(ks_token_get_info(tok, &info), 0);
	} while (!info.up && now_ms() - start < 10000);
	assert_int_equal(info.up, 1);
}

/*
 * SoftHSM whose token directory was away for a moment: searches find
 * nothing until the module is initialised again. A key known to exist
 * answers -ENODEV, never -ENOENT (a renewal client would make a new key),
 * hello says unavailable, a generate of the name creates nothing, and the
 * re-initialisation in the background brings the key back within 10 s.
 */
static void test_vanished_key_puts_token_in_doubt(void **state)
{
	char reason[160];
	int64_t start;

	(void)state;
	assert_int_equal(ks_token_generate(tok, "vanish-key", KS_KEY_EC_P256, NULL), 0);
	set_fault("empty-until-reinit");
	start = now_ms();
	assert_int_equal(sign_key("vanish-key"), -ENODEV);
	assert_int_equal(health(reason, sizeof(reason)), KS_HEALTH_UNAVAILABLE);
	assert_non_null(strstr(reason, "a key known to exist not found since "));
	while (sign_key("vanish-key") != 0 && now_ms() - start < 10000)
		usleep(100 * 1000);
	assert_int_equal(sign_key("vanish-key"), 0);
	assert_true(now_ms() - start < 10000);
	assert_int_equal(health(NULL, 0), KS_HEALTH_OK);

	/* Listing misses a known key the same way. */
	{
		struct ks_key_info *keys = NULL;
		size_t n = 0;

		set_fault("empty-until-reinit");
		assert_int_equal(ks_token_list(tok, &keys, &n), -ENODEV);
		assert_null(keys);
		wait_up();
		assert_int_equal(ks_token_list(tok, &keys, &n), 0);
		assert_true(n >= 2);
		free(keys);
	}
	/* And a generate of a known name does not make a second key while in doubt. */
	set_fault("empty-until-reinit");
	assert_int_equal(ks_token_generate(tok, "vanish-key", KS_KEY_EC_P256, NULL), -ENODEV);
	wait_up();
	assert_int_equal(ks_token_generate(tok, "vanish-key", KS_KEY_EC_P256, NULL), -EEXIST);
}

/*
 * A known key still missing after the module was initialised again was
 * deleted by someone else: -ENOENT from then on, without another
 * re-initialisation.
 */
static void test_key_gone_after_reinit_is_gone(void **state)
{
	struct ks_token_info info;

	(void)state;
	assert_int_equal(ks_token_generate(tok, "gone-key", KS_KEY_EC_P256, NULL), 0);
	set_fault("empty");
	assert_int_equal(sign_key("gone-key"), -ENODEV);
	wait_up();
	assert_int_equal(sign_key("gone-key"), -ENOENT);
	assert_int_equal(sign_key("gone-key"), -ENOENT);
	assert_int_equal(ks_token_get_info(tok, &info), 0);
	assert_int_equal(info.up, 1);
	assert_int_equal(info.health, KS_HEALTH_OK);
	set_fault("");
	assert_int_equal(sign_key("gone-key"), 0);
}

/*
 * Token faults (CKR_GENERAL_ERROR...) make health degraded with the call,
 * the error and the count; a success makes it ok again; the third in a
 * row makes the module be initialised again, after which it works.
 */
static void test_repeated_faults_degrade_and_reinitialise(void **state)
{
	char reason[160];

	(void)state;
	assert_int_equal(sign_once(), 0);
	assert_int_equal(health(NULL, 0), KS_HEALTH_OK);
	set_fault("error CKR_GENERAL_ERROR 2 C_SignInit");
	assert_int_equal(sign_once(), -EIO);
	assert_int_equal(health(reason, sizeof(reason)), KS_HEALTH_DEGRADED);
	assert_non_null(strstr(reason, "C_SignInit: CKR_GENERAL_ERROR 1 time since "));
	assert_int_equal(sign_once(), -EIO);
	assert_int_equal(health(reason, sizeof(reason)), KS_HEALTH_DEGRADED);
	assert_non_null(strstr(reason, "C_SignInit: CKR_GENERAL_ERROR 2 times since "));
	assert_int_equal(sign_once(), 0);
	assert_int_equal(health(NULL, 0), KS_HEALTH_OK);

	set_fault("error CKR_GENERAL_ERROR always C_SignInit");
	assert_int_equal(sign_once(), -EIO);
	assert_int_equal(sign_once(), -EIO);
	assert_int_equal(sign_once(), -ENODEV);
	assert_int_not_equal(health(NULL, 0), KS_HEALTH_OK);
	set_fault("");
	assert_int_equal(sign_when_recovered(), 0);
	assert_int_equal(health(NULL, 0), KS_HEALTH_OK);
}

/*
 * Objects of class @cls labelled @label, seen through the module directly
 * (not faultp11, so never held by a fault); destroyed too with @destroy.
 */
static CK_ULONG outside_objects(CK_OBJECT_CLASS cls, const char *label, int destroy)
{
	CK_FUNCTION_LIST *raw = p11_kit_module_load(tt.module, P11_KIT_MODULE_UNMANAGED);
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)(uintptr_t)label, strlen(label) },
	};
	CK_SLOT_ID slots[16];
	CK_ULONG n = 16, found = 0;
	CK_OBJECT_HANDLE h[16];
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_TOKEN_INFO ti;
	CK_RV rv;

	assert_non_null(raw);
	rv = p11_kit_module_initialize(raw);
	assert_true(rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED);
	assert_int_equal(raw->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
	for (CK_ULONG i = 0; i < n && s == CK_INVALID_HANDLE; i++)
		if (raw->C_GetTokenInfo(slots[i], &ti) == CKR_OK && memcmp(ti.label, "faults ", 7) == 0)
			assert_int_equal(raw->C_OpenSession(slots[i], CKF_SERIAL_SESSION |
							   (destroy ? CKF_RW_SESSION : 0), NULL, NULL, &s),
					 CKR_OK);
	assert_int_not_equal(s, CK_INVALID_HANDLE);
	rv = raw->C_Login(s, CKU_USER, (CK_UTF8CHAR *)tt.pin, tt.pin_len);
	assert_true(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN);
	assert_int_equal(raw->C_FindObjectsInit(s, tmpl, 2), CKR_OK);
	assert_int_equal(raw->C_FindObjects(s, h, 16, &found), CKR_OK);
	assert_int_equal(raw->C_FindObjectsFinal(s), CKR_OK);
	for (CK_ULONG i = 0; destroy && i < found; i++)
		assert_int_equal(raw->C_DestroyObject(s, h[i]), CKR_OK);
	/* Not logged out or finalized: that would end the token layer's login too. */
	raw->C_CloseSession(s);
	p11_kit_module_release(raw);
	return found;
}

static CK_ULONG count_objects(CK_OBJECT_CLASS cls, const char *label)
{
	return outside_objects(cls, label, 0);
}

/* Store a certificate for @name's public key (issued by a throwaway key: the layer checks no chain). */
static void put_cert(const char *name)
{
	EVP_PKEY *pub = NULL, *ca = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *x = X509_new();
	uint8_t *der = NULL;
	int der_len;

	assert_non_null(ca);
	assert_non_null(x);
	assert_int_equal(ks_token_public_key(tok, name, &pub), 0);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 5);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)name, -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, pub);
	assert_true(X509_sign(x, ca, EVP_sha256()) > 0);
	assert_true((der_len = i2d_X509(x, &der)) > 0);
	assert_int_equal(ks_token_cert_put(tok, name, der, (size_t)der_len), 0);
	OPENSSL_free(der);
	X509_free(x);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(ca);
}

/*
 * A delete killed after its first step, and the daemon started again: the
 * private key is gone (no signature, no public key, no certificate under
 * the name), and a delete or a generate of the name removes what is left.
 * The token layer opened afresh stands for the restarted daemon.
 */
static void test_delete_cut_short(void **state)
{
	EVP_PKEY *pub = NULL;
	uint8_t *der = NULL;
	size_t der_len = 0;

	(void)state;
	for (int finish_by_delete = 0; finish_by_delete < 2; finish_by_delete++) {
		assert_int_equal(ks_token_generate(tok, "half-key", KS_KEY_EC_P256, NULL), 0);
		put_cert("half-key");
		assert_int_equal(count_objects(CKO_PUBLIC_KEY, "half-key"), 1);
		assert_int_equal(count_objects(CKO_CERTIFICATE, "half-key"), 1);
		/* The first destroy goes through; then the token is pulled. */
		set_fault("fail-after 1 CKR_DEVICE_REMOVED C_DestroyObject");
		assert_int_equal(ks_token_delete(tok, "half-key"), -ENODEV);
		set_fault("");
		assert_int_equal(ks_token_close(tok), 0);
		tok = NULL;
		assert_int_equal(open_token(), 0);

		assert_int_equal(count_objects(CKO_PRIVATE_KEY, "half-key"), 0);
		assert_int_equal(count_objects(CKO_PUBLIC_KEY, "half-key"), 1);
		assert_int_equal(count_objects(CKO_CERTIFICATE, "half-key"), 1);
		assert_int_equal(sign_key("half-key"), -ENOENT);
		assert_int_equal(ks_token_public_key(tok, "half-key", &pub), -ENOENT);
		assert_null(pub);
		assert_int_equal(ks_token_cert_get(tok, "half-key", &der, &der_len), -ENOENT);
		if (finish_by_delete) {
			assert_int_equal(ks_token_delete(tok, "half-key"), 0);
			assert_int_equal(count_objects(CKO_PUBLIC_KEY, "half-key"), 0);
			assert_int_equal(count_objects(CKO_CERTIFICATE, "half-key"), 0);
			assert_int_equal(ks_token_delete(tok, "half-key"), -ENOENT);
		} else {
			assert_int_equal(ks_token_generate(tok, "half-key", KS_KEY_EC_P256, &pub), 0);
			EVP_PKEY_free(pub);
			pub = NULL;
			assert_int_equal(count_objects(CKO_PUBLIC_KEY, "half-key"), 1);
			assert_int_equal(count_objects(CKO_CERTIFICATE, "half-key"), 0);
			assert_int_equal(ks_token_cert_get(tok, "half-key", &der, &der_len), -ENOENT);
			assert_int_equal(sign_key("half-key"), 0);
			assert_int_equal(ks_token_public_key(tok, "half-key", &pub), 0);
			EVP_PKEY_free(pub);
			pub = NULL;
			assert_int_equal(ks_token_delete(tok, "half-key"), 0);
		}
	}
}

/* Redirects stderr (where the token layer logs) into a file until capture_end(). */
static FILE *capture_begin(int *saved)
{
	FILE *f = tmpfile();

	assert_non_null(f);
	fflush(stderr);
	assert_true((*saved = dup(STDERR_FILENO)) >= 0);
	assert_true(dup2(fileno(f), STDERR_FILENO) >= 0);
	return f;
}

/* What was logged since capture_begin() into @buf; stderr restored (and the lines echoed). */
static void capture_end(FILE *f, int saved, char *buf, size_t len)
{
	size_t n;

	fflush(stderr);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	rewind(f);
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
	fputs(buf, stderr);
}

struct pubkey_result {
	int r;
	EVP_PKEY *pub;
};

static void *public_key_thread(void *arg)
{
	struct pubkey_result *pr = arg;

	__atomic_store_n(&pr->r, ks_token_public_key(tok, "race-pub", &pr->pub), __ATOMIC_RELEASE);
	return NULL;
}

static void *delete_thread(void *arg)
{
	__atomic_store_n((int *)arg, ks_token_delete(tok, "race-pub"), __ATOMIC_RELEASE);
	return NULL;
}

/* A search holds objects_rw shared: a writer cannot take it. */
static int search_under_way(void)
{
	if (pthread_rwlock_trywrlock(&tok->objects_rw) != 0)
		return 1;
	pthread_rwlock_unlock(&tok->objects_rw);
	return 0;
}

/*
 * key.public loses the race with a delete: the key was found (here from
 * the handle cache), then deleted with its public key before the search
 * for that public key. That is "no such key", and nothing at err level in
 * the log. The order is forced: faultp11 holds every C_FindObjectsInit, so
 * the reader waits in its public key search while the delete destroys the
 * private key (its own search for the public key held too) and the test
 * destroys the public key from outside. A private key whose public key
 * really is missing stays an error.
 */
static void test_public_key_of_key_deleted_meanwhile(void **state)
{
	struct pubkey_result pr = { 1, NULL };
	char logged[8192];
	pthread_t reader, deleter;
	EVP_PKEY *pub = NULL;
	int del_r = 1, saved;
	int64_t start;
	FILE *f;

	(void)state;
	assert_int_equal(ks_token_generate(tok, "race-pub", KS_KEY_EC_P256, NULL), 0);
	/* Known, and its handle cached: the reader's lookup makes no search. */
	assert_int_equal(ks_token_public_key(tok, "race-pub", &pub), 0);
	EVP_PKEY_free(pub);
	pub = NULL;

	set_fault("hang C_FindObjectsInit");
	assert_int_equal(pthread_create(&reader, NULL, public_key_thread, &pr), 0);
	start = now_ms();
	while (!search_under_way() && now_ms() - start < 10000)
		usleep(10 * 1000);
	assert_true(search_under_way());
	assert_int_equal(pthread_create(&deleter, NULL, delete_thread, &del_r), 0);
	start = now_ms();
	while (count_objects(CKO_PRIVATE_KEY, "race-pub") != 0 && now_ms() - start < 10000)
		usleep(10 * 1000);
	assert_int_equal(count_objects(CKO_PRIVATE_KEY, "race-pub"), 0);
	assert_int_equal(outside_objects(CKO_PUBLIC_KEY, "race-pub", 1), 1);
	/* The reader logs only once it goes on; debug too, to see which way it went. */
	f = capture_begin(&saved);
	ks_log_set_level(KS_LOG_DEBUG);
	set_fault("");
	assert_int_equal(pthread_join(reader, NULL), 0);
	assert_int_equal(pthread_join(deleter, NULL), 0);
	ks_log_set_level(KS_LOG_NOTICE);
	capture_end(f, saved, logged, sizeof(logged));
	/* Its public key search found nothing, and the key was gone: looked up again. */
	assert_non_null(strstr(logged, "key race-pub: deleted while in use; looking it up again"));
	assert_int_equal(pr.r, -ENOENT);
	assert_null(pr.pub);
	assert_int_equal(del_r, 0);
	assert_null(strstr(logged, "[err]"));

	/* The private key there, its public key not: an error, logged as one. */
	assert_int_equal(ks_token_generate(tok, "race-pub", KS_KEY_EC_P256, NULL), 0);
	assert_int_equal(outside_objects(CKO_PUBLIC_KEY, "race-pub", 1), 1);
	f = capture_begin(&saved);
	assert_int_equal(ks_token_public_key(tok, "race-pub", &pub), -EIO);
	capture_end(f, saved, logged, sizeof(logged));
	assert_null(pub);
	assert_non_null(strstr(logged, "[err]: key race-pub: no public key this service can read"));
	assert_int_equal(ks_token_delete(tok, "race-pub"), 0);
}

/*
 * Shutting down while the background reconnect is inside a module call
 * that does not return: the close gives up after its wait with -EBUSY (the
 * daemon then exits without unloading), and works once the call returns.
 * It closes the token: only the next test, which opens its own, may follow.
 */
static void test_close_with_reconnect_stuck(void **state)
{
	int64_t start;

	(void)state;
	set_fault("error CKR_DEVICE_REMOVED always");
	assert_int_equal(sign_once(), -ENODEV);
	set_fault("hang C_GetTokenInfo");
	/* The next attempt comes after the first back-off (1 s) and hangs. */
	usleep(1800 * 1000);
	start = now_ms();
	assert_int_equal(ks_token_close(tok), -EBUSY);
	assert_true(now_ms() - start < 8000);
	set_fault("");
	assert_int_equal(ks_token_close(tok), 0);
	tok = NULL;
}

/*
 * Another user of this process initialised the module first: the token
 * layer's reconnect and close leave that initialisation alone, and if that
 * user finalizes the module, the token layer initialises it again.
 */
static void test_foreign_initialisation_survives(void **state)
{
	CK_FUNCTION_LIST *other = p11_kit_module_load(tt.module, P11_KIT_MODULE_UNMANAGED);
	CK_INFO info;

	(void)state;
	assert_null(tok);
	assert_non_null(other);
	assert_int_equal(p11_kit_module_initialize(other), CKR_OK);
	assert_int_equal(open_token(), 0);
	set_fault("error CKR_DEVICE_REMOVED always");
	assert_int_equal(sign_once(), -ENODEV);
	usleep(300 * 1000);
	set_fault("");
	assert_int_equal(sign_when_recovered(), 0);
	assert_int_equal(ks_token_close(tok), 0);
	tok = NULL;
	assert_int_equal(other->C_GetInfo(&info), CKR_OK);
	/* The other user finalizes while the token layer uses the module: it initialises it again. */
	assert_int_equal(open_token(), 0);
	assert_int_equal(sign_once(), 0);
	assert_int_equal(p11_kit_module_finalize(other), CKR_OK);
	assert_int_equal(sign_when_recovered(), 0);
	assert_int_equal(ks_token_close(tok), 0);
	tok = NULL;
	p11_kit_module_release(other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_session_lost_is_retried_once),
		cmocka_unit_test(test_removed_token_recovers),
		cmocka_unit_test(test_token_not_present_recovers),
		cmocka_unit_test(test_hung_token_does_not_block_info),
		cmocka_unit_test(test_recovery_behind_hung_call_is_bounded),
		cmocka_unit_test(test_vanished_key_puts_token_in_doubt),
		cmocka_unit_test(test_key_gone_after_reinit_is_gone),
		cmocka_unit_test(test_repeated_faults_degrade_and_reinitialise),
		cmocka_unit_test(test_delete_cut_short),
		cmocka_unit_test(test_public_key_of_key_deleted_meanwhile),
		cmocka_unit_test(test_close_with_reconnect_stuck),
		cmocka_unit_test(test_foreign_initialisation_survives),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
