/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Walking the tree under an L1 table for snapshots, inside a transaction: counting its
 * clusters up or down, and giving it L2 tables whose COPIED flags match the refcounts the
 * transaction will leave (copies, where a flag changes). L2 tables are read straight from the
 * file (the caller flushed the held metadata) and never rewritten in place.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_offset_map.h"
#include "formats/qcow2/qcow2_snapshot_write.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"
#include "progress.h"

/* A run of host clusters that are next to each other: one refcount update for all of them. */
struct run {
    uint64_t start, length;
};

static int run_flush(struct qcow2_snapshot_txn *t, struct run *r, int delta)
{
    int ret = 0;
    if (r->length)
        ret = qcow2_snapshot_txn_add(t, r->start, r->length, delta);
    r->length = 0;
    return ret;
}

static int run_add(struct qcow2_snapshot_txn *t, uint32_t cluster_size, struct run *r,
                   uint64_t offset, int delta)
{
    if (r->length && r->start + r->length == offset) {
        r->length += cluster_size;
        return 0;
    }
    int ret = run_flush(t, r, delta);
    r->start = offset;
    r->length = cluster_size;
    return ret;
}

static int file_size(struct qcow2_state *s, uint64_t *size)
{
    int64_t n = io_file_size(s->file);
    if (n < 0)
        return img_error((int)n, "qcow2: cannot read the image size");
    *size = (uint64_t)n;
    return 0;
}

/*
 * An L2 table the walk may read and count: aligned, inside the file, and named once by this L1
 * table (QEMU never shares a table within one L1 table; a crafted image that does would make
 * the walk count the same table over and over).
 */
static int check_l2_offset(const struct qcow2_state *s, struct qcow2_offset_map *seen,
                           uint64_t l2_offset, uint32_t l1_index, uint64_t fsize)
{
    if (l2_offset & (s->cluster_size - 1))
        return img_error(-EIO,
                         "qcow2: L2 table offset 0x%" PRIx64 " is not cluster-aligned (L1 index "
                         "%" PRIu32 ")",
                         l2_offset, l1_index);
    if (l2_offset >= fsize)
        return img_error(-EIO,
                         "qcow2: L2 table offset 0x%" PRIx64 " is beyond the end of the file "
                         "(L1 index %" PRIu32 ")",
                         l2_offset, l1_index);
    size_t number;
    bool added;
    int ret = qcow2_offset_map_add(seen, l2_offset, &number, &added);
    if (ret < 0)
        return img_error(ret, "out of memory");
    if (!added)
        return img_error(-EIO,
                         "qcow2: L2 table 0x%" PRIx64 " is named twice by one L1 table (L1 "
                         "index %" PRIu32 ")",
                         l2_offset, l1_index);
    return 0;
}

/* Counts what one L2 table references, then the table itself. */
static int count_l2_table(struct qcow2_snapshot_txn *t, const uint8_t *table, uint64_t l2_offset,
                          uint64_t fsize, int delta)
{
    struct qcow2_state *s = qcow2_snapshot_txn_state(t);
    struct run r = {0};
    int ret = 0;
    for (uint32_t j = 0; j < s->l2_entries && ret == 0; j++) {
        uint64_t entry = load_be64(table + (size_t)j * s->l2_entry_bytes);
        if (entry & QCOW2_OFLAG_COMPRESSED) {
            uint64_t offset, length;
            qcow2_compressed_decode(s, entry, &offset, &length);
            if (offset >= fsize)
                return img_error(-EIO,
                                 "qcow2: compressed cluster at 0x%" PRIx64 " (L2 table 0x%" PRIx64
                                 ", entry %" PRIu32 ") is beyond the end of the file",
                                 offset, l2_offset, j);
            /* Neighbours may share host clusters: each stream counts on its own. */
            ret = run_flush(t, &r, delta);
            if (ret == 0)
                ret = qcow2_snapshot_txn_add(t, offset, length, delta);
            continue;
        }
        /* Any host offset holds a reference (data, or preallocated zeros). */
        uint64_t offset = qcow2_l2_entry_offset(entry);
        if (!offset)
            continue;
        if ((offset & (s->cluster_size - 1)) || offset >= fsize)
            return img_error(-EIO,
                             "qcow2: cluster offset 0x%" PRIx64 " (L2 table 0x%" PRIx64
                             ", entry %" PRIu32 ") is %s",
                             offset, l2_offset, j,
                             offset >= fsize ? "beyond the end of the file"
                                             : "not cluster-aligned");
        ret = run_add(t, s->cluster_size, &r, offset, delta);
    }
    if (ret == 0)
        ret = run_flush(t, &r, delta);
    if (ret == 0)
        ret = qcow2_snapshot_txn_add(t, l2_offset, s->cluster_size, delta);
    return ret;
}

int qcow2_snapshot_tree_count(struct qcow2_snapshot_txn *t, const uint64_t *l1, uint32_t l1_size,
                              int delta)
{
    struct qcow2_state *s = qcow2_snapshot_txn_state(t);
    uint64_t fsize = 0;
    int ret = file_size(s, &fsize);
    if (ret < 0)
        return ret;
    uint8_t *table = malloc(s->cluster_size);
    if (!table)
        return img_error(-ENOMEM, "out of memory");
    struct qcow2_offset_map seen;
    qcow2_offset_map_init(&seen, l1_size);
    /* Counting happens in the transaction: a cancellation leaves the image as it was. */
    uint64_t coverage = (uint64_t)s->l2_entries << s->cluster_bits;
    for (uint32_t i = 0; i < l1_size && ret == 0; i++) {
        uint64_t l2_offset = l1[i] & QCOW2_L1E_OFFSET_MASK;
        if (!l2_offset)
            continue;
        ret = img_progress(i * coverage, l1_size * coverage);
        if (ret == 0)
            ret = check_l2_offset(s, &seen, l2_offset, i, fsize);
        if (ret == 0)
            ret = io_pread(s->file, table, s->cluster_size, l2_offset);
        if (ret == 0)
            ret = count_l2_table(t, table, l2_offset, fsize, delta);
    }
    qcow2_offset_map_free(&seen);
    free(table);
    return ret;
}

/* COPIED exactly where the refcount will be one; never on compressed or unallocated entries. */
static int fix_l2_copied(struct qcow2_snapshot_txn *t, uint8_t *table, bool *changed)
{
    struct qcow2_state *s = qcow2_snapshot_txn_state(t);
    for (uint32_t j = 0; j < s->l2_entries; j++) {
        uint8_t *p = table + (size_t)j * s->l2_entry_bytes;
        uint64_t entry = load_be64(p);
        uint64_t want = entry & ~QCOW2_OFLAG_COPIED;
        uint64_t offset = qcow2_l2_entry_offset(entry);
        if (!(entry & QCOW2_OFLAG_COMPRESSED) && offset) {
            uint64_t refcount;
            int ret = qcow2_snapshot_txn_get(t, offset >> s->cluster_bits, &refcount);
            if (ret < 0)
                return ret;
            if (refcount == 1)
                want |= QCOW2_OFLAG_COPIED;
        }
        if (want != entry) {
            store_be64(p, want);
            *changed = true;
        }
    }
    return 0;
}

int qcow2_snapshot_tree_cow(struct qcow2_snapshot_txn *t, uint64_t *l1, uint32_t l1_size)
{
    struct qcow2_state *s = qcow2_snapshot_txn_state(t);
    uint64_t fsize = 0;
    int ret = file_size(s, &fsize);
    if (ret < 0)
        return ret;
    uint8_t *table = malloc(s->cluster_size);
    if (!table)
        return img_error(-ENOMEM, "out of memory");
    struct qcow2_offset_map seen;
    qcow2_offset_map_init(&seen, l1_size);
    for (uint32_t i = 0; i < l1_size && ret == 0; i++) {
        uint64_t l2_offset = l1[i] & QCOW2_L1E_OFFSET_MASK;
        if (!l2_offset) {
            l1[i] = 0;
            continue;
        }
        ret = check_l2_offset(s, &seen, l2_offset, i, fsize);
        if (ret == 0)
            ret = io_pread(s->file, table, s->cluster_size, l2_offset);
        bool changed = false;
        if (ret == 0)
            ret = fix_l2_copied(t, table, &changed);
        if (ret == 0 && changed) {
            /* The copy is this tree's alone; the old table keeps its other users. */
            uint64_t copy;
            ret = qcow2_snapshot_txn_alloc_write(t, table, s->cluster_size, &copy);
            if (ret == 0)
                ret = qcow2_snapshot_txn_add(t, l2_offset, s->cluster_size, -1);
            l2_offset = copy;
        }
        uint64_t refcount = 0;
        if (ret == 0)
            ret = qcow2_snapshot_txn_get(t, l2_offset >> s->cluster_bits, &refcount);
        if (ret == 0)
            l1[i] = l2_offset | (refcount == 1 ? QCOW2_OFLAG_COPIED : 0);
    }
    qcow2_offset_map_free(&seen);
    free(table);
    return ret;
}

int qcow2_snapshot_write_l1(struct qcow2_snapshot_txn *t, const uint64_t *l1, uint32_t l1_size,
                            bool keep_copied, uint64_t *offset)
{
    *offset = 0;
    if (l1_size == 0)
        return 0;
    size_t bytes = (size_t)l1_size * sizeof(uint64_t);
    uint8_t *buf = malloc(bytes);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    qcow2_l1_encode(l1, 0, l1_size, keep_copied ? 0 : QCOW2_OFLAG_COPIED, buf);
    int ret = qcow2_snapshot_txn_alloc_write(t, buf, bytes, offset);
    free(buf);
    return ret;
}
