/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "cli_progress.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

/* Redraw only after this much change, so a fast copy does not flood the terminal. */
#define PROGRESS_MIN_STEP 1.0

static const int interrupt_signals[] = {SIGINT, SIGTERM, SIGHUP};
#define INTERRUPT_SIGNAL_COUNT (sizeof(interrupt_signals) / sizeof(interrupt_signals[0]))

static volatile sig_atomic_t caught_signal;

static void on_interrupt(int sig)
{
    caught_signal = sig;
}

static void set_handlers(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    /* Restart interrupted system calls: the library notices the stop at its next callback. */
    sa.sa_flags = SA_RESTART;
    for (size_t i = 0; i < INTERRUPT_SIGNAL_COUNT; i++)
        sigaction(interrupt_signals[i], &sa, NULL);
}

static void draw(struct cli_progress *progress, double percent)
{
    fprintf(stdout, "    (%3.2f/100%%)\r", percent);
    fflush(stdout);
    progress->last_printed = percent;
}

void cli_progress_start(struct cli_progress *progress, bool visible)
{
    progress->visible = visible;
    progress->last_printed = -PROGRESS_MIN_STEP;
    caught_signal = 0;
    set_handlers(on_interrupt);
    if (visible)
        draw(progress, 0.0);
}

int cli_progress_update(void *user, uint64_t done, uint64_t total)
{
    struct cli_progress *progress = user;
    if (caught_signal)
        return 1;
    if (!progress->visible)
        return 0;
    double percent = total ? (double)(done > total ? total : done) * 100.0 / (double)total : 0;
    if (percent >= progress->last_printed + PROGRESS_MIN_STEP ||
        (percent == 100.0 && progress->last_printed < 100.0))
        draw(progress, percent);
    return 0;
}

void cli_progress_finish(struct cli_progress *progress, bool success)
{
    if (progress->visible) {
        if (success && progress->last_printed < 100.0)
            draw(progress, 100.0);
        fputc('\n', stdout);
        fflush(stdout);
    }
    set_handlers(SIG_DFL);
}

bool cli_progress_interrupted(void)
{
    return caught_signal != 0;
}

void cli_progress_reraise(void)
{
    int sig = caught_signal;
    if (!sig)
        return;
    set_handlers(SIG_DFL);
    raise(sig);
}
