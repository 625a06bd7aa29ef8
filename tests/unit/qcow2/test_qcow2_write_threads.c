/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Several threads writing one qcow2 handle at once. Each owns a byte range whose ends fall
 * inside clusters, so neighbours allocate the same clusters concurrently; in a second test two
 * threads write the two halves of the same clusters in opposite orders. Nothing may be lost:
 * the result must equal the expected bytes in `qemu-img compare` and pass `qemu-img check`,
 * while readers map and read the image all along. Skips (77) without qemu-img.
 */
#include <pthread.h>

#include "qcow2_write_test_util.h"

#define NTHREADS 8
#define IMAGE_SIZE (24u << 20)

static uint8_t expected[IMAGE_SIZE];

struct worker {
    img *h;
    uint64_t start, end; /* owned bytes */
    uint64_t seed;
    int error;
};

static void *write_region(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = w->seed;
    uint8_t *buf = malloc(256 << 10);
    for (int i = 0; i < 300 && !w->error; i++) {
        uint64_t span = w->end - w->start;
        uint64_t off = w->start + qw_rand(&rng) % span;
        uint64_t len = 1 + qw_rand(&rng) % (200 << 10);
        if (len > w->end - off)
            len = w->end - off;
        if (qw_rand(&rng) % 8 == 0) {
            if (img_zero(w->h, off, len, (qw_rand(&rng) & 1) ? IMG_ZERO_MAY_UNMAP : 0) < 0) {
                fprintf(stderr, "zero %" PRIu64 "+%" PRIu64 ": %s\n", off, len, img_last_error());
                w->error = 1;
            }
            memset(expected + off, 0, len);
            continue;
        }
        qw_fill(buf, len, qw_rand(&rng));
        if (img_pwrite(w->h, buf, len, off) != (int64_t)len) {
            fprintf(stderr, "write %" PRIu64 "+%" PRIu64 ": %s\n", off, len, img_last_error());
            w->error = 2;
        }
        memcpy(expected + off, buf, len);
    }
    free(buf);
    return NULL;
}

/* Reads everywhere while the writers run: must never fail. */
static int readers_stop;

static void *read_all(void *arg)
{
    img *h = arg;
    uint8_t *buf = malloc(1 << 20);
    uint64_t rng = 5;
    int *failed = calloc(1, sizeof(int));
    while (!__atomic_load_n(&readers_stop, __ATOMIC_RELAXED)) {
        uint64_t off = qw_rand(&rng) % IMAGE_SIZE;
        uint64_t len = 1 + qw_rand(&rng) % (1 << 20);
        if (len > IMAGE_SIZE - off)
            len = IMAGE_SIZE - off;
        if (img_pread(h, buf, len, off) != (int64_t)len) {
            fprintf(stderr, "concurrent read failed: %s\n", img_last_error());
            *failed = 1;
        }
    }
    free(buf);
    return failed;
}

static void write_expected(const char *raw)
{
    int fd = open(raw, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, expected, IMAGE_SIZE, 0), IMAGE_SIZE);
    close(fd);
}

/* The image, closed after the threads wrote, checks clean and holds what they wrote. Frees both
 * names. */
static void expect_written(char *path, char *raw)
{
    write_expected(raw);
    qw_assert_check_clean(path);
    qw_assert_same(path, raw);
    free(path);
    free(raw);
}

static void run_regions(const char *options, uint32_t cluster)
{
    char *path = qt_path("t.qcow2"), *raw = qt_path("t.raw");
    qw_create(path, IMAGE_SIZE, options);
    memset(expected, 0, sizeof(expected));
    img *h = qw_open(path);
    struct worker w[NTHREADS];
    pthread_t tid[NTHREADS], reader;
    __atomic_store_n(&readers_stop, 0, __ATOMIC_RELAXED);
    assert_int_equal(pthread_create(&reader, NULL, read_all, h), 0);
    for (int i = 0; i < NTHREADS; i++) {
        /* Boundaries a third of a cluster past a cluster boundary: clusters are shared. */
        w[i] = (struct worker){.h = h, .seed = 1000 + i};
        w[i].start = i == 0 ? 0 : (uint64_t)i * (IMAGE_SIZE / NTHREADS) + cluster / 3;
        w[i].end = i == NTHREADS - 1 ? IMAGE_SIZE
                                     : (uint64_t)(i + 1) * (IMAGE_SIZE / NTHREADS) + cluster / 3;
        assert_int_equal(pthread_create(&tid[i], NULL, write_region, &w[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(tid[i], NULL);
        assert_int_equal(w[i].error, 0);
    }
    __atomic_store_n(&readers_stop, 1, __ATOMIC_RELAXED);
    void *rfail;
    pthread_join(reader, &rfail);
    assert_int_equal(*(int *)rfail, 0);
    free(rfail);
    img_close(h);
    expect_written(path, raw);
}

static void test_disjoint_regions(void **state)
{
    (void)state;
    run_regions("", 65536);
    run_regions("cluster_size=4k", 4096);
    run_regions("extended_l2=on", 65536);
    run_regions("cluster_size=512,refcount_bits=64", 512);
}

struct half_worker {
    img *h;
    uint32_t cluster;
    unsigned nclusters;
    bool second_half;
    int error;
};

/* Writes one half of every cluster, in an order that differs between the two threads. */
static void *write_halves(void *arg)
{
    struct half_worker *w = arg;
    uint32_t half = w->cluster / 2;
    uint8_t *buf = malloc(half);
    for (unsigned k = 0; k < w->nclusters && !w->error; k++) {
        unsigned c = w->second_half ? w->nclusters - 1 - k : k;
        uint64_t off = (uint64_t)c * w->cluster + (w->second_half ? half : 0);
        qw_fill(buf, half, off);
        if (img_pwrite(w->h, buf, half, off) != (int64_t)half)
            w->error = 1;
        memcpy(expected + off, buf, half);
    }
    free(buf);
    return NULL;
}

static void run_halves(const char *options, uint32_t cluster, unsigned nclusters)
{
    char *path = qt_path("h.qcow2"), *raw = qt_path("h.raw");
    qw_create(path, IMAGE_SIZE, options);
    memset(expected, 0, sizeof(expected));
    img *h = qw_open(path);
    struct half_worker a = {h, cluster, nclusters, false, 0};
    struct half_worker b = {h, cluster, nclusters, true, 0};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, write_halves, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, write_halves, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.error, 0);
    assert_int_equal(b.error, 0);
    img_close(h);
    expect_written(path, raw);
}

static void test_same_clusters(void **state)
{
    (void)state;
    run_halves("", 65536, 300);
    run_halves("cluster_size=4k", 4096, 4000);
    run_halves("extended_l2=on,cluster_size=32k", 32768, 600);
}

/*
 * With extended L2 entries an entry and its subcluster bitmap are two words. One thread
 * keeps giving a cluster a host cluster (writing a subcluster) and taking it away (zeroing
 * it with unmap); readers map and read it all along and must only ever see a valid pair.
 */
struct toggle {
    img *h;
    int stop;
    int errors;
};

static void *map_and_read(void *arg)
{
    struct toggle *t = arg;
    uint8_t buf[4096];
    while (!__atomic_load_n(&t->stop, __ATOMIC_RELAXED)) {
        uint64_t pnum;
        if (img_block_status(t->h, 0, 65536, &pnum, NULL, NULL, NULL) < 0 ||
            img_pread(t->h, buf, 4096, 0) != 4096) {
            fprintf(stderr, "concurrent map/read failed: %s\n", img_last_error());
            __atomic_add_fetch(&t->errors, 1, __ATOMIC_RELAXED);
            return NULL;
        }
    }
    return NULL;
}

static void test_extended_l2_entry_pairs(void **state)
{
    (void)state;
    char *path = qt_path("x.qcow2");
    qw_create(path, 1 << 20, "extended_l2=on");
    struct toggle t = {.h = qw_open(path)};
    pthread_t readers[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&readers[i], NULL, map_and_read, &t), 0);
    uint8_t buf[2048];
    memset(buf, 0xa5, sizeof(buf));
    for (int i = 0; i < 20000 && !__atomic_load_n(&t.errors, __ATOMIC_RELAXED); i++) {
        assert_int_equal(img_pwrite(t.h, buf, sizeof(buf), (uint64_t)(i % 16) * 2048), sizeof(buf));
        assert_int_equal(img_zero(t.h, 0, 65536, IMG_ZERO_MAY_UNMAP), 0);
    }
    __atomic_store_n(&t.stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 3; i++)
        pthread_join(readers[i], NULL);
    assert_int_equal(t.errors, 0);
    img_close(t.h);
    qw_assert_check_clean(path);
    free(path);
}

int main(void)
{
    qw_require_qemu();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disjoint_regions),
        cmocka_unit_test(test_same_clusters),
        cmocka_unit_test(test_extended_l2_entry_pairs),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (!failed)
        qt_cleanup();
    return failed;
}
