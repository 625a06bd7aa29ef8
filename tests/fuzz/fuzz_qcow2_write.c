/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 write round trip on a crafted image: open read-write, write a pattern at places the
 * input chooses, read it back (must match exactly, or the write must have failed cleanly),
 * then check the metadata.
 */
#include <stdint.h>

#include "fuzz_common.h"
#include "imgutil.h"

static void write_and_check(const char *path, const uint8_t *data, size_t size)
{
    img *image;
    if (img_open(&image, path, "qcow2", IMG_OPEN_READ_WRITE | IMG_OPEN_NO_BACKING, NULL) < 0)
        return;
    fuzz_write_round_trip(image, data, size, 3, 3 * 65536);
    char *report = NULL;
    if (img_check(image, 0, &report) == 0)
        img_free(report);
    img_close(image);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_on_file(data, size, write_and_check);
}
