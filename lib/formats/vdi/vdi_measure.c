/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * measure(): the size of the VDI image convert makes (qemu-img 7.2 cannot measure VDI; the
 * layout is vdi_create's and QEMU's block/vdi.c). The header and block map come first, then
 * 1 MiB blocks: a dynamic image appends one block for every block of the source holding data,
 * so "required" is that file's length, exactly, to whole host blocks. A static image is as
 * long as a full one from the start, but only the blocks written are allocated; blocks start
 * at the map's end, which is not host-block aligned, so each one may touch one more host
 * block. "fully-allocated" is the file length with every block present.
 */
#include <errno.h>
#include <inttypes.h>

#include "error.h"
#include "formats/format.h"
#include "formats/vdi/vdi.h"
#include "opts.h"
#include "util/checked.h"
#include "util/endian.h"

int vdi_measure(const struct img_measure_args *args, struct img_measure_result *out)
{
    bool is_static = false;
    int ret = opts_get_bool(args->opts, "static", &is_static);
    if (ret < 0)
        return ret;
    /* vdi_create's limit and message. */
    if (args->size > VDI_DISK_SIZE_MAX)
        return img_error(-ENOTSUP,
                         "Unsupported VDI image size (size is 0x%" PRIx64
                         ", max supported is 0x%" PRIx64 ")",
                         args->size, VDI_DISK_SIZE_MAX);
    uint8_t header[VDI_HEADER_SIZE];
    vdi_header_build(header, align_up_u64(args->size, VDI_SECTOR_SIZE), is_static);
    uint64_t blocks = load_le32(header + VDI_OFF_BLOCKS_IN_IMAGE);
    uint64_t data = load_le32(header + VDI_OFF_OFFSET_DATA);

    uint64_t used;
    if ((ret = measure_data_units(args, VDI_BLOCK_SIZE, false, &used)) < 0)
        return ret;
    if (is_static) {
        uint64_t straddle = data % MEASURE_HOST_BLOCK ? MEASURE_HOST_BLOCK : 0;
        out->required = measure_host_bytes(data) + used * (VDI_BLOCK_SIZE + straddle);
    } else {
        out->required = measure_host_bytes(data + used * VDI_BLOCK_SIZE);
    }
    out->fully_allocated = data + blocks * VDI_BLOCK_SIZE;
    return 0;
}
