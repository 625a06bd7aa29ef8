/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* img_convert to raw: content, sparseness, in-place conversion, cancellation. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "imgutil.h"

static char dir[] = "/tmp/imgutil-test-convert-XXXXXX";
#define IMAGE_SIZE (8u << 20)

static char *path_in_dir(const char *name)
{
    static char paths[4][256];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

/* Data in a few places, including a data block that is all zeros (must become a hole). */
static void make_source(const char *path)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_true(fd >= 0);
    uint8_t *buf = malloc(1 << 20);
    for (int i = 0; i < (1 << 20); i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    assert_int_equal(pwrite(fd, buf, 1 << 20, 0), 1 << 20);
    assert_int_equal(pwrite(fd, buf, 12345, 5 << 20), 12345);
    memset(buf, 0, 1 << 20);
    assert_int_equal(pwrite(fd, buf, 1 << 20, 3 << 20), 1 << 20);
    assert_int_equal(ftruncate(fd, IMAGE_SIZE), 0);
    close(fd);
    free(buf);
}

static void assert_same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    assert_non_null(fa);
    assert_non_null(fb);
    int ca, cb;
    long pos = 0;
    do {
        ca = fgetc(fa);
        cb = fgetc(fb);
        if (ca != cb)
            fail_msg("files differ at %ld", pos);
        pos++;
    } while (ca != EOF);
    fclose(fa);
    fclose(fb);
}

static int count_files(void)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' || (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")))
            n++;
    closedir(d);
    return n;
}

static void test_convert_raw_sparse(void **state)
{
    const char *src_path = path_in_dir("src.raw"), *dst_path = path_in_dir("dst.raw");
    make_source(src_path);
    img *src;
    assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
    assert_int_equal(img_convert(src, dst_path, "raw", NULL, NULL, NULL), 0);
    img_close(src);
    assert_same_file(src_path, dst_path);
    struct stat st;
    assert_int_equal(stat(dst_path, &st), 0);
    assert_int_equal(st.st_size, IMAGE_SIZE);
    /* 1 MiB + 12345 bytes of data: the zero-filled MiB must not be allocated. */
    assert_true((uint64_t)st.st_blocks * 512 < (1u << 20) + 65536 + 16384);
}

static int cancel_at_half(void *user, uint64_t done, uint64_t total)
{
    int *calls = user;
    (*calls)++;
    return done >= total / 2;
}

static void test_cancel_keeps_target(void **state)
{
    const char *src_path = path_in_dir("src.raw"), *dst_path = path_in_dir("keep.raw");
    int fd = open(dst_path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_int_equal(write(fd, "precious", 8), 8);
    close(fd);
    int files_before = count_files();
    img *src;
    assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
    int calls = 0;
    img_opts *opts;
    img_opts_new(&opts);
    img_opts_set(opts, "sparse_size", "0");
    assert_int_equal(img_convert(src, dst_path, "raw", opts, cancel_at_half, &calls),
                     -ECANCELED);
    img_opts_free(opts);
    img_close(src);
    assert_true(calls > 0);
    struct stat st;
    assert_int_equal(stat(dst_path, &st), 0);
    assert_int_equal(st.st_size, 8);
    assert_int_equal(count_files(), files_before); /* no temporary left behind */
}

static void test_convert_onto_source(void **state)
{
    const char *src_path = path_in_dir("inplace.raw"), *ref_path = path_in_dir("ref.raw");
    make_source(src_path);
    make_source(ref_path);
    img *src;
    assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
    assert_int_equal(img_convert(src, src_path, "raw", NULL, NULL, NULL), 0);
    img_close(src);
    assert_same_file(src_path, ref_path);
}

static void test_bad_options(void **state)
{
    const char *src_path = path_in_dir("src.raw");
    img *src;
    assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
    img_opts *opts;
    img_opts_new(&opts);
    img_opts_set(opts, "sparse_size", "1000");
    assert_int_equal(img_convert(src, path_in_dir("o.raw"), "raw", opts, NULL, NULL), -EINVAL);
    assert_non_null(strstr(img_last_error(), "sparse_size"));
    img_opts_set(opts, "sparse_size", "4k");
    img_opts_set(opts, "cluster_size", "65536");
    assert_int_equal(img_convert(src, path_in_dir("o.raw"), "raw", opts, NULL, NULL), -EINVAL);
    assert_non_null(strstr(img_last_error(), "cluster_size"));
    assert_int_equal(img_convert(src, path_in_dir("o.raw"), "vmdk9", NULL, NULL, NULL),
                     -ENOTSUP);
    assert_int_equal(img_convert(src, "/nonexistent-dir/o.raw", "raw", NULL, NULL, NULL),
                     -ENOENT);
    img_opts_free(opts);
    img_close(src);
}

static int setup(void **state)
{
    return mkdtemp(dir) ? 0 : -1;
}

static int cleanup(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_convert_raw_sparse),
        cmocka_unit_test(test_cancel_keeps_target),
        cmocka_unit_test(test_convert_onto_source),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, setup, cleanup);
}
