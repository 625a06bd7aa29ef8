/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writing. Flat extents are written in place. A sparse grain is allocated at the end of its
 * extent file, filled from the parent (or zeros) around the data being written, and linked in
 * the grain table (and its redundant copy) once the data is written (see vmdk.h for the
 * ordering rule). Compressed (streamOptimized) extents take whole grains only, appended after
 * the last one as a grain marker and a zlib stream, as QEMU writes them; a grain once written
 * is not written again. The first write after open gives the image a new CID, as QEMU does, so
 * that images made on top of it by a VMware product notice the change.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "codec/codec.h"
#include "error.h"
#include "formats/vmdk/vmdk.h"
#include "image.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

struct img_alloc {
    struct vmdk_extent *extent;
    struct vmdk_grain grain;
    uint64_t sector;
};

static uint32_t random_cid(void)
{
    uint32_t v = 0;
    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != sizeof(v))
        v = (uint32_t)rand();
    return v;
}

/* Rewrites "CID=..." in the descriptor. Called under img->lock. */
static int rewrite_cid(struct img *img, struct vmdk_state *s, uint32_t cid)
{
    uint64_t at = s->embedded ? 0x200 : 0;
    size_t area = VMDK_DESC_SIZE;
    if (s->embedded) {
        /* Only within the descriptor's sectors, which a crafted header may make small. */
        uint8_t h[512];
        int ret = io_pread(img->file, h, sizeof(h), 0);
        if (ret < 0)
            return img_error(ret, "vmdk: '%s': cannot read the header: %s", img->filename,
                             img_strerror(ret));
        if (load_le32(h) != VMDK4_MAGIC || load_le64(h + 28) != 1 || load_le64(h + 36) < 1)
            return 0;
        area = (size_t)min_u64(load_le64(h + 36) * VMDK_SECTOR, VMDK_DESC_SIZE);
    } else {
        area = VMDK_DESC_MAX;
    }
    char *text;
    int ret = vmdk_read_text(img->file, at, area, img->filename, &text);
    if (ret < 0)
        return ret;
    size_t old_len = strlen(text);
    char *p = strstr(text, "CID");
    char *parent = strstr(text, "parentCID");
    if (!p || !parent || p > parent) {
        free(text);
        return 0; /* nothing QEMU would change either */
    }
    p += 4;
    char *end = p;
    while ((*end >= '0' && *end <= '9') || (*end >= 'a' && *end <= 'f') ||
           (*end >= 'A' && *end <= 'F'))
        end++;
    char hex[16];
    int n = snprintf(hex, sizeof(hex), "%" PRIx32, cid);
    size_t new_len = old_len - (size_t)(end - p) + (size_t)n;
    if (new_len + 1 > area) {
        free(text);
        return 0;
    }
    char *out = calloc(1, area + 1);
    if (!out) {
        free(text);
        return img_error(-ENOMEM, "out of memory");
    }
    memcpy(out, text, (size_t)(p - text));
    memcpy(out + (p - text), hex, (size_t)n);
    strcpy(out + (p - text) + n, end);
    size_t write_len = s->embedded ? (new_len > old_len ? new_len : old_len) : new_len;
    ret = io_pwrite(img->file, out, write_len, at);
    if (ret == 0 && !s->embedded)
        ret = io_truncate(img->file, new_len);
    free(out);
    free(text);
    if (ret < 0)
        return img_error(ret, "vmdk: '%s': cannot update the CID: %s", img->filename,
                         img_strerror(ret));
    s->cid = cid;
    return 0;
}

int vmdk_update_cid(struct img *img)
{
    struct vmdk_state *s = img->priv;
    if (s->cid_updated)
        return 0;
    int ret = rewrite_cid(img, s, random_cid());
    if (ret == 0)
        s->cid_updated = true;
    return ret;
}

static int writable_extent(struct img *img, uint64_t offset, struct vmdk_extent **out)
{
    struct vmdk_state *s = img->priv;
    struct vmdk_extent *e = vmdk_find_extent(s, offset);
    if (!e)
        return img_error(-EIO, "vmdk: '%s': no extent holds offset %" PRIu64, img->filename,
                         offset);
    if (e->kind == VMDK_EXTENT_SESPARSE)
        return img_error(-ENOTSUP, "vmdk: '%s': seSparse extents are read only", e->filename);
    *out = e;
    return 0;
}

/* Fills the grain at `sector` around [skip_start, skip_end) from the parent or with zeros. */
static int fill_grain(struct img *img, struct vmdk_extent *e, uint64_t guest_start, uint64_t sector,
                      uint64_t skip_start, uint64_t skip_end, bool zeroed)
{
    uint64_t grain_bytes = e->grain_sectors * VMDK_SECTOR;
    if (skip_start == 0 && skip_end == grain_bytes)
        return 0;
    uint8_t *buf = calloc(1, grain_bytes);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    int ret = 0;
    bool from_parent = img->backing && !zeroed;
    if (from_parent && skip_start)
        ret = img_backing_pread(img, buf, skip_start, guest_start);
    if (ret == 0 && from_parent && skip_end < grain_bytes)
        ret =
            img_backing_pread(img, buf + skip_end, grain_bytes - skip_end, guest_start + skip_end);
    if (ret == 0 && skip_start)
        ret = io_pwrite(e->file, buf, skip_start, sector * VMDK_SECTOR);
    if (ret == 0 && skip_end < grain_bytes)
        ret = io_pwrite(e->file, buf + skip_end, grain_bytes - skip_end,
                        sector * VMDK_SECTOR + skip_end);
    free(buf);
    if (ret < 0)
        return img_error(ret, "vmdk: '%s': cannot fill a new grain: %s", e->filename,
                         img_strerror(ret));
    return 0;
}

static void release_busy(struct img *img)
{
    struct vmdk_state *s = img->priv;
    pthread_mutex_lock(&img->lock);
    s->alloc_busy = false;
    pthread_cond_broadcast(&s->alloc_done);
    pthread_mutex_unlock(&img->lock);
}

int vmdk_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
               struct img_alloc **token)
{
    struct vmdk_state *s = img->priv;
    struct vmdk_extent *e;
    *token = NULL;
    int ret = writable_extent(img, offset, &e);
    if (ret < 0)
        return ret;
    uint64_t extent_end = e->start + e->sectors * VMDK_SECTOR;
    length = min_u64(length, extent_end - offset);
    memset(ext, 0, sizeof(*ext));
    ext->kind = EXTENT_DATA;
    ext->file = e->file;
    ext->host_offset_valid = true;
    if (e->kind == VMDK_EXTENT_FLAT) {
        pthread_mutex_lock(&img->lock);
        ret = vmdk_update_cid(img);
        pthread_mutex_unlock(&img->lock);
        ext->host_offset = e->flat_offset + (offset - e->start);
        ext->length = length;
        return ret;
    }
    if (e->compressed)
        return img_error(-ENOTSUP,
                         "vmdk: '%s': a streamOptimized image takes only whole compressed "
                         "grains, written once each (convert writes it so)",
                         e->filename);
    uint64_t grain_bytes = e->grain_sectors * VMDK_SECTOR;
    uint64_t in_grain = (offset - e->start) % grain_bytes;
    length = min_u64(length, grain_bytes - in_grain);
    struct vmdk_grain g;
    pthread_mutex_lock(&img->lock);
    for (;;) {
        if (ret == 0)
            ret = vmdk_lookup(img, e, offset, &g);
        if (ret < 0 || g.kind == VMDK_GRAIN_DATA || !s->alloc_busy)
            break;
        pthread_cond_wait(&s->alloc_done, &img->lock);
    }
    /* A crafted table could aim a write at the header or the tables: never write there. */
    if (ret == 0 && g.kind == VMDK_GRAIN_DATA && g.host_sector < e->grain_offset)
        ret = img_error(-EIO,
                        "vmdk: '%s': the grain table entry for offset %" PRIu64
                        " points into the metadata (sector %" PRIu64 ")",
                        e->filename, offset, g.host_sector);
    /* The write goes ahead: the image gets its new CID first, once per open. */
    if (ret == 0)
        ret = vmdk_update_cid(img);
    if (ret == 0 && g.kind == VMDK_GRAIN_DATA) {
        pthread_mutex_unlock(&img->lock);
        ext->host_offset = g.host_sector * VMDK_SECTOR + in_grain;
        ext->length = length;
        return 0;
    }
    if (ret == 0 && g.l2_sector == 0)
        ret = img_error(-ENOTSUP,
                        "vmdk: '%s': the grain table for offset %" PRIu64
                        " is not allocated; writing it is not supported",
                        e->filename, offset);
    uint64_t sector = e->next_sector;
    if (ret == 0 && sector + e->grain_sectors > UINT32_MAX)
        ret = img_error(-ENOSPC, "vmdk: '%s': the extent file is full (grain offsets are 32-bit)",
                        e->filename);
    if (ret < 0) {
        pthread_mutex_unlock(&img->lock);
        return ret;
    }
    e->next_sector += e->grain_sectors;
    s->alloc_busy = true;
    pthread_mutex_unlock(&img->lock);

    struct img_alloc *a = malloc(sizeof(*a));
    ret = a ? fill_grain(img, e, offset - in_grain, sector, in_grain, in_grain + length,
                         g.kind == VMDK_GRAIN_ZERO)
            : img_error(-ENOMEM, "out of memory");
    if (ret < 0) {
        free(a);
        release_busy(img);
        return ret;
    }
    *a = (struct img_alloc){.extent = e, .grain = g, .sector = sector};
    *token = a;
    ext->host_offset = sector * VMDK_SECTOR + in_grain;
    ext->length = length;
    return 0;
}

int vmdk_alloc_commit(struct img *img, struct img_alloc *a, int write_result)
{
    struct vmdk_state *s = img->priv;
    int ret = 0;
    pthread_mutex_lock(&img->lock);
    if (write_result == 0)
        ret = vmdk_set_gte(img, a->extent, &a->grain, (uint32_t)a->sector);
    s->alloc_busy = false;
    pthread_cond_broadcast(&s->alloc_done);
    pthread_mutex_unlock(&img->lock);
    free(a);
    return ret;
}

/* Writes zeros through an allocation, for ranges no table entry can express. */
static int zero_by_writing(struct img *img, uint64_t offset, uint64_t length)
{
    struct img_extent ext;
    struct img_alloc *token;
    int ret = vmdk_alloc(img, offset, length, &ext, &token);
    if (ret < 0)
        return ret;
    int wrote = io_write_zeroes(ext.file, ext.host_offset, ext.length);
    if (wrote < 0)
        img_error(wrote, "vmdk: '%s': cannot write zeros: %s", img->filename, img_strerror(wrote));
    if (token)
        ret = vmdk_alloc_commit(img, token, wrote);
    if (wrote < 0)
        return wrote;
    return ret < 0 ? ret : (int)min_u64(ext.length, INT32_MAX);
}

int vmdk_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags)
{
    (void)flags;
    while (length) {
        struct vmdk_extent *e;
        int ret = writable_extent(img, offset, &e);
        if (ret < 0)
            return ret;
        uint64_t extent_end = e->start + e->sectors * VMDK_SECTOR;
        uint64_t n = min_u64(length, extent_end - offset);
        if (e->kind != VMDK_EXTENT_FLAT) {
            if (e->compressed)
                return img_error(-ENOTSUP, "vmdk: '%s': a streamOptimized image cannot write zeros",
                                 e->filename);
            uint64_t grain_bytes = e->grain_sectors * VMDK_SECTOR;
            uint64_t in_grain = (offset - e->start) % grain_bytes;
            n = min_u64(n, grain_bytes - in_grain);
            struct vmdk_grain g;
            pthread_mutex_lock(&img->lock);
            ret = vmdk_lookup(img, e, offset, &g);
            bool whole = in_grain == 0 && n == grain_bytes;
            bool done = ret == 0 && (g.kind == VMDK_GRAIN_ZERO ||
                                     (g.kind == VMDK_GRAIN_UNALLOC && !img->backing));
            if (ret == 0 && !done && whole && e->zero_grain && g.l2_sector) {
                ret = vmdk_update_cid(img);
                if (ret == 0)
                    ret = vmdk_set_gte(img, e, &g, VMDK_GTE_ZEROED);
                done = true;
            }
            pthread_mutex_unlock(&img->lock);
            if (ret < 0)
                return ret;
            if (done) {
                offset += n;
                length -= n;
                continue;
            }
        }
        ret = zero_by_writing(img, offset, n);
        if (ret < 0)
            return ret;
        offset += (uint64_t)ret;
        length -= (uint64_t)ret;
    }
    return 0;
}

int vmdk_discard(struct img *img, uint64_t offset, uint64_t length)
{
    /* QEMU's VMDK driver discards nothing: the data stays. */
    (void)img;
    (void)offset;
    (void)length;
    return 0;
}

int vmdk_flush(struct img *img)
{
    struct vmdk_state *s = img->priv;
    int ret = io_fsync(img->file);
    for (unsigned i = 0; ret == 0 && i < s->count; i++)
        if (s->extents[i].own_file)
            ret = io_fsync(s->extents[i].file);
    if (ret < 0)
        return img_error(ret, "vmdk: '%s': flush failed: %s", img->filename, img_strerror(ret));
    return 0;
}

int vmdk_compress_unit(struct img *img, const void *buf, size_t len, void *out, size_t out_cap,
                       size_t *out_len)
{
    struct vmdk_state *s = img->priv;
    *out_len = 0;
    /* Only compressed extents store streams; the others take the plain grain. */
    if (s->count == 0 || !s->extents[0].compressed)
        return 0;
    long n = codec_compress(CODEC_ZLIB, buf, len, out, out_cap);
    if (n == -ENOSPC)
        return 0; /* compressed again, with room, when written */
    if (n < 0)
        return img_error((int)n, "vmdk: cannot compress a grain: %s", img_strerror((int)n));
    *out_len = (size_t)n;
    return 0;
}

static int write_plain(struct img *img, uint64_t offset, const uint8_t *data, size_t len)
{
    while (len) {
        struct img_extent ext;
        struct img_alloc *token;
        int ret = vmdk_alloc(img, offset, len, &ext, &token);
        if (ret < 0)
            return ret;
        int wrote = io_pwrite(ext.file, data, ext.length, ext.host_offset);
        if (wrote < 0)
            img_error(wrote, "vmdk: '%s': write failed: %s", img->filename, img_strerror(wrote));
        if (token)
            ret = vmdk_alloc_commit(img, token, wrote);
        if (wrote < 0 || ret < 0)
            return wrote < 0 ? wrote : ret;
        offset += ext.length;
        data += ext.length;
        len -= ext.length;
    }
    return 0;
}

int vmdk_write_compressed_data(struct img *img, uint64_t offset, const void *data, size_t len,
                               bool stored_uncompressed)
{
    struct vmdk_extent *e;
    int ret = writable_extent(img, offset, &e);
    if (ret < 0)
        return ret;
    if (!e->compressed) {
        if (!stored_uncompressed)
            return img_error(-EINVAL, "vmdk: '%s': the extent does not store compressed grains",
                             e->filename);
        return write_plain(img, offset, data, len);
    }
    uint64_t grain_bytes = e->grain_sectors * VMDK_SECTOR;
    uint64_t extent_end = e->start + e->sectors * VMDK_SECTOR;
    /* `len` is the unit's length when stored plain, else the stream's. */
    if ((offset - e->start) % grain_bytes || !e->has_marker ||
        (stored_uncompressed &&
         (len > grain_bytes || (len < grain_bytes && offset + len != extent_end))) ||
        (!stored_uncompressed && len > 2 * grain_bytes))
        return img_error(-EINVAL,
                         "vmdk: '%s': a compressed write must cover one whole grain at a "
                         "grain boundary",
                         e->filename);
    /* Marker (guest sector, stream length), the stream, zeros up to the next sector. */
    size_t cap = 2 * grain_bytes + 12 + VMDK_SECTOR;
    uint8_t *buf = calloc(1, cap);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    size_t stream = len;
    if (stored_uncompressed) {
        long n = codec_compress(CODEC_ZLIB, data, len, buf + 12, 2 * grain_bytes);
        if (n < 0) {
            free(buf);
            return img_error((int)n, "vmdk: cannot compress a grain: %s", img_strerror((int)n));
        }
        stream = (size_t)n;
    } else {
        memcpy(buf + 12, data, len);
    }
    store_le64(buf, offset / VMDK_SECTOR - e->start / VMDK_SECTOR);
    store_le32(buf + 8, (uint32_t)stream);
    size_t total = (size_t)align_up_u64(12 + stream, VMDK_SECTOR);

    struct vmdk_grain g;
    pthread_mutex_lock(&img->lock);
    ret = vmdk_lookup(img, e, offset, &g);
    if (ret == 0 && g.kind == VMDK_GRAIN_DATA)
        ret = img_error(-EIO,
                        "vmdk: '%s': could not write to allocated cluster for "
                        "streamOptimized",
                        e->filename);
    if (ret == 0 && g.l2_sector == 0)
        ret = img_error(-ENOTSUP,
                        "vmdk: '%s': the grain table for offset %" PRIu64 " is not allocated",
                        e->filename, offset);
    uint64_t sector = e->next_sector;
    if (ret == 0 && sector + total / VMDK_SECTOR > UINT32_MAX)
        ret = img_error(-ENOSPC, "vmdk: '%s': the extent file is full", e->filename);
    if (ret == 0)
        ret = vmdk_update_cid(img);
    if (ret == 0) {
        ret = io_pwrite(e->file, buf, total, sector * VMDK_SECTOR);
        if (ret < 0)
            img_error(ret, "vmdk: '%s': write failed: %s", e->filename, img_strerror(ret));
    }
    if (ret == 0) {
        e->next_sector = sector + total / VMDK_SECTOR;
        ret = vmdk_set_gte(img, e, &g, (uint32_t)sector);
    }
    pthread_mutex_unlock(&img->lock);
    free(buf);
    return ret;
}
