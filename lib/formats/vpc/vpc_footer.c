/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The footer's arithmetic: checksums, which size a reader believes, CHS geometry. */
#include <errno.h>
#include <string.h>

#include "error.h"
#include "util/endian.h"
#include "vpc.h"

/* One's complement of the byte sum, the checksum field itself counted as zero. */
uint32_t vpc_checksum(const uint8_t *buf, size_t len, size_t checksum_at)
{
    uint32_t sum = 0;
    for (size_t i = 0; i < len; i++)
        if (i < checksum_at || i >= checksum_at + 4)
            sum += buf[i];
    return ~sum;
}

/*
 * Virtual PC and QEMU (creator "vpc ", "qemu") size a disk by its CHS geometry; Hyper-V
 * ("win "), QEMU with force_size ("qem2"), Disk2VHD ("d2v "), XenServer ("tap\0"),
 * XenConverter ("CTXS") and Azure ("wa\0\0") by the footer's current size. A geometry at the
 * CHS maximum cannot describe the size, so the current size wins there too. The open option
 * force_size_calc ("chs" or "current_size") overrides the creator table.
 */
bool vpc_uses_current_size(const uint8_t *footer, const char *size_calc)
{
    static const char *const by_size[] = {"win ", "qem2", "d2v ", "tap\0", "CTXS", "wa\0\0"};
    const uint8_t *app = footer + VPC_F_CREATOR_APP;
    bool use_chs = true;
    for (size_t i = 0; i < sizeof(by_size) / sizeof(by_size[0]); i++)
        if (memcmp(app, by_size[i], 4) == 0)
            use_chs = false;
    if (size_calc && strcmp(size_calc, "chs") == 0)
        use_chs = true;
    uint64_t chs =
        (uint64_t)load_be16(footer + VPC_F_CYLS) * footer[VPC_F_HEADS] * footer[VPC_F_SECS];
    return !use_chs || chs == VPC_MAX_GEOMETRY ||
           (size_calc && strcmp(size_calc, "current_size") == 0);
}

/*
 * The geometry algorithm of the VHD specification (appendix), with QEMU's extension past
 * 127 GiB (16 heads, 255 sectors). The product may be smaller than total_sectors.
 */
void vpc_geometry(uint64_t total_sectors, uint16_t *cyls, uint8_t *heads, uint8_t *secs)
{
    uint64_t cyls_times_heads;
    if (total_sectors > VPC_MAX_GEOMETRY)
        total_sectors = VPC_MAX_GEOMETRY;
    if (total_sectors >= 65535ull * 16 * 63) {
        *secs = 255;
        *heads = 16;
        cyls_times_heads = total_sectors / *secs;
    } else {
        *secs = 17;
        cyls_times_heads = total_sectors / *secs;
        uint64_t h = (cyls_times_heads + 1023) / 1024;
        if (h < 4)
            h = 4;
        if (cyls_times_heads >= h * 1024 || h > 16) {
            *secs = 31;
            h = 16;
            cyls_times_heads = total_sectors / *secs;
        }
        if (cyls_times_heads >= h * 1024) {
            *secs = 63;
            h = 16;
            cyls_times_heads = total_sectors / *secs;
        }
        *heads = (uint8_t)h;
    }
    *cyls = (uint16_t)(cyls_times_heads / *heads);
}

/*
 * The size a new image gets (qemu-img create): without force_size, the smallest CHS
 * geometry holding `size` (rounded up, so that convert never truncates); with it, or past the
 * CHS maximum, the maximum geometry and the size itself, up to 2040 GiB.
 */
int vpc_rounded_size(uint64_t size, bool force_size, uint16_t *cyls, uint8_t *heads, uint8_t *secs,
                     uint64_t *total_sectors)
{
    uint16_t c = 0;
    uint8_t h = 0, s = 0;
    if (force_size) {
        c = (uint16_t)VPC_CHS_MAX_C;
        h = (uint8_t)VPC_CHS_MAX_H;
        s = (uint8_t)VPC_CHS_MAX_S;
    } else {
        uint64_t want = size / VPC_SECTOR;
        if (want > VPC_MAX_GEOMETRY)
            want = VPC_MAX_GEOMETRY;
        for (uint64_t i = 0; want > (uint64_t)c * h * s; i++)
            vpc_geometry(want + i, &c, &h, &s);
    }
    uint64_t sectors;
    if ((uint64_t)c * h * s == VPC_MAX_GEOMETRY) {
        sectors = size / VPC_SECTOR;
        if (sectors > VPC_MAX_SECTORS)
            return img_error(-EFBIG, "vpc: Disk size is too large, max size is 2040 GiB");
    } else {
        sectors = (uint64_t)c * h * s;
    }
    *cyls = c;
    *heads = h;
    *secs = s;
    *total_sectors = sectors;
    return 0;
}
