/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_OPTS_H
#define IMG_OPTS_H

#include <stdbool.h>
#include <stdint.h>

#include "imgutil.h"

/*
 * Typed lookups on string options. Each returns 0 when the key is unset (leaving *out at
 * its default), 0 after storing a parsed value, or -EINVAL with a message naming the option.
 */
int opts_get_u64(const img_opts *opts, const char *key, uint64_t *out);
/* Sizes accept qemu-img's suffixes: k, M, G, T, P, E (powers of 1024), optional "B". */
int opts_get_size(const img_opts *opts, const char *key, uint64_t *out);
/* "on"/"off", "true"/"false", "yes"/"no", "1"/"0". */
int opts_get_bool(const img_opts *opts, const char *key, bool *out);

/* Parses a size with qemu-img's suffixes. Returns 0 or -EINVAL. */
int parse_size(const char *text, uint64_t *out);

/* Iterates all options in insertion order: returns false past the end. */
bool opts_iter(const img_opts *opts, unsigned *index, const char **key, const char **value);

/*
 * Fails with -EINVAL naming the first key of `opts` that is not in the NULL-terminated
 * `allowed` list (for "unknown option" errors).
 */
int opts_check_known(const img_opts *opts, const char *const *allowed, const char *what);

#endif
