/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_QCOW2_SNAPSHOT_WRITE_H
#define IMG_QCOW2_SNAPSHOT_WRITE_H

/*
 * Creating, applying and deleting internal snapshots, with QEMU's reference counting: a
 * cluster's refcount is the number of L1 tables (active and snapshots) through which it is
 * reached, and the COPIED flag marks active entries whose refcount is exactly one.
 *
 *   qcow2_snapshot_write.c  the three operations
 *   qcow2_snapshot_txn.c    the transaction that makes each of them one header write
 *   qcow2_snapshot_tree.c   walking an L1 tree: refcount changes, COPIED flags
 *   qcow2_snapshot_table.c  encoding the snapshot table
 *
 * Crash safety: a kill at any moment leaves the image as it was or as the operation leaves it,
 * with leaked clusters at worst, never a corruption. Ordering the writes to the live structures
 * cannot give that: a snapshot changes a cluster's refcount (1 to 2, or 2 to 1) and the COPIED
 * flag of the active entry naming it, which lie in different clusters, and `qemu-img check`
 * calls either one without the other a corruption. So the rules are:
 *  1. Nothing that the header reaches is written in place. Every changed structure is written
 *     to new clusters past the end of the image: the snapshot's L1 table, the new active L1
 *     table, copies of the active L2 tables whose COPIED flags change, the new snapshot table,
 *     a copy of every refcount block whose counts change, and a new refcount table naming the
 *     new blocks (and the unchanged old ones).
 *  2. The new blocks hold the final counts: the new clusters counted, the replaced ones (old
 *     blocks, old tables, L2 tables the active tree no longer uses) no longer counted. Until
 *     the switch nothing references or counts the appended clusters: the old image is intact.
 *  3. fsync, then one write of header bytes 24..72 (virtual size, L1 table, refcount table,
 *     snapshot table: one sector, so it lands whole or not at all), then fsync. Before it the
 *     image is the old one; after it, the new one, without leaks.
 *  4. On a failure before the switch the appended clusters are truncated away; the handle's
 *     state (tables, caches, allocation cursors) follows the file only after the switch.
 *
 * All of it runs with s->lock held, on a writable image whose held metadata was flushed first.
 */

#include <stdbool.h>
#include <stdint.h>

struct img;
struct qcow2_state;
struct qcow2_snapshot;

/* The backend's snapshot entries. */
int qcow2_snapshot_create(struct img *img, const char *name);
int qcow2_snapshot_apply(struct img *img, const char *name_or_id);
int qcow2_snapshot_delete(struct img *img, const char *name_or_id);

/* ---- shared by the snapshot-writing files (the transaction also serves the check's repairs:
 * refcount fixes and the COPIED flags that depend on them switch in together) ---------------- */

struct qcow2_snapshot_txn;

/* What the header switch installs (with the new refcount table). */
struct qcow2_snapshot_switch {
    uint64_t size; /* virtual size */
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
};

/* Starts a transaction; refcounts are read from the file (the caller flushed first). */
int qcow2_snapshot_txn_begin(struct qcow2_state *s, struct qcow2_snapshot_txn **out);
/* Whether the commit reached the header switch (even if the sync after it failed). */
bool qcow2_snapshot_txn_switched(const struct qcow2_snapshot_txn *t);
/* Frees a committed transaction. NULL-safe. */
void qcow2_snapshot_txn_free(struct qcow2_snapshot_txn *t);
/* Drops an uncommitted one: the clusters it appended are truncated away. NULL-safe. */
void qcow2_snapshot_txn_abort(struct qcow2_snapshot_txn *t);

/* The image the transaction changes. */
struct qcow2_state *qcow2_snapshot_txn_state(struct qcow2_snapshot_txn *t);
/* The refcount cluster `cluster` will have (as changed so far). */
int qcow2_snapshot_txn_get(struct qcow2_snapshot_txn *t, uint64_t cluster, uint64_t *value);
/* Adds `delta` (+1 or -1) to every cluster [offset, offset + length) touches; -EIO when a
 * count would overflow or drop below zero. */
int qcow2_snapshot_txn_add(struct qcow2_snapshot_txn *t, uint64_t offset, uint64_t length,
                           int delta);
/* Sets the refcount of one cluster (repairs). */
int qcow2_snapshot_txn_set(struct qcow2_snapshot_txn *t, uint64_t cluster, uint64_t value);
/*
 * Tells the transaction that nothing references clusters from `cluster` on (the check knows):
 * counts found there past the end of the file are stale, and allocating overwrites them.
 */
void qcow2_snapshot_txn_reclaim_from(struct qcow2_snapshot_txn *t, uint64_t cluster);
/* Whether any refcount was changed (else there is nothing to commit). */
bool qcow2_snapshot_txn_changed(const struct qcow2_snapshot_txn *t);
/* Takes `clusters` new clusters past the end of the image, counted once. */
int qcow2_snapshot_txn_alloc(struct qcow2_snapshot_txn *t, uint64_t clusters, uint64_t *offset);
/* Writes into clusters the transaction allocated. */
int qcow2_snapshot_txn_write(struct qcow2_snapshot_txn *t, const void *buf, size_t len,
                             uint64_t offset);
/* Allocates clusters for `len` bytes and writes them there (*offset 0 when len is 0). */
int qcow2_snapshot_txn_alloc_write(struct qcow2_snapshot_txn *t, const void *buf, size_t len,
                                   uint64_t *offset);
/*
 * Writes the new refcount structure, syncs, switches the header to it and to `sw`, syncs, and
 * updates the handle's header fields, refcount table and caches (not its L1 table or snapshot
 * list: the caller does that). A failure before the header write changes nothing visible; that
 * includes -ENOMEM from reserving room to keep the replaced tables for lock-free readers.
 */
int qcow2_snapshot_txn_commit(struct qcow2_snapshot_txn *t, const struct qcow2_snapshot_switch *sw);

/*
 * After the switch: `l1` (l1_size entries, at least the old size) becomes the handle's active
 * L1 table. The old one is kept until close in the room the commit reserved, so this cannot
 * fail: call it at most once per commit that reached the switch.
 */
void qcow2_snapshot_install_l1(struct qcow2_state *s, uint64_t *l1, uint32_t l1_size);

/*
 * Adds `delta` (+1 or -1) to the refcount of every cluster reached from the `l1_size` entries
 * of `l1` (host byte order): data clusters, compressed ranges, then each L2 table. Offsets are
 * checked (alignment, end of file) before they are counted.
 */
int qcow2_snapshot_tree_count(struct qcow2_snapshot_txn *t, const uint64_t *l1, uint32_t l1_size,
                              int delta);

/*
 * Makes `l1` (host byte order, changed in place) an active tree whose COPIED flags match the
 * refcounts the transaction leaves: an L2 table whose entries' flags change is replaced by a
 * new copy (the old one loses this reference); each L1 entry gets COPIED when its table's
 * count is one. Call after every other refcount change of the transaction.
 */
int qcow2_snapshot_tree_cow(struct qcow2_snapshot_txn *t, uint64_t *l1, uint32_t l1_size);

/* Writes an L1 table to new clusters (COPIED flags dropped unless `keep_copied`). */
int qcow2_snapshot_write_l1(struct qcow2_snapshot_txn *t, const uint64_t *l1, uint32_t l1_size,
                            bool keep_copied, uint64_t *offset);

/*
 * Writes `count` entries as a new snapshot table in new clusters of `t` and stops counting the
 * old one; *offset and *size receive where it went (0 for an empty table).
 */
int qcow2_snapshot_table_write(struct qcow2_snapshot_txn *t, const struct qcow2_snapshot *list,
                               uint32_t count, uint64_t *offset, uint64_t *size);

/* After the switch: `list` (count entries) becomes the handle's list; the old array is freed
 * (not the entries' strings: the caller moves or frees those). */
void qcow2_snapshot_table_adopt(struct qcow2_state *s, struct qcow2_snapshot *list, uint32_t count,
                                uint64_t size);

/* Frees the strings of one entry. */
void qcow2_snapshot_entry_free(struct qcow2_snapshot *sn);

#endif
