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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "convert_job.h"
#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "io/io.h"
#include "opts.h"
#include "util/checked.h"

/* As qemu-img's -S. */
#define SPARSE_SIZE_MAX (16u << 20)

/* ---- temporary target file ---- */

/* Leaves room in a 255-byte name for the dot, the random part and the suffix. */
#define TEMP_BASE_MAX 200

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
    snprintf(path, cap, "%.*s.%.*s.%08lx.tmp", (int)dir_len, dst, TEMP_BASE_MAX, base,
             r & 0xffffffffu);
    return path;
}

/*
 * Creates an empty temporary file beside `dst`. Its mode follows the umask as a new file
 * would; when `dst` exists, the finished file takes over its mode and, where allowed, its
 * owner, as writing into it (what qemu-img does) would have kept them.
 */
static int create_temp_file(const char *dst, char **temp_out)
{
    struct stat old;
    bool replacing = stat(dst, &old) == 0 && S_ISREG(old.st_mode);
    for (int attempt = 0; attempt < 16; attempt++) {
        char *path = temp_path_for(dst);
        if (!path)
            return img_error(-ENOMEM, "out of memory");
        path[strlen(path) - 5] = (char)('a' + attempt);
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
        if (fd >= 0) {
            if (replacing) {
                /* Only root may give a file away; anyone else keeps the file as their own. */
                if (fchown(fd, old.st_uid, old.st_gid) < 0 && errno != EPERM) {
                    int err = -errno;
                    close(fd);
                    unlink(path);
                    free(path);
                    return img_error(err, "cannot give the new '%s' its owner: %s", dst,
                                     img_strerror(err));
                }
                fchmod(fd, old.st_mode & 07777);
            }
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

/* ---- the targets ---- */

static bool is_power_of_two(uint64_t v)
{
    return v && !(v & (v - 1));
}

static int convert_through_format(struct convert_job *job, const char *temp, const char *format,
                                  const img_opts *create_opts)
{
    int ret = img_create(temp, format, job->src->size, create_opts);
    if (ret < 0)
        return ret;
    struct img *dst;
    /* A data file in the options was named by the caller: opening it is allowed. */
    ret = img_open(&dst, temp, format,
                   IMG_OPEN_READ_WRITE | IMG_OPEN_NO_BACKING | IMG_OPEN_ALLOW_DATA_FILE, NULL);
    if (ret < 0)
        return ret;
    uint64_t cluster = dst->cluster_size;
    bool whole_clusters = is_power_of_two(cluster) && CONVERT_CHUNK_SIZE % cluster == 0;
    /* Unallocated ranges of the target would show its backing file, not the source's zeros. */
    job->zeros_explicit = dst->backing_name != NULL;
    if (job->compress) {
        if (!dst->fmt->compress_unit || !dst->fmt->write_compressed_data || !whole_clusters) {
            img_close(dst);
            return img_error(-ENOTSUP, "convert: format %s cannot write compressed data",
                             dst->fmt->name);
        }
        job->compress_unit = cluster;
    } else if (job->sparse_size) {
        /*
         * A (sub)cluster holding any data is written whole: its zero blocks cost less as data
         * than as a copy-on-write fill, and the image allocates the same clusters either way.
         */
        uint64_t unit = dst->alloc_unit ? dst->alloc_unit : cluster;
        job->unit = whole_clusters && is_power_of_two(unit) ? unit : 512;
        job->zero_block = align_up_u64(max_u64(job->sparse_size, job->unit), job->unit);
    }
    /*
     * Nothing relies on the temporary target before it is complete, so its flushes wait for
     * the end (and are skipped unless asked for, as qemu-img convert skips them).
     */
    io_file_set_flush(dst->file, false);
    job->img_dst = dst;
    ret = convert_copy(job);
    if (ret == 0 && job->sync)
        io_file_set_flush(dst->file, true);
    if (ret == 0)
        ret = img_flush(dst);
    job->img_dst = NULL;
    img_close(dst);
    return ret;
}

/* As the kernel's limit on links followed in one lookup. */
#define MAX_LINKS 40

/*
 * The file a chain of symbolic links at `path` names, even when it does not exist yet (then
 * the convert creates it, as opening the link to create it would). *out is NULL when `path`
 * is no link.
 */
static int follow_links(const char *path, char **out)
{
    *out = NULL;
    char *current = NULL;
    for (int hops = 0;; hops++) {
        const char *at = current ? current : path;
        struct stat st;
        if (lstat(at, &st) < 0 || !S_ISLNK(st.st_mode)) {
            *out = current;
            return 0;
        }
        if (hops == MAX_LINKS) {
            free(current);
            return img_error(-ELOOP, "cannot follow the link '%s': too many levels", path);
        }
        char target[4096];
        ssize_t n = readlink(at, target, sizeof(target) - 1);
        if (n < 0) {
            int err = -errno;
            free(current);
            return img_error(err, "cannot follow the link '%s': %s", path, img_strerror(err));
        }
        target[n] = '\0';
        /* A relative target is relative to the folder holding the link. */
        const char *slash = strrchr(at, '/');
        int dir_len = target[0] != '/' && slash ? (int)(slash - at) + 1 : 0;
        size_t len = (size_t)dir_len + (size_t)n + 1;
        char *next = malloc(len);
        if (!next) {
            free(current);
            return img_error(-ENOMEM, "out of memory");
        }
        snprintf(next, len, "%.*s%s", dir_len, at, target);
        free(current);
        current = next;
    }
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
    if (job.sparse_size % 512 || job.sparse_size > SPARSE_SIZE_MAX)
        return img_error(
            -EINVAL, "convert: sparse_size must be a multiple of 512 up to %u (got %" PRIu64 ")",
            SPARSE_SIZE_MAX, job.sparse_size);
    if (job.compress && !format_has(fmt, FORMAT_COMPRESSED_WRITES))
        return img_error(-ENOTSUP, "convert: format %s does not support compression", fmt->name);

    /*
     * A symbolic link is written through, as qemu-img does: the file it names is replaced,
     * and the link stays.
     */
    char *resolved = NULL;
    ret = follow_links(dst_path, &resolved);
    if (ret < 0)
        return ret;
    if (resolved)
        dst_path = resolved;

    /*
     * The source must not change under the copy: a raw source shared with writers stops, and
     * exclusive calls on the handle (a resize) wait until the copy is done.
     */
    img_io_enter(src);
    ret = img_refuse_writers(src, true);
    if (ret < 0) {
        img_io_leave(src);
        free(resolved);
        return ret;
    }
    img_opts *create_opts = NULL;
    char *temp = NULL;
    ret = split_options(opts, &create_opts);
    if (ret == 0)
        ret = create_temp_file(dst_path, &temp);
    /* Every format, raw included, is created and written through its backend. */
    if (ret == 0)
        ret = convert_through_format(&job, temp, dst_format, create_opts);
    if (ret == 0 && rename(temp, dst_path) < 0)
        ret = img_error(-errno, "cannot rename the finished image to '%s': %s", dst_path,
                        img_strerror(-errno));
    if (ret < 0 && temp)
        unlink(temp);
    free(temp);
    img_opts_free(create_opts);
    img_refuse_writers(src, false);
    img_io_leave(src);
    free(resolved);
    return ret;
}
