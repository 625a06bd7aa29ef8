/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_JSON_H
#define IMG_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A streaming JSON writer producing qemu-img's layout (4-space indentation). Keys are given
 * with each value inside objects and NULL inside arrays. Errors (out of memory) are sticky and
 * reported by json_finish().
 */
struct json_writer {
    char *buf;
    size_t len, cap;
    int depth;
    bool need_comma;
    bool failed;
    /*
     * qemu-img map's layout instead of the indented one: objects on one line as
     * `{ "a": 1, "b": 2}`, array elements one per line (",\n" between them).
     */
    bool compact;
    uint64_t array_levels; /* bit d set: the container at depth d+1 is an array */
};

void json_init(struct json_writer *w);
void json_object_begin(struct json_writer *w, const char *key);
void json_object_end(struct json_writer *w);
void json_array_begin(struct json_writer *w, const char *key);
void json_array_end(struct json_writer *w);
void json_string(struct json_writer *w, const char *key, const char *value);
void json_u64(struct json_writer *w, const char *key, uint64_t value);
void json_i64(struct json_writer *w, const char *key, int64_t value);
void json_bool(struct json_writer *w, const char *key, bool value);
/* Returns the text (caller frees with free()) or NULL on allocation failure. */
char *json_finish(struct json_writer *w);
void json_discard(struct json_writer *w);

/*
 * Decodes one character of `s` (which must not be at its NUL) as QEMU's JSON output does:
 * returns the code point, or -1 for an invalid, overlong, surrogate or noncharacter sequence,
 * and sets *end past what was consumed (always at least one byte).
 */
long json_utf8_decode(const unsigned char *s, const unsigned char **end);

#endif
