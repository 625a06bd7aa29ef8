/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Refcount entries of every width, and refcounts read from images qemu-img wrote. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "imgutil.h"
#include "qcow2_test_util.h"

static void test_entry_layout(void **state)
{
    uint8_t b[16] = {0xa5, 0x1b, 0xa5, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x11};
    /* Sub-byte widths count from the least significant bit. */
    const int bits0[8] = {1, 0, 1, 0, 0, 1, 0, 1};
    for (int i = 0; i < 8; i++)
        assert_int_equal(qcow2_refcount_entry_get(b, i, 0), bits0[i]);
    assert_int_equal(qcow2_refcount_entry_get(b, 8, 0), 1); /* 0x1b bit 0 */
    assert_int_equal(qcow2_refcount_entry_get(b, 4, 1), 3); /* byte 1: 0b00011011 */
    assert_int_equal(qcow2_refcount_entry_get(b, 5, 1), 2);
    assert_int_equal(qcow2_refcount_entry_get(b, 6, 1), 1);
    assert_int_equal(qcow2_refcount_entry_get(b, 7, 1), 0);
    assert_int_equal(qcow2_refcount_entry_get(b, 0, 2), 5);
    assert_int_equal(qcow2_refcount_entry_get(b, 1, 2), 0xa);
    assert_int_equal(qcow2_refcount_entry_get(b, 3, 3), 0x12);
    assert_int_equal(qcow2_refcount_entry_get(b, 2, 4), 0x3456);
    assert_int_equal(qcow2_refcount_entry_get(b, 1, 5), 0x3456789a);
    assert_true(qcow2_refcount_entry_get(b, 1, 6) == 0xbcdef01100000000ull);
    assert_true(qcow2_refcount_entry_get(b, 0, 6) == 0xa51ba5123456789aull);
}

static void test_entry_set_all_widths(void **state)
{
    for (uint32_t order = 0; order <= 6; order++) {
        uint8_t block[512];
        memset(block, 0, sizeof(block));
        uint32_t bits = 1u << order;
        uint64_t max = order == 6 ? UINT64_MAX : (1ull << bits) - 1;
        uint64_t entries = sizeof(block) * 8 / bits;
        for (uint64_t i = 0; i < entries; i++)
            qcow2_refcount_entry_set(block, i, order, (i * 0x9e3779b97f4a7c15ull) & max);
        for (uint64_t i = 0; i < entries; i++)
            assert_true(qcow2_refcount_entry_get(block, i, order) ==
                        ((i * 0x9e3779b97f4a7c15ull) & max));
        /* Setting one entry leaves its neighbours alone; values are cut to the width. */
        uint64_t before = qcow2_refcount_entry_get(block, 6, order);
        uint64_t after = qcow2_refcount_entry_get(block, 8, order);
        qcow2_refcount_entry_set(block, 7, order, UINT64_MAX);
        assert_true(qcow2_refcount_entry_get(block, 7, order) == max);
        assert_true(qcow2_refcount_entry_get(block, 6, order) == before);
        assert_true(qcow2_refcount_entry_get(block, 8, order) == after);
        qcow2_refcount_entry_set(block, 7, order, 0);
        assert_true(qcow2_refcount_entry_get(block, 7, order) == 0);
    }
}

/* Reads refcounts past the first cache slice of a refcount block, and damaged tables. */
static void test_refcount_get_built(void **state)
{
    struct qt_image im;
    struct img *img;
    /* 2 MiB clusters with 1-bit refcounts: one block covers 16 Mi clusters. */
    qt_build(&im, 3, 21, 1 << 30, false);
    store_be32(im.buf + 96, 0);
    uint8_t *block = im.buf + qt_cluster(&im, QT_REFBLOCK);
    memset(block, 0, im.cluster_size);
    for (unsigned n = 0; n <= QT_L2; n++)
        qcow2_refcount_entry_set(block, n, 0, 1);
    qcow2_refcount_entry_set(block, 600001, 0, 1);
    qcow2_refcount_entry_set(block, (1u << 24) - 1, 0, 1);
    /* A second table entry pointing at a misaligned block. */
    store_be64(im.buf + qt_cluster(&im, QT_REFTABLE) + 8, qt_cluster(&im, QT_REFBLOCK) + 4096);
    assert_int_equal(qt_open_built(&im, "rc1.qcow2", &img), 0);
    struct qcow2_state *s = img->priv;
    uint64_t v;
    for (unsigned n = 0; n <= QT_L2; n++) {
        assert_int_equal(qcow2_refcount_get(s, n, &v), 0);
        assert_int_equal(v, 1);
    }
    assert_int_equal(qcow2_refcount_get(s, 5, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(qcow2_refcount_get(s, 600000, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(qcow2_refcount_get(s, 600001, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(qcow2_refcount_get(s, (1u << 24) - 1, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(qcow2_refcount_get(s, 1u << 24, &v), -EIO);
    assert_non_null(strstr(img_last_error(), "refcount block offset 0x401000"));
    /* Table entries of zero, and clusters past the table, have refcount 0. */
    assert_int_equal(qcow2_refcount_get(s, 2u << 24, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(qcow2_refcount_get(s, UINT64_MAX >> 9, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(s->refcount_table_entries, (2u << 20) / 8);
    qt_close(img);
    qt_free(&im);
}

/* Every cluster of a freshly written image is in use; shared clusters count twice. */
static void check_widths_with_qemu(uint32_t bits)
{
    char name[64];
    snprintf(name, sizeof(name), "rc%u.qcow2", bits);
    char *path = qt_path(name);
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 -o refcount_bits=%u,cluster_size=4096 "
                            "'%s' 4M && qemu-io -c 'write -P 0x11 0 300k' -c 'write -P 0x22 1M "
                            "64k' '%s' >/dev/null",
                            bits, path, path),
                     0);
    struct img *img;
    assert_int_equal(qt_open(path, 0, &img), 0);
    struct qcow2_state *s = img->priv;
    assert_int_equal(s->refcount_bits, bits);
    uint64_t clusters = s->file_size / s->cluster_size, v;
    for (uint64_t n = 0; n < clusters; n++) {
        assert_int_equal(qcow2_refcount_get(s, n, &v), 0);
        assert_int_equal(v, 1);
    }
    for (uint64_t n = clusters; n < clusters + 100; n++) {
        assert_int_equal(qcow2_refcount_get(s, n, &v), 0);
        assert_int_equal(v, 0);
    }
    qt_close(img);

    if (bits >= 2) {
        assert_int_equal(qt_run("qemu-img snapshot -c s1 '%s'", path), 0);
        assert_int_equal(qt_open(path, 0, &img), 0);
        s = img->priv;
        struct img_extent ext;
        for (uint64_t off = 0; off < 300 * 1024; off += ext.length) {
            assert_int_equal(format_qcow2.map(img, off, 300 * 1024 - off, &ext), 0);
            assert_int_equal(ext.kind, EXTENT_DATA);
            for (uint64_t h = ext.host_offset; h < ext.host_offset + ext.length; h += 4096) {
                assert_int_equal(qcow2_refcount_get(s, h / 4096, &v), 0);
                assert_int_equal(v, 2);
            }
        }
        /* The header is never shared. */
        assert_int_equal(qcow2_refcount_get(s, 0, &v), 0);
        assert_int_equal(v, 1);
        qt_close(img);
    }
    free(path);
}

static void test_widths_with_qemu(void **state)
{
    if (!qt_have_qemu())
        skip();
    for (uint32_t bits = 1; bits <= 64; bits *= 2)
        check_widths_with_qemu(bits);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entry_layout),
        cmocka_unit_test(test_entry_set_all_widths),
        cmocka_unit_test(test_refcount_get_built),
        cmocka_unit_test(test_widths_with_qemu),
    };
    return cmocka_run_group_tests(tests, NULL, qt_teardown);
}
