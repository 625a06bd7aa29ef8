/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The write side: write, zero, discard, flush, resize, snapshots (img_create: create.c). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "progress.h"
#include "io/io.h"
#include "opts.h"
#include "util/checked.h"

/* The bytes a probe looks at: a write there could change what format the file seems to be. */
#define PROBED_HEAD 2048

static int check_writable(struct img *img)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    if (!img->writable)
        return img_error(-EROFS, "%s: image is opened read-only", img->filename);
    return 0;
}

static int check_range(struct img *img, uint64_t offset, uint64_t len, const char *what)
{
    uint64_t end;
    if (add_overflows_u64(offset, len, &end) || end > img->size)
        return img_error(-EINVAL,
                         "%s: range %" PRIu64 "+%" PRIu64 " is past the end of the image (%" PRIu64
                         " bytes)",
                         what, offset, len, img->size);
    return 0;
}

static int call_backend(struct img *img, int (*fn)(struct img *), const char *what)
{
    if (!fn)
        return img_error(-ENOTSUP, "%s: format %s does not support %s", img->filename,
                         img->fmt->name, what);
    return fn(img);
}

/*
 * A raw image whose format was guessed must not be given a first sector that makes it probe
 * as another format: a guest could otherwise plant a qcow2 header naming any host file.
 */
static int guard_probed_head(struct img *img, const void *buf, size_t len, uint64_t offset)
{
    if (!img->format_probed_raw || offset >= PROBED_HEAD)
        return 0;
    uint8_t head[PROBED_HEAD];
    uint64_t n = min_u64(PROBED_HEAD, img->size);
    int ret = img_read_guest(img, head, n, 0);
    if (ret < 0)
        return ret;
    memcpy(head + offset, buf, min_u64(len, n - offset));
    const struct img_format *seen = format_probe(head, n, img->filename);
    if (!seen || !format_has(seen, FORMAT_PROBE_FALLBACK) ||
        format_probe_unsupported(head, n, img->filename))
        return img_error(-EPERM,
                         "%s: refusing to write a header of another format into an image whose "
                         "format was guessed as raw (open it with format \"raw\")",
                         img->filename);
    return 0;
}

/*
 * An image that takes only compressed writes (img->needs_compressed_writes) is written whole
 * cluster by whole cluster, each compressed by the backend, as QEMU writes such images.
 */
static int64_t pwrite_compressed(struct img *img, const uint8_t *p, size_t len, uint64_t offset)
{
    uint64_t unit = img->cluster_size;
    if (!unit || !img->fmt->compress_unit || !img->fmt->write_compressed_data)
        return img_error(-ENOTSUP, "%s: format %s cannot write compressed data", img->filename,
                         img->fmt->name);
    if (offset % unit || (len % unit && offset + len != img->size))
        return img_error(-EINVAL,
                         "%s: this image takes only whole clusters of %" PRIu64
                         " bytes at cluster boundaries, written compressed",
                         img->filename, unit);
    uint8_t *out = malloc(unit);
    if (!out)
        return img_error(-ENOMEM, "out of memory");
    int ret = 0;
    for (size_t done = 0; ret == 0 && done < len; done += unit) {
        size_t n = len - done < unit ? len - done : (size_t)unit;
        size_t out_len = 0;
        ret = img->fmt->compress_unit(img, p + done, n, out, unit, &out_len);
        if (ret == 0)
            ret = img->fmt->write_compressed_data(img, offset + done, out_len ? out : p + done,
                                                  out_len ? out_len : n, out_len == 0);
    }
    free(out);
    return ret < 0 ? ret : (int64_t)len;
}

static int64_t pwrite_locked(struct img *img, const void *buf, size_t len, uint64_t offset)
{
    int ret = check_range(img, offset, len, "img_pwrite");
    if (ret == 0 && !buf && len)
        ret = img_error(-EINVAL, "img_pwrite: buffer is NULL");
    if (ret == 0 && !img->fmt->alloc)
        ret = img_error(-ENOTSUP, "%s: format %s does not support writing", img->filename,
                        img->fmt->name);
    if (ret == 0)
        ret = guard_probed_head(img, buf, len, offset);
    if (ret < 0)
        return ret;
    if (img->needs_compressed_writes)
        return pwrite_compressed(img, buf, len, offset);
    const uint8_t *p = buf;
    uint64_t left = len;
    while (left) {
        struct img_extent ext = {0};
        struct img_alloc *token = NULL;
        ret = img->fmt->alloc(img, offset, left, &ext, &token);
        if (ret < 0)
            return ret;
        if (ext.kind != EXTENT_DATA || ext.length == 0 || ext.length > left) {
            if (token && img->fmt->alloc_commit)
                img->fmt->alloc_commit(img, token, -EIO);
            return img_error(-EIO, "%s: backend returned an invalid allocation at %" PRIu64,
                             img->filename, offset);
        }
        ret = io_pwrite(ext.file, p, ext.length, ext.host_offset);
        if (ret < 0)
            img_error(ret, "%s: write of %" PRIu64 " bytes at host offset 0x%" PRIx64 " failed: %s",
                      img->filename, ext.length, ext.host_offset, img_strerror(ret));
        if (token && img->fmt->alloc_commit) {
            int commit = img->fmt->alloc_commit(img, token, ret);
            if (ret == 0)
                ret = commit;
        }
        if (ret < 0)
            return ret;
        p += ext.length;
        offset += ext.length;
        left -= ext.length;
    }
    return (int64_t)len;
}

IMG_API int64_t img_pwrite(img *img, const void *buf, size_t len, uint64_t offset)
{
    int ret = check_writable(img);
    if (ret < 0)
        return ret;
    img_io_enter(img);
    int64_t n = pwrite_locked(img, buf, len, offset);
    img_io_leave(img);
    return n;
}

static int zero_locked(struct img *img, uint64_t offset, uint64_t len, unsigned flags)
{
    int ret = check_range(img, offset, len, "img_zero");
    if (ret < 0 || len == 0)
        return ret;
    if (img->fmt->zero)
        return img->fmt->zero(img, offset, len, flags);
    return img_error(-ENOTSUP, "%s: format %s cannot write zeroes", img->filename, img->fmt->name);
}

IMG_API int img_zero(img *img, uint64_t offset, uint64_t len, unsigned flags)
{
    int ret = check_writable(img);
    if (ret < 0)
        return ret;
    img_io_enter(img);
    ret = zero_locked(img, offset, len, flags);
    img_io_leave(img);
    return ret;
}

static int discard_locked(struct img *img, uint64_t offset, uint64_t len)
{
    int ret = check_range(img, offset, len, "img_discard");
    if (ret < 0 || len == 0)
        return ret;
    if (!img->fmt->discard)
        return 0; /* discard is a hint; formats without it keep the data */
    return img->fmt->discard(img, offset, len);
}

IMG_API int img_discard(img *img, uint64_t offset, uint64_t len)
{
    int ret = check_writable(img);
    if (ret < 0)
        return ret;
    img_io_enter(img);
    ret = discard_locked(img, offset, len);
    img_io_leave(img);
    return ret;
}

IMG_API int img_flush(img *img)
{
    int ret = check_writable(img);
    if (ret < 0)
        return ret;
    img_io_enter(img);
    ret = call_backend(img, img->fmt->flush, "flush");
    img_io_leave(img);
    return ret;
}

static int resize_locked(struct img *img, uint64_t new_size, unsigned flags, const img_opts *opts)
{
    if (!img->fmt->resize)
        return img_error(-ENOTSUP, "%s: format %s does not support resizing", img->filename,
                         img->fmt->name);
    if (new_size < img->size && !(flags & IMG_RESIZE_SHRINK))
        return img_error(-EINVAL,
                         "%s: shrinking from %" PRIu64 " to %" PRIu64
                         " bytes loses data; it needs the flag IMG_RESIZE_SHRINK",
                         img->filename, img->size, new_size);
    if (new_size > (uint64_t)INT64_MAX)
        return img_error(-EFBIG, "%s: size %" PRIu64 " is too large", img->filename, new_size);
    return img->fmt->resize(img, new_size, flags, opts);
}

IMG_API int img_resize(img *img, uint64_t new_size, unsigned flags, const img_opts *opts)
{
    int ret = check_writable(img);
    if (ret < 0)
        return ret;
    /* Reads and writes check their range against the size: none may run while it changes. */
    img_drain_enter(img);
    struct img_op op;
    img_op_begin(&op, img, NULL, NULL);
    ret = resize_locked(img, new_size, flags, opts);
    img_op_end(&op);
    img_io_leave(img);
    return ret;
}

static int snapshot_call(img *img, const char *name, int (*fn)(struct img *img, const char *name),
                         const char *what)
{
    int ret = check_writable(img);
    if (ret < 0)
        return ret;
    if (!name || !*name)
        return img_error(-EINVAL, "snapshot %s: a snapshot name is required", what);
    if (!fn)
        return img_error(-ENOTSUP, "%s: format %s does not support internal snapshots",
                         img->filename, img->fmt->name);
    /* Apply swaps the active tables and the size under the data path: drain it (all three). */
    img_drain_enter(img);
    struct img_op op;
    img_op_begin(&op, img, NULL, NULL);
    ret = fn(img, name);
    img_op_end(&op);
    img_io_leave(img);
    return ret;
}

IMG_API int img_snapshot_create(img *img, const char *name)
{
    return snapshot_call(img, name, img ? img->fmt->snapshot_create : NULL, "create");
}

IMG_API int img_snapshot_apply(img *img, const char *name_or_id)
{
    return snapshot_call(img, name_or_id, img ? img->fmt->snapshot_apply : NULL, "apply");
}

IMG_API int img_snapshot_delete(img *img, const char *name_or_id)
{
    return snapshot_call(img, name_or_id, img ? img->fmt->snapshot_delete : NULL, "delete");
}

int64_t img_write_guest(struct img *img, const void *buf, size_t len, uint64_t offset)
{
    return pwrite_locked(img, buf, len, offset);
}

int img_zero_guest(struct img *img, uint64_t offset, uint64_t len)
{
    return zero_locked(img, offset, len, 0);
}
