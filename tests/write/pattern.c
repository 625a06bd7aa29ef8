/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "pattern.h"

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void rng_seed(struct rng *r, uint64_t seed)
{
    /* xorshift must never hold 0; mixing the seed first also spreads nearby seeds apart. */
    r->state = splitmix64(seed) | 1;
}

uint64_t rng_next(struct rng *r)
{
    uint64_t x = r->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->state = x;
    return x * 0x2545f4914f6cdd1dull;
}

uint64_t rng_below(struct rng *r, uint64_t n)
{
    return n ? rng_next(r) % n : 0;
}

uint64_t rng_range(struct rng *r, uint64_t lo, uint64_t hi)
{
    if (hi <= lo)
        return lo;
    return lo + rng_below(r, hi - lo + 1);
}

static uint64_t pattern_word(uint64_t seed, uint64_t word_index)
{
    return splitmix64(splitmix64(seed) ^ word_index);
}

uint8_t pattern_byte(uint64_t seed, uint64_t offset)
{
    return (uint8_t)(pattern_word(seed, offset >> 3) >> ((offset & 7) * 8));
}

void pattern_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t offset)
{
    size_t i = 0;
    while (i < len) {
        uint64_t pos = offset + i;
        uint64_t word = pattern_word(seed, pos >> 3);
        for (unsigned b = (unsigned)(pos & 7); b < 8 && i < len; b++, i++)
            buf[i] = (uint8_t)(word >> (b * 8));
    }
}
