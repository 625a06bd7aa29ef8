/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fault-injecting engine. The engine and IMGUTIL_FAULT are read once per process, so each
 * case runs in a forked child that sets the variables before its first I/O, does its requests,
 * and exits with the number of the first check that failed (0: all passed). The parent then
 * reads the request counts the child reported at exit.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "imgutil.h"
#include "io/io.h"
#include "io_test_util.h"

#define KiB 1024u

/* In the child: exits with `line` when `cond` is false. */
#define CHILD_CHECK(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "check failed at line %d: %s\n", __LINE__, #cond);                     \
            _exit(__LINE__ % 250 + 1);                                                             \
        }                                                                                          \
    } while (0)

struct counts {
    unsigned long read, write, flush, fallocate, truncate, any;
};

static char report_path[4096];

/* Runs `body` in a child with IMGUTIL_IO=fault and IMGUTIL_FAULT=spec; returns its counts. */
static struct counts run_child(const char *spec, void (*body)(void))
{
    snprintf(report_path, sizeof(report_path), "%s/imgutil-fault-report-%d", temp_dir(),
             (int)getpid());
    unlink(report_path);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("IMGUTIL_IO", "fault", 1);
        setenv("IMGUTIL_FAULT", spec, 1);
        setenv("IMGUTIL_FAULT_REPORT", report_path, 1);
        body();
        exit(0); /* exit, not _exit: the report is written by an atexit handler */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    struct counts c = {0};
    FILE *in = fopen(report_path, "r");
    assert_non_null(in);
    char name[32];
    unsigned long n;
    while (fscanf(in, "%31s %lu", name, &n) == 2) {
        if (strcmp(name, "read") == 0)
            c.read = n;
        else if (strcmp(name, "write") == 0)
            c.write = n;
        else if (strcmp(name, "flush") == 0)
            c.flush = n;
        else if (strcmp(name, "fallocate") == 0)
            c.fallocate = n;
        else if (strcmp(name, "truncate") == 0)
            c.truncate = n;
        else if (strcmp(name, "any") == 0)
            c.any = n;
    }
    fclose(in);
    unlink(report_path);
    return c;
}

static void second_write_fails(void)
{
    CHILD_CHECK(strcmp(io_engine_name(), "fault") == 0);
    struct io_file *f = open_temp();
    CHILD_CHECK(f);
    char buf[512];
    memset(buf, 'a', sizeof(buf));
    CHILD_CHECK(io_pwrite(f, buf, sizeof(buf), 0) == 0);
    CHILD_CHECK(io_pwrite(f, buf, sizeof(buf), 512) == -EIO);
    /* The message names the operation and the range, as for a real failure. */
    CHILD_CHECK(strstr(img_last_error(), "write of 512 bytes at offset 512 failed") != NULL);
    CHILD_CHECK(io_pwrite(f, buf, sizeof(buf), 1024) == 0);
    CHILD_CHECK(io_file_size(f) == 1536);
    io_file_close(f);
}

static void test_nth_write_fails_once(void **state)
{
    (void)state;
    struct counts c = run_child("write:2:EIO", second_write_fails);
    assert_int_equal(c.write, 3);
    assert_int_equal(c.any, 3);
}

static void short_write(void)
{
    struct io_file *f = open_temp();
    CHILD_CHECK(f);
    unsigned char buf[8 * KiB];
    memset(buf, 'b', sizeof(buf));
    CHILD_CHECK(io_pwrite(f, buf, sizeof(buf), 0) == -ENOSPC);
    /* Half of it reached the file, as on a disk that filled up meanwhile. */
    CHILD_CHECK(io_file_size(f) == 4 * KiB);
    unsigned char back[4 * KiB];
    CHILD_CHECK(io_pread(f, back, sizeof(back), 0) == 0);
    CHILD_CHECK(memcmp(back, buf, sizeof(back)) == 0);
    io_file_close(f);
}

static void test_short_write_does_part(void **state)
{
    (void)state;
    struct counts c = run_child("write:1:short", short_write);
    assert_int_equal(c.write, 1);
    assert_int_equal(c.read, 1);
}

struct result_req {
    struct io_req req;
    int result;
    bool ran;
};

static void note_result(struct io_req *req, int result)
{
    struct result_req *r = (struct result_req *)req;
    r->result = result;
    r->ran = true;
}

/* Queued requests count and fail like synchronous ones. */
static void queued_read_fails(void)
{
    struct io_file *f = open_temp();
    CHILD_CHECK(f);
    char data[4 * KiB];
    memset(data, 'c', sizeof(data));
    CHILD_CHECK(io_pwrite(f, data, sizeof(data), 0) == 0);

    struct io_queue *q = NULL;
    CHILD_CHECK(io_queue_new(&q, 1) == 0);
    char bufs[3][KiB];
    struct result_req reqs[3];
    for (int i = 0; i < 3; i++) {
        reqs[i] = (struct result_req){.req = {.op = IO_OP_READ,
                                              .file = f,
                                              .buf = bufs[i],
                                              .len = KiB,
                                              .offset = (uint64_t)i * KiB,
                                              .done = note_result}};
        CHILD_CHECK(io_queue_submit(q, &reqs[i].req) == 0);
    }
    CHILD_CHECK(io_queue_drain(q) == 0);
    io_queue_free(q);
    CHILD_CHECK(reqs[0].ran && reqs[0].result == 0);
    CHILD_CHECK(reqs[1].ran && reqs[1].result == -EIO);
    CHILD_CHECK(reqs[2].ran && reqs[2].result == 0);
    CHILD_CHECK(memcmp(bufs[2], data, KiB) == 0);
    io_file_close(f);
}

static void test_queued_requests_fail_too(void **state)
{
    (void)state;
    struct counts c = run_child("read:2:EIO", queued_read_fails);
    assert_int_equal(c.read, 3);
    assert_int_equal(c.write, 1);
}

static void other_ops_fail(void)
{
    struct io_file *f = open_temp();
    CHILD_CHECK(f);
    /* any:2 is the truncate below; the preceding preallocation is request 1. */
    CHILD_CHECK(io_preallocate(f, 0, 8 * KiB) == 0 || io_file_size(f) == 0);
    CHILD_CHECK(io_truncate(f, 64 * KiB) == -ENOSPC);
    CHILD_CHECK(io_file_size(f) != 64 * KiB);
    CHILD_CHECK(io_truncate(f, 64 * KiB) == 0);
    CHILD_CHECK(io_file_size(f) == 64 * KiB);
    CHILD_CHECK(io_fsync(f) == 0);
    /* A disabled flush does nothing on the host, so it is not a request at all. */
    io_file_set_flush(f, false);
    CHILD_CHECK(io_fsync(f) == 0);
    io_file_close(f);
}

static void test_any_op_and_counts(void **state)
{
    (void)state;
    struct counts c = run_child("any:2:ENOSPC", other_ops_fail);
    assert_int_equal(c.fallocate, 1);
    assert_int_equal(c.truncate, 2);
    assert_int_equal(c.flush, 1);
    assert_int_equal(c.any, 4);
}

static void flush_and_zero_fail(void)
{
    struct io_file *f = open_temp();
    CHILD_CHECK(f);
    CHILD_CHECK(io_fsync(f) == -EIO);
    CHILD_CHECK(strstr(img_last_error(), "flush failed") != NULL);
    CHILD_CHECK(io_fsync(f) == 0);
    io_file_close(f);
}

static void test_flush_fails(void **state)
{
    (void)state;
    struct counts c = run_child("flush:1:EIO", flush_and_zero_fail);
    assert_int_equal(c.flush, 2);
}

static void count_only(void)
{
    struct io_file *f = open_temp();
    CHILD_CHECK(f);
    char buf[KiB] = {0};
    for (int i = 0; i < 5; i++)
        CHILD_CHECK(io_pwrite(f, buf, sizeof(buf), (uint64_t)i * KiB) == 0);
    CHILD_CHECK(io_write_zeroes(f, 0, 4 * KiB) == 0);
    CHILD_CHECK(io_pread(f, buf, sizeof(buf), 0) == 0);
    io_file_close(f);
}

static void test_count_injects_nothing(void **state)
{
    (void)state;
    struct counts c = run_child("count", count_only);
    assert_int_equal(c.write, 5);
    assert_int_equal(c.fallocate, 1);
    assert_int_equal(c.read, 1);
    assert_int_equal(c.any, 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nth_write_fails_once),
        cmocka_unit_test(test_short_write_does_part),
        cmocka_unit_test(test_queued_requests_fail_too),
        cmocka_unit_test(test_any_op_and_counts),
        cmocka_unit_test(test_flush_fails),
        cmocka_unit_test(test_count_injects_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
