/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* imgutil convert: copies an image into a new one through img_convert(). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_commands.h"
#include "cli_convert_bitmaps.h"
#include "cli_create_options.h"
#include "cli_progress.h"
#include "cli_util.h"

/* qemu-img's bounds for -S: whole sectors, at most its 16 MiB copy buffer. */
#define SPARSE_SIZE_ALIGN 512
#define SPARSE_SIZE_MAX (32768 * 512)
/* qemu-img's bounds for -m, accepted for compatibility. */
#define COROUTINES_MAX 16

/* Long options without a short form (qemu-img's). */
enum { OPT_BITMAPS = 256, OPT_SKIP_BROKEN_BITMAPS };

static bool is_cache_mode(const char *mode)
{
    static const char *const modes[] = {"none",       "writeback", "writethrough",
                                        "directsync", "unsafe",    NULL};
    for (size_t i = 0; modes[i]; i++)
        if (strcmp(mode, modes[i]) == 0)
            return true;
    return false;
}

static int set_sparse_size(img_opts **opts, const char *arg)
{
    uint64_t size;
    int ret = cli_parse_size(arg, &size);
    if (ret < 0) {
        cli_size_error(ret, "buffer size for sparse output");
        return CLI_EXIT_FAILURE;
    }
    if (size % SPARSE_SIZE_ALIGN || size > SPARSE_SIZE_MAX) {
        cli_error("Invalid buffer size for sparse output specified. Valid sizes are multiples "
                  "of %d up to %d. Select 0 to disable sparse detection (fully allocates "
                  "output).",
                  SPARSE_SIZE_ALIGN, SPARSE_SIZE_MAX);
        return CLI_EXIT_FAILURE;
    }
    char text[32];
    snprintf(text, sizeof(text), "%" PRIu64, size);
    return cli_opts_set(opts, "sparse_size", text);
}

static int run_convert(img *src, const char *dst, const char *dst_format, const img_opts *opts,
                       bool show_progress)
{
    struct cli_progress progress;
    cli_progress_start(&progress, show_progress);
    int ret = img_convert(src, dst, dst_format, opts, cli_progress_update, &progress);
    cli_progress_finish(&progress, ret == 0);
    if (ret == -ECANCELED && cli_progress_interrupted()) {
        cli_error("convert: interrupted; '%s' was not written", dst);
        return ret;
    }
    if (ret < 0)
        cli_lib_error("Could not convert to '%s'", dst);
    return ret;
}

int cmd_convert(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"force-share", no_argument, NULL, 'U'},
        {"bitmaps", no_argument, NULL, OPT_BITMAPS},
        {"skip-broken-bitmaps", no_argument, NULL, OPT_SKIP_BROKEN_BITMAPS},
        {NULL, 0, NULL, 0},
    };
    const char *src_format = NULL, *dst_format = "raw";
    img_opts *opts = NULL;
    unsigned flags = IMG_OPEN_READ_ONLY;
    bool show_progress = false, quiet = false, help = false;
    bool bitmaps = false, skip_broken_bitmaps = false;
    int status = CLI_EXIT_FAILURE, c;
    char *end;

    while ((c = getopt_long(argc, argv, ":hf:O:o:S:pcqUt:T:m:W", long_options, NULL)) != -1) {
        switch (c) {
        case 'h':
            cli_print_help();
            status = 0;
            goto out;
        case 'f':
            src_format = optarg;
            break;
        case 'O':
            dst_format = optarg;
            break;
        case 'o':
            if (cli_opts_add(&opts, optarg, &help))
                goto out;
            break;
        case 'S':
            if (set_sparse_size(&opts, optarg))
                goto out;
            break;
        case 'c':
            if (cli_opts_set(&opts, "compress", "on"))
                goto out;
            break;
        case 'p':
            show_progress = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'U':
            flags |= IMG_OPEN_FORCE_SHARE;
            break;
        case 't':
        case 'T':
            /* Cache modes only tune performance here; accept qemu-img's names. */
            if (!is_cache_mode(optarg)) {
                cli_error("Invalid %scache option: %s", c == 'T' ? "source " : "", optarg);
                goto out;
            }
            break;
        case 'm': {
            long n = strtol(optarg, &end, 10);
            if (*end || end == optarg || n < 1 || n > COROUTINES_MAX) {
                cli_error("Invalid number of coroutines. Allowed number of coroutines is "
                          "between 1 and %d",
                          COROUTINES_MAX);
                goto out;
            }
            break;
        }
        case 'W':
            /* The library already writes out of order where that is safe. */
            break;
        case OPT_BITMAPS:
            bitmaps = true;
            break;
        case OPT_SKIP_BROKEN_BITMAPS:
            skip_broken_bitmaps = true;
            break;
        default:
            status = cli_getopt_error(c, argv);
            goto out;
        }
    }
    /* Like qemu-img, -o help lists the target format's options and converts nothing. */
    if (help) {
        status = cli_print_create_options(dst_format);
        goto out;
    }
    if (skip_broken_bitmaps && !bitmaps) {
        cli_error("Use of --skip-broken-bitmaps requires --bitmaps");
        goto out;
    }
    if (argc - optind < 2) {
        status = cli_usage_error("Must specify image file name");
        goto out;
    }
    if (argc - optind > 2) {
        cli_error("convert: only one source image is supported");
        goto out;
    }
    const char *src_path = argv[optind], *dst_path = argv[optind + 1];

    img *src;
    if (cli_open_image(&src, src_path, src_format, flags) < 0)
        goto out;
    /* Like qemu-img, once the source is open: a target format it cannot create, in its words. */
    int can_create = img_format_supports(dst_format, "create");
    if (can_create != 1) {
        if (can_create == -ENOENT)
            cli_error("Unknown file format '%s'", dst_format);
        else
            cli_error("Format driver '%s' does not support image creation", dst_format);
        img_close(src);
        goto out;
    }
    if (bitmaps && cli_convert_bitmaps_check(src, dst_format, skip_broken_bitmaps)) {
        img_close(src);
        goto out;
    }
    int ret = run_convert(src, dst_path, dst_format, opts, show_progress && !quiet);
    status = ret < 0 ? CLI_EXIT_FAILURE : 0;
    if (ret == 0 && bitmaps)
        status = cli_convert_bitmaps_copy(src, dst_path, dst_format, skip_broken_bitmaps);
    img_close(src);
    /* An interrupted copy ends the way an uncaught signal would, once it has cleaned up. */
    if (ret == -ECANCELED) {
        img_opts_free(opts);
        opts = NULL;
        cli_progress_reraise();
    }
out:
    img_opts_free(opts);
    return status;
}
