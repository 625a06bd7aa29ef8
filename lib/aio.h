/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_AIO_H
#define IMG_AIO_H

/* The core's side of the asynchronous API (img_aio_* in imgutil.h; the state lives in aio.c). */

struct img;

/*
 * For img_close: waits until no request of the handle (or of its backing images) runs on a worker,
 * drops the completions nobody polled (their callbacks are not run) and frees the per-handle state.
 * Returns 0, or -EBUSY (changing nothing) when called from a completion callback of this handle (or
 * of one of its backing images), which must not close it. A non-zero count of dropped requests is
 * reported on img_last_error().
 */
int img_aio_close(struct img *img);

#endif
