/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <string.h>

#include "formats/format.h"
#include "util/endian.h"

/* Probe order breaks ties: earlier wins. Raw is last, bidding lowest, as the fallback. */
static const struct img_format *const formats[] = {
    &format_qcow2,     &format_vpc, &format_asif, &format_bochs, &format_cloop, &format_dmg,
    &format_parallels, &format_vdi, &format_qed,  &format_vmdk,  &format_vhdx,  &format_raw,
};

#define FORMAT_COUNT (sizeof(formats) / sizeof(formats[0]))

const struct img_format *format_find(const char *name)
{
    for (size_t i = 0; i < FORMAT_COUNT; i++)
        if (strcmp(formats[i]->name, name) == 0)
            return formats[i];
    return NULL;
}

size_t format_count(void)
{
    return FORMAT_COUNT;
}

const struct img_format *format_at(size_t index)
{
    return index < FORMAT_COUNT ? formats[index] : NULL;
}

unsigned format_caps(const struct img_format *fmt)
{
    unsigned caps = fmt->caps & (FORMAT_CAN_READ - 1);
    if (fmt->open && fmt->map)
        caps |= FORMAT_CAN_READ;
    if (fmt->create)
        caps |= FORMAT_CAN_CREATE;
    if (fmt->alloc)
        caps |= FORMAT_CAN_WRITE;
    if (fmt->compress_unit && fmt->write_compressed_data)
        caps |= FORMAT_COMPRESSED_WRITES;
    if (fmt->snapshot_list)
        caps |= FORMAT_SNAPSHOTS;
    if (fmt->resize)
        caps |= FORMAT_CAN_RESIZE;
    if (fmt->bitmap_change)
        caps |= FORMAT_BITMAPS;
    return caps;
}

int format_check_create_options(const struct img_format *fmt, const img_opts *opts)
{
    return opt_table_check(fmt->create_options, opts);
}

const struct img_format *format_probe(const uint8_t *buf, size_t len, const char *filename)
{
    const struct img_format *best = NULL;
    int best_score = 0;
    for (size_t i = 0; i < FORMAT_COUNT; i++) {
        if (!formats[i]->probe)
            continue;
        int score = formats[i]->probe(buf, len, filename);
        if (score > best_score) {
            best = formats[i];
            best_score = score;
        }
    }
    return best;
}

static bool has_magic(const uint8_t *buf, size_t len, size_t at, const char *magic)
{
    size_t n = strlen(magic);
    return len >= at + n && memcmp(buf + at, magic, n) == 0;
}

const char *format_probe_unsupported(const uint8_t *buf, size_t len, const char *filename)
{
    if (has_magic(buf, len, 0, "LUKS\xba\xbe"))
        return "luks";
    if (has_magic(buf, len, 0, "QFI\xfb"))
        return "qcow";
    return NULL;
}
