/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_commit(): its contract beside what test_commit_cli.py compares with qemu-img: progress
 * and cancellation (a cancelled commit leaves the top unchanged), the handle reading the
 * committed data through its reopened base, the base read-only and unlocked for writers again
 * afterwards, and refusals with their codes and messages (a base another handle holds, a top
 * opened read-only or without its chain, unknown flags).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <imgutil.h>

#include "api_check.h"

#define SIZE (2u << 20)
#define MB (1u << 20)

static char base_path[128], top_path[128];
static uint8_t pattern_top[65536], pattern_base[65536];

/* A raw base full of 0xaa under a qcow2 top holding 64 KiB of 0x11 at 1 MiB. */
static void make_chain(void)
{
    unlink(base_path);
    unlink(top_path);
    img *img = NULL;
    CHECK(img_create(base_path, "raw", SIZE, NULL) == 0, "create base");
    CHECK(img_open(&img, base_path, "raw", IMG_OPEN_READ_WRITE, NULL) == 0, "open base");
    for (uint64_t off = 0; img && off < SIZE; off += sizeof(pattern_base))
        CHECK(img_pwrite(img, pattern_base, sizeof(pattern_base), off) ==
                  (int64_t)sizeof(pattern_base),
              "write base");
    img_close(img);
    img_opts *opts = NULL;
    img_opts_new(&opts);
    img_opts_set(opts, "backing_file", base_path);
    img_opts_set(opts, "backing_fmt", "raw");
    CHECK(img_create(top_path, "qcow2", SIZE, opts) == 0, "create top");
    img_opts_free(opts);
    img = NULL;
    CHECK(img_open(&img, top_path, "qcow2", IMG_OPEN_READ_WRITE, NULL) == 0, "open top");
    if (img)
        CHECK(img_pwrite(img, pattern_top, sizeof(pattern_top), MB) == (int64_t)sizeof(pattern_top),
              "write top");
    img_close(img);
}

/* The first byte of the 64 KiB at `offset` in `path`'s view, or -1. */
static int byte_at(img *img, uint64_t offset)
{
    uint8_t buf[65536];
    if (img_pread(img, buf, sizeof(buf), offset) != (int64_t)sizeof(buf))
        return -1;
    return buf[0];
}

static int raw_byte_at(uint64_t offset)
{
    FILE *f = fopen(base_path, "rb");
    int c = -1;
    if (f && fseek(f, (long)offset, SEEK_SET) == 0)
        c = fgetc(f);
    if (f)
        fclose(f);
    return c;
}

struct progress {
    uint64_t calls, last_done, total;
    uint64_t stop_after; /* 0: never */
};

static int on_progress(void *user, uint64_t done, uint64_t total)
{
    struct progress *p = user;
    p->calls++;
    p->last_done = done;
    p->total = total;
    return p->stop_after && p->calls >= p->stop_after;
}

static void test_commit_and_read_through(void)
{
    make_chain();
    img *top = NULL;
    CHECK(img_open(&top, top_path, "qcow2", IMG_OPEN_READ_WRITE, NULL) == 0, "open");
    if (!top)
        return;
    struct progress p = {0};
    img_set_progress(top, on_progress, &p);
    CHECK(img_commit(top, NULL, 0) == 0, "commit");
    CHECK(p.calls >= 2 && p.last_done == SIZE && p.total == SIZE,
          "progress: %llu calls, last %llu of %llu", (unsigned long long)p.calls,
          (unsigned long long)p.last_done, (unsigned long long)p.total);
    CHECK(raw_byte_at(MB) == 0x11, "base file at 1 MiB: %d", raw_byte_at(MB));
    /* The emptied top reads the data through its base, reopened in place. */
    CHECK(byte_at(top, MB) == 0x11 && byte_at(top, 0) == 0xaa, "top reads %d %d", byte_at(top, MB),
          byte_at(top, 0));
    /* The base is read-only again ... */
    uint8_t b = 0;
    CHECK(img_pwrite(img_get_backing(top), &b, 1, 0) == -EROFS, "base writable after commit");
    /* ... and holds no writer's lock: another reader gets in. */
    img *other = NULL;
    CHECK(img_open(&other, base_path, "raw", IMG_OPEN_READ_ONLY, NULL) == 0, "reopen base");
    img_close(other);
    img_close(top);
}

static void test_cancel_leaves_top(void)
{
    make_chain();
    img *top = NULL;
    CHECK(img_open(&top, top_path, "qcow2", IMG_OPEN_READ_WRITE, NULL) == 0, "open");
    if (!top)
        return;
    struct progress p = {.stop_after = 1};
    img_set_progress(top, on_progress, &p);
    CHECK(img_commit(top, NULL, 0) == -ECANCELED, "cancelled commit");
    CHECK(byte_at(top, MB) == 0x11, "top lost its data: %d", byte_at(top, MB));
    CHECK(raw_byte_at(MB) == 0xaa, "base changed before the first chunk");
    img_set_progress(top, NULL, NULL);
    char *report = NULL;
    CHECK(img_check(top, 0, &report) == 0 && report && strstr(report, "\"leaks\"") == NULL,
          "check after cancel: %s", report ? report : "(none)");
    img_free(report);
    img_close(top);
}

static void test_refusals(void)
{
    make_chain();
    img *top = NULL;
    CHECK(img_commit(NULL, NULL, 0) == -EINVAL, "NULL handle");
    CHECK(img_open(&top, top_path, "qcow2", IMG_OPEN_READ_WRITE, NULL) == 0, "open");
    if (!top)
        return;
    CHECK(img_commit(top, NULL, 0x80) == -EINVAL, "unknown flags");
    CHECK(img_commit(top, "nothere.raw", 0) == -ENOENT, "-b not in the chain");
    CHECK(strstr(img_last_error(), "Did not find 'nothere.raw' in the backing chain of") != NULL,
          "message");

    /* Another handle writing the base keeps other writers out, as a running VM does. */
    img *holder = NULL;
    CHECK(img_open(&holder, base_path, "raw", IMG_OPEN_READ_WRITE, NULL) == 0, "hold base");
    CHECK(img_commit(top, NULL, 0) == -EBUSY, "commit into a held base");
    CHECK(strstr(img_last_error(), "Failed to get \"write\" lock\nIs another process using the "
                                   "image [") != NULL,
          "lock message");
    img_close(holder);
    CHECK(byte_at(top, MB) == 0x11 && byte_at(top, 0) == 0xaa, "top after the refusal");
    img_close(top);

    top = NULL;
    CHECK(img_open(&top, top_path, "qcow2", IMG_OPEN_READ_ONLY, NULL) == 0, "open read-only");
    CHECK(img_commit(top, NULL, 0) == -EROFS, "read-only top, emptied");
    CHECK(img_commit(top, NULL, IMG_COMMIT_KEEP_TOP) == 0, "read-only top, kept");
    CHECK(raw_byte_at(MB) == 0x11, "base after a commit with the top kept");
    img_close(top);

    top = NULL;
    CHECK(img_open(&top, top_path, "qcow2", IMG_OPEN_READ_ONLY | IMG_OPEN_FORCE_SHARE, NULL) == 0,
          "open force-share");
    CHECK(img_commit(top, NULL, IMG_COMMIT_KEEP_TOP) == -EINVAL, "commit without locks");
    img_close(top);

    top = NULL;
    CHECK(img_open(&top, top_path, "qcow2", IMG_OPEN_READ_WRITE | IMG_OPEN_NO_BACKING, NULL) == 0,
          "open without the chain");
    CHECK(img_commit(top, NULL, 0) == -EINVAL, "no chain opened");
    img_close(top);

    top = NULL;
    CHECK(img_open(&top, base_path, "raw", IMG_OPEN_READ_WRITE, NULL) == 0, "open base alone");
    CHECK(img_commit(top, NULL, 0) == -EINVAL, "no backing file");
    CHECK(strstr(img_last_error(), "Image does not have a backing file") != NULL, "message");
    img_close(top);
}

int main(void)
{
    char dir[] = "/tmp/imgutil-commit.XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    snprintf(base_path, sizeof(base_path), "%s/base.raw", dir);
    snprintf(top_path, sizeof(top_path), "%s/top.qcow2", dir);
    memset(pattern_top, 0x11, sizeof(pattern_top));
    memset(pattern_base, 0xaa, sizeof(pattern_base));

    test_commit_and_read_through();
    test_cancel_leaves_top();
    test_refusals();

    unlink(base_path);
    unlink(top_path);
    rmdir(dir);
    if (failures)
        fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
