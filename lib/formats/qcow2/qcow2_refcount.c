/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Reference counts: the refcount table (loaded on first use; at most 8 MiB) points at refcount
 * blocks of one cluster, each an array of 2^refcount_order-bit entries. Blocks are read in
 * slices through their own cache.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "error.h"
#include "formats/qcow2/qcow2.h"
#include "io/io.h"
#include "util/endian.h"

uint64_t qcow2_refcount_entry_get(const uint8_t *block, uint64_t index, uint32_t order)
{
    switch (order) {
    case 0:
    case 1:
    case 2: {
        /* Sub-byte widths: entry 0 occupies the least significant bits of byte 0. */
        uint64_t bit = index << order;
        unsigned width_mask = (1u << (1u << order)) - 1;
        return (block[bit >> 3] >> (bit & 7)) & width_mask;
    }
    case 3:
        return block[index];
    case 4:
        return load_be16(block + index * 2);
    case 5:
        return load_be32(block + index * 4);
    default:
        return load_be64(block + index * 8);
    }
}

void qcow2_refcount_entry_set(uint8_t *block, uint64_t index, uint32_t order, uint64_t value)
{
    switch (order) {
    case 0:
    case 1:
    case 2: {
        uint64_t bit = index << order;
        unsigned width_mask = (1u << (1u << order)) - 1;
        unsigned shift = (unsigned)(bit & 7);
        uint8_t *b = &block[bit >> 3];
        *b = (uint8_t)((*b & ~(width_mask << shift)) | ((value & width_mask) << shift));
        break;
    }
    case 3:
        block[index] = (uint8_t)value;
        break;
    case 4:
        store_be16(block + index * 2, (uint16_t)value);
        break;
    case 5:
        store_be32(block + index * 4, (uint32_t)value);
        break;
    default:
        store_be64(block + index * 8, value);
        break;
    }
}

int qcow2_refcount_load_table(struct qcow2_state *s)
{
    pthread_mutex_lock(&s->lock);
    if (s->refcount_table_loaded) {
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    /* Size and place were checked at open against the 8 MiB limit and the file size. */
    uint64_t bytes = (uint64_t)s->hdr.refcount_table_clusters << s->cluster_bits;
    uint64_t entries = bytes / sizeof(uint64_t);
    uint64_t *table = malloc(bytes ? bytes : 1);
    int ret = -ENOMEM;
    if (!table) {
        img_error(ret, "out of memory");
        goto out;
    }
    ret = io_pread(s->file, table, bytes, s->hdr.refcount_table_offset);
    if (ret < 0) {
        img_error_prefix("qcow2: cannot read the refcount table");
        free(table);
        goto out;
    }
    for (uint64_t i = 0; i < entries; i++)
        table[i] = load_be64(&table[i]);
    s->refcount_table = table;
    s->refcount_table_entries = entries;
    s->refcount_table_loaded = true;
out:
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_refcount_get(struct qcow2_state *s, uint64_t cluster_index, uint64_t *value)
{
    *value = 0;
    int ret = qcow2_refcount_load_table(s);
    if (ret < 0)
        return ret;
    uint64_t table_index = cluster_index >> s->refcount_block_bits;
    if (table_index >= s->refcount_table_entries)
        return 0;
    uint64_t block_offset = s->refcount_table[table_index] & QCOW2_REFT_OFFSET_MASK;
    if (block_offset == 0)
        return 0;
    if (block_offset & (s->cluster_size - 1))
        return img_error(-EIO,
                         "qcow2: refcount block offset 0x%" PRIx64 " is not cluster-aligned "
                         "(refcount table index %" PRIu64 ")",
                         block_offset, table_index);

    uint64_t index = cluster_index & ((1ull << s->refcount_block_bits) - 1);
    uint32_t slice_bytes = qcow2_cache_slice_bytes(s->refcount_cache);
    uint64_t byte = (index << s->refcount_order) >> 3;
    uint64_t slice_start = byte & ~(uint64_t)(slice_bytes - 1);
    uint64_t index_in_slice = index - ((slice_start << 3) >> s->refcount_order);

    struct qcow2_cache_entry *slice;
    const uint8_t *data;
    ret = qcow2_cache_get(s->refcount_cache, block_offset + slice_start, &slice, &data);
    if (ret < 0)
        return ret;
    *value = qcow2_refcount_entry_get(data, index_in_slice, s->refcount_order);
    qcow2_cache_put(s->refcount_cache, slice);
    return 0;
}
