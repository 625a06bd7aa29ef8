/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The fixed qcow2 header: decoding, and the checks QEMU applies before trusting any field. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_header_layout.h"
#include "util/checked.h"
#include "util/endian.h"

int qcow2_header_decode(const uint8_t *buf, size_t len, struct qcow2_header *h)
{
    memset(h, 0, sizeof(*h));
    if (len < 8 || load_be32(buf + QCOW2_HDR_MAGIC) != QCOW2_MAGIC)
        return img_error(-EINVAL, "qcow2: not a qcow2 image (bad magic)");
    h->version = load_be32(buf + QCOW2_HDR_VERSION);
    if (h->version < 2 || h->version > 3)
        return img_error(-ENOTSUP, "qcow2: unsupported version %" PRIu32, h->version);
    if (len < QCOW2_V2_HEADER_LENGTH)
        return img_error(-EIO, "qcow2: the file ends inside the header (%zu of %u bytes)", len,
                         QCOW2_V2_HEADER_LENGTH);

    h->backing_file_offset = load_be64(buf + QCOW2_HDR_BACKING_FILE_OFFSET);
    h->backing_file_size = load_be32(buf + QCOW2_HDR_BACKING_FILE_SIZE);
    h->cluster_bits = load_be32(buf + QCOW2_HDR_CLUSTER_BITS);
    h->size = load_be64(buf + QCOW2_HDR_SIZE);
    h->crypt_method = load_be32(buf + QCOW2_HDR_CRYPT_METHOD);
    h->l1_size = load_be32(buf + QCOW2_HDR_L1_SIZE);
    h->l1_table_offset = load_be64(buf + QCOW2_HDR_L1_TABLE_OFFSET);
    h->refcount_table_offset = load_be64(buf + QCOW2_HDR_REFCOUNT_TABLE_OFFSET);
    h->refcount_table_clusters = load_be32(buf + QCOW2_HDR_REFCOUNT_TABLE_CLUSTERS);
    h->nb_snapshots = load_be32(buf + QCOW2_HDR_NB_SNAPSHOTS);
    h->snapshots_offset = load_be64(buf + QCOW2_HDR_SNAPSHOTS_OFFSET);

    if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS)
        return img_error(-EIO, "qcow2: invalid cluster size 2^%" PRIu32 " (at least 2^9)",
                         h->cluster_bits);
    if (h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
        return img_error(-ENOTSUP, "qcow2: unsupported cluster size 2^%" PRIu32 " (at most 2^21)",
                         h->cluster_bits);
    uint32_t cluster_size = 1u << h->cluster_bits;

    if (h->version == 2) {
        h->refcount_order = 4;
        h->header_length = QCOW2_V2_HEADER_LENGTH;
    } else {
        if (len < QCOW2_V3_MIN_HEADER_LENGTH)
            return img_error(-EIO, "qcow2: the file ends inside the header (%zu of %u bytes)", len,
                             QCOW2_V3_MIN_HEADER_LENGTH);
        h->incompatible_features = load_be64(buf + QCOW2_HDR_INCOMPATIBLE_FEATURES);
        h->compatible_features = load_be64(buf + QCOW2_HDR_COMPATIBLE_FEATURES);
        h->autoclear_features = load_be64(buf + QCOW2_HDR_AUTOCLEAR_FEATURES);
        h->refcount_order = load_be32(buf + QCOW2_HDR_REFCOUNT_ORDER);
        h->header_length = load_be32(buf + QCOW2_HDR_HEADER_LENGTH);
        if (h->header_length < QCOW2_V3_MIN_HEADER_LENGTH)
            return img_error(-EIO,
                             "qcow2: header length %" PRIu32 " is too short (at least %u bytes)",
                             h->header_length, QCOW2_V3_MIN_HEADER_LENGTH);
        /* A field is present only when header_length covers it; bytes past `len` are zero. */
        if (h->header_length > QCOW2_COMPRESSION_TYPE_OFFSET && len > QCOW2_COMPRESSION_TYPE_OFFSET)
            h->compression_type = buf[QCOW2_COMPRESSION_TYPE_OFFSET];
    }
    if (h->header_length > cluster_size)
        return img_error(-EIO, "qcow2: header length %" PRIu32 " exceeds the cluster size %" PRIu32,
                         h->header_length, cluster_size);
    if (h->backing_file_offset > cluster_size)
        return img_error(
            -EIO, "qcow2: backing file name offset 0x%" PRIx64 " is outside the first cluster",
            h->backing_file_offset);
    return 0;
}

/* Appends "name (bit N)" or "bit N" for each set bit of `mask` to `out`. */
static void describe_features(const struct qcow2_extensions *ext, uint64_t mask, char *out,
                              size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (unsigned bit = 0; bit < 64 && used < size; bit++) {
        if (!(mask & (1ull << bit)))
            continue;
        const char *name = qcow2_feature_name(ext, 0, bit);
        int n =
            name ? snprintf(out + used, size - used, "%s%s (bit %u)", used ? ", " : "", name, bit)
                 : snprintf(out + used, size - used, "%sbit %u", used ? ", " : "", bit);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

int qcow2_header_check_features(const struct qcow2_header *h, const struct qcow2_extensions *ext,
                                bool writable)
{
    uint64_t unknown = h->incompatible_features & ~QCOW2_INCOMPAT_KNOWN;
    if (unknown) {
        char names[512];
        describe_features(ext, unknown, names, sizeof(names));
        bool several = (unknown & (unknown - 1)) != 0;
        return img_error(-ENOTSUP, "qcow2: unsupported incompatible feature%s: %s",
                         several ? "s" : "", names);
    }
    if (h->crypt_method != 0 || ext->has_crypto_header)
        return img_error(-ENOTSUP, "qcow2: encrypted images are not supported yet");
    if ((h->incompatible_features & QCOW2_INCOMPAT_CORRUPT) && writable)
        return img_error(-EACCES, "qcow2: image is marked corrupt; it cannot be opened "
                                  "read/write (repair it with check -r)");
    if (h->compression_type != QCOW2_COMPRESSION_ZLIB &&
        h->compression_type != QCOW2_COMPRESSION_ZSTD)
        return img_error(-ENOTSUP, "qcow2: unknown compression type %u", h->compression_type);
    bool compression_bit = (h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) != 0;
    if (compression_bit != (h->compression_type != QCOW2_COMPRESSION_ZLIB))
        return img_error(-EIO,
                         "qcow2: compression type feature bit must %sbe set for "
                         "compression type %u",
                         compression_bit ? "not " : "", h->compression_type);
    if (h->refcount_order > 6)
        return img_error(-EIO,
                         "qcow2: refcount width 2^%" PRIu32 " bits is too large "
                         "(at most 64 bits)",
                         h->refcount_order);
    if ((h->incompatible_features & QCOW2_INCOMPAT_EXTL2) && h->cluster_bits < 14)
        return img_error(-EIO,
                         "qcow2: unsupported subcluster size %u (extended L2 entries need "
                         "clusters of at least 16 KiB)",
                         (1u << h->cluster_bits) / QCOW2_SUBCLUSTERS);
    bool data_file = (h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) != 0;
    if (!data_file && (h->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW))
        return img_error(-EIO, "qcow2: the raw data file bit is set but the image has no "
                               "external data file");
    if (data_file && (!ext->data_file || !ext->data_file[0]))
        return img_error(-EIO, "qcow2: the image uses an external data file but does not "
                               "name it");
    return 0;
}

/* A table of `bytes` at `offset` must be cluster-aligned and lie inside the file. */
static int check_table(const char *what, uint64_t offset, uint64_t bytes, uint32_t cluster_size,
                       uint64_t file_size)
{
    uint64_t end;
    if (offset & (cluster_size - 1))
        return img_error(-EIO, "qcow2: %s offset 0x%" PRIx64 " is not cluster-aligned", what,
                         offset);
    if (add_overflows_u64(offset, bytes, &end) || end > file_size)
        return img_error(-EIO, "qcow2: %s offset 0x%" PRIx64 " is beyond the end of the file", what,
                         offset);
    return 0;
}

int qcow2_header_check_tables(const struct qcow2_header *h, uint64_t file_size)
{
    uint32_t cluster_size = 1u << h->cluster_bits;
    int ret;

    if (h->refcount_table_clusters == 0)
        return img_error(-EIO, "qcow2: image has no refcount table");
    if (h->refcount_table_clusters > (QCOW2_MAX_REFTABLE_BYTES >> h->cluster_bits))
        return img_error(-EFBIG,
                         "qcow2: refcount table of %" PRIu32 " clusters exceeds the 8 MiB limit",
                         h->refcount_table_clusters);
    ret = check_table("refcount table", h->refcount_table_offset,
                      (uint64_t)h->refcount_table_clusters << h->cluster_bits, cluster_size,
                      file_size);
    if (ret < 0)
        return ret;

    if (h->nb_snapshots > QCOW2_MAX_SNAPSHOTS)
        return img_error(-EFBIG, "qcow2: image has %" PRIu32 " snapshots (at most %u)",
                         h->nb_snapshots, QCOW2_MAX_SNAPSHOTS);
    if (h->nb_snapshots) {
        ret = check_table("snapshot table", h->snapshots_offset,
                          (uint64_t)h->nb_snapshots * QCOW2_SNAPSHOT_HEADER_BYTES, cluster_size,
                          file_size);
        if (ret < 0)
            return ret;
    }

    if (h->l1_size > QCOW2_MAX_L1_BYTES / sizeof(uint64_t))
        return img_error(-EFBIG,
                         "qcow2: active L1 table of %" PRIu32 " entries exceeds the 32 MiB limit",
                         h->l1_size);
    if (h->l1_size) {
        ret = check_table("L1 table", h->l1_table_offset, (uint64_t)h->l1_size * 8, cluster_size,
                          file_size);
        if (ret < 0)
            return ret;
    }
    uint32_t l2_bits =
        h->cluster_bits - ((h->incompatible_features & QCOW2_INCOMPAT_EXTL2) ? 4 : 3);
    uint64_t needed = qcow2_l1_entries_for_size(h->cluster_bits, l2_bits, h->size);
    if (needed > INT32_MAX)
        return img_error(-EFBIG, "qcow2: virtual size %" PRIu64 " is too big", h->size);
    if (h->l1_size < needed)
        return img_error(-EIO,
                         "qcow2: L1 table of %" PRIu32 " entries is too small for the virtual "
                         "size %" PRIu64 " (needs %" PRIu64 ")",
                         h->l1_size, h->size, needed);

    if (h->backing_file_offset) {
        uint64_t room = cluster_size - h->backing_file_offset;
        if (h->backing_file_size > QCOW2_MAX_BACKING_NAME || h->backing_file_size > room)
            return img_error(-EIO, "qcow2: backing file name is too long (%" PRIu32 " bytes)",
                             h->backing_file_size);
    }
    return 0;
}
