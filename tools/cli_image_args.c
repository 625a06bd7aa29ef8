/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "cli_image_args.h"

int cli_image_getopt(int argc, char **argv, const char *optstring, const struct option *longopts,
                     struct cli_image_args *args)
{
    int c;
    while ((c = getopt_long(argc, argv, optstring, longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            cli_print_help();
            args->stop = true;
            args->status = 0;
            return -1;
        case 'f':
            args->format = optarg;
            break;
        case 'q':
            args->quiet = true;
            break;
        case 'U':
            args->share = IMG_OPEN_FORCE_SHARE;
            break;
        case CLI_OPT_OUTPUT:
            if (cli_parse_output(optarg, &args->output) < 0) {
                args->stop = true;
                args->status = CLI_EXIT_FAILURE;
                return -1;
            }
            break;
        default:
            return c;
        }
    }
    return -1;
}

bool cli_image_open(int argc, char **argv, const char *usage_error, struct cli_image_args *args,
                    unsigned flags, img **image)
{
    if (args->stop)
        return false;
    args->status = CLI_EXIT_FAILURE;
    if (optind != argc - 1) {
        cli_usage_error("%s", usage_error);
        return false;
    }
    args->filename = argv[optind];
    return cli_open_image(image, args->filename, args->format, flags | args->share) == 0;
}
