/*
 * The intent record of sign and csr.create is synced while the token
 * signs (keysvc/audit.h ks_audit_intent_start()), and the answer leaves
 * only once it is durable; key.generate, key.delete and cert.put still
 * wait for it before the token is asked.
 *
 * The dispatcher over tests/faultp11 in front of SoftHSM, with its audit
 * log in a file. fdatasync(2) is replaced by the definition below (the
 * audit module's calls reach it, as in test_audit): it watches, while the
 * sync "runs", whether the token call it waits for has started. The
 * token call is seen through faultp11's "fail-after N CKR C_Func" line,
 * which counts down in the control file before each call is forwarded.
 * With the intent made durable before the token is asked, the watched
 * call cannot start during the sync.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "keysvc/audit.h"
#include "keysvc/dispatch.h"
#include "proto/frame.h"
#include "tests/common/softhsm.h"

#define WATCH_START 100      /* the count faultp11's fail-after line starts from */

static struct ks_test_token tt;
static struct ks_token *tok;
static char control[PATH_MAX + 32];

static const struct ks_peer root_peer = { .uid = 0, .gid = 0, .pid = 1 };

/* ---- fdatasync, watched --------------------------------------------- */

enum sync_mode { SYNC_PASS, SYNC_WATCH, SYNC_WATCH_FAIL };

static int sync_mode;          /* enum sync_mode */
static int sync_watch_ms;      /* how long a watching sync waits for the token call */
static int sync_calls;         /* watching syncs */
static int token_in_sync;      /* the watched token call started during a sync */

/* 1 when faultp11's fail-after line has counted down: the watched call started. */
static int watched_call_started(void)
{
	char line[256] = "";
	long left = WATCH_START;
	FILE *f = fopen(control, "r");

	if (f == NULL)
		return 0;
	if (fgets(line, sizeof(line), f) != NULL)
		sscanf(line, "fail-after %ld", &left);
	fclose(f);
	return left < WATCH_START;
}

int fdatasync(int fd)
{
	int mode = __atomic_load_n(&sync_mode, __ATOMIC_SEQ_CST);

	if (mode != SYNC_PASS) {
		int seen = 0;

		__atomic_add_fetch(&sync_calls, 1, __ATOMIC_SEQ_CST);
		for (int ms = 0; ms < sync_watch_ms && !(seen = watched_call_started()); ms += 5)
			usleep(5000);
		if (seen)
			__atomic_store_n(&token_in_sync, 1, __ATOMIC_SEQ_CST);
		if (mode == SYNC_WATCH_FAIL) {
			errno = EIO;
			return -1;
		}
	}
	return (int)syscall(SYS_fdatasync, fd);
}

/* Watch @func (a C_ name) from now on, in syncs that wait up to @ms for it. */
static void watch(const char *func, int mode, int ms)
{
	char tmp[PATH_MAX + 64];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.new", control);
	assert_non_null(f = fopen(tmp, "w"));
	fprintf(f, "fail-after %d CKR_DEVICE_ERROR %s\n", WATCH_START, func);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(rename(tmp, control), 0);
	sync_watch_ms = ms;
	__atomic_store_n(&sync_calls, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&token_in_sync, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&sync_mode, mode, __ATOMIC_SEQ_CST);
}

static void unwatch(void)
{
	FILE *f;

	__atomic_store_n(&sync_mode, SYNC_PASS, __ATOMIC_SEQ_CST);
	assert_non_null(f = fopen(control, "w"));
	assert_int_equal(fclose(f), 0);
}

/* ---- a dispatcher with an audit file -------------------------------- */

struct audited {
	char path[64];
	struct ks_audit *audit;
	struct ks_ctx *ctx;
};

static void audited_open(struct audited *a, const struct ks_audit_options *opt)
{
	static const char policy_json[] =
		"[{\"uid\": 0, \"keys\": [\"*\"], \"ops\": [\"key.generate\", \"key.public\","
		" \"key.delete\", \"csr.create\", \"sign\", \"cert.put\"]}]";
	struct ks_policy *policy = NULL;
	char err[512] = "";
	json_t *rules;
	int fd;

	memset(a, 0, sizeof(*a));
	snprintf(a->path, sizeof(a->path), "/tmp/ks-overlap-audit-XXXXXX");
	assert_true((fd = mkstemp(a->path)) >= 0);
	close(fd);
	assert_int_equal(ks_audit_open(a->path, opt, &a->audit, err, sizeof(err)), 0);
	assert_non_null(rules = json_loads(policy_json, JSON_REJECT_DUPLICATES, NULL));
	assert_int_equal(ks_policy_from_json(rules, &policy, err, sizeof(err)), 0);
	json_decref(rules);
	assert_int_equal(ks_ctx_new(tok, a->audit, policy, &a->ctx), 0);
}

static void audited_close(struct audited *a)
{
	ks_ctx_free(a->ctx);
	ks_audit_close(a->audit);
	unlink(a->path);
}

static json_t *call(struct audited *a, const char *req)
{
	uint8_t *resp = NULL;
	size_t len = 0;
	json_t *o;

	assert_int_equal(ks_dispatch(a->ctx, &root_peer, (const uint8_t *)req, strlen(req),
				     &resp, &len), 0);
	assert_non_null(o = json_loadb((const char *)resp, len, JSON_REJECT_DUPLICATES, NULL));
	free(resp);
	return o;
}

static void assert_ok(json_t *o)
{
	if (!json_is_true(json_object_get(o, "ok")))
		fail_msg("not ok: %s: %s", json_string_value(json_object_get(o, "error")),
			 json_string_value(json_object_get(o, "message")));
}

/* The last two audit records: the intent and the outcome linked to it (@outcome). */
static void assert_intent_outcome(struct audited *a, const char *op, const char *outcome)
{
	char buf[65536], *line, *prev = NULL, *last = NULL, *save = NULL;
	json_t *intent, *out;
	size_t n;
	FILE *f;

	assert_non_null(f = fopen(a->path, "r"));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	for (line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		prev = last;
		last = line;
	}
	assert_non_null(prev);
	assert_non_null(intent = json_loads(prev, 0, NULL));
	assert_non_null(out = json_loads(last, 0, NULL));
	assert_string_equal(json_string_value(json_object_get(intent, "phase")), "intent");
	assert_string_equal(json_string_value(json_object_get(intent, "op")), op);
	assert_string_equal(json_string_value(json_object_get(out, "op")), op);
	assert_string_equal(json_string_value(json_object_get(out, "outcome")), outcome);
	assert_int_equal(json_integer_value(json_object_get(out, "intent")),
			 json_integer_value(json_object_get(intent, "seq")));
	json_decref(intent);
	json_decref(out);
}

/* ---- tests ------------------------------------------------------------ */

static const char sign_req[] =
	"{\"id\": 1, \"op\": \"sign\", \"key\": \"overlap\", \"alg\": \"ecdsa-sha256\","
	" \"data\": \"aGVsbG8=\"}";
static const char csr_req[] =
	"{\"id\": 2, \"op\": \"csr.create\", \"key\": \"overlap\", \"subject\": \"CN=overlap\"}";

/*
 * sign and csr.create: the token signs while the intent's sync runs (the
 * sync sees C_Sign start, which it waits for up to 5 s), and the answer
 * carries the signature after the sync.
 */
static void test_sign_overlaps_sync(void **state)
{
	struct audited a;
	json_t *o;

	(void)state;
	audited_open(&a, NULL);
	watch("C_Sign", SYNC_WATCH, 5000);
	o = call(&a, sign_req);
	assert_ok(o);
	assert_non_null(json_string_value(json_object_get(o, "signature")));
	json_decref(o);
	assert_true(sync_calls >= 1);
	assert_int_equal(token_in_sync, 1);
	assert_intent_outcome(&a, "sign", "ok");

	watch("C_Sign", SYNC_WATCH, 5000);
	o = call(&a, csr_req);
	assert_ok(o);
	assert_non_null(json_string_value(json_object_get(o, "csr")));
	json_decref(o);
	assert_true(sync_calls >= 1);
	assert_int_equal(token_in_sync, 1);
	assert_intent_outcome(&a, "csr.create", "ok");
	unwatch();
	audited_close(&a);
}

/*
 * The sync fails after the token signed: no signature or CSR is sent, the
 * answer is audit-unavailable and the outcome record says so. The next
 * request, with syncs working again, signs. With audit_failure continue
 * the signature is sent.
 */
static void test_sync_failure_discards(void **state)
{
	struct ks_audit_options cont = { .failure = KS_AUDIT_CONTINUE };
	struct audited a;
	json_t *o;

	(void)state;
	audited_open(&a, NULL);
	watch("C_Sign", SYNC_WATCH_FAIL, 5000);
	o = call(&a, sign_req);
	assert_true(json_is_false(json_object_get(o, "ok")));
	assert_string_equal(json_string_value(json_object_get(o, "error")), "audit-unavailable");
	assert_non_null(strstr(json_string_value(json_object_get(o, "message")), "discarded"));
	assert_null(json_object_get(o, "signature"));
	assert_null(json_object_get(o, "result"));
	json_decref(o);
	assert_int_equal(token_in_sync, 1);
	assert_intent_outcome(&a, "sign", "audit-unavailable");

	watch("C_Sign", SYNC_WATCH_FAIL, 5000);
	o = call(&a, csr_req);
	assert_string_equal(json_string_value(json_object_get(o, "error")), "audit-unavailable");
	assert_null(json_object_get(o, "csr"));
	assert_null(json_object_get(o, "result"));
	json_decref(o);
	assert_int_equal(token_in_sync, 1);
	assert_intent_outcome(&a, "csr.create", "audit-unavailable");

	unwatch();
	o = call(&a, sign_req);
	assert_ok(o);
	json_decref(o);
	assert_intent_outcome(&a, "sign", "ok");
	audited_close(&a);

	audited_open(&a, &cont);
	watch("C_Sign", SYNC_WATCH_FAIL, 5000);
	o = call(&a, sign_req);
	assert_ok(o);
	assert_non_null(json_string_value(json_object_get(o, "signature")));
	json_decref(o);
	unwatch();
	audited_close(&a);
}

/* A certificate for @key's public key (PEM, malloc'd), signed by a throwaway key. */
static char *cert_for(struct audited *a, const char *key)
{
	char req[128];
	json_t *o;
	BIO *bio;
	EVP_PKEY *pub, *ca;
	X509 *x;
	const char *pub_pem;
	char *data, *pem;
	long n;

	snprintf(req, sizeof(req), "{\"id\": 9, \"op\": \"key.public\", \"key\": \"%s\"}", key);
	o = call(a, req);
	assert_ok(o);
	assert_non_null(pub_pem = json_string_value(json_object_get(o, "public_key")));
	assert_non_null(bio = BIO_new_mem_buf(pub_pem, -1));
	assert_non_null(pub = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL));
	BIO_free(bio);
	json_decref(o);
	assert_non_null(ca = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"));
	assert_non_null(x = X509_new());
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"overlap", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	assert_int_equal(X509_set_pubkey(x, pub), 1);
	assert_true(X509_sign(x, ca, EVP_sha256()) > 0);
	assert_non_null(bio = BIO_new(BIO_s_mem()));
	assert_int_equal(PEM_write_bio_X509(bio, x), 1);
	n = BIO_get_mem_data(bio, &data);
	assert_non_null(pem = strndup(data, (size_t)n));
	BIO_free(bio);
	X509_free(x);
	EVP_PKEY_free(ca);
	EVP_PKEY_free(pub);
	return pem;
}

/*
 * Operations that change the token keep the old order: the sync ends
 * (after waiting 300 ms for the token call) before C_GenerateKeyPair,
 * C_CreateObject or C_DestroyObject is asked.
 */
static void test_changes_wait_before_token(void **state)
{
	struct audited a;
	json_t *o, *req;
	char *pem, *text;

	(void)state;
	audited_open(&a, NULL);
	watch("C_GenerateKeyPair", SYNC_WATCH, 300);
	o = call(&a, "{\"id\": 3, \"op\": \"key.generate\", \"key\": \"changes\", \"type\": \"ec-p256\"}");
	assert_ok(o);
	json_decref(o);
	assert_true(sync_calls >= 1);
	assert_int_equal(token_in_sync, 0);
	assert_true(watched_call_started());     /* it was asked, after the sync */
	assert_intent_outcome(&a, "key.generate", "ok");

	unwatch();
	pem = cert_for(&a, "changes");
	assert_non_null(req = json_pack("{s:i, s:s, s:s, s:s}", "id", 4, "op", "cert.put",
					"key", "changes", "cert", pem));
	assert_non_null(text = json_dumps(req, JSON_COMPACT));
	watch("C_CreateObject", SYNC_WATCH, 300);
	o = call(&a, text);
	assert_ok(o);
	json_decref(o);
	assert_true(sync_calls >= 1);
	assert_int_equal(token_in_sync, 0);
	assert_true(watched_call_started());
	assert_intent_outcome(&a, "cert.put", "ok");
	free(text);
	json_decref(req);
	free(pem);

	watch("C_DestroyObject", SYNC_WATCH, 300);
	o = call(&a, "{\"id\": 5, \"op\": \"key.delete\", \"key\": \"changes\"}");
	assert_ok(o);
	json_decref(o);
	assert_true(sync_calls >= 1);
	assert_int_equal(token_in_sync, 0);
	assert_true(watched_call_started());
	assert_intent_outcome(&a, "key.delete", "ok");
	unwatch();
	audited_close(&a);
}

static int setup(void **state)
{
	struct ks_token_config cfg;

	(void)state;
	if (getenv("KS_FAULTP11") == NULL) {
		fprintf(stderr, "KS_FAULTP11 is not set\n");
		return -1;
	}
	if (ks_test_token_setup(&tt, "overlap") != 0)
		return -1;
	snprintf(control, sizeof(control), "%s/fault-control", tt.dir);
	setenv("KS_FAULTP11_TARGET", tt.module, 1);
	setenv("KS_FAULTP11_CONTROL", control, 1);
	unwatch();
	ks_test_token_config(&tt, &cfg);
	cfg.module_path = getenv("KS_FAULTP11");
	cfg.sessions = 2;
	if (ks_token_open(&cfg, &tok) != 0)
		return -1;
	return ks_token_generate(tok, "overlap", KS_KEY_EC_P256, NULL);
}

static int teardown(void **state)
{
	(void)state;
	unwatch();
	if (tok != NULL)
		ks_token_close(tok);
	ks_test_token_teardown(&tt);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sign_overlaps_sync),
		cmocka_unit_test(test_sync_failure_discards),
		cmocka_unit_test(test_changes_wait_before_token),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
