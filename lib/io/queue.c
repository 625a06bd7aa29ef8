/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The engine-independent half of io_queue: choosing the engine, validating requests, keeping
 * the depth, and running callbacks. A queue belongs to one thread at a time; different queues
 * may be used from different threads at once.
 *
 * Callbacks may submit to (or reap) their own queue. That is why finished requests wait on the
 * queue's ready list rather than on a list local to one io_queue_reap() call: a nested reap
 * must see them, or a callback submitting into a full queue could wait for a completion that
 * its caller is holding.
 */
#include "io.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "error.h"
#include "util/checked.h"

/* IMGUTIL_IO, read once: the synchronous calls and the queues must agree on it. */
static enum { WANT_DEFAULT, WANT_THREADS, WANT_FAULT } wanted;
static pthread_once_t wanted_once = PTHREAD_ONCE_INIT;

static void read_wanted(void)
{
    const char *want = getenv("IMGUTIL_IO");
    if (want && strcmp(want, "threads") == 0)
        wanted = WANT_THREADS;
    else if (want && strcmp(want, "fault") == 0)
        wanted = WANT_FAULT;
}

static const struct io_engine *process_engine;
static pthread_once_t process_engine_once = PTHREAD_ONCE_INIT;

static void choose_engine(void)
{
    pthread_once(&wanted_once, read_wanted);
    if (wanted == WANT_THREADS)
        process_engine = &io_engine_threads;
    else if (wanted == WANT_FAULT && io_engine_fault.available())
        process_engine = &io_engine_fault;
    else if (io_engine_uring.available())
        process_engine = &io_engine_uring;
    else
        process_engine = &io_engine_threads;
}

static const struct io_engine *engine(void)
{
    pthread_once(&process_engine_once, choose_engine);
    return process_engine;
}

/*
 * Synchronous calls run alike on the io_uring and thread-pool engines (inline, with the host
 * primitives), so they do not need the choice between the two, which costs io_uring a probing
 * ring: a process that only reads metadata (info, check, map) sets up none. Only the fault
 * engine runs them its own way.
 */
static const struct io_engine *sync_engine;
static pthread_once_t sync_engine_once = PTHREAD_ONCE_INIT;

static void choose_sync_engine(void)
{
    pthread_once(&wanted_once, read_wanted);
    sync_engine = wanted == WANT_FAULT ? engine() : &io_engine_threads;
}

int io_sync_execute(struct io_req *req)
{
    pthread_once(&sync_engine_once, choose_sync_engine);
    return sync_engine->execute(req);
}

const char *io_engine_name(void)
{
    return engine()->name;
}

int io_queue_new(struct io_queue **out, unsigned depth)
{
    if (depth == 0)
        return img_error(-EINVAL, "io: queue depth must be at least 1");

    struct io_queue *q = calloc(1, sizeof(*q));
    if (!q)
        return img_error(-ENOMEM, "io: out of memory for a queue");
    q->depth = depth;
    q->engine = engine();

    int ret = q->engine->queue_init(q);
    if (ret < 0 && q->engine == &io_engine_uring) {
        /*
         * The probe passed but this queue's ring was refused (seccomp, a memlock limit, too
         * many rings): the thread pool does the same job.
         */
        q->engine = &io_engine_threads;
        ret = q->engine->queue_init(q);
    }
    if (ret < 0) {
        free(q);
        return img_error(ret, "io: cannot start the %s I/O engine", io_engine_threads.name);
    }
    *out = q;
    return 0;
}

void io_queue_free(struct io_queue *q)
{
    if (!q)
        return;
    io_queue_drain(q);
    q->engine->queue_fini(q);
    free(q);
}

static int check_request(const struct io_req *req)
{
    if (!req || !req->file || !req->done)
        return img_error(-EINVAL, "io: request without a file or a callback");

    switch (req->op) {
    case IO_OP_READ:
    case IO_OP_WRITE:
        if (req->len > 0 && !req->buf)
            return img_error(-EINVAL, "io: read or write request without a buffer");
        break;
    case IO_OP_FSYNC:
        return 0;
    case IO_OP_TRUNCATE:
        if (req->offset > (uint64_t)INT64_MAX)
            return img_error(-EINVAL,
                             "io: truncate to %" PRIu64 " bytes is beyond the largest file offset",
                             req->offset);
        return 0;
    case IO_OP_PUNCH_HOLE:
    case IO_OP_WRITE_ZEROES:
    case IO_OP_PREALLOCATE:
        break;
    default:
        return img_error(-EINVAL, "io: unknown request type %d", (int)req->op);
    }

    uint64_t end;
    if (add_overflows_u64(req->offset, req->len, &end) || end > (uint64_t)INT64_MAX)
        return img_error(-EINVAL,
                         "io: request of %zu bytes at offset %" PRIu64
                         " is beyond the largest file offset",
                         req->len, req->offset);
    return 0;
}

void io_queue_complete(struct io_queue *q, struct io_req *req, int result)
{
    req->engine_result = result;
    req->engine_next = NULL;
    if (q->ready_tail)
        q->ready_tail->engine_next = req;
    else
        q->ready_head = req;
    q->ready_tail = req;
    q->ready_count++;
}

int io_queue_submit(struct io_queue *q, struct io_req *req)
{
    if (!q)
        return img_error(-EINVAL, "io: submit to no queue");
    int ret = check_request(req);
    if (ret < 0)
        return ret;

    /* A loop, because callbacks run by the reap may themselves submit. */
    while (q->in_flight >= q->depth) {
        ret = io_queue_reap(q, 1);
        if (ret < 0)
            return ret;
    }

    req->engine_next = NULL;
    req->engine_done_bytes = 0;
    req->engine_result = 0;
    q->in_flight++;

    bool sized = req->op != IO_OP_FSYNC && req->op != IO_OP_TRUNCATE;
    if ((sized && req->len == 0) || (req->op == IO_OP_FSYNC && !io_file_flush_enabled(req->file))) {
        /* Nothing for the host to do; the callback still runs at the next reap. */
        io_queue_complete(q, req, 0);
        return 0;
    }
    ret = q->engine->submit(q, req);
    if (ret < 0)
        q->in_flight--;
    return ret;
}

static struct io_req *pop_ready(struct io_queue *q)
{
    struct io_req *req = q->ready_head;
    if (!req)
        return NULL;
    q->ready_head = req->engine_next;
    if (!q->ready_head)
        q->ready_tail = NULL;
    q->ready_count--;
    return req;
}

int io_queue_reap(struct io_queue *q, unsigned min)
{
    if (!q)
        return img_error(-EINVAL, "io: reap of no queue");
    if (min > q->in_flight)
        min = q->in_flight;

    int ret = 0;
    unsigned in_engine = q->in_flight - q->ready_count;
    if (in_engine > 0) {
        unsigned need = min > q->ready_count ? min - q->ready_count : 0;
        ret = q->engine->collect(q, need);
    }

    int ran = 0;
    struct io_req *req;
    while ((req = pop_ready(q)) != NULL) {
        /* The callback may free or resubmit `req`: it is not touched afterwards. */
        q->in_flight--;
        ran++;
        req->done(req, req->engine_result);
    }
    return ran > 0 || ret >= 0 ? ran : ret;
}

int io_queue_drain(struct io_queue *q)
{
    if (!q)
        return img_error(-EINVAL, "io: drain of no queue");
    while (q->in_flight > 0) {
        int ret = io_queue_reap(q, q->in_flight);
        if (ret < 0)
            return ret;
    }
    return 0;
}

void io_queue_set_waited(struct io_queue *q, bool waited)
{
    if (q && q->in_flight == 0)
        q->waited = waited;
}

unsigned io_queue_in_flight(const struct io_queue *q)
{
    return q ? q->in_flight : 0;
}
