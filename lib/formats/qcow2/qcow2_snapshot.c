/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The internal snapshot table: variable-length entries (fixed part, extra data, id, name),
 * each aligned to 8 bytes. Read at open, as QEMU does, within QEMU's limits.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

#define READ_CHUNK (64u * 1024)

/* Extra data fields known here: vm_state_size_large, disk_size, icount. */
#define KNOWN_EXTRA_BYTES 24u

/* Reads a table sequentially through a buffer, refusing to run past the end of the file. */
struct table_reader {
    struct io_file *file;
    uint64_t file_size;
    uint64_t pos;
    uint8_t *buf;
    uint64_t buf_start;
    size_t buf_len;
};

static int reader_read(struct table_reader *r, void *out, size_t n)
{
    uint64_t end;
    if (add_overflows_u64(r->pos, n, &end) || end > r->file_size)
        return img_error(-EIO, "qcow2: the snapshot table runs past the end of the file");
    uint8_t *dst = out;
    while (n) {
        if (r->pos < r->buf_start || r->pos >= r->buf_start + r->buf_len) {
            r->buf_start = r->pos;
            r->buf_len = (size_t)min_u64(READ_CHUNK, r->file_size - r->pos);
            int ret = io_pread(r->file, r->buf, r->buf_len, r->buf_start);
            if (ret < 0) {
                r->buf_len = 0;
                return ret;
            }
        }
        size_t avail = (size_t)(r->buf_start + r->buf_len - r->pos);
        size_t take = n < avail ? n : avail;
        memcpy(dst, r->buf + (r->pos - r->buf_start), take);
        dst += take;
        r->pos += take;
        n -= take;
    }
    return 0;
}

/* Reads a string field; a NUL inside it ends the string, as in QEMU. */
static int read_string(struct table_reader *r, size_t len, char **out)
{
    char *s = malloc(len + 1);
    if (!s)
        return img_error(-ENOMEM, "out of memory");
    int ret = reader_read(r, s, len);
    if (ret < 0) {
        free(s);
        return ret;
    }
    s[len] = '\0';
    *out = s;
    return 0;
}

static int read_entry(struct table_reader *r, uint32_t index, uint64_t virtual_size,
                      struct qcow2_snapshot *sn)
{
    uint8_t h[QCOW2_SNAPSHOT_HEADER_BYTES];
    int ret = reader_read(r, h, sizeof(h));
    if (ret < 0)
        return ret;
    sn->l1_table_offset = load_be64(h);
    sn->l1_size = load_be32(h + 8);
    uint16_t id_size = load_be16(h + 12);
    uint16_t name_size = load_be16(h + 14);
    sn->date_sec = load_be32(h + 16);
    sn->date_nsec = load_be32(h + 20);
    sn->vm_clock_nsec = load_be64(h + 24);
    sn->vm_state_size = load_be32(h + 32);
    sn->extra_data_size = load_be32(h + 36);
    if (sn->extra_data_size > QCOW2_MAX_SNAPSHOT_EXTRA_DATA)
        return img_error(-EFBIG,
                         "qcow2: snapshot table entry %" PRIu32 " has %" PRIu32
                         " bytes of extra data (at most %u)",
                         index, sn->extra_data_size, QCOW2_MAX_SNAPSHOT_EXTRA_DATA);

    uint8_t extra[QCOW2_MAX_SNAPSHOT_EXTRA_DATA];
    ret = reader_read(r, extra, sn->extra_data_size);
    if (ret < 0)
        return ret;
    if (sn->extra_data_size >= 8)
        sn->vm_state_size = load_be64(extra);
    sn->disk_size = sn->extra_data_size >= 16 ? load_be64(extra + 8) : virtual_size;
    if (sn->extra_data_size >= KNOWN_EXTRA_BYTES) {
        sn->icount = load_be64(extra + 16);
        sn->has_icount = sn->icount != UINT64_MAX; /* all ones: not recorded */
    }
    if (sn->extra_data_size > KNOWN_EXTRA_BYTES) {
        sn->unknown_extra_size = sn->extra_data_size - KNOWN_EXTRA_BYTES;
        sn->unknown_extra = malloc(sn->unknown_extra_size);
        if (!sn->unknown_extra)
            return img_error(-ENOMEM, "out of memory");
        memcpy(sn->unknown_extra, extra + KNOWN_EXTRA_BYTES, sn->unknown_extra_size);
    }

    ret = read_string(r, id_size, &sn->id);
    if (ret < 0)
        return ret;
    return read_string(r, name_size, &sn->name);
}

int qcow2_snapshots_read(struct qcow2_state *s, uint64_t virtual_size)
{
    uint32_t nb = s->hdr.nb_snapshots;
    if (nb == 0)
        return 0;
    s->snapshots = calloc(nb, sizeof(*s->snapshots));
    struct table_reader r = {
        .file = s->file,
        .file_size = s->file_size,
        .pos = s->hdr.snapshots_offset,
        .buf = malloc(READ_CHUNK),
    };
    int ret = 0;
    if (!s->snapshots || !r.buf) {
        ret = img_error(-ENOMEM, "out of memory");
        goto out;
    }
    s->nb_snapshots = nb;
    for (uint32_t i = 0; i < nb; i++) {
        r.pos = align_up_u64(r.pos, 8);
        ret = read_entry(&r, i, virtual_size, &s->snapshots[i]);
        if (ret < 0)
            goto out;
        if (r.pos - s->hdr.snapshots_offset > QCOW2_MAX_SNAPSHOT_TABLE_BYTES) {
            ret = img_error(-EFBIG, "qcow2: the snapshot table exceeds %u MiB",
                            QCOW2_MAX_SNAPSHOT_TABLE_BYTES >> 20);
            goto out;
        }
    }
    s->snapshot_table_bytes = r.pos - s->hdr.snapshots_offset;
out:
    free(r.buf);
    if (ret < 0)
        qcow2_snapshots_free(s);
    return ret;
}

void qcow2_snapshots_free(struct qcow2_state *s)
{
    for (uint32_t i = 0; s->snapshots && i < s->nb_snapshots; i++) {
        free(s->snapshots[i].id);
        free(s->snapshots[i].name);
        free(s->snapshots[i].unknown_extra);
    }
    free(s->snapshots);
    s->snapshots = NULL;
    s->nb_snapshots = 0;
    s->snapshot_table_bytes = 0;
}

int qcow2_snapshot_list(struct img *img, struct img_snapshot **out, size_t *count)
{
    struct qcow2_state *s = img->priv;
    *out = NULL;
    *count = 0;
    if (s->nb_snapshots == 0)
        return 0;
    struct img_snapshot *list = calloc(s->nb_snapshots, sizeof(*list));
    if (!list)
        return img_error(-ENOMEM, "out of memory");
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        const struct qcow2_snapshot *sn = &s->snapshots[i];
        struct img_snapshot *o = &list[i];
        o->id = strdup(sn->id);
        o->name = strdup(sn->name);
        if (!o->id || !o->name) {
            img_snapshots_free(list, s->nb_snapshots);
            return img_error(-ENOMEM, "out of memory");
        }
        o->vm_state_size = sn->vm_state_size;
        o->date_sec = sn->date_sec;
        o->date_nsec = sn->date_nsec;
        o->vm_clock_nsec = sn->vm_clock_nsec;
        o->has_icount = sn->has_icount;
        o->icount = sn->icount;
    }
    *out = list;
    *count = s->nb_snapshots;
    return 0;
}
