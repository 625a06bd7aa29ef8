/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* imgutil snapshot: lists, creates, applies and deletes internal snapshots. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>

#include "cli_commands.h"
#include "cli_image_args.h"
#include "cli_json.h"
#include "cli_snapshots.h"
#include "cli_util.h"

enum snapshot_action {
    ACTION_NONE,
    ACTION_LIST,
    ACTION_CREATE,
    ACTION_APPLY,
    ACTION_DELETE,
};

static int list_snapshots(img *image, const char *filename)
{
    char *json = NULL;
    int ret = img_snapshot_list(image, &json);
    /* A format without snapshots simply has none to list, as with qemu-img. */
    if (ret == -ENOTSUP)
        return 0;
    if (ret < 0) {
        cli_lib_error("Could not list the snapshots of '%s'", filename);
        return CLI_EXIT_FAILURE;
    }
    struct json_value *doc;
    if (json_parse(json, &doc) < 0) {
        img_free(json);
        cli_error("snapshot: the library returned unreadable JSON");
        return CLI_EXIT_FAILURE;
    }
    cli_print_snapshot_table(doc);
    json_free(doc);
    img_free(json);
    return 0;
}

static int change_snapshot(img *image, enum snapshot_action action, const char *tag)
{
    int ret;
    const char *verb;
    switch (action) {
    case ACTION_CREATE:
        ret = img_snapshot_create(image, tag);
        verb = "create";
        break;
    case ACTION_APPLY:
        ret = img_snapshot_apply(image, tag);
        verb = "apply";
        break;
    default:
        ret = img_snapshot_delete(image, tag);
        verb = "delete";
        break;
    }
    if (ret == 0)
        ret = img_flush(image);
    if (ret < 0) {
        cli_lib_error("Could not %s snapshot '%s'", verb, tag);
        return CLI_EXIT_FAILURE;
    }
    return 0;
}

int cmd_snapshot(int argc, char **argv)
{
    static const struct option long_options[] = {
        CLI_LONG_HELP,
        CLI_LONG_FORCE_SHARE,
        {NULL, 0, NULL, 0},
    };
    struct cli_image_args args = {.format = NULL};
    enum snapshot_action action = ACTION_NONE;
    const char *tag = NULL;
    int c;

    /* -q is taken and ignored: nothing is printed on success anyway. */
    while ((c = cli_image_getopt(argc, argv, ":hla:c:d:f:qU", long_options, &args)) != -1) {
        enum snapshot_action chosen;
        switch (c) {
        case 'l':
            chosen = ACTION_LIST;
            break;
        case 'a':
            chosen = ACTION_APPLY;
            break;
        case 'c':
            chosen = ACTION_CREATE;
            break;
        case 'd':
            chosen = ACTION_DELETE;
            break;
        default:
            return cli_getopt_error(c, argv);
        }
        if (action != ACTION_NONE)
            return cli_usage_error("Cannot mix '-l', '-a', '-c', '-d'");
        action = chosen;
        tag = optarg;
    }

    /* Snapshots live in this image's metadata: its backing file is never needed. */
    unsigned flags = IMG_OPEN_NO_BACKING;
    flags |=
        action == ACTION_LIST || action == ACTION_NONE ? IMG_OPEN_READ_ONLY : IMG_OPEN_READ_WRITE;
    img *image;
    if (!cli_image_open(argc, argv, "Expecting one image file name", &args, flags, &image))
        return args.status;
    const char *filename = args.filename;

    int status = 0;
    if (action == ACTION_LIST)
        status = list_snapshots(image, filename);
    else if (action != ACTION_NONE)
        status = change_snapshot(image, action, tag);
    img_close(image);
    return status;
}
