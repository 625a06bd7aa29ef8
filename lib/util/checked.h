/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_CHECKED_H
#define IMG_CHECKED_H

#include <stdbool.h>
#include <stdint.h>

/* Overflow-checked arithmetic for sizes read from untrusted images: true means overflow. */
static inline bool add_overflows_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_add_overflow(a, b, out);
}
static inline bool mul_overflows_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}

/* Rounds up to a power-of-two alignment; the caller ensures no overflow. */
static inline uint64_t align_up_u64(uint64_t v, uint64_t align)
{
    return (v + align - 1) & ~(align - 1);
}
static inline uint64_t align_down_u64(uint64_t v, uint64_t align)
{
    return v & ~(align - 1);
}
static inline uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}
static inline uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

#endif
