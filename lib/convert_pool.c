/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Runs a convert on the process-wide workpool, one item per chunk. A few chunks are in flight
 * at once, each in a slot that moves through these states:
 *
 *   WORKING    a workpool item reads the chunk, fills what was not read (zeros,
 *              decompression), finds the zero blocks, and compresses, or allocates the target
 *              and writes it (convert_chunk.c: each step's requests in flight together through
 *              the engine, on the chunk's io_queue);
 *   WAITING    (compressing) computed, waiting for its turn to be written;
 *   COMMITTING (compressing) a workpool item writes the compressed clusters, in guest order.
 *
 * So the chunks' reads, writes and CPU work overlap on the workers, and no thread is kept for
 * the convert alone. The calling thread hands out chunks, skips whole chunks the source
 * reports as zeros, and reports progress: the progress callback runs on the caller's thread
 * alone, and its request to cancel stops new chunks; those in flight finish before convert
 * returns.
 *
 * Why one item per chunk: an event loop on the calling thread that sent each chunk's reads to
 * the engine, its CPU work to the pool and its writes to the engine again made six hand-offs
 * between threads per chunk where this makes two. Even woken by an eventfd rather than polling,
 * it made three times the voluntary context switches of one worker doing the whole chunk (585
 * against 199 per 1 GiB qcow2 -> raw convert on io_uring, 729 against 205 on the thread pool)
 * and took 15% more wall time (medians of 11 runs, 2 CPUs).
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

#include "convert_job.h"
#include "error.h"
#include "util/checked.h"
#include "util/workpool.h"

/*
 * One slot per worker, and one more chunk waiting in the pool's queue so that a worker
 * finishing a chunk finds the next at once. No more: every slot's buffers are touched in
 * turn, and a slot more is 2 MiB more memory to fault in and to cycle through the caches.
 * Measured with 2 CPUs, 6 slots (two per worker and two extra) against 3: a 1 GiB qcow2 ->
 * raw convert made 2217 page faults against 1206, and qcow2, zstd-compressed qcow2 and
 * overlay -> raw converts took 6-15% more CPU time (medians of 15 interleaved runs).
 */
#define WAITING_SLOTS 1
/* A compressed convert also holds chunks computed and waiting for their turn to be written. */
#define COMPRESS_SLOTS_PER_WORKER 2
#define COMPRESS_EXTRA_SLOTS 2
/* Bounds the memory in flight on large hosts: a slot holds up to three chunk-sized buffers. */
#define MAX_SLOTS 32

enum slot_state { SLOT_FREE, SLOT_WORKING, SLOT_WAITING, SLOT_COMMITTING };

struct convert_loop;

struct slot {
    struct work_item work; /* a chunk or a commit on the workpool */
    struct convert_loop *loop;
    enum slot_state state;
    struct convert_chunk_ctx ctx;
    bool ctx_ready;
    uint64_t offset, length;
    uint64_t seq; /* place in the order chunks are handed out */
    /* Set by the worker under loop->lock when its item is done. */
    bool work_done;
    int work_result;
    char message[512];
};

struct convert_loop {
    struct convert_job *job;
    struct slot *slots;
    unsigned nslots;
    /* Between the workers and the calling thread. */
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
    if (s->state == SLOT_COMMITTING) {
        ret = convert_chunk_commit(loop->job, &s->ctx, s->offset);
    } else {
        ret = convert_chunk_read(loop->job, &s->ctx, s->offset, s->length);
        if (ret == 0)
            ret = convert_chunk_compute(loop->job, &s->ctx, s->offset, s->length);
    }
    if (ret < 0)
        snprintf(s->message, sizeof(s->message), "%s", img_last_error());
    pthread_mutex_lock(&loop->lock);
    s->work_result = ret;
    s->work_done = true;
    pthread_cond_signal(&loop->work_done);
    pthread_mutex_unlock(&loop->lock);
}

/* ---- the calling thread's side ---- */

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
    /* Hook: allocations in guest order (convert_order.c). */
    int ret = convert_order_register(loop->job, offset);
    if (ret == 0 && (ret = submit_work(loop, s, SLOT_WORKING)) < 0)
        convert_order_done(loop->job, offset);
    return ret;
}

static struct slot *free_slot(struct convert_loop *loop)
{
    for (unsigned i = 0; i < loop->nslots; i++)
        if (loop->slots[i].state == SLOT_FREE)
            return &loop->slots[i];
    return NULL;
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
        if (s->state == SLOT_WORKING || s->state == SLOT_COMMITTING) {
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
        case SLOT_WORKING:
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
                s->state = SLOT_FREE;
                *ret = report_progress(job, s->length);
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
        if ((s->state == SLOT_WORKING || s->state == SLOT_COMMITTING) && s->work_done)
            return true;
    }
    return false;
}

/* Blocks until a worker item finishes. */
static void wait_for_work(struct convert_loop *loop)
{
    pthread_mutex_lock(&loop->lock);
    while (!work_finished(loop) && loop->working > 0)
        pthread_cond_wait(&loop->work_done, &loop->lock);
    pthread_mutex_unlock(&loop->lock);
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
        wait_for_work(loop);
    }
    return ret;
}

int convert_copy(struct convert_job *job)
{
    struct convert_loop loop = {.job = job};
    uint64_t workers = workpool_size();
    uint64_t slots = job->compress_unit ? workers * COMPRESS_SLOTS_PER_WORKER + COMPRESS_EXTRA_SLOTS
                                        : workers + WAITING_SLOTS;
    if (job->max_chunks)
        slots = min_u64(slots, job->max_chunks);
    loop.nslots = (unsigned)min_u64(slots, MAX_SLOTS);
    loop.slots = calloc(loop.nslots, sizeof(*loop.slots));
    if (!loop.slots)
        return img_error(-ENOMEM, "out of memory");
    for (unsigned i = 0; i < loop.nslots; i++)
        loop.slots[i].loop = &loop;
    pthread_mutex_init(&loop.lock, NULL);
    pthread_cond_init(&loop.work_done, NULL);

    int ret = run_loop(&loop);

    /* Whatever is still in flight finishes before its buffers go. */
    pthread_mutex_lock(&loop.lock);
    while (loop.working > 0) {
        unsigned done = 0;
        for (unsigned i = 0; i < loop.nslots; i++) {
            struct slot *s = &loop.slots[i];
            if ((s->state == SLOT_WORKING || s->state == SLOT_COMMITTING) && s->work_done) {
                s->state = SLOT_FREE;
                done++;
            }
        }
        loop.working -= done;
        if (loop.working > 0)
            pthread_cond_wait(&loop.work_done, &loop.lock);
    }
    pthread_mutex_unlock(&loop.lock);
    for (unsigned i = 0; i < loop.nslots; i++)
        if (loop.slots[i].ctx_ready)
            convert_chunk_ctx_fini(&loop.slots[i].ctx);
    pthread_cond_destroy(&loop.work_done);
    pthread_mutex_destroy(&loop.lock);
    free(loop.slots);
    return ret;
}
