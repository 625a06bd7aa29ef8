/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The host primitives: the system-call loops that every engine ends in. The thread-pool engine
 * runs them on its workers (or on the caller, for a synchronous request), the io_uring engine
 * for what the ring cannot do, the fault engine after deciding whether to fail.
 *
 * They only return a negative errno: they may run on a thread other than the one that asked,
 * and the message belongs on the asker's thread, so file.c writes it after the wait.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine.h"
#include "util/checked.h"

/* The kernel moves at most about 2 GiB per read/write call; asking for less keeps counts sane. */
#define IO_MAX_TRANSFER (1u << 30)

/* Chunk used when zeroes have to be written as data. */
#define IO_ZERO_CHUNK (256u * 1024)

/* Never written: a source of zeroes for the write-zeroes fallback. */
static char zero_chunk[IO_ZERO_CHUNK];

int io_host_pread(struct io_file *f, void *buf, size_t len, uint64_t offset)
{
    int fd = io_file_fd(f);
    char *p = buf;
    size_t done = 0;
    while (done < len) {
        size_t chunk = min_u64(len - done, IO_MAX_TRANSFER);
        ssize_t n = pread(fd, p + done, chunk, (off_t)(offset + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
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

static int do_fallocate(struct io_file *f, int mode, uint64_t offset, uint64_t len);

static int pwrite_locked(struct io_file *f, const void *buf, size_t len, uint64_t offset,
                         bool into_hole)
{
    int fd = io_file_fd(f);
    const char *p = buf;
    size_t done = 0;
    int ret = 0;
    io_file_write_lock(f);
    /*
     * Under the same turn as the write: both take the inode's lock. The size is left to the
     * write (a write that fails leaves it where it would without the allocation). A failure is
     * left to the write to report (no space, say), or means the file system cannot (ext2/3).
     */
    if (into_hole && len > 0 && io_file_allocates_first(f) &&
        do_fallocate(f, FALLOC_FL_KEEP_SIZE, offset, len) == -ENOTSUP)
        io_file_stop_allocating_first(f);
    while (done < len) {
        size_t chunk = min_u64(len - done, IO_MAX_TRANSFER);
        ssize_t n = pwrite(fd, p + done, chunk, (off_t)(offset + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ret = -errno;
            break;
        }
        /* A write that makes no progress would otherwise spin forever. */
        if (n == 0) {
            ret = -EIO;
            break;
        }
        done += (size_t)n;
    }
    io_file_write_unlock(f);
    return ret;
}

int io_host_pwrite(struct io_file *f, const void *buf, size_t len, uint64_t offset)
{
    return pwrite_locked(f, buf, len, offset, false);
}

int io_host_fsync(struct io_file *f)
{
    /* fdatasync still writes the metadata needed to read the data back, such as the size. */
    int ret;
    do {
        ret = fdatasync(io_file_fd(f));
    } while (ret < 0 && errno == EINTR);
    return ret < 0 ? -errno : 0;
}

int io_host_truncate(struct io_file *f, uint64_t size)
{
    int ret;
    do {
        ret = ftruncate(io_file_fd(f), (off_t)size);
    } while (ret < 0 && errno == EINTR);
    return ret < 0 ? -errno : 0;
}

/* fallocate(2) with EINTR retried; EOPNOTSUPP and ENOSYS both become -ENOTSUP. */
static int do_fallocate(struct io_file *f, int mode, uint64_t offset, uint64_t len)
{
    int ret;
    do {
        ret = fallocate(io_file_fd(f), mode, (off_t)offset, (off_t)len);
    } while (ret < 0 && errno == EINTR);
    if (ret == 0)
        return 0;
    if (errno == EOPNOTSUPP || errno == ENOSYS)
        return -ENOTSUP;
    return -errno;
}

int io_host_punch_hole(struct io_file *f, uint64_t offset, uint64_t len)
{
    return do_fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len);
}

int io_host_preallocate(struct io_file *f, uint64_t offset, uint64_t len)
{
    return do_fallocate(f, 0, offset, len);
}

static int64_t host_size(struct io_file *f)
{
    int fd = io_file_fd(f);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISBLK(st.st_mode)) {
        off_t end = lseek(fd, 0, SEEK_END);
        return end < 0 ? -errno : end;
    }
    return st.st_size;
}

/* Errors after which the next, more expensive way of zeroing may still work. */
static bool try_next_method(int err)
{
    return err == -ENOTSUP || err == -EINVAL;
}

/* Zeroes a range inside the file: unmapping if the host can, else by writing zeroes. */
static int zero_inside(struct io_file *f, uint64_t offset, uint64_t len)
{
    int ret = io_host_punch_hole(f, offset, len);
    if (ret == 0 || !try_next_method(ret))
        return ret;
    while (len > 0) {
        size_t chunk = min_u64(len, sizeof(zero_chunk));
        ret = io_host_pwrite(f, zero_chunk, chunk, offset);
        if (ret < 0)
            return ret;
        offset += chunk;
        len -= chunk;
    }
    return 0;
}

int io_host_write_zeroes(struct io_file *f, uint64_t offset, uint64_t len)
{
    /*
     * FALLOC_FL_ZERO_RANGE does it all at once, growing a regular file when the range ends past
     * EOF. Growing never goes through ftruncate, which could cut off data that another thread
     * appends meanwhile.
     */
    bool is_block = io_file_is_block(f);
    int ret =
        do_fallocate(f, FALLOC_FL_ZERO_RANGE | (is_block ? FALLOC_FL_KEEP_SIZE : 0), offset, len);
    if (ret == 0 || !try_next_method(ret))
        return ret;
    return io_host_write_zeroes_slowly(f, offset, len);
}

int io_host_write_zeroes_slowly(struct io_file *f, uint64_t offset, uint64_t len)
{
    int64_t size = host_size(f);
    if (size < 0)
        return (int)size;
    uint64_t end = offset + len;
    if (offset < (uint64_t)size) {
        int ret = zero_inside(f, offset, min_u64(end, (uint64_t)size) - offset);
        if (ret < 0)
            return ret;
    }
    if (end > (uint64_t)size) {
        if (io_file_is_block(f))
            return -ENOSPC;
        /* Past EOF everything already reads as zeros; one byte at the end sets the size. */
        return io_host_pwrite(f, zero_chunk, 1, end - 1);
    }
    return 0;
}

int io_req_execute(struct io_req *req)
{
    struct io_file *f = req->file;
    switch (req->op) {
    case IO_OP_READ:
        return io_host_pread(f, req->buf, req->len, req->offset);
    case IO_OP_WRITE:
        return pwrite_locked(f, req->buf, req->len, req->offset, req->into_hole);
    case IO_OP_FSYNC:
        return io_file_flush_enabled(f) ? io_host_fsync(f) : 0;
    case IO_OP_TRUNCATE:
        return io_host_truncate(f, req->offset);
    case IO_OP_PUNCH_HOLE:
        return req->len ? io_host_punch_hole(f, req->offset, req->len) : 0;
    case IO_OP_WRITE_ZEROES:
        return req->len ? io_host_write_zeroes(f, req->offset, req->len) : 0;
    case IO_OP_PREALLOCATE:
        return req->len ? io_host_preallocate(f, req->offset, req->len) : 0;
    }
    return -EINVAL;
}
