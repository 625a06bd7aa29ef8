/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Changing refcounts: entries are changed in the cached slice and written through at once
 * (only the changed bytes). A missing refcount block is allocated where the first free cluster
 * is, describing itself when that cluster lies in its own range. A full refcount table is
 * replaced by a larger one placed past the end of the image together with the blocks that
 * describe it, then switched to in the header.
 *
 * New blocks are linked into the table in memory; the table entries reach the disk in the next
 * write-back, after an fsync has made the block contents durable (qcow2_flush_caches), and
 * before any L2 entry that points into their range.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_writer.h"
#include "image.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* A pinned, writable view of the refcount block slice holding one cluster's entry. */
struct rc_slice {
    struct qcow2_cache_entry *entry;
    uint8_t *data;
    uint64_t host;       /* host offset of the slice */
    uint64_t first;      /* cluster index of its first entry */
    uint64_t nb_entries; /* entries in the slice */
};

static int block_offset_of(struct qcow2_state *s, uint64_t table_index, uint64_t *block)
{
    *block = 0;
    if (!s->refcount_table_loaded)
        return img_error(-EIO, "qcow2: the refcount table is not loaded");
    if (table_index >= s->refcount_table_entries)
        return 0;
    uint64_t off = s->refcount_table[table_index] & QCOW2_REFT_OFFSET_MASK;
    if (off & (s->cluster_size - 1))
        return img_error(-EIO,
                         "qcow2: refcount block offset 0x%" PRIx64 " is not cluster-aligned "
                         "(refcount table index %" PRIu64 ")",
                         off, table_index);
    *block = off;
    return 0;
}

/* Pins the slice holding cluster `index`'s entry; *found is false when it has no block. */
static int rc_slice_get(struct qcow2_state *s, uint64_t index, struct rc_slice *sl, bool *found)
{
    uint64_t block;
    int ret = block_offset_of(s, index >> s->refcount_block_bits, &block);
    *found = false;
    if (ret < 0 || block == 0)
        return ret;
    uint32_t slice_bytes = qcow2_cache_slice_bytes(s->refcount_cache);
    uint64_t per_slice = ((uint64_t)slice_bytes << 3) >> s->refcount_order;
    uint64_t in_block = index & ((1ull << s->refcount_block_bits) - 1);
    uint64_t slice_index = in_block / per_slice;
    const uint8_t *data;
    ret = qcow2_cache_get(s->refcount_cache, block + slice_index * slice_bytes, &sl->entry, &data);
    if (ret < 0)
        return ret;
    /* The cache owns the bytes; writers change them in place under s->lock. */
    sl->data = (uint8_t *)data;
    sl->host = block + slice_index * slice_bytes;
    sl->first = index - (in_block - slice_index * per_slice);
    sl->nb_entries = per_slice;
    *found = true;
    return 0;
}

int qcow2_refcount_get_locked(struct qcow2_state *s, uint64_t cluster_index, uint64_t *value)
{
    struct rc_slice sl;
    bool found;
    *value = 0;
    int ret = rc_slice_get(s, cluster_index, &sl, &found);
    if (ret < 0 || !found)
        return ret;
    *value = qcow2_refcount_entry_get(sl.data, cluster_index - sl.first, s->refcount_order);
    qcow2_cache_put(s->refcount_cache, sl.entry);
    return 0;
}

/* Writes entries [lo, hi) of a slice (whole bytes around them). */
static int rc_slice_write(struct qcow2_state *s, const struct rc_slice *sl, uint64_t lo,
                          uint64_t hi)
{
    uint64_t byte_lo = (lo << s->refcount_order) >> 3;
    uint64_t byte_hi = ((hi << s->refcount_order) + 7) >> 3;
    int ret = io_pwrite(s->file, sl->data + byte_lo, byte_hi - byte_lo, sl->host + byte_lo);
    if (ret < 0)
        return img_error(ret, "qcow2: cannot write a refcount block: %s", img_strerror(ret));
    s->writer->unsynced = true;
    return 0;
}

/* A damaged image may name as a refcount block space past the file or other metadata. */
static int block_writable(struct qcow2_state *s, uint64_t offset, uint64_t length)
{
    int ret = qcow2_overlap_check_within_file(s, "refcount block", offset, length);
    if (ret == 0)
        ret = qcow2_overlap_check_rewrite(s, QCOW2_META_REFCOUNT_BLOCK, offset, length);
    return ret;
}

static void note_free(struct qcow2_state *s, uint64_t index)
{
    struct qcow2_writer *w = s->writer;
    if (index < w->free_cluster_index)
        w->free_cluster_index = index;
    /* Compressed clusters must not be packed into a cluster that may be reused. */
    if (w->free_byte_offset && w->free_byte_offset >> s->cluster_bits == index)
        w->free_byte_offset = 0;
}

/* Writes a fresh refcount block at host cluster `at` with entries `ones` set to 1. */
static int write_new_block(struct qcow2_state *s, uint64_t at, uint64_t block_first,
                           uint64_t ones_first, uint64_t ones_end)
{
    uint8_t *buf = calloc(1, s->cluster_size);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    uint64_t block_end = block_first + (1ull << s->refcount_block_bits);
    for (uint64_t i = max_u64(ones_first, block_first); i < min_u64(ones_end, block_end); i++)
        qcow2_refcount_entry_set(buf, i - block_first, s->refcount_order, 1);
    uint64_t host = at << s->cluster_bits;
    int ret = io_pwrite(s->file, buf, s->cluster_size, host);
    free(buf);
    if (ret < 0)
        return img_error(ret, "qcow2: cannot write a refcount block: %s", img_strerror(ret));
    qcow2_cache_invalidate(s->refcount_cache, host, s->cluster_size);
    qcow2_cache_invalidate(s->l2_cache, host, s->cluster_size);
    s->writer->unsynced = true;
    return 0;
}

static void mark_reftable_dirty(struct qcow2_writer *w, uint64_t index)
{
    if (!w->reftable_dirty) {
        w->reftable_dirty = true;
        w->reftable_dirty_lo = index;
        w->reftable_dirty_hi = index + 1;
        return;
    }
    w->reftable_dirty_lo = min_u64(w->reftable_dirty_lo, index);
    w->reftable_dirty_hi = max_u64(w->reftable_dirty_hi, index + 1);
}

/* The first cluster at or after `from` whose refcount is zero. */
static int first_free_cluster(struct qcow2_state *s, uint64_t from, uint64_t *out)
{
    for (uint64_t i = from;;) {
        uint64_t block;
        int ret = block_offset_of(s, i >> s->refcount_block_bits, &block);
        if (ret < 0)
            return ret;
        if (block == 0) {
            *out = i;
            return 0;
        }
        uint64_t v;
        ret = qcow2_refcount_get_locked(s, i, &v);
        if (ret < 0)
            return ret;
        if (v == 0) {
            *out = i;
            return 0;
        }
        i++;
    }
}

/* Sets to 1 the entries of clusters [lo, hi) in the existing block at `block` covering `first`. */
static int block_set_ones(struct qcow2_state *s, uint64_t block, uint64_t first, uint64_t lo,
                          uint64_t hi)
{
    uint32_t slice_bytes = qcow2_cache_slice_bytes(s->refcount_cache);
    uint64_t per_slice = ((uint64_t)slice_bytes << 3) >> s->refcount_order;
    int writable = block_writable(s, block, s->cluster_size);
    if (writable < 0)
        return writable;
    for (uint64_t i = lo; i < hi;) {
        uint64_t slice_index = (i - first) / per_slice;
        struct rc_slice sl;
        const uint8_t *data;
        int ret =
            qcow2_cache_get(s->refcount_cache, block + slice_index * slice_bytes, &sl.entry, &data);
        if (ret < 0)
            return ret;
        sl.data = (uint8_t *)data;
        sl.host = block + slice_index * slice_bytes;
        sl.first = first + slice_index * per_slice;
        sl.nb_entries = per_slice;
        uint64_t stop = min_u64(hi, sl.first + per_slice);
        for (uint64_t k = i; k < stop; k++)
            qcow2_refcount_entry_set(sl.data, k - sl.first, s->refcount_order, 1);
        ret = rc_slice_write(s, &sl, i - sl.first, stop - sl.first);
        qcow2_cache_put(s->refcount_cache, sl.entry);
        if (ret < 0)
            return ret;
        i = stop;
    }
    return 0;
}

/*
 * Refcount blocks and table clusters needed to count `clusters` clusters plus themselves
 * (QEMU's fixed point; `generous` adds room for half the table again, for later growth).
 */
static uint64_t metadata_blocks(struct qcow2_state *s, uint64_t clusters, bool generous)
{
    uint64_t per_table_cluster = s->cluster_size / sizeof(uint64_t);
    uint64_t per_block = 1ull << s->refcount_block_bits;
    uint64_t table = 0, blocks = 0, n = 0, last;
    do {
        last = n;
        blocks = (clusters + table + blocks + per_block - 1) / per_block;
        table = (blocks + per_table_cluster - 1) / per_table_cluster;
        n = clusters + blocks + table;
        if (n == last && generous) {
            clusters += (table + 1) / 2;
            n = 0;
            generous = false;
        }
    } while (n != last);
    return blocks;
}

int qcow2_refcount_area(struct qcow2_state *s, uint64_t start, uint64_t additional, bool exact,
                        uint64_t new_index, uint64_t new_block, uint64_t *area_end)
{
    struct qcow2_writer *w = s->writer;
    uint64_t per_table_cluster = s->cluster_size / sizeof(uint64_t);
    uint64_t per_block = 1ull << s->refcount_block_bits;
    uint64_t total_blocks = metadata_blocks(s, start + additional, !exact);
    /* Half again as many entries as needed, so that the table rarely grows (as QEMU). */
    uint64_t want = exact ? total_blocks : total_blocks + (total_blocks + 1) / 2;
    uint64_t entries = align_up_u64(max_u64(want, s->refcount_table_entries), per_table_cluster);
    uint64_t table_clusters = entries / per_table_cluster;
    if (table_clusters > (QCOW2_MAX_REFTABLE_BYTES >> s->cluster_bits))
        return img_error(-EFBIG,
                         "qcow2: the refcount table would exceed the 8 MiB limit (the image is "
                         "too large for cluster size %" PRIu32 ")",
                         s->cluster_size);
    /* Room to keep the old table for lock-free readers, before anything changes. */
    int ret = qcow2_retire_reserve(w);
    if (ret < 0)
        return ret;
    uint64_t *table = calloc(entries, sizeof(uint64_t));
    uint8_t *disk = malloc(table_clusters << s->cluster_bits);
    if (!table || !disk) {
        free(table);
        free(disk);
        return img_error(-ENOMEM, "out of memory");
    }
    memcpy(table, s->refcount_table, s->refcount_table_entries * sizeof(uint64_t));
    if (new_block)
        table[new_index] = new_block << s->cluster_bits;

    uint64_t area_index = start / per_block;
    uint64_t new_blocks = 0;
    for (uint64_t i = area_index; i < total_blocks; i++)
        new_blocks += !(table[i] & QCOW2_REFT_OFFSET_MASK);
    uint64_t table_at = start + new_blocks;
    uint64_t end = table_at + table_clusters;

    /* The blocks count the new structures: [start, end). */
    uint64_t next = start;
    /* The area should lie past everything in use; on a damaged image it may not. */
    ret = qcow2_overlap_check(s, start << s->cluster_bits, (end - start) << s->cluster_bits);
    for (uint64_t i = area_index; ret == 0 && i < total_blocks; i++) {
        uint64_t first = i * per_block;
        uint64_t lo = max_u64(start, first), hi = min_u64(end, first + per_block);
        if (table[i] & QCOW2_REFT_OFFSET_MASK) {
            if (lo < hi)
                ret = block_set_ones(s, table[i] & QCOW2_REFT_OFFSET_MASK, first, lo, hi);
            continue;
        }
        ret = write_new_block(s, next, first, lo, hi);
        table[i] = next << s->cluster_bits;
        next++;
    }
    for (uint64_t i = 0; i < entries; i++)
        store_be64(disk + i * 8, table[i]);
    if (ret == 0) {
        ret = io_pwrite(s->file, disk, table_clusters << s->cluster_bits,
                        table_at << s->cluster_bits);
        if (ret < 0)
            img_error(ret, "qcow2: cannot write the new refcount table: %s", img_strerror(ret));
    }
    free(disk);
    if (ret == 0)
        ret = io_fsync(s->file);
    if (ret == 0) {
        /* The switch: offset and cluster count are adjacent header fields, one write. */
        uint8_t field[12];
        store_be64(field, table_at << s->cluster_bits);
        store_be32(field + 8, (uint32_t)table_clusters);
        ret = io_pwrite(s->file, field, sizeof(field), 48);
        if (ret == 0)
            ret = io_fsync(s->file);
        if (ret < 0)
            img_error(ret, "qcow2: cannot switch to the new refcount table: %s", img_strerror(ret));
    }
    if (ret < 0) {
        free(table);
        return ret;
    }

    uint64_t old_offset = s->hdr.refcount_table_offset;
    uint64_t old_clusters = s->hdr.refcount_table_clusters;
    /* The swap cannot fail: the old table is kept until close. */
    uint64_t *old_table = s->refcount_table;
    __atomic_store_n(&s->refcount_table, table, __ATOMIC_RELEASE);
    qcow2_retire_commit(w, old_table);
    s->refcount_table_entries = entries;
    s->hdr.refcount_table_offset = table_at << s->cluster_bits;
    s->hdr.refcount_table_clusters = (uint32_t)table_clusters;
    w->reftable_dirty = false; /* the new table holds every entry */
    qcow2_overlap_invalidate(s);
    w->end_cluster = max_u64(w->end_cluster, end);
    w->unsynced = false;
    if (area_end)
        *area_end = end;
    /* The header no longer names the old table. */
    if (old_clusters)
        return qcow2_refcount_update(s, old_offset, old_clusters << s->cluster_bits, -1);
    return 0;
}

int qcow2_refcount_block_ensure(struct qcow2_state *s, uint64_t index, bool *allocated)
{
    struct qcow2_writer *w = s->writer;
    *allocated = false;
    uint64_t block;
    int ret = block_offset_of(s, index, &block);
    if (ret < 0 || block)
        return ret;

    uint64_t c;
    ret = first_free_cluster(s, w->free_cluster_index, &c);
    if (ret < 0)
        return ret;
    uint64_t owner = c >> s->refcount_block_bits;
    uint64_t owner_block = 0;
    if (owner != index) {
        ret = block_offset_of(s, owner, &owner_block);
        if (ret < 0)
            return ret;
    }
    bool fits = index < s->refcount_table_entries;
    *allocated = true;
    if (!fits && owner != index && !owner_block) {
        /* Nowhere simple to count a block: the new area holds them all. */
        uint64_t start = (index + 1) << s->refcount_block_bits;
        return qcow2_refcount_area(s, start, 0, false, 0, 0, NULL);
    }

    uint64_t first = index << s->refcount_block_bits;
    ret = qcow2_overlap_check(s, c << s->cluster_bits, s->cluster_size);
    if (ret < 0)
        return ret;
    /* A block in its own range counts itself; elsewhere its owner's block counts it. */
    ret = write_new_block(s, c, first, owner == index ? c : 0, owner == index ? c + 1 : 0);
    if (ret < 0)
        return ret;
    if (c + 1 > w->end_cluster)
        w->end_cluster = c + 1;
    if (owner != index) {
        /* The owner's block, if it must be made, goes after this one (as in QEMU). */
        uint64_t saved = w->free_cluster_index;
        w->free_cluster_index = c + 1;
        ret = qcow2_refcount_update(s, c << s->cluster_bits, s->cluster_size, 1);
        w->free_cluster_index = saved;
        if (ret < 0)
            return ret;
    }
    if (!fits) {
        /* The table is full: a larger one, with the blocks it needs, goes past this range. */
        uint64_t used = max_u64(index + 1, owner + 1);
        return qcow2_refcount_area(s, used << s->refcount_block_bits, 0, false, index, c, NULL);
    }
    s->refcount_table[index] = c << s->cluster_bits;
    mark_reftable_dirty(w, index);
    qcow2_overlap_link(s, true, c << s->cluster_bits);
    return 0;
}

int qcow2_refcount_update(struct qcow2_state *s, uint64_t host_offset, uint64_t length,
                          int64_t delta)
{
    if (length == 0 || delta == 0)
        return 0;
    uint64_t end;
    if (add_overflows_u64(host_offset, length, &end))
        return img_error(-EINVAL, "qcow2: refcount update range overflows");
    uint64_t first = host_offset >> s->cluster_bits;
    uint64_t last = (end - 1) >> s->cluster_bits;

    if (delta > 0) {
        for (uint64_t t = first >> s->refcount_block_bits; t <= last >> s->refcount_block_bits;
             t++) {
            bool allocated;
            int ret = qcow2_refcount_block_ensure(s, t, &allocated);
            if (ret < 0)
                return ret;
        }
    }

    /* Check every entry first, so a refused update changes nothing. */
    uint64_t magnitude = delta > 0 ? (uint64_t)delta : (uint64_t)(-(delta + 1)) + 1;
    for (uint64_t i = first; i <= last;) {
        struct rc_slice sl;
        bool found;
        int ret = rc_slice_get(s, i, &sl, &found);
        if (ret < 0)
            return ret;
        if (found) {
            ret = block_writable(s, sl.host, qcow2_cache_slice_bytes(s->refcount_cache));
            if (ret < 0) {
                qcow2_cache_put(s->refcount_cache, sl.entry);
                return ret;
            }
        } else {
            if (delta < 0)
                return img_error(-EIO,
                                 "qcow2: refcount of cluster 0x%" PRIx64 " would drop below "
                                 "zero (it has no refcount block)",
                                 i << s->cluster_bits);
            return img_error(-EIO, "qcow2: refcount block for cluster 0x%" PRIx64 " is missing",
                             i << s->cluster_bits);
        }
        uint64_t stop = min_u64(last + 1, sl.first + sl.nb_entries);
        for (; i < stop; i++) {
            uint64_t v = qcow2_refcount_entry_get(sl.data, i - sl.first, s->refcount_order);
            bool bad = delta > 0 ? s->refcount_max - v < magnitude : v < magnitude;
            if (bad) {
                qcow2_cache_put(s->refcount_cache, sl.entry);
                return img_error(
                    -EIO, "qcow2: refcount of cluster 0x%" PRIx64 " (%" PRIu64 ") would %s",
                    i << s->cluster_bits, v, delta > 0 ? "overflow" : "drop below zero");
            }
        }
        qcow2_cache_put(s->refcount_cache, sl.entry);
    }

    for (uint64_t i = first; i <= last;) {
        struct rc_slice sl;
        bool found;
        int ret = rc_slice_get(s, i, &sl, &found);
        if (ret < 0)
            return ret;
        uint64_t lo = i - sl.first;
        uint64_t stop = min_u64(last + 1, sl.first + sl.nb_entries);
        for (; i < stop; i++) {
            uint64_t v = qcow2_refcount_entry_get(sl.data, i - sl.first, s->refcount_order);
            v = delta > 0 ? v + magnitude : v - magnitude;
            qcow2_refcount_entry_set(sl.data, i - sl.first, s->refcount_order, v);
            if (v == 0)
                note_free(s, i);
        }
        ret = rc_slice_write(s, &sl, lo, stop - sl.first);
        qcow2_cache_put(s->refcount_cache, sl.entry);
        if (ret < 0)
            return ret;
    }
    return 0;
}

int qcow2_refcount_set(struct qcow2_state *s, uint64_t cluster_index, uint64_t value)
{
    if (value > s->refcount_max)
        return img_error(-EINVAL, "qcow2: refcount %" PRIu64 " exceeds the largest (%" PRIu64 ")",
                         value, s->refcount_max);
    if (value) {
        bool allocated;
        int ret =
            qcow2_refcount_block_ensure(s, cluster_index >> s->refcount_block_bits, &allocated);
        if (ret < 0)
            return ret;
    }
    struct rc_slice sl;
    bool found;
    int ret = rc_slice_get(s, cluster_index, &sl, &found);
    if (ret < 0 || !found)
        return ret;
    ret = block_writable(s, sl.host, qcow2_cache_slice_bytes(s->refcount_cache));
    if (ret < 0) {
        qcow2_cache_put(s->refcount_cache, sl.entry);
        return ret;
    }
    uint64_t i = cluster_index - sl.first;
    qcow2_refcount_entry_set(sl.data, i, s->refcount_order, value);
    ret = rc_slice_write(s, &sl, i, i + 1);
    qcow2_cache_put(s->refcount_cache, sl.entry);
    if (value == 0)
        note_free(s, cluster_index);
    return ret;
}
