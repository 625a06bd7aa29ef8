/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "imgutil.h"

static void test_message_and_code(void **state)
{
    img_error_clear();
    assert_string_equal(img_last_error(), "no error");
    assert_int_equal(img_error(-EIO, "qcow2: L1 table at 0x%x is bad", 0x1000), -EIO);
    assert_string_equal(img_last_error(), "qcow2: L1 table at 0x1000 is bad");
    img_error_prefix("%s", "disk.qcow2");
    assert_string_equal(img_last_error(), "disk.qcow2: qcow2: L1 table at 0x1000 is bad");
}

static void test_strerror(void **state)
{
    assert_string_equal(img_strerror(-EBUSY), "image is locked by another process");
    assert_string_equal(img_strerror(EBUSY), "image is locked by another process");
    assert_string_equal(img_strerror(-ECANCELED), "operation cancelled");
    assert_string_equal(img_strerror(-99999), "unknown error");
    assert_non_null(img_strerror(0));
}

static void *other_thread(void *arg)
{
    img_error(-EINVAL, "message from the other thread");
    return NULL;
}

static void test_per_thread(void **state)
{
    pthread_t t;
    img_error(-EIO, "main thread message");
    assert_int_equal(pthread_create(&t, NULL, other_thread, NULL), 0);
    pthread_join(t, NULL);
    assert_string_equal(img_last_error(), "main thread message");
}

/* A new message may quote the one it replaces. */
static void test_message_quoting_the_last(void **state)
{
    (void)state;
    img_error(-EIO, "the table is broken");
    assert_int_equal(img_error(-EINVAL, "cannot rebase: %s", img_last_error()), -EINVAL);
    assert_string_equal(img_last_error(), "cannot rebase: the table is broken");
}

static void test_open_failure_sets_message(void **state)
{
    img *image = (img *)0x1;
    int ret = img_open(&image, "/nonexistent/dir/disk.qcow2", NULL, 0, NULL);
    assert_int_equal(ret, -ENOENT);
    assert_null(image);
    assert_non_null(strstr(img_last_error(), "/nonexistent/dir/disk.qcow2"));
    assert_int_equal(img_open(&image, "x", NULL, IMG_OPEN_READ_ONLY | IMG_OPEN_READ_WRITE, NULL),
                     -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_and_code),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_per_thread),
        cmocka_unit_test(test_open_failure_sets_message),
        cmocka_unit_test(test_message_quoting_the_last),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
