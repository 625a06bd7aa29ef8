/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Host space: runs of free clusters (refcount 0, reused or past the end of the file), byte
 * ranges for compressed clusters packed several to a host cluster as QEMU packs them, and
 * references dropped only once the metadata that held them is on disk.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "error.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_writer.h"
#include "util/array.h"
#include "util/checked.h"

/* Restarts of a search after placing refcount blocks; more means the refcounts are damaged. */
#define MAX_ALLOC_ROUNDS 64

/*
 * Finds `count` consecutive clusters with refcount 0 from `from`. *first_free is the first free
 * cluster seen (the next search may start there).
 */
static int find_free_run(struct qcow2_state *s, uint64_t from, uint64_t count, uint64_t *start,
                         uint64_t *first_free)
{
    uint64_t run_start = from, run = 0;
    uint64_t block_span = 1ull << s->refcount_block_bits;
    *first_free = UINT64_MAX;
    for (uint64_t i = from; run < count;) {
        uint64_t t = i >> s->refcount_block_bits;
        bool no_block =
            t >= s->refcount_table_entries || !(s->refcount_table[t] & QCOW2_REFT_OFFSET_MASK);
        uint64_t v = 0;
        if (!no_block) {
            int ret = qcow2_refcount_get_locked(s, i, &v);
            if (ret < 0)
                return ret;
        }
        if (v) {
            run = 0;
            i++;
            continue;
        }
        if (*first_free == UINT64_MAX)
            *first_free = i;
        if (run == 0)
            run_start = i;
        /* A range without a block is free as a whole. */
        uint64_t take = no_block ? min_u64(count - run, ((t + 1) * block_span) - i) : 1;
        run += take;
        i += take;
    }
    *start = run_start;
    return 0;
}

int qcow2_alloc_clusters(struct qcow2_state *s, uint64_t count, uint64_t *host_offset)
{
    struct qcow2_writer *w = s->writer;
    if (!w)
        return img_error(-EROFS, "qcow2: the image is opened read-only");
    int usable = qcow2_writer_usable(s);
    if (usable < 0)
        return usable;
    if (count == 0 || count > (UINT64_MAX >> s->cluster_bits) / 2)
        return img_error(-EINVAL, "qcow2: cannot allocate %" PRIu64 " clusters", count);
    /* Each round places one refcount block the run lacks. */
    uint64_t rounds = MAX_ALLOC_ROUNDS + (count >> s->refcount_block_bits);
    for (uint64_t round = 0; round < rounds; round++) {
        uint64_t start, first_free;
        int ret = find_free_run(s, w->free_cluster_index, count, &start, &first_free);
        if (ret < 0)
            return ret;
        uint64_t end = start + count;
        if ((end << s->cluster_bits) >> s->cluster_bits != end ||
            (end << s->cluster_bits) > (uint64_t)INT64_MAX)
            return img_error(-EFBIG, "qcow2: the image file would grow past the largest offset");
        /*
         * As in QEMU, the search goes on after the run: gaps it skipped are used again only
         * once something below them is freed. Refcount blocks the run needs go after it.
         */
        w->free_cluster_index = end;
        if (end > w->end_cluster)
            w->end_cluster = end;
        uint64_t missing = UINT64_MAX;
        for (uint64_t t = start >> s->refcount_block_bits; t <= (end - 1) >> s->refcount_block_bits;
             t++) {
            if (t >= s->refcount_table_entries ||
                !(s->refcount_table[t] & QCOW2_REFT_OFFSET_MASK)) {
                missing = t;
                break;
            }
        }
        if (missing != UINT64_MAX) {
            bool allocated;
            ret = qcow2_refcount_block_ensure(s, missing, &allocated);
            if (ret < 0)
                return ret;
            /*
             * The block went after the run, which is still free: search from the run again.
             * (Moving on past it instead would meet a range without a block at every step
             * when runs start on range boundaries, and march through the file.)
             */
            w->free_cluster_index = start;
            continue;
        }
        /* Damaged refcounts may call metadata free: never hand it out. */
        ret = qcow2_overlap_check(s, start << s->cluster_bits, count << s->cluster_bits);
        if (ret < 0)
            return ret;
        ret = qcow2_refcount_update(s, start << s->cluster_bits, count << s->cluster_bits, 1);
        if (ret < 0)
            return ret;
        *host_offset = start << s->cluster_bits;
        return 0;
    }
    return img_error(-EIO, "qcow2: cannot find free clusters (refcounts damaged?)");
}

int qcow2_alloc_bytes(struct qcow2_state *s, uint64_t size, uint64_t *host_offset)
{
    struct qcow2_writer *w = s->writer;
    if (size == 0 || size >= s->cluster_size)
        return img_error(-EINVAL, "qcow2: cannot pack %" PRIu64 " bytes", size);
    uint64_t off = w->free_byte_offset;
    uint64_t mask = s->cluster_size - 1;
    if (off) {
        uint64_t v;
        int ret = qcow2_refcount_get_locked(s, off >> s->cluster_bits, &v);
        if (ret < 0)
            return ret;
        /* A cluster whose refcount is full (or was freed meanwhile) takes no more. */
        if (v == 0 || v >= s->refcount_max)
            off = 0;
    }
    int ret;
    if (off && s->cluster_size - (off & mask) >= size) {
        ret = qcow2_refcount_update(s, off, size, 1);
        if (ret < 0)
            return ret;
    } else {
        uint64_t fresh;
        ret = qcow2_alloc_clusters(s, 1, &fresh);
        if (ret < 0)
            return ret;
        if (off && fresh == align_up_u64(off, s->cluster_size)) {
            /* Continues the open cluster: the stream spans both, each counts it once. */
            ret = qcow2_refcount_update(s, off, 1, 1);
            if (ret < 0) {
                qcow2_refcount_update(s, fresh, s->cluster_size, -1);
                return ret;
            }
        } else {
            off = fresh;
        }
    }
    *host_offset = off;
    w->free_byte_offset = (off + size) & mask ? off + size : 0;
    return 0;
}

int qcow2_free_clusters(struct qcow2_state *s, uint64_t host_offset, uint64_t length)
{
    struct qcow2_writer *w = s->writer;
    if (length == 0)
        return 0;
    int ret = ARRAY_RESERVE(w->frees, w->cap_frees, w->nb_frees + 1);
    if (ret < 0)
        return ret;
    w->frees[w->nb_frees].offset = host_offset;
    w->frees[w->nb_frees].length = length;
    w->nb_frees++;
    return 0;
}
