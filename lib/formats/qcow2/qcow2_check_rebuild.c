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
 * header write (table offset and size are adjacent fields): a crash leaves the old structure or
 * the new one in force. The old table and blocks stay counted, so the check that follows finds
 * them leaked and frees them.
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

/* refcount_table_offset, then refcount_table_clusters. */
#define HEADER_REFCOUNT_TABLE_OFFSET 48u

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

static int write_table_and_switch(struct qcow2_check_ctx *c, const struct new_table *t,
                                  uint64_t table_cluster, uint64_t table_clusters)
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
        uint8_t field[12];
        store_be64(field, table_cluster << s->cluster_bits);
        store_be32(field + 8, (uint32_t)table_clusters);
        ret = io_pwrite(s->file, field, sizeof(field), HEADER_REFCOUNT_TABLE_OFFSET);
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
    uint8_t *buf = malloc(s->cluster_size);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    uint64_t table_cluster = 0, table_clusters = 0;
    int ret = write_blocks(c, 0, c->nb_clusters, &t, buf);
    if (ret == 0)
        ret = place_table(c, &t, buf, &table_cluster, &table_clusters);
    free(buf);
    if (ret == 0)
        ret = write_table_and_switch(c, &t, table_cluster, table_clusters);
    if (ret < 0) {
        free(t.entries);
        img_error_prefix("qcow2: could not rebuild the refcount structure");
        return ret;
    }

    /* The caller holds s->lock, as every reader of the refcount table does. */
    if (!s->writer || qcow2_retire(s->writer, s->refcount_table) < 0)
        free(s->refcount_table);
    s->refcount_table = t.entries;
    s->refcount_table_entries = t.count;
    qcow2_overlap_invalidate(s);
    s->refcount_table_loaded = true;
    s->hdr.refcount_table_offset = table_cluster << s->cluster_bits;
    s->hdr.refcount_table_clusters = (uint32_t)table_clusters;
    qcow2_cache_invalidate(s->refcount_cache, 0, UINT64_MAX);
    if (s->writer) {
        s->writer->free_cluster_index = 0;
        if (s->writer->end_cluster < c->nb_clusters)
            s->writer->end_cluster = c->nb_clusters;
    }
    return 0;
}
