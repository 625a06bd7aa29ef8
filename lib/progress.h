/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_PROGRESS_H
#define IMG_PROGRESS_H

/*
 * Progress and cancellation of the long calls (check, repair, resize and create with
 * preallocation, snapshot apply and delete). A public entry point begins an operation on its
 * thread; backends, which get no extra argument for it, report from their loops with
 * img_progress() and stop cleanly when it says -ECANCELED.
 */

#include <stdbool.h>
#include <stdint.h>

#include "imgutil.h"

struct img;

struct img_op {
    struct img *img; /* NULL for img_create */
    img_progress_fn fn;
    void *user;
    uint64_t cancel_mark; /* img->cancel_requests when the operation began */
    bool cancelled;
    bool reported; /* a report has been made; `last_done` is its `done` */
    uint64_t last_done;
    struct img_op *outer; /* the operation this one runs inside, if any */
    /* An internal call inside another operation (create's resize) reports to that one. */
    struct img_op *delegate;
};

/* Begins an operation on `img` reporting to `fn` (the handle's, when `img` and no `fn`). */
void img_op_begin(struct img_op *op, struct img *img, img_progress_fn fn, void *user);
void img_op_end(struct img_op *op);

/*
 * `done` of `total` bytes (of virtual size) of the operation this thread runs; nothing when it
 * runs none. Returns -ECANCELED (with a message) once img_cancel() was called on the handle
 * after the operation began, or the callback asked to stop; 0 otherwise. Call it only where
 * stopping leaves the image consistent.
 */
int img_progress(uint64_t done, uint64_t total);

/* Reports that all `total` bytes are done (a last report that cancels nothing). */
void img_progress_final(uint64_t total);

#endif
