/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The shadow: what a reader of the image must see, kept in memory next to the image under
 * test, and the comparisons of an image's content (read through img_pread) against it.
 */
#ifndef WRITE_SHADOW_H
#define WRITE_SHADOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgutil.h"

struct shadow {
    uint8_t *data;
    uint64_t size;
};

/* All return 0, or -1 after printing why to stderr. */
int shadow_init(struct shadow *s, uint64_t size);
/* The first `size` bytes of a raw file, zero-padded where the file is shorter. */
int shadow_load(struct shadow *s, const char *path, uint64_t size);
/* The whole of a raw file. */
int shadow_load_file(struct shadow *s, const char *path);
int shadow_save(const struct shadow *s, const char *path);
int shadow_copy(struct shadow *dst, const struct shadow *src);
/* Growing adds zeros; shrinking drops the tail. */
int shadow_resize(struct shadow *s, uint64_t size);
void shadow_free(struct shadow *s);

/* The byte a reader sees at `offset`: zero past the end. */
uint8_t shadow_at(const struct shadow *s, uint64_t offset);

/*
 * Reads [offset, offset+len) of the image (clipped to the shadow's size) with img_pread and
 * compares it with the shadow. On a difference prints `when`, the first differing offset with
 * expected and actual bytes, and how many bytes differ; returns -1.
 */
int shadow_verify_range(const struct shadow *s, img *image, uint64_t offset, uint64_t len,
                        const char *when);

/*
 * The whole image, read in odd-sized chunks that start and end inside clusters. Also checks
 * that img_get_size() agrees and that a read at the end returns 0.
 */
int shadow_verify_all(const struct shadow *s, img *image, const char *when);

#endif
