/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_IO_ENGINE_H
#define IMG_IO_ENGINE_H

/*
 * Between queue.c and the engines. queue.c owns everything a caller sees (depth, in-flight
 * count, the list of finished requests whose callbacks have not run); an engine only moves
 * requests to the host and reports them back with io_queue_complete(), always from inside
 * collect(), that is on the thread reaping the queue.
 */

#include "io.h"

struct io_engine {
    const char *name;
    /* Probed once per process, before the first queue: can this engine run here? */
    bool (*available)(void);
    /* Sets q->engine_state. May fail with a negative errno (queue.c then tries threads). */
    int (*queue_init)(struct io_queue *q);
    /* Called only when nothing is in flight. */
    void (*queue_fini)(struct io_queue *q);
    /* Starts a validated request with len > 0 (or an fsync). Never runs a callback. */
    int (*submit)(struct io_queue *q, struct io_req *req);
    /*
     * Waits until at least `min` more requests have finished (queue.c never asks for more than
     * are outstanding in the engine; 0 means do not wait) and reports each finished request
     * with io_queue_complete().
     */
    int (*collect)(struct io_queue *q, unsigned min);
};

struct io_queue {
    const struct io_engine *engine;
    void *engine_state;
    unsigned depth;
    /* Submitted and callback not yet run; in_flight - ready_count are in the engine. */
    unsigned in_flight;
    unsigned ready_count;
    struct io_req *ready_head;
    struct io_req *ready_tail;
};

/* Hands a finished request (result 0 or a negative errno) back to the queue. */
void io_queue_complete(struct io_queue *q, struct io_req *req, int result);

/* Performs a request synchronously with the io_* calls of file.c. */
int io_req_execute(struct io_req *req);

bool io_file_is_block(const struct io_file *f);

extern const struct io_engine io_engine_threads;
extern const struct io_engine io_engine_uring;

#endif
