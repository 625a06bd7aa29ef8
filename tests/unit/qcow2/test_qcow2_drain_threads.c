/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Calls that change what the data path relies on (resize, snapshot apply, check with repair)
 * racing reads and writes on the same handle. They drain the handle's I/O and exclude it while
 * they run, so each read sees the image wholly before or wholly after them: readers assert the
 * bytes they get, and the image afterwards checks clean in qemu-img and equals the expected
 * bytes. Meant to run under ThreadSanitizer too (no report may appear). Skips (77) without
 * qemu-img.
 */
#include <pthread.h>

#include "qcow2_write_test_util.h"

#define MIB (1u << 20)
#define CLUSTER 65536u

/* ---- resize against reads and writes -------------------------------------------------------
 *
 * Layout: [0, 1 MiB) is rewritten by a writer thread all along, [1 MiB, 4 MiB) holds FILL
 * written before, and everything from 4 MiB on is space the resizes add: zeros.
 */
#define RESIZE_START (4u * MIB)
#define RESIZE_MAX (32u * MIB)
#define WRITER_END (1u * MIB)
#define FILL 0x5a

struct resize_race {
    img *h;
    int stop;        /* set when the resizes are done */
    int failed;      /* a reader or the writer saw something wrong */
    uint8_t *writer; /* what the writer wrote last, [0, WRITER_END) */
};

static void race_fail(struct resize_race *r, const char *what, uint64_t off)
{
    fprintf(stderr, "%s at %" PRIu64 ": %s\n", what, off, img_last_error());
    __atomic_store_n(&r->failed, 1, __ATOMIC_RELAXED);
}

static void *resize_reader(void *arg)
{
    struct resize_race *r = arg;
    uint8_t *buf = malloc(MIB);
    uint64_t rng = 77;
    while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) {
        uint64_t off = WRITER_END + qw_rand(&rng) % (RESIZE_MAX - WRITER_END);
        size_t len = 1 + qw_rand(&rng) % MIB;
        int64_t n = img_pread(r->h, buf, len, off);
        if (n < 0 || (uint64_t)n > len) {
            race_fail(r, "read failed", off);
            break;
        }
        for (int64_t i = 0; i < n; i++) {
            uint8_t want = off + (uint64_t)i < RESIZE_START ? FILL : 0;
            if (buf[i] != want) {
                race_fail(r, "read unexpected bytes", off + (uint64_t)i);
                break;
            }
        }
        /* The size a read sees is one the image had: never between. */
        int64_t size = img_get_size(r->h);
        if (size < (int64_t)RESIZE_START || size > (int64_t)RESIZE_MAX)
            race_fail(r, "odd size", (uint64_t)size);
    }
    free(buf);
    return NULL;
}

static void *resize_writer(void *arg)
{
    struct resize_race *r = arg;
    uint8_t *buf = malloc(128 << 10);
    uint64_t rng = 99;
    for (int i = 0; i < 200; i++) {
        uint64_t off = qw_rand(&rng) % WRITER_END;
        size_t len = 1 + qw_rand(&rng) % (128 << 10);
        if (len > WRITER_END - off)
            len = WRITER_END - off;
        qw_fill(buf, len, qw_rand(&rng));
        if (img_pwrite(r->h, buf, len, off) != (int64_t)len) {
            race_fail(r, "write failed", off);
            break;
        }
        memcpy(r->writer + off, buf, len);
    }
    free(buf);
    return NULL;
}

/* Grows in steps to RESIZE_MAX, shrinks back and grows again, with I/O running throughout. */
static void run_resize_race(const char *format)
{
    char *path = qt_path(strcmp(format, "raw") == 0 ? "r.raw" : "r.qcow2");
    char *expected = qt_path("r-expected.raw");
    img_opts *o = qw_opts("overwrite=on");
    assert_int_equal(img_create(path, format, RESIZE_START, o), 0);
    img_opts_free(o);
    img *h = NULL;
    assert_int_equal(img_open(&h, path, format, IMG_OPEN_READ_WRITE, NULL), 0);
    uint8_t *fill = malloc(RESIZE_START);
    memset(fill, 0, WRITER_END);
    memset(fill + WRITER_END, FILL, RESIZE_START - WRITER_END);
    assert_int_equal(img_pwrite(h, fill, RESIZE_START, 0), (int64_t)RESIZE_START);

    struct resize_race r = {.h = h, .writer = calloc(1, WRITER_END)};
    pthread_t readers[2], writer;
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&readers[i], NULL, resize_reader, &r), 0);
    assert_int_equal(pthread_create(&writer, NULL, resize_writer, &r), 0);
    for (uint64_t size = RESIZE_START + 4 * MIB; size <= RESIZE_MAX; size += 4 * MIB)
        assert_int_equal(img_resize(h, size, 0, NULL), 0);
    assert_int_equal(img_resize(h, RESIZE_START + 4 * MIB, IMG_RESIZE_SHRINK, NULL), 0);
    assert_int_equal(img_resize(h, RESIZE_START + 12 * MIB, 0, NULL), 0);
    pthread_join(writer, NULL);
    __atomic_store_n(&r.stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 2; i++)
        pthread_join(readers[i], NULL);
    assert_int_equal(r.failed, 0);
    assert_int_equal(img_get_size(h), RESIZE_START + 12 * MIB);
    img_close(h);

    struct qw_shadow want;
    qw_shadow_open(&want, expected, RESIZE_START + 12 * MIB);
    qw_shadow_write(&want, fill, RESIZE_START, 0);
    qw_shadow_write(&want, r.writer, WRITER_END, 0);
    qw_shadow_close(&want);
    if (strcmp(format, "qcow2") == 0) {
        qw_assert_check_clean(path);
        qw_assert_same(path, expected);
    } else {
        assert_int_equal(qt_run("qemu-img compare -q -f raw -F raw '%s' '%s'", path, expected), 0);
    }
    free(fill);
    free(r.writer);
    free(path);
    free(expected);
}

static void test_resize_against_io(void **state)
{
    (void)state;
    run_resize_race("qcow2");
    run_resize_race("raw");
}

/* ---- snapshot apply against reads ----------------------------------------------------------
 *
 * The snapshot holds OLD_BYTE everywhere, the active image NEW_BYTE: a read sees each cluster
 * wholly one or the other, never a mix, and never fails.
 */
#define SNAP_SIZE (8u * MIB)
#define OLD_BYTE 0xaa
#define NEW_BYTE 0xbb

struct read_race {
    img *h;
    uint64_t size;
    int stop;
    int failed;
    int (*cluster_ok)(const uint8_t *cluster, uint64_t guest_offset);
};

static int uniform_old_or_new(const uint8_t *c, uint64_t guest_offset)
{
    (void)guest_offset;
    if (c[0] != OLD_BYTE && c[0] != NEW_BYTE)
        return 0;
    for (size_t i = 1; i < CLUSTER; i++)
        if (c[i] != c[0])
            return 0;
    return 1;
}

/* Reads whole clusters (1 to 4) at random until told to stop; checks each. */
static void *cluster_reader(void *arg)
{
    struct read_race *r = arg;
    uint8_t *buf = malloc(4 * CLUSTER);
    uint64_t rng = 1234;
    uint64_t clusters = r->size / CLUSTER;
    while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) {
        uint64_t first = qw_rand(&rng) % clusters;
        uint64_t count = 1 + qw_rand(&rng) % 4;
        if (count > clusters - first)
            count = clusters - first;
        uint64_t off = first * CLUSTER;
        if (img_pread(r->h, buf, count * CLUSTER, off) != (int64_t)(count * CLUSTER)) {
            fprintf(stderr, "read at %" PRIu64 " failed: %s\n", off, img_last_error());
            __atomic_store_n(&r->failed, 1, __ATOMIC_RELAXED);
            break;
        }
        for (uint64_t k = 0; k < count; k++) {
            if (!r->cluster_ok(buf + k * CLUSTER, off + k * CLUSTER)) {
                fprintf(stderr, "cluster at %" PRIu64 " holds unexpected bytes\n",
                        off + k * CLUSTER);
                __atomic_store_n(&r->failed, 1, __ATOMIC_RELAXED);
            }
        }
        /* Block status shares the data path too. */
        uint64_t pnum;
        unsigned status;
        if (img_block_status(r->h, off, count * CLUSTER, &pnum, &status, NULL, NULL) < 0) {
            fprintf(stderr, "block status at %" PRIu64 " failed: %s\n", off, img_last_error());
            __atomic_store_n(&r->failed, 1, __ATOMIC_RELAXED);
        }
    }
    free(buf);
    return NULL;
}

static void fill_image(img *h, uint64_t size, uint8_t byte)
{
    uint8_t *buf = malloc(MIB);
    memset(buf, byte, MIB);
    for (uint64_t off = 0; off < size; off += MIB)
        assert_int_equal(img_pwrite(h, buf, MIB, off), (int64_t)MIB);
    free(buf);
}

static void start_readers(struct read_race *r, pthread_t *tid, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(pthread_create(&tid[i], NULL, cluster_reader, r), 0);
}

static void stop_readers(struct read_race *r, pthread_t *tid, int n)
{
    __atomic_store_n(&r->stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < n; i++)
        pthread_join(tid[i], NULL);
    assert_int_equal(r->failed, 0);
}

/* The image checks clean and reads `byte` everywhere. */
static void expect_filled(const char *path, uint64_t size, uint8_t byte)
{
    char *expected = qt_path("expected.raw");
    struct qw_shadow want;
    qw_shadow_open(&want, expected, size);
    uint8_t *buf = malloc(MIB);
    memset(buf, byte, MIB);
    for (uint64_t off = 0; off < size; off += MIB)
        qw_shadow_write(&want, buf, MIB, off);
    qw_shadow_close(&want);
    qw_assert_check_clean(path);
    qw_assert_same(path, expected);
    free(buf);
    free(expected);
}

static void test_snapshot_apply_against_reads(void **state)
{
    (void)state;
    char *path = qt_path("snap.qcow2");
    qw_create(path, SNAP_SIZE, "");
    img *h = qw_open(path);
    fill_image(h, SNAP_SIZE, OLD_BYTE);
    assert_int_equal(img_snapshot_create(h, "old"), 0);
    fill_image(h, SNAP_SIZE, NEW_BYTE);

    struct read_race r = {.h = h, .size = SNAP_SIZE, .cluster_ok = uniform_old_or_new};
    pthread_t tid[2];
    start_readers(&r, tid, 2);
    for (int i = 0; i < 4; i++) {
        if (img_snapshot_apply(h, "old") < 0)
            fprintf(stderr, "apply: %s\n", img_last_error());
        /* New clusters for the new bytes: the snapshot keeps the old ones. */
        fill_image(h, SNAP_SIZE, NEW_BYTE);
    }
    assert_int_equal(img_snapshot_apply(h, "old"), 0);
    stop_readers(&r, tid, 2);
    img_close(h);
    expect_filled(path, SNAP_SIZE, OLD_BYTE);
    free(path);
}

/* ---- check with repair against reads -------------------------------------------------------
 *
 * A repair rewrites what readers use (the COPIED flag of an L1 entry, refcounts of leaked
 * clusters made through the backend) while they read data that must not change.
 */
#define CHECK_SIZE (8u * MIB)
#define CHECK_BYTE 0x3c
#define LEAKED 8u
#define ROUNDS 4

static int all_check_byte(const uint8_t *c, uint64_t guest_offset)
{
    (void)guest_offset;
    for (size_t i = 0; i < CLUSTER; i++)
        if (c[i] != CHECK_BYTE)
            return 0;
    return 1;
}

static void leak_clusters(img *h, uint64_t count)
{
    struct qcow2_state *s = h->priv;
    uint64_t offset;
    pthread_mutex_lock(&s->lock);
    assert_int_equal(qcow2_alloc_clusters(s, count, &offset), 0);
    /* Present in the file, as a leak left by an interrupted write would be. */
    void *zeros = calloc(count, CLUSTER);
    assert_int_equal(io_pwrite(s->file, zeros, count * CLUSTER, offset), 0);
    free(zeros);
    assert_int_equal(qcow2_flush_caches(s, true), 0);
    pthread_mutex_unlock(&s->lock);
}

/* Clears the COPIED flag of the first L1 entry in the file: a corruption repair fixes. */
static void clear_l1_copied(const char *path)
{
    uint64_t l1 = qw_header_u64(path, 40);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t top;
    assert_int_equal(pread(fd, &top, 1, (off_t)l1), 1);
    assert_true(top & 0x80);
    top &= 0x7f;
    assert_int_equal(pwrite(fd, &top, 1, (off_t)l1), 1);
    close(fd);
}

static void test_check_repair_against_reads(void **state)
{
    (void)state;
    char *path = qt_path("check.qcow2");
    qw_create(path, CHECK_SIZE, "");
    img *h = qw_open(path);
    fill_image(h, CHECK_SIZE, CHECK_BYTE);
    img_close(h);
    clear_l1_copied(path);
    h = qw_open(path);

    struct read_race r = {.h = h, .size = CHECK_SIZE, .cluster_ok = all_check_byte};
    pthread_t tid[2];
    start_readers(&r, tid, 2);
    uint64_t leaks_fixed = 0, corruptions_fixed = 0;
    for (int i = 0; i < ROUNDS; i++) {
        leak_clusters(h, LEAKED);
        char *report = NULL;
        unsigned flags = IMG_CHECK_REPAIR_LEAKS | (i == 0 ? IMG_CHECK_REPAIR_ERRORS : 0);
        assert_int_equal(img_check(h, flags, &report), 0);
        assert_non_null(report);
        const char *at = strstr(report, "\"leaks-fixed\": ");
        if (at)
            leaks_fixed += strtoull(at + strlen("\"leaks-fixed\": "), NULL, 10);
        at = strstr(report, "\"corruptions-fixed\": ");
        if (at)
            corruptions_fixed += strtoull(at + strlen("\"corruptions-fixed\": "), NULL, 10);
        img_free(report);
    }
    stop_readers(&r, tid, 2);
    assert_int_equal(leaks_fixed, ROUNDS * LEAKED);
    assert_int_equal(corruptions_fixed, 1);
    img_close(h);
    expect_filled(path, CHECK_SIZE, CHECK_BYTE);
    free(path);
}

/* An argument runs only the tests whose names match it (a cmocka filter, e.g. "*resize*"). */
int main(int argc, char **argv)
{
    qw_require_qemu();
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resize_against_io),
        cmocka_unit_test(test_snapshot_apply_against_reads),
        cmocka_unit_test(test_check_repair_against_reads),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (!failed)
        qt_cleanup();
    return failed;
}
