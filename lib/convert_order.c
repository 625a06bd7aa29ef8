/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Guest-order allocation (qemu-img convert without -W). qemu-img writes a target in guest
 * order, so a format that allocates clusters as they are first written (qcow2, qed, vmdk, ...)
 * lays them out in guest order; this library's chunks run on several workers at once, and
 * without this the target's clusters would be laid out in whichever order the workers reached
 * them, differing from qemu-img's result and from one run to the next.
 *
 * "In order" here means the allocations, not the copying: a chunk waits before its first
 * allocation until every chunk handed out before it has made all of its own. Its reads, its
 * zero detection and its data writes still overlap with the other chunks', so only the
 * metadata steps take turns. Chunks are registered in the order they are handed out (on the
 * calling thread, before their workpool item is submitted); the workpool runs items in FIFO
 * order, so a chunk only ever waits for chunks already running: no deadlock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "convert_job.h"
#include "error.h"
#include "util/array.h"

struct convert_order {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    uint64_t *pending; /* offsets of chunks handed out that have not finished allocating */
    size_t npending, cap;
};

int convert_order_new(struct convert_order **out)
{
    struct convert_order *o = calloc(1, sizeof(*o));
    if (!o)
        return img_error(-ENOMEM, "out of memory");
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->changed, NULL);
    *out = o;
    return 0;
}

void convert_order_free(struct convert_order *o)
{
    if (!o)
        return;
    pthread_cond_destroy(&o->changed);
    pthread_mutex_destroy(&o->lock);
    free(o->pending);
    free(o);
}

int convert_order_register(const struct convert_job *job, uint64_t offset)
{
    struct convert_order *o = job->order;
    if (!o)
        return 0;
    pthread_mutex_lock(&o->lock);
    /* At most one per chunk in flight: bounded by the pool's slots. */
    int ret = ARRAY_RESERVE(o->pending, o->cap, o->npending + 1);
    if (ret == 0)
        o->pending[o->npending++] = offset;
    pthread_mutex_unlock(&o->lock);
    return ret;
}

static bool earlier_pending(const struct convert_order *o, uint64_t offset)
{
    for (size_t i = 0; i < o->npending; i++)
        if (o->pending[i] < offset)
            return true;
    return false;
}

void convert_order_wait(const struct convert_job *job, uint64_t offset)
{
    struct convert_order *o = job->order;
    if (!o)
        return;
    pthread_mutex_lock(&o->lock);
    while (earlier_pending(o, offset))
        pthread_cond_wait(&o->changed, &o->lock);
    pthread_mutex_unlock(&o->lock);
}

void convert_order_done(const struct convert_job *job, uint64_t offset)
{
    struct convert_order *o = job->order;
    if (!o)
        return;
    pthread_mutex_lock(&o->lock);
    for (size_t i = 0; i < o->npending; i++) {
        if (o->pending[i] == offset) {
            o->pending[i] = o->pending[--o->npending];
            pthread_cond_broadcast(&o->changed);
            break;
        }
    }
    pthread_mutex_unlock(&o->lock);
}
