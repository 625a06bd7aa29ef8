/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The write side's state: set up on a writable open, torn down on close. Also the bookkeeping
 * every write entry shares: allocations in progress (so two writers never allocate the same
 * guest cluster), the dirty bit of lazy refcounts, and persistent bitmaps that stop being
 * accurate once this library (which does not track them) changes the image.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_check.h"
#include "formats/qcow2/qcow2_bitmap.h"
#include "formats/qcow2/qcow2_writer.h"
#include "image.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* L2 bytes held dirty in memory before they are written back. */
#define DIRTY_L2_BYTES (2u << 20)
#define MIN_DIRTY_SLICES 16u
/* Deferred refcount decreases held before a write-back. */
#define MAX_PENDING_FREES 4096u

bool qcow2_inflight_overlaps(const struct qcow2_writer *w, uint64_t first, uint64_t count)
{
    for (const struct qcow2_inflight *n = w->inflight; n; n = n->next)
        if (n->first < first + count && first < n->end)
            return true;
    return false;
}

void qcow2_inflight_wait(struct qcow2_state *s, uint64_t first, uint64_t count)
{
    while (qcow2_inflight_overlaps(s->writer, first, count))
        pthread_cond_wait(&s->writer->inflight_done, &s->lock);
}

int qcow2_inflight_add(struct qcow2_state *s, struct qcow2_inflight *node, uint64_t first,
                       uint64_t count)
{
    node->first = first;
    node->end = first + count;
    node->next = s->writer->inflight;
    s->writer->inflight = node;
    return 0;
}

void qcow2_inflight_remove(struct qcow2_state *s, struct qcow2_inflight *node)
{
    struct qcow2_inflight **pp = &s->writer->inflight;
    while (*pp && *pp != node)
        pp = &(*pp)->next;
    if (*pp)
        *pp = node->next;
    pthread_cond_broadcast(&s->writer->inflight_done);
}

int qcow2_retire_reserve_many(struct qcow2_writer *w, size_t count)
{
    if (w->cap_retired - w->nb_retired >= count)
        return 0;
    size_t cap = w->cap_retired ? w->cap_retired : 4;
    while (cap - w->nb_retired < count) {
        if (cap > SIZE_MAX / 2 / sizeof(void *))
            return img_error(-ENOMEM, "out of memory");
        cap *= 2;
    }
    void **grown = realloc(w->retired, cap * sizeof(*grown));
    if (!grown)
        return img_error(-ENOMEM, "out of memory");
    w->retired = grown;
    w->cap_retired = cap;
    return 0;
}

int qcow2_retire_reserve(struct qcow2_writer *w)
{
    return qcow2_retire_reserve_many(w, 1);
}

void qcow2_retire_commit(struct qcow2_writer *w, void *ptr)
{
    /* Reserved beforehand: there is always room. */
    if (ptr)
        w->retired[w->nb_retired++] = ptr;
}

int qcow2_writer_usable(const struct qcow2_state *s)
{
    if (!s->writer || !__atomic_load_n(&s->writer->corrupt, __ATOMIC_ACQUIRE))
        return 0;
    if (s->writer->img->flags & IMG_OPEN_CHECK)
        return img_error(-EIO, "qcow2: the image is marked corrupt or was not closed cleanly; "
                               "writes are refused until a check repairs it");
    return img_error(-EIO, "qcow2: the image was found corrupt; further writes are refused");
}

int qcow2_writer_mark_corrupt(struct qcow2_state *s, const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    __atomic_store_n(&s->writer->corrupt, true, __ATOMIC_RELEASE);
    /* Version 2 has no corrupt bit: there only this handle knows. */
    const char *note =
        s->hdr.version < 3 ? " (a version 2 image has no corrupt bit to record it)" : "";
    char failed[300] = "";
    if (s->hdr.version >= 3 && !(s->hdr.incompatible_features & QCOW2_INCOMPAT_CORRUPT)) {
        int ret = qcow2_write_incompat(s, s->hdr.incompatible_features | QCOW2_INCOMPAT_CORRUPT);
        if (ret < 0)
            snprintf(failed, sizeof(failed), " (the corrupt bit could not be written: %s)",
                     img_last_error());
    }
    return img_error(-EIO, "qcow2: marking image as corrupt: %s; further writes are refused%s%s",
                     reason, note, failed);
}

int qcow2_writer_begin_change(struct qcow2_state *s)
{
    struct qcow2_writer *w = s->writer;
    int usable = qcow2_writer_usable(s);
    if (usable < 0)
        return usable;
    if ((s->hdr.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) &&
        !(s->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        int ret = qcow2_write_incompat(s, s->hdr.incompatible_features | QCOW2_INCOMPAT_DIRTY);
        if (ret < 0)
            return ret;
        w->set_dirty_bit = true;
        w->img->dirty = true;
    }
    if (s->ext.has_bitmaps && s->nb_bitmaps && !w->bitmaps_in_use) {
        int ret = qcow2_bitmaps_begin_tracking(w->img);
        if (ret < 0)
            return ret;
        __atomic_store_n(&w->bitmaps_in_use, true, __ATOMIC_RELEASE);
    }
    return 0;
}

int qcow2_writer_maybe_flush(struct qcow2_state *s)
{
    struct qcow2_writer *w = s->writer;
    if (w->nb_dirty >= w->max_dirty || w->nb_frees >= MAX_PENDING_FREES)
        return qcow2_flush_caches(s, false);
    return 0;
}

/*
 * A dirty image (lazy refcounts, not closed cleanly) may have refcounts that lag behind the
 * tables: repair them before anything allocates.
 */
static int repair_dirty_image(struct img *img, struct qcow2_state *s)
{
    struct img_check_result result;
    memset(&result, 0, sizeof(result));
    int ret = qcow2_check(img, IMG_CHECK_REPAIR_ERRORS | IMG_CHECK_REPAIR_LEAKS, &result);
    if (ret < 0) {
        img_error_prefix("qcow2: cannot repair the refcounts of a dirty image");
        return ret;
    }
    if (result.corruptions > result.corruptions_fixed)
        return img_error(-EIO,
                         "qcow2: the image was not closed cleanly and %" PRIu64
                         " errors remain after repairing it",
                         result.corruptions - result.corruptions_fixed);
    if (s->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY)
        return qcow2_write_incompat(s, s->hdr.incompatible_features & ~QCOW2_INCOMPAT_DIRTY);
    return 0;
}

int qcow2_writer_open(struct img *img)
{
    struct qcow2_state *s = img->priv;
    int ret = qcow2_refcount_load_table(s);
    if (ret < 0)
        return ret;
    struct qcow2_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return img_error(-ENOMEM, "out of memory");
    w->img = img;
    pthread_cond_init(&w->inflight_done, NULL);
    int64_t file_size = io_file_size(s->file);
    if (file_size < 0) {
        pthread_cond_destroy(&w->inflight_done);
        free(w);
        return img_error((int)file_size, "qcow2: cannot read the image size");
    }
    w->end_cluster = align_up_u64((uint64_t)file_size, s->cluster_size) >> s->cluster_bits;
    uint32_t slice = qcow2_l2_slice_bytes(s);
    w->max_dirty = DIRTY_L2_BYTES / slice;
    if (w->max_dirty < MIN_DIRTY_SLICES)
        w->max_dirty = MIN_DIRTY_SLICES;
    s->writer = w;

    uint64_t doubtful = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT;
    if ((img->flags & IMG_OPEN_CHECK) && (s->hdr.incompatible_features & doubtful)) {
        /*
         * Opened for checking: the check reports and repairs what the open would have repaired
         * silently. Until it has, allocating could hand out clusters still in use.
         */
        w->corrupt = true;
        return 0;
    }
    if (s->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY) {
        ret = repair_dirty_image(img, s);
        img->dirty = (s->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY) != 0;
        if (ret < 0)
            return ret; /* the caller's close frees the writer */
    }
    return 0;
}

void qcow2_writer_close(struct qcow2_state *s)
{
    struct qcow2_writer *w = s ? s->writer : NULL;
    if (!w)
        return;
    pthread_mutex_lock(&s->lock);
    /* The bitmaps that followed this session's writes are stored and consistent again. */
    if (w->bitmaps_in_use && !w->corrupt)
        qcow2_bitmaps_end_tracking(w->img);
    int ret = qcow2_flush_caches(s, true);
    /* Only a session that wrote everything back may call the image clean again. */
    if (ret == 0 && w->set_dirty_bit)
        qcow2_write_incompat(s, s->hdr.incompatible_features & ~QCOW2_INCOMPAT_DIRTY);
    /* Whatever could not be written stays unwritten; the pins go with the cache. */
    for (size_t i = 0; i < w->nb_dirty; i++)
        qcow2_cache_put(s->l2_cache, w->dirty[i].entry);
    pthread_mutex_unlock(&s->lock);
    free(w->dirty);
    free(w->frees);
    for (size_t i = 0; i < w->nb_retired; i++)
        free(w->retired[i]);
    free(w->retired);
    qcow2_overlap_free(w->overlap);
    pthread_cond_destroy(&w->inflight_done);
    free(w);
    s->writer = NULL;
}
