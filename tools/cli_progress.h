/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Progress display and cancellation for long operations. The progress callback given to the
 * library draws qemu-img's "    (12.34/100%)" line when asked to, and asks the library to stop
 * once SIGINT, SIGTERM or SIGHUP arrived, so an interrupted operation cleans up after itself.
 */
#ifndef CLI_PROGRESS_H
#define CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct cli_progress {
    bool visible;
    double last_printed; /* percentage last drawn, or a negative value before the first */
};

/* Installs the interrupt handlers and, when `visible`, draws 0.00%. */
void cli_progress_start(struct cli_progress *progress, bool visible);

/* An img_progress_fn: `user` is the struct cli_progress. Non-zero once interrupted. */
int cli_progress_update(void *user, uint64_t done, uint64_t total);

/* Draws 100% (after success) and ends the line; restores the default signal handling. */
void cli_progress_finish(struct cli_progress *progress, bool success);

/* True when an interrupting signal arrived since cli_progress_start(). */
bool cli_progress_interrupted(void);

/*
 * Ends the process with the signal that interrupted it, so the parent sees the usual status
 * (a shell reports 130 for SIGINT). Returns only when no signal arrived.
 */
void cli_progress_reraise(void);

#endif
