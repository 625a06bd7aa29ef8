/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The check driver: count every reference, compare with the refcounts on disk, repair in the
 * order QEMU repairs (refcounts first, then COPIED flags, which depend on them), and when
 * something was repaired, check again and report that second look, as qemu-img check does.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_check.h"
#include "formats/qcow2/qcow2_offset_map.h"
#include "formats/qcow2/qcow2_snapshot_write.h"
#include "formats/qcow2/qcow2_writer.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* Refcount changes found in one refcount block, written together. */
struct block_fixes {
    uint64_t first_byte, end_byte;
    uint64_t leaks, corruptions; /* fixed once the write succeeds */
};

static void note_fix(struct block_fixes *f, const struct qcow2_state *s, uint64_t index, bool leak)
{
    uint64_t first = (index << s->refcount_order) >> 3;
    uint64_t end = (((index + 1) << s->refcount_order) + 7) >> 3;
    if (f->leaks + f->corruptions == 0 || first < f->first_byte)
        f->first_byte = first;
    if (end > f->end_byte)
        f->end_byte = end;
    if (leak)
        f->leaks++;
    else
        f->corruptions++;
}

static void apply_fixes(struct qcow2_check_ctx *c, uint64_t block_offset, const uint8_t *block,
                        const struct block_fixes *f)
{
    if (f->leaks + f->corruptions == 0)
        return;
    int ret = qcow2_check_write_refblock_range(c, block_offset, block, f->first_byte, f->end_byte);
    if (ret < 0) {
        qcow2_check_report(c, "ERROR: could not write refcount block at 0x%" PRIx64 ": %s",
                           block_offset, strerror(-ret));
        c->res->leaks += f->leaks;
        c->res->corruptions += f->corruptions;
        return;
    }
    c->res->leaks_fixed += f->leaks;
    c->res->corruptions_fixed += f->corruptions;
}

/* Where refcount block `index` is (0: none); -EIO when the table entry is unusable. */
static int refblock_offset(const struct qcow2_state *s, uint64_t index, uint64_t *offset)
{
    *offset = 0;
    if (index >= s->refcount_table_entries)
        return 0;
    *offset = s->refcount_table[index] & QCOW2_REFT_OFFSET_MASK;
    return (*offset & (s->cluster_size - 1)) ? -EIO : 0;
}

/* Compares the refcounts of the clusters that refcount block `index` covers. */
static void compare_block(struct qcow2_check_ctx *c, unsigned fix, uint64_t index, uint8_t *block,
                          uint64_t *highest)
{
    struct qcow2_state *s = c->s;
    uint64_t per_block = 1ull << s->refcount_block_bits;
    uint64_t first = index << s->refcount_block_bits;
    uint64_t count = min_u64(per_block, c->nb_clusters - first);
    uint64_t block_offset;
    int ret = refblock_offset(s, index, &block_offset);
    if (ret == 0 && block_offset)
        ret = io_pread(s->file, block, s->cluster_size, block_offset);
    if (ret < 0) {
        /* QEMU cannot read these refcounts either and says so for each cluster. */
        for (uint64_t k = 0; k < count; k++)
            qcow2_check_report(c, "Can't get refcount for cluster %" PRIu64 ": %s", first + k,
                               strerror(-ret));
        c->res->check_errors += count;
        return;
    }

    struct block_fixes fixes = {0};
    for (uint64_t k = 0; k < count; k++) {
        uint64_t cluster = first + k;
        uint64_t on_disk = block_offset ? qcow2_refcount_entry_get(block, k, s->refcount_order) : 0;
        uint64_t counted = qcow2_check_ref(c, cluster);
        if (on_disk || counted)
            *highest = cluster;
        if (on_disk == counted)
            continue;

        bool can_fix = false;
        if (on_disk == 0)
            c->rebuild = true; /* the refcount block may not even exist */
        else if (on_disk > counted)
            can_fix = (fix & IMG_CHECK_REPAIR_LEAKS) != 0;
        else
            can_fix = (fix & IMG_CHECK_REPAIR_ERRORS) != 0;
        qcow2_check_report(c, "%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
                           can_fix             ? "Repairing"
                           : on_disk < counted ? "ERROR"
                                               : "Leaked",
                           cluster, on_disk, counted);
        if (can_fix && c->txn) {
            if (qcow2_snapshot_txn_set(c->txn, cluster, counted) == 0) {
                if (on_disk > counted)
                    c->res->leaks_fixed++;
                else
                    c->res->corruptions_fixed++;
                continue;
            }
            qcow2_check_report(c, "ERROR: could not repair the refcount of cluster %" PRIu64 ": %s",
                               cluster, img_last_error());
            c->res->check_errors++;
            can_fix = false;
        }
        if (can_fix) {
            qcow2_refcount_entry_set(block, k, s->refcount_order, counted);
            note_fix(&fixes, s, k, on_disk > counted);
        } else if (on_disk < counted) {
            c->res->corruptions++;
        } else {
            c->res->leaks++;
        }
    }
    apply_fixes(c, block_offset, block, &fixes);
}

static int compare_refcounts(struct qcow2_check_ctx *c, unsigned fix, uint64_t *highest)
{
    uint8_t *block = malloc(c->s->cluster_size);
    if (!block) {
        c->res->check_errors++;
        return img_error(-ENOMEM, "out of memory");
    }
    uint64_t blocks =
        (c->nb_clusters + (1ull << c->s->refcount_block_bits) - 1) >> c->s->refcount_block_bits;
    for (uint64_t i = 0; i < blocks; i++)
        compare_block(c, fix, i, block, highest);
    free(block);
    return 0;
}

/* The refcount a COPIED flag must agree with; false when it cannot be read (already reported). */
static bool refcount_for_copied(struct qcow2_check_ctx *c, uint64_t offset, uint64_t *refcount)
{
    uint64_t cluster = offset >> c->s->cluster_bits;
    int ret = c->txn ? qcow2_snapshot_txn_get(c->txn, cluster, refcount)
                     : qcow2_refcount_get_locked(c->s, cluster, refcount);
    if (ret < 0) {
        img_error_clear();
        return false;
    }
    return true;
}

/*
 * With a transaction, a repaired L2 table goes to a new cluster that the active L1 entry will
 * name (with COPIED: the copy is its alone), and the old table loses that reference. (A table
 * the L1 table names more than once, in a damaged image, is rewritten in place.)
 */
static int copy_l2_table(struct qcow2_check_ctx *c, uint64_t l2_offset, uint32_t l1_index,
                         const uint8_t *table)
{
    uint64_t copy;
    int ret = qcow2_snapshot_txn_alloc_write(c->txn, table, c->s->cluster_size, &copy);
    if (ret == 0)
        ret = qcow2_snapshot_txn_add(c->txn, l2_offset, c->s->cluster_size, -1);
    if (ret < 0)
        return ret;
    c->l1[l1_index] = copy | QCOW2_OFLAG_COPIED;
    c->l1_changed = true;
    return 0;
}

/*
 * COPIED flags of one active L2 table named `times` times. A repair is written at the first
 * reading (later ones find it done); otherwise each reading finds the same faults.
 */
static int check_copied_l2(struct qcow2_check_ctx *c, uint64_t l2_offset, uint64_t times,
                           uint32_t l1_index, bool repair, uint8_t *table)
{
    struct qcow2_state *s = c->s;
    int ret = io_pread(s->file, table, s->cluster_size, l2_offset);
    if (ret < 0) {
        qcow2_check_report(c, "ERROR: Could not read L2 table: %s", strerror(-ret));
        c->res->check_errors++;
        return ret;
    }
    uint64_t wrong = 0;
    for (uint32_t j = 0; j < s->l2_entries; j++) {
        uint8_t *p = table + (size_t)j * s->l2_entry_bytes;
        uint64_t entry = load_be64(p);
        if (entry & QCOW2_OFLAG_COMPRESSED)
            continue;
        uint64_t data_offset = qcow2_l2_entry_offset(entry);
        bool zero_flag = !s->extended_l2 && (entry & QCOW2_OFLAG_ZERO);
        bool allocated =
            data_offset != 0 || (c->has_data_file && !zero_flag && (entry & QCOW2_OFLAG_COPIED));
        if (!allocated)
            continue;
        uint64_t refcount = 1; /* every cluster of an external data file */
        if (!c->has_data_file && !refcount_for_copied(c, data_offset, &refcount))
            continue;
        if ((refcount == 1) == ((entry & QCOW2_OFLAG_COPIED) != 0))
            continue;
        wrong++;
        qcow2_check_report(c,
                           "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%" PRIu64,
                           repair ? "Repairing" : "ERROR", entry, refcount);
        if (repair)
            store_be64(p, refcount == 1 ? entry | QCOW2_OFLAG_COPIED : entry & ~QCOW2_OFLAG_COPIED);
    }
    if (!wrong)
        return 0;
    if (!repair) {
        c->res->corruptions += wrong * times;
        return 0;
    }
    if (c->txn && times == 1)
        ret = copy_l2_table(c, l2_offset, l1_index, table);
    else
        ret = qcow2_check_write_l2_table(c, l2_offset, table);
    if (ret < 0) {
        qcow2_check_report(c, "ERROR: Could not write L2 table: %s", strerror(-ret));
        c->res->corruptions += wrong;
        c->res->check_errors++;
        return ret;
    }
    c->res->corruptions_fixed += wrong;
    return 0;
}

/* The L1 entry's own flag. *usable is false when the refcount of its table cannot be read. */
static int check_copied_l1_entry(struct qcow2_check_ctx *c, uint32_t i, bool repair, bool *usable)
{
    struct qcow2_state *s = c->s;
    uint64_t l1_entry = s->l1_table[i];
    uint64_t refcount;
    *usable = refcount_for_copied(c, l1_entry & QCOW2_L1E_OFFSET_MASK, &refcount);
    if (!*usable || (refcount == 1) == ((l1_entry & QCOW2_OFLAG_COPIED) != 0))
        return 0;
    qcow2_check_report(c,
                       "%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu32 " l1_entry=%" PRIx64
                       " refcount=%" PRIu64,
                       repair ? "Repairing" : "ERROR", i, l1_entry, refcount);
    if (!repair) {
        c->res->corruptions++;
        return 0;
    }
    uint64_t fixed = refcount == 1 ? l1_entry | QCOW2_OFLAG_COPIED : l1_entry & ~QCOW2_OFLAG_COPIED;
    if (c->txn) {
        c->l1[i] = fixed;
        c->l1_changed = true;
        c->res->corruptions_fixed++;
        return 0;
    }
    s->l1_table[i] = fixed;
    int ret = qcow2_check_write_l1_entry(c, i);
    if (ret < 0) {
        s->l1_table[i] = l1_entry;
        c->res->corruptions++;
        c->res->check_errors++;
        return ret;
    }
    c->res->corruptions_fixed++;
    return 0;
}

struct copied_use {
    uint64_t offset, times;
    uint32_t l1_index; /* the first entry naming the table */
};

/* COPIED must be set exactly where the refcount is one, in the active L1 and L2 tables. */
static int check_copied(struct qcow2_check_ctx *c, unsigned fix)
{
    struct qcow2_state *s = c->s;
    bool repair;
    if (fix & IMG_CHECK_REPAIR_ERRORS)
        repair = true;
    else if (fix & IMG_CHECK_REPAIR_LEAKS)
        /* Only when the refcounts are known to be right after their repair. */
        repair = !c->res->check_errors && !c->res->corruptions && !c->res->leaks;
    else
        repair = false;

    /* Each L2 table is read once however often the L1 table names it (see the walk). */
    struct qcow2_offset_map map;
    qcow2_offset_map_init(&map, s->l1_size);
    struct copied_use *uses = malloc(((size_t)s->l1_size + 1) * sizeof(*uses));
    uint8_t *table = malloc(s->cluster_size);
    int ret = uses && table ? 0 : -ENOMEM;
    for (uint32_t i = 0; ret == 0 && i < s->l1_size; i++) {
        uint64_t l2_offset = s->l1_table[i] & QCOW2_L1E_OFFSET_MASK;
        if (!l2_offset)
            continue;
        bool usable;
        ret = check_copied_l1_entry(c, i, repair, &usable);
        /* A table wholly past the end of the file reads as zeros: nothing to check there. */
        if (ret < 0 || !usable || l2_offset >= c->file_size)
            continue;
        size_t n;
        bool added;
        ret = qcow2_offset_map_add(&map, l2_offset, &n, &added);
        if (ret == 0 && added)
            uses[n] = (struct copied_use){l2_offset, 0, i};
        if (ret == 0)
            uses[n].times++;
    }
    if (ret == -ENOMEM) {
        c->res->check_errors++;
        img_error(ret, "out of memory");
    }
    for (size_t n = 0; ret == 0 && n < map.count; n++)
        ret = check_copied_l2(c, uses[n].offset, uses[n].times, uses[n].l1_index, repair, table);
    qcow2_offset_map_free(&map);
    free(uses);
    free(table);
    return ret;
}

static int count_refs(struct qcow2_check_ctx *c)
{
    int64_t size = io_file_size(c->s->file);
    if (size < 0) {
        c->res->check_errors++;
        return (int)size;
    }
    c->file_size = (uint64_t)size;
    uint64_t clusters = (c->file_size + c->s->cluster_size - 1) >> c->s->cluster_bits;
    qcow2_check_refs_free(c);
    int ret = qcow2_check_refs_init(c, clusters);
    if (ret < 0)
        return ret;
    c->rebuild = false;
    return qcow2_check_count_all(c);
}

/* The refcount structure is beyond repairing entry by entry: replace it, then look again. */
static int rebuild_and_recount(struct qcow2_check_ctx *c, uint64_t *highest)
{
    struct img_check_result old = *c->res;
    qcow2_check_report(c, "Rebuilding refcount structure");
    int ret = qcow2_check_rebuild_refcounts(c);
    if (ret < 0)
        return ret;
    c->res->corruptions = 0;
    c->res->leaks = 0;
    unsigned fix = c->fix;
    c->fix = 0;
    ret = count_refs(c);
    c->fix = fix;
    if (ret < 0)
        return ret;

    uint64_t fresh_leaks = 0;
    if (c->fix & IMG_CHECK_REPAIR_LEAKS) {
        struct img_check_result saved = *c->res;
        memset(c->res, 0, sizeof(*c->res));
        ret = compare_refcounts(c, IMG_CHECK_REPAIR_LEAKS, highest);
        if (c->rebuild)
            qcow2_check_report(c, "ERROR rebuilt refcount structure is still broken");
        fresh_leaks = c->res->leaks;
        *c->res = saved;
        if (ret < 0)
            return ret;
    }
    if (c->res->corruptions < old.corruptions)
        c->res->corruptions_fixed += old.corruptions - c->res->corruptions;
    if (c->res->leaks < old.leaks)
        c->res->leaks_fixed += old.leaks - c->res->leaks;
    c->res->leaks += fresh_leaks;
    return 0;
}

/*
 * Whether a refcount repair would change whether a referenced cluster's count is one, that is,
 * whether a COPIED flag must change with it. Only then do the repairs need a transaction:
 * otherwise each in-place write (as QEMU makes them) leaves the image no worse than it was.
 */
static bool fixes_change_copied(struct qcow2_check_ctx *c, unsigned fix)
{
    struct qcow2_state *s = c->s;
    uint8_t *block = malloc(s->cluster_size);
    if (!block)
        return true;
    uint64_t per_block = 1ull << s->refcount_block_bits;
    bool change = false;
    for (uint64_t first = 0; !change && first < c->nb_clusters; first += per_block) {
        uint64_t block_offset;
        if (refblock_offset(s, first >> s->refcount_block_bits, &block_offset) < 0 ||
            !block_offset || io_pread(s->file, block, s->cluster_size, block_offset) < 0)
            continue;
        uint64_t count = min_u64(per_block, c->nb_clusters - first);
        for (uint64_t k = 0; !change && k < count; k++) {
            uint64_t on_disk = qcow2_refcount_entry_get(block, k, s->refcount_order);
            uint64_t counted = qcow2_check_ref(c, first + k);
            bool can_fix = on_disk > counted ? (fix & IMG_CHECK_REPAIR_LEAKS) != 0
                                             : (fix & IMG_CHECK_REPAIR_ERRORS) != 0;
            change = on_disk && counted && on_disk != counted && can_fix &&
                     (on_disk == 1) != (counted == 1);
        }
    }
    free(block);
    img_error_clear();
    return change;
}

/* Starts gathering repairs: refcounts in a transaction, the active L1 table in a copy. */
static int repair_begin(struct qcow2_check_ctx *c)
{
    struct qcow2_state *s = c->s;
    c->l1 = calloc(s->l1_size ? s->l1_size : 1, sizeof(uint64_t));
    if (!c->l1)
        return img_error(-ENOMEM, "out of memory");
    if (s->l1_size)
        memcpy(c->l1, s->l1_table, (size_t)s->l1_size * sizeof(uint64_t));
    c->l1_changed = false;
    int ret = qcow2_snapshot_txn_begin(s, &c->txn);
    /* The walk counted every reference, those just past the end of the file included. */
    if (ret == 0)
        qcow2_snapshot_txn_reclaim_from(c->txn, c->nb_clusters);
    return ret;
}

/*
 * Writes the gathered repairs: the repaired L1 table to new clusters (the old one uncounted)
 * and the new refcount structure, then one header write switches to both.
 */
static int repair_finish(struct qcow2_check_ctx *c, int ret)
{
    struct qcow2_state *s = c->s;
    struct qcow2_snapshot_switch sw = {.size = s->hdr.size,
                                       .l1_size = s->l1_size,
                                       .l1_table_offset = s->hdr.l1_table_offset,
                                       .nb_snapshots = s->hdr.nb_snapshots,
                                       .snapshots_offset = s->hdr.snapshots_offset};
    bool needed = c->txn && (c->l1_changed || qcow2_snapshot_txn_changed(c->txn));
    if (ret == 0 && needed && c->l1_changed) {
        ret = qcow2_snapshot_write_l1(c->txn, c->l1, s->l1_size, true, &sw.l1_table_offset);
        if (ret == 0)
            ret = qcow2_snapshot_txn_add(c->txn, s->hdr.l1_table_offset, (uint64_t)s->l1_size * 8,
                                         -1);
    }
    if (ret == 0 && needed)
        ret = qcow2_snapshot_txn_commit(c->txn, &sw);
    if (qcow2_snapshot_txn_switched(c->txn)) {
        if (c->l1_changed) {
            qcow2_snapshot_install_l1(s, c->l1, s->l1_size);
            c->l1 = NULL;
        }
        qcow2_snapshot_txn_free(c->txn);
    } else {
        qcow2_snapshot_txn_abort(c->txn);
        if (ret < 0)
            qcow2_check_report(c, "ERROR: could not write the repairs: %s", img_last_error());
    }
    c->txn = NULL;
    free(c->l1);
    c->l1 = NULL;
    return ret;
}

/* One pass of QEMU's qcow2_check_refcounts. */
static int check_pass(struct qcow2_check_ctx *c)
{
    struct qcow2_state *s = c->s;
    c->res->total_clusters = (c->img->size + s->cluster_size - 1) >> s->cluster_bits;
    int ret = count_refs(c);
    if (ret < 0)
        return ret;

    struct img_check_result before_compare = *c->res;
    uint64_t highest = 0;
    ret = compare_refcounts(c, 0, &highest);
    if (ret < 0)
        return ret;

    if (c->rebuild && (c->fix & IMG_CHECK_REPAIR_ERRORS)) {
        ret = rebuild_and_recount(c, &highest);
        if (ret < 0)
            return ret;
    } else if (c->fix) {
        if (c->rebuild) {
            qcow2_check_report(c, "ERROR need to rebuild refcount structures");
            c->res->check_errors++;
            return img_error(-EIO, "qcow2: the refcount structure must be rebuilt, which needs "
                                   "repairing errors (check -r all)");
        }
        if (fixes_change_copied(c, c->fix))
            ret = repair_begin(c);
        if (ret == 0 && (c->res->leaks || c->res->corruptions)) {
            *c->res = before_compare;
            ret = compare_refcounts(c, c->fix, &highest);
        }
        if (ret < 0)
            return repair_finish(c, ret);
    }

    /* Refcounts reach the disk before COPIED flags that rely on them. */
    if (c->wrote) {
        ret = io_fsync(s->file);
        if (ret < 0)
            return ret;
        c->wrote = false;
    }
    ret = check_copied(c, c->fix);
    if (c->txn)
        ret = repair_finish(c, ret);
    if (ret < 0)
        return ret;
    c->res->image_end_offset = (highest + 1) << s->cluster_bits;
    return 0;
}

static int run_pass(struct img *img, unsigned fix, struct img_check_result *result,
                    qcow2_check_log_fn log, void *user, bool first)
{
    struct qcow2_state *s = img->priv;
    struct qcow2_check_ctx c = {
        .img = img,
        .s = s,
        .res = result,
        .fix = fix,
        .log = log,
        .log_user = user,
        .has_data_file = (s->hdr.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) != 0,
        .reports_progress = first,
    };
    memset(result, 0, sizeof(*result));
    int ret = check_pass(&c);
    if (ret == 0 && fix && !result->check_errors && !result->corruptions)
        ret = qcow2_check_mark_clean(&c);
    if (c.wrote) {
        int sync = io_fsync(s->file);
        if (ret == 0)
            ret = sync;
    }
    qcow2_check_refs_free(&c);
    return ret;
}

int qcow2_check_logged(struct img *img, unsigned flags, struct img_check_result *result,
                       qcow2_check_log_fn log, void *user)
{
    struct qcow2_state *s = img->priv;
    unsigned fix = flags & (IMG_CHECK_REPAIR_LEAKS | IMG_CHECK_REPAIR_ERRORS);
    memset(result, 0, sizeof(*result));
    if (fix && !s->writer)
        return img_error(-EROFS, "qcow2: repairing needs the image opened read-write");
    int ret = qcow2_refcount_load_table(s);
    if (ret < 0) {
        result->check_errors++;
        return ret;
    }

    /*
     * The check reads the file itself: what the writer holds in memory goes there first, and
     * allocations in progress (counted but not yet linked) finish, or they would look leaked.
     */
    pthread_mutex_lock(&s->lock);
    /* A handle awaiting repair has written nothing, and its writer refuses to flush. */
    if (s->writer && !qcow2_check_awaiting_repair(s)) {
        qcow2_inflight_wait(s, 0, UINT64_MAX);
        ret = qcow2_flush_caches(s, true);
    }
    if (ret == 0)
        ret = run_pass(img, fix, result, log, user, true);
    if (ret == 0 && result->corruptions_fixed + result->leaks_fixed > 0) {
        /* Report the repaired image as it now is, keeping the counts of what was repaired. */
        struct img_check_result after;
        ret = run_pass(img, 0, &after, log, user, false);
        if (ret == 0) {
            after.corruptions_fixed = result->corruptions_fixed;
            after.leaks_fixed = result->leaks_fixed;
            *result = after;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_check_backend(struct img *img, unsigned flags, struct img_check_result *result)
{
    qcow2_check_log_fn log = result->log;
    void *user = result->log_user;
    int ret = qcow2_check_logged(img, flags, result, log, user);
    result->log = log;
    result->log_user = user;
    return ret;
}

int qcow2_check(struct img *img, unsigned flags, struct img_check_result *result)
{
    return qcow2_check_logged(img, flags, result, NULL, NULL);
}
