/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bzip2 for DMG chunks (UDBZ). A chunk is one stream that must fill the output exactly, as
 * qemu's dmg-bz2 module requires. The decoder's memory is bounded by the format (at most
 * about 3.7 MB for a 900k block), whatever the stream announces.
 */
#include <bzlib.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>

#include "codec/codec_impl.h"

int bzip2_decompress(const void *src, size_t src_len, void *dst, size_t dst_len)
{
    /* libbz2 counts in unsigned int; DMG chunks are at most 64 MiB. */
    if (src_len > UINT_MAX || dst_len > UINT_MAX)
        return -EINVAL;
    bz_stream bz = {0};
    if (BZ2_bzDecompressInit(&bz, 0, 0) != BZ_OK)
        return -ENOMEM;
    bz.next_in = (char *)(uintptr_t)src;
    bz.avail_in = (unsigned)src_len;
    bz.next_out = dst;
    bz.avail_out = (unsigned)dst_len;
    int ret = BZ2_bzDecompress(&bz);
    uint64_t total_out = ((uint64_t)bz.total_out_hi32 << 32) | bz.total_out_lo32;
    BZ2_bzDecompressEnd(&bz);
    if (ret == BZ_MEM_ERROR)
        return -ENOMEM;
    if (ret != BZ_STREAM_END || total_out != dst_len)
        return -EIO;
    return 0;
}
