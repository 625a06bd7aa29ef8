/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Sizes and bit positions that follow from cluster_bits, extended L2 and refcount_order. */
#include "formats/qcow2/qcow2.h"

void qcow2_geometry_init(struct qcow2_state *s, uint32_t cluster_bits, bool extended_l2,
                         uint32_t refcount_order)
{
    s->cluster_bits = cluster_bits;
    s->cluster_size = 1u << cluster_bits;
    s->extended_l2 = extended_l2;
    s->l2_entry_bytes = extended_l2 ? 16 : 8;
    s->l2_bits = cluster_bits - (extended_l2 ? 4 : 3);
    s->l2_entries = 1u << s->l2_bits;
    s->subcluster_bits = extended_l2 ? cluster_bits - 5 : cluster_bits;
    s->subcluster_size = 1u << s->subcluster_bits;

    /* Compressed descriptors: the sector count sits above the host offset, growing with clusters.
     */
    s->csize_shift = 62 - (cluster_bits - 8);
    s->csize_mask = (1u << (cluster_bits - 8)) - 1;
    s->compressed_offset_mask = (1ull << s->csize_shift) - 1;

    s->refcount_order = refcount_order;
    s->refcount_bits = 1u << refcount_order;
    s->refcount_block_bits = cluster_bits + 3 - refcount_order;
    s->refcount_max = refcount_order >= 6 ? UINT64_MAX : (1ull << s->refcount_bits) - 1;
}

uint64_t qcow2_l1_entries_for_size(uint32_t cluster_bits, uint32_t l2_bits, uint64_t size)
{
    uint32_t shift = cluster_bits + l2_bits; /* bytes mapped by one L2 table: at most 2^39 */
    return (size >> shift) + ((size & ((1ull << shift) - 1)) != 0);
}
