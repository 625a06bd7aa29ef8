/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "shadow.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Reads in chunks of these sizes: odd, so that every read starts and ends at a new place. */
static const size_t odd_chunks[] = {4097, 65535, 511, 131073, 1, 1048583, 3, 262147, 77777};
#define ODD_CHUNK_COUNT (sizeof(odd_chunks) / sizeof(odd_chunks[0]))
#define VERIFY_BUFFER (4u << 20)

int shadow_init(struct shadow *s, uint64_t size)
{
    s->data = calloc(1, size ? (size_t)size : 1);
    s->size = size;
    if (!s->data) {
        fprintf(stderr, "shadow: out of memory for %" PRIu64 " bytes\n", size);
        return -1;
    }
    return 0;
}

int shadow_load(struct shadow *s, const char *path, uint64_t size)
{
    if (shadow_init(s, size) < 0)
        return -1;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "shadow: cannot open %s: %s\n", path, strerror(errno));
        shadow_free(s);
        return -1;
    }
    size_t n = fread(s->data, 1, (size_t)size, f);
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        fprintf(stderr, "shadow: cannot read %s (%zu bytes read)\n", path, n);
        shadow_free(s);
        return -1;
    }
    return 0;
}

int shadow_load_file(struct shadow *s, const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        fprintf(stderr, "shadow: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return shadow_load(s, path, (uint64_t)st.st_size);
}

int shadow_save(const struct shadow *s, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "shadow: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t n = fwrite(s->data, 1, (size_t)s->size, f);
    if (fclose(f) != 0 || n != s->size) {
        fprintf(stderr, "shadow: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

int shadow_copy(struct shadow *dst, const struct shadow *src)
{
    if (shadow_init(dst, src->size) < 0)
        return -1;
    memcpy(dst->data, src->data, (size_t)src->size);
    return 0;
}

int shadow_resize(struct shadow *s, uint64_t size)
{
    uint8_t *p = realloc(s->data, size ? (size_t)size : 1);
    if (!p) {
        fprintf(stderr, "shadow: out of memory for %" PRIu64 " bytes\n", size);
        return -1;
    }
    if (size > s->size)
        memset(p + s->size, 0, (size_t)(size - s->size));
    s->data = p;
    s->size = size;
    return 0;
}

void shadow_free(struct shadow *s)
{
    free(s->data);
    s->data = NULL;
    s->size = 0;
}

uint8_t shadow_at(const struct shadow *s, uint64_t offset)
{
    return offset < s->size ? s->data[offset] : 0;
}

static void report_difference(const struct shadow *s, const uint8_t *got, uint64_t offset,
                              size_t len, const char *when)
{
    size_t first = 0;
    while (got[first] == s->data[offset + first])
        first++;
    size_t last = len - 1;
    while (got[last] == s->data[offset + last])
        last--;
    size_t differing = 0;
    bool got_zero = true;
    for (size_t i = first; i <= last; i++) {
        differing += got[i] != s->data[offset + i];
        got_zero = got_zero && got[i] == 0;
    }
    fprintf(stderr,
            "%s: content differs at guest offset %" PRIu64 " (0x%" PRIx64 "): expected 0x%02x, "
            "img_pread gave 0x%02x; %zu of the bytes in [0x%" PRIx64 ", 0x%" PRIx64 "] differ%s\n",
            when, offset + first, offset + first, s->data[offset + first], got[first], differing,
            offset + first, offset + last, got_zero ? " (the image reads zeros there)" : "");
}

int shadow_verify_range(const struct shadow *s, img *image, uint64_t offset, uint64_t len,
                        const char *when)
{
    if (offset >= s->size)
        return 0;
    if (len > s->size - offset)
        len = s->size - offset;
    uint8_t *buf = malloc(len < VERIFY_BUFFER ? (size_t)len + 1 : VERIFY_BUFFER);
    if (!buf) {
        fprintf(stderr, "%s: out of memory\n", when);
        return -1;
    }
    int ret = 0;
    while (len && ret == 0) {
        size_t n = len < VERIFY_BUFFER ? (size_t)len : VERIFY_BUFFER;
        int64_t got = img_pread(image, buf, n, offset);
        if (got != (int64_t)n) {
            fprintf(stderr,
                    "%s: img_pread(offset=%" PRIu64 ", len=%zu) returned %" PRId64 " (%s): %s\n",
                    when, offset, n, got, got < 0 ? img_strerror((int)got) : "short read",
                    got < 0 ? img_last_error() : "");
            ret = -1;
        } else if (memcmp(buf, s->data + offset, n) != 0) {
            report_difference(s, buf, offset, n, when);
            ret = -1;
        }
        offset += n;
        len -= n;
    }
    free(buf);
    return ret;
}

int shadow_verify_all(const struct shadow *s, img *image, const char *when)
{
    int64_t size = img_get_size(image);
    if (size < 0 || (uint64_t)size != s->size) {
        fprintf(stderr, "%s: img_get_size() = %" PRId64 ", expected %" PRIu64 "\n", when, size,
                s->size);
        return -1;
    }
    uint64_t offset = 0;
    for (size_t i = 0; offset < s->size; i++) {
        size_t len = odd_chunks[i % ODD_CHUNK_COUNT];
        if (shadow_verify_range(s, image, offset, len, when) < 0)
            return -1;
        offset += len;
    }
    uint8_t byte;
    int64_t got = img_pread(image, &byte, 1, s->size);
    if (got != 0) {
        fprintf(stderr, "%s: img_pread at the end of the image returned %" PRId64 ", not 0\n", when,
                got);
        return -1;
    }
    return 0;
}
