/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * alloc() and alloc_commit(): where guest writes go.
 *
 * A cluster whose L2 entry says it is ours alone (COPIED) and holds data is written in place,
 * with no metadata change. Otherwise alloc() prepares the cluster under s->lock: a new host
 * cluster (for unallocated, zero, compressed or shared clusters; refcounts written at once), or
 * the existing one when only the zero flag or subcluster bitmap must change. It registers the
 * guest clusters as in progress, drops the lock, copies the parts of the first and last cluster
 * that the write does not cover (from the backing file, the old cluster, a compressed cluster,
 * or zeros) and returns where the core writes the data. alloc_commit() then links the new L2
 * entries (held in memory until the next write-back, which makes the data durable first) and
 * queues the release of the clusters they replaced.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_bitmap.h"
#include "formats/qcow2/qcow2_writer.h"
#include "image.h"
#include "io/io.h"
#include "util/checked.h"

/* At most this many guest bytes per allocation (one I/O for the core). */
#define MAX_RUN_BYTES (64ull << 20)

enum action {
    ACT_IN_PLACE, /* write into the cluster as it is */
    ACT_UPDATE,   /* same host cluster, new zero flag or subcluster bitmap */
    ACT_NEW,      /* a new host cluster */
};

struct cluster_info {
    uint64_t entry, bitmap;
    bool no_l2;
};

/* The cluster at each end of an allocation may need its untouched part filled in. */
struct cow_edge {
    bool needed;
    uint64_t guest;    /* guest offset of the cluster */
    uint64_t host;     /* host offset of its (new) cluster */
    uint32_t from, to; /* bytes the write covers */
    enum action act;
    struct cluster_info old;
};

struct img_alloc {
    struct qcow2_inflight inflight;
    uint64_t first; /* guest cluster */
    uint32_t count;
    uint64_t host;     /* host offset of the first cluster */
    bool fresh;        /* newly allocated clusters (released again on failure) */
    uint64_t *entries; /* new L2 entries, then bitmaps, then references to drop (offset, len) */
    uint64_t *bitmaps;
    uint64_t *free_off, *free_len;
    struct cow_edge edge[2];
};

static int lookup(struct qcow2_state *s, struct qcow2_l2_cursor *cur, uint64_t cluster,
                  struct cluster_info *ci)
{
    return qcow2_l2_lookup(s, cur, cluster, &ci->entry, &ci->bitmap, &ci->no_l2);
}

static enum qcow2_subcluster_type unit_type(const struct qcow2_state *s,
                                            const struct cluster_info *ci, unsigned sc)
{
    if (ci->no_l2)
        return QCOW2_SC_UNALLOCATED_PLAIN;
    return qcow2_subcluster_type(s, ci->entry, ci->bitmap, s->extended_l2 ? sc : 0,
                                 qcow2_has_data_file(s));
}

static unsigned units_per_cluster(const struct qcow2_state *s)
{
    return s->extended_l2 ? QCOW2_SUBCLUSTERS : 1;
}

/* What writing bytes [from, to) of a cluster needs. */
static int classify(const struct qcow2_state *s, const struct cluster_info *ci, uint64_t guest,
                    uint32_t from, uint32_t to, enum action *act)
{
    *act = ACT_NEW;
    if (ci->no_l2 || (ci->entry & QCOW2_OFLAG_COMPRESSED))
        return 0;
    bool data_file = qcow2_has_data_file(s);
    uint64_t host = qcow2_l2_entry_offset(ci->entry);
    bool allocated = host != 0 || (data_file && (ci->entry & QCOW2_OFLAG_COPIED));
    if (!allocated || !(ci->entry & QCOW2_OFLAG_COPIED))
        return 0;
    if (host & (s->cluster_size - 1))
        return img_error(-EIO,
                         "qcow2: cluster offset 0x%" PRIx64 " for guest offset 0x%" PRIx64
                         " is not cluster-aligned",
                         host, guest);
    if (data_file && host != guest)
        return img_error(-EIO,
                         "qcow2: data file offset 0x%" PRIx64 " does not match guest offset "
                         "0x%" PRIx64,
                         host, guest);
    *act = ACT_IN_PLACE;
    unsigned first = from >> s->subcluster_bits, last = (to - 1) >> s->subcluster_bits;
    for (unsigned sc = first; sc <= last; sc++) {
        enum qcow2_subcluster_type t = unit_type(s, ci, sc);
        if (t == QCOW2_SC_INVALID)
            return img_error(-EIO,
                             "qcow2: invalid L2 entry 0x%016" PRIx64 " (subcluster bitmap "
                             "0x%016" PRIx64 ") for guest offset 0x%" PRIx64,
                             ci->entry, ci->bitmap, guest);
        if (t != QCOW2_SC_NORMAL)
            *act = ACT_UPDATE;
    }
    return 0;
}

/* The new L2 entry and bitmap, and the old reference to drop, for one prepared cluster. */
static void plan_cluster(const struct qcow2_state *s, const struct cluster_info *ci, uint64_t guest,
                         uint64_t host, uint32_t from, uint32_t to, enum action act,
                         uint64_t *entry, uint64_t *bitmap, uint64_t *free_off, uint64_t *free_len)
{
    *entry = (qcow2_has_data_file(s) ? guest : host) | QCOW2_OFLAG_COPIED;
    *bitmap = 0;
    *free_off = *free_len = 0;
    if (s->extended_l2) {
        uint32_t alloc = 0, zero = 0;
        bool compressed = !ci->no_l2 && (ci->entry & QCOW2_OFLAG_COMPRESSED);
        for (unsigned sc = 0; sc < QCOW2_SUBCLUSTERS; sc++) {
            uint32_t lo = sc << s->subcluster_bits, hi = lo + s->subcluster_size;
            bool touched = lo < to && from < hi;
            enum qcow2_subcluster_type t = compressed ? QCOW2_SC_COMPRESSED : unit_type(s, ci, sc);
            if (touched || t == QCOW2_SC_NORMAL || t == QCOW2_SC_COMPRESSED)
                alloc |= 1u << sc;
            else if (t == QCOW2_SC_ZERO_PLAIN || t == QCOW2_SC_ZERO_ALLOC)
                zero |= 1u << sc;
        }
        *bitmap = ((uint64_t)zero << 32) | alloc;
    }
    if (act != ACT_NEW || ci->no_l2 || qcow2_has_data_file(s))
        return;
    if (ci->entry & QCOW2_OFLAG_COMPRESSED) {
        qcow2_compressed_decode(s, ci->entry, free_off, free_len);
    } else if (qcow2_l2_entry_offset(ci->entry)) {
        /* A cluster shared with a snapshot: this table stops referring to it. */
        *free_off = qcow2_l2_entry_offset(ci->entry);
        *free_len = s->cluster_size;
    }
}

/* Reads the old content of a compressed cluster. */
static int read_compressed(struct qcow2_state *s, uint64_t entry, uint8_t *out)
{
    uint64_t off, len;
    qcow2_compressed_decode(s, entry, &off, &len);
    uint8_t *in = malloc(len);
    if (!in)
        return img_error(-ENOMEM, "out of memory");
    int ret = io_pread(s->file, in, len, off);
    if (ret == 0) {
        ret = codec_decompress(s->codec, in, len, out, s->cluster_size);
        if (ret < 0)
            img_error(-EIO, "qcow2: compressed cluster at host offset 0x%" PRIx64 " is corrupt",
                      off);
    }
    free(in);
    return ret < 0 ? ret : 0;
}

/* Where the untouched bytes of a unit come from. */
enum fill_source { FILL_NONE, FILL_ZERO, FILL_BACKING, FILL_OLD, FILL_COMPRESSED };

static enum fill_source unit_source(const struct qcow2_state *s, const struct cow_edge *e,
                                    unsigned sc, bool *whole)
{
    uint32_t unit = s->extended_l2 ? s->subcluster_size : s->cluster_size;
    uint32_t lo = s->extended_l2 ? sc << s->subcluster_bits : 0, hi = lo + unit;
    bool touched = lo < e->to && e->from < hi;
    bool covered = e->from <= lo && hi <= e->to;
    *whole = !touched;
    if (covered)
        return FILL_NONE;
    bool compressed = !e->old.no_l2 && (e->old.entry & QCOW2_OFLAG_COMPRESSED);
    enum qcow2_subcluster_type t = compressed ? QCOW2_SC_COMPRESSED : unit_type(s, &e->old, sc);
    if (!touched) {
        /* Untouched subclusters keep their state through the bitmap, except data that moves. */
        if (e->act == ACT_NEW && (t == QCOW2_SC_NORMAL || t == QCOW2_SC_COMPRESSED))
            return t == QCOW2_SC_NORMAL ? FILL_OLD : FILL_COMPRESSED;
        return FILL_NONE;
    }
    switch (t) {
    case QCOW2_SC_NORMAL:
        return e->act == ACT_NEW ? FILL_OLD : FILL_NONE;
    case QCOW2_SC_COMPRESSED:
        return FILL_COMPRESSED;
    case QCOW2_SC_ZERO_PLAIN:
    case QCOW2_SC_ZERO_ALLOC:
        return FILL_ZERO;
    default:
        return FILL_BACKING;
    }
}

/* Writes the bytes of one edge cluster that the guest write leaves untouched. */
static int fill_edge(struct img *img, struct qcow2_state *s, const struct cow_edge *e)
{
    struct io_file *dst = qcow2_data_io(s);
    uint8_t *buf = NULL;
    bool decompressed = false;
    int ret = 0;
    uint32_t unit = s->extended_l2 ? s->subcluster_size : s->cluster_size;
    for (unsigned sc = 0; ret == 0 && sc < units_per_cluster(s); sc++) {
        bool whole;
        enum fill_source src = unit_source(s, e, sc, &whole);
        if (src == FILL_NONE)
            continue;
        uint32_t lo = sc * unit, hi = lo + unit;
        /* The parts of the unit before and after the write. */
        uint32_t parts[2][2] = {{lo, whole ? hi : min_u64(e->from, hi)},
                                {whole ? hi : max_u64(e->to, lo), hi}};
        for (int p = 0; ret == 0 && p < 2; p++) {
            uint32_t a = parts[p][0], b = parts[p][1];
            if (a >= b)
                continue;
            if (src == FILL_ZERO || (src == FILL_BACKING && !img->backing)) {
                ret = qcow2_write_zero_bytes(dst, e->host + a, b - a);
                continue;
            }
            if (!buf) {
                buf = malloc(s->cluster_size);
                if (!buf)
                    return img_error(-ENOMEM, "out of memory");
            }
            if (src == FILL_COMPRESSED) {
                if (!decompressed)
                    ret = read_compressed(s, e->old.entry, buf);
                decompressed = ret == 0;
            } else if (src == FILL_OLD) {
                ret = io_pread(dst, buf + a, b - a, qcow2_l2_entry_offset(e->old.entry) + a);
            } else {
                ret = img_backing_pread(img, buf + a, b - a, e->guest + a);
            }
            /* Zeros (common: no backing file) are written without moving any data. */
            if (ret == 0 && buffer_is_zero(buf + a, b - a))
                ret = qcow2_write_zero_bytes(dst, e->host + a, b - a);
            else if (ret == 0)
                ret = io_pwrite(dst, buf + a, b - a, e->host + a);
        }
    }
    free(buf);
    if (ret < 0)
        img_error_prefix("qcow2: copy-on-write of guest offset 0x%" PRIx64 " failed", e->guest);
    return ret;
}

static void token_free(struct img_alloc *t)
{
    if (!t)
        return;
    free(t->entries);
    free(t);
}

static struct img_alloc *token_new(uint32_t count)
{
    struct img_alloc *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->entries = calloc((size_t)count * 4, sizeof(uint64_t));
    if (!t->entries) {
        free(t);
        return NULL;
    }
    t->bitmaps = t->entries + count;
    t->free_off = t->bitmaps + count;
    t->free_len = t->free_off + count;
    t->count = count;
    return t;
}

/* Bytes [from, to) of cluster `c` that the write [offset, end) covers. */
static void touched(const struct qcow2_state *s, uint64_t c, uint64_t offset, uint64_t end,
                    uint32_t *from, uint32_t *to)
{
    uint64_t start = c << s->cluster_bits;
    *from = offset > start ? (uint32_t)(offset - start) : 0;
    *to = (uint32_t)min_u64(s->cluster_size, end - start);
}

/*
 * Clusters from `first` that are not being allocated and need the same action `want` as
 * `first` does: ACT_NEW (each needs a new host cluster), or ACT_IN_PLACE, where the run must
 * also stay contiguous on the host from `host` so that one extent covers it.
 */
static int run_length(struct qcow2_state *s, struct qcow2_l2_cursor *cur, enum action want,
                      uint64_t first, uint64_t host, uint64_t offset, uint64_t end, uint64_t limit,
                      uint64_t *count)
{
    uint64_t n = 1;
    while (n < limit) {
        uint64_t c = first + n;
        if (qcow2_inflight_overlaps(s->writer, c, 1))
            break;
        struct cluster_info ci;
        int ret = lookup(s, cur, c, &ci);
        if (ret < 0)
            return ret;
        uint32_t from, to;
        touched(s, c, offset, end, &from, &to);
        enum action act;
        if (classify(s, &ci, c << s->cluster_bits, from, to, &act) < 0 || act != want)
            break;
        if (want == ACT_IN_PLACE &&
            qcow2_l2_entry_offset(ci.entry) != host + (n << s->cluster_bits))
            break;
        n++;
    }
    *count = n;
    return 0;
}

/* Prepares the allocation (s->lock held); *ext is filled for in-place writes (no token). */
static int prepare(struct img *img, struct qcow2_state *s, uint64_t offset, uint64_t length,
                   struct img_extent *ext, struct img_alloc **token)
{
    uint64_t first = offset >> s->cluster_bits;
    uint64_t end = offset + length;
    uint64_t last = (end - 1) >> s->cluster_bits;
    uint64_t to_table_end = s->l2_entries - (first & (s->l2_entries - 1));
    uint64_t limit = min_u64(min_u64(last - first + 1, to_table_end),
                             max_u64(1, MAX_RUN_BYTES >> s->cluster_bits));

    qcow2_inflight_wait(s, first, 1);
    int ret = qcow2_writer_usable(s);
    /* Persistent bitmaps stop describing the image with any write, in place ones too. */
    if (ret == 0 && s->ext.has_bitmaps && s->nb_bitmaps && !s->writer->bitmaps_in_use)
        ret = qcow2_writer_begin_change(s);
    if (ret < 0)
        return ret;
    struct qcow2_l2_cursor cur = {0};
    struct cluster_info ci;
    uint32_t from, to;
    enum action act;
    touched(s, first, offset, end, &from, &to);
    ret = lookup(s, &cur, first, &ci);
    if (ret == 0)
        ret = classify(s, &ci, first << s->cluster_bits, from, to, &act);
    if (ret == 0 && act == ACT_IN_PLACE) {
        uint64_t host = qcow2_l2_entry_offset(ci.entry), n;
        ret = run_length(s, &cur, ACT_IN_PLACE, first, host, offset, end, limit, &n);
        qcow2_l2_cursor_release(s, &cur);
        if (ret < 0)
            return ret;
        ext->kind = EXTENT_DATA;
        ext->file = qcow2_data_io(s);
        ext->host_offset = host + (offset - (first << s->cluster_bits));
        ext->host_offset_valid = true;
        ext->length = min_u64(end, (first + n) << s->cluster_bits) - offset;
        *token = NULL;
        /* A damaged L2 table may name metadata, or space past the file, as a data cluster. */
        if (qcow2_has_data_file(s))
            return 0;
        ret = qcow2_overlap_check_within_file(s, "data cluster", host, n << s->cluster_bits);
        if (ret == 0)
            ret = qcow2_overlap_check(s, ext->host_offset, ext->length);
        return ret;
    }
    qcow2_l2_cursor_release(s, &cur);
    if (ret < 0)
        return ret;

    ret = qcow2_writer_begin_change(s);
    if (ret == 0)
        ret = qcow2_l2_prepare(s, first);
    if (ret < 0)
        return ret;
    /* A copied L2 table holds the same entries; look again through the new one. */
    uint64_t n = 1;
    ret = lookup(s, &cur, first, &ci);
    if (ret == 0 && act == ACT_NEW)
        ret = run_length(s, &cur, ACT_NEW, first, 0, offset, end, limit, &n);
    qcow2_l2_cursor_release(s, &cur);
    if (ret < 0)
        return ret;

    struct img_alloc *t = token_new((uint32_t)n);
    if (!t)
        return img_error(-ENOMEM, "out of memory");
    t->first = first;
    if (act == ACT_UPDATE) {
        t->host = qcow2_l2_entry_offset(ci.entry);
        /* Filling the other subclusters writes the whole cluster. */
        if (!qcow2_has_data_file(s))
            ret = qcow2_overlap_check_within_file(s, "data cluster", t->host, s->cluster_size);
        if (ret == 0 && !qcow2_has_data_file(s))
            ret = qcow2_overlap_check(s, t->host, s->cluster_size);
        if (ret < 0) {
            token_free(t);
            return ret;
        }
    } else if (qcow2_has_data_file(s)) {
        t->host = first << s->cluster_bits;
    } else {
        ret = qcow2_alloc_clusters(s, n, &t->host);
        if (ret < 0) {
            token_free(t);
            return ret;
        }
        t->fresh = true;
    }

    for (uint64_t k = 0; k < n; k++) {
        uint64_t c = first + k;
        if (k > 0) {
            ret = lookup(s, &cur, c, &ci);
            if (ret < 0)
                break;
        }
        touched(s, c, offset, end, &from, &to);
        uint64_t host = t->host + (k << s->cluster_bits);
        plan_cluster(s, &ci, c << s->cluster_bits, host, from, to, act, &t->entries[k],
                     &t->bitmaps[k], &t->free_off[k], &t->free_len[k]);
        int side = k == 0 ? 0 : 1;
        if ((k == 0 || k == n - 1) && (from > 0 || to < s->cluster_size || s->extended_l2)) {
            struct cow_edge *e = &t->edge[side];
            e->needed = true;
            e->guest = c << s->cluster_bits;
            e->host = host;
            e->from = from;
            e->to = to;
            e->act = act;
            e->old = ci;
        }
    }
    qcow2_l2_cursor_release(s, &cur);
    if (ret < 0) {
        if (t->fresh)
            qcow2_refcount_update(s, t->host, n << s->cluster_bits, -1);
        token_free(t);
        return ret;
    }
    if (n == 1)
        t->edge[1].needed = false; /* edge[0] covers the only cluster */
    qcow2_inflight_add(s, &t->inflight, first, n);

    ext->kind = EXTENT_DATA;
    ext->file = qcow2_data_io(s);
    ext->host_offset = t->host + (offset - (first << s->cluster_bits));
    ext->host_offset_valid = true;
    ext->length = min_u64(end, (first + n) << s->cluster_bits) - offset;
    *token = t;
    return 0;
}

int qcow2_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
                struct img_alloc **token)
{
    struct qcow2_state *s = img->priv;
    *token = NULL;
    if (!s->writer)
        return img_error(-EROFS, "qcow2: the image is opened read-only");
    if (length == 0)
        return img_error(-EINVAL, "qcow2: empty allocation");
    memset(ext, 0, sizeof(*ext));
    pthread_mutex_lock(&s->lock);
    int ret = prepare(img, s, offset, length, ext, token);
    pthread_mutex_unlock(&s->lock);
    if (ret == 0)
        qcow2_bitmaps_mark_dirty(s, offset, ext->length);
    if (ret < 0 || !*token)
        return ret;

    /* The copies run unlocked: the clusters are registered as in progress. */
    struct img_alloc *t = *token;
    for (int i = 0; ret == 0 && i < 2; i++)
        if (t->edge[i].needed)
            ret = fill_edge(img, s, &t->edge[i]);
    if (ret < 0) {
        qcow2_alloc_commit(img, t, ret);
        *token = NULL;
        return ret;
    }
    return 0;
}

int qcow2_alloc_commit(struct img *img, struct img_alloc *t, int write_result)
{
    struct qcow2_state *s = img->priv;
    int ret = 0;
    pthread_mutex_lock(&s->lock);
    if (write_result < 0) {
        /* Never linked: the clusters can be reused at once. */
        if (t->fresh)
            ret = qcow2_refcount_update(s, t->host, (uint64_t)t->count << s->cluster_bits, -1);
    } else {
        for (uint32_t k = 0; ret == 0 && k < t->count; k++) {
            ret = qcow2_l2_set(s, t->first + k, t->entries[k], t->bitmaps[k]);
            if (ret == 0 && t->free_len[k])
                ret = qcow2_free_clusters(s, t->free_off[k], t->free_len[k]);
        }
        if (ret == 0)
            ret = qcow2_writer_maybe_flush(s);
    }
    qcow2_inflight_remove(s, &t->inflight);
    pthread_mutex_unlock(&s->lock);
    token_free(t);
    return ret;
}

int qcow2_write_through(struct img *img, uint64_t offset, const uint8_t *buf, uint64_t len)
{
    while (len) {
        struct img_extent ext;
        struct img_alloc *token;
        int ret = qcow2_alloc(img, offset, len, &ext, &token);
        if (ret < 0)
            return ret;
        ret = buf ? io_pwrite(ext.file, buf, ext.length, ext.host_offset)
                  : qcow2_write_zero_bytes(ext.file, ext.host_offset, ext.length);
        if (token) {
            int commit = qcow2_alloc_commit(img, token, ret);
            if (ret == 0)
                ret = commit;
        }
        if (ret < 0)
            return ret;
        if (buf)
            buf += ext.length;
        offset += ext.length;
        len -= ext.length;
    }
    return 0;
}

int qcow2_write_zero_bytes(struct io_file *file, uint64_t offset, uint64_t len)
{
    int ret = io_write_zeroes(file, offset, len);
    if (ret < 0)
        img_error(ret, "qcow2: cannot write zeroes at host offset 0x%" PRIx64 ": %s", offset,
                  img_strerror(ret));
    return ret;
}
