/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The read side of the data path: extents through the chain, then bytes. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "io/io.h"
#include "unit_cache.h"
#include "util/checked.h"

/* Compressed units larger than this are refused (qcow2's largest cluster is 2 MiB). */
#define MAX_COMPRESSED_UNIT (64u << 20)

static int check_handle(struct img *img)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    return 0;
}

static int map_one_layer(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext)
{
    memset(ext, 0, sizeof(*ext));
    /* A backing image's failure names the backing image, not the overlay read through it. */
    img_error_context_push(img->filename);
    int ret = img->fmt->map(img, offset, length, ext);
    img_error_context_pop();
    if (ret < 0)
        return ret;
    if (ext->length == 0 || ext->length > length)
        return img_error(-EIO, "%s: format backend returned an invalid extent at %" PRIu64,
                         img->filename, offset);
    return 0;
}

int img_map_chain(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
                  int *depth)
{
    struct img *layer = img;
    length = min_u64(length, img->size - offset);
    for (;;) {
        int ret = map_one_layer(layer, offset, length, ext);
        if (ret < 0)
            return ret;
        /* Unallocated here: the backing image answers, where it reaches that far. */
        if (ext->kind != EXTENT_UNALLOCATED || !layer->backing || offset >= layer->backing->size) {
            *depth = layer->depth - img->depth;
            return 0;
        }
        length = min_u64(ext->length, layer->backing->size - offset);
        layer = layer->backing;
    }
}

static int read_compressed(const struct img_extent *ext, uint8_t *buf, uint64_t offset,
                           uint64_t length)
{
    if (ext->unit_size == 0 || ext->unit_size > MAX_COMPRESSED_UNIT ||
        ext->comp_length > 2ull * ext->unit_size + 4096 || offset < ext->unit_start ||
        offset - ext->unit_start + length > ext->unit_size)
        return img_error(-EIO, "compressed unit at host offset 0x%" PRIx64 " has invalid sizes",
                         ext->host_offset);
    if (ext->cacheable && unit_cache_read(ext, buf, offset))
        return 0;
    uint8_t *packed = malloc(ext->comp_length);
    uint8_t *unit = malloc(ext->unit_size);
    int ret = -ENOMEM;
    if (!packed || !unit) {
        img_error(ret, "out of memory");
        goto out;
    }
    ret = io_pread(ext->file, packed, ext->comp_length, ext->host_offset);
    if (ret < 0) {
        img_error(ret, "cannot read compressed data at 0x%" PRIx64 ": %s", ext->host_offset,
                  img_strerror(ret));
        goto out;
    }
    ret = codec_decompress((enum img_codec)ext->codec, packed, ext->comp_length, unit,
                           ext->unit_size);
    if (ret < 0) {
        img_error(ret, "compressed data at host offset 0x%" PRIx64 " %s (%s)", ext->host_offset,
                  codec_failure((enum img_codec)ext->codec, ret),
                  codec_name((enum img_codec)ext->codec));
        goto out;
    }
    memcpy(buf, unit + (offset - ext->unit_start), length);
    if (ext->cacheable) {
        unit_cache_keep(ext, unit);
        unit = NULL;
    }
out:
    free(packed);
    free(unit);
    return ret;
}

/* Fills `buf` with the bytes one extent describes (the first ext->length bytes at offset). */
int img_read_extent(const struct img_extent *ext, void *buf, uint64_t offset)
{
    switch (ext->kind) {
    case EXTENT_DATA: {
        int ret = io_pread(ext->file, buf, ext->length, ext->host_offset);
        if (ret < 0)
            return img_error(ret,
                             "read of %" PRIu64 " bytes at host offset 0x%" PRIx64 " failed: %s",
                             ext->length, ext->host_offset, img_strerror(ret));
        return 0;
    }
    case EXTENT_ZERO:
    case EXTENT_UNALLOCATED:
        memset(buf, 0, ext->length);
        return 0;
    case EXTENT_COMPRESSED:
        return read_compressed(ext, buf, offset, ext->length);
    }
    return img_error(-EIO, "unknown extent kind %d", (int)ext->kind);
}

int img_read_guest(struct img *img, void *buf, size_t len, uint64_t offset)
{
    uint8_t *out = buf;
    if (offset >= img->size) {
        memset(out, 0, len);
        return 0;
    }
    uint64_t in_image = min_u64(len, img->size - offset);
    memset(out + in_image, 0, len - in_image);
    while (in_image) {
        struct img_extent ext;
        int depth;
        int ret = img_map_chain(img, offset, in_image, &ext, &depth);
        if (ret < 0)
            return ret;
        ret = img_read_extent(&ext, out, offset);
        if (ret < 0)
            return ret;
        out += ext.length;
        offset += ext.length;
        in_image -= ext.length;
    }
    return 0;
}

int img_backing_pread(struct img *img, void *buf, size_t len, uint64_t offset)
{
    if (!img->backing) {
        memset(buf, 0, len);
        return 0;
    }
    return img_read_guest(img->backing, buf, len, offset);
}

IMG_API int64_t img_pread(img *img, void *buf, size_t len, uint64_t offset)
{
    int ret = check_handle(img);
    if (ret < 0)
        return ret;
    if (!buf && len)
        return img_error(-EINVAL, "img_pread: buffer is NULL");
    img_io_enter(img);
    size_t n = 0;
    if (offset < img->size) {
        n = (size_t)min_u64(len, img->size - offset);
        ret = img_read_guest(img, buf, n, offset);
    }
    img_io_leave(img);
    return ret < 0 ? ret : (int64_t)n;
}

static unsigned extent_status(const struct img_extent *ext, struct img *img, int depth)
{
    switch (ext->kind) {
    case EXTENT_DATA:
        return IMG_BLOCK_DATA | IMG_BLOCK_ALLOCATED | IMG_BLOCK_OFFSET_VALID;
    case EXTENT_COMPRESSED:
        return IMG_BLOCK_DATA | IMG_BLOCK_ALLOCATED | IMG_BLOCK_COMPRESSED;
    case EXTENT_ZERO:
        return IMG_BLOCK_ZERO | IMG_BLOCK_ALLOCATED |
               (ext->host_offset_valid ? IMG_BLOCK_OFFSET_VALID : 0);
    case EXTENT_UNALLOCATED:
        /* Space may be reserved for it (extended L2): the location is still reported. */
        return IMG_BLOCK_ZERO | (ext->host_offset_valid ? IMG_BLOCK_OFFSET_VALID : 0);
    }
    return 0;
}

/*
 * Narrows a DATA extent by what the host file holds at its location: a hole or the space past
 * the end of the file reads as zeros, which block status reports as ZERO (still DATA).
 */
static int refine_by_host_file(const struct img_extent *ext, uint64_t *pnum, unsigned *status)
{
    int64_t file_size = io_file_size(ext->file);
    if (file_size < 0)
        return 0; /* extra information only: ignore failures */
    if (ext->host_offset >= (uint64_t)file_size) {
        *status |= IMG_BLOCK_ZERO;
        return 0;
    }
    uint64_t data_start, data_end;
    if (io_find_data(ext->file, ext->host_offset, &data_start, &data_end) < 0)
        return 0;
    if (data_start <= ext->host_offset) {
        *pnum = min_u64(*pnum, data_end - ext->host_offset);
        return 0;
    }
    *status |= IMG_BLOCK_ZERO;
    /* A hole that runs to the end of the file covers the whole extent. */
    if (data_start < (uint64_t)file_size)
        *pnum = min_u64(*pnum, data_start - ext->host_offset);
    return 0;
}

static int block_status_locked(struct img *img, uint64_t offset, uint64_t length, uint64_t *pnum,
                               unsigned *status, int *depth, uint64_t *host_offset)
{
    int ret;
    if (!pnum)
        return img_error(-EINVAL, "img_block_status: pnum is required");
    if (offset >= img->size || length == 0)
        return img_error(-EINVAL,
                         "img_block_status: offset %" PRIu64 " is not inside the image "
                         "(size %" PRIu64 ")",
                         offset, img->size);
    if (format_has(img->fmt, FORMAT_NO_BLOCK_STATUS)) {
        /* As qemu answers for a driver without block status: all of it is data, here. */
        *pnum = min_u64(length, img->size - offset);
        if (status)
            *status = IMG_BLOCK_DATA | IMG_BLOCK_ALLOCATED;
        if (depth)
            *depth = 0;
        if (host_offset)
            *host_offset = 0;
        return 0;
    }
    struct img_extent ext;
    int d;
    ret = img_map_chain(img, offset, length, &ext, &d);
    if (ret < 0)
        return ret;
    *pnum = ext.length;
    unsigned st = extent_status(&ext, img, d);
    if (ext.kind == EXTENT_DATA && ext.refine_with_host)
        refine_by_host_file(&ext, pnum, &st);
    if (status)
        *status = st;
    if (depth)
        *depth = d;
    if (host_offset)
        *host_offset = ext.host_offset;
    return 0;
}

IMG_API int img_block_status(img *img, uint64_t offset, uint64_t length, uint64_t *pnum,
                             unsigned *status, int *depth, uint64_t *host_offset)
{
    int ret = check_handle(img);
    if (ret < 0)
        return ret;
    img_io_enter(img);
    ret = block_status_locked(img, offset, length, pnum, status, depth, host_offset);
    img_io_leave(img);
    return ret;
}
