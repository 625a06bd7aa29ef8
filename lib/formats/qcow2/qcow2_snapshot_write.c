/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal snapshots: create, apply (revert the active layer to a snapshot) and delete, with
 * the same reference counting as QEMU, so that qemu-img reads, checks and changes what is
 * written here and the other way round.
 *
 * Every operation flushes the metadata the writer holds, works with s->lock held, and orders
 * its writes so that a crash leaks clusters at worst (see qcow2_snapshot_write.h).
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

/*
 * After tables were dropped, cached slices may describe clusters that get reused. (Nothing is
 * held dirty here: the operation flushed first and holds the lock.)
 */
static void after_frees(struct qcow2_state *s)
{
    qcow2_cache_invalidate(s->l2_cache, 0, UINT64_MAX);
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

/* Brings the active COPIED flags in line with the refcounts and writes the L1 if it changed. */
static int fix_active_copied(struct qcow2_state *s)
{
    bool l1_changed;
    int ret = qcow2_snapshot_tree_fix_copied(s, s->l1_table, s->l1_size, &l1_changed);
    if (ret == 0 && l1_changed)
        ret = qcow2_snapshot_write_active_l1(s);
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

/* Writes a copy of the active L1 table to new clusters (COPIED bits are meaningless there). */
static int copy_active_l1(struct qcow2_state *s, uint64_t *offset)
{
    *offset = 0;
    if (s->l1_size == 0)
        return 0;
    size_t bytes = (size_t)s->l1_size * sizeof(uint64_t);
    uint8_t *buf = malloc(bytes);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    for (uint32_t i = 0; i < s->l1_size; i++)
        store_be64(buf + (size_t)i * 8, s->l1_table[i] & ~QCOW2_OFLAG_COPIED);
    uint64_t clusters = (bytes + s->cluster_size - 1) >> s->cluster_bits;
    int ret = qcow2_alloc_clusters(s, clusters, offset);
    if (ret == 0) {
        ret = io_pwrite(s->file, buf, bytes, *offset);
        if (ret < 0) {
            qcow2_refcount_update(s, *offset, bytes, -1);
            *offset = 0;
        }
    }
    free(buf);
    return ret;
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

/* Appends `sn` to the table; on success the table owns its strings. */
static int append_entry(struct qcow2_state *s, struct qcow2_snapshot *sn)
{
    struct qcow2_snapshot *list = malloc(((size_t)s->nb_snapshots + 1) * sizeof(*list));
    if (!list)
        return img_error(-ENOMEM, "out of memory");
    if (s->nb_snapshots)
        memcpy(list, s->snapshots, (size_t)s->nb_snapshots * sizeof(*list));
    list[s->nb_snapshots] = *sn;
    int ret = qcow2_snapshot_table_replace(s, list, s->nb_snapshots + 1);
    if (ret < 0)
        free(list);
    return ret;
}

int qcow2_snapshot_create(struct img *img, const char *name)
{
    struct qcow2_state *s = img->priv;
    int ret = begin(img, "create");
    if (ret < 0)
        return ret;
    struct qcow2_snapshot sn = {0};
    ret = check_new_name(s, name);
    if (ret == 0)
        ret = new_entry(img, name, &sn);
    if (ret == 0)
        ret = copy_active_l1(s, &sn.l1_table_offset);
    if (ret < 0) {
        qcow2_snapshot_entry_free(&sn);
        return end(s, ret);
    }

    /* The snapshot's references are counted, and the shared entries lose COPIED, first. */
    bool counted = false;
    ret = qcow2_snapshot_tree_refs(s, s->l1_table, s->l1_size, 1);
    if (ret == 0) {
        counted = true;
        ret = qcow2_flush_caches(s, true);
    }
    if (ret == 0)
        ret = fix_active_copied(s);
    if (ret == 0)
        ret = append_entry(s, &sn);
    if (ret < 0) {
        /* Not visible: give the references back (what cannot be undone only leaks). */
        int err = ret;
        if (counted && qcow2_snapshot_tree_refs(s, s->l1_table, s->l1_size, -1) == 0)
            fix_active_copied(s);
        if (sn.l1_table_offset)
            qcow2_refcount_update(s, sn.l1_table_offset, (uint64_t)sn.l1_size * 8, -1);
        qcow2_snapshot_entry_free(&sn);
        img_error_prefix("qcow2: cannot create snapshot '%s'", name);
        return end(s, err);
    }
    return end(s, 0);
}

/* ---- apply -------------------------------------------------------------------------------- */

/*
 * Makes `new_l1` (s->l1_size entries, its references already counted) the active L1 table, in
 * memory and on disk; *old_l1 receives the previous one. When the write fails the previous
 * table is written back; *undone says whether that worked, so that the new tree's references
 * may be given back (if not, the disk may name either tree: both stay counted).
 */
static int switch_active_l1(struct qcow2_state *s, uint64_t *new_l1, uint64_t **old_l1,
                            bool *undone)
{
    uint64_t *old = s->l1_table;
    s->l1_table = new_l1;
    int ret = qcow2_snapshot_write_active_l1(s);
    if (ret < 0) {
        s->l1_table = old;
        *undone = qcow2_snapshot_write_active_l1(s) == 0;
        return ret;
    }
    *old_l1 = old;
    return 0;
}

/* A replaced table: readers that do not take the lock (map) may still hold it until close. */
static void retire(struct qcow2_state *s, uint64_t *table)
{
    if (qcow2_retire(s->writer, table) < 0)
        free(table);
}

static int set_virtual_size(struct img *img, uint64_t size)
{
    struct qcow2_state *s = img->priv;
    if (s->hdr.size == size)
        return 0;
    uint64_t old = s->hdr.size;
    s->hdr.size = size;
    int ret = qcow2_write_header(img);
    if (ret < 0) {
        s->hdr.size = old;
        return ret;
    }
    img->size = align_down_u64(size, 512);
    return 0;
}

static int apply_locked(struct img *img, const struct qcow2_snapshot *sn)
{
    struct qcow2_state *s = img->priv;
    int ret = check_snapshot_l1(s, sn);
    if (ret == 0)
        ret = qcow2_writer_begin_change(s);
    /* The active table must hold the snapshot's; a shorter snapshot table is padded with zeros.
     */
    if (ret == 0 && sn->l1_size > s->l1_size)
        ret = qcow2_l1_grow(s, sn->l1_size, true);
    uint64_t *new_l1 = NULL;
    if (ret == 0)
        ret = read_snapshot_l1(s, sn, s->l1_size, &new_l1);
    if (ret < 0)
        return ret;

    /* Count the snapshot's tree once more, and clear COPIED in it, before it becomes active. */
    bool l1_changed, undone = true;
    uint64_t *old_l1 = NULL;
    ret = qcow2_snapshot_tree_refs(s, new_l1, sn->l1_size, 1);
    if (ret == 0) {
        ret = qcow2_flush_caches(s, true);
        if (ret == 0)
            ret = qcow2_snapshot_tree_fix_copied(s, new_l1, s->l1_size, &l1_changed);
        if (ret == 0)
            ret = switch_active_l1(s, new_l1, &old_l1, &undone);
        if (ret < 0 && undone)
            qcow2_snapshot_tree_refs(s, new_l1, sn->l1_size, -1);
    }
    if (ret < 0) {
        free(new_l1);
        return ret;
    }

    /* Nothing on disk points to the old tree any more. */
    ret = qcow2_snapshot_tree_refs(s, old_l1, s->l1_size, -1);
    retire(s, old_l1);
    after_frees(s);
    int ret2 = fix_active_copied(s);
    if (ret == 0)
        ret = ret2;
    ret2 = set_virtual_size(img, sn->disk_size);
    return ret < 0 ? ret : ret2;
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
    /* A copy: the table may be rewritten meanwhile (it is not, but the entry is small). */
    struct qcow2_snapshot sn = s->snapshots[index];
    ret = apply_locked(img, &sn);
    if (ret < 0)
        img_error_prefix("qcow2: cannot apply snapshot '%s'", name_or_id);
    return end(s, ret);
}

/* ---- delete ------------------------------------------------------------------------------- */

/* Removes entry `index` from the table; on success `removed` receives it (strings included). */
static int remove_entry(struct qcow2_state *s, uint32_t index, struct qcow2_snapshot *removed)
{
    uint32_t count = s->nb_snapshots - 1;
    struct qcow2_snapshot *list = malloc((count ? count : 1) * sizeof(*list));
    if (!list)
        return img_error(-ENOMEM, "out of memory");
    memcpy(list, s->snapshots, (size_t)index * sizeof(*list));
    memcpy(list + index, s->snapshots + index + 1, (size_t)(count - index) * sizeof(*list));
    struct qcow2_snapshot entry = s->snapshots[index];
    int ret = qcow2_snapshot_table_replace(s, list, count);
    if (ret < 0) {
        free(list);
        return ret;
    }
    *removed = entry;
    return 0;
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

    uint64_t *l1 = NULL;
    ret = check_snapshot_l1(s, &s->snapshots[index]);
    if (ret == 0)
        ret = read_snapshot_l1(s, &s->snapshots[index], s->snapshots[index].l1_size, &l1);
    struct qcow2_snapshot sn = {0};
    if (ret == 0)
        ret = remove_entry(s, (uint32_t)index, &sn);
    if (ret < 0) {
        free(l1);
        img_error_prefix("qcow2: cannot delete snapshot '%s'", name_or_id);
        return end(s, ret);
    }

    /* The snapshot is gone from disk: its references go (a failure here only leaks). */
    ret = qcow2_snapshot_tree_refs(s, l1, sn.l1_size, -1);
    if (ret == 0 && sn.l1_size)
        ret = qcow2_refcount_update(s, sn.l1_table_offset, (uint64_t)sn.l1_size * 8, -1);
    free(l1);
    qcow2_snapshot_entry_free(&sn);
    after_frees(s);
    int ret2 = fix_active_copied(s);
    if (ret == 0)
        ret = ret2;
    if (ret < 0)
        img_error_prefix("qcow2: snapshot '%s' was deleted, but", name_or_id);
    return end(s, ret);
}
