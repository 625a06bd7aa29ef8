/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* An open-addressing hash set of host offsets (see qcow2_offset_map.h). */
#include <errno.h>
#include <stdlib.h>

#include "formats/qcow2/qcow2_offset_map.h"

void qcow2_offset_map_init(struct qcow2_offset_map *m, size_t limit)
{
    m->keys = NULL;
    m->numbers = NULL;
    m->cap = m->count = 0;
    m->limit = limit;
}

void qcow2_offset_map_free(struct qcow2_offset_map *m)
{
    free(m->keys);
    free(m->numbers);
    qcow2_offset_map_init(m, m->limit);
}

static size_t slot_of(const struct qcow2_offset_map *m, uint64_t key)
{
    /* Offsets are multiples of 512 at least: mix the bits before masking. */
    uint64_t h = key * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 17) & (m->cap - 1);
}

static size_t find_slot(const struct qcow2_offset_map *m, uint64_t key)
{
    size_t i = slot_of(m, key);
    while (m->keys[i] && m->keys[i] != key)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static int grow(struct qcow2_offset_map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    uint64_t *keys = calloc(cap, sizeof(*keys));
    size_t *numbers = malloc(cap * sizeof(*numbers));
    if (!keys || !numbers) {
        free(keys);
        free(numbers);
        return -ENOMEM;
    }
    struct qcow2_offset_map next = {keys, numbers, cap, m->count, m->limit};
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t j = find_slot(&next, m->keys[i]);
        keys[j] = m->keys[i];
        numbers[j] = m->numbers[i];
    }
    free(m->keys);
    free(m->numbers);
    *m = next;
    return 0;
}

int qcow2_offset_map_add(struct qcow2_offset_map *m, uint64_t offset, size_t *number, bool *added)
{
    *added = false;
    if (m->cap) {
        size_t i = find_slot(m, offset);
        if (m->keys[i]) {
            *number = m->numbers[i];
            return 0;
        }
    }
    if (m->count >= m->limit)
        return -EFBIG;
    /* At most half full, so that probes stay short. */
    if ((m->count + 1) * 2 > m->cap) {
        int ret = grow(m);
        if (ret < 0)
            return ret;
    }
    size_t i = find_slot(m, offset);
    m->keys[i] = offset;
    m->numbers[i] = m->count;
    *number = m->count++;
    *added = true;
    return 0;
}
