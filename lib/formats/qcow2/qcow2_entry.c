/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Decoding single L2 entries: cluster and subcluster types, compressed descriptors. */
#include "formats/qcow2/qcow2.h"

enum qcow2_subcluster_type qcow2_subcluster_type(const struct qcow2_state *s, uint64_t entry,
                                                 uint64_t bitmap, unsigned sc, bool has_data_file)
{
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return QCOW2_SC_COMPRESSED;
    uint64_t offset = qcow2_l2_entry_offset(entry);
    /*
     * Offset 0 normally means unallocated, but it is a valid place in an external data file;
     * there every cluster has refcount 1, so the COPIED bit tells the two apart.
     */
    bool allocated = offset != 0 || (has_data_file && (entry & QCOW2_OFLAG_COPIED));

    if (!s->extended_l2) {
        if (entry & QCOW2_OFLAG_ZERO)
            return offset ? QCOW2_SC_ZERO_ALLOC : QCOW2_SC_ZERO_PLAIN;
        return allocated ? QCOW2_SC_NORMAL : QCOW2_SC_UNALLOCATED_PLAIN;
    }

    /* Extended L2: bit 0 of the entry is unused; the bitmap says what each subcluster is. */
    uint32_t alloc_bits = (uint32_t)bitmap;
    uint32_t zero_bits = (uint32_t)(bitmap >> 32);
    uint32_t bit = 1u << sc;
    if (allocated) {
        if (alloc_bits & zero_bits)
            return QCOW2_SC_INVALID;
        if (zero_bits & bit)
            return QCOW2_SC_ZERO_ALLOC;
        if (alloc_bits & bit)
            return QCOW2_SC_NORMAL;
        return QCOW2_SC_UNALLOCATED_ALLOC;
    }
    if (alloc_bits)
        return QCOW2_SC_INVALID;
    return (zero_bits & bit) ? QCOW2_SC_ZERO_PLAIN : QCOW2_SC_UNALLOCATED_PLAIN;
}

unsigned qcow2_subcluster_run(const struct qcow2_state *s, uint64_t entry, uint64_t bitmap,
                              unsigned sc, bool has_data_file)
{
    if (!s->extended_l2)
        return 1; /* the cluster is the unit */
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return QCOW2_SUBCLUSTERS - sc; /* compressed clusters have no subclusters */
    enum qcow2_subcluster_type type = qcow2_subcluster_type(s, entry, bitmap, sc, has_data_file);
    unsigned n = 1;
    while (sc + n < QCOW2_SUBCLUSTERS &&
           qcow2_subcluster_type(s, entry, bitmap, sc + n, has_data_file) == type)
        n++;
    return n;
}

void qcow2_compressed_decode(const struct qcow2_state *s, uint64_t entry, uint64_t *host_offset,
                             uint64_t *length)
{
    uint64_t offset = entry & s->compressed_offset_mask;
    uint64_t sectors = ((entry >> s->csize_shift) & s->csize_mask) + 1;
    *host_offset = offset;
    *length = sectors * QCOW2_COMPRESSED_SECTOR - (offset & (QCOW2_COMPRESSED_SECTOR - 1));
}
