/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_convert: copy guest content into a new image. The target is built in a temporary file
 * beside the destination and renamed over it only when everything succeeded.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "io/io.h"
#include "opts.h"
#include "util/checked.h"

#define CHUNK_SIZE (2u << 20)
#define CHUNK_SLOTS 8
#define QUEUE_DEPTH 64

struct convert_job {
    struct img *src;
    img_progress_fn progress;
    void *user;
    uint64_t sparse_size; /* 0: write every byte */
    bool compress;
    bool sync; /* flush the target before renaming it into place */
    uint64_t done;
};

bool buffer_is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len && ((uintptr_t)p & 7)) {
        if (*p++)
            return false;
        len--;
    }
    const uint64_t *w = (const uint64_t *)(const void *)p;
    for (; len >= 64; len -= 64, w += 8)
        if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])
            return false;
    p = (const uint8_t *)w;
    while (len--)
        if (*p++)
            return false;
    return true;
}

static int report_progress(struct convert_job *job, uint64_t bytes)
{
    job->done += bytes;
    if (job->progress && job->progress(job->user, job->done, job->src->size))
        return img_error(-ECANCELED, "convert cancelled");
    return 0;
}

/* ---- temporary target file ---- */

static char *temp_path_for(const char *dst)
{
    const char *slash = strrchr(dst, '/');
    size_t dir_len = slash ? (size_t)(slash - dst) + 1 : 0;
    const char *base = dst + dir_len;
    size_t cap = strlen(dst) + 32;
    char *path = malloc(cap);
    if (!path)
        return NULL;
    unsigned long r = (unsigned long)getpid() ^ (unsigned long)time(NULL) ^ (uintptr_t)path;
    snprintf(path, cap, "%.*s.%s.%08lx.tmp", (int)dir_len, dst, base, r & 0xffffffffu);
    return path;
}

/* Creates an empty temporary file beside `dst`; mode follows the umask as a new file would. */
static int create_temp_file(const char *dst, char **temp_out)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        char *path = temp_path_for(dst);
        if (!path)
            return img_error(-ENOMEM, "out of memory");
        path[strlen(path) - 5] = (char)('a' + attempt);
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
        if (fd >= 0) {
            close(fd);
            *temp_out = path;
            return 0;
        }
        int err = -errno;
        free(path);
        if (err != -EEXIST)
            return img_error(err, "cannot create a temporary file beside '%s': %s", dst,
                             img_strerror(err));
    }
    return img_error(-EEXIST, "cannot find a free temporary name beside '%s'", dst);
}

/* ---- raw target: many reads and writes in flight through the I/O layer ---- */

enum slot_state { SLOT_FREE, SLOT_READING, SLOT_WRITING };

struct chunk_slot {
    enum slot_state state;
    uint8_t *buf;
    uint64_t offset, length;
    unsigned pending;
    int error;
    struct io_req reqs[CHUNK_SIZE / 4096 + 1];
    unsigned nreqs;
};

static void slot_request_done(struct io_req *req, int result)
{
    struct chunk_slot *slot = req->user;
    if (result < 0 && slot->error == 0)
        slot->error = result;
    slot->pending--;
}

static struct io_req *slot_next_req(struct chunk_slot *slot)
{
    struct io_req *r = &slot->reqs[slot->nreqs++];
    memset(r, 0, sizeof(*r));
    r->user = slot;
    r->done = slot_request_done;
    return r;
}

/* Is the whole chunk known to read as zeros without reading it? */
static int chunk_is_hole(struct img *src, uint64_t offset, uint64_t length, bool *hole)
{
    *hole = true;
    while (length) {
        struct img_extent ext;
        int depth;
        int ret = img_map_chain(src, offset, length, &ext, &depth);
        if (ret < 0)
            return ret;
        if (ext.kind == EXTENT_DATA || ext.kind == EXTENT_COMPRESSED) {
            *hole = false;
            return 0;
        }
        offset += ext.length;
        length -= ext.length;
    }
    return 0;
}

/* Fills the slot: data extents are read asynchronously, the rest synchronously here. */
static int slot_start_reads(struct img *src, struct io_queue *q, struct chunk_slot *slot)
{
    uint64_t offset = slot->offset, left = slot->length;
    uint8_t *p = slot->buf;
    slot->nreqs = 0;
    slot->pending = 0;
    slot->error = 0;
    slot->state = SLOT_READING;
    while (left) {
        struct img_extent ext;
        int depth;
        int ret = img_map_chain(src, offset, left, &ext, &depth);
        if (ret < 0)
            return ret;
        if (ext.kind == EXTENT_DATA && slot->nreqs < sizeof(slot->reqs) / sizeof(slot->reqs[0])) {
            struct io_req *r = slot_next_req(slot);
            r->op = IO_OP_READ;
            r->file = ext.file;
            r->buf = p;
            r->len = ext.length;
            r->offset = ext.host_offset;
            slot->pending++;
            ret = io_queue_submit(q, r);
            if (ret < 0) {
                slot->pending--;
                return img_error(ret, "cannot submit a read: %s", img_strerror(ret));
            }
        } else {
            ret = img_read_extent(&ext, p, offset);
            if (ret < 0)
                return ret;
        }
        p += ext.length;
        offset += ext.length;
        left -= ext.length;
    }
    return 0;
}

/* Writes the non-zero runs of a filled slot (every byte when sparse_size is 0). */
static int slot_start_writes(struct convert_job *job, struct io_queue *q, struct io_file *dst,
                             struct chunk_slot *slot)
{
    uint64_t block = job->sparse_size ? job->sparse_size : slot->length;
    slot->nreqs = 0;
    slot->state = SLOT_WRITING;
    uint64_t run_start = 0, run_len = 0;
    for (uint64_t pos = 0; pos <= slot->length; pos += block) {
        uint64_t n = pos < slot->length ? min_u64(block, slot->length - pos) : 0;
        bool zero = n == 0 || (job->sparse_size && buffer_is_zero(slot->buf + pos, n));
        if (!zero) {
            if (run_len == 0)
                run_start = pos;
            run_len += n;
        }
        if ((zero || pos + n >= slot->length) && run_len) {
            if (slot->nreqs == sizeof(slot->reqs) / sizeof(slot->reqs[0])) {
                /* Out of request slots (a very fragmented chunk): write this run directly. */
                int ret = io_pwrite(dst, slot->buf + run_start, run_len, slot->offset + run_start);
                if (ret < 0)
                    return img_error(ret, "write to the target failed: %s", img_strerror(ret));
                run_len = 0;
                continue;
            }
            struct io_req *r = slot_next_req(slot);
            r->op = IO_OP_WRITE;
            r->file = dst;
            r->buf = slot->buf + run_start;
            r->len = run_len;
            r->offset = slot->offset + run_start;
            slot->pending++;
            int ret = io_queue_submit(q, r);
            if (ret < 0) {
                slot->pending--;
                return img_error(ret, "cannot submit a write: %s", img_strerror(ret));
            }
            run_len = 0;
        }
        if (n == 0)
            break;
    }
    return 0;
}

static int copy_to_raw_file(struct convert_job *job, struct io_file *dst)
{
    struct img *src = job->src;
    struct chunk_slot *slots = calloc(CHUNK_SLOTS, sizeof(*slots));
    struct io_queue *q = NULL;
    int ret = slots ? 0 : img_error(-ENOMEM, "out of memory");
    for (int i = 0; ret == 0 && i < CHUNK_SLOTS; i++) {
        slots[i].buf = malloc(CHUNK_SIZE);
        if (!slots[i].buf)
            ret = img_error(-ENOMEM, "out of memory");
    }
    if (ret == 0) {
        ret = io_queue_new(&q, QUEUE_DEPTH);
        if (ret < 0)
            img_error(ret, "cannot set up the I/O queue: %s", img_strerror(ret));
    }

    uint64_t next = 0;
    unsigned busy = 0;
    while (ret == 0 && (next < src->size || busy)) {
        bool progressed = false;
        for (int i = 0; ret == 0 && i < CHUNK_SLOTS; i++) {
            struct chunk_slot *slot = &slots[i];
            if (slot->state == SLOT_FREE && next < src->size) {
                slot->offset = next;
                slot->length = min_u64(CHUNK_SIZE, src->size - next);
                next += slot->length;
                progressed = true;
                bool hole = false;
                if (job->sparse_size) {
                    ret = chunk_is_hole(src, slot->offset, slot->length, &hole);
                    if (ret < 0)
                        break;
                }
                if (hole) {
                    ret = report_progress(job, slot->length);
                    continue;
                }
                busy++;
                ret = slot_start_reads(src, q, slot);
            } else if (slot->state == SLOT_READING && slot->pending == 0) {
                progressed = true;
                if (slot->error) {
                    ret = img_error(slot->error, "read from '%s' failed: %s", src->filename,
                                    img_strerror(slot->error));
                    break;
                }
                ret = slot_start_writes(job, q, dst, slot);
            } else if (slot->state == SLOT_WRITING && slot->pending == 0) {
                progressed = true;
                if (slot->error) {
                    ret = img_error(slot->error, "write to the target failed: %s",
                                    img_strerror(slot->error));
                    break;
                }
                slot->state = SLOT_FREE;
                busy--;
                ret = report_progress(job, slot->length);
            }
        }
        if (ret == 0 && !progressed) {
            int n = io_queue_reap(q, 1);
            if (n < 0)
                ret = img_error(n, "I/O wait failed: %s", img_strerror(n));
        }
    }
    if (q) {
        io_queue_drain(q);
        io_queue_free(q);
    }
    for (int i = 0; slots && i < CHUNK_SLOTS; i++)
        free(slots[i].buf);
    free(slots);
    return ret;
}

static int convert_to_raw(struct convert_job *job, const char *temp)
{
    struct io_file *dst;
    int ret = io_file_open(&dst, temp, O_RDWR | O_TRUNC, 0);
    if (ret < 0)
        return img_error(ret, "cannot open '%s': %s", temp, img_strerror(ret));
    ret = io_truncate(dst, job->src->size);
    if (ret < 0)
        img_error(ret, "cannot size the target: %s", img_strerror(ret));
    if (ret == 0)
        ret = copy_to_raw_file(job, dst);
    if (ret == 0 && job->sync) {
        ret = io_fsync(dst);
        if (ret < 0)
            img_error(ret, "cannot flush the target: %s", img_strerror(ret));
    }
    io_file_close(dst);
    return ret;
}

/* ---- any other target format: through the format's write path ---- */

static int copy_through_image(struct convert_job *job, struct img *dst)
{
    struct img *src = job->src;
    uint8_t *buf = malloc(CHUNK_SIZE);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    uint64_t unit = job->compress ? dst->cluster_size : 0;
    if (job->compress && (!dst->fmt->write_compressed || unit == 0 || CHUNK_SIZE % unit)) {
        free(buf);
        return img_error(-ENOTSUP, "convert: format %s cannot write compressed data",
                         dst->fmt->name);
    }
    uint64_t block = unit ? unit : (job->sparse_size ? job->sparse_size : CHUNK_SIZE);
    int ret = 0;
    for (uint64_t offset = 0; ret == 0 && offset < src->size;) {
        uint64_t length = min_u64(CHUNK_SIZE, src->size - offset);
        bool hole = false;
        if (job->sparse_size || unit)
            ret = chunk_is_hole(src, offset, length, &hole);
        if (ret == 0 && !hole)
            ret = img_read_guest(src, buf, length, offset);
        for (uint64_t pos = 0; ret == 0 && !hole && pos < length; pos += block) {
            uint64_t n = min_u64(block, length - pos);
            if ((job->sparse_size || unit) && buffer_is_zero(buf + pos, n))
                continue;
            if (unit && n == unit)
                ret = dst->fmt->write_compressed(dst, offset + pos, buf + pos, n);
            else {
                int64_t w = img_pwrite(dst, buf + pos, n, offset + pos);
                ret = w < 0 ? (int)w : 0;
            }
        }
        if (ret == 0)
            ret = report_progress(job, length);
        offset += length;
    }
    free(buf);
    return ret;
}

static int convert_through_format(struct convert_job *job, const char *temp, const char *format,
                                  const img_opts *create_opts)
{
    int ret = img_create(temp, format, job->src->size, create_opts);
    if (ret < 0)
        return ret;
    struct img *dst;
    ret = img_open(&dst, temp, format, IMG_OPEN_READ_WRITE | IMG_OPEN_NO_BACKING, NULL);
    if (ret < 0)
        return ret;
    ret = copy_through_image(job, dst);
    if (ret == 0)
        ret = img_flush(dst);
    img_close(dst);
    return ret;
}

/* Target creation options: everything but the keys convert itself reads. */
static int split_options(const img_opts *opts, img_opts **create_opts)
{
    int ret = img_opts_new(create_opts);
    if (ret < 0)
        return ret;
    img_opts_set(*create_opts, "overwrite", "on");
    unsigned i = 0;
    const char *key, *value;
    while (ret == 0 && opts_iter(opts, &i, &key, &value))
        if (strcmp(key, "sparse_size") != 0 && strcmp(key, "compress") != 0 &&
            strcmp(key, "sync") != 0)
            ret = img_opts_set(*create_opts, key, value);
    return ret;
}

IMG_API int img_convert(img *src, const char *dst_path, const char *dst_format,
                        const img_opts *opts, img_progress_fn progress, void *user)
{
    if (!src || src->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    if (!dst_path || !*dst_path)
        return img_error(-EINVAL, "img_convert: no target file name");
    if (!dst_format)
        dst_format = "raw";
    const struct img_format *fmt = format_find(dst_format);
    if (!fmt)
        return img_error(-ENOTSUP, "convert: unknown or unsupported target format '%s'",
                         dst_format);
    struct convert_job job = {.src = src, .progress = progress, .user = user, .sparse_size = 4096};
    int ret = opts_get_size(opts, "sparse_size", &job.sparse_size);
    if (ret == 0)
        ret = opts_get_bool(opts, "compress", &job.compress);
    if (ret == 0)
        ret = opts_get_bool(opts, "sync", &job.sync);
    if (ret < 0)
        return ret;
    if (job.sparse_size &&
        (job.sparse_size % 512 || job.sparse_size > CHUNK_SIZE || CHUNK_SIZE % job.sparse_size))
        return img_error(-EINVAL,
                         "convert: sparse_size must be a power-of-two multiple of 512 up to "
                         "%u (got %" PRIu64 ")",
                         CHUNK_SIZE, job.sparse_size);
    if (fmt == &format_raw && job.compress)
        return img_error(-ENOTSUP, "convert: format raw does not support compression");

    img_opts *create_opts = NULL;
    char *temp = NULL;
    ret = split_options(opts, &create_opts);
    if (ret == 0)
        ret = create_temp_file(dst_path, &temp);
    if (ret == 0) {
        if (fmt == &format_raw) {
            static const char *const known[] = {"overwrite", "preallocation", NULL};
            ret = opts_check_known(create_opts, known, "convert to raw");
            if (ret == 0)
                ret = convert_to_raw(&job, temp);
        } else {
            ret = convert_through_format(&job, temp, dst_format, create_opts);
        }
    }
    if (ret == 0 && rename(temp, dst_path) < 0)
        ret = img_error(-errno, "cannot rename the finished image to '%s': %s", dst_path,
                        img_strerror(-errno));
    if (ret < 0 && temp)
        unlink(temp);
    free(temp);
    img_opts_free(create_opts);
    return ret;
}
