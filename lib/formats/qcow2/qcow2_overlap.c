/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The metadata overlap check (QEMU's default "cached" mode). On a damaged image whose refcounts
 * call a metadata cluster free, the allocator would hand that cluster out, and writing guest
 * data or a new table there would destroy the metadata: the write "succeeds" and reads back
 * wrong, or worse. So before the writer puts anything into a host range that was free or that
 * an L2 entry names, the range is compared with the image's metadata: the header cluster, the
 * active L1 table and the L2 tables it names, the refcount table and its blocks, the snapshot
 * table, the snapshots' L1 tables and the bitmap directory. On a hit the image is marked
 * corrupt and the handle refuses every further change, as QEMU does.
 *
 * The check runs on every allocation and in-place write, so it must stay cheap: the fixed
 * structures are compared directly; the L2 tables and refcount blocks (one cluster each) are
 * kept as sorted offset arrays and the snapshots' L1 tables as spans sorted by start with a
 * running maximum of their ends, so a check is three binary searches. The index is built on
 * first use, kept up to date by the writers that link L2 tables and refcount blocks, and
 * rebuilt when the tables it was made from were replaced. Code that unlinks a table in place
 * (shrinking, repairs) need not tell it: a hit is confirmed against a fresh index before the
 * image is called corrupt, so a stale entry can never condemn a healthy image.
 *
 * Everything here runs with s->lock held.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_writer.h"
#include "util/array.h"
#include "util/checked.h"

/* A sorted multiset of host offsets of one-cluster structures. */
struct offset_set {
    uint64_t *v;
    size_t n, cap;
};

/* A snapshot's L1 table: host bytes [start, end). */
struct l1_span {
    uint64_t start, end;
};

struct qcow2_overlap {
    bool valid;
    /* The tables the index was made from: another one means it was replaced. */
    const uint64_t *l1_table;
    uint32_t l1_size;
    const uint64_t *refcount_table;
    uint64_t refcount_table_entries;
    const struct qcow2_snapshot *snapshots;
    uint32_t nb_snapshots;

    struct offset_set l2_tables, refcount_blocks;
    struct l1_span *spans; /* sorted by start */
    uint64_t *max_end;     /* max_end[i]: the largest end among spans[0..i] */
    size_t *max_at;        /* the span that has it */
    size_t nb_spans;
};

/* QEMU's names for the structures, so messages read the same. */
static const char *const metadata_names[] = {
    [QCOW2_META_HEADER] = "qcow2 header",
    [QCOW2_META_ACTIVE_L1] = "active L1 table",
    [QCOW2_META_ACTIVE_L2] = "active L2 table",
    [QCOW2_META_REFCOUNT_TABLE] = "refcount table",
    [QCOW2_META_REFCOUNT_BLOCK] = "refcount block",
    [QCOW2_META_SNAPSHOT_TABLE] = "snapshot table",
    [QCOW2_META_INACTIVE_L1] = "inactive L1 table",
    [QCOW2_META_BITMAP_DIRECTORY] = "bitmap directory",
};

/* A set of kinds, one bit each. */
#define KIND(k) (1u << (k))

struct hit {
    enum qcow2_metadata kind;
    uint64_t offset; /* where the structure starts */
};

/* ---- sorted offsets ------------------------------------------------------------------------ */

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Index of the first element >= key. */
static size_t lower_bound(const struct offset_set *set, uint64_t key)
{
    size_t lo = 0, hi = set->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (set->v[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Fills the set with the non-zero offsets of `table` (entries masked with `mask`). */
static int set_fill(struct offset_set *set, const uint64_t *table, uint64_t entries, uint64_t mask)
{
    set->n = 0;
    int ret = ARRAY_RESERVE(set->v, set->cap, (size_t)entries);
    if (ret < 0)
        return ret;
    for (uint64_t i = 0; i < entries; i++)
        if (table[i] & mask)
            set->v[set->n++] = table[i] & mask;
    if (set->n > 1)
        qsort(set->v, set->n, sizeof(*set->v), compare_u64);
    return 0;
}

static int set_insert(struct offset_set *set, uint64_t offset)
{
    int ret = ARRAY_RESERVE(set->v, set->cap, set->n + 1);
    if (ret < 0)
        return ret;
    size_t at = lower_bound(set, offset);
    memmove(set->v + at + 1, set->v + at, (set->n - at) * sizeof(*set->v));
    set->v[at] = offset;
    set->n++;
    return 0;
}

static void set_remove(struct offset_set *set, uint64_t offset)
{
    size_t at = lower_bound(set, offset);
    if (at == set->n || set->v[at] != offset)
        return;
    memmove(set->v + at, set->v + at + 1, (set->n - at - 1) * sizeof(*set->v));
    set->n--;
}

/* A structure of `size` bytes at an offset in the set that meets [start, end). */
static bool set_hit(const struct offset_set *set, uint64_t size, uint64_t start, uint64_t end,
                    uint64_t *found)
{
    /* [off, off + size) meets [start, end) when start - size < off < end. */
    size_t at = lower_bound(set, start >= size ? start - size + 1 : 0);
    if (at == set->n || set->v[at] >= end)
        return false;
    *found = set->v[at];
    return true;
}

/* ---- snapshot L1 spans --------------------------------------------------------------------- */

static int compare_span(const void *a, const void *b)
{
    const struct l1_span *x = a, *y = b;
    return (x->start > y->start) - (x->start < y->start);
}

static int spans_fill(struct qcow2_overlap *o, const struct qcow2_snapshot *sn, uint32_t count)
{
    free(o->spans);
    free(o->max_end);
    free(o->max_at);
    o->spans = calloc(count ? count : 1, sizeof(*o->spans));
    o->max_end = calloc(count ? count : 1, sizeof(*o->max_end));
    o->max_at = calloc(count ? count : 1, sizeof(*o->max_at));
    o->nb_spans = 0;
    if (!o->spans || !o->max_end || !o->max_at)
        return img_error(-ENOMEM, "out of memory");
    for (uint32_t i = 0; i < count; i++) {
        if (sn[i].l1_size == 0)
            continue;
        struct l1_span *p = &o->spans[o->nb_spans++];
        p->start = sn[i].l1_table_offset;
        if (add_overflows_u64(p->start, (uint64_t)sn[i].l1_size * 8, &p->end))
            p->end = UINT64_MAX;
    }
    qsort(o->spans, o->nb_spans, sizeof(*o->spans), compare_span);
    for (size_t i = 0; i < o->nb_spans; i++) {
        bool carry = i > 0 && o->max_end[i - 1] >= o->spans[i].end;
        o->max_end[i] = carry ? o->max_end[i - 1] : o->spans[i].end;
        o->max_at[i] = carry ? o->max_at[i - 1] : i;
    }
    return 0;
}

/* A snapshot L1 table that meets [start, end). */
static bool spans_hit(const struct qcow2_overlap *o, uint64_t start, uint64_t end, uint64_t *found)
{
    /* The spans that begin before `end`; one of them meets the range if any reaches past start. */
    size_t lo = 0, hi = o->nb_spans;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (o->spans[mid].start < end)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0 || o->max_end[lo - 1] <= start)
        return false;
    *found = o->spans[o->max_at[lo - 1]].start;
    return true;
}

/* ---- the index ----------------------------------------------------------------------------- */

static bool index_current(const struct qcow2_overlap *o, const struct qcow2_state *s)
{
    return o->valid && o->l1_table == s->l1_table && o->l1_size == s->l1_size &&
           o->refcount_table == s->refcount_table &&
           o->refcount_table_entries == s->refcount_table_entries && o->snapshots == s->snapshots &&
           o->nb_snapshots == s->nb_snapshots;
}

static int index_build(struct qcow2_state *s, struct qcow2_overlap *o)
{
    o->valid = false;
    int ret = set_fill(&o->l2_tables, s->l1_table, s->l1_size, QCOW2_L1E_OFFSET_MASK);
    if (ret == 0)
        ret = set_fill(&o->refcount_blocks, s->refcount_table, s->refcount_table_entries,
                       QCOW2_REFT_OFFSET_MASK);
    if (ret == 0)
        ret = spans_fill(o, s->snapshots, s->nb_snapshots);
    if (ret < 0)
        return ret;
    o->l1_table = s->l1_table;
    o->l1_size = s->l1_size;
    o->refcount_table = s->refcount_table;
    o->refcount_table_entries = s->refcount_table_entries;
    o->snapshots = s->snapshots;
    o->nb_snapshots = s->nb_snapshots;
    o->valid = true;
    return 0;
}

/* The index, built when missing or made from tables since replaced; *built says it is new. */
static int index_get(struct qcow2_state *s, struct qcow2_overlap **out, bool *built)
{
    struct qcow2_writer *w = s->writer;
    *built = false;
    if (!w->overlap) {
        w->overlap = calloc(1, sizeof(*w->overlap));
        if (!w->overlap)
            return img_error(-ENOMEM, "out of memory");
    }
    if (!index_current(w->overlap, s)) {
        int ret = index_build(s, w->overlap);
        if (ret < 0)
            return ret;
        *built = true;
    }
    *out = w->overlap;
    return 0;
}

static bool index_hit(const struct qcow2_state *s, const struct qcow2_overlap *o, unsigned ignore,
                      uint64_t start, uint64_t end, struct hit *h)
{
    if (!(ignore & KIND(QCOW2_META_ACTIVE_L2)) &&
        set_hit(&o->l2_tables, s->cluster_size, start, end, &h->offset)) {
        h->kind = QCOW2_META_ACTIVE_L2;
        return true;
    }
    if (!(ignore & KIND(QCOW2_META_REFCOUNT_BLOCK)) &&
        set_hit(&o->refcount_blocks, s->cluster_size, start, end, &h->offset)) {
        h->kind = QCOW2_META_REFCOUNT_BLOCK;
        return true;
    }
    if (!(ignore & KIND(QCOW2_META_INACTIVE_L1)) && spans_hit(o, start, end, &h->offset)) {
        h->kind = QCOW2_META_INACTIVE_L1;
        return true;
    }
    return false;
}

/* [off, off + len) meets [start, end); an overflowing structure reaches the end of the space. */
static bool meets(uint64_t off, uint64_t len, uint64_t start, uint64_t end)
{
    uint64_t stop;
    if (add_overflows_u64(off, len, &stop))
        stop = UINT64_MAX;
    return len && off < end && start < stop;
}

/* The structures the header names: compared directly, they move only with the header. */
static bool fixed_hit(const struct qcow2_state *s, unsigned ignore, uint64_t start, uint64_t end,
                      struct hit *h)
{
    const struct qcow2_header *hdr = &s->hdr;
    struct {
        enum qcow2_metadata kind;
        uint64_t offset, length;
    } fixed[] = {
        {QCOW2_META_HEADER, 0, s->cluster_size},
        {QCOW2_META_ACTIVE_L1, hdr->l1_table_offset, (uint64_t)s->l1_size * 8},
        {QCOW2_META_REFCOUNT_TABLE, hdr->refcount_table_offset,
         (uint64_t)hdr->refcount_table_clusters << s->cluster_bits},
        {QCOW2_META_SNAPSHOT_TABLE, hdr->snapshots_offset,
         s->nb_snapshots ? s->snapshot_table_bytes : 0},
        {QCOW2_META_BITMAP_DIRECTORY, s->ext.bitmap_directory_offset,
         s->ext.has_bitmaps ? s->ext.bitmap_directory_size : 0},
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        if (ignore & KIND(fixed[i].kind))
            continue;
        if (meets(fixed[i].offset, fixed[i].length, start, end)) {
            h->kind = fixed[i].kind;
            h->offset = fixed[i].offset;
            return true;
        }
    }
    return false;
}

static int check(struct qcow2_state *s, unsigned ignore, uint64_t offset, uint64_t length)
{
    if (length == 0)
        return 0;
    uint64_t end;
    if (add_overflows_u64(offset, length, &end) || end > UINT64_MAX - s->cluster_size)
        return img_error(-EIO, "qcow2: write at host offset 0x%" PRIx64 " overflows", offset);
    /* A cluster that holds metadata belongs to it whole (as in QEMU). */
    uint64_t start = align_down_u64(offset, s->cluster_size);
    end = align_up_u64(end, s->cluster_size);
    struct hit h;
    if (!fixed_hit(s, ignore, start, end, &h)) {
        struct qcow2_overlap *o = NULL;
        bool built;
        int ret = index_get(s, &o, &built);
        if (ret < 0)
            return ret;
        if (!index_hit(s, o, ignore, start, end, &h))
            return 0;
        /* The hit may be a table unlinked in place since the index was made: confirm it. */
        if (!built) {
            ret = index_build(s, o);
            if (ret < 0)
                return ret;
            if (!index_hit(s, o, ignore, start, end, &h))
                return 0;
        }
    }
    return qcow2_writer_mark_corrupt(s,
                                     "preventing invalid write on metadata (host offset "
                                     "0x%" PRIx64 ", %" PRIu64 " bytes, overlaps with %s at "
                                     "0x%" PRIx64 ")",
                                     offset, length, metadata_names[h.kind], h.offset);
}

int qcow2_overlap_check(struct qcow2_state *s, uint64_t offset, uint64_t length)
{
    return check(s, 0, offset, length);
}

int qcow2_overlap_check_rewrite(struct qcow2_state *s, enum qcow2_metadata own, uint64_t offset,
                                uint64_t length)
{
    return check(s, KIND(own), offset, length);
}

int qcow2_overlap_check_within_file(struct qcow2_state *s, const char *what, uint64_t offset,
                                    uint64_t length)
{
    uint64_t end, file_end = s->writer->end_cluster << s->cluster_bits;
    if (!add_overflows_u64(offset, length, &end) && end <= file_end)
        return 0;
    return qcow2_writer_mark_corrupt(s,
                                     "%s at host offset 0x%" PRIx64 " lies beyond the end of "
                                     "the file (0x%" PRIx64 "): nothing allocated it",
                                     what, offset, file_end);
}

void qcow2_overlap_link(struct qcow2_state *s, bool refcount_block, uint64_t offset)
{
    struct qcow2_overlap *o = s->writer->overlap;
    if (!o || !o->valid || offset == 0)
        return;
    /* Without room to note it, the index is made again on the next check. */
    if (set_insert(refcount_block ? &o->refcount_blocks : &o->l2_tables, offset) < 0) {
        img_error_clear();
        o->valid = false;
    }
}

void qcow2_overlap_unlink_l2(struct qcow2_state *s, uint64_t offset)
{
    struct qcow2_overlap *o = s->writer->overlap;
    if (o && o->valid)
        set_remove(&o->l2_tables, offset);
}

void qcow2_overlap_invalidate(struct qcow2_state *s)
{
    if (s->writer && s->writer->overlap)
        s->writer->overlap->valid = false;
}

void qcow2_overlap_free(struct qcow2_overlap *o)
{
    if (!o)
        return;
    free(o->l2_tables.v);
    free(o->refcount_blocks.v);
    free(o->spans);
    free(o->max_end);
    free(o->max_at);
    free(o);
}
