/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * zero() and discard(), as QEMU 7.2 does them.
 *
 * zero: version 3 images mark whole clusters (or, with extended L2 entries, whole subclusters)
 * as reading zeros: with MAY_UNMAP the host cluster is released, without it the allocation is
 * kept (a zero flag on an allocated cluster). Version 2 has no zero flag: without a backing file
 * and with MAY_UNMAP whole clusters are deallocated, otherwise zeros are written. Parts of
 * clusters are always zeroed by writing zeros through the normal write path.
 *
 * discard: whole clusters only (a discard is a hint). The clusters are released; on version 3
 * images (or with extended L2 entries) they read as zeros afterwards when the image has a
 * backing file or they held data, so that the backing file does not show through. A version 2
 * image with a backing file cannot express that and ignores the discard.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_bitmap.h"
#include "formats/qcow2/qcow2_writer.h"
#include "image.h"
#include "io/io.h"
#include "util/checked.h"

#define ALL_ZEROES_BITMAP (0xffffffffull << 32)

static bool is_allocated(const struct qcow2_state *s, uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return true;
    return qcow2_l2_entry_offset(entry) != 0 ||
           (qcow2_has_data_file(s) && (entry & QCOW2_OFLAG_COPIED));
}

/* Queues the release of what an L2 entry pointed at (nothing in an external data file). */
static int release_old(struct qcow2_state *s, uint64_t entry)
{
    if (qcow2_has_data_file(s) || !is_allocated(s, entry))
        return 0;
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        uint64_t off, len;
        qcow2_compressed_decode(s, entry, &off, &len);
        return qcow2_free_clusters(s, off, len);
    }
    return qcow2_free_clusters(s, qcow2_l2_entry_offset(entry), s->cluster_size);
}

/* Replaces the L2 entry of guest cluster `c` (s->lock held, no allocation in progress on it). */
static int replace_entry(struct qcow2_state *s, uint64_t c, uint64_t entry, uint64_t bitmap)
{
    int ret = qcow2_writer_begin_change(s);
    if (ret == 0)
        ret = qcow2_l2_prepare(s, c);
    if (ret == 0)
        ret = qcow2_l2_set(s, c, entry, bitmap);
    return ret;
}

struct l2_view {
    uint64_t entry, bitmap;
    bool no_l2;
};

static int look(struct qcow2_state *s, uint64_t c, struct l2_view *v)
{
    struct qcow2_l2_cursor cur = {0};
    int ret = qcow2_l2_lookup(s, &cur, c, &v->entry, &v->bitmap, &v->no_l2);
    qcow2_l2_cursor_release(s, &cur);
    return ret;
}

/* Version 3: whole cluster `c` reads as zeros. */
static int zero_cluster(struct qcow2_state *s, uint64_t c, unsigned flags)
{
    struct l2_view v;
    int ret = look(s, c, &v);
    if (ret < 0)
        return ret;
    uint64_t old = v.no_l2 ? 0 : v.entry, old_bitmap = v.no_l2 ? 0 : v.bitmap;
    bool allocated = is_allocated(s, old);
    /* A raw data file must keep its 1:1 mapping: never unmap there. */
    bool unmap = (old & QCOW2_OFLAG_COMPRESSED) ||
                 ((flags & IMG_ZERO_MAY_UNMAP) && allocated && !s->data_file_raw);
    uint64_t entry = unmap ? 0 : old, bitmap = old_bitmap;
    if (s->extended_l2)
        bitmap = ALL_ZEROES_BITMAP;
    else
        entry |= QCOW2_OFLAG_ZERO;
    if (entry == old && bitmap == old_bitmap)
        return 0;
    ret = replace_entry(s, c, entry, bitmap);
    if (ret == 0 && unmap)
        ret = release_old(s, old);
    return ret;
}

/* Extended L2: subclusters [first, first + count) of cluster `c` read as zeros. */
static int zero_subclusters(struct qcow2_state *s, uint64_t c, unsigned first, unsigned count,
                            bool *fallback)
{
    struct l2_view v;
    *fallback = false;
    int ret = look(s, c, &v);
    if (ret < 0)
        return ret;
    uint64_t old = v.no_l2 ? 0 : v.entry, old_bitmap = v.no_l2 ? 0 : v.bitmap;
    if (old & QCOW2_OFLAG_COMPRESSED) {
        *fallback = true; /* compressed clusters have no subclusters: write zeros instead */
        return 0;
    }
    uint64_t mask = ((count == 32 ? 0xffffffffull : ((1ull << count) - 1)) << first);
    uint64_t bitmap = (old_bitmap & ~mask) | (mask << 32);
    if (bitmap == old_bitmap)
        return 0;
    return replace_entry(s, c, old, bitmap);
}

/* Version 2 without a backing file: whole cluster `c` becomes unallocated. */
static int deallocate_cluster(struct qcow2_state *s, uint64_t c)
{
    struct l2_view v;
    int ret = look(s, c, &v);
    if (ret < 0 || v.no_l2 || v.entry == 0)
        return ret;
    ret = replace_entry(s, c, 0, 0);
    if (ret == 0)
        ret = release_old(s, v.entry);
    return ret;
}

/* Runs `fn` on whole clusters [first, end) with s->lock held, waiting for allocations. */
static int for_clusters(struct img *img, uint64_t first, uint64_t end,
                        int (*fn)(struct img *img, uint64_t c, void *arg), void *arg)
{
    struct qcow2_state *s = img->priv;
    int ret = 0;
    for (uint64_t c = first; ret == 0 && c < end;) {
        uint64_t table_end = (c | (s->l2_entries - 1)) + 1;
        uint64_t stop = min_u64(end, table_end);
        pthread_mutex_lock(&s->lock);
        for (; ret == 0 && c < stop; c++) {
            qcow2_inflight_wait(s, c, 1);
            ret = fn(img, c, arg);
        }
        if (ret == 0)
            ret = qcow2_writer_maybe_flush(s);
        pthread_mutex_unlock(&s->lock);
    }
    return ret;
}

static int zero_one(struct img *img, uint64_t c, void *arg)
{
    return zero_cluster(img->priv, c, *(unsigned *)arg);
}

static int deallocate_one(struct img *img, uint64_t c, void *arg)
{
    (void)arg;
    return deallocate_cluster(img->priv, c);
}

/* Version 3, [offset, end) aligned to the zero flag's unit (subclusters or clusters). */
static int zero_aligned(struct img *img, uint64_t offset, uint64_t end, unsigned flags)
{
    struct qcow2_state *s = img->priv;
    int ret = 0;
    for (uint64_t a = offset; ret == 0 && a < end;) {
        uint64_t c = a >> s->cluster_bits;
        uint64_t cstart = c << s->cluster_bits, cend = cstart + s->cluster_size;
        if (a == cstart && end >= cend) {
            uint64_t whole_end = align_down_u64(end, s->cluster_size);
            ret = for_clusters(img, c, whole_end >> s->cluster_bits, zero_one, &flags);
            a = whole_end;
            continue;
        }
        uint64_t b = min_u64(end, cend);
        bool fallback = !s->extended_l2;
        if (s->extended_l2) {
            unsigned sc = (unsigned)((a - cstart) >> s->subcluster_bits);
            unsigned n = (unsigned)((b - a) >> s->subcluster_bits);
            pthread_mutex_lock(&s->lock);
            qcow2_inflight_wait(s, c, 1);
            ret = zero_subclusters(s, c, sc, n, &fallback);
            pthread_mutex_unlock(&s->lock);
        }
        if (ret == 0 && fallback)
            ret = qcow2_write_through(img, a, NULL, b - a);
        a = b;
    }
    return ret;
}

static int zero_range(struct img *img, struct qcow2_state *s, uint64_t offset, uint64_t length,
                      unsigned flags);

int qcow2_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags)
{
    struct qcow2_state *s = img->priv;
    if (!s->writer)
        return img_error(-EROFS, "qcow2: the image is opened read-only");
    if (length == 0)
        return 0;
    int ret = qcow2_writer_usable(s);
    if (ret == 0)
        ret = qcow2_bitmaps_before_write(s);
    if (ret < 0)
        return ret;
    ret = zero_range(img, s, offset, length, flags);
    qcow2_bitmaps_mark_dirty(s, offset, length);
    return ret;
}

static int zero_range(struct img *img, struct qcow2_state *s, uint64_t offset, uint64_t length,
                      unsigned flags)
{
    int ret;
    uint64_t end = offset + length;
    if (s->data_file_raw && s->data_file) {
        /* The raw data file must read as the guest sees the image. */
        ret = qcow2_write_zero_bytes(s->data_file, offset, length);
        if (ret < 0)
            return ret;
    }

    if (s->hdr.version < 3) {
        if (!(flags & IMG_ZERO_MAY_UNMAP) || img->backing_name)
            return qcow2_write_through(img, offset, NULL, length);
        uint64_t a = align_up_u64(offset, s->cluster_size);
        uint64_t b = align_down_u64(end, s->cluster_size);
        if (end == img->size)
            b = align_up_u64(end, s->cluster_size); /* the image's last, partial cluster */
        if (a >= b)
            return qcow2_write_through(img, offset, NULL, length);
        ret = qcow2_write_through(img, offset, NULL, a - offset);
        if (ret == 0)
            ret =
                for_clusters(img, a >> s->cluster_bits, b >> s->cluster_bits, deallocate_one, NULL);
        if (ret == 0 && end > b)
            ret = qcow2_write_through(img, b, NULL, end - b);
        return ret;
    }

    /* Units the zero flag can express: subclusters with extended L2 entries, else clusters. */
    uint64_t unit = s->subcluster_size;
    uint64_t a = align_up_u64(offset, unit);
    uint64_t b = align_down_u64(end, unit);
    if (end == img->size)
        b = align_up_u64(end, unit); /* the image's last, partial unit reads as zeros past it */
    if (a >= b)
        return qcow2_write_through(img, offset, NULL, length);
    ret = qcow2_write_through(img, offset, NULL, a - offset);
    if (ret == 0)
        ret = zero_aligned(img, a, b, flags);
    if (ret == 0 && end > b)
        ret = qcow2_write_through(img, b, NULL, end - b);
    return ret;
}

static int discard_one(struct img *img, uint64_t c, void *arg)
{
    struct qcow2_state *s = img->priv;
    (void)arg;
    struct l2_view v;
    int ret = look(s, c, &v);
    if (ret < 0)
        return ret;
    uint64_t old = v.no_l2 ? 0 : v.entry, old_bitmap = v.no_l2 ? 0 : v.bitmap;
    uint64_t entry = old, bitmap = old_bitmap;
    if (img->backing_name || is_allocated(s, old)) {
        if (s->extended_l2) {
            entry = 0;
            bitmap = ALL_ZEROES_BITMAP;
        } else {
            entry = s->hdr.version >= 3 ? QCOW2_OFLAG_ZERO : 0;
        }
    }
    if (entry == old && bitmap == old_bitmap)
        return 0;
    ret = replace_entry(s, c, entry, bitmap);
    if (ret == 0 && is_allocated(s, old)) {
        if (s->data_file && !(old & QCOW2_OFLAG_COMPRESSED))
            (void)io_punch_hole(s->data_file, qcow2_l2_entry_offset(old), s->cluster_size);
        ret = release_old(s, old);
    }
    return ret;
}

int qcow2_discard(struct img *img, uint64_t offset, uint64_t length)
{
    struct qcow2_state *s = img->priv;
    if (!s->writer)
        return img_error(-EROFS, "qcow2: the image is opened read-only");
    int usable = qcow2_writer_usable(s);
    if (usable == 0)
        usable = qcow2_bitmaps_before_write(s);
    if (usable < 0)
        return usable;
    qcow2_bitmaps_mark_dirty(s, offset, length);
    /* Nothing could make the range read as zeros there: a discard is only a hint. */
    if ((s->hdr.version < 3 && img->backing_name) || s->data_file_raw)
        return 0;
    uint64_t end = offset + length;
    uint64_t a = align_up_u64(offset, s->cluster_size);
    uint64_t b = align_down_u64(end, s->cluster_size);
    if (end == img->size)
        b = align_up_u64(end, s->cluster_size); /* the image's last, partial cluster */
    if (a >= b)
        return 0;
    return for_clusters(img, a >> s->cluster_bits, b >> s->cluster_bits, discard_one, NULL);
}
