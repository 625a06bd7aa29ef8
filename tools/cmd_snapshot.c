/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* imgutil snapshot: lists, creates, applies and deletes internal snapshots. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>

#include "cli_commands.h"
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
        {"help", no_argument, NULL, 'h'},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    enum snapshot_action action = ACTION_NONE;
    const char *tag = NULL, *format = NULL;
    unsigned share = 0;
    int c;

    while ((c = getopt_long(argc, argv, ":hla:c:d:f:qU", long_options, NULL)) != -1) {
        enum snapshot_action chosen;
        switch (c) {
        case 'h':
            cli_print_help();
            return 0;
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
        case 'f':
            format = optarg;
            continue;
        case 'q':
            /* Nothing is printed on success anyway. */
            continue;
        case 'U':
            share = IMG_OPEN_FORCE_SHARE;
            continue;
        default:
            return cli_getopt_error(c, argv);
        }
        if (action != ACTION_NONE)
            return cli_usage_error("Cannot mix '-l', '-a', '-c', '-d'");
        action = chosen;
        tag = optarg;
    }
    if (optind != argc - 1)
        return cli_usage_error("Expecting one image file name");
    const char *filename = argv[optind];

    /* Snapshots live in this image's metadata: its backing file is never needed. */
    unsigned flags = IMG_OPEN_NO_BACKING | share;
    flags |=
        action == ACTION_LIST || action == ACTION_NONE ? IMG_OPEN_READ_ONLY : IMG_OPEN_READ_WRITE;
    img *image;
    if (cli_open_image(&image, filename, format, flags) < 0)
        return CLI_EXIT_FAILURE;

    int status = 0;
    if (action == ACTION_LIST)
        status = list_snapshots(image, filename);
    else if (action != ACTION_NONE)
        status = change_snapshot(image, action, tag);
    img_close(image);
    return status;
}
