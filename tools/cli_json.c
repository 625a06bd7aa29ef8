/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "cli_json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Deeper nesting than any library document has; bounds the recursion on bad input. */
#define JSON_MAX_DEPTH 64

struct parser {
    const char *p;
    int error;
};

static void value_clear(struct json_value *v);

static void skip_space(struct parser *ps)
{
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')
        ps->p++;
}

static int fail(struct parser *ps, int error)
{
    if (!ps->error)
        ps->error = error;
    return -1;
}

static bool literal(struct parser *ps, const char *word)
{
    size_t n = strlen(word);
    if (strncmp(ps->p, word, n) != 0)
        return false;
    ps->p += n;
    return true;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Decodes the string starting at the opening quote into a new buffer. */
static char *parse_string(struct parser *ps)
{
    const char *start = ++ps->p;
    size_t raw = 0;
    while (start[raw] && start[raw] != '"') {
        if (start[raw] == '\\' && start[raw + 1])
            raw++;
        raw++;
    }
    if (start[raw] != '"') {
        fail(ps, -EINVAL);
        return NULL;
    }
    /* Escapes never expand: "\uXXXX" (6 bytes) becomes at most 4, a pair (12) at most 4. */
    char *out = malloc(raw + 1);
    if (!out) {
        fail(ps, -ENOMEM);
        return NULL;
    }
    size_t n = 0;
    const char *p = start;
    while (*p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20)
            goto bad;
        if (c != '\\') {
            out[n++] = (char)c;
            p++;
            continue;
        }
        p++;
        switch (*p) {
        case '"':
        case '\\':
        case '/':
            out[n++] = *p;
            break;
        case 'b':
            out[n++] = '\b';
            break;
        case 'f':
            out[n++] = '\f';
            break;
        case 'n':
            out[n++] = '\n';
            break;
        case 'r':
            out[n++] = '\r';
            break;
        case 't':
            out[n++] = '\t';
            break;
        case 'u': {
            unsigned cp, low;
            if (hex4(p + 1, &cp) < 0)
                goto bad;
            p += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && p[1] == '\\' && p[2] == 'u' &&
                hex4(p + 3, &low) == 0 && low >= 0xdc00 && low < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                p += 6;
            } else if ((cp >= 0xd800 && cp < 0xe000) || cp == 0) {
                /* A lone surrogate has no UTF-8 form, and NUL would cut the string. */
                cp = 0xfffd;
            }
            n += put_utf8(out + n, cp);
            break;
        }
        default:
            goto bad;
        }
        p++;
    }
    out[n] = '\0';
    ps->p = p + 1;
    return out;
bad:
    free(out);
    fail(ps, -EINVAL);
    return NULL;
}

static int parse_number(struct parser *ps, struct json_value *v)
{
    const char *start = ps->p, *p = ps->p;
    if (*p == '-')
        p++;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (*p >= '0' && *p <= '9')
            p++;
    } else {
        return fail(ps, -EINVAL);
    }
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9'))
            return fail(ps, -EINVAL);
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return fail(ps, -EINVAL);
        while (*p >= '0' && *p <= '9')
            p++;
    }
    v->type = JSON_NUMBER;
    v->text = strndup(start, (size_t)(p - start));
    if (!v->text)
        return fail(ps, -ENOMEM);
    ps->p = p;
    return 0;
}

static int parse_value(struct parser *ps, struct json_value *v, int depth);

/* Appends a zeroed item (and key slot for objects) to a container. */
static struct json_value *append_item(struct parser *ps, struct json_value *v, size_t *cap)
{
    if (v->count == *cap) {
        size_t n = *cap ? *cap * 2 : 4;
        struct json_value *items = realloc(v->items, n * sizeof(*items));
        if (!items) {
            fail(ps, -ENOMEM);
            return NULL;
        }
        v->items = items;
        if (v->type == JSON_OBJECT) {
            char **keys = realloc(v->keys, n * sizeof(*keys));
            if (!keys) {
                fail(ps, -ENOMEM);
                return NULL;
            }
            v->keys = keys;
        }
        *cap = n;
    }
    struct json_value *item = &v->items[v->count];
    memset(item, 0, sizeof(*item));
    if (v->type == JSON_OBJECT)
        v->keys[v->count] = NULL;
    v->count++;
    return item;
}

static int parse_container(struct parser *ps, struct json_value *v, int depth)
{
    char close = *ps->p == '{' ? '}' : ']';
    size_t cap = 0;
    v->type = close == '}' ? JSON_OBJECT : JSON_ARRAY;
    ps->p++;
    skip_space(ps);
    if (*ps->p == close) {
        ps->p++;
        return 0;
    }
    for (;;) {
        char *key = NULL;
        skip_space(ps);
        if (v->type == JSON_OBJECT) {
            if (*ps->p != '"')
                return fail(ps, -EINVAL);
            key = parse_string(ps);
            if (!key)
                return -1;
            skip_space(ps);
            if (*ps->p != ':') {
                free(key);
                return fail(ps, -EINVAL);
            }
            ps->p++;
        }
        struct json_value *item = append_item(ps, v, &cap);
        if (!item) {
            free(key);
            return -1;
        }
        if (key)
            v->keys[v->count - 1] = key;
        if (parse_value(ps, item, depth + 1) < 0)
            return -1;
        skip_space(ps);
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p == close) {
            ps->p++;
            return 0;
        }
        return fail(ps, -EINVAL);
    }
}

static int parse_value(struct parser *ps, struct json_value *v, int depth)
{
    if (depth > JSON_MAX_DEPTH)
        return fail(ps, -EINVAL);
    skip_space(ps);
    switch (*ps->p) {
    case '{':
    case '[':
        return parse_container(ps, v, depth);
    case '"':
        v->type = JSON_STRING;
        v->text = parse_string(ps);
        return v->text ? 0 : -1;
    case 't':
    case 'f':
        v->type = JSON_BOOL;
        v->boolean = *ps->p == 't';
        return literal(ps, v->boolean ? "true" : "false") ? 0 : fail(ps, -EINVAL);
    case 'n':
        v->type = JSON_NULL;
        return literal(ps, "null") ? 0 : fail(ps, -EINVAL);
    default:
        return parse_number(ps, v);
    }
}

int json_parse(const char *text, struct json_value **out)
{
    struct parser ps = {.p = text, .error = 0};
    struct json_value *v = calloc(1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    if (parse_value(&ps, v, 0) == 0) {
        skip_space(&ps);
        if (*ps.p == '\0') {
            *out = v;
            return 0;
        }
        fail(&ps, -EINVAL);
    }
    json_free(v);
    return ps.error;
}

static void value_clear(struct json_value *v)
{
    free(v->text);
    for (size_t i = 0; i < v->count; i++) {
        value_clear(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
}

void json_free(struct json_value *value)
{
    if (!value)
        return;
    value_clear(value);
    free(value);
}

const struct json_value *json_get(const struct json_value *object, const char *key)
{
    if (!object || object->type != JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < object->count; i++)
        if (object->keys[i] && strcmp(object->keys[i], key) == 0)
            return &object->items[i];
    return NULL;
}

const char *json_get_str(const struct json_value *object, const char *key)
{
    const struct json_value *v = json_get(object, key);
    return v && v->type == JSON_STRING ? v->text : NULL;
}

bool json_get_i64(const struct json_value *object, const char *key, int64_t *out)
{
    const struct json_value *v = json_get(object, key);
    if (!v || v->type != JSON_NUMBER)
        return false;
    char *end;
    errno = 0;
    long long n = strtoll(v->text, &end, 10);
    if (errno || *end)
        return false;
    *out = n;
    return true;
}

bool json_get_bool(const struct json_value *object, const char *key, bool *out)
{
    const struct json_value *v = json_get(object, key);
    if (!v || v->type != JSON_BOOL)
        return false;
    *out = v->boolean;
    return true;
}

int64_t json_i64_or(const struct json_value *object, const char *key, int64_t fallback)
{
    int64_t v = fallback;
    json_get_i64(object, key, &v);
    return v;
}

/*
 * One character of `s` as QEMU's JSON output decodes it (the library's writer follows the same
 * rules): the code point, or -1 for an invalid, overlong, surrogate or noncharacter sequence.
 * *end is set past what was consumed.
 */
static long utf8_decode(const unsigned char *s, const unsigned char **end)
{
    static const long min_cp[5] = {0x80, 0x800, 0x10000, 0x200000, 0x4000000};
    const unsigned char *p = s;
    unsigned byte = *p++;
    long cp;
    if (byte < 0x80) {
        cp = byte;
    } else if (byte >= 0xfe || !(byte & 0x40)) {
        cp = -1;
    } else {
        unsigned len = 0, mask;
        for (mask = 0x80; byte & mask; mask >>= 1)
            len++;
        cp = byte & (mask - 1);
        for (unsigned i = 1; i < len; i++) {
            if ((*p & 0xc0) != 0x80) {
                *end = p;
                return -1;
            }
            cp = (cp << 6) | (*p++ & 0x3f);
        }
        bool noncharacter = (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) == 0xfffe;
        bool surrogate = cp >= 0xd800 && cp <= 0xdfff;
        if (cp > 0x10ffff || noncharacter || surrogate ||
            (cp < min_cp[len - 2] && !(cp == 0 && len == 2)))
            cp = -1;
    }
    *end = p;
    return cp;
}

/* Escaped as qemu-img escapes: ASCII only, \uXXXX beyond it, U+FFFD for invalid bytes. */
void json_write_string(const char *text, FILE *file)
{
    fputc('"', file);
    const unsigned char *p = (const unsigned char *)text;
    while (*p) {
        const unsigned char *next;
        long cp = utf8_decode(p, &next);
        switch (cp) {
        case '"':
            fputs("\\\"", file);
            break;
        case '\\':
            fputs("\\\\", file);
            break;
        case '\b':
            fputs("\\b", file);
            break;
        case '\f':
            fputs("\\f", file);
            break;
        case '\n':
            fputs("\\n", file);
            break;
        case '\r':
            fputs("\\r", file);
            break;
        case '\t':
            fputs("\\t", file);
            break;
        default:
            if (cp < 0)
                cp = 0xfffd;
            if (cp > 0xffff)
                fprintf(file, "\\u%04lX\\u%04lX", 0xd800 + ((cp - 0x10000) >> 10),
                        0xdc00 + ((cp - 0x10000) & 0x3ff));
            else if (cp < 0x20 || cp >= 0x7f)
                fprintf(file, "\\u%04lX", cp);
            else
                fputc((int)cp, file);
        }
        p = next;
    }
    fputc('"', file);
}

void json_write_compact(const struct json_value *value, FILE *file)
{
    switch (value->type) {
    case JSON_NULL:
        fputs("null", file);
        break;
    case JSON_BOOL:
        fputs(value->boolean ? "true" : "false", file);
        break;
    case JSON_NUMBER:
        fputs(value->text, file);
        break;
    case JSON_STRING:
        json_write_string(value->text, file);
        break;
    case JSON_ARRAY:
    case JSON_OBJECT:
        fputc(value->type == JSON_ARRAY ? '[' : '{', file);
        for (size_t i = 0; i < value->count; i++) {
            if (i)
                fputs(", ", file);
            if (value->type == JSON_OBJECT) {
                json_write_string(value->keys[i], file);
                fputs(": ", file);
            }
            json_write_compact(&value->items[i], file);
        }
        fputc(value->type == JSON_ARRAY ? ']' : '}', file);
        break;
    }
}
