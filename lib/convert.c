/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_convert: copy guest content into a new image. The target file's handling (locks,
 * devices, links, the temporary it is built in and renamed from) is convert_target.c's.
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
#include "convert_options.h"
#include "convert_target.h"
#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "io/io.h"
#include "opts.h"
#include "util/checked.h"

/* ---- the targets ---- */

static bool is_power_of_two(uint64_t v)
{
    return v && !(v & (v - 1));
}

/*
 * Copies the source into `dst`, open for writing. `zeros_explicit`: the source's zeros must be
 * written (a target with a backing file, a device or an existing target with old content).
 */
static int convert_into(struct convert_job *job, struct img *dst, bool zeros_explicit)
{
    uint64_t cluster = dst->cluster_size;
    bool whole_clusters = is_power_of_two(cluster) && CONVERT_CHUNK_SIZE % cluster == 0;
    job->zeros_explicit = zeros_explicit;
    job->compress = job->compress || dst->needs_compressed_writes;
    /* Past the end of the target's backing file, the source's zeros need not be written. */
    job->backing_end = dst->backing ? dst->backing->size : UINT64_MAX;
    if (job->compress) {
        if (!dst->fmt->compress_unit || !dst->fmt->write_compressed_data || !whole_clusters)
            return img_error(-ENOTSUP, "convert: format %s cannot write compressed data",
                             dst->fmt->name);
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
    job->img_dst = dst;
    /*
     * Without -W, a target that allocates as it is written gets its clusters in guest order,
     * as qemu-img lays them out (compressed clusters are written in order anyway).
     */
    int ret = 0;
    if (!job->out_of_order && !job->compress_unit && format_has(dst->fmt, FORMAT_HAS_METADATA))
        ret = convert_order_new(&job->order);
    /* The sources one after another, each where the ones before it end. */
    job->dst_base = 0;
    for (size_t i = 0; ret == 0 && i < job->nsrcs; i++) {
        job->src = job->srcs[i];
        /* Compressed clusters are written whole: a source must begin on one. */
        if (job->compress_unit && job->dst_base % job->compress_unit) {
            ret = img_error(-ENOTSUP,
                            "convert: cannot compress a source that begins inside a cluster of "
                            "the target (at %" PRIu64 ")",
                            job->dst_base);
            break;
        }
        ret = convert_copy(job);
        job->dst_base += job->src->size;
    }
    convert_order_free(job->order);
    job->order = NULL;
    job->img_dst = NULL;
    return ret;
}

/* `device`: `temp` is a block device, written in place, whose old content is not zeros. */
static int convert_through_format(struct convert_job *job, const char *temp, const char *final_path,
                                  const char *format, const img_opts *create_opts, bool device,
                                  uint64_t size)
{
    int ret = img_create_final(temp, final_path, format, size, create_opts);
    if (ret < 0)
        return ret;
    struct img *dst;
    /*
     * A data file in the options was named by the caller: opening it is allowed. A backing
     * file (-B) is opened: partial clusters are filled from it, as in any write.
     */
    unsigned flags = IMG_OPEN_READ_WRITE | IMG_OPEN_ALLOW_DATA_FILE;
    if (!job->top_only)
        flags |= IMG_OPEN_NO_BACKING;
    ret = img_open(&dst, temp, format, flags, NULL);
    if (ret < 0)
        return ret;
    /*
     * Nothing relies on the temporary target before it is complete, so its flushes wait for
     * the end (and are skipped unless asked for, as qemu-img convert skips them).
     */
    io_file_set_flush(dst->file, false);
    job->new_target = !device;
    /* Unallocated ranges of the target would show its backing file, not the source's zeros. */
    ret = convert_into(job, dst, dst->backing_name != NULL || device);
    job->new_target = false;
    if (ret == 0 && job->sync)
        io_file_set_flush(dst->file, true);
    if (ret == 0)
        ret = img_flush(dst);
    img_close(dst);
    return ret;
}

/*
 * -n: converts into the existing image `path`, which keeps its size and format. It is opened
 * (and so write-locked) for the whole convert. What the source leaves as zeros is written as
 * zeros unless the caller vouches that the target reads as zeros already (target_is_zero).
 * A failure leaves the target partly written: its old content is not kept.
 */
static int convert_into_existing(struct convert_job *job, const char *path, const char *format,
                                 bool target_is_zero, uint64_t size)
{
    struct img *dst;
    img_error_context_push(path);
    int ret = img_open(&dst, path, format, IMG_OPEN_READ_WRITE, NULL);
    img_error_context_pop();
    if (ret < 0)
        return ret;
    if (dst->size < size)
        ret = img_error(-EINVAL, "output file is smaller than input file");
    if (ret == 0)
        ret = convert_into(job, dst, !target_is_zero);
    if (ret == 0)
        ret = img_flush(dst);
    img_close(dst);
    return ret;
}

/* The convert's progress goes to the caller's callback, after img_cancel() is looked at. */
static int report_to_caller(void *user, uint64_t done, uint64_t total)
{
    struct convert_job *job = user;
    if (convert_limit_check_cancel(job->limit) < 0)
        return 1;
    /* `done` counts every source's bytes; `total` is the current source's size alone. */
    (void)total;
    return job->caller_progress ? job->caller_progress(job->caller_user, done, job->total) : 0;
}

/*
 * The target's virtual size: the source's, or what "size" (exactly, never less than the
 * source) or "min_size" (at least) ask for. The same for every target format: the space past
 * the source's end reads as zeros and is left unallocated.
 */
static int target_size_from_options(uint64_t src_size, const img_opts *opts, uint64_t *out)
{
    uint64_t size = 0, min_size = 0;
    int ret = opts_get_size(opts, "size", &size);
    if (ret == 0)
        ret = opts_get_size(opts, "min_size", &min_size);
    if (ret < 0)
        return ret;
    bool has_size = img_opts_get(opts, "size") != NULL;
    if (has_size && img_opts_get(opts, "min_size"))
        return img_error(-EINVAL, "convert: give either size or min_size, not both");
    if (has_size && size < src_size)
        return img_error(-EINVAL,
                         "convert: size %" PRIu64 " is smaller than the source (%" PRIu64
                         " bytes): the data past it would be lost",
                         size, src_size);
    *out = has_size ? size : max_u64(src_size, min_size);
    return 0;
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
        if (!convert_option_is_own(key))
            ret = img_opts_set(*create_opts, key, value);
    return ret;
}

/* Creates the target (a temporary renamed into place, or a device written in place). */
static int convert_to_new_target(struct convert_job *job, const char *dst_path,
                                 const struct img_format *fmt, const img_opts *opts,
                                 uint64_t target_size)
{
    const char *dst_format = fmt->name;
    img_opts *create_opts = NULL;
    struct target_file target;
    bool target_open_ok = false;
    int ret = split_options(opts, &create_opts);
    /* Refused now, not once the target (or its data file) has been created or emptied. */
    if (ret == 0 && job->compress && fmt->compress_allowed)
        ret = fmt->compress_allowed(create_opts);
    /*
     * The target is opened through the kernel (links followed as open(2) follows them) and
     * write-locked for the whole convert, before anything is written: see convert_target.h.
     */
    if (ret == 0) {
        img_error_context_push(dst_path);
        ret = target_open(&target, dst_path, "convert", job->srcs[0]->file);
        img_error_context_pop();
        target_open_ok = ret == 0;
        if (ret == -EBUSY)
            img_error_prefix("%s: error while converting %s", dst_path, fmt->name);
    }
    const char *build_path = NULL;
    if (ret == 0 && target.is_block && target.is_source) {
        /* Written in place, it would be overwritten while it is still being read. */
        ret = img_error(-EINVAL,
                        "convert: '%s' is the source: a device cannot be converted onto "
                        "itself",
                        dst_path);
    } else if (ret == 0 && target.is_block) {
        build_path = dst_path;
        /* The format's create opens and locks the device itself. */
        target_unlock(&target);
    } else if (ret == 0) {
        target_forget_new(&target);
        ret = target_make_temp(&target);
        build_path = target.temp_path;
    }
    /* The name the temporary will be renamed to: files named after the image take it. */
    char *final_path = NULL;
    if (ret == 0 && build_path != dst_path) {
        size_t cap = strlen(target.dir_path) + strlen(target.name) + 2;
        final_path = malloc(cap);
        if (!final_path)
            ret = img_error(-ENOMEM, "out of memory");
        else
            snprintf(final_path, cap, "%s/%s", target.dir_path, target.name);
    }
    /* Every format, raw included, is created and written through its backend. */
    if (ret == 0) {
        ret = convert_through_format(job, build_path, final_path ? final_path : dst_path,
                                     dst_format, create_opts, target.is_block, target_size);
        /* Messages about the target name it, not the temporary it is built in. */
        if (ret < 0 && build_path != dst_path)
            img_error_rename(build_path, dst_path);
    }
    if (ret == 0) {
        img_error_context_push(dst_path);
        ret = target_commit(&target);
        img_error_context_pop();
    }
    if (target_open_ok)
        target_close(&target, ret < 0);
    free(final_path);
    img_opts_free(create_opts);
    return ret;
}

/* Stops what the sources' locks allowed: the first `n` were entered. */
static void leave_sources(img **srcs, size_t n)
{
    while (n--) {
        img_refuse_writers(srcs[n], false);
        img_io_leave(srcs[n]);
    }
}

IMG_API int img_convert_many(img **srcs, size_t n, const char *dst_path, const char *dst_format,
                             const img_opts *opts, img_progress_fn progress, void *user)
{
    if (!srcs || n == 0)
        return img_error(-EINVAL, "img_convert_many: no source image");
    for (size_t i = 0; i < n; i++)
        if (!srcs[i] || srcs[i]->magic != IMG_HANDLE_MAGIC)
            return img_error(-EINVAL, "invalid image handle");
    if (!dst_path || !*dst_path)
        return img_error(-EINVAL, "img_convert: no target file name");
    if (!dst_format)
        dst_format = "raw";
    const struct img_format *fmt = format_find(dst_format);
    if (!fmt)
        return img_error(-ENOTSUP, "convert: unknown or unsupported target format '%s'",
                         dst_format);
    struct convert_options o;
    int ret = convert_options_parse(opts, fmt, &o);
    if (ret < 0)
        return ret;
    if (n > 1 && o.backing_file)
        return img_error(-EINVAL, "Having a backing file for the target makes no sense when "
                                  "concatenating multiple input images");
    struct convert_job job = {.srcs = srcs,
                              .nsrcs = n,
                              .progress = report_to_caller,
                              .caller_progress = progress,
                              .caller_user = user,
                              .sparse_size = o.sparse_size,
                              .compress = o.compress,
                              .sync = o.sync,
                              .out_of_order = o.out_of_order,
                              .max_chunks = o.num_coroutines,
                              .copy_range = o.copy_range,
                              .salvage = o.salvage,
                              .salvage_log_fd = o.salvage_log_fd,
                              .salvage_log_prefix = o.salvage_log_prefix,
                              .top_only = o.backing_file != NULL};
    job.user = &job;
    for (size_t i = 0; i < n; i++) {
        if (srcs[i]->size > UINT64_MAX - job.total)
            return img_error(-EFBIG, "convert: the sources are too large together");
        job.total += srcs[i]->size;
    }
    uint64_t target_size = 0;
    ret = target_size_from_options(job.total, opts, &target_size);
    if (ret < 0)
        return ret;

    /*
     * The sources must not change under the copy: a raw source shared with writers stops, and
     * exclusive calls on a handle (a resize) wait until the copy is done.
     */
    size_t entered = 0;
    for (; ret == 0 && entered < n; entered++) {
        img_io_enter(srcs[entered]);
        img_error_context_push(NULL);
        ret = img_refuse_writers(srcs[entered], true);
        img_error_context_pop();
        if (ret < 0)
            img_io_leave(srcs[entered]);
    }
    if (ret < 0)
        entered--;
    /*
     * Messages name their file themselves here: a convert works on two, so neither is the
     * context of all of them (reads name the source's files, target steps the target).
     */
    img_error_context_push(NULL);
    if (ret == 0)
        ret = convert_limit_new(&job.limit, srcs[0], o.rate_limit);
    if (ret == 0 && o.skip_create)
        ret = convert_into_existing(&job, dst_path, fmt->name, o.target_is_zero, target_size);
    else if (ret == 0)
        ret = convert_to_new_target(&job, dst_path, fmt, opts, target_size);
    convert_limit_free(job.limit);
    img_error_context_pop();
    leave_sources(srcs, entered);
    return ret;
}

IMG_API int img_convert(img *src, const char *dst_path, const char *dst_format,
                        const img_opts *opts, img_progress_fn progress, void *user)
{
    return img_convert_many(&src, 1, dst_path, dst_format, opts, progress, user);
}
