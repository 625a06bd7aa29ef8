/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_commit(): qemu-img commit. QEMU 7.2 runs it as an active commit (a mirror job from the
 * top into the base): the base grows to the top's size when smaller, every range allocated
 * above the base (in the top or an image between) is copied into it, zeros written as zeros,
 * and then, unless -d (which -b implies), the top is emptied with bdrv_make_empty. Nothing
 * in the chain is relinked on disk.
 *
 * Crash safety: the top is not touched until the base holds everything and is flushed, so a
 * crash during the copy leaves the top's view whole, and one during the emptying leaves the
 * top reading, where already emptied, the same bytes through to the base.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "commit_reopen.h"
#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "progress.h"
#include "util/checked.h"

/* Bytes copied per step: bounds the buffer and sets how often progress and cancel are seen. */
#define COMMIT_CHUNK (1u << 20)

/* `a` and `b` name the same file once both are resolved (QEMU compares real paths). */
static bool same_file(const char *a, const char *b)
{
    char *ra = realpath(a, NULL), *rb = realpath(b, NULL);
    bool same = ra && rb && strcmp(ra, rb) == 0;
    free(ra);
    free(rb);
    return same;
}

/*
 * The image of top's chain that `name` names, as bdrv_find_backing_image() finds it: `name`
 * resolved from the folder of each image in turn, compared with that image's backing file.
 */
static struct img *find_base(struct img *top, const char *name)
{
    for (struct img *layer = top; layer->backing; layer = layer->backing) {
        char *candidate = img_resolve_path(layer->filename, name);
        bool found = candidate && same_file(candidate, layer->backing_full);
        free(candidate);
        if (found)
            return layer->backing;
    }
    return NULL;
}

static int pick_base(struct img *top, const char *name, struct img **base)
{
    if (!top->backing) {
        if (top->backing_name)
            return img_error(-EINVAL,
                             "%s: the backing chain was not opened (IMG_OPEN_NO_BACKING): "
                             "nothing to commit into",
                             top->filename);
        return img_error(-EINVAL, "%s: Image does not have a backing file", top->filename);
    }
    *base = name ? find_base(top, name) : top->backing;
    if (!*base)
        return img_error(-ENOENT, "Did not find '%s' in the backing chain of '%s'", name,
                         top->filename);
    if (!(*base)->fmt->alloc)
        return img_error(-ENOTSUP, "%s: format %s does not support writing", (*base)->filename,
                         (*base)->fmt->name);
    return 0;
}

/*
 * The unit the copy works in: QEMU's mirror tracks what to copy in chunks of the base's
 * cluster size, between 4 KiB and 64 KiB, and 64 KiB for bases without clusters
 * (bdrv_get_default_bitmap_granularity). A chunk is copied whole, so the base's allocation
 * comes out as QEMU's does.
 */
static uint64_t copy_granularity(const struct img *base)
{
    uint64_t cluster = base->cluster_size ? base->cluster_size : 65536;
    return cluster < 4096 ? 4096 : cluster > 65536 ? 65536 : cluster;
}

/*
 * Writes top's view of [offset, end) (whole chunks but at the image's end) into the base, as
 * mirror_iteration() does: a run that reads as zeros and spans whole chunks is written as
 * zeros (unmapping), anything else is copied, at least a chunk at a time.
 */
static int copy_range(struct img *top, struct img *base, uint64_t offset, uint64_t end,
                      uint64_t chunk, uint8_t *buf)
{
    while (offset < end) {
        struct img_extent ext;
        int depth;
        int ret = img_map_chain(top, offset, min_u64(COMMIT_CHUNK, end - offset), &ext, &depth);
        if (ret < 0)
            return ret;
        uint64_t n = ext.length - ext.length % chunk;
        bool zeros = ext.kind == EXTENT_ZERO || ext.kind == EXTENT_UNALLOCATED;
        if (zeros && n >= chunk) {
            ret = img_zero(base, offset, n, IMG_ZERO_MAY_UNMAP);
        } else {
            n = min_u64(n < chunk ? chunk : n, end - offset);
            ret = img_read_guest(top, buf, n, offset);
            if (ret == 0) {
                int64_t written = img_pwrite(base, buf, n, offset);
                ret = written < 0 ? (int)written : 0;
            }
        }
        if (ret == 0)
            ret = img_progress(offset + n, top->size);
        if (ret < 0)
            return ret;
        offset += n;
    }
    return 0;
}

/*
 * Copies into the base every chunk of top's view that an image above the base answers in
 * part (bdrv_is_allocated_above: the top's and the images' between, zeros included).
 */
static int copy_above_base(struct img *top, struct img *base)
{
    uint8_t *buf = malloc(COMMIT_CHUNK);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    int base_depth = base->depth - top->depth;
    uint64_t chunk = copy_granularity(base);
    int ret = img_progress(0, top->size);
    for (uint64_t offset = 0; ret == 0 && offset < top->size;) {
        struct img_extent ext;
        int depth;
        ret = img_map_chain(top, offset, min_u64(COMMIT_CHUNK, top->size - offset), &ext, &depth);
        if (ret < 0)
            break;
        if (depth >= base_depth) {
            offset += ext.length;
            continue;
        }
        uint64_t start = offset - offset % chunk;
        uint64_t end = min_u64(top->size, align_up_u64(offset + ext.length, chunk));
        ret = copy_range(top, base, start, end, chunk, buf);
        offset = end;
    }
    free(buf);
    return ret;
}

/* The base holds the top's view, durably; then the top is emptied (where that is asked). */
static int commit_into(struct img *top, struct img *base, bool keep_top)
{
    int ret = 0;
    if (base->size < top->size) {
        /* QEMU's mirror grows the base to the top's size before it copies. */
        ret = img_resize(base, top->size, 0, NULL);
        if (ret < 0)
            img_error_prefix("Top image %s is larger than base image %s, and resize of base "
                             "image failed",
                             top->filename, base->filename);
    }
    if (ret == 0)
        ret = copy_above_base(top, base);
    if (ret == 0)
        ret = img_flush(base);
    if (ret < 0 || keep_top || !top->fmt->make_empty)
        return ret;
    ret = top->fmt->make_empty(top);
    if (ret == 0 && top->fmt->flush)
        ret = top->fmt->flush(top);
    return ret;
}

IMG_API int img_commit(img *top, const char *base_name, unsigned flags)
{
    if (!top || top->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    if (top->flags & IMG_OPEN_FORCE_SHARE)
        return img_error(-EINVAL,
                         "%s: opened with IMG_OPEN_FORCE_SHARE: a commit writes the base and "
                         "needs its locks",
                         top->filename);
    if (flags & ~IMG_COMMIT_KEEP_TOP)
        return img_error(-EINVAL, "img_commit: unknown flags 0x%x", flags & ~IMG_COMMIT_KEEP_TOP);
    /*
     * Exclusive, without the drain lock's error context: each message names the image it is
     * about, the base more often than the top.
     */
    pthread_rwlock_wrlock(&top->drain);
    struct img *base = NULL;
    int ret = pick_base(top, base_name, &base);
    /* Emptying the top above images left as they are would let their older data show. */
    bool keep_top = (flags & IMG_COMMIT_KEEP_TOP) || (ret == 0 && base != top->backing);
    if (ret == 0 && !keep_top && !top->writable)
        ret = img_error(-EROFS,
                        "%s: image is opened read-only: it cannot be emptied after the "
                        "commit (keep it with IMG_COMMIT_KEEP_TOP)",
                        top->filename);
    if (ret == 0)
        ret = commit_reopen_layer(base, true);
    if (ret == 0) {
        struct img_op op;
        img_op_begin(&op, top, NULL, NULL);
        ret = commit_into(top, base, keep_top);
        if (ret == 0)
            img_progress_final(top->size);
        img_op_end(&op);
        /* Read-only again, as it was opened; a failure here keeps the commit's own. */
        char *why = ret < 0 ? strdup(img_last_error()) : NULL;
        int back = commit_reopen_layer(base, false);
        if (ret < 0)
            img_error(ret, "%s", why ? why : "out of memory");
        else
            ret = back;
        free(why);
    }
    pthread_rwlock_unlock(&top->drain);
    return ret;
}
