/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * measure(): the size of the VHD (vpc) image convert makes (qemu-img 7.2 cannot measure vpc;
 * the layout is vpc_create's and QEMU's block/vpc.c). The size is first rounded as create
 * rounds it (to the CHS geometry unless force_size).
 *
 * dynamic: footer copy, header, BAT, then for every 2 MiB block of the source holding data its
 * sector bitmap and the block, and the footer at the end. Blocks are appended whole, so
 * "required" is the converted file's length, exactly (to whole host blocks); only the parts
 * written are allocated, which is less.
 * fixed: the guest data in place, then the footer: the file is as long as a full one, and
 * "required" bounds what is allocated: the source's data in 64 KiB units, and the footer,
 * which may straddle two host blocks.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/vpc/vpc.h"
#include "opts.h"
#include "util/checked.h"

#define VPC_MEASURE_BLOCK 0x200000u /* the block size vpc_create writes */
#define FIXED_DATA_UNIT 65536u

int vpc_measure(const struct img_measure_args *args, struct img_measure_result *out)
{
    bool force_size = false;
    int ret = opts_get_bool(args->opts, "force_size", &force_size);
    if (ret < 0)
        return ret;
    const char *sub = img_opts_get(args->opts, "subformat");
    bool fixed = sub && strcmp(sub, "fixed") == 0;
    /* vpc_create's limit and message (without a file name: there is none yet). */
    if (args->size > VPC_MAX_SECTORS * VPC_SECTOR)
        return img_error(-EFBIG, "vpc: The image size is too large for file format 'vpc'");
    uint64_t size = align_up_u64(args->size, VPC_SECTOR);
    uint16_t cyls;
    uint8_t heads, secs;
    uint64_t sectors;
    if ((ret = vpc_rounded_size(size, force_size, &cyls, &heads, &secs, &sectors)) < 0)
        return ret;
    if (!force_size)
        size = sectors * VPC_SECTOR;

    uint64_t used;
    if (fixed) {
        if ((ret = measure_data_units(args, FIXED_DATA_UNIT, false, &used)) < 0)
            return ret;
        out->required = used * FIXED_DATA_UNIT + 2 * MEASURE_HOST_BLOCK;
        out->fully_allocated = size + VPC_FOOTER_SIZE;
        return 0;
    }
    uint64_t entries = measure_units_of(sectors * VPC_SECTOR, VPC_MEASURE_BLOCK);
    uint64_t bat_bytes = align_up_u64(entries * 4, VPC_SECTOR);
    /* Footer copy, header (two sectors), the BAT, the footer. */
    uint64_t meta = VPC_FOOTER_SIZE + VPC_HEADER_SIZE + bat_bytes + VPC_FOOTER_SIZE;
    uint64_t block_bytes = VPC_SECTOR + VPC_MEASURE_BLOCK; /* the sector bitmap, the data */
    if ((ret = measure_data_units(args, VPC_MEASURE_BLOCK, false, &used)) < 0)
        return ret;
    out->required = measure_host_bytes(meta + used * block_bytes);
    out->fully_allocated = meta + entries * block_bytes;
    return 0;
}
