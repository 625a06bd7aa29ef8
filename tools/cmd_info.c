/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* imgutil info: what qemu-img info prints, laid out from img_info_json(). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_commands.h"
#include "cli_image_args.h"
#include "cli_json.h"
#include "cli_snapshots.h"
#include "cli_util.h"

enum {
    OPT_BACKING_CHAIN = CLI_OPT_OWN,
};

static void dump_value(const struct json_value *v, int indent);

/* A scalar as qemu-img prints it: strings bare, numbers as written, booleans as words. */
static void dump_scalar(const struct json_value *v)
{
    switch (v->type) {
    case JSON_STRING:
    case JSON_NUMBER:
        fputs(v->text, stdout);
        break;
    case JSON_BOOL:
        fputs(v->boolean ? "true" : "false", stdout);
        break;
    default:
        fputs("null", stdout);
        break;
    }
}

static bool is_composite(const struct json_value *v)
{
    return v->type == JSON_OBJECT || v->type == JSON_ARRAY;
}

/*
 * One member or element: "<indent>label: value" for scalars, "<indent>label:" followed by the
 * nested lines for objects and lists. Dashes in member names read as spaces, as in qemu-img.
 */
static void dump_entry(const char *label, bool is_key, const struct json_value *v, int indent)
{
    printf("%*s", indent * 4, "");
    for (const char *p = label; *p; p++)
        putchar(is_key && *p == '-' ? ' ' : *p);
    putchar(':');
    if (is_composite(v)) {
        putchar('\n');
        dump_value(v, indent + 1);
    } else {
        putchar(' ');
        dump_scalar(v);
        putchar('\n');
    }
}

static void dump_value(const struct json_value *v, int indent)
{
    if (v->type == JSON_OBJECT) {
        for (size_t i = 0; i < v->count; i++)
            dump_entry(v->keys[i], true, &v->items[i], indent);
    } else if (v->type == JSON_ARRAY) {
        for (size_t i = 0; i < v->count; i++) {
            char label[32];
            snprintf(label, sizeof(label), "[%zu]", i);
            dump_entry(label, false, &v->items[i], indent);
        }
    } else {
        dump_scalar(v);
    }
}

static void print_backing(const struct json_value *info)
{
    const char *backing = json_get_str(info, "backing-filename");
    if (!backing)
        return;
    const char *full = json_get_str(info, "full-backing-filename");
    const char *format = json_get_str(info, "backing-filename-format");
    printf("backing file: %s", backing);
    if (!full)
        printf(" (cannot determine actual path)");
    else if (strcmp(full, backing) != 0)
        printf(" (actual path: %s)", full);
    putchar('\n');
    if (format)
        printf("backing file format: %s\n", format);
}

static void print_image_info(const struct json_value *info)
{
    const char *filename = json_get_str(info, "filename");
    const char *format = json_get_str(info, "format");
    int64_t virtual_size = json_i64_or(info, "virtual-size", 0), actual_size, cluster_size;
    char vsize[CLI_SIZE_STR_MAX], dsize[CLI_SIZE_STR_MAX] = "unavailable";
    bool flag;

    cli_size_to_str((uint64_t)virtual_size, vsize, sizeof(vsize));
    if (json_get_i64(info, "actual-size", &actual_size))
        cli_size_to_str((uint64_t)actual_size, dsize, sizeof(dsize));
    printf("image: %s\n"
           "file format: %s\n"
           "virtual size: %s (%" PRId64 " bytes)\n"
           "disk size: %s\n",
           filename ? filename : "", format ? format : "", vsize, virtual_size, dsize);
    if (json_get_bool(info, "encrypted", &flag) && flag)
        printf("encrypted: yes\n");
    if (json_get_i64(info, "cluster-size", &cluster_size))
        printf("cluster_size: %" PRId64 "\n", cluster_size);
    if (json_get_bool(info, "dirty-flag", &flag) && flag)
        printf("cleanly shut down: no\n");
    print_backing(info);
    cli_print_snapshot_table(json_get(info, "snapshots"));

    const struct json_value *specific = json_get(json_get(info, "format-specific"), "data");
    if (specific) {
        printf("Format specific information:\n");
        dump_value(specific, 1);
    }
}

static int print_human(const char *json)
{
    struct json_value *doc;
    if (json_parse(json, &doc) < 0) {
        cli_error("info: the library returned unreadable JSON");
        return CLI_EXIT_FAILURE;
    }
    if (doc->type == JSON_ARRAY) {
        /* A backing chain: one block per image, separated by a blank line. */
        for (size_t i = 0; i < doc->count; i++) {
            if (i)
                putchar('\n');
            print_image_info(&doc->items[i]);
        }
    } else {
        print_image_info(doc);
    }
    json_free(doc);
    return 0;
}

int cmd_info(int argc, char **argv)
{
    static const struct option long_options[] = {
        CLI_LONG_HELP,
        CLI_LONG_FORMAT,
        CLI_LONG_FORCE_SHARE,
        CLI_LONG_OUTPUT,
        {"backing-chain", no_argument, NULL, OPT_BACKING_CHAIN},
        {NULL, 0, NULL, 0},
    };
    struct cli_image_args args = {.format = NULL};
    bool chain = false;
    int c;

    while ((c = cli_image_getopt(argc, argv, ":hf:U", long_options, &args)) != -1) {
        if (c != OPT_BACKING_CHAIN)
            return cli_getopt_error(c, argv);
        chain = true;
    }

    /* Without --backing-chain only this image is described: a missing backing file is fine. */
    unsigned flags = IMG_OPEN_READ_ONLY | (chain ? 0 : IMG_OPEN_NO_BACKING);
    img *image;
    if (!cli_image_open(argc, argv, "Expecting one image file name", &args, flags, &image))
        return args.status;
    const char *filename = args.filename;

    char *json = NULL;
    int ret = img_info_json(image, chain ? IMG_INFO_BACKING_CHAIN : 0, &json);
    if (ret < 0) {
        cli_lib_error("%s", filename);
        img_close(image);
        return CLI_EXIT_FAILURE;
    }
    if (args.output == CLI_OUTPUT_JSON)
        cli_print_json(json);
    else
        ret = print_human(json);
    img_free(json);
    img_close(image);
    return ret ? CLI_EXIT_FAILURE : 0;
}
