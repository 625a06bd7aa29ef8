/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Several threads on one read-write handle, each on its own ranges, all at once:
 *
 *   1. whole and partial writes, zeroes and flushes, each thread on its own clusters;
 *   2. each cluster of a set split at odd byte offsets into one piece per thread, so the
 *      threads race to allocate (and copy-on-write) the same cluster;
 *   3. writers on fresh ranges while reader threads keep reading the settled ranges of phase 1
 *      and comparing them with what must be there.
 *
 * Then the handle is flushed and closed, the image opened again and compared with the expected
 * content, which is written to EXPECTED for qemu-img compare.
 *
 *   thread_writer IMAGE CLUSTER SEED EXPECTED [-f FORMAT] [--shadow-in FILE] [--threads N]
 *
 * Exit 0 clean, 1 failure (described on stderr), 2 usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgutil.h"
#include "ops.h"
#include "pattern.h"
#include "shadow.h"

#define MAX_THREADS 16
#define READERS 3
#define MAX_SPLIT_CLUSTERS 24

struct shared {
    img *image;
    struct shadow expected;
    uint64_t cluster;
    uint64_t clusters; /* whole clusters in the image */
    uint64_t seed;
    unsigned threads;
    pthread_barrier_t barrier;
    atomic_bool failed;
    atomic_bool writers_done;
};

struct worker {
    struct shared *sh;
    unsigned index;
    struct rng rng;
    uint8_t *buf;
};

static void fail(struct worker *w, const char *what, uint64_t offset, uint64_t length, int64_t ret)
{
    fprintf(stderr, "thread %u: %s at %" PRIu64 "+%" PRIu64 " returned %" PRId64 " (%s): %s\n",
            w->index, what, offset, length, ret, ret < 0 ? img_strerror((int)ret) : "-",
            ret < 0 ? img_last_error() : "");
    atomic_store(&w->sh->failed, true);
}

static void write_range(struct worker *w, uint64_t offset, uint64_t length)
{
    struct shared *sh = w->sh;
    uint64_t seed = rng_next(&w->rng);
    pattern_fill(w->buf, (size_t)length, seed, offset);
    int64_t ret = img_pwrite(sh->image, w->buf, (size_t)length, offset);
    if (ret != (int64_t)length)
        fail(w, "img_pwrite", offset, length, ret);
    memcpy(sh->expected.data + offset, w->buf, (size_t)length);
}

static void zero_range(struct worker *w, uint64_t offset, uint64_t length, unsigned flags)
{
    int ret = img_zero(w->sh->image, offset, length, flags);
    if (ret < 0)
        fail(w, "img_zero", offset, length, ret);
    memset(w->sh->expected.data + offset, 0, (size_t)length);
}

/* Phase 1: clusters c with c % threads == index, in a shuffled order, various shapes. */
static void own_clusters(struct worker *w)
{
    struct shared *sh = w->sh;
    uint64_t mine = (sh->clusters + sh->threads - 1 - w->index) / sh->threads;
    for (uint64_t k = 0; k < mine && !atomic_load(&sh->failed); k++) {
        uint64_t pick = rng_below(&w->rng, mine);
        uint64_t c = pick * sh->threads + w->index;
        uint64_t base = c * sh->cluster;
        uint64_t a = rng_below(&w->rng, sh->cluster);
        uint64_t b = rng_range(&w->rng, a + 1, sh->cluster);
        /* Flushes (fsync) are rare: enough to interleave with the others' allocations. */
        switch (rng_below(&w->rng, 64) ? rng_below(&w->rng, 5) : 5) {
        case 0:
        case 1:
            write_range(w, base, sh->cluster);
            break;
        case 2:
        case 3:
            write_range(w, base + a, b - a);
            break;
        case 4:
            zero_range(w, base + a, b - a, rng_below(&w->rng, 2) ? IMG_ZERO_MAY_UNMAP : 0);
            break;
        default: {
            int ret = img_flush(sh->image);
            if (ret < 0)
                fail(w, "img_flush", 0, 0, ret);
        }
        }
    }
}

/*
 * Phase 2: clusters split at odd offsets into one piece per thread. The split points are drawn
 * from the shared seed, so every thread computes the same ones.
 */
static void split_clusters(struct worker *w)
{
    struct shared *sh = w->sh;
    struct rng layout;
    rng_seed(&layout, sh->seed ^ 0x5bd1e995u);
    uint64_t count = sh->clusters < MAX_SPLIT_CLUSTERS ? sh->clusters : MAX_SPLIT_CLUSTERS;
    /* No early exit on failure: the other threads wait at the barrier. */
    for (uint64_t k = 0; k < count; k++) {
        uint64_t c = rng_below(&layout, sh->clusters);
        uint64_t cuts[MAX_THREADS + 1];
        cuts[0] = 0;
        cuts[sh->threads] = sh->cluster;
        for (unsigned t = 1; t < sh->threads; t++)
            cuts[t] = sh->cluster * t / sh->threads + rng_below(&layout, 97) - 48;
        /* Same-cluster pieces of all threads are issued together, cluster by cluster. */
        pthread_barrier_wait(&sh->barrier);
        uint64_t from = c * sh->cluster + cuts[w->index];
        uint64_t to = c * sh->cluster + cuts[w->index + 1];
        if (to > from && !atomic_load(&sh->failed))
            write_range(w, from, to - from);
    }
}

/* Phase 3, writers: the upper halves of every third cluster, which the readers leave alone. */
static void fresh_ranges(struct worker *w)
{
    struct shared *sh = w->sh;
    for (uint64_t c = w->index; c < sh->clusters && !atomic_load(&sh->failed); c += sh->threads)
        if (c % 3 == 0)
            write_range(w, c * sh->cluster + sh->cluster / 2, sh->cluster / 2);
}

static void *phase1_main(void *arg)
{
    own_clusters(arg);
    return NULL;
}

static void *phase2_main(void *arg)
{
    split_clusters(arg);
    return NULL;
}

static void *phase3_main(void *arg)
{
    fresh_ranges(arg);
    return NULL;
}

/* Reads the lower halves of clusters (settled since phase 2) until the writers are done. */
static void *reader_main(void *arg)
{
    struct worker *w = arg;
    struct shared *sh = w->sh;
    uint64_t rounds = 0;
    while ((!atomic_load(&sh->writers_done) || rounds < 64) && !atomic_load(&sh->failed)) {
        uint64_t c = rng_below(&w->rng, sh->clusters) / 3 * 3;
        uint64_t a = rng_below(&w->rng, sh->cluster / 2);
        uint64_t b = rng_range(&w->rng, a + 1, sh->cluster / 2);
        uint64_t offset = c * sh->cluster + a;
        int64_t n = img_pread(sh->image, w->buf, (size_t)(b - a), offset);
        if (n != (int64_t)(b - a)) {
            fail(w, "img_pread", offset, b - a, n);
        } else if (memcmp(w->buf, sh->expected.data + offset, (size_t)(b - a)) != 0) {
            uint64_t i = 0;
            while (w->buf[i] == sh->expected.data[offset + i])
                i++;
            fprintf(stderr,
                    "reader %u: guest offset %" PRIu64 " reads 0x%02x, expected 0x%02x, "
                    "while other threads write the upper halves of clusters\n",
                    w->index, offset + i, w->buf[i], sh->expected.data[offset + i]);
            atomic_store(&sh->failed, true);
        }
        rounds++;
    }
    return NULL;
}

/* Runs `count` workers from `first` on `fn` and waits for them. */
static void run_phase(struct worker *workers, unsigned first, unsigned count, void *(*fn)(void *),
                      pthread_t *ids)
{
    for (unsigned t = first; t < first + count; t++)
        if (pthread_create(&ids[t], NULL, fn, &workers[t]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            exit(1);
        }
}

static void join_phase(unsigned first, unsigned count, pthread_t *ids)
{
    for (unsigned t = first; t < first + count; t++)
        pthread_join(ids[t], NULL);
}

static int usage(void)
{
    fprintf(stderr, "usage: thread_writer IMAGE CLUSTER SEED EXPECTED [-f FORMAT] "
                    "[--shadow-in FILE] [--threads N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct shared sh = {.threads = 4};
    const char *format = NULL, *shadow_in = NULL;
    uint64_t threads = 4;
    if (argc < 5 || !op_parse_number(argv[2], &sh.cluster) || !op_parse_number(argv[3], &sh.seed) ||
        sh.cluster < 512)
        return usage();
    for (int i = 5; i < argc; i++) {
        if (i + 1 >= argc)
            return usage();
        if (strcmp(argv[i], "-f") == 0)
            format = argv[++i];
        else if (strcmp(argv[i], "--shadow-in") == 0)
            shadow_in = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && op_parse_number(argv[++i], &threads) &&
                 threads >= 2 && threads <= MAX_THREADS)
            sh.threads = (unsigned)threads;
        else
            return usage();
    }
    int ret = img_open(&sh.image, argv[1], format, IMG_OPEN_READ_WRITE, NULL);
    if (ret < 0) {
        fprintf(stderr, "img_open: %d (%s): %s\n", ret, img_strerror(ret), img_last_error());
        return 1;
    }
    int64_t size = img_get_size(sh.image);
    sh.clusters = size > 0 ? (uint64_t)size / sh.cluster : 0;
    if (sh.clusters < sh.threads ||
        (shadow_in ? shadow_load(&sh.expected, shadow_in, (uint64_t)size)
                   : shadow_init(&sh.expected, (uint64_t)size)) < 0) {
        fprintf(stderr, "thread_writer: image too small or no memory\n");
        return 1;
    }
    pthread_barrier_init(&sh.barrier, NULL, sh.threads);
    struct worker workers[MAX_THREADS + READERS];
    pthread_t ids[MAX_THREADS + READERS];
    for (unsigned t = 0; t < sh.threads + READERS; t++) {
        workers[t] = (struct worker){.sh = &sh, .index = t, .buf = malloc(sh.cluster)};
        rng_seed(&workers[t].rng, sh.seed + t);
        if (!workers[t].buf) {
            fprintf(stderr, "thread_writer: out of memory\n");
            return 1;
        }
    }
    const char *phase = "1 (own clusters)";
    run_phase(workers, 0, sh.threads, phase1_main, ids);
    join_phase(0, sh.threads, ids);
    if (!atomic_load(&sh.failed)) {
        phase = "2 (pieces of shared clusters)";
        run_phase(workers, 0, sh.threads, phase2_main, ids);
        join_phase(0, sh.threads, ids);
    }
    if (!atomic_load(&sh.failed)) {
        phase = "3 (writers with readers)";
        run_phase(workers, sh.threads, READERS, reader_main, ids);
        run_phase(workers, 0, sh.threads, phase3_main, ids);
        join_phase(0, sh.threads, ids);
        atomic_store(&sh.writers_done, true);
        join_phase(sh.threads, READERS, ids);
    }
    for (unsigned t = 0; t < sh.threads + READERS; t++)
        free(workers[t].buf);
    pthread_barrier_destroy(&sh.barrier);
    int status = atomic_load(&sh.failed) ? 1 : 0;
    if (status == 0) {
        ret = img_flush(sh.image);
        if (ret < 0) {
            fprintf(stderr, "img_flush: %d: %s\n", ret, img_last_error());
            status = 1;
        }
    }
    img_close(sh.image);
    sh.image = NULL;
    if (status == 0) {
        phase = "the end (opened again)";
        ret = img_open(&sh.image, argv[1], format, IMG_OPEN_READ_ONLY, NULL);
        if (ret < 0) {
            fprintf(stderr, "img_open: %d: %s\n", ret, img_last_error());
            status = 1;
        } else if (shadow_verify_all(&sh.expected, sh.image, "opened again after the threads") <
                       0 ||
                   shadow_save(&sh.expected, argv[4]) < 0) {
            status = 1;
        }
        img_close(sh.image);
    }
    if (status)
        fprintf(stderr, "thread_writer: failed in phase %s\n", phase);
    shadow_free(&sh.expected);
    return status;
}
