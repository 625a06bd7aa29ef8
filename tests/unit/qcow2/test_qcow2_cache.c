/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The metadata slice cache: contents, the bound, pinning, invalidation, concurrent users. */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "qcow2_test_util.h"

#define SLICE 4096
#define SLICES 256

static struct io_file *make_file(void)
{
    char *path = qt_path("cache.bin");
    FILE *f = fopen(path, "wb");
    uint8_t buf[SLICE];
    for (unsigned i = 0; i < SLICES; i++) {
        memset(buf, (int)(i & 0xff), sizeof(buf));
        store_be64(buf, (uint64_t)i * SLICE);
        assert_int_equal(fwrite(buf, 1, sizeof(buf), f), sizeof(buf));
    }
    fclose(f);
    struct io_file *file;
    assert_int_equal(io_file_open(&file, path, O_RDONLY, 0), 0);
    free(path);
    return file;
}

static bool slice_ok(const uint8_t *data, unsigned i)
{
    return load_be64(data) == (uint64_t)i * SLICE && data[SLICE - 1] == (uint8_t)i;
}

static void test_bound_and_lru(void **state)
{
    struct io_file *file = make_file();
    struct qcow2_cache *c;
    assert_int_equal(qcow2_cache_new(&c, file, 3000, 1 << 20), -EINVAL);
    assert_int_equal(qcow2_cache_new(&c, file, SLICE, 10 * SLICE), 0);
    assert_int_equal(qcow2_cache_slice_bytes(c), SLICE);
    struct qcow2_cache_entry *e, *e2;
    const uint8_t *d, *d2;
    for (unsigned i = 0; i < 50; i++) {
        assert_int_equal(qcow2_cache_get(c, (uint64_t)i * SLICE, &e, &d), 0);
        assert_true(slice_ok(d, i));
        qcow2_cache_put(c, e);
        assert_true(qcow2_cache_count(c) <= 10);
    }
    assert_int_equal(qcow2_cache_count(c), 10);
    /* The most recent ten are cached: the same memory comes back. */
    assert_int_equal(qcow2_cache_get(c, 49 * SLICE, &e, &d), 0);
    assert_int_equal(qcow2_cache_get(c, 49 * SLICE, &e2, &d2), 0);
    assert_ptr_equal(e, e2);
    assert_ptr_equal(d, d2);
    qcow2_cache_put(c, e2);

    /* A pinned slice survives any amount of traffic. */
    for (unsigned i = 100; i < 200; i++) {
        struct qcow2_cache_entry *x;
        const uint8_t *xd;
        assert_int_equal(qcow2_cache_get(c, (uint64_t)i * SLICE, &x, &xd), 0);
        assert_true(slice_ok(xd, i));
        qcow2_cache_put(c, x);
    }
    assert_true(slice_ok(d, 49));
    assert_int_equal(qcow2_cache_count(c), 10);

    /* Invalidated while pinned: still readable by its user, gone for the next. */
    qcow2_cache_invalidate(c, 49 * SLICE + 100, 1);
    assert_true(slice_ok(d, 49));
    assert_int_equal(qcow2_cache_get(c, 49 * SLICE, &e2, &d2), 0);
    assert_ptr_not_equal(e, e2);
    assert_true(slice_ok(d2, 49));
    qcow2_cache_put(c, e);
    qcow2_cache_put(c, e2);
    qcow2_cache_invalidate(c, 0, UINT64_MAX / 2);
    assert_int_equal(qcow2_cache_count(c), 0);
    qcow2_cache_free(c);

    /* A tiny bound still keeps a useful minimum. */
    assert_int_equal(qcow2_cache_new(&c, file, SLICE, 0), 0);
    for (unsigned i = 0; i < 20; i++) {
        assert_int_equal(qcow2_cache_get(c, (uint64_t)i * SLICE, &e, &d), 0);
        qcow2_cache_put(c, e);
    }
    assert_int_equal(qcow2_cache_count(c), 8);
    qcow2_cache_free(c);
    io_file_close(file);
}

struct worker {
    struct qcow2_cache *cache;
    uint64_t seed;
    int bad;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint64_t x = w->seed;
    for (int n = 0; n < 20000; n++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        unsigned i = (unsigned)(x % SLICES);
        struct qcow2_cache_entry *e;
        const uint8_t *d;
        if (qcow2_cache_get(w->cache, (uint64_t)i * SLICE, &e, &d) != 0 || !slice_ok(d, i))
            w->bad++;
        else
            qcow2_cache_put(w->cache, e);
        if (n % 1000 == 0)
            qcow2_cache_invalidate(w->cache, (uint64_t)(x % SLICES) * SLICE, SLICE);
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct io_file *file = make_file();
    struct qcow2_cache *c;
    assert_int_equal(qcow2_cache_new(&c, file, SLICE, 16 * SLICE), 0);
    pthread_t t[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){.cache = c, .seed = 0x9e3779b97f4a7c15ull * (i + 1)};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].bad, 0);
    }
    assert_true(qcow2_cache_count(c) <= 16);
    qcow2_cache_free(c);
    io_file_close(file);
}

/*
 * A writer that changes a slice in the cache, writes it back and lets it be evicted must find
 * its change on the next get, even while a reader keeps missing the same slice: a reader's
 * read that started before the write-back must never put the old bytes back in the cache.
 */
struct writeback_race {
    struct qcow2_cache *cache;
    struct io_file *file;
    int stop;
    int reader_errors;
};

static void *miss_reader(void *arg)
{
    struct writeback_race *r = arg;
    while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) {
        struct qcow2_cache_entry *e;
        const uint8_t *d;
        if (qcow2_cache_get(r->cache, 0, &e, &d) != 0)
            __atomic_add_fetch(&r->reader_errors, 1, __ATOMIC_RELAXED);
        else
            qcow2_cache_put(r->cache, e);
    }
    return NULL;
}

static void test_writeback_then_evict(void **state)
{
    char *path = qt_path("writeback.bin");
    FILE *f = fopen(path, "wb");
    static uint8_t zero[SLICE * 32];
    assert_int_equal(fwrite(zero, 1, sizeof(zero), f), sizeof(zero));
    fclose(f);
    struct writeback_race r = {0};
    assert_int_equal(io_file_open(&r.file, path, O_RDWR, 0), 0);
    free(path);
    assert_int_equal(qcow2_cache_new(&r.cache, r.file, SLICE, 8 * SLICE), 0);
    /* More readers than cores: one is often preempted in the middle of its read. */
    pthread_t readers[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&readers[i], NULL, miss_reader, &r), 0);
    uint64_t stale = 0;
    for (uint64_t version = 1; version <= 10000; version++) {
        struct qcow2_cache_entry *e;
        const uint8_t *d;
        assert_int_equal(qcow2_cache_get(r.cache, 0, &e, &d), 0);
        if (load_be64(d) != version - 1)
            stale++;
        /* As qcow2_l2_set() does: change the cached bytes, then write them back. */
        uint8_t *w = (uint8_t *)d;
        store_be64(w, version);
        assert_int_equal(io_pwrite(r.file, w, SLICE, 0), 0);
        qcow2_cache_put(r.cache, e);
        if (version % 2) {
            qcow2_cache_invalidate(r.cache, 0, SLICE);
            continue;
        }
        for (unsigned i = 1; i < 16; i++) {
            assert_int_equal(qcow2_cache_get(r.cache, (uint64_t)i * SLICE, &e, &d), 0);
            qcow2_cache_put(r.cache, e);
        }
    }
    __atomic_store_n(&r.stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 4; i++)
        pthread_join(readers[i], NULL);
    assert_int_equal(r.reader_errors, 0);
    if (stale)
        fprintf(stderr, "%" PRIu64 " gets returned a slice older than its last write-back\n",
                stale);
    assert_int_equal(stale, 0);
    qcow2_cache_free(r.cache);
    io_file_close(r.file);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bound_and_lru),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_writeback_then_evict),
    };
    return cmocka_run_group_tests(tests, NULL, qt_teardown);
}
