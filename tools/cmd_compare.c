/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * imgutil compare: compares the guest content of two images with img_compare(), and words the
 * result as qemu-img compare does, with its exit codes.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli_commands.h"
#include "cli_image_args.h"
#include "cli_progress.h"
#include "cli_util.h"

/* qemu-img compare's exit codes. */
#define COMPARE_EXIT_DIFFERENT 1
#define COMPARE_EXIT_OPEN 2
#define COMPARE_EXIT_STATUS 3
#define COMPARE_EXIT_READ 4

struct side {
    const char *filename;
    img *image;
    int64_t size;
};

static int open_side(struct side *s, const char *format, unsigned flags)
{
    if (cli_open_image(&s->image, s->filename, format, flags) < 0)
        return COMPARE_EXIT_OPEN;
    s->size = img_get_size(s->image);
    if (s->size < 0) {
        cli_lib_error("Can't get size of %s", s->filename);
        return COMPARE_EXIT_OPEN;
    }
    return 0;
}

/* What qemu-img prints for img_compare()'s answer, and its exit code. */
static int report(int result, uint64_t offset, const struct side *a, const struct side *b,
                  bool quiet)
{
    if (result < 0) {
        if (result == -ECANCELED && cli_progress_interrupted())
            return CLI_EXIT_FAILURE;
        const char *message = img_last_error();
        cli_error("%s", message);
        return strncmp(message, "Sector allocation", 17) == 0 ? COMPARE_EXIT_STATUS
                                                              : COMPARE_EXIT_READ;
    }
    uint64_t common = (uint64_t)(a->size < b->size ? a->size : b->size);
    /* qemu-img warns once the common part compared equal, before looking at the rest. */
    bool warn =
        a->size != b->size && (result == IMG_COMPARE_IDENTICAL ||
                               (result == IMG_COMPARE_CONTENT_MISMATCH && offset >= common));
    if (quiet)
        return result == IMG_COMPARE_IDENTICAL ? 0 : COMPARE_EXIT_DIFFERENT;
    if (warn)
        printf("Warning: Image size mismatch!\n");
    switch (result) {
    case IMG_COMPARE_IDENTICAL:
        printf("Images are identical.\n");
        return 0;
    case IMG_COMPARE_SIZE_MISMATCH:
        printf("Strict mode: Image size mismatch!\n");
        break;
    case IMG_COMPARE_STATUS_MISMATCH:
        printf("Strict mode: Offset %" PRIu64 " block status mismatch!\n", offset);
        break;
    default:
        printf("Content mismatch at offset %" PRIu64 "!\n", offset);
        break;
    }
    return COMPARE_EXIT_DIFFERENT;
}

int cmd_compare(int argc, char **argv)
{
    static const struct option long_options[] = {
        CLI_LONG_HELP,
        CLI_LONG_FORCE_SHARE,
        {NULL, 0, NULL, 0},
    };
    struct cli_image_args args = {.format = NULL};
    const char *format_b = NULL;
    struct side a = {0}, b = {0};
    bool show_progress = false, strict = false;
    int c;

    while ((c = cli_image_getopt(argc, argv, ":hf:F:pqsU", long_options, &args)) != -1) {
        switch (c) {
        case 'F':
            format_b = optarg;
            break;
        case 'p':
            show_progress = true;
            break;
        case 's':
            strict = true;
            break;
        default:
            return cli_getopt_error(c, argv);
        }
    }
    if (args.stop)
        return args.status;
    unsigned flags = IMG_OPEN_READ_ONLY | args.share;
    if (optind != argc - 2)
        return cli_usage_error("Expecting two image file names");
    a.filename = argv[optind];
    b.filename = argv[optind + 1];

    int status = open_side(&a, args.format, flags);
    if (!status)
        status = open_side(&b, format_b, flags);
    if (!status) {
        struct cli_progress progress;
        cli_progress_start(&progress, show_progress && !args.quiet);
        img_set_progress(a.image, cli_progress_update, &progress);
        uint64_t offset = 0;
        int result = img_compare(a.image, b.image, strict ? IMG_COMPARE_STRICT : 0, &offset);
        cli_progress_finish(&progress, result == IMG_COMPARE_IDENTICAL);
        status = report(result, offset, &a, &b, args.quiet);
    }
    img_close(a.image);
    img_close(b.image);
    cli_progress_reraise();
    return status;
}
