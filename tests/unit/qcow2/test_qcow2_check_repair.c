/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_check() repairing images that qemu-img check repairs, through the public API: images
 * marked corrupt and dirty lazy-refcounts images opened with IMG_OPEN_CHECK, and the findings
 * of the report ("imgutil-findings") and of a failed check (img_last_error()). Every figure is
 * compared with `qemu-img check` on an identical copy. Skips (77) without qemu-img/qemu-io.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "imgutil.h"
#include "qcow2_test_util.h"

#define CLUSTER 65536u
#define INCOMPAT_OFFSET 72
#define DIRTY_BIT 1ull
#define CORRUPT_BIT 2ull
#define OPEN_REPAIR (IMG_OPEN_READ_WRITE | IMG_OPEN_CHECK)
#define REPAIR_ALL (IMG_CHECK_REPAIR_LEAKS | IMG_CHECK_REPAIR_ERRORS)

/* ---- files ---- */

static uint64_t read_be64_at(const char *path, uint64_t offset)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    uint8_t b[8];
    assert_int_equal(pread(fd, b, sizeof(b), (off_t)offset), (ssize_t)sizeof(b));
    close(fd);
    return load_be64(b);
}

static void write_at(const char *path, uint64_t offset, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, len, (off_t)offset), (ssize_t)len);
    close(fd);
}

static void write_be64_at(const char *path, uint64_t offset, uint64_t value)
{
    uint8_t b[8];
    store_be64(b, value);
    write_at(path, offset, b, sizeof(b));
}

static uint64_t incompat(const char *path)
{
    return read_be64_at(path, INCOMPAT_OFFSET);
}

static void set_incompat_bits(const char *path, uint64_t bits)
{
    write_be64_at(path, INCOMPAT_OFFSET, incompat(path) | bits);
}

static void copy_file(const char *from, const char *to)
{
    assert_int_equal(qt_run("cp '%s' '%s'", from, to), 0);
}

/* ---- damaged images (64 KiB clusters: 0 header, 1 refcount table, 2 its block, 3 L1,
 * 4 L2, 5 and 6 the data of guest clusters 0 and 2) ---- */

static char *make_base(const char *name)
{
    char *path = qt_path(name);
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 '%s' 1M", path), 0);
    assert_int_equal(qt_run("qemu-io -c 'write -P 0x11 0 64k' -c 'write -P 0x22 128k 64k' '%s' "
                            ">/dev/null",
                            path),
                     0);
    return path;
}

static uint64_t refblock_offset(const char *path)
{
    return read_be64_at(path, read_be64_at(path, 48)) & QCOW2_REFT_OFFSET_MASK;
}

static uint64_t l2_offset(const char *path)
{
    return read_be64_at(path, read_be64_at(path, 40)) & QCOW2_L1E_OFFSET_MASK;
}

/* Cluster 7, past the data, has refcount 1 and no user: one leak. */
static char *make_leaked(const char *name)
{
    char *path = make_base(name);
    static const uint8_t zero = 0;
    write_at(path, 8 * CLUSTER - 1, &zero, 1);
    const uint8_t one[2] = {0, 1};
    write_at(path, refblock_offset(path) + 7 * 2, one, sizeof(one));
    return path;
}

/* The third L2 entry names cluster 5 as the first does: one corruption, cluster 6 leaked. */
static char *make_double_reference(const char *name)
{
    char *path = make_base(name);
    write_be64_at(path, l2_offset(path) + 2 * 8, QCOW2_OFLAG_COPIED | 5 * CLUSTER);
    return path;
}

/* A lazy-refcounts image whose writer died before writing the refcounts of its clusters. */
static char *make_dirty(const char *name)
{
    char *path = qt_path(name);
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 -o lazy_refcounts=on '%s' 1M", path), 0);
    /* abort() is the point: the command fails. */
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "qemu-io -c 'write 0 64k' -c 'write 128k 64k' -c abort '%s' >/dev/null 2>&1", path);
    assert_true(system(cmd) != 0);
    assert_true(incompat(path) & DIRTY_BIT);
    return path;
}

/* ---- reports ---- */

/* The integer member `key` of a check report; 0 when absent (as both tools leave zeros out). */
static uint64_t report_u64(const char *json, const char *key)
{
    char pattern[64];
    snprintf(pattern, sizeof(pattern), "\"%s\": ", key);
    const char *p = strstr(json, pattern);
    return p ? strtoull(p + strlen(pattern), NULL, 10) : 0;
}

/* The findings of a report, one per line ("" when none). Findings hold no quotes. */
static char *report_findings(const char *json)
{
    char *out = calloc(1, strlen(json) + 1);
    assert_non_null(out);
    const char *p = strstr(json, "\"imgutil-findings\": [");
    if (!p)
        return out;
    p = strchr(p, '[') + 1;
    const char *end = strchr(p, ']');
    assert_non_null(end);
    size_t len = 0;
    while ((p = strchr(p, '"')) && p < end) {
        const char *close = strchr(p + 1, '"');
        assert_non_null(close);
        memcpy(out + len, p + 1, (size_t)(close - p - 1));
        len += (size_t)(close - p - 1);
        out[len++] = '\n';
        p = close + 1;
    }
    return out;
}

struct qemu_check {
    char *json;     /* stdout of --output=json */
    char *findings; /* stderr without qemu-img's closing "qemu-img: ..." message */
    int status;
};

/* Runs qemu-img check (with `repair` as -r, NULL for none) on a copy of `path`. */
static void qemu_check(const char *path, const char *repair, struct qemu_check *q)
{
    char *copy = qt_path("qemu-copy.qcow2");
    char *err = qt_path("qemu-check.err");
    copy_file(path, copy);
    char *status = qt_capture("qemu-img check %s%s --output=json '%s' 2>'%s'; echo \"=$?\"",
                              repair ? "-r " : "", repair ? repair : "", copy, err);
    assert_non_null(status);
    char *mark = strrchr(status, '=');
    assert_non_null(mark);
    q->status = atoi(mark + 1);
    *mark = '\0';
    q->json = status;
    q->findings = qt_capture("grep -v '^qemu-img: ' '%s' || true", err);
    assert_non_null(q->findings);
    free(copy);
    free(err);
}

static void qemu_check_free(struct qemu_check *q)
{
    free(q->json);
    free(q->findings);
}

/* Our report's counts and findings are qemu-img's. */
static void assert_same_report(const char *ours, const struct qemu_check *q)
{
    static const char *const keys[] = {"corruptions",    "corruptions-fixed", "leaks",
                                       "leaks-fixed",    "check-errors",      "image-end-offset",
                                       "total-clusters", "allocated-clusters"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        /*
         * A repair that changes a refcount together with the COPIED flags depending on it
         * writes new tables past the end and switches to them at once (crash safety), where
         * qemu-img rewrites them in place: the image may end later than qemu-img's.
         */
        if (strcmp(keys[i], "image-end-offset") == 0 &&
            report_u64(ours, keys[i]) >= report_u64(q->json, keys[i]))
            continue;
        if (report_u64(ours, keys[i]) != report_u64(q->json, keys[i]))
            fail_msg("%s: ours %llu, qemu-img %llu\nours:\n%s\nqemu-img:\n%s", keys[i],
                     (unsigned long long)report_u64(ours, keys[i]),
                     (unsigned long long)report_u64(q->json, keys[i]), ours, q->json);
    }
    char *findings = report_findings(ours);
    assert_string_equal(findings, q->findings);
    free(findings);
}

static void assert_qemu_finds_clean(const char *path)
{
    if (qt_run("qemu-img check -q '%s'", path) != 0) {
        qt_run("qemu-img check '%s'", path);
        fail_msg("qemu-img check finds %s damaged", path);
    }
}

/* Guest clusters 0 and 2 still read as written. */
static void assert_data_intact(img *image)
{
    uint8_t buf[CLUSTER];
    assert_int_equal(img_pread(image, buf, CLUSTER, 0), CLUSTER);
    for (size_t i = 0; i < CLUSTER; i++)
        assert_int_equal(buf[i], 0x11);
    assert_int_equal(img_pread(image, buf, CLUSTER, 2 * CLUSTER), CLUSTER);
    for (size_t i = 0; i < CLUSTER; i++)
        assert_int_equal(buf[i], 0x22);
}

/* ---- tests ---- */

static void test_corrupt_image_needs_check_flag(void **state)
{
    (void)state;
    char *path = make_leaked("corrupt-open.qcow2");
    set_incompat_bits(path, CORRUPT_BIT);
    img *image = NULL;
    assert_int_equal(img_open(&image, path, "qcow2", IMG_OPEN_READ_WRITE, NULL), -EACCES);
    assert_non_null(strstr(img_last_error(), "marked corrupt"));
    assert_int_equal(img_open(&image, path, "qcow2", OPEN_REPAIR, NULL), 0);

    /* Until repaired, nothing is written, not even in place. */
    uint8_t data[512];
    memset(data, 0x5a, sizeof(data));
    assert_int_equal(img_pwrite(image, data, sizeof(data), 0), -EIO);
    assert_non_null(strstr(img_last_error(), "until a check repairs it"));
    assert_int_equal(img_pwrite(image, data, sizeof(data), 4 * CLUSTER), -EIO);
    /* A check that repairs nothing changes nothing. */
    char *report = NULL;
    assert_int_equal(img_check(image, 0, &report), 0);
    assert_int_equal(report_u64(report, "leaks"), 1);
    img_free(report);
    assert_int_equal(img_pwrite(image, data, sizeof(data), 0), -EIO);
    img_close(image);
    assert_int_equal(incompat(path), CORRUPT_BIT);
    free(path);
}

static void test_corrupt_leaked_image_repaired(void **state)
{
    (void)state;
    static const char *const modes[] = {"leaks", "all"};
    for (size_t m = 0; m < 2; m++) {
        char *path = make_leaked("corrupt-leak.qcow2");
        set_incompat_bits(path, CORRUPT_BIT);
        struct qemu_check q;
        qemu_check(path, modes[m], &q);
        assert_int_equal(q.status, 0);

        img *image = NULL;
        assert_int_equal(img_open(&image, path, "qcow2", OPEN_REPAIR, NULL), 0);
        char *report = NULL;
        unsigned flags = m == 0 ? IMG_CHECK_REPAIR_LEAKS : REPAIR_ALL;
        assert_int_equal(img_check(image, flags, &report), 0);
        assert_same_report(report, &q);
        assert_int_equal(report_u64(report, "leaks-fixed"), 1);
        assert_non_null(strstr(report, "\"Leaked cluster 7 refcount=1 reference=0\""));
        assert_non_null(strstr(report, "\"Repairing cluster 7 refcount=1 reference=0\""));
        img_free(report);
        assert_int_equal(incompat(path) & CORRUPT_BIT, 0);

        /* Consistent again, the handle writes. */
        uint8_t data[CLUSTER];
        memset(data, 0x33, sizeof(data));
        assert_int_equal(img_pwrite(image, data, CLUSTER, CLUSTER), CLUSTER);
        assert_data_intact(image);
        img_close(image);
        assert_qemu_finds_clean(path);
        assert_int_equal(qt_run("qemu-io -c 'read -P 0x33 64k 64k' '%s' >/dev/null", path), 0);
        qemu_check_free(&q);
        free(path);
    }
}

static void test_corrupt_bit_stays_while_corruptions_remain(void **state)
{
    (void)state;
    char *path = make_double_reference("corrupt-double.qcow2");
    set_incompat_bits(path, CORRUPT_BIT);
    struct qemu_check q;
    qemu_check(path, "leaks", &q);
    assert_int_equal(q.status, 2);

    img *image = NULL;
    assert_int_equal(img_open(&image, path, "qcow2", OPEN_REPAIR, NULL), 0);
    char *report = NULL;
    assert_int_equal(img_check(image, IMG_CHECK_REPAIR_LEAKS, &report), 0);
    assert_same_report(report, &q);
    assert_int_equal(report_u64(report, "leaks-fixed"), 1);
    assert_int_equal(report_u64(report, "corruptions"), 1);
    assert_non_null(strstr(report, "\"ERROR cluster 5 refcount=1 reference=2\""));
    img_free(report);
    assert_int_equal(incompat(path), CORRUPT_BIT);
    uint8_t data[512] = {0};
    assert_int_equal(img_pwrite(image, data, sizeof(data), 0), -EIO);

    /* Repairing errors as well finishes the job. */
    qemu_check_free(&q);
    qemu_check(path, "all", &q);
    assert_int_equal(img_check(image, REPAIR_ALL, &report), 0);
    assert_same_report(report, &q);
    assert_int_equal(report_u64(report, "corruptions-fixed"), 3);
    img_free(report);
    assert_int_equal(incompat(path), 0);
    /* Away from cluster 5, which two entries share now (a write there would copy it). */
    assert_int_equal(img_pwrite(image, data, sizeof(data), 4 * CLUSTER), sizeof(data));
    img_close(image);
    assert_qemu_finds_clean(path);
    qemu_check_free(&q);
    free(path);
}

static void test_dirty_image_repaired_by_check(void **state)
{
    (void)state;
    char *path = make_dirty("dirty-check.qcow2");
    struct qemu_check q;
    qemu_check(path, "all", &q);
    assert_int_equal(q.status, 0);
    assert_true(report_u64(q.json, "corruptions-fixed") > 0);

    img *image = NULL;
    assert_int_equal(img_open(&image, path, "qcow2", OPEN_REPAIR, NULL), 0);
    /* Not repaired at open: the check sees the damage and says what it did. */
    assert_true(incompat(path) & DIRTY_BIT);
    uint8_t data[512] = {0};
    assert_int_equal(img_pwrite(image, data, sizeof(data), 4 * CLUSTER), -EIO);
    char *report = NULL;
    assert_int_equal(img_check(image, REPAIR_ALL, &report), 0);
    assert_same_report(report, &q);
    assert_non_null(strstr(report, "\"Rebuilding refcount structure\""));
    img_free(report);
    assert_int_equal(incompat(path) & DIRTY_BIT, 0);
    assert_int_equal(img_pwrite(image, data, sizeof(data), 4 * CLUSTER), sizeof(data));
    img_close(image);
    assert_qemu_finds_clean(path);
    qemu_check_free(&q);
    free(path);
}

static void test_dirty_image_read_only_check_reports(void **state)
{
    (void)state;
    char *path = make_dirty("dirty-ro.qcow2");
    struct qemu_check q;
    qemu_check(path, NULL, &q);
    assert_int_equal(q.status, 2);
    img *image = NULL;
    assert_int_equal(img_open(&image, path, "qcow2", IMG_OPEN_READ_ONLY | IMG_OPEN_CHECK, NULL), 0);
    char *report = NULL;
    assert_int_equal(img_check(image, 0, &report), 0);
    assert_same_report(report, &q);
    assert_non_null(strstr(report, "\"ERROR cluster 5 refcount=0 reference=1\""));
    img_free(report);
    img_close(image);
    assert_true(incompat(path) & DIRTY_BIT);
    qemu_check_free(&q);
    free(path);
}

/* Repairing leaks only cannot rebuild the refcounts: the check fails as qemu-img's does. */
static void test_dirty_image_leaks_only_fails(void **state)
{
    (void)state;
    char *path = make_dirty("dirty-leaks.qcow2");
    struct qemu_check q;
    qemu_check(path, "leaks", &q);
    assert_int_equal(q.status, 1);

    img *image = NULL;
    assert_int_equal(img_open(&image, path, "qcow2", OPEN_REPAIR, NULL), 0);
    char *report = (char *)"untouched";
    assert_int_equal(img_check(image, IMG_CHECK_REPAIR_LEAKS, &report), -EIO);
    assert_null(report);
    /* The findings, one per line, then the reason. */
    const char *message = img_last_error();
    const char *reason = strrchr(message, '\n');
    assert_non_null(reason);
    char *findings = strndup(message, (size_t)(reason - message + 1));
    assert_string_equal(findings, q.findings);
    assert_non_null(strstr(reason + 1, "refcount structure must be rebuilt"));
    free(findings);
    img_close(image);
    /* Still marked, so that the next open repairs it. */
    assert_true(incompat(path) & DIRTY_BIT);
    qemu_check_free(&q);
    free(path);
}

/* Without IMG_OPEN_CHECK a read-write open repairs a dirty image first, as before. */
static void test_dirty_image_repaired_at_plain_open(void **state)
{
    (void)state;
    char *path = make_dirty("dirty-open.qcow2");
    img *image = NULL;
    assert_int_equal(img_open(&image, path, "qcow2", IMG_OPEN_READ_WRITE, NULL), 0);
    assert_int_equal(incompat(path) & DIRTY_BIT, 0);
    char *report = NULL;
    assert_int_equal(img_check(image, REPAIR_ALL, &report), 0);
    assert_int_equal(report_u64(report, "corruptions-fixed"), 0);
    assert_int_equal(report_u64(report, "leaks-fixed"), 0);
    assert_int_equal(report_u64(report, "corruptions"), 0);
    assert_null(strstr(report, "imgutil-findings"));
    img_free(report);
    img_close(image);
    assert_qemu_finds_clean(path);
    free(path);
}

/* Read-only checks list what qemu-img lists; a clean image's report is qemu-img's exactly. */
static void test_findings_match_qemu(void **state)
{
    (void)state;
    char *paths[] = {make_leaked("find-leak.qcow2"), make_double_reference("find-double.qcow2"),
                     make_base("find-clean.qcow2")};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct qemu_check q;
        qemu_check(paths[i], NULL, &q);
        img *image = NULL;
        assert_int_equal(img_open(&image, paths[i], "qcow2", IMG_OPEN_READ_ONLY, NULL), 0);
        char *report = NULL;
        assert_int_equal(img_check(image, 0, &report), 0);
        assert_same_report(report, &q);
        if (!q.findings[0])
            assert_null(strstr(report, "imgutil-findings"));
        img_free(report);
        img_close(image);
        qemu_check_free(&q);
        free(paths[i]);
    }
}

int main(void)
{
    int begin = qt_interop_begin();
    if (begin)
        return begin;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corrupt_image_needs_check_flag),
        cmocka_unit_test(test_corrupt_leaked_image_repaired),
        cmocka_unit_test(test_corrupt_bit_stays_while_corruptions_remain),
        cmocka_unit_test(test_dirty_image_repaired_by_check),
        cmocka_unit_test(test_dirty_image_read_only_check_reports),
        cmocka_unit_test(test_dirty_image_leaks_only_fails),
        cmocka_unit_test(test_dirty_image_repaired_at_plain_open),
        cmocka_unit_test(test_findings_match_qemu),
    };
    return cmocka_run_group_tests(tests, NULL, qt_teardown);
}
