/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The fixed header and its extensions: decoding, limits, feature bits, hostile values. */
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

static int decode(struct qt_image *im, struct qcow2_header *h)
{
    return qcow2_header_decode(im->buf, im->len, h);
}

/* Decodes, parses the extensions and checks features, as open does. */
static int check_features(struct qt_image *im, bool writable)
{
    struct qcow2_header h;
    int ret = decode(im, &h);
    if (ret < 0)
        return ret;
    struct qcow2_extensions ext;
    size_t end = h.backing_file_offset ? h.backing_file_offset : im->cluster_size;
    ret = qcow2_extensions_parse(im->buf, h.header_length, end, &h, &ext);
    if (ret == 0)
        ret = qcow2_header_check_features(&h, &ext, writable);
    qcow2_extensions_free(&ext);
    return ret;
}

static int check_tables(struct qt_image *im)
{
    struct qcow2_header h;
    int ret = decode(im, &h);
    return ret < 0 ? ret : qcow2_header_check_tables(&h, im->len);
}

static void test_decode_v3(void **state)
{
    struct qt_image im;
    qt_build(&im, 3, 16, 10 << 20, false);
    struct qcow2_header h;
    assert_int_equal(decode(&im, &h), 0);
    assert_int_equal(h.version, 3);
    assert_int_equal(h.cluster_bits, 16);
    assert_int_equal(h.size, 10 << 20);
    assert_int_equal(h.l1_size, 1);
    assert_int_equal(h.l1_table_offset, 3 << 16);
    assert_int_equal(h.refcount_table_offset, 1 << 16);
    assert_int_equal(h.refcount_table_clusters, 1);
    assert_int_equal(h.refcount_order, 4);
    assert_int_equal(h.header_length, 112);
    assert_int_equal(h.compression_type, 0);
    assert_int_equal(check_tables(&im), 0);
    assert_int_equal(check_features(&im, true), 0);
    qt_free(&im);
}

static void test_decode_v2_defaults(void **state)
{
    struct qt_image im;
    qt_build(&im, 2, 12, 1 << 20, false);
    /* Bytes past a v2 header are not fields: garbage there must be ignored. */
    memset(im.buf + 72, 0xff, 40);
    store_be32(im.buf + 72, 0); /* an end-of-extensions marker */
    struct qcow2_header h;
    assert_int_equal(decode(&im, &h), 0);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.refcount_order, 4);
    assert_int_equal(h.header_length, 72);
    assert_int_equal(h.incompatible_features, 0);
    assert_int_equal(h.autoclear_features, 0);
    assert_int_equal(h.compression_type, 0);
    assert_int_equal(check_features(&im, false), 0);
    qt_free(&im);
}

static void test_decode_rejects(void **state)
{
    struct qt_image im;
    struct qcow2_header h;
    qt_build(&im, 3, 16, 1 << 20, false);

    store_be32(im.buf, 0x514649fa);
    assert_int_equal(decode(&im, &h), -EINVAL);
    assert_message_contains("bad magic");
    store_be32(im.buf, QCOW2_MAGIC);

    store_be32(im.buf + 4, 1);
    assert_int_equal(decode(&im, &h), -ENOTSUP);
    assert_message_contains("unsupported version 1");
    store_be32(im.buf + 4, 4);
    assert_int_equal(decode(&im, &h), -ENOTSUP);
    store_be32(im.buf + 4, 3);

    store_be32(im.buf + 20, 8);
    assert_int_equal(decode(&im, &h), -EIO);
    assert_message_contains("cluster size 2^8");
    store_be32(im.buf + 20, 22);
    assert_int_equal(decode(&im, &h), -ENOTSUP);
    assert_message_contains("unsupported cluster size 2^22");
    store_be32(im.buf + 20, 0xffffffff);
    assert_int_equal(decode(&im, &h), -ENOTSUP);
    store_be32(im.buf + 20, 16);

    store_be32(im.buf + 100, 100);
    assert_int_equal(decode(&im, &h), -EIO);
    assert_message_contains("header length 100 is too short");
    store_be32(im.buf + 100, 65536 + 8);
    assert_int_equal(decode(&im, &h), -EIO);
    assert_message_contains("exceeds the cluster size");
    store_be32(im.buf + 100, 112);

    store_be64(im.buf + 8, 65537);
    assert_int_equal(decode(&im, &h), -EIO);
    assert_message_contains("outside the first cluster");
    store_be64(im.buf + 8, 0);

    assert_int_equal(decode(&im, &h), 0);
    qt_free(&im);
}

static void test_decode_truncated(void **state)
{
    struct qt_image im;
    struct qcow2_header h;
    qt_build(&im, 3, 16, 1 << 20, false);
    assert_int_equal(qcow2_header_decode(im.buf, 0, &h), -EINVAL);
    assert_int_equal(qcow2_header_decode(im.buf, 7, &h), -EINVAL);
    assert_int_equal(qcow2_header_decode(im.buf, 60, &h), -EIO);
    assert_message_contains("ends inside the header");
    assert_int_equal(qcow2_header_decode(im.buf, 80, &h), -EIO);
    /* A v2 header needs only 72 bytes. */
    store_be32(im.buf + 4, 2);
    assert_int_equal(qcow2_header_decode(im.buf, 72, &h), 0);
    qt_free(&im);
}

static void test_compression_type_field(void **state)
{
    struct qt_image im;
    struct qcow2_header h;
    qt_build(&im, 3, 16, 1 << 20, false);
    im.buf[104] = 1;
    store_be64(im.buf + 72, QCOW2_INCOMPAT_COMPRESSION);
    assert_int_equal(decode(&im, &h), 0);
    assert_int_equal(h.compression_type, 1);
    assert_int_equal(check_features(&im, false), 0);

    /* With header_length 104 the field is absent, whatever the byte says. */
    store_be32(im.buf + 100, 104);
    assert_int_equal(decode(&im, &h), 0);
    assert_int_equal(h.compression_type, 0);
    /* ... and then the feature bit is wrong. */
    assert_int_equal(check_features(&im, false), -EIO);
    assert_message_contains("must not be set");

    store_be32(im.buf + 100, 112);
    store_be64(im.buf + 72, 0);
    assert_int_equal(check_features(&im, false), -EIO);
    assert_message_contains("must be set");

    im.buf[104] = 2;
    store_be64(im.buf + 72, QCOW2_INCOMPAT_COMPRESSION);
    assert_int_equal(check_features(&im, false), -ENOTSUP);
    assert_message_contains("unknown compression type 2");
    qt_free(&im);
}

static void put_feature(uint8_t *entry, uint8_t type, uint8_t bit, const char *name)
{
    memset(entry, 0, QCOW2_FEATURE_NAME_ENTRY);
    entry[0] = type;
    entry[1] = bit;
    memcpy(entry + 2, name, strlen(name));
}

static void test_unknown_features(void **state)
{
    struct qt_image im;
    qt_build(&im, 3, 16, 1 << 20, false);
    uint8_t table[3 * QCOW2_FEATURE_NAME_ENTRY];
    put_feature(table, 0, 5, "lazy-foo");
    put_feature(table + 48, 1, 40, "not-incompatible");
    /* A name filling all 46 bytes has no terminating NUL on disk. */
    put_feature(table + 96, 0, 63, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrst");
    size_t pos = 0;
    qt_add_extension(&im, &pos, QCOW2_EXT_FEATURE_TABLE, table, sizeof(table));

    store_be64(im.buf + 72, 1ull << 5);
    assert_int_equal(check_features(&im, false), -ENOTSUP);
    assert_string_equal(img_last_error(), "qcow2: unsupported incompatible feature: lazy-foo "
                                          "(bit 5)");

    /* Bit 40 is named only as a compatible feature: not a name for an incompatible one. */
    store_be64(im.buf + 72, 1ull << 40);
    assert_int_equal(check_features(&im, false), -ENOTSUP);
    assert_string_equal(img_last_error(), "qcow2: unsupported incompatible feature: bit 40");

    store_be64(im.buf + 72, (1ull << 5) | (1ull << 40) | (1ull << 63) | QCOW2_INCOMPAT_DIRTY);
    assert_int_equal(check_features(&im, false), -ENOTSUP);
    assert_string_equal(img_last_error(),
                        "qcow2: unsupported incompatible features: lazy-foo (bit 5), bit 40, "
                        "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrst (bit 63)");

    /* Known bits alone are fine. */
    store_be64(im.buf + 72, QCOW2_INCOMPAT_DIRTY);
    assert_int_equal(check_features(&im, true), 0);
    qt_free(&im);
}

static void test_feature_checks(void **state)
{
    struct qt_image im;
    qt_build(&im, 3, 16, 1 << 20, false);

    store_be64(im.buf + 72, QCOW2_INCOMPAT_CORRUPT);
    assert_int_equal(check_features(&im, false), 0);
    assert_int_equal(check_features(&im, true), -EACCES);
    assert_message_contains("corrupt");
    store_be64(im.buf + 72, 0);

    store_be32(im.buf + 32, 1);
    assert_int_equal(check_features(&im, false), -ENOTSUP);
    assert_string_equal(img_last_error(), "qcow2: encrypted images are not supported yet");
    store_be32(im.buf + 32, 2);
    assert_int_equal(check_features(&im, false), -ENOTSUP);
    store_be32(im.buf + 32, 0);

    store_be32(im.buf + 96, 7);
    assert_int_equal(check_features(&im, false), -EIO);
    assert_message_contains("at most 64 bits");
    store_be32(im.buf + 96, 6);
    assert_int_equal(check_features(&im, false), 0);
    store_be32(im.buf + 96, 4);

    store_be64(im.buf + 88, QCOW2_AUTOCLEAR_DATA_FILE_RAW);
    assert_int_equal(check_features(&im, false), -EIO);
    assert_message_contains("no external data file");
    store_be64(im.buf + 88, 0);

    store_be64(im.buf + 72, QCOW2_INCOMPAT_DATA_FILE);
    assert_int_equal(check_features(&im, false), -EIO);
    assert_message_contains("does not name it");
    size_t pos = 0;
    qt_add_extension(&im, &pos, QCOW2_EXT_DATA_FILE, "disk.data", 9);
    assert_int_equal(check_features(&im, false), 0);
    qt_free(&im);

    /* Extended L2 entries need 512-byte subclusters at least. */
    qt_build(&im, 3, 13, 1 << 20, true);
    assert_int_equal(check_features(&im, false), -EIO);
    assert_message_contains("subcluster size 256");
    qt_free(&im);
    qt_build(&im, 3, 14, 1 << 20, true);
    assert_int_equal(check_features(&im, false), 0);
    qt_free(&im);

    /* An encryption header extension alone is refused too. */
    qt_build(&im, 3, 16, 1 << 20, false);
    uint8_t crypto[16] = {0};
    pos = 0;
    qt_add_extension(&im, &pos, QCOW2_EXT_CRYPTO, crypto, sizeof(crypto));
    assert_int_equal(check_features(&im, false), -ENOTSUP);
    assert_message_contains("encrypted");
    qt_free(&im);
}

static void test_table_limits(void **state)
{
    struct qt_image im;
    qt_build(&im, 3, 9, 1 << 20, false);
    assert_int_equal(check_tables(&im), 0);

    store_be32(im.buf + 56, 0);
    assert_int_equal(check_tables(&im), -EIO);
    assert_message_contains("no refcount table");
    store_be32(im.buf + 56, (8 << 20) / 512 + 1);
    assert_int_equal(check_tables(&im), -EFBIG);
    assert_message_contains("8 MiB");
    store_be32(im.buf + 56, 2);
    assert_int_equal(check_tables(&im), 0);
    store_be32(im.buf + 56, 5); /* runs past the end of the 5-cluster file */
    assert_int_equal(check_tables(&im), -EIO);
    assert_message_contains("refcount table offset 0x200 is beyond the end of the file");
    store_be32(im.buf + 56, 1);
    store_be64(im.buf + 48, 513);
    assert_int_equal(check_tables(&im), -EIO);
    assert_message_contains("refcount table offset 0x201 is not cluster-aligned");
    store_be64(im.buf + 48, 512);

    store_be32(im.buf + 60, 65537);
    assert_int_equal(check_tables(&im), -EFBIG);
    assert_message_contains("65537 snapshots");
    store_be32(im.buf + 60, 1);
    store_be64(im.buf + 64, 1ull << 40);
    assert_int_equal(check_tables(&im), -EIO);
    assert_message_contains("snapshot table offset 0x10000000000 is beyond the end");
    store_be64(im.buf + 64, UINT64_MAX & ~511ull);
    assert_int_equal(check_tables(&im), -EIO);
    store_be32(im.buf + 60, 0);

    store_be32(im.buf + 36, (32 << 20) / 8 + 1);
    assert_int_equal(check_tables(&im), -EFBIG);
    assert_message_contains("32 MiB");
    store_be32(im.buf + 36, 40);
    store_be64(im.buf + 40, 3 * 512 + 8);
    assert_int_equal(check_tables(&im), -EIO);
    assert_message_contains("L1 table offset 0x608 is not cluster-aligned");
    store_be64(im.buf + 40, 1ull << 20);
    assert_int_equal(check_tables(&im), -EIO);
    assert_message_contains("L1 table offset 0x100000 is beyond the end of the file");
    store_be64(im.buf + 40, 3 * 512);
    store_be32(im.buf + 36, 31); /* 1 MiB needs 32 tables of 64 entries * 512 bytes */
    assert_int_equal(check_tables(&im), -EIO);
    assert_message_contains("too small");
    store_be32(im.buf + 36, 32);
    assert_int_equal(check_tables(&im), 0);

    /* Sizes whose L1 table could never fit: refused before any arithmetic can overflow. */
    store_be64(im.buf + 24, UINT64_MAX);
    assert_int_equal(check_tables(&im), -EFBIG);
    assert_message_contains("too big");
    store_be64(im.buf + 24, 1ull << 62);
    assert_int_equal(check_tables(&im), -EFBIG);
    store_be64(im.buf + 24, 1 << 20);

    store_be64(im.buf + 8, 200);
    store_be32(im.buf + 16, 1024);
    assert_int_equal(check_tables(&im), -EIO);
    assert_message_contains("backing file name is too long (1024 bytes)");
    store_be32(im.buf + 16, 313); /* 200 + 313 > 512 */
    assert_int_equal(check_tables(&im), -EIO);
    store_be32(im.buf + 16, 312);
    assert_int_equal(check_tables(&im), 0);
    qt_free(&im);

    /* With 2 MiB clusters one L1 entry maps 512 GiB: a 1 PiB image needs 2048. */
    qt_build(&im, 3, 21, 1ull << 50, false);
    assert_int_equal(check_tables(&im), 0);
    qt_free(&im);
}

static void test_extensions(void **state)
{
    struct qt_image im;
    qt_build(&im, 3, 16, 1 << 20, false);
    size_t pos = 0;
    qt_add_extension(&im, &pos, QCOW2_EXT_BACKING_FORMAT, "qcow2", 5);
    qt_add_extension(&im, &pos, QCOW2_EXT_DATA_FILE, "data\0junk", 9);
    qt_add_extension(&im, &pos, 0x12345678, "\x01\x02\x03", 3);
    size_t end_marker = pos;
    qt_add_extension(&im, &pos, QCOW2_EXT_END, "", 0);
    /* Anything after the end marker is not an extension. */
    qt_add_extension(&im, &pos, QCOW2_EXT_BACKING_FORMAT, "raw", 3);

    struct qcow2_header h;
    struct qcow2_extensions ext;
    assert_int_equal(decode(&im, &h), 0);
    assert_int_equal(qcow2_extensions_parse(im.buf, h.header_length, 65536, &h, &ext), 0);
    assert_string_equal(ext.backing_format, "qcow2");
    assert_string_equal(ext.data_file, "data");
    assert_int_equal(ext.nb_unknown, 1);
    assert_int_equal(ext.unknown[0].magic, 0x12345678);
    assert_int_equal(ext.unknown[0].len, 3);
    assert_memory_equal(ext.unknown[0].data, "\x01\x02\x03", 3);
    assert_int_equal(ext.end_offset, end_marker + 8);
    assert_false(ext.has_bitmaps);
    qcow2_extensions_free(&ext);

    /* The area may end at the backing file name without an end marker. */
    assert_int_equal(qcow2_extensions_parse(im.buf, h.header_length, end_marker, &h, &ext), 0);
    assert_int_equal(ext.end_offset, end_marker);
    qcow2_extensions_free(&ext);
    qt_free(&im);
}

static void test_extensions_hostile(void **state)
{
    struct qt_image im;
    struct qcow2_header h;
    struct qcow2_extensions ext;
    qt_build(&im, 3, 16, 1 << 20, false);
    assert_int_equal(decode(&im, &h), 0);

    /* A length reaching past the extension area. */
    store_be32(im.buf + 112, 0x12345678);
    store_be32(im.buf + 116, 65536 - 120 + 1);
    assert_int_equal(qcow2_extensions_parse(im.buf, 112, 65536, &h, &ext), -EIO);
    assert_message_contains("too large");
    qcow2_extensions_free(&ext);
    store_be32(im.buf + 116, UINT32_MAX);
    assert_int_equal(qcow2_extensions_parse(im.buf, 112, 65536, &h, &ext), -EIO);
    qcow2_extensions_free(&ext);
    /* Exactly filling the area is fine. */
    store_be32(im.buf + 116, 65536 - 120);
    assert_int_equal(qcow2_extensions_parse(im.buf, 112, 65536, &h, &ext), 0);
    assert_int_equal(ext.nb_unknown, 1);
    qcow2_extensions_free(&ext);

    /* An extension header cut by the end of the area. */
    store_be32(im.buf + 112, 0);
    assert_int_equal(qcow2_extensions_parse(im.buf, 112, 116, &h, &ext), -EIO);
    qcow2_extensions_free(&ext);

    /* Backing format names are at most 15 bytes. */
    size_t pos = 0;
    qt_add_extension(&im, &pos, QCOW2_EXT_BACKING_FORMAT, "0123456789abcdef", 16);
    assert_int_equal(qcow2_extensions_parse(im.buf, 112, 65536, &h, &ext), -EIO);
    assert_message_contains("backing format name is too long");
    qcow2_extensions_free(&ext);
    qt_free(&im);
}

static void test_bitmaps_extension(void **state)
{
    struct qt_image im;
    struct qcow2_header h;
    struct qcow2_extensions ext;
    uint8_t bm[24] = {0};
    store_be32(bm, 2);
    store_be64(bm + 8, 64);
    store_be64(bm + 16, 5 << 16);

    qt_build(&im, 3, 16, 1 << 20, false);
    size_t pos = 0;
    qt_add_extension(&im, &pos, QCOW2_EXT_BITMAPS, bm, sizeof(bm));
    /* Without the autoclear bit the extension is stale and ignored. */
    assert_int_equal(decode(&im, &h), 0);
    assert_int_equal(qcow2_extensions_parse(im.buf, 112, 65536, &h, &ext), 0);
    assert_false(ext.has_bitmaps);
    assert_true(ext.stale_bitmaps);
    qcow2_extensions_free(&ext);

    store_be64(im.buf + 88, QCOW2_AUTOCLEAR_BITMAPS);
    assert_int_equal(decode(&im, &h), 0);
    assert_int_equal(qcow2_extensions_parse(im.buf, 112, 65536, &h, &ext), 0);
    assert_true(ext.has_bitmaps);
    assert_int_equal(ext.nb_bitmaps, 2);
    assert_int_equal(ext.bitmap_directory_size, 64);
    assert_int_equal(ext.bitmap_directory_offset, 5 << 16);
    qcow2_extensions_free(&ext);

    struct {
        size_t at;
        uint64_t value;
        int bytes;
        int expect;
        const char *message;
    } cases[] = {
        {0, 0, 4, -EIO, "zero bitmaps"},
        {0, 65536, 4, -EFBIG, "65536 bitmaps"},
        {4, 1, 4, -EIO, "reserved"},
        {16, (5 << 16) + 512, 8, -EIO, "not cluster-aligned"},
        {8, 1024ull * 65535 + 1, 8, -EFBIG, "bitmap directory"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t bad[24];
        memcpy(bad, bm, sizeof(bad));
        if (cases[i].bytes == 4)
            store_be32(bad + cases[i].at, (uint32_t)cases[i].value);
        else
            store_be64(bad + cases[i].at, cases[i].value);
        memcpy(im.buf + 120, bad, sizeof(bad));
        assert_int_equal(qcow2_extensions_parse(im.buf, 112, 65536, &h, &ext), cases[i].expect);
        assert_message_contains(cases[i].message);
        qcow2_extensions_free(&ext);
    }
    /* Wrong length. */
    store_be32(im.buf + 116, 16);
    assert_int_equal(qcow2_extensions_parse(im.buf, 112, 65536, &h, &ext), -EIO);
    qcow2_extensions_free(&ext);
    qt_free(&im);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_v3),
        cmocka_unit_test(test_decode_v2_defaults),
        cmocka_unit_test(test_decode_rejects),
        cmocka_unit_test(test_decode_truncated),
        cmocka_unit_test(test_compression_type_field),
        cmocka_unit_test(test_unknown_features),
        cmocka_unit_test(test_feature_checks),
        cmocka_unit_test(test_table_limits),
        cmocka_unit_test(test_extensions),
        cmocka_unit_test(test_extensions_hostile),
        cmocka_unit_test(test_bitmaps_extension),
    };
    return cmocka_run_group_tests(tests, NULL, qt_teardown);
}
