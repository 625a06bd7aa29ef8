/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_CONVERT_JOB_H
#define IMG_CONVERT_JOB_H

/*
 * Between the parts of img_convert: convert.c sets up the job and the target; convert_pool.c
 * hands the chunks out, one process-wide workpool item per chunk, and reports progress on the
 * calling thread; convert_chunk.c does what one chunk needs (its reads, its zeros, its
 * writes), keeping each step's requests in flight together through the chunk's io_queue.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "imgutil.h"
#include "io/io.h"

struct convert_limit;
struct convert_chunk_ctx;

/* Chunks are aligned to this (a multiple of every cluster size, so chunks share no cluster). */
#define CONVERT_CHUNK_SIZE (2u << 20)

struct convert_job {
    /* The sources, concatenated; `src` is the one being copied, to target offset dst_base. */
    struct img **srcs;
    size_t nsrcs;
    struct img *src;
    uint64_t dst_base;
    uint64_t total; /* the sources' sizes together */
    img_progress_fn progress;
    void *user;
    /* The caller's callback, which `progress` calls once it has looked for img_cancel(). */
    img_progress_fn caller_progress;
    void *caller_user;
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
    /*
     * The target was given a backing file (-B): as qemu-img does, what the source's top layer
     * leaves to its own backing chain is left unallocated in the target (it shows the target's
     * backing file there), and ranges the source reports as zeros past the end of the target's
     * backing file (backing_end bytes) are left out as well.
     */
    bool top_only;
    uint64_t backing_end;
    /* Throttling (-r) and img_cancel(): convert_limit.c. */
    struct convert_limit *limit;
    bool out_of_order;   /* -W: allocations need not follow guest order */
    uint64_t max_chunks; /* -m: chunks copied at once; 0: sized to the CPUs */
    bool copy_range;     /* -C: data copied in the kernel (convert_copy_range.c) */
    /* --salvage: read errors become zeros, with a warning each (convert_salvage.c). */
    bool salvage;
    int salvage_log_fd; /* -1: no warnings */
    const char *salvage_log_prefix;
    /* Allocations in guest order (no -W), or NULL: convert_order.c. */
    struct convert_order *order;
    /*
     * The target was created by this convert (not -n, not a device): its data writes land in
     * unallocated space, which the I/O layer may allocate first (io_req.into_hole).
     */
    bool new_target;
};

/*
 * Maps guest bytes [offset, offset + length) of the source through its chain (img_map_chain),
 * refusing an extent that is empty or longer than asked (-EIO).
 */
int convert_map_source(const struct convert_job *job, uint64_t offset, uint64_t length,
                       struct img_extent *ext, int *depth);

/*
 * -C: copies the chunk [offset, offset + length) whole (its DATA through copy_file_range),
 * instead of convert_chunk_read() and convert_chunk_compute() reading and writing it.
 */
int convert_chunk_copy_range(const struct convert_job *job, struct convert_chunk_ctx *ctx,
                             uint64_t offset, uint64_t length);

/*
 * Whether a failed read of the source is one that --salvage turns into zeros: a failure of the
 * data, not a cancellation, a lack of memory, or a decoder that cannot be loaded (-ENOPKG),
 * which would otherwise make every compressed cluster silently zeros.
 */
bool convert_salvageable(int err);

/*
 * Reads guest bytes [offset, offset + length) of the source into `buf` sector by sector;
 * sectors that fail read as zeros, each with a warning. 0, or a failure convert_salvageable()
 * refuses.
 */
int convert_salvage_read(const struct convert_job *job, uint8_t *buf, uint64_t offset,
                         uint64_t length);

struct convert_order;

int convert_order_new(struct convert_order **out);
void convert_order_free(struct convert_order *order);

/*
 * On the calling thread, as each chunk is handed out (before its work is submitted): the
 * chunk at `offset` will allocate after those handed out before it.
 */
int convert_order_register(const struct convert_job *job, uint64_t offset);

/* In the chunk's work: waits until the chunks handed out before it have allocated. */
void convert_order_wait(const struct convert_job *job, uint64_t offset);

/* The chunk has made all its allocations (or failed, or will make none): later ones go on. */
void convert_order_done(const struct convert_job *job, uint64_t offset);

/*
 * A running convert's limits, shared by its workers: the rate (bytes/s of writes to the
 * target, 0: none) and img_cancel() on the source handle since the convert began.
 */
struct convert_limit;

int convert_limit_new(struct convert_limit **out, struct img *src, uint64_t rate);
void convert_limit_free(struct convert_limit *limit);

/* -ECANCELED (with a message) once img_cancel() was called on the source during the convert. */
int convert_limit_check_cancel(const struct convert_limit *limit);

/*
 * Accounts `bytes` about to be written to the target and, with a rate, waits until the
 * convert's writes so far fit the rate. Returns 0, or -ECANCELED when cancelled meanwhile.
 */
int convert_limit_account(struct convert_limit *limit, uint64_t bytes);

/* A host request of a chunk, and the allocation its write completes (NULL: none). */
struct convert_req {
    struct io_req io;
    struct img_alloc *token;
};

/* One chunk's buffers and the requests it needs; one per chunk in flight. */
struct convert_chunk_ctx {
    /* The chunk's requests go through this queue, from one thread at a time. */
    struct io_queue *queue;
    uint8_t *buf; /* CONVERT_CHUNK_SIZE bytes */
    /* Ranges of the current chunk known to read as zeros, relative to its start, sorted. */
    struct convert_zero_run {
        uint64_t start, end;
    } * zeros;
    size_t nzeros, zeros_cap;
    /* top_only: ranges the source's top layer leaves to its backing chain, sorted. */
    bool copied; /* -C: the chunk was copied whole by convert_chunk_read() */
    struct convert_zero_run *backing_runs;
    size_t nbacking_runs, backing_runs_cap;
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
     * Host requests listed and not yet submitted: first the reads of the source's DATA
     * extents (convert_chunk_plan), then the writes of the target (convert_chunk_compute).
     * The list only grows while none of it is in flight.
     */
    struct convert_req *reqs;
    size_t nreqs, reqs_cap;
    /*
     * Writes whose allocation is not linked yet (a token) hold their first and last target
     * cluster: a later allocation of the same chunk touching that cluster would wait for it,
     * so the listed requests are written and linked first.
     */
    bool tokens_listed;
    uint64_t token_last_cluster;
    /* For the completions: the job, the first failure of a request and its message. */
    const struct convert_job *job;
    int io_result;
    char io_message[256];
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
 * Reads guest bytes [offset, offset + length) of the source: maps it, notes the ranges that
 * read as zeros and the compressed extents, and reads every DATA extent (and the compressed
 * streams that fit) with all the reads in flight at once. Touches the source's metadata only.
 */
int convert_chunk_read(const struct convert_job *job, struct convert_chunk_ctx *ctx,
                       uint64_t offset, uint64_t length);

/*
 * Then: clears and decompresses what was not read, finds the zero blocks, and either
 * compresses the units (when compressing; written later by convert_chunk_commit()) or
 * allocates the target's ranges and writes them, the writes in flight together. A write that
 * allocates (a backend's alloc token) is linked by alloc_commit() once it has completed, as
 * the synchronous path orders it: data, then the metadata that points at it.
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
