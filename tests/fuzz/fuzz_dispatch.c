/*
 * libFuzzer target for the request dispatcher (keysvc/dispatch.c), the
 * pure function from request bytes and peer to response bytes that
 * keysvcd runs for every frame.
 *
 * Set up once (LLVMFuzzerInitialize): a private SoftHSM token
 * (tests/common/softhsm.c) with an RSA-2048 key "fz-rsa" and a P-256 key
 * "fz-ec" that has a certificate, and a policy where
 *   admin    (uid 1000)                 may do everything on every key,
 *   member   (uid 2001, group 3000)     may sign and key.public on fz-ec only,
 *   stranger (uid 4242)                 is named by no rule.
 *
 * Input: up to MAX_MESSAGES records separated by NUL bytes. A record's
 * first byte picks the peer ('A' admin, 'M' member, 'S' stranger; any
 * other byte by its value modulo 3, and its value becomes the pid), the
 * rest is the request body, JSON or not. "@CERT_EC@" and "@CERT_RSA@" in a
 * body are replaced by a JSON-escaped PEM certificate for fz-ec's or
 * fz-rsa's public key, so cert.put can succeed. See corpus/dispatch/.
 *
 * Every response must be one well-formed frame body: a JSON object with a
 * boolean "ok", the request's id (or null), and on failure one of the
 * protocol's error names and a message. The policy must hold: a stranger
 * only ever sees bad-request, unsupported or denied (the policy is decided
 * before anything touches the token, so it cannot learn which keys exist),
 * the member succeeds only where granted, the admin is never denied.
 * Nothing may answer "internal": with a healthy SoftHSM token that is
 * always a daemon bug.
 *
 * Keys generated or deleted by an input are put back to the two above
 * afterwards, so each input starts from the same token contents.
 *
 * Outside meson test the paths of setup-token.sh, ks-token-init and the
 * SoftHSM module come from the build (KS_FUZZ_* below); $TMPDIR holds the
 * token. KS_FUZZ_VERBOSE=1 prints every request and answer.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "keysvc/audit.h"
#include "keysvc/dispatch.h"
#include "keysvc/policy.h"
#include "pkcs11/token.h"
#include "proto/frame.h"
#include "tests/common/softhsm.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_MESSAGES 16

#define KEY_RSA "fz-rsa"
#define KEY_EC "fz-ec"

enum peer_kind { PEER_ADMIN, PEER_MEMBER, PEER_STRANGER };

static const char policy_json[] =
	"[{\"uid\": 1000, \"keys\": [\"*\"], \"ops\": [\"key.generate\", \"key.list\","
	" \"key.public\", \"key.delete\", \"csr.create\", \"sign\", \"cert.put\", \"cert.get\"]},"
	" {\"gid\": 3000, \"keys\": [\"" KEY_EC "\"], \"ops\": [\"sign\", \"key.public\"]}]";

static struct {
	struct ks_test_token tt;
	struct ks_token *token;
	struct ks_audit *audit;
	char audit_path[64];
	unsigned long runs;
	struct ks_ctx *ctx;
	char *cert_json[2];     /* JSON-escaped PEM (without quotes) for fz-ec, fz-rsa */
	int ready;
	int verbose;            /* $KS_FUZZ_VERBOSE: print every exchange, for writing seeds */
} fz;

static void die(const char *what) __attribute__((noreturn));

static void die(const char *what)
{
	fprintf(stderr, "fuzz_dispatch: setup failed: %s\n", what);
	abort();
}

/*
 * A certificate for @pub signed by a throwaway CA key (cert.put checks
 * only that the certificate's public key is the key's): its PEM text
 * JSON-escaped without the quotes, and its DER in *@der.
 */
static char *cert_for(EVP_PKEY *pub, uint8_t **der, int *der_len)
{
	EVP_PKEY *ca = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *name;
	BIO *bio = BIO_new(BIO_s_mem());
	char *pem = NULL, *data;
	long n;
	json_t *s;

	if (ca == NULL || x == NULL || bio == NULL)
		die("certificate");
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz", -1, -1, 0);
	X509_set_issuer_name(x, name);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	if (X509_set_pubkey(x, pub) != 1 || X509_sign(x, ca, EVP_sha256()) <= 0 ||
	    PEM_write_bio_X509(bio, x) != 1 || (*der_len = i2d_X509(x, der)) <= 0)
		die("certificate");
	n = BIO_get_mem_data(bio, &data);
	/* json_dumps of a string gives it quoted and escaped; drop the quotes. */
	if ((s = json_stringn(data, (size_t)n)) == NULL ||
	    (pem = json_dumps(s, JSON_ENCODE_ANY)) == NULL)
		die("certificate");
	memmove(pem, pem + 1, strlen(pem) - 2);
	pem[strlen(pem) - 2] = '\0';
	json_decref(s);
	BIO_free(bio);
	X509_free(x);
	EVP_PKEY_free(ca);
	return pem;
}

/* (Re)create @name as a fresh key of @type with a new certificate for it. */
static void provision(const char *name, enum ks_key_type type, int slot, int store_cert)
{
	EVP_PKEY *pub = NULL;
	uint8_t *der = NULL;
	int der_len = 0;

	if (ks_token_generate(fz.token, name, type, &pub) != 0)
		die(name);
	free(fz.cert_json[slot]);
	fz.cert_json[slot] = cert_for(pub, &der, &der_len);
	if (store_cert && ks_token_cert_put(fz.token, name, der, (size_t)der_len) != 0)
		die("cert_put");
	OPENSSL_free(der);
	EVP_PKEY_free(pub);
}

/* Put the token back to the two baseline keys. */
static void restore_keys(void)
{
	struct ks_key_info *keys = NULL;
	size_t n = 0;
	int have_rsa = 0, have_ec = 0;

	if (ks_token_list(fz.token, &keys, &n) != 0)
		die("list");
	for (size_t i = 0; i < n; i++) {
		if (strcmp(keys[i].name, KEY_RSA) == 0 && !have_rsa)
			have_rsa = 1;
		else if (strcmp(keys[i].name, KEY_EC) == 0 && !have_ec)
			have_ec = 1;
		else if (ks_token_delete(fz.token, keys[i].name) != 0)
			die("delete");
	}
	free(keys);
	if (!have_ec)
		provision(KEY_EC, KS_KEY_EC_P256, 0, 1);
	if (!have_rsa)
		provision(KEY_RSA, KS_KEY_RSA_2048, 1, 0);
}

static void teardown(void)
{
	if (!fz.ready)
		return;
	ks_ctx_free(fz.ctx);
	ks_audit_close(fz.audit);
	unlink(fz.audit_path);
	ks_token_close(fz.token);
	ks_test_token_teardown(&fz.tt);
	free(fz.cert_json[0]);
	free(fz.cert_json[1]);
	fz.ready = 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct ks_token_config cfg;
	struct ks_policy *policy = NULL;
	char err[256];
	json_t *rules;

	(void)argc;
	(void)argv;
	/* Outside meson test (run.sh, by hand) the build tells where things are. */
	setenv("KS_SETUP_TOKEN", KS_FUZZ_SETUP_TOKEN, 0);
	setenv("KS_SOFTHSM_MODULE", KS_FUZZ_SOFTHSM_MODULE, 0);
	setenv("KS_TOKEN_INIT", KS_FUZZ_TOKEN_INIT, 0);
	if (ks_test_token_setup(&fz.tt, "fuzz") != 0)
		die("token");
	ks_test_token_config(&fz.tt, &cfg);
	cfg.sessions = 2;
	if (ks_token_open(&cfg, &fz.token) != 0)
		die("token open");
	rules = json_loads(policy_json, JSON_REJECT_DUPLICATES, NULL);
	if (rules == NULL || ks_policy_from_json(rules, &policy, err, sizeof(err)) != 0)
		die(err);
	json_decref(rules);
	/*
	 * The audit records are built and chained for every request, into a
	 * file (it must be a regular one) that the loop keeps small.
	 */
	{
		struct ks_audit_options aopt = { .sync = KS_AUDIT_SYNC_NONE };
		int afd;

		snprintf(fz.audit_path, sizeof(fz.audit_path), "/tmp/ks-fuzz-audit-XXXXXX");
		if ((afd = mkstemp(fz.audit_path)) < 0)
			die("audit");
		close(afd);
		if (ks_audit_open(fz.audit_path, &aopt, &fz.audit, err, sizeof(err)) != 0)
			die(err);
	}
	if (ks_ctx_new(fz.token, fz.audit, policy, &fz.ctx) != 0)
		die("context");
	restore_keys();
	fz.verbose = getenv("KS_FUZZ_VERBOSE") != NULL;
	fz.ready = 1;
	atexit(teardown);
	return 0;
}

static const struct ks_peer peers[] = {
	[PEER_ADMIN] = { .uid = 1000, .gid = 1000 },
	[PEER_MEMBER] = { .uid = 2001, .gid = 2001, .ngroups = 2, .groups = { 2001, 3000 } },
	[PEER_STRANGER] = { .uid = 4242, .gid = 4242, .ngroups = 1, .groups = { 4242 } },
};

static enum peer_kind pick_peer(uint8_t selector)
{
	switch (selector) {
	case 'A':
		return PEER_ADMIN;
	case 'M':
		return PEER_MEMBER;
	case 'S':
		return PEER_STRANGER;
	default:
		return (enum peer_kind)(selector % 3);
	}
}

static int one_of(const char *s, const char *const *list)
{
	for (; *list != NULL; list++)
		if (strcmp(s, *list) == 0)
			return 1;
	return 0;
}

/* Replace every placeholder by its certificate text; a new buffer in *@out. */
static size_t substitute(const uint8_t *body, size_t len, uint8_t **out)
{
	static const char *const names[2] = { "@CERT_EC@", "@CERT_RSA@" };
	size_t cap = len + 1, n = 0;
	uint8_t *buf = malloc(cap);

	if (buf == NULL)
		abort();
	for (size_t i = 0; i < len;) {
		int hit = -1;

		for (int k = 0; k < 2 && hit < 0; k++)
			if (len - i >= strlen(names[k]) && memcmp(body + i, names[k], strlen(names[k])) == 0)
				hit = k;
		if (hit >= 0) {
			size_t add = strlen(fz.cert_json[hit]);

			if ((buf = realloc(buf, cap += add)) == NULL)
				abort();
			memcpy(buf + n, fz.cert_json[hit], add);
			n += add;
			i += strlen(names[hit]);
		} else {
			buf[n++] = body[i++];
		}
	}
	*out = buf;
	return n;
}

static int contains(const uint8_t *p, size_t len, const char *needle)
{
	return memmem(p, len, needle, strlen(needle)) != NULL;
}

/* Returns 1 when the message may have changed which keys exist. */
static int check_response(enum peer_kind who, const uint8_t *req, size_t req_len,
			  const uint8_t *resp, size_t resp_len)
{
	static const char *const errors[] = { "bad-request", "denied", "no-such-key", "exists",
					      "unsupported", "token-unavailable", NULL };
	static const char *const stranger_errors[] = { "bad-request", "unsupported", "denied", NULL };
	json_t *r, *q, *rid, *qid = NULL, *ok;
	const char *op = NULL, *key = NULL, *error = NULL;
	int changed = 0;

	CHECK(resp != NULL && resp_len >= 1 && resp_len <= KS_FRAME_MAX);
	r = json_loadb((const char *)resp, resp_len, JSON_REJECT_DUPLICATES, NULL);
	CHECK(json_is_object(r));
	ok = json_object_get(r, "ok");
	rid = json_object_get(r, "id");
	CHECK(json_is_boolean(ok) && rid != NULL);

	/* What the dispatcher should have seen; NULL when the request is not a JSON object. */
	q = json_loadb((const char *)req, req_len, JSON_REJECT_DUPLICATES, NULL);
	if (json_is_object(q)) {
		qid = json_object_get(q, "id");
		op = json_string_value(json_object_get(q, "op"));
		key = json_string_value(json_object_get(q, "key"));
	}
	/* The id is echoed exactly, or null when it was unusable. */
	CHECK(json_is_null(rid) || (qid != NULL && json_equal(rid, qid)));

	if (json_is_true(ok)) {
		CHECK(qid != NULL && json_equal(rid, qid) && op != NULL);
		CHECK(who != PEER_STRANGER);
		if (who == PEER_MEMBER)
			CHECK(strcmp(op, "hello") == 0 ||
			      ((strcmp(op, "sign") == 0 || strcmp(op, "key.public") == 0) &&
			       key != NULL && strcmp(key, KEY_EC) == 0));
		changed = strcmp(op, "key.generate") == 0 || strcmp(op, "key.delete") == 0;
	} else {
		error = json_string_value(json_object_get(r, "error"));
		CHECK(error != NULL && json_is_string(json_object_get(r, "message")));
		if (!one_of(error, errors)) {
			fprintf(stderr, "answer \"%s\": %.*s\n", error, (int)resp_len, (const char *)resp);
			abort();
		}
		if (who == PEER_STRANGER)
			CHECK(one_of(error, stranger_errors));
		/* The admin is granted everything: only a use outside the key's purposes is denied. */
		if (who == PEER_ADMIN)
			CHECK(strcmp(error, "denied") != 0 ||
			      strstr(json_string_value(json_object_get(r, "message")),
				     "has the purposes") != NULL);
	}
	json_decref(q);
	json_decref(r);
	return changed;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size;
	int changed = 0;

	if (fz.ready && ++fz.runs % 4096 == 0 && truncate(fz.audit_path, 0) != 0)
		die("audit truncate");

	for (int m = 0; m < MAX_MESSAGES && p < end; m++) {
		const uint8_t *sep = memchr(p, '\0', (size_t)(end - p));
		const uint8_t *rec_end = sep != NULL ? sep : end;
		struct ks_peer peer;
		enum peer_kind who;
		uint8_t *body = NULL, *resp = NULL;
		size_t body_len, resp_len = 0;

		if (rec_end > p) {
			who = pick_peer(p[0]);
			peer = peers[who];
			peer.pid = 1 + p[0];
			body_len = substitute(p + 1, (size_t)(rec_end - p - 1), &body);
			/*
			 * SoftHSM takes seconds for a 3072- or 4096-bit key; the
			 * dispatcher's path is the same as for rsa-2048, so the
			 * fuzzer's time goes elsewhere.
			 */
			if (!contains(body, body_len, "rsa-3072") && !contains(body, body_len, "rsa-4096")) {
				CHECK(ks_dispatch(fz.ctx, &peer, body, body_len, &resp, &resp_len) == 0);
				if (fz.verbose)
					fprintf(stderr, "%c %.*s\n  -> %.*s\n", "AMS"[who],
						(int)body_len, (const char *)body,
						(int)(resp_len > 300 ? 300 : resp_len), (const char *)resp);
				changed |= check_response(who, body, body_len, resp, resp_len);
				free(resp);
			}
			free(body);
		}
		if (sep == NULL)
			break;
		p = sep + 1;
	}
	if (changed)
		restore_keys();
	return 0;
}
