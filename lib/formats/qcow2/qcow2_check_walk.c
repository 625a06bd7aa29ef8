/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Counting references: every structure the image uses, found from the header, adds one to the
 * in-memory refcount of each host cluster it touches. Entries are checked on the way with the
 * rules (and the wording) of QEMU's check, so that the counts of corruptions agree.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_check.h"
#include "formats/qcow2/qcow2_offset_map.h"
#include "io/io.h"
#include "progress.h"
#include "util/array.h"
#include "util/checked.h"
#include "util/endian.h"

/* QEMU refuses to check images of more clusters than an int counts. */
#define CHECK_MAX_CLUSTERS ((uint64_t)INT32_MAX)
/* And the in-memory refcounts stay within this, whatever the file claims to be. */
#define CHECK_MAX_REFS_BYTES (1ull << 30)

/* Bits that must be zero in table entries. */
#define L1E_RESERVED_MASK 0x7f000000000001ffull
#define L2E_STD_RESERVED_MASK 0x3f000000000001feull
#define REFT_RESERVED_MASK 0x1ffull
#define BME_OFFSET_MASK 0x00fffffffffffe00ull
#define BME_RESERVED_MASK 0xff000000000001feull
#define BME_ALL_ONES 1ull
#define L2_BITMAP_ALL_ALLOC 0xffffffffull
#define L2_BITMAP_ALL_ZEROES (L2_BITMAP_ALL_ALLOC << 32)

/* A repair grows the file by at most its size or this much, whichever is larger. */
#define MAX_REPAIR_GROWTH (1ull << 30)

/* Reading big tables in pieces keeps memory small for bitmap tables. */
#define TABLE_CHUNK_ENTRIES 8192u

void qcow2_check_report(struct qcow2_check_ctx *c, const char *fmt, ...)
{
    if (!c->log)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    c->log(c->log_user, line);
}

int qcow2_check_refs_init(struct qcow2_check_ctx *c, uint64_t clusters)
{
    c->ref_bytes = c->s->refcount_order > 4 ? 4 : 2;
    c->ref_max = min_u64(c->s->refcount_max, c->ref_bytes == 2 ? UINT16_MAX : UINT32_MAX);
    c->refs = NULL;
    c->nb_clusters = c->refs_cap = 0;
    return qcow2_check_refs_grow(c, clusters);
}

void qcow2_check_refs_free(struct qcow2_check_ctx *c)
{
    free(c->refs);
    c->refs = NULL;
    c->nb_clusters = c->refs_cap = 0;
}

int qcow2_check_refs_grow(struct qcow2_check_ctx *c, uint64_t clusters)
{
    if (clusters <= c->nb_clusters)
        return 0;
    if (clusters > CHECK_MAX_CLUSTERS || clusters > CHECK_MAX_REFS_BYTES / c->ref_bytes) {
        c->res->check_errors++;
        return img_error(-EFBIG,
                         "qcow2: cannot check an image of %" PRIu64
                         " clusters (the check handles at most %" PRIu64 ")",
                         clusters,
                         min_u64(CHECK_MAX_CLUSTERS, CHECK_MAX_REFS_BYTES / c->ref_bytes));
    }
    if (clusters > c->refs_cap) {
        /* Growth past the end of the file is at most a cluster at a time: leave some room. */
        uint64_t cap = clusters + clusters / 8 + 64;
        cap = min_u64(cap, CHECK_MAX_REFS_BYTES / c->ref_bytes);
        void *p = realloc(c->refs, (size_t)(cap * c->ref_bytes));
        if (!p) {
            c->res->check_errors++;
            return img_error(-ENOMEM, "out of memory");
        }
        c->refs = p;
        c->refs_cap = cap;
    }
    memset((uint8_t *)c->refs + c->nb_clusters * c->ref_bytes, 0,
           (size_t)((clusters - c->nb_clusters) * c->ref_bytes));
    c->nb_clusters = clusters;
    return 0;
}

int qcow2_check_count_range_n(struct qcow2_check_ctx *c, uint64_t offset, uint64_t size,
                              uint64_t times)
{
    const struct qcow2_state *s = c->s;
    if (size == 0 || times == 0)
        return 0;
    uint64_t end;
    /*
     * The last cluster may be partly past the end of the file (an image need not end on a
     * cluster boundary), but a range reaching a cluster or more past it is broken.
     */
    if (add_overflows_u64(offset, size, &end) ||
        (end > c->file_size && end - c->file_size >= s->cluster_size)) {
        qcow2_check_report(c,
                           "ERROR: counting reference for region exceeding the end of the file "
                           "by one cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64,
                           offset, size);
        c->res->corruptions += times;
        return 0;
    }
    uint64_t first = offset >> s->cluster_bits;
    uint64_t last = (end - 1) >> s->cluster_bits;
    if (last >= c->nb_clusters) {
        int ret = qcow2_check_refs_grow(c, last + 1);
        if (ret < 0)
            return ret;
    }
    for (uint64_t k = first; k <= last; k++) {
        /* Every reference that finds the refcount at its largest is an overflow. */
        uint64_t ref = qcow2_check_ref(c, k);
        uint64_t room = c->ref_max - ref;
        if (times > room) {
            qcow2_check_report(c, "ERROR: overflow cluster offset=0x%" PRIx64,
                               k << s->cluster_bits);
            c->res->corruptions += times - room;
        }
        qcow2_check_set_ref(c, k, ref + min_u64(times, room));
    }
    return 0;
}

int qcow2_check_count_range(struct qcow2_check_ctx *c, uint64_t offset, uint64_t size)
{
    return qcow2_check_count_range_n(c, offset, size, 1);
}

static int read_metadata(struct qcow2_check_ctx *c, void *buf, size_t len, uint64_t offset,
                         const char *what)
{
    int ret = io_pread(c->s->file, buf, len, offset);
    if (ret < 0) {
        qcow2_check_report(c, "ERROR: I/O error reading %s at 0x%" PRIx64, what, offset);
        c->res->check_errors++;
    }
    return ret;
}

/*
 * Walking the L1 tables. A first pass reads every L1 table (the active one and the snapshots')
 * and notes how often each L2 table is named; a second reads each L2 table once and counts
 * what it references as often as it is named. The figures are those of QEMU's walk, which reads
 * a table each time it is named, but the work stays proportional to the file: a crafted image
 * cannot make the check read one table millions of times.
 */
struct l2_use {
    uint64_t offset;
    uint64_t times;        /* named by this many L1 entries in all */
    uint64_t active_times; /* ... of them in the active L1 table */
};

struct walk {
    struct qcow2_offset_map map;
    struct l2_use *uses;
    size_t nb_uses, cap_uses;
    uint64_t entries_read; /* L1 and bitmap table entries, against CHECK_MAX_TABLE_ENTRIES */
    uint8_t *table;        /* one L2 table */
};

/* Reading more table entries than this means a crafted image: the check gives up. */
#define CHECK_MAX_TABLE_ENTRIES (1ull << 30)

static int charge_entries(struct qcow2_check_ctx *c, struct walk *w, uint64_t entries)
{
    w->entries_read += entries;
    if (w->entries_read <= CHECK_MAX_TABLE_ENTRIES)
        return 0;
    c->res->check_errors++;
    return img_error(-EFBIG,
                     "qcow2: the image's tables have more than %llu entries in all; not "
                     "checking it",
                     (unsigned long long)CHECK_MAX_TABLE_ENTRIES);
}

static int note_l2_use(struct qcow2_check_ctx *c, struct walk *w, uint64_t l2_offset, bool active)
{
    size_t n;
    bool added;
    int ret = qcow2_offset_map_add(&w->map, l2_offset, &n, &added);
    if (ret < 0) {
        c->res->check_errors++;
        if (ret == -EFBIG)
            return img_error(ret, "qcow2: the L1 tables name more L2 tables than the file holds");
        return img_error(ret, "out of memory");
    }
    if (added) {
        if ((ret = ARRAY_RESERVE(w->uses, w->cap_uses, w->nb_uses + 1)) < 0) {
            c->res->check_errors++;
            return ret;
        }
        w->uses[n] = (struct l2_use){.offset = l2_offset};
        w->nb_uses++;
    }
    w->uses[n].times++;
    if (active)
        w->uses[n].active_times++;
    return 0;
}

/* What one reading of an L2 table found: counted as often as the table is named. */
struct l2_findings {
    uint64_t corruptions;
    uint64_t allocated, fragmented, compressed;
    uint64_t next_contiguous; /* host offset that would continue the previous cluster */
};

/* An allocated cluster at an unaligned offset that holds no data can become a zero cluster. */
static int fix_unaligned_prealloc(struct qcow2_check_ctx *c, uint64_t l2_offset, uint32_t index,
                                  uint64_t bitmap)
{
    uint64_t entry = QCOW2_OFLAG_ZERO;
    if (c->s->extended_l2) {
        entry = 0;
        bitmap = (bitmap | (bitmap << 32)) & L2_BITMAP_ALL_ZEROES;
    }
    int ret = qcow2_check_write_l2_entry(c, l2_offset, index, entry, bitmap);
    if (ret < 0) {
        qcow2_check_report(c, "ERROR: Failed to overwrite L2 table entry: %s", strerror(-ret));
        c->res->check_errors++;
        return ret;
    }
    /* Fixed on the first reading: later readings of the table see a zero cluster. */
    c->res->corruptions_fixed++;
    return 0;
}

/* QEMU's cluster type of an L2 entry (the subcluster bitmap aside). */
enum cluster_type { CT_UNALLOCATED, CT_ZERO_PLAIN, CT_ZERO_ALLOC, CT_NORMAL, CT_COMPRESSED };

static enum cluster_type cluster_type(const struct qcow2_check_ctx *c, uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return CT_COMPRESSED;
    uint64_t offset = qcow2_l2_entry_offset(entry);
    if ((entry & QCOW2_OFLAG_ZERO) && !c->s->extended_l2)
        return offset ? CT_ZERO_ALLOC : CT_ZERO_PLAIN;
    if (!offset)
        return c->has_data_file && (entry & QCOW2_OFLAG_COPIED) ? CT_NORMAL : CT_UNALLOCATED;
    return CT_NORMAL;
}

static int check_allocated_entry(struct qcow2_check_ctx *c, const struct l2_use *use, uint32_t i,
                                 uint64_t entry, uint64_t bitmap, struct l2_findings *f)
{
    const struct qcow2_state *s = c->s;
    uint64_t offset = qcow2_l2_entry_offset(entry);

    if ((bitmap >> 32) & bitmap) {
        f->corruptions++;
        qcow2_check_report(c,
                           "ERROR offset=%" PRIx64 ": Allocated cluster has corrupted subcluster "
                           "allocation bitmap",
                           offset);
    }
    if (offset & (s->cluster_size - 1)) {
        bool contains_data =
            s->extended_l2 ? (bitmap & L2_BITMAP_ALL_ALLOC) != 0 : !(entry & QCOW2_OFLAG_ZERO);
        if (contains_data) {
            f->corruptions++;
            qcow2_check_report(c,
                               "ERROR offset=%" PRIx64 ": Data cluster is not properly aligned; "
                               "L2 entry corrupted.",
                               offset);
        } else {
            bool repair = (c->fix & IMG_CHECK_REPAIR_ERRORS) != 0;
            qcow2_check_report(c,
                               "%s offset=%" PRIx64 ": Preallocated cluster is not properly "
                               "aligned; L2 entry corrupted.",
                               repair ? "Repairing" : "ERROR", offset);
            /* Once repaired, the entry references nothing: skip counting it. */
            if (repair && fix_unaligned_prealloc(c, use->offset, i, bitmap) == 0)
                return 0;
            f->corruptions++;
        }
    }
    f->allocated++;
    if (f->next_contiguous && offset != f->next_contiguous)
        f->fragmented++;
    f->next_contiguous = offset + s->cluster_size;
    /* Clusters of an external data file are not counted in this file's refcounts. */
    if (c->has_data_file)
        return 0;
    return qcow2_check_count_range_n(c, offset, s->cluster_size, use->times);
}

static int check_compressed_entry(struct qcow2_check_ctx *c, const struct l2_use *use, uint32_t i,
                                  uint64_t entry, uint64_t bitmap, struct l2_findings *f)
{
    const struct qcow2_state *s = c->s;
    if (entry & QCOW2_OFLAG_COPIED) {
        qcow2_check_report(c,
                           "ERROR: coffset=0x%" PRIx64 ": copied flag must never be set for "
                           "compressed clusters",
                           entry & s->compressed_offset_mask);
        entry &= ~QCOW2_OFLAG_COPIED;
        f->corruptions++;
    }
    if (c->has_data_file) {
        qcow2_check_report(
            c, "ERROR compressed cluster %" PRIu32 " with data file, entry=0x%" PRIx64, i, entry);
        f->corruptions++;
        return 0;
    }
    if (bitmap) {
        qcow2_check_report(c,
                           "ERROR compressed cluster %" PRIu32 " with non-zero subcluster "
                           "allocation bitmap, entry=0x%" PRIx64,
                           i, entry);
        f->corruptions++;
        return 0;
    }
    uint64_t coffset, csize;
    qcow2_compressed_decode(s, entry, &coffset, &csize);
    /* Compressed clusters share sectors with their neighbours: QEMU counts them fragmented. */
    f->allocated++;
    f->compressed++;
    f->fragmented++;
    return qcow2_check_count_range_n(c, coffset, csize, use->times);
}

static int check_l2(struct qcow2_check_ctx *c, const struct l2_use *use, uint8_t *table)
{
    const struct qcow2_state *s = c->s;
    int ret = read_metadata(c, table, s->cluster_size, use->offset, "an L2 table");
    if (ret < 0)
        return ret;
    struct l2_findings f = {0};
    for (uint32_t i = 0; i < s->l2_entries && ret == 0; i++) {
        const uint8_t *p = table + (size_t)i * s->l2_entry_bytes;
        uint64_t entry = load_be64(p);
        uint64_t bitmap = s->extended_l2 ? load_be64(p + 8) : 0;
        enum cluster_type type = cluster_type(c, entry);

        if (type != CT_COMPRESSED && (entry & L2E_STD_RESERVED_MASK)) {
            qcow2_check_report(c, "ERROR found l2 entry with reserved bits set: %" PRIx64, entry);
            f.corruptions++;
        }
        switch (type) {
        case CT_COMPRESSED:
            ret = check_compressed_entry(c, use, i, entry, bitmap, &f);
            break;
        case CT_ZERO_ALLOC:
        case CT_NORMAL:
            ret = check_allocated_entry(c, use, i, entry, bitmap, &f);
            break;
        case CT_ZERO_PLAIN:
            break;
        case CT_UNALLOCATED:
            if (bitmap & L2_BITMAP_ALL_ALLOC) {
                f.corruptions++;
                qcow2_check_report(c, "ERROR: Unallocated cluster has non-zero subcluster "
                                      "allocation map");
            }
            break;
        }
    }
    c->res->corruptions += f.corruptions * use->times;
    /* The allocation figures describe the active table only. */
    c->res->allocated_clusters += f.allocated * use->active_times;
    c->res->fragmented_clusters += f.fragmented * use->active_times;
    c->res->compressed_clusters += f.compressed * use->active_times;
    return ret;
}

/* First pass over one L1 table: its own clusters, its entries, the L2 tables it names. */
static int check_l1(struct qcow2_check_ctx *c, struct walk *w, uint64_t l1_offset, uint32_t l1_size,
                    bool active)
{
    const struct qcow2_state *s = c->s;
    if (l1_size == 0)
        return 0;
    size_t bytes = (size_t)l1_size * sizeof(uint64_t); /* at most 32 MiB, checked by callers */
    int ret = charge_entries(c, w, l1_size);
    if (ret == 0)
        ret = qcow2_check_count_range(c, l1_offset, bytes);
    if (ret < 0)
        return ret;
    uint64_t *l1 = malloc(bytes);
    if (!l1) {
        c->res->check_errors++;
        return img_error(-ENOMEM, "out of memory");
    }
    ret = read_metadata(c, l1, bytes, l1_offset, "an L1 table");
    for (uint32_t i = 0; ret >= 0 && i < l1_size; i++) {
        uint64_t e = load_be64(&l1[i]);
        if (!e)
            continue;
        if (e & L1E_RESERVED_MASK) {
            qcow2_check_report(c, "ERROR found L1 entry with reserved bits set: %" PRIx64, e);
            c->res->corruptions++;
        }
        uint64_t l2_offset = e & QCOW2_L1E_OFFSET_MASK;
        ret = qcow2_check_count_range(c, l2_offset, s->cluster_size);
        if (ret < 0)
            break;
        if (l2_offset & (s->cluster_size - 1)) {
            qcow2_check_report(c,
                               "ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 "
                               "entry corrupted",
                               l2_offset);
            c->res->corruptions++;
        }
        /* A table wholly past the end of the file reads as zeros: it references nothing. */
        if (l2_offset && l2_offset < c->file_size)
            ret = note_l2_use(c, w, l2_offset, active);
    }
    free(l1);
    return ret < 0 ? ret : 0;
}

static int check_snapshots(struct qcow2_check_ctx *c, struct walk *w)
{
    const struct qcow2_state *s = c->s;
    if (c->has_data_file && s->nb_snapshots) {
        qcow2_check_report(c, "ERROR %" PRIu32 " snapshots in image with data file",
                           s->nb_snapshots);
        c->res->corruptions++;
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        const struct qcow2_snapshot *sn = &s->snapshots[i];
        if (sn->l1_table_offset & (s->cluster_size - 1)) {
            qcow2_check_report(c,
                               "ERROR snapshot %s (%s) l1_offset=%#" PRIx64 ": L1 table is not "
                               "cluster aligned; snapshot table entry corrupted",
                               sn->id, sn->name, sn->l1_table_offset);
            c->res->corruptions++;
            continue;
        }
        if (sn->l1_size > QCOW2_MAX_L1_BYTES / sizeof(uint64_t)) {
            qcow2_check_report(c,
                               "ERROR snapshot %s (%s) l1_size=%#" PRIx32 ": L1 table is too "
                               "large; snapshot table entry corrupted",
                               sn->id, sn->name, sn->l1_size);
            c->res->corruptions++;
            continue;
        }
        int ret = check_l1(c, w, sn->l1_table_offset, sn->l1_size, false);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* Every L1 table, then every L2 table they name, once each. */
static int check_tables(struct qcow2_check_ctx *c)
{
    const struct qcow2_state *s = c->s;
    struct walk w = {0};
    /* Each real L2 table is a cluster of the file; a little slack for damaged entries. */
    qcow2_offset_map_init(&w.map,
                          (size_t)min_u64((c->file_size >> s->cluster_bits) + 1024, SIZE_MAX / 64));
    w.table = malloc(s->cluster_size);
    int ret = w.table ? 0 : img_error(-ENOMEM, "out of memory");
    if (ret == 0)
        ret = check_l1(c, &w, s->hdr.l1_table_offset, s->l1_size, true);
    if (ret == 0)
        ret = check_snapshots(c, &w);
    /* Reading the L2 tables is the long part: progress in shares of the virtual size. */
    uint64_t size = c->img->size;
    for (size_t i = 0; ret == 0 && i < w.nb_uses; i++) {
        if (c->reports_progress)
            ret = img_progress((uint64_t)((double)size * (double)i / (double)w.nb_uses), size);
        if (ret == 0)
            ret = check_l2(c, &w.uses[i], w.table);
    }
    if (ret == 0 && c->reports_progress)
        ret = img_progress(size, size);
    if (ret == 0)
        ret = qcow2_check_count_range(c, s->hdr.snapshots_offset, s->snapshot_table_bytes);
    qcow2_offset_map_free(&w.map);
    free(w.uses);
    free(w.table);
    return ret;
}

static bool bitmap_entry_valid(uint64_t entry, uint32_t cluster_size)
{
    if (entry & BME_RESERVED_MASK)
        return false;
    uint64_t offset = entry & BME_OFFSET_MASK;
    /* With an offset, bit 0 ("all ones") is reserved. */
    return offset == 0 || (!(entry & BME_ALL_ONES) && !(offset & (cluster_size - 1)));
}

static int check_bitmap_table(struct qcow2_check_ctx *c, struct walk *w,
                              const struct qcow2_bitmap *b)
{
    const struct qcow2_state *s = c->s;
    int ret = charge_entries(c, w, b->table_size);
    if (ret == 0)
        ret = qcow2_check_count_range(c, b->table_offset, (uint64_t)b->table_size * 8);
    if (ret < 0)
        return ret;
    uint64_t chunk[TABLE_CHUNK_ENTRIES];
    for (uint32_t done = 0; done < b->table_size;) {
        uint32_t n = (uint32_t)min_u64(TABLE_CHUNK_ENTRIES, b->table_size - done);
        ret = read_metadata(c, chunk, (size_t)n * 8, b->table_offset + (uint64_t)done * 8,
                            "a bitmap table");
        if (ret < 0)
            return ret;
        for (uint32_t i = 0; i < n; i++) {
            uint64_t e = load_be64(&chunk[i]);
            if (!bitmap_entry_valid(e, s->cluster_size)) {
                qcow2_check_report(
                    c, "ERROR bitmap '%s' table entry %" PRIu32 " is invalid: 0x%" PRIx64, b->name,
                    done + i, e);
                c->res->corruptions++;
                continue;
            }
            if (e & BME_OFFSET_MASK) {
                ret = qcow2_check_count_range(c, e & BME_OFFSET_MASK, s->cluster_size);
                if (ret < 0)
                    return ret;
            }
        }
        done += n;
    }
    return 0;
}

static int check_bitmaps(struct qcow2_check_ctx *c)
{
    const struct qcow2_state *s = c->s;
    if (!s->ext.has_bitmaps || s->nb_bitmaps == 0)
        return 0;
    struct walk w = {0};
    int ret =
        qcow2_check_count_range(c, s->ext.bitmap_directory_offset, s->ext.bitmap_directory_size);
    for (uint32_t i = 0; ret >= 0 && i < s->nb_bitmaps; i++)
        ret = check_bitmap_table(c, &w, &s->bitmaps[i]);
    return ret;
}

/* Refcount blocks: aligned, inside the file, and used by nothing else. */
static int check_refblocks(struct qcow2_check_ctx *c)
{
    struct qcow2_state *s = c->s;
    for (uint64_t i = 0; i < s->refcount_table_entries; i++) {
        uint64_t raw = s->refcount_table[i];
        uint64_t offset = raw & QCOW2_REFT_OFFSET_MASK;
        uint64_t cluster = offset >> s->cluster_bits;
        if (raw & REFT_RESERVED_MASK) {
            qcow2_check_report(c, "ERROR refcount table entry %" PRIu64 " has reserved bits set",
                               i);
            c->res->corruptions++;
            c->rebuild = true;
            continue;
        }
        if (offset & (s->cluster_size - 1)) {
            qcow2_check_report(c,
                               "ERROR refcount block %" PRIu64 " is not cluster aligned; "
                               "refcount table entry corrupted",
                               i);
            c->res->corruptions++;
            c->rebuild = true;
            continue;
        }
        if (cluster >= c->nb_clusters) {
            c->res->corruptions++;
            bool repair = (c->fix & IMG_CHECK_REPAIR_ERRORS) != 0;
            qcow2_check_report(c, "%s refcount block %" PRIu64 " is outside image",
                               repair ? "Repairing" : "ERROR", i);
            if (repair) {
                /*
                 * As QEMU does, grow the file so that the block exists (it reads as zeros), but
                 * only as far as a truncated file plausibly lost: a block named terabytes past
                 * the end is damage, and the structure is rebuilt instead.
                 */
                uint64_t end;
                int ret = -EFBIG;
                if (!add_overflows_u64(offset, s->cluster_size, &end) &&
                    end - c->file_size <= max_u64(c->file_size, MAX_REPAIR_GROWTH))
                    ret = io_truncate(s->file, end);
                if (ret == 0) {
                    c->file_size = end;
                    ret = qcow2_check_refs_grow(c, cluster + 1);
                    if (ret < 0)
                        return ret;
                    c->res->corruptions--;
                    c->res->corruptions_fixed++;
                    ret = qcow2_check_count_range(c, offset, s->cluster_size);
                    if (ret < 0)
                        return ret;
                    continue;
                }
                qcow2_check_report(c, "ERROR could not resize image: %s", strerror(-ret));
                c->rebuild = true;
            }
            continue;
        }
        if (offset == 0)
            continue;
        int ret = qcow2_check_count_range(c, offset, s->cluster_size);
        if (ret < 0)
            return ret;
        uint64_t ref = qcow2_check_ref(c, cluster);
        if (ref != 1) {
            qcow2_check_report(c, "ERROR refcount block %" PRIu64 " refcount=%" PRIu64, i, ref);
            c->res->corruptions++;
            c->rebuild = true;
        }
    }
    return 0;
}

int qcow2_check_count_all(struct qcow2_check_ctx *c)
{
    struct qcow2_state *s = c->s;
    int ret = qcow2_check_count_range(c, 0, s->cluster_size); /* the header */
    if (ret < 0)
        return ret;
    ret = check_tables(c);
    if (ret < 0)
        return ret;
    ret = qcow2_check_count_range(c, s->hdr.refcount_table_offset,
                                  s->refcount_table_entries * sizeof(uint64_t));
    if (ret < 0)
        return ret;
    if (s->ext.has_crypto_header) {
        ret = qcow2_check_count_range(c, s->ext.crypto_header_offset, s->ext.crypto_header_length);
        if (ret < 0)
            return ret;
    }
    ret = check_bitmaps(c);
    if (ret < 0)
        return ret;
    return check_refblocks(c);
}
