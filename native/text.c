/*
 * UTF-8 and JSON string text for tapgate-helper: decoding, quoting and the character classes
 * that the Node build gets from V8, so that both builds print and reject the same things.
 */

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "text.h"

/* The pairs of a JSON short escape: the byte, then the letter after the backslash. */
static const char short_escapes[][2] = {
	{ '"', '"' }, { '\\', '\\' }, { '\b', 'b' }, { '\f', 'f' }, { '\n', 'n' }, { '\r', 'r' }, { '\t', 't' },
};

/* Returns the letter that escapes byte `c` in JSON, or 0 when it has no short escape. */
char escape_letter(char c)
{
	for (size_t i = 0; i < sizeof(short_escapes) / sizeof(short_escapes[0]); i++)
		if (short_escapes[i][0] == c)
			return short_escapes[i][1];
	return 0;
}

/* Returns the byte that the escape letter `letter` stands for, or 0 when it is not one. */
char escaped_byte(char letter)
{
	if (letter == '/')
		return '/';
	for (size_t i = 0; i < sizeof(short_escapes) / sizeof(short_escapes[0]); i++)
		if (short_escapes[i][1] == letter)
			return short_escapes[i][0];
	return 0;
}

/*
 * Returns the length of the UTF-8 sequence at `s` (of `available` bytes) and stores its code
 * point in `*point`, or returns 0 when it is not valid UTF-8. Then `*invalid` is the length of
 * its maximal invalid prefix, which the WHATWG Encoding Standard's decoder (Node's
 * Buffer.toString() among them) replaces with one U+FFFD before it reads the next byte.
 */
size_t utf8_sequence(const unsigned char *s, size_t available, uint32_t *point, size_t *invalid)
{
	unsigned char low = 0x80, high = 0xbf;
	size_t length;

	*invalid = 1;
	if (s[0] < 0x80) {
		*point = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		length = 2;
		*point = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		length = 3;
		*point = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		length = 4;
		*point = s[0] & 0x07;
	} else {
		return 0;
	}
	/* These bounds on the second byte exclude overlong forms, surrogates and points past U+10FFFF. */
	if (s[0] == 0xe0)
		low = 0xa0;
	else if (s[0] == 0xed)
		high = 0x9f;
	else if (s[0] == 0xf0)
		low = 0x90;
	else if (s[0] == 0xf4)
		high = 0x8f;
	for (size_t i = 1; i < length; i++) {
		if (i >= available || s[i] < low || s[i] > high) {
			*invalid = i;
			return 0;
		}
		*point = *point << 6 | (s[i] & 0x3f);
		low = 0x80;
		high = 0xbf;
	}
	return length;
}

/*
 * Returns `value` as JSON.stringify() writes it once Node has decoded it from argv: quoted,
 * with quotes, backslashes and control bytes escaped and invalid UTF-8 as U+FFFD. The result
 * is malloc'd; NULL when memory runs out.
 */
char *json_quote(const char *value)
{
	size_t bytes = strlen(value);
	/* "\u00XX" for one byte is the longest form, and U+FFFD takes 3 bytes for at least one. */
	char *out = malloc(bytes * 6 + 3);
	size_t length = 0;

	if (!out)
		return NULL;
	out[length++] = '"';
	for (const unsigned char *c = (const unsigned char *)value; *c;) {
		uint32_t point;
		size_t invalid;
		size_t size = utf8_sequence(c, bytes - (size_t)((const char *)c - value), &point, &invalid);
		char letter = escape_letter((char)*c);

		if (size == 0) {
			memcpy(out + length, REPLACEMENT_CHARACTER, 3);
			length += 3;
			c += invalid;
			continue;
		}
		if (letter) {
			out[length++] = '\\';
			out[length++] = letter;
		} else if (*c < 0x20) {
			length += (size_t)sprintf(out + length, "\\u%04x", *c);
		} else {
			memcpy(out + length, c, size);
			length += size;
		}
		c += size;
	}
	out[length++] = '"';
	out[length] = '\0';
	return out;
}

/*
 * Returns whether JavaScript's \s matches `point`: the ECMAScript WhiteSpace and
 * LineTerminator code points, with Unicode's Zs category as of Unicode 15.
 */
bool is_javascript_space(uint32_t point)
{
	switch (point) {
	case '\t': case '\n': case '\v': case '\f': case '\r': case ' ':
	case 0xa0: case 0x1680: case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000: case 0xfeff:
		return true;
	}
	return point >= 0x2000 && point <= 0x200a;
}

/*
 * Appends `size` bytes to a decoded string. `*length` counts every byte, but bytes are stored
 * only while they fit in `capacity` with room for a NUL.
 */
void utf8_append(char *out, size_t capacity, size_t *length, const char *bytes, size_t size)
{
	if (out && *length + size < capacity)
		memcpy(out + *length, bytes, size);
	*length += size;
}

/* Appends code point `point` as UTF-8. */
void utf8_append_point(char *out, size_t capacity, size_t *length, uint32_t point)
{
	char bytes[4];
	size_t size;

	if (point < 0x80) {
		bytes[0] = (char)point;
		size = 1;
	} else if (point < 0x800) {
		bytes[0] = (char)(0xc0 | point >> 6);
		bytes[1] = (char)(0x80 | (point & 0x3f));
		size = 2;
	} else if (point < 0x10000) {
		bytes[0] = (char)(0xe0 | point >> 12);
		bytes[1] = (char)(0x80 | (point >> 6 & 0x3f));
		bytes[2] = (char)(0x80 | (point & 0x3f));
		size = 3;
	} else {
		bytes[0] = (char)(0xf0 | point >> 18);
		bytes[1] = (char)(0x80 | (point >> 12 & 0x3f));
		bytes[2] = (char)(0x80 | (point >> 6 & 0x3f));
		bytes[3] = (char)(0x80 | (point & 0x3f));
		size = 4;
	}
	utf8_append(out, capacity, length, bytes, size);
}
