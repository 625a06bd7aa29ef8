/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * L1 and L2 table I/O. L2 tables are read in 4 KiB slices through a small LRU cache, so memory
 * stays bounded whatever the table size (up to 1 GiB with 64 MiB clusters). Everything here
 * runs under the state's `lock`, the slice reads included: a miss costs one 4 KiB read, and
 * holding the lock keeps a slice from being filled twice or replaced while read.
 * Updates are written in whole sectors, as QEMU writes them.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "error.h"
#include "formats/qed/qed.h"
#include "io/io.h"
#include "util/endian.h"

#define ENTRIES_PER_SECTOR (512u / 8u)

void qed_cache_clear(struct qed_state *s)
{
    for (unsigned i = 0; i < QED_CACHE_SLOTS; i++)
        s->cache[i].l2_offset = 0;
}

int qed_l2_slice(struct img *img, uint64_t l2_offset, uint64_t slice, uint64_t **entries)
{
    struct qed_state *s = img->priv;
    struct qed_slot *victim = &s->cache[0];
    for (unsigned i = 0; i < QED_CACHE_SLOTS; i++) {
        struct qed_slot *slot = &s->cache[i];
        if (slot->l2_offset == l2_offset && slot->slice == slice) {
            slot->used = ++s->tick;
            *entries = slot->entries;
            return 0;
        }
        if (slot->used < victim->used)
            victim = slot;
    }
    uint8_t *raw = (uint8_t *)victim->entries;
    uint64_t at = l2_offset + slice * QED_SLICE_ENTRIES * 8;
    victim->l2_offset = 0;
    int ret = io_pread(img->file, raw, QED_SLICE_ENTRIES * 8, at);
    if (ret < 0)
        return img_error(ret, "qed: '%s': cannot read the L2 table at 0x%" PRIx64 ": %s",
                         img->filename, l2_offset, img_strerror(ret));
    for (unsigned i = 0; i < QED_SLICE_ENTRIES; i++)
        victim->entries[i] = load_le64(raw + i * 8);
    victim->l2_offset = l2_offset;
    victim->slice = slice;
    victim->used = ++s->tick;
    *entries = victim->entries;
    return 0;
}

int qed_l2_write(struct img *img, uint64_t l2_offset, uint64_t slice, uint64_t first,
                 uint64_t count)
{
    uint64_t *entries;
    int ret = qed_l2_slice(img, l2_offset, slice, &entries);
    if (ret < 0)
        return ret;
    uint64_t start = first / ENTRIES_PER_SECTOR * ENTRIES_PER_SECTOR;
    uint64_t end =
        (first + count + ENTRIES_PER_SECTOR - 1) / ENTRIES_PER_SECTOR * ENTRIES_PER_SECTOR;
    uint8_t buf[QED_SLICE_ENTRIES * 8];
    for (uint64_t i = start; i < end; i++)
        store_le64(buf + (i - start) * 8, entries[i]);
    ret = io_pwrite(img->file, buf, (size_t)(end - start) * 8,
                    l2_offset + (slice * QED_SLICE_ENTRIES + start) * 8);
    if (ret < 0)
        return img_error(ret, "qed: '%s': cannot write the L2 table at 0x%" PRIx64 ": %s",
                         img->filename, l2_offset, img_strerror(ret));
    return 0;
}

int qed_l1_write(struct img *img, uint64_t index)
{
    struct qed_state *s = img->priv;
    uint64_t start = index / ENTRIES_PER_SECTOR * ENTRIES_PER_SECTOR;
    uint8_t buf[512];
    for (uint64_t i = 0; i < ENTRIES_PER_SECTOR; i++)
        store_le64(buf + i * 8, s->l1[start + i]);
    int ret = io_pwrite(img->file, buf, sizeof(buf), s->hdr.l1_table_offset + start * 8);
    if (ret < 0)
        return img_error(ret, "qed: '%s': cannot write the L1 table: %s", img->filename,
                         img_strerror(ret));
    return 0;
}
