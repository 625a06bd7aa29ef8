/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A snapshot transaction: every change of a snapshot operation is made in new clusters past
 * the end of the image, and one header write switches to all of it at once (see the rules in
 * qcow2_snapshot_write.h).
 *
 * Refcounts are changed in copies of the refcount blocks they fall in; each changed block is
 * written to a new cluster and a new refcount table names the new blocks (and the unchanged old
 * ones). The new blocks count the new clusters (themselves and the table included) and no
 * longer count the old blocks, table and whatever else the operation drops, so the image the
 * switch makes has no leaks; the image before it has only the appended clusters, which nothing
 * references and nothing counts.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "imgutil.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_snapshot_write.h"
#include "formats/qcow2/qcow2_writer.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* Bytes 24..72 of the header: size, crypt_method, l1_size, l1_table_offset,
 * refcount_table_offset, refcount_table_clusters, nb_snapshots, snapshots_offset. */
#define HEADER_SWITCH_START 24u
#define HEADER_SWITCH_BYTES 48u

struct qcow2_snapshot_txn {
    struct qcow2_state *s;
    uint64_t start_size;   /* file size when the transaction began */
    uint64_t next_cluster; /* the next cluster to allocate */
    /* Per refcount table index: the changed copy (NULL while unchanged), its new place
     * (cluster index, 0 until placed), whether the old block's own count was dropped. */
    uint64_t nb_blocks;
    uint8_t **blocks;
    uint64_t *block_at;
    bool *old_dropped;
    uint64_t reclaim_from; /* clusters from here on are known to be unreferenced */
    bool wrote;            /* clusters were written past start_size */
    bool switched;         /* the header names the new structures */
};

static uint64_t old_block_offset(const struct qcow2_state *s, uint64_t index)
{
    if (index >= s->refcount_table_entries)
        return 0;
    return s->refcount_table[index] & QCOW2_REFT_OFFSET_MASK;
}

int qcow2_snapshot_txn_begin(struct qcow2_state *s, struct qcow2_snapshot_txn **out)
{
    *out = NULL;
    int ret = s->refcount_table_loaded ? 0 : img_error(-EIO, "qcow2: no refcount table loaded");
    if (ret < 0)
        return ret;
    int64_t size = io_file_size(s->file);
    if (size < 0)
        return img_error((int)size, "qcow2: cannot read the image size");
    struct qcow2_snapshot_txn *t = calloc(1, sizeof(*t));
    if (!t)
        return img_error(-ENOMEM, "out of memory");
    t->s = s;
    t->start_size = (uint64_t)size;
    t->reclaim_from = UINT64_MAX;
    t->next_cluster = align_up_u64((uint64_t)size, s->cluster_size) >> s->cluster_bits;
    if (s->writer && s->writer->end_cluster > t->next_cluster)
        t->next_cluster = s->writer->end_cluster;
    *out = t;
    return 0;
}

struct qcow2_state *qcow2_snapshot_txn_state(struct qcow2_snapshot_txn *t)
{
    return t->s;
}

bool qcow2_snapshot_txn_switched(const struct qcow2_snapshot_txn *t)
{
    return t && t->switched;
}

void qcow2_snapshot_txn_free(struct qcow2_snapshot_txn *t)
{
    if (!t)
        return;
    for (uint64_t i = 0; i < t->nb_blocks; i++)
        free(t->blocks[i]);
    free(t->blocks);
    free(t->block_at);
    free(t->old_dropped);
    free(t);
}

void qcow2_snapshot_txn_abort(struct qcow2_snapshot_txn *t)
{
    if (!t)
        return;
    /* Nothing names the appended clusters: giving them back keeps the file as it was. */
    if (t->wrote && io_truncate(t->s->file, t->start_size) < 0)
        img_error_clear();
    qcow2_snapshot_txn_free(t);
}

static int grow_blocks(struct qcow2_snapshot_txn *t, uint64_t index)
{
    if (index < t->nb_blocks)
        return 0;
    /* The new table must stay within QEMU's bound: refuse indexes it could not hold. */
    if (index >= QCOW2_MAX_REFTABLE_BYTES / sizeof(uint64_t))
        return img_error(-EFBIG, "qcow2: the refcount table would exceed the 8 MiB limit");
    uint64_t n = max_u64(index + 1, t->nb_blocks * 2);
    n = min_u64(n, QCOW2_MAX_REFTABLE_BYTES / sizeof(uint64_t));
    uint8_t **blocks = realloc(t->blocks, n * sizeof(*blocks));
    if (blocks)
        t->blocks = blocks;
    uint64_t *at = realloc(t->block_at, n * sizeof(*at));
    if (at)
        t->block_at = at;
    bool *dropped = realloc(t->old_dropped, n * sizeof(*dropped));
    if (dropped)
        t->old_dropped = dropped;
    if (!blocks || !at || !dropped)
        return img_error(-ENOMEM, "out of memory");
    for (uint64_t i = t->nb_blocks; i < n; i++) {
        t->blocks[i] = NULL;
        t->block_at[i] = 0;
        t->old_dropped[i] = false;
    }
    t->nb_blocks = n;
    return 0;
}

/* The changed copy of refcount block `index`, made on first use from the block on disk. */
static int block_copy(struct qcow2_snapshot_txn *t, uint64_t index, uint8_t **out)
{
    struct qcow2_state *s = t->s;
    int ret = grow_blocks(t, index);
    if (ret < 0)
        return ret;
    if (!t->blocks[index]) {
        uint8_t *buf = calloc(1, s->cluster_size);
        if (!buf)
            return img_error(-ENOMEM, "out of memory");
        uint64_t old = old_block_offset(s, index);
        if (old) {
            if ((old & (s->cluster_size - 1)) || old >= t->start_size)
                ret = img_error(-EIO,
                                "qcow2: refcount block offset 0x%" PRIx64 " (refcount table "
                                "index %" PRIu64 ") is invalid",
                                old, index);
            if (ret == 0)
                ret = io_pread(s->file, buf, s->cluster_size, old);
            if (ret < 0) {
                free(buf);
                return ret;
            }
        }
        t->blocks[index] = buf;
    }
    *out = t->blocks[index];
    return 0;
}

int qcow2_snapshot_txn_get(struct qcow2_snapshot_txn *t, uint64_t cluster, uint64_t *value)
{
    struct qcow2_state *s = t->s;
    uint64_t index = cluster >> s->refcount_block_bits;
    if (index < t->nb_blocks && t->blocks[index]) {
        uint64_t in_block = cluster & ((1ull << s->refcount_block_bits) - 1);
        *value = qcow2_refcount_entry_get(t->blocks[index], in_block, s->refcount_order);
        return 0;
    }
    return qcow2_refcount_get_locked(s, cluster, value);
}

int qcow2_snapshot_txn_add(struct qcow2_snapshot_txn *t, uint64_t offset, uint64_t length,
                           int delta)
{
    struct qcow2_state *s = t->s;
    uint64_t end;
    if (length == 0)
        return 0;
    if (add_overflows_u64(offset, length, &end))
        return img_error(-EIO, "qcow2: refcount update range overflows");
    uint64_t last = (end - 1) >> s->cluster_bits;
    for (uint64_t c = offset >> s->cluster_bits; c <= last; c++) {
        uint8_t *block = NULL;
        int ret = block_copy(t, c >> s->refcount_block_bits, &block);
        if (ret < 0)
            return ret;
        uint64_t in_block = c & ((1ull << s->refcount_block_bits) - 1);
        uint64_t v = qcow2_refcount_entry_get(block, in_block, s->refcount_order);
        if (delta > 0 ? v >= s->refcount_max : v == 0)
            return img_error(-EIO,
                             "qcow2: refcount of cluster 0x%" PRIx64 " (%" PRIu64 ") would %s",
                             c << s->cluster_bits, v, delta > 0 ? "overflow" : "drop below zero");
        qcow2_refcount_entry_set(block, in_block, s->refcount_order, delta > 0 ? v + 1 : v - 1);
    }
    return 0;
}

int qcow2_snapshot_txn_set(struct qcow2_snapshot_txn *t, uint64_t cluster, uint64_t value)
{
    struct qcow2_state *s = t->s;
    if (value > s->refcount_max)
        return img_error(-EINVAL, "qcow2: refcount %" PRIu64 " exceeds the largest (%" PRIu64 ")",
                         value, s->refcount_max);
    uint8_t *block = NULL;
    int ret = block_copy(t, cluster >> s->refcount_block_bits, &block);
    if (ret < 0)
        return ret;
    uint64_t in_block = cluster & ((1ull << s->refcount_block_bits) - 1);
    qcow2_refcount_entry_set(block, in_block, s->refcount_order, value);
    return 0;
}

void qcow2_snapshot_txn_reclaim_from(struct qcow2_snapshot_txn *t, uint64_t cluster)
{
    t->reclaim_from = cluster;
}

bool qcow2_snapshot_txn_changed(const struct qcow2_snapshot_txn *t)
{
    for (uint64_t i = 0; i < t->nb_blocks; i++)
        if (t->blocks[i])
            return true;
    return false;
}

int qcow2_snapshot_txn_alloc(struct qcow2_snapshot_txn *t, uint64_t clusters, uint64_t *offset)
{
    struct qcow2_state *s = t->s;
    /* A damaged image may count clusters past its end: the run starts after them. */
    uint64_t first = t->next_cluster;
    for (uint64_t i = 0; i < clusters; i++) {
        uint64_t v;
        int ret = qcow2_snapshot_txn_get(t, first + i, &v);
        if (ret < 0)
            return ret;
        if (v && first + i >= t->reclaim_from) {
            ret = qcow2_snapshot_txn_set(t, first + i, 0);
            if (ret < 0)
                return ret;
        } else if (v) {
            first += i + 1;
            i = (uint64_t)-1;
        }
    }
    int ret = qcow2_snapshot_txn_add(t, first << s->cluster_bits, clusters << s->cluster_bits, 1);
    if (ret < 0)
        return ret;
    t->next_cluster = first + clusters;
    *offset = first << s->cluster_bits;
    return 0;
}

int qcow2_snapshot_txn_write(struct qcow2_snapshot_txn *t, const void *buf, size_t len,
                             uint64_t offset)
{
    t->wrote = true;
    int ret = io_pwrite(t->s->file, buf, len, offset);
    if (ret < 0)
        return img_error(ret, "qcow2: cannot write new metadata at 0x%" PRIx64 ": %s", offset,
                         img_strerror(ret));
    return 0;
}

int qcow2_snapshot_txn_alloc_write(struct qcow2_snapshot_txn *t, const void *buf, size_t len,
                                   uint64_t *offset)
{
    *offset = 0;
    if (len == 0)
        return 0;
    uint64_t clusters = (len + t->s->cluster_size - 1) >> t->s->cluster_bits;
    uint64_t at;
    int ret = qcow2_snapshot_txn_alloc(t, clusters, &at);
    if (ret == 0)
        ret = qcow2_snapshot_txn_write(t, buf, len, at);
    if (ret == 0)
        *offset = at;
    return ret;
}

/*
 * Places the new refcount structure: every changed block gets a new cluster, the old block it
 * replaces stops being counted, and the table is large enough for every block. Each of these
 * may change another block, so it repeats until nothing changes.
 */
static int place_structure(struct qcow2_snapshot_txn *t, uint64_t *table_at,
                           uint64_t *table_clusters)
{
    struct qcow2_state *s = t->s;
    uint64_t per_table_cluster = s->cluster_size / sizeof(uint64_t);
    uint64_t placed_at = 0, placed_clusters = 0;
    bool old_table_dropped = false;
    for (bool changed = true; changed;) {
        changed = false;
        for (uint64_t i = 0; i < t->nb_blocks; i++) {
            if (!t->blocks[i])
                continue;
            int ret = 0;
            uint64_t old = old_block_offset(s, i);
            if (old && !t->old_dropped[i]) {
                t->old_dropped[i] = true;
                ret = qcow2_snapshot_txn_add(t, old, s->cluster_size, -1);
                changed = true;
            }
            if (ret == 0 && !t->block_at[i]) {
                uint64_t at;
                ret = qcow2_snapshot_txn_alloc(t, 1, &at);
                t->block_at[i] = at >> s->cluster_bits;
                changed = true;
            }
            if (ret < 0)
                return ret;
        }
        if (!old_table_dropped && s->hdr.refcount_table_clusters) {
            old_table_dropped = true;
            changed = true;
            int ret = qcow2_snapshot_txn_add(
                t, s->hdr.refcount_table_offset,
                (uint64_t)s->hdr.refcount_table_clusters << s->cluster_bits, -1);
            if (ret < 0)
                return ret;
        }
        uint64_t used = s->refcount_table_entries;
        for (uint64_t i = t->nb_blocks; i > 0; i--)
            if (t->blocks[i - 1]) {
                used = max_u64(used, i);
                break;
            }
        uint64_t want = align_up_u64(used, per_table_cluster) / per_table_cluster;
        if (want > (QCOW2_MAX_REFTABLE_BYTES >> s->cluster_bits))
            return img_error(-EFBIG, "qcow2: the refcount table would exceed the 8 MiB limit");
        if (want > placed_clusters) {
            int ret = 0;
            if (placed_clusters)
                ret = qcow2_snapshot_txn_add(t, placed_at, placed_clusters << s->cluster_bits, -1);
            if (ret == 0)
                ret = qcow2_snapshot_txn_alloc(t, want, &placed_at);
            if (ret < 0)
                return ret;
            placed_clusters = want;
            changed = true;
        }
    }
    *table_at = placed_at;
    *table_clusters = placed_clusters;
    return 0;
}

/* Writes the changed blocks and the new table (host-order copy in *table_out). */
static int write_structure(struct qcow2_snapshot_txn *t, uint64_t table_at, uint64_t table_clusters,
                           uint64_t **table_out)
{
    struct qcow2_state *s = t->s;
    uint64_t entries = (table_clusters << s->cluster_bits) / sizeof(uint64_t);
    uint64_t *table = calloc(entries, sizeof(uint64_t));
    uint8_t *disk = malloc(table_clusters << s->cluster_bits);
    int ret = 0;
    if (!table || !disk)
        ret = img_error(-ENOMEM, "out of memory");
    for (uint64_t i = 0; ret == 0 && i < entries; i++) {
        if (i < t->nb_blocks && t->blocks[i]) {
            table[i] = t->block_at[i] << s->cluster_bits;
            ret = qcow2_snapshot_txn_write(t, t->blocks[i], s->cluster_size, table[i]);
        } else if (i < s->refcount_table_entries) {
            table[i] = s->refcount_table[i];
        }
        store_be64(disk + i * 8, table[i]);
    }
    if (ret == 0)
        ret = qcow2_snapshot_txn_write(t, disk, (size_t)(table_clusters << s->cluster_bits),
                                       table_at);
    free(disk);
    if (ret < 0) {
        free(table);
        return ret;
    }
    *table_out = table;
    return 0;
}

static int write_header_switch(struct qcow2_state *s, const struct qcow2_snapshot_switch *sw,
                               uint64_t table_at, uint64_t table_clusters)
{
    uint8_t buf[HEADER_SWITCH_BYTES];
    store_be64(buf, sw->size);
    store_be32(buf + 8, s->hdr.crypt_method);
    store_be32(buf + 12, sw->l1_size);
    store_be64(buf + 16, sw->l1_table_offset);
    store_be64(buf + 24, table_at);
    store_be32(buf + 32, (uint32_t)table_clusters);
    store_be32(buf + 36, sw->nb_snapshots);
    store_be64(buf + 40, sw->snapshots_offset);
    int ret = io_pwrite(s->file, buf, sizeof(buf), HEADER_SWITCH_START);
    if (ret < 0)
        return img_error(ret, "qcow2: cannot write the header: %s", img_strerror(ret));
    return 0;
}

/* The file now names the new structure: so does the handle. */
static void adopt(struct qcow2_snapshot_txn *t, const struct qcow2_snapshot_switch *sw,
                  uint64_t *table, uint64_t table_at, uint64_t table_clusters)
{
    struct qcow2_state *s = t->s;
    struct qcow2_writer *w = s->writer;
    /* The swap cannot fail: the commit reserved room to keep the old table until close. */
    uint64_t *old_table = s->refcount_table;
    __atomic_store_n(&s->refcount_table, table, __ATOMIC_RELEASE);
    qcow2_retire_commit(w, old_table);
    s->refcount_table_entries = (table_clusters << s->cluster_bits) / sizeof(uint64_t);
    s->hdr.refcount_table_offset = table_at;
    s->hdr.refcount_table_clusters = (uint32_t)table_clusters;
    s->hdr.size = sw->size;
    s->hdr.l1_size = sw->l1_size;
    s->hdr.l1_table_offset = sw->l1_table_offset;
    s->hdr.nb_snapshots = sw->nb_snapshots;
    s->hdr.snapshots_offset = sw->snapshots_offset;
    qcow2_cache_invalidate(s->refcount_cache, 0, UINT64_MAX);
    qcow2_cache_invalidate(s->l2_cache, 0, UINT64_MAX);
    qcow2_overlap_invalidate(s);
    w->reftable_dirty = false;
    w->free_cluster_index = 0;
    w->free_byte_offset = 0;
    w->end_cluster = max_u64(w->end_cluster, t->next_cluster);
}

void qcow2_snapshot_install_l1(struct qcow2_state *s, uint64_t *l1, uint32_t l1_size)
{
    /*
     * Readers that do not take the lock (map) may still hold the old table: it is kept until
     * close, in the room the commit reserved. The table is published before its size (a
     * table never shrinks here), as qcow2_l1_grow() does.
     */
    uint64_t *old = s->l1_table;
    __atomic_store_n(&s->l1_table, l1, __ATOMIC_RELEASE);
    qcow2_retire_commit(s->writer, old);
    __atomic_store_n(&s->l1_size, l1_size, __ATOMIC_RELEASE);
}

int qcow2_snapshot_txn_commit(struct qcow2_snapshot_txn *t, const struct qcow2_snapshot_switch *sw)
{
    struct qcow2_state *s = t->s;
    uint64_t table_at = 0, table_clusters = 0, *table = NULL;
    /*
     * Room to keep the two tables the switch replaces (the refcount table here, the active L1
     * table in qcow2_snapshot_install_l1()) for lock-free readers, reserved while a failure
     * still leaves the image and the handle as they were.
     */
    int ret = qcow2_retire_reserve_many(s->writer, 2);
    if (ret == 0)
        ret = place_structure(t, &table_at, &table_clusters);
    if (ret == 0)
        ret = write_structure(t, table_at, table_clusters, &table);
    /* Everything new is durable before the header names it. */
    if (ret == 0)
        ret = io_fsync(s->file);
    if (ret < 0)
        return ret;
    ret = write_header_switch(s, sw, table_at, table_clusters);
    if (ret < 0) {
        /*
         * A failed write may have reached the disk in part: put the old fields back before
         * abort() gives the appended clusters away. When even that fails, the header may
         * name them, so they stay (a leak at worst).
         */
        char message[512];
        snprintf(message, sizeof(message), "%s", img_last_error());
        const struct qcow2_snapshot_switch old = {
            .size = s->hdr.size,
            .l1_size = s->hdr.l1_size,
            .l1_table_offset = s->hdr.l1_table_offset,
            .nb_snapshots = s->hdr.nb_snapshots,
            .snapshots_offset = s->hdr.snapshots_offset,
        };
        if (write_header_switch(s, &old, s->hdr.refcount_table_offset,
                                s->hdr.refcount_table_clusters) < 0)
            t->wrote = false;
        free(table);
        return img_error(ret, "%s", message);
    }
    adopt(t, sw, table, table_at, table_clusters);
    t->switched = true;
    t->wrote = false; /* the appended clusters are in use now */
    ret = io_fsync(s->file);
    if (ret < 0)
        return img_error(ret, "qcow2: cannot sync the header: %s", img_strerror(ret));
    return 0;
}
