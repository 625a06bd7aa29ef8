/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * imgutil bitmap: changes persistent dirty bitmaps, as qemu-img bitmap does. The operations
 * are applied in the order given, each to the one bitmap named; the first failure ends the
 * command ("Operation OP on bitmap NAME failed: ...").
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_commands.h"
#include "cli_image_args.h"
#include "cli_util.h"

enum {
    OPT_ADD = CLI_OPT_OWN,
    OPT_REMOVE,
    OPT_CLEAR,
    OPT_ENABLE,
    OPT_DISABLE,
    OPT_MERGE,
};

struct action {
    int op;          /* OPT_ADD ... OPT_MERGE */
    const char *src; /* --merge's source bitmap */
};

static const char *op_name(int op)
{
    static const char *const names[] = {"add", "remove", "clear", "enable", "disable", "merge"};
    return names[op - OPT_ADD];
}

static int apply(img *image, const char *bitmap, const struct action *a, uint64_t granularity,
                 img *src)
{
    switch (a->op) {
    case OPT_ADD:
        return img_bitmap_add(image, bitmap, granularity, 0);
    case OPT_REMOVE:
        return img_bitmap_remove(image, bitmap);
    case OPT_CLEAR:
        return img_bitmap_clear(image, bitmap);
    case OPT_ENABLE:
        return img_bitmap_enable(image, bitmap);
    case OPT_DISABLE:
        return img_bitmap_disable(image, bitmap);
    default:
        return img_bitmap_merge(image, bitmap, src, a->src);
    }
}

/* The library's message without the "FILE: " it starts with: qemu-img names no file there. */
static const char *reason(const char *filename, const char *src_file)
{
    const char *msg = img_last_error();
    const char *names[] = {filename, src_file};
    for (size_t i = 0; i < 2; i++) {
        size_t n = names[i] ? strlen(names[i]) : 0;
        if (n && strncmp(msg, names[i], n) == 0 && strncmp(msg + n, ": ", 2) == 0)
            return msg + n + 2;
    }
    return msg;
}

int cmd_bitmap(int argc, char **argv)
{
    static const struct option long_options[] = {
        CLI_LONG_HELP,
        {"add", no_argument, NULL, OPT_ADD},
        {"remove", no_argument, NULL, OPT_REMOVE},
        {"clear", no_argument, NULL, OPT_CLEAR},
        {"enable", no_argument, NULL, OPT_ENABLE},
        {"disable", no_argument, NULL, OPT_DISABLE},
        {"merge", required_argument, NULL, OPT_MERGE},
        {"granularity", required_argument, NULL, 'g'},
        {"source-file", required_argument, NULL, 'b'},
        {"source-format", required_argument, NULL, 'F'},
        {NULL, 0, NULL, 0},
    };
    struct cli_image_args args = {.format = NULL};
    const char *src_file = NULL, *src_fmt = NULL;
    uint64_t granularity = 0;
    bool add = false, merge = false;
    /* Every option may be an action: argc bounds their number. */
    struct action *actions = calloc((size_t)argc + 1, sizeof(*actions));
    size_t nb_actions = 0;
    int c, status = CLI_EXIT_FAILURE;
    if (!actions) {
        cli_error("out of memory");
        return CLI_EXIT_FAILURE;
    }

    while ((c = cli_image_getopt(argc, argv, ":b:f:F:g:h", long_options, &args)) != -1) {
        switch (c) {
        case 'b':
            src_file = optarg;
            break;
        case 'F':
            src_fmt = optarg;
            break;
        case 'g': {
            int ret = cli_parse_size(optarg, &granularity);
            if (ret < 0) {
                cli_size_error(ret, "granularity");
                goto out;
            }
            break;
        }
        case OPT_ADD:
        case OPT_REMOVE:
        case OPT_CLEAR:
        case OPT_ENABLE:
        case OPT_DISABLE:
        case OPT_MERGE:
            actions[nb_actions].op = c;
            actions[nb_actions++].src = c == OPT_MERGE ? optarg : NULL;
            add |= c == OPT_ADD;
            merge |= c == OPT_MERGE;
            break;
        default:
            status = cli_getopt_error(c, argv);
            goto out;
        }
    }
    if (args.stop) {
        status = args.status;
        goto out;
    }
    if (nb_actions == 0) {
        cli_error("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge");
        goto out;
    }
    if (granularity && !add) {
        cli_error("granularity only supported with --add");
        goto out;
    }
    if (src_fmt && !src_file) {
        cli_error("-F only supported with -b");
        goto out;
    }
    if (src_file && !merge) {
        cli_error("Merge bitmap source file only supported with --merge");
        goto out;
    }
    if (optind != argc - 2) {
        cli_error("Expecting filename and bitmap name");
        goto out;
    }
    const char *filename = argv[optind];
    const char *bitmap = argv[optind + 1];

    img *image = NULL, *src = NULL;
    if (cli_open_image(&image, filename, args.format, IMG_OPEN_READ_WRITE) != 0)
        goto out;
    if (src_file && cli_open_image(&src, src_file, src_fmt, 0) != 0) {
        img_close(image);
        goto out;
    }
    status = 0;
    for (size_t i = 0; i < nb_actions; i++) {
        if (apply(image, bitmap, &actions[i], granularity, src) < 0) {
            cli_error("Operation %s on bitmap %s failed: %s", op_name(actions[i].op), bitmap,
                      reason(filename, src_file));
            status = CLI_EXIT_FAILURE;
            break;
        }
    }
    img_close(src);
    img_close(image);
out:
    free(actions);
    return status;
}
