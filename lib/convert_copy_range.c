/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * -C (copy offloading), as qemu-img convert -C does it: what the source stores as data is
 * copied with copy_file_range(2) from the source's file straight into the place the target
 * allocates for it, so that the kernel moves the bytes (sharing the blocks on a file system
 * with reflinks: XFS, Btrfs; copying them in the kernel elsewhere). Data is copied whole, with
 * no search for zero blocks in it (qemu-img refuses -S with -C). Ranges the source reports as
 * zeros are handled as in any convert. Where the kernel cannot (another file system, a
 * compressed cluster of the source), the bytes are read and written, as qemu-img falls back
 * to reading and writing.
 *
 * One chunk at a time per worker, synchronously: each allocation is linked once its copy has
 * landed (data first, then the metadata that points at it).
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "convert_job.h"
#include "error.h"
#include "formats/format.h"
#include "io/io.h"
#include "util/checked.h"

/* Copies `len` bytes in the kernel; -EXDEV/-ENOSYS/-EOPNOTSUPP/-EINVAL: it cannot. */
static int kernel_copy(struct io_file *from, uint64_t from_off, struct io_file *to, uint64_t to_off,
                       uint64_t len)
{
    int in = io_file_fd(from), out = io_file_fd(to);
    loff_t src = (loff_t)from_off, dst = (loff_t)to_off;
    while (len) {
        ssize_t n = copy_file_range(in, &src, out, &dst, (size_t)min_u64(len, 1u << 30), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EINVAL; /* past the source's end: read it instead */
        len -= (uint64_t)n;
    }
    return 0;
}

/*
 * Writes guest bytes [offset, offset + len) of the target (source offsets): the source's DATA
 * extent `src` copied in the kernel (read into `buf` where the kernel cannot), or, with no
 * `src`, the bytes in `buf`.
 */
static int write_target(const struct convert_job *job, uint64_t offset, uint64_t len,
                        const struct img_extent *src, uint8_t *buf)
{
    struct img *dst = job->img_dst;
    if (!dst->fmt->alloc)
        return img_error(-ENOTSUP, "%s: format %s does not support writing", dst->filename,
                         dst->fmt->name);
    for (uint64_t done = 0; done < len;) {
        struct img_extent ext = {0};
        struct img_alloc *token = NULL;
        int ret = dst->fmt->alloc(dst, job->dst_base + offset + done, len - done, &ext, &token);
        if (ret < 0)
            return ret;
        if (ext.kind != EXTENT_DATA || ext.length == 0 || ext.length > len - done) {
            if (token && dst->fmt->alloc_commit)
                dst->fmt->alloc_commit(dst, token, -EIO);
            return img_error(-EIO, "%s: backend returned an invalid allocation at %" PRIu64,
                             dst->filename, offset + done);
        }
        const uint8_t *data = buf + done;
        ret = src ? kernel_copy(src->file, src->host_offset + done, ext.file, ext.host_offset,
                                ext.length)
                  : 0;
        if (src && (ret == -EXDEV || ret == -ENOSYS || ret == -EOPNOTSUPP || ret == -EINVAL)) {
            data = buf;
            ret = io_pread(src->file, buf, (size_t)ext.length, src->host_offset + done);
            if (ret == 0)
                ret = io_pwrite(ext.file, data, (size_t)ext.length, ext.host_offset);
        } else if (src && ret < 0) {
            ret = img_error(
                ret, "convert: copy of %" PRIu64 " bytes at host offset 0x%" PRIx64 " failed: %s",
                ext.length, src->host_offset + done, img_strerror(ret));
        } else if (!src) {
            ret = io_pwrite(ext.file, data, (size_t)ext.length, ext.host_offset);
        }
        if (token && dst->fmt->alloc_commit) {
            int linked = dst->fmt->alloc_commit(dst, token, ret);
            if (ret == 0)
                ret = linked;
        }
        if (ret < 0)
            return ret;
        done += ext.length;
    }
    return 0;
}

int convert_chunk_copy_range(const struct convert_job *job, struct convert_chunk_ctx *ctx,
                             uint64_t offset, uint64_t length)
{
    struct img *dst = job->img_dst;
    for (uint64_t pos = 0; pos < length;) {
        struct img_extent ext;
        int depth;
        int ret = convert_map_source(job, offset + pos, length - pos, &ext, &depth);
        if (ret == 0)
            ret = convert_limit_account(job->limit, ext.length);
        if (ret < 0)
            return ret;
        if (job->top_only && depth > 0) {
            /* Left to the target's backing file (-B). */
        } else if (ext.kind == EXTENT_ZERO || ext.kind == EXTENT_UNALLOCATED) {
            bool past_backing = job->top_only && offset + pos >= job->backing_end;
            if (job->zeros_explicit && !past_backing)
                ret = img_zero(dst, job->dst_base + offset + pos, ext.length, IMG_ZERO_MAY_UNMAP);
        } else if (ext.kind == EXTENT_DATA) {
            ret = write_target(job, offset + pos, ext.length, &ext, ctx->buf);
        } else {
            /* Compressed: decompressed here, then written. */
            ret = img_read_extent(&ext, ctx->buf, offset + pos);
            if (ret == 0)
                ret = write_target(job, offset + pos, ext.length, NULL, ctx->buf);
        }
        if (ret < 0)
            return ret;
        pos += ext.length;
    }
    return 0;
}
