/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The core over the raw backend: open, probe, read, block status, write, zero, resize. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "imgutil.h"

static char dir[] = "/tmp/imgutil-test-raw-XXXXXX";

static char *path_in_dir(const char *name)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return path;
}

/* A sparse file with data at [64k, 128k) and [1M, 1M+4k). */
static void make_sparse(const char *path)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_true(fd >= 0);
    uint8_t buf[65536];
    memset(buf, 0xab, sizeof(buf));
    assert_int_equal(pwrite(fd, buf, sizeof(buf), 65536), (ssize_t)sizeof(buf));
    assert_int_equal(pwrite(fd, buf, 4096, 1 << 20), 4096);
    assert_int_equal(ftruncate(fd, 2 << 20), 0);
    close(fd);
}

static void test_read_and_status(void **state)
{
    const char *path = path_in_dir("sparse.raw");
    make_sparse(path);
    img *image;
    assert_int_equal(img_open(&image, path, NULL, 0, NULL), 0);
    assert_string_equal(img_get_format(image), "raw");
    assert_int_equal(img_get_size(image), 2 << 20);

    uint8_t buf[8192];
    assert_int_equal(img_pread(image, buf, sizeof(buf), 65536 - 4096), 8192);
    for (int i = 0; i < 4096; i++)
        assert_int_equal(buf[i], 0);
    for (int i = 4096; i < 8192; i++)
        assert_int_equal(buf[i], 0xab);
    /* Short read at the end, 0 past it. */
    assert_int_equal(img_pread(image, buf, sizeof(buf), (2 << 20) - 100), 100);
    assert_int_equal(img_pread(image, buf, sizeof(buf), 2 << 20), 0);

    uint64_t pnum, host;
    unsigned status;
    int depth;
    assert_int_equal(img_block_status(image, 0, 2 << 20, &pnum, &status, &depth, &host), 0);
    assert_int_equal(pnum, 65536);
    assert_int_equal(status, IMG_BLOCK_ZERO | IMG_BLOCK_ALLOCATED | IMG_BLOCK_OFFSET_VALID);
    assert_int_equal(depth, 0);
    assert_int_equal(img_block_status(image, 65536, 2 << 20, &pnum, &status, NULL, &host), 0);
    assert_int_equal(status & IMG_BLOCK_DATA, IMG_BLOCK_DATA);
    assert_int_equal(host, 65536);
    assert_true(pnum >= 65536);
    assert_int_equal(img_block_status(image, 2 << 20, 1, &pnum, &status, NULL, NULL), -EINVAL);

    char *json;
    assert_int_equal(img_info_json(image, 0, &json), 0);
    assert_non_null(strstr(json, "\"format\": \"raw\""));
    assert_non_null(strstr(json, "\"virtual-size\": 2097152"));
    assert_null(strstr(json, "cluster-size"));
    img_free(json);
    img_close(image);
}

static void test_write_zero_resize(void **state)
{
    const char *path = path_in_dir("w.raw");
    img_opts *opts;
    assert_int_equal(img_opts_new(&opts), 0);
    assert_int_equal(img_create(path, "raw", 1000, opts), 0);
    assert_int_equal(img_create(path, "raw", 1000, opts), -EEXIST);
    img_opts_set(opts, "preallocation", "sometimes");
    img_opts_set(opts, "overwrite", "on");
    assert_int_equal(img_create(path, "raw", 1000, opts), -EINVAL);
    assert_string_equal(strstr(img_last_error(), ": Parameter"),
                        ": Parameter 'preallocation' does not accept value 'sometimes'");
    /* The message names the file it is about. */
    assert_non_null(strstr(img_last_error(), path));
    img_opts_free(opts);

    img *image;
    assert_int_equal(img_open(&image, path, "raw", IMG_OPEN_READ_WRITE, NULL), 0);
    assert_int_equal(img_get_size(image), 1024); /* rounded up to a sector */
    uint8_t data[1024], back[1024];
    memset(data, 0x5a, sizeof(data));
    assert_int_equal(img_pwrite(image, data, sizeof(data), 0), 1024);
    assert_int_equal(img_pwrite(image, data, 2, 1023), -EINVAL);
    assert_int_equal(img_zero(image, 100, 200, IMG_ZERO_MAY_UNMAP), 0);
    assert_int_equal(img_pread(image, back, sizeof(back), 0), 1024);
    for (int i = 0; i < 1024; i++)
        assert_int_equal(back[i], i >= 100 && i < 300 ? 0 : 0x5a);
    assert_int_equal(img_resize(image, 512, 0, NULL), -EINVAL);
    assert_non_null(strstr(img_last_error(), "shrink"));
    assert_int_equal(img_resize(image, 4096, 0, NULL), 0);
    assert_int_equal(img_get_size(image), 4096);
    assert_int_equal(img_resize(image, 512, IMG_RESIZE_SHRINK, NULL), 0);
    assert_int_equal(img_flush(image), 0);
    img_close(image);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 512);

    assert_int_equal(img_open(&image, path, "raw", 0, NULL), 0);
    assert_int_equal(img_pwrite(image, data, 1, 0), -EROFS);
    img_close(image);
}

static void test_probed_raw_guard(void **state)
{
    const char *path = path_in_dir("guard.raw");
    assert_int_equal(img_create(path, "raw", 65536, NULL), 0);
    img *image;
    /* Probed as raw: planting a qcow2 header is refused. */
    assert_int_equal(img_open(&image, path, NULL, IMG_OPEN_READ_WRITE, NULL), 0);
    uint8_t header[512] = {'Q', 'F', 'I', 0xfb, 0, 0, 0, 3};
    assert_int_equal(img_pwrite(image, header, sizeof(header), 0), -EPERM);
    assert_non_null(strstr(img_last_error(), "guessed as raw"));
    uint8_t plain[512] = {1, 2, 3};
    assert_int_equal(img_pwrite(image, plain, sizeof(plain), 0), 512);
    img_close(image);
    /* Asked for as raw: allowed. */
    assert_int_equal(img_open(&image, path, "raw", IMG_OPEN_READ_WRITE, NULL), 0);
    assert_int_equal(img_pwrite(image, header, sizeof(header), 0), 512);
    img_close(image);
}

/* A file too large to round up to whole sectors is refused, not shown as 0 bytes. */
static void test_largest_size(void **state)
{
    (void)state;
    /* tmpfs takes sparse files of any size; other file systems stop far below. */
    char path[] = "/dev/shm/imgutil-huge-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        skip();
    int grown = ftruncate(fd, INT64_MAX);
    close(fd);
    if (grown < 0) {
        unlink(path);
        skip();
    }
    img *image = NULL;
    assert_int_equal(img_open(&image, path, "raw", IMG_OPEN_READ_ONLY, NULL), -EFBIG);
    assert_non_null(strstr(img_last_error(), "larger than the largest image size"));
    fd = open(path, O_WRONLY);
    assert_int_equal(ftruncate(fd, INT64_MAX & ~511ll), 0);
    close(fd);
    assert_int_equal(img_open(&image, path, "raw", IMG_OPEN_READ_ONLY, NULL), 0);
    assert_int_equal(img_get_size(image), INT64_MAX & ~511ll);
    img_close(image);
    unlink(path);
}

static void test_bad_arguments(void **state)
{
    img *image;
    assert_int_equal(img_open(&image, dir, NULL, 0, NULL), -EISDIR);
    assert_int_equal(img_open(&image, path_in_dir("missing"), NULL, 0, NULL), -ENOENT);
    assert_int_equal(img_open(&image, path_in_dir("missing"), "nosuchformat", 0, NULL), -ENOENT);
    assert_int_equal(img_create(path_in_dir("x"), "nosuchformat", 1, NULL), -ENOTSUP);
    assert_int_equal(img_pread(NULL, NULL, 0, 0), -EINVAL);
    assert_int_equal(img_get_size(NULL), -EINVAL);
    img_close(NULL);
}

static void create_raw(const char *path, uint64_t size, const char *options)
{
    img_opts *opts;
    assert_int_equal(img_opts_new(&opts), 0);
    assert_int_equal(img_opts_parse(opts, options), 0);
    assert_int_equal(img_create(path, "raw", size, opts), 0);
    img_opts_free(opts);
}

/* preallocation=off|falloc|full as qemu-img: a hole, reserved blocks, written zeros. */
static void test_create_preallocation(void **state)
{
    struct stat st;
    const uint64_t size = 3 << 20;
    create_raw(path_in_dir("off.raw"), size, "preallocation=off");
    assert_int_equal(stat(path_in_dir("off.raw"), &st), 0);
    assert_int_equal(st.st_size, size);
    assert_true((uint64_t)st.st_blocks * 512 < size);

    create_raw(path_in_dir("full.raw"), size, "preallocation=full");
    assert_int_equal(stat(path_in_dir("full.raw"), &st), 0);
    assert_int_equal(st.st_size, size);
    assert_true((uint64_t)st.st_blocks * 512 >= size);

    create_raw(path_in_dir("falloc.raw"), size, "preallocation=falloc");
    assert_int_equal(stat(path_in_dir("falloc.raw"), &st), 0);
    assert_int_equal(st.st_size, size);
    /* Some file systems cannot reserve blocks; the file is still complete there. */
    if (st.st_blocks)
        assert_true((uint64_t)st.st_blocks * 512 >= size);

    /* The size may come as an option too, rounded up to a sector as qemu-img does. */
    create_raw(path_in_dir("opt.raw"), 0, "size=1000");
    assert_int_equal(stat(path_in_dir("opt.raw"), &st), 0);
    assert_int_equal(st.st_size, 1024);
}

/* Every bad option is refused before a file is made, in qemu-img's words. */
static void test_create_refuses_bad_options(void **state)
{
    static const struct {
        const char *options, *message;
    } cases[] = {
        {"preallocation=bogus", "Parameter 'preallocation' does not accept value 'bogus'"},
        {"preallocation=metadata", "Parameter 'preallocation' does not accept value 'metadata'"},
        {"bogus=1", "Invalid parameter 'bogus'"},
        {"cluster_size=64k", "Invalid parameter 'cluster_size'"},
        {"nocow=maybe", "Parameter 'nocow' expects 'on' or 'off'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        img_opts *opts;
        assert_int_equal(img_opts_new(&opts), 0);
        assert_int_equal(img_opts_parse(opts, cases[i].options), 0);
        assert_int_equal(img_create(path_in_dir("bad.raw"), "raw", 4096, opts), -EINVAL);
        char want[512];
        snprintf(want, sizeof(want), "%s: %s", path_in_dir("bad.raw"), cases[i].message);
        assert_string_equal(img_last_error(), want);
        img_opts_free(opts);
        assert_int_equal(access(path_in_dir("bad.raw"), F_OK), -1);
    }
}

/* What raw declares: the core and the CLI read this instead of comparing names. */
static void test_capabilities(void **state)
{
    assert_int_equal(img_format_supports("raw", "read"), 1);
    assert_int_equal(img_format_supports("raw", "write"), 1);
    assert_int_equal(img_format_supports("raw", "create"), 1);
    assert_int_equal(img_format_supports("raw", "snapshots"), 0);
    assert_int_equal(img_format_supports("raw", "backing"), 0);
    assert_int_equal(img_format_supports("raw", "compress"), 0);
    assert_int_equal(img_format_supports("raw", "probe_fallback"), 1);
    assert_int_equal(img_format_supports("qcow2", "snapshots"), 1);
    assert_int_equal(img_format_supports("qcow2", "backing"), 1);
    assert_int_equal(img_format_supports("qcow2", "compress"), 1);
    assert_int_equal(img_format_supports("qcow2", "probe_fallback"), 0);
    assert_int_equal(img_format_supports("nosuchformat", "read"), -ENOENT);
    assert_non_null(strstr(img_last_error(), "nosuchformat"));
    assert_int_equal(img_format_supports("raw", "teleport"), -EINVAL);
    assert_int_equal(img_format_supports(NULL, "read"), -EINVAL);
    assert_int_equal(img_format_supports("raw", NULL), -EINVAL);
}

static int cleanup(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int setup(void **state)
{
    return mkdtemp(dir) ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_and_status),
        cmocka_unit_test(test_write_zero_resize),
        cmocka_unit_test(test_probed_raw_guard),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_largest_size),
        cmocka_unit_test(test_create_preallocation),
        cmocka_unit_test(test_create_refuses_bad_options),
        cmocka_unit_test(test_capabilities),
    };
    return cmocka_run_group_tests(tests, setup, cleanup);
}
