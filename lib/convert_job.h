/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_CONVERT_JOB_H
#define IMG_CONVERT_JOB_H

/*
 * Between the parts of img_convert: convert.c sets up the job and the target, convert_pool.c
 * cuts the guest range into chunks and runs them on worker threads, convert_chunk.c copies
 * one chunk.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "imgutil.h"

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

    /* Exactly one target: a raw file written directly, or an image through its format. */
    struct io_file *raw_dst;
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

/* A worker's private buffers for copying chunks. */
struct convert_chunk_ctx {
    uint8_t *buf; /* CONVERT_CHUNK_SIZE bytes */
    /* Ranges of the current chunk known to read as zeros, relative to its start, sorted. */
    struct convert_zero_run {
        uint64_t start, end;
    } * zeros;
    size_t nzeros, zeros_cap;
    /*
     * Compressing in guest order: convert_chunk() compresses the chunk's units into `packed`
     * (CONVERT_CHUNK_SIZE bytes, allocated on first use; each stream is shorter than its
     * unit, so they always fit) and lists what each unit becomes; convert_chunk_commit()
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

/* Copies guest bytes [offset, offset + length) of the source to the target (any thread). */
int convert_chunk(const struct convert_job *job, struct convert_chunk_ctx *ctx, uint64_t offset,
                  uint64_t length);

/*
 * When the job compresses, convert_chunk() only reads and compresses (in parallel), and
 * convert_chunk_commit() writes the chunk, called for one chunk after another in guest order,
 * so that the compressed clusters are laid out in the file the same way on every run, as
 * qemu-img lays them out.
 */
int convert_chunk_commit(const struct convert_job *job, struct convert_chunk_ctx *ctx,
                         uint64_t offset);

/* Copies the whole source, reporting progress on the calling thread. */
int convert_copy(struct convert_job *job);

#endif
