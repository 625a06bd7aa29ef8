/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 write round trip on a crafted image: open read-write, write a pattern at places the
 * input chooses, read it back (must match exactly, or the write must have failed cleanly),
 * then check the metadata.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "imgutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd;
    const char *path = fuzz_bytes_to_path(data, size, &fd);
    if (!path)
        return 0;
    img *image;
    if (img_open(&image, path, "qcow2", IMG_OPEN_READ_WRITE | IMG_OPEN_NO_BACKING, NULL) == 0) {
        int64_t image_size = img_get_size(image);
        static uint8_t pattern[3 * 65536], back[sizeof(pattern)];
        for (size_t i = 0; i < sizeof(pattern); i++)
            pattern[i] = (uint8_t)(i * 31 + 7);
        /* Offsets come from the last bytes of the input, so the fuzzer can steer them. */
        for (int round = 0; round < 3 && image_size > 0; round++) {
            uint64_t pick = 0;
            for (int b = 0; b < 8 && (size_t)(round * 8 + b) < size; b++)
                pick = pick << 8 | data[size - 1 - (size_t)(round * 8 + b)];
            uint64_t offset = pick % (uint64_t)image_size;
            size_t len = (size_t)((pick >> 40) % sizeof(pattern)) + 1;
            if ((uint64_t)image_size - offset < len)
                len = (size_t)((uint64_t)image_size - offset);
            if (img_pwrite(image, pattern, len, offset) != (int64_t)len)
                continue;
            if (img_pread(image, back, len, offset) == (int64_t)len &&
                memcmp(back, pattern, len) != 0)
                abort(); /* a write that succeeded must read back */
        }
        char *report = NULL;
        if (img_check(image, 0, &report) == 0)
            img_free(report);
        img_close(image);
    }
    fuzz_release(fd);
    return 0;
}
