/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A small JSON reader for the documents the library returns (info, map, check, snapshots), so
 * the human-readable output can be laid out from them. Object members keep their order, since
 * qemu-img prints format-specific information in the order of its JSON.
 */
#ifndef CLI_JSON_H
#define CLI_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum json_type {
    JSON_NULL,
    JSON_BOOL,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
};

struct json_value {
    enum json_type type;
    bool boolean;
    /* JSON_STRING: the decoded text; JSON_NUMBER: the number exactly as written. */
    char *text;
    /* JSON_ARRAY and JSON_OBJECT: `count` items; objects also have a key per item. */
    size_t count;
    struct json_value *items;
    char **keys;
};

/* Parses a whole document. Returns 0, -EINVAL for malformed text or -ENOMEM. */
int json_parse(const char *text, struct json_value **out);
void json_free(struct json_value *value);

/* The member `key` of an object, or NULL when absent or `object` is not an object. */
const struct json_value *json_get(const struct json_value *object, const char *key);
/* The string member `key`, or NULL. */
const char *json_get_str(const struct json_value *object, const char *key);
/* Stores an integer member and returns true; false (leaving *out) when absent or not one. */
bool json_get_i64(const struct json_value *object, const char *key, int64_t *out);
/* Stores a boolean member and returns true; false when absent or not a boolean. */
bool json_get_bool(const struct json_value *object, const char *key, bool *out);
/* The integer member `key`, or `fallback`. */
int64_t json_i64_or(const struct json_value *object, const char *key, int64_t fallback);

/* Writes `text` as a quoted JSON string. */
void json_write_string(const char *text, FILE *file);
/* Writes `value` compactly ("true", "12", "\"a\"", arrays and objects as one line). */
void json_write_compact(const struct json_value *value, FILE *file);

#endif
