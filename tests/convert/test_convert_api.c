/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The public API of convert's options: img_cancel() from another thread stops a running
 * img_convert() (-ECANCELED, no target left), also while it waits for its rate limit;
 * img_convert_many() concatenates; "skip_create" writes into an existing image; the open
 * options of a snapshot's view. Images are made with qemu-img/qemu-io (skipped without them).
 *
 * usage: test_convert_api WORKDIR
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imgutil.h"
#include "api_check.h"

#define SKIP 77

static char dir[4096];

static const char *path_of(const char *name)
{
    static char paths[8][4200];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof(paths[0]), "%s/%s", dir, name);
    return p;
}

static int sh(const char *fmt, const char *arg)
{
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), fmt, arg, arg, arg);
    return system(cmd);
}

/* ---- img_cancel() reaches a running convert ---- */

struct canceller {
    img *src;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool started;
};

static int note_progress(void *user, uint64_t done, uint64_t total)
{
    struct canceller *c = user;
    (void)total;
    if (done > 0) {
        pthread_mutex_lock(&c->lock);
        c->started = true;
        pthread_cond_signal(&c->cond);
        pthread_mutex_unlock(&c->lock);
    }
    return 0;
}

static void *cancel_when_started(void *arg)
{
    struct canceller *c = arg;
    pthread_mutex_lock(&c->lock);
    while (!c->started)
        pthread_cond_wait(&c->cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
    img_cancel(c->src);
    return NULL;
}

static void test_cancel(const char *format, const char *rate)
{
    img *src;
    CHECK(img_open(&src, path_of("data.raw"), "raw", IMG_OPEN_READ_ONLY, NULL) == 0, "open");
    struct canceller c = {.src = src};
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.cond, NULL);
    pthread_t t;
    pthread_create(&t, NULL, cancel_when_started, &c);
    img_opts *opts;
    img_opts_new(&opts);
    /* Slow enough that the copy is still running when the cancel comes. */
    img_opts_set(opts, "rate_limit", rate);
    unlink(path_of("cancelled.out"));
    int ret = img_convert(src, path_of("cancelled.out"), format, opts, note_progress, &c);
    CHECK(ret == -ECANCELED, "%s convert with img_cancel(): %d, not -ECANCELED", format, ret);
    CHECK(access(path_of("cancelled.out"), F_OK) != 0, "a cancelled convert leaves no target");
    pthread_mutex_lock(&c.lock);
    c.started = true; /* the thread ends even if no progress came */
    pthread_cond_signal(&c.cond);
    pthread_mutex_unlock(&c.lock);
    pthread_join(t, NULL);
    /* Later converts of the handle are not cancelled. */
    ret = img_convert(src, path_of("after.out"), format, NULL, NULL, NULL);
    CHECK(ret == 0, "a convert after the cancelled one: %d", ret);
    img_opts_free(opts);
    img_close(src);
}

/* ---- img_convert_many ---- */

static void test_many(void)
{
    img *srcs[3];
    const char *names[3] = {"m1.raw", "m2.qcow2", "m3.raw"};
    for (int i = 0; i < 3; i++)
        CHECK(img_open(&srcs[i], path_of(names[i]), NULL, IMG_OPEN_READ_ONLY, NULL) == 0, "open %s",
              names[i]);
    int ret = img_convert_many(srcs, 3, path_of("many.qcow2"), "qcow2", NULL, NULL, NULL);
    CHECK(ret == 0, "img_convert_many: %d", ret);
    CHECK(sh("qemu-img convert -O qcow2 %s/m1.raw %1$s/m2.qcow2 %1$s/m3.raw %1$s/q-many.qcow2 && "
             "qemu-img compare -q %1$s/many.qcow2 %1$s/q-many.qcow2",
             dir) == 0,
          "img_convert_many reads back as qemu-img's concatenation");
    img_opts *opts;
    img_opts_new(&opts);
    img_opts_set(opts, "backing_file", "m2.qcow2");
    img_opts_set(opts, "backing_fmt", "qcow2");
    ret = img_convert_many(srcs, 3, path_of("many-b.qcow2"), "qcow2", opts, NULL, NULL);
    CHECK(ret == -EINVAL && strstr(img_last_error(), "Having a backing file for the target"),
          "a backing file with several sources is refused: %d", ret);
    CHECK(img_convert_many(srcs, 0, path_of("none.qcow2"), "qcow2", NULL, NULL, NULL) == -EINVAL,
          "no sources");
    img_opts_free(opts);
    for (int i = 0; i < 3; i++)
        img_close(srcs[i]);
}

/* ---- skip_create ---- */

static void test_existing(void)
{
    img *src;
    CHECK(img_open(&src, path_of("m2.qcow2"), "qcow2", IMG_OPEN_READ_ONLY, NULL) == 0, "open");
    img_opts *opts;
    img_opts_new(&opts);
    img_opts_set(opts, "skip_create", "on");
    CHECK(img_convert(src, path_of("small.raw"), "raw", opts, NULL, NULL) == -EINVAL &&
              strstr(img_last_error(), "output file is smaller than input file"),
          "-n into a smaller target");
    CHECK(img_convert(src, path_of("absent.raw"), "raw", opts, NULL, NULL) == -ENOENT,
          "-n into an absent target");
    CHECK(access(path_of("absent.raw"), F_OK) != 0, "-n creates nothing");
    CHECK(img_convert(src, path_of("old.raw"), "raw", opts, NULL, NULL) == 0, "-n");
    CHECK(sh("qemu-img compare -q -f qcow2 -F raw %s/m2.qcow2 %1$s/old.raw", dir) == 0,
          "-n: the old content is replaced where the source has zeros");
    img_opts_set(opts, "cluster_size", "4096");
    CHECK(img_convert(src, path_of("old.raw"), "raw", opts, NULL, NULL) == -EINVAL &&
              strstr(img_last_error(), "-o has no effect when skipping image creation"),
          "-n with creation options");
    img_opts_free(opts);
    img_close(src);
}

/* ---- a snapshot's view ---- */

static void test_snapshot_view(void)
{
    img_opts *opts;
    img_opts_new(&opts);
    img *img;
    img_opts_set(opts, "snapshot.name", "nope");
    CHECK(img_open(&img, path_of("s.qcow2"), "qcow2", IMG_OPEN_READ_ONLY, opts) == -ENOENT &&
              strstr(img_last_error(), "Can't find snapshot"),
          "an unknown snapshot");
    img_opts_set(opts, "snapshot.name", "snap1");
    CHECK(img_open(&img, path_of("s.qcow2"), "qcow2", IMG_OPEN_READ_WRITE, opts) == -EINVAL,
          "a snapshot's view is read-only");
    CHECK(img_open(&img, path_of("m1.raw"), "raw", IMG_OPEN_READ_ONLY, opts) == -ENOTSUP,
          "raw has no snapshots");
    if (img_open(&img, path_of("s.qcow2"), "qcow2", IMG_OPEN_READ_ONLY, opts) == 0) {
        uint8_t buf[512];
        CHECK(img_pread(img, buf, sizeof(buf), 0) == (int)sizeof(buf) && buf[0] == 1 &&
                  buf[511] == 1,
              "the snapshot's content");
        CHECK(img_get_size(img) == 8u << 20, "the image's current size");
        img_close(img);
    } else {
        CHECK(0, "open snapshot snap1");
    }
    img_opts_free(opts);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s WORKDIR\n", argv[0]);
        return 2;
    }
    if (system("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") != 0) {
        printf("SKIP: qemu-img or qemu-io not installed\n");
        return SKIP;
    }
    snprintf(dir, sizeof(dir), "%s/convert-api-XXXXXX", argv[1]);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    int made = sh("cd %s && qemu-img create -q -f raw data.raw 8M && "
                  "qemu-io -f raw -c 'write -P 6 0 8M' data.raw >/dev/null && "
                  "qemu-img create -q -f raw m1.raw 1M && "
                  "qemu-io -f raw -c 'write -P 7 0 512k' m1.raw >/dev/null && "
                  "qemu-img create -q -f qcow2 m2.qcow2 3M && "
                  "qemu-io -c 'write -P 8 1M 64k' m2.qcow2 >/dev/null && "
                  "qemu-img create -q -f raw m3.raw 1536k && "
                  "qemu-io -f raw -c 'write -P 9 1M 4k' m3.raw >/dev/null && "
                  "qemu-img create -q -f raw small.raw 1M && "
                  "qemu-img create -q -f raw old.raw 3M && "
                  "qemu-io -f raw -c 'write -P 5 0 3M' old.raw >/dev/null && "
                  "qemu-img create -q -f qcow2 s.qcow2 4M && "
                  "qemu-io -c 'write -P 1 0 1M' s.qcow2 >/dev/null && "
                  "qemu-img snapshot -c snap1 s.qcow2 && "
                  "qemu-io -c 'write -P 2 0 64k' s.qcow2 >/dev/null && "
                  "qemu-img resize -q s.qcow2 8M",
                  dir);
    if (made != 0) {
        fprintf(stderr, "FAIL: cannot make the test images\n");
        return 1;
    }
    test_cancel("raw", "4M");
    test_cancel("qcow2", "4M");
    test_many();
    test_existing();
    test_snapshot_view();
    sh("rm -rf %s", dir);
    printf("%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
