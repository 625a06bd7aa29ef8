/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* DMG: where a guest offset's bytes are (the chunk types are described in dmg.h). */
#include <errno.h>
#include <inttypes.h>

#include "codec/codec.h"
#include "error.h"
#include "formats/dmg/dmg.h"
#include "image.h"
#include "util/checked.h"

/* One past the chunk's last sector, saturating where QEMU's sum would wrap. */
static uint64_t chunk_end(const struct dmg_chunk *c)
{
    uint64_t end;
    return add_overflows_u64(c->sector, c->sector_count, &end) ? UINT64_MAX : end;
}

/*
 * QEMU's binary search, which assumes the chunks in order of their sectors, as writers store
 * them; a table out of order finds what QEMU finds. Returns n_chunks when none holds `sector`.
 */
static uint32_t search_chunk(const struct dmg_state *s, uint64_t sector)
{
    uint32_t lo = 0, hi = s->n_chunks;
    while (lo <= hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (mid >= s->n_chunks)
            break;
        const struct dmg_chunk *c = &s->chunks[mid];
        if (c->sector > sector) {
            if (mid == 0)
                break;
            hi = mid - 1;
        } else if (chunk_end(c) > sector) {
            return mid;
        } else {
            lo = mid + 1;
        }
    }
    return s->n_chunks;
}

static int compressed_extent(struct img *img, const struct dmg_chunk *c, uint64_t offset,
                             uint64_t length, struct img_extent *ext)
{
    if (c->length == 0)
        return img_error(-EIO, "dmg: '%s': the compressed chunk at sector %" PRIu64 " is empty",
                         img->filename, c->sector);
    ext->kind = EXTENT_COMPRESSED;
    ext->file = img->file;
    ext->host_offset = c->offset;
    ext->comp_length = c->length;
    ext->unit_start = c->sector * 512;
    /* At most DMG_SECTORCOUNT_MAX sectors (64 MiB), checked when the table was read. */
    ext->unit_size = (uint32_t)(c->sector_count * 512);
    ext->cacheable = true; /* read-only: the unit never changes */
    ext->codec = c->type == DMG_UDZO ? CODEC_ZLIB : c->type == DMG_UDBZ ? CODEC_BZIP2 : CODEC_ADC;
    ext->length = length;
    return 0;
}

int dmg_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext)
{
    const struct dmg_state *s = img->priv;
    uint64_t sector = offset / 512;
    uint32_t i = search_chunk(s, sector);
    if (i >= s->n_chunks)
        return img_error(-EIO, "dmg: '%s': sector %" PRIu64 " lies in no chunk of the image",
                         img->filename, sector);
    const struct dmg_chunk *c = &s->chunks[i];
    /* offset < img->size, so the chunk's end (if within the image) fits in bytes. */
    uint64_t end = min_u64(chunk_end(c), img->size / 512) * 512;
    length = min_u64(length, end - offset);
    switch (c->type) {
    case DMG_UDZE:
    case DMG_UDIG:
        ext->kind = EXTENT_ZERO;
        ext->length = length;
        return 0;
    case DMG_UDRW: {
        /* Stored as it is; sectors past the stored length read as zeros. */
        uint64_t in_chunk = offset - c->sector * 512;
        if (in_chunk >= c->length) {
            ext->kind = EXTENT_ZERO;
            ext->length = length;
            return 0;
        }
        uint64_t host;
        if (add_overflows_u64(c->offset, in_chunk, &host) || host > (uint64_t)INT64_MAX)
            return img_error(-EIO,
                             "dmg: '%s': the raw chunk at sector %" PRIu64
                             " lies past the largest file size",
                             img->filename, c->sector);
        ext->kind = EXTENT_DATA;
        ext->file = img->file;
        ext->host_offset = host;
        ext->host_offset_valid = true;
        ext->length = min_u64(length, c->length - in_chunk);
        return 0;
    }
    case DMG_ULFO:
        /* QEMU's words when it lacks its lzfse module, as it reads without it. */
        return img_error(-EIO,
                         "dmg: '%s': sector %" PRIu64 " is in an lzfse compressed chunk: lzfse "
                         "is not supported, accessing lzfse compressed blocks will result in I/O "
                         "errors",
                         img->filename, sector);
    default:
        return compressed_extent(img, c, offset, length, ext);
    }
}
