/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The persistent dirty bitmap directory. Bitmap contents are not interpreted here; the
 * directory is read so that info can list the bitmaps and a damaged one is refused as QEMU
 * refuses it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_bitmap.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

#define BITMAP_TYPE_DIRTY_TRACKING 1
#define BITMAP_MIN_GRANULARITY_BITS 9
#define BITMAP_MAX_GRANULARITY_BITS 31
#define BITMAP_MAX_TABLE_ENTRIES 0x8000000u
#define BITMAP_MAX_PHYS_BYTES 0x20000000ull
#define BITMAP_KNOWN_FLAGS                                                                         \
    (QCOW2_BITMAP_IN_USE | QCOW2_BITMAP_AUTO | QCOW2_BITMAP_EXTRA_DATA_COMPATIBLE)

/* The constraints QEMU puts on a directory entry before using the bitmap. */
static bool entry_acceptable(const struct qcow2_state *s, const struct qcow2_bitmap *b,
                             uint32_t name_size, uint64_t virtual_size)
{
    if (b->table_size == 0 || b->table_offset == 0 || (b->table_offset & (s->cluster_size - 1)) ||
        b->table_size > BITMAP_MAX_TABLE_ENTRIES ||
        b->granularity_bits < BITMAP_MIN_GRANULARITY_BITS ||
        b->granularity_bits > BITMAP_MAX_GRANULARITY_BITS || (b->flags & ~BITMAP_KNOWN_FLAGS) ||
        name_size == 0 || name_size > QCOW2_MAX_BITMAP_NAME ||
        b->type != BITMAP_TYPE_DIRTY_TRACKING)
        return false;
    uint64_t phys_bytes = (uint64_t)b->table_size * s->cluster_size;
    if (phys_bytes > BITMAP_MAX_PHYS_BYTES)
        return false;
    /* A consistent bitmap must have room for the whole disk (bits of 2^granularity bytes). */
    if (!(b->flags & QCOW2_BITMAP_IN_USE) &&
        virtual_size > ((phys_bytes * 8) << b->granularity_bits))
        return false;
    return true;
}

static int parse_directory(struct qcow2_state *s, const uint8_t *dir, uint64_t size,
                           uint64_t virtual_size)
{
    uint64_t pos = 0;
    uint32_t n = 0;
    while (pos < size) {
        if (size - pos < QCOW2_BITMAP_ENTRY_BYTES || n >= s->ext.nb_bitmaps)
            return img_error(-EIO, "qcow2: the bitmap directory is broken");
        const uint8_t *e = dir + pos;
        struct qcow2_bitmap *b = &s->bitmaps[n];
        b->table_offset = load_be64(e);
        b->table_size = load_be32(e + 8);
        b->flags = load_be32(e + 12);
        b->type = e[16];
        b->granularity_bits = e[17];
        uint16_t name_size = load_be16(e + 18);
        uint32_t extra_size = load_be32(e + 20);
        uint64_t entry_bytes =
            align_up_u64((uint64_t)QCOW2_BITMAP_ENTRY_BYTES + name_size + extra_size, 8);
        if (entry_bytes > size - pos)
            return img_error(-EIO, "qcow2: the bitmap directory is broken");
        if (extra_size != 0)
            return img_error(-ENOTSUP, "qcow2: bitmap extra data is not supported");
        b->name = malloc((size_t)name_size + 1);
        if (!b->name)
            return img_error(-ENOMEM, "out of memory");
        memcpy(b->name, e + QCOW2_BITMAP_ENTRY_BYTES + extra_size, name_size);
        b->name[name_size] = '\0';
        s->nb_bitmaps = ++n;
        if (!entry_acceptable(s, b, name_size, virtual_size))
            return img_error(-EIO, "qcow2: bitmap '%s' does not satisfy the constraints", b->name);
        pos += entry_bytes;
    }
    if (n != s->ext.nb_bitmaps)
        return img_error(-EIO,
                         "qcow2: the bitmap directory lists %" PRIu32
                         " bitmaps, the header extension %" PRIu32,
                         n, s->ext.nb_bitmaps);
    return 0;
}

int qcow2_bitmaps_read(struct qcow2_state *s, uint64_t virtual_size)
{
    if (!s->ext.has_bitmaps)
        return 0;
    uint64_t size = s->ext.bitmap_directory_size;
    uint64_t offset = s->ext.bitmap_directory_offset;
    uint64_t end;
    if (size == 0 || add_overflows_u64(offset, size, &end) || end > s->file_size)
        return img_error(
            -EIO, "qcow2: bitmap directory offset 0x%" PRIx64 " is beyond the end of the file",
            offset);
    /* Limited to QCOW2_MAX_BITMAP_DIRECTORY_BYTES when the extension was parsed. */
    uint8_t *dir = malloc(size);
    s->bitmaps = calloc(s->ext.nb_bitmaps, sizeof(*s->bitmaps));
    int ret;
    if (!dir || !s->bitmaps) {
        ret = img_error(-ENOMEM, "out of memory");
        goto out;
    }
    ret = io_pread(s->file, dir, size, offset);
    if (ret < 0)
        goto out;
    ret = parse_directory(s, dir, size, virtual_size);
out:
    free(dir);
    if (ret < 0)
        qcow2_bitmaps_free(s);
    return ret;
}

void qcow2_bitmaps_free(struct qcow2_state *s)
{
    for (uint32_t i = 0; s->bitmaps && i < s->nb_bitmaps; i++)
        qcow2_bitmap_release(&s->bitmaps[i]);
    free(s->bitmaps);
    s->bitmaps = NULL;
    s->nb_bitmaps = 0;
}
