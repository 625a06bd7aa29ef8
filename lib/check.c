/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* img_check: the format's consistency check, reported as qemu-img check --output=json. */
#include <errno.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "util/json.h"

static char *check_report_json(struct img *img, const struct img_check_result *r)
{
    struct json_writer w;
    json_init(&w);
    /* qemu-img's field order; counters are printed only when non-zero. */
    json_object_begin(&w, NULL);
    if (r->image_end_offset)
        json_u64(&w, "image-end-offset", r->image_end_offset);
    if (r->compressed_clusters)
        json_u64(&w, "compressed-clusters", r->compressed_clusters);
    if (r->total_clusters)
        json_u64(&w, "total-clusters", r->total_clusters);
    if (r->corruptions)
        json_u64(&w, "corruptions", r->corruptions);
    if (r->corruptions_fixed)
        json_u64(&w, "corruptions-fixed", r->corruptions_fixed);
    json_u64(&w, "check-errors", r->check_errors);
    if (r->leaks)
        json_u64(&w, "leaks", r->leaks);
    if (r->leaks_fixed)
        json_u64(&w, "leaks-fixed", r->leaks_fixed);
    if (r->allocated_clusters)
        json_u64(&w, "allocated-clusters", r->allocated_clusters);
    json_string(&w, "filename", img->filename);
    json_string(&w, "format", img->fmt->name);
    if (r->fragmented_clusters)
        json_u64(&w, "fragmented-clusters", r->fragmented_clusters);
    json_object_end(&w);
    return json_finish(&w);
}

IMG_API int img_check(img *img, unsigned flags, char **report)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    if (!img->fmt->check)
        return img_error(-ENOTSUP, "%s: format %s does not support checks", img->filename,
                         img->fmt->name);
    if ((flags & (IMG_CHECK_REPAIR_LEAKS | IMG_CHECK_REPAIR_ERRORS)) && !img->writable)
        return img_error(-EROFS, "%s: repairing needs the image opened read-write", img->filename);
    struct img_check_result result;
    memset(&result, 0, sizeof(result));
    int ret = img->fmt->check(img, flags, &result);
    if (ret < 0)
        return ret;
    if (report) {
        *report = check_report_json(img, &result);
        if (!*report)
            return img_error(-ENOMEM, "out of memory");
    }
    return 0;
}
