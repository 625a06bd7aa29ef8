/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Copies one chunk of a convert: the source's extents are read into the worker's buffer
 * (ranges the source already reports as zeros are not read), then the runs of non-zero blocks
 * are written to the target, so the target stays sparse where the data is zero. A compressed
 * chunk is copied in two halves: its units are compressed at once, and written later in turn.
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
    free(ctx->packed);
    free(ctx->units);
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
 * Reads the chunk into ctx->buf. Ranges that read as zeros are recorded instead of read, and
 * cleared in the buffer only where they share a `unit` with data (whole zero units are
 * never looked at again); with `unit` 0 they are cleared whole.
 */
static int read_chunk(const struct convert_job *job, struct convert_chunk_ctx *ctx, uint64_t offset,
                      uint64_t length, uint64_t unit)
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
            if (unit == 0) {
                memset(p, 0, ext.length);
            } else {
                uint64_t head = min_u64(end, align_up_u64(pos, unit));
                uint64_t tail = max_u64(head, end & ~(unit - 1));
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

/* Does the source report [start, end) of the chunk as zeros? `cursor` walks the runs. */
static bool source_says_zero(const struct convert_chunk_ctx *ctx, size_t *cursor, uint64_t start,
                             uint64_t end)
{
    while (*cursor < ctx->nzeros && ctx->zeros[*cursor].end <= start)
        (*cursor)++;
    return *cursor < ctx->nzeros && ctx->zeros[*cursor].start <= start &&
           end <= ctx->zeros[*cursor].end;
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
    /* No buffer: zeros (the target has a backing file that must not show through). */
    if (!buf)
        return img_zero(job->img_dst, offset, len, 0);
    int64_t w = img_pwrite(job->img_dst, buf, len, offset);
    return w < 0 ? (int)w : 0;
}

/* What becomes of one piece of the chunk. */
enum piece_fate { PIECE_SKIP, PIECE_ZERO, PIECE_DATA };

/* Consecutive pieces of the same fate go out as one request. */
struct piece_runs {
    const struct convert_job *job;
    const uint8_t *buf;
    uint64_t offset; /* guest offset of the chunk */
    enum piece_fate fate;
    uint64_t start, len;
};

static int runs_flush(struct piece_runs *r)
{
    int ret = 0;
    if (r->len && r->fate != PIECE_SKIP)
        ret = write_run(r->job, r->fate == PIECE_DATA ? r->buf + r->start : NULL, r->len,
                        r->offset + r->start);
    r->len = 0;
    return ret;
}

static int runs_add(struct piece_runs *r, enum piece_fate fate, uint64_t start, uint64_t len)
{
    if (r->len && (r->fate != fate || r->start + r->len != start)) {
        int ret = runs_flush(r);
        if (ret < 0)
            return ret;
    }
    if (r->len == 0) {
        r->fate = fate;
        r->start = start;
    }
    r->len += len;
    return 0;
}

static int note_unit(struct convert_chunk_ctx *ctx, const struct convert_unit *u)
{
    if (ctx->nunits == ctx->units_cap) {
        /* At most one per unit of a chunk: bounded. */
        size_t cap = ctx->units_cap ? ctx->units_cap * 2 : 64;
        struct convert_unit *grown = realloc(ctx->units, cap * sizeof(*grown));
        if (!grown)
            return img_error(-ENOMEM, "out of memory");
        ctx->units = grown;
        ctx->units_cap = cap;
    }
    ctx->units[ctx->nunits++] = *u;
    return 0;
}

/* The expensive half of a compressed chunk, which touches nothing shared: compression. */
static int compress_units(const struct convert_job *job, struct convert_chunk_ctx *ctx,
                          uint64_t length)
{
    struct img *dst = job->img_dst;
    uint64_t unit = job->compress_unit;
    if (!ctx->packed && !(ctx->packed = malloc(CONVERT_CHUNK_SIZE)))
        return img_error(-ENOMEM, "out of memory");
    ctx->nunits = 0;
    size_t cursor = 0;
    uint64_t used = 0;
    for (uint64_t pos = 0; pos < length; pos += unit) {
        struct convert_unit u = {.pos = pos, .len = min_u64(unit, length - pos)};
        if (source_says_zero(ctx, &cursor, pos, pos + u.len)) {
            if (!job->zeros_explicit)
                continue;
            u.zero = true;
        } else if (buffer_is_zero(ctx->buf + pos, u.len) && !job->zeros_explicit) {
            continue;
        } else {
            /*
             * Every earlier stream is shorter than its unit, so at least the rest of the
             * chunk, a whole unit or more, is left in `packed`.
             */
            size_t clen;
            int ret = dst->fmt->compress_unit(dst, ctx->buf + pos, u.len, ctx->packed + used,
                                              CONVERT_CHUNK_SIZE - used, &clen);
            if (ret < 0)
                return ret;
            u.packed_off = used;
            u.stream_len = clen;
            used += clen;
        }
        int ret = note_unit(ctx, &u);
        if (ret < 0)
            return ret;
    }
    return 0;
}

int convert_chunk_commit(const struct convert_job *job, struct convert_chunk_ctx *ctx,
                         uint64_t offset)
{
    struct img *dst = job->img_dst;
    struct piece_runs zeros = {.job = job, .offset = offset};
    for (size_t i = 0; i < ctx->nunits; i++) {
        const struct convert_unit *u = &ctx->units[i];
        int ret;
        if (u->zero) {
            ret = runs_add(&zeros, PIECE_ZERO, u->pos, u->len);
        } else {
            ret = runs_flush(&zeros);
            if (ret == 0 && u->stream_len)
                ret = dst->fmt->write_compressed_data(
                    dst, offset + u->pos, ctx->packed + u->packed_off, u->stream_len, false);
            else if (ret == 0)
                ret = dst->fmt->write_compressed_data(dst, offset + u->pos, ctx->buf + u->pos,
                                                      u->len, true);
        }
        if (ret < 0)
            return ret;
    }
    return runs_flush(&zeros);
}

/*
 * The fate of each piece of one granule: the source's zeros are left out (or written as
 * zeros over a backing file); the rest is data, unless the whole granule reads as zeros.
 */
static int add_granule(const struct convert_job *job, struct convert_chunk_ctx *ctx, size_t *cursor,
                       struct piece_runs *runs, uint64_t start, uint64_t end)
{
    enum piece_fate source_zero = job->zeros_explicit ? PIECE_ZERO : PIECE_SKIP;
    size_t probe = *cursor;
    bool all_zero = true;
    for (uint64_t pos = start; all_zero && pos < end; pos += job->unit) {
        uint64_t n = min_u64(job->unit, end - pos);
        all_zero = source_says_zero(ctx, &probe, pos, pos + n) || buffer_is_zero(ctx->buf + pos, n);
    }
    for (uint64_t pos = start; pos < end; pos += job->unit) {
        uint64_t n = min_u64(job->unit, end - pos);
        enum piece_fate fate = source_says_zero(ctx, cursor, pos, pos + n) ? source_zero
                               : all_zero                                  ? source_zero
                                                                           : PIECE_DATA;
        int ret = runs_add(runs, fate, pos, n);
        if (ret < 0)
            return ret;
    }
    return 0;
}

int convert_chunk(const struct convert_job *job, struct convert_chunk_ctx *ctx, uint64_t offset,
                  uint64_t length)
{
    /* -S 0: every byte is written, the source's zeros included (a fully allocated target). */
    bool write_all = !job->compress_unit && job->zero_block == 0;
    uint64_t unit = write_all ? 0 : job->compress_unit ? job->compress_unit : job->unit;
    int ret = read_chunk(job, ctx, offset, length, unit);
    if (ret < 0)
        return ret;
    if (write_all)
        return write_run(job, ctx->buf, length, offset);
    if (job->compress_unit)
        return compress_units(job, ctx, length);

    struct piece_runs runs = {.job = job, .buf = ctx->buf, .offset = offset};
    size_t cursor = 0;
    for (uint64_t pos = 0; ret == 0 && pos < length; pos += job->zero_block)
        ret = add_granule(job, ctx, &cursor, &runs, pos, min_u64(pos + job->zero_block, length));
    if (ret == 0)
        ret = runs_flush(&runs);
    return ret;
}
