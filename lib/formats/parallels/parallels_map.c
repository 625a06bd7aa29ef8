/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Where guest data lives: runs of clusters the catalog maps contiguously, or unallocated. */
#include "formats/parallels/parallels.h"
#include "util/checked.h"

/*
 * Under img->lock (a writer links entries while we read). Clusters past the catalog are
 * unallocated, as in QEMU. A run continues while each cluster's host sector follows the last
 * one's, so map reports what qemu-img map reports.
 */
int prl_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext)
{
    struct prl_state *s = img->priv;
    uint64_t cs = s->cluster_bytes;
    uint64_t idx = offset / cs;
    uint64_t in_cluster = offset % cs;
    uint64_t end = offset + length;

    pthread_mutex_lock(&img->lock);
    uint64_t first = idx < s->hdr.bat_entries ? prl_bat_sector(s, (uint32_t)idx) : 0;
    uint64_t covered = cs - in_cluster;
    uint64_t expect = first + s->hdr.tracks;
    for (uint64_t i = idx + 1; offset + covered < end; i++) {
        if (i >= s->hdr.bat_entries && !first) {
            covered = end - offset; /* past the catalog everything is unallocated */
            break;
        }
        uint64_t sector = i < s->hdr.bat_entries ? prl_bat_sector(s, (uint32_t)i) : 0;
        if (first ? sector != expect : sector != 0)
            break;
        covered += cs;
        expect += s->hdr.tracks;
    }
    pthread_mutex_unlock(&img->lock);

    ext->length = min_u64(covered, length);
    ext->file = s->data;
    if (first) {
        ext->kind = EXTENT_DATA;
        ext->host_offset = first * PRL_SECTOR + in_cluster;
        ext->host_offset_valid = true;
    } else {
        ext->kind = EXTENT_UNALLOCATED;
        ext->host_offset_valid = false;
    }
    return 0;
}
