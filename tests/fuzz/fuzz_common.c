/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "imgutil.h"

/* Reads at most this much guest data: crafted images may claim petabytes. */
#define FUZZ_READ_LIMIT (64u << 20)
#define FUZZ_STATUS_LIMIT 4096

int fuzz_on_file(const uint8_t *data, size_t size,
                 void (*fn)(const char *path, const uint8_t *data, size_t size))
{
    int fd = memfd_create("fuzz-image", MFD_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0) {
            close(fd);
            return 0;
        }
        done += (size_t)n;
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    fn(path, data, size);
    close(fd);
    return 0;
}

void fuzz_inspect_image(const char *path, const char *format)
{
    img *image;
    if (img_open(&image, path, format, IMG_OPEN_READ_ONLY | IMG_OPEN_NO_BACKING, NULL) < 0)
        return;
    char *json = NULL;
    if (img_info_json(image, IMG_INFO_BACKING_CHAIN, &json) == 0)
        img_free(json);
    if (img_snapshot_list(image, &json) == 0)
        img_free(json);

    int64_t size = img_get_size(image);
    uint64_t offset = 0;
    for (int i = 0; size > 0 && i < FUZZ_STATUS_LIMIT && offset < (uint64_t)size; i++) {
        uint64_t pnum;
        unsigned status;
        int depth;
        uint64_t host;
        if (img_block_status(image, offset, (uint64_t)size - offset, &pnum, &status, &depth,
                             &host) < 0 ||
            pnum == 0)
            break;
        offset += pnum;
    }

    static uint8_t buf[1 << 20];
    uint64_t limit = size > 0 ? (uint64_t)size : 0;
    if (limit > FUZZ_READ_LIMIT)
        limit = FUZZ_READ_LIMIT;
    for (uint64_t off = 0; off < limit; off += sizeof(buf))
        if (img_pread(image, buf, sizeof(buf), off) < 0)
            break;
    /* A read at the far end exercises the last L2 table / block. */
    if (size > (int64_t)sizeof(buf))
        img_pread(image, buf, 4096, (uint64_t)size - 4096);

    char *report = NULL;
    if (img_check(image, 0, &report) == 0)
        img_free(report);
    img_close(image);
}

void fuzz_write_round_trip(img *image, const uint8_t *data, size_t size, int rounds, size_t max_len)
{
    static uint8_t pattern[3 * 65536], back[sizeof(pattern)];
    if (max_len > sizeof(pattern))
        max_len = sizeof(pattern);
    for (size_t i = 0; i < max_len; i++)
        pattern[i] = (uint8_t)(i * 31 + 7);
    int64_t image_size = img_get_size(image);
    /* Offsets come from the last bytes of the input, so the fuzzer can steer them. */
    for (int round = 0; round < rounds && image_size > 0; round++) {
        uint64_t pick = 0;
        for (int b = 0; b < 8 && (size_t)(round * 8 + b) < size; b++)
            pick = pick << 8 | data[size - 1 - (size_t)(round * 8 + b)];
        uint64_t offset = pick % (uint64_t)image_size;
        size_t len = (size_t)((pick >> 40) % max_len) + 1;
        if ((uint64_t)image_size - offset < len)
            len = (size_t)((uint64_t)image_size - offset);
        if (img_pwrite(image, pattern, len, offset) != (int64_t)len)
            continue;
        if (img_pread(image, back, len, offset) == (int64_t)len && memcmp(back, pattern, len) != 0)
            abort(); /* a write that succeeded must read back */
    }
}
