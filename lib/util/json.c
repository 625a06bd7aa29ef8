/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "util/json.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/array.h"

void json_init(struct json_writer *w)
{
    memset(w, 0, sizeof(*w));
}

static void put(struct json_writer *w, const char *s, size_t n)
{
    if (w->failed)
        return;
    /* Room for the text and its terminating NUL; json_finish() reports the failure. */
    if (n > SIZE_MAX - 1 - w->len || ARRAY_RESERVE(w->buf, w->cap, w->len + n + 1) < 0) {
        w->failed = true;
        return;
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

static bool is_valid_codepoint(long cp)
{
    if (cp > 0x10ffff)
        return false; /* beyond Unicode */
    if ((cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) == 0xfffe)
        return false;                       /* noncharacter */
    return !(cp >= 0xd800 && cp <= 0xdfff); /* surrogate */
}

long json_utf8_decode(const unsigned char *s, const unsigned char **end)
{
    static const long min_cp[5] = {0x80, 0x800, 0x10000, 0x200000, 0x4000000};
    const unsigned char *p = s;
    unsigned byte = *p++;
    long cp;
    if (byte < 0x80) {
        cp = byte;
    } else if (byte >= 0xfe || !(byte & 0x40)) {
        cp = -1; /* 0xfe, 0xff, or a continuation byte with no lead */
    } else {
        unsigned len = 0, mask;
        for (mask = 0x80; byte & mask; mask >>= 1)
            len++;
        cp = byte & (mask - 1);
        for (unsigned i = 1; i < len; i++) {
            if ((*p & 0xc0) != 0x80) {
                /* Truncated: the byte that broke the sequence starts the next one. */
                *end = p;
                return -1;
            }
            cp = (cp << 6) | (*p++ & 0x3f);
        }
        /* Overlong forms are refused, except C0 80 (modified UTF-8's U+0000). */
        if (!is_valid_codepoint(cp) || (cp < min_cp[len - 2] && !(cp == 0 && len == 2)))
            cp = -1;
    }
    *end = p;
    return cp;
}

/*
 * Escapes as QEMU's JSON output does, so that text is byte-identical to qemu-img's and always
 * valid UTF-8 (ASCII, in fact): anything outside printable ASCII becomes \uXXXX, code points
 * beyond the BMP a surrogate pair, and each invalid sequence U+FFFD.
 */
static void put_string_literal(struct json_writer *w, const char *s)
{
    put(w, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        const unsigned char *next;
        long cp = json_utf8_decode(p, &next);
        char esc[32];
        switch (cp) {
        case '"':
            puts_(w, "\\\"");
            break;
        case '\\':
            puts_(w, "\\\\");
            break;
        case '\b':
            puts_(w, "\\b");
            break;
        case '\f':
            puts_(w, "\\f");
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
            if (cp < 0)
                cp = 0xfffd;
            if (cp > 0xffff) {
                snprintf(esc, sizeof(esc), "\\u%04lX\\u%04lX", 0xd800 + ((cp - 0x10000) >> 10),
                         0xdc00 + ((cp - 0x10000) & 0x3ff));
                puts_(w, esc);
            } else if (cp < 0x20 || cp >= 0x7f) {
                snprintf(esc, sizeof(esc), "\\u%04lX", cp);
                puts_(w, esc);
            } else {
                char c = (char)cp;
                put(w, &c, 1);
            }
        }
        p = next;
    }
    put(w, "\"", 1);
}

static bool in_array(const struct json_writer *w)
{
    return w->depth > 0 && w->depth <= 64 && (w->array_levels >> (w->depth - 1)) & 1;
}

static void enter(struct json_writer *w, bool array)
{
    w->depth++;
    if (w->depth <= 64) {
        uint64_t bit = 1ull << (w->depth - 1);
        w->array_levels = array ? w->array_levels | bit : w->array_levels & ~bit;
    }
    w->need_comma = false;
}

/* Separator, indentation and key before a value or container. */
static void begin_value(struct json_writer *w, const char *key)
{
    if (w->need_comma) {
        if (!w->compact)
            put(w, ",", 1);
        else if (w->depth > 0 && in_array(w))
            put(w, ",\n", 2);
        else
            put(w, ", ", 2);
    }
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
    put(w, w->compact ? "{ " : "{", w->compact ? 2 : 1);
    enter(w, false);
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
    enter(w, true);
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
