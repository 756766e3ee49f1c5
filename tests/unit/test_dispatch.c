/*
 * The dispatcher as a pure function: request bytes in, response bytes out,
 * over a real SoftHSM token, with no socket in between.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "keysvc/audit.h"
#include "keysvc/dispatch.h"
#include "proto/auditchain.h"
#include "proto/b64.h"
#include "proto/frame.h"
#include "tests/common/softhsm.h"

struct fixture {
	struct ks_test_token tt;
	struct ks_token *token;
	struct ks_ctx *ctx;
};

static struct fixture fx;

static const struct ks_peer root_peer = { .uid = 0, .gid = 0, .pid = 1 };
static const struct ks_peer app_peer = { .uid = 1000, .gid = 1000, .pid = 2,
					 .ngroups = 1, .groups = { 2000 } };
static const struct ks_peer stranger = { .uid = 4242, .gid = 4242, .pid = 3 };

static const char policy_json[] =
	"[{\"uid\": 0, \"keys\": [\"*\"], \"ops\": [\"key.generate\", \"key.list\","
	" \"key.public\", \"key.delete\", \"csr.create\", \"sign\", \"cert.put\", \"cert.get\"]},"
	" {\"gid\": 2000, \"keys\": [\"app-*\"], \"ops\": [\"csr.create\", \"sign\", \"key.list\","
	" \"key.public\"]}]";

static struct ks_policy *suite_policy(void)
{
	struct ks_policy *policy = NULL;
	char err[256] = "";
	json_t *rules;

	rules = json_loads(policy_json, JSON_REJECT_DUPLICATES, NULL);
	if (rules == NULL || ks_policy_from_json(rules, &policy, err, sizeof(err)) != 0)
		fprintf(stderr, "policy: %s\n", err);
	json_decref(rules);
	return policy;
}

static int setup(void **state)
{
	struct ks_token_config cfg;
	struct ks_policy *policy;

	(void)state;
	memset(&fx, 0, sizeof(fx));
	if (ks_test_token_setup(&fx.tt, "dispatch") != 0)
		return -1;
	ks_test_token_config(&fx.tt, &cfg);
	cfg.sessions = 2;
	if (ks_token_open(&cfg, &fx.token) != 0)
		return -1;
	if ((policy = suite_policy()) == NULL)
		return -1;
	return ks_ctx_new(fx.token, NULL, policy, &fx.ctx);
}

static int teardown(void **state)
{
	(void)state;
	ks_ctx_free(fx.ctx);
	ks_token_close(fx.token);
	ks_test_token_teardown(&fx.tt);
	return 0;
}

/* Dispatch @req (a C string) for @peer through @ctx and parse the answer. */
static json_t *call_ctx(struct ks_ctx *ctx, const struct ks_peer *peer, const char *req)
{
	uint8_t *resp = NULL;
	size_t len = 0;
	json_t *o;

	assert_int_equal(ks_dispatch(ctx, peer, (const uint8_t *)req, strlen(req),
				     &resp, &len), 0);
	assert_non_null(resp);
	assert_true(len > 0 && len <= KS_FRAME_MAX);
	o = json_loadb((const char *)resp, len, JSON_REJECT_DUPLICATES, NULL);
	assert_non_null(o);
	free(resp);
	return o;
}

static json_t *call(const struct ks_peer *peer, const char *req)
{
	return call_ctx(fx.ctx, peer, req);
}

/* A second dispatcher over the same token whose audit lines go to a file. */
struct audited {
	char path[64];
	struct ks_audit *audit;
	struct ks_ctx *ctx;
};

static void audited_open(struct audited *a)
{
	char err[512];
	int fd;

	memset(a, 0, sizeof(*a));
	snprintf(a->path, sizeof(a->path), "/tmp/ks-dispatch-audit-XXXXXX");
	assert_true((fd = mkstemp(a->path)) >= 0);
	close(fd);
	assert_int_equal(ks_audit_open(a->path, NULL, &a->audit, err, sizeof(err)), 0);
	assert_int_equal(ks_ctx_new(fx.token, a->audit, suite_policy(), &a->ctx), 0);
}

static void audited_close(struct audited *a)
{
	ks_ctx_free(a->ctx);
	ks_audit_close(a->audit);
	unlink(a->path);
}

/* The last audit line written, parsed. */
static json_t *audit_last(struct audited *a)
{
	char buf[65536], *line, *last = NULL, *save = NULL;
	size_t n;
	FILE *f;
	json_t *o;

	assert_non_null(f = fopen(a->path, "r"));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	for (line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
		last = line;
	assert_non_null(last);
	assert_non_null(o = json_loads(last, JSON_REJECT_DUPLICATES, NULL));
	return o;
}

/* The last audit line has @op, @key (NULL: absent) and @outcome. */
static void assert_audit(struct audited *a, const char *op, const char *key, const char *outcome)
{
	json_t *o = audit_last(a), *v;

	v = json_object_get(o, "op");
	if (op == NULL) {
		assert_true(v == NULL || json_is_null(v));
	} else {
		assert_true(json_is_string(v));
		assert_string_equal(json_string_value(v), op);
	}
	v = json_object_get(o, "key");
	if (key == NULL) {
		assert_true(v == NULL || json_is_null(v));
	} else {
		assert_true(json_is_string(v));
		assert_string_equal(json_string_value(v), key);
	}
	assert_string_equal(json_string_value(json_object_get(o, "outcome")), outcome);
	json_decref(o);
}

static void assert_error(json_t *o, const char *error)
{
	assert_true(json_is_false(json_object_get(o, "ok")));
	assert_string_equal(json_string_value(json_object_get(o, "error")), error);
	assert_non_null(json_string_value(json_object_get(o, "message")));
}

static void assert_ok(json_t *o)
{
	if (!json_is_true(json_object_get(o, "ok")))
		fail_msg("not ok: %s: %s", json_string_value(json_object_get(o, "error")),
			 json_string_value(json_object_get(o, "message")));
}

/*
 * The schema checks (proto/wire.h) of type, alg, digest and data give the
 * answers the operations gave before the checks moved into the tables,
 * and in the same order against the policy: the key name is checked
 * before the policy is asked, every other value only for a peer it lets
 * ask (a peer not granted sign learns nothing of which names exist).
 */
static void test_checked_fields(void **state)
{
	static const struct {
		const struct ks_peer *peer;
		const char *req, *error, *message;
	} cases[] = {
		{ &root_peer, "{\"id\": 1, \"op\": \"key.generate\", \"key\": \"t\", \"type\": \"dsa\"}",
		  "unsupported", "unknown key type dsa" },
		{ &root_peer, "{\"id\": 1, \"op\": \"sign\", \"key\": \"t\", \"alg\": \"rsa-md5\","
		  " \"data\": \"AA==\"}", "unsupported", "unknown signature algorithm rsa-md5" },
		{ &root_peer, "{\"id\": 1, \"op\": \"sign\", \"key\": \"t\", \"alg\": \"ecdsa-sha256\","
		  " \"data\": \"A!==\"}", "bad-request", "data: must be base64 of at most 49152 bytes" },
		{ &root_peer, "{\"id\": 1, \"op\": \"sign\", \"key\": \"t\", \"alg\": \"ecdsa-sha384\","
		  " \"digest\": \"AAAA\"}", "bad-request", "digest: must be base64 of 48 bytes for ecdsa-sha384" },
		{ &root_peer, "{\"id\": 1, \"op\": \"sign\", \"key\": \"t\", \"alg\": \"ecdsa-sha256\"}",
		  "bad-request", "exactly one of digest and data is required" },
		{ &root_peer, "{\"id\": 1, \"op\": \"key.public\", \"key\": \"a/b\"}",
		  "bad-request", "key: not a valid key name" },
		{ &root_peer, "{\"id\": 1, \"op\": \"key.public\", \"key\": 5}",
		  "bad-request", "key: must be a string" },
		{ &root_peer, "{\"id\": 1, \"op\": \"cert.get\"}",
		  "bad-request", "key: required field missing" },
		/* app-* only: a bad value for another key is denied, a bad key name is not. */
		{ &app_peer, "{\"id\": 1, \"op\": \"sign\", \"key\": \"ops-key\", \"alg\": \"rsa-md5\","
		  " \"data\": \"A!==\"}", "denied", NULL },
		{ &app_peer, "{\"id\": 1, \"op\": \"key.generate\", \"key\": \"app-new\", \"type\": \"dsa\"}",
		  "denied", NULL },
		{ &app_peer, "{\"id\": 1, \"op\": \"sign\", \"key\": \"../app\", \"alg\": \"rsa-md5\"}",
		  "bad-request", "key: not a valid key name" },
		/* A type error anywhere is reported before any value is judged. */
		{ &root_peer, "{\"id\": 1, \"op\": \"sign\", \"key\": \"t\", \"alg\": \"rsa-md5\", \"data\": 5}",
		  "bad-request", "data: must be a string" },
	};
	json_t *o;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		print_message("case %zu: %s\n", i, cases[i].req);
		o = call(cases[i].peer, cases[i].req);
		assert_error(o, cases[i].error);
		if (cases[i].message != NULL)
			assert_string_equal(json_string_value(json_object_get(o, "message")), cases[i].message);
		json_decref(o);
	}
}

static void test_hello(void **state)
{
	json_t *o;

	(void)state;
	o = call(&root_peer, "{\"id\": 1, \"op\": \"hello\", \"versions\": [1]}");
	assert_ok(o);
	assert_int_equal(json_integer_value(json_object_get(o, "id")), 1);
	assert_int_equal(json_integer_value(json_object_get(o, "version")), 1);
	assert_string_equal(json_string_value(json_object_get(o, "health")), "ok");
	assert_string_equal(json_string_value(json_object_get(json_object_get(o, "token"), "label")),
			    "dispatch");
	json_decref(o);

	/* versions is optional. */
	o = call(&root_peer, "{\"id\": 9, \"op\": \"hello\"}");
	assert_ok(o);
	json_decref(o);

	o = call(&root_peer, "{\"id\": \"v\", \"op\": \"hello\", \"versions\": [2, 3]}");
	assert_error(o, "unsupported");
	assert_string_equal(json_string_value(json_object_get(o, "id")), "v");
	json_decref(o);

	/* A peer no rule names gets nothing, not even hello. */
	o = call(&stranger, "{\"id\": 2, \"op\": \"hello\"}");
	assert_error(o, "denied");
	json_decref(o);
}

static void test_malformed(void **state)
{
	static const struct {
		const char *req;
		const char *error;
		int id_null;
	} cases[] = {
		{ "not json", "bad-request", 1 },
		{ "[1, 2]", "bad-request", 1 },
		{ "{\"op\": \"hello\"}", "bad-request", 1 },
		{ "{\"id\": -1, \"op\": \"hello\"}", "bad-request", 1 },
		{ "{\"id\": 1.5, \"op\": \"hello\"}", "bad-request", 1 },
		{ "{\"id\": \"\", \"op\": \"hello\"}", "bad-request", 1 },
		{ "{\"id\": 1, \"id\": 2, \"op\": \"hello\"}", "bad-request", 1 },
		{ "{\"id\": 3, \"op\": \"frobnicate\"}", "unsupported", 0 },
		{ "{\"id\": 3, \"op\": 7}", "bad-request", 0 },
		{ "{\"id\": 3, \"op\": \"hello\", \"extra\": true}", "bad-request", 0 },
		{ "{\"id\": 3, \"op\": \"key.public\", \"key\": 5}", "bad-request", 0 },
		{ "{\"id\": 3, \"op\": \"key.public\"}", "bad-request", 0 },
		{ "{\"id\": 3, \"op\": \"key.public\", \"key\": \"../etc\"}", "bad-request", 0 },
		{ "{\"id\": 3, \"op\": \"key.public\", \"key\": \"-x\"}", "bad-request", 0 },
		{ "{\"id\": 3, \"op\": \"key.generate\", \"key\": \"t\", \"type\": \"dsa\"}", "unsupported", 0 },
		{ "{\"id\": 3, \"op\": \"sign\", \"key\": \"t\", \"alg\": \"ecdsa-sha256\"}", "bad-request", 0 },
		/* 32 bytes, but a non-canonical encoding (the bits '=' discards are not zero). */
		{ "{\"id\": 3, \"op\": \"sign\", \"key\": \"t\", \"alg\": \"ecdsa-sha256\","
		  " \"digest\": \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\"}", "bad-request", 0 },
	};
	json_t *o;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		o = call(&root_peer, cases[i].req);
		if (!json_is_false(json_object_get(o, "ok")) ||
		    strcmp(json_string_value(json_object_get(o, "error")), cases[i].error) != 0)
			fail_msg("case %zu (%s): got %s", i, cases[i].req,
				 json_string_value(json_object_get(o, "error")));
		assert_int_equal(json_is_null(json_object_get(o, "id")), cases[i].id_null);
		json_decref(o);
	}
}

static void test_invalid_utf8_and_nul(void **state)
{
	static const char bad_utf8[] = "{\"id\": 1, \"op\": \"hello\xff\"}";
	static const char nul[] = "{\"id\": 1, \"op\": \"hel\\u0000lo\"}";
	uint8_t *resp = NULL;
	size_t len = 0;
	json_t *o;

	(void)state;
	assert_int_equal(ks_dispatch(fx.ctx, &root_peer, (const uint8_t *)bad_utf8,
				     sizeof(bad_utf8) - 1, &resp, &len), 0);
	o = json_loadb((const char *)resp, len, 0, NULL);
	assert_error(o, "bad-request");
	json_decref(o);
	free(resp);
	o = call(&root_peer, nul);
	assert_error(o, "bad-request");
	json_decref(o);
}

static EVP_PKEY *pem_pubkey(json_t *o)
{
	const char *pem = json_string_value(json_object_get(o, "public_key"));
	BIO *bio;
	EVP_PKEY *pk;

	assert_non_null(pem);
	bio = BIO_new_mem_buf(pem, -1);
	pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	assert_non_null(pk);
	return pk;
}

static void test_generate_csr_sign(void **state)
{
	unsigned char md[32];
	char req[1024], *b64 = NULL;
	const char *sig_b64;
	uint8_t *sig = NULL;
	size_t sig_len = 0;
	EVP_PKEY *pub;
	EVP_MD_CTX *mctx;
	X509_REQ *csr;
	BIO *bio;
	json_t *o;

	(void)state;
	o = call(&root_peer, "{\"id\": 10, \"op\": \"key.generate\", \"key\": \"app-one\", \"type\": \"ec-p256\","
		 " \"purposes\": [\"csr\", \"sign\"]}");
	assert_ok(o);
	assert_string_equal(json_string_value(json_object_get(o, "type")), "ec-p256");
	pub = pem_pubkey(o);
	json_decref(o);

	o = call(&root_peer, "{\"id\": 11, \"op\": \"key.generate\", \"key\": \"app-one\", \"type\": \"ec-p256\"}");
	assert_error(o, "exists");
	json_decref(o);

	/* The app group may make CSRs for app-* keys. */
	o = call(&app_peer, "{\"id\": 12, \"op\": \"csr.create\", \"key\": \"app-one\","
		 " \"subject\": \"CN=app-one,O=Example\", \"san\": {\"dns\": [\"app.example\"]},"
		 " \"ext_key_usage\": [\"clientAuth\"]}");
	assert_ok(o);
	bio = BIO_new_mem_buf(json_string_value(json_object_get(o, "csr")), -1);
	csr = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
	BIO_free(bio);
	assert_non_null(csr);
	assert_int_equal(X509_REQ_verify(csr, pub), 1);
	X509_REQ_free(csr);
	json_decref(o);

	/* Sign data hashed by the daemon, verify here. */
	assert_int_equal(EVP_Digest("hello", 5, md, NULL, EVP_sha256(), NULL), 1);
	assert_int_equal(ks_b64_encode((const uint8_t *)"hello", 5, &b64), 0);
	snprintf(req, sizeof(req), "{\"id\": 13, \"op\": \"sign\", \"key\": \"app-one\","
		 " \"alg\": \"ecdsa-sha256\", \"data\": \"%s\"}", b64);
	free(b64);
	o = call(&app_peer, req);
	assert_ok(o);
	sig_b64 = json_string_value(json_object_get(o, "signature"));
	assert_non_null(sig_b64);
	assert_int_equal(ks_b64_decode(sig_b64, strlen(sig_b64), 512, &sig, &sig_len), 0);
	mctx = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestVerifyInit(mctx, NULL, EVP_sha256(), NULL, pub), 1);
	assert_int_equal(EVP_DigestVerify(mctx, sig, sig_len, (const unsigned char *)"hello", 5), 1);
	EVP_MD_CTX_free(mctx);
	free(sig);
	json_decref(o);

	/* A digest of the wrong length is refused before the token sees it. */
	o = call(&app_peer, "{\"id\": 14, \"op\": \"sign\", \"key\": \"app-one\","
		 " \"alg\": \"ecdsa-sha256\", \"digest\": \"AAAA\"}");
	assert_error(o, "bad-request");
	json_decref(o);
	EVP_PKEY_free(pub);
}

static void test_policy_enforced(void **state)
{
	json_t *o, *keys;
	size_t i;
	json_t *k;

	(void)state;
	o = call(&root_peer, "{\"id\": 20, \"op\": \"key.generate\", \"key\": \"ops-key\", \"type\": \"ec-p256\"}");
	assert_ok(o);
	json_decref(o);

	/* Outside the app-* pattern: denied, for every key operation. */
	o = call(&app_peer, "{\"id\": 21, \"op\": \"sign\", \"key\": \"ops-key\", \"alg\": \"ecdsa-sha256\","
		 " \"digest\": \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}");
	assert_error(o, "denied");
	json_decref(o);
	/* Generation is a separate grant from csr/sign. */
	o = call(&app_peer, "{\"id\": 22, \"op\": \"key.generate\", \"key\": \"app-two\", \"type\": \"ec-p256\"}");
	assert_error(o, "denied");
	json_decref(o);
	o = call(&app_peer, "{\"id\": 23, \"op\": \"key.delete\", \"key\": \"app-one\"}");
	assert_error(o, "denied");
	json_decref(o);
	/* The denied generate touched nothing. */
	o = call(&root_peer, "{\"id\": 24, \"op\": \"key.public\", \"key\": \"app-two\"}");
	assert_error(o, "no-such-key");
	json_decref(o);

	/* key.list shows each peer only what it may list. */
	o = call(&app_peer, "{\"id\": 25, \"op\": \"key.list\"}");
	assert_ok(o);
	keys = json_object_get(o, "keys");
	assert_true(json_array_size(keys) >= 1);
	json_array_foreach(keys, i, k)
		assert_int_equal(strncmp(json_string_value(json_object_get(k, "key")), "app-", 4), 0);
	json_decref(o);
	o = call(&stranger, "{\"id\": 26, \"op\": \"key.list\"}");
	assert_error(o, "denied");
	json_decref(o);
}

static void test_policy_reload(void **state)
{
	struct ks_policy *p = NULL;
	char err[256];
	json_t *rules, *o;

	(void)state;
	rules = json_loads("[{\"uid\": 4242, \"keys\": [\"ops-*\"], \"ops\": [\"key.public\"]}]", 0, NULL);
	assert_int_equal(ks_policy_from_json(rules, &p, err, sizeof(err)), 0);
	json_decref(rules);
	ks_ctx_set_policy(fx.ctx, p);
	o = call(&stranger, "{\"id\": 30, \"op\": \"key.public\", \"key\": \"ops-key\"}");
	assert_ok(o);
	json_decref(o);
	o = call(&root_peer, "{\"id\": 31, \"op\": \"key.public\", \"key\": \"ops-key\"}");
	assert_error(o, "denied");
	json_decref(o);
	/* Restore the suite's policy for the tests that follow. */
	rules = json_loads(policy_json, 0, NULL);
	assert_int_equal(ks_policy_from_json(rules, &p, err, sizeof(err)), 0);
	json_decref(rules);
	ks_ctx_set_policy(fx.ctx, p);
}

/*
 * Client text quoted in an error message is cut to 64 bytes; a cut inside
 * a multi-byte character once made the message invalid UTF-8, the answer
 * failed to encode and the connection was dropped without one.
 */
static void test_utf8_cut(void **state)
{
	static const char *const fills[] = { "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80" };
#define CSR_HEAD "\"op\": \"csr.create\", \"key\": \"app-utf8\", \"subject\": \"CN=x\", "
	/* The request around the text, the error, and the message around the quoted part. */
	static const struct {
		const char *req_head, *req_tail, *error, *msg_head, *msg_tail;
	} cases[] = {
		{ "\"op\": \"", "\"}", "unsupported", "unknown operation ", "" },
		{ "\"op\": \"hello\", \"", "\": 1}", "bad-request", "", ": unknown field" },
		{ CSR_HEAD "\"key_usage\": [\"", "\"]}", "bad-request", "key_usage: unknown usage ", "" },
		{ CSR_HEAD "\"san\": {\"", "\": []}}", "bad-request", "san.", ": unknown field" },
		{ CSR_HEAD "\"attributes\": [{\"", "\": 1}]}", "bad-request", "attributes[0].",
		  ": unknown field" },
	};
#undef CSR_HEAD
	char text[256], req[1024], want[128];
	json_t *o;

	(void)state;
	for (size_t f = 0; f < sizeof(fills) / sizeof(fills[0]); f++) {
		size_t cl = strlen(fills[f]), n;

		/* "a" and then characters of cl bytes, well over the 64 quoted. */
		strcpy(text, "a");
		while (strlen(text) + cl < 200)
			strcat(text, fills[f]);
		/* What may be quoted: whole characters within 64 bytes (61, 63 or 64). */
		n = 1 + (64 - 1) / cl * cl;
		for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
			snprintf(req, sizeof(req), "{\"id\": %zu, %s%s%s", c + 1, cases[c].req_head, text,
				 cases[c].req_tail);
			o = call(&root_peer, req);
			assert_error(o, cases[c].error);
			assert_int_equal(json_integer_value(json_object_get(o, "id")), c + 1);
			snprintf(want, sizeof(want), "%s%.*s%s", cases[c].msg_head, (int)n, text,
				 cases[c].msg_tail);
			assert_string_equal(json_string_value(json_object_get(o, "message")), want);
			json_decref(o);
		}
	}
}

/*
 * The audit line is written after the answer is encoded and records what
 * the client got: an answer too large for a frame is "internal", even
 * though the operation itself succeeded.
 */
static void test_audit_outcome_is_answer(void **state)
{
	struct audited a;
	json_t *o;

	(void)state;
	audited_open(&a);
	o = call_ctx(a.ctx, &root_peer, "{\"id\": 40, \"op\": \"key.generate\", \"key\": \"app-audit\","
		     " \"type\": \"ec-p256\"}");
	assert_ok(o);
	json_decref(o);
	assert_audit(&a, "key.generate", "app-audit", "ok");

	/* A P-256 public key in PEM is about 180 bytes: that answer no longer fits. */
	ks_ctx_set_response_max(a.ctx, 160);
	o = call_ctx(a.ctx, &root_peer, "{\"id\": 41, \"op\": \"key.public\", \"key\": \"app-audit\"}");
	assert_error(o, "internal");
	assert_int_equal(json_integer_value(json_object_get(o, "id")), 41);
	assert_string_equal(json_string_value(json_object_get(o, "message")), "response too large");
	json_decref(o);
	assert_audit(&a, "key.public", "app-audit", "internal");

	/* An error answer is audited with its own name. */
	o = call_ctx(a.ctx, &root_peer, "{\"id\": 42, \"op\": \"key.public\", \"key\": \"app-none\"}");
	assert_error(o, "no-such-key");
	json_decref(o);
	assert_audit(&a, "key.public", "app-none", "no-such-key");
	audited_close(&a);
}

/* A string of @n bytes: @prefix, then @fill repeated. */
static json_t *filled(const char *prefix, char fill, size_t n)
{
	char buf[2048];
	size_t p = strlen(prefix);

	assert_true(n < sizeof(buf) && n >= p);
	memcpy(buf, prefix, p);
	memset(buf + p, fill, n - p);
	buf[n] = '\0';
	return json_string(buf);
}

/* A dotted OID of exactly @n characters (21 + 2j, at most 127), distinct for each @k < 100. */
static json_t *long_oid(unsigned k, size_t n)
{
	char buf[128];
	size_t p;

	p = (size_t)snprintf(buf, sizeof(buf), "1.3.6.1.4.1.55555.%u", k + 100);
	assert_true(n < sizeof(buf) && (n - p) % 2 == 0);
	while (p < n) {
		buf[p++] = '.';
		buf[p++] = '7';
	}
	buf[p] = '\0';
	return json_string(buf);
}

/*
 * The request csr.create with the most DER for its text that the schema
 * allows (64 subject AVAs, 100 SANs half of them 16-byte IPv6 addresses,
 * 32 EKU OIDs, 16 attributes, the rest in URIs, which DER copies byte for
 * byte), its text exactly @text bytes, for @key.
 */
static char *worst_csr(const char *key, size_t text)
{
	json_t *req, *ip, *uri, *eku, *attrs, *ku;
	char subject[4097], *out;
	size_t used = 0, sp = 0, uri_bytes;
	unsigned i;

	/* Subject: 64 AVAs "CN=xxx", 4096 bytes with the commas. */
	for (i = 0; i < 64; i++) {
		size_t len;

		sp += (size_t)snprintf(subject + sp, sizeof(subject) - sp, "%sCN=", i ? "," : "");
		len = i < 63 ? 60 : 4096 - sp;
		assert_true(sp + len < sizeof(subject));
		memset(subject + sp, 'a' + (int)(i % 26), len);
		sp += len;
		subject[sp] = '\0';
	}
	assert_int_equal(strlen(subject), 4096);
	used += 4096;
	ip = json_array();
	for (i = 0; i < 50; i++) {
		char a[16];

		snprintf(a, sizeof(a), "::%x", i + 1);
		used += strlen(a);
		json_array_append_new(ip, json_string(a));
	}
	eku = json_array();
	for (i = 0; i < 32; i++) {
		json_array_append_new(eku, long_oid(i, 21));
		used += 21;
	}
	attrs = json_array();
	for (i = 0; i < 16; i++) {
		json_array_append_new(attrs, json_pack("{s:o, s:o}", "oid", long_oid(50 + i, 21),
						       "value", filled("", 'v', 1024)));
		used += 21 + 1024;
	}
	/* The URIs take the rest. */
	assert_true(text > used + 50 * 3);
	uri_bytes = text - used;
	uri = json_array();
	for (i = 0; i < 50; i++) {
		size_t len = uri_bytes / 50 + (i < uri_bytes % 50);

		json_array_append_new(uri, filled("u:", 'x', len));
	}
	ku = json_pack("[s, s, s, s, s, s, s]", "digitalSignature", "nonRepudiation",
		       "keyEncipherment", "dataEncipherment", "keyAgreement", "keyCertSign", "cRLSign");
	req = json_pack("{s:i, s:s, s:s, s:s, s:{s:o, s:o}, s:o, s:o, s:o, s:s}", "id", 50,
			"op", "csr.create", "key", key, "subject", subject,
			"san", "ip", ip, "uri", uri, "key_usage", ku, "ext_key_usage", eku,
			"attributes", attrs, "digest", "sha512");
	assert_non_null(req);
	out = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	assert_non_null(out);
	assert_true(strlen(out) <= KS_FRAME_MAX);
	return out;
}

/*
 * A CSR within every limit once came out over 64 KiB: the token signed,
 * the client got "internal" and the audit said "ok". The text a CSR is
 * built from is bounded so that its answer always fits, and a request
 * over the bound is refused before the token signs anything.
 */
static void test_csr_fits_a_frame(void **state)
{
	struct audited a;
	json_t *o, *uris;
	char *req;
	uint8_t *resp = NULL;
	size_t len = 0;

	(void)state;
	audited_open(&a);
	o = call(&root_peer, "{\"id\": 51, \"op\": \"key.generate\", \"key\": \"app-big\", \"type\": \"rsa-4096\"}");
	assert_ok(o);
	json_decref(o);

	/* The reviewer's request: 60 URIs of about 1 KB, 60,310 bytes. */
	uris = json_array();
	for (unsigned i = 0; i < 60; i++)
		json_array_append_new(uris, filled("https://example.com/", 'p', 990));
	o = json_pack("{s:i, s:s, s:s, s:s, s:{s:o}}", "id", 52, "op", "csr.create",
		      "key", "app-big", "subject", "CN=big", "san", "uri", uris);
	req = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	o = call_ctx(a.ctx, &root_peer, req);
	free(req);
	assert_error(o, "bad-request");
	assert_non_null(strstr(json_string_value(json_object_get(o, "message")), "more than 32768"));
	json_decref(o);
	assert_audit(&a, "csr.create", "app-big", "bad-request");

	/* The largest CSR the limits allow, with the largest key: answered, within a frame. */
	req = worst_csr("app-big", 32768);
	assert_int_equal(ks_dispatch(a.ctx, &root_peer, (const uint8_t *)req, strlen(req),
				     &resp, &len), 0);
	free(req);
	o = json_loadb((const char *)resp, len, 0, NULL);
	free(resp);
	assert_ok(o);
	assert_true(len <= KS_FRAME_MAX - 4096);
	json_decref(o);
	assert_audit(&a, "csr.create", "app-big", "ok");

	/* One byte more is refused. */
	req = worst_csr("app-big", 32769);
	o = call_ctx(a.ctx, &root_peer, req);
	free(req);
	assert_error(o, "bad-request");
	json_decref(o);
	audited_close(&a);
}

/*
 * A request refused by the id or schema checks is audited with the
 * operation and key it named (when they are a known operation and a valid
 * key name), not with null: the audit log must show what was attempted.
 */
static void test_audit_refused_requests(void **state)
{
	static const struct {
		const char *req;
		const char *op, *key, *outcome;
	} cases[] = {
		{ "{\"op\": \"sign\", \"key\": \"app-x\", \"alg\": \"ecdsa-sha256\"}",
		  "sign", "app-x", "bad-request" },
		{ "{\"id\": -1, \"op\": \"key.public\", \"key\": \"app-x\"}",
		  "key.public", "app-x", "bad-request" },
		{ "{\"id\": [], \"op\": \"hello\"}", "hello", NULL, "bad-request" },
		{ "{\"id\": 1, \"op\": \"csr.create\", \"key\": \"app-x\", \"subject\": 5}",
		  "csr.create", "app-x", "bad-request" },
		{ "{\"id\": 1, \"op\": \"sign\", \"key\": \"app-x\", \"alg\": \"ecdsa-sha256\", \"extra\": 1}",
		  "sign", "app-x", "bad-request" },
		{ "{\"id\": 1, \"op\": \"key.delete\"}", "key.delete", NULL, "bad-request" },
		{ "{\"id\": 1, \"op\": \"frobnicate\", \"key\": \"app-x\"}", NULL, "app-x", "unsupported" },
		{ "{\"id\": 1, \"op\": \"key.public\", \"key\": \"../etc\"}", "key.public", NULL, "bad-request" },
		{ "{\"id\": 1, \"op\": \"key.public\", \"key\": 5}", "key.public", NULL, "bad-request" },
		{ "{\"id\": 1, \"op\": 7, \"key\": \"app-x\"}", NULL, "app-x", "bad-request" },
		{ "not json", NULL, NULL, "bad-request" },
		{ "{\"id\": 1, \"op\": \"key.public\", \"key\": \"app-none\"}", "key.public", "app-none", "no-such-key" },
		/* A NUL inside: the parser refuses it, and nothing is named. */
		{ "{\"id\": 1, \"op\": \"key.delete\", \"key\": \"app-x\\u0000y\"}", NULL, NULL, "bad-request" },
		/* An operation that takes no key names none, whatever the request carries. */
		{ "{\"id\": 1, \"op\": \"hello\", \"key\": \"app-x\"}", "hello", NULL, "bad-request" },
		{ "{\"id\": 1, \"op\": \"key.list\", \"key\": \"app-x\"}", "key.list", NULL, "bad-request" },
	};
	struct audited a;
	json_t *o;

	(void)state;
	audited_open(&a);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		o = call_ctx(a.ctx, &root_peer, cases[i].req);
		assert_error(o, cases[i].outcome);
		json_decref(o);
		print_message("case %zu: %s\n", i, cases[i].req);
		assert_audit(&a, cases[i].op, cases[i].key, cases[i].outcome);
	}
	audited_close(&a);
}

/*
 * key.list answers at most 512 keys (3 here, through the test setter);
 * "truncated" is true exactly when a key the peer may list was left out.
 * Keys it may not list do not count: they once made a peer with exactly
 * the cap of keys see "truncated" (and so learn that other keys exist).
 */
static void test_list_truncated(void **state)
{
	static const struct ks_peer lister = { .uid = 4343, .gid = 4343, .pid = 4 };
	static const char *const names[] = { "lst-0", "lst-1", "lst-2", "lst-3", "zzz-other" };
	struct ks_policy *p = NULL;
	struct ks_ctx *ctx = NULL;
	char err[256];
	json_t *rules, *o, *keys;
	EVP_PKEY *pub;

	(void)state;
	rules = json_loads("[{\"uid\": 4343, \"keys\": [\"lst-*\"], \"ops\": [\"key.list\"]}]", 0, NULL);
	assert_int_equal(ks_policy_from_json(rules, &p, err, sizeof(err)), 0);
	json_decref(rules);
	assert_int_equal(ks_ctx_new(fx.token, NULL, p, &ctx), 0);
	ks_ctx_set_list_max(ctx, 3);
	/* Keys this peer may not list sort before (app-*) and after its own. */
	for (size_t i = 0; i < 5; i++) {
		if (i == 3)
			continue;
		pub = NULL;
		assert_int_equal(ks_token_generate(fx.token, names[i], KS_KEY_EC_P256, &pub), 0);
		EVP_PKEY_free(pub);
	}
	/* Exactly the cap visible, others on the token: all shown, nothing left out. */
	o = call_ctx(ctx, &lister, "{\"id\": 61, \"op\": \"key.list\"}");
	assert_ok(o);
	assert_int_equal(json_array_size(json_object_get(o, "keys")), 3);
	assert_true(json_is_false(json_object_get(o, "truncated")));
	json_decref(o);

	/* One more visible: the first three by name, and truncated. */
	pub = NULL;
	assert_int_equal(ks_token_generate(fx.token, names[3], KS_KEY_EC_P256, &pub), 0);
	EVP_PKEY_free(pub);
	o = call_ctx(ctx, &lister, "{\"id\": 62, \"op\": \"key.list\"}");
	assert_ok(o);
	keys = json_object_get(o, "keys");
	assert_int_equal(json_array_size(keys), 3);
	assert_string_equal(json_string_value(json_object_get(json_array_get(keys, 2), "key")), "lst-2");
	assert_true(json_is_true(json_object_get(o, "truncated")));
	json_decref(o);

	/*
	 * Entries count in bytes too (with their purposes, 512 long names
	 * exceed a frame): an answer of at most 300 bytes holds two of them
	 * and says truncated, instead of failing to encode.
	 */
	ks_ctx_set_list_max(ctx, 100000);
	ks_ctx_set_response_max(ctx, 300);
	o = call_ctx(ctx, &lister, "{\"id\": 64, \"op\": \"key.list\"}");
	assert_ok(o);
	assert_int_equal(json_array_size(json_object_get(o, "keys")), 2);
	assert_true(json_is_true(json_object_get(o, "truncated")));
	json_decref(o);
	ks_ctx_set_response_max(ctx, KS_FRAME_MAX);

	/* The full cap is in force by default: all four. */
	ks_ctx_set_list_max(ctx, 100000);
	o = call_ctx(ctx, &lister, "{\"id\": 63, \"op\": \"key.list\"}");
	assert_int_equal(json_array_size(json_object_get(o, "keys")), 4);
	assert_true(json_is_false(json_object_get(o, "truncated")));
	json_decref(o);
	/* Leave the token as the other tests know it. */
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(ks_token_delete(fx.token, names[i]), 0);
	ks_ctx_free(ctx);
}

static void test_frame_error(void **state)
{
	uint8_t *resp = NULL;
	size_t len = 0;
	json_t *o;

	(void)state;
	assert_int_equal(ks_dispatch_frame_error(fx.ctx, &root_peer, "zero-length frame",
						 &resp, &len), 0);
	o = json_loadb((const char *)resp, len, 0, NULL);
	assert_error(o, "bad-request");
	assert_true(json_is_null(json_object_get(o, "id")));
	json_decref(o);
	free(resp);
}

/* ---- intent records and a log that cannot be written ---- */

/* Lines of the audit file at @path, chain-checked; the number of lines. */
static size_t audit_lines(const char *path, json_t **lines, size_t max)
{
	struct ks_auditchain_verifier v;
	char buf[65536], *line, *save = NULL, why[256];
	size_t n = 0, got;
	FILE *f;

	memset(&v, 0, sizeof(v));
	assert_non_null(f = fopen(path, "r"));
	got = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[got] = '\0';
	assert_true(got == 0 || buf[got - 1] == '\n');
	for (line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		if (ks_auditchain_verify(&v, line, strlen(line), n == 0, why, sizeof(why)) !=
		    KS_AUDIT_INTACT)
			fail_msg("audit line %zu: %s", n + 1, why);
		assert_true(n < max);
		assert_non_null(lines[n++] = json_loads(line, JSON_REJECT_DUPLICATES, NULL));
	}
	return n;
}

static void free_lines(json_t **lines, size_t n)
{
	for (size_t i = 0; i < n; i++)
		json_decref(lines[i]);
}

static const char *field(json_t *o, const char *name)
{
	return json_string_value(json_object_get(o, name));
}

/* An intent record for @op on @key, and right after it its outcome. */
static void assert_intent(json_t **lines, size_t i, const char *op, const char *key,
			  const char *outcome)
{
	assert_string_equal(field(lines[i], "phase"), "intent");
	assert_string_equal(field(lines[i], "op"), op);
	assert_string_equal(field(lines[i], "key"), key);
	assert_null(json_object_get(lines[i], "outcome"));
	assert_null(json_object_get(lines[i + 1], "phase"));
	assert_string_equal(field(lines[i + 1], "op"), op);
	assert_int_equal(json_integer_value(json_object_get(lines[i + 1], "intent")),
			 json_integer_value(json_object_get(lines[i], "seq")));
	assert_string_equal(field(lines[i + 1], "outcome"), outcome);
}

static void sha256_hex_of(const void *data, size_t len, char out[65])
{
	unsigned char md[32];

	assert_int_equal(EVP_Digest(data, len, md, NULL, EVP_sha256(), NULL), 1);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* A certificate for @pub, issued by a throwaway key: PEM in *@pem, DER's SHA-256 in @hash. */
static void make_cert(EVP_PKEY *pub, char **pem, char hash[65])
{
	EVP_PKEY *ca = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	unsigned char *der = NULL;
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long n;
	int len;

	assert_non_null(ca);
	assert_non_null(x);
	assert_int_equal(X509_set_version(x, 2), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 7), 1);
	assert_int_equal(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
						    (const unsigned char *)"intent", -1, -1, 0), 1);
	assert_int_equal(X509_set_issuer_name(x, X509_get_subject_name(x)), 1);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
	assert_int_equal(X509_set_pubkey(x, pub), 1);
	assert_true(X509_sign(x, ca, EVP_sha256()) > 0);
	assert_true((len = i2d_X509(x, &der)) > 0);
	sha256_hex_of(der, (size_t)len, hash);
	assert_int_equal(PEM_write_bio_X509(bio, x), 1);
	n = BIO_get_mem_data(bio, &data);
	assert_non_null(*pem = strndup(data, (size_t)n));
	OPENSSL_free(der);
	BIO_free(bio);
	X509_free(x);
	EVP_PKEY_free(ca);
}

/*
 * Each operation that uses or changes the token writes an intent record
 * before it, naming what is signed: the data's SHA-256, the digest given,
 * the SHA-256 of the CSR's CertificationRequestInfo; reads get one record.
 */
static void test_audit_intents(void **state)
{
	struct audited a;
	json_t *o, *lines[32], *put;
	char want[65], cert_hash[65], req[512], *b64 = NULL, *cert_pem = NULL, *put_text;
	EVP_PKEY *pub;
	unsigned char *tbs = NULL;
	int tbs_len;
	size_t n;
	X509_REQ *csr;
	BIO *bio;

	(void)state;
	audited_open(&a);
	o = call_ctx(a.ctx, &root_peer, "{\"id\": 1, \"op\": \"key.generate\", \"key\": \"app-intent\","
		     " \"type\": \"ec-p256\", \"purposes\": [\"csr\", \"sign\"]}");
	assert_ok(o);
	pub = pem_pubkey(o);
	json_decref(o);
	assert_int_equal(ks_b64_encode((const uint8_t *)"hello", 5, &b64), 0);
	/* ECDSA with SHA-384 over the data: the record still names the data's SHA-256. */
	snprintf(req, sizeof(req), "{\"id\": 2, \"op\": \"sign\", \"key\": \"app-intent\","
		 " \"alg\": \"ecdsa-sha384\", \"data\": \"%s\"}", b64);
	free(b64);
	o = call_ctx(a.ctx, &root_peer, req);
	assert_ok(o);
	json_decref(o);
	o = call_ctx(a.ctx, &root_peer, "{\"id\": 3, \"op\": \"sign\", \"key\": \"app-intent\","
		     " \"alg\": \"ecdsa-sha256\", \"digest\": \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"}");
	assert_ok(o);
	json_decref(o);
	o = call_ctx(a.ctx, &root_peer, "{\"id\": 4, \"op\": \"csr.create\", \"key\": \"app-intent\","
		     " \"subject\": \"CN=intent\"}");
	assert_ok(o);
	bio = BIO_new_mem_buf(field(o, "csr"), -1);
	assert_non_null(csr = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL));
	BIO_free(bio);
	assert_true((tbs_len = i2d_re_X509_REQ_tbs(csr, &tbs)) > 0);
	X509_REQ_free(csr);
	json_decref(o);
	o = call_ctx(a.ctx, &root_peer, "{\"id\": 5, \"op\": \"key.public\", \"key\": \"app-intent\"}");
	assert_ok(o);
	json_decref(o);
	make_cert(pub, &cert_pem, cert_hash);
	put = json_pack("{s:i, s:s, s:s, s:s}", "id", 7, "op", "cert.put", "key", "app-intent",
			"cert", cert_pem);
	assert_non_null(put_text = json_dumps(put, JSON_COMPACT));
	o = call_ctx(a.ctx, &root_peer, put_text);
	assert_ok(o);
	json_decref(o);
	free(put_text);
	json_decref(put);
	o = call_ctx(a.ctx, &root_peer, "{\"id\": 6, \"op\": \"key.delete\", \"key\": \"app-intent\"}");
	assert_ok(o);
	json_decref(o);

	n = audit_lines(a.path, lines, 32);
	assert_int_equal(n, 13);
	assert_intent(lines, 0, "key.generate", "app-intent", "ok");
	assert_intent(lines, 2, "sign", "app-intent", "ok");
	sha256_hex_of("hello", 5, want);
	assert_string_equal(field(lines[2], "sha256"), want);
	assert_intent(lines, 4, "sign", "app-intent", "ok");
	assert_string_equal(field(lines[4], "digest"),
			    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
	assert_intent(lines, 6, "csr.create", "app-intent", "ok");
	sha256_hex_of(tbs, (size_t)tbs_len, want);
	assert_string_equal(field(lines[6], "sha256"), want);
	/* A read: one record, no intent. */
	assert_null(json_object_get(lines[8], "phase"));
	assert_null(json_object_get(lines[8], "intent"));
	assert_string_equal(field(lines[8], "op"), "key.public");
	assert_intent(lines, 9, "cert.put", "app-intent", "ok");
	assert_string_equal(field(lines[9], "sha256"), cert_hash);
	assert_intent(lines, 11, "key.delete", "app-intent", "ok");
	free_lines(lines, n);
	free(cert_pem);
	EVP_PKEY_free(pub);
	OPENSSL_free(tbs);
	audited_close(&a);
}

static int mount_ns;     /* main() made a private mount namespace: tests may mount */

/*
 * The audit log on a full file system: every operation that would use or
 * change the token is refused with audit-unavailable before the token is
 * asked (a refused key.generate leaves no key, a refused key.delete
 * leaves the key); with audit_failure continue it goes ahead; once space
 * is free again records are written and say how many were lost.
 */
static void test_audit_unavailable(void **state)
{
	struct ks_audit_options cont = { .failure = KS_AUDIT_CONTINUE };
	char dir[] = "/tmp/ks-dispatch-full-XXXXXX", path[96], path2[96], filler[96], err[512];
	static const char zeros[4096];
	struct ks_audit *refusing = NULL, *continuing = NULL;
	struct ks_ctx *ctx = NULL, *ctx2 = NULL;
	json_t *o, *lines[8];
	size_t n;
	int fd;

	(void)state;
	if (!mount_ns)
		skip();
	assert_non_null(mkdtemp(dir));
	assert_int_equal(mount("tmpfs", dir, "tmpfs", 0, "size=64k,mode=0700"), 0);
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	snprintf(path2, sizeof(path2), "%s/audit2.log", dir);
	snprintf(filler, sizeof(filler), "%s/filler", dir);
	assert_int_equal(ks_audit_open(path, NULL, &refusing, err, sizeof(err)), 0);
	assert_int_equal(ks_audit_open(path2, &cont, &continuing, err, sizeof(err)), 0);
	assert_int_equal(ks_ctx_new(fx.token, refusing, suite_policy(), &ctx), 0);
	assert_int_equal(ks_ctx_new(fx.token, continuing, suite_policy(), &ctx2), 0);
	assert_true((fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600)) >= 0);
	while (write(fd, zeros, sizeof(zeros)) > 0)
		;
	assert_int_equal(errno, ENOSPC);
	close(fd);

	o = call_ctx(ctx, &root_peer, "{\"id\": 1, \"op\": \"key.generate\", \"key\": \"app-full\","
		     " \"type\": \"ec-p256\"}");
	assert_error(o, "audit-unavailable");
	json_decref(o);
	o = call(&root_peer, "{\"id\": 2, \"op\": \"key.public\", \"key\": \"app-full\"}");
	assert_error(o, "no-such-key");
	json_decref(o);

	o = call(&root_peer, "{\"id\": 3, \"op\": \"key.generate\", \"key\": \"app-full\","
		 " \"type\": \"ec-p256\", \"purposes\": [\"csr\", \"sign\"]}");
	assert_ok(o);
	json_decref(o);
	o = call_ctx(ctx, &root_peer, "{\"id\": 4, \"op\": \"key.delete\", \"key\": \"app-full\"}");
	assert_error(o, "audit-unavailable");
	json_decref(o);
	o = call(&root_peer, "{\"id\": 5, \"op\": \"key.public\", \"key\": \"app-full\"}");
	assert_ok(o);
	json_decref(o);

	o = call_ctx(ctx, &root_peer, "{\"id\": 6, \"op\": \"sign\", \"key\": \"app-full\","
		     " \"alg\": \"ecdsa-sha256\", \"data\": \"aGVsbG8=\"}");
	assert_error(o, "audit-unavailable");
	assert_null(json_object_get(o, "signature"));
	json_decref(o);
	o = call_ctx(ctx, &root_peer, "{\"id\": 7, \"op\": \"csr.create\", \"key\": \"app-full\","
		     " \"subject\": \"CN=full\"}");
	assert_error(o, "audit-unavailable");
	json_decref(o);

	/* audit_failure continue: the same request signs. */
	o = call_ctx(ctx2, &root_peer, "{\"id\": 8, \"op\": \"sign\", \"key\": \"app-full\","
		     " \"alg\": \"ecdsa-sha256\", \"data\": \"aGVsbG8=\"}");
	assert_ok(o);
	json_decref(o);

	/* Space again: records are written, and say that some were lost. */
	assert_int_equal(unlink(filler), 0);
	o = call_ctx(ctx, &root_peer, "{\"id\": 9, \"op\": \"sign\", \"key\": \"app-full\","
		     " \"alg\": \"ecdsa-sha256\", \"data\": \"aGVsbG8=\"}");
	assert_ok(o);
	json_decref(o);
	n = audit_lines(path, lines, 8);
	assert_int_equal(n, 2);
	assert_intent(lines, 0, "sign", "app-full", "ok");
	/* 4 intents refused, their 4 outcome records and nothing else. */
	assert_int_equal(json_integer_value(json_object_get(lines[0], "lost")), 8);
	free_lines(lines, n);

	o = call(&root_peer, "{\"id\": 10, \"op\": \"key.delete\", \"key\": \"app-full\"}");
	assert_ok(o);
	json_decref(o);
	ks_ctx_free(ctx);
	ks_ctx_free(ctx2);
	ks_audit_close(refusing);
	ks_audit_close(continuing);
	assert_int_equal(umount(dir), 0);
	rmdir(dir);
}

static int strv_has(json_t *arr, const char *prefix)
{
	size_t i;
	json_t *v;

	json_array_foreach(arr, i, v)
		if (strncmp(json_string_value(v), prefix, strlen(prefix)) == 0)
			return 1;
	return 0;
}

static void assert_unsupported_saying(json_t *o, const char *text)
{
	assert_error(o, "unsupported");
	if (strstr(json_string_value(json_object_get(o, "message")), text) == NULL)
		fail_msg("message \"%s\" does not say \"%s\"",
			 json_string_value(json_object_get(o, "message")), text);
	json_decref(o);
}

/*
 * What the token cannot do (faultp11 in front of the same SoftHSM hides
 * every PKCS#1 v1.5 mechanism and caps RSA at 2048 bits) is not offered by
 * hello, and asking for it is unsupported with the token's limit.
 */
static void test_token_capabilities(void **state)
{
	struct ks_token_config cfg;
	struct ks_token *tok = NULL;
	struct ks_ctx *ctx = NULL;
	const char *shim = getenv("KS_FAULTP11");
	json_t *o, *types;

	(void)state;
	assert_non_null(shim);
	setenv("KS_FAULTP11_TARGET", fx.tt.module, 1);
	setenv("KS_FAULTP11_MECHS", "rsa-max:2048 hide:0x1 hide:0x40 hide:0x41 hide:0x42", 1);
	ks_test_token_config(&fx.tt, &cfg);
	cfg.module_path = shim;
	cfg.sessions = 1;
	assert_int_equal(ks_token_open(&cfg, &tok), 0);
	assert_int_equal(ks_ctx_new(tok, NULL, suite_policy(), &ctx), 0);

	o = call_ctx(ctx, &root_peer, "{\"id\": 1, \"op\": \"hello\"}");
	assert_ok(o);
	types = json_object_get(o, "key_types");
	assert_int_equal(json_array_size(types), 3);
	assert_string_equal(json_string_value(json_array_get(types, 0)), "rsa-2048");
	assert_false(strv_has(json_object_get(o, "algorithms"), "rsa-pkcs1-"));
	assert_true(strv_has(json_object_get(o, "algorithms"), "rsa-pss-sha256"));
	assert_null(json_object_get(o, "data_only"));
	json_decref(o);
	/* The same SoftHSM through the fixture's context offers everything. */
	o = call(&root_peer, "{\"id\": 2, \"op\": \"hello\"}");
	assert_int_equal(json_array_size(json_object_get(o, "key_types")), 5);
	assert_true(strv_has(json_object_get(o, "algorithms"), "rsa-pkcs1-sha256"));
	json_decref(o);

	assert_unsupported_saying(call_ctx(ctx, &root_peer, "{\"id\": 3, \"op\": \"key.generate\","
					   " \"key\": \"caps-big\", \"type\": \"rsa-3072\"}"),
				  "rsa-3072: the token's RSA key sizes are ");
	o = call_ctx(ctx, &root_peer, "{\"id\": 4, \"op\": \"key.generate\", \"key\": \"caps-rsa\","
		     " \"type\": \"rsa-2048\", \"purposes\": [\"csr\", \"sign\"]}");
	assert_ok(o);
	json_decref(o);
	assert_unsupported_saying(call_ctx(ctx, &root_peer, "{\"id\": 5, \"op\": \"csr.create\","
					   " \"key\": \"caps-rsa\", \"subject\": \"CN=x\"}"),
				  "cannot make rsa-pkcs1-sha256 signatures");
	assert_unsupported_saying(call_ctx(ctx, &root_peer, "{\"id\": 6, \"op\": \"sign\","
					   " \"key\": \"caps-rsa\", \"alg\": \"rsa-pkcs1-sha384\","
					   " \"data\": \"aGVsbG8=\"}"),
				  "CKM_RSA_PKCS");
	o = call_ctx(ctx, &root_peer, "{\"id\": 7, \"op\": \"sign\", \"key\": \"caps-rsa\","
		     " \"alg\": \"rsa-pss-sha256\", \"data\": \"aGVsbG8=\"}");
	assert_ok(o);
	json_decref(o);
	o = call_ctx(ctx, &root_peer, "{\"id\": 8, \"op\": \"key.delete\", \"key\": \"caps-rsa\"}");
	assert_ok(o);
	json_decref(o);

	ks_ctx_free(ctx);
	ks_token_close(tok);
	unsetenv("KS_FAULTP11_MECHS");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_checked_fields),
		cmocka_unit_test(test_invalid_utf8_and_nul),
		cmocka_unit_test(test_utf8_cut),
		cmocka_unit_test(test_generate_csr_sign),
		cmocka_unit_test(test_policy_enforced),
		cmocka_unit_test(test_policy_reload),
		cmocka_unit_test(test_audit_outcome_is_answer),
		cmocka_unit_test(test_csr_fits_a_frame),
		cmocka_unit_test(test_audit_refused_requests),
		cmocka_unit_test(test_list_truncated),
		cmocka_unit_test(test_frame_error),
		cmocka_unit_test(test_audit_intents),
		cmocka_unit_test(test_audit_unavailable),
		cmocka_unit_test(test_token_capabilities),
	};

	/*
	 * Before any thread exists (unshare(CLONE_NEWNS) needs that): a
	 * private mount namespace, where test_audit_unavailable mounts a
	 * small tmpfs that nobody else sees. Root only; the test skips
	 * otherwise.
	 */
	mount_ns = unshare(CLONE_NEWNS) == 0 && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0;
	if (!mount_ns)
		fprintf(stderr, "no private mount namespace (%s): test_audit_unavailable skips\n",
			strerror(errno));

	return cmocka_run_group_tests(tests, setup, teardown);
}
