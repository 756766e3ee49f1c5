/*
 * libkeysvc against a scripted fake daemon: request encoding, response
 * decoding, error mapping, and what a broken or lying peer does to a handle.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "clients/keysvc.h"
#include "proto/frame.h"

/* What the fake daemon does with each request. */
enum reply_kind {
	REPLY_JSON,          /* answer @reply with the request's id filled in */
	REPLY_RAW,           /* send @reply bytes as they are (a frame body) */
	REPLY_BAD_ID,        /* answer with another id */
	REPLY_OVERSIZE,      /* a header announcing 65537 bytes */
	REPLY_TRUNCATE,      /* half a frame, then close */
};

struct step {
	const char *expect_op;
	const char *expect_field;     /* a field the request must carry, or NULL */
	const char *expect_value;     /* its string value, or NULL for "present" */
	enum reply_kind kind;
	const char *reply;
};

struct fake {
	char path[108];
	int listen_fd;
	const struct step *steps;
	size_t nsteps;
	int failures;
	pthread_t thread;
};

static struct fake fk;

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	struct ks_buf body;
	int fd = accept(f->listen_fd, NULL, NULL);

	ks_buf_init(&body, KS_FRAME_MAX);
	for (size_t i = 0; fd >= 0 && i < f->nsteps; i++) {
		const struct step *s = &f->steps[i];
		json_t *req, *resp;
		char *out;
		uint8_t hdr[4];

		if (ks_frame_read(fd, &body, 5000) != 0)
			break;
		req = json_loadb((const char *)body.data, body.len, JSON_REJECT_DUPLICATES, NULL);
		if (req == NULL ||
		    strcmp(json_string_value(json_object_get(req, "op")), s->expect_op) != 0 ||
		    (s->expect_field != NULL && json_object_get(req, s->expect_field) == NULL) ||
		    (s->expect_value != NULL &&
		     strcmp(json_string_value(json_object_get(req, s->expect_field)), s->expect_value) != 0)) {
			fprintf(stderr, "fake: step %zu: unexpected request %.*s\n", i, (int)body.len,
				(const char *)body.data);
			f->failures++;
		}
		switch (s->kind) {
		case REPLY_JSON:
		case REPLY_BAD_ID:
			resp = json_loads(s->reply, 0, NULL);
			if (s->kind == REPLY_JSON)
				json_object_set(resp, "id", json_object_get(req, "id"));
			else
				json_object_set_new(resp, "id", json_integer(999999));
			out = json_dumps(resp, JSON_COMPACT);
			ks_frame_write(fd, out, strlen(out), 5000);
			free(out);
			json_decref(resp);
			break;
		case REPLY_RAW:
			ks_frame_write(fd, s->reply, strlen(s->reply), 5000);
			break;
		case REPLY_OVERSIZE:
			ks_frame_header_encode(hdr, 16);
			hdr[1] = 1;
			send(fd, hdr, 4, MSG_NOSIGNAL);
			break;
		case REPLY_TRUNCATE:
			send(fd, "\0\0\0\x20{\"id\"", 9, MSG_NOSIGNAL);
			shutdown(fd, SHUT_RDWR);
			break;
		}
		json_decref(req);
	}
	ks_buf_free(&body);
	if (fd >= 0)
		close(fd);
	return NULL;
}

static void fake_start(const struct step *steps, size_t n)
{
	struct sockaddr_un sun;
	char dir[] = "/tmp/keysvc-fake-XXXXXX";

	memset(&fk, 0, sizeof(fk));
	assert_non_null(mkdtemp(dir));
	snprintf(fk.path, sizeof(fk.path), "%s/s", dir);
	fk.steps = steps;
	fk.nsteps = n;
	fk.listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, fk.path, strlen(fk.path));
	assert_int_equal(bind(fk.listen_fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(fk.listen_fd, 1), 0);
	assert_int_equal(pthread_create(&fk.thread, NULL, fake_main, &fk), 0);
}

static void fake_stop(void)
{
	char *slash;

	pthread_join(fk.thread, NULL);
	close(fk.listen_fd);
	unlink(fk.path);
	slash = strrchr(fk.path, '/');
	*slash = '\0';
	rmdir(fk.path);
	assert_int_equal(fk.failures, 0);
}

#define FAKE(steps) fake_start(steps, sizeof(steps) / sizeof(steps[0]))

static void test_operations(void **state)
{
	static const struct step steps[] = {
		{ "hello", "versions", NULL, REPLY_JSON,
		  "{\"ok\":true,\"version\":1,\"server\":\"keysvcd 9\",\"health\":\"ok\","
		  "\"token\":{\"label\":\"L\",\"manufacturer\":\"M\",\"model\":\"X\",\"serial\":\"S\"},"
		  "\"future_field\":[1,2]}" },
		{ "key.generate", "type", "ec-p384", REPLY_JSON,
		  "{\"ok\":true,\"key\":\"k\",\"type\":\"ec-p384\",\"public_key\":\"PEM\"}" },
		{ "key.list", NULL, NULL, REPLY_JSON,
		  "{\"ok\":true,\"keys\":[{\"key\":\"a\",\"type\":\"rsa-2048\",\"has_cert\":true},"
		  "{\"key\":\"b\",\"type\":null,\"has_cert\":false}]}" },
		{ "csr.create", "subject", "CN=x", REPLY_JSON, "{\"ok\":true,\"key\":\"k\",\"csr\":\"CSR\"}" },
		{ "sign", "digest", "AAECAw==", REPLY_JSON,
		  "{\"ok\":true,\"key\":\"k\",\"alg\":\"ecdsa-sha256\",\"signature\":\"AQID\"}" },
		{ "sign", "data", "aGk=", REPLY_JSON,
		  "{\"ok\":true,\"key\":\"k\",\"alg\":\"ecdsa-sha256\",\"signature\":\"AQID\"}" },
		{ "cert.put", "cert", "CERT", REPLY_JSON, "{\"ok\":true,\"key\":\"k\"}" },
		{ "cert.get", "key", "k", REPLY_JSON, "{\"ok\":true,\"key\":\"k\",\"cert\":\"CERT\"}" },
		{ "key.delete", "key", "k", REPLY_JSON, "{\"ok\":true,\"key\":\"k\"}" },
	};
	static const char *const dns[] = { "a.example" };
	struct keysvc_csr_params p = { .subject = "CN=x", .dns = dns, .n_dns = 1 };
	struct keysvc_hello *h = NULL;
	struct keysvc_key *keys = NULL;
	size_t n = 0, sig_len = 0;
	uint8_t *sig = NULL;
	char *s = NULL;
	keysvc *ks = NULL;

	(void)state;
	FAKE(steps);
	assert_int_equal(keysvc_connect(fk.path, &ks), KEYSVC_OK);
	assert_int_equal(keysvc_hello(ks, &h), KEYSVC_OK);
	assert_int_equal(h->version, 1);
	assert_string_equal(h->server, "keysvcd 9");
	assert_string_equal(h->token_serial, "S");
	assert_int_equal(h->token_up, 1);
	keysvc_hello_free(h);
	assert_int_equal(keysvc_key_generate(ks, "k", "ec-p384", &s), KEYSVC_OK);
	assert_string_equal(s, "PEM");
	free(s);
	assert_int_equal(keysvc_key_list(ks, &keys, &n), KEYSVC_OK);
	assert_int_equal(n, 2);
	assert_string_equal(keys[0].name, "a");
	assert_string_equal(keys[0].type, "rsa-2048");
	assert_int_equal(keys[0].has_cert, 1);
	assert_null(keys[1].type);
	keysvc_key_list_free(keys, n);
	assert_int_equal(keysvc_csr_create(ks, "k", &p, &s), KEYSVC_OK);
	assert_string_equal(s, "CSR");
	free(s);
	assert_int_equal(keysvc_sign_digest(ks, "k", "ecdsa-sha256", (const uint8_t *)"\0\1\2\3", 4,
					    &sig, &sig_len), KEYSVC_OK);
	assert_int_equal(sig_len, 3);
	assert_memory_equal(sig, "\1\2\3", 3);
	free(sig);
	assert_int_equal(keysvc_sign_data(ks, "k", "ecdsa-sha256", (const uint8_t *)"hi", 2, &sig,
					  &sig_len), KEYSVC_OK);
	free(sig);
	assert_int_equal(keysvc_cert_put(ks, "k", "CERT"), KEYSVC_OK);
	assert_int_equal(keysvc_cert_get(ks, "k", &s), KEYSVC_OK);
	assert_string_equal(s, "CERT");
	free(s);
	assert_int_equal(keysvc_key_delete(ks, "k"), KEYSVC_OK);
	keysvc_close(ks);
	fake_stop();
}

static void test_wire_errors(void **state)
{
	static const struct step steps[] = {
		{ "key.public", NULL, NULL, REPLY_JSON, "{\"ok\":false,\"error\":\"bad-request\",\"message\":\"m1\"}" },
		{ "key.public", NULL, NULL, REPLY_JSON, "{\"ok\":false,\"error\":\"denied\",\"message\":\"m2\"}" },
		{ "key.public", NULL, NULL, REPLY_JSON, "{\"ok\":false,\"error\":\"no-such-key\",\"message\":\"m3\"}" },
		{ "key.public", NULL, NULL, REPLY_JSON, "{\"ok\":false,\"error\":\"exists\",\"message\":\"m4\"}" },
		{ "key.public", NULL, NULL, REPLY_JSON, "{\"ok\":false,\"error\":\"unsupported\",\"message\":\"m5\"}" },
		{ "key.public", NULL, NULL, REPLY_JSON, "{\"ok\":false,\"error\":\"token-unavailable\",\"message\":\"m6\"}" },
		{ "key.public", NULL, NULL, REPLY_JSON, "{\"ok\":false,\"error\":\"internal\",\"message\":\"m7\"}" },
		{ "key.public", NULL, NULL, REPLY_JSON, "{\"ok\":false,\"error\":\"brand-new\",\"message\":\"m8\"}" },
		{ "key.public", NULL, NULL, REPLY_JSON, "{\"ok\":true,\"key\":\"k\",\"public_key\":\"P\"}" },
	};
	static const int codes[] = {
		KEYSVC_E_BAD_REQUEST, KEYSVC_E_DENIED, KEYSVC_E_NO_SUCH_KEY, KEYSVC_E_EXISTS,
		KEYSVC_E_UNSUPPORTED, KEYSVC_E_TOKEN_UNAVAILABLE, KEYSVC_E_INTERNAL, KEYSVC_E_INTERNAL,
	};
	char *pem = NULL, want[8];
	keysvc *ks = NULL;

	(void)state;
	FAKE(steps);
	assert_int_equal(keysvc_connect(fk.path, &ks), KEYSVC_OK);
	for (size_t i = 0; i < 8; i++) {
		assert_int_equal(keysvc_key_public(ks, "k", &pem, NULL), codes[i]);
		assert_null(pem);
		snprintf(want, sizeof(want), "m%zu", i + 1);
		assert_non_null(strstr(keysvc_error_message(ks), want));
	}
	assert_non_null(strstr(keysvc_error_message(ks), "brand-new"));
	/* Named errors leave the handle usable. */
	assert_int_equal(keysvc_key_public(ks, "k", &pem, NULL), KEYSVC_OK);
	free(pem);
	keysvc_close(ks);
	fake_stop();
}

static void run_broken(enum reply_kind kind, const char *reply, int expect)
{
	const struct step steps[] = { { "key.delete", NULL, NULL, kind, reply } };
	keysvc *ks = NULL;

	FAKE(steps);
	assert_int_equal(keysvc_connect(fk.path, &ks), KEYSVC_OK);
	assert_int_equal(keysvc_key_delete(ks, "k"), expect);
	fake_stop();
	/* Broken for good: no further traffic on that socket. */
	assert_int_equal(keysvc_key_delete(ks, "k"), KEYSVC_E_IO);
	keysvc_close(ks);
}

static void test_broken_peers(void **state)
{
	(void)state;
	run_broken(REPLY_BAD_ID, "{\"ok\":true,\"key\":\"k\"}", KEYSVC_E_PROTOCOL);
	run_broken(REPLY_OVERSIZE, NULL, KEYSVC_E_PROTOCOL);
	run_broken(REPLY_TRUNCATE, NULL, KEYSVC_E_IO);
	run_broken(REPLY_RAW, "not json", KEYSVC_E_PROTOCOL);
	run_broken(REPLY_JSON, "{\"ok\":\"yes\"}", KEYSVC_E_PROTOCOL);
	run_broken(REPLY_JSON, "{\"ok\":false}", KEYSVC_E_PROTOCOL);
}

static void test_bad_field_types(void **state)
{
	static const struct step steps[] = {
		{ "key.public", NULL, NULL, REPLY_JSON, "{\"ok\":true,\"key\":\"k\",\"public_key\":7}" },
	};
	char *pem = NULL;
	keysvc *ks = NULL;

	(void)state;
	FAKE(steps);
	assert_int_equal(keysvc_connect(fk.path, &ks), KEYSVC_OK);
	assert_int_equal(keysvc_key_public(ks, "k", &pem, NULL), KEYSVC_E_PROTOCOL);
	assert_null(pem);
	keysvc_close(ks);
	fake_stop();
}

static void test_local_errors(void **state)
{
	keysvc *ks = NULL;
	uint8_t *big = calloc(1, 70000), *sig = NULL;
	size_t sig_len = 0;
	static const struct step steps[] = {
		{ "key.delete", NULL, NULL, REPLY_JSON, "{\"ok\":true,\"key\":\"k\"}" },
	};

	(void)state;
	assert_int_equal(keysvc_connect("/nonexistent/keysvc.sock", &ks), KEYSVC_E_CONNECT);
	assert_null(ks);
	FAKE(steps);
	assert_int_equal(keysvc_connect(fk.path, &ks), KEYSVC_OK);
	/* Refused locally, before anything is sent; the handle stays good. */
	assert_int_equal(keysvc_sign_data(ks, "k", "ecdsa-sha256", big, 70000, &sig, &sig_len),
			 KEYSVC_E_INVALID);
	assert_int_equal(keysvc_key_delete(ks, NULL), KEYSVC_E_INVALID);
	assert_int_equal(keysvc_key_delete(ks, "k"), KEYSVC_OK);
	keysvc_close(ks);
	fake_stop();
	free(big);
	assert_string_equal(keysvc_strerror(KEYSVC_E_DENIED), "denied");
	assert_string_equal(keysvc_strerror(KEYSVC_E_TOKEN_UNAVAILABLE), "token-unavailable");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_operations),
		cmocka_unit_test(test_wire_errors),
		cmocka_unit_test(test_broken_peers),
		cmocka_unit_test(test_bad_field_types),
		cmocka_unit_test(test_local_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
