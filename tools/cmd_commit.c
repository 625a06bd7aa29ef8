/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* imgutil commit: folds an image into its backing file, as qemu-img commit does. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli_commands.h"
#include "cli_image_args.h"
#include "cli_progress.h"
#include "cli_util.h"

/* The progress line, and -r: the copy waits in its progress reports to keep to the rate. */
struct commit_progress {
    struct cli_progress line;
    uint64_t rate; /* bytes per second, 0: unlimited */
    struct timespec start;
};

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static int commit_progress_update(void *user, uint64_t done, uint64_t total)
{
    struct commit_progress *p = user;
    int stop = cli_progress_update(&p->line, done, total);
    if (stop || !p->rate)
        return stop;
    double ahead = (double)done / (double)p->rate - seconds_since(&p->start);
    if (ahead > 0) {
        struct timespec wait = {.tv_sec = (time_t)ahead,
                                .tv_nsec = (long)((ahead - (double)(time_t)ahead) * 1e9)};
        nanosleep(&wait, NULL);
    }
    return cli_progress_interrupted();
}

/* The library's message without the leading "FILE: " qemu-img does not print. */
static void commit_error(const char *filename)
{
    const char *msg = img_last_error();
    size_t n = strlen(filename);
    if (strncmp(msg, filename, n) == 0 && strncmp(msg + n, ": ", 2) == 0)
        msg += n + 2;
    cli_error("%s", msg);
}

int cmd_commit(int argc, char **argv)
{
    static const struct option long_options[] = {
        CLI_LONG_HELP,
        {NULL, 0, NULL, 0},
    };
    struct cli_image_args args = {.format = NULL};
    const char *base = NULL;
    bool keep_top = false, show_progress = false;
    uint64_t rate = 0;
    int c;
    while ((c = cli_image_getopt(argc, argv, ":hf:t:b:dpqr:", long_options, &args)) != -1) {
        switch (c) {
        case 't':
            if (!cli_is_cache_mode(optarg)) {
                cli_error("Invalid cache option: %s", optarg);
                return CLI_EXIT_FAILURE;
            }
            break;
        case 'b':
            /* As qemu-img: the images between would be left stale, so -b keeps the top. */
            base = optarg;
            keep_top = true;
            break;
        case 'd':
            keep_top = true;
            break;
        case 'p':
            show_progress = true;
            break;
        case 'r': {
            int ret = cli_parse_size(optarg, &rate);
            if (ret < 0) {
                cli_size_error(ret, "rate limit");
                return CLI_EXIT_FAILURE;
            }
            break;
        }
        default:
            return cli_getopt_error(c, argv);
        }
    }
    img *image;
    if (!cli_image_open(argc, argv, "Expecting one image file name", &args, IMG_OPEN_READ_WRITE,
                        &image))
        return args.status;

    struct commit_progress progress = {.rate = rate};
    clock_gettime(CLOCK_MONOTONIC, &progress.start);
    cli_progress_start(&progress.line, show_progress && !args.quiet);
    img_set_progress(image, commit_progress_update, &progress);
    int ret = img_commit(image, base, keep_top ? IMG_COMMIT_KEEP_TOP : 0);
    cli_progress_finish(&progress.line, ret == 0);
    if (ret < 0)
        commit_error(args.filename);
    img_close(image);
    if (ret == -ECANCELED)
        cli_progress_reraise();
    if (ret < 0)
        return CLI_EXIT_FAILURE;
    if (!args.quiet)
        printf("Image committed.\n");
    return 0;
}
