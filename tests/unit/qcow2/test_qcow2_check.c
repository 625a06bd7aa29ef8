/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The qcow2 check on images built byte by byte: each kind of damage must be found, counted as
 * QEMU counts it and reported in QEMU's words; repairs must leave an image that checks clean
 * after reopening; crafted sizes must be refused without a large allocation.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "error.h"
#include "formats/qcow2/qcow2_check.h"
#include "qcow2_test_util.h"

#define BITS 12 /* 4 KiB clusters: small files, 512 entries per L2 table */
#define CS (1u << BITS)
#define SIZE (64ull << 20)

/* ---- findings ---- */

struct log {
    char lines[64][200];
    int n;
};

static void log_line(void *user, const char *line)
{
    struct log *l = user;
    if (l->n < 64)
        snprintf(l->lines[l->n++], sizeof(l->lines[0]), "%s", line);
}

static bool logged(const struct log *l, const char *text)
{
    for (int i = 0; i < l->n; i++)
        if (strstr(l->lines[i], text))
            return true;
    return false;
}

static void dump(const struct log *l)
{
    for (int i = 0; i < l->n; i++)
        fprintf(stderr, "  | %s\n", l->lines[i]);
}

static int check_file(const char *path, unsigned open_flags, unsigned fix,
                      struct img_check_result *r, struct log *log)
{
    struct img *img;
    int ret = qt_open(path, open_flags, &img);
    if (ret < 0) {
        fprintf(stderr, "open %s: %s\n", path, img_last_error());
        return ret;
    }
    memset(log, 0, sizeof(*log));
    ret = qcow2_check_logged(img, fix, r, log_line, log);
    qt_close(img);
    return ret;
}

/* Checks the built image read-only; returns the result and the findings. */
static void check_built(const struct qt_image *im, const char *name, struct img_check_result *r,
                        struct log *log)
{
    char *path = qt_path(name);
    qt_write(im, path);
    assert_int_equal(check_file(path, 0, 0, r, log), 0);
    free(path);
}

/* Data clusters 5 and 6 mapped at guest clusters 0 and 1: a consistent image. */
static void build_clean(struct qt_image *im)
{
    qt_build(im, 3, BITS, SIZE, false);
    uint64_t a = qt_add_cluster(im, 0x11);
    uint64_t b = qt_add_cluster(im, 0x22);
    qt_set_l2(im, 0, a | QCOW2_OFLAG_COPIED, 0);
    qt_set_l2(im, 1, b | QCOW2_OFLAG_COPIED, 0);
}

static void test_clean(void **state)
{
    struct qt_image im;
    build_clean(&im);
    struct img_check_result r;
    struct log log;
    check_built(&im, "clean.qcow2", &r, &log);
    if (log.n)
        dump(&log);
    assert_int_equal(log.n, 0);
    assert_int_equal(r.corruptions, 0);
    assert_int_equal(r.leaks, 0);
    assert_int_equal(r.check_errors, 0);
    assert_int_equal(r.allocated_clusters, 2);
    assert_int_equal(r.fragmented_clusters, 0);
    assert_int_equal(r.compressed_clusters, 0);
    assert_int_equal(r.total_clusters, SIZE / CS);
    assert_int_equal(r.image_end_offset, 7 * CS);
    qt_free(&im);
}

static void test_fragmented(void **state)
{
    struct qt_image im;
    build_clean(&im);
    /* Guest order 6, 5: the second cluster does not continue the first. */
    qt_set_l2(&im, 0, qt_cluster(&im, 6) | QCOW2_OFLAG_COPIED, 0);
    qt_set_l2(&im, 1, qt_cluster(&im, 5) | QCOW2_OFLAG_COPIED, 0);
    struct img_check_result r;
    struct log log;
    check_built(&im, "fragmented.qcow2", &r, &log);
    assert_int_equal(r.corruptions + r.leaks, 0);
    assert_int_equal(r.allocated_clusters, 2);
    assert_int_equal(r.fragmented_clusters, 1);
    qt_free(&im);
}

static void test_leak(void **state)
{
    struct qt_image im;
    build_clean(&im);
    qt_set_refcount(&im, 5, 2);
    struct img_check_result r;
    struct log log;
    check_built(&im, "leak.qcow2", &r, &log);
    assert_int_equal(r.leaks, 1);
    /* COPIED on an entry whose refcount is not one is a corruption, as in QEMU. */
    assert_int_equal(r.corruptions, 1);
    assert_true(logged(&log, "Leaked cluster 5 refcount=2 reference=1"));
    assert_true(logged(&log, "ERROR OFLAG_COPIED data cluster: l2_entry=8000000000005000 "
                             "refcount=2"));
    qt_free(&im);
}

static void test_refcount_too_low(void **state)
{
    struct qt_image im;
    build_clean(&im);
    qt_set_refcount(&im, 6, 0);
    struct img_check_result r;
    struct log log;
    check_built(&im, "low.qcow2", &r, &log);
    assert_int_equal(r.leaks, 0);
    assert_int_equal(r.corruptions, 2);
    assert_true(logged(&log, "ERROR cluster 6 refcount=0 reference=1"));
    assert_true(logged(&log, "ERROR OFLAG_COPIED data cluster: l2_entry=8000000000006000 "
                             "refcount=0"));
    qt_free(&im);
}

static void test_copied_flags(void **state)
{
    struct qt_image im;
    build_clean(&im);
    /* Missing on a data entry with refcount 1, and on the L1 entry. */
    qt_set_l2(&im, 1, qt_cluster(&im, 6), 0);
    store_be64(im.buf + qt_cluster(&im, QT_L1), qt_cluster(&im, QT_L2));
    struct img_check_result r;
    struct log log;
    check_built(&im, "copied.qcow2", &r, &log);
    assert_int_equal(r.corruptions, 2);
    assert_int_equal(r.leaks, 0);
    assert_true(logged(&log, "ERROR OFLAG_COPIED L2 cluster: l1_index=0 l1_entry=4000 "
                             "refcount=1"));
    assert_true(logged(&log, "ERROR OFLAG_COPIED data cluster: l2_entry=6000 refcount=1"));
    qt_free(&im);
}

static void test_bad_entries(void **state)
{
    struct qt_image im;
    build_clean(&im);
    /* Unaligned data cluster, reserved bits, and a cluster far past the end of the file. */
    qt_set_l2(&im, 0, (qt_cluster(&im, 5) + 512) | QCOW2_OFLAG_COPIED, 0);
    qt_set_l2(&im, 1, qt_cluster(&im, 6) | QCOW2_OFLAG_COPIED | (1ull << 57), 0);
    qt_set_l2(&im, 2, qt_cluster(&im, 1000) | QCOW2_OFLAG_COPIED, 0);
    struct img_check_result r;
    struct log log;
    check_built(&im, "bad-entries.qcow2", &r, &log);
    assert_true(logged(&log, "ERROR offset=5200: Data cluster is not properly aligned; L2 entry "
                             "corrupted."));
    assert_true(logged(&log, "ERROR found l2 entry with reserved bits set: 8200000000006000"));
    assert_true(logged(&log, "ERROR: counting reference for region exceeding the end of the "
                             "file by one cluster or more: offset 0x3e8000 size 0x1000"));
    /*
     * The three above; the unaligned cluster is counted where it lies, over clusters 5 and 6, so
     * cluster 6 has one reference too many; and COPIED on cluster 1000, whose refcount is 0.
     */
    assert_true(logged(&log, "ERROR cluster 6 refcount=1 reference=2"));
    assert_int_equal(r.corruptions, 5);
    assert_int_equal(r.allocated_clusters, 3);
    qt_free(&im);
}

static void test_compressed(void **state)
{
    struct qt_image im;
    build_clean(&im);
    /* A stream of two sectors starting 512 bytes before the end of cluster 5: it touches 5 and
     * 6, each counted once more than the data entries already count them. */
    uint64_t host = qt_cluster(&im, 6) - 512;
    uint32_t shift = 62 - (BITS - 8);
    uint64_t entry = QCOW2_OFLAG_COMPRESSED | (1ull << shift) | host;
    qt_set_l2(&im, 7, entry, 0);
    qt_set_refcount(&im, 5, 2);
    qt_set_refcount(&im, 6, 2);
    qt_set_l2(&im, 0, qt_cluster(&im, 5), 0);
    qt_set_l2(&im, 1, qt_cluster(&im, 6), 0);
    struct img_check_result r;
    struct log log;
    check_built(&im, "compressed.qcow2", &r, &log);
    if (r.corruptions + r.leaks)
        dump(&log);
    assert_int_equal(r.corruptions + r.leaks + r.check_errors, 0);
    assert_int_equal(r.compressed_clusters, 1);
    assert_int_equal(r.allocated_clusters, 3);
    assert_int_equal(r.fragmented_clusters, 1);

    /* COPIED on a compressed descriptor is always wrong. */
    qt_set_l2(&im, 7, entry | QCOW2_OFLAG_COPIED, 0);
    check_built(&im, "compressed-copied.qcow2", &r, &log);
    assert_int_equal(r.corruptions, 1);
    assert_true(logged(&log, "copied flag must never be set for compressed clusters"));
    qt_free(&im);
}

static void test_refcount_table_damage(void **state)
{
    struct qt_image im;
    build_clean(&im);
    store_be64(im.buf + qt_cluster(&im, QT_REFTABLE), qt_cluster(&im, QT_REFBLOCK) | 0x10);
    struct img_check_result r;
    struct log log;
    check_built(&im, "reftable-reserved.qcow2", &r, &log);
    assert_true(logged(&log, "ERROR refcount table entry 0 has reserved bits set"));
    /* The block is not counted, so it (cluster 2) also reads as leaked. */
    assert_int_equal(r.corruptions, 1);
    assert_int_equal(r.leaks, 1);
    assert_true(logged(&log, "Leaked cluster 2 refcount=1 reference=0"));
    qt_free(&im);
}

static void test_absurd_file_size(void **state)
{
    struct qt_image im;
    qt_build(&im, 3, 9, 1 << 20, false);
    char *path = qt_path("huge.qcow2");
    qt_write(&im, path);
    /* A sparse file of 4 TiB with 512-byte clusters: 2^33 clusters to account for. */
    assert_int_equal(truncate(path, 4ull << 40), 0);
    struct img_check_result r;
    struct log log;
    assert_int_equal(check_file(path, 0, 0, &r, &log), -EFBIG);
    assert_int_equal(r.check_errors, 1);
    assert_non_null(strstr(img_last_error(), "cannot check an image of 8589934592 clusters"));
    free(path);
    qt_free(&im);
}

/* ---- repairs ---- */

/* Writes the image, repairs it with `fix`, then checks the result once more after reopening. */
static void repair_built(const struct qt_image *im, const char *name, unsigned fix,
                         struct img_check_result *r, struct img_check_result *after)
{
    char *path = qt_path(name);
    qt_write(im, path);
    struct log log;
    assert_int_equal(check_file(path, IMG_OPEN_READ_WRITE, fix, r, &log), 0);
    assert_int_equal(check_file(path, 0, 0, after, &log), 0);
    if (after->corruptions + after->leaks + after->check_errors)
        dump(&log);
    free(path);
}

static void test_repair_leak(void **state)
{
    struct qt_image im;
    build_clean(&im);
    qt_set_refcount(&im, 5, 3);
    qt_set_refcount(&im, 7, 1); /* past the end of the file: not part of the image */
    struct img_check_result r, after;
    repair_built(&im, "repair-leak.qcow2", IMG_CHECK_REPAIR_LEAKS, &r, &after);
    /* The result reports the image as it is after the repair, with what was repaired. */
    assert_int_equal(r.leaks_fixed, 1);
    assert_int_equal(r.corruptions_fixed, 0);
    assert_int_equal(r.leaks + r.corruptions, 0);
    assert_int_equal(after.leaks + after.corruptions + after.check_errors, 0);
    qt_free(&im);
}

static void test_repair_too_low(void **state)
{
    struct qt_image im;
    build_clean(&im);
    /* Both guest clusters share cluster 5, counted once: too low, but not zero. */
    qt_set_l2(&im, 1, qt_cluster(&im, 5) | QCOW2_OFLAG_COPIED, 0);
    qt_set_refcount(&im, 6, 0);
    struct img_check_result r, after;
    repair_built(&im, "repair-low.qcow2", IMG_CHECK_REPAIR_LEAKS | IMG_CHECK_REPAIR_ERRORS, &r,
                 &after);
    assert_int_equal(r.corruptions_fixed, 3); /* the refcount and two COPIED flags */
    assert_int_equal(after.leaks + after.corruptions + after.check_errors, 0);
    qt_free(&im);
}

static void test_repair_needs_rebuild(void **state)
{
    struct qt_image im;
    build_clean(&im);
    qt_set_refcount(&im, 6, 0);
    char *path = qt_path("rebuild.qcow2");
    qt_write(&im, path);

    /* A refcount of zero may mean a missing block: only repairing errors may rebuild. */
    struct img_check_result r;
    struct log log;
    assert_int_equal(check_file(path, IMG_OPEN_READ_WRITE, IMG_CHECK_REPAIR_LEAKS, &r, &log), -EIO);
    assert_true(logged(&log, "ERROR need to rebuild refcount structures"));
    assert_int_equal(r.check_errors, 1);

    assert_int_equal(check_file(path, IMG_OPEN_READ_WRITE,
                                IMG_CHECK_REPAIR_LEAKS | IMG_CHECK_REPAIR_ERRORS, &r, &log),
                     0);
    assert_true(logged(&log, "Rebuilding refcount structure"));
    assert_int_equal(r.corruptions_fixed, 1);
    assert_int_equal(r.corruptions + r.leaks + r.check_errors, 0);

    /* A new table past the old end of the file, named by the header. */
    struct img *img;
    assert_int_equal(qt_open(path, 0, &img), 0);
    struct qcow2_state *s = img->priv;
    assert_true(s->hdr.refcount_table_offset >= 7 * CS);
    qt_close(img);
    assert_int_equal(check_file(path, 0, 0, &r, &log), 0);
    assert_int_equal(r.corruptions + r.leaks + r.check_errors, 0);
    free(path);
    qt_free(&im);
}

static void test_read_only_refuses_repair(void **state)
{
    struct qt_image im;
    build_clean(&im);
    char *path = qt_path("ro.qcow2");
    qt_write(&im, path);
    struct img_check_result r;
    struct log log;
    assert_int_equal(check_file(path, 0, IMG_CHECK_REPAIR_LEAKS, &r, &log), -EROFS);
    free(path);
    qt_free(&im);
}

static int teardown(void **state)
{
    qt_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean),
        cmocka_unit_test(test_fragmented),
        cmocka_unit_test(test_leak),
        cmocka_unit_test(test_refcount_too_low),
        cmocka_unit_test(test_copied_flags),
        cmocka_unit_test(test_bad_entries),
        cmocka_unit_test(test_compressed),
        cmocka_unit_test(test_refcount_table_damage),
        cmocka_unit_test(test_absurd_file_size),
        cmocka_unit_test(test_repair_leak),
        cmocka_unit_test(test_repair_too_low),
        cmocka_unit_test(test_repair_needs_rebuild),
        cmocka_unit_test(test_read_only_refuses_repair),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
