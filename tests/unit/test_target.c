/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The target rules of img_create and img_convert, through the public API: an image held open
 * for writing (here by another handle of this process: the locks belong to the open file, so
 * it counts as another user) is refused with -EBUSY and left byte for byte as it was; targets
 * that are no file are refused before anything is written; a hard-linked target is refused;
 * a failed create removes the file it made and keeps the file it was to replace.
 */
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

static char dir[] = "/tmp/imgutil-test-target-XXXXXX";

static char *path_in_dir(const char *name)
{
    static char paths[4][256];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* The whole file, NUL-terminated (small files only). */
static char *read_file(const char *path)
{
    static char buf[1 << 16];
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    assert_true(n >= 0);
    buf[n] = '\0';
    return buf;
}

static img_opts *overwrite_opts(void)
{
    img_opts *opts;
    assert_int_equal(img_opts_new(&opts), 0);
    assert_int_equal(img_opts_set(opts, "overwrite", "on"), 0);
    return opts;
}

/* A raw source of 1 MiB of 0x5a. */
static img *open_source(void)
{
    const char *path = path_in_dir("source.raw");
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_true(fd >= 0);
    static uint8_t data[1 << 20];
    memset(data, 0x5a, sizeof(data));
    assert_int_equal(write(fd, data, sizeof(data)), (ssize_t)sizeof(data));
    close(fd);
    img *src;
    assert_int_equal(img_open(&src, path, "raw", IMG_OPEN_READ_ONLY, NULL), 0);
    return src;
}

static void test_create_onto_held_image(void **state)
{
    (void)state;
    const char *path = path_in_dir("held.qcow2");
    assert_int_equal(img_create(path, "qcow2", 1 << 20, NULL), 0);
    img *held;
    assert_int_equal(img_open(&held, path, "qcow2", IMG_OPEN_READ_WRITE, NULL), 0);
    uint8_t data[4096];
    memset(data, 0x11, sizeof(data));
    assert_int_equal(img_pwrite(held, data, sizeof(data), 0), (int64_t)sizeof(data));
    assert_int_equal(img_flush(held), 0);
    struct stat before, after;
    assert_int_equal(stat(path, &before), 0);

    img_opts *opts = overwrite_opts();
    assert_int_equal(img_create(path, "qcow2", 1 << 30, opts), -EBUSY);
    assert_non_null(strstr(img_last_error(), "\"write\" lock"));
    assert_int_equal(img_create(path, "raw", 1 << 30, opts), -EBUSY);
    img_opts_free(opts);

    assert_int_equal(stat(path, &after), 0);
    assert_int_equal(after.st_ino, before.st_ino);
    assert_int_equal(after.st_size, before.st_size);
    uint8_t back[4096];
    assert_int_equal(img_pread(held, back, sizeof(back), 0), (int64_t)sizeof(back));
    assert_memory_equal(back, data, sizeof(data));
    img_close(held);
}

static void test_convert_onto_held_image(void **state)
{
    (void)state;
    img *src = open_source();
    const char *path = path_in_dir("held.raw");
    write_file(path, "in use");
    img *held;
    assert_int_equal(img_open(&held, path, "raw", IMG_OPEN_READ_WRITE, NULL), 0);
    assert_int_equal(img_convert(src, path, "raw", NULL, NULL, NULL), -EBUSY);
    assert_non_null(strstr(img_last_error(), "error while converting raw"));
    assert_int_equal(img_convert(src, path, "qcow2", NULL, NULL, NULL), -EBUSY);
    img_close(held);
    assert_string_equal(read_file(path), "in use");
    img_close(src);
}

static void test_refused_kinds(void **state)
{
    (void)state;
    img *src = open_source();
    const char *fifo = path_in_dir("fifo");
    assert_int_equal(mkfifo(fifo, 0644), 0);
    assert_int_equal(img_convert(src, fifo, "raw", NULL, NULL, NULL), -EINVAL);
    img_opts *opts = overwrite_opts();
    assert_int_equal(img_create(fifo, "raw", 1 << 20, opts), -EINVAL);
    struct stat st;
    assert_int_equal(lstat(fifo, &st), 0);
    assert_true(S_ISFIFO(st.st_mode));

    const char *folder = path_in_dir("folder");
    assert_int_equal(mkdir(folder, 0755), 0);
    assert_int_equal(img_convert(src, folder, "qcow2", NULL, NULL, NULL), -EISDIR);
    assert_int_equal(img_create(folder, "qcow2", 1 << 20, opts), -EISDIR);
    img_opts_free(opts);
    img_close(src);
}

static void test_hard_links_refused(void **state)
{
    (void)state;
    img *src = open_source();
    const char *path = path_in_dir("linked.raw"), *other = path_in_dir("other-name.raw");
    write_file(path, "linked");
    assert_int_equal(link(path, other), 0);
    assert_int_equal(img_convert(src, path, "raw", NULL, NULL, NULL), -EMLINK);
    img_opts *opts = overwrite_opts();
    assert_int_equal(img_create(path, "qcow2", 1 << 20, opts), -EMLINK);
    img_opts_free(opts);
    assert_string_equal(read_file(other), "linked");
    struct stat a, b;
    assert_int_equal(stat(path, &a), 0);
    assert_int_equal(stat(other, &b), 0);
    assert_int_equal(a.st_ino, b.st_ino);
    img_close(src);
}

/* A create that fails after the target was opened: a bad option value. */
static void test_failed_create_loses_nothing(void **state)
{
    (void)state;
    img_opts *opts = overwrite_opts();
    assert_int_equal(img_opts_set(opts, "cluster_size", "3"), 0);
    const char *fresh = path_in_dir("fresh.qcow2");
    assert_true(img_create(fresh, "qcow2", 1 << 20, opts) < 0);
    assert_int_equal(access(fresh, F_OK), -1);

    const char *old = path_in_dir("old.qcow2");
    write_file(old, "old image");
    assert_true(img_create(old, "qcow2", 1 << 20, opts) < 0);
    assert_string_equal(read_file(old), "old image");
    img_opts_free(opts);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_onto_held_image),
        cmocka_unit_test(test_convert_onto_held_image),
        cmocka_unit_test(test_refused_kinds),
        cmocka_unit_test(test_hard_links_refused),
        cmocka_unit_test(test_failed_create_loses_nothing),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return failed;
}
