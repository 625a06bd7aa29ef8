/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_rebase(): the contract beside the bytes (which the interop test compares with qemu-img):
 * the handle reads through the new backing file afterwards, progress reaches the total, a
 * cancel leaves the image naming its old backing file with the same guest view, and the
 * refusals come with their codes and messages.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <imgutil.h>

#include "api_check.h"

#define SIZE (1u << 20)

static char dir[] = "/tmp/imgutil-rebase.XXXXXX";

static char *path_of(const char *name)
{
    static char paths[8][128];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 128, "%s/%s", dir, name);
    return p;
}

/* Creates `name` (qcow2, SIZE) on `backing` (or none) and fills [off, off + len) with `byte`. */
static void make(const char *name, const char *backing, uint8_t byte, uint64_t off, size_t len)
{
    img_opts *opts = NULL;
    img_opts_new(&opts);
    if (backing) {
        img_opts_set(opts, "backing_file", backing);
        img_opts_set(opts, "backing_fmt", "qcow2");
    }
    img_opts_set(opts, "overwrite", "on");
    int ret = img_create(path_of(name), "qcow2", SIZE, opts);
    img_opts_free(opts);
    CHECK(ret == 0, "create %s", name);
    img *im = NULL;
    ret = img_open(&im, path_of(name), "qcow2", IMG_OPEN_READ_WRITE, NULL);
    CHECK(ret == 0, "open %s", name);
    if (ret < 0)
        return;
    uint8_t *buf = malloc(len);
    memset(buf, byte, len);
    CHECK(img_pwrite(im, buf, len, off) == (int64_t)len, "write %s", name);
    free(buf);
    img_close(im);
}

static uint8_t *view_of(img *im)
{
    uint8_t *buf = malloc(SIZE);
    CHECK(img_pread(im, buf, SIZE, 0) == SIZE, "read the guest view");
    return buf;
}

static img *open_overlay(const char *name, unsigned flags)
{
    img *im = NULL;
    int ret = img_open(&im, path_of(name), "qcow2", flags, NULL);
    CHECK(ret == 0, "open %s", name);
    return ret == 0 ? im : NULL;
}

struct progress_log {
    unsigned calls;
    uint64_t last_done, last_total;
    int cancel_after; /* calls before the callback asks to stop; 0: never */
};

static int on_progress(void *user, uint64_t done, uint64_t total)
{
    struct progress_log *log = user;
    log->calls++;
    log->last_done = done;
    log->last_total = total;
    return log->cancel_after && log->calls >= (unsigned)log->cancel_after;
}

static void expect_backing(img *im, const char *name, const char *format)
{
    const char *got = NULL, *got_format = NULL;
    img_get_backing_filename(im, &got, &got_format);
    CHECK((got == NULL) == (name == NULL) && (!name || strcmp(got, name) == 0),
          "backing file %s, want %s", got ? got : "(none)", name ? name : "(none)");
    CHECK((got_format == NULL) == (format == NULL) && (!format || strcmp(got_format, format) == 0),
          "backing format %s, want %s", got_format ? got_format : "(none)",
          format ? format : "(none)");
}

/* Safe rebase: the same view through the handle, now read through B; progress to the end. */
static void test_safe(void)
{
    make("O1.qcow2", "A.qcow2", 0x33, 64 << 10, 4096);
    img *im = open_overlay("O1.qcow2", IMG_OPEN_READ_WRITE);
    if (!im)
        return;
    uint8_t *before = view_of(im);
    struct progress_log log = {0};
    img_set_progress(im, on_progress, &log);
    CHECK(img_rebase(im, "B.qcow2", "qcow2", 0) == 0, "safe rebase");
    CHECK(log.calls > 0 && log.last_done == SIZE && log.last_total == SIZE,
          "progress: %u calls, last %llu of %llu", log.calls, (unsigned long long)log.last_done,
          (unsigned long long)log.last_total);
    expect_backing(im, "B.qcow2", "qcow2");
    uint8_t *after = view_of(im);
    CHECK(memcmp(before, after, SIZE) == 0, "the handle's view changed");
    free(after);
    img_close(im);
    im = open_overlay("O1.qcow2", IMG_OPEN_READ_ONLY);
    after = im ? view_of(im) : NULL;
    CHECK(after && memcmp(before, after, SIZE) == 0, "the view after reopening changed");
    free(after);
    img_close(im);
    free(before);
}

/* A cancelled rebase: the old backing file, the same view. */
static void test_cancel(void)
{
    make("O2.qcow2", "A.qcow2", 0x44, 0, 4096);
    img *im = open_overlay("O2.qcow2", IMG_OPEN_READ_WRITE);
    if (!im)
        return;
    uint8_t *before = view_of(im);
    struct progress_log log = {.cancel_after = 1};
    img_set_progress(im, on_progress, &log);
    int ret = img_rebase(im, "B.qcow2", "qcow2", 0);
    CHECK(ret == -ECANCELED, "cancelled rebase: %d", ret);
    expect_backing(im, "A.qcow2", "qcow2");
    img_close(im);
    im = open_overlay("O2.qcow2", IMG_OPEN_READ_ONLY);
    if (!im)
        return;
    expect_backing(im, "A.qcow2", "qcow2");
    uint8_t *after = view_of(im);
    CHECK(memcmp(before, after, SIZE) == 0, "a cancelled rebase changed the view");
    free(after);
    free(before);
    img_close(im);
}

/* Unsafe on a handle that reads its chain: it reads the new one. Then a safe detach. */
static void test_unsafe_and_detach(void)
{
    make("O3.qcow2", "A.qcow2", 0x55, 0, 4096);
    img *im = open_overlay("O3.qcow2", IMG_OPEN_READ_WRITE);
    if (!im)
        return;
    CHECK(img_rebase(im, "B.qcow2", "qcow2", IMG_REBASE_UNSAFE) == 0, "unsafe rebase");
    expect_backing(im, "B.qcow2", "qcow2");
    uint8_t byte = 0;
    CHECK(img_pread(im, &byte, 1, 128 << 10) == 1 && byte == 0x22,
          "after -u the handle reads B (got 0x%02x)", byte);
    uint8_t *before = view_of(im);
    CHECK(img_rebase(im, NULL, "qcow2", 0) == 0, "safe detach");
    expect_backing(im, NULL, NULL);
    CHECK(img_get_backing(im) == NULL, "a detached handle still has a backing image");
    uint8_t *after = view_of(im);
    CHECK(memcmp(before, after, SIZE) == 0, "detaching changed the view");
    free(before);
    free(after);
    img_close(im);
}

static void expect_refusal(img *im, const char *backing, const char *format, unsigned flags,
                           int code, const char *message)
{
    int ret = img_rebase(im, backing, format, flags);
    CHECK(ret == code, "rebase onto %s: %d, want %d", backing ? backing : "(none)", ret, code);
    CHECK(strstr(img_last_error(), message) != NULL, "message lacks '%s'", message);
}

static void test_refusals(void)
{
    expect_refusal(NULL, "B.qcow2", "qcow2", 0, -EINVAL, "invalid image handle");
    img *im = open_overlay("O1.qcow2", IMG_OPEN_READ_ONLY);
    if (im) {
        expect_refusal(im, "A.qcow2", "qcow2", 0, -EROFS, "read-only");
        img_close(im);
    }
    im = open_overlay("O1.qcow2", IMG_OPEN_READ_WRITE | IMG_OPEN_NO_BACKING);
    if (im) {
        expect_refusal(im, "A.qcow2", "qcow2", 0, -EINVAL, "IMG_OPEN_NO_BACKING");
        expect_refusal(im, "A.qcow2", "qcow2", 1u << 9, -EINVAL, "unknown flags");
        expect_refusal(im, "A.qcow2", NULL, IMG_REBASE_UNSAFE, -EINVAL,
                       "Could not change the backing file to 'A.qcow2': backing format must be "
                       "specified");
        expect_refusal(im, "A.qcow2", "nosuchformat", IMG_REBASE_UNSAFE, -EINVAL,
                       "Invalid format name: 'nosuchformat'");
        img_close(im);
    }
    im = open_overlay("O1.qcow2", IMG_OPEN_READ_WRITE);
    if (im) {
        expect_refusal(im, "missing.qcow2", "qcow2", 0, -ENOENT,
                       "Could not open new backing file 'missing.qcow2': ");
        expect_backing(im, "B.qcow2", "qcow2");
        img_close(im);
    }
    CHECK(img_create(path_of("r.raw"), "raw", SIZE, NULL) == 0, "create raw");
    im = NULL;
    if (img_open(&im, path_of("r.raw"), "raw", IMG_OPEN_READ_WRITE, NULL) == 0) {
        expect_refusal(im, "A.qcow2", "qcow2", IMG_REBASE_UNSAFE, -ENOTSUP,
                       "Could not change the backing file to 'A.qcow2': Operation not "
                       "supported");
        img_close(im);
    }
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    make("A.qcow2", NULL, 0x11, 0, SIZE);
    make("B.qcow2", NULL, 0x22, 0, SIZE / 2);
    test_safe();
    test_cancel();
    test_unsafe_and_detach();
    test_refusals();
    const char *names[] = {"A.qcow2", "B.qcow2", "O1.qcow2", "O2.qcow2", "O3.qcow2", "r.raw"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        unlink(path_of(names[i]));
    rmdir(dir);
    return failures ? 1 : 0;
}
