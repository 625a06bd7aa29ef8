/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Enabled persistent bitmaps follow the guest's writes, as QEMU keeps them
 * (block/qcow2-bitmap.c qcow2_load_dirty_bitmaps() and qcow2_store_persistent_dirty_bitmaps()):
 * before the first change the enabled, consistent bitmaps are loaded and marked in use in the
 * file; writes, zeroes and discards then set their bits in memory; at close they are stored
 * in new clusters with the in-use flag cleared. A crash in between leaves them marked in use,
 * which tells QEMU (and this library) not to trust them: a backup never misses a write.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_bitmap.h"
#include "formats/qcow2/qcow2_writer.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* Rewrites the flags of every directory entry in place (each a 4-byte field), fsynced. */
static int write_flags_in_place(struct qcow2_state *s)
{
    uint64_t size = s->ext.bitmap_directory_size;
    uint8_t *dir = malloc(size ? size : 1);
    if (!dir)
        return img_error(-ENOMEM, "out of memory");
    int ret = io_pread(s->file, dir, size, s->ext.bitmap_directory_offset);
    uint64_t pos = 0;
    for (uint32_t i = 0; ret == 0 && i < s->nb_bitmaps; i++) {
        if (pos + QCOW2_BITMAP_ENTRY_BYTES > size) {
            ret = img_error(-EIO, "qcow2: the bitmap directory is broken");
            break;
        }
        uint8_t *e = dir + pos;
        store_be32(e + 12, s->bitmaps[i].flags);
        uint64_t len = QCOW2_BITMAP_ENTRY_BYTES + (uint64_t)load_be32(e + 20) + load_be16(e + 18);
        pos += align_up_u64(len, 8);
    }
    if (ret == 0)
        ret = io_pwrite(s->file, dir, size, s->ext.bitmap_directory_offset);
    if (ret == 0)
        ret = io_fsync(s->file);
    free(dir);
    if (ret < 0)
        return img_error(ret, "qcow2: cannot mark the persistent bitmaps in use: %s",
                         img_strerror(ret));
    return 0;
}

/*
 * The most bitmap bytes tracking holds in memory: an image may list thousands of bitmaps of up
 * to 512 MiB each. Past it, a bitmap is treated as one that could not be loaded (marked in use,
 * so known stale) rather than letting a hostile image take the machine's memory.
 */
#define TRACKING_MEMORY_BUDGET (1ull << 30)

int qcow2_bitmaps_begin_tracking(struct img *img)
{
    struct qcow2_state *s = img->priv;
    bool load_failed = false;
    uint64_t budget = TRACKING_MEMORY_BUDGET;
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        struct qcow2_bitmap *b = &s->bitmaps[i];
        if (!(b->flags & QCOW2_BITMAP_AUTO) || (b->flags & QCOW2_BITMAP_IN_USE))
            continue;
        uint64_t bytes =
            qcow2_bitmap_nb_bytes(qcow2_bitmap_nb_bits(img->size, b->granularity_bits));
        if (!b->bits && bytes > budget) {
            load_failed = true;
            continue;
        }
        if (!b->bits)
            budget -= bytes;
        if (qcow2_bitmap_load_bits(s, b, img->size) < 0) {
            load_failed = true;
            continue;
        }
    }
    uint32_t *old = malloc((s->nb_bitmaps ? s->nb_bitmaps : 1) * sizeof(*old));
    if (!old)
        return img_error(-ENOMEM, "out of memory");
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        struct qcow2_bitmap *b = &s->bitmaps[i];
        old[i] = b->flags;
        /*
         * A bitmap that could not be loaded cannot follow the writes: marked in use and never
         * cleared, it is known stale, as every bitmap was before tracking existed.
         */
        if (load_failed || ((b->flags & QCOW2_BITMAP_AUTO) && b->bits))
            b->flags |= QCOW2_BITMAP_IN_USE;
    }
    int ret = write_flags_in_place(s);
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        struct qcow2_bitmap *b = &s->bitmaps[i];
        if (ret < 0)
            b->flags = old[i];
        else if (!(old[i] & QCOW2_BITMAP_IN_USE) && (b->flags & QCOW2_BITMAP_AUTO) && b->bits)
            b->tracking = true;
    }
    free(old);
    return ret;
}

/*
 * Sets bits [first, last]: whole bytes with one store each, the partial bytes at the ends bit
 * by bit. Atomic, as other writers set bits of the same bytes without a lock.
 */
static void set_bits(uint8_t *bits, uint64_t first, uint64_t last)
{
    for (; first <= last && first % 8; first++)
        __atomic_fetch_or(&bits[first / 8], (uint8_t)(1u << (first % 8)), __ATOMIC_RELAXED);
    for (; first <= last && last - first >= 7; first += 8)
        __atomic_store_n(&bits[first / 8], (uint8_t)0xff, __ATOMIC_RELAXED);
    for (; first <= last; first++)
        __atomic_fetch_or(&bits[first / 8], (uint8_t)(1u << (first % 8)), __ATOMIC_RELAXED);
}

void qcow2_bitmaps_mark_dirty(struct qcow2_state *s, uint64_t offset, uint64_t length)
{
    if (length == 0 || !s->writer || !__atomic_load_n(&s->writer->bitmaps_in_use, __ATOMIC_ACQUIRE))
        return;
    /* The array and the tracking flags change only with the handle drained. */
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        struct qcow2_bitmap *b = &s->bitmaps[i];
        if (!b->tracking || !b->bits)
            continue;
        set_bits(b->bits, offset >> b->granularity_bits,
                 (offset + length - 1) >> b->granularity_bits);
    }
}

int qcow2_bitmaps_end_tracking(struct img *img)
{
    struct qcow2_state *s = img->priv;
    bool any = false;
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        struct qcow2_bitmap *b = &s->bitmaps[i];
        if (!b->tracking)
            continue;
        b->flags &= ~QCOW2_BITMAP_IN_USE;
        b->tracking = false;
        any = true;
    }
    return any ? qcow2_bitmaps_store(img, NULL, 0) : 0;
}

int qcow2_bitmaps_before_write(struct qcow2_state *s)
{
    if (!s->writer || __atomic_load_n(&s->writer->bitmaps_in_use, __ATOMIC_ACQUIRE))
        return 0;
    pthread_mutex_lock(&s->lock);
    int ret = 0;
    if (s->ext.has_bitmaps && s->nb_bitmaps && !s->writer->bitmaps_in_use)
        ret = qcow2_writer_begin_change(s);
    pthread_mutex_unlock(&s->lock);
    return ret;
}
