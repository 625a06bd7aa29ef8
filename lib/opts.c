/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "opts.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "util/array.h"
#include "util/checked.h"

#define OPTS_MAX_ENTRIES 256

struct opt_entry {
    char *key;
    char *value;
};

struct img_opts {
    struct opt_entry *entries;
    unsigned count;
    size_t cap;
};

IMG_API int img_opts_new(img_opts **out)
{
    if (!out)
        return img_error(-EINVAL, "img_opts_new: out is NULL");
    *out = calloc(1, sizeof(**out));
    if (!*out)
        return img_error(-ENOMEM, "out of memory");
    return 0;
}

IMG_API void img_opts_free(img_opts *opts)
{
    if (!opts)
        return;
    for (unsigned i = 0; i < opts->count; i++) {
        free(opts->entries[i].key);
        free(opts->entries[i].value);
    }
    free(opts->entries);
    free(opts);
}

static struct opt_entry *find_entry(const img_opts *opts, const char *key)
{
    for (unsigned i = 0; opts && i < opts->count; i++)
        if (strcmp(opts->entries[i].key, key) == 0)
            return &opts->entries[i];
    return NULL;
}

IMG_API int img_opts_set(img_opts *opts, const char *key, const char *value)
{
    if (!opts || !key || !*key || !value)
        return img_error(-EINVAL, "img_opts_set: options, key and value are required");
    char *copy = strdup(value);
    if (!copy)
        return img_error(-ENOMEM, "out of memory");
    struct opt_entry *e = find_entry(opts, key);
    if (e) {
        free(e->value);
        e->value = copy;
        return 0;
    }
    if (opts->count == OPTS_MAX_ENTRIES) {
        free(copy);
        return img_error(-EINVAL, "too many options (at most %d)", OPTS_MAX_ENTRIES);
    }
    int ret = ARRAY_RESERVE(opts->entries, opts->cap, (size_t)opts->count + 1);
    if (ret < 0) {
        free(copy);
        return ret;
    }
    char *k = strdup(key);
    if (!k) {
        free(copy);
        return img_error(-ENOMEM, "out of memory");
    }
    opts->entries[opts->count].key = k;
    opts->entries[opts->count].value = copy;
    opts->count++;
    return 0;
}

IMG_API const char *img_opts_get(const img_opts *opts, const char *key)
{
    if (!key)
        return NULL;
    const struct opt_entry *e = find_entry(opts, key);
    return e ? e->value : NULL;
}

/* Copies one ','-terminated field of `text`, turning ",," into ','. */
static const char *next_field(const char *text, char *out, size_t cap, int stop_at_equals)
{
    size_t n = 0;
    while (*text) {
        if (*text == ',') {
            if (text[1] != ',')
                break;
            text++;
        } else if (stop_at_equals && *text == '=') {
            break;
        }
        if (n + 1 < cap)
            out[n++] = *text;
        text++;
    }
    out[n] = '\0';
    return text;
}

IMG_API int img_opts_parse(img_opts *opts, const char *text)
{
    if (!opts || !text)
        return img_error(-EINVAL, "img_opts_parse: options and text are required");
    const char *whole = text;
    size_t cap = strlen(text) + 1;
    char *key = malloc(cap), *value = malloc(cap);
    int ret = 0;
    if (!key || !value) {
        ret = img_error(-ENOMEM, "out of memory");
        goto out;
    }
    while (*text) {
        text = next_field(text, key, cap, 1);
        if (!*key) {
            ret = img_error(-EINVAL, "Invalid option list: %s", whole);
            goto out;
        }
        if (*text != '=') {
            ret = img_error(-EINVAL, "option '%s' has no value (expected key=value)", key);
            goto out;
        }
        text = next_field(text + 1, value, cap, 0);
        ret = img_opts_set(opts, key, value);
        if (ret < 0)
            goto out;
        /* As qemu-img: an empty item (a trailing comma) makes the whole list invalid. */
        if (*text == ',' && *++text == '\0') {
            ret = img_error(-EINVAL, "Invalid option list: %s", whole);
            goto out;
        }
    }
out:
    free(key);
    free(value);
    return ret;
}

int parse_size(const char *text, uint64_t *out)
{
    if (!text || !*text || *text == '-' || *text == '+')
        return -EINVAL;
    char *end;
    /* Plain integers are parsed exactly; doubles lose precision above 2^53. */
    errno = 0;
    unsigned long long whole = strtoull(text, &end, 10);
    if (end != text && (*end == '\0' || ((*end == 'b' || *end == 'B') && end[1] == '\0'))) {
        if (errno)
            return -ERANGE;
        *out = whole;
        return 0;
    }
    /* A fraction such as "1.5G" is accepted, as qemu-img accepts it. */
    errno = 0;
    double d = strtod(text, &end);
    if (errno || end == text || d < 0)
        return -EINVAL;
    static const char suffixes[] = "kmgtpe";
    const char *s = *end ? strchr(suffixes, tolower((unsigned char)*end)) : NULL;
    if (!*end || !s)
        return -EINVAL;
    end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end)
        return -EINVAL;
    double v = d * (double)(1ull << (10 * (s - suffixes + 1)));
    if (v >= 18446744073709551616.0)
        return -ERANGE;
    *out = (uint64_t)v;
    return 0;
}

int opts_get_u64(const img_opts *opts, const char *key, uint64_t *out)
{
    const char *v = img_opts_get(opts, key);
    if (!v)
        return 0;
    char *end;
    errno = 0;
    if (*v == '-')
        return img_error(-EINVAL, "option %s: '%s' is not a non-negative integer", key, v);
    unsigned long long n = strtoull(v, &end, 0);
    if (errno || end == v || *end)
        return img_error(-EINVAL, "option %s: '%s' is not a non-negative integer", key, v);
    *out = n;
    return 0;
}

int opts_get_size(const img_opts *opts, const char *key, uint64_t *out)
{
    const char *v = img_opts_get(opts, key);
    if (!v)
        return 0;
    uint64_t n;
    if (parse_size(v, &n) < 0)
        return img_error(-EINVAL,
                         "option %s: '%s' is not a size (a number with an optional suffix "
                         "k, M, G, T, P or E)",
                         key, v);
    *out = n;
    return 0;
}

int opts_get_bool(const img_opts *opts, const char *key, bool *out)
{
    const char *v = img_opts_get(opts, key);
    if (!v)
        return 0;
    static const char *const yes[] = {"on", "true", "yes", "1"};
    static const char *const no[] = {"off", "false", "no", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return img_error(-EINVAL, "option %s: '%s' is not 'on' or 'off'", key, v);
}

bool opts_iter(const img_opts *opts, unsigned *index, const char **key, const char **value)
{
    if (!opts || *index >= opts->count)
        return false;
    *key = opts->entries[*index].key;
    *value = opts->entries[*index].value;
    (*index)++;
    return true;
}

int opts_check_known(const img_opts *opts, const char *const *allowed, const char *what)
{
    unsigned i = 0;
    const char *key, *value;
    while (opts_iter(opts, &i, &key, &value)) {
        bool known = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, key) == 0)
                known = true;
        if (!known) {
            char list[512] = "";
            size_t n = 0;
            for (const char *const *a = allowed; *a && n < sizeof(list) - 64; a++)
                n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", n ? ", " : "", *a);
            return img_error(-EINVAL, "%s: unknown option '%s' (known options: %s)", what, key,
                             list);
        }
    }
    return 0;
}
