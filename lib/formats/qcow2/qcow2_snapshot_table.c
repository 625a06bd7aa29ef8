/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writing the snapshot table. A changed table is never written over the old one: it goes to
 * new clusters of the operation's transaction, whose header switch names it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_snapshot_write.h"
#include "formats/qcow2/qcow2_writer.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* Extra data fields written for every entry: vm_state_size_large, disk_size, icount. */
#define KNOWN_EXTRA_BYTES 24u

void qcow2_snapshot_entry_free(struct qcow2_snapshot *sn)
{
    free(sn->id);
    free(sn->name);
    free(sn->unknown_extra);
    sn->id = sn->name = NULL;
    sn->unknown_extra = NULL;
}

static uint32_t extra_bytes(const struct qcow2_snapshot *sn)
{
    return KNOWN_EXTRA_BYTES + (sn->unknown_extra ? sn->unknown_extra_size : 0);
}

static int table_size(const struct qcow2_snapshot *list, uint32_t count, uint64_t *size)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < count; i++) {
        size_t id_len = strlen(list[i].id), name_len = strlen(list[i].name);
        if (id_len > UINT16_MAX || name_len > UINT16_MAX)
            return img_error(-EINVAL, "qcow2: snapshot name or id longer than %u bytes",
                             UINT16_MAX);
        total = align_up_u64(total, 8) + QCOW2_SNAPSHOT_HEADER_BYTES + extra_bytes(&list[i]) +
                id_len + name_len;
        if (total > QCOW2_MAX_SNAPSHOT_TABLE_BYTES)
            return img_error(-EFBIG, "qcow2: the snapshot table would exceed %u MiB",
                             QCOW2_MAX_SNAPSHOT_TABLE_BYTES >> 20);
    }
    *size = total;
    return 0;
}

static void encode_entry(const struct qcow2_snapshot *sn, uint8_t *p)
{
    size_t id_len = strlen(sn->id), name_len = strlen(sn->name);
    uint32_t extra = extra_bytes(sn);
    store_be64(p, sn->l1_table_offset);
    store_be32(p + 8, sn->l1_size);
    store_be16(p + 12, (uint16_t)id_len);
    store_be16(p + 14, (uint16_t)name_len);
    store_be32(p + 16, sn->date_sec);
    store_be32(p + 20, sn->date_nsec);
    store_be64(p + 24, sn->vm_clock_nsec);
    /* A state too large for 32 bits reads as none to older readers rather than truncated. */
    store_be32(p + 32, sn->vm_state_size <= UINT32_MAX ? (uint32_t)sn->vm_state_size : 0);
    store_be32(p + 36, extra);
    p += QCOW2_SNAPSHOT_HEADER_BYTES;
    store_be64(p, sn->vm_state_size);
    store_be64(p + 8, sn->disk_size);
    store_be64(p + 16, sn->has_icount ? sn->icount : UINT64_MAX);
    if (extra > KNOWN_EXTRA_BYTES)
        memcpy(p + KNOWN_EXTRA_BYTES, sn->unknown_extra, extra - KNOWN_EXTRA_BYTES);
    p += extra;
    memcpy(p, sn->id, id_len);
    memcpy(p + id_len, sn->name, name_len);
}

static int encode_table(const struct qcow2_snapshot *list, uint32_t count, uint8_t **out,
                        uint64_t *size)
{
    int ret = table_size(list, count, size);
    if (ret < 0)
        return ret;
    uint8_t *buf = calloc(1, *size ? (size_t)*size : 1);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    uint64_t pos = 0;
    for (uint32_t i = 0; i < count; i++) {
        pos = align_up_u64(pos, 8);
        encode_entry(&list[i], buf + pos);
        pos += QCOW2_SNAPSHOT_HEADER_BYTES + extra_bytes(&list[i]) + strlen(list[i].id) +
               strlen(list[i].name);
    }
    *out = buf;
    return 0;
}

int qcow2_snapshot_table_write(struct qcow2_snapshot_txn *t, const struct qcow2_snapshot *list,
                               uint32_t count, uint64_t *offset, uint64_t *size)
{
    struct qcow2_state *s = qcow2_snapshot_txn_state(t);
    uint8_t *buf = NULL;
    int ret = encode_table(list, count, &buf, size);
    if (ret == 0)
        ret = qcow2_snapshot_txn_alloc_write(t, buf, (size_t)*size, offset);
    free(buf);
    if (ret == 0 && s->snapshot_table_bytes)
        ret = qcow2_snapshot_txn_add(t, s->hdr.snapshots_offset, s->snapshot_table_bytes, -1);
    if (ret < 0)
        img_error_prefix("qcow2: cannot write the snapshot table");
    return ret;
}

void qcow2_snapshot_table_adopt(struct qcow2_state *s, struct qcow2_snapshot *list, uint32_t count,
                                uint64_t size)
{
    free(s->snapshots);
    s->snapshots = list;
    s->nb_snapshots = count;
    s->snapshot_table_bytes = size;
}
