/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Rebuilding the refcount structure from the check's in-memory refcounts, placed as QEMU's
 * rebuild_refcount_structure places it (so that the image ends where qemu-img's would): each
 * refcount block that has a non-zero entry goes to the first free cluster from the start of its
 * own range, the table to the first run of free clusters large enough, growing the image where
 * nothing is free. New clusters are counted in the in-memory refcounts as they are taken, and a
 * block whose range received one is written again.
 *
 * Only clusters that nothing references are written before the switch, and the switch is one
 * header write (L1 table offset, refcount table offset and size are adjacent fields): a crash
 * leaves the old structure or the new one in force. COPIED flags that the new refcounts change
 * go to copies of the active L2 and L1 tables that the same write switches to, so that no
 * moment has refcounts and flags disagreeing where they agreed before. The old tables and
 * blocks stay counted, so the check that follows finds them leaked and frees them.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_check.h"
#include "formats/qcow2/qcow2_writer.h"
#include "imgutil.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* l1_table_offset, then refcount_table_offset and refcount_table_clusters. */
#define HEADER_L1_TABLE_OFFSET 40u

/* The table being built: host offsets of the new blocks, in host byte order. */
struct new_table {
    uint64_t *entries;
    uint64_t count; /* a multiple of the entries one cluster holds */
};

/*
 * Takes `count` contiguous clusters that the in-memory refcounts say are free, searching from
 * *first_free (which is moved to the first free cluster seen), growing the image when needed.
 */
static int take_clusters(struct qcow2_check_ctx *c, uint64_t count, uint64_t *first_free,
                         uint64_t *out)
{
    uint64_t cluster = *first_free, run = 0;
    bool first_gap = true;
    for (; cluster < c->nb_clusters && run < count; cluster++) {
        if (qcow2_check_ref(c, cluster) == 0) {
            run++;
            if (first_gap) {
                *first_free = cluster;
                first_gap = false;
            }
        } else {
            run = 0;
        }
    }
    if (run < count) {
        /* The missing clusters come past the end (the run, if any, reaches it). */
        int ret = qcow2_check_refs_grow(c, cluster + count - run);
        if (ret < 0)
            return ret;
    }
    cluster -= run;
    for (uint64_t i = 0; i < count; i++)
        qcow2_check_set_ref(c, cluster + i, 1);
    *out = cluster;
    return 0;
}

static int table_make_room(struct qcow2_check_ctx *c, struct new_table *t, uint64_t index)
{
    if (index < t->count)
        return 0;
    uint64_t per_cluster = c->s->cluster_size / sizeof(uint64_t);
    uint64_t count = (index / per_cluster + 1) * per_cluster;
    if (count * sizeof(uint64_t) > QCOW2_MAX_REFTABLE_BYTES)
        return img_error(-EFBIG, "qcow2: a rebuilt refcount table would exceed 8 MiB");
    uint64_t *grown = realloc(t->entries, (size_t)count * sizeof(uint64_t));
    if (!grown)
        return img_error(-ENOMEM, "out of memory");
    memset(grown + t->count, 0, (size_t)(count - t->count) * sizeof(uint64_t));
    t->entries = grown;
    t->count = count;
    return 0;
}

/* Writes refcount block `index` (the in-memory refcounts of its range) at `offset`. */
static int write_block(struct qcow2_check_ctx *c, uint64_t index, uint64_t offset, uint8_t *buf)
{
    const struct qcow2_state *s = c->s;
    uint64_t first = index << s->refcount_block_bits;
    uint64_t end = min_u64(first + (1ull << s->refcount_block_bits), c->nb_clusters);
    memset(buf, 0, s->cluster_size);
    for (uint64_t k = first; k < end; k++)
        qcow2_refcount_entry_set(buf, k - first, s->refcount_order, qcow2_check_ref(c, k));
    int ret = io_pwrite(s->file, buf, s->cluster_size, offset);
    if (ret < 0)
        img_error(ret, "qcow2: cannot write a rebuilt refcount block: %s", img_strerror(ret));
    return ret;
}

/*
 * Gives every block of [first, end) that has a non-zero entry a place and writes it. A block
 * placed past `end` extends the walk, so that the block counting it is written too.
 */
static int write_blocks(struct qcow2_check_ctx *c, uint64_t first, uint64_t end,
                        struct new_table *t, uint8_t *buf)
{
    const struct qcow2_state *s = c->s;
    uint64_t per_block = 1ull << s->refcount_block_bits;
    uint64_t first_free = 0;
    for (uint64_t cluster = first; cluster < end; cluster++) {
        if (qcow2_check_ref(c, cluster) == 0)
            continue;
        uint64_t index = cluster >> s->refcount_block_bits;
        uint64_t block_start = index << s->refcount_block_bits;
        uint64_t offset;
        if (index < t->count && t->entries[index]) {
            offset = t->entries[index];
        } else {
            /* Never inside a block already written: its contents would be stale. */
            if (first_free < block_start)
                first_free = block_start;
            uint64_t at;
            int ret = take_clusters(c, 1, &first_free, &at);
            if (ret == 0)
                ret = table_make_room(c, t, index);
            if (ret < 0)
                return ret;
            if (at >= end)
                end = at + 1;
            offset = at << s->cluster_bits;
            t->entries[index] = offset;
        }
        int ret = write_block(c, index, offset, buf);
        if (ret < 0)
            return ret;
        cluster = block_start + per_block - 1;
    }
    return 0;
}

/* Places the table; placing it may need more blocks, which may need a larger table. */
static int place_table(struct qcow2_check_ctx *c, struct new_table *t, uint8_t *buf,
                       uint64_t *table_cluster, uint64_t *table_clusters)
{
    const struct qcow2_state *s = c->s;
    for (;;) {
        uint64_t count = t->count;
        uint64_t clusters = (count * sizeof(uint64_t) + s->cluster_size - 1) >> s->cluster_bits;
        uint64_t first_free = 0, at;
        int ret = take_clusters(c, clusters, &first_free, &at);
        if (ret == 0)
            ret = write_blocks(c, at, at + clusters, t, buf);
        if (ret < 0)
            return ret;
        if (t->count == count) {
            *table_cluster = at;
            *table_clusters = clusters;
            return 0;
        }
        for (uint64_t i = 0; i < clusters; i++)
            qcow2_check_set_ref(c, at + i, 0);
    }
}

/* The refcount a COPIED flag must agree with: the rebuilt one (what the walk counted). */
static uint64_t rebuilt_refcount(const struct qcow2_check_ctx *c, uint64_t offset)
{
    uint64_t cluster = offset >> c->s->cluster_bits;
    return cluster < c->nb_clusters ? qcow2_check_ref(c, cluster) : 0;
}

/* COPIED exactly where the rebuilt refcount is one; *changed when an entry changes. */
static void fix_l2_copied(const struct qcow2_check_ctx *c, uint8_t *table, bool *changed)
{
    const struct qcow2_state *s = c->s;
    for (uint32_t j = 0; j < s->l2_entries; j++) {
        uint8_t *p = table + (size_t)j * s->l2_entry_bytes;
        uint64_t entry = load_be64(p);
        uint64_t offset = qcow2_l2_entry_offset(entry);
        if ((entry & QCOW2_OFLAG_COMPRESSED) || !offset)
            continue;
        uint64_t want = entry & ~QCOW2_OFLAG_COPIED;
        if (rebuilt_refcount(c, offset) == 1)
            want |= QCOW2_OFLAG_COPIED;
        if (want != entry) {
            store_be64(p, want);
            *changed = true;
        }
    }
}

/* Whether the active L1 table names the L2 table of entry `i` at another index as well. */
static bool named_twice(const struct qcow2_state *s, uint32_t i)
{
    uint64_t l2 = s->l1_table[i] & QCOW2_L1E_OFFSET_MASK;
    for (uint32_t k = 0; k < s->l1_size; k++)
        if (k != i && (s->l1_table[k] & QCOW2_L1E_OFFSET_MASK) == l2)
            return true;
    return false;
}

/*
 * The COPIED flags the rebuilt refcounts change must change with them, in the same header
 * write: active L2 tables whose flags change are copied, fixed, to free clusters, and a new
 * active L1 table names the copies (with its own flags fixed). Only clusters that nothing
 * references are written, as for the blocks. The replaced tables stay counted: the check that
 * follows finds them leaked and frees them. *l1_cluster is 0 when the L1 table stays.
 */
static int copy_changed_tables(struct qcow2_check_ctx *c, uint8_t *buf, uint64_t **l1_out,
                               uint64_t *l1_cluster)
{
    struct qcow2_state *s = c->s;
    *l1_out = NULL;
    *l1_cluster = 0;
    if (c->has_data_file || s->l1_size == 0)
        return 0;
    uint64_t *l1 = malloc((size_t)s->l1_size * sizeof(uint64_t));
    if (!l1)
        return img_error(-ENOMEM, "out of memory");
    memcpy(l1, s->l1_table, (size_t)s->l1_size * sizeof(uint64_t));
    bool l1_changed = false;
    uint64_t first_free = 0;
    int ret = 0;
    for (uint32_t i = 0; ret == 0 && i < s->l1_size; i++) {
        uint64_t l2 = l1[i] & QCOW2_L1E_OFFSET_MASK;
        /* Damaged entries are left to the check that follows. */
        if (!l2 || (l2 & (s->cluster_size - 1)) || l2 >= c->file_size || named_twice(s, i))
            continue;
        bool changed = false;
        ret = io_pread(s->file, buf, s->cluster_size, l2);
        if (ret < 0)
            break;
        fix_l2_copied(c, buf, &changed);
        if (changed) {
            uint64_t at;
            ret = take_clusters(c, 1, &first_free, &at);
            if (ret == 0)
                ret = io_pwrite(s->file, buf, s->cluster_size, at << s->cluster_bits);
            l2 = at << s->cluster_bits;
        }
        uint64_t want = l2 | (rebuilt_refcount(c, l2) == 1 ? QCOW2_OFLAG_COPIED : 0);
        if (want != l1[i]) {
            l1[i] = want;
            l1_changed = true;
        }
    }
    if (ret == 0 && l1_changed) {
        size_t bytes = (size_t)s->l1_size * sizeof(uint64_t);
        uint64_t clusters = (bytes + s->cluster_size - 1) >> s->cluster_bits;
        uint8_t *disk = calloc(1, (size_t)(clusters << s->cluster_bits));
        ret = disk ? take_clusters(c, clusters, &first_free, l1_cluster)
                   : img_error(-ENOMEM, "out of memory");
        if (ret == 0)
            qcow2_l1_encode(l1, 0, s->l1_size, 0, disk);
        if (ret == 0)
            ret = io_pwrite(s->file, disk, bytes, *l1_cluster << s->cluster_bits);
        free(disk);
    }
    if (ret < 0 || !l1_changed) {
        free(l1);
        *l1_cluster = 0;
        if (ret < 0)
            img_error(ret, "qcow2: cannot write the repaired L2 and L1 tables: %s",
                      img_strerror(ret));
        return ret;
    }
    *l1_out = l1;
    return 0;
}

static int write_table_and_switch(struct qcow2_check_ctx *c, const struct new_table *t,
                                  uint64_t table_cluster, uint64_t table_clusters,
                                  uint64_t l1_cluster)
{
    struct qcow2_state *s = c->s;
    size_t bytes = (size_t)(table_clusters << s->cluster_bits);
    uint8_t *disk = calloc(1, bytes);
    if (!disk)
        return img_error(-ENOMEM, "out of memory");
    for (uint64_t i = 0; i < t->count; i++)
        store_be64(disk + i * 8, t->entries[i]);
    int ret = io_pwrite(s->file, disk, bytes, table_cluster << s->cluster_bits);
    free(disk);
    /* Blocks and table are durable before the header names them. */
    if (ret == 0)
        ret = io_fsync(s->file);
    if (ret == 0) {
        /* l1_table_offset, refcount_table_offset, refcount_table_clusters: adjacent. */
        uint8_t field[20];
        store_be64(field, l1_cluster ? l1_cluster << s->cluster_bits : s->hdr.l1_table_offset);
        store_be64(field + 8, table_cluster << s->cluster_bits);
        store_be32(field + 16, (uint32_t)table_clusters);
        ret = io_pwrite(s->file, field, sizeof(field), HEADER_L1_TABLE_OFFSET);
    }
    if (ret == 0)
        ret = io_fsync(s->file);
    if (ret < 0)
        img_error(ret, "qcow2: cannot write the rebuilt refcount table: %s", img_strerror(ret));
    return ret;
}

int qcow2_check_rebuild_refcounts(struct qcow2_check_ctx *c)
{
    struct qcow2_state *s = c->s;
    struct new_table t = {0};
    /* Repairs run on a writable handle only: its writer keeps replaced tables. */
    if (!s->writer)
        return img_error(-EROFS, "qcow2: rebuilding the refcount structure needs the image "
                                 "opened read-write");
    /*
     * Room to keep the refcount table and the L1 table this replaces for lock-free readers,
     * reserved before anything is written, so that the swap after the switch cannot fail.
     */
    int ret = qcow2_retire_reserve_many(s->writer, 2);
    if (ret < 0) {
        img_error_prefix("qcow2: could not rebuild the refcount structure");
        return ret;
    }
    uint8_t *buf = malloc(s->cluster_size);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    uint64_t table_cluster = 0, table_clusters = 0, l1_cluster = 0, *l1 = NULL;
    ret = copy_changed_tables(c, buf, &l1, &l1_cluster);
    if (ret == 0)
        ret = write_blocks(c, 0, c->nb_clusters, &t, buf);
    if (ret == 0)
        ret = place_table(c, &t, buf, &table_cluster, &table_clusters);
    free(buf);
    if (ret == 0)
        ret = write_table_and_switch(c, &t, table_cluster, table_clusters, l1_cluster);
    if (ret < 0) {
        free(l1);
        free(t.entries);
        img_error_prefix("qcow2: could not rebuild the refcount structure");
        return ret;
    }

    /* The swap cannot fail: the old tables are kept until close, in the room reserved above. */
    uint64_t *old_table = s->refcount_table;
    __atomic_store_n(&s->refcount_table, t.entries, __ATOMIC_RELEASE);
    qcow2_retire_commit(s->writer, old_table);
    s->refcount_table_entries = t.count;
    qcow2_overlap_invalidate(s);
    s->refcount_table_loaded = true;
    s->hdr.refcount_table_offset = table_cluster << s->cluster_bits;
    s->hdr.refcount_table_clusters = (uint32_t)table_clusters;
    qcow2_cache_invalidate(s->refcount_cache, 0, UINT64_MAX);
    if (l1) {
        s->hdr.l1_table_offset = l1_cluster << s->cluster_bits;
        uint64_t *old = s->l1_table;
        __atomic_store_n(&s->l1_table, l1, __ATOMIC_RELEASE);
        qcow2_retire_commit(s->writer, old);
        /* Tables were written to clusters that were free: cached slices there are stale. */
        qcow2_cache_invalidate(s->l2_cache, 0, UINT64_MAX);
    }
    s->writer->free_cluster_index = 0;
    if (s->writer->end_cluster < c->nb_clusters)
        s->writer->end_cluster = c->nb_clusters;
    return 0;
}
