/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "cli_create_options.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_json.h"
#include "cli_util.h"

bool cli_opts_ask_help(const char *text)
{
    /* Items are split at single commas; ",," is a literal comma inside a value. */
    const char *p = text;
    for (;;) {
        const char *item = p;
        while (*p && !(*p == ',' && p[1] != ','))
            p += (*p == ',') ? 2 : 1;
        size_t len = (size_t)(p - item);
        if ((len == 4 && strncmp(item, "help", 4) == 0) || (len == 1 && item[0] == '?'))
            return true;
        if (!*p)
            return false;
        p++;
    }
}

/* The "options" array of img_format_options_json(format), or NULL (nothing printed). */
static struct json_value *load_options(const char *format, const struct json_value **options)
{
    char *text = NULL;
    struct json_value *doc = NULL;
    if (img_format_options_json(format, &text) < 0 || json_parse(text, &doc) < 0) {
        img_free(text);
        return NULL;
    }
    img_free(text);
    *options = json_get(doc, "options");
    if (!*options || (*options)->type != JSON_ARRAY) {
        json_free(doc);
        return NULL;
    }
    return doc;
}

static const char *member_text(const struct json_value *object, const char *key)
{
    const struct json_value *v = json_get(object, key);
    return v && v->type == JSON_STRING ? v->text : NULL;
}

/* The type as qemu-img's -o help names it. */
static const char *help_type(const char *type)
{
    if (!type || strcmp(type, "size") == 0)
        return "size";
    if (strcmp(type, "bool") == 0)
        return "bool (on/off)";
    if (strcmp(type, "int") == 0)
        return "num";
    return "str";
}

static int compare_names(const void *a, const void *b)
{
    const struct json_value *x = *(const struct json_value *const *)a;
    const struct json_value *y = *(const struct json_value *const *)b;
    return strcmp(member_text(x, "name"), member_text(y, "name"));
}

int cli_print_create_options(const char *format)
{
    int can = img_format_supports(format, "create");
    if (can == -ENOENT) {
        cli_error("Unknown file format '%s'", format);
        return CLI_EXIT_FAILURE;
    }
    if (can != 1) {
        cli_error("Format driver '%s' does not support image creation", format);
        return CLI_EXIT_FAILURE;
    }
    const struct json_value *options;
    struct json_value *doc = load_options(format, &options);
    if (!doc) {
        cli_lib_error("Could not list the options of format '%s'", format);
        return CLI_EXIT_FAILURE;
    }
    /* qemu-img lists them by name. */
    const struct json_value **sorted = calloc(options->count + 1, sizeof(*sorted));
    if (!sorted) {
        json_free(doc);
        cli_error("out of memory");
        return CLI_EXIT_FAILURE;
    }
    size_t n = 0;
    for (size_t i = 0; i < options->count; i++)
        if (member_text(&options->items[i], "name"))
            sorted[n++] = &options->items[i];
    qsort(sorted, n, sizeof(*sorted), compare_names);
    printf("Supported %s options:\n", format);
    for (size_t i = 0; i < n; i++) {
        char key[128];
        const char *help = member_text(sorted[i], "help");
        snprintf(key, sizeof(key), "%s=<%s>", member_text(sorted[i], "name"),
                 help_type(member_text(sorted[i], "type")));
        printf("  %-22s - %s\n", key, help ? help : "");
    }
    free(sorted);
    json_free(doc);
    return 0;
}

/* Prints " key=value", numbers of size and int options as qemu-img does: in bytes, decimal. */
static void print_value(const char *key, const char *type, const char *value)
{
    uint64_t n;
    char *end;
    if (type && strcmp(type, "size") == 0 && cli_parse_size(value, &n) == 0) {
        printf(" %s=%" PRIu64, key, n);
        return;
    }
    if (type && strcmp(type, "int") == 0 && *value != '-') {
        errno = 0;
        n = strtoull(value, &end, 0);
        if (!errno && end != value && !*end) {
            printf(" %s=%" PRIu64, key, n);
            return;
        }
    }
    printf(" %s=%s", key, value);
}

void cli_print_formatting(const char *filename, const char *format, uint64_t size,
                          const img_opts *opts, char *const *given, size_t given_count)
{
    const struct json_value *options = NULL;
    struct json_value *doc = load_options(format, &options);
    bool size_printed = false;

    printf("Formatting '%s', fmt=%s", filename, format);
    for (size_t i = 0; doc && i < options->count; i++) {
        const char *name = member_text(&options->items[i], "name");
        const char *type = member_text(&options->items[i], "type");
        if (!name)
            continue;
        if (strcmp(name, "size") == 0) {
            printf(" size=%" PRIu64, size);
            size_printed = true;
            continue;
        }
        const char *value = img_opts_get(opts, name);
        if (!value)
            value = member_text(&options->items[i], "default");
        if (value)
            print_value(name, type, value);
    }
    if (!size_printed)
        printf(" size=%" PRIu64, size);
    /* Keys the table does not list (backing_file for raw, say) follow in the user's order. */
    for (size_t i = 0; i < given_count; i++) {
        const char *key = given[i];
        bool listed = false;
        for (size_t j = 0; doc && j < options->count; j++) {
            const char *name = member_text(&options->items[j], "name");
            if (name && strcmp(name, key) == 0)
                listed = true;
        }
        const char *value = img_opts_get(opts, key);
        if (!listed && value && strcmp(key, "overwrite") != 0)
            printf(" %s=%s", key, value);
    }
    putchar('\n');
    json_free(doc);
}
