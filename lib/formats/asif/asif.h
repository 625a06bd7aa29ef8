/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_ASIF_H
#define IMG_ASIF_H

/*
 * Apple Sparse Image Format (ASIF), header version 1. Apple publishes no specification: the
 * layout followed here, and which parts of it are known rather than only observed, is written
 * down field by field in LAYOUT.md beside this file.
 *
 * Locking and write ordering (rules every entry below follows):
 *  - `lock` guards the in-memory directory, `next_chunk`, `file_chunks` and the list of
 *    allocations in flight; every metadata read or write (directory, table and bitmap entries,
 *    header) is made under it, so map() never sees an entry half-updated by a writer.
 *  - A guest chunk has at most one allocation in flight: alloc() waits (`idle`) until the
 *    previous one on the same chunk is committed or abandoned.
 *  - Data reaches the file before anything points at it: data, then the bitmap bits, then the
 *    bitmap entry, then the data entry. A new table is linked by writing the whole directory
 *    into the inactive slot, syncing, then raising that slot's sequence number: a crash at any
 *    point leaves the old directory the active one.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "formats/format.h"

#define ASIF_MAGIC "shdw"
#define ASIF_META_MAGIC "meta"
#define ASIF_VERSION 1u
#define ASIF_HEADER_BYTES 0x200u /* what the header occupies, as written by this library */

/* Header fields (big-endian), by offset. */
#define ASIF_OFF_VERSION 0x04
#define ASIF_OFF_HEADER_SIZE 0x08
#define ASIF_OFF_FLAGS 0x0c
#define ASIF_OFF_DIR0 0x10
#define ASIF_OFF_DIR1 0x18
#define ASIF_OFF_UUID 0x20
#define ASIF_OFF_SECTORS 0x30
#define ASIF_OFF_MAX_SECTORS 0x38
#define ASIF_OFF_CHUNK_SIZE 0x40
#define ASIF_OFF_BLOCK_SIZE 0x44
#define ASIF_OFF_SEGMENTS 0x46
#define ASIF_OFF_META_CHUNK 0x48
#define ASIF_HEADER_MIN 0x50 /* the fields above end here */

/* A chunk entry: two status bits, seven reserved bits, a 55-bit chunk number. */
#define ASIF_ENTRY_STATUS_SHIFT 62
#define ASIF_ENTRY_RESERVED_MASK 0x3f80000000000000ull
#define ASIF_ENTRY_INDEX_MASK 0x007fffffffffffffull
enum asif_status {
    ASIF_STATUS_NONE = 0,     /* 00: never written (with chunk number 0) */
    ASIF_STATUS_FULL = 1,     /* 01: every sector of the chunk is valid */
    ASIF_STATUS_UNMAPPED = 2, /* 10: discarded (with chunk number 0) */
    ASIF_STATUS_PARTIAL = 3,  /* 11: the group's bitmap says which sectors are valid */
};

/* Bitmap: two bits per sector, sector 0 in the low bits of a byte. */
#define ASIF_SECTOR_UNSET 0u
#define ASIF_SECTOR_SET 1u

/* Limits for images from strangers (the largest the layout can need stays far below them). */
#define ASIF_MAX_CHUNK_SIZE (64u << 20)
#define ASIF_MAX_DIR_ENTRIES (4u << 20) /* a 32 MiB directory */

/* What this library writes: the geometry of the images diskutil was observed to write. */
#define ASIF_CREATE_CHUNK_SIZE (1u << 20)
#define ASIF_CREATE_BLOCK_SIZE 512u
#define ASIF_CREATE_MAX_BYTES (1ull << 52) /* 4 PiB */

/* The geometry that follows from a header's block size, chunk size and maximum size. */
struct asif_geometry {
    uint32_t block_size;
    uint32_t chunk_size;
    uint64_t max_bytes;
    uint32_t sectors_per_chunk;
    uint32_t chunks_per_group; /* N = 4 * block size */
    uint32_t group_bytes;      /* S = 8 * (N + 1) */
    uint32_t groups_per_table; /* C = chunk size / S */
    uint64_t chunks_per_table; /* C * N */
    uint64_t dir_entries;      /* T */
    uint64_t dir_bytes;        /* 8 * (T + 1): the sequence number, then T entries */
    uint32_t bitmap_per_chunk; /* bitmap bytes of one data chunk */
};

/* Where a guest (logical) chunk's entries are. */
struct asif_place {
    uint64_t table;     /* directory index */
    uint64_t group;     /* group within the table */
    uint32_t slot;      /* data entry within the group */
    uint64_t group_off; /* byte offset of the group within the table chunk */
};

struct asif_inflight {
    uint64_t chunk; /* guest chunk being allocated */
    struct asif_inflight *next;
};

struct asif_state {
    struct asif_geometry g;
    uint32_t header_size;
    uint32_t flags;
    uint8_t uuid[16];
    uint64_t sectors;
    uint64_t meta_chunk;  /* logical chunk of the metadata; 0 when there is none */
    char stable_uuid[37]; /* from the metadata's property list; "" when not found */

    uint64_t dir_off[2];
    uint64_t dir_seq[2];
    int active;    /* index of the directory in force */
    uint64_t *dir; /* its entries, T of them */

    pthread_mutex_t lock;
    pthread_cond_t idle; /* an allocation in flight ended */
    struct asif_inflight *inflight;
    uint64_t next_chunk;  /* the next host chunk a writer takes */
    uint64_t file_chunks; /* host chunks the file holds (rounded up), as last seen */
};

/* asif_layout.c */
int asif_geometry_init(struct asif_geometry *g, uint32_t block_size, uint32_t chunk_size,
                       uint64_t max_sectors, const char *filename);
void asif_place_of(const struct asif_geometry *g, uint64_t chunk, struct asif_place *p);
static inline unsigned asif_entry_status(uint64_t e)
{
    return (unsigned)(e >> ASIF_ENTRY_STATUS_SHIFT);
}
static inline uint64_t asif_entry_index(uint64_t e)
{
    return e & ASIF_ENTRY_INDEX_MASK;
}
static inline uint64_t asif_make_entry(uint64_t old, unsigned status, uint64_t index)
{
    return ((uint64_t)status << ASIF_ENTRY_STATUS_SHIFT) | (old & ASIF_ENTRY_RESERVED_MASK) | index;
}
static inline unsigned asif_sector_state(const uint8_t *bitmap, uint64_t sector)
{
    return (bitmap[sector / 4] >> ((sector % 4) * 2)) & 3u;
}
static inline void asif_sector_set(uint8_t *bitmap, uint64_t sector, unsigned state)
{
    unsigned shift = (unsigned)(sector % 4) * 2;
    bitmap[sector / 4] = (uint8_t)((bitmap[sector / 4] & ~(3u << shift)) | (state << shift));
}

/* asif_entries.c: reading and writing table entries (under s->lock). */
int asif_check_chunk(struct img *img, uint64_t index, const char *what);
int asif_read_group(struct img *img, const struct asif_place *p, uint64_t *entries);
int asif_read_entry(struct img *img, const struct asif_place *p, uint32_t slot, uint64_t *out);
int asif_write_entry(struct img *img, const struct asif_place *p, uint32_t slot, uint64_t value);
int asif_read_bitmap(struct img *img, uint64_t bitmap_entry, uint32_t slot, uint8_t *out);
int asif_write_bitmap(struct img *img, uint64_t bitmap_index, uint32_t slot, const uint8_t *bits);
int asif_lookup(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext);

/* asif_meta_write.c: taking chunks and linking tables (under s->lock). */
int asif_take_chunk(struct img *img, uint64_t *index);
int asif_ensure_table(struct img *img, uint64_t table);
void asif_inflight_wait(struct asif_state *s, uint64_t chunk);

/* asif_metadata.c */
void asif_load_metadata(struct img *img);
int asif_metadata_plist(char *buf, size_t cap, const char *stable_uuid);

/* Entries (each in the file named after it). */
int asif_probe(const uint8_t *buf, size_t len, const char *filename);
int asif_open(struct img *img, const img_opts *opts);
void asif_close(struct img *img);
int asif_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext);
int asif_info_specific(struct img *img, struct json_writer *w);
int asif_create(const struct img_create_args *args);
int asif_measure(const struct img_measure_args *args, struct img_measure_result *out);
int asif_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
               struct img_alloc **token);
int asif_alloc_commit(struct img *img, struct img_alloc *token, int write_result);
int asif_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags);
int asif_discard(struct img *img, uint64_t offset, uint64_t length);
int asif_flush(struct img *img);
int asif_resize(struct img *img, uint64_t new_size, unsigned flags, const img_opts *opts);

#endif
