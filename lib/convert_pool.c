/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Runs a convert as an event loop on the calling thread. A few chunks are in flight at once,
 * each in a slot that moves through these states:
 *
 *   READING    the loop mapped the chunk and its reads are in the io_queue;
 *   COMPUTING  a workpool item fills what was not read (zeros, decompression), finds the zero
 *              blocks, and compresses, or allocates the target and lists the writes;
 *   WAITING    (compressing) computed, waiting for its turn to be written;
 *   COMMITTING (compressing) a workpool item writes the compressed clusters, in guest order;
 *   WRITING    the writes whose place is known are in the io_queue.
 *
 * So reads and writes of different chunks overlap with each other and with the CPU work, and
 * no thread is kept for the convert alone: the I/O runs on the process's I/O engine, the CPU
 * work on the process-wide workpool. The progress callback runs on the caller's thread alone,
 * and its request to cancel stops new chunks; those in flight finish before convert returns.
 *
 * A compressed convert writes in guest order: one chunk at a time commits, in the order the
 * chunks were handed out. A chunk that fails, or a convert that stops, ends the turns: chunks
 * still waiting are dropped.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "convert_job.h"
#include "error.h"
#include "util/checked.h"
#include "util/workpool.h"

/* Chunks in flight per worker, so that a worker finishing one finds the next read. */
#define SLOTS_PER_WORKER 2
/* And a few more, whose reads and writes are in the io_queue meanwhile. */
#define EXTRA_SLOTS 4
/* Bounds the memory in flight on large hosts: a slot holds up to two chunk-sized buffers. */
#define MAX_SLOTS 32
#define QUEUE_DEPTH 64
#define WAIT_SLICE_NS 500000L

enum slot_state {
    SLOT_FREE,
    SLOT_READING,
    SLOT_COMPUTING,
    SLOT_WAITING,
    SLOT_COMMITTING,
    SLOT_WRITING
};

struct convert_loop;

struct slot {
    struct work_item work; /* a compute or a commit on the workpool */
    struct convert_loop *loop;
    enum slot_state state;
    struct convert_chunk_ctx ctx;
    bool ctx_ready;
    uint64_t offset, length;
    uint64_t seq;        /* place in the order chunks are handed out */
    unsigned pending_io; /* requests of this slot in the io_queue */
    int io_result;       /* the first failed request's */
    /* Set by the worker under loop->lock when its item is done. */
    bool work_done;
    int work_result;
    char message[512];
};

struct convert_loop {
    struct convert_job *job;
    struct io_queue *queue;
    struct slot *slots;
    unsigned nslots;
    /* Between the workers and the loop. */
    pthread_mutex_t lock;
    pthread_cond_t work_done; /* a slot's item finished */
    unsigned working;         /* items on the workpool */
    uint64_t next_commit;     /* the chunk whose turn it is to be written */
};

static int report_progress(struct convert_job *job, uint64_t bytes)
{
    job->done += bytes;
    if (job->progress && job->progress(job->user, job->done, job->src->size))
        return img_error(-ECANCELED, "convert cancelled");
    return 0;
}

/*
 * The next range to hand out from `*next` (chunk-aligned). Ranges the source reports as zeros
 * that cover whole chunks are skipped here, as they need neither reading nor writing.
 */
static int next_chunk(struct convert_job *job, uint64_t *next, uint64_t *length)
{
    struct img *src = job->src;
    /* Over a backing file the zeros must be written; with -S 0 everything is. */
    bool skip_zeros = (job->zero_block || job->compress_unit) && !job->zeros_explicit;
    while (skip_zeros && *next < src->size) {
        struct img_extent ext;
        int depth;
        int ret = img_map_chain(src, *next, src->size - *next, &ext, &depth);
        if (ret < 0)
            return ret;
        if (ext.kind != EXTENT_ZERO && ext.kind != EXTENT_UNALLOCATED)
            break;
        uint64_t end = *next + ext.length;
        uint64_t skip_to = end >= src->size ? src->size : align_down_u64(end, CONVERT_CHUNK_SIZE);
        if (skip_to <= *next)
            break;
        ret = report_progress(job, skip_to - *next);
        *next = skip_to;
        if (ret < 0)
            return ret;
    }
    *length = min_u64(CONVERT_CHUNK_SIZE, src->size - *next);
    return 0;
}

/* ---- the workers' side ---- */

static void run_slot_work(struct work_item *item)
{
    struct slot *s = (struct slot *)((char *)item - offsetof(struct slot, work));
    struct convert_loop *loop = s->loop;
    int ret;
    if (s->state == SLOT_COMMITTING)
        ret = convert_chunk_commit(loop->job, &s->ctx, s->offset);
    else
        ret = convert_chunk_compute(loop->job, &s->ctx, s->offset, s->length);
    if (ret < 0)
        snprintf(s->message, sizeof(s->message), "%s", img_last_error());
    pthread_mutex_lock(&loop->lock);
    s->work_result = ret;
    s->work_done = true;
    pthread_cond_signal(&loop->work_done);
    pthread_mutex_unlock(&loop->lock);
}

/* ---- the loop's side ---- */

static int submit_work(struct convert_loop *loop, struct slot *s, enum slot_state state)
{
    s->state = state;
    s->work_done = false;
    s->work.run = run_slot_work;
    pthread_mutex_lock(&loop->lock);
    loop->working++;
    pthread_mutex_unlock(&loop->lock);
    int ret = workpool_submit(&s->work);
    if (ret < 0) {
        pthread_mutex_lock(&loop->lock);
        loop->working--;
        pthread_mutex_unlock(&loop->lock);
        s->state = SLOT_FREE;
        return img_error(ret, "convert: cannot start the worker pool: %s", img_strerror(ret));
    }
    return 0;
}

/* Runs inside io_queue_submit/io_queue_reap, on the loop's thread: only bookkeeping. */
static void request_done(struct io_req *req, int result)
{
    struct slot *s = req->user;
    if (result < 0 && s->io_result == 0) {
        s->io_result = result;
        snprintf(s->message, sizeof(s->message), "%s of %zu bytes at host offset 0x%llx failed: %s",
                 req->op == IO_OP_READ ? "read" : "write to the target", req->len,
                 (unsigned long long)req->offset, img_strerror(result));
    }
    s->pending_io--;
}

/* Puts the slot's listed requests in the queue. */
static int submit_requests(struct convert_loop *loop, struct slot *s, enum slot_state state)
{
    s->state = state;
    s->io_result = 0;
    for (size_t i = 0; i < s->ctx.nreqs; i++) {
        struct io_req *req = &s->ctx.reqs[i];
        req->done = request_done;
        req->user = s;
        /* Counted first: the submit may reap, and run this slot's earlier completions. */
        s->pending_io++;
        int ret = io_queue_submit(loop->queue, req);
        if (ret < 0) {
            s->pending_io--;
            if (s->io_result == 0) {
                s->io_result = ret;
                snprintf(s->message, sizeof(s->message), "%s", img_last_error());
            }
            break;
        }
    }
    return 0;
}

static int start_chunk(struct convert_loop *loop, struct slot *s, uint64_t offset, uint64_t length,
                       uint64_t seq)
{
    if (!s->ctx_ready) {
        int ret = convert_chunk_ctx_init(&s->ctx);
        if (ret < 0)
            return ret;
        s->ctx_ready = true;
    }
    s->offset = offset;
    s->length = length;
    s->seq = seq;
    int ret = convert_chunk_plan(loop->job, &s->ctx, offset, length);
    if (ret < 0)
        return ret;
    return submit_requests(loop, s, SLOT_READING);
}

static struct slot *free_slot(struct convert_loop *loop)
{
    for (unsigned i = 0; i < loop->nslots; i++)
        if (loop->slots[i].state == SLOT_FREE)
            return &loop->slots[i];
    return NULL;
}

static bool any_state(const struct convert_loop *loop, enum slot_state a, enum slot_state b)
{
    for (unsigned i = 0; i < loop->nslots; i++)
        if (loop->slots[i].state == a || loop->slots[i].state == b)
            return true;
    return false;
}

static bool any_busy(const struct convert_loop *loop)
{
    for (unsigned i = 0; i < loop->nslots; i++)
        if (loop->slots[i].state != SLOT_FREE)
            return true;
    return false;
}

/*
 * Moves every slot whose step has finished on to its next one. Returns whether anything
 * moved; *ret receives the first failure (then no new work starts, and slots only finish).
 */
static bool advance(struct convert_loop *loop, int *ret)
{
    struct convert_job *job = loop->job;
    bool moved = false;
    for (unsigned i = 0; i < loop->nslots; i++) {
        struct slot *s = &loop->slots[i];
        bool work_done = false;
        int work_result = 0;
        if (s->state == SLOT_COMPUTING || s->state == SLOT_COMMITTING) {
            pthread_mutex_lock(&loop->lock);
            work_done = s->work_done;
            work_result = s->work_result;
            if (work_done)
                loop->working--;
            pthread_mutex_unlock(&loop->lock);
        }
        switch (s->state) {
        case SLOT_FREE:
            break;
        case SLOT_READING:
        case SLOT_WRITING:
            if (s->pending_io)
                break;
            moved = true;
            if (s->io_result < 0) {
                if (*ret == 0)
                    *ret = img_error(s->io_result, "convert: %s", s->message);
                s->state = SLOT_FREE;
            } else if (*ret < 0) {
                s->state = SLOT_FREE;
            } else if (s->state == SLOT_READING) {
                *ret = submit_work(loop, s, SLOT_COMPUTING);
            } else {
                s->state = SLOT_FREE;
                *ret = report_progress(job, s->length);
            }
            break;
        case SLOT_COMPUTING:
        case SLOT_COMMITTING:
            if (!work_done)
                break;
            moved = true;
            if (work_result < 0) {
                if (*ret == 0)
                    *ret = img_error(work_result, "%s", s->message);
                s->state = SLOT_FREE;
            } else if (s->state == SLOT_COMMITTING) {
                loop->next_commit++;
                s->state = SLOT_FREE;
                if (*ret == 0)
                    *ret = report_progress(job, s->length);
            } else if (*ret < 0) {
                s->state = SLOT_FREE;
            } else if (job->compress_unit) {
                s->state = SLOT_WAITING;
            } else {
                submit_requests(loop, s, SLOT_WRITING);
            }
            break;
        case SLOT_WAITING:
            if (*ret < 0) {
                /* The turns have ended: a chunk before this one will never be written. */
                s->state = SLOT_FREE;
                moved = true;
            } else if (s->seq == loop->next_commit) {
                *ret = submit_work(loop, s, SLOT_COMMITTING);
                moved = true;
            }
            break;
        }
    }
    return moved;
}

/* With loop->lock held: has a worker item finished that advance() has not seen? */
static bool work_finished(const struct convert_loop *loop)
{
    for (unsigned i = 0; i < loop->nslots; i++) {
        const struct slot *s = &loop->slots[i];
        if ((s->state == SLOT_COMPUTING || s->state == SLOT_COMMITTING) && s->work_done)
            return true;
    }
    return false;
}

/*
 * Blocks until an I/O request or a worker item finishes. A queue has no descriptor to wait on
 * together with the workers' condition variable, so with both kinds outstanding the loop waits
 * for the workers a short while at a time and looks at the queue in between: a worker that
 * finishes is seen at once, a request within WAIT_SLICE_NS.
 */
static int wait_for_event(struct convert_loop *loop)
{
    bool io = io_queue_in_flight(loop->queue) > 0;
    pthread_mutex_lock(&loop->lock);
    if (!io) {
        while (!work_finished(loop) && loop->working > 0)
            pthread_cond_wait(&loop->work_done, &loop->lock);
        pthread_mutex_unlock(&loop->lock);
        return 0;
    }
    if (loop->working == 0) {
        pthread_mutex_unlock(&loop->lock);
        int ret = io_queue_reap(loop->queue, 1);
        return ret < 0 ? ret : 0;
    }
    if (!work_finished(loop)) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += WAIT_SLICE_NS;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&loop->work_done, &loop->lock, &until);
    }
    pthread_mutex_unlock(&loop->lock);
    int ret = io_queue_reap(loop->queue, 0);
    return ret < 0 ? ret : 0;
}

static int run_loop(struct convert_loop *loop)
{
    struct convert_job *job = loop->job;
    uint64_t next = 0, seq = 0;
    int ret = 0;
    for (;;) {
        struct slot *s;
        /* Hand out chunks while there are free slots and nothing failed. */
        while (ret == 0 && next < job->src->size && (s = free_slot(loop)) != NULL) {
            uint64_t length = 0;
            ret = next_chunk(job, &next, &length);
            if (ret < 0 || next >= job->src->size)
                break;
            ret = start_chunk(loop, s, next, length, seq++);
            next += length;
        }
        if (advance(loop, &ret))
            continue;
        if (!any_busy(loop))
            break;
        int wait = wait_for_event(loop);
        if (wait < 0 && ret == 0)
            ret = wait;
        if (wait < 0 && !any_state(loop, SLOT_COMPUTING, SLOT_COMMITTING))
            break; /* the queue itself failed: nothing more can complete */
    }
    return ret;
}

int convert_copy(struct convert_job *job)
{
    struct convert_loop loop = {.job = job};
    loop.nslots =
        (unsigned)min_u64((uint64_t)workpool_size() * SLOTS_PER_WORKER + EXTRA_SLOTS, MAX_SLOTS);
    loop.slots = calloc(loop.nslots, sizeof(*loop.slots));
    if (!loop.slots)
        return img_error(-ENOMEM, "out of memory");
    int ret = io_queue_new(&loop.queue, QUEUE_DEPTH);
    if (ret < 0) {
        free(loop.slots);
        return ret;
    }
    for (unsigned i = 0; i < loop.nslots; i++)
        loop.slots[i].loop = &loop;
    pthread_mutex_init(&loop.lock, NULL);
    pthread_cond_init(&loop.work_done, NULL);

    ret = run_loop(&loop);

    /* Whatever is still in flight finishes before its buffers go. */
    io_queue_drain(loop.queue);
    pthread_mutex_lock(&loop.lock);
    while (loop.working > 0) {
        unsigned done = 0;
        for (unsigned i = 0; i < loop.nslots; i++) {
            struct slot *s = &loop.slots[i];
            if ((s->state == SLOT_COMPUTING || s->state == SLOT_COMMITTING) && s->work_done) {
                s->state = SLOT_FREE;
                done++;
            }
        }
        loop.working -= done;
        if (loop.working > 0)
            pthread_cond_wait(&loop.work_done, &loop.lock);
    }
    pthread_mutex_unlock(&loop.lock);
    io_queue_free(loop.queue);
    for (unsigned i = 0; i < loop.nslots; i++)
        if (loop.slots[i].ctx_ready)
            convert_chunk_ctx_fini(&loop.slots[i].ctx);
    pthread_cond_destroy(&loop.work_done);
    pthread_mutex_destroy(&loop.lock);
    free(loop.slots);
    return ret;
}
