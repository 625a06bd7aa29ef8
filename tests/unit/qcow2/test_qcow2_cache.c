/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The metadata slice cache: contents, the bound, pinning, invalidation, concurrent users. */
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

static int teardown(void **state)
{
    qt_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bound_and_lru),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
