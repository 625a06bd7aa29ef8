/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* imgutil resize: changes an image's virtual size, as qemu-img resize does. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli_commands.h"
#include "cli_image_args.h"
#include "cli_util.h"

enum {
    OPT_SHRINK = CLI_OPT_OWN,
    OPT_PREALLOCATION,
};

static bool is_preallocation_mode(const char *mode)
{
    static const char *const modes[] = {"off", "metadata", "falloc", "full", NULL};
    for (size_t i = 0; modes[i]; i++)
        if (strcmp(mode, modes[i]) == 0)
            return true;
    return false;
}

/* The new size from "[+|-]SIZE" and the current size; -1 after reporting a problem. */
static int64_t new_size(const char *arg, int64_t current)
{
    int sign = 0;
    if (*arg == '+' || *arg == '-')
        sign = *arg++ == '+' ? 1 : -1;
    uint64_t n;
    int ret = cli_parse_size(arg, &n);
    if (ret < 0) {
        cli_size_error(ret, "image size");
        return -1;
    }
    int64_t size = (int64_t)n;
    if (sign > 0 && size > INT64_MAX - current) {
        cli_error("Invalid image size specified. Must be between 0 and %lld.",
                  (long long)INT64_MAX);
        return -1;
    }
    if (sign)
        size = current + sign * size;
    if (size <= 0) {
        cli_error("New image size must be positive");
        return -1;
    }
    return size;
}

int cmd_resize(int argc, char **argv)
{
    static const struct option long_options[] = {
        CLI_LONG_HELP,
        {"shrink", no_argument, NULL, OPT_SHRINK},
        {"preallocation", required_argument, NULL, OPT_PREALLOCATION},
        {NULL, 0, NULL, 0},
    };
    struct cli_image_args args = {.format = NULL};
    const char *preallocation = "off";
    bool shrink = false;
    int c;

    /* The size comes last and may start with '-': take it before getopt sees it as an option. */
    if (argc < 3) {
        if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
            cli_print_help();
            return 0;
        }
        return cli_usage_error("Not enough arguments");
    }
    const char *size_arg = argv[--argc];

    while ((c = cli_image_getopt(argc, argv, ":hf:q", long_options, &args)) != -1) {
        switch (c) {
        case OPT_SHRINK:
            shrink = true;
            break;
        case OPT_PREALLOCATION:
            if (!is_preallocation_mode(optarg)) {
                cli_error("Invalid preallocation mode '%s'", optarg);
                return CLI_EXIT_FAILURE;
            }
            preallocation = optarg;
            break;
        default:
            return cli_getopt_error(c, argv);
        }
    }

    img *image;
    if (!cli_image_open(argc, argv, "Expecting image file name and size", &args,
                        IMG_OPEN_READ_WRITE, &image))
        return args.status;
    const char *filename = args.filename;

    int status = CLI_EXIT_FAILURE;
    img_opts *opts = NULL;
    int64_t current = img_get_size(image);
    if (current < 0) {
        cli_lib_error("%s", filename);
        goto out;
    }
    int64_t size = new_size(size_arg, current);
    if (size < 0)
        goto out;
    bool preallocating = strcmp(preallocation, "off") != 0;
    if (size <= current && preallocating) {
        cli_error("Preallocation can only be used for growing images");
        goto out;
    }
    if (size < current && !shrink) {
        cli_error("Use the --shrink option to perform a shrink operation.");
        cli_error("warning: Shrinking an image will delete all data beyond the shrunken "
                  "image's end. Before performing such an operation, make sure there is no "
                  "important data there.");
        goto out;
    }
    if (preallocating && cli_opts_set(&opts, "preallocation", preallocation))
        goto out;
    if (img_format_supports(img_get_format(image), "resize") == 0) {
        cli_error("Image format driver does not support resize");
        goto out;
    }
    if (img_resize(image, (uint64_t)size, shrink ? IMG_RESIZE_SHRINK : 0, opts) < 0 ||
        img_flush(image) < 0) {
        cli_lib_error("Could not resize '%s'", filename);
        goto out;
    }
    if (!args.quiet)
        printf("Image resized.\n");
    status = 0;
out:
    img_opts_free(opts);
    img_close(image);
    return status;
}
