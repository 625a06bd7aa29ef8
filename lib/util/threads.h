/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_UTIL_THREADS_H
#define IMG_UTIL_THREADS_H

/*
 * Starting the library's worker threads, for its two pools (the CPU worker pool and the I/O
 * engine's thread pool): detached, with every signal blocked, since signals belong to the
 * caller's threads.
 */

/*
 * Starts detached threads running `fn(NULL)` until *count reaches `want`. Returns 0 when at
 * least one thread runs (a smaller pool than wanted still works), else a negative errno.
 */
int threads_start_detached(unsigned *count, unsigned want, void *(*fn)(void *));

#endif
