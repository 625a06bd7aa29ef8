/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bzip2 for DMG chunks (UDBZ). A chunk is one stream that must fill the output exactly, as
 * qemu's dmg-bz2 module requires. The decoder's memory is bounded by the format (at most
 * about 3.7 MB for a 900k block), whatever the stream announces.
 *
 * libbz2 is loaded on the first bzip2 chunk, not with the library: only bzip2-compressed DMG
 * images need it (qemu builds it as a module for the same reason), and every process linking
 * it would otherwise pay for loading it at start, about 50 microseconds of a 1.3 ms
 * `imgutil info` (measured: an empty program linked with it against without).
 */
#include <bzlib.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec/codec_impl.h"

static struct {
    int (*decompress_init)(bz_stream *strm, int verbosity, int small);
    int (*decompress)(bz_stream *strm);
    int (*decompress_end)(bz_stream *strm);
    bool loaded;
} bz;
static pthread_once_t bz_once = PTHREAD_ONCE_INIT;

static void load_libbz2(void)
{
    /* Debian and its kin name it libbz2.so.1.0; other systems libbz2.so.1. */
    static const char *const names[] = {"libbz2.so.1.0", "libbz2.so.1"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        void *handle = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!handle)
            continue;
        /* POSIX lets dlsym's pointer stand for a function; copied, not punned through a cast. */
        void *init = dlsym(handle, "BZ2_bzDecompressInit");
        void *run = dlsym(handle, "BZ2_bzDecompress");
        void *end = dlsym(handle, "BZ2_bzDecompressEnd");
        memcpy(&bz.decompress_init, &init, sizeof(init));
        memcpy(&bz.decompress, &run, sizeof(run));
        memcpy(&bz.decompress_end, &end, sizeof(end));
        if (bz.decompress_init && bz.decompress && bz.decompress_end) {
            /* Kept loaded for the life of the process. */
            bz.loaded = true;
            return;
        }
        dlclose(handle);
    }
}

int bzip2_decompress(const void *src, size_t src_len, void *dst, size_t dst_len)
{
    pthread_once(&bz_once, load_libbz2);
    if (!bz.loaded)
        return -ENOPKG;
    /* libbz2 counts in unsigned int; DMG chunks are at most 64 MiB. */
    if (src_len > UINT_MAX || dst_len > UINT_MAX)
        return -EINVAL;
    bz_stream strm = {0};
    if (bz.decompress_init(&strm, 0, 0) != BZ_OK)
        return -ENOMEM;
    strm.next_in = (char *)(uintptr_t)src;
    strm.avail_in = (unsigned)src_len;
    strm.next_out = dst;
    strm.avail_out = (unsigned)dst_len;
    int ret = bz.decompress(&strm);
    uint64_t total_out = ((uint64_t)strm.total_out_hi32 << 32) | strm.total_out_lo32;
    bz.decompress_end(&strm);
    if (ret == BZ_MEM_ERROR)
        return -ENOMEM;
    if (ret != BZ_STREAM_END || total_out != dst_len)
        return -EIO;
    return 0;
}
