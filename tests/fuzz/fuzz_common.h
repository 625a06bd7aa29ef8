/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "imgutil.h"

/*
 * Puts the fuzzer's bytes in an anonymous memory file and runs `fn` on a path that opens it
 * ("/proc/self/fd/N"), with the bytes too (to steer what `fn` does). Returns 0, as libFuzzer
 * wants.
 */
int fuzz_on_file(const uint8_t *data, size_t size,
                 void (*fn)(const char *path, const uint8_t *data, size_t size));

/* Opens, describes, reads every byte, walks block status and checks. Never writes. */
void fuzz_inspect_image(const char *path, const char *format);

/*
 * Writes `rounds` patterns at offsets the last bytes of the input choose, each up to `max_len`
 * bytes; a write that succeeds must read back (abort() otherwise, which the fuzzer reports).
 */
void fuzz_write_round_trip(img *image, const uint8_t *data, size_t size, int rounds,
                           size_t max_len);

#endif
