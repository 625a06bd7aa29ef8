/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Bochs growing ("redolog") images, read-only, as QEMU's block/bochs.c reads them.
 *
 * Layout (little-endian): a 512-byte header ("Bochs Virtual HD Image", type "Redolog",
 * subtype "Growing", version 1 or 2, header size, catalog entries, bitmap size, extent size,
 * then the disk size at 84 (v1) or 88 (v2)); the catalog, one 32-bit entry per extent of the
 * disk, at the header size; then the extents, each a bitmap of bitmap_blocks sectors (one bit
 * per sector of the extent) followed by extent_blocks sectors of data. Catalog entry
 * 0xffffffff, or a clear bitmap bit, is a sector never written: it reads as zeros.
 *
 * Bounds are QEMU's (at most 1M catalog entries, extents of 512 bytes to 8 MiB and a power of
 * two, a catalog that covers the disk), plus a catalog that must lie inside the file.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

#define BOCHS_HEADER_SIZE 512
#define BOCHS_VERSION_1 0x00010000u
#define BOCHS_VERSION_2 0x00020000u
#define BOCHS_CATALOG_MAX 0x100000u
#define BOCHS_EXTENT_MAX 0x800000u
#define BOCHS_UNALLOCATED 0xffffffffu

struct bochs_state {
    uint32_t *catalog;
    uint32_t catalog_size;
    uint32_t extent_size;
    uint32_t bitmap_blocks, extent_blocks;
    uint64_t data_offset;
};

/* QEMU compares the fixed-size fields with strcmp(): the text must end with a NUL. */
static bool field_is(const uint8_t *field, size_t size, const char *text)
{
    size_t n = strlen(text);
    return n < size && memcmp(field, text, n + 1) == 0;
}

static bool header_matches(const uint8_t *buf)
{
    uint32_t version = load_le32(buf + 64);
    return field_is(buf, 32, "Bochs Virtual HD Image") && field_is(buf + 32, 16, "Redolog") &&
           field_is(buf + 48, 16, "Growing") &&
           (version == BOCHS_VERSION_1 || version == BOCHS_VERSION_2);
}

static int bochs_probe(const uint8_t *buf, size_t len, const char *filename)
{
    return len >= BOCHS_HEADER_SIZE && header_matches(buf) ? 100 : 0;
}

static int bochs_open(struct img *img, const img_opts *opts)
{
    if (img->writable)
        return img_error(-EROFS, "bochs: '%s': Image is read-only (the format is read-only)",
                         img->filename);
    int64_t file_size = io_file_size(img->file);
    if (file_size < 0)
        return img_error((int)file_size, "bochs: cannot read the size of '%s'", img->filename);
    uint8_t h[BOCHS_HEADER_SIZE];
    int ret = io_pread(img->file, h, sizeof(h), 0);
    if (ret < 0)
        return img_error(ret, "bochs: cannot read the header of '%s': %s", img->filename,
                         img_strerror(ret));
    if ((uint64_t)file_size < BOCHS_HEADER_SIZE || !header_matches(h))
        return img_error(-EINVAL, "bochs: '%s': Image not in Bochs format", img->filename);

    uint32_t version = load_le32(h + 64);
    uint64_t disk = load_le64(h + (version == BOCHS_VERSION_1 ? 84 : 88));
    uint32_t header_size = load_le32(h + 68), catalog_size = load_le32(h + 72);
    uint32_t bitmap_size = load_le32(h + 76), extent_size = load_le32(h + 80);
    /* QEMU's limit: what bximage needs for its largest image (about 8 TB). */
    if (catalog_size > BOCHS_CATALOG_MAX)
        return img_error(-EFBIG, "bochs: '%s': Catalog size is too large (%" PRIu32 " entries)",
                         img->filename, catalog_size);
    if (extent_size < 512)
        return img_error(-EINVAL, "bochs: '%s': Extent size must be at least 512", img->filename);
    if (extent_size & (extent_size - 1))
        return img_error(-EINVAL, "bochs: '%s': Extent size %" PRIu32 " is not a power of two",
                         img->filename, extent_size);
    if (extent_size > BOCHS_EXTENT_MAX)
        return img_error(-EINVAL, "bochs: '%s': Extent size %" PRIu32 " is too large",
                         img->filename, extent_size);
    uint64_t sectors = disk / 512, per_extent = extent_size / 512;
    if (catalog_size < sectors / per_extent + (sectors % per_extent != 0))
        return img_error(-EINVAL, "bochs: '%s': Catalog size is too small for this disk size",
                         img->filename);
    uint64_t catalog_bytes = (uint64_t)catalog_size * 4;
    if ((uint64_t)header_size + catalog_bytes > (uint64_t)file_size)
        return img_error(-EINVAL,
                         "bochs: '%s': the catalog (%" PRIu64 " bytes at %" PRIu32
                         ") runs past the end of the file",
                         img->filename, catalog_bytes, header_size);

    struct bochs_state *s = calloc(1, sizeof(*s));
    if (!s)
        return img_error(-ENOMEM, "bochs: out of memory");
    s->catalog = malloc(catalog_bytes ? catalog_bytes : 1);
    if (!s->catalog) {
        free(s);
        return img_error(-ENOMEM, "bochs: out of memory for the catalog of '%s'", img->filename);
    }
    ret = io_pread(img->file, s->catalog, catalog_bytes, header_size);
    if (ret < 0) {
        free(s->catalog);
        free(s);
        return img_error(ret, "bochs: cannot read the catalog of '%s': %s", img->filename,
                         img_strerror(ret));
    }
    for (uint32_t i = 0; i < catalog_size; i++)
        s->catalog[i] = load_le32(&s->catalog[i]);
    s->catalog_size = catalog_size;
    s->extent_size = extent_size;
    s->data_offset = (uint64_t)header_size + catalog_bytes;
    /* As QEMU computes them, in 32 bits (a size of 0 wraps to a huge count). */
    s->bitmap_blocks = 1 + (bitmap_size - 1) / 512;
    s->extent_blocks = 1 + (extent_size - 1) / 512;
    img->priv = s;
    img->size = sectors * 512;
    return 0;
}

static void bochs_close(struct img *img)
{
    struct bochs_state *s = img->priv;
    free(s->catalog);
    free(s);
}

static int bochs_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext)
{
    const struct bochs_state *s = img->priv;
    uint64_t index = offset / s->extent_size, in_extent = offset % s->extent_size;
    length = min_u64(length, s->extent_size - in_extent);
    if (index >= s->catalog_size)
        return img_error(-EIO, "bochs: '%s': offset %" PRIu64 " is past the catalog", img->filename,
                         offset);
    ext->kind = EXTENT_ZERO;
    ext->length = length;
    if (s->catalog[index] == BOCHS_UNALLOCATED)
        return 0;

    uint64_t stride = (uint64_t)s->extent_blocks + s->bitmap_blocks, bitmap_offset;
    if (mul_overflows_u64((uint64_t)s->catalog[index] * 512, stride, &bitmap_offset) ||
        add_overflows_u64(bitmap_offset, s->data_offset, &bitmap_offset) ||
        bitmap_offset > (uint64_t)INT64_MAX - (uint64_t)stride * 512)
        return img_error(-EIO,
                         "bochs: '%s': extent %" PRIu32 " of the catalog lies past "
                         "the largest file size",
                         img->filename, s->catalog[index]);

    /* The bits of the sectors asked for: at most an 8 MiB extent's 2 KiB of bitmap. */
    uint64_t first = in_extent / 512, last = (in_extent + length - 1) / 512;
    uint8_t bits[BOCHS_EXTENT_MAX / 512 / 8];
    size_t nbytes = (size_t)(last / 8 - first / 8 + 1);
    int ret = io_pread(img->file, bits, nbytes, bitmap_offset + first / 8);
    if (ret < 0)
        return img_error(ret, "bochs: cannot read the bitmap of '%s': %s", img->filename,
                         img_strerror(ret));
    bool allocated = (bits[0] >> (first % 8)) & 1;
    uint64_t sector = first + 1;
    while (sector <= last) {
        uint64_t at = sector / 8 - first / 8;
        if ((bool)((bits[at] >> (sector % 8)) & 1) != allocated)
            break;
        sector++;
    }
    ext->length = min_u64(length, sector * 512 - in_extent);
    if (allocated) {
        ext->kind = EXTENT_DATA;
        ext->file = img->file;
        ext->host_offset = bitmap_offset + 512 * (uint64_t)s->bitmap_blocks + in_extent;
        ext->host_offset_valid = true;
    }
    return 0;
}

const struct img_format format_bochs = {
    .name = "bochs",
    .caps = FORMAT_HAS_METADATA | FORMAT_NO_BLOCK_STATUS | FORMAT_NO_DRIVER_INFO,
    .probe = bochs_probe,
    .open = bochs_open,
    .close = bochs_close,
    .map = bochs_map,
};
