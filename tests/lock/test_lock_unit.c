/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * io_file_lock() between open file descriptions of one process (which conflict exactly as two
 * processes do), the bytes it takes, and img_open()'s use of it.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "image.h"
#include "imgutil.h"
#include "io/io.h"
#include "io/lock.h"
#include "proc_locks.h"

/* What QEMU 7.2 holds on a qcow2 file: qemu-io (read-write) and qemu-io -r. */
#define WRITER_BYTES "100,101,103,201,203"
#define READER_BYTES "100,201,203"
/* What qemu-io -r holds on a raw file: it lets others write. */
#define SHARED_READER_BYTES "100"

struct fixture {
    char dir[64];
    char path[96];
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    strcpy(fx->dir, "/tmp/imgutil-lock-XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    snprintf(fx->path, sizeof(fx->path), "%s/disk.raw", fx->dir);
    int fd = open(fx->path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, 1024 * 1024) < 0)
        return -1;
    close(fd);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    unlink(fx->path);
    rmdir(fx->dir);
    free(fx);
    return 0;
}

static struct io_file *open_file(const char *path, bool writable)
{
    struct io_file *f = NULL;
    assert_int_equal(io_file_open(&f, path, writable ? O_RDWR : O_RDONLY, 0), 0);
    return f;
}

static void assert_locked_bytes(const char *path, const char *expected)
{
    char bytes[256];
    assert_int_equal(proc_locked_bytes(path, bytes, sizeof(bytes)), 0);
    assert_string_equal(bytes, expected);
}

static void assert_message_has(const char *part)
{
    const char *msg = img_last_error();
    if (!strstr(msg, part))
        fail_msg("message '%s' lacks '%s'", msg, part);
}

static void test_writer_takes_qemus_bytes(void **state)
{
    struct fixture *fx = *state;
    struct io_file *f = open_file(fx->path, true);
    assert_int_equal(io_file_lock(f, IO_LOCK_WRITE, fx->path), 0);
    assert_locked_bytes(fx->path, WRITER_BYTES);
    io_file_unlock(f);
    assert_locked_bytes(fx->path, "");
    assert_int_equal(io_file_lock(f, IO_LOCK_WRITE, fx->path), 0);
    io_file_close(f);
    assert_locked_bytes(fx->path, "");
}

static void test_reader_takes_qemus_bytes(void **state)
{
    struct fixture *fx = *state;
    struct io_file *f = open_file(fx->path, false);
    assert_int_equal(io_file_lock(f, IO_LOCK_READ, fx->path), 0);
    assert_locked_bytes(fx->path, READER_BYTES);
    io_file_close(f);
    assert_locked_bytes(fx->path, "");
}

static void test_readers_share(void **state)
{
    struct fixture *fx = *state;
    struct io_file *a = open_file(fx->path, false);
    struct io_file *b = open_file(fx->path, false);
    assert_int_equal(io_file_lock(a, IO_LOCK_READ, fx->path), 0);
    assert_int_equal(io_file_lock(b, IO_LOCK_READ, fx->path), 0);
    io_file_close(a);
    io_file_close(b);
}

static void test_writer_refused_by_reader(void **state)
{
    struct fixture *fx = *state;
    struct io_file *reader = open_file(fx->path, false);
    struct io_file *writer = open_file(fx->path, true);
    assert_int_equal(io_file_lock(reader, IO_LOCK_READ, fx->path), 0);
    assert_int_equal(io_file_lock(writer, IO_LOCK_WRITE, fx->path), -EBUSY);
    assert_message_has("Failed to get \"write\" lock");
    assert_message_has(fx->path);
    /* The refused writer leaves nothing behind: only the reader's bytes remain. */
    assert_locked_bytes(fx->path, READER_BYTES);
    io_file_close(reader);
    assert_int_equal(io_file_lock(writer, IO_LOCK_WRITE, fx->path), 0);
    io_file_close(writer);
}

static void test_reader_refused_by_writer(void **state)
{
    struct fixture *fx = *state;
    struct io_file *writer = open_file(fx->path, true);
    struct io_file *reader = open_file(fx->path, false);
    assert_int_equal(io_file_lock(writer, IO_LOCK_WRITE, fx->path), 0);
    assert_int_equal(io_file_lock(reader, IO_LOCK_READ, fx->path), -EBUSY);
    assert_message_has("Failed to get shared \"write\" lock");
    assert_locked_bytes(fx->path, WRITER_BYTES);
    io_file_unlock(writer);
    assert_int_equal(io_file_lock(reader, IO_LOCK_READ, fx->path), 0);
    io_file_close(reader);
    io_file_close(writer);
}

static void test_two_writers(void **state)
{
    struct fixture *fx = *state;
    struct io_file *a = open_file(fx->path, true);
    struct io_file *b = open_file(fx->path, true);
    assert_int_equal(io_file_lock(a, IO_LOCK_WRITE, fx->path), 0);
    assert_int_equal(io_file_lock(b, IO_LOCK_WRITE, fx->path), -EBUSY);
    assert_message_has("Failed to get \"write\" lock");
    io_file_close(a);
    io_file_close(b);
}

static void test_img_open_locks(void **state)
{
    struct fixture *fx = *state;
    img *writer = NULL, *other = (img *)0x1;
    assert_int_equal(img_open(&writer, fx->path, "raw", IMG_OPEN_READ_WRITE, NULL), 0);
    assert_locked_bytes(fx->path, WRITER_BYTES);

    assert_int_equal(img_open(&other, fx->path, "raw", IMG_OPEN_READ_WRITE, NULL), -EBUSY);
    assert_null(other);
    assert_message_has("Failed to get \"write\" lock");
    /* A raw image stays readable while written, as with `qemu-img info` on a VM's disk. */
    assert_int_equal(img_open(&other, fx->path, "raw", IMG_OPEN_READ_ONLY, NULL), 0);
    assert_locked_bytes(fx->path, WRITER_BYTES);
    img_close(other);

    /* force-share reads without taking or checking any lock. */
    assert_int_equal(img_open(&other, fx->path, "raw", IMG_OPEN_FORCE_SHARE, NULL), 0);
    assert_locked_bytes(fx->path, WRITER_BYTES);
    char buf[512];
    assert_int_equal(img_pread(other, buf, sizeof(buf), 0), (int64_t)sizeof(buf));
    img_close(other);

    img_close(writer);
    assert_locked_bytes(fx->path, "");
    assert_int_equal(img_open(&other, fx->path, "raw", IMG_OPEN_READ_ONLY, NULL), 0);
    assert_locked_bytes(fx->path, SHARED_READER_BYTES);
    img_close(other);
}

/* Converts side by side on one handle share the refusal: it ends with the last of them. */
static void test_refusals_are_counted(void **state)
{
    struct fixture *fx = *state;
    img *reader = NULL, *writer = NULL;
    assert_int_equal(img_open(&reader, fx->path, "raw", IMG_OPEN_READ_ONLY, NULL), 0);
    assert_int_equal(img_refuse_writers(reader, true), 0);
    assert_int_equal(img_refuse_writers(reader, true), 0);
    assert_locked_bytes(fx->path, READER_BYTES);
    assert_int_equal(img_refuse_writers(reader, false), 0);
    assert_int_equal(img_open(&writer, fx->path, "raw", IMG_OPEN_READ_WRITE, NULL), -EBUSY);
    assert_int_equal(img_refuse_writers(reader, false), 0);
    assert_locked_bytes(fx->path, SHARED_READER_BYTES);
    assert_int_equal(img_open(&writer, fx->path, "raw", IMG_OPEN_READ_WRITE, NULL), 0);
    /* With a writer in, a refusal fails and counts nothing. */
    assert_int_equal(img_refuse_writers(reader, true), -EBUSY);
    img_close(writer);
    assert_int_equal(img_refuse_writers(reader, true), 0);
    assert_int_equal(img_refuse_writers(reader, false), 0);
    assert_locked_bytes(fx->path, SHARED_READER_BYTES);
    img_close(reader);
}

static void test_shared_reader_refusing_writes(void **state)
{
    struct fixture *fx = *state;
    struct io_file *reader = open_file(fx->path, false);
    struct io_file *writer = open_file(fx->path, true);
    assert_int_equal(io_file_lock(reader, IO_LOCK_SHARED_READ, fx->path), 0);
    assert_locked_bytes(fx->path, SHARED_READER_BYTES);
    /* Refusing writes takes a reader's bytes, and keeps a writer out meanwhile. */
    assert_int_equal(io_file_lock_refuse_writes(reader, true, fx->path), 0);
    assert_locked_bytes(fx->path, READER_BYTES);
    assert_int_equal(io_file_lock(writer, IO_LOCK_WRITE, fx->path), -EBUSY);
    assert_int_equal(io_file_lock_refuse_writes(reader, false, fx->path), 0);
    assert_locked_bytes(fx->path, SHARED_READER_BYTES);
    /* While a writer is in, the refusal fails and leaves the shared reader as it was. */
    assert_int_equal(io_file_lock(writer, IO_LOCK_WRITE, fx->path), 0);
    assert_int_equal(io_file_lock_refuse_writes(reader, true, fx->path), -EBUSY);
    assert_message_has("Failed to get shared \"write\" lock");
    io_file_close(writer);
    assert_locked_bytes(fx->path, SHARED_READER_BYTES);
    io_file_close(reader);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_writer_takes_qemus_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_takes_qemus_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readers_share, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_refused_by_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_refused_by_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_img_open_locks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_reader_refusing_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals_are_counted, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
