/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writing the header cluster: the fixed fields, then the extensions in the order QEMU writes
 * them (backing format, external data file, feature names, bitmaps, any unknown ones kept),
 * the end marker and the backing file name.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_header_layout.h"
#include "formats/qcow2/qcow2_writer.h"
#include "image.h"
#include "io/io.h"
#include "util/endian.h"

/* The feature names QEMU 7.2 writes into every v3 image. */
static const struct {
    uint8_t type, bit;
    const char *name;
} feature_names[] = {
    {0, 0, "dirty bit"},        {0, 1, "corrupt bit"},         {0, 2, "external data file"},
    {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},          {2, 1, "raw external data"},
};

struct header_buf {
    uint8_t *buf;
    size_t cap;
    size_t pos;
    bool overflow;
};

static void add_extension(struct header_buf *b, uint32_t magic, const void *data, uint32_t len)
{
    size_t padded = ((size_t)len + 7) & ~(size_t)7;
    if (b->overflow || b->pos + 8 + padded > b->cap) {
        b->overflow = true;
        return;
    }
    store_be32(b->buf + b->pos, magic);
    store_be32(b->buf + b->pos + 4, len);
    if (len)
        memcpy(b->buf + b->pos + 8, data, len);
    b->pos += 8 + padded;
}

static void add_feature_table(struct header_buf *b)
{
    uint8_t table[sizeof(feature_names) / sizeof(feature_names[0]) * QCOW2_FEATURE_NAME_ENTRY];
    memset(table, 0, sizeof(table));
    for (size_t i = 0; i < sizeof(feature_names) / sizeof(feature_names[0]); i++) {
        uint8_t *e = table + i * QCOW2_FEATURE_NAME_ENTRY;
        e[0] = feature_names[i].type;
        e[1] = feature_names[i].bit;
        memcpy(e + 2, feature_names[i].name, strlen(feature_names[i].name));
    }
    add_extension(b, QCOW2_EXT_FEATURE_TABLE, table, sizeof(table));
}

int qcow2_header_encode(struct qcow2_header *h, const struct qcow2_extensions *ext,
                        const char *backing_name, const uint8_t *unknown_fields, size_t unknown_len,
                        uint8_t *buf, size_t cluster_size)
{
    memset(buf, 0, cluster_size);
    bool v3 = h->version >= 3;
    size_t fixed = v3 ? QCOW2_KNOWN_HEADER_LENGTH + unknown_len : QCOW2_V2_HEADER_LENGTH;
    if (fixed > cluster_size)
        return img_error(-EFBIG, "qcow2: the header does not fit in one cluster");
    if (v3)
        h->header_length = (uint32_t)fixed;
    else
        h->header_length = QCOW2_V2_HEADER_LENGTH;

    struct header_buf b = {.buf = buf, .cap = cluster_size, .pos = fixed};
    if (backing_name && ext->backing_format)
        add_extension(&b, QCOW2_EXT_BACKING_FORMAT, ext->backing_format,
                      (uint32_t)strlen(ext->backing_format));
    if (ext->data_file)
        add_extension(&b, QCOW2_EXT_DATA_FILE, ext->data_file, (uint32_t)strlen(ext->data_file));
    /* As QEMU: with small clusters the names would crowd out the backing file name. */
    if (v3 && cluster_size > 4096)
        add_feature_table(&b);
    if (ext->has_bitmaps) {
        uint8_t data[24];
        store_be32(data, ext->nb_bitmaps);
        store_be32(data + 4, 0);
        store_be64(data + 8, ext->bitmap_directory_size);
        store_be64(data + 16, ext->bitmap_directory_offset);
        add_extension(&b, QCOW2_EXT_BITMAPS, data, sizeof(data));
    }
    for (size_t i = 0; i < ext->nb_unknown; i++)
        add_extension(&b, ext->unknown[i].magic, ext->unknown[i].data, ext->unknown[i].len);
    add_extension(&b, QCOW2_EXT_END, NULL, 0);

    size_t name_len = backing_name ? strlen(backing_name) : 0;
    if (name_len > QCOW2_MAX_BACKING_NAME)
        return img_error(-EINVAL, "qcow2: backing file name is too long (%zu bytes, at most %u)",
                         name_len, QCOW2_MAX_BACKING_NAME);
    if (b.overflow || b.pos + name_len > cluster_size)
        return img_error(-EFBIG,
                         "qcow2: header extensions and backing file name do not fit in one "
                         "cluster of %zu bytes",
                         cluster_size);
    h->backing_file_offset = name_len ? b.pos : 0;
    h->backing_file_size = (uint32_t)name_len;
    if (name_len)
        memcpy(buf + b.pos, backing_name, name_len);

    store_be32(buf + QCOW2_HDR_MAGIC, QCOW2_MAGIC);
    store_be32(buf + QCOW2_HDR_VERSION, h->version);
    store_be64(buf + QCOW2_HDR_BACKING_FILE_OFFSET, h->backing_file_offset);
    store_be32(buf + QCOW2_HDR_BACKING_FILE_SIZE, h->backing_file_size);
    store_be32(buf + QCOW2_HDR_CLUSTER_BITS, h->cluster_bits);
    store_be64(buf + QCOW2_HDR_SIZE, h->size);
    store_be32(buf + QCOW2_HDR_CRYPT_METHOD, h->crypt_method);
    store_be32(buf + QCOW2_HDR_L1_SIZE, h->l1_size);
    store_be64(buf + QCOW2_HDR_L1_TABLE_OFFSET, h->l1_table_offset);
    store_be64(buf + QCOW2_HDR_REFCOUNT_TABLE_OFFSET, h->refcount_table_offset);
    store_be32(buf + QCOW2_HDR_REFCOUNT_TABLE_CLUSTERS, h->refcount_table_clusters);
    store_be32(buf + QCOW2_HDR_NB_SNAPSHOTS, h->nb_snapshots);
    store_be64(buf + QCOW2_HDR_SNAPSHOTS_OFFSET, h->snapshots_offset);
    if (v3) {
        store_be64(buf + QCOW2_HDR_INCOMPATIBLE_FEATURES, h->incompatible_features);
        store_be64(buf + QCOW2_HDR_COMPATIBLE_FEATURES, h->compatible_features);
        store_be64(buf + QCOW2_HDR_AUTOCLEAR_FEATURES, h->autoclear_features);
        store_be32(buf + QCOW2_HDR_REFCOUNT_ORDER, h->refcount_order);
        store_be32(buf + QCOW2_HDR_HEADER_LENGTH, h->header_length);
        buf[QCOW2_COMPRESSION_TYPE_OFFSET] = h->compression_type;
        if (unknown_len)
            memcpy(buf + QCOW2_KNOWN_HEADER_LENGTH, unknown_fields, unknown_len);
    }
    return 0;
}

int qcow2_write_header(struct img *img)
{
    struct qcow2_state *s = img->priv;
    uint8_t *buf = malloc(s->cluster_size);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    struct qcow2_header h = s->hdr;
    /* A stale bitmaps extension (autoclear bit clear) is dropped, as QEMU drops it. */
    int ret = qcow2_header_encode(&h, &s->ext, img->backing_name, s->unknown_header_fields,
                                  s->unknown_header_fields_len, buf, s->cluster_size);
    if (ret == 0) {
        ret = io_pwrite(s->file, buf, s->cluster_size, 0);
        if (ret == 0)
            ret = io_fsync(s->file);
        if (ret < 0)
            img_error(ret, "qcow2: cannot write the header: %s", img_strerror(ret));
    }
    free(buf);
    if (ret == 0)
        s->hdr = h;
    return ret;
}

int qcow2_write_incompat(struct qcow2_state *s, uint64_t incompatible_features)
{
    if (s->hdr.version < 3) {
        if (incompatible_features == 0)
            return 0;
        return img_error(-ENOTSUP, "qcow2: version 2 images have no feature bits");
    }
    uint8_t field[8];
    store_be64(field, incompatible_features);
    int ret = io_pwrite(s->file, field, sizeof(field), QCOW2_HDR_INCOMPATIBLE_FEATURES);
    if (ret == 0)
        ret = io_fsync(s->file);
    if (ret < 0)
        return img_error(ret, "qcow2: cannot update the header's feature bits: %s",
                         img_strerror(ret));
    s->hdr.incompatible_features = incompatible_features;
    return 0;
}
