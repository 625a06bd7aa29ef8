/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * measure(): the size of the ASIF image convert makes (qemu-img has no ASIF). Everything in
 * the file is a whole chunk (LAYOUT.md, "Writing rules"): the four chunks create writes, then,
 * taken at the end of the file as needed, a table chunk for every directory entry whose range
 * holds data, a data chunk for every chunk of the source holding data, and a bitmap chunk for
 * every chunk group in which a chunk is only partly written. Which chunks end up partly
 * written depends on the data, so "required" counts a bitmap for every group holding data: an
 * upper bound, exact when every group has a partly written chunk. "fully-allocated" needs a
 * bitmap only where the last chunk is partial.
 */
#include <errno.h>
#include <inttypes.h>

#include "error.h"
#include "formats/asif/asif.h"
#include "formats/format.h"

#define CREATED_CHUNKS 4u /* header and directories, the metadata's table, metadata, bitmap */

int asif_measure(const struct img_measure_args *args, struct img_measure_result *out)
{
    struct asif_geometry g;
    int ret = asif_geometry_init(&g, ASIF_CREATE_BLOCK_SIZE, ASIF_CREATE_CHUNK_SIZE,
                                 ASIF_CREATE_MAX_BYTES / ASIF_CREATE_BLOCK_SIZE, "(measure)");
    if (ret < 0)
        return ret;
    /* asif_create's limit and message: the metadata's chunk ends the guest space. */
    uint64_t limit = (g.max_bytes / g.chunk_size - 1) * g.chunk_size;
    if (args->size > limit)
        return img_error(-EFBIG,
                         "asif: size %" PRIu64 " is larger than the largest ASIF image (%" PRIu64
                         " bytes)",
                         args->size, limit);
    uint64_t chunk = g.chunk_size;
    uint64_t table_span = g.chunks_per_table * chunk;
    uint64_t group_span = (uint64_t)g.chunks_per_group * chunk;
    uint64_t data, tables, groups;
    if ((ret = measure_data_units(args, chunk, false, &data)) < 0 ||
        (ret = measure_data_units(args, table_span, false, &tables)) < 0 ||
        (ret = measure_data_units(args, group_span, false, &groups)) < 0)
        return ret;
    out->required = measure_host_bytes((CREATED_CHUNKS + tables + groups + data) * chunk);
    uint64_t size = args->size;
    uint64_t full = CREATED_CHUNKS + measure_units_of(size, table_span) +
                    measure_units_of(size, chunk) + (size % chunk != 0);
    out->fully_allocated = full * chunk;
    return 0;
}
