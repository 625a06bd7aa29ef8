/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The arithmetic of the layout: from a header's sizes to where each chunk's entry is. */
#include <errno.h>
#include <inttypes.h>

#include "error.h"
#include "formats/asif/asif.h"
#include "util/checked.h"

int asif_geometry_init(struct asif_geometry *g, uint32_t block_size, uint32_t chunk_size,
                       uint64_t max_sectors, const char *filename)
{
    if (block_size == 0 || block_size % 512)
        return img_error(-EINVAL,
                         "asif: '%s' has block size %" PRIu32 ", not a non-zero multiple of 512",
                         filename, block_size);
    if (chunk_size == 0 || chunk_size % block_size || chunk_size > ASIF_MAX_CHUNK_SIZE)
        return img_error(-EINVAL,
                         "asif: '%s' has chunk size %" PRIu32
                         ", not a multiple of the block size up to %u bytes",
                         filename, chunk_size, ASIF_MAX_CHUNK_SIZE);
    g->block_size = block_size;
    g->chunk_size = chunk_size;
    g->sectors_per_chunk = chunk_size / block_size;
    /* Four sectors a bitmap byte: a chunk's bitmap must be whole bytes. */
    if (g->sectors_per_chunk % 4)
        return img_error(-ENOTSUP,
                         "asif: '%s' has %" PRIu32
                         " sectors a chunk, not a multiple of 4: this layout is not characterised",
                         filename, g->sectors_per_chunk);
    g->bitmap_per_chunk = g->sectors_per_chunk / 4;
    g->chunks_per_group = 4 * block_size;
    g->group_bytes = 8 * (g->chunks_per_group + 1);
    g->groups_per_table = chunk_size / g->group_bytes;
    if (g->groups_per_table == 0)
        return img_error(-EINVAL,
                         "asif: '%s' has chunk size %" PRIu32
                         ", too small for one chunk group of %" PRIu32 " bytes",
                         filename, chunk_size, g->group_bytes);
    g->chunks_per_table = (uint64_t)g->groups_per_table * g->chunks_per_group;
    if (mul_overflows_u64(max_sectors, block_size, &g->max_bytes) || g->max_bytes > INT64_MAX)
        return img_error(-EFBIG, "asif: '%s' has a maximum sector count %" PRIu64 " too large",
                         filename, max_sectors);
    uint64_t table_bytes = g->chunks_per_table * chunk_size; /* below 2^50: no overflow */
    g->dir_entries = g->max_bytes / table_bytes + (g->max_bytes % table_bytes != 0);
    if (g->dir_entries > ASIF_MAX_DIR_ENTRIES)
        return img_error(-EFBIG, "asif: '%s' needs %" PRIu64 " directory entries (more than %u)",
                         filename, g->dir_entries, ASIF_MAX_DIR_ENTRIES);
    g->dir_bytes = 8 * (g->dir_entries + 1);
    return 0;
}

void asif_place_of(const struct asif_geometry *g, uint64_t chunk, struct asif_place *p)
{
    p->table = chunk / g->chunks_per_table;
    uint64_t within = chunk % g->chunks_per_table;
    p->group = within / g->chunks_per_group;
    p->slot = (uint32_t)(within % g->chunks_per_group);
    p->group_off = p->group * g->group_bytes;
}
