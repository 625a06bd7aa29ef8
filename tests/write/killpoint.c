/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Deterministic kill points for crash tests, preloaded (LD_PRELOAD) into a program that uses
 * the library: every pwrite(2) of the process is counted, and the one numbered
 * KILLPOINT_AT (1-based) is never made: the process raises SIGKILL instead. With KILLPOINT_AT
 * unset or 0 nothing is killed and, when KILLPOINT_COUNT names a file, the length of every
 * write made is written there, one a line, so that a test can try every kill point in turn.
 *
 * A SIGKILL leaves every completed write in the page cache, so killing just before write N
 * is the state "writes 1..N-1 reached the disk, in order"; fsync calls need no kill points of
 * their own. KILLPOINT_TORN=1 makes write N a torn one instead: its first 512 bytes are
 * written before the kill (a sector is the unit a disk writes atomically).
 */
/* Both pwrite and pwrite64 are defined here: neither may be renamed to the other. */
#undef _FILE_OFFSET_BITS
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off64_t);

static unsigned long write_count;
static unsigned long kill_at;
static int torn;
static FILE *report; /* KILLPOINT_COUNT, when counting */

__attribute__((constructor)) static void killpoint_init(void)
{
    const char *at = getenv("KILLPOINT_AT");
    kill_at = at ? strtoul(at, NULL, 10) : 0;
    const char *t = getenv("KILLPOINT_TORN");
    torn = t && strcmp(t, "1") == 0;
    const char *path = getenv("KILLPOINT_COUNT");
    if (path && !kill_at)
        report = fopen(path, "w");
}

__attribute__((destructor)) static void killpoint_report(void)
{
    if (report)
        fclose(report);
    report = NULL;
}

static pwrite_fn real_pwrite(void)
{
    static pwrite_fn fn;
    if (!fn) {
        /* POSIX's way to turn dlsym's answer into a function pointer. */
        void *sym = dlsym(RTLD_NEXT, "pwrite64");
        memcpy(&fn, &sym, sizeof(fn));
    }
    return fn;
}

static ssize_t counted_pwrite(int fd, const void *buf, size_t len, off64_t offset)
{
    if (kill_at && ++write_count == kill_at) {
        if (torn && len > 512)
            real_pwrite()(fd, buf, 512, offset);
        raise(SIGKILL);
    }
    if (report)
        fprintf(report, "%zu\n", len);
    return real_pwrite()(fd, buf, len, offset);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t offset)
{
    return counted_pwrite(fd, buf, len, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off64_t offset)
{
    return counted_pwrite(fd, buf, len, offset);
}
