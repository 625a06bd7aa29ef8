/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Persistent dirty bitmaps: the public calls, dispatched to the backend's bitmap entries.
 * Formats that keep none answer as QEMU does for them: adding one is "not supported", every
 * other operation finds no such bitmap.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "imgutil.h"

void img_bitmap_descs_free(struct img_bitmap_desc *descs, size_t count)
{
    for (size_t i = 0; descs && i < count; i++)
        free(descs[i].name);
    free(descs);
}

static int check_handle(struct img *img, const char *name, const char *what)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    if (!name)
        return img_error(-EINVAL, "%s: bitmap name is NULL", what);
    return 0;
}

static int not_found(const char *name)
{
    return img_error(-ENOENT, "Dirty bitmap '%s' not found", name);
}

/* Runs one change on a drained, writable handle. */
static int change(struct img *img, const struct img_bitmap_change *c, const char *what)
{
    int ret = check_handle(img, c->name, what);
    if (ret < 0)
        return ret;
    if (!img->writable)
        return img_error(-EROFS, "%s: image is opened read-only", img->filename);
    if (!img->fmt->bitmap_change) {
        if (c->op == IMG_BITMAP_OP_ADD)
            return img_error(-ENOTSUP,
                             "Can't store persistent bitmaps to %s: Operation not supported",
                             img->filename);
        return not_found(c->name);
    }
    img_drain_enter(img);
    ret = img->fmt->bitmap_change(img, c);
    img_io_leave(img);
    return ret;
}

IMG_API int img_bitmap_add(img *img, const char *name, uint64_t granularity, unsigned flags)
{
    struct img_bitmap_change c = {.op = IMG_BITMAP_OP_ADD,
                                  .name = name,
                                  .granularity = granularity,
                                  .disabled = (flags & IMG_BITMAP_ADD_DISABLED) != 0};
    if (flags & ~IMG_BITMAP_ADD_DISABLED)
        return img_error(-EINVAL, "img_bitmap_add: unknown flags 0x%x", flags);
    return change(img, &c, "img_bitmap_add");
}

IMG_API int img_bitmap_remove(img *img, const char *name)
{
    struct img_bitmap_change c = {.op = IMG_BITMAP_OP_REMOVE, .name = name};
    return change(img, &c, "img_bitmap_remove");
}

IMG_API int img_bitmap_clear(img *img, const char *name)
{
    struct img_bitmap_change c = {.op = IMG_BITMAP_OP_CLEAR, .name = name};
    return change(img, &c, "img_bitmap_clear");
}

IMG_API int img_bitmap_enable(img *img, const char *name)
{
    struct img_bitmap_change c = {.op = IMG_BITMAP_OP_ENABLE, .name = name};
    return change(img, &c, "img_bitmap_enable");
}

IMG_API int img_bitmap_disable(img *img, const char *name)
{
    struct img_bitmap_change c = {.op = IMG_BITMAP_OP_DISABLE, .name = name};
    return change(img, &c, "img_bitmap_disable");
}

/* The bits of bitmap `name` of `img` (shared with the data path). */
static int read_bits(struct img *img, const char *name, uint8_t **bits, uint64_t *size,
                     unsigned *granularity_bits)
{
    if (!img->fmt->bitmap_read)
        return not_found(name);
    img_io_enter(img);
    int ret = img->fmt->bitmap_read(img, name, bits, size, granularity_bits);
    img_io_leave(img);
    return ret;
}

static int list(struct img *img, struct img_bitmap_desc **descs, size_t *count)
{
    *descs = NULL;
    *count = 0;
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    if (!img->fmt->bitmap_list)
        return 0;
    img_io_enter(img);
    int ret = img->fmt->bitmap_list(img, descs, count);
    img_io_leave(img);
    return ret;
}

IMG_API int img_bitmap_merge(img *dst, const char *name, img *src, const char *src_name)
{
    int ret = check_handle(dst, name, "img_bitmap_merge");
    if (ret == 0 && src)
        ret = check_handle(src, src_name, "img_bitmap_merge");
    if (ret == 0 && !src_name)
        ret = img_error(-EINVAL, "img_bitmap_merge: source bitmap name is NULL");
    if (ret < 0)
        return ret;
    if (!dst->writable)
        return img_error(-EROFS, "%s: image is opened read-only", dst->filename);
    /* QEMU looks the target up first: a missing target is reported before the source. */
    struct img_bitmap_change c = {.op = IMG_BITMAP_OP_MERGE, .name = name};
    if (!dst->fmt->bitmap_change)
        return not_found(name);
    struct img_bitmap_desc *descs = NULL;
    size_t count = 0;
    ret = list(dst, &descs, &count);
    if (ret < 0)
        return ret;
    bool found = false;
    for (size_t i = 0; i < count; i++)
        found |= strcmp(descs[i].name, name) == 0;
    img_bitmap_descs_free(descs, count);
    if (!found)
        return not_found(name);
    /* The source is read first, holding only its own lock, so that two handles never wait
     * on each other. */
    uint8_t *bits = NULL;
    ret = read_bits(src ? src : dst, src_name, &bits, &c.src_size, &c.src_granularity_bits);
    if (ret < 0)
        return ret;
    c.src_bits = bits;
    ret = change(dst, &c, "img_bitmap_merge");
    free(bits);
    return ret;
}

IMG_API int img_bitmap_count(img *img)
{
    struct img_bitmap_desc *descs;
    size_t count;
    int ret = list(img, &descs, &count);
    img_bitmap_descs_free(descs, count);
    return ret < 0 ? ret : (int)count;
}

IMG_API int img_bitmap_get(img *img, int i, char **name, uint64_t *granularity, unsigned *flags)
{
    struct img_bitmap_desc *descs;
    size_t count;
    int ret = list(img, &descs, &count);
    if (ret == 0 && (i < 0 || (size_t)i >= count))
        ret = img_error(-ENOENT, "img_bitmap_get: no bitmap %d (the image has %zu)", i, count);
    if (ret == 0) {
        if (granularity)
            *granularity = descs[i].granularity;
        if (flags)
            *flags = descs[i].flags;
        if (name) {
            *name = descs[i].name;
            descs[i].name = NULL;
        }
    }
    img_bitmap_descs_free(descs, count);
    return ret;
}
