/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QED writes. Rules:
 *  - Allocations run one at a time: alloc() marks one in progress (`allocating`) and
 *    alloc_commit() ends it; others wait on `alloc_done`. New clusters are taken at the end of
 *    the file, as QEMU takes them.
 *  - Before the first allocation the header gets need-check, so that an image whose writer
 *    dies is checked on its next open; flush() clears it again once everything is on disk.
 *  - Order on disk: the data (the core writes it, with the copy-on-write parts written here
 *    first), then a new L2 table if one is needed, then the L2 entries, then the L1 entry. A
 *    crash in between leaves unreferenced clusters (leaks), never an entry pointing at
 *    unwritten data.
 *  - The cached tables change only once their write succeeded (or are put back).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/qed/qed.h"
#include "io/io.h"
#include "opts.h"
#include "util/checked.h"

struct img_alloc {
    uint64_t cluster; /* first guest cluster */
    uint64_t count;   /* clusters, all in one L2 slice */
    uint64_t host;    /* first host cluster, or QED_CLUSTER_ZERO for zero clusters */
};

/* Waits for the allocation in progress, then starts one; under `lock`. */
static int begin_allocation(struct img *img)
{
    struct qed_state *s = img->priv;
    while (s->allocating)
        pthread_cond_wait(&s->alloc_done, &s->lock);
    if (!(s->hdr.features & QED_F_NEED_CHECK)) {
        s->hdr.features |= QED_F_NEED_CHECK;
        int ret = qed_header_write(img);
        if (ret < 0) {
            s->hdr.features &= ~QED_F_NEED_CHECK;
            return ret;
        }
    }
    s->allocating = true;
    return 0;
}

static void end_allocation(struct qed_state *s)
{
    pthread_mutex_lock(&s->lock);
    s->allocating = false;
    pthread_cond_broadcast(&s->alloc_done);
    pthread_mutex_unlock(&s->lock);
}

/* The L2 entries of `cluster`'s slice, or NULL (*entries) when it has no L2 table; under lock. */
static int lookup_slice(struct img *img, uint64_t cluster, uint64_t **entries)
{
    struct qed_state *s = img->priv;
    uint64_t l1_index = cluster / s->table_entries;
    uint64_t l2 = s->l1[l1_index];
    *entries = NULL;
    if (l2 == 0)
        return 0;
    if (!qed_table_offset_valid(s, l2))
        return img_error(
            -EIO, "qed: '%s': L2 table offset 0x%" PRIx64 " (L1 entry %" PRIu64 ") is invalid",
            img->filename, l2, l1_index);
    uint64_t slice = cluster % s->table_entries / QED_SLICE_ENTRIES;
    return qed_l2_slice(img, l2, slice, entries);
}

static uint64_t entry_of(const struct qed_state *s, const uint64_t *entries, uint64_t cluster)
{
    return entries ? entries[cluster % s->table_entries % QED_SLICE_ENTRIES] : 0;
}

/* Space taken at the end of the file reads as zeros: past the end, or zeroed here. */
static int claim_space(struct img *img, uint64_t host, uint64_t len)
{
    int64_t size = io_file_size(img->file);
    if (size < 0)
        return (int)size;
    int ret = 0;
    if ((uint64_t)size > host)
        ret = io_write_zeroes(img->file, host, min_u64((uint64_t)size, host + len) - host);
    if (ret == 0 && (uint64_t)size < host + len)
        ret = io_truncate(img->file, host + len);
    return ret;
}

/* Copy-on-write: the backing image's bytes [guest, guest + len) go to `host`. */
static int copy_from_backing(struct img *img, uint64_t guest, uint64_t len, uint64_t host)
{
    if (len == 0 || !img->backing || guest >= img->size)
        return 0;
    len = min_u64(len, img->size - guest);
    void *buf = malloc((size_t)len);
    if (!buf)
        return -ENOMEM;
    int ret = img_backing_pread(img, buf, (size_t)len, guest);
    if (ret == 0)
        ret = io_pwrite(img->file, buf, (size_t)len, host);
    free(buf);
    return ret;
}

int qed_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
              struct img_alloc **token)
{
    struct qed_state *s = img->priv;
    uint64_t cs = s->hdr.cluster_size;
    uint64_t cluster = offset / cs, in_cluster = offset % cs;
    *token = NULL;
    pthread_mutex_lock(&s->lock);
    while (s->allocating)
        pthread_cond_wait(&s->alloc_done, &s->lock);
    uint64_t *entries;
    int ret = lookup_slice(img, cluster, &entries);
    uint64_t e = ret == 0 ? entry_of(s, entries, cluster) : 0;
    if (ret == 0 && e > QED_CLUSTER_ZERO) {
        bool valid = qed_cluster_offset_valid(s, e);
        pthread_mutex_unlock(&s->lock);
        if (!valid)
            return img_error(-EIO, "qed: '%s': cluster offset 0x%" PRIx64 " is invalid",
                             img->filename, e);
        *ext = (struct img_extent){.kind = EXTENT_DATA,
                                   .length = min_u64(length, cs - in_cluster),
                                   .file = img->file,
                                   .host_offset = e + in_cluster,
                                   .host_offset_valid = true};
        return 0;
    }
    /* A run of clusters without data, inside one slice, covering as much of the range as it can. */
    uint64_t end = offset + length;
    uint64_t last_in_slice = cluster | (QED_SLICE_ENTRIES - 1);
    uint64_t count = 1;
    while (ret == 0 && cluster + count <= last_in_slice && (cluster + count) * cs < end &&
           entry_of(s, entries, cluster + count) <= QED_CLUSTER_ZERO)
        count++;
    uint64_t last_entry = ret == 0 ? entry_of(s, entries, cluster + count - 1) : 0;
    if (ret == 0)
        ret = begin_allocation(img);
    uint64_t host = s->file_size;
    if (ret == 0) {
        if (count * cs > UINT64_MAX - host || host + count * cs > (uint64_t)INT64_MAX)
            ret = img_error(-EFBIG, "qed: '%s': the file would grow past the largest offset",
                            img->filename);
        else
            s->file_size += count * cs;
        if (ret < 0)
            s->allocating = false;
    }
    pthread_mutex_unlock(&s->lock);
    if (ret < 0)
        return ret;

    uint64_t write_end = min_u64(end, (cluster + count) * cs);
    uint64_t tail_start = write_end - cluster * cs; /* inside the run */
    ret = claim_space(img, host, count * cs);
    if (ret == 0 && in_cluster && e == 0)
        ret = copy_from_backing(img, cluster * cs, in_cluster, host);
    if (ret == 0 && tail_start % cs && last_entry == 0)
        ret = copy_from_backing(img, write_end, cs - tail_start % cs, host + tail_start);
    struct img_alloc *a = ret == 0 ? malloc(sizeof(*a)) : NULL;
    if (!a) {
        end_allocation(s);
        ret = ret < 0 ? ret : -ENOMEM;
        return img_error(ret,
                         "qed: '%s': cannot allocate %" PRIu64 " clusters at 0x%" PRIx64 ": %s",
                         img->filename, count, host, img_strerror(ret));
    }
    *a = (struct img_alloc){.cluster = cluster, .count = count, .host = host};
    *token = a;
    *ext = (struct img_extent){.kind = EXTENT_DATA,
                               .length = write_end - offset,
                               .file = img->file,
                               .host_offset = host + in_cluster,
                               .host_offset_valid = true};
    return 0;
}

/* A new, empty L2 table at the end of the file for L1 entry `l1_index`; under lock. */
static int new_l2_table(struct img *img, uint64_t *l2)
{
    struct qed_state *s = img->priv;
    uint64_t bytes = qed_table_bytes(&s->hdr);
    uint64_t at = s->file_size;
    int ret = claim_space(img, at, bytes);
    if (ret < 0)
        return img_error(ret, "qed: '%s': cannot allocate an L2 table: %s", img->filename,
                         img_strerror(ret));
    s->file_size += bytes;
    *l2 = at;
    return 0;
}

/* Points `count` entries from `cluster` at `host` onwards (or at zero clusters); under lock. */
static int link_clusters(struct img *img, uint64_t cluster, uint64_t count, uint64_t host)
{
    struct qed_state *s = img->priv;
    uint64_t cs = s->hdr.cluster_size;
    uint64_t l1_index = cluster / s->table_entries;
    uint64_t l2_index = cluster % s->table_entries;
    uint64_t slice = l2_index / QED_SLICE_ENTRIES, first = l2_index % QED_SLICE_ENTRIES;
    uint64_t l2 = s->l1[l1_index];
    bool fresh = l2 == 0;
    int ret = fresh ? new_l2_table(img, &l2) : 0;
    uint64_t *entries = NULL;
    if (ret == 0)
        ret = qed_l2_slice(img, l2, slice, &entries);
    if (ret < 0)
        return ret;
    uint64_t old[QED_SLICE_ENTRIES];
    memcpy(old, entries, sizeof(old));
    for (uint64_t i = 0; i < count; i++)
        entries[first + i] = host == QED_CLUSTER_ZERO ? QED_CLUSTER_ZERO : host + i * cs;
    ret = qed_l2_write(img, l2, slice, first, count);
    if (ret == 0 && fresh) {
        s->l1[l1_index] = l2;
        ret = qed_l1_write(img, l1_index);
        if (ret < 0)
            s->l1[l1_index] = 0;
    }
    if (ret < 0) {
        /* Re-fetch: the slice is still cached (nothing was loaded since). */
        if (qed_l2_slice(img, l2, slice, &entries) == 0)
            memcpy(entries, old, sizeof(old));
    }
    return ret;
}

int qed_alloc_commit(struct img *img, struct img_alloc *token, int write_result)
{
    struct qed_state *s = img->priv;
    int ret = 0;
    if (write_result == 0) {
        pthread_mutex_lock(&s->lock);
        ret = link_clusters(img, token->cluster, token->count, token->host);
        pthread_mutex_unlock(&s->lock);
    }
    free(token);
    end_allocation(s);
    return ret;
}

/* Whole clusters without data become zero clusters, as QEMU's zero writes make them. */
static int zero_clusters(struct img *img, uint64_t cluster, uint64_t count)
{
    struct qed_state *s = img->priv;
    pthread_mutex_lock(&s->lock);
    int ret = begin_allocation(img);
    if (ret == 0) {
        ret = link_clusters(img, cluster, count, QED_CLUSTER_ZERO);
        s->allocating = false;
        pthread_cond_broadcast(&s->alloc_done);
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/* Part of a cluster that shows the backing file: allocated, and the part zeroed. */
static int zero_partial(struct img *img, uint64_t offset, uint64_t len)
{
    while (len) {
        struct img_extent ext;
        struct img_alloc *token = NULL;
        int ret = qed_alloc(img, offset, len, &ext, &token);
        if (ret < 0)
            return ret;
        ret = io_write_zeroes(ext.file, ext.host_offset, ext.length);
        if (token) {
            int commit = qed_alloc_commit(img, token, ret);
            if (ret == 0)
                ret = commit;
        }
        if (ret < 0)
            return ret;
        offset += ext.length;
        len -= ext.length;
    }
    return 0;
}

int qed_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags)
{
    (void)flags;
    struct qed_state *s = img->priv;
    uint64_t cs = s->hdr.cluster_size;
    while (length) {
        uint64_t cluster = offset / cs, in_cluster = offset % cs;
        uint64_t n = min_u64(length, cs - in_cluster);
        pthread_mutex_lock(&s->lock);
        uint64_t *entries;
        int ret = lookup_slice(img, cluster, &entries);
        uint64_t e = ret == 0 ? entry_of(s, entries, cluster) : 0;
        uint64_t run = 1;
        if (ret == 0 && n == cs && e == 0) {
            /* Following whole unallocated clusters of the slice go with it. */
            while ((cluster + run) % QED_SLICE_ENTRIES && (run + 1) * cs <= length &&
                   entry_of(s, entries, cluster + run) == 0)
                run++;
        }
        bool valid = e <= QED_CLUSTER_ZERO || qed_cluster_offset_valid(s, e);
        pthread_mutex_unlock(&s->lock);
        if (ret < 0)
            return ret;
        if (!valid)
            return img_error(-EIO, "qed: '%s': cluster offset 0x%" PRIx64 " is invalid",
                             img->filename, e);
        if (e > QED_CLUSTER_ZERO) {
            ret = io_write_zeroes(img->file, e + in_cluster, n);
            if (ret < 0)
                return img_error(ret,
                                 "qed: '%s': cannot zero %" PRIu64 " bytes at 0x%" PRIx64 ": %s",
                                 img->filename, n, e + in_cluster, img_strerror(ret));
        } else if (e == 0 && n == cs) {
            n = run * cs;
            ret = zero_clusters(img, cluster, run);
        } else if (e == 0 && img->backing) {
            ret = zero_partial(img, offset, n);
        }
        if (ret < 0)
            return ret;
        offset += n;
        length -= n;
    }
    return 0;
}

int qed_flush(struct img *img)
{
    struct qed_state *s = img->priv;
    int ret = io_fsync(img->file);
    if (ret < 0)
        return img_error(ret, "qed: '%s': flush failed: %s", img->filename, img_strerror(ret));
    /* Everything is on disk: unless an allocation is under way, the image is consistent. */
    pthread_mutex_lock(&s->lock);
    if ((s->hdr.features & QED_F_NEED_CHECK) && !s->allocating) {
        s->hdr.features &= ~QED_F_NEED_CHECK;
        ret = qed_header_write(img);
        if (ret < 0)
            s->hdr.features |= QED_F_NEED_CHECK;
        else
            ret = io_fsync(img->file);
    }
    pthread_mutex_unlock(&s->lock);
    if (ret < 0)
        return img_error(ret, "qed: '%s': flush failed: %s", img->filename, img_strerror(ret));
    return 0;
}

/* As QEMU: grow only, without preallocation. */
int qed_resize(struct img *img, uint64_t new_size, unsigned flags, const img_opts *opts)
{
    (void)flags;
    struct qed_state *s = img->priv;
    const char *prealloc = img_opts_get(opts, "preallocation");
    if (prealloc && strcmp(prealloc, "off") != 0)
        return img_error(-ENOTSUP, "qed: Unsupported preallocation mode '%s'", prealloc);
    if (new_size % 512 || new_size > qed_max_image_size(s->hdr.cluster_size, s->hdr.table_size))
        return img_error(-EINVAL, "qed: Invalid image size specified");
    pthread_mutex_lock(&s->lock);
    int ret = 0;
    if (new_size < s->hdr.image_size) {
        ret = img_error(-ENOTSUP, "qed: Shrinking images is currently not supported");
    } else {
        uint64_t old = s->hdr.image_size;
        s->hdr.image_size = new_size;
        ret = qed_header_write(img);
        if (ret < 0)
            s->hdr.image_size = old;
        else
            img->size = new_size;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}
