/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Dispatch from the codec enum to the library that implements it. */
#include "codec/codec.h"

#include <errno.h>

#include "codec/codec_impl.h"

int codec_decompress(enum img_codec codec, const void *src, size_t src_len, void *dst,
                     size_t dst_len)
{
    if ((!src && src_len) || (!dst && dst_len))
        return -EINVAL;
    switch (codec) {
    case CODEC_DEFLATE_RAW:
        return deflate_decompress(false, src, src_len, dst, dst_len);
    case CODEC_ZLIB:
        return deflate_decompress(true, src, src_len, dst, dst_len);
    case CODEC_ZSTD:
        return zstd_decompress(src, src_len, dst, dst_len);
    case CODEC_BZIP2:
        return bzip2_decompress(src, src_len, dst, dst_len);
    case CODEC_ADC:
        return adc_decompress(src, src_len, dst, dst_len);
    }
    return -ENOTSUP;
}

long codec_compress(enum img_codec codec, const void *src, size_t src_len, void *dst,
                    size_t dst_cap)
{
    if ((!src && src_len) || (!dst && dst_cap))
        return -EINVAL;
    switch (codec) {
    case CODEC_DEFLATE_RAW:
        return deflate_compress(false, src, src_len, dst, dst_cap);
    case CODEC_ZLIB:
        return deflate_compress(true, src, src_len, dst, dst_cap);
    case CODEC_ZSTD:
        return zstd_compress(src, src_len, dst, dst_cap);
    case CODEC_BZIP2:
    case CODEC_ADC:
        return -ENOTSUP;
    }
    return -ENOTSUP;
}

const char *codec_name(enum img_codec codec)
{
    switch (codec) {
    case CODEC_DEFLATE_RAW:
        return "deflate";
    case CODEC_ZLIB:
        return "zlib";
    case CODEC_ZSTD:
        return "zstd";
    case CODEC_BZIP2:
        return "bzip2";
    case CODEC_ADC:
        return "adc";
    }
    return "unknown";
}

const char *codec_failure(enum img_codec codec, int ret)
{
    if (ret == -ENOPKG && codec == CODEC_BZIP2)
        return "cannot be decompressed: libbz2 cannot be loaded";
    return "is corrupt";
}
