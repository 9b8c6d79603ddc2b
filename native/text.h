#ifndef TAPGATE_TEXT_H
#define TAPGATE_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REPLACEMENT_CHARACTER "\xef\xbf\xbd"

char escape_letter(char c);
char escaped_byte(char letter);
size_t utf8_sequence(const unsigned char *s, size_t available, uint32_t *point, size_t *invalid);
void utf8_append(char *out, size_t capacity, size_t *length, const char *bytes, size_t size);
void utf8_append_point(char *out, size_t capacity, size_t *length, uint32_t point);
char *json_quote(const char *value);
bool is_javascript_space(uint32_t point);

#endif
