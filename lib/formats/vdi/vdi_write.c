/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VDI writes. Rules:
 *  - Allocations run one at a time: alloc() marks one in progress, alloc_commit() ends it, and
 *    others wait for it. A new block always takes index blocks_allocated (as QEMU and
 *    VirtualBox allocate), so a commit order other than the allocation order could not keep
 *    the header's count equal to the number of blocks in the map.
 *  - The data reaches the file before the map entry that points at it. The header's count and
 *    the map sector are then written in one write when they sit side by side (images QEMU and
 *    VirtualBox make: the map follows the header), so a crash leaves either both or neither.
 *    Otherwise the header goes first: a crash between leaves a block counted but unused (qemu-img
 *    check reports the mismatch), never a block that the next allocation would reuse.
 *  - The in-memory map changes only after the metadata write succeeded, under `lock`.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/vdi/vdi.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* Up to this many bytes from offset 0, header and map go out in one write. */
#define VDI_COMBINED_WRITE_MAX (256u << 10)

struct img_alloc {
    uint32_t block; /* guest block */
    uint32_t index; /* data block it gets */
};

static void end_allocation(struct vdi_state *s)
{
    pthread_mutex_lock(&s->lock);
    s->allocating = false;
    pthread_cond_broadcast(&s->alloc_done);
    pthread_mutex_unlock(&s->lock);
}

/*
 * The new block must read as zeros outside the bytes about to be written: space past the end of
 * the file does; space inside it (left by an allocation that never got linked) is zeroed. The
 * file is made to hold the whole block, as QEMU and VirtualBox leave it.
 */
static int prepare_block(struct img *img, uint64_t host, uint64_t write_start, uint64_t write_end)
{
    uint32_t bs = VDI_BLOCK_SIZE;
    int64_t file_size = io_file_size(img->file);
    if (file_size < 0)
        return (int)file_size;
    uint64_t fs = (uint64_t)file_size;
    int ret = 0;
    if (host < fs && write_start > host)
        ret = io_write_zeroes(img->file, host, min_u64(write_start, fs) - host);
    if (ret == 0 && write_end < fs && write_end < host + bs)
        ret = io_write_zeroes(img->file, write_end, min_u64(host + bs, fs) - write_end);
    /* A write reaching the end of the block makes the file long enough itself. */
    if (ret == 0 && fs < host + bs && write_end < host + bs)
        ret = io_truncate(img->file, host + bs);
    return ret;
}

int vdi_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
              struct img_alloc **token)
{
    struct vdi_state *s = img->priv;
    uint32_t bs = s->hdr.block_size;
    uint32_t block = (uint32_t)(offset / bs);
    uint64_t in_block = offset % bs;
    uint64_t n = min_u64(length, bs - in_block);
    *token = NULL;

    pthread_mutex_lock(&s->lock);
    uint32_t entry;
    while (!VDI_IS_ALLOCATED(entry = s->bmap[block]) && s->allocating)
        pthread_cond_wait(&s->alloc_done, &s->lock);
    if (VDI_IS_ALLOCATED(entry)) {
        pthread_mutex_unlock(&s->lock);
        *ext =
            (struct img_extent){.kind = EXTENT_DATA,
                                .length = n,
                                .file = img->file,
                                .host_offset = s->hdr.offset_data + (uint64_t)entry * bs + in_block,
                                .host_offset_valid = true};
        return 0;
    }
    uint32_t index = s->hdr.blocks_allocated;
    if (index >= VDI_BLOCKS_MAX) {
        pthread_mutex_unlock(&s->lock);
        return img_error(-ENOSPC, "vdi: '%s': no block index is left (%" PRIu32 " allocated)",
                         img->filename, index);
    }
    s->allocating = true;
    pthread_mutex_unlock(&s->lock);

    struct img_alloc *a = malloc(sizeof(*a));
    uint64_t host = s->hdr.offset_data + (uint64_t)index * bs;
    int ret = a ? prepare_block(img, host, host + in_block, host + in_block + n) : -ENOMEM;
    if (ret < 0) {
        free(a);
        end_allocation(s);
        return img_error(ret, "vdi: '%s': cannot allocate a block at offset 0x%" PRIx64 ": %s",
                         img->filename, host, img_strerror(ret));
    }
    *a = (struct img_alloc){.block = block, .index = index};
    *token = a;
    *ext = (struct img_extent){.kind = EXTENT_DATA,
                               .length = n,
                               .file = img->file,
                               .host_offset = host + in_block,
                               .host_offset_valid = true};
    return 0;
}

/* Writes the header with `allocated` blocks and the map sector holding entry `block` = index. */
static int write_metadata(struct img *img, struct vdi_state *s, uint32_t block, uint32_t index,
                          uint32_t allocated)
{
    uint64_t sector_start = (uint64_t)block * 4 / VDI_SECTOR_SIZE * VDI_SECTOR_SIZE;
    uint64_t entries_end = (uint64_t)s->hdr.blocks_in_image * 4;
    bool combined = s->hdr.offset_bmap == VDI_HEADER_SIZE &&
                    VDI_HEADER_SIZE + sector_start + VDI_SECTOR_SIZE <= VDI_COMBINED_WRITE_MAX;
    uint64_t from = combined ? 0 : sector_start;
    uint64_t to = min_u64(sector_start + VDI_SECTOR_SIZE, entries_end);
    size_t map_len = (size_t)(to - from);
    size_t head = combined ? VDI_HEADER_SIZE : 0;
    uint8_t *buf = malloc(head + map_len);
    if (!buf)
        return -ENOMEM;
    uint8_t header[VDI_HEADER_SIZE];
    pthread_mutex_lock(&s->lock);
    memcpy(header, s->raw_header, VDI_HEADER_SIZE);
    for (uint64_t i = from / 4; i < to / 4; i++)
        store_le32(buf + head + (i * 4 - from), i == block ? index : s->bmap[i]);
    pthread_mutex_unlock(&s->lock);
    store_le32(header + VDI_OFF_BLOCKS_ALLOCATED, allocated);
    int ret;
    if (combined) {
        memcpy(buf, header, VDI_HEADER_SIZE);
        ret = io_pwrite(img->file, buf, head + map_len, 0);
    } else {
        ret = io_pwrite(img->file, header, VDI_HEADER_SIZE, 0);
        if (ret == 0)
            ret = io_pwrite(img->file, buf, map_len, s->hdr.offset_bmap + from);
    }
    free(buf);
    return ret;
}

int vdi_alloc_commit(struct img *img, struct img_alloc *token, int write_result)
{
    struct vdi_state *s = img->priv;
    int ret = 0;
    if (write_result == 0) {
        ret = write_metadata(img, s, token->block, token->index, token->index + 1);
        if (ret < 0) {
            img_error(ret, "vdi: '%s': cannot write the block map: %s", img->filename,
                      img_strerror(ret));
        } else {
            pthread_mutex_lock(&s->lock);
            s->bmap[token->block] = token->index;
            s->hdr.blocks_allocated = token->index + 1;
            store_le32(s->raw_header + VDI_OFF_BLOCKS_ALLOCATED, s->hdr.blocks_allocated);
            pthread_mutex_unlock(&s->lock);
        }
    }
    free(token);
    end_allocation(s);
    return ret;
}

/*
 * Blocks that are not allocated already read as zeros; allocated ones are zeroed in place (the
 * map cannot drop a block without leaving the header's count wrong).
 */
int vdi_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags)
{
    (void)flags;
    struct vdi_state *s = img->priv;
    uint32_t bs = s->hdr.block_size;
    while (length) {
        uint64_t block = offset / bs, in_block = offset % bs;
        uint64_t n = min_u64(length, bs - in_block);
        pthread_mutex_lock(&s->lock);
        uint32_t entry = s->bmap[block];
        pthread_mutex_unlock(&s->lock);
        if (VDI_IS_ALLOCATED(entry)) {
            uint64_t host = s->hdr.offset_data + (uint64_t)entry * bs + in_block;
            int ret = io_write_zeroes(img->file, host, n);
            if (ret < 0)
                return img_error(ret,
                                 "vdi: '%s': cannot zero %" PRIu64 " bytes at 0x%" PRIx64 ": %s",
                                 img->filename, n, host, img_strerror(ret));
        }
        offset += n;
        length -= n;
    }
    return 0;
}

int vdi_flush(struct img *img)
{
    int ret = io_fsync(img->file);
    if (ret < 0)
        return img_error(ret, "vdi: '%s': flush failed: %s", img->filename, img_strerror(ret));
    return 0;
}
