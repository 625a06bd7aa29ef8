/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A read-only view of an internal snapshot, as QEMU's bdrv_snapshot_load_tmp() gives it
 * (qemu-img convert -l, qemu-img measure -l): the image is opened with the snapshot's L1 table
 * in place of the active one. Everything else stays the image's: its virtual size (qemu-img
 * converts a snapshot to an image of the current size, reading zeros past the snapshot's L1
 * table), its backing file, its data file. Asked for with the open options "snapshot.id" and
 * "snapshot.name" (both must match when both are given) or "snapshot" (an ID, or else a name),
 * on the image opened itself, not on its backing files.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"
#include "error.h"
#include "image.h"
#include "io/io.h"
#include "util/endian.h"

static const struct qcow2_snapshot *find(const struct qcow2_state *s, const char *id,
                                         const char *name)
{
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        const struct qcow2_snapshot *sn = &s->snapshots[i];
        if ((!id || strcmp(sn->id, id) == 0) && (!name || strcmp(sn->name, name) == 0))
            return sn;
    }
    return NULL;
}

/* Reads and checks the snapshot's L1 table, as QEMU validates it before using it. */
static int read_snapshot_l1(struct qcow2_state *s, const struct qcow2_snapshot *sn, uint64_t **out)
{
    uint64_t bytes = (uint64_t)sn->l1_size * sizeof(uint64_t);
    if (bytes > QCOW2_MAX_L1_BYTES)
        return img_error(-EFBIG,
                         "qcow2: snapshot '%s': its L1 table is too large (%" PRIu32 " entries)",
                         sn->id, sn->l1_size);
    if (sn->l1_table_offset & (s->cluster_size - 1))
        return img_error(-EINVAL,
                         "qcow2: snapshot '%s': its L1 table offset 0x%" PRIx64
                         " is not cluster-aligned",
                         sn->id, sn->l1_table_offset);
    if (sn->l1_table_offset > s->file_size || bytes > s->file_size - sn->l1_table_offset)
        return img_error(-EINVAL,
                         "qcow2: snapshot '%s': its L1 table at 0x%" PRIx64
                         " is beyond the end of the file",
                         sn->id, sn->l1_table_offset);
    uint64_t *l1 = malloc(bytes ? (size_t)bytes : 1);
    if (!l1)
        return img_error(-ENOMEM, "out of memory");
    int ret = bytes ? io_pread(s->file, l1, (size_t)bytes, sn->l1_table_offset) : 0;
    if (ret < 0) {
        free(l1);
        img_error_prefix("qcow2: cannot read the L1 table of snapshot '%s'", sn->id);
        return ret;
    }
    for (uint32_t i = 0; i < sn->l1_size; i++)
        l1[i] = load_be64(&l1[i]);
    *out = l1;
    return 0;
}

int qcow2_snapshot_view_load(struct img *img, struct qcow2_state *s, const img_opts *opts)
{
    const char *id = img_opts_get(opts, "snapshot.id");
    const char *name = img_opts_get(opts, "snapshot.name");
    const char *either = img_opts_get(opts, "snapshot");
    if (img->depth != 0 || (!id && !name && !either))
        return 0;
    if (img->writable)
        return img_error(-EINVAL, "qcow2: a snapshot can only be loaded for reading");
    if (either && (id || name))
        return img_error(-EINVAL, "give either snapshot or snapshot.id/snapshot.name");
    const struct qcow2_snapshot *sn =
        either ? (find(s, either, NULL) ? find(s, either, NULL) : find(s, NULL, either))
               : find(s, id, name);
    if (!sn)
        return img_error(-ENOENT, "Can't find snapshot");
    uint64_t *l1 = NULL;
    int ret = read_snapshot_l1(s, sn, &l1);
    if (ret < 0)
        return ret;
    free(s->l1_table);
    s->l1_table = l1;
    s->l1_size = sn->l1_size;
    return 0;
}
