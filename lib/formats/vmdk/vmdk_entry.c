/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The VMDK backend's entry table. */
#include "formats/vmdk/vmdk.h"

const struct img_format format_vmdk = {
    .name = "vmdk",
    .caps = FORMAT_HAS_METADATA | FORMAT_BACKING,
    .create_options = vmdk_create_options,
    .probe = vmdk_probe,
    .open = vmdk_open,
    .close = vmdk_close,
    .map = vmdk_map,
    .info_specific = vmdk_info_specific,
    .create = vmdk_create,
    .measure = vmdk_measure,
    .alloc = vmdk_alloc,
    .alloc_commit = vmdk_alloc_commit,
    .zero = vmdk_zero,
    .discard = vmdk_discard,
    .flush = vmdk_flush,
    .check = vmdk_check,
    .compress_unit = vmdk_compress_unit,
    .write_compressed_data = vmdk_write_compressed_data,
    .compress_allowed = vmdk_compress_allowed,
    .allocated_size = vmdk_allocated_size,
};
