/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qemu-img check for VDI: every allocated map entry names a data block inside the image, no
 * two name the same one, and the header counts them right. Findings are worded as QEMU prints
 * them. QEMU repairs nothing here, and neither does this.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "error.h"
#include "formats/vdi/vdi.h"

static void report(struct img_check_result *r, const char *line)
{
    if (r->log)
        r->log(r->log_user, line);
}

int vdi_check(struct img *img, unsigned flags, struct img_check_result *r)
{
    struct vdi_state *s = img->priv;
    if (flags & (IMG_CHECK_REPAIR_LEAKS | IMG_CHECK_REPAIR_ERRORS))
        return img_error(-ENOTSUP, "vdi: '%s': this image format does not support repairs",
                         img->filename);
    uint32_t blocks = s->hdr.blocks_in_image;
    /* One bit per data block: bounded by the map, which is bounded by the file. */
    uint8_t *used = calloc((size_t)blocks / 8 + 1, 1);
    if (!used) {
        r->check_errors++;
        return img_error(-ENOMEM, "vdi: '%s': out of memory", img->filename);
    }
    char line[128];
    uint32_t allocated = 0;
    pthread_mutex_lock(&s->lock);
    for (uint32_t block = 0; block < blocks; block++) {
        uint32_t entry = s->bmap[block];
        if (!VDI_IS_ALLOCATED(entry))
            continue;
        if (entry >= blocks) {
            snprintf(line, sizeof(line), "ERROR: block index %" PRIu32 " too large, is %" PRIu32,
                     block, entry);
            report(r, line);
            r->corruptions++;
            continue;
        }
        allocated++;
        if (used[entry / 8] & (1u << (entry % 8))) {
            snprintf(line, sizeof(line), "ERROR: block index %" PRIu32 " also used by %" PRIu32,
                     entry, entry);
            report(r, line);
            r->corruptions++;
        }
        used[entry / 8] |= (uint8_t)(1u << (entry % 8));
    }
    uint32_t counted = s->hdr.blocks_allocated;
    pthread_mutex_unlock(&s->lock);
    free(used);
    if (allocated != counted) {
        snprintf(line, sizeof(line),
                 "ERROR: allocated blocks mismatch, is %" PRIu32 ", should be %" PRIu32, allocated,
                 counted);
        report(r, line);
        r->corruptions++;
    }
    return 0;
}
