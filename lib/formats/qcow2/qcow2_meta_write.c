/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * L1 and L2 updates. An L2 entry is changed in its cached slice, which stays pinned (so map()
 * sees the change at once and the slice cannot be evicted) until qcow2_flush_caches() writes
 * it. The write-back keeps the crash-safe order: data and refcounts durable first, then the
 * tables that point at them, and only then the refcount decreases of what they stopped using.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_writer.h"
#include "imgutil.h"
#include "io/io.h"
#include "util/array.h"
#include "util/checked.h"
#include "util/endian.h"

/* Stores one big-endian table word so that concurrent readers never see it torn. */
static void store_word(uint8_t *p, uint64_t value)
{
    uint64_t be;
    store_be64(&be, value);
    __atomic_store_n((uint64_t *)(void *)p, be, __ATOMIC_RELEASE);
}

void qcow2_l1_encode(const uint64_t *l1, uint64_t first, uint64_t count, uint64_t clear,
                     uint8_t *out)
{
    for (uint64_t i = 0; i < count; i++)
        store_be64(out + i * 8, l1[first + i] & ~clear);
}

void qcow2_l1_mark_dirty(struct qcow2_state *s, uint32_t first, uint32_t count)
{
    struct qcow2_writer *w = s->writer;
    if (count == 0)
        return;
    if (!w->l1_dirty) {
        w->l1_dirty = true;
        w->l1_dirty_lo = first;
        w->l1_dirty_hi = first + count;
        return;
    }
    if (first < w->l1_dirty_lo)
        w->l1_dirty_lo = first;
    if (first + count > w->l1_dirty_hi)
        w->l1_dirty_hi = first + count;
}

int qcow2_l2_prepare(struct qcow2_state *s, uint64_t guest_cluster)
{
    uint64_t l1_index = guest_cluster >> s->l2_bits;
    if (l1_index >= s->l1_size)
        return img_error(-EIO, "qcow2: guest cluster %" PRIu64 " is past the L1 table",
                         guest_cluster);
    uint64_t l1e = s->l1_table[l1_index];
    uint64_t old = l1e & QCOW2_L1E_OFFSET_MASK;
    if (old & (s->cluster_size - 1))
        return img_error(-EIO,
                         "qcow2: L2 table offset 0x%" PRIx64 " is not cluster-aligned (L1 index "
                         "%" PRIu64 ")",
                         old, l1_index);
    if (old && (l1e & QCOW2_OFLAG_COPIED)) {
        /* Entries set in this table are written back there: it must be a place of its own. */
        int ret = qcow2_overlap_check_within_file(s, "L2 table", old, s->cluster_size);
        if (ret == 0)
            ret = qcow2_overlap_check_rewrite(s, QCOW2_META_ACTIVE_L2, old, s->cluster_size);
        return ret;
    }

    uint8_t *table = calloc(1, s->cluster_size);
    if (!table)
        return img_error(-ENOMEM, "out of memory");
    int ret = 0;
    if (old) {
        /* Shared with a snapshot: never changed in place, so the file holds it all. */
        ret = io_pread(s->file, table, s->cluster_size, old);
        if (ret < 0)
            img_error_prefix("qcow2: cannot read the L2 table at 0x%" PRIx64, old);
    }
    uint64_t fresh = 0;
    if (ret == 0)
        ret = qcow2_alloc_clusters(s, 1, &fresh);
    if (ret == 0) {
        ret = io_pwrite(s->file, table, s->cluster_size, fresh);
        if (ret < 0) {
            img_error(ret, "qcow2: cannot write a new L2 table: %s", img_strerror(ret));
            qcow2_refcount_update(s, fresh, s->cluster_size, -1);
        }
    }
    free(table);
    if (ret < 0)
        return ret;
    /* The cluster may have been an L2 table before: drop what the cache remembers of it. */
    qcow2_cache_invalidate(s->l2_cache, fresh, s->cluster_size);
    s->writer->unsynced = true;
    __atomic_store_n(&s->l1_table[l1_index], fresh | QCOW2_OFLAG_COPIED, __ATOMIC_RELEASE);
    qcow2_l1_mark_dirty(s, (uint32_t)l1_index, 1);
    qcow2_overlap_link(s, false, fresh);
    if (old) {
        qcow2_overlap_unlink_l2(s, old);
        return qcow2_free_clusters(s, old, s->cluster_size);
    }
    return 0;
}

/* The dirty record of the slice at host offset `slice_offset`, pinning it on first use. */
static int dirty_slice(struct qcow2_state *s, uint64_t slice_offset, struct qcow2_dirty_slice **out)
{
    struct qcow2_writer *w = s->writer;
    for (size_t i = w->nb_dirty; i-- > 0;) {
        if (w->dirty[i].offset == slice_offset) {
            *out = &w->dirty[i];
            return 0;
        }
    }
    int ret = ARRAY_RESERVE(w->dirty, w->cap_dirty, w->nb_dirty + 1);
    if (ret < 0)
        return ret;
    struct qcow2_dirty_slice *d = &w->dirty[w->nb_dirty];
    const uint8_t *data;
    ret = qcow2_cache_get(s->l2_cache, slice_offset, &d->entry, &data);
    if (ret < 0)
        return ret;
    /* The cache owns the bytes; writers change them in place under s->lock. */
    d->data = (uint8_t *)data;
    d->offset = slice_offset;
    d->lo = UINT32_MAX;
    d->hi = 0;
    w->nb_dirty++;
    *out = d;
    return 0;
}

int qcow2_l2_set(struct qcow2_state *s, uint64_t guest_cluster, uint64_t entry, uint64_t bitmap)
{
    uint64_t l1_index = guest_cluster >> s->l2_bits;
    if (l1_index >= s->l1_size)
        return img_error(-EIO, "qcow2: guest cluster %" PRIu64 " is past the L1 table",
                         guest_cluster);
    uint64_t l1e = s->l1_table[l1_index];
    uint64_t l2_offset = l1e & QCOW2_L1E_OFFSET_MASK;
    if (!l2_offset || !(l1e & QCOW2_OFLAG_COPIED) || (l2_offset & (s->cluster_size - 1)))
        return img_error(-EIO,
                         "qcow2: L2 table for guest cluster %" PRIu64 " is not writable "
                         "(L1 entry 0x%016" PRIx64 ")",
                         guest_cluster, l1e);
    uint32_t slice_bytes = qcow2_l2_slice_bytes(s);
    uint64_t byte = (guest_cluster & (s->l2_entries - 1)) * s->l2_entry_bytes;
    struct qcow2_dirty_slice *d = NULL;
    int ret = dirty_slice(s, l2_offset + (byte & ~(uint64_t)(slice_bytes - 1)), &d);
    if (ret < 0)
        return ret;
    uint32_t at = (uint32_t)(byte & (slice_bytes - 1));
    uint8_t *p = d->data + at;
    if (s->extended_l2) {
        /* Two words: readers retry while the count is odd or has moved (see qcow2_l2.c). */
        uint64_t seq = __atomic_load_n(&s->l2_update_seq, __ATOMIC_RELAXED);
        __atomic_store_n(&s->l2_update_seq, seq + 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_RELEASE);
        store_word(p, entry);
        store_word(p + 8, bitmap);
        __atomic_store_n(&s->l2_update_seq, seq + 2, __ATOMIC_RELEASE);
    } else {
        store_word(p, entry);
    }
    if (at < d->lo)
        d->lo = at;
    if (at + s->l2_entry_bytes > d->hi)
        d->hi = at + s->l2_entry_bytes;
    return 0;
}

static int sync_files(struct qcow2_state *s)
{
    int ret = 0;
    if (s->data_file)
        ret = io_fsync(s->data_file);
    if (ret == 0)
        ret = io_fsync(s->file);
    if (ret < 0)
        return img_error(ret, "qcow2: flush failed: %s", img_strerror(ret));
    return 0;
}

static int write_reftable_entries(struct qcow2_state *s)
{
    struct qcow2_writer *w = s->writer;
    uint64_t lo = w->reftable_dirty_lo, hi = w->reftable_dirty_hi;
    uint64_t n = hi - lo;
    int ret = qcow2_overlap_check_rewrite(s, QCOW2_META_REFCOUNT_TABLE,
                                          s->hdr.refcount_table_offset + lo * 8, n * 8);
    if (ret < 0)
        return ret;
    uint8_t *buf = malloc(n * 8);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    for (uint64_t i = 0; i < n; i++)
        store_be64(buf + i * 8, s->refcount_table[lo + i]);
    ret = io_pwrite(s->file, buf, n * 8, s->hdr.refcount_table_offset + lo * 8);
    free(buf);
    if (ret < 0)
        return img_error(ret, "qcow2: cannot write the refcount table: %s", img_strerror(ret));
    w->reftable_dirty = false;
    return 0;
}

static int write_l1_entries(struct qcow2_state *s)
{
    struct qcow2_writer *w = s->writer;
    uint32_t lo = w->l1_dirty_lo, hi = w->l1_dirty_hi;
    if (hi > s->l1_size)
        hi = s->l1_size;
    if (lo >= hi) {
        w->l1_dirty = false;
        return 0;
    }
    int ret = qcow2_overlap_check_rewrite(s, QCOW2_META_ACTIVE_L1,
                                          s->hdr.l1_table_offset + lo * 8ull, (hi - lo) * 8ull);
    if (ret < 0)
        return ret;
    uint8_t *buf = malloc((size_t)(hi - lo) * 8);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    qcow2_l1_encode(s->l1_table, lo, hi - lo, 0, buf);
    ret = io_pwrite(s->file, buf, (size_t)(hi - lo) * 8, s->hdr.l1_table_offset + lo * 8ull);
    free(buf);
    if (ret < 0)
        return img_error(ret, "qcow2: cannot write the L1 table: %s", img_strerror(ret));
    w->l1_dirty = false;
    return 0;
}

static int write_dirty_slices(struct qcow2_state *s)
{
    struct qcow2_writer *w = s->writer;
    size_t done = 0;
    int ret = 0;
    for (; done < w->nb_dirty; done++) {
        struct qcow2_dirty_slice *d = &w->dirty[done];
        if (d->lo < d->hi) {
            ret = io_pwrite(s->file, d->data + d->lo, d->hi - d->lo, d->offset + d->lo);
            if (ret < 0) {
                img_error(ret, "qcow2: cannot write an L2 table: %s", img_strerror(ret));
                break;
            }
        }
        qcow2_cache_put(s->l2_cache, d->entry);
    }
    /* Keep what could not be written (still pinned) for the next attempt. */
    memmove(w->dirty, w->dirty + done, (w->nb_dirty - done) * sizeof(*w->dirty));
    w->nb_dirty -= done;
    return ret;
}

/* Drops the deferred references; clusters nobody uses any more are given back to the host. */
static int apply_frees(struct qcow2_state *s)
{
    struct qcow2_writer *w = s->writer;
    size_t done = 0;
    int ret = 0;
    for (; done < w->nb_frees; done++) {
        const struct qcow2_pending_free *f = &w->frees[done];
        ret = qcow2_refcount_update(s, f->offset, f->length, -1);
        if (ret < 0)
            break;
        uint64_t first = f->offset >> s->cluster_bits;
        uint64_t last = (f->offset + f->length - 1) >> s->cluster_bits;
        for (uint64_t c = first; c <= last; c++) {
            uint64_t v;
            if (qcow2_refcount_get_locked(s, c, &v) == 0 && v == 0)
                (void)io_punch_hole(s->file, c << s->cluster_bits, s->cluster_size);
        }
    }
    memmove(w->frees, w->frees + done, (w->nb_frees - done) * sizeof(*w->frees));
    w->nb_frees -= done;
    return ret;
}

int qcow2_flush_caches(struct qcow2_state *s, bool sync)
{
    struct qcow2_writer *w = s->writer;
    if (!w)
        return 0;
    /* Held metadata of a corrupt image stays unwritten, as in QEMU. */
    int usable = qcow2_writer_usable(s);
    if (usable < 0)
        return usable;
    bool tables = w->nb_dirty || w->l1_dirty || w->reftable_dirty;
    int ret;
    if (tables || w->nb_frees) {
        /* Data, refcounts and new tables first: what the tables will point at. */
        ret = sync_files(s);
        if (ret < 0)
            return ret;
        w->unsynced = false;
    }
    if (w->reftable_dirty) {
        ret = write_reftable_entries(s);
        if (ret == 0 && (w->nb_dirty || w->l1_dirty))
            ret = sync_files(s);
        if (ret < 0)
            return ret;
    }
    if (w->nb_dirty) {
        ret = write_dirty_slices(s);
        if (ret < 0)
            return ret;
    }
    if (w->l1_dirty) {
        ret = write_l1_entries(s);
        if (ret < 0)
            return ret;
    }
    if (w->nb_frees) {
        /* References dropped by the tables just written: those must be durable first. */
        if (tables) {
            ret = sync_files(s);
            if (ret < 0)
                return ret;
        }
        ret = apply_frees(s);
        if (ret < 0)
            return ret;
        w->unsynced = true;
    } else if (tables) {
        w->unsynced = true;
    }
    /* Guest data written in place never passes through here: a sync always syncs. */
    if (sync) {
        ret = sync_files(s);
        if (ret < 0)
            return ret;
        w->unsynced = false;
    }
    return 0;
}
