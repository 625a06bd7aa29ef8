/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Image locks against real QEMU: a qemu-io process holding an image open keeps img_open() out
 * as it keeps qemu-img out, and an image held open here keeps qemu-io and qemu-img out. Also
 * checks that the bytes taken here are the bytes QEMU takes. Skips (77) without qemu-io.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "imgutil.h"
#include "proc_locks.h"

#define IMAGE_SIZE (1024 * 1024)
#define WAIT_MS 20000

struct fixture {
    char dir[64];
    char raw[96];
    char qcow2[96];
    char out[96];
};

/* A qemu-io process keeping an image open, driven through its standard input. */
struct holder {
    pid_t pid;
    int to_child;
    int from_child;
};

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads from `fd` into `out` until `stop` appears, EOF, or the time runs out. */
static void read_until(int fd, char *out, size_t size, const char *stop)
{
    size_t len = 0;
    long deadline = now_ms() + WAIT_MS;
    out[0] = '\0';
    while (len + 1 < size && (!stop || !strstr(out, stop))) {
        long left = deadline - now_ms();
        if (left <= 0)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ready = poll(&p, 1, (int)left);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            break;
        ssize_t n = read(fd, out + len, size - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        out[len] = '\0';
    }
}

/* Starts argv with stdin and stdout+stderr on pipes. */
static pid_t spawn(char *const argv[], int *to_child, int *from_child)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        dup2(out[1], STDERR_FILENO);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    if (to_child)
        *to_child = in[1];
    else
        close(in[1]);
    *from_child = out[0];
    return pid;
}

static int wait_exit(pid_t pid)
{
    long deadline = now_ms() + WAIT_MS;
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (r < 0 && errno != EINTR)
            return -1;
        if (now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        usleep(10000);
    }
}

/* Runs a command to completion; returns its exit status and its output in `out`. */
static int run(char *out, size_t size, char *const argv[])
{
    int from_child;
    pid_t pid = spawn(argv, NULL, &from_child);
    if (pid < 0)
        return -1;
    read_until(from_child, out, size, NULL);
    close(from_child);
    return wait_exit(pid);
}

/* Starts qemu-io on `path` with extra options ("-r" for read-only) and waits until it has the
 * image open and has read from it, so its locks are in place. */
static void hold(struct holder *h, const char *path, const char *format, bool read_only)
{
    char *argv[8];
    int n = 0;
    argv[n++] = "qemu-io";
    if (read_only)
        argv[n++] = "-r";
    argv[n++] = "-f";
    argv[n++] = (char *)format;
    argv[n++] = (char *)path;
    argv[n] = NULL;
    h->pid = spawn(argv, &h->to_child, &h->from_child);
    assert_true(h->pid > 0);
    static const char cmd[] = "read 0 512\n";
    assert_int_equal(write(h->to_child, cmd, sizeof(cmd) - 1), (ssize_t)(sizeof(cmd) - 1));
    char out[4096];
    read_until(h->from_child, out, sizeof(out), "read 512/512 bytes");
    if (!strstr(out, "read 512/512 bytes"))
        fail_msg("qemu-io did not hold %s open: %s", path, out);
}

/* End of input makes qemu-io exit, which drops its locks. */
static void release(struct holder *h)
{
    close(h->to_child);
    char out[4096];
    read_until(h->from_child, out, sizeof(out), NULL);
    close(h->from_child);
    assert_int_equal(wait_exit(h->pid), 0);
}

static void assert_has(const char *text, const char *part)
{
    if (!strstr(text, part))
        fail_msg("'%s' lacks '%s'", text, part);
}

/* img_open must fail with -EBUSY and a message naming the lock and the file. */
static void assert_open_busy(const char *path, const char *format, unsigned flags,
                             const char *lock_phrase)
{
    img *image = (img *)0x1;
    int ret = img_open(&image, path, format, flags, NULL);
    if (ret != -EBUSY)
        fail_msg("img_open(%s, flags %#x) returned %d (%s), expected -EBUSY", path, flags, ret,
                 img_last_error());
    assert_null(image);
    assert_has(img_last_error(), lock_phrase);
    assert_has(img_last_error(), path);
}

static img *open_ok(const char *path, const char *format, unsigned flags)
{
    img *image = NULL;
    int ret = img_open(&image, path, format, flags, NULL);
    if (ret != 0)
        fail_msg("img_open(%s, flags %#x) returned %d: %s", path, flags, ret, img_last_error());
    return image;
}

static void assert_reads_zeros(img *image)
{
    char buf[512];
    memset(buf, 0x55, sizeof(buf));
    assert_int_equal(img_pread(image, buf, sizeof(buf), 0), (int64_t)sizeof(buf));
    for (size_t i = 0; i < sizeof(buf); i++)
        assert_int_equal(buf[i], 0);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    strcpy(fx->dir, "/tmp/imgutil-qlock-XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    snprintf(fx->raw, sizeof(fx->raw), "%s/disk.raw", fx->dir);
    snprintf(fx->qcow2, sizeof(fx->qcow2), "%s/disk.qcow2", fx->dir);
    snprintf(fx->out, sizeof(fx->out), "%s/copy.raw", fx->dir);
    int fd = open(fx->raw, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, IMAGE_SIZE) < 0)
        return -1;
    close(fd);
    char out[4096];
    char *create[] = {"qemu-img", "create", "-q", "-f", "qcow2", fx->qcow2, "1M", NULL};
    if (run(out, sizeof(out), create) != 0) {
        fprintf(stderr, "qemu-img create failed: %s\n", out);
        return -1;
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    unlink(fx->raw);
    unlink(fx->qcow2);
    unlink(fx->out);
    rmdir(fx->dir);
    free(fx);
    return 0;
}

/* The bytes img_open takes are the bytes QEMU takes on the same kind of file. */
static void test_same_bytes_as_qemu(void **state)
{
    struct fixture *fx = *state;
    char qemu_bytes[256], our_bytes[256];
    struct holder h;
    static const struct {
        bool read_only;
        unsigned flags;
    } modes[] = {{false, IMG_OPEN_READ_WRITE}, {true, IMG_OPEN_READ_ONLY}};

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        hold(&h, fx->qcow2, "qcow2", modes[i].read_only);
        assert_int_equal(proc_locked_bytes(fx->qcow2, qemu_bytes, sizeof(qemu_bytes)), 0);
        release(&h);

        img *image = open_ok(fx->qcow2, "qcow2", modes[i].flags);
        assert_int_equal(proc_locked_bytes(fx->qcow2, our_bytes, sizeof(our_bytes)), 0);
        img_close(image);
        assert_string_equal(our_bytes, qemu_bytes);
    }

    /* A raw reader refuses nothing ("100" alone). A raw writer refuses more than qemu-io's. */
    hold(&h, fx->raw, "raw", true);
    assert_int_equal(proc_locked_bytes(fx->raw, qemu_bytes, sizeof(qemu_bytes)), 0);
    release(&h);
    img *image = open_ok(fx->raw, "raw", IMG_OPEN_READ_ONLY);
    assert_int_equal(proc_locked_bytes(fx->raw, our_bytes, sizeof(our_bytes)), 0);
    img_close(image);
    assert_string_equal(our_bytes, qemu_bytes);
}

static void test_qemu_writer_keeps_us_out_raw(void **state)
{
    struct fixture *fx = *state;
    struct holder h;
    char out[4096];
    hold(&h, fx->raw, "raw", false);
    /* qemu-io holds "write": we refuse to share it when we write. */
    assert_open_busy(fx->raw, "raw", IMG_OPEN_READ_WRITE, "Failed to get shared \"write\" lock");

    /* Reading is let through, as `qemu-img info` is; a convert is not, as with qemu-img. */
    char *info[] = {"qemu-img", "info", "-f", "raw", fx->raw, NULL};
    assert_int_equal(run(out, sizeof(out), info), 0);
    char *convert[] = {"qemu-img", "convert", "-f", "raw", "-O", "raw", fx->raw, fx->out, NULL};
    assert_int_not_equal(run(out, sizeof(out), convert), 0);
    assert_has(out, "Failed to get shared \"write\" lock");
    img *image = open_ok(fx->raw, "raw", IMG_OPEN_READ_ONLY);
    assert_reads_zeros(image);
    assert_int_equal(img_convert(image, fx->out, "raw", NULL, NULL, NULL), -EBUSY);
    assert_has(img_last_error(), "Failed to get shared \"write\" lock");
    assert_int_equal(access(fx->out, F_OK), -1);
    img_close(image);

    image = open_ok(fx->raw, "raw", IMG_OPEN_FORCE_SHARE);
    assert_reads_zeros(image);
    img_close(image);
    release(&h);

    image = open_ok(fx->raw, "raw", IMG_OPEN_READ_WRITE);
    img_close(image);
}

static void test_qemu_writer_keeps_us_out_qcow2(void **state)
{
    struct fixture *fx = *state;
    struct holder h;
    hold(&h, fx->qcow2, "qcow2", false);
    assert_open_busy(fx->qcow2, "qcow2", IMG_OPEN_READ_WRITE, "Failed to get \"write\" lock");
    assert_open_busy(fx->qcow2, "qcow2", IMG_OPEN_READ_ONLY, "Failed to get shared \"write\" lock");
    assert_open_busy(fx->qcow2, NULL, IMG_OPEN_READ_ONLY, "Failed to get shared \"write\" lock");
    img *image = open_ok(fx->qcow2, "qcow2", IMG_OPEN_FORCE_SHARE);
    assert_reads_zeros(image);
    img_close(image);
    release(&h);
}

static void test_qemu_reader_shares_with_readers(void **state)
{
    struct fixture *fx = *state;
    struct holder h;
    hold(&h, fx->qcow2, "qcow2", true);
    img *image = open_ok(fx->qcow2, "qcow2", IMG_OPEN_READ_ONLY);
    assert_reads_zeros(image);
    img_close(image);
    assert_open_busy(fx->qcow2, "qcow2", IMG_OPEN_READ_WRITE, "Failed to get \"write\" lock");
    release(&h);
}

static void test_our_writer_keeps_qemu_out_raw(void **state)
{
    struct fixture *fx = *state;
    char out[4096];
    img *image = open_ok(fx->raw, "raw", IMG_OPEN_READ_WRITE);

    char *io_rw[] = {"qemu-io", "-f", "raw", "-c", "read 0 512", fx->raw, NULL};
    assert_int_not_equal(run(out, sizeof(out), io_rw), 0);
    assert_has(out, "Failed to get \"write\" lock");

    char *convert[] = {"qemu-img", "convert", "-f", "raw", "-O", "raw", fx->raw, fx->out, NULL};
    assert_int_not_equal(run(out, sizeof(out), convert), 0);
    assert_has(out, "Failed to get shared \"write\" lock");

    char *info_u[] = {"qemu-img", "info", "-U", "-f", "raw", fx->raw, NULL};
    assert_int_equal(run(out, sizeof(out), info_u), 0);
    assert_has(out, "virtual size: 1 MiB");

    img_close(image);
    assert_int_equal(run(out, sizeof(out), io_rw), 0);
    assert_has(out, "read 512/512 bytes");
}

static void test_our_writer_keeps_qemu_out_qcow2(void **state)
{
    struct fixture *fx = *state;
    char out[4096];
    img *image = open_ok(fx->qcow2, "qcow2", IMG_OPEN_READ_WRITE);

    char *info[] = {"qemu-img", "info", fx->qcow2, NULL};
    assert_int_not_equal(run(out, sizeof(out), info), 0);
    assert_has(out, "Failed to get shared \"write\" lock");

    char *info_u[] = {"qemu-img", "info", "-U", fx->qcow2, NULL};
    assert_int_equal(run(out, sizeof(out), info_u), 0);
    assert_has(out, "file format: qcow2");

    char *io_rw[] = {"qemu-io", "-c", "read 0 512", fx->qcow2, NULL};
    assert_int_not_equal(run(out, sizeof(out), io_rw), 0);
    assert_has(out, "Failed to get \"write\" lock");

    char *io_ro[] = {"qemu-io", "-r", "-c", "read 0 512", fx->qcow2, NULL};
    assert_int_not_equal(run(out, sizeof(out), io_ro), 0);
    assert_has(out, "Failed to get shared \"write\" lock");

    img_close(image);
    assert_int_equal(run(out, sizeof(out), info), 0);
}

static void test_our_reader_shares_with_qemu_readers(void **state)
{
    struct fixture *fx = *state;
    char out[4096];
    img *image = open_ok(fx->qcow2, "qcow2", IMG_OPEN_READ_ONLY);

    char *info[] = {"qemu-img", "info", fx->qcow2, NULL};
    assert_int_equal(run(out, sizeof(out), info), 0);
    char *io_ro[] = {"qemu-io", "-r", "-c", "read 0 512", fx->qcow2, NULL};
    assert_int_equal(run(out, sizeof(out), io_ro), 0);
    assert_has(out, "read 512/512 bytes");

    char *io_rw[] = {"qemu-io", "-c", "read 0 512", fx->qcow2, NULL};
    assert_int_not_equal(run(out, sizeof(out), io_rw), 0);
    assert_has(out, "Failed to get \"write\" lock");
    img_close(image);
}

static bool have(const char *program)
{
    char out[4096];
    char *argv[] = {(char *)program, "--version", NULL};
    return run(out, sizeof(out), argv) == 0;
}

int main(void)
{
    if (!have("qemu-io") || !have("qemu-img")) {
        printf("SKIP: qemu-io or qemu-img not found\n");
        return 77;
    }
    /* A qemu-io that dies early must not kill the test with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_same_bytes_as_qemu, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qemu_writer_keeps_us_out_raw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qemu_writer_keeps_us_out_qcow2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qemu_reader_shares_with_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_our_writer_keeps_qemu_out_raw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_our_writer_keeps_qemu_out_qcow2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_our_reader_shares_with_qemu_readers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
