/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* img_info_json: qemu-img info --output=json, field for field and in qemu-img's order. */
#include <errno.h>

#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "io/io.h"
#include "util/json.h"

static int write_snapshots(struct img *img, struct json_writer *w, bool always)
{
    struct img_snapshot *list = NULL;
    size_t count = 0;
    if (img->fmt->snapshot_list) {
        int ret = img->fmt->snapshot_list(img, &list, &count);
        if (ret < 0)
            return ret;
    }
    if (count || always) {
        json_array_begin(w, always ? NULL : "snapshots");
        for (size_t i = 0; i < count; i++) {
            const struct img_snapshot *s = &list[i];
            json_object_begin(w, NULL);
            if (s->has_icount)
                json_u64(w, "icount", s->icount);
            json_u64(w, "vm-clock-nsec", s->vm_clock_nsec % 1000000000ull);
            json_string(w, "name", s->name);
            json_u64(w, "date-sec", s->date_sec);
            json_u64(w, "date-nsec", s->date_nsec);
            json_u64(w, "vm-clock-sec", s->vm_clock_nsec / 1000000000ull);
            json_string(w, "id", s->id);
            json_u64(w, "vm-state-size", s->vm_state_size);
            json_object_end(w);
        }
        json_array_end(w);
    }
    img_snapshots_free(list, count);
    return 0;
}

static int write_one_image(struct img *img, struct json_writer *w)
{
    int ret;
    json_object_begin(w, NULL);
    /* qemu-img's order: its dictionary's hash buckets, in which this key comes first. */
    if (img->backing_name && img->backing_format)
        json_string(w, "backing-filename-format", img->backing_format);
    ret = write_snapshots(img, w, false);
    if (ret < 0)
        return ret;
    json_u64(w, "virtual-size", img->size);
    json_string(w, "filename", img->filename);
    if (img->cluster_size)
        json_u64(w, "cluster-size", img->cluster_size);
    json_string(w, "format", img->fmt->name);
    int64_t actual = io_file_allocated(img->file);
    if (actual >= 0 && img->fmt->allocated_size)
        actual = img->fmt->allocated_size(img, actual);
    if (actual >= 0)
        json_i64(w, "actual-size", actual);
    if (img->fmt->info_specific) {
        json_object_begin(w, "format-specific");
        ret = img->fmt->info_specific(img, w);
        if (ret < 0)
            return ret;
        json_object_end(w);
    }
    if (img->backing_name) {
        json_string(w, "full-backing-filename",
                    img->backing_full ? img->backing_full : img->backing_name);
        json_string(w, "backing-filename", img->backing_name);
    }
    json_bool(w, "dirty-flag", img->dirty);
    json_object_end(w);
    return 0;
}

IMG_API int img_info_json(img *img, unsigned flags, char **out)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    if (!out)
        return img_error(-EINVAL, "img_info_json: out is NULL");
    struct json_writer w;
    json_init(&w);
    bool chain = (flags & IMG_INFO_BACKING_CHAIN) != 0;
    if (chain)
        json_array_begin(&w, NULL);
    /* Shared with the data path: a resize or snapshot apply does not change it half-way. */
    img_io_enter(img);
    int ret = 0;
    for (struct img *layer = img; ret == 0 && layer; layer = chain ? layer->backing : NULL)
        ret = write_one_image(layer, &w);
    img_io_leave(img);
    if (ret < 0) {
        json_discard(&w);
        return ret;
    }
    if (chain)
        json_array_end(&w);
    char *text = json_finish(&w);
    if (!text)
        return img_error(-ENOMEM, "out of memory");
    *out = text;
    return 0;
}

IMG_API int img_snapshot_list(img *img, char **out)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    if (!out)
        return img_error(-EINVAL, "img_snapshot_list: out is NULL");
    struct json_writer w;
    json_init(&w);
    img_io_enter(img);
    int ret = write_snapshots(img, &w, true);
    img_io_leave(img);
    if (ret < 0) {
        json_discard(&w);
        return ret;
    }
    char *text = json_finish(&w);
    if (!text)
        return img_error(-ENOMEM, "out of memory");
    *out = text;
    return 0;
}
