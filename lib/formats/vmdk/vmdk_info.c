/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What info prints for a VMDK image, and the check qemu-img runs on one. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "error.h"
#include "formats/vmdk/vmdk.h"
#include "image.h"
#include "io/io.h"

int vmdk_info_specific(struct img *img, struct json_writer *w)
{
    struct vmdk_state *s = img->priv;
    json_string(w, "type", "vmdk");
    json_object_begin(w, "data");
    json_u64(w, "cid", s->cid);
    json_u64(w, "parent-cid", s->parent_cid);
    json_string(w, "create-type", s->create_type);
    json_array_begin(w, "extents");
    for (unsigned i = 0; i < s->count; i++) {
        const struct vmdk_extent *e = &s->extents[i];
        json_object_begin(w, NULL);
        if (e->compressed)
            json_bool(w, "compressed", true);
        json_u64(w, "virtual-size", e->sectors * VMDK_SECTOR);
        json_string(w, "filename", e->filename);
        if (e->kind != VMDK_EXTENT_FLAT)
            json_u64(w, "cluster-size", e->grain_sectors * VMDK_SECTOR);
        json_string(w, "format", e->type ? e->type : "");
        json_object_end(w);
    }
    json_array_end(w);
    json_object_end(w);
    return 0;
}

int64_t vmdk_allocated_size(struct img *img, int64_t file_bytes)
{
    struct vmdk_state *s = img->priv;
    int64_t total = file_bytes;
    for (unsigned i = 0; i < s->count; i++) {
        if (!s->extents[i].own_file)
            continue;
        int64_t n = io_file_allocated(s->extents[i].file);
        if (n < 0)
            return n;
        total += n;
    }
    return total;
}

/*
 * As QEMU: every grain of every extent is looked up; the first whose table cannot be read or
 * whose data lies past the end of its file stops the check, which fails (qemu-img prints
 * "Check failed" and exits 1).
 */
int vmdk_check(struct img *img, unsigned flags, struct img_check_result *r)
{
    struct vmdk_state *s = img->priv;
    if (flags)
        return img_error(-ENOTSUP, "vmdk: '%s': this image format does not support repairs",
                         img->filename);
    char line[160];
    for (unsigned i = 0; i < s->count; i++) {
        struct vmdk_extent *e = &s->extents[i];
        if (e->kind == VMDK_EXTENT_FLAT)
            continue;
        int64_t file_size = io_file_size(e->file);
        if (file_size < 0)
            return img_error((int)file_size, "vmdk: cannot read the size of '%s'", e->filename);
        uint64_t grain_bytes = e->grain_sectors * VMDK_SECTOR;
        uint64_t end = e->start + e->sectors * VMDK_SECTOR;
        for (uint64_t off = e->start; off < end; off += grain_bytes) {
            struct vmdk_grain g;
            pthread_mutex_lock(&img->lock);
            int ret = vmdk_lookup(img, e, off, &g);
            pthread_mutex_unlock(&img->lock);
            const char *what = NULL;
            if (ret < 0) {
                img_error_clear();
                what = "could not get cluster_offset for sector";
            } else if (g.kind == VMDK_GRAIN_DATA &&
                       g.host_sector * VMDK_SECTOR >= (uint64_t)file_size) {
                what = "points after EOF";
            }
            if (what) {
                if (ret < 0)
                    snprintf(line, sizeof(line), "ERROR: %s %" PRIu64, what, off / VMDK_SECTOR);
                else
                    snprintf(line, sizeof(line), "ERROR: cluster offset for sector %" PRIu64 " %s",
                             off / VMDK_SECTOR, what);
                if (r->log)
                    r->log(r->log_user, line);
                r->corruptions++;
                /*
                 * QEMU's check then fails: with -EINVAL for a grain past the end, and with
                 * its internal -1 (read as -EPERM) for a table it cannot read.
                 */
                return ret < 0 ? img_error(-EPERM, "Operation not permitted")
                               : img_error(-EINVAL, "Invalid argument");
            }
        }
    }
    return 0;
}
