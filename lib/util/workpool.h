/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_UTIL_WORKPOOL_H
#define IMG_UTIL_WORKPOOL_H

/*
 * The process-wide worker pool for CPU work (compression, decompression, zero detection, and
 * the data path of asynchronous requests). There is exactly one in the process; no module
 * keeps threads of its own for such work. It starts on first use with one worker per CPU
 * (host_cpu_count(), at least WORKPOOL_MIN_THREADS) and its workers block every signal.
 *
 * Items run in the order they were submitted (FIFO), each on some worker. An item may block
 * waiting for an item submitted before it (that one has been taken by a worker already, or
 * is ahead of it in the queue), never for one submitted after it. The pool never frees an
 * item: run() owns it from its first instruction, and the submitter learns of completion by
 * its own means (a condition variable, an eventfd, ...).
 *
 * A forked child starts with an empty pool, which grows again on first use.
 */

#include <stdbool.h>

#define WORKPOOL_MIN_THREADS 2

struct work_item {
    void (*run)(struct work_item *item);
    struct work_item *next; /* owned by the pool until run() is called */
};

/* Queues `item` (0), or returns a negative errno when no worker could be started. */
int workpool_submit(struct work_item *item);

/* The number of workers the pool runs (or will run once started). */
unsigned workpool_size(void);

#endif
