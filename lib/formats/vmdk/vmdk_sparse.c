/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Sparse extents: the hosted sparse header ("KDMV", with its footer copy when the grain
 * directory is "at end", as streamOptimized files written by VMware have it), the VMFS sparse
 * header ("COWD") and the seSparse headers, and their grain directory. Limits are QEMU's,
 * plus: a grain directory must lie inside the file, so a small crafted file cannot make us
 * allocate the largest directory.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/vmdk/vmdk.h"
#include "image.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

void vmdk_extent_free(struct vmdk_extent *e)
{
    free(e->l1);
    free(e->l1_backup);
    for (int i = 0; i < VMDK_L2_CACHE; i++)
        free(e->cache[i].table);
    if (e->own_file)
        io_file_close(e->file);
    free(e->filename);
    free(e->type);
    memset(e, 0, sizeof(*e));
}

/* Checks the geometry and reads the grain directory (and its backup). */
static int read_tables(struct vmdk_extent *e, const char *filename)
{
    if (e->grain_sectors == 0 || e->grain_sectors > VMDK_MAX_GRAIN_SECTORS)
        return img_error(-EFBIG,
                         "vmdk: '%s': invalid granularity %" PRIu64 ", image may be corrupt",
                         filename, e->grain_sectors);
    if (e->l1_size > VMDK_MAX_L1_ENTRIES)
        return img_error(-EFBIG, "vmdk: '%s': L1 size too big (%" PRIu32 " entries)", filename,
                         e->l1_size);
    if (e->gt_entries == 0)
        return img_error(-EINVAL, "vmdk: '%s': L1 entry size is invalid", filename);
    int64_t file_size = io_file_size(e->file);
    if (file_size < 0)
        return img_error((int)file_size, "vmdk: cannot read the size of '%s'", filename);
    uint64_t bytes = (uint64_t)e->l1_size * e->entry_size;
    uint64_t end;
    if (add_overflows_u64(e->l1_offset, bytes, &end) || end > (uint64_t)file_size)
        return img_error(-EINVAL,
                         "vmdk: '%s': grain directory at 0x%" PRIx64 " (%" PRIu64
                         " bytes) is beyond the end of the file",
                         filename, e->l1_offset, bytes);
    if (e->l1_backup_offset &&
        (add_overflows_u64(e->l1_backup_offset, bytes, &end) || end > (uint64_t)file_size))
        return img_error(-EINVAL,
                         "vmdk: '%s': redundant grain directory at 0x%" PRIx64
                         " is beyond the end of the file",
                         filename, e->l1_backup_offset);
    e->l1 = malloc(bytes ? bytes : 1);
    if (!e->l1)
        return img_error(-ENOMEM, "out of memory");
    int ret = bytes ? io_pread(e->file, e->l1, bytes, e->l1_offset) : 0;
    if (ret < 0)
        return img_error(ret, "vmdk: could not read l1 table from extent '%s': %s", filename,
                         img_strerror(ret));
    for (uint32_t i = 0; i < e->l1_size; i++) {
        if (e->entry_size == 8)
            ((uint64_t *)e->l1)[i] = load_le64((uint8_t *)e->l1 + 8 * (size_t)i);
        else
            ((uint32_t *)e->l1)[i] = load_le32((uint8_t *)e->l1 + 4 * (size_t)i);
    }
    if (e->l1_backup_offset) {
        e->l1_backup = malloc(bytes ? bytes : 1);
        if (!e->l1_backup)
            return img_error(-ENOMEM, "out of memory");
        ret = bytes ? io_pread(e->file, e->l1_backup, bytes, e->l1_backup_offset) : 0;
        if (ret < 0)
            return img_error(ret, "vmdk: could not read l1 backup table from extent '%s': %s",
                             filename, img_strerror(ret));
        for (uint32_t i = 0; i < e->l1_size; i++)
            e->l1_backup[i] = load_le32((uint8_t *)e->l1_backup + 4 * (size_t)i);
    }
    size_t table = (size_t)e->gt_entries * e->entry_size;
    for (int i = 0; i < VMDK_L2_CACHE; i++) {
        e->cache[i].table = malloc(table);
        if (!e->cache[i].table)
            return img_error(-ENOMEM, "out of memory");
    }
    e->next_sector = align_up_u64(((uint64_t)file_size + 511) / 512, e->grain_sectors);
    return 0;
}

static int open_vmdk4(struct img *img, struct vmdk_extent *e, const char *filename,
                      const uint8_t *head)
{
    uint8_t h[512];
    memcpy(h, head, sizeof(h));
    int64_t file_size = io_file_size(e->file);
    if (file_size < 0)
        return img_error((int)file_size, "vmdk: cannot read the size of '%s'", filename);
    if (load_le64(h + 56) == VMDK4_GD_AT_END) {
        /* The footer's copy of the header wins: marker, header, end-of-stream marker. */
        uint8_t f[1536];
        uint64_t at = align_up_u64((uint64_t)file_size, 512);
        if (at < 1536)
            return img_error(-EINVAL, "vmdk: '%s': invalid footer", filename);
        int ret = io_pread(e->file, f, sizeof(f), at - 1536);
        if (ret < 0)
            return img_error(ret, "vmdk: '%s': failed to read footer: %s", filename,
                             img_strerror(ret));
        if (load_le32(f + 512) != VMDK4_MAGIC || load_le32(f + 8) != 0 ||
            load_le32(f + 12) != VMDK_MARKER_FOOTER || load_le64(f + 1024) != 0 ||
            load_le32(f + 1032) != 0 || load_le32(f + 1036) != VMDK_MARKER_EOS)
            return img_error(-EINVAL, "vmdk: '%s': invalid footer", filename);
        memcpy(h, f + 512, sizeof(h));
    }
    uint32_t version = load_le32(h + 4), flags = load_le32(h + 8);
    uint64_t capacity = load_le64(h + 12), granularity = load_le64(h + 20);
    uint32_t gtes = load_le32(h + 44);
    uint64_t rgd = load_le64(h + 48), gd = load_le64(h + 56), grain_offset = load_le64(h + 64);
    bool compressed = load_le16(h + 77) == VMDK4_COMPRESSION_DEFLATE;
    if (version > 3)
        return img_error(-ENOTSUP, "vmdk: '%s': unsupported VMDK version %" PRIu32, filename,
                         version);
    if (version == 3 && img->writable && !compressed)
        return img_error(-EINVAL, "vmdk: '%s': VMDK version 3 must be read only", filename);
    if (gtes > 512)
        return img_error(-EINVAL, "vmdk: '%s': L2 table size too big", filename);
    uint64_t l1_entry_sectors = (uint64_t)gtes * granularity;
    if (gtes == 0 || granularity == 0 || granularity > VMDK_MAX_GRAIN_SECTORS)
        return img_error(gtes && granularity ? -EFBIG : -EINVAL, "vmdk: '%s': %s", filename,
                         gtes && granularity ? "invalid granularity, image may be corrupt"
                                             : "L1 entry size is invalid");
    uint64_t l1_size = capacity / l1_entry_sectors + (capacity % l1_entry_sectors != 0);
    if (l1_size > VMDK_MAX_L1_ENTRIES)
        return img_error(-EFBIG, "vmdk: '%s': L1 size too big", filename);
    if (capacity > (uint64_t)INT64_MAX / 512)
        return img_error(-EFBIG, "vmdk: '%s': capacity %" PRIu64 " sectors is too large", filename,
                         capacity);
    if (grain_offset > UINT64_MAX / 512 || (uint64_t)file_size < grain_offset * 512)
        return img_error(
            -EINVAL, "vmdk: '%s': file truncated, expecting at least %" PRIu64 " bytes", filename,
            grain_offset > UINT64_MAX / 512 ? UINT64_MAX : grain_offset * 512);
    if (gd > UINT64_MAX / 512 || ((flags & VMDK4_FLAG_RGD) && rgd > UINT64_MAX / 512))
        return img_error(-EINVAL, "vmdk: '%s': grain directory offset is invalid", filename);
    e->kind = VMDK_EXTENT_SPARSE;
    e->version = version;
    e->sectors = capacity;
    e->grain_sectors = granularity;
    e->gt_entries = gtes;
    e->entry_size = 4;
    e->l1_size = (uint32_t)l1_size;
    e->l1_offset = gd * 512;
    e->l1_backup_offset = (flags & VMDK4_FLAG_RGD) ? rgd * 512 : 0;
    e->grain_offset = grain_offset;
    e->compressed = compressed;
    e->has_marker = (flags & VMDK4_FLAG_MARKER) != 0;
    e->zero_grain = (flags & VMDK4_FLAG_ZERO_GRAIN) != 0;
    return read_tables(e, filename);
}

static int open_cowd(struct vmdk_extent *e, const char *filename, const uint8_t *h)
{
    e->kind = VMDK_EXTENT_COWD;
    e->sectors = load_le32(h + 12);
    e->grain_sectors = load_le32(h + 16);
    e->l1_offset = (uint64_t)load_le32(h + 20) * 512;
    e->l1_size = load_le32(h + 24);
    e->gt_entries = 4096;
    e->entry_size = 4;
    return read_tables(e, filename);
}

static int open_sesparse(struct img *img, struct vmdk_extent *e, const char *filename,
                         const uint8_t *h)
{
    if (img->writable)
        return img_error(-EROFS, "vmdk: '%s': no write support for seSparse images available",
                         filename);
    uint64_t v[26];
    for (int i = 0; i < 26; i++)
        v[i] = load_le64(h + 8 * i);
    if (v[0] != 0xcafebabeull)
        return img_error(-EINVAL, "vmdk: '%s': bad const header magic: 0x%016" PRIx64, filename,
                         v[0]);
    if (v[1] != 0x0000000200000001ull)
        return img_error(-ENOTSUP, "vmdk: '%s': unsupported version: 0x%016" PRIx64, filename,
                         v[1]);
    if (v[3] != 8)
        return img_error(-ENOTSUP, "vmdk: '%s': unsupported grain size: %" PRIu64, filename, v[3]);
    if (v[4] != 64)
        return img_error(-ENOTSUP, "vmdk: '%s': unsupported grain table size: %" PRIu64, filename,
                         v[4]);
    if (v[5] != 0)
        return img_error(-ENOTSUP, "vmdk: '%s': unsupported flags: 0x%016" PRIx64, filename, v[5]);
    if (v[6] || v[7] || v[8] || v[9])
        return img_error(-ENOTSUP, "vmdk: '%s': unsupported reserved bits", filename);
    for (int i = 208; i < 512; i++)
        if (h[i])
            return img_error(-ENOTSUP, "vmdk: '%s': unsupported non-zero const header padding",
                             filename);
    uint8_t vol[512];
    if (v[10] > UINT64_MAX / 512)
        return img_error(-EINVAL, "vmdk: '%s': bad volatile header offset", filename);
    int ret = io_pread(e->file, vol, sizeof(vol), v[10] * 512);
    if (ret < 0)
        return img_error(ret, "vmdk: could not read volatile header from file '%s'", filename);
    if (load_le64(vol) != 0xcafecafeull)
        return img_error(-EINVAL, "vmdk: '%s': bad volatile header magic: 0x%016" PRIx64, filename,
                         load_le64(vol));
    if (load_le64(vol + 24))
        return img_error(-ENOTSUP, "vmdk: '%s': image is dirty, replaying journal not supported",
                         filename);
    for (int i = 32; i < 512; i++)
        if (vol[i])
            return img_error(-ENOTSUP, "vmdk: '%s': unsupported non-zero volatile header padding",
                             filename);
    uint64_t gd_size = v[17]; /* sectors */
    if (v[16] > UINT64_MAX / 512 || gd_size > UINT64_MAX / 512 / 8 || v[2] > UINT64_MAX / 512)
        return img_error(-EINVAL, "vmdk: '%s': grain directory is out of range", filename);
    if (gd_size * 512 / 8 > VMDK_MAX_L1_ENTRIES)
        return img_error(-EFBIG, "vmdk: '%s': L1 size too big", filename);
    e->kind = VMDK_EXTENT_SESPARSE;
    e->sectors = v[2];
    e->grain_sectors = v[3];
    e->gt_entries = (uint32_t)(v[4] * 512 / 8);
    e->entry_size = 8;
    e->l1_size = (uint32_t)(gd_size * 512 / 8);
    e->l1_offset = v[16] * 512;
    e->se_tables_offset = v[18];
    e->se_grains_offset = v[24];
    return read_tables(e, filename);
}

int vmdk_open_sparse(struct img *img, struct vmdk_extent *e, const char *filename, bool sesparse)
{
    uint8_t h[512];
    int64_t size = io_file_size(e->file);
    if (size < 0)
        return img_error((int)size, "vmdk: cannot read the size of '%s'", filename);
    if (size < 4)
        return img_error(-EINVAL, "vmdk: '%s' is too small, not a valid image", filename);
    int ret = io_pread(e->file, h, sizeof(h), 0);
    if (ret < 0)
        return img_error(ret, "vmdk: could not read header from file '%s': %s", filename,
                         img_strerror(ret));
    uint32_t magic = load_le32(h);
    if (size < 512)
        return img_error(-EINVAL, "vmdk: '%s': file truncated, its header needs 512 bytes",
                         filename);
    if (sesparse)
        return open_sesparse(img, e, filename, h);
    if (magic == VMDK4_MAGIC)
        return open_vmdk4(img, e, filename, h);
    if (magic == VMDK3_MAGIC)
        return open_cowd(e, filename, h);
    return img_error(-EINVAL, "vmdk: '%s': image not in VMDK format", filename);
}
