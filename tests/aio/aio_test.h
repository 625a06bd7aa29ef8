/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef AIO_TEST_H
#define AIO_TEST_H

/* Small helpers shared by the asynchronous API tests: failing checks, scratch folders. */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <imgutil.h>

#define SKIP 77

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n", __FILE__, __LINE__,      \
                    #cond, img_last_error());                                                      \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld (last error: %s)\n", __FILE__, \
                    __LINE__, #a, a_, #b, b_, img_last_error());                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* A new empty folder under $TMPDIR (or /tmp), removed by scratch_remove(). */
char *scratch_dir(void);
void scratch_remove(const char *dir);
/* "dir/name", malloc'd. */
char *path_in(const char *dir, const char *name);
/* Runs a shell command built like printf; returns its exit status (or -1). */
int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* True when qemu-img can be run. */
int have_qemu_img(void);

#endif
