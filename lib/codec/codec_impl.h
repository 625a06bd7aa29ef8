/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_CODEC_IMPL_H
#define IMG_CODEC_IMPL_H

/* The per-library halves of codec.c, with the same contracts as codec_decompress/compress. */

#include <stdbool.h>
#include <stddef.h>

/* `zlib_header`: CODEC_ZLIB when true, raw deflate (CODEC_DEFLATE_RAW) when false. */
int deflate_decompress(bool zlib_header, const void *src, size_t src_len, void *dst,
                       size_t dst_len);
long deflate_compress(bool zlib_header, const void *src, size_t src_len, void *dst, size_t dst_cap);

int zstd_decompress(const void *src, size_t src_len, void *dst, size_t dst_len);
long zstd_compress(const void *src, size_t src_len, void *dst, size_t dst_cap);

/* Decompression only: there is no writer of these formats. */
int bzip2_decompress(const void *src, size_t src_len, void *dst, size_t dst_len);
int adc_decompress(const void *src, size_t src_len, void *dst, size_t dst_len);

#endif
