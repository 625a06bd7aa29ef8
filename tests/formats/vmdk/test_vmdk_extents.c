/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The policy for VMDK extent files, through the public API: an extent in the descriptor's
 * folder opens; one outside it (absolute, "..") only with IMG_OPEN_ALLOW_EXTERNAL_EXTENTS;
 * IMG_OPEN_UNTRUSTED refuses every descriptor naming an extent file but accepts a sparse file
 * whose extent is embedded; extent files are locked like images, so a second writer is
 * refused; a failed create leaves no extent files behind.
 */
#include <errno.h>
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

static char dir[256];

static void path_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

static void write_text(const char *name, const char *text)
{
    char p[512];
    path_of(p, sizeof(p), name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void make_raw(const char *path, size_t size, int byte)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (size_t i = 0; i < size; i++)
        fputc(byte, f);
    fclose(f);
}

/* A monolithicFlat descriptor whose one 64 KiB extent is `extent`. */
static void descriptor(const char *name, const char *extent)
{
    char text[1024];
    snprintf(text, sizeof(text),
             "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
             "createType=\"monolithicFlat\"\n\n# Extent description\nRW 128 FLAT \"%s\" 0\n",
             extent);
    write_text(name, text);
}

static int open_named(const char *name, unsigned flags, img **out)
{
    char p[512];
    path_of(p, sizeof(p), name);
    return img_open(out, p, "vmdk", flags, NULL);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/imgutil-vmdk-extents-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char p[512];
    path_of(p, sizeof(p), "sub");
    mkdir(p, 0755);
    path_of(p, sizeof(p), "sub/inside-flat.vmdk");
    make_raw(p, 65536, 0x11);
    path_of(p, sizeof(p), "outside-flat.vmdk");
    make_raw(p, 65536, 0x22);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_inside_folder_opens(void **state)
{
    (void)state;
    descriptor("sub/inside.vmdk", "inside-flat.vmdk");
    img *im = NULL;
    assert_int_equal(open_named("sub/inside.vmdk", IMG_OPEN_READ_ONLY, &im), 0);
    uint8_t buf[512];
    assert_int_equal(img_pread(im, buf, sizeof(buf), 4096), (int64_t)sizeof(buf));
    assert_int_equal(buf[0], 0x11);
    assert_int_equal(buf[511], 0x11);
    img_close(im);
}

static void test_dotdot_needs_flag(void **state)
{
    (void)state;
    descriptor("sub/climb.vmdk", "../outside-flat.vmdk");
    img *im = NULL;
    assert_int_equal(open_named("sub/climb.vmdk", IMG_OPEN_READ_ONLY, &im), -EPERM);
    assert_non_null(strstr(img_last_error(), "outside the image's folder"));
    assert_non_null(strstr(img_last_error(), "../outside-flat.vmdk"));
    assert_int_equal(
        open_named("sub/climb.vmdk", IMG_OPEN_READ_ONLY | IMG_OPEN_ALLOW_EXTERNAL_EXTENTS, &im), 0);
    uint8_t b;
    assert_int_equal(img_pread(im, &b, 1, 0), 1);
    assert_int_equal(b, 0x22);
    img_close(im);
}

static void test_absolute_needs_flag(void **state)
{
    (void)state;
    char abs[512];
    path_of(abs, sizeof(abs), "outside-flat.vmdk");
    descriptor("sub/abs.vmdk", abs);
    img *im = NULL;
    assert_int_equal(open_named("sub/abs.vmdk", IMG_OPEN_READ_ONLY, &im), -EPERM);
    assert_int_equal(
        open_named("sub/abs.vmdk", IMG_OPEN_READ_ONLY | IMG_OPEN_ALLOW_EXTERNAL_EXTENTS, &im), 0);
    img_close(im);
}

static void test_untrusted_refuses_extent_files(void **state)
{
    (void)state;
    descriptor("sub/inside.vmdk", "inside-flat.vmdk");
    img *im = NULL;
    assert_int_equal(open_named("sub/inside.vmdk", IMG_OPEN_READ_ONLY | IMG_OPEN_UNTRUSTED, &im),
                     -EPERM);
    assert_non_null(strstr(img_last_error(), "untrusted"));
    assert_int_equal(
        open_named("sub/inside.vmdk",
                   IMG_OPEN_READ_ONLY | IMG_OPEN_UNTRUSTED | IMG_OPEN_ALLOW_EXTERNAL_EXTENTS, &im),
        -EPERM);
    /* A sparse file is its own extent: nothing else is named, so it opens. */
    char p[512];
    path_of(p, sizeof(p), "sparse.vmdk");
    assert_int_equal(img_create(p, "vmdk", 1 << 20, NULL), 0);
    assert_int_equal(img_open(&im, p, NULL, IMG_OPEN_READ_ONLY | IMG_OPEN_UNTRUSTED, NULL), 0);
    img_close(im);
}

static void test_extents_are_locked(void **state)
{
    (void)state;
    descriptor("sub/inside.vmdk", "inside-flat.vmdk");
    descriptor("sub/other.vmdk", "inside-flat.vmdk");
    img *a = NULL, *b = NULL;
    assert_int_equal(open_named("sub/inside.vmdk", IMG_OPEN_READ_WRITE, &a), 0);
    /* Another descriptor naming the same extent file cannot write it meanwhile. */
    assert_int_equal(open_named("sub/other.vmdk", IMG_OPEN_READ_WRITE, &b), -EBUSY);
    img_close(a);
    assert_int_equal(open_named("sub/other.vmdk", IMG_OPEN_READ_WRITE, &b), 0);
    img_close(b);
}

static void test_failed_create_removes_extents(void **state)
{
    (void)state;
    char p[512], first[512], second[512];
    path_of(p, sizeof(p), "split.vmdk");
    path_of(first, sizeof(first), "split-f001.vmdk");
    path_of(second, sizeof(second), "split-f002.vmdk");
    /* The second extent's name is taken by a folder: create fails after making the first. */
    assert_int_equal(mkdir(second, 0755), 0);
    img_opts *o = NULL;
    assert_int_equal(img_opts_new(&o), 0);
    assert_int_equal(img_opts_set(o, "subformat", "twoGbMaxExtentFlat"), 0);
    assert_int_not_equal(img_create(p, "vmdk", 3ull << 30, o), 0);
    assert_non_null(strstr(img_last_error(), "split-f002.vmdk"));
    struct stat st;
    assert_int_equal(stat(first, &st), -1);
    assert_int_equal(rmdir(second), 0);
    /* Without the obstacle it makes the descriptor and both extents. */
    assert_int_equal(img_create(p, "vmdk", 3ull << 30, o), 0);
    assert_int_equal(stat(first, &st), 0);
    assert_int_equal(st.st_size, 2ll << 30);
    assert_int_equal(stat(second, &st), 0);
    assert_int_equal(st.st_size, 1ll << 30);
    img_opts_free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inside_folder_opens),
        cmocka_unit_test(test_dotdot_needs_flag),
        cmocka_unit_test(test_absolute_needs_flag),
        cmocka_unit_test(test_untrusted_refuses_extent_files),
        cmocka_unit_test(test_extents_are_locked),
        cmocka_unit_test(test_failed_create_removes_extents),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
