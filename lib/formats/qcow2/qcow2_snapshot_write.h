/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_QCOW2_SNAPSHOT_WRITE_H
#define IMG_QCOW2_SNAPSHOT_WRITE_H

/*
 * Creating, applying and deleting internal snapshots, with QEMU's reference counting: a
 * cluster's refcount is the number of L1 tables (active and snapshots) through which it is
 * reached, and the COPIED flag marks active entries whose refcount is exactly one.
 *
 *   qcow2_snapshot_write.c  the three operations and the order of their writes
 *   qcow2_snapshot_tree.c   walking an L1 tree: refcount changes, COPIED flags
 *   qcow2_snapshot_table.c  encoding and replacing the snapshot table
 *
 * Crash safety: new references are counted (and synced) before anything points to them, and
 * old ones are dropped only after nothing on disk points to them any more, so a crash at any
 * point leaves at worst leaked clusters. COPIED flags are cleared before a snapshot that shares
 * the clusters becomes visible.
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

/* ---- shared by the snapshot-writing files ------------------------------------------------- */

/*
 * Adds `delta` (+1 or -1) to the refcount of every cluster reached from the `l1_size` entries
 * of `l1` (host byte order): data clusters, compressed ranges, then each L2 table. Offsets are
 * checked (alignment, end of file) before they are counted.
 */
int qcow2_snapshot_tree_refs(struct qcow2_state *s, const uint64_t *l1, uint32_t l1_size,
                             int delta);

/*
 * Makes the COPIED flags of the tree under `l1` (host byte order, updated in place) say whether
 * each L2 table and data cluster has refcount one; rewrites the L2 tables that change. The L1
 * entries are only changed in memory: *l1_changed says whether they need writing.
 */
int qcow2_snapshot_tree_fix_copied(struct qcow2_state *s, uint64_t *l1, uint32_t l1_size,
                                   bool *l1_changed);

/* Writes the active L1 table (s->l1_table, s->l1_size entries) to its place and syncs. */
int qcow2_snapshot_write_active_l1(struct qcow2_state *s);

/*
 * Writes `count` entries as a new snapshot table in newly allocated clusters, switches the
 * header to it (synced), frees the old table and makes `list` the state's list (freeing the old
 * array, not the entries' strings: the caller moves or frees those). On failure nothing changes
 * and `list` stays the caller's.
 */
int qcow2_snapshot_table_replace(struct qcow2_state *s, struct qcow2_snapshot *list,
                                 uint32_t count);

/* Frees the strings of one entry. */
void qcow2_snapshot_entry_free(struct qcow2_snapshot *sn);

#endif
