/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * convert_progress: converts an image to another format with a progress bar on stderr, and
 * cancels cleanly on Ctrl-C (the target is then left as it was: nothing half-written).
 *
 *   convert_progress SOURCE TARGET [FORMAT [OPTIONS]]     (FORMAT defaults to raw)
 *
 * OPTIONS are img_convert's ("compress=on", "min_size=10G", "cluster_size=2M", ...).
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <imgutil.h>

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Called on the thread that called img_convert; a non-zero return cancels the convert. */
static int show_progress(void *user, uint64_t done, uint64_t total)
{
    int *last_percent = user;
    int percent = total ? (int)(done * 100 / total) : 100;
    if (percent != *last_percent) {
        char bar[41];
        int filled = percent * 40 / 100;
        memset(bar, '#', (size_t)filled);
        memset(bar + filled, '.', (size_t)(40 - filled));
        bar[40] = '\0';
        fprintf(stderr, "\r[%s] %3d%%", bar, percent);
        *last_percent = percent;
    }
    return interrupted;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: convert_progress SOURCE TARGET [FORMAT [OPTIONS]]\n");
        return 2;
    }
    signal(SIGINT, on_interrupt);
    img_opts *opts = NULL;
    int ret = img_opts_new(&opts);
    if (ret == 0 && argc == 5)
        ret = img_opts_parse(opts, argv[4]);
    img *source = NULL;
    if (ret == 0)
        ret = img_open(&source, argv[1], NULL, IMG_OPEN_READ_ONLY, NULL);
    int last_percent = -1;
    if (ret == 0)
        ret = img_convert(source, argv[2], argc >= 4 ? argv[3] : "raw", opts, show_progress,
                          &last_percent);
    if (last_percent >= 0)
        fprintf(stderr, "\n");
    if (ret < 0)
        fprintf(stderr, "convert_progress: %s\n", img_last_error());
    img_close(source);
    img_opts_free(opts);
    return ret < 0 ? 1 : 0;
}
