/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_VPC_H
#define IMG_VPC_H

/*
 * VHD ("vpc", as QEMU names it): Microsoft's Virtual Hard Disk Image Format Specification
 * (2006), with the size rules and limits qemu-img 7.2 applies (block/vpc.c).
 *
 * A fixed disk is the guest data followed by a 512-byte footer. A dynamic or differencing
 * disk is: a copy of the footer at offset 0, the dynamic disk header (1024 bytes, usually at
 * 512), the block allocation table (BAT: one big-endian sector number per block, 0xffffffff
 * when absent), then the blocks, each a sector bitmap (one bit per sector, most significant
 * bit first, padded to 512 bytes) followed by the block's data, and the footer at the end.
 *
 * Where this goes beyond qemu-img 7.2: QEMU reads a differencing disk as a dynamic one (its
 * absent sectors as zeros, its parent ignored); here the parent locator names the backing
 * file and sectors whose bitmap bit is clear read from it, and writes keep the bitmap exact.
 * Azure's creator "wa\0\0" is sized by the current size, as newer QEMU does. Everything
 * else (sizes, limits, what a dynamic disk reads as, map, info) follows qemu-img 7.2.
 *
 * Locking: img->lock guards the BAT, the free offset, the per-block bitmap state and the
 * bitmap cache. New blocks are allocated one at a time (alloc_busy): the file's tail belongs
 * to that allocation until its alloc_commit().
 *
 * Write order for a new block (crash safety: an interrupted allocation leaves the old
 * content): the file is first extended past the new block and its footer, so a BAT entry
 * can never point past the end; then the data (the core), a flush, the sector bitmap, the
 * BAT entry, and last the footer at the new end (the copy at offset 0 is what readers of a
 * dynamic disk use, so a missing footer at the end is harmless).
 */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "formats/format.h"

#define VPC_SECTOR 512u
#define VPC_FOOTER_SIZE 512u
#define VPC_HEADER_SIZE 1024u
#define VPC_BAT_UNUSED 0xffffffffu

enum vpc_disk_type {
    VPC_FIXED = 2,
    VPC_DYNAMIC = 3,
    VPC_DIFFERENCING = 4,
};

/* CHS limits of the footer, and the 2040 GiB limit QEMU enforces. */
#define VPC_CHS_MAX_C 65535ull
#define VPC_CHS_MAX_H 16ull
#define VPC_CHS_MAX_S 255ull
#define VPC_MAX_GEOMETRY (VPC_CHS_MAX_C * VPC_CHS_MAX_H * VPC_CHS_MAX_S)
#define VPC_MAX_SECTORS 0xff000000ull

/* Footer field offsets (all big-endian). */
enum {
    VPC_F_COOKIE = 0,
    VPC_F_FEATURES = 8,
    VPC_F_VERSION = 12,
    VPC_F_DATA_OFFSET = 16,
    VPC_F_TIMESTAMP = 24,
    VPC_F_CREATOR_APP = 28,
    VPC_F_CREATOR_VER = 32,
    VPC_F_CREATOR_OS = 36,
    VPC_F_ORIG_SIZE = 40,
    VPC_F_CURRENT_SIZE = 48,
    VPC_F_CYLS = 56,
    VPC_F_HEADS = 58,
    VPC_F_SECS = 59,
    VPC_F_TYPE = 60,
    VPC_F_CHECKSUM = 64,
    VPC_F_UUID = 68,
};

/* Dynamic disk header field offsets (all big-endian). */
enum {
    VPC_H_COOKIE = 0,
    VPC_H_DATA_OFFSET = 8,
    VPC_H_TABLE_OFFSET = 16,
    VPC_H_VERSION = 24,
    VPC_H_MAX_ENTRIES = 28,
    VPC_H_BLOCK_SIZE = 32,
    VPC_H_CHECKSUM = 36,
    VPC_H_PARENT_UUID = 40,
    VPC_H_PARENT_NAME = 64,      /* 512 bytes of UTF-16 big-endian */
    VPC_H_PARENT_LOCATORS = 576, /* 8 entries of 24 bytes */
};
#define VPC_LOCATOR_COUNT 8
#define VPC_LOCATOR_SIZE 24

struct vpc_state {
    struct img *img;
    uint8_t footer[VPC_FOOTER_SIZE]; /* as read (checksum valid); rewritten at the end */
    uint32_t type;                   /* enum vpc_disk_type */

    /* Dynamic and differencing disks only. */
    uint64_t header_offset;
    uint64_t bat_offset;
    uint32_t max_table_entries;
    uint32_t block_size;  /* a power of two, >= 512 */
    uint32_t bitmap_size; /* bytes before each block's data: the sector bitmap, padded */
    uint32_t *bat;        /* host-endian sector numbers */
    uint64_t free_offset; /* where the next block goes (the footer sits there) */
    uint8_t *bitmap_full; /* writers: per block, 1 once its bitmap is known all ones */

    bool alloc_busy; /* a new block is between alloc() and alloc_commit() */
    pthread_cond_t alloc_done;

    /* Differencing disks: the last sector bitmap read (map), under img->lock. */
    uint8_t *bitmap_cache;
    uint32_t bitmap_cache_block;
    bool bitmap_cache_valid;
};

/* vpc_footer.c */
uint32_t vpc_checksum(const uint8_t *buf, size_t len, size_t checksum_at);
bool vpc_uses_current_size(const uint8_t *footer, const char *size_calc);
void vpc_geometry(uint64_t total_sectors, uint16_t *cyls, uint8_t *heads, uint8_t *secs);
int vpc_rounded_size(uint64_t size, bool force_size, uint16_t *cyls, uint8_t *heads, uint8_t *secs,
                     uint64_t *total_sectors);

/* vpc_open.c */
int vpc_open(struct img *img, const img_opts *opts);
void vpc_close(struct img *img);
int vpc_probe(const uint8_t *buf, size_t len, const char *filename);

/* vpc_parent.c: the parent's name from the locators of a differencing disk. */
int vpc_parent_name(struct vpc_state *s, const uint8_t *header, uint64_t file_size, char **out);

/* vpc_map.c */
int vpc_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext);
int vpc_read_bitmap(struct vpc_state *s, uint32_t block, uint8_t *out);
static inline bool vpc_bitmap_test(const uint8_t *bitmap, uint32_t sector)
{
    return (bitmap[sector >> 3] >> (7 - (sector & 7))) & 1;
}

/* vpc_write.c */
int vpc_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
              struct img_alloc **token);
int vpc_alloc_commit(struct img *img, struct img_alloc *token, int write_result);
int vpc_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags);
int vpc_flush(struct img *img);

/* vpc_create.c */
int vpc_create(const struct img_create_args *args);
int vpc_measure(const struct img_measure_args *args, struct img_measure_result *out);
extern const struct opt_desc vpc_create_options[];

#endif
