/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_convert: content, sparseness, in-place conversion, cancellation, progress, and errors
 * met by the worker threads, for raw and qcow2 targets.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "imgutil.h"

static char dir[] = "/tmp/imgutil-test-convert-XXXXXX";
#define IMAGE_SIZE (8u << 20)

static char *path_in_dir(const char *name)
{
    static char paths[4][256];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

/* Data in a few places, including a data block that is all zeros (must become a hole). */
static void make_source(const char *path)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_true(fd >= 0);
    uint8_t *buf = malloc(1 << 20);
    for (int i = 0; i < (1 << 20); i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    assert_int_equal(pwrite(fd, buf, 1 << 20, 0), 1 << 20);
    assert_int_equal(pwrite(fd, buf, 12345, 5 << 20), 12345);
    memset(buf, 0, 1 << 20);
    assert_int_equal(pwrite(fd, buf, 1 << 20, 3 << 20), 1 << 20);
    assert_int_equal(ftruncate(fd, IMAGE_SIZE), 0);
    close(fd);
    free(buf);
}

static void assert_same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    assert_non_null(fa);
    assert_non_null(fb);
    enum { BLOCK = 1 << 20 };
    uint8_t *x = malloc(BLOCK), *y = malloc(BLOCK);
    long pos = 0;
    for (;;) {
        size_t na = fread(x, 1, BLOCK, fa), nb = fread(y, 1, BLOCK, fb);
        size_t n = na < nb ? na : nb;
        for (size_t i = 0; i < n; i++)
            if (x[i] != y[i])
                fail_msg("files differ at %ld", pos + (long)i);
        if (na != nb)
            fail_msg("files differ at %ld", pos + (long)n);
        if (na == 0)
            break;
        pos += (long)na;
    }
    free(x);
    free(y);
    fclose(fa);
    fclose(fb);
}

static int count_files(void)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' || (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")))
            n++;
    closedir(d);
    return n;
}

static void test_convert_raw_sparse(void **state)
{
    const char *src_path = path_in_dir("src.raw"), *dst_path = path_in_dir("dst.raw");
    make_source(src_path);
    img *src;
    assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
    assert_int_equal(img_convert(src, dst_path, "raw", NULL, NULL, NULL), 0);
    img_close(src);
    assert_same_file(src_path, dst_path);
    struct stat st;
    assert_int_equal(stat(dst_path, &st), 0);
    assert_int_equal(st.st_size, IMAGE_SIZE);
    /* 1 MiB + 12345 bytes of data: the zero-filled MiB must not be allocated. */
    assert_true((uint64_t)st.st_blocks * 512 < (1u << 20) + 65536 + 16384);
}

static int cancel_at_half(void *user, uint64_t done, uint64_t total)
{
    int *calls = user;
    (*calls)++;
    return done >= total / 2;
}

/* Converts every byte (-S 0) and cancels half-way: -ECANCELED, after some progress. */
static void convert_cancelled_at_half(const char *src_path, const char *dst_path,
                                      const char *format)
{
    img *src;
    assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
    int calls = 0;
    img_opts *opts;
    img_opts_new(&opts);
    img_opts_set(opts, "sparse_size", "0");
    assert_int_equal(img_convert(src, dst_path, format, opts, cancel_at_half, &calls), -ECANCELED);
    img_opts_free(opts);
    img_close(src);
    assert_true(calls > 0);
}

static void test_cancel_keeps_target(void **state)
{
    const char *src_path = path_in_dir("src.raw"), *dst_path = path_in_dir("keep.raw");
    int fd = open(dst_path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_int_equal(write(fd, "precious", 8), 8);
    close(fd);
    int files_before = count_files();
    convert_cancelled_at_half(src_path, dst_path, "raw");
    struct stat st;
    assert_int_equal(stat(dst_path, &st), 0);
    assert_int_equal(st.st_size, 8);
    assert_int_equal(count_files(), files_before); /* no temporary left behind */
}

static void test_convert_onto_source(void **state)
{
    const char *src_path = path_in_dir("inplace.raw"), *ref_path = path_in_dir("ref.raw");
    make_source(src_path);
    make_source(ref_path);
    img *src;
    assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
    assert_int_equal(img_convert(src, src_path, "raw", NULL, NULL, NULL), 0);
    img_close(src);
    assert_same_file(src_path, ref_path);
}

static void test_bad_options(void **state)
{
    const char *src_path = path_in_dir("src.raw");
    img *src;
    assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
    img_opts *opts;
    img_opts_new(&opts);
    img_opts_set(opts, "sparse_size", "1000");
    assert_int_equal(img_convert(src, path_in_dir("o.raw"), "raw", opts, NULL, NULL), -EINVAL);
    assert_non_null(strstr(img_last_error(), "sparse_size"));
    img_opts_set(opts, "sparse_size", "32M");
    assert_int_equal(img_convert(src, path_in_dir("o.raw"), "raw", opts, NULL, NULL), -EINVAL);
    assert_non_null(strstr(img_last_error(), "sparse_size"));
    img_opts_set(opts, "sparse_size", "4k");
    img_opts_set(opts, "cluster_size", "65536");
    assert_int_equal(img_convert(src, path_in_dir("o.raw"), "raw", opts, NULL, NULL), -EINVAL);
    assert_non_null(strstr(img_last_error(), "cluster_size"));
    assert_int_equal(img_convert(src, path_in_dir("o.raw"), "vmdk9", NULL, NULL, NULL), -ENOTSUP);
    assert_int_equal(img_convert(src, "/nonexistent-dir/o.raw", "raw", NULL, NULL, NULL), -ENOENT);
    img_opts_free(opts);
    img_close(src);
}

/* Guest content of an image file, compared with a raw file byte for byte. */
static void assert_same_content(const char *image_path, const char *format, const char *raw_path)
{
    img *a, *b;
    assert_int_equal(img_open(&a, image_path, format, 0, NULL), 0);
    assert_int_equal(img_open(&b, raw_path, "raw", 0, NULL), 0);
    assert_int_equal(img_get_size(a), img_get_size(b));
    uint64_t size = img_get_size(a);
    uint8_t *x = malloc(1 << 20), *y = malloc(1 << 20);
    for (uint64_t off = 0; off < size; off += 1 << 20) {
        size_t n = size - off < (1u << 20) ? (size_t)(size - off) : 1u << 20;
        assert_int_equal(img_pread(a, x, n, off), (int64_t)n);
        assert_int_equal(img_pread(b, y, n, off), (int64_t)n);
        if (memcmp(x, y, n) != 0)
            fail_msg("content differs in the MiB at %llu", (unsigned long long)off);
    }
    free(x);
    free(y);
    img_close(a);
    img_close(b);
}

struct progress_log {
    pthread_t caller;
    int calls;
    bool other_thread;
    bool backwards;
    uint64_t last, total;
};

static int log_progress(void *user, uint64_t done, uint64_t total)
{
    struct progress_log *log = user;
    log->calls++;
    if (!pthread_equal(pthread_self(), log->caller))
        log->other_thread = true;
    if (done < log->last)
        log->backwards = true;
    log->last = done;
    log->total = total;
    return 0;
}

static void test_convert_qcow2_round_trip(void **state)
{
    const char *src_path = path_in_dir("rt-src.raw"), *q_path = path_in_dir("rt.qcow2");
    const char *back_path = path_in_dir("rt-back.raw");
    make_source(src_path);
    img *src;
    assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
    struct progress_log log = {.caller = pthread_self()};
    assert_int_equal(img_convert(src, q_path, "qcow2", NULL, log_progress, &log), 0);
    img_close(src);
    assert_true(log.calls > 0);
    assert_false(log.other_thread);
    assert_false(log.backwards);
    assert_int_equal(log.last, IMAGE_SIZE);
    assert_int_equal(log.total, IMAGE_SIZE);
    assert_same_content(q_path, "qcow2", src_path);

    /* Only clusters with data are allocated: the zero-filled MiB and the empty rest are not. */
    img *q;
    assert_int_equal(img_open(&q, q_path, "qcow2", 0, NULL), 0);
    uint64_t pnum;
    unsigned status;
    assert_int_equal(img_block_status(q, 3 << 20, 1 << 20, &pnum, &status, NULL, NULL), 0);
    assert_int_equal(pnum, 1 << 20);
    assert_int_equal(status & IMG_BLOCK_ALLOCATED, 0);
    assert_int_equal(img_block_status(q, 0, 1 << 20, &pnum, &status, NULL, NULL), 0);
    assert_int_equal(pnum, 1 << 20);
    assert_true(status & IMG_BLOCK_DATA);

    /* And back to raw: identical to the original, holes included. */
    assert_int_equal(img_convert(q, back_path, "raw", NULL, NULL, NULL), 0);
    img_close(q);
    assert_same_file(src_path, back_path);
}

static void test_convert_compressed_round_trip(void **state)
{
    const char *src_path = path_in_dir("c-src.raw"), *q_path = path_in_dir("c.qcow2");
    const char *back_path = path_in_dir("c-back.raw");
    make_source(src_path);
    img *src;
    assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
    img_opts *opts;
    img_opts_new(&opts);
    img_opts_set(opts, "compress", "on");
    assert_int_equal(img_convert(src, q_path, "qcow2", opts, NULL, NULL), 0);
    img_opts_free(opts);
    img_close(src);

    img *q;
    assert_int_equal(img_open(&q, q_path, "qcow2", 0, NULL), 0);
    uint64_t pnum;
    unsigned status;
    assert_int_equal(img_block_status(q, 0, 65536, &pnum, &status, NULL, NULL), 0);
    assert_true(status & IMG_BLOCK_COMPRESSED);
    /* Decompressed by the workers on the way back. */
    assert_int_equal(img_convert(q, back_path, "raw", NULL, NULL, NULL), 0);
    img_close(q);
    assert_same_file(src_path, back_path);
}

/*
 * Clusters that compress well, clusters of noise that do not compress (stored as they are),
 * clusters of zeros, a source hole, and a short last cluster: chunks whose compressed sizes
 * differ a lot, so that workers finish them out of order.
 */
#define MIXED_SIZE ((12u << 20) + 4608)
static void make_mixed_source(const char *path)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_true(fd >= 0);
    uint8_t *buf = malloc(MIXED_SIZE);
    uint32_t x = 12345;
    for (uint32_t c = 0; c < MIXED_SIZE; c += 65536) {
        uint32_t n = MIXED_SIZE - c < 65536 ? MIXED_SIZE - c : 65536;
        unsigned kind = (c >> 16) * 7 % 5;
        for (uint32_t i = 0; i < n; i++) {
            x = x * 1103515245 + 12345;
            buf[c + i] = kind == 0   ? 0
                         : kind <= 2 ? (uint8_t)(x >> 16)
                                     : (uint8_t) "imgutil "[i % 8];
        }
    }
    /* A hole of two chunks, left out unread, then a chunk of data that is all zeros. */
    memset(buf + (8 << 20), 0, 2 << 20);
    assert_int_equal(pwrite(fd, buf, 4 << 20, 0), 4 << 20);
    assert_int_equal(pwrite(fd, buf + (8 << 20), MIXED_SIZE - (8 << 20), 8 << 20),
                     MIXED_SIZE - (8 << 20));
    close(fd);
    free(buf);
}

static bool have_qemu_img(void)
{
    return system("qemu-img --version >/dev/null 2>&1") == 0;
}

static void qemu_img(const char *args)
{
    char cmd[1100];
    snprintf(cmd, sizeof(cmd), "qemu-img %s >/dev/null", args);
    if (system(cmd) != 0)
        fail_msg("failed: %s", cmd);
}

static void convert_compressed(const char *src_path, const char *dst_path, const char *type)
{
    img *src;
    assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
    img_opts *opts;
    img_opts_new(&opts);
    img_opts_set(opts, "compress", "on");
    img_opts_set(opts, "compression_type", type);
    assert_int_equal(img_convert(src, dst_path, "qcow2", opts, NULL, NULL), 0);
    img_opts_free(opts);
    img_close(src);
}

/*
 * Compression runs on many threads, but compressed clusters are placed in guest order: the
 * file is the same on every run, and the same as qemu-img makes it.
 */
static void test_convert_compressed_deterministic(void **state)
{
    char src_path[256];
    snprintf(src_path, sizeof(src_path), "%s", path_in_dir("det-src.raw"));
    make_mixed_source(src_path);
    static const char *const types[] = {"zlib", "zstd"};
    for (size_t t = 0; t < 2; t++) {
        char a[256], b[256], ref[256], args[1024];
        snprintf(a, sizeof(a), "%s", path_in_dir("det-a.qcow2"));
        snprintf(b, sizeof(b), "%s", path_in_dir("det-b.qcow2"));
        snprintf(ref, sizeof(ref), "%s", path_in_dir("det-ref.qcow2"));
        convert_compressed(src_path, a, types[t]);
        convert_compressed(src_path, b, types[t]);
        assert_same_file(a, b);
        assert_same_content(a, "qcow2", src_path);

        img *q;
        uint64_t pnum;
        unsigned status;
        assert_int_equal(img_open(&q, a, "qcow2", 0, NULL), 0);
        /* A cluster that compresses and one of noise that is stored as it is. */
        assert_int_equal(img_block_status(q, 2 << 16, 65536, &pnum, &status, NULL, NULL), 0);
        assert_true(status & IMG_BLOCK_COMPRESSED);
        assert_int_equal(img_block_status(q, 1 << 16, 65536, &pnum, &status, NULL, NULL), 0);
        assert_true(status & IMG_BLOCK_DATA);
        assert_false(status & IMG_BLOCK_COMPRESSED);
        img_close(q);

        if (!have_qemu_img()) {
            print_message("qemu-img not found: interop checks skipped\n");
            continue;
        }
        snprintf(args, sizeof(args), "check -q %s", a);
        qemu_img(args);
        snprintf(args, sizeof(args), "compare -q -f raw -F qcow2 %s %s", src_path, a);
        qemu_img(args);
        snprintf(args, sizeof(args), "convert -c -f raw -O qcow2 -o compression_type=%s %s %s",
                 types[t], src_path, ref);
        qemu_img(args);
        assert_same_file(a, ref);
    }
}

/* Workers waiting for their turn to write are released when the convert stops. */
static void test_compressed_cancel_and_error(void **state)
{
    char src_path[256], dst_path[256];
    snprintf(src_path, sizeof(src_path), "%s", path_in_dir("stop-src.raw"));
    snprintf(dst_path, sizeof(dst_path), "%s", path_in_dir("stop.qcow2"));
    make_mixed_source(src_path);
    int files_before = count_files();
    img *src;
    assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
    img_opts *opts;
    img_opts_new(&opts);
    img_opts_set(opts, "compress", "on");
    int calls = 0;
    assert_int_equal(img_convert(src, dst_path, "qcow2", opts, cancel_at_half, &calls), -ECANCELED);
    assert_true(calls > 0);
    assert_int_equal(count_files(), files_before);

    /* A write failing in the middle of the turns: its own message, not a later waiter's. */
    struct rlimit old, small;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    small = old;
    small.rlim_cur = 1 << 20;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    int ret = img_convert(src, dst_path, "qcow2", opts, NULL, NULL);
    char message[512];
    snprintf(message, sizeof(message), "%s", img_last_error());
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_handler);
    img_opts_free(opts);
    img_close(src);
    assert_int_equal(ret, -EFBIG);
    if (!strcasestr(message, "file too large"))
        fail_msg("message does not name the failure: %s", message);
    assert_int_equal(count_files(), files_before);
}

static void test_convert_no_sparse_writes_zeros(void **state)
{
    const char *src_path = path_in_dir("full-src.raw"), *dst_path = path_in_dir("full.raw");
    make_source(src_path);
    img *src;
    assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
    img_opts *opts;
    img_opts_new(&opts);
    img_opts_set(opts, "sparse_size", "0");
    assert_int_equal(img_convert(src, dst_path, "raw", opts, NULL, NULL), 0);
    img_opts_free(opts);
    img_close(src);
    assert_same_file(src_path, dst_path);
    struct stat st;
    assert_int_equal(stat(dst_path, &st), 0);
    assert_true((uint64_t)st.st_blocks * 512 >= IMAGE_SIZE);
}

static void test_cancel_qcow2_leaves_nothing(void **state)
{
    const char *src_path = path_in_dir("cq-src.raw"), *dst_path = path_in_dir("cq.qcow2");
    make_source(src_path);
    int files_before = count_files();
    convert_cancelled_at_half(src_path, dst_path, "qcow2");
    assert_int_equal(count_files(), files_before);
    assert_int_equal(access(dst_path, F_OK), -1);
}

/* A write failing on a worker thread fails the convert with that write's message. */
static void test_worker_error_reported(void **state)
{
    const char *src_path = path_in_dir("big-src.raw"), *dst_path = path_in_dir("big.qcow2");
    make_source(src_path);
    int files_before = count_files();
    img *src;
    assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
    struct rlimit old, small;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    small = old;
    small.rlim_cur = 1 << 20; /* room for the qcow2 metadata, not for the data at 5 MiB */
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    int ret = img_convert(src, dst_path, "qcow2", NULL, NULL, NULL);
    char message[512];
    snprintf(message, sizeof(message), "%s", img_last_error());
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_handler);
    img_close(src);
    assert_int_equal(ret, -EFBIG);
    if (!strstr(message, img_strerror(-EFBIG)))
        fail_msg("message does not name the failure: %s", message);
    assert_int_equal(count_files(), files_before);
}

static uint64_t allocated_bytes(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_blocks * 512;
}

/*
 * A raw target is created by the raw backend, so -o preallocation is honoured as qemu-img
 * honours it: every block of the file allocated, the content the source's.
 */
static void test_convert_raw_preallocation(void **state)
{
    char src_path[256];
    snprintf(src_path, sizeof(src_path), "%s", path_in_dir("pre-src.raw"));
    make_source(src_path);
    static const char *const modes[] = {"falloc", "full"};
    for (size_t m = 0; m < 2; m++) {
        char ours[256], ref[256], args[1024];
        snprintf(ours, sizeof(ours), "%s", path_in_dir("pre-ours.raw"));
        snprintf(ref, sizeof(ref), "%s", path_in_dir("pre-ref.raw"));
        img *src;
        assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
        img_opts *opts;
        img_opts_new(&opts);
        img_opts_set(opts, "preallocation", modes[m]);
        assert_int_equal(img_convert(src, ours, "raw", opts, NULL, NULL), 0);
        img_opts_free(opts);
        img_close(src);
        assert_same_file(src_path, ours);
        if (allocated_bytes(ours) < IMAGE_SIZE)
            fail_msg("preallocation=%s: only %llu bytes allocated", modes[m],
                     (unsigned long long)allocated_bytes(ours));

        if (!have_qemu_img()) {
            print_message("qemu-img not found: interop checks skipped\n");
            continue;
        }
        snprintf(args, sizeof(args), "convert -f raw -O raw -o preallocation=%s %s %s", modes[m],
                 src_path, ref);
        qemu_img(args);
        snprintf(args, sizeof(args), "compare -q -f raw -F raw %s %s", ref, ours);
        qemu_img(args);
        if (allocated_bytes(ours) < allocated_bytes(ref))
            fail_msg("preallocation=%s: %llu bytes allocated, qemu-img %llu", modes[m],
                     (unsigned long long)allocated_bytes(ours),
                     (unsigned long long)allocated_bytes(ref));
    }
}

/* A raw target's options are checked by the raw backend, as any format's. */
static void test_convert_raw_bad_options(void **state)
{
    const char *src_path = path_in_dir("src.raw");
    make_source(src_path);
    int files_before = count_files();
    img *src;
    assert_int_equal(img_open(&src, src_path, "raw", 0, NULL), 0);
    img_opts *opts;
    img_opts_new(&opts);
    img_opts_set(opts, "preallocation", "bogus");
    assert_int_equal(img_convert(src, path_in_dir("bogus.raw"), "raw", opts, NULL, NULL), -EINVAL);
    if (!strstr(img_last_error(), "preallocation") || !strstr(img_last_error(), "bogus"))
        fail_msg("message does not name the option: %s", img_last_error());
    img_opts_free(opts);

    img_opts_new(&opts);
    img_opts_set(opts, "compress", "on");
    assert_int_equal(img_convert(src, path_in_dir("bogus.raw"), "raw", opts, NULL, NULL), -ENOTSUP);
    if (!strstr(img_last_error(), "raw") || !strstr(img_last_error(), "compression"))
        fail_msg("message does not name the problem: %s", img_last_error());
    img_opts_free(opts);
    img_close(src);
    assert_int_equal(count_files(), files_before);
    assert_int_equal(access(path_in_dir("bogus.raw"), F_OK), -1);
}

/* Runs the command-line tool with the I/O engine `engine`; its exit status. */
static int run_cli(const char *engine, const char *args)
{
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), "IMGUTIL_IO=%s '%s' %s >/dev/null", engine, getenv("IMGUTIL_CLI"),
             args);
    return system(cmd);
}

/*
 * The engine moves the bytes, it does not choose them: the io_uring and the thread-pool
 * engines write the same raw file, the same compressed image on every run, and images of the
 * same content.
 */
static void test_convert_engines_identical(void **state)
{
    if (!getenv("IMGUTIL_CLI")) {
        print_message("IMGUTIL_CLI not set: skipped\n");
        skip();
    }
    char src_path[256], packed_path[256];
    snprintf(src_path, sizeof(src_path), "%s", path_in_dir("eng-src.raw"));
    snprintf(packed_path, sizeof(packed_path), "%s", path_in_dir("eng-src.qcow2"));
    make_source(src_path);
    char args[4096];
    /* A compressed source: its clusters are decompressed on the workers. */
    snprintf(args, sizeof(args), "convert -c -f raw -O qcow2 '%s' '%s'", src_path, packed_path);
    assert_int_equal(run_cli("threads", args), 0);

    static const char *const engines[] = {"threads", "uring"};
    char path[2][6][256];
    for (int e = 0; e < 2; e++) {
        for (int k = 0; k < 6; k++) {
            char name[64];
            snprintf(name, sizeof(name), "eng-%s-%d", engines[e], k);
            snprintf(path[e][k], sizeof(path[e][k]), "%s", path_in_dir(name));
        }
        static const char *const how[] = {
            "convert -f raw -O raw",        "convert -f qcow2 -O raw",
            "convert -S 0 -f qcow2 -O raw", "convert -c -f raw -O qcow2",
            "convert -c -f raw -O qcow2",   "convert -f qcow2 -O qcow2",
        };
        for (int k = 0; k < 6; k++) {
            snprintf(args, sizeof(args), "%s '%s' '%s'", how[k],
                     strstr(how[k], "-f raw") ? src_path : packed_path, path[e][k]);
            if (run_cli(engines[e], args) != 0)
                fail_msg("IMGUTIL_IO=%s imgutil %s failed", engines[e], args);
        }
        assert_same_file(src_path, path[e][0]);
        assert_same_file(src_path, path[e][1]);
        assert_same_file(src_path, path[e][2]);
        assert_same_file(path[e][3], path[e][4]); /* -c: the same file on every run */
        assert_same_content(path[e][3], "qcow2", src_path);
        assert_same_content(path[e][5], "qcow2", src_path);
    }
    for (int k = 0; k < 5; k++)
        assert_same_file(path[0][k], path[1][k]);
}

static int setup(void **state)
{
    return mkdtemp(dir) ? 0 : -1;
}

static int cleanup(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_convert_raw_sparse),
        cmocka_unit_test(test_cancel_keeps_target),
        cmocka_unit_test(test_convert_onto_source),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_convert_qcow2_round_trip),
        cmocka_unit_test(test_convert_compressed_round_trip),
        cmocka_unit_test(test_convert_compressed_deterministic),
        cmocka_unit_test(test_compressed_cancel_and_error),
        cmocka_unit_test(test_convert_no_sparse_writes_zeros),
        cmocka_unit_test(test_cancel_qcow2_leaves_nothing),
        cmocka_unit_test(test_worker_error_reported),
        cmocka_unit_test(test_convert_raw_preallocation),
        cmocka_unit_test(test_convert_raw_bad_options),
        cmocka_unit_test(test_convert_engines_identical),
    };
    return cmocka_run_group_tests(tests, setup, cleanup);
}
