/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * map(): the longest run from a guest offset that is one kind of extent.
 *
 * The walk goes unit by unit: a whole L2 span when the L1 entry is empty, a run of subclusters
 * of one type with extended L2 entries, otherwise a cluster. Units join the run while they are
 * of the same kind and, where they have host space, continue it contiguously, so a run of DATA
 * can be read with one request. A compressed cluster is always a run of its own.
 *
 * Without IMG_OPEN_ALLOW_DATA_FILE an image with an external data file is open for its metadata
 * only: the data file is not opened, and a run that would have to be read from it fails.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "io/io.h"
#include "util/checked.h"

/* Values of qcow2_state.metadata_preallocation. */
enum { PREALLOC_UNKNOWN = 0, PREALLOC_NO, PREALLOC_YES };

/*
 * The metadata-preallocation test counts refcounts of at most this many host clusters (256 TiB
 * with 64 KiB clusters), so a crafted file with a huge hole cannot make it run for long.
 */
#define PREALLOC_MAX_SCAN_CLUSTERS (1ull << 32)

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
    /* NULL when the data file was not opened: only the location is known then. */
    u->file = has_data_file(s) ? s->data_file : s->file;
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
        if (data_file && !s->data_file)
            return img_error(-EPERM,
                             "qcow2: image uses the external data file '%s'; reading it needs "
                             "IMG_OPEN_ALLOW_DATA_FILE",
                             s->ext.data_file);
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

/*
 * Counts the host clusters below `end_cluster` whose refcount is not zero, stopping once the
 * count reaches `limit`. Walks the refcount blocks slice by slice; absent blocks count nothing.
 * Called with s->lock held (the refcount table is loaded).
 */
static int count_referenced_clusters(struct qcow2_state *s, uint64_t end_cluster, uint64_t limit,
                                     uint64_t *count)
{
    uint64_t block_entries = 1ull << s->refcount_block_bits;
    uint32_t slice_bytes = qcow2_cache_slice_bytes(s->refcount_cache);
    uint64_t slice_entries = ((uint64_t)slice_bytes << 3) >> s->refcount_order;
    *count = 0;
    for (uint64_t t = 0; t < s->refcount_table_entries && *count < limit; t++) {
        /* The table is at most 8 MiB and a block at most 2^24 entries: no overflow. */
        uint64_t first = t << s->refcount_block_bits;
        if (first >= end_cluster)
            break;
        uint64_t block = s->refcount_table[t] & QCOW2_REFT_OFFSET_MASK;
        if (block == 0)
            continue;
        if (block & (s->cluster_size - 1))
            return img_error(-EIO,
                             "qcow2: refcount block offset 0x%" PRIx64 " is not cluster-aligned "
                             "(refcount table index %" PRIu64 ")",
                             block, t);
        uint64_t entries = min_u64(block_entries, end_cluster - first);
        for (uint64_t i = 0; i < entries && *count < limit; i += slice_entries) {
            struct qcow2_cache_entry *slice;
            const uint8_t *data;
            uint64_t slice_offset = (i << s->refcount_order) >> 3;
            int ret = qcow2_cache_get(s->refcount_cache, block + slice_offset, &slice, &data);
            if (ret < 0)
                return ret;
            uint64_t n = min_u64(slice_entries, entries - i);
            /* Whole slices of zeros are common (and all a crafted file needs): skip them. */
            if (!buffer_is_zero(data, slice_bytes)) {
                for (uint64_t j = 0; j < n && *count < limit; j++)
                    *count += qcow2_refcount_entry_get(data, j, s->refcount_order) != 0;
            }
            qcow2_cache_put(s->refcount_cache, slice);
        }
    }
    return 0;
}

/*
 * QEMU judges an image metadata-preallocated when its refcounts claim clearly more clusters
 * (10/9 as many, and at least two more) than the image file has allocated on the host. Only
 * then does its block status ask the host file where DATA clusters lie, reporting holes and
 * the space past the end of the file as zeros. Failures count as "no": the answer only
 * refines block status.
 */
static bool detect_metadata_preallocation(struct qcow2_state *s)
{
    int64_t file_length = io_file_size(s->file);
    int64_t allocated = io_file_allocated(s->file);
    if (file_length < 0 || allocated < 0 || !s->refcount_table_loaded)
        return false;
    uint64_t real_clusters = (uint64_t)allocated >> s->cluster_bits;
    uint64_t threshold = real_clusters * 10 / 9;
    if (threshold < real_clusters + 2)
        threshold = real_clusters + 2;
    uint64_t end_cluster =
        ((uint64_t)file_length >> s->cluster_bits) + ((file_length & (s->cluster_size - 1)) != 0);
    end_cluster = min_u64(end_cluster, PREALLOC_MAX_SCAN_CLUSTERS);
    uint64_t count;
    if (count_referenced_clusters(s, end_cluster, threshold, &count) < 0)
        return false;
    return count >= threshold;
}

/* Worked out once per open, on the first DATA run, under s->lock (writers change refcounts). */
static bool metadata_preallocated(struct qcow2_state *s)
{
    int state = __atomic_load_n(&s->metadata_preallocation, __ATOMIC_ACQUIRE);
    if (state == PREALLOC_UNKNOWN) {
        /* Takes s->lock itself; a failure leaves the table unloaded, and the answer "no". */
        (void)qcow2_refcount_load_table(s);
        pthread_mutex_lock(&s->lock);
        state = __atomic_load_n(&s->metadata_preallocation, __ATOMIC_RELAXED);
        if (state == PREALLOC_UNKNOWN) {
            state = detect_metadata_preallocation(s) ? PREALLOC_YES : PREALLOC_NO;
            __atomic_store_n(&s->metadata_preallocation, state, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&s->lock);
    }
    return state == PREALLOC_YES;
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
    if (ext->kind == EXTENT_DATA)
        ext->refine_with_host = metadata_preallocated(s);
    return 0;
}
