/*
 * libkeysvc against a scripted fake daemon (a thread on a Unix socket in a
 * private temporary directory, speaking through ks_frame_read/write):
 * every operation's request encoding and response decoding, every wire
 * error, what a broken or lying peer does to a handle, requests refused
 * before sending, and the keysvc CLI's exit codes, output and files.
 *
 * The fake compares each request with the whole expected object (minus
 * "id"), checks that ids are integers counting up from 1, and after the
 * script checks that the client sent nothing more: so "refused locally"
 * means no byte reached the socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "keysvc/keysvc.h"
#include "proto/frame.h"
#include "proto/wire.h"

/* What the fake daemon does with one request. */
enum reply_kind {
	REPLY_JSON,          /* @reply (JSON) with the request's id added */
	REPLY_RAW,           /* @reply bytes as one frame body, as they are */
	REPLY_BAD_ID,        /* @reply with another id */
	REPLY_NO_ID,         /* @reply without an id */
	REPLY_STRING_ID,     /* @reply with the id as a string */
	REPLY_OVERSIZE,      /* a header announcing KS_FRAME_MAX + 1 bytes */
	REPLY_ZERO,          /* a header announcing 0 bytes */
	REPLY_TRUNCATE,      /* half a frame, then close */
	REPLY_CLOSE,         /* close without answering */
	REPLY_SILENT,        /* never answer; wait for the client to give up */
	REPLY_REFUSE,        /* at accept, before any request: @reply (if any) as one frame, then close */
};

struct step {
	const char *expect;           /* the whole request without "id", or NULL: only "op" */
	const char *op;               /* checked when @expect is NULL */
	enum reply_kind kind;
	const char *reply;
};

struct fake {
	char dir[64];
	char path[108];
	int listen_fd;
	const struct step *steps;
	size_t nsteps;
	size_t served;
	int failures;
	pthread_t thread;
};

static struct fake fk;

static void fake_fail(struct fake *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fake_fail(struct fake *f, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fake daemon: step %zu: ", f->served);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	f->failures++;
}

static void send_json(int fd, const char *reply, json_t *id)
{
	json_t *resp = json_loads(reply, 0, NULL);
	char *out;

	assert_non_null(resp);
	if (id != NULL)
		json_object_set(resp, "id", id);
	out = json_dumps(resp, JSON_COMPACT);
	ks_frame_write(fd, out, strlen(out), 5000);
	free(out);
	json_decref(resp);
}

/* Check one request against its step. */
static void check_request(struct fake *f, const struct step *s, json_t *req, uint64_t want_id)
{
	json_t *id = json_object_get(req, "id"), *copy, *want;

	if (!json_is_integer(id) || (uint64_t)json_integer_value(id) != want_id)
		fake_fail(f, "id is not the integer %llu", (unsigned long long)want_id);
	if (s->expect == NULL) {
		const char *op = json_string_value(json_object_get(req, "op"));

		if (op == NULL || strcmp(op, s->op) != 0)
			fake_fail(f, "op %s, expected %s", op ? op : "(none)", s->op);
		return;
	}
	copy = json_deep_copy(req);
	json_object_del(copy, "id");
	want = json_loads(s->expect, JSON_REJECT_DUPLICATES, NULL);
	if (want == NULL)
		fake_fail(f, "bad expectation in the test: %s", s->expect);
	else if (!json_equal(copy, want)) {
		char *got = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);

		fake_fail(f, "request %s, expected %s", got, s->expect);
		free(got);
	}
	json_decref(copy);
	json_decref(want);
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	struct ks_buf body;
	uint8_t hdr[KS_FRAME_HDR];
	int fd = accept(f->listen_fd, NULL, NULL), r;

	ks_buf_init(&body, KS_FRAME_MAX);
	if (fd < 0)
		fake_fail(f, "accept: %s", strerror(errno));
	if (fd >= 0 && f->nsteps > 0 && f->steps[0].kind == REPLY_REFUSE) {
		/* As keysvcd over a connection limit: answer, close, read nothing. */
		if (f->steps[0].reply != NULL)
			ks_frame_write(fd, f->steps[0].reply, strlen(f->steps[0].reply), 5000);
		f->served = f->nsteps;
		ks_buf_free(&body);
		close(fd);
		return NULL;
	}
	for (; fd >= 0 && f->served < f->nsteps; f->served++) {
		const struct step *s = &f->steps[f->served];
		json_t *req;

		if ((r = ks_frame_read(fd, &body, 5000)) != 0) {
			fake_fail(f, "no request (%s)", strerror(-r));
			break;
		}
		req = json_loadb((const char *)body.data, body.len, JSON_REJECT_DUPLICATES, NULL);
		if (req == NULL) {
			fake_fail(f, "request is not JSON: %.*s", (int)body.len, (const char *)body.data);
			break;
		}
		check_request(f, s, req, f->served + 1);
		switch (s->kind) {
		case REPLY_JSON:
			send_json(fd, s->reply, json_object_get(req, "id"));
			break;
		case REPLY_BAD_ID: {
			json_t *other = json_integer(json_integer_value(json_object_get(req, "id")) + 1);

			send_json(fd, s->reply, other);
			json_decref(other);
			break;
		}
		case REPLY_NO_ID:
			send_json(fd, s->reply, NULL);
			break;
		case REPLY_STRING_ID: {
			json_t *sid = json_string("1");

			send_json(fd, s->reply, sid);
			json_decref(sid);
			break;
		}
		case REPLY_RAW:
			ks_frame_write(fd, s->reply, strlen(s->reply), 5000);
			break;
		case REPLY_OVERSIZE:
			ks_frame_header_encode(hdr, KS_FRAME_MAX);
			hdr[3]++;       /* 65537 */
			send(fd, hdr, sizeof(hdr), MSG_NOSIGNAL);
			break;
		case REPLY_ZERO:
			memset(hdr, 0, sizeof(hdr));
			send(fd, hdr, sizeof(hdr), MSG_NOSIGNAL);
			break;
		case REPLY_TRUNCATE:
			send(fd, "\0\0\0\x20{\"id\"", 9, MSG_NOSIGNAL);
			shutdown(fd, SHUT_WR);
			break;
		case REPLY_CLOSE:
			shutdown(fd, SHUT_WR);
			break;
		case REPLY_SILENT:
		case REPLY_REFUSE:
			break;
		}
		json_decref(req);
	}
	/* The script is done: the client must send nothing more, only close. */
	if (fd >= 0 && f->failures == 0 && (r = ks_frame_read(fd, &body, 5000)) != -ECONNRESET) {
		if (r == 0)
			fake_fail(f, "unexpected extra request %.*s", (int)body.len,
				  (const char *)body.data);
		else
			fake_fail(f, "client did not close (%s)", strerror(-r));
	}
	ks_buf_free(&body);
	if (fd >= 0)
		close(fd);
	return NULL;
}

static void fake_start(const struct step *steps, size_t n)
{
	struct sockaddr_un sun;

	memset(&fk, 0, sizeof(fk));
	snprintf(fk.dir, sizeof(fk.dir), "%s", "/tmp/keysvc-fake-XXXXXX");
	assert_non_null(mkdtemp(fk.dir));
	snprintf(fk.path, sizeof(fk.path), "%s/s", fk.dir);
	fk.steps = steps;
	fk.nsteps = n;
	fk.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fk.listen_fd >= 0);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, fk.path, strlen(fk.path));
	assert_int_equal(bind(fk.listen_fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(fk.listen_fd, 1), 0);
	assert_int_equal(pthread_create(&fk.thread, NULL, fake_main, &fk), 0);
}

/* Wait for the fake to finish its script; fail the test if it saw anything wrong. */
static void fake_stop(void)
{
	pthread_join(fk.thread, NULL);
	close(fk.listen_fd);
	unlink(fk.path);
	rmdir(fk.dir);
	assert_int_equal(fk.failures, 0);
	assert_int_equal(fk.served, fk.nsteps);
}

#define FAKE(steps) fake_start(steps, sizeof(steps) / sizeof(steps[0]))

static keysvc *fake_connect(void)
{
	keysvc *ks = NULL;

	assert_int_equal(keysvc_connect(fk.path, &ks), KEYSVC_OK);
	assert_non_null(ks);
	return ks;
}

/* ---- key purposes (KEYSVC_1.2) ---- */

static void test_purposes(void **state)
{
	static const struct step steps[] = {
		{ "{\"op\":\"key.generate\",\"key\":\"k\",\"type\":\"ec-p256\",\"purposes\":[\"csr\",\"tls\"]}",
		  NULL, REPLY_JSON, "{\"ok\":true,\"key\":\"k\",\"type\":\"ec-p256\",\"public_key\":\"PEM\","
		  "\"purposes\":[\"csr\",\"tls\"]}" },
		/* In the library's order whatever the caller's; no purposes: the daemon's default. */
		{ "{\"op\":\"key.generate\",\"key\":\"o\",\"type\":\"ec-p256\","
		  "\"purposes\":[\"csr\",\"http-signature\"]}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"key\":\"o\",\"type\":\"ec-p256\",\"public_key\":\"PEM\"}" },
		{ "{\"op\":\"key.generate\",\"key\":\"d\",\"type\":\"ec-p256\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"key\":\"d\",\"type\":\"ec-p256\",\"public_key\":\"PEM\"}" },
		{ "{\"op\":\"key.public\",\"key\":\"o\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"key\":\"o\",\"type\":\"ec-p256\",\"public_key\":\"P\","
		  "\"purposes\":[\"csr\",\"http-signature\"]}" },
		{ "{\"op\":\"key.public\",\"key\":\"old\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"key\":\"old\",\"type\":\"ec-p256\",\"public_key\":\"P\","
		  "\"purposes\":[\"csr\",\"tls\",\"http-signature\",\"sign\"],\"purposes_legacy\":true}" },
		/* A daemon before purposes says nothing. */
		{ "{\"op\":\"key.public\",\"key\":\"k\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"key\":\"k\",\"type\":\"ec-p256\",\"public_key\":\"P\"}" },
		{ "{\"op\":\"key.list\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"keys\":[{\"key\":\"a\",\"type\":\"ec-p256\",\"has_cert\":false,"
		  "\"purposes\":[\"tls\"]},{\"key\":\"b\",\"type\":\"ec-p256\",\"has_cert\":false,"
		  "\"purposes\":[\"csr\",\"tls\",\"http-signature\",\"sign\"],\"purposes_legacy\":true},"
		  "{\"key\":\"c\",\"type\":\"ec-p256\",\"has_cert\":false},"
		  "{\"key\":\"d\",\"type\":\"ec-p256\",\"has_cert\":false,\"purposes\":[]}]}" },
		{ "{\"op\":\"key.public\",\"key\":\"bad\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"key\":\"bad\",\"type\":\"ec-p256\",\"public_key\":\"P\","
		  "\"purposes\":[\"CSR;rm\"]}" },
	};
	struct keysvc_key *keys = NULL;
	char *s = NULL, *p = NULL;
	size_t n = 0;
	int legacy = -1;
	keysvc *ks;

	(void)state;
	FAKE(steps);
	ks = fake_connect();
	/* A list that is not one never leaves the library. */
	assert_int_equal(keysvc_key_generate_purposes(ks, "x", "ec-p256", "csr,,tls", NULL),
			 KEYSVC_E_INVALID);
	assert_int_equal(keysvc_key_generate_purposes(ks, "x", "ec-p256", "csr,frob", NULL),
			 KEYSVC_E_INVALID);
	assert_non_null(strstr(keysvc_error_message(ks), "unknown purpose"));
	assert_int_equal(keysvc_key_generate_purposes(ks, "x", "ec-p256", "", NULL), KEYSVC_E_INVALID);

	assert_int_equal(keysvc_key_generate_purposes(ks, "k", "ec-p256", "csr,tls", &s), KEYSVC_OK);
	assert_string_equal(s, "PEM");
	free(s);
	assert_int_equal(keysvc_key_generate_purposes(ks, "o", "ec-p256", "http-signature,csr", NULL),
			 KEYSVC_OK);
	assert_int_equal(keysvc_key_generate_purposes(ks, "d", "ec-p256", NULL, NULL), KEYSVC_OK);

	assert_int_equal(keysvc_key_purposes(ks, "o", &p, &legacy), KEYSVC_OK);
	assert_string_equal(p, "csr,http-signature");
	assert_int_equal(legacy, 0);
	free(p);
	assert_int_equal(keysvc_key_purposes(ks, "old", &p, &legacy), KEYSVC_OK);
	assert_string_equal(p, "csr,tls,http-signature,sign");
	assert_int_equal(legacy, 1);
	free(p);
	assert_int_equal(keysvc_key_purposes(ks, "k", &p, &legacy), KEYSVC_OK);
	assert_null(p);
	assert_int_equal(legacy, 0);

	assert_int_equal(keysvc_key_list(ks, &keys, &n), KEYSVC_OK);
	assert_int_equal(n, 4);
	assert_string_equal(keysvc_key_list_purposes(ks, 0, &legacy), "tls");
	assert_int_equal(legacy, 0);
	assert_string_equal(keysvc_key_list_purposes(ks, 1, &legacy), "csr,tls,http-signature,sign");
	assert_int_equal(legacy, 1);
	assert_null(keysvc_key_list_purposes(ks, 2, &legacy));
	/* Stored purposes keysvcd cannot read: none, not an error. */
	assert_string_equal(keysvc_key_list_purposes(ks, 3, NULL), "");
	assert_null(keysvc_key_list_purposes(ks, 4, NULL));
	keysvc_key_list_free(keys, n);

	/* What is not a purpose name is a protocol error, not text passed on. */
	assert_int_equal(keysvc_key_purposes(ks, "bad", &p, NULL), KEYSVC_E_PROTOCOL);
	assert_null(p);
	keysvc_close(ks);
	fake_stop();
}

/* ---- every operation ---- */

static void test_operations(void **state)
{
	static const struct step steps[] = {
		{ "{\"op\":\"hello\",\"versions\":[1]}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"version\":1,\"server\":\"keysvcd 9\",\"health\":\"ok\","
		  "\"token\":{\"label\":\"L\",\"manufacturer\":\"M\",\"model\":\"X\",\"serial\":\"S\",\"library\":\"/x.so\"},"
		  "\"key_types\":[\"rsa-2048\",\"ec-p256\"],\"algorithms\":[\"ecdsa-sha256\"],"
		  "\"future_field\":[1,2]}" },
		{ "{\"op\":\"key.generate\",\"key\":\"k\",\"type\":\"ec-p384\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"key\":\"k\",\"type\":\"ec-p384\",\"public_key\":\"PEM\"}" },
		{ "{\"op\":\"key.generate\",\"key\":\"k2\",\"type\":\"rsa-2048\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"key\":\"k2\",\"type\":\"rsa-2048\",\"public_key\":\"PEM2\"}" },
		{ "{\"op\":\"key.list\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"keys\":[{\"key\":\"a\",\"type\":\"rsa-2048\",\"has_cert\":true},"
		  "{\"key\":\"b\",\"type\":null,\"has_cert\":false}],\"truncated\":true}" },
		{ "{\"op\":\"key.list\"}", NULL, REPLY_JSON, "{\"ok\":true,\"keys\":[]}" },
		{ "{\"op\":\"key.public\",\"key\":\"k\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"key\":\"k\",\"type\":\"ec-p384\",\"public_key\":\"PUB\"}" },
		{ "{\"op\":\"key.public\",\"key\":\"odd\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"key\":\"odd\",\"type\":null,\"public_key\":\"PUB\"}" },
		{ "{\"op\":\"csr.create\",\"key\":\"k\",\"subject\":\"CN=x,O=Example\","
		  "\"san\":{\"dns\":[\"a.example\",\"b.example\"],\"ip\":[\"192.0.2.1\"],"
		  "\"uri\":[\"spiffe://e/x\"],\"email\":[\"o@e.example\"]},"
		  "\"key_usage\":[\"digitalSignature\",\"keyEncipherment\"],"
		  "\"ext_key_usage\":[\"serverAuth\",\"1.2.3.4\"],"
		  "\"attributes\":[{\"oid\":\"1.3.6.1.4.1.34380.1.3.2\",\"value\":\"true\",\"type\":\"printable\"},"
		  "{\"oid\":\"1.2.3\",\"value\":\"caf\\u00e9\"}],"
		  "\"digest\":\"sha384\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"key\":\"k\",\"csr\":\"CSR\"}" },
		{ "{\"op\":\"csr.create\",\"key\":\"k\",\"subject\":\"CN=y\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"key\":\"k\",\"csr\":\"CSR2\"}" },
		{ "{\"op\":\"sign\",\"key\":\"k\",\"alg\":\"ecdsa-sha256\",\"digest\":\"AAECAw==\"}", NULL,
		  REPLY_JSON, "{\"ok\":true,\"key\":\"k\",\"alg\":\"ecdsa-sha256\",\"signature\":\"AQID\"}" },
		{ "{\"op\":\"sign\",\"key\":\"k\",\"alg\":\"rsa-pss-sha512\",\"data\":\"aGk=\"}", NULL,
		  REPLY_JSON, "{\"ok\":true,\"key\":\"k\",\"alg\":\"rsa-pss-sha512\",\"signature\":\"/w==\"}" },
		{ "{\"op\":\"cert.put\",\"key\":\"k\",\"cert\":\"CERT\\n\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"key\":\"k\"}" },
		{ "{\"op\":\"cert.get\",\"key\":\"k\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"key\":\"k\",\"cert\":\"CERT\\n\"}" },
		{ "{\"op\":\"key.delete\",\"key\":\"k\"}", NULL, REPLY_JSON, "{\"ok\":true,\"key\":\"k\"}" },
	};
	static const char *const dns[] = { "a.example", "b.example" };
	static const char *const ip[] = { "192.0.2.1" };
	static const char *const uri[] = { "spiffe://e/x" };
	static const char *const email[] = { "o@e.example" };
	static const char *const ku[] = { "digitalSignature", "keyEncipherment" };
	static const char *const eku[] = { "serverAuth", "1.2.3.4" };
	static const struct keysvc_csr_attr attrs[] = {
		{ "1.3.6.1.4.1.34380.1.3.2", "true", "printable" },
		{ "1.2.3", "caf\xc3\xa9", NULL },
	};
	struct keysvc_csr_params p = {
		.subject = "CN=x,O=Example", .dns = dns, .n_dns = 2, .ip = ip, .n_ip = 1,
		.uri = uri, .n_uri = 1, .email = email, .n_email = 1, .key_usage = ku,
		.n_key_usage = 2, .ext_key_usage = eku, .n_ext_key_usage = 2, .attrs = attrs,
		.n_attrs = 2, .digest = "sha384",
	};
	struct keysvc_csr_params p2 = { .subject = "CN=y" };
	struct keysvc_hello *h = NULL;
	struct keysvc_key *keys = NULL;
	size_t n = 0, sig_len = 0;
	uint8_t *sig = NULL;
	char *s = NULL, *type = NULL;
	keysvc *ks;

	(void)state;
	FAKE(steps);
	ks = fake_connect();

	assert_int_equal(keysvc_hello(ks, &h), KEYSVC_OK);
	assert_int_equal(h->version, 1);
	assert_string_equal(h->server, "keysvcd 9");
	assert_string_equal(h->token_label, "L");
	assert_string_equal(h->token_manufacturer, "M");
	assert_string_equal(h->token_model, "X");
	assert_string_equal(h->token_serial, "S");
	assert_int_equal(h->health, KEYSVC_HEALTH_OK);
	assert_int_equal(h->n_key_types, 2);
	assert_string_equal(h->key_types[1], "ec-p256");
	assert_int_equal(h->n_algorithms, 1);
	assert_string_equal(h->algorithms[0], "ecdsa-sha256");
	assert_string_equal(keysvc_error_message(ks), "");
	keysvc_hello_free(h);

	assert_int_equal(keysvc_key_generate(ks, "k", "ec-p384", &s), KEYSVC_OK);
	assert_string_equal(s, "PEM");
	free(s);
	/* The public key is optional for the caller. */
	assert_int_equal(keysvc_key_generate(ks, "k2", "rsa-2048", NULL), KEYSVC_OK);

	assert_int_equal(keysvc_key_list(ks, &keys, &n), KEYSVC_OK);
	assert_int_equal(n, 2);
	assert_string_equal(keys[0].name, "a");
	assert_string_equal(keys[0].type, "rsa-2048");
	assert_int_equal(keys[0].has_cert, 1);
	assert_string_equal(keys[1].name, "b");
	assert_null(keys[1].type);
	assert_int_equal(keys[1].has_cert, 0);
	assert_int_equal(keysvc_key_list_truncated(ks), 1);
	keysvc_key_list_free(keys, n);
	/* A daemon that does not send "truncated" lists everything. */
	assert_int_equal(keysvc_key_list(ks, &keys, &n), KEYSVC_OK);
	assert_int_equal(n, 0);
	assert_null(keys);
	assert_int_equal(keysvc_key_list_truncated(ks), 0);

	assert_int_equal(keysvc_key_public(ks, "k", &s, &type), KEYSVC_OK);
	assert_string_equal(s, "PUB");
	assert_string_equal(type, "ec-p384");
	free(s);
	free(type);
	assert_int_equal(keysvc_key_public(ks, "odd", &s, &type), KEYSVC_OK);
	assert_null(type);
	free(s);

	assert_int_equal(keysvc_csr_create(ks, "k", &p, &s), KEYSVC_OK);
	assert_string_equal(s, "CSR");
	free(s);
	assert_int_equal(keysvc_csr_create(ks, "k", &p2, &s), KEYSVC_OK);
	assert_string_equal(s, "CSR2");
	free(s);

	assert_int_equal(keysvc_sign_digest(ks, "k", "ecdsa-sha256", (const uint8_t *)"\0\1\2\3", 4,
					    &sig, &sig_len), KEYSVC_OK);
	assert_int_equal(sig_len, 3);
	assert_memory_equal(sig, "\1\2\3", 3);
	free(sig);
	assert_int_equal(keysvc_sign_data(ks, "k", "rsa-pss-sha512", (const uint8_t *)"hi", 2, &sig,
					  &sig_len), KEYSVC_OK);
	assert_int_equal(sig_len, 1);
	assert_int_equal(sig[0], 0xff);
	free(sig);

	assert_int_equal(keysvc_cert_put(ks, "k", "CERT\n"), KEYSVC_OK);
	assert_int_equal(keysvc_cert_get(ks, "k", &s), KEYSVC_OK);
	assert_string_equal(s, "CERT\n");
	free(s);
	assert_int_equal(keysvc_key_delete(ks, "k"), KEYSVC_OK);
	keysvc_close(ks);
	fake_stop();
}

static void test_hello_health(void **state)
{
	static const struct step steps[] = {
		{ NULL, "hello", REPLY_JSON,
		  "{\"ok\":true,\"version\":1,\"server\":\"s\",\"health\":\"token-unavailable\",\"token\":{}}" },
		{ NULL, "hello", REPLY_JSON,
		  "{\"ok\":true,\"version\":1,\"server\":\"s\",\"health\":\"degraded\",\"token\":{},"
		  "\"health_reason\":\"C_SignInit: CKR_GENERAL_ERROR 2 times since 2026-12-06T10:02:11Z\"}" },
		{ NULL, "hello", REPLY_JSON,
		  "{\"ok\":true,\"version\":1,\"server\":\"s\",\"health\":\"on-fire\",\"token\":{}}" },
		{ NULL, "hello", REPLY_JSON,
		  "{\"ok\":false,\"error\":\"unsupported\",\"message\":\"protocol version\"}" },
	};
	struct keysvc_hello *h = NULL;
	keysvc *ks;

	(void)state;
	FAKE(steps);
	ks = fake_connect();
	assert_int_equal(keysvc_hello(ks, &h), KEYSVC_OK);
	assert_int_equal(h->health, KEYSVC_HEALTH_TOKEN_UNAVAILABLE);
	/* Token fields the daemon leaves out are "", never NULL. */
	assert_string_equal(h->token_label, "");
	assert_string_equal(h->token_serial, "");
	assert_int_equal(h->n_key_types, 0);
	assert_null(h->key_types);
	/* A daemon that gives no reason: "", never NULL. */
	assert_string_equal(h->health_reason, "");
	keysvc_hello_free(h);
	assert_int_equal(keysvc_hello(ks, &h), KEYSVC_OK);
	assert_int_equal(h->health, KEYSVC_HEALTH_DEGRADED);
	assert_string_equal(h->health_reason,
			    "C_SignInit: CKR_GENERAL_ERROR 2 times since 2026-12-06T10:02:11Z");
	keysvc_hello_free(h);
	assert_int_equal(keysvc_hello(ks, &h), KEYSVC_OK);
	assert_int_equal(h->health, KEYSVC_HEALTH_UNKNOWN);
	keysvc_hello_free(h);
	h = (struct keysvc_hello *)&h;       /* must be reset on error */
	assert_int_equal(keysvc_hello(ks, &h), KEYSVC_E_UNSUPPORTED);
	assert_null(h);
	keysvc_close(ks);
	fake_stop();
}

/* ---- the daemon's named errors ---- */

static void test_wire_errors(void **state)
{
	static const struct step steps[] = {
		{ NULL, "key.public", REPLY_JSON, "{\"ok\":false,\"error\":\"bad-request\",\"message\":\"m1\"}" },
		{ NULL, "key.public", REPLY_JSON, "{\"ok\":false,\"error\":\"denied\",\"message\":\"m2\"}" },
		{ NULL, "key.public", REPLY_JSON, "{\"ok\":false,\"error\":\"no-such-key\",\"message\":\"m3\"}" },
		{ NULL, "key.public", REPLY_JSON, "{\"ok\":false,\"error\":\"exists\",\"message\":\"m4\"}" },
		{ NULL, "key.public", REPLY_JSON, "{\"ok\":false,\"error\":\"unsupported\",\"message\":\"m5\"}" },
		{ NULL, "key.public", REPLY_JSON, "{\"ok\":false,\"error\":\"token-unavailable\",\"message\":\"m6\"}" },
		{ NULL, "key.public", REPLY_JSON, "{\"ok\":false,\"error\":\"internal\",\"message\":\"m7\"}" },
		{ NULL, "key.public", REPLY_JSON, "{\"ok\":false,\"error\":\"audit-unavailable\",\"message\":\"m8\"}" },
		{ NULL, "key.public", REPLY_JSON, "{\"ok\":false,\"error\":\"brand-new\",\"message\":\"m9\"}" },
		{ NULL, "key.public", REPLY_JSON, "{\"ok\":true,\"key\":\"k\",\"type\":\"ec-p256\",\"public_key\":\"P\"}" },
	};
	static const int codes[] = {
		KEYSVC_E_BAD_REQUEST, KEYSVC_E_DENIED, KEYSVC_E_NO_SUCH_KEY, KEYSVC_E_EXISTS,
		KEYSVC_E_UNSUPPORTED, KEYSVC_E_TOKEN_UNAVAILABLE, KEYSVC_E_INTERNAL,
		KEYSVC_E_AUDIT_UNAVAILABLE, KEYSVC_E_INTERNAL,
	};
	static const char *const names[] = {
		"bad-request", "denied", "no-such-key", "exists", "unsupported",
		"token-unavailable", "internal", "audit-unavailable", "internal",
	};
	char *pem = NULL, *type = NULL, want[8];
	keysvc *ks;

	(void)state;
	FAKE(steps);
	ks = fake_connect();
	for (size_t i = 0; i < 9; i++) {
		pem = (char *)"garbage";
		type = (char *)"garbage";
		assert_int_equal(keysvc_key_public(ks, "k", &pem, &type), codes[i]);
		assert_null(pem);
		assert_null(type);
		assert_string_equal(keysvc_error_name(codes[i]), names[i]);
		snprintf(want, sizeof(want), "m%zu", i + 1);
		if (i < 8)
			assert_string_equal(keysvc_error_message(ks), want);
	}
	/* An error name this library does not know: internal, with the name kept. */
	assert_string_equal(keysvc_error_message(ks), "brand-new: m9");
	/* Named errors leave the handle usable, and a success clears the message. */
	assert_int_equal(keysvc_key_public(ks, "k", &pem, NULL), KEYSVC_OK);
	assert_string_equal(pem, "P");
	assert_string_equal(keysvc_error_message(ks), "");
	free(pem);
	keysvc_close(ks);
	fake_stop();
}

/*
 * Every error proto/wire.h defines, answered by the daemon, reaches the
 * caller as its own KEYSVC_E_* code named as on the wire: an error name
 * added to proto/wire.c but not to libkeysvc's mapping would come out as
 * KEYSVC_E_INTERNAL, with the name in the message.
 */
static void test_wire_error_table(void **state)
{
	static char replies[KS_WIRE_ERR_COUNT][128];
	static struct step steps[KS_WIRE_ERR_COUNT];
	size_t n = 0;
	char *pem;
	keysvc *ks;

	(void)state;
	for (int e = KS_WIRE_ERR_NONE + 1; e < KS_WIRE_ERR_COUNT; e++, n++) {
		assert_non_null(ks_wire_err_name((enum ks_wire_err)e));
		snprintf(replies[n], sizeof(replies[n]),
			 "{\"ok\":false,\"error\":\"%s\",\"message\":\"m\"}",
			 ks_wire_err_name((enum ks_wire_err)e));
		steps[n] = (struct step){ NULL, "key.public", REPLY_JSON, replies[n] };
	}
	fake_start(steps, n);
	ks = fake_connect();
	for (int e = KS_WIRE_ERR_NONE + 1; e < KS_WIRE_ERR_COUNT; e++) {
		const char *name = ks_wire_err_name((enum ks_wire_err)e);
		int code = keysvc_key_public(ks, "k", &pem, NULL);

		print_message("%s -> %d\n", name, code);
		assert_true(code < 0);
		if (e != KS_WIRE_INTERNAL)
			assert_int_not_equal(code, KEYSVC_E_INTERNAL);
		assert_int_not_equal(code, KEYSVC_E_PROTOCOL);
		assert_string_equal(keysvc_error_name(code), name);
		assert_string_not_equal(keysvc_strerror(code), "unknown error");
		/* A known name: the message is the daemon's, not prefixed with the name. */
		assert_string_equal(keysvc_error_message(ks), "m");
	}
	keysvc_close(ks);
	fake_stop();
}

static void test_error_messages(void **state)
{
	static char long_reply[12000], long_words[2000];
	static struct step steps[] = {
		{ NULL, "key.delete", REPLY_JSON,
		  "{\"ok\":false,\"error\":\"denied\",\"message\":\"line1\\nline2\\u001b[31m\"}" },
		{ NULL, "key.delete", REPLY_JSON, long_reply },
		{ NULL, "key.delete", REPLY_JSON, long_words },
		{ NULL, "key.delete", REPLY_JSON, "{\"ok\":false,\"error\":\"denied\"}" },
	};
	const char *m;
	size_t off;
	keysvc *ks;

	(void)state;
	/* 10000 bytes of "é": the copy must be cut on a character boundary. */
	off = (size_t)snprintf(long_reply, sizeof(long_reply),
			       "{\"ok\":false,\"error\":\"no-such-key\",\"message\":\"x");
	for (size_t i = 0; i < 5000; i++) {
		long_reply[off++] = '\xc3';
		long_reply[off++] = '\xa9';
	}
	snprintf(long_reply + off, sizeof(long_reply) - off, "\"}");
	/* 1200 bytes of words: the copy ends after a whole one, with "…". */
	off = (size_t)snprintf(long_words, sizeof(long_words),
			       "{\"ok\":false,\"error\":\"denied\",\"message\":\"");
	for (size_t i = 0; i < 100; i++)
		off += (size_t)snprintf(long_words + off, sizeof(long_words) - off, "key-%07zu ", i);
	snprintf(long_words + off, sizeof(long_words) - off, "\"}");
	FAKE(steps);
	ks = fake_connect();
	/* Control characters from the daemon never reach a terminal. */
	assert_int_equal(keysvc_key_delete(ks, "k"), KEYSVC_E_DENIED);
	assert_string_equal(keysvc_error_message(ks), "line1?line2?[31m");
	assert_int_equal(keysvc_key_delete(ks, "k"), KEYSVC_E_NO_SUCH_KEY);
	m = keysvc_error_message(ks);
	assert_true(strlen(m) < KEYSVC_MESSAGE_MAX);
	assert_true(strlen(m) > KEYSVC_MESSAGE_MAX - 8);
	/* "x", whole two-byte characters only, and the "…" of a cut. */
	assert_int_equal((strlen(m) - 3) % 2, 1);
	assert_int_equal((unsigned char)m[strlen(m) - 4], 0xa9);
	assert_string_equal(m + strlen(m) - 3, "\xe2\x80\xa6");
	assert_int_equal(keysvc_key_delete(ks, "k"), KEYSVC_E_DENIED);
	m = keysvc_error_message(ks);
	assert_true(strlen(m) < KEYSVC_MESSAGE_MAX);
	/* Whole words "key-NNNNNNN" (11 bytes and a space each), then "…". */
	assert_string_equal(m + strlen(m) - 3, "\xe2\x80\xa6");
	assert_int_equal((strlen(m) - 3 + 1) % 12, 0);
	assert_int_equal(strncmp(m + strlen(m) - 3 - 11, "key-", 4), 0);
	assert_int_equal(keysvc_key_delete(ks, "k"), KEYSVC_E_DENIED);
	assert_string_equal(keysvc_error_message(ks), "");
	keysvc_close(ks);
	fake_stop();
}

/* ---- broken and lying peers ---- */

/*
 * One request answered by @kind/@reply must give @expect, and the handle
 * must be broken afterwards: KEYSVC_E_IO without another byte on the
 * socket (the fake fails if it sees one).
 */
static void run_broken(const char *what, enum reply_kind kind, const char *reply, int expect)
{
	const struct step steps[] = { { NULL, "key.delete", kind, reply } };
	keysvc *ks;
	int r;

	FAKE(steps);
	ks = fake_connect();
	keysvc_set_timeout(ks, 300);
	r = keysvc_key_delete(ks, "k");
	if (r != expect)
		fail_msg("%s: %s, expected %s (%s)", what, keysvc_error_name(r),
			 keysvc_error_name(expect), keysvc_error_message(ks));
	assert_true(keysvc_error_message(ks)[0] != '\0');
	/* The fake read the request: it may have been acted on. */
	if (r == KEYSVC_E_IO && keysvc_request_unsent(ks))
		fail_msg("%s: the request counts as unsent", what);
	assert_int_equal(keysvc_key_delete(ks, "k"), KEYSVC_E_IO);
	assert_non_null(strstr(keysvc_error_message(ks), "broken"));
	assert_int_equal(keysvc_request_unsent(ks), 1);
	fake_stop();
	assert_int_equal(keysvc_cert_put(ks, "k", "x"), KEYSVC_E_IO);
	keysvc_close(ks);
}

static void test_broken_peers(void **state)
{
	(void)state;
	run_broken("other id", REPLY_BAD_ID, "{\"ok\":true,\"key\":\"k\"}", KEYSVC_E_PROTOCOL);
	run_broken("no id", REPLY_NO_ID, "{\"ok\":true,\"key\":\"k\"}", KEYSVC_E_PROTOCOL);
	run_broken("string id", REPLY_STRING_ID, "{\"ok\":true,\"key\":\"k\"}", KEYSVC_E_PROTOCOL);
	/* An error with a null id is about the connection: named, and the handle is closed. */
	run_broken("null id", REPLY_RAW, "{\"id\":null,\"ok\":false,\"error\":\"bad-request\"}",
		   KEYSVC_E_BAD_REQUEST);
	run_broken("null id, success", REPLY_RAW, "{\"id\":null,\"ok\":true}", KEYSVC_E_PROTOCOL);
	run_broken("frame over the cap", REPLY_OVERSIZE, NULL, KEYSVC_E_PROTOCOL);
	run_broken("empty frame", REPLY_ZERO, NULL, KEYSVC_E_PROTOCOL);
	run_broken("truncated frame", REPLY_TRUNCATE, NULL, KEYSVC_E_IO);
	run_broken("EOF instead of an answer", REPLY_CLOSE, NULL, KEYSVC_E_IO);
	run_broken("no answer in time", REPLY_SILENT, NULL, KEYSVC_E_IO);
	run_broken("not JSON", REPLY_RAW, "not json", KEYSVC_E_PROTOCOL);
	run_broken("JSON array", REPLY_RAW, "[1]", KEYSVC_E_PROTOCOL);
	run_broken("duplicate keys", REPLY_RAW, "{\"id\":1,\"ok\":true,\"ok\":true}", KEYSVC_E_PROTOCOL);
	run_broken("invalid UTF-8", REPLY_RAW, "{\"id\":1,\"ok\":true,\"x\":\"\xff\"}", KEYSVC_E_PROTOCOL);
	run_broken("ok not a bool", REPLY_JSON, "{\"ok\":\"yes\"}", KEYSVC_E_PROTOCOL);
	run_broken("ok missing", REPLY_JSON, "{\"key\":\"k\"}", KEYSVC_E_PROTOCOL);
	run_broken("error missing", REPLY_JSON, "{\"ok\":false}", KEYSVC_E_PROTOCOL);
	run_broken("error not a string", REPLY_JSON, "{\"ok\":false,\"error\":7}", KEYSVC_E_PROTOCOL);
	run_broken("message not a string", REPLY_JSON,
		   "{\"ok\":false,\"error\":\"denied\",\"message\":[]}", KEYSVC_E_PROTOCOL);
}

/* keysvcd over a connection limit: one denied frame with a null id at accept, then close. */
static void test_refused_connection(void **state)
{
	static const struct step steps[] = {
		{ NULL, NULL, REPLY_REFUSE,
		  "{\"id\":null,\"ok\":false,\"error\":\"denied\",\"message\":\"too many connections for uid 1000 (limit 64)\"}" },
	};
	keysvc *ks;

	(void)state;
	FAKE(steps);
	ks = fake_connect();
	fake_stop();            /* the refusal is sent and the socket closed */
	assert_int_equal(keysvc_key_delete(ks, "k"), KEYSVC_E_DENIED);
	assert_non_null(strstr(keysvc_error_message(ks), "too many connections"));
	assert_int_equal(keysvc_key_delete(ks, "k"), KEYSVC_E_IO);
	keysvc_close(ks);
}

/*
 * keysvcd closed the connection before the request (its idle timeout, a
 * restart): the request never reached it, and the handle says so, so a
 * caller may send it again on a new connection without doing it twice.
 */
static void test_request_unsent(void **state)
{
	static const struct step closed_at_once[] = { { NULL, NULL, REPLY_REFUSE, NULL } };
	keysvc *ks;

	(void)state;
	FAKE(closed_at_once);
	ks = fake_connect();
	fake_stop();            /* the socket is closed before anything is sent */
	assert_int_equal(keysvc_key_delete(ks, "k"), KEYSVC_E_IO);
	assert_non_null(strstr(keysvc_error_message(ks), "sending"));
	assert_int_equal(keysvc_request_unsent(ks), 1);
	keysvc_close(ks);
	assert_int_equal(keysvc_request_unsent(NULL), 0);
}

/* Each well-framed answer with a field of the wrong type or size breaks the handle. */
static void run_bad_field(const char *what, const char *op, const char *reply)
{
	const struct step steps[] = { { NULL, op, REPLY_JSON, reply } };
	struct keysvc_hello *h = NULL;
	struct keysvc_key *keys = NULL;
	size_t n = 0, sig_len = 0;
	uint8_t *sig = NULL;
	char *s = NULL;
	keysvc *ks;
	int r = KEYSVC_OK;

	FAKE(steps);
	ks = fake_connect();
	if (strcmp(op, "hello") == 0)
		r = keysvc_hello(ks, &h);
	else if (strcmp(op, "key.list") == 0)
		r = keysvc_key_list(ks, &keys, &n);
	else if (strcmp(op, "key.public") == 0)
		r = keysvc_key_public(ks, "k", &s, NULL);
	else if (strcmp(op, "sign") == 0)
		r = keysvc_sign_digest(ks, "k", "ecdsa-sha256", (const uint8_t *)"d", 1, &sig, &sig_len);
	else if (strcmp(op, "cert.get") == 0)
		r = keysvc_cert_get(ks, "k", &s);
	if (r != KEYSVC_E_PROTOCOL)
		fail_msg("%s: %s, expected protocol", what, keysvc_error_name(r));
	assert_null(h);
	assert_null(keys);
	assert_int_equal(n, 0);
	assert_null(s);
	assert_null(sig);
	assert_int_equal(sig_len, 0);
	assert_int_equal(keysvc_key_delete(ks, "k"), KEYSVC_E_IO);
	fake_stop();
	keysvc_close(ks);
}

static void test_bad_field_types(void **state)
{
	(void)state;
	run_bad_field("public_key a number", "key.public",
		      "{\"ok\":true,\"key\":\"k\",\"type\":\"ec-p256\",\"public_key\":7}");
	run_bad_field("public_key missing", "key.public", "{\"ok\":true,\"key\":\"k\",\"type\":\"ec-p256\"}");
	run_bad_field("type a number", "key.public",
		      "{\"ok\":true,\"key\":\"k\",\"type\":5,\"public_key\":\"P\"}");
	run_bad_field("keys an object", "key.list", "{\"ok\":true,\"keys\":{}}");
	run_bad_field("key entry a string", "key.list", "{\"ok\":true,\"keys\":[\"a\"]}");
	run_bad_field("has_cert a string", "key.list",
		      "{\"ok\":true,\"keys\":[{\"key\":\"a\",\"type\":null,\"has_cert\":\"yes\"}]}");
	run_bad_field("list type a bool", "key.list",
		      "{\"ok\":true,\"keys\":[{\"key\":\"a\",\"type\":true,\"has_cert\":true}]}");
	run_bad_field("signature not base64", "sign", "{\"ok\":true,\"signature\":\"!!!!\"}");
	run_bad_field("signature empty", "sign", "{\"ok\":true,\"signature\":\"\"}");
	run_bad_field("signature a number", "sign", "{\"ok\":true,\"signature\":1}");
	run_bad_field("hello version a string", "hello",
		      "{\"ok\":true,\"version\":\"1\",\"server\":\"s\",\"health\":\"ok\",\"token\":{}}");
	run_bad_field("hello version negative", "hello",
		      "{\"ok\":true,\"version\":-1,\"server\":\"s\",\"health\":\"ok\",\"token\":{}}");
	run_bad_field("hello token a string", "hello",
		      "{\"ok\":true,\"version\":1,\"server\":\"s\",\"health\":\"ok\",\"token\":\"t\"}");
	run_bad_field("hello token label a number", "hello",
		      "{\"ok\":true,\"version\":1,\"server\":\"s\",\"health\":\"ok\",\"token\":{\"label\":1}}");
	run_bad_field("hello key_types with a number", "hello",
		      "{\"ok\":true,\"version\":1,\"server\":\"s\",\"health\":\"ok\",\"token\":{},\"key_types\":[1]}");
	run_bad_field("cert a bool", "cert.get", "{\"ok\":true,\"key\":\"k\",\"cert\":false}");
}

/* A signature of more than the 1024 bytes any v1 algorithm makes. */
static void test_oversized_signature(void **state)
{
	static char reply[2000];
	const struct step steps[] = { { NULL, "sign", REPLY_JSON, reply } };
	uint8_t *sig = NULL;
	size_t sig_len = 0, off;
	keysvc *ks;

	(void)state;
	off = (size_t)snprintf(reply, sizeof(reply), "{\"ok\":true,\"signature\":\"");
	for (size_t i = 0; i < 1368; i++)       /* 1026 bytes */
		reply[off++] = 'A';
	snprintf(reply + off, sizeof(reply) - off, "\"}");
	FAKE(steps);
	ks = fake_connect();
	assert_int_equal(keysvc_sign_data(ks, "k", "ecdsa-sha256", NULL, 0, &sig, &sig_len),
			 KEYSVC_E_PROTOCOL);
	assert_null(sig);
	keysvc_close(ks);
	fake_stop();
}

/* ---- refused before sending ---- */

static void test_local_errors(void **state)
{
	static const struct step steps[] = {
		{ "{\"op\":\"key.delete\",\"key\":\"k\"}", NULL, REPLY_JSON, "{\"ok\":true,\"key\":\"k\"}" },
	};
	static const char *const with_null[] = { "a.example", NULL };
	struct keysvc_csr_params p = { .subject = "CN=x" };
	struct keysvc_csr_attr attr = { .oid = NULL, .value = "v" };
	char *big = malloc(70001), *s = NULL;
	uint8_t *data = calloc(1, KEYSVC_SIGN_DATA_MAX + 1), *sig = NULL;
	size_t sig_len = 0, n = 0;
	struct keysvc_key *keys = NULL;
	keysvc *ks;

	(void)state;
	assert_non_null(big);
	assert_non_null(data);
	memset(big, 'A', 70000);
	big[70000] = '\0';
	FAKE(steps);
	ks = fake_connect();

	/* Larger than a frame once encoded: refused, nothing sent, handle fine. */
	assert_int_equal(keysvc_cert_put(ks, "k", big), KEYSVC_E_INVALID);
	assert_non_null(strstr(keysvc_error_message(ks), "frame"));
	assert_int_equal(keysvc_sign_data(ks, "k", "ecdsa-sha256", data, KEYSVC_SIGN_DATA_MAX + 1,
					  &sig, &sig_len), KEYSVC_E_INVALID);
	assert_null(sig);
	/* Missing and malformed arguments. */
	assert_int_equal(keysvc_key_delete(ks, NULL), KEYSVC_E_INVALID);
	assert_int_equal(keysvc_key_delete(ks, ""), KEYSVC_E_INVALID);
	assert_int_equal(keysvc_key_delete(ks, "bad\xff"), KEYSVC_E_INVALID);
	assert_non_null(strstr(keysvc_error_message(ks), "UTF-8"));
	assert_int_equal(keysvc_key_delete(ks, "\xc0\xaf"), KEYSVC_E_INVALID);     /* overlong */
	assert_int_equal(keysvc_key_delete(ks, "\xed\xa0\x80"), KEYSVC_E_INVALID); /* surrogate */
	assert_int_equal(keysvc_key_generate(ks, "k", NULL, NULL), KEYSVC_E_INVALID);
	assert_int_equal(keysvc_key_list(ks, NULL, &n), KEYSVC_E_INVALID);
	assert_int_equal(keysvc_key_list(ks, &keys, NULL), KEYSVC_E_INVALID);
	assert_int_equal(keysvc_hello(ks, NULL), KEYSVC_E_INVALID);
	assert_int_equal(keysvc_cert_get(ks, "k", NULL), KEYSVC_E_INVALID);
	assert_int_equal(keysvc_cert_put(ks, "k", NULL), KEYSVC_E_INVALID);
	assert_int_equal(keysvc_sign_digest(ks, "k", NULL, (const uint8_t *)"d", 1, &sig, &sig_len),
			 KEYSVC_E_INVALID);
	assert_int_equal(keysvc_sign_digest(ks, "k", "ecdsa-sha256", NULL, 32, &sig, &sig_len),
			 KEYSVC_E_INVALID);
	assert_int_equal(keysvc_sign_digest(ks, "k", "ecdsa-sha256", (const uint8_t *)"d", 1, NULL,
					    &sig_len), KEYSVC_E_INVALID);
	assert_int_equal(keysvc_csr_create(ks, "k", NULL, &s), KEYSVC_E_INVALID);
	assert_int_equal(keysvc_csr_create(ks, "k", &p, NULL), KEYSVC_E_INVALID);
	p.subject = NULL;
	assert_int_equal(keysvc_csr_create(ks, "k", &p, &s), KEYSVC_E_INVALID);
	p.subject = "CN=x";
	p.dns = with_null;
	p.n_dns = 2;
	assert_int_equal(keysvc_csr_create(ks, "k", &p, &s), KEYSVC_E_INVALID);
	assert_non_null(strstr(keysvc_error_message(ks), "dns[1]"));
	p.dns = NULL;
	assert_int_equal(keysvc_csr_create(ks, "k", &p, &s), KEYSVC_E_INVALID);
	p.n_dns = 0;
	p.attrs = &attr;
	p.n_attrs = 1;
	assert_int_equal(keysvc_csr_create(ks, "k", &p, &s), KEYSVC_E_INVALID);
	p.n_attrs = 0;
	p.reserved[3] = &p;
	assert_int_equal(keysvc_csr_create(ks, "k", &p, &s), KEYSVC_E_INVALID);
	assert_null(s);
	assert_int_equal(keysvc_set_timeout(ks, -1), KEYSVC_E_INVALID);
	assert_int_equal(keysvc_set_timeout(NULL, 10), KEYSVC_E_INVALID);
	assert_int_equal(keysvc_key_delete(NULL, "k"), KEYSVC_E_INVALID);

	/* None of that reached the daemon (the fake checks this is request id 1). */
	assert_int_equal(keysvc_key_delete(ks, "k"), KEYSVC_OK);
	keysvc_close(ks);
	fake_stop();
	free(big);
	free(data);
}

static void test_connect(void **state)
{
	static const struct step steps[] = {
		{ "{\"op\":\"key.list\"}", NULL, REPLY_JSON, "{\"ok\":true,\"keys\":[]}" },
	};
	struct keysvc_key *keys = NULL;
	char longpath[200];
	size_t n = 1;
	keysvc *ks = (keysvc *)&ks;

	(void)state;
	errno = 0;
	assert_int_equal(keysvc_connect("/nonexistent/keysvc.sock", &ks), KEYSVC_E_CONNECT);
	assert_int_equal(errno, ENOENT);
	assert_null(ks);
	memset(longpath, 'x', sizeof(longpath) - 1);
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(keysvc_connect(longpath, &ks), KEYSVC_E_INVALID);
	assert_int_equal(keysvc_connect("", &ks), KEYSVC_E_INVALID);
	assert_int_equal(keysvc_connect(NULL, NULL), KEYSVC_E_INVALID);
	keysvc_close(NULL);

	/* NULL: $KEYSVC_SOCKET. */
	FAKE(steps);
	assert_int_equal(setenv(KEYSVC_SOCKET_ENV, fk.path, 1), 0);
	assert_int_equal(keysvc_connect(NULL, &ks), KEYSVC_OK);
	unsetenv(KEYSVC_SOCKET_ENV);
	assert_int_equal(keysvc_key_list(ks, &keys, &n), KEYSVC_OK);
	assert_int_equal(n, 0);
	keysvc_close(ks);
	fake_stop();
}

static void test_error_names(void **state)
{
	static const int codes[] = {
		KEYSVC_OK, KEYSVC_E_BAD_REQUEST, KEYSVC_E_DENIED, KEYSVC_E_NO_SUCH_KEY,
		KEYSVC_E_EXISTS, KEYSVC_E_UNSUPPORTED, KEYSVC_E_TOKEN_UNAVAILABLE,
		KEYSVC_E_INTERNAL, KEYSVC_E_AUDIT_UNAVAILABLE, KEYSVC_E_CONNECT, KEYSVC_E_IO,
		KEYSVC_E_PROTOCOL, KEYSVC_E_NOMEM, KEYSVC_E_INVALID,
	};
	const size_t n = sizeof(codes) / sizeof(codes[0]);

	(void)state;
	/* The numbers are ABI. */
	assert_int_equal(KEYSVC_E_BAD_REQUEST, -1);
	assert_int_equal(KEYSVC_E_INTERNAL, -7);
	assert_int_equal(KEYSVC_E_AUDIT_UNAVAILABLE, -8);
	assert_int_equal(KEYSVC_E_CONNECT, -20);
	assert_int_equal(KEYSVC_E_INVALID, -24);
	for (size_t i = 0; i < n; i++) {
		assert_string_not_equal(keysvc_error_name(codes[i]), "unknown");
		assert_string_not_equal(keysvc_strerror(codes[i]), "unknown error");
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(keysvc_error_name(codes[i]), keysvc_error_name(codes[j]));
	}
	assert_string_equal(keysvc_error_name(KEYSVC_E_DENIED), "denied");
	assert_string_equal(keysvc_error_name(KEYSVC_E_TOKEN_UNAVAILABLE), "token-unavailable");
	assert_string_equal(keysvc_error_name(-99), "unknown");
	assert_string_equal(keysvc_strerror(-99), "unknown error");
	assert_string_equal(keysvc_error_message(NULL), "");
}

/* ---- the keysvc CLI against the fake ---- */

struct cli_result {
	int status;
	char out[8192];
	char err[8192];
};

static void slurp(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "r");
	size_t n = 0;

	if (f != NULL) {
		n = fread(buf, 1, size - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
}

/* Run the CLI with @argv (NULL-terminated, without argv[0]); NULL if it is not built. */
static int run_cli(struct cli_result *res, const char *const *args)
{
	const char *cli = getenv("KS_KEYSVC_CLI");
	char dir[] = "/tmp/keysvc-cli-XXXXXX", out[64], err[64];
	const char *argv[32];
	size_t n = 0;
	pid_t pid;
	int st;

	if (cli == NULL)
		return -1;
	argv[n++] = cli;
	for (; *args != NULL && n < 31; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	assert_non_null(mkdtemp(dir));
	snprintf(out, sizeof(out), "%s/out", dir);
	snprintf(err, sizeof(err), "%s/err", dir);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int nul = open("/dev/null", O_RDONLY);

		if (o < 0 || e < 0 || nul < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0 || dup2(nul, 0) < 0)
			_exit(127);
		unsetenv(KEYSVC_SOCKET_ENV);
		execv(cli, (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	res->status = WEXITSTATUS(st);
	slurp(out, res->out, sizeof(res->out));
	slurp(err, res->err, sizeof(res->err));
	unlink(out);
	unlink(err);
	rmdir(dir);
	return 0;
}

static void test_cli_usage(void **state)
{
	struct cli_result res;
	static const char *const help[] = { "--help", NULL };
	static const char *const csr_help[] = { "csr", "--help", NULL };
	static const char *const unknown[] = { "frobnicate", NULL };
	static const char *const unknown_json[] = { "--json", "frobnicate", NULL };
	static const char *const no_subject[] = { "--socket", "/nonexistent/s", "csr", "k", NULL };
	static const char *const wrong_opt[] = { "pubkey", "k", "--alg", "x", NULL };
	static const char *const no_conn[] = { "--socket", "/nonexistent/s", "list", NULL };

	(void)state;
	if (run_cli(&res, help) != 0)
		skip();
	assert_int_equal(res.status, 0);
	assert_non_null(strstr(res.out, "Exit codes"));
	run_cli(&res, csr_help);
	assert_int_equal(res.status, 0);
	assert_non_null(strstr(res.out, "--subject"));
	run_cli(&res, unknown);
	assert_int_equal(res.status, 2);
	assert_non_null(strstr(res.err, "keysvc: unknown command 'frobnicate' (see keysvc --help)"));
	run_cli(&res, unknown_json);
	assert_int_equal(res.status, 2);
	assert_non_null(strstr(res.out, "{\"error\":\"usage\""));
	/* Checked before connecting: a usage error, not a connection error. */
	run_cli(&res, no_subject);
	assert_int_equal(res.status, 2);
	assert_non_null(strstr(res.err, "keysvc: csr: usage: --subject is required"));
	run_cli(&res, wrong_opt);
	assert_int_equal(res.status, 2);
	run_cli(&res, no_conn);
	assert_int_equal(res.status, 7);
	assert_non_null(strstr(res.err, "keysvc: list: connect: cannot reach keysvcd at /nonexistent/s: "));
}

/* Each wire error gives its documented exit code and the promised messages. */
static void test_cli_errors(void **state)
{
	static const struct {
		const char *error;
		int status;
	} cases[] = {
		{ "bad-request", 2 }, { "denied", 8 }, { "no-such-key", 14 },
		{ "token-unavailable", 5 }, { "exists", 15 }, { "unsupported", 16 }, { "internal", 1 },
		{ "audit-unavailable", 9 }, { "something-new", 1 },
	};
	struct cli_result res;
	char reply[128], want[128];

	(void)state;
	if (getenv("KS_KEYSVC_CLI") == NULL)
		skip();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct step steps[] = {
			{ "{\"op\":\"key.delete\",\"key\":\"k\"}", NULL, REPLY_JSON, reply },
		};
		const char *args[] = { "--socket", NULL, "delete", "k", NULL };

		snprintf(reply, sizeof(reply), "{\"ok\":false,\"error\":\"%s\",\"message\":\"why %zu\"}",
			 cases[i].error, i);
		FAKE(steps);
		args[1] = fk.path;
		run_cli(&res, args);
		fake_stop();
		if (res.status != cases[i].status)
			fail_msg("%s: exit %d, expected %d", cases[i].error, res.status, cases[i].status);
		if (strcmp(cases[i].error, "something-new") == 0)
			snprintf(want, sizeof(want), "keysvc: delete: internal: something-new: why %zu\n", i);
		else
			snprintf(want, sizeof(want), "keysvc: delete: %s: why %zu\n", cases[i].error, i);
		assert_string_equal(res.err, want);
		assert_string_equal(res.out, "");
	}
}

static void test_cli_json_and_files(void **state)
{
	static const struct step steps_pub[] = {
		{ "{\"op\":\"key.public\",\"key\":\"web\"}", NULL, REPLY_JSON,
		  "{\"ok\":true,\"key\":\"web\",\"type\":\"ec-p256\",\"public_key\":\"PEM\\n\"}" },
	};
	static const struct step steps_sign[] = {
		{ "{\"op\":\"sign\",\"key\":\"web\",\"alg\":\"ecdsa-sha256\",\"digest\":\"AAEC/wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}", NULL,
		  REPLY_JSON, "{\"ok\":false,\"error\":\"no-such-key\",\"message\":\"no key web\"}" },
	};
	static const struct step steps_csr[] = {
		{ "{\"op\":\"csr.create\",\"key\":\"web\",\"subject\":\"CN=web\","
		  "\"san\":{\"dns\":[\"a\",\"b\"],\"ip\":[\"::1\"]},"
		  "\"key_usage\":[\"digitalSignature\",\"keyAgreement\"],\"ext_key_usage\":[\"clientAuth\"],"
		  "\"attributes\":[{\"oid\":\"1.2.3\",\"value\":\"v:w\"},"
		  "{\"oid\":\"1.2.4\",\"value\":\"true\",\"type\":\"printable\"}],\"digest\":\"sha256\"}",
		  NULL, REPLY_JSON, "{\"ok\":true,\"key\":\"web\",\"csr\":\"CSR\\n\"}" },
	};
	char dir[] = "/tmp/keysvc-cli-out-XXXXXX", file[128], content[64];
	struct cli_result res;
	struct stat st;
	json_t *o;

	(void)state;
	if (getenv("KS_KEYSVC_CLI") == NULL)
		skip();
	assert_non_null(mkdtemp(dir));
	snprintf(file, sizeof(file), "%s/pub.pem", dir);

	/* --json: one object on one line; --out: the file, mode 0644. */
	FAKE(steps_pub);
	{
		const char *args[] = { "--json", "--socket", fk.path, "pubkey", "web", "--out", file, NULL };

		run_cli(&res, args);
	}
	fake_stop();
	assert_int_equal(res.status, 0);
	o = json_loads(res.out, 0, NULL);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "public_key")), "PEM\n");
	assert_string_equal(json_string_value(json_object_get(o, "type")), "ec-p256");
	json_decref(o);
	assert_non_null(strchr(res.out, '\n'));
	assert_int_equal(strchr(res.out, '\n')[1], '\0');
	assert_int_equal(stat(file, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	slurp(file, content, sizeof(content));
	assert_string_equal(content, "PEM\n");

	/* A failed command leaves an existing output file alone and no temporary behind. */
	FAKE(steps_sign);
	{
		const char *args[] = { "--json", "--socket", fk.path, "sign", "web", "--alg",
				       "ecdsa-sha256", "--digest-hex",
				       "000102fF00000000000000000000000000000000000000000000000000000000",
				       "--out", file, NULL };

		run_cli(&res, args);
	}
	fake_stop();
	assert_int_equal(res.status, 14);
	o = json_loads(res.out, 0, NULL);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "error")), "no-such-key");
	assert_string_equal(json_string_value(json_object_get(o, "message")), "no key web");
	json_decref(o);
	assert_string_equal(res.err, "keysvc: sign: no-such-key: no key web\n");
	slurp(file, content, sizeof(content));
	assert_string_equal(content, "PEM\n");

	/* csr options become the request fields; ":w" is not a type, so it stays in the value. */
	FAKE(steps_csr);
	{
		const char *args[] = { "--socket", fk.path, "csr", "web", "--subject", "CN=web",
				       "--dns", "a", "--dns", "b", "--ip", "::1",
				       "--key-usage", "digitalSignature", "--key-usage", "keyAgreement",
				       "--eku", "clientAuth", "--attr", "1.2.3=v:w",
				       "--attr", "1.2.4=true:printable", "--digest", "sha256", NULL };

		run_cli(&res, args);
	}
	fake_stop();
	assert_int_equal(res.status, 0);
	assert_string_equal(res.out, "CSR\n");

	unlink(file);
	assert_int_equal(rmdir(dir), 0);       /* nothing else was left in it */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_operations),
		cmocka_unit_test(test_purposes),
		cmocka_unit_test(test_hello_health),
		cmocka_unit_test(test_wire_errors),
		cmocka_unit_test(test_wire_error_table),
		cmocka_unit_test(test_error_messages),
		cmocka_unit_test(test_broken_peers),
		cmocka_unit_test(test_refused_connection),
		cmocka_unit_test(test_request_unsent),
		cmocka_unit_test(test_bad_field_types),
		cmocka_unit_test(test_oversized_signature),
		cmocka_unit_test(test_local_errors),
		cmocka_unit_test(test_connect),
		cmocka_unit_test(test_error_names),
		cmocka_unit_test(test_cli_usage),
		cmocka_unit_test(test_cli_errors),
		cmocka_unit_test(test_cli_json_and_files),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
