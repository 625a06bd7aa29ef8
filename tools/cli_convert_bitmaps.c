/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * convert --bitmaps (qemu-img.c convert_check_bitmaps() and convert_copy_bitmaps()): the
 * bitmaps are added to the finished target through the public bitmap calls, each one then
 * filled by a merge from the source, so granularity, enabled state and bits carry over.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_convert_bitmaps.h"
#include "cli_util.h"

static int unsupported(const char *format)
{
    cli_error("Format driver '%s' does not support bitmaps", format);
    return CLI_EXIT_FAILURE;
}

int cli_convert_bitmaps_check(img *src, const char *dst_format, bool skip_broken)
{
    if (img_format_supports(img_get_format(src), "bitmaps") != 1) {
        cli_error("Source lacks bitmap support");
        return CLI_EXIT_FAILURE;
    }
    if (img_format_supports(dst_format, "bitmaps") != 1)
        return unsupported(dst_format);
    int count = img_bitmap_count(src);
    if (count < 0) {
        cli_lib_error("%s", img_get_filename(src));
        return CLI_EXIT_FAILURE;
    }
    for (int i = 0; i < count && !skip_broken; i++) {
        char *name = NULL;
        unsigned flags = 0;
        if (img_bitmap_get(src, i, &name, NULL, &flags) < 0) {
            cli_lib_error("%s", img_get_filename(src));
            return CLI_EXIT_FAILURE;
        }
        bool broken = (flags & IMG_BITMAP_IN_USE) != 0;
        if (broken)
            cli_error("Cannot copy inconsistent bitmap '%s'\nTry --skip-broken-bitmaps, or use "
                      "'qemu-img bitmap --remove' to delete it",
                      name);
        img_free(name);
        if (broken)
            return CLI_EXIT_FAILURE;
    }
    return 0;
}

static int copy_one(img *src, img *dst, int i, bool skip_broken, const char *dst_format)
{
    char *name = NULL;
    uint64_t granularity = 0;
    unsigned flags = 0;
    if (img_bitmap_get(src, i, &name, &granularity, &flags) < 0) {
        cli_lib_error("%s", img_get_filename(src));
        return CLI_EXIT_FAILURE;
    }
    int status = 0;
    if (flags & IMG_BITMAP_IN_USE) {
        if (skip_broken)
            cli_error("warning: Skipping inconsistent bitmap '%s'", name);
        else
            status = CLI_EXIT_FAILURE; /* refused by the check before the copy */
        img_free(name);
        return status;
    }
    unsigned add_flags = (flags & IMG_BITMAP_ENABLED) ? 0 : IMG_BITMAP_ADD_DISABLED;
    int ret = img_bitmap_add(dst, name, granularity, add_flags);
    if (ret == -ENOTSUP) {
        status = unsupported(dst_format); /* a qcow2 v2 target */
    } else if (ret < 0) {
        cli_lib_error("Failed to add bitmap '%s'", name);
        status = CLI_EXIT_FAILURE;
    } else if (img_bitmap_merge(dst, name, src, name) < 0) {
        cli_lib_error("Failed to populate bitmap '%s'", name);
        status = CLI_EXIT_FAILURE;
    }
    img_free(name);
    return status;
}

int cli_convert_bitmaps_copy(img *src, const char *dst_path, const char *dst_format,
                             bool skip_broken)
{
    int count = img_bitmap_count(src);
    if (count <= 0)
        return count < 0 ? CLI_EXIT_FAILURE : 0;
    img *dst;
    if (cli_open_image(&dst, dst_path, dst_format, IMG_OPEN_READ_WRITE) < 0)
        return CLI_EXIT_FAILURE;
    int status = 0;
    for (int i = 0; i < count && status == 0; i++)
        status = copy_one(src, dst, i, skip_broken, dst_format);
    img_close(dst);
    return status;
}
