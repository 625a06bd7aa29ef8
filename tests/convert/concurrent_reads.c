/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Preloaded into imgutil: counts how many large reads (64 KiB or more: chunk reads, not
 * metadata) are in progress at once, and writes the highest count to the file named by
 * CONCURRENT_READS_OUT at exit. Each such read lingers a little so that overlapping ones meet.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define LARGE_READ (64 * 1024)

static atomic_int in_progress, highest;

typedef ssize_t (*pread_fn)(int, void *, size_t, off64_t);

static pread_fn next_pread(const char *name)
{
    /* POSIX's way to turn dlsym's answer into a function pointer. */
    void *sym = dlsym(RTLD_NEXT, name);
    pread_fn fn;
    memcpy(&fn, &sym, sizeof(fn));
    return fn;
}

static ssize_t counted(pread_fn real, int fd, void *buf, size_t len, off64_t offset)
{
    if (len < LARGE_READ)
        return real(fd, buf, len, offset);
    int now = atomic_fetch_add(&in_progress, 1) + 1;
    int seen = atomic_load(&highest);
    while (now > seen && !atomic_compare_exchange_weak(&highest, &seen, now))
        ;
    struct timespec linger = {0, 5 * 1000 * 1000};
    nanosleep(&linger, NULL);
    ssize_t n = real(fd, buf, len, offset);
    atomic_fetch_sub(&in_progress, 1);
    return n;
}

/* The library is built with 64-bit file offsets: its pread() calls are pread64(). */
ssize_t pread64(int fd, void *buf, size_t len, off64_t offset)
{
    static pread_fn real;
    if (!real)
        real = next_pread("pread64");
    return counted(real, fd, buf, len, offset);
}

__attribute__((destructor)) static void report(void)
{
    const char *out = getenv("CONCURRENT_READS_OUT");
    FILE *f = out ? fopen(out, "w") : NULL;
    if (f) {
        fprintf(f, "%d\n", atomic_load(&highest));
        fclose(f);
    }
}
