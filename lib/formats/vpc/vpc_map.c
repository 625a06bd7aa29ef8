/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Where guest data is: the file itself (fixed), or the blocks the BAT names. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "error.h"
#include "io/io.h"
#include "util/checked.h"
#include "vpc.h"

/* Reads block `block`'s sector bitmap, through the one-entry cache. Under img->lock. */
int vpc_read_bitmap(struct vpc_state *s, uint32_t block, uint8_t *out)
{
    if (!s->bitmap_cache_valid || s->bitmap_cache_block != block) {
        uint64_t at = (uint64_t)s->bat[block] * VPC_SECTOR;
        int ret = io_pread(s->img->file, s->bitmap_cache, s->bitmap_size, at);
        if (ret < 0)
            return img_error(ret, "vpc: '%s': cannot read the sector bitmap at 0x%" PRIx64 ": %s",
                             s->img->filename, at, img_strerror(ret));
        s->bitmap_cache_block = block;
        s->bitmap_cache_valid = true;
    }
    if (out != s->bitmap_cache)
        memcpy(out, s->bitmap_cache, s->bitmap_size);
    return 0;
}

/*
 * Inside an allocated block of a differencing disk: the run of sectors with the same bitmap
 * bit as the first (set: data here; clear: the parent's).
 */
static int map_bitmap_run(struct vpc_state *s, uint32_t block, uint64_t in_block, uint64_t n,
                          bool *present, uint64_t *run)
{
    int ret = vpc_read_bitmap(s, block, s->bitmap_cache);
    if (ret < 0)
        return ret;
    uint32_t first = (uint32_t)(in_block / VPC_SECTOR);
    uint32_t last = (uint32_t)((in_block + n - 1) / VPC_SECTOR);
    bool bit = vpc_bitmap_test(s->bitmap_cache, first);
    uint32_t sec = first + 1;
    while (sec <= last && vpc_bitmap_test(s->bitmap_cache, sec) == bit)
        sec++;
    *present = bit;
    *run = min_u64(n, (uint64_t)sec * VPC_SECTOR - in_block);
    return 0;
}

int vpc_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext)
{
    struct vpc_state *s = img->priv;
    ext->file = img->file;
    if (s->type == VPC_FIXED) {
        /* As QEMU: the file's own holes show as zeros in block status. */
        ext->kind = EXTENT_DATA;
        ext->host_offset = offset;
        ext->host_offset_valid = true;
        ext->refine_with_host = true;
        ext->length = length;
        return 0;
    }
    int ret = 0;
    uint64_t done = 0;
    /* Absent blocks read as zeros, or as the parent's data in a differencing disk. */
    enum extent_kind absent = img->backing_name ? EXTENT_UNALLOCATED : EXTENT_ZERO;
    pthread_mutex_lock(&img->lock);
    while (done < length) {
        uint64_t pos = offset + done;
        uint64_t block64 = pos / s->block_size;
        uint64_t in_block = pos % s->block_size;
        uint64_t n = min_u64(length - done, s->block_size - in_block);
        bool allocated = block64 < s->max_table_entries && s->bat[block64] != VPC_BAT_UNUSED;
        if (!allocated) {
            done += n;
            continue;
        }
        if (done > 0)
            break; /* the absent run ends here */
        uint32_t block = (uint32_t)block64;
        uint64_t host = (uint64_t)s->bat[block] * VPC_SECTOR + s->bitmap_size + in_block;
        bool present = true;
        uint64_t run = n;
        /* A dynamic disk is read whole, as QEMU reads it, whatever its bitmap says. */
        if (s->type == VPC_DIFFERENCING)
            ret = map_bitmap_run(s, block, in_block, n, &present, &run);
        if (ret == 0) {
            ext->kind = present ? EXTENT_DATA : absent;
            ext->host_offset = host;
            ext->host_offset_valid = present;
            ext->length = run;
        }
        pthread_mutex_unlock(&img->lock);
        return ret;
    }
    pthread_mutex_unlock(&img->lock);
    ext->kind = absent;
    ext->host_offset_valid = false;
    ext->length = done;
    return 0;
}
