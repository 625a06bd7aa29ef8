/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writing guest data: alloc() says where the bytes go (a new chunk at the end of the file for
 * a chunk never written), alloc_commit() links them once they are on disk. A write covering a
 * whole chunk makes it fully written (status 01); a part of a chunk is recorded in the group's
 * bitmap, two bits a sector, and the chunk is partly written (status 11).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/asif/asif.h"
#include "io/io.h"
#include "util/checked.h"

struct img_alloc {
    struct asif_inflight inflight;
    struct asif_place place;
    uint64_t entry;   /* the data entry as alloc() found it */
    uint64_t host;    /* the data chunk */
    bool fresh;       /* taken by this allocation: nothing points at it yet */
    uint64_t in, len; /* the bytes written within the chunk */
};

static void inflight_remove(struct asif_state *s, struct asif_inflight *node)
{
    for (struct asif_inflight **p = &s->inflight; *p; p = &(*p)->next)
        if (*p == node) {
            *p = node->next;
            break;
        }
    pthread_cond_broadcast(&s->idle);
}

/*
 * Sectors of a partly written chunk that the write covers only in part and that are not yet
 * valid: their other bytes must read as zeros once the sector is marked, whatever the chunk
 * held there before (a write that was never linked).
 */
static int zero_edge_sectors(struct img *img, const struct img_alloc *t)
{
    struct asif_state *s = img->priv;
    uint32_t bs = s->g.block_size;
    uint64_t bitmap_entry;
    int ret = asif_read_entry(img, &t->place, s->g.chunks_per_group, &bitmap_entry);
    uint8_t *bits = ret == 0 ? malloc(s->g.bitmap_per_chunk) : NULL;
    if (ret == 0 && !bits)
        ret = img_error(-ENOMEM, "asif: out of memory");
    if (ret == 0)
        ret = asif_read_bitmap(img, bitmap_entry, t->place.slot, bits);
    uint64_t edges[2] = {t->in / bs, (t->in + t->len - 1) / bs};
    for (int i = 0; i < 2 && ret == 0; i++) {
        uint64_t sector = edges[i];
        if (i == 1 && sector == edges[0])
            break;
        bool whole = t->in <= sector * bs && t->in + t->len >= (sector + 1) * bs;
        if (whole || asif_sector_state(bits, sector) == ASIF_SECTOR_SET)
            continue;
        ret = io_write_zeroes(img->file, t->host * s->g.chunk_size + sector * bs, bs);
        if (ret < 0)
            img_error(ret, "asif: cannot clear a sector of '%s': %s", img->filename,
                      img_strerror(ret));
    }
    free(bits);
    return ret;
}

int asif_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
               struct img_alloc **token)
{
    struct asif_state *s = img->priv;
    uint64_t cs = s->g.chunk_size;
    uint64_t chunk = offset / cs, in = offset % cs;
    uint64_t len = min_u64(length, cs - in);
    *token = NULL;
    struct img_alloc *t = calloc(1, sizeof(*t));
    if (!t)
        return img_error(-ENOMEM, "asif: out of memory");
    t->inflight.chunk = chunk;
    t->in = in;
    t->len = len;
    asif_place_of(&s->g, chunk, &t->place);

    pthread_mutex_lock(&s->lock);
    asif_inflight_wait(s, chunk);
    int ret = asif_read_entry(img, &t->place, t->place.slot, &t->entry);
    unsigned st = asif_entry_status(t->entry);
    uint64_t idx = asif_entry_index(t->entry);
    if (ret == 0 && (st == ASIF_STATUS_NONE || st == ASIF_STATUS_UNMAPPED)) {
        if (idx != 0)
            ret = img_error(-ENOTSUP,
                            "asif: '%s': the entry of chunk %" PRIu64
                            " has status %u%u with a chunk number: this state is not "
                            "characterised",
                            img->filename, chunk, st >> 1, st & 1);
        else
            ret = asif_take_chunk(img, &t->host);
        t->fresh = true;
    } else if (ret == 0) {
        ret = asif_check_chunk(img, idx, "a data entry");
        t->host = idx;
        if (ret == 0 && st == ASIF_STATUS_PARTIAL)
            ret = zero_edge_sectors(img, t);
    }
    bool linked_whole = ret == 0 && st == ASIF_STATUS_FULL;
    if (ret == 0 && !linked_whole) {
        t->inflight.next = s->inflight;
        s->inflight = &t->inflight;
    }
    pthread_mutex_unlock(&s->lock);
    if (ret < 0) {
        free(t);
        return ret;
    }
    *ext = (struct img_extent){.kind = EXTENT_DATA,
                               .file = img->file,
                               .host_offset = t->host * cs + in,
                               .host_offset_valid = true,
                               .length = len};
    if (linked_whole)
        free(t); /* every sector is valid already: nothing to link */
    else
        *token = t;
    return 0;
}

/* Marks the written sectors in the group's bitmap (taking a bitmap chunk if it has none). */
static int mark_sectors(struct img *img, const struct img_alloc *t)
{
    struct asif_state *s = img->priv;
    uint32_t bs = s->g.block_size;
    uint64_t bitmap_entry;
    int ret = asif_read_entry(img, &t->place, s->g.chunks_per_group, &bitmap_entry);
    if (ret < 0)
        return ret;
    uint8_t *bits = calloc(1, s->g.bitmap_per_chunk);
    if (!bits)
        return img_error(-ENOMEM, "asif: out of memory");
    uint64_t bitmap_index = bitmap_entry;
    if (bitmap_entry == 0) {
        ret = asif_take_chunk(img, &bitmap_index);
    } else {
        /* Checks the entry; a fresh chunk then starts with no valid sector, whatever was left. */
        ret = asif_read_bitmap(img, bitmap_entry, t->place.slot, bits);
        if (t->fresh)
            memset(bits, 0, s->g.bitmap_per_chunk);
    }
    for (uint64_t sector = t->in / bs; ret == 0 && sector * bs < t->in + t->len; sector++)
        asif_sector_set(bits, sector, ASIF_SECTOR_SET);
    if (ret == 0)
        ret = asif_write_bitmap(img, bitmap_index, t->place.slot, bits);
    if (ret == 0 && bitmap_entry == 0)
        ret = asif_write_entry(img, &t->place, s->g.chunks_per_group, bitmap_index);
    free(bits);
    return ret;
}

int asif_alloc_commit(struct img *img, struct img_alloc *t, int write_result)
{
    struct asif_state *s = img->priv;
    pthread_mutex_lock(&s->lock);
    int ret = write_result;
    bool whole = t->in == 0 && t->len == s->g.chunk_size;
    if (ret == 0)
        ret = asif_ensure_table(img, t->place.table);
    if (ret == 0 && !whole)
        ret = mark_sectors(img, t);
    if (ret == 0 && (whole || t->fresh)) {
        unsigned st = whole ? ASIF_STATUS_FULL : ASIF_STATUS_PARTIAL;
        ret =
            asif_write_entry(img, &t->place, t->place.slot, asif_make_entry(t->entry, st, t->host));
    }
    inflight_remove(s, &t->inflight);
    pthread_mutex_unlock(&s->lock);
    free(t);
    return ret;
}
