/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Where guest data is: one BAT entry per payload block. Blocks not present, undefined, zero
 * or unmapped read as zeros (QEMU reads them so); fully present blocks are data at the
 * entry's offset. Runs of blocks of one kind (contiguous in the file for data) are joined.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>

#include "error.h"
#include "formats/vhdx/vhdx.h"
#include "util/checked.h"

/*
 * What a whole block is: in a differencing image, blocks not present (or undefined or
 * unmapped) are the parent's; partially present ones are resolved sector by sector.
 */
static int block_kind(struct img *img, const struct vhdx_state *s, uint64_t block,
                      enum extent_kind *kind, uint64_t *host)
{
    uint64_t entry = s->bat[vhdx_bat_index(s, block)];
    bool differencing = (s->params_flags & VHDX_PARAMS_HAS_PARENT) != 0;
    *host = 0;
    switch (entry & VHDX_BAT_STATE_MASK) {
    case VHDX_BLOCK_NOT_PRESENT:
    case VHDX_BLOCK_UNDEFINED:
    case VHDX_BLOCK_UNMAPPED:
    case VHDX_BLOCK_UNMAPPED_V095:
        *kind = differencing ? EXTENT_UNALLOCATED : EXTENT_ZERO;
        return 0;
    case VHDX_BLOCK_ZERO:
        *kind = EXTENT_ZERO;
        return 0;
    case VHDX_BLOCK_FULLY_PRESENT:
        *kind = EXTENT_DATA;
        *host = entry & VHDX_BAT_OFFSET_MASK;
        return 0;
    case VHDX_BLOCK_PARTIALLY_PRESENT:
        if (differencing) {
            *kind = EXTENT_COMPRESSED; /* "mixed": resolved by the caller */
            *host = entry & VHDX_BAT_OFFSET_MASK;
            return 0;
        }
        /* fall through */
    default:
        return img_error(-EIO, "vhdx: '%s': block %" PRIu64 " has the invalid state %u",
                         img->filename, block, (unsigned)(entry & VHDX_BAT_STATE_MASK));
    }
}

int vhdx_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext)
{
    struct vhdx_state *s = img->priv;
    pthread_mutex_lock(&img->lock);
    uint64_t block = offset >> s->block_bits;
    uint64_t in_block = offset & (s->block_size - 1);
    enum extent_kind kind;
    uint64_t host;
    int ret = block_kind(img, s, block, &kind, &host);
    if (ret < 0)
        goto out;
    uint64_t len = min_u64(length, s->block_size - in_block);
    if (kind == EXTENT_COMPRESSED) {
        bool present;
        ret = vhdx_bitmap_run(img, s, block, in_block, len, &present, &len);
        if (ret < 0)
            goto out;
        *ext = (struct img_extent){
            .kind = present ? EXTENT_DATA : EXTENT_UNALLOCATED, .length = len, .file = img->file};
        if (present) {
            ext->host_offset = host + in_block;
            ext->host_offset_valid = true;
        }
        goto out;
    }
    /* Join the following blocks while they continue the run. */
    while (len < length) {
        enum extent_kind k;
        uint64_t h;
        if (block_kind(img, s, block + 1, &k, &h) < 0 || k != kind ||
            (kind == EXTENT_DATA &&
             h != host + ((block + 1 - (offset >> s->block_bits)) << s->block_bits)))
            break;
        block++;
        len = min_u64(length, len + s->block_size);
    }
    *ext = (struct img_extent){.kind = kind, .length = len, .file = img->file};
    if (kind == EXTENT_DATA) {
        ext->host_offset = host + in_block;
        ext->host_offset_valid = true;
    }
out:
    pthread_mutex_unlock(&img->lock);
    return ret;
}
