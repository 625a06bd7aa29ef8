/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One chunk of a convert, done by one worker: its reads (ranges the source already reports as
 * zeros are not read), then the runs of non-zero blocks found in what was read, and their
 * writes, so the target stays sparse where the data is zero. A compressed chunk is compressed
 * at once, and written later in turn.
 *
 * The reads of a chunk, and then its writes, go through the chunk's own io_queue, all in
 * flight at once, and the worker waits for them there. It waits rather than handing the
 * chunk back and forth: with the chunk's I/O and CPU work on one thread, a chunk costs one
 * hand-off to the pool and one back, where an event loop sending each step's requests and
 * CPU work to other threads cost three times as many, and measurably more time (see
 * convert_pool.c). Many chunks are in flight on the pool's workers meanwhile.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert_job.h"
#include "error.h"
#include "formats/format.h"
#include "io/io.h"
#include "codec/codec.h"
#include "util/array.h"
#include "util/checked.h"
#include "util/huge_buffer.h"
#include "util/zero.h"

_Static_assert(CONVERT_CHUNK_SIZE % HUGE_BUFFER_ALIGN == 0,
               "chunk buffers come whole in huge pages");

/* Requests of one chunk in flight at once; more wait in the list for a free place. */
#define CHUNK_QUEUE_DEPTH 16

int convert_chunk_ctx_init(struct convert_chunk_ctx *ctx)
{
    memset(ctx, 0, sizeof(*ctx));
    /*
     * Page-aligned like the page cache it is copied from and to (misaligned copies are slower),
     * and in huge pages where the kernel gives them: every chunk fills it whole. The buffers
     * of compressed streams (packed_in, packed) are filled only as far as the streams go, and
     * a huge page is cleared whole on its first touch: given them too, a compressed convert
     * (raw -> qcow2 -c, 1 GiB) faulted in 12 huge pages (24 MiB cleared) where it now faults
     * in 6 and 538 small pages.
     */
    ctx->buf = huge_buffer_alloc(CONVERT_CHUNK_SIZE);
    if (!ctx->buf)
        return img_error(-ENOMEM, "out of memory");
    int ret = io_queue_new(&ctx->queue, CHUNK_QUEUE_DEPTH);
    if (ret < 0) {
        huge_buffer_free(ctx->buf, CONVERT_CHUNK_SIZE);
        ctx->buf = NULL;
        return ret;
    }
    /* The worker waits for each batch at once; the other chunks' workers run meanwhile. */
    io_queue_set_waited(ctx->queue, true);
    return 0;
}

void convert_chunk_ctx_fini(struct convert_chunk_ctx *ctx)
{
    io_queue_free(ctx->queue);
    huge_buffer_free(ctx->buf, CONVERT_CHUNK_SIZE);
    free(ctx->zeros);
    free(ctx->backing_runs);
    free(ctx->packed_exts);
    free(ctx->packed_in);
    free(ctx->reqs);
    free(ctx->packed);
    free(ctx->units);
    memset(ctx, 0, sizeof(*ctx));
}

/* Appends [start, end) to a sorted list of runs, joining it to the last one it continues. */
static int note_run(struct convert_zero_run **runs, size_t *n, size_t *cap, uint64_t start,
                    uint64_t end)
{
    if (*n && (*runs)[*n - 1].end == start) {
        (*runs)[*n - 1].end = end;
        return 0;
    }
    /* At most one run per 512-byte sector of a chunk: bounded. */
    int ret = ARRAY_RESERVE(*runs, *cap, *n + 1);
    if (ret < 0)
        return ret;
    (*runs)[*n].start = start;
    (*runs)[*n].end = end;
    (*n)++;
    return 0;
}

static int note_zero_run(struct convert_chunk_ctx *ctx, uint64_t start, uint64_t end)
{
    return note_run(&ctx->zeros, &ctx->nzeros, &ctx->zeros_cap, start, end);
}

/*
 * Lists a request; `reqs` only grows while none is in flight. `token`: the allocation the
 * write completes, linked once it has succeeded (and owned by the list until then).
 */
static int add_req(struct convert_chunk_ctx *ctx, enum io_op op, struct io_file *file, void *buf,
                   uint64_t len, uint64_t host_offset, struct img_alloc *token)
{
    if (ctx->nreqs && !token) {
        /* A run continuing the previous one in the same file goes out as one request. */
        struct convert_req *last = &ctx->reqs[ctx->nreqs - 1];
        struct io_req *io = &last->io;
        if (!last->token && io->op == op && io->file == file &&
            (uint8_t *)io->buf + io->len == buf && io->offset + io->len == host_offset) {
            io->len += len;
            return 0;
        }
    }
    /* At most one per 512-byte sector of a chunk: bounded. */
    int ret = ARRAY_RESERVE(ctx->reqs, ctx->reqs_cap, ctx->nreqs + 1);
    if (ret < 0)
        return ret;
    ctx->reqs[ctx->nreqs++] = (struct convert_req){
        .io = {.op = op, .file = file, .buf = buf, .len = (size_t)len, .offset = host_offset},
        .token = token};
    return 0;
}

/* Links (or, after a failed write, abandons) the allocation a listed write completes. */
static int commit_token(const struct convert_job *job, struct convert_req *req, int write_result)
{
    struct img *dst = job->img_dst;
    struct img_alloc *token = req->token;
    req->token = NULL;
    if (!token || !dst->fmt->alloc_commit)
        return 0;
    return dst->fmt->alloc_commit(dst, token, write_result);
}

static void note_failure(struct convert_chunk_ctx *ctx, int result, const char *message)
{
    if (ctx->io_result < 0)
        return;
    ctx->io_result = result;
    snprintf(ctx->io_message, sizeof(ctx->io_message), "%s", message);
}

/* Runs inside io_queue_reap on the chunk's thread. */
static void request_done(struct io_req *io, int result)
{
    /* `io` is the first member of its convert_req. */
    struct convert_req *req = (struct convert_req *)io;
    struct convert_chunk_ctx *ctx = io->user;
    if (result < 0) {
        char message[160];
        snprintf(message, sizeof(message),
                 "%s of %zu bytes at host offset 0x%" PRIx64 " failed: %s",
                 io->op == IO_OP_READ ? "read" : "write to the target", io->len, io->offset,
                 img_strerror(result));
        note_failure(ctx, result, message);
    }
    int commit = commit_token(ctx->job, req, result);
    if (commit < 0 && result == 0)
        note_failure(ctx, commit, img_last_error());
}

/*
 * Submits every listed request, waits until all have completed (the writes that allocate
 * being linked as each completes) and empties the list. Returns the first failure.
 */
static int run_requests(const struct convert_job *job, struct convert_chunk_ctx *ctx)
{
    ctx->job = job;
    ctx->io_result = 0;
    size_t i = 0;
    int ret = 0;
    for (; i < ctx->nreqs; i++) {
        struct io_req *io = &ctx->reqs[i].io;
        io->done = request_done;
        io->user = ctx;
        io->into_hole = job->new_target && io->op == IO_OP_WRITE;
        ret = io_queue_submit(ctx->queue, io);
        if (ret < 0) {
            note_failure(ctx, ret, img_last_error());
            break;
        }
    }
    /* Those never submitted are abandoned: their allocations are not linked. */
    for (; i < ctx->nreqs; i++)
        commit_token(job, &ctx->reqs[i], ret);
    int drained = io_queue_drain(ctx->queue);
    ctx->nreqs = 0;
    ctx->tokens_listed = false;
    if (ctx->io_result < 0)
        return img_error(ctx->io_result, "convert: %s", ctx->io_message);
    return drained;
}

/* As img_read_extent() checks a compressed extent before reading it. */
#define PACKED_UNIT_MAX (64u << 20)

static bool packed_extent_sane(const struct img_extent *ext, uint64_t offset)
{
    return ext->unit_size != 0 && ext->unit_size <= PACKED_UNIT_MAX &&
           ext->comp_length <= 2ull * ext->unit_size + 4096 && offset >= ext->unit_start &&
           offset - ext->unit_start + ext->length <= ext->unit_size;
}

/*
 * Plans the read of a compressed extent's stream into ctx->packed_in. Streams stored one
 * after another go out as one read; qcow2 rounds each up to a sector, so the next may begin
 * inside the previous one's last sector. Returns the stream's place in packed_in, or
 * UINT64_MAX when it does not fit (or looks wrong: the worker's own read reports that).
 */
static int plan_packed_read(struct convert_chunk_ctx *ctx, const struct img_extent *ext,
                            uint64_t offset, uint64_t *in_off)
{
    *in_off = UINT64_MAX;
    if (!packed_extent_sane(ext, offset))
        return 0;
    /* A piece of a unit that may be cached: read through the cache (img_read_extent). */
    if (ext->cacheable && !(offset == ext->unit_start && ext->length == ext->unit_size))
        return 0;
    if (!ctx->packed_in && !(ctx->packed_in = malloc(CONVERT_CHUNK_SIZE)))
        return img_error(-ENOMEM, "out of memory");
    uint64_t start = ext->host_offset, end = ext->host_offset + ext->comp_length;
    if (ctx->packed_in_req) {
        struct io_req *last = &ctx->reqs[ctx->packed_in_req - 1].io;
        uint64_t last_end = last->offset + last->len;
        size_t last_at = (size_t)((uint8_t *)last->buf - ctx->packed_in);
        if (last->file == ext->file && start >= last->offset && start <= last_end &&
            end - last->offset <= CONVERT_CHUNK_SIZE - last_at) {
            if (end > last_end) {
                last->len = (size_t)(end - last->offset);
                ctx->packed_in_used = last_at + last->len;
            }
            *in_off = last_at + (start - last->offset);
            return 0;
        }
    }
    if (ext->comp_length > CONVERT_CHUNK_SIZE - ctx->packed_in_used)
        return 0;
    *in_off = ctx->packed_in_used;
    int ret = add_req(ctx, IO_OP_READ, ext->file, ctx->packed_in + ctx->packed_in_used,
                      ext->comp_length, start, NULL);
    if (ret < 0)
        return ret;
    /* Never merged by add_req with the request before it: that one is not in packed_in. */
    ctx->packed_in_req = ctx->nreqs;
    ctx->packed_in_used += (size_t)ext->comp_length;
    return 0;
}

static int note_packed_extent(struct convert_chunk_ctx *ctx, uint64_t pos, uint64_t offset,
                              const struct img_extent *ext)
{
    /* At most one per 512-byte sector of a chunk: bounded. */
    int ret = ARRAY_RESERVE(ctx->packed_exts, ctx->packed_exts_cap, ctx->npacked_exts + 1);
    if (ret < 0)
        return ret;
    struct convert_packed_extent *p = &ctx->packed_exts[ctx->npacked_exts];
    p->pos = pos;
    p->ext = *ext;
    ret = plan_packed_read(ctx, ext, offset + pos, &p->in_off);
    if (ret < 0)
        return ret;
    ctx->npacked_exts++;
    return 0;
}

/* Decompresses a stream read into packed_in: straight into the chunk when it is a whole unit. */
static int unpack_extent(const struct convert_chunk_ctx *ctx, const struct convert_packed_extent *p,
                         uint64_t offset)
{
    const struct img_extent *ext = &p->ext;
    uint64_t at = offset + p->pos;
    bool whole = at == ext->unit_start && ext->length == ext->unit_size;
    uint8_t *unit = whole ? ctx->buf + p->pos : malloc(ext->unit_size);
    if (!unit)
        return img_error(-ENOMEM, "out of memory");
    int ret = codec_decompress((enum img_codec)ext->codec, ctx->packed_in + p->in_off,
                               (size_t)ext->comp_length, unit, ext->unit_size);
    if (ret < 0)
        img_error(ret, "compressed data at host offset 0x%" PRIx64 " %s (%s)", ext->host_offset,
                  codec_failure((enum img_codec)ext->codec, ret),
                  codec_name((enum img_codec)ext->codec));
    else if (!whole)
        memcpy(ctx->buf + p->pos, unit + (at - ext->unit_start), ext->length);
    if (!whole)
        free(unit);
    return ret;
}

int convert_map_source(const struct convert_job *job, uint64_t offset, uint64_t length,
                       struct img_extent *ext, int *depth)
{
    int ret = img_map_chain(job->src, offset, length, ext, depth);
    if (ret == 0 && (ext->length == 0 || ext->length > length))
        ret = img_error(-EIO, "convert: the source mapped an invalid extent at %" PRIu64, offset);
    return ret;
}

/* --salvage: the whole chunk read again sector by sector, then treated as data read. */
static int salvage_chunk(const struct convert_job *job, struct convert_chunk_ctx *ctx,
                         uint64_t offset, uint64_t length)
{
    ctx->nreqs = 0;
    ctx->nzeros = 0;
    ctx->npacked_exts = 0;
    ctx->nbacking_runs = 0;
    return convert_salvage_read(job, ctx->buf, offset, length);
}

static int read_chunk(const struct convert_job *job, struct convert_chunk_ctx *ctx, uint64_t offset,
                      uint64_t length)
{
    ctx->nzeros = 0;
    ctx->nbacking_runs = 0;
    ctx->npacked_exts = 0;
    ctx->nreqs = 0;
    ctx->packed_in_used = 0;
    ctx->packed_in_req = 0;
    for (uint64_t pos = 0; pos < length;) {
        struct img_extent ext;
        int depth;
        int ret = convert_map_source(job, offset + pos, length - pos, &ext, &depth);
        if (ret < 0)
            return ret;
        /*
         * Left to the source's backing chain: not written (-B). It is still read, as a unit
         * shared with the top layer's data is written whole, with the guest's content.
         */
        if (job->top_only && depth > 0) {
            ret = note_run(&ctx->backing_runs, &ctx->nbacking_runs, &ctx->backing_runs_cap, pos,
                           pos + ext.length);
            if (ret < 0)
                return ret;
        }
        switch (ext.kind) {
        case EXTENT_ZERO:
        case EXTENT_UNALLOCATED:
            ret = note_zero_run(ctx, pos, pos + ext.length);
            break;
        case EXTENT_DATA:
            ret = add_req(ctx, IO_OP_READ, ext.file, ctx->buf + pos, ext.length, ext.host_offset,
                          NULL);
            break;
        case EXTENT_COMPRESSED:
            ret = note_packed_extent(ctx, pos, offset, &ext);
            break;
        default:
            ret = img_error(-EIO, "convert: unknown extent kind %d", (int)ext.kind);
        }
        if (ret < 0) {
            ctx->nreqs = 0;
            return ret;
        }
        pos += ext.length;
    }
    return run_requests(job, ctx);
}

int convert_chunk_read(const struct convert_job *job, struct convert_chunk_ctx *ctx,
                       uint64_t offset, uint64_t length)
{
    ctx->copied = false;
    if (job->copy_range && !job->compress_unit) {
        convert_order_wait(job, offset);
        int copied = convert_chunk_copy_range(job, ctx, offset, length);
        ctx->copied = copied == 0;
        convert_order_done(job, offset);
        return copied;
    }
    int ret = read_chunk(job, ctx, offset, length);
    if (ret < 0 && convert_salvageable(ret) && job->salvage)
        ret = salvage_chunk(job, ctx, offset, length);
    /* A chunk that fails here never allocates: the chunks after it need not wait for it. */
    if (ret < 0)
        convert_order_done(job, offset);
    return ret;
}

/*
 * Fills what was not read: compressed extents are decompressed, and ranges that read as
 * zeros are cleared in the buffer only where they share a `unit` with data (whole zero units
 * are never looked at again); with `unit` 0 they are cleared whole.
 */
static int fill_unread(const struct convert_chunk_ctx *ctx, uint64_t offset, uint64_t unit)
{
    for (size_t i = 0; i < ctx->nzeros; i++) {
        uint64_t pos = ctx->zeros[i].start, end = ctx->zeros[i].end;
        if (unit == 0) {
            memset(ctx->buf + pos, 0, end - pos);
        } else {
            uint64_t head = min_u64(end, align_up_u64(pos, unit));
            uint64_t tail = max_u64(head, end & ~(unit - 1));
            memset(ctx->buf + pos, 0, head - pos);
            memset(ctx->buf + tail, 0, end - tail);
        }
    }
    for (size_t i = 0; i < ctx->npacked_exts; i++) {
        const struct convert_packed_extent *p = &ctx->packed_exts[i];
        int ret = p->in_off != UINT64_MAX
                      ? unpack_extent(ctx, p, offset)
                      : img_read_extent(&p->ext, ctx->buf + p->pos, offset + p->pos);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* Is [start, end) inside one of the sorted `runs`? `cursor` walks them. */
static bool runs_cover(const struct convert_zero_run *runs, size_t n, size_t *cursor,
                       uint64_t start, uint64_t end)
{
    while (*cursor < n && runs[*cursor].end <= start)
        (*cursor)++;
    return *cursor < n && runs[*cursor].start <= start && end <= runs[*cursor].end;
}

/* Does the source report [start, end) of the chunk as zeros? `cursor` walks the runs. */
static bool source_says_zero(const struct convert_chunk_ctx *ctx, size_t *cursor, uint64_t start,
                             uint64_t end)
{
    return runs_cover(ctx->zeros, ctx->nzeros, cursor, start, end);
}

/*
 * Writes guest bytes [offset, offset + len) of the target: allocates them and lists their
 * writes. No buffer: zeros (the target has a backing file that must not show through).
 */
static int write_run(const struct convert_job *job, struct convert_chunk_ctx *ctx,
                     const uint8_t *buf, uint64_t len, uint64_t offset)
{
    struct img *dst = job->img_dst;
    offset += job->dst_base; /* from the source's offsets to the target's */
    int limited = convert_limit_account(job->limit, len);
    if (limited < 0)
        return limited;
    if (!buf) {
        /* Zeroing a cluster waits for its allocations in flight: the listed ones go first. */
        int ret = run_requests(job, ctx);
        /* As qemu-img opens its target with unmap when sparse (-S not 0). */
        return ret < 0 ? ret : img_zero(dst, offset, len, job->zero_block ? IMG_ZERO_MAY_UNMAP : 0);
    }
    if (!dst->fmt->alloc)
        return img_error(-ENOTSUP, "%s: format %s does not support writing", dst->filename,
                         dst->fmt->name);
    uint64_t cluster = dst->cluster_size;
    while (len) {
        /*
         * A backend lets one allocation of a cluster be in progress at a time, and an
         * allocation waits for the one before it: runs of this chunk meeting in a cluster
         * (sub-cluster units) are written and linked one after the other, not by a thread
         * waiting for itself. Chunks share no cluster. A backend whose allocations wait for
         * any in progress gets one at a time.
         */
        bool parallel = format_has(dst->fmt, FORMAT_PARALLEL_ALLOCS);
        if (ctx->tokens_listed &&
            (!parallel || cluster == 0 || offset / cluster <= ctx->token_last_cluster)) {
            int ret = run_requests(job, ctx);
            if (ret < 0)
                return ret;
        }
        struct img_extent ext = {0};
        struct img_alloc *token = NULL;
        int ret = dst->fmt->alloc(dst, offset, len, &ext, &token);
        if (ret < 0)
            return ret;
        if (ext.kind != EXTENT_DATA || ext.length == 0 || ext.length > len) {
            if (token && dst->fmt->alloc_commit)
                dst->fmt->alloc_commit(dst, token, -EIO);
            return img_error(-EIO, "%s: backend returned an invalid allocation at %" PRIu64,
                             dst->filename, offset);
        }
        ret = add_req(ctx, IO_OP_WRITE, ext.file, (void *)buf, ext.length, ext.host_offset, token);
        if (ret < 0) {
            if (token && dst->fmt->alloc_commit)
                dst->fmt->alloc_commit(dst, token, ret);
            return ret;
        }
        if (token) {
            ctx->tokens_listed = true;
            ctx->token_last_cluster = cluster ? (offset + ext.length - 1) / cluster : 0;
        }
        buf += ext.length;
        offset += ext.length;
        len -= ext.length;
    }
    return 0;
}

/* What becomes of one piece of the chunk. */
enum piece_fate { PIECE_SKIP, PIECE_ZERO, PIECE_DATA };

/* Consecutive pieces of the same fate go out as one request. */
struct piece_runs {
    const struct convert_job *job;
    struct convert_chunk_ctx *ctx;
    const uint8_t *buf;
    uint64_t offset; /* guest offset of the chunk */
    enum piece_fate fate;
    uint64_t start, len;
};

static int runs_flush(struct piece_runs *r)
{
    int ret = 0;
    if (r->len && r->fate != PIECE_SKIP)
        ret = write_run(r->job, r->ctx, r->fate == PIECE_DATA ? r->buf + r->start : NULL, r->len,
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
    /* At most one per unit of a chunk: bounded. */
    int ret = ARRAY_RESERVE(ctx->units, ctx->units_cap, ctx->nunits + 1);
    if (ret < 0)
        return ret;
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
    size_t cursor = 0, backing_cursor = 0;
    uint64_t used = 0;
    for (uint64_t pos = 0; pos < length; pos += unit) {
        struct convert_unit u = {.pos = pos, .len = min_u64(unit, length - pos)};
        if (runs_cover(ctx->backing_runs, ctx->nbacking_runs, &backing_cursor, pos, pos + u.len)) {
            continue; /* the target's backing file shows there (-B) */
        } else if (source_says_zero(ctx, &cursor, pos, pos + u.len)) {
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
    struct piece_runs zeros = {.job = job, .ctx = ctx, .offset = offset};
    uint64_t target_offset = offset + job->dst_base;
    for (size_t i = 0; i < ctx->nunits; i++) {
        const struct convert_unit *u = &ctx->units[i];
        int ret = convert_limit_account(job->limit, u->zero ? 0 : u->len);
        if (ret < 0)
            return ret;
        if (u->zero) {
            ret = runs_add(&zeros, PIECE_ZERO, u->pos, u->len);
        } else {
            ret = runs_flush(&zeros);
            if (ret == 0 && u->stream_len)
                ret = dst->fmt->write_compressed_data(
                    dst, target_offset + u->pos, ctx->packed + u->packed_off, u->stream_len, false);
            else if (ret == 0)
                ret = dst->fmt->write_compressed_data(dst, target_offset + u->pos,
                                                      ctx->buf + u->pos, u->len, true);
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
/*
 * The piece starting at source offset `at`, at most `left` bytes: up to the end of the
 * target's unit holding it (a source concatenated after others may begin inside one).
 */
static uint64_t piece_len(const struct convert_job *job, uint64_t at, uint64_t left)
{
    return min_u64(job->unit - (at + job->dst_base) % job->unit, left);
}

static int add_granule(const struct convert_job *job, struct convert_chunk_ctx *ctx, size_t *cursor,
                       size_t *backing_cursor, struct piece_runs *runs, uint64_t start,
                       uint64_t end)
{
    enum piece_fate source_zero = job->zeros_explicit ? PIECE_ZERO : PIECE_SKIP;
    size_t probe = *cursor, backing_probe = *backing_cursor;
    bool all_zero = true;
    for (uint64_t pos = start, n = 0; all_zero && pos < end; pos += n) {
        n = piece_len(job, runs->offset + pos, end - pos);
        all_zero =
            runs_cover(ctx->backing_runs, ctx->nbacking_runs, &backing_probe, pos, pos + n) ||
            source_says_zero(ctx, &probe, pos, pos + n) || buffer_is_zero(ctx->buf + pos, n);
    }
    for (uint64_t pos = start, n = 0; pos < end; pos += n) {
        n = piece_len(job, runs->offset + pos, end - pos);
        enum piece_fate fate;
        if (runs_cover(ctx->backing_runs, ctx->nbacking_runs, backing_cursor, pos, pos + n))
            fate = PIECE_SKIP; /* the target's backing file shows there */
        else if (source_says_zero(ctx, cursor, pos, pos + n))
            /* Past the end of the target's backing file, its unallocated ranges read zeros. */
            fate =
                job->top_only && runs->offset + pos >= job->backing_end ? PIECE_SKIP : source_zero;
        else
            fate = all_zero ? source_zero : PIECE_DATA;
        int ret = runs_add(runs, fate, pos, n);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int compute_chunk(const struct convert_job *job, struct convert_chunk_ctx *ctx,
                         uint64_t offset, uint64_t length)
{
    /* -S 0: every byte is written, the source's zeros included (a fully allocated target). */
    bool write_all = !job->compress_unit && job->zero_block == 0;
    uint64_t unit = write_all ? 0 : job->compress_unit ? job->compress_unit : job->unit;
    int ret = fill_unread(ctx, offset, unit);
    if (ret < 0 && convert_salvageable(ret) && job->salvage)
        ret = salvage_chunk(job, ctx, offset, length);
    if (ret < 0)
        return ret;
    /* The reads are done: the list now receives the writes. */
    ctx->nreqs = 0;
    if (job->compress_unit)
        return compress_units(job, ctx, length);
    convert_order_wait(job, offset);
    if (write_all) {
        /* Every byte but what is left to the target's backing file (-B). */
        uint64_t pos = 0;
        for (size_t i = 0; ret == 0 && i <= ctx->nbacking_runs; i++) {
            uint64_t gap_end = i < ctx->nbacking_runs ? ctx->backing_runs[i].start : length;
            if (gap_end > pos)
                ret = write_run(job, ctx, ctx->buf + pos, gap_end - pos, offset + pos);
            if (i < ctx->nbacking_runs)
                pos = ctx->backing_runs[i].end;
        }
    } else {
        struct piece_runs runs = {.job = job, .ctx = ctx, .buf = ctx->buf, .offset = offset};
        size_t cursor = 0, backing_cursor = 0;
        for (uint64_t pos = 0; ret == 0 && pos < length; pos += job->zero_block)
            ret = add_granule(job, ctx, &cursor, &backing_cursor, &runs, pos,
                              min_u64(pos + job->zero_block, length));
        if (ret == 0)
            ret = runs_flush(&runs);
    }
    if (ret < 0) {
        /* Nothing listed is written: the allocations waiting for their data are abandoned. */
        for (size_t i = 0; i < ctx->nreqs; i++)
            commit_token(job, &ctx->reqs[i], ret);
        ctx->nreqs = 0;
        ctx->tokens_listed = false;
        return ret;
    }
    /* Every allocation of the chunk is made (its writes may still be in flight). */
    convert_order_done(job, offset);
    return run_requests(job, ctx);
}

int convert_chunk_compute(const struct convert_job *job, struct convert_chunk_ctx *ctx,
                          uint64_t offset, uint64_t length)
{
    if (ctx->copied)
        return 0;
    int ret = compute_chunk(job, ctx, offset, length);
    /* Done once, on every path (a second call finds nothing to remove). */
    convert_order_done(job, offset);
    return ret;
}
