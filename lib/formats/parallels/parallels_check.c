/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * check and repair, with qemu-img 7.2's findings, counts and wording: the in-use marker, clusters
 * the catalog places past the end of the file, and space past the last cluster (leaks).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "error.h"
#include "formats/parallels/parallels.h"
#include "io/io.h"
#include "util/checked.h"

static void say(struct img_check_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void say(struct img_check_result *r, const char *fmt, ...)
{
    if (!r->log)
        return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    r->log(r->log_user, line);
}

static int check_pass(struct img *img, unsigned flags, struct img_check_result *r)
{
    struct prl_state *s = img->priv;
    bool fix_errors = (flags & IMG_CHECK_REPAIR_ERRORS) != 0;
    bool fix_leaks = (flags & IMG_CHECK_REPAIR_LEAKS) != 0;
    int64_t file_size = io_file_size(s->data);
    if (file_size < 0) {
        r->check_errors++;
        return img_error((int)file_size, "parallels: cannot read the size of '%s'", s->data_name);
    }
    /* QEMU sees the file in whole sectors. */
    uint64_t size = align_up_u64((uint64_t)file_size, PRL_SECTOR);
    uint64_t cs = s->cluster_bytes;

    pthread_mutex_lock(&img->lock);
    if (s->header_unclean) {
        say(r, "%s image was not closed correctly", fix_errors ? "Repairing" : "ERROR");
        r->corruptions++;
        if (fix_errors) {
            /* Closing clears the marker this handle set when it opened the image. */
            r->corruptions_fixed++;
            s->header_unclean = false;
        }
    }

    r->total_clusters = s->hdr.bat_entries;
    uint64_t high = 0, prev = 0;
    bool catalog_changed = false;
    for (uint32_t i = 0; i < s->hdr.bat_entries; i++) {
        uint64_t off = prl_bat_sector(s, i) * PRL_SECTOR;
        if (off == 0) {
            prev = 0;
            continue;
        }
        if (off > size) {
            say(r, "%s cluster %" PRIu32 " is outside image", fix_errors ? "Repairing" : "ERROR",
                i);
            r->corruptions++;
            if (fix_errors) {
                s->bat[i] = 0;
                r->corruptions_fixed++;
                catalog_changed = true;
                prev = 0;
                continue;
            }
        }
        r->allocated_clusters++;
        high = max_u64(high, off);
        if (prev != 0 && prev + cs != off)
            r->fragmented_clusters++;
        prev = off;
    }

    int ret = 0;
    if (catalog_changed) {
        ret = prl_write_bat(s, 0, s->hdr.bat_entries);
        if (ret == 0)
            ret = io_fsync(s->data);
        if (ret < 0) {
            r->check_errors++;
            goto out;
        }
    }

    r->image_end_offset = high + cs;
    if (size > r->image_end_offset) {
        uint64_t count = (size - r->image_end_offset + cs - 1) / cs;
        say(r, "%s space leaked at the end of the image %" PRIu64,
            fix_leaks ? "Repairing" : "ERROR", size - r->image_end_offset);
        r->leaks += count;
        if (fix_leaks) {
            /*
             * Never below the catalog: QEMU cuts an image without clusters at one cluster and
             * grows it back on close; the file keeps its catalog here instead.
             */
            uint64_t keep = max_u64(r->image_end_offset, (uint64_t)s->hdr.data_off * PRL_SECTOR);
            keep = max_u64(keep, PRL_HEADER_SIZE + (uint64_t)s->hdr.bat_entries * 4);
            ret = keep < size ? io_truncate(s->data, keep) : 0;
            if (ret < 0) {
                img_error(ret, "parallels: '%s': cannot cut the leaked space: %s", s->data_name,
                          img_strerror(ret));
                r->check_errors++;
                goto out;
            }
            r->leaks_fixed += count;
            s->stale_end = keep;
        }
    }
    if (catalog_changed || fix_leaks) {
        /* What close() cuts the file at: the clusters still referenced. */
        uint64_t end =
            max_u64((uint64_t)s->hdr.data_off,
                    align_up_u64(PRL_HEADER_SIZE + (uint64_t)s->hdr.bat_entries * 4, PRL_SECTOR) /
                        PRL_SECTOR);
        for (uint32_t i = 0; i < s->hdr.bat_entries; i++) {
            uint64_t sector = prl_bat_sector(s, i);
            if (sector && sector + s->hdr.tracks > end)
                end = sector + s->hdr.tracks;
        }
        s->data_end = end;
    }
out:
    pthread_mutex_unlock(&img->lock);
    return ret;
}

/*
 * As qemu-img, a repair that fixed something is followed by a second check whose findings are the
 * report, with the repair's counts of what it fixed.
 */
int prl_check(struct img *img, unsigned flags, struct img_check_result *r)
{
    int ret = check_pass(img, flags, r);
    if (ret < 0 || (r->corruptions_fixed == 0 && r->leaks_fixed == 0))
        return ret;
    struct img_check_result again = {.log = r->log, .log_user = r->log_user};
    ret = check_pass(img, 0, &again);
    again.corruptions_fixed = r->corruptions_fixed;
    again.leaks_fixed = r->leaks_fixed;
    again.check_errors += r->check_errors;
    *r = again;
    return ret;
}
