/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "util/json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void json_init(struct json_writer *w)
{
    memset(w, 0, sizeof(*w));
}

static void put(struct json_writer *w, const char *s, size_t n)
{
    if (w->failed)
        return;
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n + 1)
            cap *= 2;
        char *p = realloc(w->buf, cap);
        if (!p) {
            w->failed = true;
            return;
        }
        w->buf = p;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void puts_(struct json_writer *w, const char *s)
{
    put(w, s, strlen(s));
}

static void newline_indent(struct json_writer *w)
{
    if (w->compact)
        return;
    put(w, "\n", 1);
    for (int i = 0; i < w->depth; i++)
        put(w, "    ", 4);
}

static void put_string_literal(struct json_writer *w, const char *s)
{
    put(w, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"':
            puts_(w, "\\\"");
            break;
        case '\\':
            puts_(w, "\\\\");
            break;
        case '\n':
            puts_(w, "\\n");
            break;
        case '\r':
            puts_(w, "\\r");
            break;
        case '\t':
            puts_(w, "\\t");
            break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof(esc), "\\u%04x", *p);
                puts_(w, esc);
            } else {
                put(w, (const char *)p, 1);
            }
        }
    }
    put(w, "\"", 1);
}

/* Separator, indentation and key before a value or container. */
static void begin_value(struct json_writer *w, const char *key)
{
    if (w->need_comma)
        put(w, w->compact ? ", " : ",", w->compact ? 2 : 1);
    if (w->depth > 0)
        newline_indent(w);
    if (key) {
        put_string_literal(w, key);
        put(w, ": ", 2);
    }
    w->need_comma = true;
}

void json_object_begin(struct json_writer *w, const char *key)
{
    begin_value(w, key);
    put(w, "{", 1);
    w->depth++;
    w->need_comma = false;
}

static void close_container(struct json_writer *w, const char *closer)
{
    w->depth--;
    if (w->need_comma)
        newline_indent(w);
    put(w, closer, 1);
    w->need_comma = true;
}

void json_object_end(struct json_writer *w)
{
    close_container(w, "}");
}

void json_array_begin(struct json_writer *w, const char *key)
{
    begin_value(w, key);
    put(w, "[", 1);
    w->depth++;
    w->need_comma = false;
}

void json_array_end(struct json_writer *w)
{
    close_container(w, "]");
}

void json_string(struct json_writer *w, const char *key, const char *value)
{
    begin_value(w, key);
    put_string_literal(w, value ? value : "");
}

void json_u64(struct json_writer *w, const char *key, uint64_t value)
{
    char num[32];
    begin_value(w, key);
    snprintf(num, sizeof(num), "%" PRIu64, value);
    puts_(w, num);
}

void json_i64(struct json_writer *w, const char *key, int64_t value)
{
    char num[32];
    begin_value(w, key);
    snprintf(num, sizeof(num), "%" PRId64, value);
    puts_(w, num);
}

void json_bool(struct json_writer *w, const char *key, bool value)
{
    begin_value(w, key);
    puts_(w, value ? "true" : "false");
}

char *json_finish(struct json_writer *w)
{
    if (!w->buf && !w->failed)
        put(w, "", 0);
    if (w->failed) {
        free(w->buf);
        w->buf = NULL;
        return NULL;
    }
    char *out = w->buf;
    w->buf = NULL;
    return out;
}

void json_discard(struct json_writer *w)
{
    free(w->buf);
    w->buf = NULL;
}
