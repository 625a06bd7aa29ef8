/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal snapshots: create, apply (revert the active layer to a snapshot) and delete, with
 * the same reference counting as QEMU, so that qemu-img reads, checks and changes what is
 * written here and the other way round.
 *
 * Every operation flushes the metadata the writer holds, works with s->lock held, and makes
 * all of its changes in new clusters that one header write switches to, so that a kill at any
 * moment leaves the old image or the new one (see the rules in qcow2_snapshot_write.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_snapshot_write.h"
#include "formats/qcow2/qcow2_writer.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* The extra data QEMU writes for every snapshot (vm_state_size_large, disk_size, icount). */
#define KNOWN_EXTRA_BYTES 24u

/*
 * Takes the lock, lets allocations in progress finish and brings the file up to date with the
 * writer's held metadata.
 */
static int begin(struct img *img, const char *what)
{
    struct qcow2_state *s = img->priv;
    if (!s->writer)
        return img_error(-EROFS, "qcow2: cannot %s a snapshot: the image is open read-only", what);
    if (s->hdr.incompatible_features & QCOW2_INCOMPAT_DATA_FILE)
        return img_error(-ENOTSUP,
                         "qcow2: internal snapshots are not supported with an external data "
                         "file");
    pthread_mutex_lock(&s->lock);
    /* An allocation in progress would link its cluster into a table the snapshot then shares. */
    qcow2_inflight_wait(s, 0, UINT64_MAX);
    int ret = qcow2_flush_caches(s, true);
    if (ret < 0)
        pthread_mutex_unlock(&s->lock);
    return ret;
}

/* Ends an operation: makes everything durable and releases the lock. */
static int end(struct qcow2_state *s, int ret)
{
    int flushed = qcow2_flush_caches(s, true);
    pthread_mutex_unlock(&s->lock);
    return ret < 0 ? ret : flushed;
}

static int find_by_id(const struct qcow2_state *s, const char *id)
{
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if (strcmp(s->snapshots[i].id, id) == 0)
            return (int)i;
    return -1;
}

static int find_by_name(const struct qcow2_state *s, const char *name)
{
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if (strcmp(s->snapshots[i].name, name) == 0)
            return (int)i;
    return -1;
}

static int not_found(const char *name_or_id)
{
    return img_error(-ENOENT, "qcow2: snapshot '%s' not found", name_or_id);
}

/* QEMU's choice: one more than the largest numeric id. */
static char *next_id(const struct qcow2_state *s)
{
    unsigned long long max = 0;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        unsigned long long id = strtoull(s->snapshots[i].id, NULL, 10);
        if (id > max)
            max = id;
    }
    char buf[24];
    snprintf(buf, sizeof(buf), "%llu", max + 1);
    return strdup(buf);
}

/* A snapshot's L1 table must be usable before anything is changed because of it. */
static int check_snapshot_l1(const struct qcow2_state *s, const struct qcow2_snapshot *sn)
{
    uint64_t bytes = (uint64_t)sn->l1_size * sizeof(uint64_t), end;
    int64_t fsize = io_file_size(s->file);
    if (fsize < 0)
        return img_error((int)fsize, "qcow2: cannot read the image size");
    if (sn->l1_size > QCOW2_MAX_L1_BYTES / sizeof(uint64_t))
        return img_error(-EFBIG, "qcow2: snapshot '%s' has an L1 table of %" PRIu32 " entries",
                         sn->name, sn->l1_size);
    if ((sn->l1_table_offset & (s->cluster_size - 1)) ||
        add_overflows_u64(sn->l1_table_offset, bytes, &end) || (bytes && end > (uint64_t)fsize))
        return img_error(-EIO, "qcow2: snapshot '%s' has an invalid L1 table offset 0x%" PRIx64,
                         sn->name, sn->l1_table_offset);
    return 0;
}

/* Reads a snapshot's L1 table into `entries` zeroed entries (at least sn->l1_size). */
static int read_snapshot_l1(const struct qcow2_state *s, const struct qcow2_snapshot *sn,
                            uint32_t entries, uint64_t **out)
{
    uint64_t *l1 = calloc(entries ? entries : 1, sizeof(uint64_t));
    if (!l1)
        return img_error(-ENOMEM, "out of memory");
    int ret = 0;
    if (sn->l1_size)
        ret = io_pread(s->file, l1, (size_t)sn->l1_size * sizeof(uint64_t), sn->l1_table_offset);
    if (ret < 0) {
        free(l1);
        img_error_prefix("qcow2: cannot read the L1 table of snapshot '%s'", sn->name);
        return ret;
    }
    for (uint32_t i = 0; i < sn->l1_size; i++)
        l1[i] = load_be64(&l1[i]);
    *out = l1;
    return 0;
}

/* A copy of the active L1 table with room for `entries` (at least s->l1_size) entries. */
static int copy_active_l1(const struct qcow2_state *s, uint32_t entries, uint64_t **out)
{
    uint64_t *l1 = calloc(entries ? entries : 1, sizeof(uint64_t));
    if (!l1)
        return img_error(-ENOMEM, "out of memory");
    if (s->l1_size)
        memcpy(l1, s->l1_table, (size_t)s->l1_size * sizeof(uint64_t));
    *out = l1;
    return 0;
}

/*
 * The last steps of every operation: `l1` (l1_size entries, the tree of the new active layer,
 * its references counted) gets COPIED flags matching the new refcounts and a new place, the old
 * active L1 table stops being counted, and the transaction switches the header.
 */
static int finish_active(struct qcow2_snapshot_txn *t, uint64_t *l1, uint32_t l1_size,
                         struct qcow2_snapshot_switch *sw)
{
    struct qcow2_state *s = qcow2_snapshot_txn_state(t);
    int ret = qcow2_snapshot_tree_cow(t, l1, l1_size);
    sw->l1_size = l1_size;
    sw->l1_table_offset = s->hdr.l1_table_offset;
    if (ret == 0 && l1_size)
        ret = qcow2_snapshot_write_l1(t, l1, l1_size, true, &sw->l1_table_offset);
    if (ret == 0 && l1_size && s->l1_size)
        ret = qcow2_snapshot_txn_add(t, s->hdr.l1_table_offset, (uint64_t)s->l1_size * 8, -1);
    if (ret == 0)
        ret = qcow2_snapshot_txn_commit(t, sw);
    return ret;
}

/* ---- create ------------------------------------------------------------------------------- */

static int new_entry(struct img *img, const char *name, struct qcow2_snapshot *sn)
{
    struct qcow2_state *s = img->priv;
    memset(sn, 0, sizeof(*sn));
    sn->id = next_id(s);
    sn->name = strdup(name);
    if (!sn->id || !sn->name) {
        qcow2_snapshot_entry_free(sn);
        return img_error(-ENOMEM, "out of memory");
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    sn->date_sec = (uint32_t)now.tv_sec;
    /* qemu-img records microseconds. */
    sn->date_nsec = (uint32_t)(now.tv_nsec / 1000 * 1000);
    sn->disk_size = img->size;
    /* qemu-img records an instruction count of 0 for snapshots taken outside a VM. */
    sn->has_icount = true;
    sn->icount = 0;
    sn->extra_data_size = KNOWN_EXTRA_BYTES;
    sn->l1_size = s->l1_size;
    return 0;
}

static int check_new_name(const struct qcow2_state *s, const char *name)
{
    if (strlen(name) > UINT16_MAX)
        return img_error(-EINVAL, "qcow2: snapshot name longer than %u bytes", UINT16_MAX);
    if (s->nb_snapshots >= QCOW2_MAX_SNAPSHOTS)
        return img_error(-EFBIG, "qcow2: the image already has %u snapshots", QCOW2_MAX_SNAPSHOTS);
    if (s->refcount_max < 2)
        return img_error(-ENOTSUP,
                         "qcow2: internal snapshots need refcounts wider than %" PRIu32 " bit",
                         s->refcount_bits);
    return 0;
}

/* The new table: the old entries, then `sn`. */
static struct qcow2_snapshot *list_with(const struct qcow2_state *s,
                                        const struct qcow2_snapshot *sn)
{
    struct qcow2_snapshot *list = malloc(((size_t)s->nb_snapshots + 1) * sizeof(*list));
    if (!list)
        return NULL;
    if (s->nb_snapshots)
        memcpy(list, s->snapshots, (size_t)s->nb_snapshots * sizeof(*list));
    list[s->nb_snapshots] = *sn;
    return list;
}

/*
 * The snapshot gets a copy of the active L1 table naming the current L2 tables; its references
 * are counted; the active layer moves to copies of the L2 tables it shared (their COPIED flags
 * cleared), and one header write makes all of it the image.
 */
static int create_locked(struct img *img, struct qcow2_snapshot *sn, struct qcow2_snapshot **list)
{
    struct qcow2_state *s = img->priv;
    struct qcow2_snapshot_txn *t = NULL;
    uint64_t *l1 = NULL, table_offset = 0, table_size = 0;
    int ret = qcow2_snapshot_txn_begin(s, &t);
    if (ret == 0)
        ret = qcow2_snapshot_write_l1(t, s->l1_table, s->l1_size, false, &sn->l1_table_offset);
    if (ret == 0)
        ret = qcow2_snapshot_tree_count(t, s->l1_table, s->l1_size, 1);
    if (ret == 0) {
        *list = list_with(s, sn);
        if (!*list)
            ret = img_error(-ENOMEM, "out of memory");
    }
    if (ret == 0)
        ret = qcow2_snapshot_table_write(t, *list, s->nb_snapshots + 1, &table_offset, &table_size);
    if (ret == 0)
        ret = copy_active_l1(s, s->l1_size, &l1);
    struct qcow2_snapshot_switch sw = {
        .size = s->hdr.size, .nb_snapshots = s->nb_snapshots + 1, .snapshots_offset = table_offset};
    if (ret == 0)
        ret = finish_active(t, l1, s->l1_size, &sw);
    if (!qcow2_snapshot_txn_switched(t)) {
        qcow2_snapshot_txn_abort(t);
        free(l1);
        free(*list);
        *list = NULL;
        return ret;
    }
    qcow2_snapshot_install_l1(s, l1, sw.l1_size);
    qcow2_snapshot_table_adopt(s, *list, sw.nb_snapshots, table_size);
    qcow2_snapshot_txn_free(t);
    return ret;
}

int qcow2_snapshot_create(struct img *img, const char *name)
{
    struct qcow2_state *s = img->priv;
    int ret = begin(img, "create");
    if (ret < 0)
        return ret;
    struct qcow2_snapshot sn = {0}, *list = NULL;
    ret = check_new_name(s, name);
    if (ret == 0)
        ret = new_entry(img, name, &sn);
    if (ret == 0)
        ret = create_locked(img, &sn, &list);
    /* Once the table is the handle's, it owns the entry's strings. */
    if (!list)
        qcow2_snapshot_entry_free(&sn);
    if (ret < 0)
        img_error_prefix("qcow2: cannot create snapshot '%s'", name);
    return end(s, ret);
}

/* ---- apply -------------------------------------------------------------------------------- */

/*
 * The active layer becomes a tree of the snapshot's L2 tables (copies where COPIED flags
 * change), the old active tree loses its references, and the virtual size becomes the
 * snapshot's: one header write.
 */
static int apply_locked(struct img *img, const struct qcow2_snapshot *sn)
{
    struct qcow2_state *s = img->priv;
    int ret = check_snapshot_l1(s, sn);
    if (ret == 0)
        ret = qcow2_writer_begin_change(s);
    /* The active table keeps its size when the snapshot's is shorter (padded with zeros). */
    uint32_t entries = sn->l1_size > s->l1_size ? sn->l1_size : s->l1_size;
    uint64_t *l1 = NULL;
    if (ret == 0)
        ret = read_snapshot_l1(s, sn, entries, &l1);
    if (ret < 0)
        return ret;
    struct qcow2_snapshot_txn *t = NULL;
    ret = qcow2_snapshot_txn_begin(s, &t);
    /* Counted up first, as QEMU does: a count that would overflow on the way is refused. */
    if (ret == 0)
        ret = qcow2_snapshot_tree_count(t, l1, sn->l1_size, 1);
    if (ret == 0)
        ret = qcow2_snapshot_tree_count(t, s->l1_table, s->l1_size, -1);
    struct qcow2_snapshot_switch sw = {.size = sn->disk_size,
                                       .nb_snapshots = s->hdr.nb_snapshots,
                                       .snapshots_offset = s->hdr.snapshots_offset};
    if (ret == 0)
        ret = finish_active(t, l1, entries, &sw);
    if (!qcow2_snapshot_txn_switched(t)) {
        qcow2_snapshot_txn_abort(t);
        free(l1);
        return ret;
    }
    qcow2_snapshot_install_l1(s, l1, entries);
    img->size = align_down_u64(sn->disk_size, 512);
    qcow2_snapshot_txn_free(t);
    return ret;
}

int qcow2_snapshot_apply(struct img *img, const char *name_or_id)
{
    struct qcow2_state *s = img->priv;
    int ret = begin(img, "apply");
    if (ret < 0)
        return ret;
    int index = find_by_id(s, name_or_id);
    if (index < 0)
        index = find_by_name(s, name_or_id);
    if (index < 0)
        return end(s, not_found(name_or_id));
    /* A copy: the entry must not move under the operation. */
    struct qcow2_snapshot sn = s->snapshots[index];
    ret = apply_locked(img, &sn);
    if (ret < 0)
        img_error_prefix("qcow2: cannot apply snapshot '%s'", name_or_id);
    return end(s, ret);
}

/* ---- delete ------------------------------------------------------------------------------- */

/*
 * The snapshot's tree and L1 table lose its references, the active layer moves to copies of
 * the L2 tables whose COPIED flags change (those it shared with the snapshot alone), and the
 * table without the entry is switched to with the rest: one header write.
 */
static int delete_locked(struct qcow2_state *s, uint32_t index)
{
    const struct qcow2_snapshot *sn = &s->snapshots[index];
    uint64_t *sn_l1 = NULL, *l1 = NULL, table_offset = 0, table_size = 0;
    int ret = check_snapshot_l1(s, sn);
    if (ret == 0)
        ret = read_snapshot_l1(s, sn, sn->l1_size, &sn_l1);
    if (ret < 0)
        return ret;
    struct qcow2_snapshot_txn *t = NULL;
    ret = qcow2_snapshot_txn_begin(s, &t);
    if (ret == 0)
        ret = qcow2_snapshot_tree_count(t, sn_l1, sn->l1_size, -1);
    if (ret == 0 && sn->l1_size)
        ret = qcow2_snapshot_txn_add(t, sn->l1_table_offset, (uint64_t)sn->l1_size * 8, -1);
    free(sn_l1);
    uint32_t count = s->nb_snapshots - 1;
    struct qcow2_snapshot *list = malloc((count ? count : 1) * sizeof(*list));
    if (ret == 0 && !list)
        ret = img_error(-ENOMEM, "out of memory");
    if (ret == 0) {
        memcpy(list, s->snapshots, (size_t)index * sizeof(*list));
        memcpy(list + index, s->snapshots + index + 1, (size_t)(count - index) * sizeof(*list));
        ret = qcow2_snapshot_table_write(t, list, count, &table_offset, &table_size);
    }
    if (ret == 0)
        ret = copy_active_l1(s, s->l1_size, &l1);
    struct qcow2_snapshot_switch sw = {
        .size = s->hdr.size, .nb_snapshots = count, .snapshots_offset = table_offset};
    if (ret == 0)
        ret = finish_active(t, l1, s->l1_size, &sw);
    if (!qcow2_snapshot_txn_switched(t)) {
        qcow2_snapshot_txn_abort(t);
        free(l1);
        free(list);
        return ret;
    }
    struct qcow2_snapshot removed = s->snapshots[index];
    qcow2_snapshot_install_l1(s, l1, sw.l1_size);
    qcow2_snapshot_table_adopt(s, list, count, table_size);
    qcow2_snapshot_entry_free(&removed);
    qcow2_snapshot_txn_free(t);
    return ret;
}

int qcow2_snapshot_delete(struct img *img, const char *name_or_id)
{
    struct qcow2_state *s = img->priv;
    int ret = begin(img, "delete");
    if (ret < 0)
        return ret;
    /* qemu-img deletes by name; an id is accepted too when no name matches. */
    int index = find_by_name(s, name_or_id);
    if (index < 0)
        index = find_by_id(s, name_or_id);
    if (index < 0)
        return end(s, not_found(name_or_id));
    ret = delete_locked(s, (uint32_t)index);
    if (ret < 0)
        img_error_prefix("qcow2: cannot delete snapshot '%s'", name_or_id);
    return end(s, ret);
}
