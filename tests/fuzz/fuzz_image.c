/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Open from bytes -> info -> read every byte -> block status -> check, for one format. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"

#ifndef FUZZ_FORMAT
#define FUZZ_FORMAT NULL /* probe */
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd;
    const char *path = fuzz_bytes_to_path(data, size, &fd);
    if (!path)
        return 0;
    fuzz_inspect_image(path, FUZZ_FORMAT);
    fuzz_release(fd);
    return 0;
}
