#include "proto/b64.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "proto/secmem.h"

/*
 * OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock do the arithmetic; the strict
 * checks around them are ours because EVP_DecodeBlock accepts surrounding
 * whitespace and reports padding only indirectly.
 */

int ks_b64_encode(const uint8_t *in, size_t len, char **out)
{
	size_t olen;
	char *s;

	if (len > (size_t)INT32_MAX / 2)
		return -EMSGSIZE;
	olen = 4 * ((len + 2) / 3);
	s = malloc(olen + 1);
	if (s == NULL)
		return -ENOMEM;
	EVP_EncodeBlock((unsigned char *)s, in, (int)len);
	s[olen] = '\0';
	*out = s;
	return 0;
}

/* The 6-bit value of a base64 character, or -1. */
static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int ks_b64_decode(const char *in, size_t in_len, size_t max, uint8_t **out,
		  size_t *out_len)
{
	size_t pad = 0, n;
	uint8_t *buf;
	int dec;

	*out = NULL;
	*out_len = 0;
	if (in_len % 4 != 0)
		return -EINVAL;
	if (in_len == 0) {
		/* An empty value decodes to zero bytes; callers decide if that is allowed. */
		buf = malloc(1);
		if (buf == NULL)
			return -ENOMEM;
		*out = buf;
		return 0;
	}
	if (in[in_len - 1] == '=')
		pad++;
	if (in[in_len - 2] == '=')
		pad++;
	for (size_t i = 0; i < in_len - pad; i++)
		if (b64_value((unsigned char)in[i]) < 0)
			return -EINVAL;
	if (pad == 1 && in[in_len - 2] == '=')
		return -EINVAL;
	/*
	 * The last character before the padding carries bits that decode to
	 * nothing (4 with "==", 2 with "="). RFC 4648 section 3.5: they must
	 * be zero, or "QQ==" and "QR==" would both be "A" and one value
	 * would have several encodings.
	 */
	if (pad > 0 && (b64_value((unsigned char)in[in_len - pad - 1]) &
			(pad == 2 ? 0x0f : 0x03)) != 0)
		return -EINVAL;
	n = in_len / 4 * 3 - pad;
	if (n > max)
		return -EMSGSIZE;
	if (in_len > (size_t)INT32_MAX)
		return -EMSGSIZE;
	buf = malloc(in_len / 4 * 3 + 1);
	if (buf == NULL)
		return -ENOMEM;
	dec = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)in_len);
	if (dec < 0 || (size_t)dec != in_len / 4 * 3) {
		ks_freezero(buf, in_len / 4 * 3 + 1);
		return -EINVAL;
	}
	*out = buf;
	*out_len = n;
	return 0;
}
