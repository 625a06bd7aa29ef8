/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_QCOW2_BITMAP_H
#define IMG_QCOW2_BITMAP_H

/*
 * Persistent dirty bitmaps (docs/interop/qcow2.txt, "Bitmaps extension"; QEMU's
 * block/qcow2-bitmap.c):
 *   qcow2_bitmaps.c       reading and checking the directory at open
 *   qcow2_bitmap_store.c  loading a bitmap's table and bits; storing bitmaps and the directory
 *   qcow2_bitmap_ops.c    the backend's bitmap entries (list, add, remove, clear, ...)
 *   qcow2_bitmap_track.c  marking enabled bitmaps dirty as the guest writes
 *
 * Everything here runs with s->lock held, but qcow2_bitmaps_mark_dirty() (lock-free).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/qcow2/qcow2.h"

struct img;

/* QEMU's limits (block/qcow2-bitmap.c). */
#define QCOW2_BITMAP_MIN_GRANULARITY_BITS 9u
#define QCOW2_BITMAP_MAX_GRANULARITY_BITS 31u
#define QCOW2_BITMAP_MAX_PHYS_BYTES 0x20000000ull
#define QCOW2_BITMAP_TYPE_DIRTY_TRACKING 1u

/* Granules of 2^granularity_bits bytes covering `size` bytes. */
static inline uint64_t qcow2_bitmap_nb_bits(uint64_t size, uint8_t granularity_bits)
{
    uint64_t g = 1ull << granularity_bits;
    return size / g + (size % g != 0);
}

/* Bytes the bits of a bitmap take in memory: whole 64-bit words, as QEMU serialises them. */
static inline uint64_t qcow2_bitmap_nb_bytes(uint64_t nb_bits)
{
    return (nb_bits + 63) / 64 * 8;
}

/* Loads b->table (if not yet) and b->bits (if not yet), checking every entry. */
int qcow2_bitmap_load_table(struct qcow2_state *s, struct qcow2_bitmap *b);
int qcow2_bitmap_load_bits(struct qcow2_state *s, struct qcow2_bitmap *b, uint64_t virtual_size);

/*
 * Stores the bitmaps: every loaded one (b->bits) into newly allocated clusters, then a new
 * directory; fsync; then the header's bitmaps extension and autoclear bit are switched to it;
 * then the clusters of the replaced tables and directory, and of the `dropped` bitmaps (whose
 * tables are loaded), are freed. A bitmap without bits keeps its table. On failure the image
 * still shows the old directory (new clusters may leak). Needs a writable image.
 */
int qcow2_bitmaps_store(struct img *img, struct qcow2_bitmap *dropped, size_t nb_dropped);

/* Frees what one bitmap holds in memory. */
void qcow2_bitmap_release(struct qcow2_bitmap *b);

/*
 * Before the first change of a writable session: loads the enabled, consistent bitmaps and
 * marks them in use in the file (in place, fsynced), so that a crash leaves them marked
 * inconsistent, as QEMU leaves them. From then on writes set their bits.
 */
int qcow2_bitmaps_begin_tracking(struct img *img);
/*
 * For entries that change guest content without alloc() (zero, discard, compressed writes):
 * starts the tracking before the change when it has not started yet (takes s->lock).
 */
int qcow2_bitmaps_before_write(struct qcow2_state *s);
/* Sets the bits of the tracked bitmaps for guest bytes [offset, offset + length). */
void qcow2_bitmaps_mark_dirty(struct qcow2_state *s, uint64_t offset, uint64_t length);
/* At close: stores the tracked bitmaps with the in-use flag cleared (s->lock held). */
int qcow2_bitmaps_end_tracking(struct img *img);

/* The backend's bitmap entries (format.h). */
struct img_bitmap_desc;
struct img_bitmap_change;
int qcow2_bitmap_list(struct img *img, struct img_bitmap_desc **out, size_t *count);
int qcow2_bitmap_read(struct img *img, const char *name, uint8_t **bits, uint64_t *size,
                      unsigned *granularity_bits);
int qcow2_bitmap_change(struct img *img, const struct img_bitmap_change *change);

#endif
