/*
 * keysvcd end to end through tests/common/daemon.c: a real daemon on a
 * private SoftHSM token per test, spoken to over its Unix socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "tests/common/daemon.h"

#define NOBODY 65534
#define CLIENTS 300

#define ALL_OPS "[\"key.generate\",\"key.list\",\"key.public\",\"key.delete\"," \
	"\"csr.create\",\"sign\",\"cert.put\",\"cert.get\"]"
#define ROOT_ALL "[{\"uid\":0,\"keys\":[\"*\"],\"ops\":" ALL_OPS "}]"

/* ---- helpers ----------------------------------------------------------- */

static void dump(const char *what, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	fprintf(stderr, "%s: %s\n", what, s ? s : "(no response)");
	free(s);
}

/* Fails the test unless @resp has outcome @want ("ok" or an error name). */
static void check_outcome(json_t *resp, const char *want, const char *what)
{
	const char *got = resp ? ks_td_outcome(resp) : NULL;

	if (got == NULL || strcmp(got, want) != 0) {
		dump(what, resp);
		fail_msg("%s: expected %s, got %s", what, want, got ? got : "(nothing)");
	}
}

/* Send @json on @fd and expect @want; returns the response (caller frees). */
static json_t *expect(int fd, const char *json, const char *want)
{
	json_t *resp = ks_td_request(fd, json);

	check_outcome(resp, want, json);
	return resp;
}

static void expect_free(int fd, const char *json, const char *want)
{
	json_decref(expect(fd, json, want));
}

static void expect_once(struct ks_td *d, const char *json, const char *want)
{
	json_t *resp = ks_td_request_once(d, json);

	check_outcome(resp, want, json);
	json_decref(resp);
}

static void hello_ok(int fd)
{
	expect_free(fd, "{\"id\":\"h\",\"op\":\"hello\"}", "ok");
}

static void hello_ok_new_client(struct ks_td *d)
{
	assert_true(ks_td_alive(d));
	expect_once(d, "{\"id\":1,\"op\":\"hello\"}", "ok");
}

static int setup_daemon(struct ks_td *d, const char *policy, unsigned timeout_ms,
			unsigned max_clients)
{
	int r = ks_td_setup(d, "keysvc-it", policy, timeout_ms, max_clients);

	if (r != 0)
		fail_msg("could not start keysvcd");
	return r;
}

static int has_needle(const char *hay, size_t hay_len, const void *needle, size_t n)
{
	return hay != NULL && memmem(hay, hay_len, needle, n) != NULL;
}

static int log_has(struct ks_td *d, const char *needle)
{
	return ks_td_log_count(d, needle) > 0;
}

static int list_has(json_t *resp, const char *name)
{
	json_t *keys = json_object_get(resp, "keys"), *v;
	size_t i;

	json_array_foreach(keys, i, v) {
		if (json_is_string(json_object_get(v, "key")) &&
		    strcmp(json_string_value(json_object_get(v, "key")), name) == 0)
			return 1;
	}
	return 0;
}

static size_t list_size(json_t *resp)
{
	return json_array_size(json_object_get(resp, "keys"));
}

static char *b64(const uint8_t *p, size_t n)
{
	char *out = malloc(4 * ((n + 2) / 3) + 1);

	if (out != NULL)
		EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	return out;
}

static uint8_t *unb64(const char *s, size_t *len)
{
	size_t n = strlen(s);
	uint8_t *out = malloc(n);
	int r;

	if (out == NULL || n == 0 || n % 4 != 0) {
		free(out);
		return NULL;
	}
	r = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
	if (r < 0) {
		free(out);
		return NULL;
	}
	if (n >= 1 && s[n - 1] == '=')
		r--;
	if (n >= 2 && s[n - 2] == '=')
		r--;
	*len = (size_t)r;
	return out;
}

static EVP_PKEY *pem_pubkey(json_t *resp)
{
	const char *pem = json_string_value(json_object_get(resp, "public_key"));
	EVP_PKEY *pk = NULL;
	BIO *bio;

	if (pem == NULL || (bio = BIO_new_mem_buf(pem, -1)) == NULL)
		return NULL;
	pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	return pk;
}

static int verify_digest(EVP_PKEY *pk, const uint8_t *md, size_t md_len,
			 const uint8_t *sig, size_t sig_len)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pk, NULL);
	int ok;

	ok = ctx != NULL && EVP_PKEY_verify_init(ctx) == 1 &&
	     EVP_PKEY_verify(ctx, sig, sig_len, md, md_len) == 1;
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

static int is_open_and_quiet(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	return poll(&pfd, 1, 0) == 0;
}

/* ---- 1. hello ---------------------------------------------------------- */

static void test_hello(void **state)
{
	struct ks_td *d = *state;
	json_t *resp, *tok;
	int fd;

	setup_daemon(d, ROOT_ALL, 0, 0);
	assert_true((fd = ks_td_connect(d)) >= 0);
	resp = expect(fd, "{\"id\":7,\"op\":\"hello\"}", "ok");
	assert_int_equal(json_integer_value(json_object_get(resp, "id")), 7);
	assert_int_equal(json_integer_value(json_object_get(resp, "version")), 1);
	assert_string_equal(json_string_value(json_object_get(resp, "health")), "ok");
	assert_non_null(json_string_value(json_object_get(resp, "server")));
	assert_int_equal(strncmp(json_string_value(json_object_get(resp, "server")), "keysvcd ", 8), 0);
	tok = json_object_get(resp, "token");
	assert_true(json_is_object(tok));
	assert_non_null(json_string_value(json_object_get(tok, "label")));
	assert_string_equal(json_string_value(json_object_get(tok, "label")), d->token.label);
	assert_true(json_array_size(json_object_get(resp, "key_types")) >= 5);
	assert_true(json_array_size(json_object_get(resp, "algorithms")) >= 8);
	json_decref(resp);

	/* Version negotiation, on the same connection. */
	expect_free(fd, "{\"id\":8,\"op\":\"hello\",\"versions\":[1,2]}", "ok");
	resp = expect(fd, "{\"id\":9,\"op\":\"hello\",\"versions\":[2,3]}", "unsupported");
	assert_int_equal(json_integer_value(json_object_get(resp, "id")), 9);
	json_decref(resp);
	hello_ok(fd);
	close(fd);
	assert_int_equal(ks_td_stop(d), 0);
}

/* ---- 2. bad frames ----------------------------------------------------- */

/* A header the daemon must answer once with bad-request and then hang up on. */
static void framing_error(struct ks_td *d, uint32_t len)
{
	uint8_t hdr[4] = { (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len };
	json_t *resp;
	char *body = NULL;
	size_t n = 0;
	int fd;

	assert_true((fd = ks_td_connect(d)) >= 0);
	assert_int_equal(ks_td_send_raw(fd, hdr, sizeof(hdr)), 0);
	assert_int_equal(ks_td_read_frame(fd, 5000, &body, &n), 0);
	resp = json_loadb(body, n, 0, NULL);
	free(body);
	check_outcome(resp, "bad-request", "framing error");
	assert_true(json_is_null(json_object_get(resp, "id")));
	json_decref(resp);
	/* Nothing more, then closed. */
	assert_int_equal(ks_td_wait_closed(fd, 5000), 0);
	close(fd);
	hello_ok_new_client(d);
}

struct bad_case {
	const char *name;
	const char *body;       /* NULL: built by the test */
	const char *error;
	const char *id;         /* expected id as JSON text */
	const char *message;    /* a substring the message must hold, or NULL */
};

static void bad_request(struct ks_td *d, const struct bad_case *c, const char *body,
			size_t len)
{
	json_t *resp, *want_id;
	const char *msg;
	char *rbody = NULL;
	size_t n = 0;
	int fd;

	assert_true((fd = ks_td_connect(d)) >= 0);
	assert_int_equal(ks_td_send_frame(fd, body, len), 0);
	if (ks_td_read_frame(fd, 5000, &rbody, &n) != 0)
		fail_msg("%s: no answer", c->name);
	resp = json_loadb(rbody, n, JSON_REJECT_DUPLICATES, NULL);
	free(rbody);
	check_outcome(resp, c->error, c->name);
	want_id = json_loads(c->id, JSON_DECODE_ANY, NULL);
	assert_non_null(want_id);
	if (!json_equal(want_id, json_object_get(resp, "id"))) {
		dump(c->name, resp);
		fail_msg("%s: id should be %s", c->name, c->id);
	}
	json_decref(want_id);
	msg = json_string_value(json_object_get(resp, "message"));
	assert_non_null(msg);
	if (c->message != NULL && strstr(msg, c->message) == NULL)
		fail_msg("%s: message \"%s\" does not mention \"%s\"", c->name, msg, c->message);
	json_decref(resp);
	/* Well framed, so the same connection goes on. */
	hello_ok(fd);
	close(fd);
	hello_ok_new_client(d);
}

static void test_bad_frames(void **state)
{
	static const struct bad_case cases[] = {
		{ "invalid UTF-8", "{\"id\":1,\"op\":\"hello\",\"x\":\"\xc3\x28\"}", "bad-request", "null", NULL },
		{ "duplicate keys", "{\"id\":2,\"op\":\"hello\",\"op\":\"hello\"}", "bad-request", "null", NULL },
		{ "NUL in a string", "{\"id\":3,\"op\":\"key.public\",\"key\":\"a\\u0000b\"}", "bad-request", "null", NULL },
		{ "not an object", "[1,2,3]", "bad-request", "null", NULL },
		{ "wrong type", "{\"id\":4,\"op\":\"key.generate\",\"key\":5,\"type\":\"ec-p256\",\"purposes\":[\"csr\",\"sign\"]}", "bad-request", "4", "key" },
		{ "wrong type (string id)", "{\"id\":\"w\",\"op\":\"sign\",\"key\":\"k\",\"alg\":[],\"digest\":\"\"}", "bad-request", "\"w\"", "alg" },
		{ "unknown op", "{\"id\":5,\"op\":\"frobnicate\"}", "unsupported", "5", NULL },
		{ "op not a string", "{\"id\":6,\"op\":1}", "bad-request", "6", "op" },
		{ "missing id", "{\"op\":\"hello\"}", "bad-request", "null", "id" },
		{ "negative id", "{\"id\":-1,\"op\":\"hello\"}", "bad-request", "null", "id" },
		{ "empty id", "{\"id\":\"\",\"op\":\"hello\"}", "bad-request", "null", "id" },
		{ "id too long", "{\"id\":\"0123456789012345678901234567890123456789012345678901234567890123X\",\"op\":\"hello\"}", "bad-request", "null", "id" },
		{ "unknown field", "{\"id\":\"u1\",\"op\":\"hello\",\"bogus\":1}", "bad-request", "\"u1\"", "bogus" },
		{ "bad key name", "{\"id\":10,\"op\":\"key.public\",\"key\":\"../x\"}", "bad-request", "10", "key" },
		{ "deep nesting", NULL, "bad-request", "null", NULL },
	};
	struct ks_td *d = *state;
	char *deep;
	size_t n = 0, depth = 10000;
	int fd;

	setup_daemon(d, ROOT_ALL, 0, 0);

	/* Framing errors: answered once, then the connection is closed. */
	framing_error(d, 0);
	framing_error(d, 65537);
	framing_error(d, 0xFFFFFFFFu);
	/* An oversized header with body bytes behind it: answered, then closed. */
	{
		static uint8_t junk[4 + 4096];
		json_t *resp;
		char *body = NULL;

		memset(junk, 'A', sizeof(junk));
		junk[0] = junk[1] = junk[2] = junk[3] = 0xff;
		assert_true((fd = ks_td_connect(d)) >= 0);
		assert_int_equal(ks_td_send_raw(fd, junk, sizeof(junk)), 0);
		assert_int_equal(ks_td_read_frame(fd, 5000, &body, &n), 0);
		resp = json_loadb(body, n, 0, NULL);
		free(body);
		check_outcome(resp, "bad-request", "oversized frame with a body");
		json_decref(resp);
		assert_int_equal(ks_td_wait_closed(fd, 5000), 0);
		close(fd);
		hello_ok_new_client(d);
	}

	/* A frame cut short by EOF: closed without an answer. */
	{
		uint8_t buf[14] = { 0, 0, 0, 100, '{', '"', 'i', 'd', '"', ':', '1', ',', ' ', ' ' };
		char *body = NULL;

		assert_true((fd = ks_td_connect(d)) >= 0);
		assert_int_equal(ks_td_send_raw(fd, buf, sizeof(buf)), 0);
		assert_int_equal(shutdown(fd, SHUT_WR), 0);
		assert_int_equal(ks_td_read_frame(fd, 5000, &body, &n), -ECONNRESET);
		close(fd);
		hello_ok_new_client(d);
	}

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (cases[i].body != NULL) {
			bad_request(d, &cases[i], cases[i].body, strlen(cases[i].body));
			continue;
		}
		/* {"id":5,"op":"hello","x":[[[[...]]]]} 10000 deep */
		assert_non_null(deep = malloc(2 * depth + 64));
		n = (size_t)sprintf(deep, "{\"id\":5,\"op\":\"hello\",\"x\":");
		memset(deep + n, '[', depth);
		n += depth;
		memset(deep + n, ']', depth);
		n += depth;
		deep[n++] = '}';
		bad_request(d, &cases[i], deep, n);
		free(deep);
	}
	assert_true(ks_td_alive(d));
	assert_int_equal(ks_td_stop(d), 0);
}

/* ---- 3. a peer without a grant ----------------------------------------- */

static void become_nobody(void)
{
	if (setgroups(0, NULL) != 0 || setresgid(NOBODY, NOBODY, NOBODY) != 0 ||
	    setresuid(NOBODY, NOBODY, NOBODY) != 0 || getuid() != NOBODY || geteuid() != NOBODY)
		_exit(99);
}

/*
 * Connects as nobody from a child and, with @with_requests, sends a few
 * requests. The child reports one "step=outcome" line per step into @out.
 * Returns the child's pid.
 */
static pid_t as_nobody(struct ks_td *d, int with_requests, char *out, size_t out_len)
{
	int p[2], status;
	size_t got = 0;
	ssize_t n;
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		static const char *const reqs[][2] = {
			{ "hello", "{\"id\":1,\"op\":\"hello\"}" },
			{ "generate", "{\"id\":2,\"op\":\"key.generate\",\"key\":\"n1\",\"type\":\"ec-p256\",\"purposes\":[\"csr\",\"sign\"]}" },
			{ "sign", "{\"id\":3,\"op\":\"sign\",\"key\":\"k1\",\"alg\":\"ecdsa-sha256\","
				  "\"digest\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}" },
			{ "list", "{\"id\":4,\"op\":\"key.list\"}" },
		};
		int fd;

		close(p[0]);
		become_nobody();
		fd = ks_td_connect(d);
		if (!with_requests) {
			dprintf(p[1], "connect=%s\n", fd >= 0 ? "ok" : fd == -EACCES ? "EACCES" :
				strerror(-fd));
			_exit(0);
		}
		if (fd < 0) {
			dprintf(p[1], "connect=%s\n", strerror(-fd));
			_exit(0);
		}
		/* A peer no rule names gets one answer per connection: one each. */
		for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
			json_t *resp;
			const char *o;

			if (i > 0 && (fd = ks_td_connect(d)) < 0) {
				dprintf(p[1], "connect=%s\n", strerror(-fd));
				_exit(0);
			}
			resp = ks_td_request(fd, reqs[i][1]);
			o = resp ? ks_td_outcome(resp) : NULL;
			dprintf(p[1], "%s=%s\n", reqs[i][0], o ? o : "none");
			json_decref(resp);
			close(fd);
		}
		_exit(0);
	}
	close(p[1]);
	while (got + 1 < out_len && (n = read(p[0], out + got, out_len - 1 - got)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		assert_true(n > 0);
		got += (size_t)n;
	}
	out[got] = '\0';
	close(p[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	return pid;
}

static void test_denied_peer(void **state)
{
	struct ks_td *d = *state;
	char out[512], *audit, *line, *save = NULL;
	size_t len, denied = 0;
	pid_t child;

	setup_daemon(d, ROOT_ALL, 0, 0);
	/* A key that exists, so a sign that got through would succeed. */
	expect_once(d, "{\"id\":1,\"op\":\"key.generate\",\"key\":\"k1\",\"type\":\"ec-p256\",\"purposes\":[\"csr\",\"sign\"]}", "ok");

	/* First fence: the socket is 0660 root:root. */
	as_nobody(d, 0, out, sizeof(out));
	assert_string_equal(out, "connect=EACCES\n");

	/* Past the fence, the policy still says no, to everything. */
	assert_int_equal(chmod(d->socket_path, 0666), 0);
	child = as_nobody(d, 1, out, sizeof(out));
	assert_string_equal(out, "hello=denied\ngenerate=denied\nsign=denied\nlist=denied\n");

	/* The key nobody tried to create does not exist; root still works. */
	{
		json_t *resp = ks_td_request_once(d, "{\"id\":2,\"op\":\"key.list\"}");

		check_outcome(resp, "ok", "key.list");
		assert_true(list_has(resp, "k1"));
		assert_false(list_has(resp, "n1"));
		json_decref(resp);
	}

	assert_non_null(audit = ks_td_audit_log(d, &len));
	for (line = strtok_r(audit, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, NULL);

		assert_non_null(o);
		if (json_integer_value(json_object_get(o, "uid")) == NOBODY) {
			assert_string_equal(json_string_value(json_object_get(o, "outcome")), "denied");
			assert_int_equal(json_integer_value(json_object_get(o, "pid")), child);
			assert_int_equal(json_integer_value(json_object_get(o, "gid")), NOBODY);
			denied++;
		}
		json_decref(o);
	}
	free(audit);
	assert_int_equal(denied, 4);
	assert_int_equal(ks_td_stop(d), 0);
}

/* ---- 4. policy and reload ---------------------------------------------- */

#define POLICY_A "[{\"uid\":0,\"keys\":[\"app-*\"],\"ops\":[\"key.generate\",\"key.list\",\"sign\"]}," \
		 " {\"uid\":0,\"keys\":[\"side-*\"],\"ops\":[\"key.generate\"]}]"
#define POLICY_B "[{\"uid\":0,\"keys\":[\"other\",\"side-*\"],\"ops\":[\"key.generate\",\"key.list\"]}]"

static void generate(struct ks_td *d, const char *key, const char *want)
{
	char req[256];

	snprintf(req, sizeof(req), "{\"id\":1,\"op\":\"key.generate\",\"key\":\"%s\","
		 "\"type\":\"ec-p256\",\"purposes\":[\"csr\",\"sign\"]}", key);
	expect_once(d, req, want);
}

static json_t *list_keys(struct ks_td *d)
{
	json_t *resp = ks_td_request_once(d, "{\"id\":1,\"op\":\"key.list\"}");

	check_outcome(resp, "ok", "key.list");
	return resp;
}

static void test_policy_reload(void **state)
{
	struct ks_td *d = *state;
	json_t *l;
	int reloads, kept;

	setup_daemon(d, POLICY_A, 0, 0);
	generate(d, "app-1", "ok");
	generate(d, "other", "denied");
	generate(d, "side-1", "ok");
	generate(d, "app-1", "exists");
	l = list_keys(d);
	assert_true(list_has(l, "app-1"));
	assert_false(list_has(l, "side-1"));   /* exists, but key.list is not granted on it */
	assert_false(list_has(l, "other"));
	assert_int_equal(list_size(l), 1);
	json_decref(l);

	/* A new policy, written 0644 (root's, not writable by others). */
	reloads = ks_td_log_count(d, "reload: policy with");
	assert_int_equal(ks_td_set_policy(d, POLICY_B), 0);
	assert_int_equal(chmod(d->config, 0644), 0);
	assert_int_equal(ks_td_reload(d), 0);
	assert_int_equal(ks_td_wait_log(d, "reload: policy with", reloads + 1, 5000), 0);
	generate(d, "other", "ok");
	generate(d, "app-2", "denied");
	l = list_keys(d);
	assert_true(list_has(l, "other"));
	assert_true(list_has(l, "side-1"));
	assert_false(list_has(l, "app-1"));
	assert_int_equal(list_size(l), 2);
	json_decref(l);

	/* A broken configuration: not JSON. The old policy stays. */
	kept = ks_td_log_count(d, "keeping the current policy");
	assert_int_equal(ks_td_write_config_raw(d, "{ \"module\": \"/x\", this is not JSON"), 0);
	assert_int_equal(ks_td_reload(d), 0);
	assert_int_equal(ks_td_wait_log(d, "keeping the current policy", kept + 1, 5000), 0);
	assert_true(ks_td_alive(d));
	generate(d, "side-2", "ok");
	generate(d, "app-3", "denied");

	/* Valid JSON but a policy naming an unknown operation: refused as a whole. */
	assert_int_equal(ks_td_set_policy(d, "[{\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"key.generate\",\"key.steal\"]}]"), 0);
	assert_int_equal(ks_td_reload(d), 0);
	assert_int_equal(ks_td_wait_log(d, "keeping the current policy", kept + 2, 5000), 0);
	generate(d, "app-4", "denied");

	/* A config that became group-writable is refused on reload too. */
	assert_int_equal(ks_td_set_policy(d, ROOT_ALL), 0);
	assert_int_equal(chmod(d->config, 0664), 0);
	assert_int_equal(ks_td_reload(d), 0);
	assert_int_equal(ks_td_wait_log(d, "keeping the current policy", kept + 3, 5000), 0);
	generate(d, "app-5", "denied");

	/* Fixed: the next reload applies it. */
	assert_int_equal(chmod(d->config, 0600), 0);
	reloads = ks_td_log_count(d, "reload: policy with");
	assert_int_equal(ks_td_reload(d), 0);
	assert_int_equal(ks_td_wait_log(d, "reload: policy with", reloads + 1, 5000), 0);
	generate(d, "app-5", "ok");
	l = list_keys(d);
	assert_int_equal(list_size(l), 5);   /* app-1 side-1 other side-2 app-5 */
	json_decref(l);
	assert_int_equal(ks_td_stop(d), 0);
}

/*
 * Limits and timeouts are read once at start. A reload that changes them
 * used to log only "reload: policy with N rules in force" as if all were
 * applied; now it names each changed setting that needs a restart, and
 * a reload that changes nothing of the kind names none.
 */
static void test_reload_restart_settings(void **state)
{
	static const char *const names[] = {
		"max_clients changed", "max_clients_per_uid changed", "client_timeout_ms changed",
		"idle_timeout_ms changed", "frame_timeout_ms changed",
	};
	struct ks_td *d = *state;
	int reloads;

	setup_daemon(d, ROOT_ALL, 0, 0);
	/* The policy alone: nothing to warn about. */
	reloads = ks_td_log_count(d, "reload: policy with");
	assert_int_equal(ks_td_set_policy(d, "[{\"uid\":0,\"keys\":[\"x-*\"],\"ops\":" ALL_OPS "}]"), 0);
	assert_int_equal(ks_td_reload(d), 0);
	assert_int_equal(ks_td_wait_log(d, "reload: policy with", reloads + 1, 5000), 0);
	assert_false(log_has(d, "need a restart"));
	assert_false(log_has(d, "not applied until keysvcd is restarted"));

	/* Every limit and timeout: each named, with the value still in force. */
	d->max_clients = 7;
	d->max_clients_per_uid = 3;
	d->client_timeout_ms = 20000;   /* idle and frame follow it: they change too */
	assert_int_equal(ks_td_write_config(d), 0);
	assert_int_equal(ks_td_reload(d), 0);
	assert_int_equal(ks_td_wait_log(d, "reload: policy with", reloads + 2, 5000), 0);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!log_has(d, names[i]))
			fail_msg("no warning \"%s\" after the reload", names[i]);
	assert_true(log_has(d, "max_clients changed (512 in force, 7 in the file)"));
	assert_true(log_has(d, "5 other changed settings need a restart"));
	/* Not applied: the old per-uid limit of 64 still lets 4 connections in. */
	{
		int fds[4];

		for (size_t i = 0; i < 4; i++)
			assert_true((fds[i] = ks_td_connect(d)) >= 0);
		expect_once(d, "{\"id\":1,\"op\":\"hello\"}", "ok");
		for (size_t i = 0; i < 4; i++)
			close(fds[i]);
	}
	/* The audit log's failure mode is read at start only, like the limits. */
	d->audit_failure = "continue";
	assert_int_equal(ks_td_write_config(d), 0);
	assert_int_equal(ks_td_reload(d), 0);
	assert_int_equal(ks_td_wait_log(d, "reload: policy with", reloads + 3, 5000), 0);
	assert_true(log_has(d, "audit_failure changed (refuse in force, continue in the file)"));
	assert_false(log_has(d, "audit_failure is continue"));
	d->audit_failure = NULL;
	assert_int_equal(ks_td_stop(d), 0);
}

/* ---- 5. audit ---------------------------------------------------------- */

struct audit_want {
	const char *req;
	const char *op;        /* NULL: no op field */
	const char *key;       /* NULL: no key field */
	const char *outcome;
};

static int rfc3339_ms_recent(const char *s)
{
	struct tm tm;
	int y, mo, da, h, mi, se, ms;
	char z;
	time_t t;

	if (strlen(s) != 24 ||
	    sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &y, &mo, &da, &h, &mi, &se, &ms, &z) != 8 ||
	    z != 'Z' || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[19] != '.')
		return 0;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = da;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = se;
	t = timegm(&tm);
	return t > time(NULL) - 300 && t <= time(NULL) + 5;
}

/* `keysvc audit-verify FILE1 [FILE2]` (@file2 NULL: one file): its exit status. */
static int audit_verify(const char *file1, const char *file2)
{
	const char *cli = getenv("KS_KEYSVC_CLI");
	pid_t pid;
	int st;

	assert_non_null(cli);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		int nul = open("/dev/null", O_WRONLY);

		if (nul < 0 || dup2(nul, 1) < 0 || dup2(nul, 2) < 0)
			_exit(127);
		execl(cli, cli, "audit-verify", file1, file2, (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void test_audit(void **state)
{
	static const struct audit_want want[] = {
		{ "{\"id\":1,\"op\":\"hello\"}", "hello", NULL, "ok" },
		{ "{\"id\":2,\"op\":\"key.generate\",\"key\":\"a1\",\"type\":\"ec-p256\",\"purposes\":[\"csr\",\"sign\"]}", "key.generate", "a1", "ok" },
		{ "{\"id\":3,\"op\":\"key.generate\",\"key\":\"a1\",\"type\":\"ec-p256\",\"purposes\":[\"csr\",\"sign\"]}", "key.generate", "a1", "exists" },
		{ NULL /* sign */, "sign", "a1", "ok" },
		{ "{\"id\":5,\"op\":\"key.public\",\"key\":\"a-none\"}", "key.public", "a-none", "no-such-key" },
		{ "{\"id\":6,\"op\":\"key.list\"}", "key.list", NULL, "ok" },
		{ "{\"id\":7,\"op\":\"sign\",\"key\":\"a1\",\"alg\":\"nope\",\"data\":\"AA==\"}", "sign", "a1", "unsupported" },
		{ "{\"id\":8,\"op\":\"key.public\",\"key\":\"zzz\"}", "key.public", "zzz", "denied" },
		{ "{\"id\":9,\"op\":\"key.generate\",\"key\":\"a1\",\"type\":\"ec-p256\",\"x\":1}", "key.generate", "a1", "bad-request" },
		{ "{\"id\":10,\"op\":\"key.public\",\"key\":\"a1\"}", "key.public", "a1", "ok" },
		{ "{\"id\":11,\"op\":\"key.delete\",\"key\":\"a1\"}", "key.delete", "a1", "ok" },
	};
	static const char *const allowed[] = {
		"time", "seq", "prev", "chain", "lost", "uid", "gid", "pid", "op", "key", "phase",
		"sha256", "digest", "purpose", "intent", "outcome",
	};
	struct ks_td *d = *state;
	uint8_t md[32];
	char sign_req[256], *md64, *sig64 = NULL, *audit, *line, *save = NULL;
	size_t len, n = 0, intents = 0;
	json_int_t intent_seq = 0;
	int fd;

	setup_daemon(d, "[{\"uid\":0,\"keys\":[\"a*\"],\"ops\":" ALL_OPS "}]", 0, 0);
	SHA256((const uint8_t *)"audit", 5, md);
	assert_non_null(md64 = b64(md, sizeof(md)));
	snprintf(sign_req, sizeof(sign_req), "{\"id\":4,\"op\":\"sign\",\"key\":\"a1\","
		 "\"alg\":\"ecdsa-sha256\",\"digest\":\"%s\"}", md64);

	assert_true((fd = ks_td_connect(d)) >= 0);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		json_t *resp = expect(fd, want[i].req ? want[i].req : sign_req, want[i].outcome);

		if (want[i].req == NULL)
			sig64 = strdup(json_string_value(json_object_get(resp, "signature")));
		json_decref(resp);
	}
	close(fd);
	assert_non_null(sig64);
	/* The audit line is written before the answer is sent, so it is there now. */
	assert_non_null(audit = ks_td_audit_log(d, &len));
	assert_false(has_needle(audit, len, sig64, strlen(sig64)));
	assert_false(has_needle(audit, len, md64, strlen(md64)));
	assert_false(has_needle(audit, len, "BEGIN", 5));
	assert_int_equal(len > 0 && audit[len - 1] == '\n', 1);
	for (line = strtok_r(audit, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		json_error_t jerr;
		json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &jerr), *v;
		const char *k;

		if (o == NULL || !json_is_object(o))
			fail_msg("audit line %zu is not a JSON object: %s (%s)", n + 1, line, jerr.text);
		assert_true(n < sizeof(want) / sizeof(want[0]));
		json_object_foreach(o, k, v) {
			size_t j;

			for (j = 0; j < sizeof(allowed) / sizeof(allowed[0]); j++)
				if (strcmp(k, allowed[j]) == 0)
					break;
			if (j == sizeof(allowed) / sizeof(allowed[0]))
				fail_msg("audit line %zu has an unexpected field %s", n + 1, k);
		}
		assert_true(json_is_string(json_object_get(o, "time")));
		if (!rfc3339_ms_recent(json_string_value(json_object_get(o, "time"))))
			fail_msg("audit line %zu: bad time %s", n + 1,
				 json_string_value(json_object_get(o, "time")));
		assert_true(json_is_integer(json_object_get(o, "uid")));
		assert_int_equal(json_integer_value(json_object_get(o, "uid")), getuid());
		assert_true(json_is_integer(json_object_get(o, "gid")));
		assert_int_equal(json_integer_value(json_object_get(o, "gid")), getgid());
		assert_true(json_is_integer(json_object_get(o, "pid")));
		assert_int_equal(json_integer_value(json_object_get(o, "pid")), getpid());
		/* An operation that uses or changes the token: its intent, then its outcome. */
		if (json_object_get(o, "phase") != NULL) {
			assert_string_equal(json_string_value(json_object_get(o, "phase")), "intent");
			assert_string_equal(json_string_value(json_object_get(o, "op")), want[n].op);
			assert_string_equal(json_string_value(json_object_get(o, "key")), want[n].key);
			assert_null(json_object_get(o, "outcome"));
			intent_seq = json_integer_value(json_object_get(o, "seq"));
			intents++;
			json_decref(o);
			continue;
		}
		if (intent_seq != 0)
			assert_int_equal(json_integer_value(json_object_get(o, "intent")), intent_seq);
		else
			assert_null(json_object_get(o, "intent"));
		intent_seq = 0;
		if (want[n].op != NULL) {
			assert_true(json_is_string(json_object_get(o, "op")));
			assert_string_equal(json_string_value(json_object_get(o, "op")), want[n].op);
		}
		if (want[n].key != NULL) {
			assert_true(json_is_string(json_object_get(o, "key")));
			assert_string_equal(json_string_value(json_object_get(o, "key")), want[n].key);
		} else {
			assert_null(json_object_get(o, "key"));
		}
		assert_true(json_is_string(json_object_get(o, "outcome")));
		assert_string_equal(json_string_value(json_object_get(o, "outcome")), want[n].outcome);
		json_decref(o);
		n++;
	}
	/* One outcome line per request; intents for key.generate twice, sign, key.delete. */
	assert_int_equal(n, sizeof(want) / sizeof(want[0]));
	assert_int_equal(intents, 4);
	free(audit);

	/* Rotation: after SIGHUP the daemon writes to a new file at the same path. */
	{
		char rotated[PATH_MAX + 8];

		snprintf(rotated, sizeof(rotated), "%s.1", d->audit_log);
		assert_int_equal(rename(d->audit_log, rotated), 0);
		assert_int_equal(ks_td_reload(d), 0);
		assert_int_equal(ks_td_wait_log(d, "reload: policy with", 1, 5000), 0);
		expect_once(d, "{\"id\":1,\"op\":\"hello\"}", "ok");
		assert_non_null(audit = ks_td_audit_log(d, &len));
		assert_non_null(memchr(audit, '\n', len));
		assert_ptr_equal(memchr(audit, '\n', len), audit + len - 1);   /* one line */
		assert_non_null(strstr(audit, "\"op\":\"hello\""));
		/* It continues the old file's chain rather than starting one. */
		assert_null(strstr(audit, "\"chain\":"));
		free(audit);
		assert_non_null(audit = ks_td_read_file(rotated, &len));
		for (n = 0, line = audit; (line = memchr(line, '\n', len - (size_t)(line - audit))) != NULL; line++)
			n++;
		assert_int_equal(n, sizeof(want) / sizeof(want[0]) + intents);
		free(audit);
		/* The chain runs on from the rotated file into the new one. */
		assert_int_equal(audit_verify(rotated, d->audit_log), 0);
		assert_int_equal(audit_verify(d->audit_log, rotated), 1);
	}
	free(md64);
	free(sig64);
	assert_int_equal(ks_td_stop(d), 0);
}

/* ---- 6. PIN canary ----------------------------------------------------- */

static void test_pin_canary(void **state)
{
	static const char *const reqs[] = {
		"{\"id\":1,\"op\":\"hello\"}",
		"{\"id\":2,\"op\":\"key.generate\",\"key\":\"c-1\",\"type\":\"ec-p256\",\"purposes\":[\"csr\",\"sign\"]}",
		"{\"id\":3,\"op\":\"key.generate\",\"key\":\"c-1\",\"type\":\"ec-p256\",\"purposes\":[\"csr\",\"sign\"]}",
		"{\"id\":4,\"op\":\"sign\",\"key\":\"c-1\",\"alg\":\"ecdsa-sha256\",\"data\":\"aGVsbG8=\"}",
		"{\"id\":5,\"op\":\"sign\",\"key\":\"c-1\",\"alg\":\"rsa-pss-sha256\",\"data\":\"aGVsbG8=\"}",
		"{\"id\":6,\"op\":\"csr.create\",\"key\":\"c-1\",\"subject\":\"CN=canary,O=Test\"}",
		"{\"id\":7,\"op\":\"csr.create\",\"key\":\"c-1\",\"subject\":\"not a DN\"}",
		"{\"id\":8,\"op\":\"key.public\",\"key\":\"x-denied\"}",
		"{\"id\":9,\"op\":\"key.public\",\"key\":\"c-none\"}",
		"{\"id\":10,\"op\":\"cert.get\",\"key\":\"c-1\"}",
		"{\"id\":11,\"op\":\"key.list\"}",
		"{\"id\":12,\"op\":\"nope\"}",
		"{\"id\":13,\"op\":\"hello\",\"pin\":\"1234\"}",
		"not json at all",
		"{\"id\":14,\"op\":\"key.delete\",\"key\":\"c-1\"}",
	};
	struct ks_td *d = *state;
	char so_pin_path[PATH_MAX + 8], *log, *audit, *so_pin;
	size_t log_len, audit_len, so_len = 0;
	uint8_t zero[4] = { 0, 0, 0, 0 };
	int fd, answered = 0;

	setup_daemon(d, "[{\"uid\":0,\"keys\":[\"c-*\"],\"ops\":" ALL_OPS "}]", 0, 0);
	assert_true(d->token.pin_len >= 8);
	assert_true((fd = ks_td_connect(d)) >= 0);
	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		json_t *resp = ks_td_request(fd, reqs[i]);

		answered += resp != NULL && ks_td_outcome(resp) != NULL;
		json_decref(resp);
	}
	assert_int_equal(answered, (int)(sizeof(reqs) / sizeof(reqs[0])));
	assert_int_equal(ks_td_send_raw(fd, zero, sizeof(zero)), 0);
	close(fd);
	/* A reload (re-reads the config) and a failed one. */
	assert_int_equal(ks_td_reload(d), 0);
	assert_int_equal(ks_td_wait_log(d, "reload: policy with", 1, 5000), 0);
	assert_int_equal(ks_td_write_config_raw(d, "{}"), 0);
	assert_int_equal(ks_td_reload(d), 0);
	assert_int_equal(ks_td_wait_log(d, "keeping the current policy", 1, 5000), 0);
	assert_int_equal(ks_td_stop(d), 0);

	assert_non_null(log = ks_td_daemon_log(d, &log_len));
	assert_non_null(audit = ks_td_audit_log(d, &audit_len));
	/* The session really was logged at debug level, failures included. */
	assert_true(has_needle(log, log_len, "[debug]", 7));
	assert_true(has_needle(log, log_len, "denied", 6));
	assert_true(audit_len > 0);
	if (has_needle(log, log_len, d->token.pin, d->token.pin_len))
		fail_msg("the user PIN appears in the daemon log");
	if (has_needle(audit, audit_len, d->token.pin, d->token.pin_len))
		fail_msg("the user PIN appears in the audit log");
	/* The SO PIN has no business there either. */
	snprintf(so_pin_path, sizeof(so_pin_path), "%s/so-pin", d->token.dir);
	if ((so_pin = ks_td_read_file(so_pin_path, &so_len)) != NULL && so_len >= 8) {
		assert_false(has_needle(log, log_len, so_pin, so_len));
		assert_false(has_needle(audit, audit_len, so_pin, so_len));
	}
	free(so_pin);
	free(log);
	free(audit);
}

/* ---- 7. many clients, and a stalled one -------------------------------- */

static void raise_nofile(rlim_t want)
{
	struct rlimit rl;

	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur >= want)
		return;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
		want = rl.rlim_max;
	rl.rlim_cur = want;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

static void test_concurrency(void **state)
{
	struct ks_td *d = *state;
	static int fds[CLIENTS];
	static uint8_t mds[CLIENTS][32];
	EVP_PKEY *pk;
	json_t *resp;
	char req[256];
	int ok_hello = 0, ok_sign = 0;

	/* Ours and, inherited, the daemon's: 300 sockets each plus the token. */
	raise_nofile(4 * CLIENTS);
	/* All from this uid: above the default per-uid limit (64), which test_limits covers. */
	assert_int_equal(ks_td_init(d, "keysvc-it", ROOT_ALL, 0, 0), 0);
	d->max_clients_per_uid = CLIENTS;
	assert_int_equal(ks_td_write_config(d), 0);
	assert_int_equal(ks_td_start(d), 0);
	resp = ks_td_request_once(d, "{\"id\":1,\"op\":\"key.generate\",\"key\":\"conc\",\"type\":\"ec-p256\",\"purposes\":[\"csr\",\"sign\"]}");
	check_outcome(resp, "ok", "key.generate");
	assert_non_null(pk = pem_pubkey(resp));
	json_decref(resp);

	/* All connected at once ... */
	for (int i = 0; i < CLIENTS; i++) {
		fds[i] = ks_td_connect(d);
		if (fds[i] < 0)
			fail_msg("client %d: connect: %s", i, strerror(-fds[i]));
	}
	/* ... all requests in flight before any answer is read. */
	for (int i = 0; i < CLIENTS; i++) {
		snprintf(req, sizeof(req), "{\"id\":%d,\"op\":\"hello\"}", i);
		assert_int_equal(ks_td_send_frame(fds[i], req, strlen(req)), 0);
	}
	for (int i = 0; i < CLIENTS; i++) {
		char *body = NULL;
		size_t n = 0;

		if (ks_td_read_frame(fds[i], 20000, &body, &n) == 0) {
			json_t *o = json_loadb(body, n, 0, NULL);
			const char *out = o ? ks_td_outcome(o) : NULL;

			ok_hello += out != NULL && strcmp(out, "ok") == 0 &&
				    json_integer_value(json_object_get(o, "id")) == i;
			json_decref(o);
		}
		free(body);
	}
	assert_int_equal(ok_hello, CLIENTS);
	for (int i = 0; i < CLIENTS; i++) {
		char *md64;

		snprintf(req, sizeof(req), "message %d", i);
		SHA256((const uint8_t *)req, strlen(req), mds[i]);
		assert_non_null(md64 = b64(mds[i], 32));
		snprintf(req, sizeof(req), "{\"id\":%d,\"op\":\"sign\",\"key\":\"conc\","
			 "\"alg\":\"ecdsa-sha256\",\"digest\":\"%s\"}", i, md64);
		free(md64);
		assert_int_equal(ks_td_send_frame(fds[i], req, strlen(req)), 0);
	}
	for (int i = 0; i < CLIENTS; i++) {
		char *body = NULL;
		size_t n = 0;

		if (ks_td_read_frame(fds[i], 30000, &body, &n) == 0) {
			json_t *o = json_loadb(body, n, 0, NULL);
			const char *s = json_string_value(json_object_get(o, "signature"));
			uint8_t *sig;
			size_t sig_len = 0;

			if (s != NULL && json_integer_value(json_object_get(o, "id")) == i &&
			    (sig = unb64(s, &sig_len)) != NULL) {
				ok_sign += verify_digest(pk, mds[i], 32, sig, sig_len);
				free(sig);
			} else {
				dump("sign", o);
			}
			json_decref(o);
		}
		free(body);
		close(fds[i]);
	}
	assert_int_equal(ok_sign, CLIENTS);
	EVP_PKEY_free(pk);
	assert_false(log_has(d, "too many connections"));
	hello_ok_new_client(d);
	assert_int_equal(ks_td_stop(d), 0);
}

static void test_stalled_client(void **state)
{
	struct ks_td *d = *state;
	uint8_t partial[2] = { 0, 0 };
	int stalled[8], idle, fd;
	int64_t t0, t1;

	setup_daemon(d, ROOT_ALL, 1000, 0);
	for (size_t i = 0; i < sizeof(stalled) / sizeof(stalled[0]); i++) {
		assert_true((stalled[i] = ks_td_connect(d)) >= 0);
		assert_int_equal(ks_td_send_raw(stalled[i], partial, sizeof(partial)), 0);
	}
	assert_true((idle = ks_td_connect(d)) >= 0);
	t0 = ks_td_now_ms();

	/* A normal client is answered at once while they hang. */
	assert_true((fd = ks_td_connect(d)) >= 0);
	hello_ok(fd);
	t1 = ks_td_now_ms();
	assert_true(t1 - t0 < 2000);
	if (t1 - t0 < 800) {
		for (size_t i = 0; i < sizeof(stalled) / sizeof(stalled[0]); i++)
			assert_true(is_open_and_quiet(stalled[i]));
	}

	/* The stalled and the idle clients are dropped after client_timeout_ms ... */
	for (size_t i = 0; i < sizeof(stalled) / sizeof(stalled[0]); i++) {
		assert_int_equal(ks_td_wait_closed(stalled[i], 5000), 0);
		close(stalled[i]);
	}
	t1 = ks_td_now_ms();
	assert_true(t1 - t0 >= 800);
	assert_true(t1 - t0 < 4500);
	assert_int_equal(ks_td_wait_closed(idle, 5000), 0);
	close(idle);
	/* ... and so is the normal one once it idles, but it was served meanwhile. */
	assert_int_equal(ks_td_wait_closed(fd, 5000), 0);
	close(fd);

	/*
	 * A client that sends one byte every 300 ms is dropped once its frame
	 * is not complete client_timeout_ms (here also frame_timeout_ms) after
	 * its first byte; the regularity of its bytes buys it nothing.
	 */
	{
		uint8_t hdr[4] = { 0, 0, 0, 200 }, byte = ' ';
		int closed = 0, sent = 0;

		assert_true((fd = ks_td_connect(d)) >= 0);
		t0 = ks_td_now_ms();
		while (!closed && ks_td_now_ms() - t0 < 10000) {
			if (ks_td_send_raw(fd, sent < 4 ? &hdr[sent] : &byte, 1) != 0)
				break;   /* EPIPE: the daemon hung up */
			sent++;
			closed = ks_td_wait_closed(fd, 300) == 0;
		}
		t1 = ks_td_now_ms();
		close(fd);
		if (t1 - t0 < 800 || t1 - t0 > 4000)
			fail_msg("dribbling client dropped after %lld ms (expected about 1000)",
				 (long long)(t1 - t0));
	}
	hello_ok_new_client(d);
	assert_int_equal(ks_td_stop(d), 0);
}

/* ---- 8. max_clients ---------------------------------------------------- */

/* A connection the daemon has accepted and serves (retries while earlier ones drain). */
static int served_connection(struct ks_td *d)
{
	int64_t deadline = ks_td_now_ms() + 5000;

	while (ks_td_now_ms() < deadline) {
		int fd = ks_td_connect(d);
		json_t *resp;

		if (fd < 0)
			return fd;
		if (ks_td_send_frame(fd, "{\"id\":1,\"op\":\"hello\"}", 21) == 0) {
			char *body = NULL;
			size_t n = 0;

			if (ks_td_read_frame(fd, 5000, &body, &n) == 0) {
				resp = json_loadb(body, n, 0, NULL);
				free(body);
				if (resp != NULL && ks_td_outcome(resp) != NULL &&
				    strcmp(ks_td_outcome(resp), "ok") == 0) {
					json_decref(resp);
					return fd;
				}
				json_decref(resp);
			}
		}
		close(fd);
		poll(NULL, 0, 50);
	}
	return -ETIMEDOUT;
}

static void test_max_clients(void **state)
{
	struct ks_td *d = *state;
	int fds[4], extra, again[4];

	setup_daemon(d, ROOT_ALL, 0, 4);
	for (int i = 0; i < 4; i++)
		assert_true((fds[i] = served_connection(d)) >= 0);

	/* The fifth is accepted by the kernel, told why and closed by the daemon. */
	assert_true((extra = ks_td_connect(d)) >= 0);
	{
		json_t *o = ks_td_read_json(extra, 5000, NULL);

		check_outcome(o, "denied", "fifth connection");
		assert_true(json_is_null(json_object_get(o, "id")));
		json_decref(o);
	}
	assert_int_equal(ks_td_wait_closed(extra, 5000), 0);
	close(extra);
	assert_true(log_has(d, "too many connections"));
	/* The four still work. */
	for (int i = 0; i < 4; i++)
		hello_ok(fds[i]);

	/* Once they go, new clients (four at once again) are served. */
	for (int i = 0; i < 4; i++)
		close(fds[i]);
	for (int i = 0; i < 4; i++)
		assert_true((again[i] = served_connection(d)) >= 0);
	for (int i = 0; i < 4; i++)
		close(again[i]);
	assert_int_equal(ks_td_stop(d), 0);
}

/* ---- 9. signals and the socket file ------------------------------------ */

static void test_signals(void **state)
{
	struct ks_td *d = *state;
	struct stat st;
	char *content;
	int st_kill, fd;

	setup_daemon(d, ROOT_ALL, 0, 0);
	hello_ok_new_client(d);

	/* SIGTERM with a client connected: exit 0, socket file gone. */
	assert_true((fd = ks_td_connect(d)) >= 0);
	hello_ok(fd);
	assert_int_equal(ks_td_stop(d), 0);
	assert_int_equal(ks_td_wait_closed(fd, 1000), 0);
	close(fd);
	assert_int_equal(lstat(d->socket_path, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_true(log_has(d, "shutting down"));

	/* Restart on the same path. */
	assert_int_equal(ks_td_start(d), 0);
	hello_ok_new_client(d);

	/* SIGKILL leaves the socket file; the next daemon replaces it. */
	st_kill = ks_td_kill(d, SIGKILL, 5000);
	assert_true(st_kill != -1 && WIFSIGNALED(st_kill));
	assert_int_equal(lstat(d->socket_path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(ks_td_start(d), 0);
	assert_true(log_has(d, "removed stale socket"));
	hello_ok_new_client(d);
	assert_int_equal(ks_td_stop(d), 0);

	/* A regular file there is never replaced: the daemon refuses to start. */
	fd = open(d->socket_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "precious\n", 9), 9);
	close(fd);
	assert_int_equal(ks_td_spawn(d), 0);
	assert_int_equal(ks_td_wait_exit(d, 10000), 0);
	assert_true(WIFEXITED(d->status));
	assert_int_not_equal(WEXITSTATUS(d->status), 0);
	assert_true(log_has(d, "not a socket"));
	assert_non_null(content = ks_td_read_file(d->socket_path, NULL));
	assert_string_equal(content, "precious\n");
	free(content);
	assert_int_equal(unlink(d->socket_path), 0);

	/* And with it gone, the daemon starts again. */
	assert_int_equal(ks_td_start(d), 0);
	hello_ok_new_client(d);
	assert_int_equal(ks_td_stop(d), 0);
}

/* ---- 10. configuration refusals ---------------------------------------- */

/* Start the daemon, expect it to exit with @code before listening. */
static void refuses(struct ks_td *d, int code, const char *log_says)
{
	struct stat st;

	assert_int_equal(ks_td_spawn(d), 0);
	if (ks_td_wait_exit(d, 10000) != 0)
		fail_msg("keysvcd did not exit (expected exit code %d)", code);
	assert_true(WIFEXITED(d->status));
	if (WEXITSTATUS(d->status) != code) {
		char *log = ks_td_daemon_log(d, NULL);

		fprintf(stderr, "daemon log:\n%s\n", log ? log : "");
		free(log);
		fail_msg("exit code %d, expected %d", WEXITSTATUS(d->status), code);
	}
	if (!log_has(d, log_says))
		fail_msg("the daemon log does not say \"%s\"", log_says);
	/* It never created its socket. */
	assert_int_equal(lstat(d->socket_path, &st), -1);
	assert_int_equal(errno, ENOENT);
}

static void test_config_refusal(void **state)
{
	static const char wrong_pin[] = "7e1c0ffee0dd5a1e";
	struct ks_td *d = *state;
	char *log, needle[2 * PATH_MAX + 64], audit_dir[PATH_MAX];
	size_t len;
	int fd;

	assert_int_equal(ks_td_init(d, "keysvc-it", ROOT_ALL, 0, 0), 0);

	/* A PIN file others can read. */
	assert_int_equal(chmod(d->pin_file, 0644), 0);
	refuses(d, 4, "must be 0600 or 0400");
	assert_true(log_has(d, d->pin_file));
	assert_int_equal(chmod(d->pin_file, 0600), 0);

	/* A configuration file the group may write. */
	assert_int_equal(chmod(d->config, 0664), 0);
	refuses(d, 3, "writable by group or others");
	assert_int_equal(chmod(d->config, 0600), 0);

	/* A PIN the token rejects. */
	assert_true(snprintf(d->pin_file, sizeof(d->pin_file), "%s/wrong-pin", d->dir) <
		    (int)sizeof(d->pin_file));
	fd = open(d->pin_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, wrong_pin, strlen(wrong_pin)), (ssize_t)strlen(wrong_pin));
	close(fd);
	assert_int_equal(ks_td_write_config(d), 0);
	refuses(d, 6, "PIN rejected");
	assert_non_null(log = ks_td_daemon_log(d, &len));
	assert_false(has_needle(log, len, wrong_pin, strlen(wrong_pin)));
	assert_false(has_needle(log, len, d->token.pin, d->token.pin_len));
	free(log);

	/* The same setup with the right PIN works: the refusals were specific. */
	snprintf(d->pin_file, sizeof(d->pin_file), "%s", d->token.pin_file);
	assert_int_equal(ks_td_write_config(d), 0);
	/*
	 * An audit log another user made and anyone may write (the issue's
	 * 0666 file of another uid), then a directory anyone may write.
	 */
	if (geteuid() == 0) {
		assert_true((fd = open(d->audit_log, O_WRONLY | O_CREAT | O_EXCL, 0666)) >= 0);
		assert_int_equal(fchmod(fd, 0666), 0);
		assert_int_equal(fchown(fd, 65534, 65534), 0);
		close(fd);
		refuses(d, 3, "owned by uid 65534");
		assert_true(log_has(d, d->audit_log));
		assert_int_equal(unlink(d->audit_log), 0);
	}
	/* In a directory of its own: the PIN file's directories are checked first. */
	assert_true(snprintf(audit_dir, sizeof(audit_dir), "%s/audit", d->dir) <
		    (int)sizeof(audit_dir));
	assert_int_equal(mkdir(audit_dir, 0777), 0);
	assert_int_equal(chmod(audit_dir, 0777), 0);
	assert_true(snprintf(d->audit_log, sizeof(d->audit_log), "%s/audit.log", audit_dir) <
		    (int)sizeof(d->audit_log));
	assert_int_equal(ks_td_write_config(d), 0);
	snprintf(needle, sizeof(needle), "audit log %s: directory %s is writable by group or others",
		 d->audit_log, audit_dir);
	refuses(d, 3, needle);
	assert_int_equal(chmod(audit_dir, 0700), 0);

	assert_int_equal(ks_td_start(d), 0);
	hello_ok_new_client(d);
	assert_int_equal(ks_td_stop(d), 0);
}

/* ---- 11. the audit log on a full file system ----------------------------- */

static int mount_ns;     /* main() made a private mount namespace that keysvcd inherits */

static int count_needle(const char *hay, const char *needle)
{
	int n = 0;

	for (; (hay = strstr(hay, needle)) != NULL; hay++)
		n++;
	return n;
}

/*
 * The case: the audit log on a full 64 KiB file system and 1,200
 * signatures asked for. Every signature made has its intent record; the
 * rest are refused with audit-unavailable; the file holds whole, chained
 * records; the daemon log names the real errno. With audit_failure
 * continue keysvcd warns at start and signs.
 */
static void test_audit_full_filesystem(void **state)
{
	struct ks_td *d = *state;
	char fs[PATH_MAX], *audit, *log;
	int fd, ok = 0, refused = 0;
	size_t len;

	if (!mount_ns)
		skip();
	assert_int_equal(ks_td_init(d, "keysvc-it", ROOT_ALL, 0, 0), 0);
	assert_true(snprintf(fs, sizeof(fs), "%s/auditfs", d->dir) < (int)sizeof(fs));
	assert_int_equal(mkdir(fs, 0700), 0);
	assert_int_equal(mount("tmpfs", fs, "tmpfs", 0, "size=64k,mode=0700"), 0);
	assert_true(snprintf(d->audit_log, sizeof(d->audit_log), "%s/audit.log", fs) <
		    (int)sizeof(d->audit_log));
	assert_int_equal(ks_td_write_config(d), 0);
	assert_int_equal(ks_td_start(d), 0);
	assert_true((fd = ks_td_connect(d)) >= 0);
	expect_free(fd, "{\"id\":1,\"op\":\"key.generate\",\"key\":\"full\",\"type\":\"ec-p256\",\"purposes\":[\"csr\",\"sign\"]}", "ok");
	for (int i = 0; i < 1200; i++) {
		json_t *resp = ks_td_request(fd, "{\"id\":2,\"op\":\"sign\",\"key\":\"full\","
					     "\"alg\":\"ecdsa-sha256\",\"data\":\"aGVsbG8=\"}");
		const char *outcome = resp ? ks_td_outcome(resp) : NULL;

		assert_non_null(outcome);
		if (strcmp(outcome, "ok") == 0)
			ok++;
		else if (strcmp(outcome, "audit-unavailable") == 0)
			refused++;
		else
			fail_msg("sign %d: %s", i, outcome);
		json_decref(resp);
	}
	close(fd);
	assert_true(ok > 0);
	assert_true(refused > 0);
	assert_int_equal(ok + refused, 1200);
	assert_non_null(audit = ks_td_audit_log(d, &len));
	assert_int_equal(audit[len - 1], '\n');
	assert_int_equal(count_needle(audit, "\"op\":\"sign\",\"key\":\"full\",\"phase\":\"intent\""), ok);
	free(audit);
	assert_int_equal(audit_verify(d->audit_log, NULL), 0);
	assert_non_null(log = ks_td_daemon_log(d, &len));
	assert_non_null(strstr(log, "No space left on device"));
	assert_null(strstr(log, "Success"));
	free(log);
	assert_int_equal(ks_td_stop(d), 0);

	/* The same full file system with audit_failure continue. */
	d->audit_failure = "continue";
	assert_int_equal(ks_td_write_config(d), 0);
	assert_int_equal(ks_td_start(d), 0);
	assert_true(log_has(d, "audit_failure is continue"));
	expect_once(d, "{\"id\":3,\"op\":\"sign\",\"key\":\"full\",\"alg\":\"ecdsa-sha256\","
		    "\"data\":\"aGVsbG8=\"}", "ok");
	assert_int_equal(ks_td_stop(d), 0);
	d->audit_failure = NULL;
	assert_int_equal(umount(fs), 0);
	rmdir(fs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_hello, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_bad_frames, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_denied_peer, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_policy_reload, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_reload_restart_settings, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_audit, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_pin_canary, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_concurrency, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_stalled_client, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_max_clients, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_signals, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_config_refusal, ks_td_fixture_alloc, ks_td_fixture_free),
		cmocka_unit_test_setup_teardown(test_audit_full_filesystem, ks_td_fixture_alloc, ks_td_fixture_free),
	};

	/* Root only, before any thread: keysvcd inherits the namespace and sees the tmpfs. */
	mount_ns = unshare(CLONE_NEWNS) == 0 && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0;

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("daemon", tests, NULL, NULL);
}
