/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

/*
 * Puts the fuzzer's bytes in an anonymous memory file and returns a path that opens it
 * ("/proc/self/fd/N"), or NULL. fuzz_release() closes it.
 */
const char *fuzz_bytes_to_path(const uint8_t *data, size_t size, int *fd_out);
void fuzz_release(int fd);

/* Opens, describes, reads every byte, walks block status and checks. Never writes. */
void fuzz_inspect_image(const char *path, const char *format);

#endif
