/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* L2 entry decoding and map() over images built byte by byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "imgutil.h"
#include "qcow2_test_util.h"

static void assert_message_contains(const char *needle)
{
    const char *msg = img_last_error();
    if (!strstr(msg, needle)) {
        fprintf(stderr, "message \"%s\" does not contain \"%s\"\n", msg, needle);
        fail();
    }
}

static void test_geometry(void **state)
{
    struct qcow2_state s = {0};
    qcow2_geometry_init(&s, 16, false, 4);
    assert_int_equal(s.cluster_size, 65536);
    assert_int_equal(s.l2_entries, 8192);
    assert_int_equal(s.l2_entry_bytes, 8);
    assert_int_equal(s.subcluster_size, 65536);
    assert_int_equal(s.csize_shift, 54);
    assert_int_equal(s.csize_mask, 255);
    assert_int_equal(s.refcount_block_bits, 15);
    assert_int_equal(s.refcount_max, 65535);

    qcow2_geometry_init(&s, 16, true, 0);
    assert_int_equal(s.l2_entries, 4096);
    assert_int_equal(s.l2_entry_bytes, 16);
    assert_int_equal(s.subcluster_size, 2048);
    assert_int_equal(s.refcount_block_bits, 19);
    assert_int_equal(s.refcount_max, 1);

    qcow2_geometry_init(&s, 9, false, 6);
    assert_int_equal(s.l2_entries, 64);
    assert_int_equal(s.csize_shift, 61);
    assert_int_equal(s.csize_mask, 1);
    assert_int_equal(s.refcount_block_bits, 6);
    assert_true(s.refcount_max == UINT64_MAX);

    qcow2_geometry_init(&s, 21, false, 4);
    assert_int_equal(s.csize_shift, 49);
    assert_int_equal(s.csize_mask, 8191);

    assert_int_equal(qcow2_l1_entries_for_size(16, 13, 0), 0);
    assert_int_equal(qcow2_l1_entries_for_size(16, 13, 1), 1);
    assert_int_equal(qcow2_l1_entries_for_size(16, 13, 512ull << 20), 1);
    assert_int_equal(qcow2_l1_entries_for_size(16, 13, (512ull << 20) + 1), 2);
    assert_int_equal(qcow2_l1_entries_for_size(9, 6, UINT64_MAX), 1ull << 49);
}

/* Encodes a compressed descriptor the way a writer does, and checks it decodes back. */
static void check_compressed(uint32_t cluster_bits, uint64_t offset, uint64_t sectors)
{
    struct qcow2_state s = {0};
    qcow2_geometry_init(&s, cluster_bits, false, 4);
    uint64_t entry = QCOW2_OFLAG_COMPRESSED | offset | ((sectors - 1) << s.csize_shift);
    uint64_t host, len;
    qcow2_compressed_decode(&s, entry | QCOW2_OFLAG_COPIED, &host, &len);
    assert_int_equal(host, offset);
    assert_int_equal(len, sectors * 512 - (offset & 511));
    assert_int_equal(qcow2_subcluster_type(&s, entry, 0, 0, false), QCOW2_SC_COMPRESSED);
}

static void test_compressed_descriptors(void **state)
{
    /* 512-byte clusters: one bit of sector count, offsets up to bit 60. */
    check_compressed(9, 0x1234567, 1);
    check_compressed(9, 0x1234567, 2);
    check_compressed(9, (1ull << 56) - 1, 2);
    check_compressed(12, 0x10000 + 17, 9);
    check_compressed(16, 0x50000, 1);
    check_compressed(16, 0x50000 + 511, 256);
    check_compressed(16, (1ull << 54) - 1, 129);
    check_compressed(21, 0x123456789a, 8192);
    check_compressed(21, (1ull << 49) - 1, 1);

    /* Explicit bit layout for 64 KiB clusters: sector count in bits 54..61. */
    struct qcow2_state s = {0};
    qcow2_geometry_init(&s, 16, false, 4);
    uint64_t host, len;
    qcow2_compressed_decode(&s, 0x4000000000000000ull | (3ull << 54) | 0x10200, &host, &len);
    assert_int_equal(host, 0x10200);
    assert_int_equal(len, 4 * 512);
    qcow2_compressed_decode(&s, 0x4000000000000000ull | 0x10210, &host, &len);
    assert_int_equal(len, 512 - 0x10);
}

static void test_entry_types(void **state)
{
    struct qcow2_state s = {0};
    qcow2_geometry_init(&s, 16, false, 4);
    assert_int_equal(qcow2_subcluster_type(&s, 0, 0, 0, false), QCOW2_SC_UNALLOCATED_PLAIN);
    assert_int_equal(qcow2_subcluster_type(&s, 0x50000 | QCOW2_OFLAG_COPIED, 0, 0, false),
                     QCOW2_SC_NORMAL);
    assert_int_equal(qcow2_subcluster_type(&s, 0x50000, 0, 0, false), QCOW2_SC_NORMAL);
    assert_int_equal(qcow2_subcluster_type(&s, QCOW2_OFLAG_ZERO, 0, 0, false), QCOW2_SC_ZERO_PLAIN);
    assert_int_equal(qcow2_subcluster_type(&s, 0x50000 | QCOW2_OFLAG_ZERO, 0, 0, false),
                     QCOW2_SC_ZERO_ALLOC);
    /* COPIED with offset 0: allocated only in an external data file. */
    assert_int_equal(qcow2_subcluster_type(&s, QCOW2_OFLAG_COPIED, 0, 0, false),
                     QCOW2_SC_UNALLOCATED_PLAIN);
    assert_int_equal(qcow2_subcluster_type(&s, QCOW2_OFLAG_COPIED, 0, 0, true), QCOW2_SC_NORMAL);
    assert_int_equal(qcow2_subcluster_run(&s, 0x50000, 0, 0, false), 1);

    /* Extended L2: bit 0 is ignored, the bitmap decides. */
    qcow2_geometry_init(&s, 16, true, 4);
    uint64_t bitmap = 0x0000000full | (0xf0ull << 32); /* 0-3 allocated, 4-7 zero */
    assert_int_equal(qcow2_subcluster_type(&s, 0x50000, bitmap, 0, false), QCOW2_SC_NORMAL);
    assert_int_equal(qcow2_subcluster_type(&s, 0x50000, bitmap, 3, false), QCOW2_SC_NORMAL);
    assert_int_equal(qcow2_subcluster_type(&s, 0x50000, bitmap, 4, false), QCOW2_SC_ZERO_ALLOC);
    assert_int_equal(qcow2_subcluster_type(&s, 0x50000, bitmap, 8, false),
                     QCOW2_SC_UNALLOCATED_ALLOC);
    assert_int_equal(qcow2_subcluster_type(&s, 0x50000 | QCOW2_OFLAG_ZERO, 0, 0, false),
                     QCOW2_SC_UNALLOCATED_ALLOC);
    assert_int_equal(qcow2_subcluster_run(&s, 0x50000, bitmap, 0, false), 4);
    assert_int_equal(qcow2_subcluster_run(&s, 0x50000, bitmap, 2, false), 2);
    assert_int_equal(qcow2_subcluster_run(&s, 0x50000, bitmap, 4, false), 4);
    assert_int_equal(qcow2_subcluster_run(&s, 0x50000, bitmap, 8, false), 24);
    assert_int_equal(qcow2_subcluster_run(&s, 0x50000, bitmap, 31, false), 1);
    assert_int_equal(qcow2_subcluster_type(&s, 0, 0xffull << 32, 7, false), QCOW2_SC_ZERO_PLAIN);
    assert_int_equal(qcow2_subcluster_type(&s, 0, 0xffull << 32, 8, false),
                     QCOW2_SC_UNALLOCATED_PLAIN);
    /* Contradictions. */
    assert_int_equal(qcow2_subcluster_type(&s, 0x50000, 0x1ull | (0x1ull << 32), 5, false),
                     QCOW2_SC_INVALID);
    assert_int_equal(qcow2_subcluster_type(&s, 0, 0x1, 5, false), QCOW2_SC_INVALID);
    /* Compressed clusters have no subclusters. */
    assert_int_equal(qcow2_subcluster_run(&s, QCOW2_OFLAG_COMPRESSED | 0x50000, 0, 3, false), 29);
}

static void expect_extent(struct img *img, uint64_t offset, uint64_t length, enum extent_kind kind,
                          uint64_t ext_len, bool host_valid, uint64_t host)
{
    struct img_extent ext;
    int ret = format_qcow2.map(img, offset, length, &ext);
    if (ret != 0)
        fprintf(stderr, "map(%llu): %s\n", (unsigned long long)offset, img_last_error());
    assert_int_equal(ret, 0);
    assert_int_equal(ext.kind, kind);
    assert_int_equal(ext.length, ext_len);
    assert_int_equal(ext.host_offset_valid, host_valid);
    if (host_valid || kind == EXTENT_DATA) {
        assert_int_equal(ext.host_offset, host);
        assert_ptr_equal(ext.file, img->file);
    }
}

static void test_map_standard(void **state)
{
    struct qt_image im;
    struct img *img;
    const uint64_t C = 65536;
    qt_build(&im, 3, 16, 20 * C + 1536, false);
    uint64_t a = qt_add_cluster(&im, 0xa1);
    uint64_t b = qt_add_cluster(&im, 0xb2);
    uint64_t z = qt_add_cluster(&im, 0);
    uint64_t d = qt_add_cluster(&im, 0xd4);
    qt_set_l2(&im, 0, a | QCOW2_OFLAG_COPIED, 0);
    qt_set_l2(&im, 1, b | QCOW2_OFLAG_COPIED, 0); /* contiguous with a */
    qt_set_l2(&im, 2, d, 0);                      /* not contiguous */
    qt_set_l2(&im, 3, QCOW2_OFLAG_ZERO, 0);
    qt_set_l2(&im, 4, QCOW2_OFLAG_ZERO, 0);
    qt_set_l2(&im, 5, z | QCOW2_OFLAG_ZERO | QCOW2_OFLAG_COPIED, 0);
    qt_set_l2(&im, 6, (z + C) | QCOW2_OFLAG_ZERO, 0); /* contiguous preallocated zeros */
    /* 7..9 unallocated */
    uint64_t comp = QCOW2_OFLAG_COMPRESSED | (a + 100) | (2ull << 54);
    qt_set_l2(&im, 10, comp, 0);
    qt_set_l2(&im, 11, comp, 0);
    qt_set_l2(&im, 12, d + 4096, 0); /* misaligned */
    qt_set_l2(&im, 20, a, 0);        /* the partial last cluster */
    assert_int_equal(qt_open_built(&im, "map.qcow2", &img), 0);
    assert_int_equal(img->size, 20 * C + 1536);

    expect_extent(img, 0, UINT64_MAX, EXTENT_DATA, 2 * C, true, a);
    expect_extent(img, 100, UINT64_MAX, EXTENT_DATA, 2 * C - 100, true, a + 100);
    expect_extent(img, 100, 50, EXTENT_DATA, 50, true, a + 100);
    expect_extent(img, C + 7, UINT64_MAX, EXTENT_DATA, C - 7, true, b + 7);
    expect_extent(img, 2 * C, UINT64_MAX, EXTENT_DATA, C, true, d);
    expect_extent(img, 3 * C, UINT64_MAX, EXTENT_ZERO, 2 * C, false, 0);
    expect_extent(img, 4 * C + 1, 10, EXTENT_ZERO, 10, false, 0);
    expect_extent(img, 5 * C, UINT64_MAX, EXTENT_ZERO, 2 * C, true, z);
    expect_extent(img, 6 * C + 512, UINT64_MAX, EXTENT_ZERO, C - 512, true, z + C + 512);
    expect_extent(img, 7 * C, UINT64_MAX, EXTENT_UNALLOCATED, 3 * C, false, 0);

    struct img_extent ext;
    for (int i = 10; i <= 11; i++) {
        assert_int_equal(format_qcow2.map(img, i * C + 300, UINT64_MAX, &ext), 0);
        assert_int_equal(ext.kind, EXTENT_COMPRESSED);
        assert_int_equal(ext.length, C - 300);
        assert_int_equal(ext.host_offset, a + 100);
        assert_int_equal(ext.comp_length, 3 * 512 - 100);
        assert_int_equal(ext.unit_start, i * C);
        assert_int_equal(ext.unit_size, C);
        assert_int_equal(ext.codec, CODEC_DEFLATE_RAW);
        assert_ptr_equal(ext.file, img->file);
    }

    assert_int_equal(format_qcow2.map(img, 12 * C, UINT64_MAX, &ext), -EIO);
    assert_message_contains("not cluster-aligned");
    expect_extent(img, 13 * C, UINT64_MAX, EXTENT_UNALLOCATED, 7 * C, false, 0);
    /* The last cluster is cut at the image size. */
    expect_extent(img, 20 * C, UINT64_MAX, EXTENT_DATA, 1536, true, a);
    expect_extent(img, 20 * C + 1535, UINT64_MAX, EXTENT_DATA, 1, true, a + 1535);

    assert_int_equal(format_qcow2.map(img, 20 * C + 1536, 1, &ext), -EINVAL);
    assert_int_equal(format_qcow2.map(img, 0, 0, &ext), -EINVAL);
    qt_close(img);

    /* A misaligned L2 table. */
    store_be64(im.buf + qt_cluster(&im, QT_L1), (qt_cluster(&im, QT_L2) + 4096));
    assert_int_equal(qt_open_built(&im, "map-l2.qcow2", &img), 0);
    assert_int_equal(format_qcow2.map(img, 0, 1, &ext), -EIO);
    assert_string_equal(img_last_error(),
                        "qcow2: L2 table offset 0x41000 is not cluster-aligned (L1 index 0)");
    qt_close(img);
    store_be64(im.buf + qt_cluster(&im, QT_L1), qt_cluster(&im, QT_L2));

    /* zstd images hand out zstd extents. */
    store_be64(im.buf + 72, QCOW2_INCOMPAT_COMPRESSION);
    im.buf[104] = 1;
    assert_int_equal(qt_open_built(&im, "map-zstd.qcow2", &img), 0);
    assert_int_equal(format_qcow2.map(img, 10 * C, C, &ext), 0);
    assert_int_equal(ext.codec, CODEC_ZSTD);
    qt_close(img);
    qt_free(&im);
}

static void test_map_empty_l1(void **state)
{
    struct qt_image im;
    struct img *img;
    /* 512-byte clusters: an L2 table maps 32 KiB; the image spans 40 of them. */
    qt_build(&im, 3, 9, 40 * 32768, false);
    store_be64(im.buf + qt_cluster(&im, QT_L1), 0);
    uint64_t l2b = qt_add_cluster(&im, 0);
    uint64_t data = qt_add_cluster(&im, 0x55);
    store_be64(im.buf + qt_cluster(&im, QT_L1) + 8 * 7, l2b);
    store_be64(im.buf + l2b + 8 * 3, data);
    /* An L2 table past the end of the file reads as zeros: unallocated. */
    store_be64(im.buf + qt_cluster(&im, QT_L1) + 8 * 9, 1ull << 40);
    assert_int_equal(qt_open_built(&im, "sparse-l1.qcow2", &img), 0);
    expect_extent(img, 0, UINT64_MAX, EXTENT_UNALLOCATED, 7 * 32768 + 3 * 512, false, 0);
    expect_extent(img, 1000, 5000, EXTENT_UNALLOCATED, 5000, false, 0);
    expect_extent(img, 7 * 32768 + 3 * 512 + 10, UINT64_MAX, EXTENT_DATA, 502, true, data + 10);
    expect_extent(img, 7 * 32768 + 4 * 512, UINT64_MAX, EXTENT_UNALLOCATED, 33 * 32768 - 4 * 512,
                  false, 0);
    expect_extent(img, 9 * 32768, UINT64_MAX, EXTENT_UNALLOCATED, 31 * 32768, false, 0);
    qt_close(img);
    qt_free(&im);
}

static void test_map_extended_l2(void **state)
{
    struct qt_image im;
    struct img *img;
    const uint64_t C = 65536, SC = 2048;
    qt_build(&im, 3, 16, 8 * C, true);
    uint64_t a = qt_add_cluster(&im, 0xa1);
    uint64_t b = qt_add_cluster(&im, 0xb2);
    /* Cluster 0: subclusters 0-3 data, 4-7 zero, 8-31 not allocated (space reserved). */
    qt_set_l2(&im, 0, a | QCOW2_OFLAG_COPIED, 0x0000000full | (0xf0ull << 32));
    /* Cluster 1: all allocated at b = a + C: contiguous after cluster 0 only at its end. */
    qt_set_l2(&im, 1, b, 0xffffffffull);
    /* Cluster 2: no host cluster, zero subclusters 0-15, the rest unallocated. */
    qt_set_l2(&im, 2, 0, 0xffffull << 32);
    /* Cluster 3: allocated and zero at once. */
    qt_set_l2(&im, 3, b, 0x1ull | (0x1ull << 32));
    /* Cluster 4: allocated bits without a host cluster. */
    qt_set_l2(&im, 4, 0, 0x2);
    /* Cluster 5: compressed; the bitmap is not used. */
    qt_set_l2(&im, 5, QCOW2_OFLAG_COMPRESSED | (a + 8), 0);
    /* Cluster 6: bit 0 of the entry means nothing with extended L2: unallocated. */
    qt_set_l2(&im, 6, QCOW2_OFLAG_ZERO, 0);
    assert_int_equal(qt_open_built(&im, "extl2.qcow2", &img), 0);

    expect_extent(img, 0, UINT64_MAX, EXTENT_DATA, 4 * SC, true, a);
    expect_extent(img, SC + 5, UINT64_MAX, EXTENT_DATA, 3 * SC - 5, true, a + SC + 5);
    expect_extent(img, 4 * SC, UINT64_MAX, EXTENT_ZERO, 4 * SC, true, a + 4 * SC);
    expect_extent(img, 8 * SC, UINT64_MAX, EXTENT_UNALLOCATED, 24 * SC, true, a + 8 * SC);
    expect_extent(img, C, UINT64_MAX, EXTENT_DATA, C, true, b);
    expect_extent(img, 2 * C, UINT64_MAX, EXTENT_ZERO, 16 * SC, false, 0);
    /* The run before damaged entries is still returned whole. */
    expect_extent(img, 2 * C + 16 * SC, UINT64_MAX, EXTENT_UNALLOCATED, 16 * SC, false, 0);
    struct img_extent ext;
    assert_int_equal(format_qcow2.map(img, 3 * C + 5 * SC, 1, &ext), -EIO);
    assert_message_contains("invalid L2 entry");
    assert_int_equal(format_qcow2.map(img, 4 * C, 1, &ext), -EIO);
    assert_int_equal(format_qcow2.map(img, 5 * C + 3 * SC, UINT64_MAX, &ext), 0);
    assert_int_equal(ext.kind, EXTENT_COMPRESSED);
    assert_int_equal(ext.length, C - 3 * SC);
    assert_int_equal(ext.unit_start, 5 * C);
    assert_int_equal(ext.host_offset, a + 8);
    expect_extent(img, 6 * C, UINT64_MAX, EXTENT_UNALLOCATED, 2 * C, false, 0);
    qt_close(img);
    qt_free(&im);
}

/*
 * Writes `im` with everything from host cluster `hole_from` on left as a hole, so the file has
 * exactly `hole_from` clusters allocated on the host. False where the file system cannot.
 */
static bool write_with_hole(const struct qt_image *im, const char *path, unsigned hole_from)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    size_t written = (size_t)qt_cluster(im, hole_from);
    assert_int_equal(fwrite(im->buf, 1, written, f), written);
    assert_int_equal(ftruncate(fileno(f), (off_t)im->len), 0);
    fclose(f);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_blocks * 512 == written;
}

/* Opens the image written with a hole and returns the refine flag of the DATA run at 0. */
static bool refine_flag(const struct qt_image *im, const char *name, unsigned hole_from,
                        bool *sparse)
{
    char *path = qt_path(name);
    *sparse = write_with_hole(im, path, hole_from);
    struct img *img;
    assert_int_equal(qt_open(path, 0, &img), 0);
    struct img_extent ext;
    assert_int_equal(format_qcow2.map(img, 0, UINT64_MAX, &ext), 0);
    assert_int_equal(ext.kind, EXTENT_DATA);
    bool refine = ext.refine_with_host;
    /* Other kinds never carry it. */
    assert_int_equal(format_qcow2.map(img, 2 * im->cluster_size, UINT64_MAX, &ext), 0);
    assert_int_equal(ext.kind, EXTENT_ZERO);
    assert_false(ext.refine_with_host);
    qt_close(img);
    free(path);
    return refine;
}

/*
 * QEMU's test for metadata preallocation: the clusters with a nonzero refcount inside the file
 * must reach max(allocated * 10 / 9, allocated + 2), counted in clusters.
 */
static void test_metadata_preallocation(void **state)
{
    struct qt_image im;
    const uint64_t C = 65536;
    qt_build(&im, 3, 16, 64 * C, false);
    uint64_t a = qt_add_cluster(&im, 0xa1); /* host cluster 5 */
    qt_set_l2(&im, 0, a | QCOW2_OFLAG_COPIED, 0);
    qt_set_l2(&im, 1, (a + C) | QCOW2_OFLAG_COPIED, 0); /* in the hole */
    qt_set_l2(&im, 2, QCOW2_OFLAG_ZERO, 0);
    qt_grow(&im, 10 * C);
    /* Six clusters allocated on the host: the threshold is eight referenced clusters. */
    bool sparse;
    qt_set_refcount(&im, 6, 1);
    qt_set_refcount(&im, 20, 1); /* past the end of the file: not counted */
    bool refine = refine_flag(&im, "prealloc-7.qcow2", 6, &sparse);
    if (!sparse) {
        qt_free(&im);
        skip();
    }
    assert_false(refine);
    qt_set_refcount(&im, 7, 1);
    assert_true(refine_flag(&im, "prealloc-8.qcow2", 6, &sparse));
    /* The same image with every cluster on the host is not preallocated. */
    assert_false(refine_flag(&im, "prealloc-full.qcow2", 10, &sparse));

    /* Through the core: the DATA cluster in the hole reads as zeros in block status. */
    char *path = qt_path("prealloc-8.qcow2");
    struct img *pub;
    assert_int_equal(img_open(&pub, path, "qcow2", IMG_OPEN_READ_ONLY, NULL), 0);
    uint64_t pnum;
    unsigned status;
    assert_int_equal(img_block_status(pub, 0, 64 * C, &pnum, &status, NULL, NULL), 0);
    assert_int_equal(pnum, C);
    assert_int_equal(status, IMG_BLOCK_DATA | IMG_BLOCK_ALLOCATED | IMG_BLOCK_OFFSET_VALID);
    assert_int_equal(img_block_status(pub, C, 63 * C, &pnum, &status, NULL, NULL), 0);
    assert_int_equal(pnum, C);
    assert_int_equal(status, IMG_BLOCK_DATA | IMG_BLOCK_ZERO | IMG_BLOCK_ALLOCATED |
                                 IMG_BLOCK_OFFSET_VALID);
    img_close(pub);
    free(path);
    qt_free(&im);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_geometry),
        cmocka_unit_test(test_compressed_descriptors),
        cmocka_unit_test(test_entry_types),
        cmocka_unit_test(test_map_standard),
        cmocka_unit_test(test_map_empty_l1),
        cmocka_unit_test(test_map_extended_l2),
        cmocka_unit_test(test_metadata_preallocation),
    };
    return cmocka_run_group_tests(tests, NULL, qt_teardown);
}
