/*
 * UTF-8 as jansson accepts it (complete, shortest-form sequences of
 * Unicode scalar values): for text that goes into a JSON string but may
 * not be valid UTF-8, such as a client's string cut to a length or a
 * token's label. The one UTF-8 validator of the tree: the CSR's subject
 * and attribute values, libkeysvc's request strings and the Prometheus
 * escaping of `keysvc status` check with it too.
 *
 * Strict: no overlong forms (C0 AF, E0 80 AF, ...), no UTF-16 surrogates
 * (U+D800..U+DFFF), nothing past U+10FFFF, no 5- or 6-byte forms, no
 * sequence cut short. Noncharacters (U+FFFE, U+FFFF) and control
 * characters are valid UTF-8 and pass: a caller that refuses them says so.
 */
#ifndef KEYSVC_PROTO_UTF8_H
#define KEYSVC_PROTO_UTF8_H

#include <stddef.h>

/*
 * Length (1..4) of the valid UTF-8 sequence at the start of @s, of which
 * @n bytes may be read; 0 if it is not one (or @n is 0).
 */
size_t ks_utf8_char_len(const void *s, size_t n);

/* 1 if the @len bytes at @s are all valid UTF-8 (a NUL byte is U+0000 and valid), else 0. */
int ks_utf8_valid(const void *s, size_t len);

/*
 * How many bytes of the valid UTF-8 string @s to keep for at most @max:
 * all of it up to @max bytes, else the longest prefix that ends on a
 * character boundary. For "%.*s".
 */
int ks_utf8_prefix(const char *s, size_t max);

/*
 * Make the NUL-terminated @s valid UTF-8 in place: a sequence cut off by
 * the end is dropped, any other invalid byte becomes '?'.
 */
void ks_utf8_sanitize(char *s);

/*
 * @buf (@len bytes, NUL-terminated) holds the start of a longer text that
 * did not fit: end it after its last whole word followed by "…" (U+2026),
 * so that a reader sees a cut rather than a shorter word (a key name cut
 * short names another key). A single word longer than @buf is cut at a
 * character boundary before the "…". Nothing is done when @len < 8.
 */
void ks_utf8_mark_cut(char *buf, size_t len);

#endif
