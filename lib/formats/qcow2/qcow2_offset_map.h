/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_QCOW2_OFFSET_MAP_H
#define IMG_QCOW2_OFFSET_MAP_H

/*
 * A set of non-zero host offsets, each numbered in the order it was first added: walks over
 * L1 tables use it to visit each L2 table once however often it is named, which keeps the work
 * on crafted images (one table named millions of times) proportional to the file.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qcow2_offset_map {
    uint64_t *keys;  /* 0: empty slot */
    size_t *numbers; /* order of first addition */
    size_t cap;      /* slots, a power of two */
    size_t count;
    size_t limit; /* most offsets accepted */
};

/* An empty map that accepts at most `limit` offsets. */
void qcow2_offset_map_init(struct qcow2_offset_map *m, size_t limit);
void qcow2_offset_map_free(struct qcow2_offset_map *m);

/*
 * Finds or adds `offset` (non-zero); *number receives its number, *added whether it is new.
 * -EFBIG past the limit, -ENOMEM.
 */
int qcow2_offset_map_add(struct qcow2_offset_map *m, uint64_t offset, size_t *number, bool *added);

#endif
