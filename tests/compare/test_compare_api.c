/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_compare(): results and offsets (identical, content, status and size mismatches, a tail
 * of zeros or of data past the shorter image), refusals, and cancellation through the first
 * image's progress callback. Images are made here with the library; the CLI test compares
 * with qemu-img.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <imgutil.h>

#include "api_check.h"

#define MiB (1024u * 1024u)

static char dir[] = "/tmp/imgutil-compare-XXXXXX";

/* A new image of `format` and `size` in the test folder, open read-write. */
static img *make(const char *name, const char *format, uint64_t size)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    img *image = NULL;
    if (img_create(path, format, size, NULL) < 0 ||
        img_open(&image, path, format, IMG_OPEN_READ_WRITE, NULL) < 0) {
        fprintf(stderr, "cannot make %s: %s\n", path, img_last_error());
        exit(1);
    }
    return image;
}

static void fill(img *image, unsigned char byte, size_t len, uint64_t offset)
{
    unsigned char *buf = malloc(len);
    memset(buf, byte, len);
    CHECK(buf && img_pwrite(image, buf, len, offset) == (int64_t)len, "write");
    free(buf);
}

static void expect(img *a, img *b, unsigned flags, int want, uint64_t want_offset)
{
    uint64_t offset = 12345;
    int ret = img_compare(a, b, flags, &offset);
    CHECK(ret == want, "compare (flags %u): %d, want %d", flags, ret, want);
    CHECK(offset == want_offset, "compare (flags %u): offset %llu, want %llu", flags,
          (unsigned long long)offset, (unsigned long long)want_offset);
}

static int stop_at_once(void *user, uint64_t done, uint64_t total)
{
    (void)done;
    (void)total;
    ++*(int *)user;
    return 1;
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    img *a = make("a.qcow2", "qcow2", 8 * MiB);
    img *same = make("same.raw", "raw", 8 * MiB);
    img *zeros = make("zeros.qcow2", "qcow2", 8 * MiB);
    img *diff = make("diff.qcow2", "qcow2", 8 * MiB);
    img *longer = make("longer.qcow2", "qcow2", 10 * MiB);
    fill(a, 1, 65536, 0);
    fill(a, 2, 3 * MiB, 4 * MiB);
    fill(same, 1, 65536, 0);
    fill(same, 2, 3 * MiB, 4 * MiB);
    fill(zeros, 1, 65536, 0);
    fill(zeros, 2, 3 * MiB, 4 * MiB);
    fill(zeros, 0, 65536, 2 * MiB); /* zeros stored as data: the content is the same */
    fill(diff, 1, 65536, 0);
    fill(diff, 2, 3 * MiB, 4 * MiB);
    fill(diff, 3, 1, 5 * MiB + 1000);
    fill(longer, 1, 65536, 0);
    fill(longer, 2, 3 * MiB, 4 * MiB);

    expect(a, a, 0, IMG_COMPARE_IDENTICAL, 0);
    expect(a, a, IMG_COMPARE_STRICT, IMG_COMPARE_IDENTICAL, 0);
    expect(a, same, 0, IMG_COMPARE_IDENTICAL, 0);
    expect(a, zeros, 0, IMG_COMPARE_IDENTICAL, 0);
    /* The first run where a has nothing and zeros has data. */
    expect(a, zeros, IMG_COMPARE_STRICT, IMG_COMPARE_STATUS_MISMATCH, 2 * MiB);
    /* The sector holding the first different byte. */
    expect(a, diff, 0, IMG_COMPARE_CONTENT_MISMATCH, 5 * MiB + 512);
    expect(diff, a, IMG_COMPARE_STRICT, IMG_COMPARE_CONTENT_MISMATCH, 5 * MiB + 512);
    /* A longer image whose tail reads as zeros, then one with data in it. */
    expect(a, longer, 0, IMG_COMPARE_IDENTICAL, 0);
    expect(longer, a, IMG_COMPARE_STRICT, IMG_COMPARE_SIZE_MISMATCH, 0);
    fill(longer, 4, 10, 9 * MiB + 700);
    expect(longer, a, 0, IMG_COMPARE_CONTENT_MISMATCH, 9 * MiB + 512);
    CHECK(img_compare(a, diff, 0, NULL) == IMG_COMPARE_CONTENT_MISMATCH, "NULL offset");

    /* Refusals. */
    CHECK(img_compare(NULL, a, 0, NULL) == -EINVAL, "NULL image");
    CHECK(img_compare(a, a, 0x100, NULL) == -EINVAL && strstr(img_last_error(), "flags"),
          "unknown flags");

    /* Cancellation: a's callback stops the compare, b's is not asked. */
    int calls = 0;
    CHECK(img_set_progress(a, stop_at_once, &calls) == 0, "set progress");
    CHECK(img_compare(a, same, 0, NULL) == -ECANCELED, "cancelled");
    CHECK(calls == 1, "callback called %d times", calls);
    CHECK(img_set_progress(a, NULL, NULL) == 0, "unset progress");
    expect(a, same, 0, IMG_COMPARE_IDENTICAL, 0);

    img_close(a);
    img_close(same);
    img_close(zeros);
    img_close(diff);
    img_close(longer);
    const char *names[] = {"a.qcow2", "same.raw", "zeros.qcow2", "diff.qcow2", "longer.qcow2"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[256];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
    return failures ? 1 : 0;
}
