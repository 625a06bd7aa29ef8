/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The VHD backend's entry points (see vpc.h for the layout and the rules). */
#include "vpc.h"

const struct img_format format_vpc = {
    .name = "vpc",
    /* Differencing disks name their parent; a sparse disk's tables must not change under us. */
    .caps = FORMAT_HAS_METADATA | FORMAT_BACKING,
    .create_options = vpc_create_options,
    .probe = vpc_probe,
    .open = vpc_open,
    .close = vpc_close,
    .map = vpc_map,
    .create = vpc_create,
    .measure = vpc_measure,
    .alloc = vpc_alloc,
    .alloc_commit = vpc_alloc_commit,
    .zero = vpc_zero,
    .flush = vpc_flush,
};
