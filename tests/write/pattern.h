/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Deterministic randomness for the write tests: a seeded generator for choices, and data
 * patterns whose bytes depend on the guest offset they are written to, so that data landing in
 * the wrong place (a shifted copy, another cluster's data) never compares equal by chance.
 */
#ifndef WRITE_PATTERN_H
#define WRITE_PATTERN_H

#include <stddef.h>
#include <stdint.h>

struct rng {
    uint64_t state;
};

void rng_seed(struct rng *r, uint64_t seed);
uint64_t rng_next(struct rng *r);
/* A value in [0, n); 0 when n is 0. */
uint64_t rng_below(struct rng *r, uint64_t n);
/* A value in [lo, hi]. */
uint64_t rng_range(struct rng *r, uint64_t lo, uint64_t hi);

/* The bytes that a write with data seed `seed` puts at guest offsets [offset, offset+len). */
void pattern_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t offset);

/* The value of one byte of that pattern. */
uint8_t pattern_byte(uint64_t seed, uint64_t offset);

#endif
