/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * refcount_bits: the refcount table and blocks rewritten with entries of another width, after
 * QEMU 7.2's qcow2_change_refcount_order() (block/qcow2-refcount.c), step for step so that the
 * new structures land where QEMU puts them:
 *  1. walk the old refcounts in groups of one new block each, allocating (in the old
 *     structures) a new block for every group that counts something, then a new table; again
 *     until a walk allocates nothing, since each allocation changes the counts walked;
 *  2. walk once more writing the new blocks, then write the new table; sync;
 *  3. one header write switches to the new table and width (the sector holding the refcount
 *     fields lands whole or not at all); before it the image is the old one with the new
 *     structures leaked, after it the new one with the old structures leaked;
 *  4. the old blocks and table are freed through the new structures.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_amend.h"
#include "formats/qcow2/qcow2_writer.h"
#include "image.h"
#include "io/io.h"
#include "util/endian.h"

struct new_refcounts {
    uint32_t order;
    uint64_t block_entries; /* entries per new block */
    uint64_t *table;        /* new refcount table, host order */
    uint64_t table_entries;
    uint64_t table_offset; /* where it is allocated, 0 while not */
    uint64_t table_allocated_entries;
    uint8_t *block; /* the block being filled (write walk) */
    bool allocated; /* a walk allocated something */
};

/* Makes room for table index `index` (a whole cluster of entries at a time, as QEMU). */
static int grow_table(struct qcow2_state *s, struct new_refcounts *n, uint64_t index)
{
    if (index < n->table_entries)
        return 0;
    uint64_t per_cluster = s->cluster_size / 8;
    uint64_t want = (index + 1 + per_cluster - 1) / per_cluster * per_cluster;
    if (want > QCOW2_MAX_REFTABLE_BYTES / 8)
        return img_error(-ENOTSUP, "This operation would make the refcount table grow beyond "
                                   "the maximum size supported by QEMU, aborting");
    uint64_t *grown = realloc(n->table, want * sizeof(*grown));
    if (!grown)
        return img_error(-ENOMEM, "Failed to increase reftable buffer size");
    memset(grown + n->table_entries, 0, (want - n->table_entries) * sizeof(*grown));
    n->table = grown;
    n->table_entries = want;
    return 0;
}

/* A group is complete: in the allocating walk, gives it a block if it counts anything. */
static int finish_group_alloc(struct qcow2_state *s, struct new_refcounts *n, uint64_t index,
                              bool empty)
{
    if (empty)
        return 0;
    int ret = grow_table(s, n, index);
    if (ret < 0 || n->table[index])
        return ret;
    uint64_t offset;
    ret = qcow2_alloc_clusters(s, 1, &offset);
    if (ret < 0) {
        img_error_prefix("Failed to allocate refblock");
        return ret;
    }
    n->table[index] = offset;
    n->allocated = true;
    return 0;
}

/* In the writing walk: the group's block goes where the allocating walks put it. */
static int finish_group_write(struct qcow2_state *s, struct new_refcounts *n, uint64_t index,
                              bool empty)
{
    if (index >= n->table_entries || !n->table[index]) {
        if (!empty)
            return img_error(-EIO, "qcow2: refcount block %" PRIu64 " was not allocated", index);
        return 0;
    }
    uint64_t offset = n->table[index];
    int ret = qcow2_overlap_check(s, offset, s->cluster_size);
    if (ret == 0)
        ret = io_pwrite(s->file, n->block, s->cluster_size, offset);
    if (ret < 0)
        return img_error(ret, "qcow2: cannot write a refcount block: %s", img_strerror(ret));
    return 0;
}

/* Where a walk is: the group (new block) being filled and how far. */
struct walk_state {
    bool write;
    uint64_t group, in_group;
    bool empty;
};

/* Closes the group when full, before the next entry goes in (QEMU's order). */
static int next_entry(struct qcow2_state *s, struct new_refcounts *n, struct walk_state *w)
{
    if (w->in_group < n->block_entries)
        return 0;
    int ret = w->write ? finish_group_write(s, n, w->group, w->empty)
                       : finish_group_alloc(s, n, w->group, w->empty);
    if (ret < 0)
        return ret;
    w->group++;
    w->in_group = 0;
    w->empty = true;
    if (w->write)
        memset(n->block, 0, s->cluster_size);
    return 0;
}

/* The entries of old block `t` (read from `old`, or all zero when it has none). */
static int walk_block(struct qcow2_state *s, struct new_refcounts *n, struct walk_state *w,
                      uint64_t t, const uint8_t *old)
{
    uint64_t entries = 1ull << s->refcount_block_bits;
    for (uint64_t e = 0; e < entries;) {
        int ret = next_entry(s, n, w);
        if (ret < 0)
            return ret;
        if (!old) {
            /* Zeros: the buffer already holds them; skip to the end of the group or block. */
            uint64_t take = n->block_entries - w->in_group;
            if (take > entries - e)
                take = entries - e;
            w->in_group += take;
            e += take;
            continue;
        }
        uint64_t refcount = qcow2_refcount_entry_get(old, e, s->refcount_order);
        if (n->order < 6 && (refcount >> (1u << n->order))) {
            uint64_t cluster = (t << s->refcount_block_bits) + e;
            return img_error(-EINVAL,
                             "Cannot decrease refcount entry width to %u bits: Cluster at "
                             "offset %#" PRIx64 " has a refcount of %" PRIu64,
                             1u << n->order, cluster << s->cluster_bits, refcount);
        }
        if (w->write)
            qcow2_refcount_entry_set(n->block, w->in_group, n->order, refcount);
        w->in_group++;
        w->empty = w->empty && refcount == 0;
        e++;
    }
    return 0;
}

/*
 * One walk over every entry the old table spans, in groups of one new block. `write`: fill
 * and write the blocks, else allocate them. `pass`/`passes` place the walk in the progress.
 * The old blocks are read from the file: refcount updates are written through at once.
 */
static int walk(struct qcow2_state *s, struct new_refcounts *n, bool write,
                struct qcow2_amend_progress *p, uint64_t pass, uint64_t passes)
{
    struct walk_state w = {.write = write, .empty = true};
    uint8_t *old = malloc(s->cluster_size);
    if (!old)
        return img_error(-ENOMEM, "out of memory");
    if (write)
        memset(n->block, 0, s->cluster_size);
    int ret = 0;
    /* The old table may grow while the walk allocates: its size is read at every step. */
    for (uint64_t t = 0; ret == 0 && t < s->refcount_table_entries; t++) {
        ret = qcow2_amend_report(p, pass * s->refcount_table_entries + t,
                                 passes * s->refcount_table_entries);
        if (ret < 0)
            break;
        uint64_t block = s->refcount_table[t] & QCOW2_REFT_OFFSET_MASK;
        if (block) {
            ret = io_pread(s->file, old, s->cluster_size, block);
            if (ret < 0) {
                img_error(ret, "qcow2: cannot read the refcount block at 0x%" PRIx64 ": %s", block,
                          img_strerror(ret));
                break;
            }
        }
        ret = walk_block(s, n, &w, t, block ? old : NULL);
    }
    if (ret == 0 && w.in_group > 0)
        ret = write ? finish_group_write(s, n, w.group, w.empty)
                    : finish_group_alloc(s, n, w.group, w.empty);
    free(old);
    return ret;
}

/* Drops one reference from `count` clusters at `offset` (structures nothing names). */
static void release(struct qcow2_state *s, uint64_t offset, uint64_t length)
{
    if (offset && length)
        qcow2_refcount_update(s, offset, length, -1);
}

static int allocate_structures(struct qcow2_state *s, struct new_refcounts *n,
                               struct qcow2_amend_progress *p, uint64_t *passes)
{
    uint64_t pass = 0;
    do {
        n->allocated = false;
        uint64_t total = pass + 2 > 3 ? pass + 2 : 3;
        int ret = walk(s, n, false, p, pass++, total);
        if (ret < 0)
            return ret;
        if (!n->allocated)
            break;
        release(s, n->table_offset, n->table_allocated_entries * 8);
        n->table_offset = 0;
        uint64_t clusters = n->table_entries * 8 / s->cluster_size;
        ret = qcow2_alloc_clusters(s, clusters, &n->table_offset);
        if (ret < 0) {
            n->table_offset = 0;
            img_error_prefix("Failed to allocate the new reftable");
            return ret;
        }
        n->table_allocated_entries = n->table_entries;
    } while (true);
    *passes = pass;
    return 0;
}

static int write_table(struct qcow2_state *s, struct new_refcounts *n)
{
    uint8_t *buf = malloc(n->table_entries * 8);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    for (uint64_t i = 0; i < n->table_entries; i++)
        store_be64(buf + i * 8, n->table[i]);
    int ret = qcow2_overlap_check(s, n->table_offset, n->table_entries * 8);
    if (ret == 0) {
        ret = io_pwrite(s->file, buf, n->table_entries * 8, n->table_offset);
        if (ret < 0)
            img_error(ret, "Failed to write the new reftable: %s", img_strerror(ret));
    }
    free(buf);
    return ret;
}

/* Steps 3 and 4: the header names the new structures, then the old ones are freed. */
static int switch_to_new(struct img *img, struct new_refcounts *n)
{
    struct qcow2_state *s = img->priv;
    int ret = qcow2_retire_reserve(s->writer);
    if (ret < 0)
        return ret;
    struct qcow2_header saved = s->hdr;
    s->hdr.refcount_order = n->order;
    s->hdr.refcount_table_offset = n->table_offset;
    s->hdr.refcount_table_clusters = (uint32_t)(n->table_entries * 8 / s->cluster_size);
    ret = qcow2_write_header(img);
    if (ret < 0) {
        s->hdr = saved;
        img_error_prefix("Failed to update the image header");
        /*
         * The failed write may still have reached the disk and name the new structures: they
         * stay allocated (a leak at worst), never handed back to be overwritten.
         */
        free(n->table);
        n->table = NULL;
        return ret;
    }
    uint64_t *old_table = s->refcount_table;
    uint64_t old_entries = s->refcount_table_entries;
    uint64_t old_offset = saved.refcount_table_offset;
    uint64_t old_bytes = (uint64_t)saved.refcount_table_clusters * s->cluster_size;
    s->refcount_table = n->table;
    s->refcount_table_entries = n->table_entries;
    n->table = NULL;
    qcow2_geometry_init(s, s->cluster_bits, s->extended_l2, n->order);
    qcow2_cache_invalidate(s->refcount_cache, 0, UINT64_MAX >> 1);
    qcow2_overlap_invalidate(s);
    /* Leaks at worst from here on: nothing names the old structures any more. */
    for (uint64_t i = 0; i < old_entries; i++)
        release(s, old_table[i] & QCOW2_REFT_OFFSET_MASK, s->cluster_size);
    release(s, old_offset, old_bytes);
    qcow2_retire_commit(s->writer, old_table);
    return qcow2_flush_caches(s, true);
}

static int change_order_locked(struct img *img, uint32_t order, struct qcow2_amend_progress *p)
{
    struct qcow2_state *s = img->priv;
    struct new_refcounts n = {.order = order};
    n.block_entries = 1ull << (s->cluster_bits + 3 - order);
    n.block = malloc(s->cluster_size);
    if (!n.block)
        return img_error(-ENOMEM, "out of memory");
    uint64_t passes = 0;
    int ret = qcow2_flush_caches(s, true);
    if (ret == 0)
        ret = allocate_structures(s, &n, p, &passes);
    if (ret == 0)
        ret = walk(s, &n, true, p, passes, passes + 1);
    if (ret == 0)
        ret = write_table(s, &n);
    /* Everything the new structures describe, and they themselves, on disk first. */
    if (ret == 0)
        ret = qcow2_flush_caches(s, true);
    if (ret == 0)
        ret = switch_to_new(img, &n);
    if (ret < 0 && n.table) {
        /* Not switched: the new structures go back to the free space of the old ones. */
        char *msg = strdup(img_last_error());
        for (uint64_t i = 0; i < n.table_entries; i++)
            release(s, n.table[i], s->cluster_size);
        release(s, n.table_offset, n.table_allocated_entries * 8);
        img_error(ret, "%s", msg ? msg : "Failed to change the refcount order");
        free(msg);
    }
    free(n.table);
    free(n.block);
    return ret;
}

int qcow2_amend_refcount_order(struct img *img, uint32_t order, struct qcow2_amend_progress *p)
{
    struct qcow2_state *s = img->priv;
    pthread_mutex_lock(&s->lock);
    int ret = change_order_locked(img, order, p);
    pthread_mutex_unlock(&s->lock);
    return ret;
}
