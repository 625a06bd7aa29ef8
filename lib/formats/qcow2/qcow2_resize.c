/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * resize(): growing writes a larger L1 table elsewhere and switches the header to it, puts the
 * new space in place (zeros over a larger backing file, preallocation), and writes the new size
 * last, so a failure leaves the old size and content; shrinking (asked for explicitly) releases
 * every cluster past the new end, clears the L1 entries past it and cuts the file after its last
 * used cluster, as qemu-img does. New space can be preallocated: metadata (L2 entries pointing at
 * reserved clusters), falloc or full.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_writer.h"
#include "image.h"
#include "io/io.h"
#include "opts.h"
#include "progress.h"
#include "util/checked.h"
#include "util/endian.h"

/* Zeros written per request for preallocation=full. */
#define FULL_CHUNK (1u << 20)

int qcow2_parse_prealloc(const char *text, enum qcow2_prealloc *out)
{
    static const char *const names[] = {"off", "metadata", "falloc", "full"};
    *out = QCOW2_PREALLOC_OFF;
    if (!text)
        return 0;
    for (int i = 0; i < 4; i++) {
        if (strcmp(text, names[i]) == 0) {
            *out = (enum qcow2_prealloc)i;
            return 0;
        }
    }
    return img_error(
        -EINVAL, "qcow2: invalid preallocation '%s' (allowed: off, metadata, falloc, full)", text);
}

int qcow2_l1_grow(struct qcow2_state *s, uint64_t entries, bool exact)
{
    struct qcow2_writer *w = s->writer;
    if (entries <= s->l1_size)
        return 0;
    uint64_t size = entries;
    if (!exact) {
        size = s->l1_size ? s->l1_size : 1;
        while (size < entries)
            size = (size * 3 + 1) / 2;
    }
    if (size > QCOW2_MAX_L1_BYTES / sizeof(uint64_t))
        return img_error(
            -EFBIG, "qcow2: an L1 table of %" PRIu64 " entries exceeds the 32 MiB limit", size);
    /* Room to keep the old table for lock-free readers, before anything changes. */
    int ret = qcow2_retire_reserve(w);
    if (ret < 0)
        return ret;
    uint64_t bytes = size * sizeof(uint64_t);
    uint64_t *table = calloc(size, sizeof(uint64_t));
    uint8_t *disk = calloc(1, bytes);
    if (!table || !disk) {
        free(table);
        free(disk);
        return img_error(-ENOMEM, "out of memory");
    }
    if (s->l1_size)
        memcpy(table, s->l1_table, s->l1_size * sizeof(uint64_t));
    qcow2_l1_encode(table, 0, s->l1_size, 0, disk);

    uint64_t offset;
    ret = qcow2_alloc_clusters(s, align_up_u64(bytes, s->cluster_size) >> s->cluster_bits, &offset);
    if (ret == 0) {
        ret = io_pwrite(s->file, disk, bytes, offset);
        if (ret < 0)
            img_error(ret, "qcow2: cannot write the new L1 table: %s", img_strerror(ret));
    }
    /* The table (and the L2 tables it names) must be durable before the header names it. */
    if (ret == 0)
        ret = io_fsync(s->file);
    if (ret == 0) {
        uint8_t field[12];
        store_be32(field, (uint32_t)size);
        store_be64(field + 4, offset);
        ret = io_pwrite(s->file, field, sizeof(field), 36);
        if (ret == 0)
            ret = io_fsync(s->file);
        if (ret < 0)
            img_error(ret, "qcow2: cannot switch to the new L1 table: %s", img_strerror(ret));
    }
    free(disk);
    if (ret < 0) {
        free(table);
        return ret;
    }
    uint64_t old_offset = s->hdr.l1_table_offset, old_size = s->l1_size;
    /* The swap cannot fail: readers that still hold the old table keep it until close. */
    uint64_t *old_table = s->l1_table;
    /* Readers see the larger table before its larger size. */
    __atomic_store_n(&s->l1_table, table, __ATOMIC_RELEASE);
    qcow2_retire_commit(w, old_table);
    __atomic_store_n(&s->l1_size, (uint32_t)size, __ATOMIC_RELEASE);
    s->hdr.l1_size = (uint32_t)size;
    s->hdr.l1_table_offset = offset;
    w->l1_dirty = false; /* the new table holds every entry */
    w->unsynced = false;
    if (old_size && old_offset)
        return qcow2_refcount_update(s, old_offset, old_size * sizeof(uint64_t), -1);
    return 0;
}

static int write_size_field(struct qcow2_state *s, uint64_t size)
{
    uint8_t field[8];
    store_be64(field, size);
    int ret = io_pwrite(s->file, field, sizeof(field), 24);
    if (ret == 0)
        ret = io_fsync(s->file);
    if (ret < 0)
        return img_error(ret, "qcow2: cannot write the new size: %s", img_strerror(ret));
    s->hdr.size = size;
    return 0;
}

/*
 * Writes zeros; progress says `done` + the bytes written so far of `total` (the caller's whole
 * preallocation), and a cancellation stops it between two writes.
 */
static int fill_zeros(struct io_file *f, uint64_t offset, uint64_t len, uint64_t done,
                      uint64_t total)
{
    uint8_t *zeros = calloc(1, FULL_CHUNK);
    if (!zeros)
        return img_error(-ENOMEM, "out of memory");
    int ret = 0;
    while (len && ret == 0) {
        uint64_t n = min_u64(len, FULL_CHUNK);
        ret = img_progress(done, total);
        if (ret == 0)
            ret = io_pwrite(f, zeros, n, offset);
        offset += n;
        len -= n;
        done += n;
    }
    free(zeros);
    return ret;
}

/*
 * The `bytes` at `host` were just allocated for entries that nothing writes: the file is
 * extended (sparsely) to `file_end`, their end as the file will hold it, before any L2 entry
 * names them. So a failure later on (no space for the next L2 table) leaves the entries and
 * refcounts inside the file, never past its end. When the file cannot grow, they are given back.
 */
static int cover_run(struct qcow2_state *s, uint64_t host, uint64_t bytes, uint64_t file_end)
{
    int64_t size = io_file_size(s->file);
    int ret = size < 0 ? (int)size : 0;
    /* Never shortens: tables written since may lie past the run. */
    if (ret == 0 && (uint64_t)size < file_end)
        ret = io_truncate(s->file, file_end);
    if (ret < 0) {
        img_error(ret, "qcow2: cannot extend the image file over preallocated clusters: %s",
                  img_strerror(ret));
        qcow2_refcount_update(s, host, bytes, -1);
    }
    return ret;
}

/* Reserves host space for guest clusters [first, end) that have none (s->lock held). */
static int preallocate_locked(struct qcow2_state *s, uint64_t first, uint64_t end,
                              uint64_t guest_end, enum qcow2_prealloc mode, uint64_t *file_end)
{
    struct io_file *data = qcow2_data_io(s);
    /* Space past the file's end at the start holds nothing old (only what is written now). */
    int64_t size = io_file_size(data);
    if (size < 0)
        return img_error((int)size, "qcow2: cannot read the size of the data file");
    uint64_t old_end = (uint64_t)size;
    int ret = qcow2_writer_begin_change(s);
    for (uint64_t c = first; ret == 0 && c < end;) {
        ret = qcow2_l2_prepare(s, c);
        if (ret < 0)
            break;
        uint64_t table_end = min_u64(end, (c | (s->l2_entries - 1)) + 1);
        struct qcow2_l2_cursor cur = {0};
        uint64_t run = 0;
        /* A run of clusters without host space; those that have some keep it. */
        for (; c + run < table_end; run++) {
            uint64_t entry, bitmap;
            bool no_l2;
            ret = qcow2_l2_lookup(s, &cur, c + run, &entry, &bitmap, &no_l2);
            if (ret < 0)
                break;
            /* Zero flags stay: such subclusters read zeros from the reserved space too. */
            bool empty = s->extended_l2 ? entry == 0 && (uint32_t)bitmap == 0
                                        : (entry & ~QCOW2_OFLAG_ZERO) == 0;
            if (!empty)
                break;
        }
        qcow2_l2_cursor_release(s, &cur);
        if (ret < 0)
            break;
        if (run == 0) {
            c++;
            continue;
        }
        uint64_t done = (c - first) << s->cluster_bits, total = (end - first) << s->cluster_bits;
        ret = img_progress(done, total);
        if (ret < 0)
            break;
        uint64_t host = c << s->cluster_bits;
        if (!qcow2_has_data_file(s))
            ret = qcow2_alloc_clusters(s, run, &host);
        uint64_t bytes = run << s->cluster_bits;
        /*
         * As QEMU: with subclusters nothing fills the rest of the last cluster, so the file
         * ends where the last guest byte lands; without, the whole cluster is there.
         */
        uint64_t run_end = host + bytes;
        uint64_t tail = align_up_u64(guest_end, s->subcluster_size) & (s->cluster_size - 1);
        if (s->extended_l2 && c + run == end && tail)
            run_end -= s->cluster_size - tail;
        if (ret == 0 && !qcow2_has_data_file(s))
            ret = cover_run(s, host, bytes, run_end);
        for (uint64_t k = 0; ret == 0 && k < run; k++) {
            uint64_t entry, bitmap = 0;
            bool no_l2;
            if (s->extended_l2) {
                ret = qcow2_l2_lookup(s, &cur, c + k, &entry, &bitmap, &no_l2);
                qcow2_l2_cursor_release(s, &cur);
            }
            if (ret == 0)
                ret = qcow2_l2_set(s, c + k, (host + (k << s->cluster_bits)) | QCOW2_OFLAG_COPIED,
                                   bitmap & ~0xffffffffull);
        }
        /* Reused clusters may hold old bytes; the guest must see zeros there. */
        if (ret == 0 && host < old_end && mode != QCOW2_PREALLOC_FULL)
            ret = qcow2_write_zero_bytes(data, host, min_u64(bytes, old_end - host));
        if (ret == 0 && mode == QCOW2_PREALLOC_FALLOC) {
            ret = io_preallocate(data, host, bytes);
            if (ret == -ENOTSUP)
                ret = 0;
        } else if (ret == 0 && mode == QCOW2_PREALLOC_FULL) {
            ret = fill_zeros(data, host, bytes, done, total);
        }
        if (ret == 0 && run_end > *file_end)
            *file_end = run_end;
        if (ret == 0)
            ret = qcow2_writer_maybe_flush(s);
        c += run;
    }
    return ret;
}

/* The index just past the last host cluster still in use. */
static int used_end(struct qcow2_state *s, uint64_t *end)
{
    for (uint64_t c = s->writer->end_cluster; c > 0; c--) {
        uint64_t v;
        int ret = qcow2_refcount_get_locked(s, c - 1, &v);
        if (ret < 0)
            return ret;
        if (v) {
            *end = c;
            return 0;
        }
    }
    *end = 0;
    return 0;
}

/*
 * falloc/full without an external data file, laid out as QEMU lays it out: a refcount area
 * sized for the new clusters past the last used cluster, then the data clusters right after
 * it; L2 tables come from the first free clusters.
 */
static int preallocate_area(struct qcow2_state *s, uint64_t first, uint64_t end,
                            enum qcow2_prealloc mode)
{
    uint64_t used;
    int ret = qcow2_writer_begin_change(s);
    if (ret == 0)
        ret = used_end(s, &used);
    if (ret < 0)
        return ret;
    uint64_t n = end - first;
    uint64_t nb_l2 = (n + s->l2_entries - 1) / s->l2_entries + 1;
    uint64_t area_end;
    ret = qcow2_refcount_area(s, used, n + nb_l2, true, 0, 0, &area_end);
    if (ret == 0)
        ret = qcow2_refcount_update(s, area_end << s->cluster_bits, n << s->cluster_bits, 1);
    if (ret < 0)
        return ret;
    s->writer->end_cluster = max_u64(s->writer->end_cluster, area_end + n);

    /*
     * The data area first, before anything else (L2 tables in clusters given back below)
     * can land in it: zeros for full, reserved space for falloc. Clusters freed earlier may
     * still hold old bytes inside the file.
     */
    uint64_t start = area_end << s->cluster_bits, bytes = n << s->cluster_bits;
    int64_t file_size = io_file_size(s->file);
    if (file_size < 0)
        return (int)file_size;
    if (mode == QCOW2_PREALLOC_FULL) {
        ret = fill_zeros(s->file, start, bytes, 0, bytes);
    } else {
        if (start < (uint64_t)file_size)
            ret =
                qcow2_write_zero_bytes(s->file, start, min_u64(bytes, (uint64_t)file_size - start));
        if (ret == 0)
            ret = io_preallocate(s->file, start, bytes);
        if (ret == -ENOTSUP)
            ret = io_truncate(s->file, max_u64(start + bytes, (uint64_t)file_size));
    }
    if (ret < 0)
        return img_error(ret, "qcow2: cannot preallocate %" PRIu64 " bytes: %s", bytes,
                         img_strerror(ret));

    struct qcow2_l2_cursor cur = {0};
    for (uint64_t k = 0; ret == 0 && k < n; k++) {
        uint64_t c = first + k, entry, bitmap;
        bool no_l2;
        uint64_t host = (area_end + k) << s->cluster_bits;
        ret = qcow2_l2_lookup(s, &cur, c, &entry, &bitmap, &no_l2);
        qcow2_l2_cursor_release(s, &cur);
        if (ret < 0)
            break;
        bool empty =
            s->extended_l2 ? entry == 0 && (uint32_t)bitmap == 0 : (entry & ~QCOW2_OFLAG_ZERO) == 0;
        if (!empty) {
            /* Already has space: the cluster reserved for it goes back. */
            ret = qcow2_refcount_update(s, host, s->cluster_size, -1);
            continue;
        }
        ret = qcow2_l2_prepare(s, c);
        if (ret == 0)
            ret = qcow2_l2_set(s, c, host | QCOW2_OFLAG_COPIED, bitmap & ~0xffffffffull);
        if (ret == 0)
            ret = qcow2_writer_maybe_flush(s);
    }
    return ret;
}

int qcow2_preallocate(struct img *img, uint64_t start, uint64_t end, enum qcow2_prealloc mode)
{
    struct qcow2_state *s = img->priv;
    bool area = mode != QCOW2_PREALLOC_METADATA && !qcow2_has_data_file(s);
    /* QEMU sizes a refcount area for falloc/full even when nothing is added. */
    if (mode == QCOW2_PREALLOC_OFF || (start >= end && !area))
        return 0;
    uint64_t first = start >> s->cluster_bits;
    uint64_t last_end = align_up_u64(end, s->cluster_size) >> s->cluster_bits;
    uint64_t file_end = 0;
    pthread_mutex_lock(&s->lock);
    int ret = area ? preallocate_area(s, first, last_end, mode)
                   : preallocate_locked(s, first, last_end, end, mode, &file_end);
    if (ret == 0)
        img_progress_final((last_end - first) << s->cluster_bits);
    if (ret == 0)
        ret = qcow2_flush_caches(s, true);
    pthread_mutex_unlock(&s->lock);
    if (ret < 0 || area)
        return ret;
    /* The reserved clusters exist in the file (sparse for metadata preallocation). */
    struct io_file *data = qcow2_data_io(s);
    int64_t size = io_file_size(data);
    if (size < 0)
        return (int)size;
    if (file_end > (uint64_t)size) {
        ret = io_truncate(data, file_end);
        if (ret < 0)
            return img_error(ret, "qcow2: cannot extend the image file: %s", img_strerror(ret));
    }
    return 0;
}

/* Releases every cluster at or past guest cluster `first` (s->lock held). */
static int release_tail(struct qcow2_state *s, uint64_t first, uint64_t new_l1)
{
    uint64_t old_clusters = (uint64_t)s->l1_size << s->l2_bits;
    struct qcow2_l2_cursor cur = {0};
    int ret = 0;
    for (uint64_t c = first; ret == 0 && c < old_clusters;) {
        uint64_t l1_index = c >> s->l2_bits;
        uint64_t l2 = s->l1_table[l1_index] & QCOW2_L1E_OFFSET_MASK;
        uint64_t table_end = (l1_index + 1) << s->l2_bits;
        if (!l2) {
            c = table_end;
            continue;
        }
        for (; ret == 0 && c < table_end; c++) {
            uint64_t entry, bitmap;
            bool no_l2;
            ret = qcow2_l2_lookup(s, &cur, c, &entry, &bitmap, &no_l2);
            if (ret < 0 || (entry == 0 && bitmap == 0))
                continue;
            qcow2_l2_cursor_release(s, &cur);
            if (!qcow2_has_data_file(s)) {
                if (entry & QCOW2_OFLAG_COMPRESSED) {
                    uint64_t off, len;
                    qcow2_compressed_decode(s, entry, &off, &len);
                    ret = qcow2_free_clusters(s, off, len);
                } else if (qcow2_l2_entry_offset(entry)) {
                    ret = qcow2_free_clusters(s, qcow2_l2_entry_offset(entry), s->cluster_size);
                }
            }
            /* Whole tables past the new end go at once; a kept table is cleared entry by entry. */
            if (ret == 0 && l1_index < new_l1) {
                ret = qcow2_l2_prepare(s, c);
                if (ret == 0)
                    ret = qcow2_l2_set(s, c, 0, 0);
            }
            if (ret == 0)
                ret = qcow2_writer_maybe_flush(s);
        }
        qcow2_l2_cursor_release(s, &cur);
        if (ret == 0 && l1_index >= new_l1) {
            __atomic_store_n(&s->l1_table[l1_index], 0, __ATOMIC_RELEASE);
            qcow2_l1_mark_dirty(s, (uint32_t)l1_index, 1);
            ret = qcow2_free_clusters(s, l2, s->cluster_size);
        }
    }
    qcow2_l2_cursor_release(s, &cur);
    return ret;
}

static int shrink(struct img *img, struct qcow2_state *s, uint64_t new_size)
{
    if (s->nb_snapshots)
        return img_error(-ENOTSUP, "qcow2: cannot shrink an image that has internal snapshots");
    uint64_t first = align_up_u64(new_size, s->cluster_size) >> s->cluster_bits;
    uint64_t new_l1 = qcow2_l1_entries_for_size(s->cluster_bits, s->l2_bits, new_size);
    int ret = qcow2_writer_begin_change(s);
    if (ret == 0)
        ret = release_tail(s, first, new_l1);
    if (ret == 0)
        ret = qcow2_flush_caches(s, true);
    if (ret == 0)
        ret = write_size_field(s, new_size);
    uint64_t end = 0;
    if (ret == 0)
        ret = used_end(s, &end);
    if (ret == 0 && !qcow2_has_data_file(s)) {
        ret = io_truncate(s->file, end << s->cluster_bits);
        if (ret < 0)
            img_error(ret, "qcow2: cannot shorten the image file: %s", img_strerror(ret));
        else
            s->writer->end_cluster = end;
    }
    if (ret == 0 && s->data_file) {
        ret = io_truncate(s->data_file, new_size);
        if (ret < 0)
            img_error(ret, "qcow2: cannot shorten the data file: %s", img_strerror(ret));
    }
    (void)img;
    return ret;
}

/*
 * The first half of growing, with s->lock held: an L1 table large enough for the new size and
 * an external data file long enough. Neither changes what the guest sees at the old size.
 */
static int grow_tables_locked(struct qcow2_state *s, uint64_t l1, uint64_t new_size,
                              uint64_t old_size)
{
    int ret = qcow2_writer_begin_change(s);
    if (ret == 0)
        ret = qcow2_l1_grow(s, l1, true);
    if (ret == 0 && s->data_file && new_size > old_size) {
        int64_t size = io_file_size(s->data_file);
        if (size < 0)
            ret = img_error((int)size, "qcow2: cannot read the size of the data file");
        else if ((uint64_t)size < new_size)
            ret = io_truncate(s->data_file, new_size);
        if (ret < 0 && size >= 0)
            img_error(ret, "qcow2: cannot extend the data file: %s", img_strerror(ret));
    }
    return ret;
}

/*
 * The cluster that held the old end may still hold bytes past it (written before a shrink):
 * growing must not bring them back, so they are zeroed.
 */
static int zero_old_tail(struct img *img, struct qcow2_state *s, uint64_t old_size,
                         uint64_t new_size)
{
    uint64_t tail_end = min_u64(new_size, align_up_u64(old_size, s->cluster_size));
    if (tail_end <= old_size)
        return 0;
    struct qcow2_l2_cursor cur = {0};
    uint64_t entry, bitmap;
    bool no_l2;
    pthread_mutex_lock(&s->lock);
    int ret = qcow2_l2_lookup(s, &cur, old_size >> s->cluster_bits, &entry, &bitmap, &no_l2);
    qcow2_l2_cursor_release(s, &cur);
    pthread_mutex_unlock(&s->lock);
    bool has_data = ret == 0 && !no_l2 &&
                    ((entry & QCOW2_OFLAG_COMPRESSED) ||
                     (qcow2_l2_entry_offset(entry) && !(entry & QCOW2_OFLAG_ZERO)) ||
                     (qcow2_has_data_file(s) && (entry & QCOW2_OFLAG_COPIED)));
    if (ret < 0 || !has_data)
        return ret;
    return qcow2_zero(img, old_size, tail_end - old_size, 0);
}

int qcow2_resize(struct img *img, uint64_t new_size, unsigned flags, const struct img_opts *opts)
{
    struct qcow2_state *s = img->priv;
    if (!s->writer)
        return img_error(-EROFS, "qcow2: the image is opened read-only");
    static const char *const known[] = {"preallocation", NULL};
    int ret = opts_check_known(opts, known, "qcow2 resize");
    if (ret < 0)
        return ret;
    enum qcow2_prealloc mode;
    ret = qcow2_parse_prealloc(img_opts_get(opts, "preallocation"), &mode);
    if (ret < 0)
        return ret;
    if (new_size & 511)
        return img_error(-EINVAL, "qcow2: the new size %" PRIu64 " is not a multiple of 512",
                         new_size);
    if (s->nb_bitmaps || s->ext.has_bitmaps)
        return img_error(-ENOTSUP, "qcow2: cannot resize an image with persistent bitmaps");
    uint64_t old_size = s->hdr.size;
    if (new_size < old_size && !(flags & IMG_RESIZE_SHRINK))
        return img_error(-EINVAL, "qcow2: shrinking needs the shrink flag");
    if (mode != QCOW2_PREALLOC_OFF && new_size < old_size)
        return img_error(-ENOTSUP, "qcow2: preallocation is only for growing an image");
    uint64_t l1 = qcow2_l1_entries_for_size(s->cluster_bits, s->l2_bits, new_size);
    if (l1 > QCOW2_MAX_L1_BYTES / sizeof(uint64_t))
        return img_error(-EFBIG, "qcow2: size %" PRIu64 " is too large for cluster size %" PRIu32,
                         new_size, s->cluster_size);

    pthread_mutex_lock(&s->lock);
    qcow2_inflight_wait(s, 0, UINT64_MAX >> 1);
    if (new_size < old_size) {
        ret = shrink(img, s, new_size);
        if (ret == 0)
            img->size = align_down_u64(new_size, 512);
        pthread_mutex_unlock(&s->lock);
        return ret;
    }
    ret = grow_tables_locked(s, l1, new_size, old_size);
    pthread_mutex_unlock(&s->lock);
    if (ret < 0)
        return ret;

    /*
     * Everything under the new space is put in place before the header says the image is
     * larger: a failure here (no space for an L2 table, for the zeros) leaves the old size and
     * content, and at most leaked clusters. Only this handle sees the larger size meanwhile,
     * and the caller drained its data path.
     */
    uint64_t old_guest_size = img->size;
    img->size = align_down_u64(new_size, 512);
    if (new_size > old_size)
        ret = zero_old_tail(img, s, old_size, new_size);
    /* As QEMU: a larger backing file must not show through the new space. */
    if (ret == 0 && new_size > old_size && img->backing && img->backing->size > old_size)
        ret = qcow2_zero(img, old_size, min_u64(new_size, img->backing->size) - old_size, 0);
    if (ret == 0)
        ret = qcow2_preallocate(img, old_size, new_size, mode);
    if (ret == 0) {
        pthread_mutex_lock(&s->lock);
        /* The tables under the new space are durable before the size makes them visible. */
        ret = qcow2_flush_caches(s, true);
        if (ret == 0)
            ret = write_size_field(s, new_size);
        pthread_mutex_unlock(&s->lock);
    }
    if (ret < 0)
        img->size = old_guest_size;
    return ret;
}
