/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Where guest data is: flat extents map straight into their file; sparse extents through the
 * grain directory and a grain table, loaded into a small per-extent cache (img->lock).
 * A grain table entry is 0 (unallocated: the parent's data, or zeros), 1 in an extent with
 * zeroed grains (zeros), or the grain's sector; in a compressed extent the sector holds a grain
 * marker (guest sector, stream length) followed by a zlib stream.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "codec/codec.h"
#include "error.h"
#include "formats/vmdk/vmdk.h"
#include "image.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* Lookups answered per map() call at most, so one call holds the lock a bounded time. */
#define VMDK_MAP_MAX_GRAINS 4096

/* Returns the cached grain table at `sector`, loading it into the least used slot. */
static int load_l2(struct vmdk_extent *e, uint64_t sector, uint8_t **table)
{
    struct vmdk_l2_slot *victim = &e->cache[0];
    for (int i = 0; i < VMDK_L2_CACHE; i++) {
        struct vmdk_l2_slot *slot = &e->cache[i];
        if (slot->offset == sector) {
            if (++slot->uses == UINT32_MAX)
                for (int j = 0; j < VMDK_L2_CACHE; j++)
                    e->cache[j].uses >>= 1;
            *table = slot->table;
            return 0;
        }
        if (slot->uses < victim->uses)
            victim = slot;
    }
    size_t bytes = (size_t)e->gt_entries * e->entry_size;
    victim->offset = 0;
    int ret = io_pread(e->file, victim->table, bytes, sector * VMDK_SECTOR);
    if (ret < 0)
        return img_error(ret, "vmdk: '%s': cannot read the grain table at sector %" PRIu64 ": %s",
                         e->filename, sector, img_strerror(ret));
    victim->offset = sector;
    victim->uses = 1;
    *table = victim->table;
    return 0;
}

int vmdk_lookup(struct img *img, struct vmdk_extent *e, uint64_t offset, struct vmdk_grain *g)
{
    (void)img;
    memset(g, 0, sizeof(*g));
    uint64_t grain = (offset - e->start) / (e->grain_sectors * VMDK_SECTOR);
    uint64_t l1_index = grain / e->gt_entries;
    if (l1_index >= e->l1_size)
        return img_error(-EIO, "vmdk: '%s': guest offset %" PRIu64 " is beyond the grain directory",
                         e->filename, offset);
    g->l1_index = (uint32_t)l1_index;
    g->l2_index = (uint32_t)(grain % e->gt_entries);
    uint64_t l2_sector;
    if (e->kind == VMDK_EXTENT_SESPARSE) {
        uint64_t v = ((uint64_t *)e->l1)[l1_index];
        if (v == 0) {
            l2_sector = 0;
        } else if ((v & 0xffffffff00000000ull) != 0x1000000000000000ull) {
            return img_error(-EIO, "vmdk: '%s': invalid grain directory entry 0x%" PRIx64,
                             e->filename, v);
        } else {
            l2_sector = e->se_tables_offset +
                        (v & 0xffffffffull) * e->gt_entries * e->entry_size / VMDK_SECTOR;
            if (l2_sector > UINT32_MAX)
                return img_error(-EIO, "vmdk: '%s': grain table offset out of range", e->filename);
        }
    } else {
        l2_sector = ((uint32_t *)e->l1)[l1_index];
    }
    g->l2_sector = l2_sector;
    if (l2_sector == 0) {
        g->kind = VMDK_GRAIN_UNALLOC;
        return 0;
    }
    uint8_t *table = NULL;
    int ret = load_l2(e, l2_sector, &table);
    if (ret < 0)
        return ret;
    if (e->kind == VMDK_EXTENT_SESPARSE) {
        uint64_t v = load_le64(table + 8 * (size_t)g->l2_index);
        switch (v >> 60) {
        case 0:
            if (v != 0)
                return img_error(-EIO, "vmdk: '%s': invalid grain table entry 0x%" PRIx64,
                                 e->filename, v);
            g->kind = VMDK_GRAIN_UNALLOC;
            return 0;
        case 1: /* unmapped */
        case 2: /* zero */
            g->kind = VMDK_GRAIN_ZERO;
            return 0;
        case 3: {
            uint64_t idx =
                ((v & 0x0fff000000000000ull) >> 48) | ((v & 0x0000ffffffffffffull) << 12);
            uint64_t sector;
            if (mul_overflows_u64(idx, e->grain_sectors, &sector) ||
                add_overflows_u64(sector, e->se_grains_offset, &sector) ||
                sector > UINT64_MAX / VMDK_SECTOR / 2)
                return img_error(-EIO, "vmdk: '%s': grain offset out of range", e->filename);
            g->kind = VMDK_GRAIN_DATA;
            g->host_sector = sector;
            return 0;
        }
        default:
            return img_error(-EIO, "vmdk: '%s': invalid grain table entry 0x%" PRIx64, e->filename,
                             v);
        }
    }
    uint32_t v = load_le32(table + 4 * (size_t)g->l2_index);
    if (v == 0) {
        g->kind = VMDK_GRAIN_UNALLOC;
    } else if (v == VMDK_GTE_ZEROED && e->zero_grain) {
        g->kind = VMDK_GRAIN_ZERO;
    } else {
        g->kind = VMDK_GRAIN_DATA;
        g->host_sector = v;
    }
    return 0;
}

int vmdk_set_gte(struct img *img, struct vmdk_extent *e, const struct vmdk_grain *g, uint32_t value)
{
    uint8_t le[4];
    store_le32(le, value);
    int ret = io_pwrite(e->file, le, 4, g->l2_sector * VMDK_SECTOR + 4ull * g->l2_index);
    if (ret == 0 && e->l1_backup && e->l1_backup[g->l1_index])
        ret = io_pwrite(e->file, le, 4,
                        (uint64_t)e->l1_backup[g->l1_index] * VMDK_SECTOR + 4ull * g->l2_index);
    if (ret < 0)
        return img_error(ret, "vmdk: '%s': cannot update a grain table: %s", e->filename,
                         img_strerror(ret));
    for (int i = 0; i < VMDK_L2_CACHE; i++)
        if (e->cache[i].offset == g->l2_sector)
            memcpy(e->cache[i].table + 4 * (size_t)g->l2_index, le, 4);
    (void)img;
    return 0;
}

static int map_compressed(struct vmdk_extent *e, const struct vmdk_grain *g, uint64_t grain_start,
                          uint64_t extent_end, struct img_extent *ext)
{
    uint64_t grain_bytes = e->grain_sectors * VMDK_SECTOR;
    uint64_t at = g->host_sector * VMDK_SECTOR;
    ext->kind = EXTENT_COMPRESSED;
    ext->file = e->file;
    ext->unit_start = grain_start;
    ext->unit_size = (uint32_t)min_u64(grain_bytes, extent_end - grain_start);
    ext->codec = CODEC_ZLIB;
    if (e->has_marker) {
        uint8_t m[12];
        int ret = io_pread(e->file, m, sizeof(m), at);
        if (ret < 0)
            return img_error(ret, "vmdk: '%s': cannot read the grain marker at 0x%" PRIx64 ": %s",
                             e->filename, at, img_strerror(ret));
        /* A bad length fails the read (the core bounds it), not the map, as in QEMU. */
        uint32_t size = load_le32(m + 8);
        ext->host_offset = at + 12;
        ext->comp_length = size;
    } else {
        ext->host_offset = at;
        ext->comp_length = 2 * grain_bytes;
    }
    return 0;
}

int vmdk_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext)
{
    struct vmdk_state *s = img->priv;
    struct vmdk_extent *e = vmdk_find_extent(s, offset);
    if (!e)
        return img_error(-EIO, "vmdk: '%s': no extent holds offset %" PRIu64, img->filename,
                         offset);
    uint64_t extent_end = e->start + e->sectors * VMDK_SECTOR;
    length = min_u64(length, extent_end - offset);
    memset(ext, 0, sizeof(*ext));
    if (e->kind == VMDK_EXTENT_FLAT) {
        ext->kind = EXTENT_DATA;
        ext->file = e->file;
        ext->host_offset = e->flat_offset + (offset - e->start);
        ext->host_offset_valid = true;
        ext->refine_with_host = true;
        ext->length = length;
        return 0;
    }
    uint64_t grain_bytes = e->grain_sectors * VMDK_SECTOR;
    uint64_t in_grain = (offset - e->start) % grain_bytes;
    uint64_t grain_start = offset - in_grain;
    struct vmdk_grain g;
    pthread_mutex_lock(&img->lock);
    int ret = vmdk_lookup(img, e, offset, &g);
    uint64_t run = min_u64(grain_bytes - in_grain, length);
    /* Following grains of the same kind (and, for data, contiguous) join the run. */
    for (int n = 1; ret == 0 && run < length && n < VMDK_MAP_MAX_GRAINS &&
                    !(g.kind == VMDK_GRAIN_DATA && e->compressed);
         n++) {
        struct vmdk_grain next;
        if (vmdk_lookup(img, e, offset + run, &next) < 0) {
            img_error_clear();
            break;
        }
        if (next.kind != g.kind ||
            (g.kind == VMDK_GRAIN_DATA &&
             next.host_sector * VMDK_SECTOR != g.host_sector * VMDK_SECTOR + in_grain + run))
            break;
        run = min_u64(run + grain_bytes, length);
    }
    pthread_mutex_unlock(&img->lock);
    if (ret < 0)
        return ret;
    ext->length = run;
    switch (g.kind) {
    case VMDK_GRAIN_UNALLOC:
        ext->kind = EXTENT_UNALLOCATED;
        return 0;
    case VMDK_GRAIN_ZERO:
        ext->kind = EXTENT_ZERO;
        return 0;
    case VMDK_GRAIN_DATA:
        break;
    }
    if (e->compressed) {
        ext->length = min_u64(grain_bytes - in_grain, length);
        return map_compressed(e, &g, grain_start, extent_end, ext);
    }
    ext->kind = EXTENT_DATA;
    ext->file = e->file;
    ext->host_offset = g.host_sector * VMDK_SECTOR + in_grain;
    ext->host_offset_valid = true;
    return 0;
}
