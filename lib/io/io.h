/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_IO_H
#define IMG_IO_H

/*
 * The I/O layer owns every host file descriptor the library opens.
 *
 * Two ways in:
 *  - synchronous calls (io_pread, io_pwrite, ...), used for metadata and small reads: each is
 *    a complete operation (full length, retried on EINTR and short transfers);
 *  - an io_queue, for keeping many requests in flight: requests are submitted with a
 *    completion callback, and callbacks run only inside io_queue_reap()/io_queue_drain(), on
 *    the thread that calls them. Nothing calls back on a thread the caller did not expect.
 *
 * Engines: io_uring (when built with liburing and the kernel permits it: one ring per queue)
 * and a pool of pread/pwrite worker threads, the fallback everywhere. A synchronous call is one
 * request performed on the calling thread, with the host primitives, on either engine (a ring
 * or a worker would only add a hand-over for one request waited for at once; see
 * engine_uring.c); only the fault engine runs it its own way. The engine is chosen once per
 * process, from the environment variable IMGUTIL_IO=threads|uring|fault read once (an
 * unavailable "uring" falls back to threads).
 *
 * IMGUTIL_IO=fault selects, for tests, the thread-pool engine with faults injected:
 * IMGUTIL_FAULT=<op>:<n>:<error> fails the n-th (1-based) request of that op in the process,
 * op being read|write|flush|fallocate|truncate|any and error EIO|ENOSPC|short (short: part of
 * the transfer is done, then it fails with ENOSPC, as a filling disk does). Every request
 * counts, synchronous or queued, except those with nothing for the host to do (zero length, a
 * disabled flush). IMGUTIL_FAULT=count injects nothing. At exit the process writes how many
 * requests of each op it made to the file named by IMGUTIL_FAULT_REPORT, or with "count" and
 * no such file, to stderr.
 *
 * All functions return 0 (or a count) or a negative errno.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct io_file;

/* Opens `path` with open(2) flags (O_CLOEXEC is added). */
int io_file_open(struct io_file **out, const char *path, int oflags, mode_t mode);
/* Wraps an already-open descriptor; the io_file takes ownership. */
int io_file_from_fd(struct io_file **out, int fd);
/* Closes the descriptor. Accepts NULL. */
void io_file_close(struct io_file *f);
int io_file_fd(const struct io_file *f);
/*
 * Turns flushes of this file (io_fsync and IO_OP_FSYNC) into no-ops that succeed, or back on.
 * For a file nothing relies on until it is finished, such as the temporary target convert
 * renames into place only on success (qemu-img convert writes its target with cache=unsafe).
 */
void io_file_set_flush(struct io_file *f, bool enabled);
bool io_file_flush_enabled(const struct io_file *f);
/* Current length of the file in bytes, or a negative errno. */
int64_t io_file_size(struct io_file *f);
/* Bytes allocated on the host (st_blocks * 512), or a negative errno. */
int64_t io_file_allocated(struct io_file *f);

/* Reads exactly `len` bytes. Bytes past the end of the file read as zeros. */
int io_pread(struct io_file *f, void *buf, size_t len, uint64_t offset);
/* Writes exactly `len` bytes. */
int io_pwrite(struct io_file *f, const void *buf, size_t len, uint64_t offset);
int io_fsync(struct io_file *f);
int io_truncate(struct io_file *f, uint64_t size);
/* Deallocates the range (it then reads as zeros). -ENOTSUP where the host cannot. */
int io_punch_hole(struct io_file *f, uint64_t offset, uint64_t len);
/* Makes the range read as zeros, preferring not to write data. */
int io_write_zeroes(struct io_file *f, uint64_t offset, uint64_t len);
/* Reserves space (fallocate mode 0). -ENOTSUP where the host cannot. */
int io_preallocate(struct io_file *f, uint64_t offset, uint64_t len);
/*
 * Finds the next data at or after `offset` (SEEK_DATA/SEEK_HOLE). On success *data_start is
 * the start of the next data run (or the file size when there is none) and *data_end its end.
 * -ENOTSUP when the host does not support it (then treat everything as data).
 */
int io_find_data(struct io_file *f, uint64_t offset, uint64_t *data_start, uint64_t *data_end);

enum io_op {
    IO_OP_READ,
    IO_OP_WRITE,
    IO_OP_FSYNC,
    IO_OP_PUNCH_HOLE,
    IO_OP_WRITE_ZEROES,
    IO_OP_PREALLOCATE,
    /* Sets the file's length to `offset` (len is ignored). */
    IO_OP_TRUNCATE,
};

struct io_req;
/* `result` is 0 or a negative errno. Reads past the end of the file are zero-filled. */
typedef void (*io_done_fn)(struct io_req *req, int result);

struct io_req {
    enum io_op op;
    struct io_file *file;
    void *buf; /* for IO_OP_WRITE the data is read, never modified */
    size_t len;
    uint64_t offset;
    io_done_fn done;
    void *user;
    /*
     * IO_OP_WRITE only: the range is unallocated in a file being filled (a new convert
     * target). Where the file system takes writes into allocated blocks faster (ext4), the
     * range is allocated just before it is written. A hint, which an engine may ignore.
     */
    bool into_hole;

    /* Owned by the engine while the request is in flight. */
    struct io_req *engine_next;
    size_t engine_done_bytes;
    int engine_result;
};

struct io_queue;

/* A queue that keeps at most `depth` requests in flight (depth >= 1). */
int io_queue_new(struct io_queue **out, unsigned depth);
/* Drains outstanding requests (running their callbacks), then frees. Accepts NULL. */
void io_queue_free(struct io_queue *q);
/*
 * Submits a request. When `depth` requests are already in flight it first reaps at least one
 * completion (running callbacks on this thread). The request memory must stay valid until its
 * callback has run.
 */
int io_queue_submit(struct io_queue *q, struct io_req *req);
/*
 * Waits until at least `min` requests have completed (0: do not wait), runs their callbacks on
 * this thread, and returns how many callbacks ran.
 */
int io_queue_reap(struct io_queue *q, unsigned min);
/* Waits for every submitted request and runs their callbacks. */
int io_queue_drain(struct io_queue *q);
unsigned io_queue_in_flight(const struct io_queue *q);
/*
 * Declares that the owner of this queue waits for its requests right after submitting them
 * (a batch, then io_queue_drain) and gets its parallelism from other queues on other threads
 * rather than from this one. The engine then performs what it can on the owner's thread,
 * sparing a hand-off to another thread and back per request: io_uring copies a request the
 * page cache can serve inside io_uring_enter (no IOSQE_ASYNC), and sends a batch in the call
 * that waits for it; the thread-pool engine runs the requests on the waiting thread. Call
 * it while nothing is in flight. Requests of such a queue may not start before the owner
 * waits for them (io_queue_reap with min > 0, io_queue_drain).
 */
void io_queue_set_waited(struct io_queue *q, bool waited);

/* "uring" or "threads": the engine this process uses. */
const char *io_engine_name(void);

#endif
