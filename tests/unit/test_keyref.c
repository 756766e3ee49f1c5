/*
 * Key reference files (clients/provider/keyref.c): what keysvc key-ref
 * writes, the provider's decoder reads back; other DER is "not mine"
 * (-ENOMSG, so OpenSSL's other decoders get it); a reference with a bad
 * field is refused with the field named; no input crashes the reader.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/pem.h>

#include "clients/provider/keyref.h"
#include "proto/wire.h"

/* The DER body of PEM text @pem, which must be a key reference. */
static unsigned char *body(const char *pem, long *len)
{
	char *label = NULL, *header = NULL;
	unsigned char *der = NULL;
	BIO *bio = BIO_new_mem_buf(pem, -1);

	assert_non_null(bio);
	assert_true(PEM_read_bio(bio, &label, &header, &der, len) > 0);
	assert_string_equal(label, KSP_KEYREF_PEM_LABEL);
	OPENSSL_free(label);
	OPENSSL_free(header);
	BIO_free(bio);
	return der;
}

/* A DER reference from its parts, built by hand: @desc, @name, and @socket unless NULL. */
static size_t build(unsigned char *out, const char *desc, const char *name, const char *socket)
{
	size_t n = 2, d = strlen(desc), k = strlen(name), s = socket ? strlen(socket) : 0;

	out[n++] = 0x1a;                /* VisibleString */
	out[n++] = (unsigned char)d;
	memcpy(out + n, desc, d);
	n += d;
	out[n++] = 0x0c;                /* UTF8String */
	out[n++] = (unsigned char)k;
	memcpy(out + n, name, k);
	n += k;
	if (socket != NULL) {
		out[n++] = 0x80;        /* [0] IMPLICIT */
		out[n++] = (unsigned char)s;
		memcpy(out + n, socket, s);
		n += s;
	}
	out[0] = 0x30;
	out[1] = (unsigned char)(n - 2);
	return n;
}

static void test_round_trip(void **state)
{
	struct ksp_keyref ref;
	char *pem = NULL, why[160];
	unsigned char *der;
	long len;

	(void)state;
	assert_int_equal(ksp_keyref_pem("web-1.example_org", NULL, &pem), 0);
	assert_non_null(strstr(pem, "-----BEGIN KEYSVC KEY REFERENCE-----\n"));
	der = body(pem, &len);
	assert_int_equal(ksp_keyref_decode(der, (size_t)len, &ref, why, sizeof(why)), 0);
	assert_string_equal(ref.name, "web-1.example_org");
	assert_string_equal(ref.socket, "");
	OPENSSL_free(der);
	free(pem);

	assert_int_equal(ksp_keyref_pem("k", "/run/keysvc/keysvc.sock", &pem), 0);
	der = body(pem, &len);
	assert_int_equal(ksp_keyref_decode(der, (size_t)len, &ref, why, sizeof(why)), 0);
	assert_string_equal(ref.name, "k");
	assert_string_equal(ref.socket, "/run/keysvc/keysvc.sock");
	OPENSSL_free(der);
	free(pem);
}

static void test_writer_refuses_bad_fields(void **state)
{
	char long_name[KSP_KEYREF_NAME_MAX + 2], long_socket[KSP_KEYREF_SOCKET_MAX + 2];
	char *pem = NULL;

	(void)state;
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	memset(long_socket, 'a', sizeof(long_socket) - 1);
	long_socket[0] = '/';
	long_socket[sizeof(long_socket) - 1] = '\0';
	assert_int_equal(ksp_keyref_pem("", NULL, &pem), -EINVAL);
	assert_int_equal(ksp_keyref_pem(".hidden", NULL, &pem), -EINVAL);
	assert_int_equal(ksp_keyref_pem("-opt", NULL, &pem), -EINVAL);
	assert_int_equal(ksp_keyref_pem("a/b", NULL, &pem), -EINVAL);
	assert_int_equal(ksp_keyref_pem(long_name, NULL, &pem), -EINVAL);
	long_name[KSP_KEYREF_NAME_MAX] = '\0';
	assert_int_equal(ksp_keyref_pem(long_name, NULL, &pem), 0);
	free(pem);
	assert_int_equal(ksp_keyref_pem("k", "relative.sock", &pem), -EINVAL);
	assert_int_equal(ksp_keyref_pem("k", "/run/x\ny", &pem), -EINVAL);
	assert_int_equal(ksp_keyref_pem("k", long_socket, &pem), -EINVAL);
	assert_null(pem);
}

static void test_other_der_is_not_mine(void **state)
{
	static const unsigned char int_der[] = { 0x02, 0x01, 0x05 };
	unsigned char der[400];
	struct ksp_keyref ref;
	char why[160];
	size_t n;

	(void)state;
	assert_int_equal(ksp_keyref_decode(int_der, sizeof(int_der), &ref, why, sizeof(why)), -ENOMSG);
	assert_int_equal(ksp_keyref_decode(der, 0, &ref, why, sizeof(why)), -ENOMSG);
	/* Another description: someone else's structure of the same shape. */
	n = build(der, "pkcs11 key reference", "k", NULL);
	assert_int_equal(ksp_keyref_decode(der, n, &ref, why, sizeof(why)), -ENOMSG);
	/* Trailing bytes after the reference. */
	n = build(der, KSP_KEYREF_DESCRIPTION, "k", NULL);
	der[n] = 0;
	assert_int_equal(ksp_keyref_decode(der, n + 1, &ref, why, sizeof(why)), -ENOMSG);
	assert_int_equal(ksp_keyref_decode(der, n, &ref, why, sizeof(why)), 0);
	/* Larger than any reference: not read at all. */
	assert_int_equal(ksp_keyref_decode(der, KSP_KEYREF_DER_MAX + 1, &ref, why, sizeof(why)), -ENOMSG);
}

static void test_bad_fields_named(void **state)
{
	unsigned char der[400];
	struct ksp_keyref ref;
	char why[160];
	size_t n;

	(void)state;
	n = build(der, KSP_KEYREF_DESCRIPTION, "../etc/passwd", NULL);
	assert_int_equal(ksp_keyref_decode(der, n, &ref, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "key name"));
	assert_string_equal(ref.name, "");
	n = build(der, KSP_KEYREF_DESCRIPTION, "k", "relative.sock");
	assert_int_equal(ksp_keyref_decode(der, n, &ref, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "socket"));
	/* A NUL inside the name would cut it short into another name. */
	n = build(der, KSP_KEYREF_DESCRIPTION, "kX", NULL);
	der[n - 1] = '\0';
	assert_int_equal(ksp_keyref_decode(der, n, &ref, why, sizeof(why)), -EINVAL);
}

/* Every truncation and every byte changed to every value: an answer, never a crash or a read past the end. */
static void test_mutations(void **state)
{
	unsigned char der[400], copy[400];
	struct ksp_keyref ref;
	char why[160];
	size_t n;
	int r;

	(void)state;
	n = build(der, KSP_KEYREF_DESCRIPTION, "web", "/run/keysvc/keysvc.sock");
	for (size_t cut = 0; cut < n; cut++) {
		unsigned char *exact = malloc(cut ? cut : 1);

		assert_non_null(exact);
		memcpy(exact, der, cut);
		assert_int_not_equal(ksp_keyref_decode(exact, cut, &ref, why, sizeof(why)), 0);
		free(exact);
	}
	for (size_t i = 0; i < n; i++) {
		for (int v = 0; v < 256; v++) {
			memcpy(copy, der, n);
			copy[i] = (unsigned char)v;
			r = ksp_keyref_decode(copy, n, &ref, why, sizeof(why));
			assert_true(r == 0 || r == -ENOMSG || r == -EINVAL);
			if (r == 0) {
				assert_true(ks_key_name_valid(ref.name));
				assert_true(ref.socket[0] == '\0' || ref.socket[0] == '/');
			}
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_writer_refuses_bad_fields),
		cmocka_unit_test(test_other_der_is_not_mine),
		cmocka_unit_test(test_bad_fields_named),
		cmocka_unit_test(test_mutations),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
