/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writes: a block not yet present is allocated at the end of the file (1 MiB aligned, zero
 * filled by extending the file), the core writes the data, and alloc_commit() links it in the
 * BAT through the log. The new entry is visible in memory from alloc() on, so that concurrent
 * writers of the same block share the allocation; readers see a zero-filled block, which is
 * what the block read before (every state but "fully present" reads as zeros).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>

#include "error.h"
#include "formats/vhdx/vhdx.h"
#include "io/io.h"
#include "util/checked.h"

struct img_alloc {
    uint64_t index;
    uint64_t old_entry, new_entry;
};

static uint32_t entry_state(uint64_t entry)
{
    return (uint32_t)(entry & VHDX_BAT_STATE_MASK);
}

static int allocate_block(struct img *img, struct vhdx_state *s, uint64_t *offset)
{
    uint64_t end;
    int ret = vhdx_file_end(img, &end);
    if (ret < 0)
        return ret;
    end = align_up_u64(end, VHDX_MiB);
    if (end > (uint64_t)INT64_MAX - s->block_size)
        return img_error(-EFBIG, "vhdx: '%s' cannot grow past %" PRIu64 " bytes", img->filename,
                         end);
    ret = io_truncate(img->file, end + s->block_size);
    if (ret < 0)
        return img_error(ret, "vhdx: cannot extend '%s' for a new block: %s", img->filename,
                         img_strerror(ret));
    *offset = end;
    return 0;
}

int vhdx_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
               struct img_alloc **token)
{
    struct vhdx_state *s = img->priv;
    *token = NULL;
    uint64_t block = offset >> s->block_bits;
    uint64_t in_block = offset & (s->block_size - 1);
    uint64_t index = vhdx_bat_index(s, block);
    int ret = 0;
    if (s->params_flags & VHDX_PARAMS_HAS_PARENT)
        return img_error(-ENOTSUP, "vhdx: '%s': writing differencing images is not supported",
                         img->filename);
    pthread_mutex_lock(&img->lock);
    uint64_t entry = s->bat[index];
    uint32_t state = entry_state(entry);
    if (state == VHDX_BLOCK_PARTIALLY_PRESENT || state == 4 || state > 7) {
        ret = img_error(-EIO, "vhdx: '%s': block %" PRIu64 " has the unsupported state %u",
                        img->filename, block, state);
        goto out;
    }
    if (state != VHDX_BLOCK_FULLY_PRESENT) {
        struct img_alloc *a = malloc(sizeof(*a));
        uint64_t host = 0;
        if (!a) {
            ret = img_error(-ENOMEM, "vhdx: out of memory");
            goto out;
        }
        if ((ret = allocate_block(img, s, &host)) < 0) {
            free(a);
            goto out;
        }
        *a = (struct img_alloc){index, entry, host | VHDX_BLOCK_FULLY_PRESENT};
        s->bat[index] = a->new_entry;
        entry = a->new_entry;
        *token = a;
    }
    *ext = (struct img_extent){.kind = EXTENT_DATA,
                               .length = min_u64(length, s->block_size - in_block),
                               .file = img->file,
                               .host_offset = (entry & VHDX_BAT_OFFSET_MASK) + in_block,
                               .host_offset_valid = true};
out:
    pthread_mutex_unlock(&img->lock);
    return ret;
}

int vhdx_alloc_commit(struct img *img, struct img_alloc *a, int write_result)
{
    struct vhdx_state *s = img->priv;
    int ret = 0;
    pthread_mutex_lock(&img->lock);
    if (write_result < 0) {
        /* The block stays in the file unreferenced; the guest range keeps reading zeros. */
        if (s->bat[a->index] == a->new_entry)
            s->bat[a->index] = a->old_entry;
    } else {
        ret = vhdx_bat_store(img, s, &a->index, &a->new_entry, 1);
    }
    pthread_mutex_unlock(&img->lock);
    free(a);
    return ret;
}

/*
 * Only present blocks hold anything but zeros: their range is zeroed in place (a hole where
 * unmapping is allowed), which changes no metadata and so needs no log.
 */
int vhdx_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags)
{
    struct vhdx_state *s = img->priv;
    if (s->params_flags & VHDX_PARAMS_HAS_PARENT)
        return img_error(-ENOTSUP, "vhdx: '%s': writing differencing images is not supported",
                         img->filename);
    while (length) {
        uint64_t block = offset >> s->block_bits;
        uint64_t in_block = offset & (s->block_size - 1);
        uint64_t len = min_u64(length, s->block_size - in_block);
        pthread_mutex_lock(&img->lock);
        uint64_t entry = s->bat[vhdx_bat_index(s, block)];
        pthread_mutex_unlock(&img->lock);
        if (entry_state(entry) == VHDX_BLOCK_FULLY_PRESENT) {
            uint64_t host = (entry & VHDX_BAT_OFFSET_MASK) + in_block;
            int ret = -ENOTSUP;
            if (flags & IMG_ZERO_MAY_UNMAP)
                ret = io_punch_hole(img->file, host, len);
            if (ret < 0)
                ret = io_write_zeroes(img->file, host, len);
            if (ret < 0)
                return img_error(ret, "vhdx: cannot zero %" PRIu64 " bytes of '%s': %s", len,
                                 img->filename, img_strerror(ret));
        } else if (entry_state(entry) == VHDX_BLOCK_PARTIALLY_PRESENT) {
            return img_error(-EIO, "vhdx: '%s': block %" PRIu64 " is partially present",
                             img->filename, block);
        }
        offset += len;
        length -= len;
    }
    return 0;
}

/* Advisory, and QEMU discards nothing in VHDX images either. */
int vhdx_discard(struct img *img, uint64_t offset, uint64_t length)
{
    (void)img;
    (void)offset;
    (void)length;
    return 0;
}
