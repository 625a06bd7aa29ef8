/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Buffered writes to one regular file take turns in the I/O layer (io_file_write_lock), as
 * the kernel makes them take turns anyway: a write waits while another holds the file, and
 * lands once it is let go. Writes to other files (here /dev/null, a character device) never
 * wait. Run on the thread-pool engine, whose workers perform queued writes.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "io/engine.h"
#include "io/io.h"
#include "io_test_util.h"

#define LEN 65536u

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void note_done(struct io_req *req, int result)
{
    int *done = req->user;
    *done = result == 0 ? 1 : result;
}

/* Reaps `q` without waiting until `*done` is set, for at most about ten seconds. */
static void reap_until_done(struct io_queue *q, const int *done)
{
    for (int i = 0; i < 1000 && !*done; i++) {
        assert_true(io_queue_reap(q, 0) >= 0);
        if (!*done)
            sleep_ms(10);
    }
}

static void test_write_waits_for_its_turn(void **state)
{
    (void)state;
    struct io_file *f = open_temp();
    assert_non_null(f);
    static unsigned char data[LEN], back[LEN];
    fill_random(data, sizeof(data), 5);

    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, 4), 0);
    int done = 0;
    struct io_req req = {.op = IO_OP_WRITE,
                         .file = f,
                         .buf = data,
                         .len = LEN,
                         .offset = 0,
                         .done = note_done,
                         .user = &done};
    io_file_write_lock(f);
    assert_int_equal(io_queue_submit(q, &req), 0);
    /* Whatever the worker's speed, the write cannot land while the file is held. */
    sleep_ms(100);
    assert_int_equal(io_queue_reap(q, 0), 0);
    assert_int_equal(done, 0);
    assert_int_equal(io_file_size(f), 0);
    io_file_write_unlock(f);

    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(done, 1);
    assert_int_equal(io_pread(f, back, sizeof(back), 0), 0);
    assert_memory_equal(back, data, sizeof(data));
    io_queue_free(q);
    io_file_close(f);
}

static void test_other_files_do_not_take_turns(void **state)
{
    (void)state;
    struct io_file *f = NULL;
    assert_int_equal(io_file_open(&f, "/dev/null", O_WRONLY, 0), 0);
    static unsigned char data[LEN];
    struct io_queue *q = NULL;
    assert_int_equal(io_queue_new(&q, 4), 0);
    int done = 0;
    struct io_req req = {.op = IO_OP_WRITE,
                         .file = f,
                         .buf = data,
                         .len = LEN,
                         .offset = 0,
                         .done = note_done,
                         .user = &done};
    io_file_write_lock(f);
    assert_int_equal(io_queue_submit(q, &req), 0);
    reap_until_done(q, &done);
    io_file_write_unlock(f);
    assert_int_equal(done, 1);
    io_queue_free(q);
    io_file_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_waits_for_its_turn),
        cmocka_unit_test(test_other_files_do_not_take_turns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
