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
    /* Starts a validated request with len > 0 (or an fsync, a truncate). Never runs a
     * callback. */
    int (*submit)(struct io_queue *q, struct io_req *req);
    /*
     * Waits until at least `min` more requests have finished (queue.c never asks for more than
     * are outstanding in the engine; 0 means do not wait) and reports each finished request
     * with io_queue_complete().
     */
    int (*collect)(struct io_queue *q, unsigned min);
    /*
     * Performs one validated request for a synchronous call and returns when it is finished
     * (0 or a negative errno, no message: file.c writes that on the caller's thread).
     */
    int (*execute)(struct io_req *req);
};

struct io_queue {
    const struct io_engine *engine;
    void *engine_state;
    unsigned depth;
    bool waited; /* see io_queue_set_waited; read by the engines */
    /* Submitted and callback not yet run; in_flight - ready_count are in the engine. */
    unsigned in_flight;
    unsigned ready_count;
    struct io_req *ready_head;
    struct io_req *ready_tail;
};

/* Hands a finished request (result 0 or a negative errno) back to the queue. */
void io_queue_complete(struct io_queue *q, struct io_req *req, int result);

/*
 * Performs a validated request for a synchronous call, as the process's engine does it (see
 * the engines' execute), and returns when it is finished.
 */
int io_sync_execute(struct io_req *req);

/*
 * The host primitives (host.c): system-call loops with EINTR retried and transfers completed
 * (reads past the end of the file zero-filled). They return 0 or a negative errno and record
 * no message, since they may run on a thread other than the caller's.
 */
int io_host_pread(struct io_file *f, void *buf, size_t len, uint64_t offset);
int io_host_pwrite(struct io_file *f, const void *buf, size_t len, uint64_t offset);
int io_host_fsync(struct io_file *f);
int io_host_truncate(struct io_file *f, uint64_t size);
int io_host_punch_hole(struct io_file *f, uint64_t offset, uint64_t len);
int io_host_preallocate(struct io_file *f, uint64_t offset, uint64_t len);
int io_host_write_zeroes(struct io_file *f, uint64_t offset, uint64_t len);
/* write_zeroes without FALLOC_FL_ZERO_RANGE: punching holes, else writing zeroes. */
int io_host_write_zeroes_slowly(struct io_file *f, uint64_t offset, uint64_t len);
/* Performs a request on the calling thread with the host primitives. */
int io_req_execute(struct io_req *req);

bool io_file_is_block(const struct io_file *f);
/*
 * Around a host write of the file: writers take turns where the kernel would make them anyway
 * (buffered writes to a regular file), so that a waiting writer sleeps rather than spins (see
 * file.c). No-ops for other files.
 */
void io_file_write_lock(struct io_file *f);
void io_file_write_unlock(struct io_file *f);
/*
 * Whether a write flagged into_hole allocates its range before writing it (buffered writes to
 * a regular file on ext4: see file.c), and the way to stop once the file system refuses.
 */
bool io_file_allocates_first(struct io_file *f);
void io_file_stop_allocating_first(struct io_file *f);
/*
 * The descriptor to put in io_uring requests: the same file as io_file_fd(), through an open
 * file description that holds no locks (see file.c for why).
 */
int io_file_ring_fd(struct io_file *f);

/* The thread-pool engine's queue half, which the fault engine shares. */
int io_threads_queue_init(struct io_queue *q);
void io_threads_queue_fini(struct io_queue *q);
int io_threads_submit(struct io_queue *q, struct io_req *req);
int io_threads_collect(struct io_queue *q, unsigned min);

extern const struct io_engine io_engine_threads;
extern const struct io_engine io_engine_uring;
extern const struct io_engine io_engine_fault;

#endif
