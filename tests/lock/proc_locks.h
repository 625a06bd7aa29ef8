/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TEST_PROC_LOCKS_H
#define TEST_PROC_LOCKS_H

#include <stddef.h>

/*
 * Writes the bytes under open-file-description locks on the file at `path`, by any process, as
 * "100,101,103,201,203" (ascending; "" when none), read from /proc/locks. Returns 0, or -1 when
 * /proc/locks or the file cannot be read.
 */
int proc_locked_bytes(const char *path, char *out, size_t size);

#endif
