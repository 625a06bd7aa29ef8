/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "opt_table.h"
#include "opts.h"
#include "util/json.h"

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

/* As qemu-img: an empty item makes the whole list invalid; ",," stays a literal comma. */
static void test_parse_empty_items(void **state)
{
    static const char *const bad[] = {"cluster_size=4k,", ",size=1M", "a=1,,,", "=1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        img_opts *o;
        assert_int_equal(img_opts_new(&o), 0);
        assert_int_equal(img_opts_parse(o, bad[i]), -EINVAL);
        char want[64];
        snprintf(want, sizeof(want), "Invalid option list: %s", bad[i]);
        assert_string_equal(img_last_error(), want);
        img_opts_free(o);
    }
    img_opts *o;
    assert_int_equal(img_opts_new(&o), 0);
    assert_int_equal(img_opts_parse(o, "a=x,,"), 0);
    assert_string_equal(img_opts_get(o, "a"), "x,");
    /* A key given twice keeps the last value, as qemu-img's size=1M,size=2M. */
    assert_int_equal(img_opts_parse(o, "size=1M,size=2M"), 0);
    assert_string_equal(img_opts_get(o, "size"), "2M");
    img_opts_free(o);
}

static const char *const colours[] = {"red", "green", NULL};

/* One option of every type. */
static const struct opt_desc table[] = {
    {.name = "flag", .type = OPT_BOOL, .def = "off", .help = "A switch"},
    {.name = "bytes",
     .type = OPT_SIZE,
     .def = "65536",
     .min = 512,
     .max = 2u << 20,
     .help = "A size"},
    {.name = "anysize", .type = OPT_SIZE, .help = "A size without bounds"},
    {.name = "count", .type = OPT_INT, .def = "16", .min = 1, .max = 64, .help = "A number"},
    {.name = "colour", .type = OPT_ENUM, .values = colours, .help = "One of two"},
    {.name = "label", .type = OPT_STRING, .help = "Any text"},
    {.name = "file", .type = OPT_PATH, .help = "A file"},
    {.name = "secret", .type = OPT_BOOL, .flags = OPT_HIDDEN, .help = "Not listed"},
    OPT_TABLE_END,
};

/* Checks `text` against the table: 0, or the message of the refusal. */
static const char *check(const char *text)
{
    img_opts *o;
    assert_int_equal(img_opts_new(&o), 0);
    assert_int_equal(img_opts_parse(o, text), 0);
    int ret = opt_table_check(table, o);
    img_opts_free(o);
    if (ret == 0)
        return NULL;
    assert_int_equal(ret, -EINVAL);
    return img_last_error();
}

static void test_table_accepts(void **state)
{
    /* One at a time: a key given twice keeps only its last value. */
    static const char *const good[] = {
        "flag=on",       "flag=off",    "flag=yes",
        "flag=FALSE",    "flag=1",      "bytes=512",
        "bytes=2M",      "bytes=64k",   "bytes=1.5k",
        "anysize=0",     "anysize=15E", "count=1",
        "count=64",      "count=0x10",  "colour=red",
        "colour=green",  "label=",      "label=any text",
        "file=a,,b.img", "secret=on",   "flag=on,bytes=4k,count=2,colour=red,label=x,file=y",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const char *refused = check(good[i]);
        if (refused)
            fail_msg("%s refused: %s", good[i], refused);
    }
    /* Nothing given, nothing to refuse. */
    img_opts *o;
    assert_int_equal(img_opts_new(&o), 0);
    assert_int_equal(opt_table_check(table, o), 0);
    assert_int_equal(opt_table_check(table, NULL), 0);
    img_opts_free(o);
}

static void test_table_refuses(void **state)
{
    assert_string_equal(check("bogus=1"), "Invalid parameter 'bogus'");
    assert_string_equal(check("Flag=on"), "Invalid parameter 'Flag'");
    assert_string_equal(check("flag=maybe"), "Parameter 'flag' expects 'on' or 'off'");
    assert_string_equal(check("flag="), "Parameter 'flag' expects 'on' or 'off'");
    assert_string_equal(check("bytes=lots"),
                        "Parameter 'bytes' expects a non-negative number below 2^64 (optional "
                        "suffix k, M, G, T, P or E)");
    assert_string_equal(check("bytes=-1"),
                        "Parameter 'bytes' expects a non-negative number below 2^64 (optional "
                        "suffix k, M, G, T, P or E)");
    assert_string_equal(check("bytes=256"),
                        "Parameter 'bytes' expects a value from 512 to 2097152 (got '256')");
    assert_string_equal(check("bytes=4M"),
                        "Parameter 'bytes' expects a value from 512 to 2097152 (got '4M')");
    assert_string_equal(check("anysize=16E"),
                        "Parameter 'anysize' expects a non-negative number below 2^64 (optional "
                        "suffix k, M, G, T, P or E)");
    assert_string_equal(check("count=many"), "Parameter 'count' expects a number");
    assert_string_equal(check("count=-3"), "Parameter 'count' expects a number");
    assert_string_equal(check("count=8x"), "Parameter 'count' expects a number");
    assert_string_equal(check("count=0"),
                        "Parameter 'count' expects a value from 1 to 64 (got '0')");
    assert_string_equal(check("count=65"),
                        "Parameter 'count' expects a value from 1 to 64 (got '65')");
    assert_string_equal(check("colour=blue"), "Parameter 'colour' does not accept value 'blue'");
    assert_string_equal(check("colour=Red"), "Parameter 'colour' does not accept value 'Red'");
    assert_string_equal(check("colour="), "Parameter 'colour' does not accept value ''");
    assert_string_equal(check("file="), "Parameter 'file' expects a file name");
    /* The first bad option is the one named. */
    assert_string_equal(check("colour=red,count=99,bogus=1"),
                        "Parameter 'count' expects a value from 1 to 64 (got '99')");
    /* A format without a table takes no option at all. */
    img_opts *o;
    assert_int_equal(img_opts_new(&o), 0);
    img_opts_set(o, "size", "1M");
    assert_int_equal(opt_table_check(NULL, o), -EINVAL);
    assert_string_equal(img_last_error(), "Invalid parameter 'size'");
    img_opts_free(o);
}

/* Whether `text` holds `want`, both compared without whitespace (the layout is not the point). */
static bool has_json(const char *text, const char *want)
{
    char *a = strdup(text), *b = strdup(want);
    assert_non_null(a);
    assert_non_null(b);
    char *strs[] = {a, b};
    for (int k = 0; k < 2; k++) {
        char *out = strs[k];
        for (const char *in = strs[k]; *in; in++)
            if (*in != ' ' && *in != '\n')
                *out++ = *in;
        *out = '\0';
    }
    bool found = strstr(a, b) != NULL;
    free(a);
    free(b);
    return found;
}

static void test_table_json(void **state)
{
    struct json_writer w;
    json_init(&w);
    w.compact = true;
    json_object_begin(&w, NULL);
    opt_table_json(table, &w, "options");
    json_object_end(&w);
    char *text = json_finish(&w);
    assert_non_null(text);
    /* Defaults, ranges and allowed values are listed; hidden options are not. */
    assert_true(has_json(text, "{\"name\": \"flag\", \"type\": \"bool\", \"default\": "
                               "\"off\", \"help\": \"A switch\"}"));
    assert_true(has_json(text, "{\"name\": \"bytes\", \"type\": \"size\", \"default\": "
                               "\"65536\", \"min\": 512, \"max\": 2097152, \"help\": "
                               "\"A size\"}"));
    assert_true(has_json(text, "{\"name\": \"anysize\", \"type\": \"size\", \"help\": "
                               "\"A size without bounds\"}"));
    assert_true(has_json(text, "\"name\": \"count\", \"type\": \"int\", \"default\": "
                               "\"16\", \"min\": 1, \"max\": 64"));
    assert_true(has_json(text, "{\"name\": \"colour\", \"type\": \"enum\", \"values\": "
                               "[\"red\", \"green\"], \"help\": \"One of two\"}"));
    assert_true(has_json(text, "\"name\": \"label\", \"type\": \"string\""));
    assert_true(has_json(text, "\"name\": \"file\", \"type\": \"path\""));
    assert_false(has_json(text, "secret"));
    free(text);
}

/* The public queries answer from the backends' own declarations. */
static void test_public_queries(void **state)
{
    int n = img_format_count();
    assert_true(n >= 2);
    bool raw = false, qcow2 = false;
    for (int i = 0; i < n; i++) {
        assert_non_null(img_format_name(i));
        raw = raw || strcmp(img_format_name(i), "raw") == 0;
        qcow2 = qcow2 || strcmp(img_format_name(i), "qcow2") == 0;
    }
    assert_true(raw && qcow2);
    assert_null(img_format_name(n));
    assert_null(img_format_name(-1));

    char *json = (char *)"untouched";
    assert_int_equal(img_format_options_json("qcow2", &json), 0);
    assert_non_null(strstr(json, "\"format\": \"qcow2\""));
    assert_non_null(strstr(json, "\"name\": \"cluster_size\""));
    assert_non_null(strstr(json, "\"default\": \"65536\""));
    assert_null(strstr(json, "encrypt"));
    img_free(json);
    json = (char *)"untouched";
    assert_int_equal(img_format_options_json("nosuchformat", &json), -ENOENT);
    assert_null(json);
    assert_string_equal(img_last_error(), "Unknown file format 'nosuchformat'");
    assert_int_equal(img_format_options_json(NULL, &json), -EINVAL);
    assert_int_equal(img_format_options_json("raw", NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_get_replace), cmocka_unit_test(test_parse),
        cmocka_unit_test(test_typed),           cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_known),           cmocka_unit_test(test_parse_empty_items),
        cmocka_unit_test(test_table_accepts),   cmocka_unit_test(test_table_refuses),
        cmocka_unit_test(test_table_json),      cmocka_unit_test(test_public_queries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
