/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_ERROR_H
#define IMG_ERROR_H

/*
 * Records this thread's message for the failure `code` (a negative errno) and returns `code`,
 * so callers can write `return img_error(-EIO, "qcow2: ...", ...);`.
 */
int img_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the current thread message with "prefix: " (for context added by callers). */
void img_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Clears this thread's message (to "no error"). */
void img_error_clear(void);

#endif
