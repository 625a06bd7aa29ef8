/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 repair on a crafted image, as `qemu-img check -r all` runs it: open for checking
 * (corrupt and dirty images accepted), repair everything, check again, and if the image is
 * writable afterwards, write a pattern that must read back. A repair may give up on a hostile
 * image, but never by crashing, and never by leaving metadata that a write then overwrites.
 */
#include <stdint.h>

#include "fuzz_common.h"
#include "imgutil.h"

static void repair_and_write(const char *path, const uint8_t *data, size_t size)
{
    img *image;
    unsigned flags = IMG_OPEN_READ_WRITE | IMG_OPEN_CHECK | IMG_OPEN_NO_BACKING;
    if (img_open(&image, path, "qcow2", flags, NULL) < 0)
        return;
    char *report = NULL;
    if (img_check(image, IMG_CHECK_REPAIR_LEAKS | IMG_CHECK_REPAIR_ERRORS, &report) == 0)
        img_free(report);
    report = NULL;
    if (img_check(image, 0, &report) == 0)
        img_free(report);
    fuzz_write_round_trip(image, data, size, 1, 2 * 65536 + 512);
    img_close(image);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_on_file(data, size, repair_and_write);
}
