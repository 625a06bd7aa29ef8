/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_FORMAT_VDI_H
#define IMG_FORMAT_VDI_H

/*
 * VirtualBox Disk Images, header version 1.1, as QEMU 7.2 (block/vdi.c) reads, writes and
 * creates them. Layout (all little-endian), from the header QEMU and VirtualBox share:
 *
 *   0x000 text[64]          "<<< QEMU VM Virtual Disk Image >>>\n" (any text)
 *   0x040 signature         0xbeda107f
 *   0x044 version           0x00010001
 *   0x048 header_size       0x180
 *   0x04c image_type        1 dynamic, 2 static (fully allocated at creation)
 *   0x154 offset_bmap       the block map, sector-aligned
 *   0x158 offset_data       the first data block, sector-aligned
 *   0x168 sector_size       512
 *   0x170 disk_size         u64, may be odd (VBoxManage convertfromraw): rounded up to 512
 *   0x178 block_size        1 MiB (the only size QEMU accepts)
 *   0x180 blocks_in_image   block map entries
 *   0x184 blocks_allocated  data blocks in use; the next one allocated gets this index
 *   0x188..0x1c8            image, last-snapshot, link and parent UUIDs (link and parent
 *                           must be null: differencing images are not supported)
 *
 * A block map entry is a data block index, or 0xffffffff (never allocated) or 0xfffffffe
 * (discarded); both read as zeros. Data block i is at offset_data + i * block_size.
 */

#include <pthread.h>
#include <stdint.h>

#include "formats/format.h"

#define VDI_HEADER_SIZE 512u
#define VDI_SIGNATURE 0xbeda107fu
#define VDI_VERSION_1_1 0x00010001u
#define VDI_TYPE_DYNAMIC 1u
#define VDI_TYPE_STATIC 2u
#define VDI_SECTOR_SIZE 512u
#define VDI_BLOCK_SIZE (1u << 20)
#define VDI_UNALLOCATED 0xffffffffu
#define VDI_DISCARDED 0xfffffffeu
#define VDI_IS_ALLOCATED(e) ((e) < VDI_DISCARDED)
/*
 * QEMU 7.2's limits: the block map, read as one buffer, stays below INT_MAX bytes (whole
 * sectors), so at most 0x1fffff80 entries of 1 MiB.
 */
#define VDI_BLOCKS_MAX ((0x7fffffffu & ~511u) / 4u)
#define VDI_DISK_SIZE_MAX ((uint64_t)VDI_BLOCKS_MAX * VDI_BLOCK_SIZE)

/* Header field offsets. */
#define VDI_OFF_SIGNATURE 0x40
#define VDI_OFF_VERSION 0x44
#define VDI_OFF_HEADER_SIZE 0x48
#define VDI_OFF_IMAGE_TYPE 0x4c
#define VDI_OFF_OFFSET_BMAP 0x154
#define VDI_OFF_OFFSET_DATA 0x158
#define VDI_OFF_SECTOR_SIZE 0x168
#define VDI_OFF_DISK_SIZE 0x170
#define VDI_OFF_BLOCK_SIZE 0x178
#define VDI_OFF_BLOCKS_IN_IMAGE 0x180
#define VDI_OFF_BLOCKS_ALLOCATED 0x184
#define VDI_OFF_UUID_IMAGE 0x188
#define VDI_OFF_UUID_LAST_SNAP 0x198
#define VDI_OFF_UUID_LINK 0x1a8
#define VDI_OFF_UUID_PARENT 0x1b8

struct vdi_header {
    uint32_t image_type;
    uint32_t offset_bmap, offset_data;
    uint64_t disk_size; /* as stored */
    uint32_t block_size;
    uint32_t blocks_in_image, blocks_allocated;
};

struct vdi_state {
    uint8_t raw_header[VDI_HEADER_SIZE]; /* as read: rewritten with only blocks_allocated changed */
    struct vdi_header hdr;
    /* Entries in host order; blocks_in_image of them. Changed under `lock`. */
    uint32_t *bmap;
    /*
     * Writers: one allocation at a time (see vdi_write.c). `allocating` is set from alloc() to
     * alloc_commit(); others wait on `alloc_done`.
     */
    pthread_mutex_t lock;
    pthread_cond_t alloc_done;
    bool allocating;
};

/* Parses and checks a header as QEMU's vdi_open does; messages name `filename`. */
int vdi_header_parse(const uint8_t *buf, size_t len, const char *filename, struct vdi_header *h);

/* Guest size of a parsed header: disk_size rounded up to whole sectors. */
static inline uint64_t vdi_guest_size(const struct vdi_header *h)
{
    return (h->disk_size + VDI_SECTOR_SIZE - 1) & ~(uint64_t)(VDI_SECTOR_SIZE - 1);
}

/* The block map's size in the file: whole sectors. */
static inline uint64_t vdi_bmap_bytes(uint32_t blocks)
{
    return ((uint64_t)blocks * 4 + VDI_SECTOR_SIZE - 1) & ~(uint64_t)(VDI_SECTOR_SIZE - 1);
}

/* Fills a fresh header (QEMU's layout for a new image: map at 0x200, data after it). */
void vdi_header_build(uint8_t buf[VDI_HEADER_SIZE], uint64_t disk_size, bool is_static);

int vdi_create(const struct img_create_args *args);
int vdi_measure(const struct img_measure_args *args, struct img_measure_result *out);
int vdi_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
              struct img_alloc **token);
int vdi_alloc_commit(struct img *img, struct img_alloc *token, int write_result);
int vdi_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags);
int vdi_flush(struct img *img);
int vdi_check(struct img *img, unsigned flags, struct img_check_result *result);

#endif
