/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IO_TEST_UTIL_H
#define IO_TEST_UTIL_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "io/io.h"

/*
 * Opens a new empty file in `dir` (default: $TMPDIR or /tmp) for reading and writing. The name
 * is unlinked at once, so nothing is left behind when a test fails. Returns NULL when `dir`
 * cannot hold files (the caller then skips).
 */
static inline struct io_file *open_temp_in(const char *dir, int oflags)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/imgutil-io-test-XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    close(fd);
    struct io_file *f = NULL;
    int ret = io_file_open(&f, path, oflags, 0600);
    unlink(path);
    return ret < 0 ? NULL : f;
}

static inline const char *temp_dir(void)
{
    const char *dir = getenv("TMPDIR");
    return dir && *dir ? dir : "/tmp";
}

static inline struct io_file *open_temp(void)
{
    return open_temp_in(temp_dir(), O_RDWR);
}

/* xorshift: reproducible data and offsets from a seed. */
static inline uint64_t next_random(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static inline void fill_random(void *buf, size_t len, uint64_t seed)
{
    uint64_t s = seed | 1;
    unsigned char *p = buf;
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)next_random(&s);
}

static inline int all_bytes_are(const void *buf, size_t len, unsigned char value)
{
    const unsigned char *p = buf;
    for (size_t i = 0; i < len; i++)
        if (p[i] != value)
            return 0;
    return 1;
}

#endif
