/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * zstd for qcow2 compressed clusters (compression_type 1).
 *
 * qcow2 does not record the exact compressed length, only whole sectors, so decoding streams
 * until the output is full and ignores what follows; the stream may consist of several frames.
 * Contexts are kept per thread (codec_thread.h).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "codec/codec_impl.h"
#include "codec/codec_thread.h"

/*
 * A hostile frame can announce a window up to 2 GiB, which the decoder would allocate. No
 * compressed unit is larger than 2 MiB (qcow2's largest cluster), so an 8 MiB window is ample
 * for any honest writer.
 */
#define ZSTD_WINDOW_LOG_MAX 23

struct zstd_thread_state {
    ZSTD_DCtx *dctx;
    ZSTD_CCtx *cctx;
};

/* Frees what a thread's state holds, when the thread exits. */
static void state_release(void *p)
{
    struct zstd_thread_state *st = p;
    ZSTD_freeDCtx(st->dctx);
    ZSTD_freeCCtx(st->cctx);
}

static struct zstd_thread_state *thread_state(void)
{
    return codec_thread_state(CODEC_THREAD_ZSTD, sizeof(struct zstd_thread_state), state_release);
}

int zstd_decompress(const void *src, size_t src_len, void *dst, size_t dst_len)
{
    if (dst_len == 0)
        return 0;
    struct zstd_thread_state *st = thread_state();
    if (!st)
        return -ENOMEM;
    if (!st->dctx) {
        st->dctx = ZSTD_createDCtx();
        if (!st->dctx)
            return -ENOMEM;
    }
    ZSTD_DCtx_reset(st->dctx, ZSTD_reset_session_and_parameters);
    if (ZSTD_isError(ZSTD_DCtx_setParameter(st->dctx, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX)))
        return -EIO;

    ZSTD_inBuffer in = {.src = src, .size = src_len, .pos = 0};
    ZSTD_outBuffer out = {.dst = dst, .size = dst_len, .pos = 0};
    size_t ret = 0;
    while (out.pos < out.size) {
        size_t in_before = in.pos, out_before = out.pos;
        ret = ZSTD_decompressStream(st->dctx, &out, &in);
        if (ZSTD_isError(ret))
            return -EIO;
        /* No progress: the input ran out before the unit was full. */
        if (in.pos == in_before && out.pos == out_before)
            return -EIO;
    }
    /*
     * The unit is full. The frame that filled it must also end here (its checksum may still be
     * unread): a frame that goes on would decode to more than a unit, which means damage.
     */
    if (ret != 0) {
        ret = ZSTD_decompressStream(st->dctx, &out, &in);
        if (ZSTD_isError(ret) || ret != 0)
            return -EIO;
    }
    return 0;
}

long zstd_compress(const void *src, size_t src_len, void *dst, size_t dst_cap)
{
    struct zstd_thread_state *st = thread_state();
    if (!st)
        return -ENOMEM;
    if (!st->cctx) {
        st->cctx = ZSTD_createCCtx();
        if (!st->cctx)
            return -ENOMEM;
    }
    ZSTD_CCtx_reset(st->cctx, ZSTD_reset_session_and_parameters);
    size_t ret = ZSTD_compress2(st->cctx, dst, dst_cap, src, src_len);
    if (ZSTD_isError(ret))
        return ZSTD_getErrorCode(ret) == ZSTD_error_dstSize_tooSmall ? -ENOSPC : -EIO;
    return (long)ret;
}
