/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Typed answers about an open image: what img_info_json() says, without the JSON. */
#include <errno.h>

#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "io/io.h"

static bool valid(img *img)
{
    return img && img->magic == IMG_HANDLE_MAGIC;
}

IMG_API const char *img_get_filename(img *img)
{
    if (!valid(img)) {
        img_error(-EINVAL, "invalid image handle");
        return NULL;
    }
    return img->filename;
}

IMG_API int img_get_backing_filename(img *img, const char **name, const char **format)
{
    if (!valid(img))
        return img_error(-EINVAL, "invalid image handle");
    if (name)
        *name = img->backing_name;
    if (format)
        *format = img->backing_name ? img->backing_format : NULL;
    return 0;
}

int64_t img_allocated_size(struct img *img)
{
    int64_t actual = io_file_allocated(img->file);
    if (actual >= 0 && img->fmt->allocated_size)
        actual = img->fmt->allocated_size(img, actual);
    return actual;
}

IMG_API int64_t img_get_allocated_size(img *img)
{
    if (!valid(img))
        return img_error(-EINVAL, "invalid image handle");
    int64_t size = img_allocated_size(img);
    if (size < 0)
        return img_error((int)size, "%s: cannot tell its allocated size", img->filename);
    return size;
}

IMG_API int64_t img_get_cluster_size(img *img)
{
    if (!valid(img))
        return img_error(-EINVAL, "invalid image handle");
    return img->cluster_size;
}

IMG_API int img_get_flags(img *img)
{
    if (!valid(img))
        return img_error(-EINVAL, "invalid image handle");
    img_io_enter(img);
    unsigned flags = img->fmt->status_flags ? img->fmt->status_flags(img) : 0;
    flags &= IMG_FLAG_CORRUPT | IMG_FLAG_ENCRYPTED | IMG_FLAG_DATA_FILE | IMG_FLAG_BITMAPS;
    if (img->dirty)
        flags |= IMG_FLAG_DIRTY;
    if (img->backing_name)
        flags |= IMG_FLAG_BACKING;
    int ret = 0;
    if (img->fmt->snapshot_list) {
        struct img_snapshot *list = NULL;
        size_t count = 0;
        ret = img->fmt->snapshot_list(img, &list, &count);
        if (ret == 0 && count)
            flags |= IMG_FLAG_SNAPSHOTS;
        img_snapshots_free(list, count);
    }
    img_io_leave(img);
    return ret < 0 ? ret : (int)flags;
}

IMG_API int img_get_named_file_count(img *img)
{
    if (!valid(img))
        return img_error(-EINVAL, "invalid image handle");
    return (int)img->named_count;
}

IMG_API const char *img_get_named_file(img *img, int i, int *kind)
{
    if (!valid(img)) {
        img_error(-EINVAL, "invalid image handle");
        return NULL;
    }
    if (i < 0 || (size_t)i >= img->named_count) {
        img_error(-ENOENT, "%s: names %zu files, none with index %d", img->filename,
                  img->named_count, i);
        return NULL;
    }
    if (kind)
        *kind = img->named[i].kind;
    return img->named[i].path;
}
