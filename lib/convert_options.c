/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_convert's own options (those that are not the target's creation options), checked as
 * qemu-img 7.2's convert checks its flags, with its messages.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "convert_options.h"
#include "error.h"
#include "formats/format.h"
#include "opts.h"

/* The keys convert reads itself; the others are the target's creation options. */
static const char *const convert_keys[] = {
    "sparse_size",    "compress",           "sync",
    "size",           "min_size",           "skip_create",
    "target_is_zero", "rate_limit",         "copy_range",
    "salvage",        "out_of_order",       "num_coroutines",
    "salvage_log_fd", "salvage_log_prefix", NULL,
};

/* Read by convert and passed on to create: what -B and -F set. */
static bool is_backing_key(const char *key)
{
    return strcmp(key, "backing_file") == 0 || strcmp(key, "backing_fmt") == 0;
}

bool convert_option_is_own(const char *key)
{
    for (size_t i = 0; convert_keys[i]; i++)
        if (strcmp(key, convert_keys[i]) == 0)
            return true;
    return false;
}

/* qemu-img's bound for -m. */
#define COROUTINES_MAX 16

int convert_options_parse(const img_opts *opts, const struct img_format *fmt,
                          struct convert_options *out)
{
    *out = (struct convert_options){.sparse_size = 4096};
    bool sparse_given = img_opts_get(opts, "sparse_size") != NULL;
    int ret = opts_get_size(opts, "sparse_size", &out->sparse_size);
    if (ret == 0)
        ret = opts_get_bool(opts, "compress", &out->compress);
    if (ret == 0)
        ret = opts_get_bool(opts, "sync", &out->sync);
    if (ret == 0)
        ret = opts_get_bool(opts, "skip_create", &out->skip_create);
    if (ret == 0)
        ret = opts_get_bool(opts, "target_is_zero", &out->target_is_zero);
    if (ret == 0)
        ret = opts_get_bool(opts, "copy_range", &out->copy_range);
    if (ret == 0)
        ret = opts_get_bool(opts, "salvage", &out->salvage);
    if (ret == 0)
        ret = opts_get_bool(opts, "out_of_order", &out->out_of_order);
    if (ret == 0)
        ret = opts_get_u64(opts, "num_coroutines", &out->num_coroutines);
    uint64_t log_fd = UINT64_MAX;
    if (ret == 0)
        ret = opts_get_u64(opts, "salvage_log_fd", &log_fd);
    out->salvage_log_fd = log_fd > INT32_MAX ? -1 : (int)log_fd;
    out->salvage_log_prefix = img_opts_get(opts, "salvage_log_prefix");
    if (ret < 0)
        return ret;
    if (img_opts_get(opts, "rate_limit") &&
        parse_size(img_opts_get(opts, "rate_limit"), &out->rate_limit) < 0)
        return img_error(-EINVAL, "Invalid rate limit specified. You may use k, M, G, T, P or E "
                                  "suffixes for kilobytes, megabytes, gigabytes, terabytes, "
                                  "petabytes and exabytes.");
    if (img_opts_get(opts, "num_coroutines") &&
        (out->num_coroutines < 1 || out->num_coroutines > COROUTINES_MAX))
        return img_error(-EINVAL,
                         "Invalid number of coroutines. Allowed number of coroutines is "
                         "between 1 and %d",
                         COROUTINES_MAX);
    out->backing_file = img_opts_get(opts, "backing_file");
    out->backing_fmt = img_opts_get(opts, "backing_fmt");

    /* In qemu-img's order. */
    if (out->compress && out->copy_range)
        return img_error(-EINVAL, "Cannot enable copy offloading when -c is used");
    if (sparse_given && out->copy_range)
        return img_error(-EINVAL, "Cannot enable copy offloading when -S is used");
    if (out->copy_range && out->salvage)
        return img_error(-EINVAL, "Cannot use copy offloading in salvaging mode");
    if (out->skip_create) {
        unsigned i = 0;
        const char *key, *value;
        while (opts_iter(opts, &i, &key, &value))
            if (!convert_option_is_own(key) && !is_backing_key(key) &&
                strcmp(key, "overwrite") != 0)
                return img_error(-EINVAL, "-o has no effect when skipping image creation");
    }
    if (out->target_is_zero && !out->skip_create)
        return img_error(-EINVAL, "--target-is-zero requires use of -n flag");
    /* Formats that read backing files may still create none (vpc, vdi, vhdx): as qemu-img. */
    bool creates_backing =
        fmt->create_options && opt_table_find(fmt->create_options, "backing_file") != NULL;
    if (out->backing_file && !out->skip_create && !creates_backing)
        return img_error(-ENOTSUP, "Backing file not supported for file format '%s'", fmt->name);
    if (out->target_is_zero && out->backing_file)
        return img_error(-EINVAL, "Cannot use --target-is-zero when the destination image has a "
                                  "backing file");
    if (out->backing_file && !out->skip_create && !out->backing_fmt)
        return img_error(-EINVAL, "Use of backing file requires explicit backing format");
    if (out->sparse_size % 512 || out->sparse_size > CONVERT_SPARSE_SIZE_MAX)
        return img_error(-EINVAL,
                         "convert: sparse_size must be a multiple of 512 up to %u (got %llu)",
                         CONVERT_SPARSE_SIZE_MAX, (unsigned long long)out->sparse_size);
    if (out->compress && !format_has(fmt, FORMAT_COMPRESSED_WRITES))
        return img_error(-ENOTSUP, "convert: format %s does not support compression", fmt->name);
    return 0;
}
