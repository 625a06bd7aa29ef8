/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_FORMAT_QED_H
#define IMG_FORMAT_QED_H

/*
 * QEMU Enhanced Disk images, as QEMU 7.2 (block/qed*.c, docs/interop/qed_spec.txt) reads,
 * writes, checks and creates them. Header (little-endian, at offset 0):
 *
 *   0  magic "QED\0"          4  cluster_size (power of 2, 4 KiB..64 MiB)
 *   8  table_size (clusters per L1/L2 table, power of 2, 1..16)
 *  12  header_size (clusters)  16 features  24 compat_features  32 autoclear_features
 *  40  l1_table_offset        48  image_size (bytes, whole sectors)
 *  56  backing_filename_offset 60 backing_filename_size (bytes, inside the header clusters)
 *
 * Features: backing file (1), need check (2: set while allocating, cleared once the image is
 * known consistent; an image opened for writing with it set is checked and repaired first),
 * backing format is raw (4). A two-level table maps clusters: an L1 entry is the offset of an
 * L2 table (0: none); an L2 entry is the offset of a data cluster, 0 (unallocated: the
 * backing file shows through) or 1 (reads as zeros). New clusters are taken at the end of the
 * file.
 *
 * Locking: `lock` guards the header fields that change (features, image_size), the L1 table,
 * the L2 cache and file_size. Allocations run one at a time (`allocating`, see qed_write.c).
 */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "formats/format.h"

#define QED_MAGIC 0x00444551u
#define QED_HEADER_BYTES 64u
#define QED_F_BACKING_FILE 0x1ull
#define QED_F_NEED_CHECK 0x2ull
#define QED_F_BACKING_FORMAT_NO_PROBE 0x4ull
#define QED_FEATURE_MASK (QED_F_BACKING_FILE | QED_F_NEED_CHECK | QED_F_BACKING_FORMAT_NO_PROBE)
#define QED_MIN_CLUSTER_SIZE (4u << 10)
#define QED_MAX_CLUSTER_SIZE (64u << 20)
#define QED_DEFAULT_CLUSTER_SIZE (64u << 10)
#define QED_MIN_TABLE_SIZE 1u
#define QED_MAX_TABLE_SIZE 16u
#define QED_DEFAULT_TABLE_SIZE 4u
#define QED_CLUSTER_ZERO 1ull
/* QEMU keeps backing names in a PATH_MAX buffer. */
#define QED_MAX_BACKING_NAME 4095u

/* L2 tables are cached in slices of this many entries (one 4 KiB page). */
#define QED_SLICE_ENTRIES 512u
#define QED_CACHE_SLOTS 64u

struct qed_header {
    uint32_t cluster_size, table_size, header_size;
    uint64_t features, compat_features, autoclear_features;
    uint64_t l1_table_offset, image_size;
    uint32_t backing_filename_offset, backing_filename_size;
};

struct qed_slot {
    uint64_t l2_offset; /* 0: empty */
    uint64_t slice;     /* slice index inside the table */
    uint64_t used;      /* LRU tick */
    uint64_t entries[QED_SLICE_ENTRIES];
};

struct qed_state {
    struct qed_header hdr;
    uint64_t table_entries; /* entries per table */
    uint64_t file_size;     /* where the next cluster goes: the file's size, whole clusters */
    uint64_t *l1;           /* host order */
    struct qed_slot *cache; /* QED_CACHE_SLOTS */
    uint64_t tick;
    pthread_mutex_t lock;
    pthread_cond_t alloc_done;
    bool allocating;
};

static inline uint64_t qed_table_bytes(const struct qed_header *h)
{
    return (uint64_t)h->table_size * h->cluster_size;
}

/* QEMU's bounds: a data cluster, or a table's first and last cluster, in the file. */
bool qed_cluster_offset_valid(const struct qed_state *s, uint64_t offset);
bool qed_table_offset_valid(const struct qed_state *s, uint64_t offset);
uint64_t qed_max_image_size(uint32_t cluster_size, uint32_t table_size);
bool qed_cluster_size_valid(uint64_t v);
bool qed_table_size_valid(uint64_t v);

int qed_header_parse(const uint8_t *buf, const char *filename, struct qed_header *h);
void qed_header_store(const struct qed_header *h, uint8_t buf[QED_HEADER_BYTES]);
/* Writes the header fields (not the backing name); under `lock`. */
int qed_header_write(struct img *img);

/* L2 entries through the slice cache; under `lock`. Fails for an unreadable table. */
int qed_l2_slice(struct img *img, uint64_t l2_offset, uint64_t slice, uint64_t **entries);
/* Writes entries [first, first + count) of a cached slice (whole sectors); under `lock`. */
int qed_l2_write(struct img *img, uint64_t l2_offset, uint64_t slice, uint64_t first,
                 uint64_t count);
/* Writes the L1 sector holding entry `index`; under `lock`. */
int qed_l1_write(struct img *img, uint64_t index);
/* Forgets every cached slice; under `lock`. */
void qed_cache_clear(struct qed_state *s);

int qed_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext);
int qed_create(const struct img_create_args *args);
int qed_check_geometry(uint64_t cluster_size, uint64_t table_size, uint64_t size);
int qed_measure(const struct img_measure_args *args, struct img_measure_result *out);
int qed_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
              struct img_alloc **token);
int qed_alloc_commit(struct img *img, struct img_alloc *token, int write_result);
int qed_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags);
int qed_flush(struct img *img);
int qed_resize(struct img *img, uint64_t new_size, unsigned flags, const img_opts *opts);
int qed_check(struct img *img, unsigned flags, struct img_check_result *result);
/* change_backing() (qed_backing.c): header and name rewritten in one synced write. */
int qed_change_backing(struct img *img, const char *backing_file, const char *backing_fmt);
/* The check QEMU runs when opening an image left with need-check set; under `lock`. */
int qed_check_locked(struct img *img, bool fix, struct img_check_result *r);

#endif
