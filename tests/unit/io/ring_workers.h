/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef RING_WORKERS_H
#define RING_WORKERS_H

#include <dirent.h>
#include <stdio.h>
#include <string.h>

/*
 * How many of this process's threads are io_uring's io-wq workers (named "iou-wrk-<tid>"): a
 * request handed to them costs the waiting thread a sleep and a wake-up, which the tests of the
 * synchronous calls and of waited queues check does not happen.
 */
static inline unsigned count_ring_workers(void)
{
    DIR *dir = opendir("/proc/self/task");
    if (!dir)
        return 0;
    unsigned n = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[300], comm[64] = "";
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(comm, sizeof(comm), f) && strncmp(comm, "iou-wrk-", 8) == 0)
            n++;
        fclose(f);
    }
    closedir(dir);
    return n;
}

#endif
