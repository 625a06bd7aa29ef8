/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_measure: how large an image of a given format would be, made from a source image or
 * of a given size (qemu-img measure). The target format's backend computes the figures; the
 * core checks the request, counts the source's data for it and writes qemu-img's JSON.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "util/checked.h"
#include "util/json.h"

int measure_allocated_bytes(struct img *src, uint64_t unit, uint64_t *bytes)
{
    *bytes = 0;
    int64_t size = img_get_size(src);
    if (size < 0)
        return (int)size;
    uint64_t end = (uint64_t)size;
    uint64_t total = 0;
    uint64_t pnum;
    /* QEMU's loop (block/qcow2.c, qcow2_measure): one block status query per run. */
    for (uint64_t offset = 0; offset < end; offset += pnum) {
        unsigned status;
        int ret = img_block_status(src, offset, end - offset, &pnum, &status, NULL, NULL);
        if (ret < 0) {
            img_error_prefix("Unable to get block status");
            return ret;
        }
        if (status & IMG_BLOCK_ZERO)
            continue; /* zeros need no data cluster in the copy */
        if (!(status & IMG_BLOCK_DATA))
            continue;
        /* The rest of a unit holding data is stored too; count it once, from its start. */
        /* Any unit size: Parallels clusters are whole sectors, not always powers of two. */
        pnum = measure_units_of(offset + pnum, unit) * unit - offset;
        total += offset % unit + pnum;
    }
    *bytes = total;
    return 0;
}

int measure_data_units(const struct img_measure_args *args, uint64_t unit, bool every_unit,
                       uint64_t *units)
{
    *units = 0;
    if (!args->src)
        return 0;
    if (every_unit) {
        *units = measure_units_of(args->size, unit);
        return 0;
    }
    uint64_t bytes;
    int ret = measure_allocated_bytes(args->src, unit, &bytes);
    if (ret < 0)
        return ret;
    /* measure_allocated_bytes counts whole units, the last one too. */
    *units = bytes / unit;
    return 0;
}

uint64_t measure_host_bytes(uint64_t bytes)
{
    return align_up_u64(bytes, MEASURE_HOST_BLOCK);
}

static int write_result(const struct img_measure_result *r, char **json)
{
    struct json_writer w;
    json_init(&w);
    json_object_begin(&w, NULL);
    /* qemu-img's order: "bitmaps" (when reported), "required", "fully-allocated". */
    if (r->has_bitmaps)
        json_u64(&w, "bitmaps", r->bitmaps);
    json_u64(&w, "required", r->required);
    json_u64(&w, "fully-allocated", r->fully_allocated);
    json_object_end(&w);
    *json = json_finish(&w);
    if (!*json)
        return img_error(-ENOMEM, "out of memory");
    return 0;
}

IMG_API int img_measure(img *src, uint64_t size, const char *format, const img_opts *opts,
                        char **json)
{
    if (!json)
        return img_error(-EINVAL, "img_measure: json is NULL");
    *json = NULL;
    if (src && src->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    if (src && size)
        return img_error(-EINVAL, "--size N cannot be used together with a filename.");
    if (!format)
        return img_error(-EINVAL, "img_measure: no target format given");
    const struct img_format *fmt = format_find(format);
    if (!fmt)
        return img_error(-ENOENT, "Unknown file format '%s'", format);
    /* qemu-img parses the options before it asks the driver to measure. */
    int ret = format_check_create_options(fmt, opts);
    if (ret < 0)
        return ret;
    if (!fmt->measure)
        return img_error(-ENOTSUP, "Block driver '%s' does not support size measurement",
                         fmt->name);

    struct img_measure_args args = {.src = src, .size = size, .opts = opts};
    if (src) {
        int64_t src_size = img_get_size(src);
        if (src_size < 0) {
            img_error_prefix("Unable to get image virtual_size");
            return (int)src_size;
        }
        args.size = (uint64_t)src_size;
    }
    if (args.size > (uint64_t)INT64_MAX)
        return img_error(-EINVAL, "Image size must be less than 8 EiB!");

    struct img_measure_result result;
    memset(&result, 0, sizeof(result));
    ret = fmt->measure(&args, &result);
    if (ret < 0)
        return ret;
    return write_result(&result, json);
}
