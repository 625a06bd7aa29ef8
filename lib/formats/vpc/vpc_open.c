/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Probing and opening: footer, dynamic disk header, block allocation table. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"
#include "vpc.h"

/*
 * Only the footer copy at offset 0 of a dynamic or differencing disk is a signature: a fixed
 * disk, whose footer is at the end, probes as raw (as in qemu-img) and is read as VHD only
 * when asked for by name.
 */
int vpc_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    return len >= 8 && memcmp(buf, "conectix", 8) == 0 ? 100 : 0;
}

/* The footer: the copy at offset 0, else (a fixed disk) the last sector of the file. */
static int read_footer(struct vpc_state *s, int64_t file_size)
{
    struct img *img = s->img;
    if (file_size < VPC_FOOTER_SIZE)
        return img_error(-EINVAL, "vpc: '%s': File too small for a VHD header", img->filename);
    int ret = io_pread(img->file, s->footer, VPC_FOOTER_SIZE, 0);
    if (ret < 0)
        return img_error(ret, "vpc: '%s': Unable to read VHD header: %s", img->filename,
                         img_strerror(ret));
    bool at_start = memcmp(s->footer, "conectix", 8) == 0;
    if (!at_start) {
        ret =
            io_pread(img->file, s->footer, VPC_FOOTER_SIZE, (uint64_t)file_size - VPC_FOOTER_SIZE);
        if (ret < 0)
            return img_error(ret, "vpc: '%s': Unable to read VHD footer: %s", img->filename,
                             img_strerror(ret));
        if (memcmp(s->footer, "conectix", 8) != 0)
            return img_error(-EINVAL, "vpc: '%s': invalid VPC image", img->filename);
    }
    uint32_t stored = load_be32(s->footer + VPC_F_CHECKSUM);
    if (vpc_checksum(s->footer, VPC_FOOTER_SIZE, VPC_F_CHECKSUM) != stored)
        return img_error(-EINVAL, "vpc: '%s': Incorrect header checksum", img->filename);
    /* As QEMU: a footer at the start means a sparse disk, whatever its type field says. */
    uint32_t type = load_be32(s->footer + VPC_F_TYPE);
    if (!at_start)
        s->type = VPC_FIXED;
    else
        s->type = type == VPC_DIFFERENCING ? VPC_DIFFERENCING : VPC_DYNAMIC;
    return 0;
}

/* The virtual size by the creator's rule; at most 2040 GiB. */
static int read_size(struct vpc_state *s, const img_opts *opts)
{
    struct img *img = s->img;
    const char *size_calc = opts ? img_opts_get(opts, "force_size_calc") : NULL;
    if (size_calc && strcmp(size_calc, "chs") != 0 && strcmp(size_calc, "current_size") != 0)
        return img_error(-EINVAL, "vpc: '%s': Invalid size calculation mode: '%s'", img->filename,
                         size_calc);
    const uint8_t *f = s->footer;
    uint64_t sectors = (uint64_t)load_be16(f + VPC_F_CYLS) * f[VPC_F_HEADS] * f[VPC_F_SECS];
    if (vpc_uses_current_size(f, size_calc))
        sectors = load_be64(f + VPC_F_CURRENT_SIZE) / VPC_SECTOR;
    if (sectors > VPC_MAX_SECTORS)
        return img_error(-EFBIG,
                         "vpc: '%s': the disk size (%" PRIu64 " sectors) is larger than 2040 GiB",
                         img->filename, sectors);
    img->size = sectors * VPC_SECTOR;
    return 0;
}

/* Whether [start, start+len) overlaps the metadata at the front of a sparse disk. */
static bool hits_metadata(const struct vpc_state *s, uint64_t start, uint64_t len)
{
    uint64_t bat_end = s->bat_offset + (uint64_t)s->max_table_entries * 4;
    return start < VPC_FOOTER_SIZE ||
           (start < s->header_offset + VPC_HEADER_SIZE && start + len > s->header_offset) ||
           (start < bat_end && start + len > s->bat_offset);
}

static int read_bat(struct vpc_state *s, int64_t file_size)
{
    struct img *img = s->img;
    uint64_t bat_bytes = (uint64_t)s->max_table_entries * 4;
    uint64_t bat_end;
    if (add_overflows_u64(s->bat_offset, bat_bytes, &bat_end) || bat_end > (uint64_t)file_size)
        return img_error(-EINVAL,
                         "vpc: '%s': the block allocation table (%" PRIu64 " bytes at 0x%" PRIx64
                         ") lies past the end of the file",
                         img->filename, bat_bytes, s->bat_offset);
    uint8_t *raw = malloc(bat_bytes ? bat_bytes : 1);
    s->bat = malloc(bat_bytes ? bat_bytes : 1);
    s->bitmap_full = calloc(s->max_table_entries ? s->max_table_entries : 1, 1);
    if (!raw || !s->bat || !s->bitmap_full) {
        free(raw);
        return img_error(-ENOMEM, "vpc: '%s': Unable to allocate memory for page table",
                         img->filename);
    }
    int ret = io_pread(img->file, raw, bat_bytes, s->bat_offset);
    if (ret < 0) {
        free(raw);
        return img_error(ret, "vpc: '%s': Error reading pagetable: %s", img->filename,
                         img_strerror(ret));
    }
    uint64_t block_span = (uint64_t)s->bitmap_size + s->block_size;
    s->free_offset = align_up_u64(bat_end, VPC_SECTOR);
    for (uint32_t i = 0; i < s->max_table_entries; i++) {
        s->bat[i] = load_be32(raw + 4 * (size_t)i);
        if (s->bat[i] == VPC_BAT_UNUSED)
            continue;
        uint64_t start = (uint64_t)s->bat[i] * VPC_SECTOR;
        if (hits_metadata(s, start, block_span)) {
            free(raw);
            return img_error(-EINVAL,
                             "vpc: '%s': block %" PRIu32 " (at 0x%" PRIx64
                             ") overlaps the image's header or allocation table",
                             img->filename, i, start);
        }
        s->free_offset = max_u64(s->free_offset, start + block_span);
    }
    free(raw);
    if (s->free_offset > (uint64_t)file_size)
        return img_error(-EINVAL,
                         "vpc: '%s': free_data_block_offset points after the end of file. The "
                         "image has been truncated.",
                         img->filename);
    return 0;
}

/*
 * New blocks go after the parent locators' data too (which QEMU, not knowing differencing
 * disks, would overwrite). Locators reaching past the end of the file are not the file's.
 */
static void keep_locators(struct vpc_state *s, const uint8_t *h, uint64_t file_size)
{
    for (int i = 0; i < VPC_LOCATOR_COUNT; i++) {
        const uint8_t *entry = h + VPC_H_PARENT_LOCATORS + i * VPC_LOCATOR_SIZE;
        uint64_t space = max_u64(load_be32(entry + 4), load_be32(entry + 8));
        uint64_t end;
        if (load_be32(entry) == 0 || add_overflows_u64(load_be64(entry + 16), space, &end) ||
            end > file_size)
            continue;
        s->free_offset = max_u64(s->free_offset, align_up_u64(end, VPC_SECTOR));
    }
}

/* The dynamic disk header and what it points at, in the order QEMU checks them. */
static int read_sparse(struct vpc_state *s, int64_t file_size)
{
    struct img *img = s->img;
    uint8_t h[VPC_HEADER_SIZE];
    s->header_offset = load_be64(s->footer + VPC_F_DATA_OFFSET);
    /* A header cut short by the end of the file reads as zeros past it, as in QEMU. */
    if (s->header_offset >= (uint64_t)file_size)
        return img_error(-EINVAL,
                         "vpc: '%s': the dynamic disk header (at 0x%" PRIx64
                         ") lies past the end of the file",
                         img->filename, s->header_offset);
    int ret = io_pread(img->file, h, VPC_HEADER_SIZE, s->header_offset);
    if (ret < 0)
        return img_error(ret, "vpc: '%s': Error reading dynamic VHD header: %s", img->filename,
                         img_strerror(ret));
    if (memcmp(h, "cxsparse", 8) != 0)
        return img_error(-EINVAL, "vpc: '%s': Invalid header magic", img->filename);
    s->block_size = load_be32(h + VPC_H_BLOCK_SIZE);
    if (s->block_size < VPC_SECTOR || (s->block_size & (s->block_size - 1)))
        return img_error(-EINVAL, "vpc: '%s': Invalid block size %" PRIu32, img->filename,
                         s->block_size);
    /*
     * QEMU's formula, which rounds the bitmap of a block under 4 KiB down to nothing: what it
     * reads is what a dynamic disk holds. A differencing disk needs its bits, so it follows the
     * specification (at least one sector).
     */
    uint32_t bitmap_bytes = s->type == VPC_DIFFERENCING ? (s->block_size / VPC_SECTOR + 7) / 8
                                                        : s->block_size / (8 * VPC_SECTOR);
    s->bitmap_size = (uint32_t)align_up_u64(bitmap_bytes, VPC_SECTOR);
    s->max_table_entries = load_be32(h + VPC_H_MAX_ENTRIES);
    if (img->size / s->block_size > 0xffffffffu)
        return img_error(-EINVAL, "vpc: '%s': Too many blocks", img->filename);
    if ((uint64_t)s->max_table_entries * s->block_size < img->size)
        return img_error(-EINVAL, "vpc: '%s': Page table too small", img->filename);
    if (s->max_table_entries > INT32_MAX / 4)
        return img_error(-EINVAL, "vpc: '%s': Max Table Entries too large (%" PRId32 ")",
                         img->filename, (int32_t)s->max_table_entries);
    /* After QEMU's own checks (it does not verify this one), so their words come first. */
    if (vpc_checksum(h, VPC_HEADER_SIZE, VPC_H_CHECKSUM) != load_be32(h + VPC_H_CHECKSUM))
        return img_error(-EINVAL, "vpc: '%s': Incorrect dynamic disk header checksum",
                         img->filename);
    s->bat_offset = load_be64(h + VPC_H_TABLE_OFFSET);
    ret = read_bat(s, file_size);
    if (ret < 0)
        return ret;
    keep_locators(s, h, (uint64_t)file_size);
    if (s->type == VPC_DIFFERENCING) {
        ret = vpc_parent_name(s, h, (uint64_t)file_size, &img->backing_name);
        if (ret < 0)
            return ret;
        /* The parent's format is not recorded: probed, as qemu-img does for a bare name. */
    }
    s->bitmap_cache = malloc(s->bitmap_size ? s->bitmap_size : 1);
    if (!s->bitmap_cache)
        return img_error(-ENOMEM, "vpc: '%s': out of memory", img->filename);
    return 0;
}

static void free_state(struct vpc_state *s)
{
    if (!s)
        return;
    pthread_cond_destroy(&s->alloc_done);
    free(s->bat);
    free(s->bitmap_full);
    free(s->bitmap_cache);
    free(s);
}

int vpc_open(struct img *img, const img_opts *opts)
{
    struct vpc_state *s = calloc(1, sizeof(*s));
    if (!s)
        return img_error(-ENOMEM, "vpc: '%s': out of memory", img->filename);
    s->img = img;
    pthread_cond_init(&s->alloc_done, NULL);
    int64_t file_size = io_file_size(img->file);
    int ret = file_size < 0
                  ? img_error((int)file_size, "vpc: cannot read the size of '%s'", img->filename)
                  : 0;
    if (ret == 0)
        ret = read_footer(s, file_size);
    if (ret == 0)
        ret = read_size(s, opts);
    if (ret == 0 && s->type != VPC_FIXED)
        ret = read_sparse(s, file_size);
    if (ret == 0 && s->type == VPC_FIXED && img->writable &&
        img->size > (uint64_t)file_size - VPC_FOOTER_SIZE)
        ret = img_error(-EINVAL,
                        "vpc: '%s': the disk size (%" PRIu64
                        " bytes) runs into the footer; refusing to write",
                        img->filename, img->size);
    if (ret < 0) {
        free(img->backing_name);
        img->backing_name = NULL;
        free_state(s);
        return ret;
    }
    /* qemu-img reports the block size as the cluster size of sparse disks. */
    img->cluster_size = s->type == VPC_FIXED ? 0 : s->block_size;
    img->alloc_unit = s->type == VPC_FIXED ? 0 : VPC_SECTOR;
    img->priv = s;
    return 0;
}

void vpc_close(struct img *img)
{
    free_state(img->priv);
    img->priv = NULL;
}
