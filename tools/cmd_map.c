/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* imgutil map: the allocation map of qemu-img map, from img_map_json(). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_commands.h"
#include "cli_image_args.h"
#include "cli_json.h"
#include "cli_util.h"

enum {
    OPT_START_OFFSET = CLI_OPT_OWN,
    OPT_MAX_LENGTH,
};

struct map_entry {
    int64_t start, length, depth, offset;
    bool present, zero, data, has_offset;
    const struct json_value *source; /* the library's entry, for members not named here */
};

struct map_range {
    int64_t start, end;
};

static bool read_entry(const struct json_value *v, struct map_entry *e)
{
    memset(e, 0, sizeof(*e));
    e->source = v;
    if (!json_get_i64(v, "start", &e->start) || !json_get_i64(v, "length", &e->length))
        return false;
    json_get_i64(v, "depth", &e->depth);
    json_get_bool(v, "present", &e->present);
    json_get_bool(v, "zero", &e->zero);
    json_get_bool(v, "data", &e->data);
    e->has_offset = json_get_i64(v, "offset", &e->offset);
    return e->start >= 0 && e->length >= 0;
}

/* Cuts an entry down to the requested range; false when nothing of it is left. */
static bool clip_entry(struct map_entry *e, const struct map_range *range)
{
    int64_t start = e->start > range->start ? e->start : range->start;
    int64_t end = e->start + e->length < range->end ? e->start + e->length : range->end;
    if (start >= end)
        return false;
    if (e->has_offset)
        e->offset += start - e->start;
    e->length = end - start;
    e->start = start;
    return true;
}

/* One entry in qemu-img's JSON layout, keeping any member this tool does not interpret. */
static void print_json_entry(const struct map_entry *e)
{
    printf("{ \"start\": %" PRId64 ", \"length\": %" PRId64, e->start, e->length);
    const struct json_value *src = e->source;
    for (size_t i = 0; src && i < src->count; i++) {
        const char *key = src->keys[i];
        if (strcmp(key, "start") == 0 || strcmp(key, "length") == 0)
            continue;
        printf(", ");
        json_write_string(key, stdout);
        if (strcmp(key, "offset") == 0)
            printf(": %" PRId64, e->offset);
        else {
            printf(": ");
            json_write_compact(&src->items[i], stdout);
        }
    }
    putchar('}');
}

static void print_json(const struct json_value *doc, const struct map_range *range)
{
    bool first = true;
    putchar('[');
    for (size_t i = 0; i < doc->count; i++) {
        struct map_entry e;
        if (!read_entry(&doc->items[i], &e) || !clip_entry(&e, range))
            continue;
        if (!first)
            puts(",");
        print_json_entry(&e);
        first = false;
    }
    /* An empty range still yields one (empty) entry, as qemu-img prints it. */
    if (first)
        printf("{ \"start\": %" PRId64 ", \"length\": 0, \"depth\": 0, \"present\": false, "
               "\"zero\": false, \"data\": false}",
               range->start);
    printf("]\n");
}

/* The images of the chain, by depth, to fill the "File" column. */
struct chain_names {
    struct json_value *doc;
};

static const struct json_value *layer_info(const struct chain_names *names, int64_t depth)
{
    const struct json_value *doc = names->doc;
    if (!doc || depth < 0)
        return NULL;
    if (doc->type == JSON_OBJECT)
        return depth == 0 ? doc : NULL;
    if (doc->type != JSON_ARRAY || (uint64_t)depth >= doc->count)
        return NULL;
    return &doc->items[depth];
}

/* The file that holds a layer's data: the image itself, or its external data file. */
static const char *layer_name(const struct chain_names *names, int64_t depth)
{
    const struct json_value *info = layer_info(names, depth);
    const char *data_file =
        json_get_str(json_get(json_get(info, "format-specific"), "data"), "data-file");
    const char *name = data_file ? data_file : json_get_str(info, "filename");
    return name ? name : "";
}

static bool mergeable(const struct map_entry *curr, const struct map_entry *next)
{
    if (curr->length == 0)
        return false;
    if (curr->zero != next->zero || curr->data != next->data || curr->depth != next->depth ||
        curr->present != next->present || curr->has_offset != next->has_offset)
        return false;
    return !curr->has_offset || curr->offset + curr->length == next->offset;
}

/*
 * Prints one data run. The human layout does not tell zeros from unallocated space, so the
 * next entry is folded into "zero" as qemu-img does, letting more runs merge.
 */
static int print_human_entry(const struct map_entry *e, struct map_entry *next,
                             const struct chain_names *names)
{
    if (e->data && !e->has_offset) {
        cli_error("File contains external, encrypted or compressed clusters.");
        return -1;
    }
    if (e->data && !e->zero)
        printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", (uint64_t)e->start,
               (uint64_t)e->length, e->has_offset ? (uint64_t)e->offset : 0,
               e->has_offset ? layer_name(names, e->depth) : "");
    if (next && (!next->data || next->zero)) {
        next->data = false;
        next->zero = true;
    }
    return 0;
}

static int print_human(const struct json_value *doc, const struct map_range *range,
                       const struct chain_names *names)
{
    struct map_entry curr = {.start = range->start};
    printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    for (size_t i = 0; i < doc->count; i++) {
        struct map_entry next;
        if (!read_entry(&doc->items[i], &next) || !clip_entry(&next, range))
            continue;
        if (mergeable(&curr, &next)) {
            curr.length += next.length;
            continue;
        }
        if (curr.length > 0 && print_human_entry(&curr, &next, names) < 0)
            return -1;
        curr = next;
    }
    return print_human_entry(&curr, NULL, names);
}

static int parse_offset(const char *arg, const char *what, int64_t *out)
{
    uint64_t v;
    int ret = cli_parse_size(arg, &v);
    if (ret < 0) {
        cli_size_error(ret, what);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

int cmd_map(int argc, char **argv)
{
    static const struct option long_options[] = {
        CLI_LONG_HELP,
        CLI_LONG_FORMAT,
        CLI_LONG_FORCE_SHARE,
        CLI_LONG_OUTPUT,
        {"start-offset", required_argument, NULL, OPT_START_OFFSET},
        {"max-length", required_argument, NULL, OPT_MAX_LENGTH},
        {NULL, 0, NULL, 0},
    };
    struct cli_image_args args = {.format = NULL};
    int64_t start = 0, max_length = INT64_MAX;
    bool ranged = false;
    int c;

    while ((c = cli_image_getopt(argc, argv, ":hf:U", long_options, &args)) != -1) {
        switch (c) {
        case OPT_START_OFFSET:
            if (parse_offset(optarg, "start offset", &start) < 0)
                return CLI_EXIT_FAILURE;
            ranged = true;
            break;
        case OPT_MAX_LENGTH:
            if (parse_offset(optarg, "max length", &max_length) < 0)
                return CLI_EXIT_FAILURE;
            ranged = true;
            break;
        default:
            return cli_getopt_error(c, argv);
        }
    }

    img *image;
    if (!cli_image_open(argc, argv, "Expecting one image file name", &args, IMG_OPEN_READ_ONLY,
                        &image))
        return args.status;
    const char *filename = args.filename;
    enum cli_output output = args.output;

    int status = CLI_EXIT_FAILURE;
    char *json = NULL, *chain_json = NULL;
    struct json_value *doc = NULL;
    struct chain_names names = {NULL};

    int64_t size = img_get_size(image);
    if (size < 0 || img_map_json(image, &json) < 0) {
        cli_lib_error("%s", filename);
        goto out;
    }
    if (output == CLI_OUTPUT_JSON && !ranged) {
        cli_print_json(json);
        status = 0;
        goto out;
    }
    if (json_parse(json, &doc) < 0 || doc->type != JSON_ARRAY) {
        cli_error("map: the library returned unreadable JSON");
        goto out;
    }
    struct map_range range = {
        .start = start,
        .end = max_length > size - start ? size : start + max_length,
    };
    if (range.end < range.start)
        range.end = range.start;
    if (output == CLI_OUTPUT_JSON) {
        print_json(doc, &range);
        status = 0;
        goto out;
    }
    if (img_info_json(image, IMG_INFO_BACKING_CHAIN, &chain_json) < 0) {
        cli_lib_error("%s", filename);
        goto out;
    }
    if (json_parse(chain_json, &names.doc) < 0) {
        cli_error("map: the library returned unreadable JSON");
        goto out;
    }
    status = print_human(doc, &range, &names) < 0 ? CLI_EXIT_FAILURE : 0;

out:
    json_free(names.doc);
    json_free(doc);
    img_free(chain_json);
    img_free(json);
    img_close(image);
    return status;
}
