/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Walking the tree under an L1 table for snapshots: counting its clusters up or down, and
 * bringing its COPIED flags in line with the refcounts. L2 tables are read straight from the
 * file (the caller flushed the held metadata) and rewritten there, dropping their cached slices.
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

/*
 * The updates made for one L2 table, so that an increase refused half way (a refcount would
 * overflow) can be taken back: a failed operation then leaves the refcounts as they were.
 */
struct update_log {
    struct run {
        uint64_t start, length;
    } * v;
    size_t n;
};

static int update(struct qcow2_state *s, struct update_log *log, uint64_t start, uint64_t length,
                  int delta)
{
    int ret = qcow2_refcount_update(s, start, length, delta);
    if (ret == 0 && log)
        log->v[log->n++] = (struct run){start, length};
    return ret;
}

static void undo(struct qcow2_state *s, struct update_log *log, int delta)
{
    while (log->n) {
        struct run *r = &log->v[--log->n];
        qcow2_refcount_update(s, r->start, r->length, -delta);
    }
}

/* A run of host clusters that are next to each other: one refcount update for all of them. */
static int run_flush(struct qcow2_state *s, struct update_log *log, struct run *r, int delta)
{
    int ret = 0;
    if (r->length)
        ret = update(s, log, r->start, r->length, delta);
    r->length = 0;
    return ret;
}

static int run_add(struct qcow2_state *s, struct update_log *log, struct run *r, uint64_t offset,
                   int delta)
{
    if (r->length && r->start + r->length == offset) {
        r->length += s->cluster_size;
        return 0;
    }
    int ret = run_flush(s, log, r, delta);
    r->start = offset;
    r->length = s->cluster_size;
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
static int count_l2_table(struct qcow2_state *s, const uint8_t *table, uint64_t l2_offset,
                          uint64_t fsize, int delta, struct update_log *log)
{
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
            ret = run_flush(s, log, &r, delta);
            if (ret == 0)
                ret = update(s, log, offset, length, delta);
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
        ret = run_add(s, log, &r, offset, delta);
    }
    if (ret == 0)
        ret = run_flush(s, log, &r, delta);
    if (ret == 0)
        ret = update(s, log, l2_offset, s->cluster_size, delta);
    return ret;
}

/* Takes back the increases made for the first `count` L1 entries (all succeeded before). */
static void undo_tables(struct qcow2_state *s, const uint64_t *l1, uint32_t count, uint64_t fsize,
                        int delta, uint8_t *table)
{
    for (uint32_t i = 0; i < count; i++) {
        uint64_t l2_offset = l1[i] & QCOW2_L1E_OFFSET_MASK;
        if (l2_offset && io_pread(s->file, table, s->cluster_size, l2_offset) == 0)
            count_l2_table(s, table, l2_offset, fsize, -delta, NULL);
    }
}

int qcow2_snapshot_tree_refs(struct qcow2_state *s, const uint64_t *l1, uint32_t l1_size, int delta)
{
    uint64_t fsize = 0;
    int ret = file_size(s, &fsize);
    if (ret < 0)
        return ret;
    uint8_t *table = malloc(s->cluster_size);
    /* At most one update per entry and one for the table. */
    struct update_log log = {malloc(((size_t)s->l2_entries + 1) * sizeof(*log.v)), 0};
    if (!table || !log.v) {
        free(table);
        free(log.v);
        return img_error(-ENOMEM, "out of memory");
    }
    struct qcow2_offset_map seen;
    qcow2_offset_map_init(&seen, l1_size);
    uint32_t i;
    for (i = 0; i < l1_size && ret == 0; i++) {
        uint64_t l2_offset = l1[i] & QCOW2_L1E_OFFSET_MASK;
        if (!l2_offset)
            continue;
        log.n = 0;
        ret = check_l2_offset(s, &seen, l2_offset, i, fsize);
        if (ret == 0)
            ret = io_pread(s->file, table, s->cluster_size, l2_offset);
        if (ret == 0)
            ret = count_l2_table(s, table, l2_offset, fsize, delta, &log);
    }
    /*
     * A refused increase is taken back. (A decrease runs only once nothing points to the tree:
     * what it could not drop stays leaked, which taking back would not change.)
     */
    if (ret < 0 && delta > 0) {
        undo(s, &log, delta);
        undo_tables(s, l1, i - 1, fsize, delta, table);
    }
    qcow2_offset_map_free(&seen);
    free(log.v);
    free(table);
    return ret;
}

/* COPIED exactly where the refcount is one; never on compressed or unallocated entries. */
static int fix_l2_copied(struct qcow2_state *s, uint8_t *table, bool *changed)
{
    for (uint32_t j = 0; j < s->l2_entries; j++) {
        uint8_t *p = table + (size_t)j * s->l2_entry_bytes;
        uint64_t entry = load_be64(p);
        uint64_t want = entry & ~QCOW2_OFLAG_COPIED;
        uint64_t offset = qcow2_l2_entry_offset(entry);
        if (!(entry & QCOW2_OFLAG_COMPRESSED) && offset) {
            uint64_t refcount;
            int ret = qcow2_refcount_get_locked(s, offset >> s->cluster_bits, &refcount);
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

int qcow2_snapshot_tree_fix_copied(struct qcow2_state *s, uint64_t *l1, uint32_t l1_size,
                                   bool *l1_changed)
{
    *l1_changed = false;
    uint64_t fsize = 0;
    int ret = file_size(s, &fsize);
    if (ret < 0)
        return ret;
    uint8_t *table = malloc(s->cluster_size);
    if (!table)
        return img_error(-ENOMEM, "out of memory");
    bool wrote = false;
    struct qcow2_offset_map seen;
    qcow2_offset_map_init(&seen, l1_size);
    for (uint32_t i = 0; i < l1_size && ret == 0; i++) {
        uint64_t l2_offset = l1[i] & QCOW2_L1E_OFFSET_MASK;
        if (!l2_offset)
            continue;
        ret = check_l2_offset(s, &seen, l2_offset, i, fsize);
        if (ret == 0)
            ret = io_pread(s->file, table, s->cluster_size, l2_offset);
        bool changed = false;
        if (ret == 0)
            ret = fix_l2_copied(s, table, &changed);
        if (ret == 0 && changed) {
            ret = io_pwrite(s->file, table, s->cluster_size, l2_offset);
            qcow2_cache_invalidate(s->l2_cache, l2_offset, s->cluster_size);
            wrote = true;
        }
        uint64_t refcount = 0;
        if (ret == 0)
            ret = qcow2_refcount_get_locked(s, l2_offset >> s->cluster_bits, &refcount);
        if (ret == 0) {
            uint64_t want = l2_offset | (refcount == 1 ? QCOW2_OFLAG_COPIED : 0);
            if (want != l1[i]) {
                l1[i] = want;
                *l1_changed = true;
            }
        }
    }
    qcow2_offset_map_free(&seen);
    free(table);
    if (ret == 0 && wrote)
        ret = io_fsync(s->file);
    return ret;
}

int qcow2_snapshot_write_active_l1(struct qcow2_state *s)
{
    if (s->l1_size == 0)
        return 0;
    size_t bytes = (size_t)s->l1_size * sizeof(uint64_t);
    uint8_t *buf = malloc(bytes);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    qcow2_l1_encode(s->l1_table, 0, s->l1_size, 0, buf);
    int ret = io_pwrite(s->file, buf, bytes, s->hdr.l1_table_offset);
    free(buf);
    if (ret == 0)
        ret = io_fsync(s->file);
    return ret;
}
