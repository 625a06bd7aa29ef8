/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writing the check's repairs. Each write goes straight to the file (the writer flushed what it
 * held before the check began) and then drops the slices of the caches it overlaps, so later
 * lookups see it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_check.h"
#include "formats/qcow2/qcow2_writer.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* Refcounts went down: the writer's search for free clusters must look from the start again. */
static void note_refcounts_changed(struct qcow2_state *s)
{
    if (s->writer)
        s->writer->free_cluster_index = 0;
}

static int write_metadata(struct qcow2_check_ctx *c, const void *buf, size_t len, uint64_t offset)
{
    int ret = io_pwrite(c->s->file, buf, len, offset);
    if (ret == 0)
        c->wrote = true;
    return ret;
}

int qcow2_check_write_refblock_range(struct qcow2_check_ctx *c, uint64_t block_offset,
                                     const uint8_t *block, uint64_t first_byte, uint64_t end_byte)
{
    int ret = write_metadata(c, block + first_byte, (size_t)(end_byte - first_byte),
                             block_offset + first_byte);
    qcow2_cache_invalidate(c->s->refcount_cache, block_offset + first_byte, end_byte - first_byte);
    note_refcounts_changed(c->s);
    return ret;
}

int qcow2_check_write_l2_entry(struct qcow2_check_ctx *c, uint64_t l2_offset, uint32_t index,
                               uint64_t entry, uint64_t bitmap)
{
    const struct qcow2_state *s = c->s;
    uint8_t buf[16];
    store_be64(buf, entry);
    store_be64(buf + 8, bitmap);
    uint64_t at = l2_offset + (uint64_t)index * s->l2_entry_bytes;
    int ret = write_metadata(c, buf, s->l2_entry_bytes, at);
    if (ret == 0)
        ret = io_fsync(s->file);
    qcow2_cache_invalidate(s->l2_cache, at, s->l2_entry_bytes);
    return ret;
}

int qcow2_check_write_l2_table(struct qcow2_check_ctx *c, uint64_t l2_offset, const uint8_t *table)
{
    int ret = write_metadata(c, table, c->s->cluster_size, l2_offset);
    qcow2_cache_invalidate(c->s->l2_cache, l2_offset, c->s->cluster_size);
    return ret;
}

int qcow2_check_write_l1_entry(struct qcow2_check_ctx *c, uint32_t index)
{
    const struct qcow2_state *s = c->s;
    uint8_t buf[8];
    qcow2_l1_encode(s->l1_table, index, 1, 0, buf);
    int ret = write_metadata(c, buf, sizeof(buf), s->hdr.l1_table_offset + (uint64_t)index * 8);
    if (ret == 0)
        ret = io_fsync(s->file);
    return ret;
}

int qcow2_check_mark_clean(struct qcow2_check_ctx *c)
{
    struct qcow2_state *s = c->s;
    if (c->wrote) {
        int ret = io_fsync(s->file);
        if (ret < 0)
            return ret;
        c->wrote = false;
    }
    uint64_t clear = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT;
    if (s->hdr.version < 3 || !(s->hdr.incompatible_features & clear))
        return 0;
    /* The repaired refcounts are on disk (synced above) before the header stops doubting them. */
    bool reopen_writes = qcow2_check_awaiting_repair(s);
    int ret = qcow2_write_incompat(s, s->hdr.incompatible_features & ~clear);
    if (ret < 0)
        return ret;
    c->img->dirty = false;
    if (reopen_writes)
        __atomic_store_n(&s->writer->corrupt, false, __ATOMIC_RELEASE);
    return 0;
}

bool qcow2_check_awaiting_repair(const struct qcow2_state *s)
{
    const struct qcow2_writer *w = s->writer;
    return w && (w->img->flags & IMG_OPEN_CHECK) &&
           __atomic_load_n(&w->corrupt, __ATOMIC_ACQUIRE) && w->nb_dirty == 0 && !w->l1_dirty &&
           !w->reftable_dirty && w->nb_frees == 0;
}
