/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_amend() and img_amend_options_json(): their contract beside what test_amend_cli.sh
 * compares with qemu-img: refusals with codes and messages for every format that cannot be
 * amended (only qcow2 can, as in qemu-img 7.2), progress in bytes of virtual size, and
 * cancellation from the progress callback at each report, which leaves the image readable
 * as before, with the old or the new refcount width and no corruption.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <imgutil.h>

#include "api_check.h"

#define SIZE (8u << 20)

struct reports {
    unsigned calls;
    unsigned cancel_at; /* 0: never */
    uint64_t last_done, total;
    int backwards, overshoot;
};

static int record(void *user, uint64_t done, uint64_t total)
{
    struct reports *r = user;
    r->calls++;
    if (r->calls > 1 && done < r->last_done)
        r->backwards++;
    if (done > total)
        r->overshoot++;
    r->last_done = done;
    r->total = total;
    return r->cancel_at && r->calls >= r->cancel_at;
}

static img_opts *options(const char *text)
{
    img_opts *opts = NULL;
    if (img_opts_new(&opts) < 0 || img_opts_parse(opts, text) < 0) {
        fprintf(stderr, "cannot make options '%s'\n", text);
        exit(1);
    }
    return opts;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 31 + seed);
}

/* A qcow2 image with 4k clusters, data and zeroed ranges. */
static void make_image(const char *path)
{
    img_opts *opts = options("cluster_size=4096");
    CHECK(img_create(path, "qcow2", SIZE, opts) == 0, "create %s", path);
    img_opts_free(opts);
    img *image = NULL;
    CHECK(img_open(&image, path, "qcow2", IMG_OPEN_READ_WRITE, NULL) == 0, "open %s", path);
    if (!image)
        exit(1);
    static uint8_t buf[1 << 20];
    fill(buf, sizeof(buf), 7);
    CHECK(img_pwrite(image, buf, sizeof(buf), 0) == (int64_t)sizeof(buf), "write");
    CHECK(img_pwrite(image, buf, 4096, 5u << 20) == 4096, "write");
    CHECK(img_zero(image, 64 << 10, 64 << 10, 0) == 0, "zero");
    img_close(image);
}

static int refcount_bits(img *image)
{
    char *json = NULL;
    if (img_info_json(image, 0, &json) < 0)
        return -1;
    const char *at = strstr(json, "\"refcount-bits\": ");
    int bits = at ? atoi(at + strlen("\"refcount-bits\": ")) : -1;
    img_free(json);
    return bits;
}

/* The guest view reads as make_image() left it and img_check() finds no corruption. */
static void expect_intact(const char *path, const char *what)
{
    img *image = NULL;
    CHECK(img_open(&image, path, "qcow2", IMG_OPEN_READ_ONLY, NULL) == 0, "%s: reopen", what);
    if (!image)
        return;
    static uint8_t want[1 << 20], got[1 << 20];
    fill(want, sizeof(want), 7);
    memset(want + (64 << 10), 0, 64 << 10);
    CHECK(img_pread(image, got, sizeof(got), 0) == (int64_t)sizeof(got), "%s: read", what);
    CHECK(memcmp(want, got, sizeof(got)) == 0, "%s: the guest view changed", what);
    char *report = NULL;
    CHECK(img_check(image, 0, &report) == 0, "%s: check", what);
    CHECK(report && strstr(report, "\"corruptions\"") == NULL, "%s: corruptions: %s", what,
          report ? report : "(none)");
    img_free(report);
    img_close(image);
}

static void test_refusals(const char *dir)
{
    CHECK(img_amend(NULL, NULL) == -EINVAL, "NULL handle");
    char *json = (char *)"unset";
    CHECK(img_amend_options_json("qcow2", NULL) == -EINVAL, "NULL json");
    CHECK(img_amend_options_json("nosuch", &json) == -ENOENT && json == NULL, "unknown format");
    CHECK(strcmp(img_last_error(), "Unknown file format 'nosuch'") == 0, "unknown format msg");
    CHECK(img_amend_options_json("qcow2", &json) == 0, "qcow2 options");
    CHECK(json && strstr(json, "\"refcount_bits\"") && strstr(json, "\"compat\"") &&
              !strstr(json, "\"cluster_size\""),
          "qcow2 amend options: %s", json ? json : "(none)");
    img_free(json);

    /* Every other format the library knows: qemu-img 7.2 amends none of them. */
    for (int i = 0; i < img_format_count(); i++) {
        const char *name = img_format_name(i);
        if (strcmp(name, "qcow2") == 0)
            continue;
        char want[128];
        snprintf(want, sizeof(want), "Format driver '%s' does not support option amendment", name);
        json = (char *)"unset";
        CHECK(img_amend_options_json(name, &json) == -ENOTSUP && json == NULL, "%s options", name);
        CHECK(strcmp(img_last_error(), want) == 0, "%s options message", name);
        if (img_format_supports(name, "create") != 1)
            continue;
        char path[256];
        snprintf(path, sizeof(path), "%s/other.%s", dir, name);
        if (img_create(path, name, 1u << 20, NULL) < 0)
            continue;
        img *image = NULL;
        if (img_open(&image, path, name, IMG_OPEN_READ_WRITE, NULL) == 0) {
            img_opts *opts = options("size=2M");
            CHECK(img_amend(image, opts) == -ENOTSUP, "%s amend", name);
            CHECK(strstr(img_last_error(), want) != NULL, "%s amend message", name);
            img_opts_free(opts);
            img_close(image);
        }
        unlink(path);
    }

    char path[256];
    snprintf(path, sizeof(path), "%s/refuse.qcow2", dir);
    make_image(path);
    img *image = NULL;
    CHECK(img_open(&image, path, "qcow2", IMG_OPEN_READ_ONLY, NULL) == 0, "open ro");
    img_opts *opts = options("lazy_refcounts=on");
    CHECK(img_amend(image, opts) == -EROFS, "read-only handle");
    img_close(image);
    img_opts_free(opts);
    CHECK(img_open(&image, path, "qcow2", IMG_OPEN_READ_WRITE, NULL) == 0, "open rw");
    img_opts *empty = NULL;
    img_opts_new(&empty);
    CHECK(img_amend(image, empty) == -EINVAL, "no options");
    CHECK(strstr(img_last_error(), "Must specify options (-o)") != NULL, "no options message");
    img_opts_free(empty);
    opts = options("cluster_size=512");
    CHECK(img_amend(image, opts) == -EINVAL, "creation option");
    CHECK(strstr(img_last_error(), "Invalid parameter 'cluster_size'\n"
                                   "This option is only supported for image creation") != NULL,
          "creation option message");
    img_opts_free(opts);
    opts = options("compat=0.10,refcount_bits=8");
    CHECK(img_amend(image, opts) == -EINVAL, "narrow refcounts in v2");
    CHECK(strstr(img_last_error(), "Refcount widths other than 16 bits require compatibility "
                                   "level 1.1 or above (use compat=1.1 or greater)") != NULL,
          "narrow refcounts in v2 message");
    img_opts_free(opts);
    img_close(image);
    unlink(path);
}

static void test_progress(const char *dir)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/progress.qcow2", dir);
    make_image(path);
    img *image = NULL;
    CHECK(img_open(&image, path, "qcow2", IMG_OPEN_READ_WRITE, NULL) == 0, "open");
    if (!image)
        return;
    struct reports r = {0};
    img_set_progress(image, record, &r);
    img_opts *opts = options("refcount_bits=64,compat=1.1");
    CHECK(img_amend(image, opts) == 0, "amend");
    img_opts_free(opts);
    CHECK(r.calls >= 3, "only %u progress reports", r.calls);
    CHECK(r.total == SIZE, "total %llu, want the virtual size", (unsigned long long)r.total);
    CHECK(r.last_done == SIZE, "the last report is at %llu", (unsigned long long)r.last_done);
    CHECK(!r.backwards && !r.overshoot, "reports went back %d times, past the end %d times",
          r.backwards, r.overshoot);
    CHECK(refcount_bits(image) == 64, "refcount bits %d", refcount_bits(image));
    img_close(image);
    expect_intact(path, "after the amend");
    unlink(path);
}

/*
 * Cancels a change at its first reports, then at ever sparser ones (each refcount walk makes
 * one report per refcount table entry), until one is made too late to cancel anything.
 */
static void test_cancel(const char *dir, const char *change, int old_bits, int new_bits)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/cancel.qcow2", dir);
    unsigned cancelled = 0;
    for (unsigned at = 1;; at = at < 4 ? at + 1 : at * 2) {
        make_image(path);
        img *image = NULL;
        CHECK(img_open(&image, path, "qcow2", IMG_OPEN_READ_WRITE, NULL) == 0, "open");
        if (!image)
            return;
        struct reports r = {.cancel_at = at};
        img_set_progress(image, record, &r);
        img_opts *opts = options(change);
        int ret = img_amend(image, opts);
        img_opts_free(opts);
        int bits = refcount_bits(image);
        img_close(image);
        char what[128];
        snprintf(what, sizeof(what), "%s cancelled at report %u", change, at);
        CHECK(ret == 0 || ret == -ECANCELED, "%s: %d", what, ret);
        CHECK(bits == old_bits || bits == new_bits, "%s: refcount bits %d", what, bits);
        expect_intact(path, what);
        unlink(path);
        cancelled += ret == -ECANCELED;
        if (ret == 0 || at > 100000)
            break;
    }
    CHECK(cancelled >= 3, "%s: cancelled only %u times", change, cancelled);
}

int main(void)
{
    char dir[] = "/tmp/imgutil-amend.XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    test_refusals(dir);
    test_progress(dir);
    test_cancel(dir, "refcount_bits=8", 16, 8);
    test_cancel(dir, "compat=0.10", 16, 16);
    rmdir(dir);
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("amend api: ok\n");
    return 0;
}
