/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * New VDI images, laid out as qemu-img 7.2 lays them out: the header, the block map at 0x200
 * (whole sectors), then the data. A static image has every block allocated in order, the file
 * sized (sparsely) to hold them all.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/vdi/vdi.h"
#include "io/io.h"
#include "opts.h"
#include "util/checked.h"
#include "util/endian.h"

/* The map is written in pieces this large: a huge image needs no huge buffer. */
#define BMAP_WRITE_CHUNK (1u << 20)

static int write_bmap(struct io_file *f, uint32_t blocks, bool is_static)
{
    uint64_t bytes = vdi_bmap_bytes(blocks);
    uint8_t *buf = malloc(BMAP_WRITE_CHUNK);
    if (!buf)
        return -ENOMEM;
    int ret = 0;
    for (uint64_t done = 0; ret == 0 && done < bytes;) {
        size_t n = (size_t)min_u64(bytes - done, BMAP_WRITE_CHUNK);
        for (size_t i = 0; i < n; i += 4) {
            uint64_t e = (done + i) / 4;
            /* As QEMU: the padding of the last sector is zeros. */
            store_le32(buf + i, e >= blocks ? 0 : is_static ? (uint32_t)e : VDI_UNALLOCATED);
        }
        ret = io_pwrite(f, buf, n, VDI_HEADER_SIZE + done);
        done += n;
    }
    free(buf);
    return ret;
}

int vdi_create(const struct img_create_args *args)
{
    if (args->backing_file)
        return img_error(-ENOTSUP, "Backing file not supported for file format 'vdi'");
    uint64_t size = args->size;
    int ret = size ? 0 : opts_get_size(args->opts, "size", &size);
    if (ret < 0)
        return ret;
    bool is_static = false;
    ret = opts_get_bool(args->opts, "static", &is_static);
    if (ret < 0)
        return ret;
    /* qemu-img rounds the size up to whole sectors, silently. */
    if (size > VDI_DISK_SIZE_MAX)
        return img_error(-ENOTSUP,
                         "Unsupported VDI image size (size is 0x%" PRIx64
                         ", max supported is 0x%" PRIx64 ")",
                         size, VDI_DISK_SIZE_MAX);
    size = align_up_u64(size, VDI_SECTOR_SIZE);

    uint8_t header[VDI_HEADER_SIZE];
    vdi_header_build(header, size, is_static);
    uint32_t blocks = load_le32(header + VDI_OFF_BLOCKS_IN_IMAGE);
    uint64_t data = load_le32(header + VDI_OFF_OFFSET_DATA);
    struct io_file *f = args->file;
    ret = io_truncate(f, 0);
    if (ret == 0)
        ret = io_pwrite(f, header, VDI_HEADER_SIZE, 0);
    if (ret == 0 && blocks)
        ret = write_bmap(f, blocks, is_static);
    if (ret == 0 && is_static)
        ret = io_truncate(f, data + (uint64_t)blocks * VDI_BLOCK_SIZE);
    if (ret < 0)
        return img_error(ret, "vdi: cannot create '%s': %s", args->path, img_strerror(ret));
    return 0;
}
