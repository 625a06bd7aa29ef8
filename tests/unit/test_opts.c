/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "opts.h"

static void test_set_get_replace(void **state)
{
    img_opts *o;
    assert_int_equal(img_opts_new(&o), 0);
    assert_null(img_opts_get(o, "cluster_size"));
    assert_int_equal(img_opts_set(o, "cluster_size", "65536"), 0);
    assert_int_equal(img_opts_set(o, "cluster_size", "4096"), 0);
    assert_string_equal(img_opts_get(o, "cluster_size"), "4096");
    assert_int_equal(img_opts_set(o, "", "x"), -EINVAL);
    assert_int_equal(img_opts_set(o, "k", NULL), -EINVAL);
    img_opts_free(o);
    img_opts_free(NULL);
}

static void test_parse(void **state)
{
    img_opts *o;
    assert_int_equal(img_opts_new(&o), 0);
    assert_int_equal(img_opts_parse(o, "compat=1.1,backing_file=a,,b.img,lazy_refcounts=on"), 0);
    assert_string_equal(img_opts_get(o, "compat"), "1.1");
    assert_string_equal(img_opts_get(o, "backing_file"), "a,b.img");
    assert_string_equal(img_opts_get(o, "lazy_refcounts"), "on");
    assert_int_equal(img_opts_parse(o, "novalue"), -EINVAL);
    assert_non_null(strstr(img_last_error(), "novalue"));
    img_opts_free(o);
}

static void test_typed(void **state)
{
    img_opts *o;
    uint64_t v = 7;
    bool b = false;
    assert_int_equal(img_opts_new(&o), 0);
    assert_int_equal(opts_get_u64(o, "missing", &v), 0);
    assert_int_equal(v, 7);
    img_opts_set(o, "cluster_size", "2M");
    assert_int_equal(opts_get_size(o, "cluster_size", &v), 0);
    assert_int_equal(v, 2u << 20);
    img_opts_set(o, "refcount_bits", "-1");
    assert_int_equal(opts_get_u64(o, "refcount_bits", &v), -EINVAL);
    assert_non_null(strstr(img_last_error(), "refcount_bits"));
    img_opts_set(o, "lazy_refcounts", "on");
    assert_int_equal(opts_get_bool(o, "lazy_refcounts", &b), 0);
    assert_true(b);
    img_opts_set(o, "lazy_refcounts", "maybe");
    assert_int_equal(opts_get_bool(o, "lazy_refcounts", &b), -EINVAL);
    img_opts_free(o);
}

static void test_sizes(void **state)
{
    uint64_t v;
    assert_int_equal(parse_size("1024", &v), 0);
    assert_int_equal(v, 1024);
    assert_int_equal(parse_size("1k", &v), 0);
    assert_int_equal(v, 1024);
    assert_int_equal(parse_size("10G", &v), 0);
    assert_int_equal(v, 10ull << 30);
    assert_int_equal(parse_size("1.5M", &v), 0);
    assert_int_equal(v, 3ull << 19);
    assert_int_equal(parse_size("1T", &v), 0);
    assert_int_equal(v, 1ull << 40);
    assert_int_equal(parse_size("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(parse_size("12Q", &v), -EINVAL);
    assert_int_equal(parse_size("", &v), -EINVAL);
    assert_int_equal(parse_size("-5", &v), -EINVAL);
    assert_int_equal(parse_size("16E", &v), -ERANGE);
}

static void test_known(void **state)
{
    img_opts *o;
    static const char *const known[] = {"compat", "cluster_size", NULL};
    assert_int_equal(img_opts_new(&o), 0);
    img_opts_set(o, "compat", "1.1");
    assert_int_equal(opts_check_known(o, known, "qcow2"), 0);
    img_opts_set(o, "clustersize", "1");
    assert_int_equal(opts_check_known(o, known, "qcow2"), -EINVAL);
    assert_string_equal(
        img_last_error(),
        "qcow2: unknown option 'clustersize' (known options: compat, cluster_size)");
    img_opts_free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_get_replace), cmocka_unit_test(test_parse),
        cmocka_unit_test(test_typed),           cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_known),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
