/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Apple Data Compression (ADC), the LZ77 variant of old DMG chunks (UDCO). Each code starts
 * with one byte:
 *   1xxxxxxx            a literal run of (x + 1) bytes follows;
 *   01xxxxxx hi lo      a copy of (x + 4) bytes from (hi << 8 | lo) + 1 bytes back;
 *   00xxxxyy lo         a copy of (x + 3) bytes from (yy << 8 | lo) + 1 bytes back.
 * Copies may overlap their own output (a run). The stream must fill the output exactly;
 * anything malformed (a reference before the start, input cut short) is -EIO.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "codec/codec_impl.h"

int adc_decompress(const void *src, size_t src_len, void *dst, size_t dst_len)
{
    const uint8_t *in = src;
    uint8_t *out = dst;
    size_t ip = 0, op = 0;
    while (op < dst_len) {
        if (ip >= src_len)
            return -EIO;
        uint8_t code = in[ip++];
        if (code & 0x80) {
            size_t run = (size_t)(code & 0x7f) + 1;
            if (run > src_len - ip || run > dst_len - op)
                return -EIO;
            memcpy(out + op, in + ip, run);
            ip += run;
            op += run;
            continue;
        }
        size_t run, distance;
        if (code & 0x40) {
            if (src_len - ip < 2)
                return -EIO;
            run = (size_t)(code & 0x3f) + 4;
            distance = ((size_t)in[ip] << 8 | in[ip + 1]) + 1;
            ip += 2;
        } else {
            if (src_len - ip < 1)
                return -EIO;
            run = (size_t)((code >> 2) & 0x0f) + 3;
            distance = ((size_t)(code & 0x03) << 8 | in[ip]) + 1;
            ip += 1;
        }
        if (distance > op || run > dst_len - op)
            return -EIO;
        /* Byte by byte: the source may overlap what this copy writes. */
        for (size_t i = 0; i < run; i++, op++)
            out[op] = out[op - distance];
    }
    return 0;
}
