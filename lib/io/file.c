/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Host files and the synchronous calls on them. Every call is complete on return: transfers
 * are retried on EINTR and continued after short counts, and failures come back as a negative
 * errno with a message naming the file, the operation and the range.
 */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine.h"
#include "error.h"
#include "util/checked.h"

/* The kernel moves at most about 2 GiB per read/write call; asking for less keeps counts sane. */
#define IO_MAX_TRANSFER (1u << 30)

/* Chunk used when zeroes have to be written as data. */
#define IO_ZERO_CHUNK (256u * 1024)

struct io_file {
    int fd;
    bool is_block; /* block devices need FALLOC_FL_KEEP_SIZE and cannot grow */
    bool no_flush; /* flushes succeed without syncing (read and set atomically) */
    char *name;    /* for messages; NULL when wrapped from a bare descriptor */
};

/* Never written: a source of zeroes for the write-zeroes fallback. */
static char zero_chunk[IO_ZERO_CHUNK];

/* strerror, but thread-safe with both the GNU and the POSIX strerror_r. */
static const char *errno_text(int err, char *buf, size_t size)
{
#if defined(__GLIBC__)
    return strerror_r(err, buf, size);
#else
    if (strerror_r(err, buf, size) != 0)
        snprintf(buf, size, "error %d", err);
    return buf;
#endif
}

static const char *file_label(const struct io_file *f, char *buf, size_t size)
{
    if (f->name)
        return f->name;
    snprintf(buf, size, "fd %d", f->fd);
    return buf;
}

/* Records "<file>: <what>: <reason>" for the negative errno `err` and returns it. */
__attribute__((format(printf, 3, 4))) static int file_error(const struct io_file *f, int err,
                                                            const char *fmt, ...)
{
    char label[32];
    char what[160];
    char reason[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return img_error(err, "%s: %s: %s", file_label(f, label, sizeof(label)), what,
                     errno_text(-err, reason, sizeof(reason)));
}

/* For operations on a byte range: "<file>: read of N bytes at offset O failed: <reason>". */
static int range_error(const struct io_file *f, int err, const char *op, uint64_t offset,
                       uint64_t len)
{
    return file_error(f, err, "%s of %" PRIu64 " bytes at offset %" PRIu64 " failed", op, len,
                      offset);
}

/* The range must be addressable as off_t: offset + len at most INT64_MAX. */
static int check_range(const struct io_file *f, const char *what, uint64_t offset, uint64_t len)
{
    uint64_t end;
    if (!f)
        return img_error(-EBADF, "%s on a closed file", what);
    if (add_overflows_u64(offset, len, &end) || end > (uint64_t)INT64_MAX) {
        char label[32];
        return img_error(-EINVAL,
                         "%s: %s of %" PRIu64 " bytes at offset %" PRIu64
                         " is beyond the largest file offset",
                         file_label(f, label, sizeof(label)), what, len, offset);
    }
    return 0;
}

static int wrap_fd(struct io_file **out, int fd, const char *path)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISDIR(st.st_mode))
        return -EISDIR;

    struct io_file *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    if (path) {
        f->name = strdup(path);
        if (!f->name) {
            free(f);
            return -ENOMEM;
        }
    }
    f->fd = fd;
    f->is_block = S_ISBLK(st.st_mode);
    *out = f;
    return 0;
}

int io_file_open(struct io_file **out, const char *path, int oflags, mode_t mode)
{
    int fd;
    do {
        fd = open(path, oflags | O_CLOEXEC, mode);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        int err = -errno;
        char reason[128];
        return img_error(err, "%s: cannot open: %s", path,
                         errno_text(-err, reason, sizeof(reason)));
    }

    int ret = wrap_fd(out, fd, path);
    if (ret < 0) {
        char reason[128];
        close(fd);
        return img_error(ret, "%s: cannot open: %s", path,
                         errno_text(-ret, reason, sizeof(reason)));
    }
    return 0;
}

/* On failure the descriptor stays with the caller. */
int io_file_from_fd(struct io_file **out, int fd)
{
    if (fd < 0)
        return img_error(-EBADF, "fd %d: not an open descriptor", fd);
    int ret = wrap_fd(out, fd, NULL);
    if (ret < 0) {
        char reason[128];
        return img_error(ret, "fd %d: cannot use: %s", fd,
                         errno_text(-ret, reason, sizeof(reason)));
    }
    return 0;
}

void io_file_close(struct io_file *f)
{
    if (!f)
        return;
    /* Not retried on EINTR: Linux has released the descriptor either way. */
    close(f->fd);
    free(f->name);
    free(f);
}

int io_file_fd(const struct io_file *f)
{
    return f ? f->fd : -EBADF;
}

bool io_file_is_block(const struct io_file *f)
{
    return f->is_block;
}

int64_t io_file_size(struct io_file *f)
{
    if (!f)
        return -EBADF;
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return file_error(f, -errno, "stat failed");
    if (S_ISBLK(st.st_mode)) {
        /* st_size is 0 for block devices; the end offset is the device size. */
        off_t end = lseek(f->fd, 0, SEEK_END);
        if (end < 0)
            return file_error(f, -errno, "size query failed");
        return end;
    }
    return st.st_size;
}

int64_t io_file_allocated(struct io_file *f)
{
    if (!f)
        return -EBADF;
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return file_error(f, -errno, "stat failed");
    return (int64_t)st.st_blocks * 512;
}

int io_pread(struct io_file *f, void *buf, size_t len, uint64_t offset)
{
    int ret = check_range(f, "read", offset, len);
    if (ret < 0)
        return ret;

    char *p = buf;
    size_t done = 0;
    while (done < len) {
        size_t chunk = min_u64(len - done, IO_MAX_TRANSFER);
        ssize_t n = pread(f->fd, p + done, chunk, (off_t)(offset + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return range_error(f, -errno, "read", offset, len);
        }
        if (n == 0) {
            /* End of file: the rest reads as zeros, like an unallocated region. */
            memset(p + done, 0, len - done);
            break;
        }
        done += (size_t)n;
    }
    return 0;
}

int io_pwrite(struct io_file *f, const void *buf, size_t len, uint64_t offset)
{
    int ret = check_range(f, "write", offset, len);
    if (ret < 0)
        return ret;

    const char *p = buf;
    size_t done = 0;
    while (done < len) {
        size_t chunk = min_u64(len - done, IO_MAX_TRANSFER);
        ssize_t n = pwrite(f->fd, p + done, chunk, (off_t)(offset + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return range_error(f, -errno, "write", offset, len);
        }
        /* A write that makes no progress would otherwise spin forever. */
        if (n == 0)
            return range_error(f, -EIO, "write", offset, len);
        done += (size_t)n;
    }
    return 0;
}

void io_file_set_flush(struct io_file *f, bool enabled)
{
    if (f)
        __atomic_store_n(&f->no_flush, !enabled, __ATOMIC_RELEASE);
}

bool io_file_flush_enabled(const struct io_file *f)
{
    return !__atomic_load_n(&f->no_flush, __ATOMIC_ACQUIRE);
}

int io_fsync(struct io_file *f)
{
    if (!f)
        return img_error(-EBADF, "flush on a closed file");
    if (!io_file_flush_enabled(f))
        return 0;
    /* fdatasync still writes the metadata needed to read the data back, such as the size. */
    int ret;
    do {
        ret = fdatasync(f->fd);
    } while (ret < 0 && errno == EINTR);
    if (ret < 0)
        return file_error(f, -errno, "flush failed");
    return 0;
}

int io_truncate(struct io_file *f, uint64_t size)
{
    int ret = check_range(f, "truncate", size, 0);
    if (ret < 0)
        return ret;
    do {
        ret = ftruncate(f->fd, (off_t)size);
    } while (ret < 0 && errno == EINTR);
    if (ret < 0)
        return file_error(f, -errno, "resize to %" PRIu64 " bytes failed", size);
    return 0;
}

/* fallocate(2) with EINTR retried; EOPNOTSUPP and ENOSYS both become -ENOTSUP. */
static int do_fallocate(struct io_file *f, int mode, uint64_t offset, uint64_t len)
{
    int ret;
    do {
        ret = fallocate(f->fd, mode, (off_t)offset, (off_t)len);
    } while (ret < 0 && errno == EINTR);
    if (ret == 0)
        return 0;
    if (errno == EOPNOTSUPP || errno == ENOSYS)
        return -ENOTSUP;
    return -errno;
}

int io_punch_hole(struct io_file *f, uint64_t offset, uint64_t len)
{
    int ret = check_range(f, "hole punch", offset, len);
    if (ret < 0 || len == 0)
        return ret;
    ret = do_fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len);
    return ret < 0 ? range_error(f, ret, "hole punch", offset, len) : 0;
}

int io_preallocate(struct io_file *f, uint64_t offset, uint64_t len)
{
    int ret = check_range(f, "preallocation", offset, len);
    if (ret < 0 || len == 0)
        return ret;
    ret = do_fallocate(f, 0, offset, len);
    return ret < 0 ? range_error(f, ret, "preallocation", offset, len) : 0;
}

/* Errors after which the next, more expensive way of zeroing may still work. */
static bool try_next_method(int err)
{
    return err == -ENOTSUP || err == -EINVAL;
}

/* Zeroes a range inside the file: unmapping if the host can, else by writing zeroes. */
static int zero_inside(struct io_file *f, uint64_t offset, uint64_t len)
{
    int ret = do_fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len);
    if (ret == 0 || !try_next_method(ret))
        return ret;
    while (len > 0) {
        size_t chunk = min_u64(len, sizeof(zero_chunk));
        ret = io_pwrite(f, zero_chunk, chunk, offset);
        if (ret < 0)
            return ret;
        offset += chunk;
        len -= chunk;
    }
    return 0;
}

static int write_zeroes(struct io_file *f, uint64_t offset, uint64_t len)
{
    /*
     * FALLOC_FL_ZERO_RANGE does it all at once, growing a regular file when the range ends past
     * EOF. Growing never goes through ftruncate, which could cut off data that another thread
     * appends meanwhile.
     */
    int mode = FALLOC_FL_ZERO_RANGE | (f->is_block ? FALLOC_FL_KEEP_SIZE : 0);
    int ret = do_fallocate(f, mode, offset, len);
    if (ret == 0 || !try_next_method(ret))
        return ret;

    int64_t size = io_file_size(f);
    if (size < 0)
        return (int)size;
    uint64_t end = offset + len;
    if (offset < (uint64_t)size) {
        ret = zero_inside(f, offset, min_u64(end, (uint64_t)size) - offset);
        if (ret < 0)
            return ret;
    }
    if (end > (uint64_t)size) {
        if (f->is_block)
            return -ENOSPC;
        /* Past EOF everything already reads as zeros; one byte at the end sets the size. */
        return io_pwrite(f, zero_chunk, 1, end - 1);
    }
    return 0;
}

int io_write_zeroes(struct io_file *f, uint64_t offset, uint64_t len)
{
    int ret = check_range(f, "write zeroes", offset, len);
    if (ret < 0 || len == 0)
        return ret;
    ret = write_zeroes(f, offset, len);
    return ret < 0 ? range_error(f, ret, "write zeroes", offset, len) : 0;
}

int io_find_data(struct io_file *f, uint64_t offset, uint64_t *data_start, uint64_t *data_end)
{
    int ret = check_range(f, "data search", offset, 0);
    if (ret < 0)
        return ret;

    off_t start = lseek(f->fd, (off_t)offset, SEEK_DATA);
    off_t end = start;
    if (start >= 0)
        end = lseek(f->fd, start, SEEK_HOLE);
    if (start < 0 || end < 0) {
        if (errno == ENXIO) {
            /* No data at or after `offset` (or the file shrank meanwhile). */
            int64_t size = io_file_size(f);
            if (size < 0)
                return (int)size;
            *data_start = *data_end = (uint64_t)size;
            return 0;
        }
        ret = errno == EINVAL || errno == EOPNOTSUPP ? -ENOTSUP : -errno;
        return file_error(f, ret, "data search from offset %" PRIu64 " failed", offset);
    }
    *data_start = (uint64_t)start;
    *data_end = (uint64_t)end;
    return 0;
}

int io_req_execute(struct io_req *req)
{
    struct io_file *f = req->file;
    switch (req->op) {
    case IO_OP_READ:
        return io_pread(f, req->buf, req->len, req->offset);
    case IO_OP_WRITE:
        return io_pwrite(f, req->buf, req->len, req->offset);
    case IO_OP_FSYNC:
        return io_fsync(f);
    case IO_OP_PUNCH_HOLE:
        return io_punch_hole(f, req->offset, req->len);
    case IO_OP_WRITE_ZEROES:
        return io_write_zeroes(f, req->offset, req->len);
    case IO_OP_PREALLOCATE:
        return io_preallocate(f, req->offset, req->len);
    }
    return -EINVAL;
}
