/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* imgutil create: makes a new image through img_create(), as qemu-img create does. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_commands.h"
#include "cli_create_options.h"
#include "cli_json.h"
#include "cli_util.h"

/* -o keys in the order the user gave them, for the "Formatting ..." line. */
#define MAX_KEYS 64

struct key_list {
    char *keys[MAX_KEYS];
    size_t count;
};

static void key_list_add(struct key_list *list, const char *key, size_t len)
{
    for (size_t i = 0; i < list->count; i++)
        if (strlen(list->keys[i]) == len && strncmp(list->keys[i], key, len) == 0)
            return;
    if (list->count < MAX_KEYS) {
        char *copy = strndup(key, len);
        if (copy)
            list->keys[list->count++] = copy;
    }
}

/* Collects the keys of "k=v,k2=v2" (",," being a literal comma inside a value). */
static void key_list_add_text(struct key_list *list, const char *text)
{
    const char *p = text;
    while (*p) {
        const char *key = p;
        while (*p && *p != '=' && *p != ',')
            p++;
        key_list_add(list, key, (size_t)(p - key));
        while (*p && !(*p == ',' && p[1] != ','))
            p += (*p == ',') ? 2 : 1;
        if (*p == ',')
            p++;
    }
}

static void key_list_free(struct key_list *list)
{
    for (size_t i = 0; i < list->count; i++)
        free(list->keys[i]);
    list->count = 0;
}

/* The backing file's name as seen from here: relative names are relative to the new image. */
static char *backing_path(const char *filename, const char *backing)
{
    const char *slash = strrchr(filename, '/');
    if (backing[0] == '/' || !slash)
        return strdup(backing);
    size_t dir_len = (size_t)(slash - filename) + 1;
    char *path = malloc(dir_len + strlen(backing) + 1);
    if (path) {
        memcpy(path, filename, dir_len);
        strcpy(path + dir_len, backing);
    }
    return path;
}

/*
 * Opens the backing file as qemu-img does before creating an overlay: it must exist, its format
 * must be given, and it supplies the size when none was. Returns 0 or CLI_EXIT_FAILURE.
 */
static int check_backing(const char *filename, const char *backing, const char *backing_fmt,
                         int64_t *size)
{
    char *path = backing_path(filename, backing);
    img *image;
    if (!path) {
        cli_error("%s: out of memory", filename);
        return CLI_EXIT_FAILURE;
    }
    int ret = img_open(&image, path, backing_fmt, IMG_OPEN_READ_ONLY | IMG_OPEN_FORCE_SHARE, NULL);
    free(path);
    if (ret < 0) {
        cli_lib_error("%s: Could not open '%s'", filename, backing);
        fprintf(stderr, "Could not open backing image.\n");
        return CLI_EXIT_FAILURE;
    }
    if (!backing_fmt) {
        cli_error("%s: Backing file specified without backing format", filename);
        fprintf(stderr, "Detected format of %s.\n", img_get_format(image));
        img_close(image);
        return CLI_EXIT_FAILURE;
    }
    if (*size < 0) {
        *size = img_get_size(image);
        if (*size < 0) {
            cli_lib_error("%s: Could not get the size of '%s'", filename, backing);
            img_close(image);
            return CLI_EXIT_FAILURE;
        }
    }
    img_close(image);
    return 0;
}

/* Whether `value` is written as qemu-img's option parser takes an option of `type`. */
static bool value_parses(const char *type, const char *value)
{
    uint64_t n;
    if (strcmp(type, "bool") == 0) {
        static const char *const words[] = {"on", "off", "yes", "no", "true", "false", "y", "n"};
        for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
            if (strcmp(value, words[i]) == 0)
                return true;
        return false;
    }
    if (strcmp(type, "size") == 0)
        return cli_parse_size(value, &n) == 0;
    if (strcmp(type, "int") == 0) {
        char *end;
        (void)strtoull(value, &end, 0);
        return *value && *value != '-' && !*end;
    }
    return true;
}

/*
 * Whether `format` takes the option `key`, though its public table leaves it out (a host file
 * option qemu-img accepts and does not list): the library's option check, which img_measure()
 * runs first, names a key it does not know as an "Invalid parameter".
 */
static bool option_known(const char *format, const char *key, const char *value)
{
    img_opts *one = NULL;
    char *json = NULL;
    if (img_opts_new(&one) < 0 || img_opts_set(one, key, value ? value : "") < 0) {
        img_opts_free(one);
        return true; /* undecided: img_create() will judge */
    }
    int ret = img_measure(NULL, 1, format, one, &json);
    img_free(json);
    img_opts_free(one);
    return ret == 0 || strncmp(img_last_error(), "Invalid parameter", 17) != 0;
}

/*
 * Whether qemu-img would get as far as its "Formatting ..." line, which it prints once the -o
 * options parse (known keys, well-formed booleans, numbers and sizes) and before the driver
 * judges their values, so that a create the driver refuses prints it too.
 */
static bool options_parse(const char *format, const img_opts *opts, const struct key_list *given)
{
    char *text = NULL;
    struct json_value *doc = NULL;
    if (img_format_supports(format, "create") != 1)
        return false;
    if (img_format_options_json(format, &text) < 0 || json_parse(text, &doc) < 0) {
        img_free(text);
        return false;
    }
    img_free(text);
    const struct json_value *options = json_get(doc, "options");
    bool ok = options && options->type == JSON_ARRAY;
    for (size_t k = 0; ok && k < given->count; k++) {
        const char *key = given->keys[k];
        bool listed = strcmp(key, "backing_file") == 0 || strcmp(key, "backing_fmt") == 0;
        for (size_t i = 0; !listed && i < options->count; i++) {
            const char *name = json_get_str(&options->items[i], "name");
            const char *type = json_get_str(&options->items[i], "type");
            if (!name || strcmp(name, key) != 0)
                continue;
            listed = true;
            const char *value = img_opts_get(opts, key);
            ok = !value || !type || value_parses(type, value);
        }
        ok = ok && (listed || option_known(format, key, img_opts_get(opts, key)));
    }
    json_free(doc);
    return ok;
}

static int parse_image_size(const char *text, int64_t *size)
{
    uint64_t v;
    int ret = cli_parse_size(text, &v);
    if (ret < 0) {
        cli_size_error(ret, "image size");
        return CLI_EXIT_FAILURE;
    }
    *size = (int64_t)v;
    return 0;
}

int cmd_create(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *format = "raw";
    img_opts *opts = NULL;
    struct key_list given = {.count = 0};
    bool quiet = false, unsafe = false, help = false;
    int64_t size = -1;
    int status = CLI_EXIT_FAILURE, c;

    while ((c = getopt_long(argc, argv, ":hf:b:F:o:uq", long_options, NULL)) != -1) {
        switch (c) {
        case 'h':
            cli_print_help();
            status = 0;
            goto out;
        case 'f':
            format = optarg;
            break;
        case 'b':
            if (cli_opts_set(&opts, "backing_file", optarg))
                goto out;
            break;
        case 'F':
            if (cli_opts_set(&opts, "backing_fmt", optarg))
                goto out;
            break;
        case 'o':
            if (cli_opts_add(&opts, optarg, &help))
                goto out;
            key_list_add_text(&given, optarg);
            break;
        case 'u':
            unsafe = true;
            break;
        case 'q':
            quiet = true;
            break;
        default:
            status = cli_getopt_error(c, argv);
            goto out;
        }
    }
    /* Like qemu-img, -o help needs no file name and creates nothing. */
    if (help) {
        status = cli_print_create_options(format);
        goto out;
    }
    if (optind >= argc) {
        status = cli_usage_error("Expecting image file name");
        goto out;
    }
    const char *filename = argv[optind++];
    if (optind < argc && parse_image_size(argv[optind++], &size))
        goto out;
    if (optind != argc) {
        status = cli_usage_error("Unexpected argument: %s", argv[optind]);
        goto out;
    }
    /* As qemu-img: a size argument and a size option would contradict each other. */
    if (size >= 0 && img_opts_get(opts, "size")) {
        cli_error("%s: The image size must be specified only once", filename);
        goto out;
    }
    if (size < 0 && img_opts_get(opts, "size") &&
        parse_image_size(img_opts_get(opts, "size"), &size))
        goto out;

    const char *backing = img_opts_get(opts, "backing_file");
    const char *backing_fmt = img_opts_get(opts, "backing_fmt");
    if (backing_fmt && !backing) {
        cli_error("%s: Backing format cannot be used without backing file", filename);
        goto out;
    }
    if (backing && !unsafe) {
        if (check_backing(filename, backing, backing_fmt, &size))
            goto out;
    } else if (backing && !backing_fmt) {
        cli_error("%s: Backing file specified without backing format", filename);
        goto out;
    }
    if (size < 0) {
        cli_error("%s: Image creation needs a size parameter", filename);
        goto out;
    }

    /* qemu-img create replaces an existing file. */
    if (cli_opts_set(&opts, "overwrite", "on"))
        goto out;
    /* As qemu-img: the line comes before the format's own checks, which may still fail. */
    if (!quiet && options_parse(format, opts, &given)) {
        cli_print_formatting(filename, format, (uint64_t)size, opts, given.keys, given.count);
        fflush(stdout);
    }
    if (img_create(filename, format, (uint64_t)size, opts) < 0) {
        cli_lib_error("%s", filename);
        goto out;
    }
    status = 0;
out:
    key_list_free(&given);
    img_opts_free(opts);
    return status;
}
