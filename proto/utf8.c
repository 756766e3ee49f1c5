#include "proto/utf8.h"

#include <stdint.h>
#include <string.h>

/*
 * A complete, shortest-form encoding of a Unicode scalar value: the rules
 * jansson applies before it accepts a string.
 */
size_t ks_utf8_char_len(const void *p, size_t n)
{
	const unsigned char *s = p;
	size_t len, i;
	uint32_t cp;

	if (n == 0)
		return 0;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

int ks_utf8_valid(const void *p, size_t len)
{
	const unsigned char *s = p;
	size_t i = 0, n;

	while (i < len) {
		if ((n = ks_utf8_char_len(s + i, len - i)) == 0)
			return 0;
		i += n;
	}
	return 1;
}

/*
 * How many bytes of the client's string @s to quote in a message: all of
 * it up to @max bytes, else the longest prefix that ends on a character
 * boundary, so that a cut never leaves half a character behind. @s comes
 * from jansson and is valid UTF-8.
 */
int ks_utf8_prefix(const char *s, size_t max)
{
	size_t n = strnlen(s, max);

	if (n == max)
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	return (int)n;
}

/*
 * Make @s valid UTF-8 in place: a sequence cut off by the end of the
 * buffer is dropped, any other invalid byte becomes '?'. The message goes
 * into a JSON string, which jansson refuses to build from invalid UTF-8.
 */
void ks_utf8_sanitize(char *s)
{
	size_t n = strlen(s), i = 0, len;

	while (i < n) {
		len = ks_utf8_char_len(s + i, n - i);
		if (len > 0) {
			i += len;
			continue;
		}
		/* A lead byte whose continuation bytes run to the end: cut there. */
		len = 1;
		while (i + len < n && ((unsigned char)s[i + len] & 0xc0) == 0x80)
			len++;
		if (i + len == n && ((unsigned char)s[i] & 0xc0) == 0xc0 && len < 4) {
			s[i] = '\0';
			return;
		}
		s[i++] = '?';
	}
}

void ks_utf8_mark_cut(char *buf, size_t len)
{
	static const char ellipsis[] = "\xe2\x80\xa6";
	size_t end;

	if (buf == NULL || len < 2 * sizeof(ellipsis))
		return;
	end = strnlen(buf, len - 1);
	if (end > len - sizeof(ellipsis))
		end = len - sizeof(ellipsis);
	/* Cut at a space: keep the words before it whole. */
	if (buf[end] != ' ')
		while (end > 0 && buf[end - 1] != ' ')
			end--;
	while (end > 0 && buf[end - 1] == ' ')
		end--;
	if (end == 0)
		end = (size_t)ks_utf8_prefix(buf, len - sizeof(ellipsis));
	memcpy(buf + end, ellipsis, sizeof(ellipsis));
}
