/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Table and bitmap entries: reading them (with every chunk number checked against the file
 * before use), writing them, and resolving a logical offset to an extent. Callers hold s->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/asif/asif.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* Entries read at once by a lookup: runs longer than this are reported in several calls. */
#define LOOKUP_ENTRIES 256u

int asif_check_chunk(struct img *img, uint64_t index, const char *what)
{
    struct asif_state *s = img->priv;
    if (index == 0)
        return img_error(-EIO, "asif: '%s': %s points to chunk 0, which holds the header",
                         img->filename, what);
    if (index >= s->file_chunks) {
        /* The file may have grown since it was last measured (another reader's view). */
        int64_t size = io_file_size(img->file);
        if (size < 0)
            return img_error((int)size, "asif: cannot read the size of '%s'", img->filename);
        s->file_chunks = ((uint64_t)size + s->g.chunk_size - 1) / s->g.chunk_size;
    }
    if (index >= s->file_chunks)
        return img_error(-EIO,
                         "asif: '%s': %s points to chunk %" PRIu64
                         ", past the end of the file (%" PRIu64 " chunks)",
                         img->filename, what, index, s->file_chunks);
    return 0;
}

/* The chunk number of the table `table`, 0 when it has none; checked. */
static int table_chunk(struct img *img, uint64_t table, uint64_t *out)
{
    struct asif_state *s = img->priv;
    uint64_t e = s->dir[table];
    *out = 0;
    if (e == 0)
        return 0;
    if (e & ~ASIF_ENTRY_INDEX_MASK)
        return img_error(-ENOTSUP,
                         "asif: '%s': directory entry %" PRIu64 " (0x%016" PRIx64
                         ") has flag bits set: this state is not characterised",
                         img->filename, table, e);
    int ret = asif_check_chunk(img, e, "a directory entry");
    if (ret == 0)
        *out = e;
    return ret;
}

static int read_entries(struct img *img, const struct asif_place *p, uint32_t slot, uint32_t count,
                        uint64_t *out)
{
    struct asif_state *s = img->priv;
    uint64_t tc;
    int ret = table_chunk(img, p->table, &tc);
    if (ret < 0 || tc == 0) {
        memset(out, 0, (size_t)count * 8);
        return ret;
    }
    uint8_t raw[LOOKUP_ENTRIES * 8];
    uint64_t at = tc * s->g.chunk_size + p->group_off + (uint64_t)slot * 8;
    ret = io_pread(img->file, raw, (size_t)count * 8, at);
    if (ret < 0)
        return img_error(ret, "asif: cannot read table entries of '%s' at 0x%" PRIx64 ": %s",
                         img->filename, at, img_strerror(ret));
    for (uint32_t i = 0; i < count; i++)
        out[i] = load_be64(raw + 8 * i);
    return 0;
}

int asif_read_entry(struct img *img, const struct asif_place *p, uint32_t slot, uint64_t *out)
{
    return read_entries(img, p, slot, 1, out);
}

int asif_write_entry(struct img *img, const struct asif_place *p, uint32_t slot, uint64_t value)
{
    struct asif_state *s = img->priv;
    uint64_t tc;
    int ret = table_chunk(img, p->table, &tc);
    if (ret == 0 && tc == 0)
        ret = img_error(-EIO, "asif: '%s': table %" PRIu64 " is missing", img->filename, p->table);
    if (ret < 0)
        return ret;
    uint8_t raw[8];
    store_be64(raw, value);
    uint64_t at = tc * s->g.chunk_size + p->group_off + (uint64_t)slot * 8;
    ret = io_pwrite(img->file, raw, 8, at);
    if (ret < 0)
        return img_error(ret, "asif: cannot write a table entry of '%s' at 0x%" PRIx64 ": %s",
                         img->filename, at, img_strerror(ret));
    return 0;
}

/* The bitmap chunk named by a group's bitmap entry, checked; 0 when there is none. */
static int bitmap_chunk(struct img *img, uint64_t entry, uint64_t *out)
{
    *out = 0;
    if (entry & ~ASIF_ENTRY_INDEX_MASK)
        return img_error(-ENOTSUP,
                         "asif: '%s': bitmap entry 0x%016" PRIx64
                         " has flag bits set: this state is not characterised",
                         img->filename, entry);
    if (entry == 0)
        return 0;
    int ret = asif_check_chunk(img, entry, "a bitmap entry");
    if (ret == 0)
        *out = entry;
    return ret;
}

int asif_read_bitmap(struct img *img, uint64_t bitmap_entry, uint32_t slot, uint8_t *out)
{
    struct asif_state *s = img->priv;
    uint64_t bc;
    int ret = bitmap_chunk(img, bitmap_entry, &bc);
    if (ret < 0)
        return ret;
    if (bc == 0)
        return img_error(-ENOTSUP,
                         "asif: '%s': a partly written chunk has no bitmap chunk: this state is "
                         "not characterised",
                         img->filename);
    uint64_t at = bc * s->g.chunk_size + (uint64_t)slot * s->g.bitmap_per_chunk;
    ret = io_pread(img->file, out, s->g.bitmap_per_chunk, at);
    if (ret < 0)
        return img_error(ret, "asif: cannot read a bitmap of '%s' at 0x%" PRIx64 ": %s",
                         img->filename, at, img_strerror(ret));
    return 0;
}

int asif_write_bitmap(struct img *img, uint64_t bitmap_index, uint32_t slot, const uint8_t *bits)
{
    struct asif_state *s = img->priv;
    uint64_t at = bitmap_index * s->g.chunk_size + (uint64_t)slot * s->g.bitmap_per_chunk;
    int ret = io_pwrite(img->file, bits, s->g.bitmap_per_chunk, at);
    if (ret < 0)
        return img_error(ret, "asif: cannot write a bitmap of '%s' at 0x%" PRIx64 ": %s",
                         img->filename, at, img_strerror(ret));
    return 0;
}

static int refuse_state(struct img *img, uint64_t chunk, uint64_t e)
{
    return img_error(-ENOTSUP,
                     "asif: '%s': the entry of chunk %" PRIu64 " (0x%016" PRIx64
                     ") has status %u%u with chunk number %" PRIu64
                     ": this state is not characterised",
                     img->filename, chunk, e, asif_entry_status(e) >> 1, asif_entry_status(e) & 1,
                     asif_entry_index(e));
}

/* A partly written chunk: the run of sectors sharing the state of the first one. */
static int lookup_partial(struct img *img, const struct asif_place *p, uint64_t chunk, uint64_t e,
                          uint64_t in, uint64_t length, struct img_extent *ext)
{
    struct asif_state *s = img->priv;
    uint64_t bitmap_entry;
    int ret = asif_read_entry(img, p, s->g.chunks_per_group, &bitmap_entry);
    uint8_t *bits = ret == 0 ? malloc(s->g.bitmap_per_chunk) : NULL;
    if (ret == 0 && !bits)
        ret = img_error(-ENOMEM, "asif: out of memory");
    if (ret == 0)
        ret = asif_read_bitmap(img, bitmap_entry, p->slot, bits);
    if (ret < 0) {
        free(bits);
        return ret;
    }
    uint64_t sector = in / s->g.block_size;
    unsigned state = asif_sector_state(bits, sector);
    uint64_t end = sector;
    while (end < s->g.sectors_per_chunk && asif_sector_state(bits, end) == state)
        end++;
    free(bits);
    if (state != ASIF_SECTOR_UNSET && state != ASIF_SECTOR_SET)
        return img_error(-ENOTSUP,
                         "asif: '%s': sector %" PRIu64 " of chunk %" PRIu64
                         " has bitmap state %u%u: this state is not characterised",
                         img->filename, sector, chunk, state >> 1, state & 1);
    ext->length = min_u64(length, end * s->g.block_size - in);
    if (state == ASIF_SECTOR_SET) {
        ext->kind = EXTENT_DATA;
        ext->host_offset = asif_entry_index(e) * s->g.chunk_size + in;
        ext->host_offset_valid = true;
    } else {
        ext->kind = EXTENT_UNALLOCATED;
    }
    return 0;
}

int asif_lookup(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext)
{
    struct asif_state *s = img->priv;
    uint64_t cs = s->g.chunk_size;
    uint64_t chunk = offset / cs, in = offset % cs;
    struct asif_place p;
    asif_place_of(&s->g, chunk, &p);
    *ext = (struct img_extent){.file = img->file};

    if (s->dir[p.table] == 0) {
        /* No table: the whole range it would cover is unallocated. */
        uint64_t table_end = (p.table + 1) * s->g.chunks_per_table * cs;
        ext->kind = EXTENT_UNALLOCATED;
        ext->length = min_u64(length, table_end - offset);
        return 0;
    }
    uint64_t chunks_wanted = (in + length + cs - 1) / cs;
    uint32_t count =
        (uint32_t)min_u64(min_u64(chunks_wanted, LOOKUP_ENTRIES), s->g.chunks_per_group - p.slot);
    uint64_t entries[LOOKUP_ENTRIES];
    int ret = read_entries(img, &p, p.slot, count, entries);
    if (ret < 0)
        return ret;
    uint64_t e = entries[0];
    unsigned st = asif_entry_status(e);
    uint64_t idx = asif_entry_index(e);
    if ((st == ASIF_STATUS_NONE || st == ASIF_STATUS_UNMAPPED) && idx != 0)
        return refuse_state(img, chunk, e);
    if (st == ASIF_STATUS_FULL || st == ASIF_STATUS_PARTIAL) {
        ret = asif_check_chunk(img, idx, "a data entry");
        if (ret < 0)
            return ret;
    }
    if (st == ASIF_STATUS_PARTIAL)
        return lookup_partial(img, &p, chunk, e, in, length, ext);

    /* Whole chunks: extend the run over following entries of the same kind. */
    uint32_t run = 1;
    while (run < count) {
        uint64_t n = entries[run];
        if (st == ASIF_STATUS_FULL) {
            if (asif_entry_status(n) != ASIF_STATUS_FULL || asif_entry_index(n) != idx + run ||
                asif_check_chunk(img, idx + run, "a data entry") < 0)
                break;
        } else if ((n & ~ASIF_ENTRY_RESERVED_MASK) != (e & ~ASIF_ENTRY_RESERVED_MASK)) {
            break;
        }
        run++;
    }
    img_error_clear();
    ext->length = min_u64(length, run * cs - in);
    if (st == ASIF_STATUS_FULL) {
        ext->kind = EXTENT_DATA;
        ext->host_offset = idx * cs + in;
        ext->host_offset_valid = true;
    } else {
        ext->kind = st == ASIF_STATUS_UNMAPPED ? EXTENT_ZERO : EXTENT_UNALLOCATED;
    }
    return 0;
}
