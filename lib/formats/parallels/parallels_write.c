/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Allocating clusters and linking them (see the write order in parallels.h): alloc() takes
 * clusters at the end of the data and marks them in flight, the core writes the guest data,
 * alloc_commit() writes the catalog entries and only then shows them to readers.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/parallels/parallels.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* Clusters one allocation takes at most: bounds the catalog buffer of a commit (16 KiB). */
#define PRL_MAX_RUN 4096u
/* Copy-on-write fills move at most this much at a time. */
#define PRL_FILL_CHUNK (1u << 20)

struct img_alloc {
    uint32_t first, count;
    uint64_t host_sector;
};

static bool in_flight(const struct prl_state *s, uint64_t idx)
{
    for (size_t i = 0; i < s->inflight_count; i++)
        if (idx >= s->inflight[i].first && idx - s->inflight[i].first < s->inflight[i].count)
            return true;
    return false;
}

static int add_in_flight(struct prl_state *s, uint32_t first, uint32_t count)
{
    if (s->inflight_count == s->inflight_cap) {
        size_t cap = s->inflight_cap ? s->inflight_cap * 2 : 8;
        struct prl_inflight *grown = realloc(s->inflight, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        s->inflight = grown;
        s->inflight_cap = cap;
    }
    s->inflight[s->inflight_count++] = (struct prl_inflight){first, count};
    return 0;
}

static void remove_in_flight(struct prl_state *s, uint32_t first)
{
    for (size_t i = 0; i < s->inflight_count; i++)
        if (s->inflight[i].first == first) {
            s->inflight[i] = s->inflight[--s->inflight_count];
            break;
        }
    pthread_cond_broadcast(&s->inflight_done);
}

int prl_write_bat(struct prl_state *s, uint32_t first, uint32_t count)
{
    uint8_t *buf = malloc((size_t)count * 4 + 1);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    for (uint32_t i = 0; i < count; i++)
        store_le32(buf + 4 * (size_t)i, s->bat[first + i]);
    int ret = io_pwrite(s->data, buf, (size_t)count * 4, PRL_HEADER_SIZE + 4 * (uint64_t)first);
    free(buf);
    if (ret < 0)
        return img_error(ret, "parallels: '%s': cannot write the catalog: %s", s->data_name,
                         img_strerror(ret));
    return 0;
}

/*
 * Fills guest [guest, guest + len) of a new cluster at host byte `host`: from the backing
 * image, or with zeros where the file may hold stale bytes there. Past the old end of the file
 * without a backing image there is nothing to do: the file reads as zeros there.
 */
static int fill_partial(struct img *img, struct prl_state *s, uint64_t guest, uint64_t host,
                        uint64_t len)
{
    if (len == 0 || (!img->backing && host >= s->stale_end))
        return 0;
    if (!img->backing)
        return io_write_zeroes(s->data, host, len);
    size_t chunk = (size_t)min_u64(len, PRL_FILL_CHUNK);
    uint8_t *buf = malloc(chunk);
    if (!buf)
        return -ENOMEM;
    int ret = 0;
    while (len && ret == 0) {
        size_t n = (size_t)min_u64(len, chunk);
        ret = img_backing_pread(img, buf, n, guest);
        if (ret == 0)
            ret = io_pwrite(s->data, buf, n, host);
        guest += n;
        host += n;
        len -= n;
    }
    free(buf);
    return ret;
}

/* The run of already-allocated clusters at `idx`, contiguous on the host, as a DATA extent. */
static void allocated_run(struct prl_state *s, uint64_t idx, uint64_t in_cluster, uint64_t length,
                          struct img_extent *ext)
{
    uint64_t first = prl_bat_sector(s, (uint32_t)idx);
    uint64_t covered = s->cluster_bytes - in_cluster;
    uint64_t expect = first + s->hdr.tracks;
    for (uint64_t i = idx + 1; covered < length && i < s->hdr.bat_entries; i++) {
        if (prl_bat_sector(s, (uint32_t)i) != expect || in_flight(s, i))
            break;
        covered += s->cluster_bytes;
        expect += s->hdr.tracks;
    }
    ext->kind = EXTENT_DATA;
    ext->file = s->data;
    ext->host_offset = first * PRL_SECTOR + in_cluster;
    ext->host_offset_valid = true;
    ext->length = min_u64(covered, length);
}

int prl_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
              struct img_alloc **token)
{
    struct prl_state *s = img->priv;
    uint64_t cs = s->cluster_bytes;
    uint64_t idx = offset / cs, in_cluster = offset % cs;
    *token = NULL;
    if (idx >= s->hdr.bat_entries)
        return img_error(-EINVAL,
                         "parallels: '%s': offset %" PRIu64 " lies past the catalog (%" PRIu32
                         " entries): cannot allocate there",
                         s->data_name, offset, s->hdr.bat_entries);

    pthread_mutex_lock(&img->lock);
    /* One writer per new cluster: a second one waits until the first is linked. */
    while (in_flight(s, idx))
        pthread_cond_wait(&s->inflight_done, &img->lock);
    if (s->bat[idx]) {
        allocated_run(s, idx, in_cluster, length, ext);
        pthread_mutex_unlock(&img->lock);
        return 0;
    }
    uint32_t count = 1;
    uint64_t covered = cs - in_cluster;
    while (covered < length && count < PRL_MAX_RUN && idx + count < s->hdr.bat_entries &&
           s->bat[idx + count] == 0 && !in_flight(s, idx + count)) {
        count++;
        covered += cs;
    }
    /* Version 2 catalogs count in clusters: new clusters start on a cluster boundary. */
    uint64_t host = align_up_u64(s->data_end, s->off_multiplier);
    uint64_t last_entry = (host + (uint64_t)(count - 1) * s->hdr.tracks) / s->off_multiplier;
    int ret = 0;
    if (last_entry > UINT32_MAX)
        ret = img_error(-EFBIG,
                        "parallels: '%s': the image file is too large for its catalog to "
                        "address another cluster",
                        s->data_name);
    else if (add_in_flight(s, (uint32_t)idx, count) < 0)
        ret = img_error(-ENOMEM, "out of memory");
    if (ret < 0) {
        pthread_mutex_unlock(&img->lock);
        return ret;
    }
    s->data_end = host + (uint64_t)count * s->hdr.tracks;
    pthread_mutex_unlock(&img->lock);

    uint64_t host_bytes = host * PRL_SECTOR;
    uint64_t len = min_u64(length, covered);
    uint64_t cluster_start = idx * cs;
    ret = fill_partial(img, s, cluster_start, host_bytes, in_cluster);
    if (ret == 0)
        ret = fill_partial(img, s, offset + len, host_bytes + in_cluster + len,
                           (uint64_t)count * cs - in_cluster - len);
    if (ret < 0) {
        /* The clusters taken stay unreferenced past the data: a leak check reports. */
        pthread_mutex_lock(&img->lock);
        remove_in_flight(s, (uint32_t)idx);
        pthread_mutex_unlock(&img->lock);
        return img_error(ret, "parallels: '%s': cannot fill a new cluster: %s", s->data_name,
                         img_strerror(ret));
    }
    struct img_alloc *t = malloc(sizeof(*t));
    if (!t) {
        pthread_mutex_lock(&img->lock);
        remove_in_flight(s, (uint32_t)idx);
        pthread_mutex_unlock(&img->lock);
        return img_error(-ENOMEM, "out of memory");
    }
    *t = (struct img_alloc){(uint32_t)idx, count, host};
    ext->kind = EXTENT_DATA;
    ext->file = s->data;
    ext->host_offset = host_bytes + in_cluster;
    ext->host_offset_valid = true;
    ext->length = len;
    *token = t;
    return 0;
}

int prl_alloc_commit(struct img *img, struct img_alloc *t, int write_result)
{
    struct prl_state *s = img->priv;
    int ret = 0;
    if (write_result == 0) {
        /* The entries reach the file before readers see them, so a flush covers both. */
        uint8_t buf[PRL_MAX_RUN * 4];
        for (uint32_t i = 0; i < t->count; i++)
            store_le32(
                buf + 4 * (size_t)i,
                (uint32_t)((t->host_sector + (uint64_t)i * s->hdr.tracks) / s->off_multiplier));
        ret =
            io_pwrite(s->data, buf, (size_t)t->count * 4, PRL_HEADER_SIZE + 4 * (uint64_t)t->first);
        if (ret < 0)
            img_error(ret, "parallels: '%s': cannot write the catalog: %s", s->data_name,
                      img_strerror(ret));
    }
    pthread_mutex_lock(&img->lock);
    if (write_result == 0 && ret == 0)
        for (uint32_t i = 0; i < t->count; i++)
            s->bat[t->first + i] =
                (uint32_t)((t->host_sector + (uint64_t)i * s->hdr.tracks) / s->off_multiplier);
    remove_in_flight(s, t->first);
    pthread_mutex_unlock(&img->lock);
    free(t);
    return ret;
}

/*
 * Unallocated clusters already read as zeros (without a backing image); allocated ones get
 * zeros written in place, as QEMU writes them (the format cannot free a cluster).
 */
int prl_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags)
{
    (void)flags;
    while (length) {
        struct img_extent ext = {0};
        struct img_alloc *t = NULL;
        int ret = prl_map(img, offset, length, &ext);
        if (ret < 0)
            return ret;
        if (ext.kind == EXTENT_UNALLOCATED && !img->backing) {
            offset += ext.length;
            length -= ext.length;
            continue;
        }
        ret = prl_alloc(img, offset, length, &ext, &t);
        if (ret < 0)
            return ret;
        int wret = io_write_zeroes(ext.file, ext.host_offset, ext.length);
        if (wret < 0)
            img_error(wret, "parallels: cannot zero %" PRIu64 " bytes at %" PRIu64 ": %s",
                      ext.length, offset, img_strerror(wret));
        if (t)
            ret = prl_alloc_commit(img, t, wret);
        if (wret < 0)
            return wret;
        if (ret < 0)
            return ret;
        offset += ext.length;
        length -= ext.length;
    }
    return 0;
}
