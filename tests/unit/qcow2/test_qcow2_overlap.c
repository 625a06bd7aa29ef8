/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The metadata overlap check. On images built byte by byte whose refcounts call a metadata
 * cluster free, or whose L2 table names metadata as a data cluster, a write must fail with
 * -EIO naming the structure, mark the image corrupt (the header bit, qemu-img info's
 * "corrupt": true), refuse every later change through the handle and leave every other byte
 * of the file as it was. On healthy images going through table growth, snapshots, copies of
 * shared L2 tables, frees and reuse, it must never fire.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "imgutil.h"
#include "qcow2_test_util.h"

#define BITS 12 /* 4 KiB clusters */
#define CS (1u << BITS)
#define SIZE (1ull << 20)
#define INCOMPAT_FIELD 72u

struct file_bytes {
    uint8_t *buf;
    size_t len;
};

static struct file_bytes read_file(const char *path)
{
    struct file_bytes f = {NULL, 0};
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    f.len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    f.buf = malloc(f.len ? f.len : 1);
    assert_int_equal(fread(f.buf, 1, f.len, fp), f.len);
    fclose(fp);
    return f;
}

/* The file holds `before` except for the 8 bytes at `skip` (none when skip is SIZE_MAX). */
static void expect_unchanged_but(const char *path, const struct file_bytes *before, size_t skip)
{
    struct file_bytes after = read_file(path);
    assert_int_equal(after.len, before->len);
    for (size_t i = 0; i < after.len; i++) {
        if (skip != SIZE_MAX && i >= skip && i < skip + 8)
            continue;
        if (after.buf[i] != before->buf[i])
            fail_msg("byte 0x%zx changed from 0x%02x to 0x%02x", i, before->buf[i], after.buf[i]);
    }
    free(after.buf);
}

static img *open_rw(const char *path)
{
    img *image = NULL;
    int ret = img_open(&image, path, "qcow2", IMG_OPEN_READ_WRITE | IMG_OPEN_NO_BACKING, NULL);
    if (ret < 0)
        fail_msg("open %s: %s", path, img_last_error());
    return image;
}

static void expect_error(int64_t ret, const char *text)
{
    assert_int_equal(ret, -EIO);
    if (!strstr(img_last_error(), text))
        fail_msg("message \"%s\" lacks \"%s\"", img_last_error(), text);
}

/* Every kind of change through a handle that found the image corrupt is refused. */
static void expect_refused(img *image)
{
    uint8_t buf[CS];
    memset(buf, 0x5a, sizeof(buf));
    expect_error(img_pwrite(image, buf, sizeof(buf), 0), "found corrupt");
    expect_error(img_pwrite(image, buf, sizeof(buf), 8 * CS), "found corrupt");
    expect_error(img_zero(image, 0, CS, IMG_ZERO_MAY_UNMAP), "found corrupt");
    expect_error(img_discard(image, 0, CS), "found corrupt");
    expect_error(img_flush(image), "found corrupt");
    expect_error(img_snapshot_create(image, "after"), "found corrupt");
}

/* A write the overlap check must refuse: `len` bytes of `fill` at guest offset `guest`. */
struct refused_write {
    const char *name; /* file name for the built image */
    uint64_t guest;
    size_t len; /* at most CS */
    uint8_t fill;
    const char *message; /* what the -EIO message says */
};

/* The image file under test and its bytes before anything was written through the library. */
struct image_file {
    char *path;
    struct file_bytes before;
};

/* Writes `im` to a file, opens it read-write and checks that the write `w` is refused. */
static img *open_refusing(const struct qt_image *im, const struct refused_write *w,
                          struct image_file *f)
{
    f->path = qt_path(w->name);
    qt_write(im, f->path);
    f->before = read_file(f->path);
    img *image = open_rw(f->path);
    uint8_t buf[CS];
    assert_true(w->len <= sizeof(buf));
    memset(buf, w->fill, w->len);
    expect_error(img_pwrite(image, buf, w->len, w->guest), w->message);
    return image;
}

/*
 * Closes the handle: the file holds what it held before but for the 8 bytes at `skip`. Frees
 * the saved bytes; f->path stays for further checks.
 */
static void close_unchanged_but(img *image, struct image_file *f, size_t skip)
{
    img_close(image);
    expect_unchanged_but(f->path, &f->before, skip);
    free(f->before.buf);
}

/* v3 image: data cluster 5 (0x11) at guest cluster 0; the L2 table's refcount is 0. */
static void build_free_l2(struct qt_image *im, uint32_t version)
{
    qt_build(im, version, BITS, SIZE, false);
    uint64_t data = qt_add_cluster(im, 0x11);
    qt_set_l2(im, 0, data | QCOW2_OFLAG_COPIED, 0);
    qt_set_refcount(im, QT_L2, 0);
}

static void expect_guest(const char *path, uint64_t offset, uint8_t value)
{
    img *image = NULL;
    assert_int_equal(img_open(&image, path, "qcow2", IMG_OPEN_NO_BACKING, NULL), 0);
    uint8_t buf[CS];
    assert_int_equal(img_pread(image, buf, CS, offset), CS);
    for (size_t i = 0; i < CS; i++)
        if (buf[i] != value)
            fail_msg("guest byte 0x%" PRIx64 " is 0x%02x, not 0x%02x", offset + i, buf[i], value);
    img_close(image);
}

static void test_free_l2_cluster_is_not_handed_out(void **state)
{
    (void)state;
    struct qt_image im;
    build_free_l2(&im, 3);
    /* Guest cluster 1 is unallocated: the allocator's first "free" cluster is the L2 table. */
    struct image_file f;
    img *image = open_refusing(&im,
                               &(struct refused_write){"free-l2.qcow2", CS, CS, 0xab,
                                                       "overlaps with active L2 table at 0x4000"},
                               &f);
    assert_non_null(strstr(img_last_error(), "marking image as corrupt"));
    assert_non_null(strstr(img_last_error(), "host offset 0x4000"));
    expect_refused(image);

    /* Only the corrupt bit changed. */
    char *path = f.path;
    uint64_t incompat_before = load_be64(f.before.buf + INCOMPAT_FIELD);
    close_unchanged_but(image, &f, INCOMPAT_FIELD);
    struct file_bytes after = read_file(path);
    assert_int_equal(load_be64(after.buf + INCOMPAT_FIELD),
                     incompat_before | QCOW2_INCOMPAT_CORRUPT);
    free(after.buf);

    /* The image reads as before, reports itself corrupt and cannot be opened for writing. */
    expect_guest(path, 0, 0x11);
    expect_guest(path, CS, 0);
    img *ro = NULL;
    assert_int_equal(img_open(&ro, path, "qcow2", IMG_OPEN_NO_BACKING, NULL), 0);
    char *json = NULL;
    assert_int_equal(img_info_json(ro, 0, &json), 0);
    assert_non_null(strstr(json, "\"corrupt\": true"));
    img_free(json);
    img_close(ro);
    img *rw = NULL;
    assert_int_equal(img_open(&rw, path, "qcow2", IMG_OPEN_READ_WRITE, NULL), -EACCES);

    if (qt_have_qemu()) {
        char *info = qt_capture("qemu-img info --output=json '%s'", path);
        assert_non_null(info);
        assert_non_null(strstr(info, "\"corrupt\": true"));
        free(info);
    }
    free(path);
    qt_free(&im);
}

static void test_in_place_write_onto_l1_table(void **state)
{
    (void)state;
    struct qt_image im;
    qt_build(&im, 3, BITS, SIZE, false);
    /* Guest cluster 0 names the L1 table's cluster as its own data. */
    qt_set_l2(&im, 0, qt_cluster(&im, QT_L1) | QCOW2_OFLAG_COPIED, 0);
    qt_set_refcount(&im, QT_L1, 1);
    struct image_file f;
    img *image = open_refusing(&im,
                               &(struct refused_write){"in-place-l1.qcow2", 512, 512, 0xcd,
                                                       "overlaps with active L1 table at 0x3000"},
                               &f);
    expect_refused(image);
    close_unchanged_but(image, &f, INCOMPAT_FIELD);
    free(f.path);
    qt_free(&im);
}

static void test_refcount_block_named_as_data(void **state)
{
    (void)state;
    struct qt_image im;
    qt_build(&im, 3, BITS, SIZE, false);
    /* Guest cluster 3 names the refcount block as its data: a partial write lands in it. */
    qt_set_l2(&im, 3, qt_cluster(&im, QT_REFBLOCK) | QCOW2_OFLAG_COPIED, 0);
    struct image_file f;
    img *image =
        open_refusing(&im,
                      &(struct refused_write){"refblock-as-data.qcow2", 3 * CS + 7, 100, 0xee,
                                              "overlaps with refcount block at 0x2000"},
                      &f);
    close_unchanged_but(image, &f, INCOMPAT_FIELD);
    free(f.path);
    qt_free(&im);
}

/*
 * Structures named past the end of the file read as zeros, but writing them would grow the
 * file to wherever the damaged entry points (hundreds of GiB here).
 */
static void expect_beyond_end_refused(struct qt_image *im, const char *name, uint64_t guest,
                                      const char *message)
{
    struct image_file f;
    img *image = open_refusing(im, &(struct refused_write){name, guest, 512, 0x77, message}, &f);
    assert_non_null(strstr(img_last_error(), "lies beyond the end of the file (0x6000)"));
    expect_refused(image);
    close_unchanged_but(image, &f, INCOMPAT_FIELD);
    free(f.path);
}

static void test_l2_table_beyond_end_of_file(void **state)
{
    (void)state;
    struct qt_image im;
    qt_build(&im, 3, BITS, SIZE, false);
    qt_add_cluster(&im, 0x11);
    store_be64(im.buf + qt_cluster(&im, QT_L1), 0x7d80008000ull | QCOW2_OFLAG_COPIED);
    expect_beyond_end_refused(&im, "l2-beyond-end.qcow2", 0,
                              "L2 table at host offset 0x7d80008000 lies beyond");
    qt_free(&im);
}

static void test_data_cluster_beyond_end_of_file(void **state)
{
    (void)state;
    struct qt_image im;
    qt_build(&im, 3, BITS, SIZE, false);
    qt_add_cluster(&im, 0x11);
    qt_set_l2(&im, 2, 0x7d80000000ull | QCOW2_OFLAG_COPIED, 0);
    expect_beyond_end_refused(&im, "data-beyond-end.qcow2", 2 * CS + 100,
                              "data cluster at host offset 0x7d80000000 lies beyond");
    qt_free(&im);
}

/* Entries set in an L2 table are written back there; this one lies on the refcount table. */
static void test_l2_table_on_refcount_table(void **state)
{
    (void)state;
    struct qt_image im;
    qt_build(&im, 3, BITS, SIZE, false);
    store_be64(im.buf + qt_cluster(&im, QT_L1), qt_cluster(&im, QT_REFTABLE) | QCOW2_OFLAG_COPIED);
    qt_set_refcount(&im, QT_L2, 0);
    struct image_file f;
    img *image = open_refusing(
        &im,
        &(struct refused_write){
            "l2-on-reftable.qcow2", 5 * CS, CS, 0x42,
            "(host offset 0x1000, 4096 bytes, overlaps with refcount table at 0x1000)"},
        &f);
    expect_refused(image);
    close_unchanged_but(image, &f, INCOMPAT_FIELD);
    free(f.path);
    qt_free(&im);
}

/* Version 2 has no corrupt bit: the write is refused and the file stays byte for byte. */
static void test_version_2_refuses_without_a_bit(void **state)
{
    (void)state;
    struct qt_image im;
    build_free_l2(&im, 2);
    struct image_file f;
    img *image = open_refusing(&im,
                               &(struct refused_write){"free-l2-v2.qcow2", 2 * CS, CS, 0xab,
                                                       "overlaps with active L2 table at 0x4000"},
                               &f);
    assert_non_null(strstr(img_last_error(), "version 2"));
    expect_refused(image);
    close_unchanged_but(image, &f, SIZE_MAX);
    expect_guest(f.path, 0, 0x11);
    free(f.path);
    qt_free(&im);
}

/* ---- no false alarms ---- */

static void fill(uint8_t *buf, size_t len, uint64_t offset, uint8_t seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(((offset + i) >> 9) * 13 + seed);
}

static void write_all(img *image, uint64_t size, uint64_t step, uint8_t seed)
{
    uint8_t *buf = malloc(step);
    for (uint64_t off = 0; off < size; off += step) {
        fill(buf, step, off, seed);
        if (img_pwrite(image, buf, step, off) != (int64_t)step)
            fail_msg("write at 0x%" PRIx64 ": %s", off, img_last_error());
    }
    free(buf);
}

static void expect_all(img *image, uint64_t size, uint64_t step, uint8_t seed)
{
    uint8_t *buf = malloc(step), *want = malloc(step);
    for (uint64_t off = 0; off < size; off += step) {
        fill(want, step, off, seed);
        assert_int_equal(img_pread(image, buf, step, off), (int64_t)step);
        if (memcmp(buf, want, step) != 0)
            fail_msg("guest range at 0x%" PRIx64 " reads back wrong", off);
    }
    free(buf);
    free(want);
}

/* Checks the image and closes it. */
static void close_check_clean(img *image)
{
    char *report = NULL;
    int ret = img_check(image, 0, &report);
    if (ret != 0)
        fail_msg("check: %d %s\n%s", ret, img_last_error(), report ? report : "");
    img_free(report);
    img_close(image);
}

/* A new qcow2 image with 512-byte clusters, opened read-write. */
static img *create_small_clusters(const char *path, uint64_t size)
{
    img_opts *opts = NULL;
    assert_int_equal(img_opts_new(&opts), 0);
    assert_int_equal(img_opts_set(opts, "cluster_size", "512"), 0);
    if (img_create(path, "qcow2", size, opts) < 0)
        fail_msg("create: %s", img_last_error());
    img_opts_free(opts);
    return open_rw(path);
}

/*
 * 512-byte clusters: an L2 table per 32 KiB of guest data, a refcount block per 128 KiB of
 * file, and a refcount table that must grow past its first cluster (8 MiB of file).
 */
static void test_healthy_image_never_flagged(void **state)
{
    (void)state;
    const uint64_t size = 12ull << 20;
    char *path = qt_path("healthy.qcow2");
    img *image = create_small_clusters(path, size);
    write_all(image, size, 96 * 1024, 1);
    expect_all(image, size, 96 * 1024, 1);
    /* Shared L2 tables are copied, then freed with the snapshot and their clusters reused. */
    if (img_snapshot_create(image, "s1") < 0)
        fail_msg("snapshot: %s", img_last_error());
    write_all(image, size / 2, 40 * 1024, 2);
    if (img_snapshot_delete(image, "s1") < 0)
        fail_msg("snapshot delete: %s", img_last_error());
    assert_int_equal(img_discard(image, size / 2, size / 4), 0);
    assert_int_equal(img_flush(image), 0);
    write_all(image, size, 64 * 1024, 3);
    expect_all(image, size, 64 * 1024, 3);
    close_check_clean(image);

    if (qt_have_qemu())
        assert_int_equal(qt_run("qemu-img check -q '%s'", path), 0);
    free(path);
}

/* Tables unlinked in place by a shrink, their clusters reused after growing again. */
static void test_shrink_then_reuse_never_flagged(void **state)
{
    (void)state;
    const uint64_t size = 4ull << 20;
    char *path = qt_path("shrink.qcow2");
    img *image = create_small_clusters(path, size);
    write_all(image, size, 64 * 1024, 4);
    if (img_resize(image, size / 4, IMG_RESIZE_SHRINK, NULL) < 0)
        fail_msg("shrink: %s", img_last_error());
    assert_int_equal(img_flush(image), 0);
    if (img_resize(image, size, 0, NULL) < 0)
        fail_msg("grow: %s", img_last_error());
    write_all(image, size, 64 * 1024, 5);
    expect_all(image, size, 64 * 1024, 5);
    close_check_clean(image);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_free_l2_cluster_is_not_handed_out),
        cmocka_unit_test(test_in_place_write_onto_l1_table),
        cmocka_unit_test(test_refcount_block_named_as_data),
        cmocka_unit_test(test_l2_table_beyond_end_of_file),
        cmocka_unit_test(test_data_cluster_beyond_end_of_file),
        cmocka_unit_test(test_l2_table_on_refcount_table),
        cmocka_unit_test(test_version_2_refuses_without_a_bit),
        cmocka_unit_test(test_healthy_image_never_flagged),
        cmocka_unit_test(test_shrink_then_reuse_never_flagged),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    qt_cleanup();
    return failed;
}
