/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Creating fixed and dynamic disks, laid out as qemu-img lays them out. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "error.h"
#include "io/io.h"
#include "opts.h"
#include "util/checked.h"
#include "util/endian.h"
#include "vpc.h"

#define VPC_TIMESTAMP_BASE 946684800 /* 2000-01-01T00:00:00Z */
#define VPC_CREATE_BLOCK_SIZE 0x200000u

static void fill_random(uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    /* A UUID only identifies the disk to a child: a clock-based fallback is good enough. */
    for (uint64_t t = (uint64_t)time(NULL) ^ (uintptr_t)buf; got < len; got++, t >>= 3)
        buf[got] = (uint8_t)t;
    buf[6] = (uint8_t)((buf[6] & 0x0f) | 0x40); /* version 4 */
    buf[8] = (uint8_t)((buf[8] & 0x3f) | 0x80);
}

static void build_footer(uint8_t *f, uint32_t type, uint64_t size, bool force_size, uint16_t cyls,
                         uint8_t heads, uint8_t secs)
{
    memset(f, 0, VPC_FOOTER_SIZE);
    memcpy(f + VPC_F_COOKIE, "conectix", 8);
    store_be32(f + VPC_F_FEATURES, 2);
    store_be32(f + VPC_F_VERSION, 0x00010000);
    store_be64(f + VPC_F_DATA_OFFSET, type == VPC_FIXED ? UINT64_MAX : VPC_FOOTER_SIZE);
    store_be32(f + VPC_F_TIMESTAMP, (uint32_t)((uint64_t)time(NULL) - VPC_TIMESTAMP_BASE));
    memcpy(f + VPC_F_CREATOR_APP, force_size ? "qem2" : "qemu", 4);
    store_be16(f + VPC_F_CREATOR_VER, 5); /* Virtual PC 2007's version, 5.3 */
    store_be16(f + VPC_F_CREATOR_VER + 2, 3);
    memcpy(f + VPC_F_CREATOR_OS, "Wi2k", 4);
    store_be64(f + VPC_F_ORIG_SIZE, size);
    store_be64(f + VPC_F_CURRENT_SIZE, size);
    store_be16(f + VPC_F_CYLS, cyls);
    f[VPC_F_HEADS] = heads;
    f[VPC_F_SECS] = secs;
    store_be32(f + VPC_F_TYPE, type);
    fill_random(f + VPC_F_UUID, 16);
    store_be32(f + VPC_F_CHECKSUM, vpc_checksum(f, VPC_FOOTER_SIZE, VPC_F_CHECKSUM));
}

/* Footer copy, header at 512, BAT at 1536 (all absent), footer after the BAT. */
static int write_dynamic(struct io_file *f, const uint8_t *footer, uint64_t total_sectors)
{
    uint64_t entries = (total_sectors + VPC_CREATE_BLOCK_SIZE / VPC_SECTOR - 1) /
                       (VPC_CREATE_BLOCK_SIZE / VPC_SECTOR);
    uint64_t bat_bytes = align_up_u64(entries * 4, VPC_SECTOR);
    uint8_t header[VPC_HEADER_SIZE] = {0};
    memcpy(header, "cxsparse", 8);
    /* All 64 bits set: the specification says 0xFFFFFFFF, Microsoft's tools expect this. */
    store_be64(header + VPC_H_DATA_OFFSET, UINT64_MAX);
    store_be64(header + VPC_H_TABLE_OFFSET, 3 * VPC_SECTOR);
    store_be32(header + VPC_H_VERSION, 0x00010000);
    store_be32(header + VPC_H_MAX_ENTRIES, (uint32_t)entries);
    store_be32(header + VPC_H_BLOCK_SIZE, VPC_CREATE_BLOCK_SIZE);
    store_be32(header + VPC_H_CHECKSUM, vpc_checksum(header, VPC_HEADER_SIZE, VPC_H_CHECKSUM));

    uint8_t *bat = malloc(bat_bytes ? bat_bytes : 1);
    if (!bat)
        return -ENOMEM;
    memset(bat, 0xff, bat_bytes);
    int ret = io_truncate(f, 0);
    if (ret == 0)
        ret = io_pwrite(f, footer, VPC_FOOTER_SIZE, 0);
    if (ret == 0)
        ret = io_pwrite(f, header, VPC_HEADER_SIZE, VPC_FOOTER_SIZE);
    if (ret == 0)
        ret = io_pwrite(f, bat, bat_bytes, 3 * VPC_SECTOR);
    if (ret == 0)
        ret = io_pwrite(f, footer, VPC_FOOTER_SIZE, 3 * VPC_SECTOR + bat_bytes);
    free(bat);
    return ret;
}

static int write_fixed(struct io_file *f, const uint8_t *footer, uint64_t size)
{
    int ret = io_truncate(f, 0);
    if (ret == 0)
        ret = io_truncate(f, size + VPC_FOOTER_SIZE);
    if (ret == 0)
        ret = io_pwrite(f, footer, VPC_FOOTER_SIZE, size);
    return ret;
}

int vpc_create(const struct img_create_args *args)
{
    if (args->backing_file)
        return img_error(-ENOTSUP, "vpc: %s: Backing file not supported for file format 'vpc'",
                         args->path);
    uint64_t size = args->size;
    int ret = size ? 0 : opts_get_size(args->opts, "size", &size);
    bool force_size = false;
    if (ret == 0 && img_opts_get(args->opts, "force_size"))
        ret = opts_get_bool(args->opts, "force_size", &force_size);
    if (ret < 0)
        return ret;
    const char *sub = img_opts_get(args->opts, "subformat");
    uint32_t type = sub && strcmp(sub, "fixed") == 0 ? VPC_FIXED : VPC_DYNAMIC;
    if (size > VPC_MAX_SECTORS * VPC_SECTOR)
        return img_error(-EFBIG, "vpc: %s: The image size is too large for file format 'vpc'",
                         args->path);
    /* qemu-img rounds up silently: to whole sectors, then (without force_size) to CHS. */
    size = align_up_u64(size, VPC_SECTOR);
    uint16_t cyls;
    uint8_t heads, secs;
    uint64_t sectors;
    ret = vpc_rounded_size(size, force_size, &cyls, &heads, &secs, &sectors);
    if (ret < 0)
        return ret;
    if (!force_size)
        size = sectors * VPC_SECTOR;

    uint8_t footer[VPC_FOOTER_SIZE];
    build_footer(footer, type, size, force_size, cyls, heads, secs);
    ret = type == VPC_FIXED ? write_fixed(args->file, footer, size)
                            : write_dynamic(args->file, footer, sectors);
    if (ret < 0)
        return img_error(ret, "vpc: cannot create '%s': %s", args->path, img_strerror(ret));
    return 0;
}

static const char *const vpc_subformats[] = {"dynamic", "fixed", NULL};

/* In the order qemu-img prints them on its "Formatting ..." line. */
const struct opt_desc vpc_create_options[] = {
    {.name = "size", .type = OPT_SIZE, .help = "Virtual disk size"},
    {.name = "subformat",
     .type = OPT_ENUM,
     .values = vpc_subformats,
     .help = "Type of virtual hard disk format. Supported formats are {dynamic (default) | "
             "fixed} "},
    {.name = "force_size",
     .type = OPT_BOOL,
     .help = "Force disk size calculation to use the actual size specified, rather than using "
             "the nearest CHS-based calculation"},
    OPT_TABLE_END,
};
