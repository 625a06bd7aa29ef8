/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The codecs of DMG chunks: ADC and bzip2, on exact streams and on malformed ones. */
#include <bzlib.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec/codec.h"

static void adc_codes(void **state)
{
    /* "abc" literal, then a 2-byte code copying 6 bytes from 3 back, then a 3-byte code
     * copying 5 bytes from 1 back (a run), then a literal "Z". */
    static const uint8_t stream[] = {0x82,           'a', 'b', 'c',  (6 - 3) << 2, 2,
                                     0x40 | (5 - 4), 0,   0,   0x80, 'Z'};
    static const char expected[] = "abcabcabccccccZ";
    uint8_t out[15];
    assert_int_equal(codec_decompress(CODEC_ADC, stream, sizeof(stream), out, sizeof(out)), 0);
    assert_memory_equal(out, expected, sizeof(out));
}

static void adc_malformed(void **state)
{
    uint8_t out[64];
    /* A copy from before the start of the output. */
    static const uint8_t before_start[] = {0x80, 'a', 0x00, 5};
    assert_int_equal(codec_decompress(CODEC_ADC, before_start, sizeof(before_start), out, 4), -EIO);
    /* A literal run cut short by the end of the input. */
    static const uint8_t short_literal[] = {0x85, 'a', 'b'};
    assert_int_equal(codec_decompress(CODEC_ADC, short_literal, sizeof(short_literal), out, 6),
                     -EIO);
    /* Codes cut short (their distance bytes missing). */
    static const uint8_t short_long[] = {0x80, 'a', 0x41, 0};
    assert_int_equal(codec_decompress(CODEC_ADC, short_long, sizeof(short_long), out, 6), -EIO);
    static const uint8_t short_short[] = {0x80, 'a', 0x04};
    assert_int_equal(codec_decompress(CODEC_ADC, short_short, sizeof(short_short), out, 5), -EIO);
    /* Output that would run past the unit, and input that ends before the unit is full. */
    static const uint8_t too_long[] = {0x83, 'a', 'b', 'c', 'd'};
    assert_int_equal(codec_decompress(CODEC_ADC, too_long, sizeof(too_long), out, 3), -EIO);
    assert_int_equal(codec_decompress(CODEC_ADC, too_long, sizeof(too_long), out, 8), -EIO);
    /* No compression: ADC is read only. */
    assert_int_equal(codec_compress(CODEC_ADC, "abc", 3, out, sizeof(out)), -ENOTSUP);
}

static void bzip2_exact_and_malformed(void **state)
{
    enum { N = 100000 };
    uint8_t *plain = malloc(N), *packed = malloc(N + N / 100 + 600), *out = malloc(N + 1);
    assert_non_null(plain);
    assert_non_null(packed);
    assert_non_null(out);
    for (size_t i = 0; i < N; i++)
        plain[i] = (uint8_t)((i * 7) ^ (i >> 9));
    unsigned packed_len = N + N / 100 + 600;
    assert_int_equal(
        BZ2_bzBuffToBuffCompress((char *)packed, &packed_len, (char *)plain, N, 9, 0, 0), BZ_OK);
    assert_int_equal(codec_decompress(CODEC_BZIP2, packed, packed_len, out, N), 0);
    assert_memory_equal(out, plain, N);
    /* The stream must fill the unit exactly: shorter or longer is corrupt. */
    assert_int_equal(codec_decompress(CODEC_BZIP2, packed, packed_len, out, N + 1), -EIO);
    assert_int_equal(codec_decompress(CODEC_BZIP2, packed, packed_len, out, N - 1), -EIO);
    /* Cut short, and damaged. */
    assert_int_equal(codec_decompress(CODEC_BZIP2, packed, packed_len / 2, out, N), -EIO);
    packed[packed_len / 2] ^= 0x55;
    assert_int_equal(codec_decompress(CODEC_BZIP2, packed, packed_len, out, N), -EIO);
    assert_int_equal(codec_decompress(CODEC_BZIP2, "BZh9", 4, out, N), -EIO);
    free(plain);
    free(packed);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(adc_codes),
        cmocka_unit_test(adc_malformed),
        cmocka_unit_test(bzip2_exact_and_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
