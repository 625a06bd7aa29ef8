/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_FORMATS_VHDX_H
#define IMG_FORMATS_VHDX_H

/*
 * VHDX (Microsoft's "VHDX Format Specification" 1.00), as QEMU 7.2 reads and writes it.
 *
 * File layout: a 1 MiB header section (the file identifier at 0, two headers at 64 KiB and
 * 128 KiB, two copies of the region table at 192 KiB and 256 KiB), then the regions the
 * active header and the region table name: the log, the metadata region (block size, sector
 * sizes, virtual size, page 83 data, parent locator) and the BAT. All integers are little
 * endian; headers, region tables and log entries carry a CRC-32C over their whole extent.
 *
 * The BAT interleaves payload entries and sector bitmap entries: after every `chunk_ratio`
 * payload entries comes one sector bitmap entry (2^23 sectors per chunk). An entry holds a
 * state in bits 0-2 and a file offset in MiB in bits 20-63.
 *
 * Rules of the writer (vhdx_write.c, vhdx_log.c), which is QEMU's:
 *  - A payload block is allocated at the end of the file, rounded up to 1 MiB; its data is
 *    written by the core before the BAT names it (alloc_commit).
 *  - Every BAT change goes through the log: data flushed, a fresh log GUID in both headers,
 *    one log entry carrying the changed 4 KiB BAT sectors, flushed, then those sectors written
 *    in place, flushed, and the log GUID cleared in both headers. A kill anywhere leaves
 *    either the old BAT or a log that the next read-write open replays to the new one.
 *  - Metadata changes are made under img->lock; map() reads the BAT under it too.
 */

#include <stdbool.h>
#include <stdint.h>

#include "formats/format.h"

#define VHDX_MiB (1024ull * 1024ull)
#define VHDX_HEADER_SECTION_END VHDX_MiB
#define VHDX_HEADER1_OFFSET (64u * 1024u)
#define VHDX_HEADER2_OFFSET (128u * 1024u)
#define VHDX_HEADER_SIZE 4096u
#define VHDX_REGION_TABLE1_OFFSET (192u * 1024u)
#define VHDX_REGION_TABLE2_OFFSET (256u * 1024u)
#define VHDX_TABLE_SIZE (64u * 1024u) /* a region table or a metadata table */
#define VHDX_LOG_SECTOR 4096u
#define VHDX_LOG_DESCS_FIRST 126u /* descriptors in the sector holding the entry header */

#define VHDX_BLOCK_SIZE_MIN VHDX_MiB
#define VHDX_BLOCK_SIZE_MAX (256ull * VHDX_MiB)
#define VHDX_MAX_SECTORS_PER_CHUNK (1ull << 23)
#define VHDX_MAX_IMAGE_SIZE (64ull * 1024 * 1024 * VHDX_MiB) /* 64 TiB */

/* Payload block states (BAT bits 0-2). */
enum {
    VHDX_BLOCK_NOT_PRESENT = 0,
    VHDX_BLOCK_UNDEFINED = 1,
    VHDX_BLOCK_ZERO = 2,
    VHDX_BLOCK_UNMAPPED = 3,
    VHDX_BLOCK_UNMAPPED_V095 = 5,
    VHDX_BLOCK_FULLY_PRESENT = 6,
    VHDX_BLOCK_PARTIALLY_PRESENT = 7,
};
/* Sector bitmap block states. */
#define VHDX_BITMAP_PRESENT 6
#define VHDX_BAT_STATE_MASK 7ull
#define VHDX_BAT_OFFSET_MASK 0xfffffffffff00000ull

/* File parameters flags. */
#define VHDX_PARAMS_LEAVE_BLOCKS_ALLOCATED 1u
#define VHDX_PARAMS_HAS_PARENT 2u

/* Metadata entry flags. */
#define VHDX_META_IS_USER 1u
#define VHDX_META_IS_VIRTUAL_DISK 2u
#define VHDX_META_IS_REQUIRED 4u

/* A header as parsed; `raw` is the whole 4 KiB as read, rewritten with the fields below. */
struct vhdx_header {
    uint64_t sequence;
    uint8_t file_write_guid[16], data_write_guid[16], log_guid[16];
    uint16_t log_version, version;
    uint32_t log_length;
    uint64_t log_offset;
    uint8_t raw[VHDX_HEADER_SIZE];
    bool valid;
};

/* A file range that metadata occupies: BAT blocks must not overlap one. */
struct vhdx_region {
    uint64_t start, end;
};

struct vhdx_state {
    struct vhdx_header hdr[2];
    int cur; /* index of the active header */

    struct vhdx_region *regions;
    size_t nb_regions;

    uint64_t bat_offset, bat_region_length;
    uint64_t metadata_offset, metadata_length;

    uint32_t block_size, logical_sector_size, physical_sector_size;
    uint32_t params_flags;
    uint64_t virtual_size;
    uint8_t page83[16];
    uint64_t chunk_ratio;
    unsigned block_bits, chunk_bits;

    uint64_t bat_entries;
    uint64_t *bat;      /* bat_entries entries, host order */
    uint64_t bat_alloc; /* entries allocated in `bat` (whole 4 KiB BAT sectors) */

    uint8_t session_guid[16]; /* file_write_guid of this session's header updates */
    bool data_guid_updated;   /* the first guest-visible write renews data_write_guid */
    uint64_t log_sequence;    /* next log entry's sequence number */
    bool log_replayed;        /* a log was replayed by open (check reports it as fixed) */
};

/* vhdx_guid.c */
void vhdx_guid_generate(uint8_t guid[16]);
bool vhdx_guid_is_zero(const uint8_t guid[16]);
extern const uint8_t vhdx_guid_bat[16], vhdx_guid_metadata[16], vhdx_guid_file_params[16],
    vhdx_guid_virtual_size[16], vhdx_guid_page83[16], vhdx_guid_logical_sector[16],
    vhdx_guid_physical_sector[16], vhdx_guid_parent_locator[16];

/* vhdx_header.c: the headers, region table and metadata of an open image. */
int vhdx_read_headers(struct img *img, struct vhdx_state *s);
int vhdx_read_regions(struct img *img, struct vhdx_state *s);
int vhdx_read_metadata(struct img *img, struct vhdx_state *s);
int vhdx_read_bat(struct img *img, struct vhdx_state *s);
/* Overlap of [start, start+len) with a registered region. */
bool vhdx_region_overlaps(const struct vhdx_state *s, uint64_t start, uint64_t len);
const struct vhdx_region *vhdx_region_find(const struct vhdx_state *s, uint64_t start,
                                           uint64_t len);
int vhdx_region_add(struct vhdx_state *s, uint64_t start, uint64_t len);
/* Encodes `h` into its raw 4 KiB with a fresh checksum. */
void vhdx_header_encode(struct vhdx_header *h);
/*
 * Writes the inactive header as the new active one (sequence + 1, this session's file GUID,
 * `log_guid`, a new data GUID when `new_data_guid`), durably; twice makes both current.
 */
int vhdx_update_headers(struct img *img, struct vhdx_state *s, bool new_data_guid,
                        const uint8_t log_guid[16]);

/* vhdx_parent.c: differencing images. */
int vhdx_read_parent_locator(struct img *img, struct vhdx_state *s, uint32_t item_offset,
                             uint32_t item_length);
/*
 * For a partially present block: whether the sectors from `in_block` on are in this image,
 * and for how many bytes (at most `length`) that stays so.
 */
int vhdx_bitmap_run(struct img *img, const struct vhdx_state *s, uint64_t block, uint64_t in_block,
                    uint64_t length, bool *present, uint64_t *run);

/* vhdx_log.c */
/* Replays a log left by an interrupted writer; refuses a read-only open of such an image. */
int vhdx_log_replay_if_needed(struct img *img, struct vhdx_state *s);
/*
 * Writes `count` 4 KiB sectors (`data`, one after the other) at the 4 KiB-aligned file offsets
 * `offsets` through the log, as described in the writer's rules above.
 */
int vhdx_log_write_sectors(struct img *img, struct vhdx_state *s, const uint64_t *offsets,
                           const uint8_t *data, uint32_t count);

/* vhdx_bat.c */
uint64_t vhdx_bat_index(const struct vhdx_state *s, uint64_t block);
/* Sets BAT entries in memory and writes their sectors through the log. */
int vhdx_bat_store(struct img *img, struct vhdx_state *s, const uint64_t *indexes,
                   const uint64_t *entries, uint32_t count);
/* The BAT entry number that starts payload block past the last entry (allocation). */
int vhdx_file_end(struct img *img, uint64_t *end);

/* Entries of the backend (one file each). */
int vhdx_open(struct img *img, const img_opts *opts);
void vhdx_close(struct img *img);
int vhdx_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext);
int vhdx_create(const struct img_create_args *args);
/* Where vhdx_create puts each region of a new image, from its options (vhdx_create.c). */
struct vhdx_create_layout {
    uint64_t size;
    uint32_t block_size, log_size;
    bool fixed, zero_blocks;
    uint64_t chunk_ratio, bat_entries;
    unsigned chunk_bits;
    uint64_t bat_offset, bat_length, metadata_offset, data_offset;
};

/* The layout vhdx_create would write for `args` (only size, opts and backing_file are read). */
int vhdx_create_plan(const struct img_create_args *args, struct vhdx_create_layout *l);
int vhdx_measure(const struct img_measure_args *args, struct img_measure_result *out);
int vhdx_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
               struct img_alloc **token);
int vhdx_alloc_commit(struct img *img, struct img_alloc *token, int write_result);
int vhdx_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags);
int vhdx_discard(struct img *img, uint64_t offset, uint64_t length);
int vhdx_flush(struct img *img);
int vhdx_check(struct img *img, unsigned flags, struct img_check_result *result);
/* The check of the BAT that open runs too: blocks past the end of the file or on metadata. */
int vhdx_check_bat(struct img *img, struct vhdx_state *s, struct img_check_result *result);

extern const struct opt_desc vhdx_create_options[];

#endif
