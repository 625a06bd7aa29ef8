/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The allocation map: block status runs merged as `qemu-img map` merges them, delivered one
 * row at a time so that memory stays bounded however many rows an image has.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "image.h"
#include "util/checked.h"
#include "util/json.h"

struct map_row {
    uint64_t start, length, offset;
    int depth;
    unsigned status;
};

/* qemu-img joins runs of the same depth and flags whose host locations (if any) continue. */
static bool rows_merge(const struct map_row *a, const struct map_row *b)
{
    if (a->depth != b->depth || a->status != b->status)
        return false;
    if (!(a->status & IMG_BLOCK_OFFSET_VALID))
        return true;
    return a->offset + a->length == b->offset;
}

static int deliver(const struct map_row *r, img_map_fn fn, void *user)
{
    return fn(user, r->start, r->length, r->depth, r->status,
              (r->status & IMG_BLOCK_OFFSET_VALID) ? r->offset : 0);
}

IMG_API int img_map(img *img, uint64_t offset, uint64_t length, img_map_fn fn, void *user)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    if (!fn)
        return img_error(-EINVAL, "img_map: callback is NULL");
    /*
     * Each row is one shared call; the lock is not held across the callback, which may then
     * use the handle. A resize between two rows ends the walk at the size read here, or fails
     * it cleanly (the offset is no longer inside the image).
     */
    int64_t size = img_get_size(img);
    if (size < 0)
        return (int)size;
    if (offset >= (uint64_t)size)
        return 0;
    uint64_t end = offset + min_u64(length, (uint64_t)size - offset);
    struct map_row row = {0};
    bool have_row = false;
    while (offset < end) {
        struct map_row next = {.start = offset};
        int ret = img_block_status(img, offset, end - offset, &next.length, &next.status,
                                   &next.depth, &next.offset);
        if (ret < 0)
            return ret;
        if (have_row && rows_merge(&row, &next)) {
            row.length += next.length;
        } else {
            if (have_row) {
                ret = deliver(&row, fn, user);
                if (ret)
                    return ret;
            }
            row = next;
            have_row = true;
        }
        offset += next.length;
    }
    return have_row ? deliver(&row, fn, user) : 0;
}

/* One row in the layout of `qemu-img map --output=json`. */
static int write_json_row(void *user, uint64_t start, uint64_t length, int depth, unsigned status,
                          uint64_t offset)
{
    struct json_writer *w = user;
    json_object_begin(w, NULL);
    json_u64(w, "start", start);
    json_u64(w, "length", length);
    json_i64(w, "depth", depth);
    json_bool(w, "present", status & IMG_BLOCK_ALLOCATED);
    json_bool(w, "zero", status & IMG_BLOCK_ZERO);
    json_bool(w, "data", status & IMG_BLOCK_DATA);
    if (status & IMG_BLOCK_OFFSET_VALID)
        json_u64(w, "offset", offset);
    json_object_end(w);
    /* Stop at the first allocation failure rather than walk the rest of the image. */
    return w->failed ? -ENOMEM : 0;
}

IMG_API int img_map_json(img *img, char **out)
{
    if (!out)
        return img_error(-EINVAL, "img_map_json: out is NULL");
    *out = NULL;
    struct json_writer w;
    json_init(&w);
    w.compact = true;
    json_array_begin(&w, NULL);
    int ret = img_map(img, 0, UINT64_MAX, write_json_row, &w);
    if (ret < 0) {
        bool failed = w.failed;
        json_discard(&w);
        return failed ? img_error(-ENOMEM, "out of memory") : ret;
    }
    json_array_end(&w);
    char *text = json_finish(&w);
    if (!text)
        return img_error(-ENOMEM, "out of memory");
    /* The writer leaves no newline after the closing bracket; qemu-img prints one. */
    size_t len = strlen(text);
    char *p = realloc(text, len + 2);
    if (!p) {
        free(text);
        return img_error(-ENOMEM, "out of memory");
    }
    p[len] = '\n';
    p[len + 1] = '\0';
    *out = p;
    return 0;
}
