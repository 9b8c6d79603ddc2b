#ifndef TAPGATE_JSON_H
#define TAPGATE_JSON_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Replies nest three levels deep. Deeper values are rejected so that recursion stays bounded.
 * NOTE: JSON.parse() in the Node build accepts any depth, so only this build rejects a reply
 * with a value nested deeper than this in a field that neither build reads.
 */
#define MAX_JSON_DEPTH 16

/* The unread part of a JSON text. */
struct json {
	const char *at;
	const char *end;
};

void json_skip_space(struct json *json);
bool json_take(struct json *json, char expected);
bool json_take_literal(struct json *json, const char *literal);
bool json_read_string(struct json *json, char *out, size_t capacity, size_t *length);
bool json_read_number(struct json *json);
bool json_read_object(struct json *json, int depth, bool (*member)(struct json *, const char *, void *, int), void *context);
bool json_skip_value(struct json *json, int depth);

#endif
