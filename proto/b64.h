/* Standard base64 with padding (RFC 4648 section 4), strict decoding. */
#ifndef KEYSVC_PROTO_B64_H
#define KEYSVC_PROTO_B64_H

#include <stddef.h>
#include <stdint.h>

/*
 * Encode @len bytes into a NUL-terminated string in *@out (caller frees).
 * Returns 0 or -ENOMEM.
 */
int ks_b64_encode(const uint8_t *in, size_t len, char **out);

/*
 * Decode @in (exactly @in_len characters, no whitespace, correct padding,
 * the bits the padding discards zero: only the canonical encoding, RFC 4648
 * section 3.5) into *@out (caller frees), at most @max bytes. Returns 0,
 * -EINVAL for malformed input, -EMSGSIZE if the result would exceed @max,
 * -ENOMEM.
 */
int ks_b64_decode(const char *in, size_t in_len, size_t max, uint8_t **out,
		  size_t *out_len);

#endif
