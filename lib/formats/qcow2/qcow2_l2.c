/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* From a guest cluster to its L2 entry: the L1 table, then a cached slice of the L2 table. */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>

#include "error.h"
#include "formats/qcow2/qcow2.h"
#include "util/endian.h"

/*
 * Slices rather than whole tables: with 2 MiB clusters an L2 table is 2 MiB, and a random read
 * should not have to load all of it.
 */
#define L2_SLICE_MAX (64u * 1024)

/* One big-endian table word that a writer may be storing concurrently (see store_word()). */
static uint64_t load_word(const uint8_t *p)
{
    uint64_t be = __atomic_load_n((const uint64_t *)(const void *)p, __ATOMIC_RELAXED);
    return load_be64(&be);
}

uint32_t qcow2_l2_slice_bytes(const struct qcow2_state *s)
{
    return s->cluster_size < L2_SLICE_MAX ? s->cluster_size : L2_SLICE_MAX;
}

void qcow2_l2_cursor_release(struct qcow2_state *s, struct qcow2_l2_cursor *cur)
{
    if (cur->slice)
        qcow2_cache_put(s->l2_cache, cur->slice);
    cur->slice = NULL;
    cur->data = NULL;
}

int qcow2_l2_lookup(struct qcow2_state *s, struct qcow2_l2_cursor *cur, uint64_t guest_cluster,
                    uint64_t *entry, uint64_t *bitmap, bool *no_l2)
{
    *entry = 0;
    *bitmap = 0;
    *no_l2 = false;
    uint64_t l1_index = guest_cluster >> s->l2_bits;
    /*
     * Lockless against writers: the size before the table, since a growing table is published
     * before its size (qcow2_l1_grow), and each entry as one word (qcow2_l2_prepare).
     */
    if (l1_index >= __atomic_load_n(&s->l1_size, __ATOMIC_ACQUIRE)) {
        *no_l2 = true;
        return 0;
    }
    const uint64_t *l1 = __atomic_load_n(&s->l1_table, __ATOMIC_ACQUIRE);
    uint64_t l2_offset = __atomic_load_n(&l1[l1_index], __ATOMIC_ACQUIRE) & QCOW2_L1E_OFFSET_MASK;
    if (l2_offset == 0) {
        *no_l2 = true;
        return 0;
    }
    if (l2_offset & (s->cluster_size - 1))
        return img_error(-EIO,
                         "qcow2: L2 table offset 0x%" PRIx64 " is not cluster-aligned (L1 index "
                         "%" PRIu64 ")",
                         l2_offset, l1_index);

    uint32_t slice_bytes = qcow2_cache_slice_bytes(s->l2_cache);
    uint64_t byte = (guest_cluster & (s->l2_entries - 1)) * s->l2_entry_bytes;
    uint64_t slice_offset = l2_offset + (byte & ~(uint64_t)(slice_bytes - 1));
    if (!cur->slice || cur->slice_offset != slice_offset) {
        qcow2_l2_cursor_release(s, cur);
        int ret = qcow2_cache_get(s->l2_cache, slice_offset, &cur->slice, &cur->data);
        if (ret < 0)
            return ret;
        cur->slice_offset = slice_offset;
    }
    const uint8_t *p = cur->data + (byte & (slice_bytes - 1));
    if (!s->extended_l2) {
        *entry = load_word(p);
        return 0;
    }
    /*
     * A writer may change the entry and its bitmap while we look (it holds s->lock, we do
     * not): read both between two equal, even values of the update count.
     */
    for (;;) {
        uint64_t seq = __atomic_load_n(&s->l2_update_seq, __ATOMIC_ACQUIRE);
        if (seq & 1) {
            sched_yield();
            continue;
        }
        *entry = load_word(p);
        *bitmap = load_word(p + 8);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&s->l2_update_seq, __ATOMIC_RELAXED) == seq)
            return 0;
    }
}
