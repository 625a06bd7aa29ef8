/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writing: fixed disks are written in place; sparse disks allocate blocks at the end of the
 * file, in the order vpc.h states (data, bitmap, BAT entry, footer).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"
#include "vpc.h"

struct img_alloc {
    uint32_t block;
    bool new_block;
    uint64_t block_start;  /* file offset of the block's bitmap */
    uint32_t first_sector; /* the sectors of the block the write touches */
    uint32_t last_sector;
};

static int write_error(struct vpc_state *s, int ret, const char *what, uint64_t at)
{
    return img_error(ret, "vpc: '%s': cannot write the %s at 0x%" PRIx64 ": %s", s->img->filename,
                     what, at, img_strerror(ret));
}

/*
 * Makes the file's tail ready for a new block at s->free_offset: the data area reads as
 * zeros (an abandoned allocation may have left data there) and the file reaches past the
 * block and its footer, so that a BAT entry written before the footer never points past the
 * end of the file.
 */
static int prepare_tail(struct vpc_state *s)
{
    struct img *img = s->img;
    uint64_t data = s->free_offset + s->bitmap_size;
    uint64_t end = data + s->block_size + VPC_FOOTER_SIZE;
    int64_t size = io_file_size(img->file);
    if (size < 0)
        return img_error((int)size, "vpc: cannot read the size of '%s'", img->filename);
    int ret = 0;
    if ((uint64_t)size > data)
        ret = io_write_zeroes(img->file, data, min_u64((uint64_t)size, end) - data);
    if (ret == 0 && (uint64_t)size < end)
        ret = io_truncate(img->file, end);
    if (ret < 0)
        return write_error(s, ret, "room for a new block", s->free_offset);
    return 0;
}

/*
 * Differencing disks: a sector the write covers only in part, and that the child does not
 * hold yet, first receives the parent's content (copy-on-write).
 */
static int fill_partial_sector(struct vpc_state *s, uint32_t block, bool bitmap_known,
                               uint64_t guest_sector_start, uint64_t host_sector)
{
    struct img *img = s->img;
    if (bitmap_known) {
        int ret = vpc_read_bitmap(s, block, s->bitmap_cache);
        if (ret < 0)
            return ret;
        uint32_t sec = (uint32_t)((guest_sector_start % s->block_size) / VPC_SECTOR);
        if (vpc_bitmap_test(s->bitmap_cache, sec))
            return 0;
    }
    uint8_t buf[VPC_SECTOR];
    int ret = img_backing_pread(img, buf, VPC_SECTOR, guest_sector_start);
    if (ret < 0)
        return ret;
    ret = io_pwrite(img->file, buf, VPC_SECTOR, host_sector);
    return ret < 0 ? write_error(s, ret, "copy-on-write sector", host_sector) : 0;
}

static int sparse_alloc(struct vpc_state *s, uint64_t offset, uint64_t length,
                        struct img_extent *ext, struct img_alloc **token)
{
    struct img *img = s->img;
    uint64_t block64 = offset / s->block_size;
    uint64_t in_block = offset % s->block_size;
    uint64_t n = min_u64(length, s->block_size - in_block);
    if (block64 >= s->max_table_entries)
        return img_error(-EIO, "vpc: '%s': offset %" PRIu64 " lies past the allocation table",
                         img->filename, offset);
    uint32_t block = (uint32_t)block64;
    struct img_alloc *a = calloc(1, sizeof(*a));
    if (!a)
        return img_error(-ENOMEM, "vpc: '%s': out of memory", img->filename);
    a->block = block;
    a->first_sector = (uint32_t)(in_block / VPC_SECTOR);
    a->last_sector = (uint32_t)((in_block + n - 1) / VPC_SECTOR);

    pthread_mutex_lock(&img->lock);
    /* One new block at a time: the file's tail is that allocation's until it commits. */
    while (s->bat[block] == VPC_BAT_UNUSED && s->alloc_busy)
        pthread_cond_wait(&s->alloc_done, &img->lock);
    int ret = 0;
    if (s->bat[block] == VPC_BAT_UNUSED) {
        a->new_block = true;
        a->block_start = s->free_offset;
        if (a->block_start / VPC_SECTOR >= VPC_BAT_UNUSED)
            ret = img_error(-EFBIG, "vpc: '%s': the file is too large for another block",
                            img->filename);
        if (ret == 0)
            ret = prepare_tail(s);
        if (ret == 0)
            s->alloc_busy = true;
    } else {
        a->block_start = (uint64_t)s->bat[block] * VPC_SECTOR;
    }
    uint64_t data = a->block_start + s->bitmap_size;
    if (ret == 0 && s->type == VPC_DIFFERENCING && img->backing) {
        uint64_t head = align_down_u64(offset, VPC_SECTOR);
        uint64_t tail = align_down_u64(offset + n - 1, VPC_SECTOR);
        if (offset != head)
            ret = fill_partial_sector(s, block, !a->new_block, head, data + head % s->block_size);
        if (ret == 0 && (offset + n) % VPC_SECTOR && (tail != head || offset == head))
            ret = fill_partial_sector(s, block, !a->new_block, tail, data + tail % s->block_size);
    }
    if (ret < 0) {
        if (a->new_block && s->alloc_busy) {
            s->alloc_busy = false;
            pthread_cond_broadcast(&s->alloc_done);
        }
        pthread_mutex_unlock(&img->lock);
        free(a);
        return ret;
    }
    /* A block of a dynamic disk whose bitmap is full has nothing to link: no commit. */
    bool linked = !a->new_block && s->type != VPC_DIFFERENCING && s->bitmap_full[block];
    pthread_mutex_unlock(&img->lock);
    ext->kind = EXTENT_DATA;
    ext->file = img->file;
    ext->host_offset = data + in_block;
    ext->host_offset_valid = true;
    ext->length = n;
    if (linked)
        free(a);
    *token = linked ? NULL : a;
    return 0;
}

int vpc_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
              struct img_alloc **token)
{
    struct vpc_state *s = img->priv;
    *token = NULL;
    if (s->type == VPC_FIXED) {
        ext->kind = EXTENT_DATA;
        ext->file = img->file;
        ext->host_offset = offset;
        ext->host_offset_valid = true;
        ext->length = length;
        return 0;
    }
    return sparse_alloc(s, offset, length, ext, token);
}

/* The sector bitmap the block gets (or has) once the write is in. Under img->lock. */
static int updated_bitmap(struct vpc_state *s, const struct img_alloc *a, uint8_t *bitmap,
                          bool *changed)
{
    *changed = true;
    if (s->type != VPC_DIFFERENCING) {
        /* As QEMU: a written block of a dynamic disk is read whole, so its bitmap is full. */
        memset(bitmap, 0xff, s->bitmap_size);
        *changed = a->new_block || !s->bitmap_full[a->block];
        return 0;
    }
    if (a->new_block) {
        memset(bitmap, 0, s->bitmap_size);
    } else {
        int ret = vpc_read_bitmap(s, a->block, bitmap);
        if (ret < 0)
            return ret;
    }
    bool all_set = !a->new_block;
    for (uint32_t sec = a->first_sector; sec <= a->last_sector; sec++) {
        all_set = all_set && vpc_bitmap_test(bitmap, sec);
        bitmap[sec >> 3] |= (uint8_t)(0x80u >> (sec & 7));
    }
    *changed = !all_set;
    return 0;
}

static int link_new_block(struct vpc_state *s, const struct img_alloc *a, const uint8_t *bitmap)
{
    struct img *img = s->img;
    int ret = io_fsync(img->file); /* the data before anything that points at it */
    if (ret < 0)
        return img_error(ret, "vpc: '%s': flush failed: %s", img->filename, img_strerror(ret));
    ret = io_pwrite(img->file, bitmap, s->bitmap_size, a->block_start);
    if (ret < 0)
        return write_error(s, ret, "sector bitmap", a->block_start);
    uint8_t entry[4];
    store_be32(entry, (uint32_t)(a->block_start / VPC_SECTOR));
    uint64_t at = s->bat_offset + 4 * (uint64_t)a->block;
    ret = io_pwrite(img->file, entry, 4, at);
    if (ret < 0)
        return write_error(s, ret, "allocation table entry", at);
    s->bat[a->block] = (uint32_t)(a->block_start / VPC_SECTOR);
    s->free_offset = a->block_start + s->bitmap_size + s->block_size;
    ret = io_pwrite(img->file, s->footer, VPC_FOOTER_SIZE, s->free_offset);
    if (ret < 0)
        return write_error(s, ret, "footer", s->free_offset);
    return 0;
}

int vpc_alloc_commit(struct img *img, struct img_alloc *a, int write_result)
{
    struct vpc_state *s = img->priv;
    uint8_t *bitmap = NULL;
    pthread_mutex_lock(&img->lock);
    int ret = write_result;
    if (ret == 0) {
        bitmap = malloc(s->bitmap_size ? s->bitmap_size : 1);
        ret = bitmap ? 0 : img_error(-ENOMEM, "vpc: '%s': out of memory", img->filename);
    }
    bool changed = false;
    if (ret == 0)
        ret = updated_bitmap(s, a, bitmap, &changed);
    if (ret == 0 && a->new_block) {
        ret = link_new_block(s, a, bitmap);
    } else if (ret == 0 && changed) {
        /* In a differencing disk a set bit hides the parent: the data must be there first. */
        if (s->type == VPC_DIFFERENCING)
            ret = io_fsync(img->file);
        if (ret == 0)
            ret = io_pwrite(img->file, bitmap, s->bitmap_size, a->block_start);
        if (ret < 0)
            ret = write_error(s, ret, "sector bitmap", a->block_start);
    }
    if (ret == 0 && changed) {
        s->bitmap_full[a->block] = s->type != VPC_DIFFERENCING;
        if (s->bitmap_cache_valid && s->bitmap_cache_block == a->block)
            memcpy(s->bitmap_cache, bitmap, s->bitmap_size);
    }
    if (a->new_block) {
        s->alloc_busy = false;
        pthread_cond_broadcast(&s->alloc_done);
    }
    pthread_mutex_unlock(&img->lock);
    free(bitmap);
    free(a);
    /* An abandoned write keeps the old content; its error is the caller's to report. */
    return write_result < 0 ? 0 : ret;
}

/*
 * Zeroes: a fixed disk zeroes its file; a sparse disk leaves absent blocks alone (they read
 * as zeros, unless a parent shows through) and writes zeros elsewhere, as QEMU does.
 */
int vpc_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags)
{
    struct vpc_state *s = img->priv;
    if (s->type == VPC_FIXED) {
        int ret = -ENOTSUP;
        if (flags & IMG_ZERO_MAY_UNMAP)
            ret = io_punch_hole(img->file, offset, length);
        if (ret < 0)
            ret = io_write_zeroes(img->file, offset, length);
        return ret < 0 ? write_error(s, ret, "zeroes", offset) : 0;
    }
    while (length) {
        uint64_t in_block = offset % s->block_size;
        uint64_t n = min_u64(length, s->block_size - in_block);
        uint64_t block = offset / s->block_size;
        pthread_mutex_lock(&img->lock);
        bool absent = block >= s->max_table_entries || s->bat[block] == VPC_BAT_UNUSED;
        pthread_mutex_unlock(&img->lock);
        if (!absent || img->backing_name) {
            struct img_extent ext = {0};
            struct img_alloc *token = NULL;
            int ret = vpc_alloc(img, offset, n, &ext, &token);
            if (ret < 0)
                return ret;
            n = ext.length;
            ret = io_write_zeroes(img->file, ext.host_offset, n);
            if (ret < 0)
                write_error(s, ret, "zeroes", ext.host_offset);
            int commit = token ? vpc_alloc_commit(img, token, ret) : 0;
            if (ret == 0)
                ret = commit;
            if (ret < 0)
                return ret;
        }
        offset += n;
        length -= n;
    }
    return 0;
}

int vpc_flush(struct img *img)
{
    int ret = io_fsync(img->file);
    if (ret < 0)
        return img_error(ret, "vpc: '%s': flush failed: %s", img->filename, img_strerror(ret));
    return 0;
}
