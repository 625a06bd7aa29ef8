/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* convert --bitmaps: copying persistent dirty bitmaps into the new image, as qemu-img does. */
#ifndef CLI_CONVERT_BITMAPS_H
#define CLI_CONVERT_BITMAPS_H

#include <stdbool.h>

#include "imgutil.h"

/*
 * Before anything is written: whether the bitmaps of `src` can be copied into a `dst_format`
 * image (qemu-img's refusals: a source or target format without bitmaps, a bitmap marked in
 * use unless `skip_broken`). Returns 0 or CLI_EXIT_FAILURE after printing why.
 */
int cli_convert_bitmaps_check(img *src, const char *dst_format, bool skip_broken);

/*
 * After the copy: adds every bitmap of `src` to the image at `dst_path` with its granularity,
 * enabled state and bits (bitmaps in use are skipped with a warning when `skip_broken`).
 * Returns 0 or CLI_EXIT_FAILURE after printing why.
 */
int cli_convert_bitmaps_copy(img *src, const char *dst_path, const char *dst_format,
                             bool skip_broken);

#endif
