/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * cloop (compressed loop) images, read-only, as QEMU's block/cloop.c reads them.
 *
 * Layout: a 128-byte shell-script preamble ("#!/bin/sh\n#V2.0 Format\n..."), then the block
 * size and the block count (big-endian 32-bit, at 128 and 132), then block count + 1
 * big-endian 64-bit file offsets at 136: block i is one zlib stream between offsets i and
 * i + 1, inflating to exactly one block.
 *
 * Bounds are QEMU's (block size a non-zero multiple of 512 up to 64 MiB, an offset table of
 * at most 512 MiB that never decreases, streams of at most 128 MiB), plus an offset table
 * that must lie inside the file, so that its memory is bounded by the file's size.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "error.h"
#include "formats/format.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

#define CLOOP_MAGIC                                                                                \
    "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"
#define CLOOP_TABLE_OFFSET 136u
#define CLOOP_BLOCK_MAX (64u << 20)
#define CLOOP_OFFSETS_MAX (512u << 20)

struct cloop_state {
    uint64_t *offsets; /* n_blocks + 1 entries */
    uint32_t n_blocks;
    uint32_t block_size;
};

/*
 * QEMU accepts a file shorter than the preamble if what there is of it matches; an empty file
 * it never probes (it is raw).
 */
static int cloop_probe(const uint8_t *buf, size_t len, const char *filename)
{
    if (len == 0)
        return 0;
    size_t n = strlen(CLOOP_MAGIC);
    if (n > len)
        n = len;
    return memcmp(buf, CLOOP_MAGIC, n) == 0 ? 2 : 0;
}

static int read_offsets(struct img *img, struct cloop_state *s, uint64_t table_bytes)
{
    s->offsets = malloc(table_bytes);
    if (!s->offsets)
        return img_error(-ENOMEM, "cloop: out of memory for the offsets of '%s'", img->filename);
    int ret = io_pread(img->file, s->offsets, table_bytes, CLOOP_TABLE_OFFSET);
    if (ret < 0)
        return img_error(ret, "cloop: cannot read the offsets of '%s': %s", img->filename,
                         img_strerror(ret));
    for (uint64_t i = 0; i <= s->n_blocks; i++) {
        s->offsets[i] = load_be64(&s->offsets[i]);
        if (i == 0)
            continue;
        if (s->offsets[i] < s->offsets[i - 1])
            return img_error(-EINVAL,
                             "cloop: '%s': offsets not monotonically increasing at index %" PRIu64
                             ", image file is corrupt",
                             img->filename, i);
        /* Streams may be a little larger than their block; QEMU refuses absurd ones. */
        if (s->offsets[i] - s->offsets[i - 1] > 2ull * CLOOP_BLOCK_MAX)
            return img_error(-EINVAL,
                             "cloop: '%s': invalid compressed block size at index %" PRIu64
                             ", image file is corrupt",
                             img->filename, i);
    }
    return 0;
}

static int cloop_open(struct img *img, const img_opts *opts)
{
    if (img->writable)
        return img_error(-EROFS, "cloop: '%s': Image is read-only (the format is read-only)",
                         img->filename);
    int64_t file_size = io_file_size(img->file);
    if (file_size < 0)
        return img_error((int)file_size, "cloop: cannot read the size of '%s'", img->filename);
    uint8_t h[8];
    int ret = io_pread(img->file, h, sizeof(h), 128);
    if (ret < 0)
        return img_error(ret, "cloop: cannot read the header of '%s': %s", img->filename,
                         img_strerror(ret));
    if ((uint64_t)file_size < CLOOP_TABLE_OFFSET)
        return img_error(-EINVAL, "cloop: '%s' is too short for a cloop header", img->filename);
    uint32_t block_size = load_be32(h), n_blocks = load_be32(h + 4);
    if (block_size % 512)
        return img_error(-EINVAL, "cloop: '%s': block_size %" PRIu32 " must be a multiple of 512",
                         img->filename, block_size);
    if (block_size == 0)
        return img_error(-EINVAL, "cloop: '%s': block_size cannot be zero", img->filename);
    if (block_size > CLOOP_BLOCK_MAX)
        return img_error(-EINVAL, "cloop: '%s': block_size %" PRIu32 " must be %u MB or less",
                         img->filename, block_size, CLOOP_BLOCK_MAX >> 20);
    if (n_blocks > (UINT32_MAX - 1) / sizeof(uint64_t))
        return img_error(-EINVAL, "cloop: '%s': n_blocks %" PRIu32 " must be %zu or less",
                         img->filename, n_blocks, (size_t)((UINT32_MAX - 1) / sizeof(uint64_t)));
    uint64_t table_bytes = ((uint64_t)n_blocks + 1) * sizeof(uint64_t);
    if (table_bytes > CLOOP_OFFSETS_MAX)
        return img_error(-EINVAL,
                         "cloop: '%s': image requires too many offsets, try increasing block size",
                         img->filename);
    if (CLOOP_TABLE_OFFSET + table_bytes > (uint64_t)file_size)
        return img_error(
            -EINVAL, "cloop: '%s': the offsets of %" PRIu32 " blocks run past the end of the file",
            img->filename, n_blocks);

    struct cloop_state *s = calloc(1, sizeof(*s));
    if (!s)
        return img_error(-ENOMEM, "cloop: out of memory");
    s->n_blocks = n_blocks;
    s->block_size = block_size;
    ret = read_offsets(img, s, table_bytes);
    if (ret < 0) {
        free(s->offsets);
        free(s);
        return ret;
    }
    img->priv = s;
    img->size = (uint64_t)n_blocks * block_size;
    return 0;
}

static void cloop_close(struct img *img)
{
    struct cloop_state *s = img->priv;
    free(s->offsets);
    free(s);
}

/* Each block is one compressed unit; the core inflates it. */
static int cloop_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext)
{
    const struct cloop_state *s = img->priv;
    uint64_t block = offset / s->block_size;
    if (block >= s->n_blocks)
        return img_error(-EIO, "cloop: '%s': offset %" PRIu64 " is past the last block",
                         img->filename, offset);
    uint64_t start = s->offsets[block], stored = s->offsets[block + 1] - start;
    if (stored == 0)
        return img_error(-EIO, "cloop: '%s': block %" PRIu64 " is empty, image file is corrupt",
                         img->filename, block);
    ext->kind = EXTENT_COMPRESSED;
    ext->file = img->file;
    ext->host_offset = start;
    ext->comp_length = stored;
    ext->unit_start = block * s->block_size;
    ext->unit_size = s->block_size;
    ext->cacheable = true; /* read-only: the unit never changes */
    ext->codec = CODEC_ZLIB;
    ext->length = min_u64(length, ext->unit_start + s->block_size - offset);
    return 0;
}

const struct img_format format_cloop = {
    .name = "cloop",
    .caps = FORMAT_HAS_METADATA | FORMAT_NO_BLOCK_STATUS | FORMAT_NO_DRIVER_INFO,
    .probe = cloop_probe,
    .open = cloop_open,
    .close = cloop_close,
    .map = cloop_map,
};
