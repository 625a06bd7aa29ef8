/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * --salvage: a chunk whose reading failed is read again sector by sector, as qemu-img convert
 * --salvage reads it; each 512-byte sector that still fails reads as zeros, and a warning in
 * qemu-img's words ("warning: error while reading offset N: Input/output error") goes to the
 * descriptor the caller named ("salvage_log_fd"), after its prefix ("salvage_log_prefix").
 * The warnings of one chunk are written at once, so those of chunks copied side by side do
 * not mix within a line.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert_job.h"
#include "error.h"

#define SECTOR 512u

static void log_append(char **log, size_t *len, size_t *cap, const char *line)
{
    size_t n = strlen(line);
    if (*len + n + 1 > *cap) {
        size_t want = (*len + n + 1) * 2;
        char *grown = realloc(*log, want);
        if (!grown)
            return; /* a warning lost to a lack of memory, not the copy */
        *log = grown;
        *cap = want;
    }
    memcpy(*log + *len, line, n + 1);
    *len += n;
}

static void log_flush(const struct convert_job *job, const char *log, size_t len)
{
    while (job->salvage_log_fd >= 0 && len > 0) {
        ssize_t n = write(job->salvage_log_fd, log, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        log += n;
        len -= (size_t)n;
    }
}

bool convert_salvageable(int err)
{
    return err != -ECANCELED && err != -ENOMEM && err != -ENOPKG;
}

int convert_salvage_read(const struct convert_job *job, uint8_t *buf, uint64_t offset,
                         uint64_t length)
{
    char *log = NULL;
    size_t len = 0, cap = 0;
    for (uint64_t pos = 0; pos < length; pos += SECTOR) {
        size_t n = (size_t)(length - pos < SECTOR ? length - pos : SECTOR);
        int ret = img_read_guest(job->src, buf + pos, n, offset + pos);
        if (ret < 0 && !convert_salvageable(ret)) {
            free(log);
            return ret;
        }
        if (ret < 0) {
            memset(buf + pos, 0, n);
            char line[512];
            snprintf(line, sizeof(line), "%swarning: error while reading offset %" PRIu64 ": %s\n",
                     job->salvage_log_prefix ? job->salvage_log_prefix : "",
                     job->dst_base + offset + pos, strerror(-ret));
            log_append(&log, &len, &cap, line);
        }
    }
    log_flush(job, log, len);
    free(log);
    return 0;
}
