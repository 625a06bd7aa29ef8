/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Opening images built byte by byte: probe, fields, refusals, snapshots, bitmaps, data files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "imgutil.h"
#include "qcow2_test_util.h"
#include "util/json.h"

static void assert_message_contains(const char *needle)
{
    const char *msg = img_last_error();
    if (!strstr(msg, needle)) {
        fprintf(stderr, "message \"%s\" does not contain \"%s\"\n", msg, needle);
        fail();
    }
}

/* Compares two JSON texts ignoring white space outside strings. */
static void assert_same_json(const char *a, const char *b)
{
    char *x = malloc(strlen(a) + 1), *y = malloc(strlen(b) + 1);
    const char *in[2] = {a, b};
    char *out[2] = {x, y};
    for (int k = 0; k < 2; k++) {
        bool quoted = false;
        char *o = out[k];
        for (const char *p = in[k]; *p; p++) {
            if (*p == '"' && (p == in[k] || p[-1] != '\\'))
                quoted = !quoted;
            if (!quoted && (*p == ' ' || *p == '\n'))
                continue;
            *o++ = *p;
        }
        *o = '\0';
    }
    assert_string_equal(x, y);
    free(x);
    free(y);
}

static char *info_json(struct img *img)
{
    struct json_writer w;
    json_init(&w);
    json_object_begin(&w, NULL);
    assert_int_equal(format_qcow2.info_specific(img, &w), 0);
    json_object_end(&w);
    char *text = json_finish(&w);
    assert_non_null(text);
    return text;
}

static void test_probe(void **state)
{
    uint8_t buf[512] = {'Q', 'F', 'I', 0xfb, 0, 0, 0, 3};
    assert_int_equal(format_qcow2.probe(buf, sizeof(buf), "x"), 100);
    buf[7] = 2;
    assert_int_equal(format_qcow2.probe(buf, 8, "x"), 100);
    buf[7] = 1; /* qcow version 1 is another format */
    assert_int_equal(format_qcow2.probe(buf, sizeof(buf), "x"), 0);
    buf[7] = 3;
    buf[3] = 0xfa;
    assert_int_equal(format_qcow2.probe(buf, sizeof(buf), "x"), 0);
    assert_int_equal(format_qcow2.probe(buf, 4, "x"), 0);
    assert_true(format_has(&format_qcow2, FORMAT_HAS_METADATA | FORMAT_BACKING));
    assert_string_equal(format_qcow2.name, "qcow2");
}

static void test_open_fields(void **state)
{
    struct qt_image im;
    qt_build(&im, 3, 16, 10 << 20, false);
    struct img *img;
    assert_int_equal(qt_open_built(&im, "fields.qcow2", &img), 0);
    assert_int_equal(img->size, 10 << 20);
    assert_int_equal(img->cluster_size, 65536);
    assert_false(img->dirty);
    assert_null(img->backing_name);
    assert_null(img->backing_format);
    char *json = info_json(img);
    assert_string_equal(json, "{\n"
                              "    \"type\": \"qcow2\",\n"
                              "    \"data\": {\n"
                              "        \"compat\": \"1.1\",\n"
                              "        \"compression-type\": \"zlib\",\n"
                              "        \"lazy-refcounts\": false,\n"
                              "        \"refcount-bits\": 16,\n"
                              "        \"corrupt\": false,\n"
                              "        \"extended-l2\": false\n"
                              "    }\n"
                              "}");
    free(json);
    qt_close(img);

    /* Dirty, corrupt (read-only), lazy refcounts, zstd, extended L2. */
    store_be64(im.buf + 72,
               QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_COMPRESSION);
    store_be64(im.buf + 80, QCOW2_COMPAT_LAZY_REFCOUNTS);
    im.buf[104] = 1;
    assert_int_equal(qt_open_built(&im, "flags.qcow2", &img), 0);
    assert_true(img->dirty);
    json = info_json(img);
    assert_non_null(strstr(json, "\"compression-type\": \"zstd\""));
    assert_non_null(strstr(json, "\"lazy-refcounts\": true"));
    assert_non_null(strstr(json, "\"corrupt\": true"));
    free(json);
    qt_close(img);
    qt_free(&im);

    /* v2: only compat, compression type and refcount bits. */
    qt_build(&im, 2, 12, 1 << 20, false);
    assert_int_equal(qt_open_built(&im, "v2.qcow2", &img), 0);
    assert_int_equal(img->cluster_size, 4096);
    json = info_json(img);
    assert_string_equal(json, "{\n"
                              "    \"type\": \"qcow2\",\n"
                              "    \"data\": {\n"
                              "        \"compat\": \"0.10\",\n"
                              "        \"compression-type\": \"zlib\",\n"
                              "        \"refcount-bits\": 16\n"
                              "    }\n"
                              "}");
    free(json);
    qt_close(img);
    qt_free(&im);
}

static void test_open_odd_sizes(void **state)
{
    struct qt_image im;
    struct img *img;
    /* QEMU shows whole sectors only. */
    qt_build(&im, 3, 16, 1000, false);
    assert_int_equal(qt_open_built(&im, "odd.qcow2", &img), 0);
    assert_int_equal(img->size, 512);
    qt_close(img);
    qt_free(&im);
    qt_build(&im, 3, 16, 0, false);
    store_be32(im.buf + 36, 0);
    assert_int_equal(qt_open_built(&im, "empty.qcow2", &img), 0);
    assert_int_equal(img->size, 0);
    qt_close(img);
    qt_free(&im);
}

static void test_open_refusals(void **state)
{
    struct qt_image im;
    struct img *img;
    qt_build(&im, 3, 16, 1 << 20, false);

    /* Truncated files. */
    char *path = qt_path("short.qcow2");
    FILE *f = fopen(path, "wb");
    assert_int_equal(fwrite(im.buf, 1, 60, f), 60);
    fclose(f);
    assert_int_equal(qt_open(path, 0, &img), -EIO);
    assert_message_contains("ends inside the header");
    f = fopen(path, "wb");
    fclose(f);
    assert_int_equal(qt_open(path, 0, &img), -EINVAL);
    free(path);
    /* The header alone: the tables it names are missing. */
    struct qt_image cut = im;
    cut.len = 4096;
    assert_int_equal(qt_open_built(&cut, "cut.qcow2", &img), -EIO);
    assert_message_contains("beyond the end of the file");

    store_be64(im.buf + 40, 1 << 30);
    assert_int_equal(qt_open_built(&im, "l1.qcow2", &img), -EIO);
    assert_string_equal(img_last_error(),
                        "qcow2: L1 table offset 0x40000000 is beyond the end of the file");
    store_be64(im.buf + 40, 3 << 16);

    store_be64(im.buf + 72, 1ull << 9);
    assert_int_equal(qt_open_built(&im, "feature.qcow2", &img), -ENOTSUP);
    assert_string_equal(img_last_error(), "qcow2: unsupported incompatible feature: bit 9");
    store_be64(im.buf + 72, QCOW2_INCOMPAT_CORRUPT);
    path = qt_path("corrupt.qcow2");
    qt_write(&im, path);
    assert_int_equal(qt_open(path, IMG_OPEN_READ_WRITE, &img), -EACCES);
    assert_int_equal(qt_open(path, 0, &img), 0);
    qt_close(img);
    free(path);
    store_be64(im.buf + 72, 0);

    store_be32(im.buf + 32, 2);
    assert_int_equal(qt_open_built(&im, "luks.qcow2", &img), -ENOTSUP);
    assert_string_equal(img_last_error(), "qcow2: encrypted images are not supported yet");
    store_be32(im.buf + 32, 0);

    /* Damaged extensions, and unknown features named from a table after the damage. */
    store_be32(im.buf + 112, 0x11111111);
    store_be32(im.buf + 116, 1 << 20);
    assert_int_equal(qt_open_built(&im, "ext.qcow2", &img), -EIO);
    assert_message_contains("too large");
    qt_free(&im);
}

static void test_open_backing(void **state)
{
    struct qt_image im;
    struct img *img;
    qt_build(&im, 3, 16, 1 << 20, false);
    size_t pos = 0;
    qt_add_extension(&im, &pos, QCOW2_EXT_BACKING_FORMAT, "raw", 3);
    qt_add_extension(&im, &pos, QCOW2_EXT_END, "", 0);
    memcpy(im.buf + 1024, "base image.raw", 14);
    store_be64(im.buf + 8, 1024);
    store_be32(im.buf + 16, 14);
    assert_int_equal(qt_open_built(&im, "backed.qcow2", &img), 0);
    assert_string_equal(img->backing_name, "base image.raw");
    assert_string_equal(img->backing_format, "raw");
    qt_close(img);

    /* A name of zero length is no backing file. */
    store_be32(im.buf + 16, 0);
    assert_int_equal(qt_open_built(&im, "unbacked.qcow2", &img), 0);
    assert_null(img->backing_name);
    assert_null(img->backing_format);
    qt_close(img);
    qt_free(&im);
}

/* Writes `n` snapshot entries described by the arrays into cluster 5. */
struct sn_spec {
    const char *id;
    uint16_t id_len;
    const char *name;
    uint16_t name_len;
    uint32_t vm_state32;
    uint32_t extra_size;
    uint64_t extra[4];
};

static void put_snapshots(struct qt_image *im, const struct sn_spec *sn, int n)
{
    uint64_t base = qt_add_cluster(im, 0);
    uint64_t pos = base;
    for (int i = 0; i < n; i++) {
        pos = (pos + 7) & ~7ull;
        qt_grow(im, pos + 40 + sn[i].extra_size + sn[i].id_len + sn[i].name_len + 8);
        uint8_t *p = im->buf + pos;
        store_be64(p, qt_cluster(im, QT_L1));
        store_be32(p + 8, 1);
        store_be16(p + 12, sn[i].id_len);
        store_be16(p + 14, sn[i].name_len);
        store_be32(p + 16, 1000 + i);
        store_be32(p + 20, 2000 + i);
        store_be64(p + 24, 3000 + i);
        store_be32(p + 32, sn[i].vm_state32);
        store_be32(p + 36, sn[i].extra_size);
        pos += 40;
        for (uint32_t e = 0; e < sn[i].extra_size; e += 8)
            store_be64(im->buf + pos + e, e / 8 < 4 ? sn[i].extra[e / 8] : 0xeeeeeeeeeeeeeeee);
        pos += sn[i].extra_size;
        memcpy(im->buf + pos, sn[i].id, sn[i].id_len);
        pos += sn[i].id_len;
        memcpy(im->buf + pos, sn[i].name, sn[i].name_len);
        pos += sn[i].name_len;
    }
    store_be32(im->buf + 60, (uint32_t)n);
    store_be64(im->buf + 64, base);
}

static void test_snapshots(void **state)
{
    struct qt_image im;
    struct img *img;
    qt_build(&im, 3, 16, 1 << 20, false);
    struct sn_spec sn[] = {
        {"1", 1, "snap", 4, 7, 24, {5ull << 30, 1 << 20, 777}},
        {"22", 2, "", 0, 1234, 0, {0}},
        {"3", 1, "ab\0cd", 5, 0, 40, {1, 2, UINT64_MAX, 9}},
    };
    put_snapshots(&im, sn, 3);
    assert_int_equal(qt_open_built(&im, "snap.qcow2", &img), 0);
    struct img_snapshot *list;
    size_t count;
    assert_int_equal(format_qcow2.snapshot_list(img, &list, &count), 0);
    assert_int_equal(count, 3);
    assert_string_equal(list[0].id, "1");
    assert_string_equal(list[0].name, "snap");
    assert_int_equal(list[0].vm_state_size, 5ull << 30);
    assert_int_equal(list[0].date_sec, 1000);
    assert_int_equal(list[0].date_nsec, 2000);
    assert_int_equal(list[0].vm_clock_nsec, 3000);
    assert_true(list[0].has_icount);
    assert_int_equal(list[0].icount, 777);
    assert_string_equal(list[1].id, "22");
    assert_string_equal(list[1].name, "");
    assert_int_equal(list[1].vm_state_size, 1234);
    assert_false(list[1].has_icount);
    assert_string_equal(list[2].name, "ab");
    assert_int_equal(list[2].vm_state_size, 1);
    assert_false(list[2].has_icount);
    img_snapshots_free(list, count);
    struct qcow2_state *s = img->priv;
    assert_int_equal(s->snapshots[2].unknown_extra_size, 16);
    assert_int_equal(s->snapshots[2].disk_size, 2);
    assert_int_equal(s->snapshots[1].disk_size, 1 << 20);
    qt_close(img);
    qt_free(&im);

    /* Extra data beyond QEMU's limit. */
    qt_build(&im, 3, 16, 1 << 20, false);
    struct sn_spec big[] = {{"1", 1, "x", 1, 0, 1032, {0}}};
    put_snapshots(&im, big, 1);
    assert_int_equal(qt_open_built(&im, "bigextra.qcow2", &img), -EFBIG);
    assert_message_contains("extra data");
    qt_free(&im);

    /* An entry running past the end of the file. */
    qt_build(&im, 3, 16, 1 << 20, false);
    struct sn_spec one[] = {{"1", 1, "x", 1, 0, 16, {0}}};
    put_snapshots(&im, one, 1);
    store_be16(im.buf + (5 << 16) + 14, 65535);
    assert_int_equal(qt_open_built(&im, "pastend.qcow2", &img), -EIO);
    assert_message_contains("runs past the end of the file");
    /* More entries claimed than there are. */
    store_be16(im.buf + (5 << 16) + 14, 1);
    store_be32(im.buf + 60, 4000);
    assert_int_equal(qt_open_built(&im, "count.qcow2", &img), -EIO);
    qt_free(&im);
}

static uint64_t put_bitmap_entry(uint8_t *p, uint64_t table, uint32_t flags, uint8_t gran,
                                 const char *name)
{
    size_t n = strlen(name);
    store_be64(p, table);
    store_be32(p + 8, 1);
    store_be32(p + 12, flags);
    p[16] = 1;
    p[17] = gran;
    store_be16(p + 18, (uint16_t)n);
    store_be32(p + 20, 0);
    memcpy(p + 24, name, n);
    return (24 + n + 7) & ~7ull;
}

static void test_bitmaps(void **state)
{
    struct qt_image im;
    struct img *img;
    qt_build(&im, 3, 16, 1 << 20, false);
    uint64_t dir = qt_add_cluster(&im, 0);
    uint64_t table = qt_add_cluster(&im, 0);
    uint64_t size = put_bitmap_entry(im.buf + dir, table, QCOW2_BITMAP_AUTO, 16, "b0");
    size += put_bitmap_entry(im.buf + dir + size, table, QCOW2_BITMAP_IN_USE | QCOW2_BITMAP_AUTO, 9,
                             "dirty one");
    size += put_bitmap_entry(im.buf + dir + size, table, 0, 20, "off");
    uint8_t ext[24] = {0};
    store_be32(ext, 3);
    store_be64(ext + 8, size);
    store_be64(ext + 16, dir);
    size_t pos = 0;
    qt_add_extension(&im, &pos, QCOW2_EXT_BITMAPS, ext, sizeof(ext));
    store_be64(im.buf + 88, QCOW2_AUTOCLEAR_BITMAPS);
    assert_int_equal(qt_open_built(&im, "bitmaps.qcow2", &img), 0);
    char *json = info_json(img);
    /* The layout of empty arrays is the JSON writer's business: compare without spaces. */
    assert_same_json(json, "{\n"
                           "    \"type\": \"qcow2\",\n"
                           "    \"data\": {\n"
                           "        \"compat\": \"1.1\",\n"
                           "        \"compression-type\": \"zlib\",\n"
                           "        \"lazy-refcounts\": false,\n"
                           "        \"bitmaps\": [\n"
                           "            {\n"
                           "                \"flags\": [\n"
                           "                    \"auto\"\n"
                           "                ],\n"
                           "                \"name\": \"b0\",\n"
                           "                \"granularity\": 65536\n"
                           "            },\n"
                           "            {\n"
                           "                \"flags\": [\n"
                           "                    \"in-use\",\n"
                           "                    \"auto\"\n"
                           "                ],\n"
                           "                \"name\": \"dirty one\",\n"
                           "                \"granularity\": 512\n"
                           "            },\n"
                           "            {\n"
                           "                \"flags\": [\n"
                           "                ],\n"
                           "                \"name\": \"off\",\n"
                           "                \"granularity\": 1048576\n"
                           "            }\n"
                           "        ],\n"
                           "        \"refcount-bits\": 16,\n"
                           "        \"corrupt\": false,\n"
                           "        \"extended-l2\": false\n"
                           "    }\n"
                           "}");
    free(json);
    qt_close(img);

    /* The header extension promising more bitmaps than the directory holds. */
    store_be32(im.buf + 120, 4);
    assert_int_equal(qt_open_built(&im, "bm-count.qcow2", &img), -EIO);
    store_be32(im.buf + 120, 3);
    /* A granularity QEMU does not accept. */
    im.buf[dir + 17] = 8;
    assert_int_equal(qt_open_built(&im, "bm-gran.qcow2", &img), -EIO);
    assert_message_contains("bitmap 'b0'");
    im.buf[dir + 17] = 16;
    /* A name running past the directory. */
    store_be16(im.buf + dir + 18, 200);
    assert_int_equal(qt_open_built(&im, "bm-name.qcow2", &img), -EIO);
    assert_message_contains("broken");
    qt_free(&im);
}

static void test_data_file(void **state)
{
    struct qt_image im;
    struct img *img;
    qt_build(&im, 3, 16, 1 << 20, false);
    store_be64(im.buf + 72, QCOW2_INCOMPAT_DATA_FILE);
    store_be64(im.buf + 88, QCOW2_AUTOCLEAR_DATA_FILE_RAW);
    size_t pos = 0;
    qt_add_extension(&im, &pos, QCOW2_EXT_DATA_FILE, "df.data", 7);
    /* Host offset 0 is valid in a data file: the COPIED bit marks it allocated. */
    qt_set_l2(&im, 0, QCOW2_OFLAG_COPIED, 0);
    qt_set_l2(&im, 1, (1 << 16) | QCOW2_OFLAG_COPIED, 0);
    qt_set_l2(&im, 3, (5 << 16) | QCOW2_OFLAG_COPIED, 0);
    qt_set_l2(&im, 4, QCOW2_OFLAG_COMPRESSED | 12345, 0);
    qt_set_l2(&im, 5, (5 << 16) | QCOW2_OFLAG_ZERO | QCOW2_OFLAG_COPIED, 0);

    char *data_path = qt_path("df.data");
    FILE *f = fopen(data_path, "wb");
    uint8_t block[65536];
    for (int i = 0; i < 16; i++) {
        memset(block, i + 1, sizeof(block));
        assert_int_equal(fwrite(block, 1, sizeof(block), f), sizeof(block));
    }
    fclose(f);
    free(data_path);

    char *path = qt_path("df.qcow2");
    qt_write(&im, path);
    /* Writing needs the data file; an untrusted image may name no other file at all. */
    assert_int_equal(qt_open(path, IMG_OPEN_READ_WRITE, &img), -EPERM);
    assert_message_contains("uses the data file 'df.data'; opening it needs "
                            "IMG_OPEN_ALLOW_DATA_FILE");
    assert_int_equal(qt_open(path, IMG_OPEN_UNTRUSTED, &img), -EPERM);
    assert_message_contains("data file 'df.data', refused for an untrusted image");
    assert_int_equal(qt_open(path, IMG_OPEN_ALLOW_DATA_FILE | IMG_OPEN_UNTRUSTED, &img), -EPERM);
    assert_message_contains("refused for an untrusted image");

    /* Without permission the metadata is there but data in the data file is not. */
    const char *refused = "qcow2: image uses the external data file 'df.data'; reading it needs "
                          "IMG_OPEN_ALLOW_DATA_FILE";
    assert_int_equal(qt_open(path, 0, &img), 0);
    struct qcow2_state *s = img->priv;
    assert_null(s->data_file);
    assert_true(s->data_file_raw);
    struct img_extent ext;
    assert_int_equal(format_qcow2.map(img, 0, 1 << 20, &ext), -EPERM);
    assert_string_equal(img_last_error(), refused);
    assert_int_equal(format_qcow2.map(img, (1 << 16) + 5, 1 << 20, &ext), -EPERM);
    assert_string_equal(img_last_error(), refused);
    assert_int_equal(format_qcow2.map(img, 2 << 16, 1 << 20, &ext), 0);
    assert_int_equal(ext.kind, EXTENT_UNALLOCATED);
    assert_int_equal(ext.length, 1 << 16);
    assert_int_equal(format_qcow2.map(img, 5 << 16, 1 << 20, &ext), 0);
    assert_int_equal(ext.kind, EXTENT_ZERO);
    assert_true(ext.host_offset_valid);
    assert_int_equal(ext.host_offset, 5 << 16);
    assert_null(ext.file);
    char *json = info_json(img);
    assert_non_null(strstr(json, "\"data-file\": \"df.data\""));
    free(json);
    qt_close(img);

    /* The same through the public API: info works, reads of the data fail. */
    struct img *pub;
    assert_int_equal(img_open(&pub, path, NULL, IMG_OPEN_READ_ONLY, NULL), 0);
    uint8_t sector[512];
    assert_int_equal(img_pread(pub, sector, sizeof(sector), 100), -EPERM);
    /* Through the public call, the message also names the image. */
    assert_message_contains(refused);
    assert_message_contains(path);
    memset(sector, 0xee, sizeof(sector));
    assert_int_equal(img_pread(pub, sector, sizeof(sector), 2 << 16), (int64_t)sizeof(sector));
    assert_true(buffer_is_zero(sector, sizeof(sector)));
    assert_int_equal(img_info_json(pub, 0, &json), 0);
    assert_non_null(strstr(json, "\"data-file\": \"df.data\""));
    img_free(json);
    img_close(pub);

    assert_int_equal(qt_open(path, IMG_OPEN_ALLOW_DATA_FILE, &img), 0);
    s = img->priv;
    assert_true(s->data_file_raw);

    assert_int_equal(format_qcow2.map(img, 0, 1 << 20, &ext), 0);
    assert_int_equal(ext.kind, EXTENT_DATA);
    assert_int_equal(ext.length, 2 << 16);
    assert_int_equal(ext.host_offset, 0);
    assert_ptr_equal(ext.file, s->data_file);
    assert_ptr_not_equal(ext.file, img->file);
    uint8_t byte;
    assert_int_equal(io_pread(ext.file, &byte, 1, ext.host_offset + 65536), 0);
    assert_int_equal(byte, 2);

    assert_int_equal(format_qcow2.map(img, 2 << 16, 1 << 20, &ext), 0);
    assert_int_equal(ext.kind, EXTENT_UNALLOCATED);
    assert_int_equal(ext.length, 1 << 16);
    /* Data file offsets must equal guest offsets. */
    assert_int_equal(format_qcow2.map(img, 3 << 16, 1 << 20, &ext), -EIO);
    assert_message_contains("does not match guest offset 0x30000");
    assert_int_equal(format_qcow2.map(img, 4 << 16, 1 << 20, &ext), -EIO);
    assert_message_contains("compressed");
    assert_int_equal(format_qcow2.map(img, 5 << 16, 1 << 20, &ext), 0);
    assert_int_equal(ext.kind, EXTENT_ZERO);
    assert_ptr_equal(ext.file, s->data_file);

    json = info_json(img);
    assert_non_null(strstr(json, "\"refcount-bits\": 16,\n"
                                 "        \"data-file\": \"df.data\",\n"
                                 "        \"data-file-raw\": true,\n"
                                 "        \"corrupt\": false"));
    free(json);
    qt_close(img);
    free(path);
    qt_free(&im);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probe),          cmocka_unit_test(test_open_fields),
        cmocka_unit_test(test_open_odd_sizes), cmocka_unit_test(test_open_refusals),
        cmocka_unit_test(test_open_backing),   cmocka_unit_test(test_snapshots),
        cmocka_unit_test(test_bitmaps),        cmocka_unit_test(test_data_file),
    };
    return cmocka_run_group_tests(tests, NULL, qt_teardown);
}
