/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qemu-img check for QED, counted as QEMU counts: every table and data cluster must lie in
 * the file and be referenced once; clusters nobody references are leaks; allocated and
 * fragmented clusters as qemu-img reports them. A repair clears invalid offsets (the data is
 * lost, as in QEMU) and, when no corruption is left, clears need-check. Leaks are not
 * repaired: QEMU does not either, and new clusters are taken past them.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/qed/qed.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

struct walk {
    struct qed_state *s;
    struct img_check_result *r;
    uint8_t *used; /* one bit per cluster of the file */
    bool fix;
};

/* Marks `n` clusters from `offset` used; false (a corruption each) for those used before. */
static bool mark_used(struct walk *w, uint64_t offset, uint64_t n)
{
    uint64_t cluster = offset / w->s->hdr.cluster_size;
    uint64_t twice = 0;
    for (uint64_t i = cluster; i < cluster + n; i++) {
        if (w->used[i / 8] & (1u << (i % 8)))
            twice++;
        w->used[i / 8] |= (uint8_t)(1u << (i % 8));
    }
    w->r->corruptions += twice;
    return twice == 0;
}

static int check_l2(struct img *img, struct walk *w, uint64_t l2)
{
    struct qed_state *s = w->s;
    uint64_t last = 0;
    for (uint64_t slice = 0; slice < s->table_entries / QED_SLICE_ENTRIES; slice++) {
        uint64_t *entries;
        int ret = qed_l2_slice(img, l2, slice, &entries);
        if (ret < 0)
            return ret;
        bool dirty = false;
        for (unsigned i = 0; i < QED_SLICE_ENTRIES; i++) {
            uint64_t e = entries[i];
            if (e <= QED_CLUSTER_ZERO)
                continue;
            w->r->allocated_clusters++;
            if (last && last + s->hdr.cluster_size != e)
                w->r->fragmented_clusters++;
            last = e;
            if (!qed_cluster_offset_valid(s, e)) {
                if (w->fix) {
                    entries[i] = 0;
                    w->r->corruptions_fixed++;
                    dirty = true;
                } else {
                    w->r->corruptions++;
                }
                continue;
            }
            mark_used(w, e, 1);
        }
        if (dirty && (ret = qed_l2_write(img, l2, slice, 0, QED_SLICE_ENTRIES)) < 0)
            return ret;
    }
    return 0;
}

static int write_l1(struct img *img, struct qed_state *s)
{
    uint64_t bytes = qed_table_bytes(&s->hdr);
    uint8_t *buf = malloc((size_t)min_u64(bytes, 1u << 20));
    if (!buf)
        return -ENOMEM;
    int ret = 0;
    for (uint64_t done = 0; ret == 0 && done < bytes;) {
        size_t n = (size_t)min_u64(bytes - done, 1u << 20);
        for (size_t i = 0; i < n; i += 8)
            store_le64(buf + i, s->l1[(done + i) / 8]);
        ret = io_pwrite(img->file, buf, n, s->hdr.l1_table_offset + done);
        done += n;
    }
    free(buf);
    if (ret < 0)
        return img_error(ret, "qed: '%s': cannot write the L1 table: %s", img->filename,
                         img_strerror(ret));
    return 0;
}

static void mark_clean(struct img *img, struct qed_state *s, struct img_check_result *r)
{
    if (r->corruptions || r->check_errors || !(s->hdr.features & QED_F_NEED_CHECK))
        return;
    /* The repairs reach the disk before the image is declared consistent. */
    if (io_fsync(img->file) < 0)
        return;
    s->hdr.features &= ~QED_F_NEED_CHECK;
    if (qed_header_write(img) < 0)
        s->hdr.features |= QED_F_NEED_CHECK;
}

int qed_check_locked(struct img *img, bool fix, struct img_check_result *r)
{
    struct qed_state *s = img->priv;
    uint64_t cs = s->hdr.cluster_size;
    uint64_t nclusters = s->file_size / cs;
    struct walk w = {.s = s, .r = r, .fix = fix, .used = calloc((size_t)(nclusters / 8 + 1), 1)};
    if (!w.used) {
        r->check_errors++;
        return img_error(-ENOMEM, "qed: '%s': out of memory", img->filename);
    }
    r->total_clusters = (s->hdr.image_size + cs - 1) / cs;
    mark_used(&w, s->hdr.l1_table_offset, s->hdr.table_size);
    uint64_t invalid_l1 = 0;
    int last_error = 0;
    for (uint64_t i = 0; i < s->table_entries; i++) {
        uint64_t l2 = s->l1[i];
        if (!l2)
            continue;
        if (!qed_table_offset_valid(s, l2)) {
            if (fix) {
                s->l1[i] = 0;
                r->corruptions_fixed++;
            } else {
                r->corruptions++;
            }
            invalid_l1++;
            continue;
        }
        if (!mark_used(&w, l2, s->hdr.table_size))
            continue;
        int ret = check_l2(img, &w, l2);
        if (ret < 0) {
            r->check_errors++;
            last_error = ret;
        }
    }
    if (invalid_l1 && fix) {
        int ret = write_l1(img, s);
        if (ret < 0) {
            r->check_errors++;
            last_error = ret;
        }
    }
    if (last_error == 0) {
        /* Leaks only when the whole image was read. */
        for (uint64_t i = s->hdr.header_size; i < nclusters; i++)
            if (!(w.used[i / 8] & (1u << (i % 8))))
                r->leaks++;
        if (fix)
            mark_clean(img, s, r);
    }
    free(w.used);
    return last_error;
}

int qed_check(struct img *img, unsigned flags, struct img_check_result *r)
{
    struct qed_state *s = img->priv;
    bool fix = (flags & (IMG_CHECK_REPAIR_LEAKS | IMG_CHECK_REPAIR_ERRORS)) != 0;
    pthread_mutex_lock(&s->lock);
    int ret = qed_check_locked(img, fix, r);
    if (ret == 0 && (r->corruptions_fixed || r->leaks_fixed)) {
        /* As qemu-img: what is reported is a second pass over the repaired image. */
        struct img_check_result again = {.log = r->log, .log_user = r->log_user};
        ret = qed_check_locked(img, fix, &again);
        again.corruptions_fixed = r->corruptions_fixed;
        again.leaks_fixed = r->leaks_fixed;
        *r = again;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}
