/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Runs a convert as chunks on a pool of worker threads. Each chunk is read, checked for zeros,
 * decompressed and written by one worker, so reads, writes and (de)compression of different
 * chunks overlap. The calling thread only hands out chunks, skips ranges the source reports as
 * zeros, and reports progress: the progress callback runs on the caller's thread alone, and
 * its request to cancel stops new chunks; the ones in flight finish before convert returns.
 *
 * A compressed convert writes in guest order: workers compress their
 * chunks at once, then take turns in the order the chunks were handed out to write them. A
 * chunk that fails, or a convert that stops, ends the turns: workers still waiting give up.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert_job.h"
#include "error.h"
#include "util/checked.h"
#include "util/cpus.h"

/* Workers block in I/O as often as they compute: a few more than the CPUs keep both busy. */
#define EXTRA_WORKERS 2
#define MAX_WORKERS 16
/* Chunks handed out per worker, so that a worker finishing one finds the next waiting. */
#define CHUNKS_PER_WORKER 2

struct chunk_task {
    uint64_t offset, length;
    uint64_t seq;   /* place in the order chunks are handed out */
    bool abandoned; /* not written: the convert stopped while it waited for its turn */
    int result;
    char message[512];
    struct chunk_task *next;
};

struct pool {
    const struct convert_job *job;
    pthread_mutex_t lock;
    pthread_cond_t work;     /* workers: a task is waiting, or stop */
    pthread_cond_t finished; /* caller: a task is done */
    struct chunk_task *todo_head, *todo_tail;
    struct chunk_task *done_head;
    bool stop;
    /* Writing in order: the chunk whose turn it is, and whether the turns have ended. */
    bool in_order;
    pthread_cond_t turn;
    uint64_t next_write;
    bool turns_over;
};

static void end_turns(struct pool *p)
{
    p->turns_over = true;
    pthread_cond_broadcast(&p->turn);
}

/* The second half of an in-order chunk whose compression gave `result`. */
static int write_in_turn(struct pool *p, struct convert_chunk_ctx *ctx, struct chunk_task *t,
                         int result)
{
    pthread_mutex_lock(&p->lock);
    if (result < 0) {
        end_turns(p);
        pthread_mutex_unlock(&p->lock);
        return result;
    }
    while (p->next_write != t->seq && !p->turns_over)
        pthread_cond_wait(&p->turn, &p->lock);
    t->abandoned = p->turns_over;
    pthread_mutex_unlock(&p->lock);
    if (t->abandoned)
        return 0;

    result = convert_chunk_commit(p->job, ctx, t->offset);
    pthread_mutex_lock(&p->lock);
    if (result < 0) {
        end_turns(p);
    } else {
        p->next_write++;
        pthread_cond_broadcast(&p->turn);
    }
    pthread_mutex_unlock(&p->lock);
    return result;
}

static void *worker_main(void *arg)
{
    struct pool *p = arg;
    struct convert_chunk_ctx ctx;
    int init = convert_chunk_ctx_init(&ctx);
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->todo_head && !p->stop)
            pthread_cond_wait(&p->work, &p->lock);
        if (!p->todo_head)
            break;
        struct chunk_task *t = p->todo_head;
        p->todo_head = t->next;
        if (!p->todo_head)
            p->todo_tail = NULL;
        pthread_mutex_unlock(&p->lock);

        t->abandoned = false;
        t->result = init < 0 ? init : convert_chunk(p->job, &ctx, t->offset, t->length);
        if (p->in_order)
            t->result = write_in_turn(p, &ctx, t, t->result);
        if (t->result < 0)
            snprintf(t->message, sizeof(t->message), "%s", img_last_error());

        pthread_mutex_lock(&p->lock);
        t->next = p->done_head;
        p->done_head = t;
        pthread_cond_signal(&p->finished);
    }
    pthread_mutex_unlock(&p->lock);
    convert_chunk_ctx_fini(&ctx);
    return NULL;
}

static unsigned worker_count(void)
{
    return (unsigned)min_u64((uint64_t)host_cpu_count() + EXTRA_WORKERS, MAX_WORKERS);
}

/* Starts up to `want` workers with every signal blocked: signals belong to the caller. */
static unsigned start_workers(struct pool *p, pthread_t *tids, unsigned want)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    unsigned n = 0;
    while (n < want && pthread_create(&tids[n], NULL, worker_main, p) == 0)
        n++;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return n;
}

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

int convert_copy(struct convert_job *job)
{
    unsigned want = worker_count();
    unsigned ntasks = want * CHUNKS_PER_WORKER;
    struct pool p = {.job = job, .in_order = job->compress_unit != 0};
    pthread_t *tids = calloc(want, sizeof(*tids));
    struct chunk_task *tasks = calloc(ntasks, sizeof(*tasks));
    if (!tids || !tasks) {
        free(tids);
        free(tasks);
        return img_error(-ENOMEM, "out of memory");
    }
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.work, NULL);
    pthread_cond_init(&p.finished, NULL);
    pthread_cond_init(&p.turn, NULL);
    unsigned nworkers = start_workers(&p, tids, want);
    int ret = nworkers ? 0 : img_error(-EAGAIN, "convert: cannot start worker threads");

    struct chunk_task *free_list = NULL;
    for (unsigned i = 0; i < ntasks; i++) {
        tasks[i].next = free_list;
        free_list = &tasks[i];
    }
    unsigned busy = 0;
    uint64_t next = 0, seq = 0;
    pthread_mutex_lock(&p.lock);
    for (;;) {
        /* Hand out chunks while there are free tasks and nothing failed. */
        while (ret == 0 && free_list && next < job->src->size) {
            pthread_mutex_unlock(&p.lock);
            uint64_t length = 0;
            ret = next_chunk(job, &next, &length);
            pthread_mutex_lock(&p.lock);
            if (ret < 0 || next >= job->src->size)
                break;
            struct chunk_task *t = free_list;
            free_list = t->next;
            t->offset = next;
            t->length = length;
            t->seq = seq++;
            t->next = NULL;
            if (p.todo_tail)
                p.todo_tail->next = t;
            else
                p.todo_head = t;
            p.todo_tail = t;
            busy++;
            next += length;
            pthread_cond_signal(&p.work);
        }
        if (busy == 0)
            break;
        while (!p.done_head)
            pthread_cond_wait(&p.finished, &p.lock);
        struct chunk_task *done = p.done_head;
        p.done_head = NULL;
        pthread_mutex_unlock(&p.lock);
        while (done) {
            struct chunk_task *t = done;
            done = t->next;
            busy--;
            if (ret == 0 && t->result < 0)
                ret = img_error(t->result, "%s", t->message);
            else if (ret == 0 && !t->abandoned)
                ret = report_progress(job, t->length);
            t->next = free_list;
            free_list = t;
        }
        pthread_mutex_lock(&p.lock);
        if (ret < 0) {
            /*
             * Chunks not started yet are dropped; the running ones finish, but for those
             * waiting for a turn that the dropped chunks would never pass on.
             */
            end_turns(&p);
            while (p.todo_head) {
                struct chunk_task *t = p.todo_head;
                p.todo_head = t->next;
                t->next = free_list;
                free_list = t;
                busy--;
            }
            p.todo_tail = NULL;
        }
    }
    p.stop = true;
    pthread_cond_broadcast(&p.work);
    pthread_mutex_unlock(&p.lock);
    for (unsigned i = 0; i < nworkers; i++)
        pthread_join(tids[i], NULL);
    pthread_cond_destroy(&p.turn);
    pthread_cond_destroy(&p.finished);
    pthread_cond_destroy(&p.work);
    pthread_mutex_destroy(&p.lock);
    free(tasks);
    free(tids);
    return ret;
}
