/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Deflate, raw (qcow2 compressed clusters) and with the zlib header (VMDK grains).
 *
 * Decompression follows QEMU's reading of qcow2: the stored length is rounded up to whole
 * sectors, so bytes after the end of the stream are ignored, and a stream that produces at least
 * the requested output is accepted even if it would go on. libdeflate, when built in, handles
 * the common exact case faster; anything it refuses is retried with zlib, which is the reference.
 *
 * Streams are kept per thread and reset between calls (codec_thread.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "codec/codec_impl.h"
#include "codec/codec_thread.h"
#include "config.h"

#if HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

/*
 * QEMU writes qcow2 clusters with a 4 KiB window and inflates with the same; compressing with it
 * keeps our clusters readable by QEMU. Inflating with the largest window accepts every stream
 * QEMU accepts and streams from writers that used a larger window too.
 */
#define RAW_COMPRESS_WINDOW_BITS (-12)
#define RAW_DECOMPRESS_WINDOW_BITS (-15)
#define ZLIB_WINDOW_BITS 15

struct deflate_thread_state {
    z_stream inflater;
    bool inflater_ready;
    z_stream deflater[2]; /* [0] raw, [1] zlib header */
    bool deflater_ready[2];
#if HAVE_LIBDEFLATE
    struct libdeflate_decompressor *fast;
#endif
};

/* Frees what a thread's state holds, when the thread exits. */
static void state_release(void *p)
{
    struct deflate_thread_state *st = p;
    if (st->inflater_ready)
        inflateEnd(&st->inflater);
    for (int i = 0; i < 2; i++)
        if (st->deflater_ready[i])
            deflateEnd(&st->deflater[i]);
#if HAVE_LIBDEFLATE
    if (st->fast)
        libdeflate_free_decompressor(st->fast);
#endif
}

static struct deflate_thread_state *thread_state(void)
{
    return codec_thread_state(CODEC_THREAD_DEFLATE, sizeof(struct deflate_thread_state),
                              state_release);
}

#if HAVE_LIBDEFLATE
/* True when libdeflate produced exactly dst_len bytes; false means "ask zlib". */
static bool fast_decompress(struct deflate_thread_state *st, bool zlib_header, const void *src,
                            size_t src_len, void *dst, size_t dst_len)
{
    if (!st->fast) {
        st->fast = libdeflate_alloc_decompressor();
        if (!st->fast)
            return false;
    }
    size_t used = 0;
    enum libdeflate_result r =
        zlib_header
            ? libdeflate_zlib_decompress_ex(st->fast, src, src_len, dst, dst_len, &used, NULL)
            : libdeflate_deflate_decompress_ex(st->fast, src, src_len, dst, dst_len, &used, NULL);
    return r == LIBDEFLATE_SUCCESS;
}
#endif

int deflate_decompress(bool zlib_header, const void *src, size_t src_len, void *dst, size_t dst_len)
{
    if (src_len > UINT_MAX || dst_len > UINT_MAX)
        return -EINVAL;
    if (dst_len == 0)
        return 0;
    struct deflate_thread_state *st = thread_state();
    if (!st)
        return -ENOMEM;
#if HAVE_LIBDEFLATE
    if (fast_decompress(st, zlib_header, src, src_len, dst, dst_len))
        return 0;
#endif
    int window = zlib_header ? ZLIB_WINDOW_BITS : RAW_DECOMPRESS_WINDOW_BITS;
    z_stream *z = &st->inflater;
    if (!st->inflater_ready) {
        memset(z, 0, sizeof(*z));
        if (inflateInit2(z, window) != Z_OK)
            return -ENOMEM;
        st->inflater_ready = true;
    } else if (inflateReset2(z, window) != Z_OK) {
        return -EIO;
    }
    z->next_in = (Bytef *)(uintptr_t)src;
    z->avail_in = (uInt)src_len;
    z->next_out = dst;
    z->avail_out = (uInt)dst_len;
    int ret = inflate(z, Z_FINISH);
    /*
     * Z_STREAM_END: the stream ended (trailing bytes are left in avail_in). Z_BUF_ERROR or Z_OK
     * with a full buffer: the stream had more to give than the unit holds, which QEMU accepts.
     */
    bool full = z->avail_out == 0;
    if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR || ret == Z_OK) && full)
        return 0;
    return -EIO;
}

long deflate_compress(bool zlib_header, const void *src, size_t src_len, void *dst, size_t dst_cap)
{
    if (src_len > UINT_MAX)
        return -EINVAL;
    if (dst_cap > UINT_MAX)
        dst_cap = UINT_MAX;
    struct deflate_thread_state *st = thread_state();
    if (!st)
        return -ENOMEM;
    int slot = zlib_header ? 1 : 0;
    z_stream *z = &st->deflater[slot];
    if (!st->deflater_ready[slot]) {
        memset(z, 0, sizeof(*z));
        int ret = zlib_header ? deflateInit2(z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, ZLIB_WINDOW_BITS,
                                             8, Z_DEFAULT_STRATEGY)
                              : deflateInit2(z, Z_DEFAULT_COMPRESSION, Z_DEFLATED,
                                             RAW_COMPRESS_WINDOW_BITS, 9, Z_DEFAULT_STRATEGY);
        if (ret != Z_OK)
            return -ENOMEM;
        st->deflater_ready[slot] = true;
    } else if (deflateReset(z) != Z_OK) {
        return -EIO;
    }
    z->next_in = (Bytef *)(uintptr_t)src;
    z->avail_in = (uInt)src_len;
    z->next_out = dst;
    z->avail_out = (uInt)dst_cap;
    int ret = deflate(z, Z_FINISH);
    if (ret == Z_STREAM_END)
        return (long)(dst_cap - z->avail_out);
    if (ret == Z_OK || ret == Z_BUF_ERROR)
        return -ENOSPC;
    return -EIO;
}
