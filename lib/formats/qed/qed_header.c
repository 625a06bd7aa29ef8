/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The QED header: QEMU's validity rules, parsing and writing. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "error.h"
#include "formats/qed/qed.h"
#include "io/io.h"
#include "util/endian.h"

static bool is_power_of_2(uint64_t v)
{
    return v && !(v & (v - 1));
}

bool qed_cluster_size_valid(uint64_t v)
{
    return is_power_of_2(v) && v >= QED_MIN_CLUSTER_SIZE && v <= QED_MAX_CLUSTER_SIZE;
}

bool qed_table_size_valid(uint64_t v)
{
    return is_power_of_2(v) && v >= QED_MIN_TABLE_SIZE && v <= QED_MAX_TABLE_SIZE;
}

uint64_t qed_max_image_size(uint32_t cluster_size, uint32_t table_size)
{
    uint64_t entries = (uint64_t)table_size * cluster_size / sizeof(uint64_t);
    uint64_t l2_span = entries * cluster_size;
    /* At most 2^60 * 2^26 / 2^3: clamp where the product would overflow. */
    if (l2_span && entries > UINT64_MAX / l2_span)
        return UINT64_MAX;
    return l2_span * entries;
}

bool qed_cluster_offset_valid(const struct qed_state *s, uint64_t offset)
{
    uint64_t header_bytes = (uint64_t)s->hdr.header_size * s->hdr.cluster_size;
    if (offset & (s->hdr.cluster_size - 1))
        return false;
    return offset >= header_bytes && offset < s->file_size;
}

bool qed_table_offset_valid(const struct qed_state *s, uint64_t offset)
{
    uint64_t end = offset + (uint64_t)(s->hdr.table_size - 1) * s->hdr.cluster_size;
    /* As QEMU, which makes one-cluster tables unusable (end == offset). */
    if (end <= offset)
        return false;
    return qed_cluster_offset_valid(s, offset) && qed_cluster_offset_valid(s, end);
}

int qed_header_parse(const uint8_t *b, const char *filename, struct qed_header *h)
{
    if (load_le32(b) != QED_MAGIC)
        return img_error(-EINVAL, "qed: '%s': image not in QED format", filename);
    *h = (struct qed_header){
        .cluster_size = load_le32(b + 4),
        .table_size = load_le32(b + 8),
        .header_size = load_le32(b + 12),
        .features = load_le64(b + 16),
        .compat_features = load_le64(b + 24),
        .autoclear_features = load_le64(b + 32),
        .l1_table_offset = load_le64(b + 40),
        .image_size = load_le64(b + 48),
        .backing_filename_offset = load_le32(b + 56),
        .backing_filename_size = load_le32(b + 60),
    };
    if (h->features & ~QED_FEATURE_MASK)
        return img_error(-ENOTSUP, "qed: '%s': unsupported QED features: %" PRIx64, filename,
                         (uint64_t)(h->features & ~QED_FEATURE_MASK));
    if (!qed_cluster_size_valid(h->cluster_size))
        return img_error(-EINVAL, "qed: '%s': QED cluster size is invalid (%" PRIu32 ")", filename,
                         h->cluster_size);
    if (!qed_table_size_valid(h->table_size))
        return img_error(-EINVAL, "qed: '%s': QED table size is invalid (%" PRIu32 ")", filename,
                         h->table_size);
    if (h->image_size % 512 || h->image_size > qed_max_image_size(h->cluster_size, h->table_size))
        return img_error(-EINVAL, "qed: '%s': QED image size is invalid (%" PRIu64 ")", filename,
                         h->image_size);
    if (h->header_size == 0 || h->header_size > UINT32_MAX / h->cluster_size)
        return img_error(-EINVAL, "qed: '%s': QED header size is invalid (%" PRIu32 " clusters)",
                         filename, h->header_size);
    return 0;
}

void qed_header_store(const struct qed_header *h, uint8_t b[QED_HEADER_BYTES])
{
    store_le32(b, QED_MAGIC);
    store_le32(b + 4, h->cluster_size);
    store_le32(b + 8, h->table_size);
    store_le32(b + 12, h->header_size);
    store_le64(b + 16, h->features);
    store_le64(b + 24, h->compat_features);
    store_le64(b + 32, h->autoclear_features);
    store_le64(b + 40, h->l1_table_offset);
    store_le64(b + 48, h->image_size);
    store_le32(b + 56, h->backing_filename_offset);
    store_le32(b + 60, h->backing_filename_size);
}

int qed_header_write(struct img *img)
{
    struct qed_state *s = img->priv;
    uint8_t buf[QED_HEADER_BYTES];
    qed_header_store(&s->hdr, buf);
    int ret = io_pwrite(img->file, buf, sizeof(buf), 0);
    if (ret < 0)
        return img_error(ret, "qed: '%s': cannot write the header: %s", img->filename,
                         img_strerror(ret));
    return 0;
}
