/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * map(): the longest run from a guest offset that is one kind of extent.
 *
 * The walk goes unit by unit: a whole L2 span when the L1 entry is empty, a run of subclusters
 * of one type with extended L2 entries, otherwise a cluster. Units join the run while they are
 * of the same kind and, where they have host space, continue it contiguously, so a run of DATA
 * can be read with one request. A compressed cluster is always a run of its own.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "util/checked.h"

struct unit {
    enum extent_kind kind;
    uint64_t end; /* guest offset just past the unit */
    bool host_valid;
    uint64_t host; /* host offset of the byte at the position asked for */
    struct io_file *file;
    uint64_t comp_offset, comp_length, unit_start;
};

static bool has_data_file(const struct qcow2_state *s)
{
    return (s->hdr.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) != 0;
}

/* A unit that has host space: check where it points and record the host position. */
static int place_on_host(struct qcow2_state *s, uint64_t entry, uint64_t cluster_start,
                         uint64_t pos, struct unit *u)
{
    uint64_t host_cluster = qcow2_l2_entry_offset(entry);
    if (host_cluster & (s->cluster_size - 1))
        return img_error(-EIO,
                         "qcow2: cluster offset 0x%" PRIx64 " for guest offset 0x%" PRIx64
                         " is not cluster-aligned",
                         host_cluster, cluster_start);
    if (has_data_file(s) && host_cluster != cluster_start)
        return img_error(
            -EIO, "qcow2: data file offset 0x%" PRIx64 " does not match guest offset 0x%" PRIx64,
            host_cluster, cluster_start);
    u->host_valid = true;
    u->host = host_cluster + (pos - cluster_start);
    u->file = s->data_file ? s->data_file : s->file;
    return 0;
}

static int classify(struct qcow2_state *s, struct qcow2_l2_cursor *cur, uint64_t pos,
                    struct unit *u)
{
    memset(u, 0, sizeof(*u));
    uint64_t cluster = pos >> s->cluster_bits;
    uint64_t cluster_start = cluster << s->cluster_bits;
    uint64_t entry, bitmap;
    bool no_l2;
    int ret = qcow2_l2_lookup(s, cur, cluster, &entry, &bitmap, &no_l2);
    if (ret < 0)
        return ret;
    if (no_l2) {
        uint32_t span_bits = s->cluster_bits + s->l2_bits;
        uint64_t span_start = (pos >> span_bits) << span_bits;
        u->kind = EXTENT_UNALLOCATED;
        if (add_overflows_u64(span_start, 1ull << span_bits, &u->end))
            u->end = UINT64_MAX;
        return 0;
    }

    unsigned sc = (unsigned)((pos - cluster_start) >> s->subcluster_bits);
    bool data_file = has_data_file(s);
    enum qcow2_subcluster_type type = qcow2_subcluster_type(s, entry, bitmap, sc, data_file);
    unsigned run = qcow2_subcluster_run(s, entry, bitmap, sc, data_file);
    u->end = cluster_start + ((uint64_t)(sc + run) << s->subcluster_bits);

    switch (type) {
    case QCOW2_SC_COMPRESSED:
        if (data_file)
            return img_error(-EIO,
                             "qcow2: compressed cluster at guest offset 0x%" PRIx64
                             " in an image with an external data file",
                             cluster_start);
        u->kind = EXTENT_COMPRESSED;
        u->end = cluster_start + s->cluster_size;
        u->unit_start = cluster_start;
        u->file = s->file;
        qcow2_compressed_decode(s, entry, &u->comp_offset, &u->comp_length);
        return 0;
    case QCOW2_SC_NORMAL:
        u->kind = EXTENT_DATA;
        return place_on_host(s, entry, cluster_start, pos, u);
    case QCOW2_SC_ZERO_ALLOC:
        u->kind = EXTENT_ZERO;
        return place_on_host(s, entry, cluster_start, pos, u);
    case QCOW2_SC_UNALLOCATED_ALLOC:
        u->kind = EXTENT_UNALLOCATED;
        return place_on_host(s, entry, cluster_start, pos, u);
    case QCOW2_SC_ZERO_PLAIN:
        u->kind = EXTENT_ZERO;
        return 0;
    case QCOW2_SC_UNALLOCATED_PLAIN:
        u->kind = EXTENT_UNALLOCATED;
        return 0;
    case QCOW2_SC_INVALID:
        break;
    }
    return img_error(-EIO,
                     "qcow2: invalid L2 entry 0x%016" PRIx64 " (subcluster bitmap 0x%016" PRIx64
                     ") for guest offset 0x%" PRIx64,
                     entry, bitmap, cluster_start);
}

static bool continues(const struct img_extent *ext, uint64_t offset, uint64_t pos,
                      const struct unit *u)
{
    if (u->kind != ext->kind || u->kind == EXTENT_COMPRESSED)
        return false;
    if (u->host_valid != ext->host_offset_valid)
        return false;
    return !u->host_valid || (u->file == ext->file && u->host == ext->host_offset + (pos - offset));
}

int qcow2_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext)
{
    struct qcow2_state *s = img->priv;
    if (offset >= img->size || length == 0)
        return img_error(-EINVAL,
                         "qcow2: map of %" PRIu64 " bytes at %" PRIu64 " is outside the image",
                         length, offset);
    uint64_t end = offset + min_u64(length, img->size - offset);
    struct qcow2_l2_cursor cur = {0};
    uint64_t pos = offset;
    int ret = 0;

    while (pos < end) {
        struct unit u;
        ret = classify(s, &cur, pos, &u);
        if (ret < 0) {
            /* Damage further on ends the run; it is reported when that offset is mapped. */
            if (pos > offset)
                ret = 0;
            break;
        }
        if (pos == offset) {
            memset(ext, 0, sizeof(*ext));
            ext->kind = u.kind;
            ext->file = u.file;
            ext->host_offset_valid = u.host_valid;
            ext->host_offset = u.host;
            if (u.kind == EXTENT_COMPRESSED) {
                ext->host_offset = u.comp_offset;
                ext->comp_length = u.comp_length;
                ext->unit_start = u.unit_start;
                ext->unit_size = s->cluster_size;
                ext->codec = (int)s->codec;
            }
        } else if (!continues(ext, offset, pos, &u)) {
            break;
        }
        pos = min_u64(u.end, end);
        if (u.kind == EXTENT_COMPRESSED)
            break;
    }
    qcow2_l2_cursor_release(s, &cur);
    if (ret < 0)
        return ret;
    ext->length = pos - offset;
    return 0;
}
