/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Progress reports and cancellation of the long calls on a handle. */
#include "progress.h"

#include <errno.h>

#include "error.h"
#include "image.h"

static _Thread_local struct img_op *current_op;

void img_op_begin(struct img_op *op, struct img *img, img_progress_fn fn, void *user)
{
    *op = (struct img_op){.img = img, .fn = fn, .user = user, .outer = current_op};
    bool own_callback = fn || (img && __atomic_load_n(&img->progress, __ATOMIC_ACQUIRE));
    if (current_op && !own_callback) {
        op->delegate = current_op;
        current_op = op;
        return;
    }
    if (img) {
        if (!fn) {
            pthread_mutex_lock(&img->lock);
            op->fn = img->progress;
            op->user = img->progress_user;
            pthread_mutex_unlock(&img->lock);
        }
        op->cancel_mark = __atomic_load_n(&img->cancel_requests, __ATOMIC_ACQUIRE);
    }
    current_op = op;
}

void img_op_end(struct img_op *op)
{
    current_op = op->outer;
}

static struct img_op *reporting_op(void)
{
    struct img_op *op = current_op;
    while (op && op->delegate)
        op = op->delegate;
    return op;
}

void img_progress_final(uint64_t total)
{
    struct img_op *op = reporting_op();
    if (op && !op->cancelled && op->fn)
        op->fn(op->user, total, total);
}

int img_progress(uint64_t done, uint64_t total)
{
    struct img_op *op = reporting_op();
    if (!op)
        return 0;
    if (!op->cancelled && op->img &&
        __atomic_load_n(&op->img->cancel_requests, __ATOMIC_ACQUIRE) != op->cancel_mark)
        op->cancelled = true;
    done = done > total ? total : done;
    /* At most about 1024 reports per pass: loops call this per 64 KiB. A new pass reports. */
    bool due = !op->reported || done < op->last_done || done == total ||
               done - op->last_done >= (total >> 10);
    if (!op->cancelled && op->fn && due) {
        op->reported = true;
        op->last_done = done;
        if (op->fn(op->user, done, total))
            op->cancelled = true;
    }
    if (op->cancelled)
        return img_error(-ECANCELED, "operation cancelled");
    return 0;
}

IMG_API int img_set_progress(img *img, img_progress_fn fn, void *user)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    pthread_mutex_lock(&img->lock);
    __atomic_store_n(&img->progress, fn, __ATOMIC_RELEASE);
    img->progress_user = user;
    pthread_mutex_unlock(&img->lock);
    return 0;
}

IMG_API int img_cancel(img *img)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    __atomic_add_fetch(&img->cancel_requests, 1, __ATOMIC_RELEASE);
    return 0;
}
