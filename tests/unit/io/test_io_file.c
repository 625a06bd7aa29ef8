/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The synchronous calls: host files, full transfers, zero fill, holes and zeroing. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include <sys/wait.h>

#include <cmocka.h>

#include "imgutil.h"
#include "io/io.h"
#include "io_test_util.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

static void test_open_sets_cloexec(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    int flags = fcntl(io_file_fd(f), F_GETFD);
    assert_true(flags >= 0);
    assert_true(flags & FD_CLOEXEC);
    io_file_close(f);
    io_file_close(NULL);
}

static void test_open_errors(void **state)
{
    struct io_file *f = NULL;
    assert_int_equal(io_file_open(&f, "/nonexistent-dir/x.img", O_RDONLY, 0), -ENOENT);
    assert_null(f);
    assert_non_null(strstr(img_last_error(), "/nonexistent-dir/x.img"));

    assert_int_equal(io_file_open(&f, temp_dir(), O_RDONLY, 0), -EISDIR);
    assert_null(f);

    assert_int_equal(io_file_from_fd(&f, -1), -EBADF);
    assert_null(f);
}

static void test_from_fd_takes_ownership(void **state)
{
    int fd = open("/dev/null", O_RDONLY);
    assert_true(fd >= 0);
    struct io_file *f = NULL;
    assert_int_equal(io_file_from_fd(&f, fd), 0);
    assert_int_equal(io_file_fd(f), fd);
    io_file_close(f);
    assert_int_equal(fcntl(fd, F_GETFD), -1);
    assert_int_equal(errno, EBADF);
}

static void test_write_read_roundtrip(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    size_t len = 3 * MiB + 123;
    unsigned char *data = malloc(len);
    unsigned char *back = malloc(len);
    fill_random(data, len, 42);

    assert_int_equal(io_pwrite(f, data, len, 777), 0);
    assert_int_equal(io_file_size(f), 777 + len);
    assert_int_equal(io_pread(f, back, len, 777), 0);
    assert_memory_equal(back, data, len);

    /* The gap written over reads as zeros. */
    assert_int_equal(io_pread(f, back, 777, 0), 0);
    assert_true(all_bytes_are(back, 777, 0));

    /* Unaligned pieces at random offsets. */
    uint64_t s = 7;
    for (int i = 0; i < 200; i++) {
        uint64_t off = next_random(&s) % len;
        size_t n = (size_t)(next_random(&s) % (len - off)) % (64 * KiB) + 1;
        if (off + n > len)
            n = len - off;
        assert_int_equal(io_pread(f, back, n, 777 + off), 0);
        assert_memory_equal(back, data + off, n);
    }
    assert_int_equal(io_fsync(f), 0);
    free(data);
    free(back);
    io_file_close(f);
}

static void test_read_past_eof_is_zero(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    unsigned char data[1000];
    memset(data, 0xab, sizeof(data));
    assert_int_equal(io_pwrite(f, data, sizeof(data), 0), 0);

    unsigned char buf[8192];
    memset(buf, 0xcc, sizeof(buf));
    assert_int_equal(io_pread(f, buf, sizeof(buf), 0), 0);
    assert_true(all_bytes_are(buf, 1000, 0xab));
    assert_true(all_bytes_are(buf + 1000, sizeof(buf) - 1000, 0));

    memset(buf, 0xcc, sizeof(buf));
    assert_int_equal(io_pread(f, buf, sizeof(buf), 1 * MiB), 0);
    assert_true(all_bytes_are(buf, sizeof(buf), 0));
    /* Reading does not grow the file. */
    assert_int_equal(io_file_size(f), 1000);

    assert_int_equal(io_pread(f, NULL, 0, 0), 0);
    io_file_close(f);
}

static void test_truncate_and_sizes(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    assert_int_equal(io_file_size(f), 0);
    assert_int_equal(io_truncate(f, 10 * MiB), 0);
    assert_int_equal(io_file_size(f), 10 * MiB);
    /* Grown by truncate: a hole, nothing allocated. */
    assert_true(io_file_allocated(f) < (int64_t)(1 * MiB));

    unsigned char data[64 * KiB];
    fill_random(data, sizeof(data), 3);
    assert_int_equal(io_pwrite(f, data, sizeof(data), 0), 0);
    assert_true(io_file_allocated(f) >= (int64_t)sizeof(data));

    assert_int_equal(io_truncate(f, 100), 0);
    assert_int_equal(io_file_size(f), 100);
    unsigned char back[200];
    assert_int_equal(io_pread(f, back, sizeof(back), 0), 0);
    assert_memory_equal(back, data, 100);
    assert_true(all_bytes_are(back + 100, 100, 0));
    io_file_close(f);
}

static void test_errors_are_negative_errno(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    unsigned char buf[16] = {0};

    /* Offsets that do not fit in off_t. */
    assert_int_equal(io_pread(f, buf, sizeof(buf), UINT64_MAX - 4), -EINVAL);
    assert_int_equal(io_pwrite(f, buf, sizeof(buf), (uint64_t)INT64_MAX), -EINVAL);
    assert_int_equal(io_truncate(f, UINT64_MAX), -EINVAL);
    assert_int_equal(io_punch_hole(f, UINT64_MAX, 2), -EINVAL);
    assert_int_equal(io_write_zeroes(f, (uint64_t)INT64_MAX, 1), -EINVAL);
    assert_int_equal(io_preallocate(f, 1, UINT64_MAX), -EINVAL);
    uint64_t a, b;
    assert_int_equal(io_find_data(f, UINT64_MAX, &a, &b), -EINVAL);
    io_file_close(f);

    /* A read-only descriptor refuses every kind of write with EBADF. */
    f = open_temp_in(temp_dir(), O_RDONLY);
    assert_non_null(f);
    assert_int_equal(io_pwrite(f, buf, sizeof(buf), 0), -EBADF);
    assert_non_null(strstr(img_last_error(), "write of 16 bytes at offset 0 failed"));
    assert_int_equal(io_truncate(f, 4096), -EINVAL);
    assert_int_equal(io_write_zeroes(f, 0, 4096), -EBADF);
    assert_int_equal(io_preallocate(f, 0, 4096), -EBADF);
    io_file_close(f);

    assert_int_equal(io_pread(NULL, buf, 1, 0), -EBADF);
    assert_int_equal(io_file_size(NULL), -EBADF);
    assert_int_equal(io_fsync(NULL), -EBADF);
}

static void test_punch_hole_and_find_data(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    size_t len = 1 * MiB;
    unsigned char *data = malloc(len);
    unsigned char *back = malloc(len);
    memset(data, 0xff, len);
    assert_int_equal(io_pwrite(f, data, len, 0), 0);
    assert_int_equal(io_fsync(f), 0);
    int64_t before = io_file_allocated(f);

    int ret = io_punch_hole(f, 256 * KiB, 256 * KiB);
    if (ret == -ENOTSUP) {
        free(data);
        free(back);
        io_file_close(f);
        skip();
    }
    assert_int_equal(ret, 0);
    assert_int_equal(io_file_size(f), len);
    assert_true(io_file_allocated(f) <= before - (int64_t)(256 * KiB));

    assert_int_equal(io_pread(f, back, len, 0), 0);
    assert_true(all_bytes_are(back, 256 * KiB, 0xff));
    assert_true(all_bytes_are(back + 256 * KiB, 256 * KiB, 0));
    assert_true(all_bytes_are(back + 512 * KiB, 512 * KiB, 0xff));

    uint64_t start, end;
    ret = io_find_data(f, 0, &start, &end);
    if (ret == -ENOTSUP) {
        free(data);
        free(back);
        io_file_close(f);
        skip();
    }
    assert_int_equal(ret, 0);
    assert_int_equal(start, 0);
    assert_int_equal(end, 256 * KiB);
    assert_int_equal(io_find_data(f, 300 * KiB, &start, &end), 0);
    assert_int_equal(start, 512 * KiB);
    assert_int_equal(end, len);

    /* Zero-length punches are no-ops, not EINVAL. */
    assert_int_equal(io_punch_hole(f, 0, 0), 0);
    free(data);
    free(back);
    io_file_close(f);
}

static void test_find_data_sparse(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    assert_int_equal(io_truncate(f, 8 * MiB), 0);
    unsigned char block[4096];
    memset(block, 0x5a, sizeof(block));
    assert_int_equal(io_pwrite(f, block, sizeof(block), 2 * MiB), 0);
    assert_int_equal(io_pwrite(f, block, sizeof(block), 5 * MiB), 0);

    uint64_t start, end;
    int ret = io_find_data(f, 0, &start, &end);
    if (ret == -ENOTSUP) {
        io_file_close(f);
        skip();
    }
    assert_int_equal(ret, 0);
    assert_int_equal(start, 2 * MiB);
    assert_int_equal(end, 2 * MiB + 4096);

    assert_int_equal(io_find_data(f, end, &start, &end), 0);
    assert_int_equal(start, 5 * MiB);
    assert_int_equal(end, 5 * MiB + 4096);

    /* Within a data run, the run starts where we asked. */
    assert_int_equal(io_find_data(f, 5 * MiB + 100, &start, &end), 0);
    assert_int_equal(start, 5 * MiB + 100);
    assert_int_equal(end, 5 * MiB + 4096);

    /* No more data: both ends are the file size. */
    assert_int_equal(io_find_data(f, 6 * MiB, &start, &end), 0);
    assert_int_equal(start, 8 * MiB);
    assert_int_equal(end, 8 * MiB);
    assert_int_equal(io_find_data(f, 100 * MiB, &start, &end), 0);
    assert_int_equal(start, 8 * MiB);
    io_file_close(f);
}

static void check_write_zeroes(struct io_file *f)
{
    size_t len = 1 * MiB;
    unsigned char *data = malloc(len + 64 * KiB);
    memset(data, 0x77, len);
    assert_int_equal(io_pwrite(f, data, len, 0), 0);

    /* Inside the file, unaligned. */
    assert_int_equal(io_write_zeroes(f, 1000, 300 * KiB), 0);
    assert_int_equal(io_file_size(f), len);
    assert_int_equal(io_pread(f, data, len, 0), 0);
    assert_true(all_bytes_are(data, 1000, 0x77));
    assert_true(all_bytes_are(data + 1000, 300 * KiB, 0));
    assert_true(all_bytes_are(data + 1000 + 300 * KiB, len - 1000 - 300 * KiB, 0x77));

    /* Across the end of the file: the file grows, as it would for a write. */
    assert_int_equal(io_write_zeroes(f, len - 4096, 64 * KiB), 0);
    assert_int_equal(io_file_size(f), len - 4096 + 64 * KiB);
    assert_int_equal(io_pread(f, data, len + 64 * KiB, 0), 0);
    assert_true(all_bytes_are(data + 1000 + 300 * KiB, len - 4096 - 1000 - 300 * KiB, 0x77));
    assert_true(all_bytes_are(data + len - 4096, 64 * KiB + 4096, 0));

    /* Entirely past the end. */
    assert_int_equal(io_write_zeroes(f, 4 * MiB, 12345), 0);
    assert_int_equal(io_file_size(f), 4 * MiB + 12345);
    assert_int_equal(io_pread(f, data, 64 * KiB, 4 * MiB - 1000), 0);
    assert_true(all_bytes_are(data, 64 * KiB, 0));

    assert_int_equal(io_write_zeroes(f, 0, 0), 0);
    free(data);
}

static void test_write_zeroes(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    check_write_zeroes(f);
    io_file_close(f);
}

/* tmpfs has no FALLOC_FL_ZERO_RANGE: exercises the hole-punching fallback. */
static void test_write_zeroes_on_tmpfs(void **state)
{
    struct io_file *f = open_temp_in("/dev/shm", O_RDWR);
    if (!f)
        skip();
    check_write_zeroes(f);
    io_file_close(f);
}

static void test_preallocate(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    int ret = io_preallocate(f, 0, 2 * MiB);
    if (ret == -ENOTSUP) {
        io_file_close(f);
        skip();
    }
    assert_int_equal(ret, 0);
    assert_int_equal(io_file_size(f), 2 * MiB);
    assert_true(io_file_allocated(f) >= (int64_t)(2 * MiB));
    unsigned char buf[4096];
    memset(buf, 1, sizeof(buf));
    assert_int_equal(io_pread(f, buf, sizeof(buf), 1 * MiB), 0);
    assert_true(all_bytes_are(buf, sizeof(buf), 0));
    assert_int_equal(io_preallocate(f, 0, 0), 0);
    io_file_close(f);
}

struct sync_worker {
    struct io_file *f;
    unsigned index;
    int failures;
};

#define SYNC_THREADS 8
#define SYNC_REGION (256 * KiB)

static void *sync_worker_main(void *arg)
{
    struct sync_worker *w = arg;
    unsigned char *data = malloc(SYNC_REGION);
    unsigned char *back = malloc(SYNC_REGION);
    uint64_t base = (uint64_t)w->index * SYNC_REGION;
    for (unsigned round = 0; round < 50; round++) {
        fill_random(data, SYNC_REGION, w->index * 1000 + round + 1);
        if (io_pwrite(w->f, data, SYNC_REGION, base) != 0 ||
            io_pread(w->f, back, SYNC_REGION, base) != 0 || memcmp(data, back, SYNC_REGION) != 0)
            w->failures++;
    }
    free(data);
    free(back);
    return NULL;
}

static void test_sync_calls_from_many_threads(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    pthread_t tids[SYNC_THREADS];
    struct sync_worker workers[SYNC_THREADS];
    for (unsigned i = 0; i < SYNC_THREADS; i++) {
        workers[i] = (struct sync_worker){.f = f, .index = i};
        assert_int_equal(pthread_create(&tids[i], NULL, sync_worker_main, &workers[i]), 0);
    }
    for (unsigned i = 0; i < SYNC_THREADS; i++) {
        pthread_join(tids[i], NULL);
        assert_int_equal(workers[i].failures, 0);
    }
    assert_int_equal(io_file_size(f), SYNC_THREADS * SYNC_REGION);
    io_file_close(f);
}

/*
 * A forked child has none of its parent's threads and shares its memory copy-on-write: the
 * synchronous calls of both must keep working after the fork, whatever engine runs them.
 */
static void test_sync_calls_after_fork(void **state)
{
    struct io_file *f = open_temp();
    assert_non_null(f);
    unsigned char data[4096];
    unsigned char back[4096];
    fill_random(data, sizeof(data), 7);
    assert_int_equal(io_pwrite(f, data, sizeof(data), 0), 0);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        unsigned char child[4096];
        memset(child, 0x77, sizeof(child));
        int ok = io_pread(f, back, sizeof(back), 0) == 0 && memcmp(back, data, sizeof(back)) == 0 &&
                 io_pwrite(f, child, sizeof(child), 8192) == 0;
        _exit(ok ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    assert_int_equal(io_pread(f, back, sizeof(back), 8192), 0);
    assert_true(all_bytes_are(back, sizeof(back), 0x77));
    assert_int_equal(io_pread(f, back, sizeof(back), 0), 0);
    assert_memory_equal(back, data, sizeof(back));
    io_file_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_sets_cloexec),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_from_fd_takes_ownership),
        cmocka_unit_test(test_write_read_roundtrip),
        cmocka_unit_test(test_read_past_eof_is_zero),
        cmocka_unit_test(test_truncate_and_sizes),
        cmocka_unit_test(test_errors_are_negative_errno),
        cmocka_unit_test(test_punch_hole_and_find_data),
        cmocka_unit_test(test_find_data_sparse),
        cmocka_unit_test(test_write_zeroes),
        cmocka_unit_test(test_write_zeroes_on_tmpfs),
        cmocka_unit_test(test_preallocate),
        cmocka_unit_test(test_sync_calls_from_many_threads),
        cmocka_unit_test(test_sync_calls_after_fork),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
