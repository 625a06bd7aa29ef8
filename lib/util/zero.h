/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_UTIL_ZERO_H
#define IMG_UTIL_ZERO_H

#include <stdbool.h>
#include <stddef.h>

/* True when all `len` bytes at `buf` are zero. Any thread; reads nothing but the buffer. */
bool buffer_is_zero(const void *buf, size_t len);

#endif
