/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* imgutil map: the allocation map of qemu-img map, printed row by row from img_map(). */
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
};

static void entry_from_row(struct map_entry *e, uint64_t start, uint64_t length, int depth,
                           unsigned status, uint64_t offset)
{
    e->start = (int64_t)start;
    e->length = (int64_t)length;
    e->depth = depth;
    e->present = status & IMG_BLOCK_ALLOCATED;
    e->zero = status & IMG_BLOCK_ZERO;
    e->data = status & IMG_BLOCK_DATA;
    e->has_offset = status & IMG_BLOCK_OFFSET_VALID;
    e->offset = e->has_offset ? (int64_t)offset : 0;
}

/* One entry in qemu-img's JSON layout, printed as soon as the library delivers it. */
static void print_json_entry(const struct map_entry *e)
{
    printf("{ \"start\": %" PRId64 ", \"length\": %" PRId64 ", \"depth\": %" PRId64
           ", \"present\": %s, \"zero\": %s, \"data\": %s",
           e->start, e->length, e->depth, e->present ? "true" : "false", e->zero ? "true" : "false",
           e->data ? "true" : "false");
    if (e->has_offset)
        printf(", \"offset\": %" PRId64, e->offset);
    putchar('}');
}

struct json_state {
    bool first;
};

static int json_row(void *user, uint64_t start, uint64_t length, int depth, unsigned status,
                    uint64_t offset)
{
    struct json_state *st = user;
    struct map_entry e;
    entry_from_row(&e, start, length, depth, status, offset);
    if (!st->first)
        puts(",");
    print_json_entry(&e);
    st->first = false;
    return 0;
}

static int print_json(img *image, int64_t start, int64_t end)
{
    struct json_state st = {.first = true};
    putchar('[');
    int ret = img_map(image, (uint64_t)start, (uint64_t)(end - start), json_row, &st);
    if (ret < 0) {
        /* Close what was started, so the partial output is still one line per row. */
        printf("%s]\n", st.first ? "" : "\n");
        return ret;
    }
    /* An empty range still yields one (empty) entry, as qemu-img prints it. */
    if (st.first)
        printf("{ \"start\": %" PRId64 ", \"length\": 0, \"depth\": 0, \"present\": false, "
               "\"zero\": false, \"data\": false}",
               start);
    printf("]\n");
    return 0;
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

/* The run being merged; rows join it or push it out to be printed. */
struct human_state {
    struct map_entry curr;
    const struct chain_names *names;
};

static int human_row(void *user, uint64_t start, uint64_t length, int depth, unsigned status,
                     uint64_t offset)
{
    struct human_state *st = user;
    struct map_entry next;
    entry_from_row(&next, start, length, depth, status, offset);
    if (mergeable(&st->curr, &next)) {
        st->curr.length += next.length;
        return 0;
    }
    if (st->curr.length > 0 && print_human_entry(&st->curr, &next, st->names) < 0)
        return 1;
    st->curr = next;
    return 0;
}

/* Returns 0, 1 when a run cannot be shown (reported), or a negative errno from the library. */
static int print_human(img *image, int64_t start, int64_t end, const struct chain_names *names)
{
    struct human_state st = {.curr = {.start = start}, .names = names};
    printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    int ret = img_map(image, (uint64_t)start, (uint64_t)(end - start), human_row, &st);
    if (ret)
        return ret;
    return print_human_entry(&st.curr, NULL, names) < 0 ? 1 : 0;
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
    int c;

    while ((c = cli_image_getopt(argc, argv, ":hf:U", long_options, &args)) != -1) {
        switch (c) {
        case OPT_START_OFFSET:
            if (parse_offset(optarg, "start offset", &start) < 0)
                return CLI_EXIT_FAILURE;
            break;
        case OPT_MAX_LENGTH:
            if (parse_offset(optarg, "max length", &max_length) < 0)
                return CLI_EXIT_FAILURE;
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
    char *chain_json = NULL;
    struct chain_names names = {NULL};

    int64_t size = img_get_size(image);
    if (size < 0) {
        cli_lib_error("%s", filename);
        goto out;
    }
    int64_t end = max_length > size - start ? size : start + max_length;
    if (end < start)
        end = start;
    if (output == CLI_OUTPUT_JSON) {
        if (print_json(image, start, end) < 0) {
            fflush(stdout);
            cli_lib_error("%s", filename);
            goto out;
        }
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
    int ret = print_human(image, start, end, &names);
    if (ret < 0) {
        fflush(stdout);
        cli_lib_error("%s", filename);
    }
    status = ret ? CLI_EXIT_FAILURE : 0;

out:
    json_free(names.doc);
    img_free(chain_json);
    img_close(image);
    return status;
}
