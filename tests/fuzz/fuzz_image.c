/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Open from bytes -> info -> read every byte -> block status -> check, for one format. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"

#ifndef FUZZ_FORMAT
#define FUZZ_FORMAT NULL /* probe */
#endif

static void inspect(const char *path, const uint8_t *data, size_t size)
{
    (void)data;
    (void)size;
    fuzz_inspect_image(path, FUZZ_FORMAT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_on_file(data, size, inspect);
}
