/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * read_pieces IMAGE FORMAT RAW: reads IMAGE through the public API in pieces of random sizes
 * at random offsets, from two threads at once, and compares every piece with the same bytes
 * of RAW (the expected guest content). Pieces cross, start and end inside compressed units
 * far larger than themselves, which the core keeps decompressed between reads.
 * Exits 0 when every piece matches, 1 otherwise.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgutil.h"

#define PIECES 50
#define PIECE_MAX (3u << 19)

struct reader {
    img *image;
    const uint8_t *expected;
    uint64_t size;
    unsigned seed;
    int failures;
};

static uint64_t next_random(unsigned *state)
{
    *state = *state * 1103515245u + 12345u;
    uint64_t hi = *state >> 8;
    *state = *state * 1103515245u + 12345u;
    return hi << 24 | (*state >> 8);
}

static void *read_pieces(void *arg)
{
    struct reader *r = arg;
    uint8_t *buf = malloc(PIECE_MAX);
    if (!buf) {
        r->failures++;
        return NULL;
    }
    for (int i = 0; i < PIECES; i++) {
        uint64_t offset = next_random(&r->seed) % r->size;
        size_t len = (size_t)(next_random(&r->seed) % PIECE_MAX) + 1;
        if (len > r->size - offset)
            len = (size_t)(r->size - offset);
        int64_t got = img_pread(r->image, buf, len, offset);
        if (got != (int64_t)len || memcmp(buf, r->expected + offset, len) != 0) {
            fprintf(stderr, "piece of %zu bytes at %llu: %s\n", len, (unsigned long long)offset,
                    got < 0 ? img_last_error() : "differs from the expected content");
            r->failures++;
        }
    }
    free(buf);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: read_pieces IMAGE FORMAT RAW\n");
        return 2;
    }
    FILE *f = fopen(argv[3], "rb");
    if (!f) {
        perror(argv[3]);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *expected = malloc(n > 0 ? (size_t)n : 1);
    if (!expected || fread(expected, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        fprintf(stderr, "cannot read %s\n", argv[3]);
        return 1;
    }
    fclose(f);
    img *image;
    if (img_open(&image, argv[1], argv[2], IMG_OPEN_READ_ONLY, NULL) < 0) {
        fprintf(stderr, "%s\n", img_last_error());
        return 1;
    }
    if (img_get_size(image) != n) {
        fprintf(stderr, "size %lld, expected %ld\n", (long long)img_get_size(image), n);
        return 1;
    }
    struct reader readers[2] = {{image, expected, (uint64_t)n, 1, 0},
                                {image, expected, (uint64_t)n, 2, 0}};
    pthread_t t;
    int started = pthread_create(&t, NULL, read_pieces, &readers[1]) == 0;
    read_pieces(&readers[0]);
    if (started)
        pthread_join(t, NULL);
    img_close(image);
    free(expected);
    int failures = readers[0].failures + readers[1].failures + !started;
    printf("%d pieces, %d failed\n", 2 * PIECES, failures);
    return failures ? 1 : 0;
}
