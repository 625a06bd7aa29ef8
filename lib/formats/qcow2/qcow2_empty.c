/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * make_empty(): every guest cluster of the active table becomes unallocated, reading through
 * to the backing file, and what it held is released (qemu-img commit's emptying of the top).
 *
 * QEMU 7.2 (qcow2_make_empty) rebuilds the metadata of a v3 image without snapshots or bitmaps
 * from scratch (make_completely_empty), relying on the dirty bit while the refcounts are wrong,
 * and otherwise discards every cluster with full_discard, which leaves entries unallocated.
 * Only the second is done here, for every image: it changes L2 entries through the writer, so
 * the usual ordering holds (entries on disk before the clusters they named are released) and
 * a crash part way leaks at most. The guest view (qemu-img map) and check's verdict are
 * QEMU's; the L2 tables are kept, so the file does not shrink as QEMU's rebuild makes it.
 */
#include <errno.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_writer.h"
#include "image.h"
#include "util/checked.h"

/* Queues the release of the host space `entry` named (none in an external data file). */
static int release_entry(struct qcow2_state *s, uint64_t entry)
{
    if (qcow2_has_data_file(s))
        return 0;
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        uint64_t off, len;
        qcow2_compressed_decode(s, entry, &off, &len);
        return qcow2_free_clusters(s, off, len);
    }
    uint64_t host = qcow2_l2_entry_offset(entry);
    return host ? qcow2_free_clusters(s, host, s->cluster_size) : 0;
}

/*
 * Unallocates guest cluster `c` (s->lock held). *table_absent: the L1 entry is empty, so the
 * rest of its L2 span is unallocated already.
 */
static int empty_cluster(struct qcow2_state *s, uint64_t c, bool *table_absent)
{
    struct qcow2_l2_cursor cur = {0};
    uint64_t entry, bitmap;
    int ret = qcow2_l2_lookup(s, &cur, c, &entry, &bitmap, table_absent);
    qcow2_l2_cursor_release(s, &cur);
    if (ret < 0 || *table_absent || (entry == 0 && bitmap == 0))
        return ret;
    ret = qcow2_writer_begin_change(s);
    if (ret == 0)
        ret = qcow2_l2_prepare(s, c);
    if (ret == 0)
        ret = qcow2_l2_set(s, c, 0, 0);
    if (ret == 0)
        ret = release_entry(s, entry);
    return ret;
}

int qcow2_make_empty(struct img *img)
{
    struct qcow2_state *s = img->priv;
    if (!s->writer)
        return img_error(-EROFS, "qcow2: the image is opened read-only");
    int ret = qcow2_writer_usable(s);
    uint64_t clusters = (img->size + s->cluster_size - 1) >> s->cluster_bits;
    for (uint64_t c = 0; ret == 0 && c < clusters;) {
        uint64_t table_end = min_u64(clusters, (c | (s->l2_entries - 1)) + 1);
        pthread_mutex_lock(&s->lock);
        bool table_absent = false;
        for (; ret == 0 && c < table_end && !table_absent; c++)
            ret = empty_cluster(s, c, &table_absent);
        if (ret == 0)
            ret = qcow2_writer_maybe_flush(s);
        pthread_mutex_unlock(&s->lock);
        c = table_absent ? table_end : c;
    }
    if (ret == 0) {
        pthread_mutex_lock(&s->lock);
        ret = qcow2_flush_caches(s, true);
        pthread_mutex_unlock(&s->lock);
    }
    return ret;
}
