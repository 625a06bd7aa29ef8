/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Requests the asynchronous API refuses at submit (read-only handle, ranges outside the image,
 * bad arguments, the in-flight cap), and a request that fails while executing: its callback
 * gets the errno and img_last_error() holds its message during the callback.
 */
#include "aio_test.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#define IMAGE_SIZE (1u << 20)

static unsigned callbacks;
static int64_t last_result;
static char last_message[1024];

static void record(void *user, int64_t result)
{
    (void)user;
    callbacks++;
    last_result = result;
    snprintf(last_message, sizeof(last_message), "%s", img_last_error());
}

static void expect_refused(int ret, int code, const char *words)
{
    CHECK_EQ(ret, code);
    if (!strstr(img_last_error(), words)) {
        fprintf(stderr, "message '%s' does not contain '%s'\n", img_last_error(), words);
        exit(1);
    }
}

/* Runs completions until none is in flight. */
static void drain(img *image)
{
    while (img_aio_in_flight(image) > 0)
        CHECK(img_aio_poll(image, -1) >= 0);
}

static void read_only_handle(const char *path)
{
    img *image;
    CHECK_EQ(img_open(&image, path, "raw", IMG_OPEN_READ_ONLY, NULL), 0);
    uint8_t buf[512] = {0};
    expect_refused(img_aio_pwrite(image, buf, sizeof(buf), 0, record, NULL), -EROFS, "read-only");
    expect_refused(img_aio_zero(image, 0, 512, 0, record, NULL), -EROFS, "read-only");
    expect_refused(img_aio_discard(image, 0, 512, record, NULL), -EROFS, "read-only");
    expect_refused(img_aio_flush(image, record, NULL), -EROFS, "read-only");
    CHECK_EQ(img_aio_in_flight(image), 0);
    CHECK_EQ(img_aio_poll(image, -1), 0);
    CHECK_EQ(callbacks, 0);
    /* Reads still work. */
    CHECK_EQ(img_aio_pread(image, buf, sizeof(buf), IMAGE_SIZE - 512, record, NULL), 0);
    drain(image);
    CHECK_EQ(callbacks, 1);
    CHECK_EQ(last_result, 512);
    img_close(image);
}

static void bad_arguments(const char *path)
{
    img *image;
    CHECK_EQ(img_open(&image, path, "raw", IMG_OPEN_READ_WRITE, NULL), 0);
    uint8_t buf[1024] = {0};
    callbacks = 0;
    expect_refused(img_aio_pread(image, buf, 2, IMAGE_SIZE - 1, record, NULL), -EINVAL,
                   "past the end");
    expect_refused(img_aio_pread(image, buf, 1, IMAGE_SIZE, record, NULL), -EINVAL, "past the end");
    expect_refused(img_aio_pread(image, buf, 2, UINT64_MAX, record, NULL), -EINVAL, "past the end");
    expect_refused(img_aio_pwrite(image, buf, 1024, IMAGE_SIZE - 512, record, NULL), -EINVAL,
                   "past the end");
    expect_refused(img_aio_zero(image, IMAGE_SIZE, 1, 0, record, NULL), -EINVAL, "past the end");
    expect_refused(img_aio_zero(image, 512, UINT64_MAX, 0, record, NULL), -EINVAL, "past the end");
    expect_refused(img_aio_discard(image, 0, IMAGE_SIZE + 1ull, record, NULL), -EINVAL,
                   "past the end");
    expect_refused(img_aio_pread(image, NULL, 1, 0, record, NULL), -EINVAL, "NULL");
    expect_refused(img_aio_pwrite(image, NULL, 1, 0, record, NULL), -EINVAL, "NULL");
    expect_refused(img_aio_zero(image, 0, 512, 0x80, record, NULL), -EINVAL, "unknown flags");
    expect_refused(img_aio_pread(NULL, buf, 1, 0, record, NULL), -EINVAL, "invalid image handle");
    CHECK_EQ(img_aio_get_fd(NULL), -EINVAL);
    CHECK_EQ(img_aio_poll(NULL, 0), -EINVAL);
    CHECK_EQ(img_aio_in_flight(NULL), -EINVAL);
    CHECK_EQ(img_aio_in_flight(image), 0);
    CHECK_EQ(callbacks, 0);

    /* The edges themselves are fine: an empty read at the end, a write of the last byte. */
    CHECK_EQ(img_aio_pread(image, buf, 0, IMAGE_SIZE, record, NULL), 0);
    drain(image);
    CHECK_EQ(last_result, 0);
    buf[0] = 0x5a;
    CHECK_EQ(img_aio_pwrite(image, buf, 1, IMAGE_SIZE - 1, record, NULL), 0);
    drain(image);
    CHECK_EQ(last_result, 1);
    CHECK_EQ(img_aio_discard(image, 0, 4096, record, NULL), 0);
    drain(image);
    CHECK_EQ(last_result, 0);
    CHECK_EQ(img_aio_zero(image, 0, 4096, IMG_ZERO_MAY_UNMAP, NULL, NULL), 0); /* no callback */
    drain(image);
    CHECK_EQ(callbacks, 3);
    img_close(image);
}

/* Past IMG_AIO_MAX_IN_FLIGHT a submit is refused with -EAGAIN until completions have run. */
static void in_flight_cap(const char *path)
{
    img *image;
    CHECK_EQ(img_open(&image, path, "raw", IMG_OPEN_READ_ONLY, NULL), 0);
    static uint8_t bytes[IMG_AIO_MAX_IN_FLIGHT + 1];
    callbacks = 0;
    for (unsigned i = 0; i < IMG_AIO_MAX_IN_FLIGHT; i++)
        CHECK_EQ(img_aio_pread(image, &bytes[i], 1, i, record, NULL), 0);
    CHECK_EQ(img_aio_in_flight(image), IMG_AIO_MAX_IN_FLIGHT);
    expect_refused(img_aio_pread(image, &bytes[IMG_AIO_MAX_IN_FLIGHT], 1, 0, record, NULL), -EAGAIN,
                   "in flight already");
    CHECK_EQ(img_aio_in_flight(image), IMG_AIO_MAX_IN_FLIGHT);
    int ran = img_aio_poll(image, -1);
    CHECK(ran >= 1);
    CHECK_EQ(img_aio_pread(image, &bytes[IMG_AIO_MAX_IN_FLIGHT], 1, 0, record, NULL), 0);
    drain(image);
    CHECK_EQ(callbacks, IMG_AIO_MAX_IN_FLIGHT + 1);
    img_close(image);
}

/*
 * A request that fails on the worker: a raw image whose format was probed refuses a write
 * that would make it probe as qcow2 (the check runs in img_pwrite's data path).
 */
static void failure_while_executing(const char *path)
{
    img *image;
    CHECK_EQ(img_open(&image, path, NULL, IMG_OPEN_READ_WRITE, NULL), 0);
    static const uint8_t qcow2_magic[8] = {'Q', 'F', 'I', 0xfb, 0, 0, 0, 3};
    callbacks = 0;
    CHECK_EQ(img_aio_pwrite(image, qcow2_magic, sizeof(qcow2_magic), 0, record, NULL), 0);
    drain(image);
    CHECK_EQ(callbacks, 1);
    CHECK_EQ(last_result, -EPERM);
    if (!strstr(last_message, "refusing to write a header")) {
        fprintf(stderr, "message during the callback: '%s'\n", last_message);
        exit(1);
    }
    img_close(image);
}

int main(void)
{
    char *dir = scratch_dir();
    char *path = path_in(dir, "disk.img");
    CHECK_EQ(img_create(path, "raw", IMAGE_SIZE, NULL), 0);
    img *image;
    CHECK_EQ(img_open(&image, path, "raw", IMG_OPEN_READ_ONLY, NULL), 0);
    CHECK_EQ(img_aio_poll(image, -1), 0); /* nothing ever submitted: returns at once */
    img_close(image);

    read_only_handle(path);
    bad_arguments(path);
    in_flight_cap(path);
    failure_while_executing(path);

    free(path);
    scratch_remove(dir);
    free(dir);
    return 0;
}
