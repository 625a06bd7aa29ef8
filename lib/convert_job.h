/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_CONVERT_JOB_H
#define IMG_CONVERT_JOB_H

/*
 * Between the parts of img_convert: convert.c sets up the job and the target; convert_pool.c
 * runs the copy as an event loop on the calling thread, keeping the reads and writes of
 * several chunks in flight through an io_queue and handing their CPU work to the process-wide
 * workpool; convert_chunk.c says what one chunk needs (its reads, its zeros, its writes).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "imgutil.h"
#include "io/io.h"

/* Chunks are aligned to this (a multiple of every cluster size, so chunks share no cluster). */
#define CONVERT_CHUNK_SIZE (2u << 20)

struct convert_job {
    struct img *src;
    img_progress_fn progress;
    void *user;
    uint64_t sparse_size; /* 0: write every byte */
    bool compress;
    bool sync;     /* flush the target before renaming it into place */
    uint64_t done; /* guest bytes finished, for progress */

    /* The target, an image of any format opened for writing. */
    struct img *img_dst;
    /*
     * What is left out, as qemu-img convert does it. Ranges the source reports as zeros are
     * never written, in pieces of `unit` bytes (the target's allocation unit: a sector of a
     * raw file, a (sub)cluster of an image). Among data read, an aligned granule of
     * zero_block bytes (-S; at least `unit`) that is all zeros is left out too; other pieces
     * holding data are written whole. zero_block 0 writes every byte. compress_unit is the
     * target's cluster when compressing: each non-zero unit is written compressed.
     */
    uint64_t unit;
    uint64_t zero_block;
    uint64_t compress_unit;
    /* The target has a backing file: the source's zeros are written as zeros, not left out. */
    bool zeros_explicit;
};

/* One chunk's buffers and the requests it needs; one per chunk in flight. */
struct convert_chunk_ctx {
    uint8_t *buf; /* CONVERT_CHUNK_SIZE bytes */
    /* Ranges of the current chunk known to read as zeros, relative to its start, sorted. */
    struct convert_zero_run {
        uint64_t start, end;
    } * zeros;
    size_t nzeros, zeros_cap;
    /*
     * Compressed extents of the source. Their streams are read through the queue into
     * `packed_in` (CONVERT_CHUNK_SIZE bytes, allocated on first use) and decompressed by the
     * worker; those that do not fit (in_off UINT64_MAX) the worker reads itself.
     */
    struct convert_packed_extent {
        uint64_t pos; /* relative to the chunk */
        uint64_t in_off;
        struct img_extent ext;
    } * packed_exts;
    size_t npacked_exts, packed_exts_cap;
    uint8_t *packed_in;
    size_t packed_in_used;
    size_t packed_in_req; /* index + 1 in reqs of the last stream read, 0: none */
    /*
     * Host requests for the event loop to submit: first the reads of the source's DATA
     * extents (convert_chunk_plan), then the writes of the target (convert_chunk_compute).
     * The caller fills in `done` and `user`.
     */
    struct io_req *reqs;
    size_t nreqs, reqs_cap;
    /*
     * Compressing in guest order: convert_chunk_compute() compresses the chunk's units into
     * `packed` (CONVERT_CHUNK_SIZE bytes, allocated on first use; each stream is shorter than
     * its unit, so they always fit) and lists what each unit becomes; convert_chunk_commit()
     * writes them.
     */
    uint8_t *packed;
    struct convert_unit {
        uint64_t pos, len;   /* the unit, relative to the chunk */
        uint64_t packed_off; /* its stream in `packed` */
        uint64_t stream_len; /* 0: written as zeros, or stored uncompressed (below) */
        bool zero;
    } * units;
    size_t nunits, units_cap;
};

int convert_chunk_ctx_init(struct convert_chunk_ctx *ctx);
void convert_chunk_ctx_fini(struct convert_chunk_ctx *ctx);

/*
 * The event loop's half of reading guest bytes [offset, offset + length): maps the source,
 * notes the ranges that read as zeros and the compressed extents, and lists in ctx->reqs a
 * read for each DATA extent. Touches the source's metadata only (any one thread).
 */
int convert_chunk_plan(const struct convert_job *job, struct convert_chunk_ctx *ctx,
                       uint64_t offset, uint64_t length);

/*
 * The worker's half, once the reads are in: clears and decompresses what was not read, finds
 * the zero blocks, and then either compresses the units (when compressing; written later by
 * convert_chunk_commit()) or allocates the target's ranges and lists in ctx->reqs the writes
 * whose place in the file is known. Ranges whose allocation must be completed after the data
 * is written (a backend's alloc token), and zeros written over a backing file, are written
 * here, on the worker.
 */
int convert_chunk_compute(const struct convert_job *job, struct convert_chunk_ctx *ctx,
                          uint64_t offset, uint64_t length);

/*
 * When the job compresses, convert_chunk_commit() writes the chunk computed before, called
 * for one chunk after another in guest order, so that the compressed clusters are laid out in
 * the file the same way on every run, as qemu-img lays them out.
 */
int convert_chunk_commit(const struct convert_job *job, struct convert_chunk_ctx *ctx,
                         uint64_t offset);

/* Copies the whole source, reporting progress on the calling thread. */
int convert_copy(struct convert_job *job);

#endif
