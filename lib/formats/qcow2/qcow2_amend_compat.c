/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * compat=1.1 <-> 0.10, after QEMU 7.2's qcow2_upgrade() and qcow2_downgrade() (block/qcow2.c)
 * and qcow2_expand_zero_clusters() (block/qcow2-cluster.c).
 *
 * Crash safety: the version changes in one header write, the last one. Before it, a downgrade
 * only turns zero clusters into clusters of zeros (the cluster is zeroed and counted, and
 * synced, before the L2 entry names it), which reads the same in either version.
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

/* Version 3 snapshots carry the 64-bit VM state size and the disk size (16 bytes). */
#define QCOW2_V3_SNAPSHOT_EXTRA 16u

static int write_header_version(struct img *img, uint32_t version)
{
    struct qcow2_state *s = img->priv;
    uint32_t old = s->hdr.version;
    s->hdr.version = version;
    int ret = qcow2_write_header(img);
    if (ret < 0) {
        s->hdr.version = old;
        img_error_prefix("Failed to update the image header");
    }
    return ret;
}

int qcow2_amend_upgrade(struct img *img, struct qcow2_amend_progress *p)
{
    struct qcow2_state *s = img->priv;
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if (s->snapshots[i].extra_data_size < QCOW2_V3_SNAPSHOT_EXTRA)
            return img_error(-ENOTSUP,
                             "%s: snapshot '%s' lacks the extra data version 3 requires; "
                             "upgrading such an image is not supported",
                             img->filename, s->snapshots[i].name);
    int ret = qcow2_amend_report(p, 1, 2);
    if (ret < 0)
        return ret;
    pthread_mutex_lock(&s->lock);
    ret = qcow2_flush_caches(s, true);
    if (ret == 0)
        ret = write_header_version(img, 3);
    pthread_mutex_unlock(&s->lock);
    if (ret == 0)
        ret = qcow2_amend_report(p, 2, 2);
    return ret;
}

/* What the expansion of one L1 table needs to know. */
struct expand_ctx {
    struct img *img;
    struct qcow2_state *s;
    uint8_t *l2; /* one L2 table */
    bool backed;
    bool found_compressed; /* in the active table */
    struct qcow2_amend_progress *p;
    uint64_t done, total; /* L1 entries over every table */
};

/* Turns the zero clusters of one L2 table into clusters of zeros (or unallocated entries). */
static int expand_l2_table(struct expand_ctx *c, uint64_t l2_offset, bool active)
{
    struct qcow2_state *s = c->s;
    uint64_t l2_refcount;
    int ret = qcow2_refcount_get_locked(s, l2_offset >> s->cluster_bits, &l2_refcount);
    if (ret == 0)
        ret = io_pread(s->file, c->l2, s->cluster_size, l2_offset);
    if (ret < 0)
        return img_error(ret, "qcow2: cannot read the L2 table at 0x%" PRIx64 ": %s", l2_offset,
                         img_strerror(ret));
    bool changed = false;
    for (uint32_t j = 0; j < s->l2_entries; j++) {
        uint64_t entry = load_be64(c->l2 + (uint64_t)j * 8);
        enum qcow2_subcluster_type type = qcow2_subcluster_type(s, entry, 0, 0, false);
        if (type == QCOW2_SC_COMPRESSED && active)
            c->found_compressed = true;
        if (type != QCOW2_SC_ZERO_PLAIN && type != QCOW2_SC_ZERO_ALLOC)
            continue;
        uint64_t offset = qcow2_l2_entry_offset(entry);
        /*
         * The cluster's own count decides the COPIED flag. (QEMU 7.2 takes the L2 table's,
         * which flags a preallocated zero cluster still shared with a snapshot as unshared:
         * qemu-img check then reports the image corrupt.)
         */
        uint64_t cluster_refcount = l2_refcount;
        if (type == QCOW2_SC_ZERO_ALLOC) {
            ret = qcow2_refcount_get_locked(s, offset >> s->cluster_bits, &cluster_refcount);
            if (ret < 0)
                return ret;
        }
        if (type == QCOW2_SC_ZERO_PLAIN) {
            if (!c->backed) {
                /* Nothing below shows through: unallocated reads as zeros as well. */
                store_be64(c->l2 + (uint64_t)j * 8, 0);
                changed = true;
                continue;
            }
            ret = qcow2_alloc_clusters(s, 1, &offset);
            if (ret == 0 && l2_refcount > 1)
                ret = qcow2_refcount_update(s, offset, s->cluster_size, (int64_t)l2_refcount - 1);
            if (ret < 0)
                return ret;
        }
        ret = qcow2_overlap_check(s, offset, s->cluster_size);
        if (ret == 0)
            ret = qcow2_write_zero_bytes(s->file, offset, s->cluster_size);
        if (ret < 0)
            return ret;
        store_be64(c->l2 + (uint64_t)j * 8,
                   offset | (cluster_refcount == 1 ? QCOW2_OFLAG_COPIED : 0));
        changed = true;
    }
    if (!changed)
        return 0;
    /* The zeros and their refcounts are on disk before the entries that name them. */
    ret = io_fsync(s->file);
    if (ret == 0)
        ret = qcow2_overlap_check_rewrite(s, QCOW2_META_ACTIVE_L2, l2_offset, s->cluster_size);
    if (ret == 0)
        ret = io_pwrite(s->file, c->l2, s->cluster_size, l2_offset);
    qcow2_cache_invalidate(s->l2_cache, l2_offset, s->cluster_size);
    if (ret < 0)
        return img_error(ret, "qcow2: cannot write the L2 table at 0x%" PRIx64 ": %s", l2_offset,
                         img_strerror(ret));
    return 0;
}

static int expand_l1_table(struct expand_ctx *c, const uint64_t *l1, uint32_t l1_size, bool active)
{
    struct qcow2_state *s = c->s;
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t l2_offset = l1[i] & QCOW2_L1E_OFFSET_MASK;
        int ret = qcow2_amend_report(c->p, c->done++, c->total);
        if (ret < 0)
            return ret;
        if (!l2_offset)
            continue;
        if (l2_offset & (s->cluster_size - 1))
            return qcow2_writer_mark_corrupt(
                s, "L2 table offset 0x%" PRIx64 " unaligned (L1 index: %" PRIu32 ")", l2_offset, i);
        ret = expand_l2_table(c, l2_offset, active);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int load_snapshot_l1(struct qcow2_state *s, const struct qcow2_snapshot *sn, uint64_t **out)
{
    uint64_t *l1 = calloc(sn->l1_size ? sn->l1_size : 1, sizeof(*l1));
    if (!l1)
        return img_error(-ENOMEM, "out of memory");
    int ret = io_pread(s->file, l1, (uint64_t)sn->l1_size * 8, sn->l1_table_offset);
    if (ret < 0) {
        free(l1);
        return img_error(ret, "qcow2: cannot read the L1 table of snapshot '%s': %s", sn->name,
                         img_strerror(ret));
    }
    for (uint32_t i = 0; i < sn->l1_size; i++)
        l1[i] = load_be64((const uint8_t *)&l1[i]);
    *out = l1;
    return 0;
}

/* With s->lock held and everything held in memory written back. */
static int expand_zero_clusters(struct img *img, struct qcow2_amend_progress *p,
                                bool *found_compressed)
{
    struct qcow2_state *s = img->priv;
    struct expand_ctx c = {.img = img, .s = s, .backed = img->backing_name != NULL, .p = p};
    c.l2 = malloc(s->cluster_size);
    if (!c.l2)
        return img_error(-ENOMEM, "out of memory");
    c.total = s->l1_size;
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        c.total += s->snapshots[i].l1_size;
    int ret = expand_l1_table(&c, s->l1_table, s->l1_size, true);
    for (uint32_t i = 0; ret == 0 && i < s->nb_snapshots; i++) {
        uint64_t *l1 = NULL;
        ret = load_snapshot_l1(s, &s->snapshots[i], &l1);
        if (ret == 0)
            ret = expand_l1_table(&c, l1, s->snapshots[i].l1_size, false);
        free(l1);
    }
    free(c.l2);
    if (ret == 0)
        ret = io_fsync(s->file);
    *found_compressed = c.found_compressed;
    return ret;
}

/* QEMU's refusals, in its order, before anything is written. */
static int check_downgrade(struct img *img)
{
    struct qcow2_state *s = img->priv;
    if (s->refcount_order != 4)
        return img_error(-ENOTSUP, "compat=0.10 requires refcount_bits=16");
    if (qcow2_has_data_file(s))
        return img_error(-ENOTSUP, "Cannot downgrade an image with a data file");
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if (s->snapshots[i].vm_state_size > UINT32_MAX || s->snapshots[i].disk_size != img->size)
            return img_error(-ENOTSUP, "Internal snapshots prevent downgrade of image");
    return 0;
}

static int downgrade_locked(struct img *img, struct qcow2_amend_progress *p)
{
    struct qcow2_state *s = img->priv;
    int ret = qcow2_flush_caches(s, true);
    if (ret < 0)
        return ret;
    /* The refcounts are all on disk now: the image is clean. */
    if (s->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY) {
        ret = qcow2_write_incompat(s, s->hdr.incompatible_features & ~QCOW2_INCOMPAT_DIRTY);
        if (ret < 0) {
            img_error_prefix("Failed to make the image clean");
            return ret;
        }
        s->writer->set_dirty_bit = false;
        img->dirty = false;
    }
    uint64_t incompat = s->hdr.incompatible_features & ~QCOW2_INCOMPAT_COMPRESSION;
    if (incompat)
        return img_error(-ENOTSUP,
                         "Cannot downgrade an image with incompatible features 0x%" PRIx64 " set",
                         incompat);
    bool found_compressed = false;
    ret = expand_zero_clusters(img, p, &found_compressed);
    if (ret < 0) {
        img_error_prefix("Failed to turn zero into data clusters");
        return ret;
    }
    if (s->hdr.incompatible_features & QCOW2_INCOMPAT_COMPRESSION) {
        if (found_compressed)
            return img_error(-ENOTSUP, "Cannot downgrade an image with zstd compression type "
                                       "and existing compressed clusters");
        s->hdr.incompatible_features &= ~QCOW2_INCOMPAT_COMPRESSION;
        s->hdr.compression_type = QCOW2_COMPRESSION_ZLIB;
    }
    /* Compatible and autoclear features are simply dropped, as QEMU drops them. */
    struct qcow2_header saved = s->hdr;
    s->hdr.compatible_features = 0;
    s->hdr.autoclear_features = 0;
    ret = write_header_version(img, 2);
    if (ret < 0) {
        s->hdr = saved;
        return ret;
    }
    s->data_file_raw = false;
    return 0;
}

int qcow2_amend_downgrade(struct img *img, struct qcow2_amend_progress *p)
{
    struct qcow2_state *s = img->priv;
    int ret = check_downgrade(img);
    if (ret < 0)
        return ret;
    pthread_mutex_lock(&s->lock);
    ret = downgrade_locked(img, p);
    pthread_mutex_unlock(&s->lock);
    return ret;
}
