/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A waited queue (io_queue_set_waited): its owner submits a batch and waits for it at once,
 * as each convert chunk does. Every request still completes with its own result and its
 * callback runs on the owner's thread; batches deeper than the queue, reads past the end of
 * the file and failures behave as on any queue. On the io_uring engine the requests are not
 * handed to the kernel's io-wq workers (threads named "iou-wrk-<tid>"), which would cost the
 * waiting thread a sleep and a wake-up per request. Run once per engine.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "io/io.h"
#include "io_test_util.h"
#include "ring_workers.h"

#define KiB 1024u
#define MiB (1024u * 1024u)
#define DEPTH 4
/* More requests than DEPTH: the queue takes the rest as places free up. */
#define NREQS 24
#define SEGMENT (256 * KiB)

struct waited_req {
    struct io_req req; /* first: the callback gets this pointer */
    pthread_t owner;
    int result;
    int calls;
    bool wrong_thread;
};

static void waited_done(struct io_req *req, int result)
{
    struct waited_req *w = (struct waited_req *)req;
    w->calls++;
    w->result = result;
    if (!pthread_equal(pthread_self(), w->owner))
        w->wrong_thread = true;
}

static void init_req(struct waited_req *w, enum io_op op, struct io_file *f, void *buf, size_t len,
                     uint64_t offset)
{
    memset(w, 0, sizeof(*w));
    w->req = (struct io_req){
        .op = op, .file = f, .buf = buf, .len = len, .offset = offset, .done = waited_done};
    w->owner = pthread_self();
    w->result = 1;
}

/* Submits every request, then waits for them all, as a chunk does. */
static void run_batch(struct io_queue *q, struct waited_req *reqs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(io_queue_submit(q, &reqs[i].req), 0);
    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(io_queue_in_flight(q), 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(reqs[i].calls, 1);
        assert_false(reqs[i].wrong_thread);
    }
}

static void test_waited_batches(void **state)
{
    (void)state;
    struct io_file *f = open_temp();
    assert_non_null(f);
    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, DEPTH), 0);
    io_queue_set_waited(q, true);

    uint8_t *data = malloc(NREQS * SEGMENT);
    uint8_t *back = malloc(NREQS * SEGMENT + SEGMENT);
    struct waited_req *reqs = calloc(NREQS + 1, sizeof(*reqs));
    assert_non_null(data);
    assert_non_null(back);
    assert_non_null(reqs);
    fill_random(data, NREQS * SEGMENT, 11);

    /* Writes in a scattered order, each to its own segment. */
    for (size_t i = 0; i < NREQS; i++) {
        size_t seg = (i * 7) % NREQS;
        init_req(&reqs[i], IO_OP_WRITE, f, data + seg * SEGMENT, SEGMENT, seg * SEGMENT);
    }
    run_batch(q, reqs, NREQS);
    for (size_t i = 0; i < NREQS; i++)
        assert_int_equal(reqs[i].result, 0);

    /* Read back, and one segment past the end of the file, which reads as zeros. */
    memset(back, 0xAA, NREQS * SEGMENT + SEGMENT);
    for (size_t i = 0; i <= NREQS; i++)
        init_req(&reqs[i], IO_OP_READ, f, back + i * SEGMENT, SEGMENT, i * SEGMENT);
    run_batch(q, reqs, NREQS + 1);
    for (size_t i = 0; i <= NREQS; i++)
        assert_int_equal(reqs[i].result, 0);
    assert_memory_equal(back, data, NREQS * SEGMENT);
    assert_true(all_bytes_are(back + NREQS * SEGMENT, SEGMENT, 0));

    if (strcmp(io_engine_name(), "uring") == 0)
        assert_int_equal(count_ring_workers(), 0);

    io_queue_free(q);
    free(reqs);
    free(back);
    free(data);
    io_file_close(f);
}

/* A failing request reports to its own callback; the others of the batch still complete. */
static void test_waited_failure_is_the_requests_own(void **state)
{
    (void)state;
    struct io_file *f = open_temp_in(temp_dir(), O_RDONLY);
    assert_non_null(f);
    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, DEPTH), 0);
    io_queue_set_waited(q, true);

    uint8_t buf[3][4 * KiB];
    struct waited_req reqs[3];
    init_req(&reqs[0], IO_OP_READ, f, buf[0], sizeof(buf[0]), 0);
    /* Written through a read-only descriptor: EBADF from the host. */
    init_req(&reqs[1], IO_OP_WRITE, f, buf[1], sizeof(buf[1]), 0);
    init_req(&reqs[2], IO_OP_READ, f, buf[2], sizeof(buf[2]), 8 * KiB);
    run_batch(q, reqs, 3);
    assert_int_equal(reqs[0].result, 0);
    assert_int_equal(reqs[1].result, -EBADF);
    assert_int_equal(reqs[2].result, 0);
    assert_true(all_bytes_are(buf[0], sizeof(buf[0]), 0));

    io_queue_free(q);
    io_file_close(f);
}

/* io_queue_free waits for the requests of a waited queue nobody waited for. */
static void test_waited_free_drains(void **state)
{
    (void)state;
    struct io_file *f = open_temp();
    assert_non_null(f);
    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, DEPTH), 0);
    io_queue_set_waited(q, true);
    uint8_t data[8 * KiB], back[8 * KiB];
    fill_random(data, sizeof(data), 5);
    struct waited_req w;
    init_req(&w, IO_OP_WRITE, f, data, sizeof(data), 0);
    assert_int_equal(io_queue_submit(q, &w.req), 0);
    io_queue_free(q);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.result, 0);
    assert_int_equal(io_pread(f, back, sizeof(back), 0), 0);
    assert_memory_equal(back, data, sizeof(data));
    io_file_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waited_batches),
        cmocka_unit_test(test_waited_failure_is_the_requests_own),
        cmocka_unit_test(test_waited_free_drains),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
