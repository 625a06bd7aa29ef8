/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_create for qcow2 against `qemu-img create`: for each set of options the two images are
 * made side by side (ours in one folder, qemu-img's in another, under the same names) and must
 * be byte-identical where qemu-img's layout is deterministic and ours follows it, and must
 * always show the same `qemu-img info` and pass `qemu-img check`. Bad options fail with -EINVAL
 * and a message naming the option. Skips (77) without qemu-img.
 */
#include "qcow2_write_test_util.h"

static char dir_ours[300], dir_qemu[300];

static void make_dirs(void)
{
    snprintf(dir_ours, sizeof(dir_ours), "%s/ours", qt_tmpdir());
    snprintf(dir_qemu, sizeof(dir_qemu), "%s/qemu", qt_tmpdir());
    mkdir(dir_ours, 0755);
    mkdir(dir_qemu, 0755);
}

/* Both images of `options`/`size`; returns whether qemu-img accepted the options. */
static bool create_pair(const char *options, const char *size_text, uint64_t size)
{
    char path[400];
    qt_run("rm -f '%s'/* '%s'/*", dir_ours, dir_qemu);
    /* Backing files must exist for both. */
    qt_run("cd '%s' && qemu-img create -q -f qcow2 base.qcow2 64M", dir_ours);
    qt_run("cd '%s' && qemu-img create -q -f qcow2 base.qcow2 64M", dir_qemu);
    if (qt_run("cd '%s' && qemu-img create -q -f qcow2 %s%s x.qcow2 %s", dir_qemu,
               *options ? "-o " : "", options, size_text) != 0)
        return false;
    snprintf(path, sizeof(path), "%s/x.qcow2", dir_ours);
    qw_create(path, size, options);
    return true;
}

static void assert_info_equal(void)
{
    char *a = qt_capture("cd '%s' && qemu-img info --output=json x.qcow2 | grep -v actual-size",
                         dir_ours);
    char *b = qt_capture("cd '%s' && qemu-img info --output=json x.qcow2 | grep -v actual-size",
                         dir_qemu);
    assert_non_null(a);
    assert_non_null(b);
    if (strcmp(a, b) != 0)
        fprintf(stderr, "info differs:\n--- ours\n%s\n--- qemu-img\n%s\n", a, b);
    assert_string_equal(a, b);
    free(a);
    free(b);
}

static void assert_bytes_equal(const char *options, const char *size)
{
    int same = qt_run("cmp -s '%s/x.qcow2' '%s/x.qcow2'", dir_ours, dir_qemu);
    if (same != 0)
        fprintf(stderr, "layout differs for -o '%s' size %s\n", options, size);
    assert_int_equal(same, 0);
}

struct variant {
    const char *options;
    bool identical; /* byte-for-byte the same file as qemu-img's */
};

static const struct variant variants[] = {
    {"", true},
    {"compat=0.10", true},
    {"compat=v2", true},
    {"compat=v3", true},
    {"cluster_size=512", true},
    {"cluster_size=4k", true},
    {"cluster_size=2M", true},
    {"refcount_bits=1", true},
    {"refcount_bits=64", true},
    {"cluster_size=1k,refcount_bits=8", true},
    {"lazy_refcounts=on", true},
    {"compression_type=zstd", true},
    {"extended_l2=on", true},
    {"extended_l2=on,cluster_size=16k", true},
    {"preallocation=metadata", true},
    {"preallocation=metadata,extended_l2=on,cluster_size=32k", true},
    {"preallocation=falloc", true},
    {"preallocation=full,cluster_size=4k", true},
    {"data_file=x.raw", true},
    {"data_file=x.raw,data_file_raw=on", true},
    {"backing_file=base.qcow2,backing_fmt=qcow2", true},
    {"backing_file=base.qcow2,backing_fmt=qcow2,compat=0.10", true},
    {"backing_file=base.qcow2,backing_fmt=qcow2,extended_l2=on,preallocation=metadata", true},
    {"data_file=x.raw,backing_file=base.qcow2,backing_fmt=qcow2", true},
    /* The refcount table grows while metadata is preallocated: same info, other places. */
    {"cluster_size=512,preallocation=metadata", false},
};

static const struct {
    const char *text;
    uint64_t bytes;
} sizes[] = {
    {"0", 0},
    {"1000", 1000},
    {"64M", 64ull << 20},
    {"3G", 3ull << 30},
};

static void test_matches_qemu_img(void **state)
{
    (void)state;
    for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
        for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
            const char *o = variants[v].options;
            /* Full preallocation writes every byte: keep it small. */
            if (strstr(o, "full") && sizes[z].bytes > (64ull << 20))
                continue;
            if (strstr(o, "cluster_size=512,preallocation") && sizes[z].bytes > (64ull << 20))
                continue;
            /* img_create takes size 0 with a backing file as "the backing file's size". */
            if (strstr(o, "backing_file") && sizes[z].bytes == 0)
                continue;
            if (!create_pair(o, sizes[z].text, sizes[z].bytes))
                continue; /* qemu-img refuses the combination; tested below */
            char path[400];
            snprintf(path, sizeof(path), "%s/x.qcow2", dir_ours);
            qw_assert_check_clean(path);
            assert_info_equal();
            if (variants[v].identical)
                assert_bytes_equal(o, sizes[z].text);
        }
    }
}

static void expect_error(int code, const char *options, uint64_t size, const char *needle)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/bad.qcow2", dir_ours);
    img_opts *o = qw_opts(options);
    img_opts_set(o, "overwrite", "on");
    int ret = img_create(path, "qcow2", size, o);
    img_opts_free(o);
    if (ret != code || !strstr(img_last_error(), needle))
        fprintf(stderr, "-o %s: %d '%s' (wanted %d naming '%s')\n", options, ret, img_last_error(),
                code, needle);
    assert_int_equal(ret, code);
    assert_non_null(strstr(img_last_error(), needle));
}

static void test_bad_options(void **state)
{
    (void)state;
    expect_error(-EINVAL, "compat=0.11", 1 << 20, "compat");
    expect_error(-EINVAL, "cluster_size=3000", 1 << 20, "cluster_size");
    expect_error(-EINVAL, "cluster_size=256", 1 << 20, "cluster_size");
    expect_error(-EINVAL, "cluster_size=4M", 1 << 20, "cluster_size");
    expect_error(-EINVAL, "refcount_bits=3", 1 << 20, "refcount_bits");
    expect_error(-EINVAL, "refcount_bits=128", 1 << 20, "refcount_bits");
    expect_error(-EINVAL, "compat=0.10,refcount_bits=8", 1 << 20, "refcount_bits");
    expect_error(-EINVAL, "compat=0.10,lazy_refcounts=on", 1 << 20, "lazy_refcounts");
    expect_error(-EINVAL, "lazy_refcounts=maybe", 1 << 20, "lazy_refcounts");
    expect_error(-EINVAL, "compression_type=lz4", 1 << 20, "compression_type");
    expect_error(-EINVAL, "compat=0.10,compression_type=zstd", 1 << 20, "compression_type");
    expect_error(-EINVAL, "extended_l2=on,cluster_size=8k", 1 << 20, "extended_l2");
    expect_error(-EINVAL, "compat=0.10,extended_l2=on", 1 << 20, "extended_l2");
    expect_error(-EINVAL, "preallocation=sparse", 1 << 20, "preallocation");
    expect_error(-EINVAL, "data_file_raw=on", 1 << 20, "data_file_raw");
    expect_error(-EINVAL, "no_such_option=1", 1 << 20, "no_such_option");
    expect_error(-EFBIG, "cluster_size=512", 1ull << 40, "too large");
}

static void test_unsupported(void **state)
{
    (void)state;
    char path[400];
    snprintf(path, sizeof(path), "%s/enc.qcow2", dir_ours);
    img_opts *o = qw_opts("encrypt.format=luks");
    assert_int_equal(img_create(path, "qcow2", 1 << 20, o), -ENOTSUP);
    assert_non_null(strstr(img_last_error(), "encrypt"));
    img_opts_free(o);
}

/* The size option stands in for a missing positional size; sizes round up to sectors. */
static void test_size_option(void **state)
{
    (void)state;
    char path[400];
    snprintf(path, sizeof(path), "%s/sz.qcow2", dir_ours);
    qw_create(path, 0, "size=5M");
    img *h = qw_open(path);
    assert_int_equal(img_get_size(h), 5 << 20);
    img_close(h);
    qw_create(path, 1000, "");
    h = qw_open(path);
    assert_int_equal(img_get_size(h), 1024);
    img_close(h);
    assert_int_equal(qw_header_u64(path, 24), 1024);
}

int main(void)
{
    qw_require_qemu();
    make_dirs();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_qemu_img),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_unsupported),
        cmocka_unit_test(test_size_option),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (!failed)
        qt_cleanup();
    return failed;
}
