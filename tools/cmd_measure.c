/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* imgutil measure: how large a converted or new image would be, as qemu-img measure says. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli_commands.h"
#include "cli_image_args.h"
#include "cli_json.h"
#include "cli_snapshot_view.h"
#include "cli_util.h"

enum {
    OPT_SIZE = CLI_OPT_OWN,
    OPT_IMAGE_OPTS,
    OPT_OBJECT,
};

struct measure_args {
    struct cli_image_args image;
    const char *out_format;
    const char *snapshot; /* -l */
    bool has_size;
    uint64_t size;
    img_opts *opts;
    bool opts_help;
};

/* Parses the options; returns -1 to go on, or the exit status when the command is over. */
static int parse_options(int argc, char **argv, struct measure_args *a)
{
    static const struct option long_options[] = {
        CLI_LONG_HELP,
        CLI_LONG_FORMAT,
        CLI_LONG_FORCE_SHARE,
        CLI_LONG_OUTPUT,
        {"size", required_argument, NULL, OPT_SIZE},
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {"object", required_argument, NULL, OPT_OBJECT},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = cli_image_getopt(argc, argv, ":hf:O:o:l:U", long_options, &a->image)) != -1) {
        switch (c) {
        case 'O':
            a->out_format = optarg;
            break;
        case 'o':
            if (cli_opts_add(&a->opts, optarg, &a->opts_help))
                return CLI_EXIT_FAILURE;
            break;
        case 'l':
            a->snapshot = optarg;
            break;
        case OPT_SIZE: {
            int ret = cli_parse_size(optarg, &a->size);
            if (ret < 0) {
                cli_size_error(ret, "image size");
                return CLI_EXIT_FAILURE;
            }
            a->has_size = true;
            break;
        }
        case OPT_IMAGE_OPTS:
        case OPT_OBJECT:
            cli_error("--image-opts and --object are not supported");
            return CLI_EXIT_FAILURE;
        default:
            return cli_getopt_error(c, argv);
        }
    }
    return a->image.stop ? a->image.status : -1;
}

/* qemu-img's human output: one line per figure. */
static int print_human(const char *json)
{
    struct json_value *v;
    if (json_parse(json, &v) < 0) {
        cli_error("cannot read the measurement");
        return CLI_EXIT_FAILURE;
    }
    int64_t required = json_i64_or(v, "required", 0);
    int64_t full = json_i64_or(v, "fully-allocated", 0);
    int64_t bitmaps;
    bool has_bitmaps = json_get_i64(v, "bitmaps", &bitmaps);
    printf("required size: %" PRId64 "\n", required);
    printf("fully allocated size: %" PRId64 "\n", full);
    if (has_bitmaps)
        printf("bitmaps size: %" PRId64 "\n", bitmaps);
    json_free(v);
    return 0;
}

/* Library messages about -o keys and values come with qemu-img's second line. */
static bool is_option_error(const char *message)
{
    return strncmp(message, "Invalid parameter '", 19) == 0 ||
           strncmp(message, "Parameter '", 11) == 0;
}

static int measure(struct measure_args *a, const char *filename)
{
    img *src = NULL;
    if (filename) {
        unsigned flags = IMG_OPEN_READ_ONLY | a->image.share;
        int ret = a->snapshot ? cli_open_snapshot_view(&src, filename, a->image.format, flags,
                                                       a->snapshot)
                              : cli_open_image(&src, filename, a->image.format, flags);
        if (ret < 0)
            return CLI_EXIT_FAILURE;
    }
    if (a->opts_help) {
        cli_error("Invalid parameter 'help'");
        cli_error("Invalid options for file format '%s'", a->out_format);
        img_close(src);
        return CLI_EXIT_FAILURE;
    }
    char *json = NULL;
    int ret = img_measure(src, src ? 0 : a->size, a->out_format, a->opts, &json);
    img_close(src);
    if (ret < 0) {
        cli_error("%s", img_last_error());
        if (ret == -EINVAL && is_option_error(img_last_error()))
            cli_error("Invalid options for file format '%s'", a->out_format);
        return CLI_EXIT_FAILURE;
    }
    int status = 0;
    if (a->image.output == CLI_OUTPUT_JSON)
        cli_print_json(json);
    else
        status = print_human(json);
    img_free(json);
    return status;
}

int cmd_measure(int argc, char **argv)
{
    struct measure_args a = {.out_format = "raw", .image.output = CLI_OUTPUT_HUMAN};
    int status = parse_options(argc, argv, &a);
    if (status >= 0)
        goto out;
    status = CLI_EXIT_FAILURE;

    /* The checks of qemu-img measure, in its order and words. */
    const char *filename = NULL;
    if (argc - optind > 1) {
        cli_error("At most one filename argument is allowed.");
        goto out;
    }
    if (argc - optind == 1)
        filename = argv[optind];
    if (!filename && (a.image.format || a.snapshot)) {
        cli_error("--image-opts, -f, and -l require a filename argument.");
        goto out;
    }
    if (filename && a.has_size) {
        cli_error("--size N cannot be used together with a filename.");
        goto out;
    }
    if (!filename && !a.has_size) {
        cli_error("Either --size N or one filename must be specified.");
        goto out;
    }
    status = measure(&a, filename);
out:
    img_opts_free(a.opts);
    return status;
}
