/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Synchronous calls on the io_uring engine wait for nothing but their own transfer: none of
 * them is handed to the kernel's io-wq workers (threads named "iou-wrk-<tid>" in the
 * process), which would cost the caller a sleep and a wake-up per call. Skips (77) when the
 * process does not get the io_uring engine.
 */
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

#define MiB (1024u * 1024u)

static void test_sync_calls_stay_off_the_workers(void **state)
{
    (void)state;
    struct io_file *f = open_temp();
    assert_non_null(f);
    uint8_t *data = malloc(4 * MiB);
    uint8_t *back = malloc(4 * MiB);
    assert_non_null(data);
    assert_non_null(back);
    fill_random(data, 4 * MiB, 7);

    /* Large transfers and small ones, writes and reads, as metadata and bulk data use them. */
    assert_int_equal(io_pwrite(f, data, 4 * MiB, 0), 0);
    assert_int_equal(io_pwrite(f, data, 512, 4 * MiB + 4096), 0);
    assert_int_equal(io_fsync(f), 0);
    assert_int_equal(io_pread(f, back, 4 * MiB, 0), 0);
    assert_memory_equal(back, data, 4 * MiB);
    assert_int_equal(io_pread(f, back, 64 * 1024, 1 * MiB), 0);
    assert_memory_equal(back, data + MiB, 64 * 1024);
    assert_int_equal(io_pread(f, back, 512, 4 * MiB + 4096), 0);
    assert_memory_equal(back, data, 512);

    assert_int_equal(count_ring_workers(), 0);

    free(back);
    free(data);
    io_file_close(f);
}

int main(void)
{
    if (strcmp(io_engine_name(), "uring") != 0)
        return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sync_calls_stay_off_the_workers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
