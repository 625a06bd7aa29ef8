/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_PARALLELS_H
#define IMG_PARALLELS_H

/*
 * Parallels (ploop) images, as QEMU's block/parallels.c and parallels-ext.c read and write
 * them, and as docs/interop/parallels.txt describes the layout:
 *
 *   0x00  magic[16]    "WithoutFreeSpace" (v1) or "WithouFreSpacExt" (v2)
 *   0x10  version      2
 *   0x14  heads, 0x18 cylinders (geometry, unused here)
 *   0x1c  tracks       sectors per cluster
 *   0x20  bat_entries  entries of the catalog (BAT) that follows the header at 0x40
 *   0x24  nb_sectors   virtual size in sectors (v1: only the low 32 bits count)
 *   0x2c  inuse        0x746f6e59 ("Ynot") while a writer has the image open
 *   0x30  data_off     first data sector (0: right after the catalog)
 *   0x34  flags
 *   0x38  ext_off      sector of the format extension cluster (dirty bitmaps), 0: none
 *
 * A catalog entry is 0 for an unallocated cluster, else the cluster's host position: in
 * sectors for v1, in clusters for v2.
 *
 * Locking and write order (the rules every writer here follows):
 *  - img->lock guards the catalog copy, data_end and the list of allocations in flight; it is
 *    never held across I/O but the 4-byte catalog writes of a commit.
 *  - A new cluster's data reaches the file before its catalog entry does (alloc_commit), so a
 *    crash leaves either the old content or the new one, and at worst a leaked cluster past
 *    the last referenced one, which check reports and `check -r leaks` cuts off.
 *  - The in-use marker is written (and synced) when a writer opens the image and cleared when
 *    it closes: an image left marked was not closed cleanly, and is opened for writing only
 *    for check (IMG_OPEN_CHECK), as QEMU does.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "formats/format.h"

#define PRL_HEADER_SIZE 64u
#define PRL_MAGIC_V1 "WithoutFreeSpace"
#define PRL_MAGIC_V2 "WithouFreSpacExt"
#define PRL_VERSION 2u
#define PRL_INUSE_MAGIC 0x746f6e59u
#define PRL_OFF_INUSE 0x2cu
#define PRL_SECTOR 512u
/* QEMU's limits: tracks <= INT32_MAX / 513, catalog entries <= INT_MAX / 4. */
#define PRL_MAX_TRACKS (INT32_MAX / 513)
#define PRL_MAX_BAT_ENTRIES (INT32_MAX / 4)
#define PRL_DEFAULT_CLUSTER (1u << 20)
#define PRL_HEADS 16u
#define PRL_SEC_IN_CYL 32u

/* The header fields, in host order. */
struct prl_header {
    bool v2;
    uint32_t version;
    uint32_t heads, cylinders;
    uint32_t tracks;
    uint32_t bat_entries;
    uint64_t nb_sectors;
    uint32_t inuse;
    uint32_t data_off;
    uint32_t flags;
    uint64_t ext_off;
};

/* A run of clusters being allocated whose catalog entries are not linked yet. */
struct prl_inflight {
    uint32_t first, count;
};

struct prl_state {
    struct io_file *data; /* the image file: img->file, or the one DiskDescriptor.xml names */
    bool data_owned;      /* opened here (DiskDescriptor.xml): closed in close() */
    char *data_name;      /* its name, for messages */
    struct prl_header hdr;
    uint8_t raw_header[PRL_HEADER_SIZE];
    uint32_t off_multiplier; /* sectors per catalog unit: 1 (v1) or tracks (v2) */
    uint64_t cluster_bytes;
    uint32_t *bat;       /* host-order copy of the catalog */
    uint64_t data_end;   /* sectors: the first one past every referenced cluster and data_off */
    uint64_t stale_end;  /* bytes: the file's size when opened (unreferenced tail may be stale) */
    bool header_unclean; /* the in-use marker was set when opened */
    bool marked_in_use;  /* this handle wrote the marker and clears it on close */
    pthread_cond_t inflight_done;
    struct prl_inflight *inflight;
    size_t inflight_count, inflight_cap;
};

/* Parses and checks the 64-byte header of `name`; a message naming the problem on failure. */
int prl_parse_header(const uint8_t *buf, size_t len, const char *name, struct prl_header *h);
/* Encodes `h` into 64 bytes. */
void prl_encode_header(const struct prl_header *h, uint8_t *buf);
int prl_probe(const uint8_t *buf, size_t len, const char *filename);

/* The host sector of catalog entry `idx` (0: unallocated). */
static inline uint64_t prl_bat_sector(const struct prl_state *s, uint32_t idx)
{
    return (uint64_t)s->bat[idx] * s->off_multiplier;
}

int prl_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext);
int prl_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
              struct img_alloc **token);
int prl_alloc_commit(struct img *img, struct img_alloc *token, int write_result);
int prl_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags);
int prl_flush(struct img *img);
int prl_check(struct img *img, unsigned flags, struct img_check_result *result);
int prl_create(const struct img_create_args *args);
int prl_measure(const struct img_measure_args *args, struct img_measure_result *out);
extern const struct opt_desc prl_create_options[];

/* Writes catalog entries [first, first + count) from the copy in memory. */
int prl_write_bat(struct prl_state *s, uint32_t first, uint32_t count);

/*
 * Reads and checks the format extension at byte `ext_off` (dirty bitmaps), as QEMU does when
 * it opens an image read-only: a corrupt extension fails the open.
 */
int prl_read_extension(struct img *img, struct prl_state *s, uint64_t ext_off);

/* DiskDescriptor.xml: the probe, and the name of the image file it describes (malloc'd). */
int prl_xml_probe(const uint8_t *buf, size_t len, const char *filename);
int prl_xml_image_name(struct img *img, char **name);

/* MD5 (RFC 1321) of `len` bytes, for the extension's checksum. */
void prl_md5(const void *data, size_t len, uint8_t digest[16]);

#endif
