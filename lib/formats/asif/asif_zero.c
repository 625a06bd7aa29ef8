/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Zeroing, discarding and resizing. A whole chunk is unmapped (status 10, chunk number 0: it
 * reads as zeros, its old chunk is left unreferenced in the file); part of an allocated chunk
 * is overwritten with zeros in place.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "error.h"
#include "formats/asif/asif.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* One chunk's part [in, in + n) of `chunk`; `whole`: every guest byte of the chunk. */
static int zero_in_chunk(struct img *img, uint64_t chunk, uint64_t in, uint64_t n, bool whole,
                         bool partial_too)
{
    struct asif_state *s = img->priv;
    struct asif_place p;
    asif_place_of(&s->g, chunk, &p);
    asif_inflight_wait(s, chunk);
    uint64_t e;
    int ret = asif_read_entry(img, &p, p.slot, &e);
    if (ret < 0)
        return ret;
    unsigned st = asif_entry_status(e);
    uint64_t idx = asif_entry_index(e);
    if (st == ASIF_STATUS_NONE || st == ASIF_STATUS_UNMAPPED) {
        if (idx == 0)
            return 0; /* reads as zeros already */
        return img_error(-ENOTSUP,
                         "asif: '%s': the entry of chunk %" PRIu64
                         " has status %u%u with a chunk number: this state is not characterised",
                         img->filename, chunk, st >> 1, st & 1);
    }
    if (whole)
        return asif_write_entry(img, &p, p.slot, asif_make_entry(e, ASIF_STATUS_UNMAPPED, 0));
    if (!partial_too)
        return 0;
    ret = asif_check_chunk(img, idx, "a data entry");
    if (ret == 0)
        ret = io_write_zeroes(img->file, idx * s->g.chunk_size + in, n);
    if (ret < 0)
        return img_error(ret, "asif: cannot zero part of chunk %" PRIu64 " of '%s': %s", chunk,
                         img->filename, img_strerror(ret));
    return 0;
}

/* Zeroes [offset, offset + length) of a guest of `guest_size` bytes. Takes s->lock. */
static int zero_range(struct img *img, uint64_t offset, uint64_t length, uint64_t guest_size,
                      bool partial_too)
{
    struct asif_state *s = img->priv;
    uint64_t cs = s->g.chunk_size;
    uint64_t table_bytes = s->g.chunks_per_table * cs;
    int ret = 0;
    pthread_mutex_lock(&s->lock);
    while (length && ret == 0) {
        uint64_t chunk = offset / cs, in = offset % cs;
        uint64_t table = offset / table_bytes;
        if (s->dir[table] == 0) {
            /* No table: nothing here was ever written. */
            uint64_t skip = min_u64(length, (table + 1) * table_bytes - offset);
            offset += skip;
            length -= skip;
            continue;
        }
        uint64_t n = min_u64(length, cs - in);
        bool whole = in == 0 && (n == cs || offset + n >= guest_size);
        ret = zero_in_chunk(img, chunk, in, n, whole, partial_too);
        offset += n;
        length -= n;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int asif_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags)
{
    (void)flags;
    return zero_range(img, offset, length, img->size, true);
}

int asif_discard(struct img *img, uint64_t offset, uint64_t length)
{
    /* Advisory: whole chunks are unmapped, parts of chunks keep their data. */
    return zero_range(img, offset, length, img->size, false);
}

int asif_resize(struct img *img, uint64_t new_size, unsigned flags, const img_opts *opts)
{
    (void)flags;
    struct asif_state *s = img->priv;
    const char *prealloc = opts ? img_opts_get(opts, "preallocation") : NULL;
    if (prealloc && strcmp(prealloc, "off") != 0)
        return img_error(-ENOTSUP, "asif: '%s': preallocation mode '%s' is not supported",
                         img->filename, prealloc);
    uint64_t bs = s->g.block_size;
    uint64_t limit = s->meta_chunk ? s->meta_chunk * s->g.chunk_size : s->g.max_bytes;
    if (new_size % bs)
        return img_error(-EINVAL,
                         "asif: '%s': size %" PRIu64 " is not a multiple of the block "
                         "size %" PRIu64,
                         img->filename, new_size, bs);
    if (new_size > limit)
        return img_error(-EFBIG,
                         "asif: '%s': size %" PRIu64 " is past the image's maximum size (%" PRIu64
                         " bytes)",
                         img->filename, new_size, limit);
    /* Shrinking: what lies past the new end must not come back if the image grows again. */
    int ret = 0;
    if (new_size < img->size)
        ret = zero_range(img, new_size, img->size - new_size, img->size, true);
    if (ret < 0)
        return ret;
    uint8_t raw[8];
    store_be64(raw, new_size / bs);
    pthread_mutex_lock(&s->lock);
    ret = io_pwrite(img->file, raw, 8, ASIF_OFF_SECTORS);
    if (ret == 0) {
        s->sectors = new_size / bs;
        img->size = new_size;
    }
    pthread_mutex_unlock(&s->lock);
    if (ret < 0)
        return img_error(ret, "asif: cannot write the header of '%s': %s", img->filename,
                         img_strerror(ret));
    return 0;
}
