/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_QCOW2_WRITER_H
#define IMG_QCOW2_WRITER_H

/*
 * The write side's private state, shared by the qcow2_*write*.c files. Everything here is
 * guarded by s->lock (the qcow2 state's lock) unless a comment says otherwise.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/qcow2/qcow2.h"

struct img;
struct qcow2_cache_entry;
struct qcow2_overlap;

/* A guest range whose allocation is in progress: [first, end) in guest clusters. */
struct qcow2_inflight {
    uint64_t first, end;
    struct qcow2_inflight *next;
};

/* An L2 slice changed in memory and not yet written; the cache entry stays pinned. */
struct qcow2_dirty_slice {
    struct qcow2_cache_entry *entry;
    uint64_t offset; /* host offset of the slice */
    uint8_t *data;   /* the cached bytes */
    uint32_t lo, hi; /* changed bytes [lo, hi) within the slice */
};

/* A refcount decrease waiting for the metadata that dropped the reference to reach the disk. */
struct qcow2_pending_free {
    uint64_t offset, length;
};

struct qcow2_writer {
    struct img *img;
    pthread_cond_t inflight_done;
    struct qcow2_inflight *inflight;

    /* No cluster below this index is free (a search starts here). */
    uint64_t free_cluster_index;
    /* Clusters at or past this index are neither in the file nor allocated. */
    uint64_t end_cluster;
    /* Compressed clusters are packed from here (byte offset, 0 when no cluster is open). */
    uint64_t free_byte_offset;

    struct qcow2_dirty_slice *dirty;
    size_t nb_dirty, cap_dirty, max_dirty;

    bool l1_dirty;
    uint32_t l1_dirty_lo, l1_dirty_hi; /* entries [lo, hi) */

    /* Refcount table entries set in memory (new blocks) and not yet written. */
    bool reftable_dirty;
    uint64_t reftable_dirty_lo, reftable_dirty_hi;

    struct qcow2_pending_free *frees;
    size_t nb_frees, cap_frees;

    /* Data or refcounts written since the last fsync. */
    bool unsynced;

    /* The dirty bit was set by this session (lazy refcounts) and is cleared on close. */
    bool set_dirty_bit;
    /* Enabled persistent bitmaps were marked in use and track the writes (qcow2_bitmap_track.c). */
    bool bitmaps_in_use;

    /* Replaced in-memory tables, freed at close: map() may still read them without the lock. */
    void **retired;
    size_t nb_retired, cap_retired;

    /* Where the metadata lies, for the overlap check (qcow2_overlap.c); built on first use. */
    struct qcow2_overlap *overlap;
    /*
     * A write would have overwritten metadata: the image is corrupt and this handle changes
     * nothing more. Set under s->lock, read with atomic loads by entries that do not take it.
     */
    bool corrupt;
};

/* Guest clusters [first, first + count) overlap an allocation in progress. */
bool qcow2_inflight_overlaps(const struct qcow2_writer *w, uint64_t first, uint64_t count);
/* Waits (dropping s->lock) until no allocation in progress overlaps the range. */
void qcow2_inflight_wait(struct qcow2_state *s, uint64_t first, uint64_t count);
/* Records an allocation in progress; -ENOMEM. */
int qcow2_inflight_add(struct qcow2_state *s, struct qcow2_inflight *node, uint64_t first,
                       uint64_t count);
void qcow2_inflight_remove(struct qcow2_state *s, struct qcow2_inflight *node);

/*
 * Replacing a table that map() reads without the lock is two steps, so that the swap cannot
 * fail half-way: qcow2_retire_reserve() makes room for the old table (-ENOMEM, changing
 * nothing) before anything is changed, and qcow2_retire_commit() then keeps it until close.
 * Each commit uses one earlier reservation; a reservation not used is simply kept for later.
 * A reservation is room, not a count: an operation that replaces several tables reserves them
 * all at once with qcow2_retire_reserve_many() (room for `count` more), as reserving one at a
 * time would only ever guarantee room for one.
 */
int qcow2_retire_reserve(struct qcow2_writer *w);
int qcow2_retire_reserve_many(struct qcow2_writer *w, size_t count);
void qcow2_retire_commit(struct qcow2_writer *w, void *ptr);

/*
 * Called before the first change of guest-visible content or metadata in a session: sets the
 * dirty bit with lazy refcounts and marks persistent bitmaps in use.
 */
int qcow2_writer_begin_change(struct qcow2_state *s);

/*
 * 0 while the handle may change the image; -EIO (with a message) once it was found corrupt.
 * Every entry that changes the image asks first.
 */
int qcow2_writer_usable(const struct qcow2_state *s);

/*
 * Marks the image corrupt (the header's corrupt bit, where the version has one) and makes the
 * handle refuse every further change, as QEMU does. Returns -EIO with a message that starts
 * with the reason given.
 */
int qcow2_writer_mark_corrupt(struct qcow2_state *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * The metadata overlap check (qcow2_overlap.c), with s->lock held. Before host bytes
 * [offset, offset + length) of the image file receive guest data or a new table: 0 when they
 * hold no metadata, else the image is marked corrupt and -EIO names the structure.
 */
int qcow2_overlap_check(struct qcow2_state *s, uint64_t offset, uint64_t length);

/* The structures the overlap check knows (QEMU's "cached" set). */
enum qcow2_metadata {
    QCOW2_META_HEADER,
    QCOW2_META_ACTIVE_L1,
    QCOW2_META_ACTIVE_L2,
    QCOW2_META_REFCOUNT_TABLE,
    QCOW2_META_REFCOUNT_BLOCK,
    QCOW2_META_SNAPSHOT_TABLE,
    QCOW2_META_INACTIVE_L1,
    QCOW2_META_BITMAP_DIRECTORY,
};

/*
 * The same before metadata of kind `own` is rewritten in place at [offset, offset + length):
 * it may overlap only its own kind. (A damaged image may place an L2 table on the refcount
 * table, say: writing the one back would destroy the other.)
 */
int qcow2_overlap_check_rewrite(struct qcow2_state *s, enum qcow2_metadata own, uint64_t offset,
                                uint64_t length);
/*
 * Before writing into an existing structure (an L2 table, a refcount block, a data cluster an
 * L2 entry names): everything allocated lies within the file, so a damaged entry pointing past
 * its end would only grow the file to wherever it points. Marks the image corrupt then (-EIO).
 */
int qcow2_overlap_check_within_file(struct qcow2_state *s, const char *what, uint64_t offset,
                                    uint64_t length);
/* An L2 table (or a refcount block) at `offset` was linked into the active L1 (refcount) table. */
void qcow2_overlap_link(struct qcow2_state *s, bool refcount_block, uint64_t offset);
/* The active L1 table stopped naming the L2 table at `offset`. */
void qcow2_overlap_unlink_l2(struct qcow2_state *s, uint64_t offset);
/* Tables were replaced or rewritten wholesale: the index is made again on the next check. */
void qcow2_overlap_invalidate(struct qcow2_state *s);
void qcow2_overlap_free(struct qcow2_overlap *o);

/* Flushes the held metadata when it has grown past its bound. */
int qcow2_writer_maybe_flush(struct qcow2_state *s);

/* Allocation for compressed clusters: `size` bytes packed into host clusters, refcounted. */
int qcow2_alloc_bytes(struct qcow2_state *s, uint64_t size, uint64_t *host_offset);

/*
 * Writes a new refcount table, and the refcount blocks it lacks, at host cluster `start` (past
 * everything in use), large enough to count everything up to `start + additional` clusters
 * (with room to grow unless `exact`) plus itself, then switches the header to it (QEMU's
 * refcount area). `new_block`, when not 0, is a block (host cluster index) already written for
 * table index `new_index`. *area_end (may be NULL) receives the cluster just past the area.
 */
int qcow2_refcount_area(struct qcow2_state *s, uint64_t start, uint64_t additional, bool exact,
                        uint64_t new_index, uint64_t new_block, uint64_t *area_end);

/* The refcount block for table index `index` exists (allocating and linking it in memory). */
int qcow2_refcount_block_ensure(struct qcow2_state *s, uint64_t index, bool *allocated);

/* Writes `len` zero bytes at `offset` of `file` (unmapping where possible). */
int qcow2_write_zero_bytes(struct io_file *file, uint64_t offset, uint64_t len);

/*
 * Writes guest range [offset, offset + len) through qcow2_alloc()/qcow2_alloc_commit(), as an
 * ordinary write would: from `buf`, or zeros when `buf` is NULL.
 */
int qcow2_write_through(struct img *img, uint64_t offset, const uint8_t *buf, uint64_t len);

/* True when the image keeps its data in an external data file. */
static inline bool qcow2_has_data_file(const struct qcow2_state *s)
{
    return (s->hdr.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) != 0;
}

/* The file guest data clusters live in. */
static inline struct io_file *qcow2_data_io(const struct qcow2_state *s)
{
    return s->data_file ? s->data_file : s->file;
}

/* Preallocates guest range [start, end) (create and resize): metadata, falloc or full. */
enum qcow2_prealloc {
    QCOW2_PREALLOC_OFF,
    QCOW2_PREALLOC_METADATA,
    QCOW2_PREALLOC_FALLOC,
    QCOW2_PREALLOC_FULL,
};
int qcow2_parse_prealloc(const char *text, enum qcow2_prealloc *out);
int qcow2_preallocate(struct img *img, uint64_t start, uint64_t end, enum qcow2_prealloc mode);

/* Grows the active L1 table to at least `entries` entries (new table, header switch). */
int qcow2_l1_grow(struct qcow2_state *s, uint64_t entries, bool exact);

#endif
