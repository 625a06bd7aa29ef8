/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * imgutil rebase: moves an image onto another backing file, as qemu-img 7.2 rebase does,
 * with its checks in its order, its messages and its exit status.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli_commands.h"
#include "cli_image_args.h"
#include "cli_progress.h"
#include "cli_util.h"

static int run_rebase(img *image, const char *backing, const char *backing_fmt, unsigned flags,
                      bool show_progress)
{
    struct cli_progress progress;
    cli_progress_start(&progress, show_progress);
    img_set_progress(image, cli_progress_update, &progress);
    int ret = img_rebase(image, backing, backing_fmt, flags);
    cli_progress_finish(&progress, ret == 0);
    if (ret < 0)
        cli_error("%s", img_last_error());
    return ret;
}

int cmd_rebase(int argc, char **argv)
{
    static const struct option long_options[] = {
        CLI_LONG_HELP,
        CLI_LONG_FORCE_SHARE,
        {NULL, 0, NULL, 0},
    };
    struct cli_image_args args = {.format = NULL};
    const char *backing = NULL, *backing_fmt = NULL;
    const char *cache = "writeback", *src_cache = "writeback";
    bool unsafe = false, show_progress = false;
    int c;

    while ((c = cli_image_getopt(argc, argv, ":hf:F:b:upt:T:qU", long_options, &args)) != -1) {
        switch (c) {
        case 'F':
            backing_fmt = optarg;
            break;
        case 'b':
            backing = optarg;
            break;
        case 'u':
            unsafe = true;
            break;
        case 'p':
            show_progress = true;
            break;
        case 't':
            cache = optarg;
            break;
        case 'T':
            src_cache = optarg;
            break;
        default:
            return cli_getopt_error(c, argv);
        }
    }
    if (args.stop)
        return args.status;
    if (args.quiet)
        show_progress = false;
    if (optind != argc - 1)
        return cli_usage_error("Expecting one image file name");
    if (!unsafe && !backing)
        return cli_usage_error("Must specify backing file (-b) or use unsafe mode (-u)");
    const char *filename = argv[optind];
    if (!cli_is_cache_mode(cache)) {
        cli_error("Invalid cache option: %s", cache);
        return CLI_EXIT_FAILURE;
    }
    if (!cli_is_cache_mode(src_cache)) {
        cli_error("Invalid source cache option: %s", src_cache);
        return CLI_EXIT_FAILURE;
    }

    /* -U is for the new backing file: the image itself is written, under its lock. */
    img *image;
    unsigned open_flags = IMG_OPEN_READ_WRITE | (unsafe ? IMG_OPEN_NO_BACKING : 0);
    if (cli_open_image(&image, filename, args.format, open_flags) < 0)
        return CLI_EXIT_FAILURE;
    int status = CLI_EXIT_FAILURE;
    if (backing_fmt && img_format_supports(backing_fmt, "read") < 0) {
        cli_error("Invalid format name: '%s'", backing_fmt);
        goto out;
    }
    unsigned flags = (unsafe ? IMG_REBASE_UNSAFE : 0) | (args.share ? IMG_REBASE_FORCE_SHARE : 0);
    int ret = run_rebase(image, backing, backing_fmt, flags, show_progress);
    if (ret == 0)
        status = 0;
    img_close(image);
    /* Interrupted: the guest view is as it was; end the way an uncaught signal would. */
    if (ret == -ECANCELED)
        cli_progress_reraise();
    return status;
out:
    img_close(image);
    return status;
}
