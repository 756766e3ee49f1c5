/*
 * libFuzzer target for the signature input checks and the purpose lists
 * (proto/sigform.c), which keysvcd runs on client bytes before it hashes
 * them.
 *
 * Input: one byte whose low four bits are a set of purposes, then the
 * message. Every purpose's check runs on the message; what each accepts
 * must have the shape its contract promises (below), a refusal always
 * comes with a message, and ks_sigform_match() over the set agrees with
 * the single checks. The message is also parsed as a purpose list, and a
 * list that parses formats back to itself in canonical order.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "proto/sigform.h"
#include "proto/utf8.h"
#include "proto/wire.h"
#include "tests/fuzz/fuzz.h"

static const unsigned all[] = {
	KS_PURPOSE_CSR, KS_PURPOSE_TLS, KS_PURPOSE_HTTP_SIGNATURE, KS_PURPOSE_SIGN,
};

/* The three forms of a tls input by their fixed bytes and lengths alone. */
static int tls_shaped(const uint8_t *m, size_t len)
{
	static const size_t ecdh_points[] = { 65, 97, 133, 129, 32, 56 };

	if (len == 64 + 34 + 32 || len == 64 + 34 + 48)
		if (m[0] == 0x20 && m[64 + 33] == 0)
			return 1;
	if (len >= 6 && m[0] == 1 && m[4] == 3 && m[5] == 3)
		return 1;
	for (size_t i = 0; i < sizeof(ecdh_points) / sizeof(ecdh_points[0]); i++)
		if (len == 64 + 4 + ecdh_points[i] && m[64] == 3 && m[64 + 3] == ecdh_points[i])
			return 1;
	return 0;
}

static void check_list(const uint8_t *data, size_t size)
{
	char text[80], back[KS_PURPOSES_TEXT_MAX];
	const char *why = NULL;
	unsigned set = 0, again = 0;
	int n;

	if (size >= sizeof(text))
		size = sizeof(text) - 1;
	memcpy(text, data, size);
	text[size] = '\0';
	if (ks_purposes_parse(text, &set, &why) != 0) {
		CHECK(why != NULL);
		return;
	}
	CHECK(ks_purposes_valid(set));
	n = ks_purposes_format(set, back, sizeof(back));
	CHECK(n > 0 && (size_t)n == strlen(back));
	CHECK(ks_purposes_parse(back, &again, &why) == 0 && again == set);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *m;
	unsigned allowed, matched = 0, any = 0;
	const char *why;
	size_t len;
	int r;

	if (size == 0)
		return 0;
	check_list(data, size);
	allowed = data[0] & KS_PURPOSE_ALL;
	m = data + 1;
	len = size - 1;
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		why = NULL;
		r = ks_sigform_check(all[i], m, len, &why);
		CHECK(r == 0 || (r == -EPERM && why != NULL && ks_utf8_valid(why, strlen(why))));
		if (len > KS_SIGN_DATA_MAX)
			CHECK(r == -EPERM);
		if (all[i] == KS_PURPOSE_CSR)
			CHECK(r == -EPERM);
		if (all[i] == KS_PURPOSE_SIGN && len <= KS_SIGN_DATA_MAX)
			CHECK(r == 0);
		if (r == 0 && all[i] == KS_PURPOSE_TLS)
			CHECK(tls_shaped(m, len));
		if (r == 0 && all[i] == KS_PURPOSE_HTTP_SIGNATURE)
			CHECK(ks_utf8_valid(m, len) && memchr(m, '\r', len) == NULL &&
			      m[len - 1] != '\n' && (len < 6 || memmem(m, len, "host: ", 6) != NULL));
		if (r == 0 && (allowed & all[i]))
			any = 1;
	}
	why = NULL;
	r = ks_sigform_match(allowed, m, len, &matched, &why);
	CHECK(r == 0 ? any && (allowed & matched) && ks_purpose_name(matched) != NULL
		     : r == -EPERM && !any && why != NULL);
	return 0;
}
