/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_UTIL_ARRAY_H
#define IMG_UTIL_ARRAY_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* An empty array first gets room for this many items: small arrays do not realloc per append. */
#define ARRAY_MIN_ITEMS 16

/*
 * Makes room for at least `need` items in a heap array of `item_size`-byte items (item_size
 * above zero) whose capacity in items is `*cap`. `items_ptr` is the address of the array's
 * pointer (any `T **`); the pointer is read and written with memcpy so one function serves every
 * item type without breaking aliasing rules.
 *
 * The capacity doubles from ARRAY_MIN_ITEMS until it covers `need`, so appending one item at a
 * time costs amortised constant time. Byte counts above PTRDIFF_MAX (which no allocation can
 * satisfy, and whose multiplication may wrap) are refused before allocating.
 *
 * Returns 0, or -ENOMEM with this thread's message set; on failure the array and `*cap` are
 * unchanged, so the caller still owns (and frees) the old array. Callers use ARRAY_RESERVE.
 */
static inline int array_reserve_items(void *items_ptr, size_t *cap, size_t need, size_t item_size)
{
    if (need <= *cap)
        return 0;
    const size_t max_items = PTRDIFF_MAX / item_size;
    if (need > max_items)
        return img_error(-ENOMEM, "out of memory: an array of %zu items of %zu bytes is too large",
                         need, item_size);
    size_t grown = *cap ? *cap : ARRAY_MIN_ITEMS;
    if (grown > max_items)
        grown = need;
    while (grown < need)
        grown = grown <= max_items / 2 ? grown * 2 : max_items;
    void *old;
    memcpy(&old, items_ptr, sizeof(old));
    void *p = realloc(old, grown * item_size);
    if (!p)
        return img_error(-ENOMEM, "out of memory: cannot grow an array to %zu items of %zu bytes",
                         grown, item_size);
    memcpy(items_ptr, &p, sizeof(p));
    *cap = grown;
    return 0;
}

/*
 * ARRAY_RESERVE(items, cap, need): makes `items` (an lvalue `T *`, NULL when empty) hold at
 * least `need` items, `cap` (an lvalue size_t) being its capacity in items. The item size comes
 * from the pointer's type, so it cannot disagree with the array. Returns as array_reserve_items.
 *
 *     if ((ret = ARRAY_RESERVE(list->v, list->cap, list->n + 1)) < 0)
 *         return ret;
 *     list->v[list->n++] = item;
 */
#define ARRAY_RESERVE(items, cap, need)                                                            \
    array_reserve_items(&(items), &(cap), (need), sizeof(*(items)))

#endif
