/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The thread-pool engine starts its workers only when a queue hands them a request. A process
 * whose queues are all waited ones (convert's chunks: the owner runs the requests on its own
 * thread) and whose other calls are synchronous (run on the caller's thread) starts no I/O
 * thread at all. Run on the engines with a thread pool (threads, fault); the threads are
 * counted in /proc/self/task.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "io/io.h"
#include "io_test_util.h"

#define BLOCK 4096u
#define NBLOCKS 32u

static unsigned thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    unsigned n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

struct counted {
    unsigned calls, errors;
};

static void count_done(struct io_req *req, int result)
{
    struct counted *c = req->user;
    c->calls++;
    if (result < 0)
        c->errors++;
}

/* Writes NBLOCKS blocks through `q`, reads them back through it, and checks every byte. */
static void write_and_read_back(struct io_queue *q, struct io_file *f, uint64_t seed)
{
    static unsigned char data[NBLOCKS * BLOCK], back[NBLOCKS * BLOCK];
    fill_random(data, sizeof(data), seed);
    memset(back, 0, sizeof(back));
    struct io_req reqs[NBLOCKS];
    struct counted c = {0};
    for (unsigned pass = 0; pass < 2; pass++) {
        for (unsigned i = 0; i < NBLOCKS; i++) {
            reqs[i] = (struct io_req){
                .op = pass == 0 ? IO_OP_WRITE : IO_OP_READ,
                .file = f,
                .buf = (pass == 0 ? data : back) + (size_t)i * BLOCK,
                .len = BLOCK,
                .offset = (uint64_t)i * BLOCK,
                .done = count_done,
                .user = &c,
            };
            assert_int_equal(io_queue_submit(q, &reqs[i]), 0);
        }
        assert_int_equal(io_queue_drain(q), 0);
    }
    assert_int_equal(c.calls, 2 * NBLOCKS);
    assert_int_equal(c.errors, 0);
    assert_memory_equal(back, data, sizeof(data));
}

/* Runs first: nothing in this process has started the pool yet. */
static void test_waited_queue_starts_no_thread(void **state)
{
    (void)state;
    unsigned before = thread_count();
    assert_int_equal(before, 1);
    struct io_file *f = open_temp();
    assert_non_null(f);

    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, 8), 0);
    io_queue_set_waited(q, true);
    write_and_read_back(q, f, 7);
    /* Synchronous calls run on this thread too. */
    unsigned char buf[BLOCK];
    assert_int_equal(io_pread(f, buf, sizeof(buf), 0), 0);
    assert_int_equal(io_pwrite(f, buf, sizeof(buf), NBLOCKS * BLOCK), 0);
    assert_int_equal(thread_count(), before);

    io_queue_free(q);
    io_file_close(f);
    assert_int_equal(thread_count(), before);
}

/* A queue whose requests are handed to workers does start them, and gets every byte right. */
static void test_unwaited_queue_starts_the_pool(void **state)
{
    (void)state;
    unsigned before = thread_count();
    struct io_file *f = open_temp();
    assert_non_null(f);
    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, 8), 0);
    write_and_read_back(q, f, 8);
    assert_true(thread_count() > before);

    /* A waited queue made afterwards still works beside the running pool. */
    struct io_queue *w = NULL;
    assert_int_equal(io_queue_new(&w, 8), 0);
    io_queue_set_waited(w, true);
    write_and_read_back(w, f, 9);
    io_queue_free(w);
    io_queue_free(q);
    io_file_close(f);
}

int main(void)
{
    /* The order matters: the first test needs a process whose pool has not started. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waited_queue_starts_no_thread),
        cmocka_unit_test(test_unwaited_queue_starts_the_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
