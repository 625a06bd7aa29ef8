/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "opt_table.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "opts.h"

const struct opt_desc *opt_table_find(const struct opt_desc *table, const char *name)
{
    for (const struct opt_desc *d = table; d && d->name; d++)
        if (strcmp(d->name, name) == 0)
            return d;
    return NULL;
}

static bool parse_bool(const char *text)
{
    static const char *const words[] = {"on", "off", "true", "false", "yes", "no", "1", "0"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strcasecmp(text, words[i]) == 0)
            return true;
    return false;
}

static int parse_int(const char *text, uint64_t *out)
{
    if (*text == '-' || *text == '+' || *text == '\0')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(text, &end, 0);
    if (errno || *end)
        return -EINVAL;
    *out = n;
    return 0;
}

static int check_range(const struct opt_desc *d, const char *value, uint64_t n)
{
    if (d->max && (n < d->min || n > d->max))
        return img_error(
            -EINVAL, "Parameter '%s' expects a value from %" PRIu64 " to %" PRIu64 " (got '%s')",
            d->name, d->min, d->max, value);
    return 0;
}

/* One option's value against its entry; the messages are qemu-img's. */
static int check_value(const struct opt_desc *d, const char *value)
{
    uint64_t n;
    switch (d->type) {
    case OPT_BOOL:
        if (!parse_bool(value))
            return img_error(-EINVAL, "Parameter '%s' expects 'on' or 'off'", d->name);
        return 0;
    case OPT_SIZE:
        if (parse_size(value, &n) < 0)
            return img_error(-EINVAL,
                             "Parameter '%s' expects a non-negative number below 2^64 "
                             "(optional suffix k, M, G, T, P or E)",
                             d->name);
        return check_range(d, value, n);
    case OPT_INT:
        if (parse_int(value, &n) < 0)
            return img_error(-EINVAL, "Parameter '%s' expects a number", d->name);
        return check_range(d, value, n);
    case OPT_ENUM:
        for (const char *const *v = d->values; v && *v; v++)
            if (strcmp(*v, value) == 0)
                return 0;
        return img_error(-EINVAL, "Parameter '%s' does not accept value '%s'", d->name, value);
    case OPT_PATH:
        if (!*value)
            return img_error(-EINVAL, "Parameter '%s' expects a file name", d->name);
        return 0;
    case OPT_STRING:
        return 0;
    }
    return img_error(-EINVAL, "Parameter '%s' has an unknown type", d->name);
}

int opt_table_check(const struct opt_desc *table, const img_opts *opts)
{
    unsigned i = 0;
    const char *key, *value;
    while (opts_iter(opts, &i, &key, &value)) {
        const struct opt_desc *d = opt_table_find(table, key);
        if (!d)
            return img_error(-EINVAL, "Invalid parameter '%s'", key);
        int ret = check_value(d, value);
        if (ret < 0)
            return ret;
    }
    return 0;
}

const char *opt_type_help_name(enum opt_type type)
{
    switch (type) {
    case OPT_BOOL:
        return "bool (on/off)";
    case OPT_SIZE:
        return "size";
    case OPT_INT:
        return "num";
    case OPT_ENUM:
    case OPT_STRING:
    case OPT_PATH:
        return "str";
    }
    return "str";
}

const char *opt_type_json_name(enum opt_type type)
{
    static const char *const names[] = {
        [OPT_BOOL] = "bool", [OPT_SIZE] = "size",     [OPT_INT] = "int",
        [OPT_ENUM] = "enum", [OPT_STRING] = "string", [OPT_PATH] = "path",
    };
    return (unsigned)type < sizeof(names) / sizeof(names[0]) ? names[type] : "string";
}

void opt_table_json(const struct opt_desc *table, struct json_writer *w, const char *key)
{
    json_array_begin(w, key);
    for (const struct opt_desc *d = table; d && d->name; d++) {
        if (d->flags & OPT_HIDDEN)
            continue;
        json_object_begin(w, NULL);
        json_string(w, "name", d->name);
        json_string(w, "type", opt_type_json_name(d->type));
        if (d->def)
            json_string(w, "default", d->def);
        if (d->type == OPT_ENUM && d->values) {
            json_array_begin(w, "values");
            for (const char *const *v = d->values; *v; v++)
                json_string(w, NULL, *v);
            json_array_end(w);
        }
        if ((d->type == OPT_SIZE || d->type == OPT_INT) && d->max) {
            json_u64(w, "min", d->min);
            json_u64(w, "max", d->max);
        }
        json_string(w, "help", d->help);
        json_object_end(w);
    }
    json_array_end(w);
}
