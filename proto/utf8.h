/*
 * UTF-8 as jansson accepts it (complete, shortest-form sequences of
 * Unicode scalar values): for text that goes into a JSON string but may
 * not be valid UTF-8, such as a client's string cut to a length or a
 * token's label.
 */
#ifndef KEYSVC_PROTO_UTF8_H
#define KEYSVC_PROTO_UTF8_H

#include <stddef.h>

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
