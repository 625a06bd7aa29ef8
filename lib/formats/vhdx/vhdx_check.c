/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The check QEMU 7.2 makes: a log replayed by the open counts as one corruption fixed, and
 * every present payload block must lie inside the file and off the metadata regions (the same
 * test refuses an open that is not for checking). Messages are QEMU's.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "error.h"
#include "formats/vhdx/vhdx.h"
#include "io/io.h"

static void report(struct img_check_result *r, const char *line)
{
    if (r && r->log)
        r->log(r->log_user, line);
}

int vhdx_check_bat(struct img *img, struct vhdx_state *s, struct img_check_result *result)
{
    int64_t file_size = io_file_size(img->file);
    if (file_size < 0)
        return img_error((int)file_size, "vhdx: cannot read the size of '%s'", img->filename);
    char line[256];
    int ret = 0;
    for (uint64_t i = 0; i < s->bat_entries; i++) {
        uint64_t entry = s->bat[i];
        if ((entry & VHDX_BAT_STATE_MASK) != VHDX_BLOCK_FULLY_PRESENT)
            continue;
        uint64_t offset = entry & VHDX_BAT_OFFSET_MASK;
        /* The last block may be short: QEMU once wrote such files. QEMU counts i over all
         * entries here, bitmap entries included; so do we, to report the same. */
        bool payload = (i + 1) % (s->chunk_ratio + 1) != 0;
        uint64_t block_length = payload ? s->block_size : VHDX_MiB; /* a sector bitmap */
        if (payload && (uint64_t)i * s->block_size < s->virtual_size &&
            s->virtual_size - (uint64_t)i * s->block_size < block_length)
            block_length = s->virtual_size - (uint64_t)i * s->block_size;
        bool bad = false;
        if (offset > (uint64_t)INT64_MAX - s->block_size) {
            snprintf(line, sizeof(line),
                     "VHDX BAT entry %" PRIu64 " offset points after end of file. Image has "
                     "probably been truncated.",
                     i);
            bad = true;
        } else if (offset >= (uint64_t)file_size) {
            snprintf(line, sizeof(line),
                     "VHDX BAT entry %" PRIu64 " start offset %" PRIu64
                     " points after end of file (%" PRId64 "). Image has probably been truncated.",
                     i, offset, file_size);
            bad = true;
        } else if (offset + block_length > (uint64_t)file_size) {
            snprintf(line, sizeof(line),
                     "VHDX BAT entry %" PRIu64 " end offset %" PRIu64
                     " points after end of file (%" PRId64 "). Image has probably been truncated.",
                     i, offset + block_length - 1, file_size);
            bad = true;
        }
        const struct vhdx_region *r = NULL;
        if (!bad && payload)
            r = vhdx_region_find(s, offset, s->block_size);
        if (r) {
            snprintf(line, sizeof(line),
                     "VHDX region %" PRIu64 "-%" PRIu64 " overlaps with region %" PRIu64
                     "-%" PRIu64,
                     offset, offset + s->block_size, r->start, r->end);
            bad = true;
        } else if (!bad && payload && offset < VHDX_HEADER_SECTION_END) {
            snprintf(line, sizeof(line),
                     "VHDX BAT entry %" PRIu64 " at offset %" PRIu64 " lies in the header section",
                     i, offset);
            bad = true;
        }
        if (!bad)
            continue;
        if (!result)
            return img_error(-EINVAL, "vhdx: '%s': %s", img->filename, line);
        report(result, line);
        result->corruptions++;
        ret = -EINVAL;
    }
    return ret;
}

int vhdx_check(struct img *img, unsigned flags, struct img_check_result *result)
{
    (void)flags;
    struct vhdx_state *s = img->priv;
    if (s->log_replayed)
        result->corruptions_fixed++;
    vhdx_check_bat(img, s, result);
    return 0;
}
