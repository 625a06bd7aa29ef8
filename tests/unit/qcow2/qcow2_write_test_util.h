/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef QCOW2_WRITE_TEST_UTIL_H
#define QCOW2_WRITE_TEST_UTIL_H

/*
 * Helpers for the qcow2 write tests: images opened through the public API, a raw "shadow"
 * file that receives the same guest changes, and the qemu-img verdicts (check, compare).
 */

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "imgutil.h"
#include "qcow2_test_util.h"

/* Skips the whole program (exit 77) when qemu-img or qemu-io is missing. */
static inline void qw_require_qemu(void)
{
    if (!qt_have_qemu()) {
        fprintf(stderr, "qemu-img/qemu-io not found: skipping\n");
        exit(77);
    }
}

static inline img_opts *qw_opts(const char *text)
{
    img_opts *o = NULL;
    assert_int_equal(img_opts_new(&o), 0);
    if (text && *text)
        assert_int_equal(img_opts_parse(o, text), 0);
    return o;
}

/* Creates `path` as qcow2 with `options` (may be empty); asserts success. */
static inline void qw_create(const char *path, uint64_t size, const char *options)
{
    img_opts *o = qw_opts(options);
    img_opts_set(o, "overwrite", "on");
    /* Tests re-create images over the data files of earlier cases. */
    img_opts_set(o, "overwrite_named", "on");
    int ret = img_create(path, "qcow2", size, o);
    if (ret < 0)
        fprintf(stderr, "img_create %s: %s\n", path, img_last_error());
    assert_int_equal(ret, 0);
    img_opts_free(o);
}

static inline img *qw_open(const char *path)
{
    img *h = NULL;
    int ret = img_open(&h, path, "qcow2", IMG_OPEN_READ_WRITE | IMG_OPEN_ALLOW_DATA_FILE, NULL);
    if (ret < 0)
        fprintf(stderr, "img_open %s: %s\n", path, img_last_error());
    assert_int_equal(ret, 0);
    return h;
}

/*
 * `qemu-img check` exits 0 only with no errors and no leaks. It runs in the image's folder:
 * QEMU looks for a relative external data file name from the current folder.
 */
static inline void qw_assert_check_clean(const char *path)
{
    char *out = qt_capture("cd \"$(dirname '%s')\" && qemu-img check \"$(basename '%s')\" 2>&1",
                           path, path);
    if (!out || !strstr(out, "No errors were found on the image."))
        fprintf(stderr, "qemu-img check %s:\n%s\n", path, out ? out : "(failed)");
    assert_non_null(out);
    assert_non_null(strstr(out, "No errors were found on the image."));
    free(out);
}

/* `qemu-img compare` of the image against its raw shadow. */
static inline void qw_assert_same(const char *image, const char *raw)
{
    assert_int_equal(qt_run("cd \"$(dirname '%s')\" && qemu-img compare -q -f qcow2 -F raw "
                            "\"$(basename '%s')\" '%s'",
                            image, image, raw),
                     0);
}

/* A raw file holding what the guest should see. */
struct qw_shadow {
    int fd;
    uint64_t size;
};

static inline void qw_shadow_open(struct qw_shadow *s, const char *path, uint64_t size)
{
    s->fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(s->fd >= 0);
    assert_int_equal(ftruncate(s->fd, (off_t)size), 0);
    s->size = size;
}

static inline void qw_shadow_write(struct qw_shadow *s, const void *buf, size_t len, uint64_t off)
{
    assert_int_equal(pwrite(s->fd, buf, len, (off_t)off), (ssize_t)len);
}

static inline void qw_shadow_zero(struct qw_shadow *s, size_t len, uint64_t off)
{
    void *z = calloc(1, len ? len : 1);
    qw_shadow_write(s, z, len, off);
    free(z);
}

static inline void qw_shadow_resize(struct qw_shadow *s, uint64_t size)
{
    assert_int_equal(ftruncate(s->fd, (off_t)size), 0);
    s->size = size;
}

static inline void qw_shadow_close(struct qw_shadow *s)
{
    close(s->fd);
}

/* A small deterministic generator (xorshift). */
static inline uint64_t qw_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* Fills `buf` with bytes derived from `seed` (never all zero). */
static inline void qw_fill(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t st = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < len; i++) {
        if ((i & 7) == 0)
            qw_rand(&st);
        buf[i] = (uint8_t)(st >> ((i & 7) * 8)) | 1;
    }
}

/* Reads `len` bytes at `offset` of the file. */
static inline void qw_read_at(const char *path, off_t offset, uint8_t *buf, size_t len)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, len, offset), (ssize_t)len);
    close(fd);
}

/* Reads the header field at `offset` (big-endian) of the file. */
static inline uint64_t qw_header_u64(const char *path, off_t offset)
{
    uint8_t b[8];
    qw_read_at(path, offset, b, sizeof(b));
    return load_be64(b);
}

static inline uint32_t qw_header_u32(const char *path, off_t offset)
{
    uint8_t b[4];
    qw_read_at(path, offset, b, sizeof(b));
    return load_be32(b);
}

#endif
