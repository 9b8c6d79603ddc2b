/*
 * A small JSON reader for the daemon's replies: strict about the grammar, as JSON.parse() is,
 * and recursive with a depth bound. Callers walk objects with json_read_object() and pick the
 * fields they need; everything else is skipped.
 */

#include <string.h>

#include "json.h"
#include "text.h"

void json_skip_space(struct json *json)
{
	while (json->at < json->end && (*json->at == ' ' || *json->at == '\t' || *json->at == '\n' || *json->at == '\r'))
		json->at++;
}

bool json_take(struct json *json, char expected)
{
	json_skip_space(json);
	if (json->at < json->end && *json->at == expected) {
		json->at++;
		return true;
	}
	return false;
}

/* Consumes `literal` when the text continues with it. */
bool json_take_literal(struct json *json, const char *literal)
{
	size_t length = strlen(literal);

	if ((size_t)(json->end - json->at) < length || memcmp(json->at, literal, length) != 0)
		return false;
	json->at += length;
	return true;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool read_hex4(struct json *json, uint32_t *value)
{
	*value = 0;
	if (json->end - json->at < 4)
		return false;
	for (int i = 0; i < 4; i++) {
		int digit = hex_value(*json->at++);

		if (digit < 0)
			return false;
		*value = *value << 4 | (uint32_t)digit;
	}
	return true;
}

/*
 * Completes a \\u escape that may be the high half of a surrogate pair. JSON allows unpaired
 * surrogates; like Node writing such a string, they become U+FFFD.
 */
static uint32_t read_surrogate_pair(struct json *json, uint32_t point)
{
	uint32_t low;

	if (point < 0xd800 || point > 0xdfff)
		return point;
	if (point >= 0xdc00 || json->end - json->at < 6 || json->at[0] != '\\' || json->at[1] != 'u')
		return 0xfffd;
	struct json lookahead = { .at = json->at + 2, .end = json->end };

	if (!read_hex4(&lookahead, &low) || low < 0xdc00 || low > 0xdfff)
		return 0xfffd;
	json->at = lookahead.at;
	return 0x10000 + ((point - 0xd800) << 10) + (low - 0xdc00);
}

/* Decodes the escape after a backslash. */
static bool read_escape(struct json *json, char *out, size_t capacity, size_t *length)
{
	uint32_t point;
	char escape;

	if (json->at >= json->end)
		return false;
	escape = *json->at++;
	if (escape == 'u') {
		if (!read_hex4(json, &point))
			return false;
		point = read_surrogate_pair(json, point);
	} else {
		point = (unsigned char)escaped_byte(escape);
		if (point == 0)
			return false;
	}
	utf8_append_point(out, capacity, length, point);
	return true;
}

/*
 * Reads a string into `out` (NULL to skip it), storing its decoded length in `*length`.
 * Invalid UTF-8 decodes to U+FFFD, as Node decodes the whole body before JSON.parse().
 */
bool json_read_string(struct json *json, char *out, size_t capacity, size_t *length)
{
	*length = 0;
	if (!json_take(json, '"'))
		return false;
	while (json->at < json->end) {
		const unsigned char *c = (const unsigned char *)json->at;
		uint32_t point;
		size_t invalid;
		size_t size;

		if (*c == '"') {
			json->at++;
			/* A truncated string is stored as "", so callers compare its length as well. */
			if (out)
				out[*length < capacity ? *length : 0] = '\0';
			return true;
		}
		if (*c < 0x20)
			return false;
		if (*c == '\\') {
			json->at++;
			if (!read_escape(json, out, capacity, length))
				return false;
			continue;
		}
		size = utf8_sequence(c, (size_t)(json->end - json->at), &point, &invalid);
		if (size == 0) {
			utf8_append(out, capacity, length, REPLACEMENT_CHARACTER, 3);
			json->at += invalid;
		} else {
			utf8_append(out, capacity, length, json->at, size);
			json->at += size;
		}
	}
	return false;
}

static size_t count_digits(const char *at, const char *end)
{
	size_t count = 0;

	while (at + count < end && at[count] >= '0' && at[count] <= '9')
		count++;
	return count;
}

/*
 * Consumes a number as JSON spells it: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
 * strtod() would also take "+1", "01", ".5", "0x10", "nan" and "inf", which JSON.parse() rejects.
 */
bool json_read_number(struct json *json)
{
	const char *at = json->at;
	size_t digits;

	if (at < json->end && *at == '-')
		at++;
	digits = count_digits(at, json->end);
	if (digits == 0 || (digits > 1 && *at == '0'))
		return false;
	at += digits;
	if (at < json->end && *at == '.') {
		at++;
		digits = count_digits(at, json->end);
		if (digits == 0)
			return false;
		at += digits;
	}
	if (at < json->end && (*at == 'e' || *at == 'E')) {
		at++;
		if (at < json->end && (*at == '+' || *at == '-'))
			at++;
		digits = count_digits(at, json->end);
		if (digits == 0)
			return false;
		at += digits;
	}
	json->at = at;
	return true;
}

/*
 * Calls `member` for each key of an object; the callback consumes the value. A key with a
 * NUL byte, or longer than any field the helper reads, is passed as "" so it matches none.
 */
bool json_read_object(struct json *json, int depth, bool (*member)(struct json *, const char *, void *, int), void *context)
{
	char key[64];
	size_t length;

	if (depth > MAX_JSON_DEPTH || !json_take(json, '{'))
		return false;
	if (json_take(json, '}'))
		return true;
	do {
		if (!json_read_string(json, key, sizeof(key), &length) || !json_take(json, ':'))
			return false;
		if (length != strlen(key))
			key[0] = '\0';
		json_skip_space(json);
		if (!member(json, key, context, depth + 1))
			return false;
	} while (json_take(json, ','));
	return json_take(json, '}');
}

static bool skip_member(struct json *json, const char *key, void *context, int depth)
{
	(void)key;
	(void)context;
	return json_skip_value(json, depth);
}

bool json_skip_value(struct json *json, int depth)
{
	size_t length;

	json_skip_space(json);
	if (json->at >= json->end || depth > MAX_JSON_DEPTH)
		return false;
	switch (*json->at) {
	case '{':
		return json_read_object(json, depth, skip_member, NULL);
	case '[':
		json->at++;
		if (json_take(json, ']'))
			return true;
		do {
			if (!json_skip_value(json, depth + 1))
				return false;
		} while (json_take(json, ','));
		return json_take(json, ']');
	case '"':
		return json_read_string(json, NULL, 0, &length);
	}
	return json_take_literal(json, "true") || json_take_literal(json, "false") || json_take_literal(json, "null") || json_read_number(json);
}
