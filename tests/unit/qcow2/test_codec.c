/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Codecs: round trips and the stream shapes qcow2 produces (sector padding, several frames). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include <cmocka.h>

#include "codec/codec.h"

#define UNIT 65536

static void fill_text(uint8_t *buf, size_t len, unsigned seed)
{
    /* Compressible but not trivial: words from a small vocabulary. */
    static const char *words[] = {"qcow2 ", "cluster ", "refcount ", "L2 ", "zstd ", "deflate "};
    uint32_t x = seed * 2654435761u + 1;
    size_t pos = 0;
    while (pos < len) {
        x = x * 1103515245u + 12345u;
        const char *w = words[(x >> 16) % 6];
        size_t n = strlen(w);
        if (n > len - pos)
            n = len - pos;
        memcpy(buf + pos, w, n);
        pos += n;
    }
}

static void fill_random(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed | 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
}

static const enum img_codec all_codecs[] = {CODEC_DEFLATE_RAW, CODEC_ZLIB, CODEC_ZSTD};

static void test_round_trip(void **state)
{
    uint8_t *src = malloc(UNIT), *packed = malloc(2 * UNIT), *out = malloc(UNIT);
    for (size_t c = 0; c < 3; c++) {
        for (unsigned seed = 0; seed < 4; seed++) {
            fill_text(src, UNIT, seed);
            long n = codec_compress(all_codecs[c], src, UNIT, packed, UNIT);
            assert_true(n > 0 && n < UNIT / 2);
            memset(out, 0x5a, UNIT);
            assert_int_equal(codec_decompress(all_codecs[c], packed, (size_t)n, out, UNIT), 0);
            assert_memory_equal(out, src, UNIT);
        }
        /* All zeros: the common case of a compressed empty cluster. */
        memset(src, 0, UNIT);
        long n = codec_compress(all_codecs[c], src, UNIT, packed, UNIT);
        assert_true(n > 0 && n < 1024);
        assert_int_equal(codec_decompress(all_codecs[c], packed, (size_t)n, out, UNIT), 0);
        assert_memory_equal(out, src, UNIT);
    }
    free(src);
    free(packed);
    free(out);
}

static void test_incompressible(void **state)
{
    uint8_t *src = malloc(UNIT), *packed = malloc(2 * UNIT);
    fill_random(src, UNIT, 42);
    for (size_t c = 0; c < 3; c++) {
        /* qcow2 stores such clusters uncompressed: the codec says it does not fit. */
        assert_int_equal(codec_compress(all_codecs[c], src, UNIT, packed, UNIT - 512), -ENOSPC);
        assert_int_equal(codec_compress(all_codecs[c], src, UNIT, packed, 16), -ENOSPC);
    }
    free(src);
    free(packed);
}

/* QEMU inflates qcow2 clusters with a 4 KiB window: what we write must fit in it. */
static void test_raw_deflate_fits_qemu_window(void **state)
{
    uint8_t *src = malloc(UNIT), *packed = malloc(UNIT), *out = malloc(UNIT);
    fill_text(src, UNIT, 7);
    /* Repeats 32 KiB apart would tempt a compressor with a large window. */
    memcpy(src + 40000, src + 1000, 20000);
    long n = codec_compress(CODEC_DEFLATE_RAW, src, UNIT, packed, UNIT);
    assert_true(n > 0);
    z_stream z = {0};
    assert_int_equal(inflateInit2(&z, -12), Z_OK);
    z.next_in = packed;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = UNIT;
    assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
    assert_int_equal(z.avail_out, 0);
    inflateEnd(&z);
    assert_memory_equal(out, src, UNIT);
    free(src);
    free(packed);
    free(out);
}

static void test_sector_padding(void **state)
{
    uint8_t *src = malloc(UNIT), *packed = malloc(2 * UNIT), *out = malloc(UNIT);
    fill_text(src, UNIT, 3);
    for (size_t c = 0; c < 3; c++) {
        long n = codec_compress(all_codecs[c], src, UNIT, packed, UNIT);
        assert_true(n > 0);
        /* Up to the next sector and beyond: whatever follows the stream is ignored. */
        size_t padded = ((size_t)n + 511) / 512 * 512 + 512;
        fill_random(packed + n, padded - (size_t)n, 9);
        assert_int_equal(codec_decompress(all_codecs[c], packed, padded, out, UNIT), 0);
        assert_memory_equal(out, src, UNIT);
    }
    free(src);
    free(packed);
    free(out);
}

static void test_damaged_streams(void **state)
{
    uint8_t *src = malloc(UNIT), *packed = malloc(2 * UNIT), *out = malloc(2 * UNIT);
    fill_text(src, UNIT, 5);
    for (size_t c = 0; c < 3; c++) {
        enum img_codec codec = all_codecs[c];
        long n = codec_compress(codec, src, UNIT, packed, UNIT);
        assert_true(n > 0);
        /* Cut short. */
        assert_int_equal(codec_decompress(codec, packed, (size_t)n / 2, out, UNIT), -EIO);
        assert_int_equal(codec_decompress(codec, packed, 0, out, UNIT), -EIO);
        /* Fewer bytes than the unit holds. */
        assert_int_equal(codec_decompress(codec, packed, (size_t)n, out, 2 * UNIT), -EIO);
        /* Garbage. */
        uint8_t junk[4096];
        memset(junk, 0xff, sizeof(junk));
        assert_int_equal(codec_decompress(codec, junk, sizeof(junk), out, UNIT), -EIO);
        fill_random(junk, sizeof(junk), c + 1);
        assert_int_equal(codec_decompress(codec, junk, sizeof(junk), out, UNIT), -EIO);
    }
    free(src);
    free(packed);
    free(out);
}

/* A stream with more to give than the unit holds: QEMU takes the first unit's worth. */
static void test_longer_stream(void **state)
{
    uint8_t *src = malloc(UNIT), *packed = malloc(2 * UNIT), *out = malloc(UNIT);
    fill_text(src, UNIT, 11);
    long n = codec_compress(CODEC_DEFLATE_RAW, src, UNIT, packed, UNIT);
    assert_int_equal(codec_decompress(CODEC_DEFLATE_RAW, packed, (size_t)n, out, UNIT / 2), 0);
    assert_memory_equal(out, src, UNIT / 2);
    /* zstd: a frame that goes on past the unit means damage (QEMU refuses it too). */
    n = codec_compress(CODEC_ZSTD, src, UNIT, packed, UNIT);
    assert_int_equal(codec_decompress(CODEC_ZSTD, packed, (size_t)n, out, UNIT / 2), -EIO);
    free(src);
    free(packed);
    free(out);
}

static void test_zstd_frames(void **state)
{
    uint8_t *src = malloc(UNIT), *packed = malloc(2 * UNIT), *out = malloc(UNIT);
    fill_text(src, UNIT, 13);
    long a = codec_compress(CODEC_ZSTD, src, UNIT / 4, packed, UNIT);
    long b = codec_compress(CODEC_ZSTD, src + UNIT / 4, 3 * UNIT / 4, packed + a, UNIT);
    assert_true(a > 0 && b > 0);
    assert_int_equal(codec_decompress(CODEC_ZSTD, packed, (size_t)(a + b + 100), out, UNIT), 0);
    assert_memory_equal(out, src, UNIT);

    /* With a checksum, which follows the last block. */
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    size_t m = ZSTD_compress2(cctx, packed, 2 * UNIT, src, UNIT);
    assert_false(ZSTD_isError(m));
    assert_int_equal(codec_decompress(CODEC_ZSTD, packed, m, out, UNIT), 0);
    assert_memory_equal(out, src, UNIT);
    packed[m - 1] ^= 0xff;
    assert_int_equal(codec_decompress(CODEC_ZSTD, packed, m, out, UNIT), -EIO);

    /* A frame asking for a 128 MiB window is refused rather than allocated. */
    ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, 27);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
    ZSTD_outBuffer o = {packed, 2 * UNIT, 0};
    ZSTD_inBuffer i = {src, UNIT / 2, 0};
    assert_false(ZSTD_isError(ZSTD_compressStream2(cctx, &o, &i, ZSTD_e_continue)));
    i = (ZSTD_inBuffer){src + UNIT / 2, UNIT / 2, 0};
    assert_int_equal(ZSTD_compressStream2(cctx, &o, &i, ZSTD_e_end), 0);
    ZSTD_frameHeader fh;
    assert_int_equal(ZSTD_getFrameHeader(&fh, packed, o.pos), 0);
    assert_true(fh.windowSize > (8u << 20));
    assert_int_equal(codec_decompress(CODEC_ZSTD, packed, o.pos, out, UNIT), -EIO);
    ZSTD_freeCCtx(cctx);
    free(src);
    free(packed);
    free(out);
}

static void test_names_and_arguments(void **state)
{
    assert_string_equal(codec_name(CODEC_DEFLATE_RAW), "deflate");
    assert_string_equal(codec_name(CODEC_ZLIB), "zlib");
    assert_string_equal(codec_name(CODEC_ZSTD), "zstd");
    assert_string_equal(codec_name((enum img_codec)99), "unknown");
    uint8_t b[16];
    assert_int_equal(codec_decompress((enum img_codec)99, b, 16, b, 16), -ENOTSUP);
    assert_int_equal(codec_compress((enum img_codec)99, b, 16, b, 16), -ENOTSUP);
    assert_int_equal(codec_decompress(CODEC_ZSTD, NULL, 16, b, 16), -EINVAL);
    assert_int_equal(codec_decompress(CODEC_ZSTD, b, 16, b, 0), 0);
}

struct worker {
    unsigned seed;
    int failures;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint8_t *src = malloc(UNIT), *packed = malloc(UNIT), *out = malloc(UNIT);
    for (unsigned i = 0; i < 60; i++) {
        enum img_codec codec = all_codecs[(w->seed + i) % 3];
        fill_text(src, UNIT, w->seed * 1000 + i);
        long n = codec_compress(codec, src, UNIT, packed, UNIT);
        if (n <= 0 || codec_decompress(codec, packed, (size_t)n, out, UNIT) != 0 ||
            memcmp(out, src, UNIT) != 0)
            w->failures++;
    }
    free(src);
    free(packed);
    free(out);
    return NULL;
}

/* Per-thread codec state must not leak between threads. */
static void test_threads(void **state)
{
    pthread_t t[4];
    struct worker w[4];
    for (unsigned i = 0; i < 4; i++) {
        w[i] = (struct worker){.seed = i + 1};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (unsigned i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_incompressible),
        cmocka_unit_test(test_raw_deflate_fits_qemu_window),
        cmocka_unit_test(test_sector_padding),
        cmocka_unit_test(test_damaged_streams),
        cmocka_unit_test(test_longer_stream),
        cmocka_unit_test(test_zstd_frames),
        cmocka_unit_test(test_names_and_arguments),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
