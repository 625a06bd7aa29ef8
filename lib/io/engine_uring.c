/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The io_uring engine: one ring per queue, sized to its depth. Requests go to the kernel as
 * they are submitted; completions are only looked at inside collect(), on the reaping thread.
 *
 * The kernel may transfer less than asked: a read or write that comes back short is sent
 * again for the remainder, and a read that reaches the end of the file is zero-filled, as
 * io_pread() does.
 *
 * A waited queue (io_queue_set_waited: its owner waits for each batch at once, as convert's
 * chunks do) sends its batch in the io_uring_enter that waits for it, without IOSQE_ASYNC, and
 * runs inline the requests a synchronous call runs inline.
 *
 * Synchronous calls run inline with the host primitives, where the ring would only be slower
 * (see io_engine_uring), as does what this liburing or kernel's ring cannot do (truncate;
 * zeroing without FALLOC_FL_ZERO_RANGE).
 */
#include "config.h"
#include "engine.h"

#include <errno.h>

#if HAVE_LIBURING

#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>

/* Deeper queues share a ring this size; the rest waits in the backlog. */
#define RING_MAX_ENTRIES 4096u
/* Per SQE; the kernel caps a single transfer just below 2 GiB anyway. */
#define RING_MAX_TRANSFER (1u << 30)
/* Transfers at least this large go to the kernel's workers at once (see prep_sqe). */
#define URING_ASYNC_MIN (64u << 10)

struct uring_queue {
    struct io_uring ring;
    /*
     * Requests held by the kernel never exceed the ring size, so a free SQE always exists for
     * them and the completion ring (twice as large) can never overflow.
     */
    unsigned entries;
    unsigned in_kernel;
    struct io_req *backlog_head;
    struct io_req *backlog_tail;
    bool waited; /* the queue's io_queue_set_waited(), copied when a request starts */
};

/* The probing ring's size. */
#define PROBE_RING_ENTRIES 4u

static bool uring_available(void)
{
    struct io_uring *ring = calloc(1, sizeof(*ring));
    if (!ring)
        return false;
    if (io_uring_queue_init(PROBE_RING_ENTRIES, ring, 0) < 0) {
        free(ring);
        return false; /* ENOSYS on old kernels, EPERM under seccomp or io_uring_disabled */
    }

    struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
    bool ok = probe && io_uring_opcode_supported(probe, IORING_OP_READ) &&
              io_uring_opcode_supported(probe, IORING_OP_WRITE) &&
              io_uring_opcode_supported(probe, IORING_OP_FSYNC) &&
              io_uring_opcode_supported(probe, IORING_OP_FALLOCATE);
    if (probe)
        io_uring_free_probe(probe);
    io_uring_queue_exit(ring);
    free(ring);
    return ok;
}

static int uring_queue_init(struct io_queue *q)
{
    struct uring_queue *uq = calloc(1, sizeof(*uq));
    if (!uq)
        return -ENOMEM;
    uq->entries = q->depth < RING_MAX_ENTRIES ? q->depth : RING_MAX_ENTRIES;
    int ret = io_uring_queue_init(uq->entries, &uq->ring, 0);
    if (ret < 0) {
        free(uq);
        return ret;
    }
    q->engine_state = uq;
    return 0;
}

static void uring_queue_fini(struct io_queue *q)
{
    struct uring_queue *uq = q->engine_state;
    io_uring_queue_exit(&uq->ring);
    free(uq);
}

/* `queued`: the request is one of many in a queue's ring, not a synchronous call. */
static void prep_sqe(struct io_uring_sqe *sqe, struct io_req *req, bool queued)
{
    int fd = io_file_ring_fd(req->file);
    size_t done = req->engine_done_bytes;
    size_t left = req->len - done;
    unsigned chunk = left < RING_MAX_TRANSFER ? (unsigned)left : RING_MAX_TRANSFER;
    char *buf = (char *)req->buf + done;
    uint64_t offset = req->offset + done;

    switch (req->op) {
    case IO_OP_READ:
        io_uring_prep_read(sqe, fd, buf, chunk, offset);
        break;
    case IO_OP_WRITE:
        io_uring_prep_write(sqe, fd, buf, chunk, offset);
        break;
    case IO_OP_FSYNC:
        io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
        break;
    case IO_OP_PUNCH_HOLE:
        io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                (off_t)req->offset, (off_t)req->len);
        break;
    case IO_OP_WRITE_ZEROES:
        io_uring_prep_fallocate(
            sqe, fd, FALLOC_FL_ZERO_RANGE | (io_file_is_block(req->file) ? FALLOC_FL_KEEP_SIZE : 0),
            (off_t)req->offset, (off_t)req->len);
        break;
    case IO_OP_PREALLOCATE:
        io_uring_prep_fallocate(sqe, fd, 0, (off_t)req->offset, (off_t)req->len);
        break;
    case IO_OP_TRUNCATE:
        /* Never reaches the ring (see ring_can): a harmless no-op should it ever. */
        io_uring_prep_nop(sqe);
        break;
    }
    io_uring_sqe_set_data(sqe, req);
    /*
     * A large buffered transfer that the page cache can serve is otherwise copied inline, in
     * io_uring_enter() on the submitting thread: every request of a deep queue would then be
     * copied one after another on that one thread. Sent to the kernel's workers, they are
     * copied in parallel, as the thread-pool engine copies them. A synchronous call has nothing
     * to overlap with: there the hand-over would only add a wake-up (and, the first time, the
     * start of a kernel worker thread, about 1 ms).
     */
    if (queued && (req->op == IO_OP_READ || req->op == IO_OP_WRITE) && chunk >= URING_ASYNC_MIN)
        sqe->flags |= IOSQE_ASYNC;
}

/* Puts the (rest of the) request in the ring, or in the backlog when the ring is full. */
static void start(struct uring_queue *uq, struct io_req *req)
{
    /* A queue whose owner waits at once has nothing to overlap with either (see prep_sqe). */
    bool queued = !uq->waited;
    struct io_uring_sqe *sqe = NULL;
    if (uq->in_kernel < uq->entries)
        sqe = io_uring_get_sqe(&uq->ring);
    if (!sqe) {
        req->engine_next = NULL;
        if (uq->backlog_tail)
            uq->backlog_tail->engine_next = req;
        else
            uq->backlog_head = req;
        uq->backlog_tail = req;
        return;
    }
    prep_sqe(sqe, req, queued);
    uq->in_kernel++;
}

static void start_backlog(struct uring_queue *uq)
{
    while (uq->backlog_head && uq->in_kernel < uq->entries) {
        struct io_req *req = uq->backlog_head;
        uq->backlog_head = req->engine_next;
        if (!uq->backlog_head)
            uq->backlog_tail = NULL;
        start(uq, req);
    }
}

/*
 * A waited queue's reads go through the ring, all of a batch in the one io_uring_enter that
 * waits for them; its other requests run inline, as a synchronous call's do.
 */
static bool waited_uses_ring(const struct io_req *req)
{
    return req->op == IO_OP_READ;
}

/* Whether the ring can carry this request (liburing 2.3 has no ftruncate opcode). */
static bool ring_can(const struct io_req *req)
{
    return req->op != IO_OP_TRUNCATE;
}

static int uring_submit(struct io_queue *q, struct io_req *req)
{
    struct uring_queue *uq = q->engine_state;
    uq->waited = q->waited;
    if (!ring_can(req) || (q->waited && !waited_uses_ring(req))) {
        /*
         * Done inline; the callback still runs only at the next reap. A waited queue's owner
         * waits at once as a synchronous caller does, so the same requests as for those run
         * inline: measured on a 1 GiB qcow2 -> raw convert, its writes through the ring (handed
         * by the kernel to its io-wq workers) made 2.4 times the voluntary context switches
         * (446 against 186 per convert) for no less CPU time.
         */
        io_queue_complete(q, req, io_req_execute(req));
        return 0;
    }
    start(uq, req);
    /*
     * Sent now so the I/O overlaps whatever the caller does next. Should the kernel refuse for
     * the moment (EAGAIN, EBUSY, EINTR), the SQE stays queued and collect() sends it. A queue
     * whose owner waits at once is sent by collect(): the whole batch in the system call that
     * waits for it.
     */
    if (!uq->waited)
        io_uring_submit(&uq->ring);
    return 0;
}

/*
 * Applies one completion to `req`. Returns true when the request is finished, with its result
 * (0 or a negative errno) in *result; false when the rest of it must be sent again.
 */
static bool apply_cqe(struct io_req *req, int res, int *result)
{
    if (res == -EINTR || res == -EAGAIN)
        return false;

    switch (req->op) {
    case IO_OP_READ:
    case IO_OP_WRITE:
        if (res < 0)
            break;
        if (res == 0) {
            if (req->op == IO_OP_WRITE) {
                /* No progress and no error: retrying would spin. */
                res = -EIO;
                break;
            }
            /* End of file: the rest reads as zeros. */
            memset((char *)req->buf + req->engine_done_bytes, 0, req->len - req->engine_done_bytes);
            req->engine_done_bytes = req->len;
        } else {
            req->engine_done_bytes += (size_t)res;
        }
        if (req->engine_done_bytes < req->len)
            return false;
        res = 0;
        break;
    case IO_OP_WRITE_ZEROES:
        /* Without FALLOC_FL_ZERO_RANGE the host primitives know the slower ways. */
        if (res == -EOPNOTSUPP || res == -EINVAL || res == -ENOSYS)
            res = io_host_write_zeroes_slowly(req->file, req->offset, req->len);
        break;
    case IO_OP_PUNCH_HOLE:
    case IO_OP_PREALLOCATE:
        /* As the host primitives do: every "cannot" is -ENOTSUP. */
        if (res == -EOPNOTSUPP || res == -ENOSYS)
            res = -ENOTSUP;
        break;
    case IO_OP_FSYNC:
    case IO_OP_TRUNCATE:
        break;
    }
    *result = res < 0 ? res : 0;
    return true;
}

/* Handles one completion; returns true when the request is finished and was reported. */
static bool handle_cqe(struct io_queue *q, struct io_req *req, int res)
{
    int result;
    if (!apply_cqe(req, res, &result)) {
        start(q->engine_state, req);
        return false;
    }
    io_queue_complete(q, req, result);
    return true;
}

static unsigned reap_cqes(struct io_queue *q)
{
    struct uring_queue *uq = q->engine_state;
    struct io_uring_cqe *cqe;
    unsigned head;
    unsigned seen = 0;
    unsigned finished = 0;
    io_uring_for_each_cqe(&uq->ring, head, cqe)
    {
        struct io_req *req = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        seen++;
        uq->in_kernel--;
        if (handle_cqe(q, req, res))
            finished++;
    }
    io_uring_cq_advance(&uq->ring, seen);
    start_backlog(uq);
    return finished;
}

static bool transient(int err)
{
    return err == -EINTR || err == -EAGAIN || err == -EBUSY || err == -ETIME;
}

static int uring_collect(struct io_queue *q, unsigned min)
{
    struct uring_queue *uq = q->engine_state;
    unsigned finished = 0;
    for (;;) {
        finished += reap_cqes(q);
        if (finished >= min)
            break;
        if (uq->in_kernel == 0)
            return -EIO; /* nothing left that could complete: the bookkeeping is broken */
        int ret = io_uring_submit_and_wait(&uq->ring, 1);
        if (ret < 0 && !transient(ret))
            return ret;
    }
    /* Remainders of short transfers queued while reaping. */
    if (io_uring_sq_ready(&uq->ring) > 0) {
        int ret = io_uring_submit(&uq->ring);
        if (ret < 0 && !transient(ret))
            return ret;
    }
    return 0;
}

/*
 * A synchronous call (execute) runs inline with the host primitives: the ring cannot be faster for
 * one request waited for at once. A buffered write (on ext4), an fsync and a fallocate are handed
 * by the kernel to its io-wq workers, so the caller sleeps and is woken for each one, and even
 * a read the page cache serves, copied inside io_uring_enter as pread copies it, costs more.
 * Measured on Linux 6.18, ext4, data in the page cache, one request waited for at a time,
 * microseconds per request (system call / ring): read 4 KiB 0.7-1.1 / 1.4-1.5, 64 KiB
 * 3.0-5.3 / 3.6-4.0, 1 MiB 57-80 / 68-79; write 4 KiB 2.7-3.3 / 9.4-10.9, 64 KiB 5.4-7.4 /
 * 11.8-12.2, 1 MiB 144-159 / 181-201. A process that only reads metadata (info, check, map)
 * thus sets up no ring at all. Queued requests (uring_submit) always use the ring: there the
 * hand-over overlaps them.
 */
const struct io_engine io_engine_uring = {
    .name = "uring",
    .available = uring_available,
    .queue_init = uring_queue_init,
    .queue_fini = uring_queue_fini,
    .submit = uring_submit,
    .collect = uring_collect,
    .execute = io_req_execute,
};

#else /* !HAVE_LIBURING */

static bool uring_available(void)
{
    return false;
}

static int uring_unavailable(struct io_queue *q)
{
    (void)q;
    return -ENOSYS;
}

static void uring_queue_fini(struct io_queue *q)
{
    (void)q;
}

static int uring_submit(struct io_queue *q, struct io_req *req)
{
    (void)q;
    (void)req;
    return -ENOSYS;
}

static int uring_collect(struct io_queue *q, unsigned min)
{
    (void)q;
    (void)min;
    return -ENOSYS;
}

/* Built without liburing: never chosen, since available() says no. */
const struct io_engine io_engine_uring = {
    .name = "uring",
    .available = uring_available,
    .queue_init = uring_unavailable,
    .queue_fini = uring_queue_fini,
    .submit = uring_submit,
    .collect = uring_collect,
    .execute = io_req_execute,
};

#endif
