/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_CONVERT_OPTIONS_H
#define IMG_CONVERT_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "imgutil.h"

struct img_format;

/* As qemu-img's -S. */
#define CONVERT_SPARSE_SIZE_MAX (16u << 20)

/* img_convert's own options, parsed (include/imgutil.h documents each). */
struct convert_options {
    uint64_t sparse_size;
    bool compress;
    bool sync;
    bool skip_create;        /* -n: write into the existing target */
    bool target_is_zero;     /* --target-is-zero */
    bool copy_range;         /* -C */
    bool salvage;            /* --salvage */
    bool out_of_order;       /* -W */
    uint64_t num_coroutines; /* -m; 0: sized to the CPUs */
    uint64_t rate_limit;     /* -r, bytes/s; 0: none */
    int salvage_log_fd;      /* -1: none */
    const char *salvage_log_prefix;
    const char *backing_file, *backing_fmt; /* -B, -F (also creation options) */
};

/*
 * Parses and cross-checks the options for a convert to format `fmt`, refusing what qemu-img
 * refuses with its message. Returns 0 or a negative errno.
 */
int convert_options_parse(const img_opts *opts, const struct img_format *fmt,
                          struct convert_options *out);

/* Is `key` one of convert's own options (not passed on to the target's creation)? */
bool convert_option_is_own(const char *key);

#endif
