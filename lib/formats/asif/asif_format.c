/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The ASIF backend's entry table. */
#include "formats/asif/asif.h"

static const struct opt_desc asif_create_options[] = {
    {.name = "size", .type = OPT_SIZE, .help = "Virtual disk size"},
    OPT_TABLE_END,
};

const struct img_format format_asif = {
    .name = "asif",
    .caps = FORMAT_HAS_METADATA,
    .create_options = asif_create_options,
    .probe = asif_probe,
    .open = asif_open,
    .close = asif_close,
    .map = asif_map,
    .info_specific = asif_info_specific,
    .create = asif_create,
    .measure = asif_measure,
    .alloc = asif_alloc,
    .alloc_commit = asif_alloc_commit,
    .zero = asif_zero,
    .discard = asif_discard,
    .flush = asif_flush,
    .resize = asif_resize,
};
