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
#include "cli_snapshot_view.h"
#include "cli_util.h"

/* qemu-img's bounds for -S: whole sectors, at most its 16 MiB copy buffer. */
#define SPARSE_SIZE_ALIGN 512
#define SPARSE_SIZE_MAX (32768 * 512)
/* qemu-img's bounds for -m. */
#define COROUTINES_MAX 16

/* Long options without a short form. */
enum { OPT_TARGET_IS_ZERO = 256, OPT_SALVAGE, OPT_BITMAPS, OPT_SKIP_BROKEN_BITMAPS };

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

/* Does `format` create images with a backing file (is "backing_file" a creation option)? */
static bool creates_backing_file(const char *format)
{
    char *json = NULL;
    bool found = img_format_options_json(format, &json) == 0 &&
                 strstr(json, "\"name\": \"backing_file\"") != NULL;
    img_free(json);
    return found;
}

/*
 * What qemu-img refuses once the sources are open, in its order and words (NULL: nothing).
 * The message may be one this function formats into a static buffer.
 */
static const char *convert_refusal(const img_opts *opts, const char *dst_format, size_t nsrcs,
                                   const char *snapshot, bool skip_create)
{
    static char message[256];
    bool snapshot_param = snapshot && strncmp(snapshot, "snapshot.", 9) == 0;
    if (snapshot && !snapshot_param && nsrcs > 1)
        return "No support for concatenating multiple snapshot";
    int can_create = skip_create ? 1 : img_format_supports(dst_format, "create");
    if (can_create == -ENOENT) {
        snprintf(message, sizeof(message), "Unknown file format '%s'", dst_format);
        return message;
    }
    if (can_create != 1) {
        snprintf(message, sizeof(message), "Format driver '%s' does not support image creation",
                 dst_format);
        return message;
    }
    /* The target's backing file (-B, -F or -o backing_file). */
    const char *backing = img_opts_get(opts, "backing_file");
    if (backing && !skip_create && !creates_backing_file(dst_format)) {
        snprintf(message, sizeof(message), "Backing file not supported for file format '%s'",
                 dst_format);
        return message;
    }
    if (backing && img_opts_get(opts, "target_is_zero"))
        return "Cannot use --target-is-zero when the destination image has a backing file";
    if (backing && nsrcs > 1)
        return "Having a backing file for the target makes no sense when concatenating "
               "multiple input images";
    if (backing && !skip_create && !img_opts_get(opts, "backing_fmt"))
        return "Use of backing file requires explicit backing format";
    return NULL;
}

static int run_convert(img **srcs, size_t nsrcs, const char *dst, const char *dst_format,
                       const img_opts *opts, bool skip_create, bool show_progress)
{
    struct cli_progress progress;
    cli_progress_start(&progress, show_progress);
    int ret = img_convert_many(srcs, nsrcs, dst, dst_format, opts, cli_progress_update, &progress);
    cli_progress_finish(&progress, ret == 0);
    if (ret == -ECANCELED && cli_progress_interrupted()) {
        cli_error("convert: interrupted; '%s' was not written", dst);
        return ret;
    }
    /* -n: the target's problems (it cannot be opened, it is too small) in qemu-img's words. */
    const char *message = img_last_error();
    const char *too_small = "output file is smaller than input file";
    size_t n = strlen(message), m = strlen(too_small);
    if (ret < 0 && skip_create && n >= m && strcmp(message + n - m, too_small) == 0)
        cli_error("%s", too_small);
    else if (ret == -ENOENT && skip_create)
        cli_error("Could not open '%s': Could not open '%s': %s", dst, dst, strerror(ENOENT));
    else if (ret < 0 && skip_create)
        cli_lib_error("Could not open '%s'", dst);
    else if (ret < 0)
        cli_lib_error("Could not convert to '%s'", dst);
    return ret;
}

int cmd_convert(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"force-share", no_argument, NULL, 'U'},
        {"target-is-zero", no_argument, NULL, OPT_TARGET_IS_ZERO},
        {"salvage", no_argument, NULL, OPT_SALVAGE},
        {"bitmaps", no_argument, NULL, OPT_BITMAPS},
        {"skip-broken-bitmaps", no_argument, NULL, OPT_SKIP_BROKEN_BITMAPS},
        {NULL, 0, NULL, 0},
    };
    const char *src_format = NULL, *dst_format = "raw";
    img_opts *opts = NULL;
    unsigned flags = IMG_OPEN_READ_ONLY;
    bool show_progress = false, quiet = false, help = false, skip_create = false;
    bool bitmaps = false, skip_broken_bitmaps = false;
    bool have_create_options = false;
    const char *snapshot = NULL; /* -l */
    int status = CLI_EXIT_FAILURE, c;
    char *end;

    while ((c = getopt_long(argc, argv, ":hf:O:B:F:o:S:l:pcnCqUt:T:m:Wr:", long_options, NULL)) !=
           -1) {
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
            have_create_options = true;
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
            if (!cli_is_cache_mode(optarg)) {
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
            if (cli_opts_set(&opts, "num_coroutines", optarg))
                goto out;
            break;
        }
        case 'W':
            if (cli_opts_set(&opts, "out_of_order", "on"))
                goto out;
            break;
        case 'B':
            if (cli_opts_set(&opts, "backing_file", optarg))
                goto out;
            break;
        case 'F':
            if (cli_opts_set(&opts, "backing_fmt", optarg))
                goto out;
            break;
        case 'n':
            skip_create = true;
            break;
        case 'l':
            snapshot = optarg;
            break;
        case 'C':
            if (cli_opts_set(&opts, "copy_range", "on"))
                goto out;
            break;
        case OPT_TARGET_IS_ZERO:
            if (cli_opts_set(&opts, "target_is_zero", "on"))
                goto out;
            break;
        case OPT_SALVAGE:
            /* Each read error becomes zeros and a warning on stderr, in qemu-img's words. */
            if (cli_opts_set(&opts, "salvage", "on") ||
                cli_opts_set(&opts, "salvage_log_fd", "2") ||
                cli_opts_set(&opts, "salvage_log_prefix", "imgutil: "))
                goto out;
            break;
        case 'r': {
            uint64_t rate;
            int err = cli_parse_size(optarg, &rate);
            if (err < 0) {
                cli_size_error(err, "rate limit");
                goto out;
            }
            if (cli_opts_set(&opts, "rate_limit", optarg))
                goto out;
            break;
        }
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
    /* The checks qemu-img makes before it opens anything, in its order and words. */
    if (skip_create && have_create_options) {
        cli_error("-o has no effect when skipping image creation");
        goto out;
    }
    if (skip_create && cli_opts_set(&opts, "skip_create", "on"))
        goto out;
    const char *early_error =
        img_opts_get(opts, "copy_range") && img_opts_get(opts, "compress")
            ? "Cannot enable copy offloading when -c is used"
        : img_opts_get(opts, "copy_range") && img_opts_get(opts, "sparse_size")
            ? "Cannot enable copy offloading when -S is used"
        : img_opts_get(opts, "copy_range") && img_opts_get(opts, "salvage")
            ? "Cannot use copy offloading in salvaging mode"
        : img_opts_get(opts, "target_is_zero") && !skip_create
            ? "--target-is-zero requires use of -n flag"
            : NULL;
    if (early_error) {
        cli_error("%s", early_error);
        goto out;
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
    /* Sources, then the target: several sources are concatenated. */
    size_t nsrcs = (size_t)(argc - optind - 1);
    const char *dst_path = argv[argc - 1];
    img **srcs = calloc(nsrcs, sizeof(*srcs));
    if (!srcs) {
        cli_error("out of memory");
        goto out;
    }
    size_t opened = 0;
    for (; opened < nsrcs; opened++) {
        const char *path = argv[optind + (int)opened];
        /* A snapshot_param (snapshot.id=...) names a snapshot of the first source only. */
        int ret = snapshot && opened == 0
                      ? cli_open_snapshot_view(&srcs[0], path, src_format, flags, snapshot)
                      : cli_open_image(&srcs[opened], path, src_format, flags);
        if (ret < 0)
            goto close_sources;
    }
    const char *problem = convert_refusal(opts, dst_format, nsrcs, snapshot, skip_create);
    if (problem) {
        cli_error("%s", problem);
        goto close_sources;
    }
    if (bitmaps && nsrcs > 1) {
        cli_error("Copying bitmaps only possible with single source");
        goto close_sources;
    }
    if (bitmaps && cli_convert_bitmaps_check(srcs[0], dst_format, skip_broken_bitmaps))
        goto close_sources;
    int ret =
        run_convert(srcs, nsrcs, dst_path, dst_format, opts, skip_create, show_progress && !quiet);
    status = ret < 0 ? CLI_EXIT_FAILURE : 0;
    if (ret == 0 && bitmaps)
        status = cli_convert_bitmaps_copy(srcs[0], dst_path, dst_format, skip_broken_bitmaps);
    for (size_t i = 0; i < opened; i++)
        img_close(srcs[i]);
    free(srcs);
    /* An interrupted copy ends the way an uncaught signal would, once it has cleaned up. */
    if (ret == -ECANCELED) {
        img_opts_free(opts);
        opts = NULL;
        cli_progress_reraise();
    }
    goto out;
close_sources:
    for (size_t i = 0; i < opened; i++)
        img_close(srcs[i]);
    free(srcs);
out:
    img_opts_free(opts);
    return status;
}
