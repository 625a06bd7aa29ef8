/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The process-wide worker pool for CPU work (see workpool.h). */
#include "util/workpool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>

#include "util/cpus.h"
#include "util/threads.h"

#define WORKPOOL_MAX_THREADS 64

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work;
    struct work_item *head, *tail;
    unsigned threads;
    bool atfork_registered;
} pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .work = PTHREAD_COND_INITIALIZER,
};

unsigned workpool_size(void)
{
    unsigned n = host_cpu_count();
    if (n < WORKPOOL_MIN_THREADS)
        n = WORKPOOL_MIN_THREADS;
    if (n > WORKPOOL_MAX_THREADS)
        n = WORKPOOL_MAX_THREADS;
    return n;
}

static void *worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (!pool.head)
            pthread_cond_wait(&pool.work, &pool.lock);
        struct work_item *item = pool.head;
        pool.head = item->next;
        if (!pool.head)
            pool.tail = NULL;
        pthread_mutex_unlock(&pool.lock);
        item->run(item);
        pthread_mutex_lock(&pool.lock);
    }
    return NULL;
}

static void atfork_prepare(void)
{
    pthread_mutex_lock(&pool.lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&pool.lock);
}

/* The child has none of the parent's workers, and none of its queued items are its own. */
static void atfork_child(void)
{
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.work, NULL);
    pool.head = pool.tail = NULL;
    pool.threads = 0;
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
    return threads_start_detached(&pool.threads, workpool_size(), worker_main);
}

int workpool_submit(struct work_item *item)
{
    pthread_mutex_lock(&pool.lock);
    int ret = start_pool();
    if (ret == 0) {
        item->next = NULL;
        if (pool.tail)
            pool.tail->next = item;
        else
            pool.head = item;
        pool.tail = item;
        pthread_cond_signal(&pool.work);
    }
    pthread_mutex_unlock(&pool.lock);
    return ret;
}
