/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Creation, laid out as the images diskutil was observed to write (LAYOUT.md): chunk 0 holds
 * the header and both directories, chunk 1 the table of the last directory entry, chunk 2 the
 * metadata (a partly written chunk: its header sector and its property list sector), chunk 3
 * the bitmap of the metadata's chunk group.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "error.h"
#include "formats/asif/asif.h"
#include "io/io.h"
#include "opts.h"
#include "util/checked.h"
#include "util/endian.h"

#define TABLE_CHUNK 1u
#define META_CHUNK 2u
#define BITMAP_CHUNK 3u
#define META_HEADER_BYTES 0x200u
#define META_PLIST_MAX 0x600u

static int random_uuid(uint8_t out[16])
{
    size_t done = 0;
    while (done < 16) {
        ssize_t n = getrandom(out + done, 16 - done, 0);
        if (n < 0)
            return -errno;
        done += (size_t)n;
    }
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x40); /* version 4 */
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    return 0;
}

static void uuid_text(const uint8_t u[16], char out[37])
{
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
             u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
             u[14], u[15]);
}

struct create_layout {
    struct asif_geometry g;
    uint64_t sectors;
    uint64_t meta_chunk;
    uint64_t dir_off[2];
    struct asif_place meta_place;
};

/* Chunk 0: the header, then both directories, each naming the metadata's table. */
static int write_chunk0(struct io_file *f, const struct create_layout *l, const uint8_t uuid[16])
{
    size_t len = (size_t)(l->dir_off[1] + l->g.dir_bytes);
    uint8_t *buf = calloc(1, len);
    if (!buf)
        return -ENOMEM;
    memcpy(buf, ASIF_MAGIC, 4);
    store_be32(buf + ASIF_OFF_VERSION, ASIF_VERSION);
    store_be32(buf + ASIF_OFF_HEADER_SIZE, ASIF_HEADER_BYTES);
    store_be32(buf + ASIF_OFF_FLAGS, 0);
    store_be64(buf + ASIF_OFF_DIR0, l->dir_off[0]);
    store_be64(buf + ASIF_OFF_DIR1, l->dir_off[1]);
    memcpy(buf + ASIF_OFF_UUID, uuid, 16);
    store_be64(buf + ASIF_OFF_SECTORS, l->sectors);
    store_be64(buf + ASIF_OFF_MAX_SECTORS, l->g.max_bytes / l->g.block_size);
    store_be32(buf + ASIF_OFF_CHUNK_SIZE, l->g.chunk_size);
    store_be16(buf + ASIF_OFF_BLOCK_SIZE, (uint16_t)l->g.block_size);
    store_be16(buf + ASIF_OFF_SEGMENTS, 0);
    store_be64(buf + ASIF_OFF_META_CHUNK, l->meta_chunk);
    /* Directory 0 is in force (sequence 1); directory 1 is the same, one step older. */
    for (int i = 0; i < 2; i++) {
        uint8_t *d = buf + l->dir_off[i];
        store_be64(d, i == 0 ? 1 : 0);
        store_be64(d + 8 + 8 * l->meta_place.table, TABLE_CHUNK);
    }
    int ret = io_pwrite(f, buf, len, 0);
    free(buf);
    return ret;
}

static int write_metadata(struct io_file *f, const struct create_layout *l, const char *stable)
{
    const struct asif_geometry *g = &l->g;
    /* The table entries: the metadata's chunk is partly written, with its group's bitmap. */
    uint8_t entry[16];
    store_be64(entry, asif_make_entry(0, ASIF_STATUS_PARTIAL, META_CHUNK));
    uint64_t table = (uint64_t)TABLE_CHUNK * g->chunk_size + l->meta_place.group_off;
    int ret = io_pwrite(f, entry, 8, table + 8ull * l->meta_place.slot);
    store_be64(entry, BITMAP_CHUNK);
    if (ret == 0)
        ret = io_pwrite(f, entry, 8, table + 8ull * g->chunks_per_group);

    uint8_t meta[META_HEADER_BYTES + META_PLIST_MAX] = {0};
    memcpy(meta, ASIF_META_MAGIC, 4);
    store_be32(meta + 4, 1);
    store_be32(meta + 8, META_HEADER_BYTES);
    /* Read as "offset of the property list" and as "bytes to read there": 0x200 is both. */
    store_be64(meta + 12, META_HEADER_BYTES);
    int n = asif_metadata_plist((char *)meta + META_HEADER_BYTES, META_PLIST_MAX, stable);
    if (n < 0)
        return -EOVERFLOW;
    uint64_t used = align_up_u64(META_HEADER_BYTES + (uint64_t)n, g->block_size);
    if (ret == 0)
        ret = io_pwrite(f, meta, (size_t)used, (uint64_t)META_CHUNK * g->chunk_size);

    /* The bitmap bits of the sectors written, state 01. */
    uint8_t bits[(META_HEADER_BYTES + META_PLIST_MAX) / 512 / 4 + 1] = {0};
    for (uint64_t sector = 0; sector < used / g->block_size; sector++)
        asif_sector_set(bits, sector, ASIF_SECTOR_SET);
    uint64_t at =
        (uint64_t)BITMAP_CHUNK * g->chunk_size + (uint64_t)l->meta_place.slot * g->bitmap_per_chunk;
    if (ret == 0)
        ret = io_pwrite(f, bits, (size_t)((used / g->block_size + 3) / 4), at);
    return ret;
}

int asif_create(const struct img_create_args *args)
{
    if (args->backing_file)
        return img_error(-ENOTSUP, "asif: images of format asif have no backing file");
    uint64_t size = args->size;
    int ret = size ? 0 : opts_get_size(args->opts, "size", &size);
    if (ret < 0)
        return ret;
    struct create_layout l = {0};
    ret = asif_geometry_init(&l.g, ASIF_CREATE_BLOCK_SIZE, ASIF_CREATE_CHUNK_SIZE,
                             ASIF_CREATE_MAX_BYTES / ASIF_CREATE_BLOCK_SIZE, args->path);
    if (ret < 0)
        return ret;
    /* The last chunk of the maximum size holds the metadata: guest data ends before it. */
    l.meta_chunk = l.g.max_bytes / l.g.chunk_size - 1;
    uint64_t limit = l.meta_chunk * l.g.chunk_size;
    if (size > limit)
        return img_error(-EFBIG,
                         "asif: size %" PRIu64 " is larger than the largest ASIF image (%" PRIu64
                         " bytes)",
                         size, limit);
    size = align_up_u64(size, l.g.block_size);
    l.sectors = size / l.g.block_size;
    asif_place_of(&l.g, l.meta_chunk, &l.meta_place);
    l.dir_off[0] = ASIF_HEADER_BYTES;
    l.dir_off[1] = l.dir_off[0] + align_up_u64(l.g.dir_bytes, l.g.block_size);

    uint8_t uuid[16], stable[16];
    char stable_text[37];
    ret = random_uuid(uuid);
    if (ret == 0)
        ret = random_uuid(stable);
    if (ret < 0)
        return img_error(ret, "asif: cannot draw a random UUID: %s", img_strerror(ret));
    uuid_text(stable, stable_text);

    struct io_file *f = args->file;
    ret = io_truncate(f, 0);
    if (ret == 0)
        ret = write_chunk0(f, &l, uuid);
    if (ret == 0)
        ret = write_metadata(f, &l, stable_text);
    if (ret == 0)
        ret = io_truncate(f, (uint64_t)(BITMAP_CHUNK + 1) * l.g.chunk_size);
    if (ret < 0)
        return img_error(ret, "asif: cannot create '%s': %s", args->path, img_strerror(ret));
    return 0;
}
