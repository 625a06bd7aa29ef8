/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_VMDK_H
#define IMG_VMDK_H

/*
 * VMDK: a text descriptor (standalone, or embedded in a sparse file at sector 1) lists extents,
 * each a run of the guest disk stored FLAT (raw, at an offset in a file), SPARSE (the "KDMV"
 * hosted sparse format, or the older "COWD" VMFS sparse one) or SESPARSE (ESXi's 64-bit
 * sparse). Sparse extents map grains (clusters) through a grain directory (L1) of grain tables
 * (L2). The layout and every limit follow VMware's "Virtual Disk Format 5.0" specification and
 * what QEMU 7.2's block/vmdk.c reads, writes and refuses.
 *
 * Locking and write ordering (rules for every function here):
 *  - The extent table is fixed after open. Grain table caches, the allocation cursors and the
 *    descriptor's CID change under img->lock.
 *  - An allocating write holds `alloc_busy` from alloc() to alloc_commit(): the grain's data
 *    (with its copy-on-write fill) reaches the file before the grain table entry that points
 *    at it, and no other writer can allocate meanwhile, so a grain is never taken twice.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "formats/format.h"

#define VMDK_SECTOR 512u
#define VMDK4_MAGIC 0x564d444bu /* "KDMV" read little-endian */
#define VMDK3_MAGIC 0x44574f43u /* "COWD" read little-endian */
#define VMDK4_FLAG_NL_DETECT (1u << 0)
#define VMDK4_FLAG_RGD (1u << 1)
#define VMDK4_FLAG_ZERO_GRAIN (1u << 2)
#define VMDK4_FLAG_COMPRESS (1u << 16)
#define VMDK4_FLAG_MARKER (1u << 17)
#define VMDK4_COMPRESSION_DEFLATE 1
#define VMDK4_GD_AT_END UINT64_MAX
#define VMDK_GTE_ZEROED 1u
#define VMDK_MARKER_EOS 0
#define VMDK_MARKER_FOOTER 3
/* QEMU's limits: a grain of at most 1 GiB, a grain directory of at most 32 Mi entries. */
#define VMDK_MAX_GRAIN_SECTORS 0x200000u
#define VMDK_MAX_L1_ENTRIES (32u * 1024 * 1024)
/* Descriptors are read up to 1 MiB; the CID and parent lines within the first 20 sectors. */
#define VMDK_DESC_MAX ((1u << 20) - 1)
#define VMDK_DESC_SIZE (20u * 512)
#define VMDK_L2_CACHE 16
#define VMDK_SPLIT_SIZE 0x80000000ull

enum vmdk_extent_kind {
    VMDK_EXTENT_FLAT,
    VMDK_EXTENT_SPARSE,   /* KDMV hosted sparse (and streamOptimized) */
    VMDK_EXTENT_COWD,     /* VMFS sparse, "COWD" */
    VMDK_EXTENT_SESPARSE, /* read only */
};

struct vmdk_l2_slot {
    uint64_t offset; /* table offset in sectors; 0: empty */
    uint32_t uses;
    uint8_t *table;
};

struct vmdk_extent {
    enum vmdk_extent_kind kind;
    struct io_file *file;
    bool own_file;        /* opened for this extent (else it is img->file) */
    char *filename;       /* as info prints it */
    char *type;           /* the descriptor's word (FLAT, SPARSE, ...), or NULL when embedded */
    uint64_t start;       /* guest bytes */
    uint64_t sectors;     /* guest sectors it holds */
    uint64_t flat_offset; /* FLAT: bytes */

    /* Sparse kinds. */
    uint32_t version;
    uint64_t grain_sectors;
    uint32_t gt_entries;
    uint32_t entry_size; /* 4, or 8 for seSparse */
    uint32_t l1_size;
    uint64_t l1_offset, l1_backup_offset; /* bytes; backup 0 when none */
    void *l1;                             /* l1_size entries of entry_size bytes, host order */
    uint32_t *l1_backup;
    bool compressed, has_marker, zero_grain;
    uint64_t se_tables_offset, se_grains_offset; /* sectors */
    uint64_t next_sector;                        /* where the next grain goes */
    uint64_t grain_offset; /* sectors: KDMV grains start here; below it is metadata */
    struct vmdk_l2_slot cache[VMDK_L2_CACHE];
};

struct vmdk_state {
    struct vmdk_extent *extents;
    unsigned count;
    char *create_type;
    uint32_t cid, parent_cid;
    bool embedded;    /* the descriptor lives in the sparse file, at 0x200 */
    bool cid_updated; /* the first write after open changes the CID, as QEMU does */
    bool alloc_busy;
    pthread_cond_t alloc_done;
};

/* What a lookup found at one guest offset of one extent. */
enum vmdk_grain_kind {
    VMDK_GRAIN_UNALLOC,
    VMDK_GRAIN_ZERO,
    VMDK_GRAIN_DATA, /* host_sector valid */
};

struct vmdk_grain {
    enum vmdk_grain_kind kind;
    uint64_t host_sector;
    /* Where the entry lives, for an allocation to update it. */
    uint32_t l1_index, l2_index;
    uint64_t l2_sector; /* 0: no grain table */
};

/* vmdk_desc.c */
int vmdk_probe(const uint8_t *buf, size_t len, const char *filename);
int vmdk_desc_value(const char *desc, const char *name, char *out, size_t cap);
int vmdk_desc_cid(const char *desc, const char *name, uint32_t *out);
int vmdk_desc_parent(const char *desc, const char *filename, char **out);
int vmdk_read_text(struct io_file *f, uint64_t offset, size_t max, const char *filename,
                   char **out);

/* vmdk_sparse.c */
int vmdk_open_sparse(struct img *img, struct vmdk_extent *e, const char *filename, bool sesparse);
void vmdk_extent_free(struct vmdk_extent *e);

/* vmdk_open.c */
int vmdk_open(struct img *img, const img_opts *opts);
void vmdk_close(struct img *img);
struct vmdk_extent *vmdk_find_extent(struct vmdk_state *s, uint64_t offset);

/* vmdk_map.c */
int vmdk_lookup(struct img *img, struct vmdk_extent *e, uint64_t offset, struct vmdk_grain *g);
int vmdk_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext);
int vmdk_set_gte(struct img *img, struct vmdk_extent *e, const struct vmdk_grain *g,
                 uint32_t value);

/* vmdk_write.c */
int vmdk_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
               struct img_alloc **token);
int vmdk_alloc_commit(struct img *img, struct img_alloc *token, int write_result);
int vmdk_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags);
int vmdk_discard(struct img *img, uint64_t offset, uint64_t length);
int vmdk_flush(struct img *img);
int vmdk_compress_unit(struct img *img, const void *buf, size_t len, void *out, size_t out_cap,
                       size_t *out_len);
int vmdk_write_compressed_data(struct img *img, uint64_t offset, const void *data, size_t len,
                               bool stored_uncompressed);
int vmdk_update_cid(struct img *img);

/* vmdk_create.c */
extern const struct opt_desc vmdk_create_options[];
int vmdk_create(const struct img_create_args *args);
int vmdk_measure(const struct img_measure_args *args, struct img_measure_result *out);
int vmdk_compress_allowed(const img_opts *opts);

/* vmdk_info.c */
int vmdk_info_specific(struct img *img, struct json_writer *w);
int64_t vmdk_allocated_size(struct img *img, int64_t file_bytes);
int vmdk_check(struct img *img, unsigned flags, struct img_check_result *result);

#endif
