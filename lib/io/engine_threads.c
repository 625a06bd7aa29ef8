/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The thread-pool engine: one process-wide pool of workers running the synchronous calls of
 * file.c. Workers never run callbacks; they append finished requests to their queue's done
 * list and wake the thread waiting in collect(), which hands them to queue.c.
 *
 * The workers start with the first request handed to them: a process whose queues are all
 * waited ones (io_queue_set_waited), and whose other calls are synchronous, runs every request
 * on its own threads and starts none.
 *
 * Each queue keeps its own pending list, and the pool serves the queues that have pending
 * work in turn, so one queue with a deep backlog does not starve the others.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "engine.h"
#include "error.h"
#include "imgutil.h"
#include "util/cpus.h"
#include "util/threads.h"

/* A blocking fsync must not hold up every read, so there are at least two workers. */
#define POOL_MIN_THREADS 2
#define POOL_MAX_THREADS 64

struct thread_queue {
    /* How workers perform a request: the host primitives, or the fault engine's wrapper. */
    int (*execute)(struct io_req *req);

    /* A waited queue's requests not yet started: only the owner's thread touches these. */
    struct io_req *held_head;
    struct io_req *held_tail;

    /* Guarded by pool.lock. */
    struct io_req *pending_head;
    struct io_req *pending_tail;
    struct thread_queue *runnable_next;
    bool runnable;

    /* Guarded by lock: requests the workers have finished, not yet collected. */
    pthread_mutex_t lock;
    pthread_cond_t finished;
    struct io_req *done_head;
    struct io_req *done_tail;
    unsigned done_count;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work;
    struct thread_queue *runnable_head;
    struct thread_queue *runnable_tail;
    unsigned threads;
    bool atfork_registered;
} pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .work = PTHREAD_COND_INITIALIZER,
};

static void append_req(struct io_req **head, struct io_req **tail, struct io_req *req)
{
    req->engine_next = NULL;
    if (*tail)
        (*tail)->engine_next = req;
    else
        *head = req;
    *tail = req;
}

static void make_runnable(struct thread_queue *tq)
{
    tq->runnable = true;
    tq->runnable_next = NULL;
    if (pool.runnable_tail)
        pool.runnable_tail->runnable_next = tq;
    else
        pool.runnable_head = tq;
    pool.runnable_tail = tq;
}

/* With pool.lock held: the next request, taking queues in turn. */
static struct io_req *take_work(struct thread_queue **from)
{
    struct thread_queue *tq = pool.runnable_head;
    pool.runnable_head = tq->runnable_next;
    if (!pool.runnable_head)
        pool.runnable_tail = NULL;
    tq->runnable = false;

    struct io_req *req = tq->pending_head;
    tq->pending_head = req->engine_next;
    if (!tq->pending_head)
        tq->pending_tail = NULL;
    else
        make_runnable(tq);
    *from = tq;
    return req;
}

static void finish(struct thread_queue *tq, struct io_req *req)
{
    pthread_mutex_lock(&tq->lock);
    append_req(&tq->done_head, &tq->done_tail, req);
    tq->done_count++;
    pthread_cond_signal(&tq->finished);
    /* After this unlock the owner may free tq: nothing below may touch it. */
    pthread_mutex_unlock(&tq->lock);
}

static void *worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (!pool.runnable_head)
            pthread_cond_wait(&pool.work, &pool.lock);
        struct thread_queue *tq;
        struct io_req *req = take_work(&tq);
        pthread_mutex_unlock(&pool.lock);

        req->engine_result = tq->execute(req);
        finish(tq, req);

        pthread_mutex_lock(&pool.lock);
    }
    return NULL;
}

/*
 * A forked child has none of the parent's workers. It starts with an empty pool (which grows
 * again on first use); requests that were in flight in the parent are not carried over.
 */
static void atfork_prepare(void)
{
    pthread_mutex_lock(&pool.lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&pool.lock);
}

static void atfork_child(void)
{
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.work, NULL);
    pool.runnable_head = NULL;
    pool.runnable_tail = NULL;
    pool.threads = 0;
}

static unsigned pool_size(void)
{
    unsigned cpus = host_cpu_count();
    if (cpus < POOL_MIN_THREADS)
        cpus = POOL_MIN_THREADS;
    if (cpus > POOL_MAX_THREADS)
        cpus = POOL_MAX_THREADS;
    return cpus;
}

/* With pool.lock held: starts the workers on first use. */
static int start_pool(void)
{
    if (pool.threads > 0)
        return 0;
    if (!pool.atfork_registered) {
        int ret = pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
        if (ret != 0)
            return -ret;
        pool.atfork_registered = true;
    }

    return threads_start_detached(&pool.threads, pool_size(), worker_main);
}

static bool threads_available(void)
{
    return true;
}

int io_threads_queue_init(struct io_queue *q)
{
    struct thread_queue *tq = calloc(1, sizeof(*tq));
    if (!tq)
        return -ENOMEM;
    if (pthread_mutex_init(&tq->lock, NULL) != 0) {
        free(tq);
        return -ENOMEM;
    }
    if (pthread_cond_init(&tq->finished, NULL) != 0) {
        pthread_mutex_destroy(&tq->lock);
        free(tq);
        return -ENOMEM;
    }

    /*
     * The workers start with the first request a queue hands to them (io_threads_submit), not
     * here: a waited queue (convert's chunks, raw's fill) runs its requests on its owner's
     * thread and never needs them.
     */
    tq->execute = q->engine->execute;
    q->engine_state = tq;
    return 0;
}

void io_threads_queue_fini(struct io_queue *q)
{
    struct thread_queue *tq = q->engine_state;
    /* The last worker to touch tq released its lock; taking it once orders us after that. */
    pthread_mutex_lock(&tq->lock);
    pthread_mutex_unlock(&tq->lock);
    pthread_cond_destroy(&tq->finished);
    pthread_mutex_destroy(&tq->lock);
    free(tq);
}

int io_threads_submit(struct io_queue *q, struct io_req *req)
{
    struct thread_queue *tq = q->engine_state;
    if (q->waited) {
        /* Held back for collect(), which runs it on the waiting thread (the only one touching it).
         */
        append_req(&tq->held_head, &tq->held_tail, req);
        return 0;
    }
    pthread_mutex_lock(&pool.lock);
    int ret = start_pool();
    if (ret < 0) {
        pthread_mutex_unlock(&pool.lock);
        return img_error(ret, "io: cannot start the %s I/O engine's threads: %s",
                         io_engine_threads.name, img_strerror(ret));
    }
    append_req(&tq->pending_head, &tq->pending_tail, req);
    if (!tq->runnable)
        make_runnable(tq);
    pthread_cond_signal(&pool.work);
    pthread_mutex_unlock(&pool.lock);
    return 0;
}

/*
 * A waited queue's held-back requests run here, one after another, on the thread that would
 * otherwise sleep until a worker had run them: as for a synchronous call, a hop to a worker
 * and back would only add wake-ups. Measured on a 1 GiB qcow2 -> raw convert (two requests per
 * chunk on average): handing all but the first to the workers made 2.9 times the futex calls
 * (1682 against 581) and 4 times the voluntary context switches, and cost 13% more CPU time,
 * than running them all here. The owner's parallelism comes from its other queues on other threads.
 */
static void run_held(struct thread_queue *tq)
{
    struct io_req *req = tq->held_head;
    tq->held_head = tq->held_tail = NULL;
    while (req) {
        struct io_req *next = req->engine_next;
        req->engine_result = tq->execute(req);
        finish(tq, req);
        req = next;
    }
}

int io_threads_collect(struct io_queue *q, unsigned min)
{
    struct thread_queue *tq = q->engine_state;
    if (min > 0)
        run_held(tq);
    pthread_mutex_lock(&tq->lock);
    while (tq->done_count < min)
        pthread_cond_wait(&tq->finished, &tq->lock);
    struct io_req *req = tq->done_head;
    tq->done_head = NULL;
    tq->done_tail = NULL;
    tq->done_count = 0;
    pthread_mutex_unlock(&tq->lock);

    while (req) {
        struct io_req *next = req->engine_next;
        io_queue_complete(q, req, req->engine_result);
        req = next;
    }
    return 0;
}

/*
 * A synchronous request runs on the calling thread: the caller blocks until it is done either
 * way, and a hop to a worker and back would only add two wake-ups of latency.
 */
const struct io_engine io_engine_threads = {
    .name = "threads",
    .available = threads_available,
    .queue_init = io_threads_queue_init,
    .queue_fini = io_threads_queue_fini,
    .submit = io_threads_submit,
    .collect = io_threads_collect,
    .execute = io_req_execute,
};
