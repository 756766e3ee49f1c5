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

#endif
