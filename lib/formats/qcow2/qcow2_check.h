/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_QCOW2_CHECK_H
#define IMG_QCOW2_CHECK_H

/*
 * The qcow2 consistency check, judged as QEMU's qcow2_check_refcounts judges it, so that the
 * figures match `qemu-img check --output=json` on the same image.
 *
 *   qcow2_check.c         the driver: counting, comparing, repairing in QEMU's order, re-checking
 *   qcow2_check_walk.c    counting every reference into an in-memory refcount array
 *   qcow2_check_repair.c  writing repairs: refcount entries, L1/L2 entries, the dirty bit
 *   qcow2_check_rebuild.c a new refcount structure when the old one cannot be repaired
 *
 * The check reads metadata straight from the file, bypassing the slice caches (whose slices it
 * drops after repairing). It takes s->lock for its whole run and first has the writer flush what
 * it holds in memory, so the file is the whole truth.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct img;
struct img_check_result;
struct qcow2_state;

/* Receives each finding as one line worded as qemu-img prints it ("Leaked cluster 5 ..."). */
typedef void (*qcow2_check_log_fn)(void *user, const char *line);

/* The backend's check() (format.h): findings go to result->log. */
int qcow2_check_backend(struct img *img, unsigned flags, struct img_check_result *result);

/* The check without findings: flags are IMG_CHECK_REPAIR_*; *result need not be initialised. */
int qcow2_check(struct img *img, unsigned flags, struct img_check_result *result);

/* The same, passing every finding to `log` (may be NULL). */
int qcow2_check_logged(struct img *img, unsigned flags, struct img_check_result *result,
                       qcow2_check_log_fn log, void *user);

/* ---- shared by the check's files ---------------------------------------------------------- */

/*
 * One pass of the check. The in-memory refcounts are 16-bit, or 32-bit for refcount widths
 * above 16; they saturate at the image's largest refcount (reaching it is reported as an
 * overflow, as QEMU does).
 */
struct qcow2_check_ctx {
    struct img *img;
    struct qcow2_state *s;
    struct img_check_result *res;
    unsigned fix; /* IMG_CHECK_REPAIR_* */
    qcow2_check_log_fn log;
    void *log_user;

    bool has_data_file;
    uint64_t file_size;

    void *refs;
    unsigned ref_bytes; /* 2 or 4 */
    uint64_t ref_max;
    uint64_t nb_clusters; /* entries in use (grows for references just past the end) */
    uint64_t refs_cap;    /* entries allocated */

    /*
     * The walk reports progress and may be cancelled: only in the first pass, before
     * anything is repaired (the look after repairs runs to its end).
     */
    bool reports_progress;

    bool rebuild; /* the refcount structure itself is broken */
    bool wrote;   /* a repair was written and is not yet synced */

    /*
     * Repairs outside a rebuild are gathered in one transaction (qcow2_snapshot_write.h):
     * refcount fixes and the COPIED flags that depend on them (L2 tables fixed in copies, the
     * active L1 table in `l1`) reach the image in one header write, so a repair killed half
     * way leaves no corruption it did not find.
     */
    struct qcow2_snapshot_txn *txn;
    uint64_t *l1;    /* the active L1 table as repaired (with txn) */
    bool l1_changed; /* it differs from the one on disk */
};

void qcow2_check_report(struct qcow2_check_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Sizes the array for `clusters` host clusters (the file length); -EFBIG past the bound. */
int qcow2_check_refs_init(struct qcow2_check_ctx *c, uint64_t clusters);
void qcow2_check_refs_free(struct qcow2_check_ctx *c);
/* Makes room for `clusters` entries (new ones zero). */
int qcow2_check_refs_grow(struct qcow2_check_ctx *c, uint64_t clusters);

static inline uint64_t qcow2_check_ref(const struct qcow2_check_ctx *c, uint64_t cluster)
{
    if (c->ref_bytes == 2)
        return ((const uint16_t *)c->refs)[cluster];
    return ((const uint32_t *)c->refs)[cluster];
}

static inline void qcow2_check_set_ref(struct qcow2_check_ctx *c, uint64_t cluster, uint64_t value)
{
    if (c->ref_bytes == 2)
        ((uint16_t *)c->refs)[cluster] = (uint16_t)value;
    else
        ((uint32_t *)c->refs)[cluster] = (uint32_t)value;
}

/*
 * Counts one reference to every cluster that [offset, offset + size) touches. A range running a
 * cluster or more past the end of the file is a corruption and is not counted.
 */
int qcow2_check_count_range(struct qcow2_check_ctx *c, uint64_t offset, uint64_t size);
/* The same for `times` references at once. */
int qcow2_check_count_range_n(struct qcow2_check_ctx *c, uint64_t offset, uint64_t size,
                              uint64_t times);

/*
 * Counts every reference in the image (QEMU's calculate_refcounts), with the refcount table
 * loaded and s->lock held: header, active L1 and its
 * tree (with the allocation figures), snapshot table and snapshot trees, refcount table,
 * bitmaps, refcount blocks. Reports entry-level corruptions on the way.
 */
int qcow2_check_count_all(struct qcow2_check_ctx *c);

/* ---- repairs ---- */

/* Sets the on-disk refcount of clusters in the refcount block at `block_offset`. */
int qcow2_check_write_refblock_range(struct qcow2_check_ctx *c, uint64_t block_offset,
                                     const uint8_t *block, uint64_t first_byte, uint64_t end_byte);

/* Rewrites L2 entry `index` (its bitmap too with extended L2 entries) of the table at l2_offset.
 */
int qcow2_check_write_l2_entry(struct qcow2_check_ctx *c, uint64_t l2_offset, uint32_t index,
                               uint64_t entry, uint64_t bitmap);

/* Rewrites a whole L2 table (one cluster). */
int qcow2_check_write_l2_table(struct qcow2_check_ctx *c, uint64_t l2_offset, const uint8_t *table);

/* Rewrites active L1 entry `index` from s->l1_table. */
int qcow2_check_write_l1_entry(struct qcow2_check_ctx *c, uint32_t index);

/*
 * Writes a new refcount structure from the in-memory refcounts (qcow2_check_rebuild.c), placed
 * as QEMU places it, and switches the header to it. The clusters it takes are counted in the
 * in-memory refcounts; the old structure stays counted (a later comparison finds it leaked).
 */
int qcow2_check_rebuild_refcounts(struct qcow2_check_ctx *c);

/*
 * Clears the dirty and corrupt bits after a repair that left the image consistent, and lets a
 * handle opened with IMG_OPEN_CHECK write again.
 */
int qcow2_check_mark_clean(struct qcow2_check_ctx *c);

/*
 * The handle was opened with IMG_OPEN_CHECK on an image marked corrupt or dirty (or found it
 * corrupt since) and holds no metadata of its own: the file is the whole truth, and a repair
 * that leaves the image consistent may let it write again.
 */
bool qcow2_check_awaiting_repair(const struct qcow2_state *s);

#endif
