/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The VDI header: parsing with QEMU's checks and words, and the header of a new image. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "error.h"
#include "formats/vdi/vdi.h"
#include "util/endian.h"

static bool uuid_is_null(const uint8_t *uuid)
{
    for (int i = 0; i < 16; i++)
        if (uuid[i])
            return false;
    return true;
}

int vdi_header_parse(const uint8_t *buf, size_t len, const char *filename, struct vdi_header *h)
{
    if (len < VDI_HEADER_SIZE)
        return img_error(-EINVAL, "vdi: '%s': the file ends inside the header (%zu of %u bytes)",
                         filename, len, VDI_HEADER_SIZE);
    uint32_t signature = load_le32(buf + VDI_OFF_SIGNATURE);
    uint32_t version = load_le32(buf + VDI_OFF_VERSION);
    uint32_t sector_size = load_le32(buf + VDI_OFF_SECTOR_SIZE);
    *h = (struct vdi_header){
        .image_type = load_le32(buf + VDI_OFF_IMAGE_TYPE),
        .offset_bmap = load_le32(buf + VDI_OFF_OFFSET_BMAP),
        .offset_data = load_le32(buf + VDI_OFF_OFFSET_DATA),
        .disk_size = load_le64(buf + VDI_OFF_DISK_SIZE),
        .block_size = load_le32(buf + VDI_OFF_BLOCK_SIZE),
        .blocks_in_image = load_le32(buf + VDI_OFF_BLOCKS_IN_IMAGE),
        .blocks_allocated = load_le32(buf + VDI_OFF_BLOCKS_ALLOCATED),
    };
    /* In QEMU's order, so that an image with several faults is refused for the same one. */
    if (h->disk_size > VDI_DISK_SIZE_MAX)
        return img_error(-ENOTSUP,
                         "vdi: '%s': unsupported VDI image size (size is 0x%" PRIx64
                         ", max supported is 0x%" PRIx64 ")",
                         filename, h->disk_size, VDI_DISK_SIZE_MAX);
    if (signature != VDI_SIGNATURE)
        return img_error(-EINVAL,
                         "vdi: '%s': image not in VDI format (bad signature %08" PRIx32 ")",
                         filename, signature);
    if (version != VDI_VERSION_1_1)
        return img_error(-ENOTSUP,
                         "vdi: '%s': unsupported VDI image (version %" PRIu32 ".%" PRIu32 ")",
                         filename, version >> 16, version & 0xffff);
    if (h->offset_bmap % VDI_SECTOR_SIZE)
        return img_error(
            -ENOTSUP, "vdi: '%s': unsupported VDI image (unaligned block map offset 0x%" PRIx32 ")",
            filename, h->offset_bmap);
    if (h->offset_data % VDI_SECTOR_SIZE)
        return img_error(-ENOTSUP,
                         "vdi: '%s': unsupported VDI image (unaligned data offset 0x%" PRIx32 ")",
                         filename, h->offset_data);
    if (sector_size != VDI_SECTOR_SIZE)
        return img_error(-ENOTSUP,
                         "vdi: '%s': unsupported VDI image (sector size %" PRIu32 " is not %u)",
                         filename, sector_size, VDI_SECTOR_SIZE);
    if (h->block_size != VDI_BLOCK_SIZE)
        return img_error(-ENOTSUP,
                         "vdi: '%s': unsupported VDI image (block size %" PRIu32 " is not %u)",
                         filename, h->block_size, VDI_BLOCK_SIZE);
    uint64_t room = (uint64_t)h->blocks_in_image * h->block_size;
    if (vdi_guest_size(h) > room)
        return img_error(-ENOTSUP,
                         "vdi: '%s': unsupported VDI image (disk size %" PRIu64
                         ", image bitmap has room for %" PRIu64 ")",
                         filename, vdi_guest_size(h), room);
    if (!uuid_is_null(buf + VDI_OFF_UUID_LINK))
        return img_error(-ENOTSUP, "vdi: '%s': unsupported VDI image (non-NULL link UUID)",
                         filename);
    if (!uuid_is_null(buf + VDI_OFF_UUID_PARENT))
        return img_error(-ENOTSUP, "vdi: '%s': unsupported VDI image (non-NULL parent UUID)",
                         filename);
    if (h->blocks_in_image > VDI_BLOCKS_MAX)
        return img_error(
            -ENOTSUP, "vdi: '%s': unsupported VDI image (too many blocks %" PRIu32 ", max is %u)",
            filename, h->blocks_in_image, VDI_BLOCKS_MAX);
    /* Not checked by QEMU, but a map overlapping the header would be rewritten over it. */
    if (h->offset_bmap < VDI_HEADER_SIZE && h->blocks_in_image)
        return img_error(-EINVAL,
                         "vdi: '%s': the block map (offset 0x%" PRIx32 ") overlaps the header",
                         filename, h->offset_bmap);
    return 0;
}

/* A random (version 4) UUID, stored as VirtualBox stores it: the first three fields swapped. */
static void uuid_generate_le(uint8_t *out)
{
    uint8_t u[16];
    if (getrandom(u, sizeof(u), 0) != (ssize_t)sizeof(u)) {
        /* No entropy source: a UUID only has to be unlikely to repeat. */
        uint64_t t = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)out;
        for (int i = 0; i < 16; i++)
            u[i] = (uint8_t)(t >> ((i % 8) * 8)) ^ (uint8_t)(i * 37);
    }
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
    const uint8_t order[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
    for (int i = 0; i < 16; i++)
        out[i] = u[order[i]];
}

void vdi_header_build(uint8_t buf[VDI_HEADER_SIZE], uint64_t disk_size, bool is_static)
{
    static const char text[] = "<<< QEMU VM Virtual Disk Image >>>\n";
    uint32_t blocks = (uint32_t)((disk_size + VDI_BLOCK_SIZE - 1) / VDI_BLOCK_SIZE);
    memset(buf, 0, VDI_HEADER_SIZE);
    memcpy(buf, text, sizeof(text) - 1);
    store_le32(buf + VDI_OFF_SIGNATURE, VDI_SIGNATURE);
    store_le32(buf + VDI_OFF_VERSION, VDI_VERSION_1_1);
    store_le32(buf + VDI_OFF_HEADER_SIZE, 0x180);
    store_le32(buf + VDI_OFF_IMAGE_TYPE, is_static ? VDI_TYPE_STATIC : VDI_TYPE_DYNAMIC);
    store_le32(buf + VDI_OFF_OFFSET_BMAP, VDI_HEADER_SIZE);
    store_le32(buf + VDI_OFF_OFFSET_DATA, (uint32_t)(VDI_HEADER_SIZE + vdi_bmap_bytes(blocks)));
    store_le32(buf + VDI_OFF_SECTOR_SIZE, VDI_SECTOR_SIZE);
    store_le64(buf + VDI_OFF_DISK_SIZE, disk_size);
    store_le32(buf + VDI_OFF_BLOCK_SIZE, VDI_BLOCK_SIZE);
    store_le32(buf + VDI_OFF_BLOCKS_IN_IMAGE, blocks);
    store_le32(buf + VDI_OFF_BLOCKS_ALLOCATED, is_static ? blocks : 0);
    uuid_generate_le(buf + VDI_OFF_UUID_IMAGE);
    uuid_generate_le(buf + VDI_OFF_UUID_LAST_SNAP);
}
