/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * measure(): the size of the VHDX image convert makes (qemu-img 7.2 cannot measure VHDX; the
 * layout is vhdx_create_plan's, the allocation QEMU's block/vhdx.c: vhdx_allocate_block puts a
 * new payload block at the file's end, rounded up to 1 MiB, and extends the file by a whole
 * block).
 *
 * dynamic: headers, log, BAT and metadata up to the payload offset, then one block for every
 * block of the source holding data: "required" is the converted file's length, exactly (to
 * whole host blocks); only the parts written are allocated.
 * fixed: the file is as long as a full image from the start. With block_state_zero (the
 * default) every block starts as zeros, and a block written is appended past that length, as
 * a dynamic one; otherwise blocks are written in place. "required" bounds what is allocated:
 * the metadata and a block for every block holding data.
 */
#include <errno.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/vhdx/vhdx.h"
#include "util/checked.h"

int vhdx_measure(const struct img_measure_args *args, struct img_measure_result *out)
{
    struct img_create_args create = {.size = args->size, .opts = args->opts};
    struct vhdx_create_layout l;
    int ret = vhdx_create_plan(&create, &l);
    if (ret < 0)
        return ret;
    uint64_t used;
    if ((ret = measure_data_units(args, l.block_size, false, &used)) < 0)
        return ret;
    uint64_t blocks = measure_units_of(l.size, l.block_size);
    out->required = measure_host_bytes(l.data_offset + used * l.block_size);
    if (!l.fixed)
        out->fully_allocated = l.data_offset + blocks * l.block_size;
    else if (l.zero_blocks)
        out->fully_allocated =
            align_up_u64(l.data_offset + l.size, VHDX_MiB) + blocks * l.block_size;
    else
        out->fully_allocated = l.data_offset + l.size;
    return 0;
}
