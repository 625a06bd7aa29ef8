/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_DMG_H
#define IMG_DMG_H

/*
 * Apple disk images (UDIF, ".dmg"), read-only, as QEMU's block/dmg.c reads them.
 *
 * Layout (big-endian): a 512-byte "koly" trailer near the end of the file gives the data
 * fork's offset (0x18), the resource fork's offset and length (0x28, 0x30), the XML property
 * list's offset and length (0xd8, 0xe0) and the disk's sector count (0x1ec). The block tables
 * ("mish" blocks: one per partition, 204 bytes of header then 40-byte chunk entries) are the
 * resources of the resource fork, or, without one, the base64 <data> elements of the XML
 * property list. A chunk entry: type (0), first sector (8) and sector count (0x10) relative
 * to the block's first sector (8 in the block header), offset (0x18) and length (0x20) in
 * the data fork relative to the block's data offset (0x18 in the block header).
 *
 * Chunk types: zeros (UDZE) and ignored (UDIG) read as zeros, raw (UDRW) is stored as it is,
 * zlib (UDZO), bzip2 (UDBZ) and ADC (UDCO) are compressed units the core inflates. lzfse
 * (ULFO) chunks are kept so that reading them fails with a clear message (QEMU without its
 * lzfse module fails them with an I/O error); comments (UDCM), the last entry (UDLE) and
 * unknown types are left out, so their sectors fail to read, as in QEMU.
 */

#include <stdint.h>

struct img;
struct img_extent;

/* Chunk types (32 bits, some above INT_MAX: macros rather than an enum). */
#define DMG_UDZE 0x00000000u /* zeros */
#define DMG_UDRW 0x00000001u /* raw */
#define DMG_UDIG 0x00000002u /* ignored: zeros */
#define DMG_UDCO 0x80000004u /* ADC */
#define DMG_UDZO 0x80000005u /* zlib */
#define DMG_UDBZ 0x80000006u /* bzip2 */
#define DMG_ULFO 0x80000007u /* lzfse */
#define DMG_UDCM 0x7ffffffeu /* comment */
#define DMG_UDLE 0xffffffffu /* last entry */

/* QEMU's bounds: a chunk's stored length, and the sectors of a chunk that is not zeros. */
#define DMG_LENGTH_MAX (64u << 20)
#define DMG_SECTORCOUNT_MAX (DMG_LENGTH_MAX / 512)
/* QEMU's cap on the XML property list. */
#define DMG_XML_MAX (16u << 20)

struct dmg_chunk {
    uint64_t sector;       /* first guest sector */
    uint64_t sector_count; /* guest sectors */
    uint64_t offset;       /* in the file */
    uint64_t length;       /* stored bytes */
    uint32_t type;         /* DMG_UD* */
};

struct dmg_state {
    struct dmg_chunk *chunks;
    uint32_t n_chunks, cap_chunks;
    uint64_t data_fork_offset; /* the base of the chunk offsets */
};

/* dmg_tables.c: the chunk tables, from the resource fork or the XML property list. */
int dmg_read_resource_fork(struct img *img, struct dmg_state *s, uint64_t offset, uint64_t length);
int dmg_read_plist_xml(struct img *img, struct dmg_state *s, uint64_t offset, uint64_t length);

/* dmg_map.c */
int dmg_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext);

#endif
