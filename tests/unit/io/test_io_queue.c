/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * io_queue on the engine named by IMGUTIL_IO (meson runs this program once per engine). When
 * "uring" is asked for but the kernel refuses io_uring, the program exits 77 (skipped) rather
 * than test the thread pool a second time under the wrong name.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "io/io.h"
#include "io_test_util.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

/* Counts callbacks and remembers the threads they ran on. */
struct tally {
    unsigned calls;
    unsigned errors;
    int last_result;
    pthread_t owner;
    unsigned wrong_thread;
};

struct test_req {
    struct io_req req;
    struct tally *tally;
    const unsigned char *expect; /* for reads: the bytes that must arrive */
    unsigned mismatches;
};

static void tally_done(struct io_req *req, int result)
{
    struct test_req *t = (struct test_req *)req;
    struct tally *ty = t->tally;
    ty->calls++;
    ty->last_result = result;
    if (result < 0)
        ty->errors++;
    if (!pthread_equal(pthread_self(), ty->owner))
        ty->wrong_thread++;
    if (result == 0 && req->op == IO_OP_READ && t->expect &&
        memcmp(req->buf, t->expect, req->len) != 0)
        t->mismatches++;
}

static void init_req(struct test_req *t, struct tally *ty, enum io_op op, struct io_file *f,
                     void *buf, size_t len, uint64_t offset)
{
    memset(t, 0, sizeof(*t));
    t->req.op = op;
    t->req.file = f;
    t->req.buf = buf;
    t->req.len = len;
    t->req.offset = offset;
    t->req.done = tally_done;
    t->tally = ty;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_engine_is_the_one_asked_for(void **state)
{
    const char *want = getenv("IMGUTIL_IO");
    if (want)
        assert_string_equal(io_engine_name(), want);
    else
        assert_true(strcmp(io_engine_name(), "uring") == 0 ||
                    strcmp(io_engine_name(), "threads") == 0);
}

/*
 * The file is cut into segments of random sizes; every segment is written once, in random
 * order, with many writes in flight; then random ranges are read back while half of the
 * segments are rewritten, and every byte is checked.
 */
#define RW_FILE_SIZE (8 * MiB)
#define RW_DEPTH 32

struct segment {
    uint64_t offset;
    size_t len;
};

static void shuffle(struct segment *s, size_t n, uint64_t *rnd)
{
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(next_random(rnd) % (i + 1));
        struct segment tmp = s[i];
        s[i] = s[j];
        s[j] = tmp;
    }
}

static void test_random_reads_and_writes(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    unsigned char *model = malloc(RW_FILE_SIZE);
    fill_random(model, RW_FILE_SIZE, 1234);
    uint64_t rnd = 99;

    size_t max_segments = RW_FILE_SIZE / 512 + 1;
    struct segment *segs = calloc(max_segments, sizeof(*segs));
    size_t nseg = 0;
    for (uint64_t off = 0; off < RW_FILE_SIZE; nseg++) {
        size_t len = (size_t)(next_random(&rnd) % (16 * KiB)) + 512;
        if (off + len > RW_FILE_SIZE)
            len = RW_FILE_SIZE - off;
        segs[nseg] = (struct segment){off, len};
        off += len;
    }
    shuffle(segs, nseg, &rnd);

    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, RW_DEPTH), 0);
    struct tally ty = {.owner = pthread_self()};
    struct test_req *reqs = calloc(nseg, sizeof(*reqs));
    for (size_t i = 0; i < nseg; i++) {
        init_req(&reqs[i], &ty, IO_OP_WRITE, f, model + segs[i].offset, segs[i].len,
                 segs[i].offset);
        assert_int_equal(io_queue_submit(q, &reqs[i].req), 0);
        assert_true(io_queue_in_flight(q) <= RW_DEPTH);
    }
    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(ty.calls, nseg);
    assert_int_equal(ty.errors, 0);
    assert_int_equal(io_file_size(f), RW_FILE_SIZE);

    unsigned char *whole = malloc(RW_FILE_SIZE);
    assert_int_equal(io_pread(f, whole, RW_FILE_SIZE, 0), 0);
    assert_memory_equal(whole, model, RW_FILE_SIZE);

    /* Odd segments are read back (at random sub-ranges) while even ones get new data. */
    unsigned char *model2 = malloc(RW_FILE_SIZE);
    memcpy(model2, model, RW_FILE_SIZE);
    fill_random(whole, RW_FILE_SIZE, 5678);
    unsigned char *readbuf = malloc(RW_FILE_SIZE);
    memset(&ty, 0, sizeof(ty));
    ty.owner = pthread_self();
    for (size_t i = 0; i < nseg; i++) {
        uint64_t off = segs[i].offset;
        size_t len = segs[i].len;
        if (i % 2 == 0) {
            memcpy(model2 + off, whole + off, len);
            init_req(&reqs[i], &ty, IO_OP_WRITE, f, model2 + off, len, off);
        } else {
            size_t skip_front = (size_t)(next_random(&rnd) % len);
            size_t n = (size_t)(next_random(&rnd) % (len - skip_front)) + 1;
            init_req(&reqs[i], &ty, IO_OP_READ, f, readbuf + off + skip_front, n, off + skip_front);
            reqs[i].expect = model + off + skip_front;
        }
        assert_int_equal(io_queue_submit(q, &reqs[i].req), 0);
        assert_true(io_queue_in_flight(q) <= RW_DEPTH);
    }
    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(ty.calls, nseg);
    assert_int_equal(ty.errors, 0);
    assert_int_equal(ty.wrong_thread, 0);
    unsigned mismatches = 0;
    for (size_t i = 0; i < nseg; i++)
        mismatches += reqs[i].mismatches;
    assert_int_equal(mismatches, 0);

    assert_int_equal(io_pread(f, readbuf, RW_FILE_SIZE, 0), 0);
    assert_memory_equal(readbuf, model2, RW_FILE_SIZE);

    io_queue_free(q);
    io_file_close(f);
    free(model);
    free(model2);
    free(whole);
    free(readbuf);
    free(reqs);
    free(segs);
}

/* Reads that cross the end of the file come back short and must be completed with zeros. */
static void test_short_file_zero_fill(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    unsigned char data[1000];
    memset(data, 0xab, sizeof(data));
    assert_int_equal(io_pwrite(f, data, sizeof(data), 0), 0);

    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, 4), 0);
    struct tally ty = {.owner = pthread_self()};
    static unsigned char across[64 * KiB], beyond[8192], tail[10];
    memset(across, 0xcc, sizeof(across));
    memset(beyond, 0xcc, sizeof(beyond));
    memset(tail, 0xcc, sizeof(tail));
    struct test_req r[3];
    init_req(&r[0], &ty, IO_OP_READ, f, across, sizeof(across), 0);
    init_req(&r[1], &ty, IO_OP_READ, f, beyond, sizeof(beyond), 1 * MiB);
    init_req(&r[2], &ty, IO_OP_READ, f, tail, sizeof(tail), 995);
    for (int i = 0; i < 3; i++)
        assert_int_equal(io_queue_submit(q, &r[i].req), 0);
    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(ty.calls, 3);
    assert_int_equal(ty.errors, 0);

    assert_true(all_bytes_are(across, 1000, 0xab));
    assert_true(all_bytes_are(across + 1000, sizeof(across) - 1000, 0));
    assert_true(all_bytes_are(beyond, sizeof(beyond), 0));
    assert_true(all_bytes_are(tail, 5, 0xab));
    assert_true(all_bytes_are(tail + 5, 5, 0));
    assert_int_equal(io_file_size(f), 1000);
    io_queue_free(q);
    io_file_close(f);
}

static void test_errors_reach_the_callback(void **state)
{
    struct io_file *ro = open_temp_in(temp_dir(), O_RDONLY);
    struct io_file *wo = open_temp_in(temp_dir(), O_WRONLY);
    assert_non_null(ro);
    assert_non_null(wo);
    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, 8), 0);

    unsigned char buf[4096] = {0};
    struct tally ty = {.owner = pthread_self()};
    struct test_req r[4];
    init_req(&r[0], &ty, IO_OP_WRITE, ro, buf, sizeof(buf), 0);
    init_req(&r[1], &ty, IO_OP_READ, wo, buf, sizeof(buf), 0);
    init_req(&r[2], &ty, IO_OP_WRITE_ZEROES, ro, NULL, 4096, 0);
    init_req(&r[3], &ty, IO_OP_PREALLOCATE, ro, NULL, 4096, 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(io_queue_submit(q, &r[i].req), 0);
        assert_int_equal(io_queue_drain(q), 0);
        assert_int_equal(ty.calls, i + 1);
        assert_int_equal(ty.last_result, -EBADF);
    }
    assert_int_equal(ty.wrong_thread, 0);
    io_queue_free(q);
    io_file_close(ro);
    io_file_close(wo);
}

static void test_invalid_requests_are_refused(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, 0), -EINVAL);
    assert_int_equal(io_queue_new(&q, 2), 0);

    unsigned char buf[16];
    struct tally ty = {.owner = pthread_self()};
    struct test_req r;
    init_req(&r, &ty, IO_OP_READ, f, buf, sizeof(buf), UINT64_MAX - 4);
    assert_int_equal(io_queue_submit(q, &r.req), -EINVAL);
    init_req(&r, &ty, IO_OP_READ, f, NULL, sizeof(buf), 0);
    assert_int_equal(io_queue_submit(q, &r.req), -EINVAL);
    init_req(&r, &ty, IO_OP_READ, NULL, buf, sizeof(buf), 0);
    assert_int_equal(io_queue_submit(q, &r.req), -EINVAL);
    init_req(&r, &ty, (enum io_op)42, f, buf, sizeof(buf), 0);
    assert_int_equal(io_queue_submit(q, &r.req), -EINVAL);
    init_req(&r, &ty, IO_OP_READ, f, buf, sizeof(buf), 0);
    r.req.done = NULL;
    assert_int_equal(io_queue_submit(q, &r.req), -EINVAL);
    assert_int_equal(io_queue_submit(q, NULL), -EINVAL);
    assert_int_equal(io_queue_in_flight(q), 0);
    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(ty.calls, 0);

    /* A zero-length request is fine and still calls back, at the next reap. */
    init_req(&r, &ty, IO_OP_READ, f, NULL, 0, 0);
    assert_int_equal(io_queue_submit(q, &r.req), 0);
    assert_int_equal(ty.calls, 0);
    assert_int_equal(io_queue_reap(q, 1), 1);
    assert_int_equal(ty.calls, 1);
    assert_int_equal(ty.last_result, 0);
    io_queue_free(q);
    io_file_close(f);
}

static void test_callbacks_only_inside_reap(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    static unsigned char buf[16][4096];
    assert_int_equal(io_pwrite(f, buf, sizeof(buf), 0), 0);
    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, 16), 0);
    struct tally ty = {.owner = pthread_self()};
    struct test_req r[16];
    for (int i = 0; i < 16; i++) {
        init_req(&r[i], &ty, IO_OP_READ, f, buf[i], sizeof(buf[i]), (uint64_t)i * 4096);
        assert_int_equal(io_queue_submit(q, &r[i].req), 0);
    }
    /* Long enough for every read to finish in the background. */
    sleep_ms(100);
    assert_int_equal(ty.calls, 0);
    assert_int_equal(io_queue_in_flight(q), 16);

    int ran = io_queue_reap(q, 5);
    assert_true(ran >= 5);
    assert_int_equal(ty.calls, ran);
    assert_int_equal(io_queue_in_flight(q), 16 - ran);
    /* min beyond what is in flight is capped, not waited for. */
    ran += io_queue_reap(q, 1000);
    assert_int_equal(ran, 16);
    assert_int_equal(io_queue_reap(q, 0), 0);
    assert_int_equal(io_queue_reap(q, 5), 0);
    assert_int_equal(ty.calls, 16);

    /* Straight after submitting, reap(min) waits for min completions rather than polling. */
    for (int i = 0; i < 16; i++)
        assert_int_equal(io_queue_submit(q, &r[i].req), 0);
    assert_int_equal(io_queue_reap(q, 16), 16);
    assert_int_equal(ty.calls, 32);
    /* Flushes never finish inline, with either engine. */
    assert_int_equal(io_pwrite(f, buf, sizeof(buf), 0), 0);
    for (int i = 0; i < 8; i++) {
        init_req(&r[i], &ty, IO_OP_FSYNC, f, NULL, 0, 0);
        assert_int_equal(io_queue_submit(q, &r[i].req), 0);
    }
    assert_int_equal(io_queue_reap(q, 8), 8);
    assert_int_equal(ty.calls, 40);
    assert_int_equal(ty.errors, 0);
    assert_int_equal(ty.wrong_thread, 0);
    io_queue_free(q);
    io_file_close(f);
}

static void test_depth_is_respected(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    enum { DEPTH = 4, TOTAL = 200 };
    static unsigned char buf[TOTAL][512];
    assert_int_equal(io_pwrite(f, buf, sizeof(buf), 0), 0);
    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, DEPTH), 0);
    struct tally ty = {.owner = pthread_self()};
    static struct test_req r[TOTAL];
    for (int i = 0; i < DEPTH; i++) {
        init_req(&r[i], &ty, IO_OP_READ, f, buf[i], sizeof(buf[i]), (uint64_t)i * 512);
        assert_int_equal(io_queue_submit(q, &r[i].req), 0);
    }
    assert_int_equal(ty.calls, 0);
    assert_int_equal(io_queue_in_flight(q), DEPTH);

    /* A full queue reaps before it takes more, running callbacks here. */
    for (int i = DEPTH; i < TOTAL; i++) {
        init_req(&r[i], &ty, IO_OP_READ, f, buf[i], sizeof(buf[i]), (uint64_t)i * 512);
        assert_int_equal(io_queue_submit(q, &r[i].req), 0);
        assert_true(io_queue_in_flight(q) <= DEPTH);
        assert_int_equal(ty.calls + io_queue_in_flight(q), i + 1);
    }
    assert_true(ty.calls >= TOTAL - DEPTH);
    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(ty.calls, TOTAL);
    assert_int_equal(ty.errors, 0);
    assert_int_equal(ty.wrong_thread, 0);
    io_queue_free(q);
    io_file_close(f);
}

/* Freeing a queue waits for its requests and runs their callbacks. */
static void test_free_drains(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    static unsigned char buf[32][4096];
    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, 64), 0);
    struct tally ty = {.owner = pthread_self()};
    struct test_req r[32];
    for (int i = 0; i < 32; i++) {
        memset(buf[i], i + 1, sizeof(buf[i]));
        init_req(&r[i], &ty, IO_OP_WRITE, f, buf[i], sizeof(buf[i]), (uint64_t)i * 4096);
        assert_int_equal(io_queue_submit(q, &r[i].req), 0);
    }
    io_queue_free(q);
    assert_int_equal(ty.calls, 32);
    assert_int_equal(ty.errors, 0);
    unsigned char back[4096];
    for (int i = 0; i < 32; i++) {
        assert_int_equal(io_pread(f, back, sizeof(back), (uint64_t)i * 4096), 0);
        assert_true(all_bytes_are(back, sizeof(back), (unsigned char)(i + 1)));
    }
    io_queue_free(NULL);
    io_file_close(f);
}

/* A callback that submits the next request into its own (full) queue. */
struct chain {
    struct io_req req;
    struct io_queue *q;
    unsigned remaining;
    unsigned calls;
    int submit_error;
    unsigned char buf[512];
};

static void chain_done(struct io_req *req, int result)
{
    struct chain *c = (struct chain *)req;
    c->calls++;
    if (result < 0 || all_bytes_are(c->buf, sizeof(c->buf), 0x3c) == 0)
        c->submit_error = -EIO;
    if (--c->remaining == 0)
        return;
    memset(c->buf, 0, sizeof(c->buf));
    int ret = io_queue_submit(c->q, &c->req);
    if (ret < 0)
        c->submit_error = ret;
}

static void test_callbacks_may_resubmit(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    unsigned char data[512];
    memset(data, 0x3c, sizeof(data));
    assert_int_equal(io_pwrite(f, data, sizeof(data), 0), 0);

    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, 1), 0);
    static struct chain c[3];
    for (int i = 0; i < 3; i++) {
        c[i] = (struct chain){.q = q, .remaining = 50};
        c[i].req = (struct io_req){.op = IO_OP_READ,
                                   .file = f,
                                   .buf = c[i].buf,
                                   .len = sizeof(c[i].buf),
                                   .done = chain_done};
        assert_int_equal(io_queue_submit(q, &c[i].req), 0);
    }
    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(io_queue_in_flight(q), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c[i].calls, 50);
        assert_int_equal(c[i].submit_error, 0);
    }
    io_queue_free(q);
    io_file_close(f);
}

static void check_zeroing_ops(struct io_file *f)
{
    size_t len = 1 * MiB;
    unsigned char *data = malloc(len + 64 * KiB);
    memset(data, 0xff, len);
    assert_int_equal(io_pwrite(f, data, len, 0), 0);

    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, 8), 0);
    struct tally ty = {.owner = pthread_self()};
    struct test_req r[4];
    init_req(&r[0], &ty, IO_OP_PUNCH_HOLE, f, NULL, 128 * KiB, 64 * KiB);
    init_req(&r[1], &ty, IO_OP_WRITE_ZEROES, f, NULL, 100 * KiB + 7, 300 * KiB);
    init_req(&r[2], &ty, IO_OP_WRITE_ZEROES, f, NULL, 64 * KiB, len - 4096);
    init_req(&r[3], &ty, IO_OP_FSYNC, f, NULL, 0, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(io_queue_submit(q, &r[i].req), 0);
    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(io_queue_submit(q, &r[3].req), 0);
    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(ty.calls, 4);
    if (r[0].tally->errors && ty.last_result == -ENOTSUP) {
        free(data);
        io_queue_free(q);
        skip();
    }
    assert_int_equal(ty.errors, 0);

    assert_int_equal(io_file_size(f), len - 4096 + 64 * KiB);
    assert_int_equal(io_pread(f, data, len + 64 * KiB, 0), 0);
    assert_true(all_bytes_are(data, 64 * KiB, 0xff));
    assert_true(all_bytes_are(data + 64 * KiB, 128 * KiB, 0));
    assert_true(all_bytes_are(data + 192 * KiB, 108 * KiB, 0xff));
    assert_true(all_bytes_are(data + 300 * KiB, 100 * KiB + 7, 0));
    assert_true(all_bytes_are(data + 400 * KiB + 7, len - 4096 - 400 * KiB - 7, 0xff));
    assert_true(all_bytes_are(data + len - 4096, 64 * KiB + 4096, 0));
    io_queue_free(q);
    free(data);
}

static void test_punch_hole_and_write_zeroes(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    check_zeroing_ops(f);
    uint64_t start, end;
    assert_int_equal(io_find_data(f, 64 * KiB, &start, &end), 0);
    assert_int_equal(start, 192 * KiB);
    io_file_close(f);
}

/* tmpfs lacks FALLOC_FL_ZERO_RANGE, so write-zeroes takes its fallback path. */
static void test_write_zeroes_fallback_on_tmpfs(void **state)
{
    struct io_file *f = open_temp_in("/dev/shm", O_RDWR);
    if (!f)
        skip();
    check_zeroing_ops(f);
    io_file_close(f);
}

static void test_preallocate_and_find_data(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, 2), 0);
    struct tally ty = {.owner = pthread_self()};
    struct test_req r;
    init_req(&r, &ty, IO_OP_PREALLOCATE, f, NULL, 1 * MiB, 0);
    assert_int_equal(io_queue_submit(q, &r.req), 0);
    assert_int_equal(io_queue_drain(q), 0);
    if (ty.last_result == -ENOTSUP) {
        io_queue_free(q);
        io_file_close(f);
        skip();
    }
    assert_int_equal(ty.last_result, 0);
    assert_int_equal(io_file_size(f), 1 * MiB);
    assert_true(io_file_allocated(f) >= (int64_t)(1 * MiB));

    /* A sparse file: data at 3 MiB only. */
    static unsigned char block[8192];
    memset(block, 0x11, sizeof(block));
    init_req(&r, &ty, IO_OP_WRITE, f, block, sizeof(block), 3 * MiB);
    assert_int_equal(io_queue_submit(q, &r.req), 0);
    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(ty.last_result, 0);
    uint64_t start, end;
    assert_int_equal(io_find_data(f, 1 * MiB, &start, &end), 0);
    assert_int_equal(start, 3 * MiB);
    assert_int_equal(end, 3 * MiB + sizeof(block));
    io_queue_free(q);
    io_file_close(f);
}

/* More requests in flight than one io_uring ring holds: the rest waits its turn. */
static void test_very_deep_queue(void **state)
{
    enum { COUNT = 6000, SIZE = 512 };
    struct io_file *f = open_temp();
    assert_non_null(f);
    unsigned char *data = malloc((size_t)COUNT * SIZE);
    unsigned char *back = malloc((size_t)COUNT * SIZE);
    fill_random(data, (size_t)COUNT * SIZE, 77);
    assert_int_equal(io_pwrite(f, data, (size_t)COUNT * SIZE, 0), 0);

    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, COUNT), 0);
    struct tally ty = {.owner = pthread_self()};
    struct test_req *r = calloc(COUNT, sizeof(*r));
    for (unsigned i = 0; i < COUNT; i++) {
        /* Backwards, so that no two neighbours are read in order. */
        unsigned k = COUNT - 1 - i;
        init_req(&r[k], &ty, IO_OP_READ, f, back + (size_t)k * SIZE, SIZE, (uint64_t)k * SIZE);
        r[k].expect = data + (size_t)k * SIZE;
        assert_int_equal(io_queue_submit(q, &r[k].req), 0);
    }
    assert_int_equal(io_queue_in_flight(q), COUNT);
    assert_int_equal(ty.calls, 0);
    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(ty.calls, COUNT);
    assert_int_equal(ty.errors, 0);
    unsigned mismatches = 0;
    for (unsigned i = 0; i < COUNT; i++)
        mismatches += r[i].mismatches;
    assert_int_equal(mismatches, 0);
    io_queue_free(q);
    io_file_close(f);
    free(r);
    free(data);
    free(back);
}

static unsigned count_threads(void)
{
    unsigned n = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* The worker threads belong to the process, not to each queue. */
static void test_thread_pool_is_shared(void **state)
{
    if (strcmp(io_engine_name(), "threads") != 0 || count_threads() == 0)
        skip();
    struct io_queue *first = NULL;
    assert_int_equal(io_queue_new(&first, 4), 0);
    unsigned threads = count_threads();
    assert_true(threads >= 3); /* this thread and at least two workers */

    struct io_queue *more[8];
    for (int i = 0; i < 8; i++)
        assert_int_equal(io_queue_new(&more[i], 4), 0);
    assert_int_equal(count_threads(), threads);
    for (int i = 0; i < 8; i++)
        io_queue_free(more[i]);
    io_queue_free(first);
    assert_int_equal(count_threads(), threads);
}

/* Several threads, each with its own queue, at once; callbacks stay on their own thread. */
#define QUEUE_THREADS 4
#define QUEUE_REGION (1 * MiB)

struct queue_worker {
    struct io_file *f;
    unsigned index;
    unsigned calls;
    unsigned errors;
    unsigned wrong_thread;
    unsigned mismatches;
};

static void *queue_worker_main(void *arg)
{
    struct queue_worker *w = arg;
    uint64_t base = (uint64_t)w->index * QUEUE_REGION;
    unsigned char *data = malloc(QUEUE_REGION);
    unsigned char *back = malloc(QUEUE_REGION);
    fill_random(data, QUEUE_REGION, 1000 + w->index);
    enum { PIECES = 64, PIECE = QUEUE_REGION / PIECES };
    struct test_req *r = calloc(PIECES, sizeof(*r));
    struct tally ty = {.owner = pthread_self()};
    struct io_queue *q = NULL;
    if (io_queue_new(&q, 8) < 0) {
        w->errors++;
        goto out;
    }
    for (unsigned round = 0; round < 4; round++) {
        for (unsigned i = 0; i < PIECES; i++) {
            unsigned p = (i * 37 + round) % PIECES;
            init_req(&r[p], &ty, IO_OP_WRITE, w->f, data + p * PIECE, PIECE, base + p * PIECE);
            if (io_queue_submit(q, &r[p].req) < 0)
                w->errors++;
        }
        io_queue_drain(q);
        for (unsigned i = 0; i < PIECES; i++) {
            unsigned p = (i * 13 + round) % PIECES;
            init_req(&r[p], &ty, IO_OP_READ, w->f, back + p * PIECE, PIECE, base + p * PIECE);
            r[p].expect = data + p * PIECE;
            if (io_queue_submit(q, &r[p].req) < 0)
                w->errors++;
        }
        io_queue_drain(q);
        for (unsigned p = 0; p < PIECES; p++)
            w->mismatches += r[p].mismatches;
    }
    io_queue_free(q);
out:
    w->calls = ty.calls;
    w->errors += ty.errors;
    w->wrong_thread = ty.wrong_thread;
    free(r);
    free(data);
    free(back);
    return NULL;
}

static void test_queues_on_many_threads(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    pthread_t tids[QUEUE_THREADS];
    struct queue_worker w[QUEUE_THREADS];
    for (unsigned i = 0; i < QUEUE_THREADS; i++) {
        w[i] = (struct queue_worker){.f = f, .index = i};
        assert_int_equal(pthread_create(&tids[i], NULL, queue_worker_main, &w[i]), 0);
    }
    for (unsigned i = 0; i < QUEUE_THREADS; i++) {
        pthread_join(tids[i], NULL);
        assert_int_equal(w[i].errors, 0);
        assert_int_equal(w[i].calls, 4 * 64 * 2);
        assert_int_equal(w[i].wrong_thread, 0);
        assert_int_equal(w[i].mismatches, 0);
    }
    io_file_close(f);
}

/* IO_OP_TRUNCATE, which the ring cannot carry here: done inline, reported like the rest. */
static void test_truncate_request(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, 4), 0);
    struct tally ty = {.owner = pthread_self()};
    struct test_req grow, shrink;
    init_req(&grow, &ty, IO_OP_TRUNCATE, f, NULL, 0, 3 * MiB);
    assert_int_equal(io_queue_submit(q, &grow.req), 0);
    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(ty.calls, 1);
    assert_int_equal(ty.errors, 0);
    assert_int_equal(io_file_size(f), 3 * MiB);

    init_req(&shrink, &ty, IO_OP_TRUNCATE, f, NULL, 0, 4 * KiB + 1);
    assert_int_equal(io_queue_submit(q, &shrink.req), 0);
    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(ty.calls, 2);
    assert_int_equal(ty.wrong_thread, 0);
    assert_int_equal(io_file_size(f), 4 * KiB + 1);

    /* Beyond the largest offset: refused at submission. */
    init_req(&shrink, &ty, IO_OP_TRUNCATE, f, NULL, 0, (uint64_t)INT64_MAX + 1);
    assert_int_equal(io_queue_submit(q, &shrink.req), -EINVAL);
    io_queue_free(q);

    /* The synchronous call goes the same way. */
    assert_int_equal(io_truncate(f, 5 * KiB), 0);
    assert_int_equal(io_file_size(f), 5 * KiB);
    io_file_close(f);
}

int main(void)
{
    const char *want = getenv("IMGUTIL_IO");
    if (want && strcmp(want, "uring") == 0 && strcmp(io_engine_name(), "uring") != 0) {
        printf("io_uring is not available here (built without liburing, or refused by the "
               "kernel): skipped\n");
        return 77;
    }

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine_is_the_one_asked_for),
        cmocka_unit_test(test_random_reads_and_writes),
        cmocka_unit_test(test_truncate_request),
        cmocka_unit_test(test_short_file_zero_fill),
        cmocka_unit_test(test_errors_reach_the_callback),
        cmocka_unit_test(test_invalid_requests_are_refused),
        cmocka_unit_test(test_callbacks_only_inside_reap),
        cmocka_unit_test(test_depth_is_respected),
        cmocka_unit_test(test_free_drains),
        cmocka_unit_test(test_callbacks_may_resubmit),
        cmocka_unit_test(test_punch_hole_and_write_zeroes),
        cmocka_unit_test(test_write_zeroes_fallback_on_tmpfs),
        cmocka_unit_test(test_preallocate_and_find_data),
        cmocka_unit_test(test_very_deep_queue),
        cmocka_unit_test(test_thread_pool_is_shared),
        cmocka_unit_test(test_queues_on_many_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
