/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_CODEC_H
#define IMG_CODEC_H

#include <stddef.h>

enum img_codec {
    CODEC_DEFLATE_RAW, /* raw deflate (no zlib header), as qcow2 and streamOptimized VMDK */
    CODEC_ZLIB,        /* deflate with the zlib header */
    CODEC_ZSTD,
    CODEC_BZIP2, /* bzip2 streams (DMG), decompression only */
    CODEC_ADC,   /* Apple Data Compression (DMG), decompression only */
};

/*
 * Decompresses `src` into exactly `dst_len` bytes of `dst`. `src` may carry trailing bytes
 * after the end of the stream (qcow2 rounds compressed clusters up to sectors). Fails with
 * -EIO when the stream is corrupt or yields fewer than `dst_len` bytes, and with -ENOPKG
 * when the library that decodes it cannot be loaded (libbz2, loaded on first use).
 */
int codec_decompress(enum img_codec codec, const void *src, size_t src_len, void *dst,
                     size_t dst_len);

/* What a failure of codec_decompress() says of the data: "is corrupt", or why it was not read. */
const char *codec_failure(enum img_codec codec, int ret);

/*
 * Compresses `src` into `dst` (capacity `dst_cap`). Returns the compressed length, -ENOSPC
 * when the result would not fit in `dst_cap` (so the caller stores the data uncompressed),
 * or another negative errno.
 */
long codec_compress(enum img_codec codec, const void *src, size_t src_len, void *dst,
                    size_t dst_cap);

const char *codec_name(enum img_codec codec);

#endif
