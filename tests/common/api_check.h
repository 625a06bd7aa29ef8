/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The check of the C API tests: CHECK(condition, printf-style what) counts a failure in
 * `failures` and prints where it is and the library's last message, so that one run reports
 * every failed check rather than the first.
 */
#ifndef API_CHECK_H
#define API_CHECK_H

#include <stdio.h>

#include <imgutil.h>

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, " (last error: %s)\n", img_last_error());                              \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

#endif
