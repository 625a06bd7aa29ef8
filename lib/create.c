/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_create: the target is opened and locked before any byte of it changes (convert_target.h
 * has the rules), then the format's create() builds the image in that open file: in place
 * for a new or empty file and for a block device, else in a temporary renamed over the old
 * file once the image is complete, so a failure (a full disk during preallocation) costs the
 * user nothing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert_target.h"
#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "io/io.h"
#include "opts.h"
#include "progress.h"

/* Options the core handles itself; the rest go to the format. */
static const char *const core_create_keys[] = {"overwrite",   "overwrite_named", "backing_file",
                                               "backing_fmt", "backing_unsafe",  NULL};

static bool is_core_key(const char *key)
{
    for (const char *const *k = core_create_keys; *k; k++)
        if (strcmp(*k, key) == 0)
            return true;
    return false;
}

/* Opens the backing file the way a later open of the new image will, to check it and size. */
static int probe_backing(const char *path, const char *backing, const char *backing_fmt,
                         uint64_t *size)
{
    char *full = img_resolve_path(path, backing);
    if (!full)
        return img_error(-ENOMEM, "out of memory");
    struct img *b;
    int ret = img_open(&b, full, backing_fmt, IMG_OPEN_READ_ONLY | IMG_OPEN_FORCE_SHARE, NULL);
    if (ret < 0) {
        img_error_prefix("could not open backing file '%s'", full);
        free(full);
        return ret;
    }
    *size = b->size;
    img_close(b);
    free(full);
    return 0;
}

/* Runs the format's create() on the open target, in place or in a temporary beside it. */
static int build(const struct img_format *fmt, struct target_file *t, struct img_create_args *args)
{
    bool in_place = t->is_block || t->was_empty;
    struct io_file *temp = NULL;
    int ret = 0;
    if (in_place) {
        args->file = t->file;
    } else {
        ret = target_make_temp(t);
        if ((ret == -EACCES || ret == -EPERM) && !t->temp_name) {
            /*
             * The folder takes no new file from us, the file itself may be written: as
             * qemu-img does, write it in place, under its lock.
             */
            img_error_clear();
            args->file = t->file;
            return fmt->create(args);
        }
        int fd = ret == 0 ? dup(t->temp_fd) : -1;
        if (ret == 0 && fd < 0)
            ret = img_error(-errno, "create: %s", img_strerror(-errno));
        if (ret == 0 && (ret = io_file_from_fd(&temp, fd)) < 0)
            close(fd);
        args->path = t->temp_path;
        args->file = temp;
    }
    if (ret == 0)
        ret = fmt->create(args);
    io_file_close(temp);
    if (ret == 0)
        ret = target_commit(t);
    return ret;
}

static int create_image(const char *path, const char *final_path, const char *format,
                        uint64_t size, const img_opts *opts);

int img_create_final(const char *path, const char *final_path, const char *format, uint64_t size,
                     const img_opts *opts)
{
    img_error_context_push(path);
    struct img_op op;
    img_op_begin(&op, NULL, NULL, NULL);
    int ret = create_image(path, final_path, format, size, opts);
    img_op_end(&op);
    img_error_context_pop();
    return ret;
}

IMG_API int img_create_progress(const char *path, const char *format, uint64_t size,
                                const img_opts *opts, img_progress_fn fn, void *user)
{
    if (!path || !*path)
        return img_error(-EINVAL, "img_create: no file name");
    img_error_context_push(path);
    struct img_op op;
    img_op_begin(&op, NULL, fn, user);
    int ret = create_image(path, path, format, size, opts);
    img_op_end(&op);
    img_error_context_pop();
    return ret;
}

IMG_API int img_create(const char *path, const char *format, uint64_t size, const img_opts *opts)
{
    return img_create_progress(path, format, size, opts, NULL, NULL);
}

static int create_image(const char *path, const char *final_path, const char *format,
                        uint64_t size, const img_opts *opts)
{
    if (!format)
        format = "raw";
    const struct img_format *fmt = format_find(format);
    if (!fmt)
        return img_error(-ENOTSUP, "create: unknown or unsupported format '%s'", format);
    if (!fmt->create)
        return img_error(-ENOTSUP, "Format driver '%s' does not support image creation", format);

    bool overwrite = false, unsafe = false, overwrite_named = false;
    int ret = opts_get_bool(opts, "overwrite", &overwrite);
    if (ret == 0)
        ret = opts_get_bool(opts, "backing_unsafe", &unsafe);
    if (ret == 0)
        ret = opts_get_bool(opts, "overwrite_named", &overwrite_named);
    if (ret < 0)
        return ret;
    if (!overwrite && access(path, F_OK) == 0)
        return img_error(-EEXIST, "create: '%s' already exists", path);

    struct img_create_args args = {
        .path = path,
        .size = size,
        .backing_file = img_opts_get(opts, "backing_file"),
        .backing_fmt = img_opts_get(opts, "backing_fmt"),
        .overwrite_named = overwrite_named,
        .final_path = final_path,
    };
    if (args.backing_fmt && !args.backing_file)
        return img_error(-EINVAL, "create: backing_fmt is set but backing_file is not");
    if (args.backing_file && (!unsafe || size == 0)) {
        uint64_t backing_size = 0;
        ret = probe_backing(path, args.backing_file, args.backing_fmt, &backing_size);
        if (ret < 0)
            return ret;
        if (size == 0)
            args.size = backing_size;
    }

    img_opts *format_opts;
    ret = img_opts_new(&format_opts);
    unsigned i = 0;
    const char *key, *value;
    while (ret == 0 && opts_iter(opts, &i, &key, &value))
        if (!is_core_key(key))
            ret = img_opts_set(format_opts, key, value);
    args.opts = format_opts;
    /* Options are checked against the format's table before any file is touched. */
    if (ret == 0)
        ret = format_check_create_options(fmt, format_opts);
    struct target_file t;
    if (ret == 0)
        ret = target_open(&t, path, "create", NULL);
    if (ret == 0) {
        ret = build(fmt, &t, &args);
        target_close(&t, ret < 0);
    }
    img_opts_free(format_opts);
    return ret;
}
