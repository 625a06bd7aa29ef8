/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "proc_locks.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

/* QEMU's bytes all lie below this; a lock reaching past it is listed up to it. */
#define LOCK_BYTES_SEEN 256

int proc_locked_bytes(const char *path, char *out, size_t size)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -1;
    /* The kernel names the file as "MAJOR:MINOR:INODE", the device numbers in hex. */
    char want[64];
    snprintf(want, sizeof(want), "%02x:%02x:%" PRIu64, major(st.st_dev), minor(st.st_dev),
             (uint64_t)st.st_ino);
    FILE *f = fopen("/proc/locks", "r");
    if (!f)
        return -1;

    bool locked[LOCK_BYTES_SEEN] = {false};
    char line[256];
    while (fgets(line, sizeof(line), f)) {
        /* "1: OFDLCK ADVISORY  READ -1 fe:00:10953518 100 101" */
        char kind[16], dev_ino[64], end_text[32];
        uint64_t start;
        if (sscanf(line, "%*s %15s %*s %*s %*s %63s %" SCNu64 " %31s", kind, dev_ino, &start,
                   end_text) != 4)
            continue;
        if (strcmp(kind, "OFDLCK") != 0 || strcmp(dev_ino, want) != 0)
            continue;
        uint64_t end = LOCK_BYTES_SEEN - 1; /* "EOF": locked to the end of the file */
        if (strcmp(end_text, "EOF") != 0 && sscanf(end_text, "%" SCNu64, &end) != 1)
            continue;
        for (uint64_t b = start; b <= end && b < LOCK_BYTES_SEEN; b++)
            locked[b] = true;
    }
    fclose(f);

    size_t len = 0;
    out[0] = '\0';
    for (int b = 0; b < LOCK_BYTES_SEEN; b++) {
        if (!locked[b])
            continue;
        int n = snprintf(out + len, size - len, "%s%d", len ? "," : "", b);
        if (n < 0 || (size_t)n >= size - len)
            return -1;
        len += (size_t)n;
    }
    return 0;
}
