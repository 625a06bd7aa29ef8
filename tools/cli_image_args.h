/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The options and operand of subcommands that work on one existing image. */
#ifndef CLI_IMAGE_ARGS_H
#define CLI_IMAGE_ARGS_H

#include <getopt.h>
#include <stdbool.h>

#include "cli_util.h"

/* getopt_long() value of --output; a subcommand numbers its own long options from CLI_OPT_OWN. */
#define CLI_OPT_OUTPUT 256
#define CLI_OPT_OWN 257

/* long_options entries for the options cli_image_option() knows. */
#define CLI_LONG_HELP                                                                              \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }
#define CLI_LONG_FORMAT                                                                            \
    {                                                                                              \
        "format", required_argument, NULL, 'f'                                                     \
    }
#define CLI_LONG_FORCE_SHARE                                                                       \
    {                                                                                              \
        "force-share", no_argument, NULL, 'U'                                                      \
    }
#define CLI_LONG_OUTPUT                                                                            \
    {                                                                                              \
        "output", required_argument, NULL, CLI_OPT_OUTPUT                                          \
    }

struct cli_image_args {
    const char *format;     /* -f, NULL to probe */
    unsigned share;         /* IMG_OPEN_FORCE_SHARE after -U */
    enum cli_output output; /* --output */
    bool quiet;             /* -q */
    bool stop;              /* an option ended the command: exit with `status` */
    int status;
    const char *filename; /* the operand, set by cli_image_open() */
};

/*
 * getopt_long() that applies -h, -f, -q, -U and --output itself, where `optstring` and
 * `longopts` accept them. Returns the next option that is the subcommand's own (or a bad one,
 * for cli_getopt_error()), or -1 when the options end or one of them ends the command: then
 * args->stop is set, with status 0 after printing --help or CLI_EXIT_FAILURE after a bad
 * --output.
 */
int cli_image_getopt(int argc, char **argv, const char *optstring, const struct option *longopts,
                     struct cli_image_args *args);

/*
 * After cli_image_getopt(): checks that exactly one operand is left (`usage_error` otherwise),
 * records it as args->filename and opens it with args->format and args->share added to `flags`.
 * Returns true when the image is open; otherwise the command is over (stopped by an option, or
 * the reason printed) and exits with args->status.
 */
bool cli_image_open(int argc, char **argv, const char *usage_error, struct cli_image_args *args,
                    unsigned flags, img **image);

#endif
