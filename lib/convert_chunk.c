/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Copies one chunk of a convert: the source's extents are read into the worker's buffer
 * (ranges the source already reports as zeros are not read), then the runs of non-zero blocks
 * are written to the target, so the target stays sparse where the data is zero.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "convert_job.h"
#include "error.h"
#include "formats/format.h"
#include "io/io.h"
#include "util/checked.h"

bool buffer_is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len && ((uintptr_t)p & 7)) {
        if (*p++)
            return false;
        len--;
    }
    const uint64_t *w = (const uint64_t *)(const void *)p;
    /* Data blocks usually differ from zero in their first bytes: look there first. */
    if (len >= 64 && (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]))
        return false;
    for (; len >= 256; len -= 256, w += 32) {
        uint64_t acc = 0;
        for (int i = 0; i < 32; i++)
            acc |= w[i];
        if (acc)
            return false;
    }
    p = (const uint8_t *)w;
    while (len--)
        if (*p++)
            return false;
    return true;
}

int convert_chunk_ctx_init(struct convert_chunk_ctx *ctx)
{
    memset(ctx, 0, sizeof(*ctx));
    /* Page-aligned like the page cache it is copied from and to: misaligned copies are slower. */
    ctx->buf = aligned_alloc(4096, CONVERT_CHUNK_SIZE);
    if (!ctx->buf)
        return img_error(-ENOMEM, "out of memory");
    return 0;
}

void convert_chunk_ctx_fini(struct convert_chunk_ctx *ctx)
{
    free(ctx->buf);
    free(ctx->zeros);
    memset(ctx, 0, sizeof(*ctx));
}

static int note_zero_run(struct convert_chunk_ctx *ctx, uint64_t start, uint64_t end)
{
    if (ctx->nzeros && ctx->zeros[ctx->nzeros - 1].end == start) {
        ctx->zeros[ctx->nzeros - 1].end = end;
        return 0;
    }
    if (ctx->nzeros == ctx->zeros_cap) {
        /* At most one run per 512-byte sector of a chunk: bounded. */
        size_t cap = ctx->zeros_cap ? ctx->zeros_cap * 2 : 16;
        struct convert_zero_run *grown = realloc(ctx->zeros, cap * sizeof(*grown));
        if (!grown)
            return img_error(-ENOMEM, "out of memory");
        ctx->zeros = grown;
        ctx->zeros_cap = cap;
    }
    ctx->zeros[ctx->nzeros].start = start;
    ctx->zeros[ctx->nzeros].end = end;
    ctx->nzeros++;
    return 0;
}

/*
 * Reads the chunk into ctx->buf. Ranges that read as zeros are recorded instead of read; when
 * `granule` is not 0 only the parts of them that share a granule with other data are
 * cleared in the buffer (whole zero granules are never looked at again).
 */
static int read_chunk(const struct convert_job *job, struct convert_chunk_ctx *ctx, uint64_t offset,
                      uint64_t length, uint64_t granule)
{
    ctx->nzeros = 0;
    for (uint64_t pos = 0; pos < length;) {
        struct img_extent ext;
        int depth;
        int ret = img_map_chain(job->src, offset + pos, length - pos, &ext, &depth);
        if (ret < 0)
            return ret;
        uint8_t *p = ctx->buf + pos;
        if (ext.kind == EXTENT_ZERO || ext.kind == EXTENT_UNALLOCATED) {
            uint64_t end = pos + ext.length;
            if (granule == 0) {
                memset(p, 0, ext.length);
            } else {
                uint64_t head = min_u64(end, align_up_u64(pos, granule));
                uint64_t tail = max_u64(head, end & ~(granule - 1));
                memset(p, 0, head - pos);
                memset(ctx->buf + tail, 0, end - tail);
                ret = note_zero_run(ctx, pos, end);
            }
        } else {
            ret = img_read_extent(&ext, p, offset + pos);
        }
        if (ret < 0)
            return ret;
        pos += ext.length;
    }
    return 0;
}

/* Does [start, end) of the chunk read as zeros? `cursor` walks the sorted zero runs. */
static bool block_is_zero(const struct convert_chunk_ctx *ctx, size_t *cursor, uint64_t start,
                          uint64_t end)
{
    while (*cursor < ctx->nzeros && ctx->zeros[*cursor].end <= start)
        (*cursor)++;
    if (*cursor < ctx->nzeros && ctx->zeros[*cursor].start <= start &&
        end <= ctx->zeros[*cursor].end)
        return true;
    return buffer_is_zero(ctx->buf + start, end - start);
}

static int write_run(const struct convert_job *job, const uint8_t *buf, uint64_t len,
                     uint64_t offset)
{
    if (job->raw_dst) {
        int ret = io_pwrite(job->raw_dst, buf, len, offset);
        if (ret < 0)
            return img_error(ret, "write to the target failed: %s", img_strerror(ret));
        return 0;
    }
    int64_t w = img_pwrite(job->img_dst, buf, len, offset);
    return w < 0 ? (int)w : 0;
}

static int write_compressed_units(const struct convert_job *job, struct convert_chunk_ctx *ctx,
                                  uint64_t offset, uint64_t length)
{
    struct img *dst = job->img_dst;
    uint64_t unit = job->compress_unit;
    size_t cursor = 0;
    for (uint64_t pos = 0; pos < length; pos += unit) {
        uint64_t n = min_u64(unit, length - pos);
        if (block_is_zero(ctx, &cursor, pos, pos + n))
            continue;
        int ret;
        if (n == unit)
            ret = dst->fmt->write_compressed(dst, offset + pos, ctx->buf + pos, n);
        else
            ret = write_run(job, ctx->buf + pos, n, offset + pos);
        if (ret < 0)
            return ret;
    }
    return 0;
}

int convert_chunk(const struct convert_job *job, struct convert_chunk_ctx *ctx, uint64_t offset,
                  uint64_t length)
{
    uint64_t granule = job->compress_unit ? job->compress_unit : job->zero_block;
    int ret = read_chunk(job, ctx, offset, length, granule);
    if (ret < 0)
        return ret;
    if (job->compress_unit)
        return write_compressed_units(job, ctx, offset, length);
    if (granule == 0)
        return write_run(job, ctx->buf, length, offset);

    /* Consecutive non-zero blocks go out as one write. */
    size_t cursor = 0;
    uint64_t run_start = 0, run_len = 0;
    for (uint64_t pos = 0; pos < length; pos += granule) {
        uint64_t n = min_u64(granule, length - pos);
        if (!block_is_zero(ctx, &cursor, pos, pos + n)) {
            if (run_len == 0)
                run_start = pos;
            run_len += n;
            continue;
        }
        if (run_len) {
            ret = write_run(job, ctx->buf + run_start, run_len, offset + run_start);
            if (ret < 0)
                return ret;
            run_len = 0;
        }
    }
    if (run_len)
        ret = write_run(job, ctx->buf + run_start, run_len, offset + run_start);
    return ret;
}
