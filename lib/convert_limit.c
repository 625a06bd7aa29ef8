/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The limits of a running convert: its write rate (qemu-img convert -r) and img_cancel() on
 * the source handle. Workers account their writes here before submitting them; a worker
 * that is ahead of the rate sleeps, in short slices so that a cancel is seen within one.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "convert_job.h"
#include "error.h"

/* A cancel is noticed within this while a worker waits for the rate. */
#define SLICE_NS 50000000L

struct convert_limit {
    pthread_mutex_t lock;
    struct img *src;
    uint64_t cancel_mark; /* src->cancel_requests when the convert began */
    uint64_t rate;        /* bytes per second; 0: no limit */
    uint64_t bytes;       /* accounted so far, under `lock` */
    struct timespec start;
};

int convert_limit_new(struct convert_limit **out, struct img *src, uint64_t rate)
{
    struct convert_limit *l = calloc(1, sizeof(*l));
    if (!l)
        return img_error(-ENOMEM, "out of memory");
    pthread_mutex_init(&l->lock, NULL);
    l->src = src;
    l->cancel_mark = __atomic_load_n(&src->cancel_requests, __ATOMIC_ACQUIRE);
    l->rate = rate;
    clock_gettime(CLOCK_MONOTONIC, &l->start);
    *out = l;
    return 0;
}

void convert_limit_free(struct convert_limit *limit)
{
    if (!limit)
        return;
    pthread_mutex_destroy(&limit->lock);
    free(limit);
}

int convert_limit_check_cancel(const struct convert_limit *limit)
{
    if (limit &&
        __atomic_load_n(&limit->src->cancel_requests, __ATOMIC_ACQUIRE) != limit->cancel_mark)
        return img_error(-ECANCELED, "convert cancelled");
    return 0;
}

/* Nanoseconds from `a` to `b` (negative when `b` is earlier). */
static long double ns_between(const struct timespec *a, const struct timespec *b)
{
    return (long double)(b->tv_sec - a->tv_sec) * 1e9L + (long double)(b->tv_nsec - a->tv_nsec);
}

int convert_limit_account(struct convert_limit *limit, uint64_t bytes)
{
    if (!limit)
        return 0;
    int ret = convert_limit_check_cancel(limit);
    if (ret < 0 || limit->rate == 0)
        return ret;
    pthread_mutex_lock(&limit->lock);
    limit->bytes += bytes;
    /* When the writes accounted so far are due at the rate, counted from the start. */
    long double due_ns = (long double)limit->bytes * 1e9L / (long double)limit->rate;
    pthread_mutex_unlock(&limit->lock);
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long double wait_ns = due_ns - ns_between(&limit->start, &now);
        if (wait_ns <= 0)
            return 0;
        struct timespec slice = {0, wait_ns < SLICE_NS ? (long)wait_ns : SLICE_NS};
        nanosleep(&slice, NULL);
        ret = convert_limit_check_cancel(limit);
        if (ret < 0)
            return ret;
    }
}
