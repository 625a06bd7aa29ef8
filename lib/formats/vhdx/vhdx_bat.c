/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* BAT updates: entries changed in memory, their 4 KiB sectors written through the log. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/vhdx/vhdx.h"
#include "io/io.h"
#include "util/endian.h"

#define ENTRIES_PER_SECTOR (VHDX_LOG_SECTOR / 8u)
/* Sectors one log entry carries at most: it must fit in a 1 MiB log with room to spare. */
#define MAX_SECTORS_PER_ENTRY 64u

int vhdx_bat_store(struct img *img, struct vhdx_state *s, const uint64_t *indexes,
                   const uint64_t *entries, uint32_t count)
{
    uint64_t offsets[MAX_SECTORS_PER_ENTRY];
    uint8_t *data = malloc((size_t)MAX_SECTORS_PER_ENTRY * VHDX_LOG_SECTOR);
    if (!data)
        return img_error(-ENOMEM, "vhdx: out of memory");
    for (uint32_t i = 0; i < count; i++)
        s->bat[indexes[i]] = entries[i];
    int ret = 0;
    uint32_t n = 0;
    for (uint32_t i = 0; i < count && ret == 0; i++) {
        uint64_t sector = indexes[i] / ENTRIES_PER_SECTOR;
        uint64_t at = s->bat_offset + sector * VHDX_LOG_SECTOR;
        bool seen = false;
        for (uint32_t k = 0; k < n && !seen; k++)
            seen = offsets[k] == at;
        if (seen)
            continue;
        if (n == MAX_SECTORS_PER_ENTRY) {
            ret = vhdx_log_write_sectors(img, s, offsets, data, n);
            n = 0;
            if (ret < 0)
                break;
        }
        /* The sector as it is now, entries past the BAT's end kept as zero. */
        uint8_t *p = data + (size_t)n * VHDX_LOG_SECTOR;
        for (uint32_t k = 0; k < ENTRIES_PER_SECTOR; k++) {
            uint64_t idx = sector * ENTRIES_PER_SECTOR + k;
            store_le64(p + 8 * k, idx < s->bat_alloc ? s->bat[idx] : 0);
        }
        offsets[n++] = at;
    }
    if (ret == 0 && n)
        ret = vhdx_log_write_sectors(img, s, offsets, data, n);
    free(data);
    return ret;
}

int vhdx_file_end(struct img *img, uint64_t *end)
{
    int64_t size = io_file_size(img->file);
    if (size < 0)
        return img_error((int)size, "vhdx: cannot read the size of '%s'", img->filename);
    *end = (uint64_t)size;
    return 0;
}
