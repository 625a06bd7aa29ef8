/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Where guest data lives: a data cluster (DATA), a zero cluster (ZERO), or nothing in this
 * layer (UNALLOCATED: the backing file, or zeros). A run is extended over the following
 * entries of the same slice while they continue it. An offset QEMU would refuse (unaligned,
 * inside the header, past the end of the file) fails the read, as in QEMU.
 */
#include <errno.h>
#include <inttypes.h>

#include "error.h"
#include "formats/qed/qed.h"
#include "util/checked.h"

int qed_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext)
{
    struct qed_state *s = img->priv;
    uint64_t cs = s->hdr.cluster_size;
    uint64_t cluster = offset / cs, in_cluster = offset % cs;
    uint64_t l1_index = cluster / s->table_entries;
    uint64_t l2_index = cluster % s->table_entries;
    uint64_t slice = l2_index / QED_SLICE_ENTRIES, first = l2_index % QED_SLICE_ENTRIES;
    length = min_u64(length, img->size - offset);
    *ext = (struct img_extent){.kind = EXTENT_UNALLOCATED};

    pthread_mutex_lock(&s->lock);
    uint64_t l2 = s->l1[l1_index];
    if (l2 == 0) {
        /* No L2 table: the rest of its span is unallocated. */
        uint64_t span_left = (s->table_entries - l2_index) * cs - in_cluster;
        pthread_mutex_unlock(&s->lock);
        ext->length = min_u64(length, span_left);
        return 0;
    }
    if (!qed_table_offset_valid(s, l2)) {
        pthread_mutex_unlock(&s->lock);
        return img_error(
            -EIO, "qed: '%s': L2 table offset 0x%" PRIx64 " (L1 entry %" PRIu64 ") is invalid",
            img->filename, l2, l1_index);
    }
    uint64_t *entries;
    int ret = qed_l2_slice(img, l2, slice, &entries);
    if (ret < 0) {
        pthread_mutex_unlock(&s->lock);
        return ret;
    }
    uint64_t e = entries[first];
    bool data = e > QED_CLUSTER_ZERO;
    if (data && !qed_cluster_offset_valid(s, e)) {
        pthread_mutex_unlock(&s->lock);
        return img_error(
            -EIO, "qed: '%s': cluster offset 0x%" PRIx64 " (guest offset %" PRIu64 ") is invalid",
            img->filename, e, offset);
    }
    uint64_t run = min_u64(cs - in_cluster, length);
    for (uint64_t i = first + 1; i < QED_SLICE_ENTRIES && run < length; i++) {
        uint64_t next = entries[i];
        bool same =
            data ? next == e + (i - first) * cs && qed_cluster_offset_valid(s, next) : next == e;
        if (!same)
            break;
        run = min_u64(run + cs, length);
    }
    pthread_mutex_unlock(&s->lock);
    ext->length = run;
    if (data) {
        ext->kind = EXTENT_DATA;
        ext->file = img->file;
        ext->host_offset = e + in_cluster;
        ext->host_offset_valid = true;
    } else if (e == QED_CLUSTER_ZERO) {
        ext->kind = EXTENT_ZERO;
    }
    return 0;
}
