/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_close with requests in flight, callbacks that submit, and submitters on other threads.
 * Run under ThreadSanitizer in CI. No qemu-img needed: the images are made by img_create.
 *
 * img_close must wait for every request in flight (their data is in the image afterwards and
 * read buffers are filled), must not run their callbacks, and must say so on img_last_error.
 */
#include "aio_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define IMAGE_SIZE (4u << 20)
#define BLOCK 4096u
#define BLOCKS (IMAGE_SIZE / BLOCK)
#define CLOSE_WRITES 300u
#define CHAIN 100u
#define THREAD_READS 200u

static unsigned callbacks;
static pthread_t main_thread;

static void count_done(void *user, int64_t result)
{
    (void)user;
    CHECK(result >= 0);
    CHECK(pthread_equal(pthread_self(), main_thread)); /* never on a library thread */
    callbacks++;
}

static void fill_block(uint8_t *buf, unsigned block, unsigned salt)
{
    for (unsigned i = 0; i < BLOCK; i++)
        buf[i] = (uint8_t)(block * 31 + i * 7 + salt);
}

/* Checks every block written with `salt` (blocks < `count`) through a fresh read-only open. */
static void check_blocks(const char *path, const char *fmt, unsigned count, unsigned salt)
{
    img *image;
    CHECK_EQ(img_open(&image, path, fmt, IMG_OPEN_READ_ONLY, NULL), 0);
    uint8_t got[BLOCK], want[BLOCK];
    for (unsigned b = 0; b < count; b++) {
        CHECK_EQ(img_pread(image, got, BLOCK, (uint64_t)b * BLOCK), BLOCK);
        fill_block(want, b, salt);
        if (memcmp(got, want, BLOCK) != 0) {
            fprintf(stderr, "%s: block %u does not hold the data written before img_close\n", path,
                    b);
            exit(1);
        }
    }
    img_close(image);
}

/* Writes in flight, then img_close at once: all reach the image, no callback runs. */
static void close_waits_for_writes(const char *path, const char *fmt)
{
    img *image;
    CHECK_EQ(img_open(&image, path, fmt, IMG_OPEN_READ_WRITE, NULL), 0);
    static uint8_t bufs[CLOSE_WRITES][BLOCK];
    static uint8_t reads[2][BLOCK];
    for (unsigned b = 0; b < CLOSE_WRITES; b++) {
        fill_block(bufs[b], b, 1);
        CHECK_EQ(img_aio_pwrite(image, bufs[b], BLOCK, (uint64_t)b * BLOCK, count_done, NULL), 0);
    }
    /* Reads of blocks no write in flight touches: their buffers are filled by close. */
    memset(reads, 0xee, sizeof(reads));
    CHECK_EQ(
        img_aio_pread(image, reads[0], BLOCK, (uint64_t)(BLOCKS - 1) * BLOCK, count_done, NULL), 0);
    CHECK_EQ(img_aio_zero(image, (uint64_t)(BLOCKS - 2) * BLOCK, BLOCK, 0, count_done, NULL), 0);
    CHECK_EQ(img_aio_flush(image, count_done, NULL), 0);
    CHECK_EQ(img_aio_in_flight(image), CLOSE_WRITES + 3);

    callbacks = 0;
    img_close(image);
    CHECK_EQ(callbacks, 0);
    char expect[128];
    snprintf(expect, sizeof(expect), "%u asynchronous requests were not polled", CLOSE_WRITES + 3);
    if (strncmp(img_last_error(), "img_close: ", 11) != 0 || !strstr(img_last_error(), expect)) {
        fprintf(stderr, "unexpected message after img_close: %s\n", img_last_error());
        exit(1);
    }
    uint8_t zeros[BLOCK] = {0};
    CHECK(memcmp(reads[0], zeros, BLOCK) == 0); /* the image's last block is still a hole */
    check_blocks(path, fmt, CLOSE_WRITES, 1);
}

struct chain {
    img *image;
    unsigned next;
    uint8_t bufs[CHAIN][BLOCK];
};

/* Each completion submits the next write; it may not poll or close its own handle. */
static void chain_done(void *user, int64_t result)
{
    struct chain *c = user;
    CHECK_EQ(result, BLOCK);
    callbacks++;
    CHECK_EQ(img_aio_poll(c->image, 0), -EBUSY);
    img_close(c->image); /* refused: the handle stays open */
    CHECK(strstr(img_last_error(), "refused from a completion callback of the image") != NULL);
    CHECK_EQ(img_get_size(c->image), IMAGE_SIZE);
    if (c->next < CHAIN) {
        unsigned b = c->next++;
        fill_block(c->bufs[b], b, 2);
        CHECK_EQ(img_aio_pwrite(c->image, c->bufs[b], BLOCK, (uint64_t)b * BLOCK, chain_done, c),
                 0);
    }
}

static void callbacks_submit(const char *path, const char *fmt)
{
    static struct chain c;
    CHECK_EQ(img_open(&c.image, path, fmt, IMG_OPEN_READ_WRITE, NULL), 0);
    c.next = 1;
    fill_block(c.bufs[0], 0, 2);
    callbacks = 0;
    CHECK_EQ(img_aio_pwrite(c.image, c.bufs[0], BLOCK, 0, chain_done, &c), 0);
    while (img_aio_in_flight(c.image) > 0)
        CHECK(img_aio_poll(c.image, -1) >= 0);
    CHECK_EQ(callbacks, CHAIN);
    img_close(c.image);
    check_blocks(path, fmt, CHAIN, 2);
}

struct submitter {
    img *image;
    uint8_t bufs[THREAD_READS][BLOCK];
};

static void *submit_reads(void *arg)
{
    struct submitter *s = arg;
    for (unsigned i = 0; i < THREAD_READS; i++)
        CHECK_EQ(img_aio_pread(s->image, s->bufs[i], BLOCK, (uint64_t)(i % CHAIN) * BLOCK,
                               count_done, NULL),
                 0);
    return NULL;
}

/* Requests submitted by another thread complete on the polling thread. */
static void submit_from_threads(const char *path, const char *fmt)
{
    static struct submitter s;
    CHECK_EQ(img_open(&s.image, path, fmt, IMG_OPEN_READ_ONLY, NULL), 0);
    int fd = img_aio_get_fd(s.image);
    CHECK(fd >= 0);
    callbacks = 0;
    pthread_t tid;
    CHECK_EQ(pthread_create(&tid, NULL, submit_reads, &s), 0);
    CHECK_EQ(pthread_join(tid, NULL), 0);
    while (img_aio_in_flight(s.image) > 0)
        CHECK(img_aio_poll(s.image, -1) >= 0);
    CHECK_EQ(callbacks, THREAD_READS);
    uint8_t want[BLOCK];
    for (unsigned i = 0; i < THREAD_READS; i++) {
        fill_block(want, i % CHAIN, 2);
        CHECK(memcmp(s.bufs[i], want, BLOCK) == 0);
    }
    img_close(s.image);
}

/* Requests on a backing image's handle are waited for when the image owning it closes. */
static void close_waits_for_backing_requests(const char *dir)
{
    char *base = path_in(dir, "base.raw");
    char *top = path_in(dir, "top.qcow2");
    CHECK_EQ(img_create(base, "raw", IMAGE_SIZE, NULL), 0);
    img *image;
    CHECK_EQ(img_open(&image, base, "raw", IMG_OPEN_READ_WRITE, NULL), 0);
    static uint8_t block[BLOCK];
    for (unsigned b = 0; b < CHAIN; b++) {
        fill_block(block, b, 3);
        CHECK_EQ(img_pwrite(image, block, BLOCK, (uint64_t)b * BLOCK), BLOCK);
    }
    img_close(image);
    img_opts *opts;
    CHECK_EQ(img_opts_new(&opts), 0);
    CHECK_EQ(img_opts_set(opts, "backing_file", "base.raw"), 0);
    CHECK_EQ(img_opts_set(opts, "backing_fmt", "raw"), 0);
    CHECK_EQ(img_create(top, "qcow2", IMAGE_SIZE, opts), 0);
    img_opts_free(opts);

    CHECK_EQ(img_open(&image, top, "qcow2", IMG_OPEN_READ_ONLY, NULL), 0);
    img *backing = img_get_backing(image);
    CHECK(backing != NULL);
    /* One buffer per request: the backing image's and the image's reads run together. */
    static uint8_t bufs[2][CHAIN][BLOCK];
    for (unsigned b = 0; b < CHAIN; b++) {
        CHECK_EQ(img_aio_pread(backing, bufs[0][b], BLOCK, (uint64_t)b * BLOCK, count_done, NULL),
                 0);
        CHECK_EQ(img_aio_pread(image, bufs[1][b], BLOCK, (uint64_t)b * BLOCK, count_done, NULL), 0);
    }
    callbacks = 0;
    img_close(image);
    CHECK_EQ(callbacks, 0);
    char expect[128];
    snprintf(expect, sizeof(expect), "%u asynchronous requests were not polled", 2 * CHAIN);
    CHECK(strstr(img_last_error(), expect) != NULL); /* the backing image's requests too */
    uint8_t want[BLOCK];
    for (unsigned b = 0; b < CHAIN; b++) {
        fill_block(want, b, 3);
        CHECK(memcmp(bufs[0][b], want, BLOCK) == 0);
        CHECK(memcmp(bufs[1][b], want, BLOCK) == 0);
    }
    free(base);
    free(top);
}

int main(void)
{
    main_thread = pthread_self();
    char *dir = scratch_dir();
    const char *formats[] = {"raw", "qcow2"};
    for (unsigned i = 0; i < 2; i++) {
        char *path = path_in(dir, formats[i]);
        CHECK_EQ(img_create(path, formats[i], IMAGE_SIZE, NULL), 0);
        close_waits_for_writes(path, formats[i]);
        callbacks_submit(path, formats[i]);
        submit_from_threads(path, formats[i]);
        free(path);
    }
    close_waits_for_backing_requests(dir);
    scratch_remove(dir);
    free(dir);
    return 0;
}
