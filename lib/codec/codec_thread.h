/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_CODEC_THREAD_H
#define IMG_CODEC_THREAD_H

/*
 * Per-thread codec state. Setting up a compressor or decompressor costs more than running it
 * on one cluster, so each codec keeps its contexts per thread and resets them between calls.
 */

#include <stddef.h>

enum codec_thread_slot {
    CODEC_THREAD_DEFLATE,
    CODEC_THREAD_ZSTD,
    CODEC_THREAD_SLOTS,
};

/*
 * The calling thread's state for `slot`: `size` zeroed bytes on first use. When the thread
 * exits, `release` frees what the state holds (not the state itself). NULL when out of memory.
 */
void *codec_thread_state(enum codec_thread_slot slot, size_t size, void (*release)(void *state));

#endif
