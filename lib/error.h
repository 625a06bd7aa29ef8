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

/*
 * The file this thread is working on, so that every message names it: while a context is
 * set, img_error() prefixes "<name>: " to a message that does not name it already. Contexts
 * nest (a backing image inside its overlay); each push is undone by one pop. `name` must stay
 * valid until its pop.
 */
void img_error_context_push(const char *name);
void img_error_context_pop(void);

/* Replaces every `from` in this thread's message by `to` (a temporary file's name by the
 * name of the file it becomes). */
void img_error_rename(const char *from, const char *to);

#endif
