/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal snapshots written here and by qemu-img, used by the other: snapshots are created,
 * applied and deleted alternately with this library and `qemu-img snapshot`, with data written
 * between them (through img_pwrite and qemu-io). After every step `qemu-img check` and this
 * library's check must find the image clean, and after every apply the guest content must equal
 * the copy saved when the snapshot was taken. Skips (77) without qemu-img.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "error.h"
#include "formats/qcow2/qcow2_check.h"
#include "imgutil.h"
#include "qcow2_test_util.h"

#define MiB (1ull << 20)

/* ---- helpers ---- */

static void expect_clean(const char *path)
{
    /* qemu-img check exits 0 only for an image without errors and leaks. */
    if (qt_run("qemu-img check -q '%s'", path) != 0) {
        qt_run("qemu-img check '%s'", path);
        fail_msg("qemu-img check finds %s damaged", path);
    }
    struct img *img;
    assert_int_equal(qt_open(path, 0, &img), 0);
    struct img_check_result r;
    assert_int_equal(qcow2_check(img, 0, &r), 0);
    qt_close(img);
    assert_int_equal(r.corruptions, 0);
    assert_int_equal(r.leaks, 0);
    assert_int_equal(r.check_errors, 0);
}

static void save_raw(const char *path, const char *raw)
{
    assert_int_equal(qt_run("qemu-img convert -O raw '%s' '%s'", path, raw), 0);
}

/* The image reads as the raw copy, and has its size. */
static void expect_content(const char *path, const char *raw)
{
    struct stat st;
    assert_int_equal(stat(raw, &st), 0);
    img *image;
    assert_int_equal(img_open(&image, path, "qcow2", IMG_OPEN_READ_ONLY, NULL), 0);
    assert_int_equal(img_get_size(image), st.st_size);
    img_close(image);
    if (qt_run("qemu-img compare -q -f qcow2 -F raw '%s' '%s'", path, raw) != 0)
        fail_msg("%s does not read as %s", path, raw);
}

static img *open_rw(const char *path)
{
    img *image;
    int ret = img_open(&image, path, "qcow2", IMG_OPEN_READ_WRITE, NULL);
    if (ret < 0)
        fail_msg("open %s: %s", path, img_last_error());
    return image;
}

static void write_pattern(img *image, uint64_t offset, size_t len, uint8_t fill)
{
    uint8_t *buf = malloc(len);
    memset(buf, fill, len);
    int64_t ret = img_pwrite(image, buf, len, offset);
    if (ret != (int64_t)len)
        fail_msg("write at %" PRIu64 ": %s", offset, img_last_error());
    free(buf);
}

static void our_op(const char *path, int (*op)(img *, const char *), const char *name)
{
    img *image = open_rw(path);
    int ret = op(image, name);
    if (ret < 0)
        fail_msg("snapshot '%s' on %s: %s", name, path, img_last_error());
    img_close(image);
    expect_clean(path);
}

static void qemu_op(const char *path, const char *flag, const char *name)
{
    assert_int_equal(qt_run("qemu-img snapshot %s '%s' '%s'", flag, name, path), 0);
    expect_clean(path);
}

/* `qemu-img snapshot -l` names exactly the snapshots in `names` (space-separated), in order. */
static void expect_list(const char *path, const char *names)
{
    char *text =
        qt_capture("qemu-img snapshot -l '%s' | awk 'NR > 2 { print $2 }' | xargs echo", path);
    assert_non_null(text);
    text[strcspn(text, "\n")] = '\0';
    assert_string_equal(text, names);
    free(text);
}

/* ---- the interchange scenario ---- */

struct layout_case {
    const char *name;
    const char *create_opts;
    const char *backing_opts; /* non-NULL: an overlay on a base image made with these */
    const char *compressed;   /* length of the compressed write: whole clusters */
};

static void run_scenario(const struct layout_case *c)
{
    char name[128];
    snprintf(name, sizeof(name), "%s.qcow2", c->name);
    char *path = qt_path(name);
    char *raw[4];
    for (int i = 0; i < 4; i++) {
        char r[160];
        snprintf(r, sizeof(r), "%s.state%d.raw", c->name, i);
        raw[i] = qt_path(r);
    }

    if (c->backing_opts) {
        snprintf(name, sizeof(name), "%s-base.qcow2", c->name);
        char *base = qt_path(name);
        assert_int_equal(qt_run("qemu-img create -q -f qcow2 %s '%s' 64M", c->backing_opts, base),
                         0);
        assert_int_equal(qt_run("qemu-io -c 'write -P 0x61 0 8M' '%s' >/dev/null", base), 0);
        assert_int_equal(qt_run("qemu-img create -q -f qcow2 %s -b '%s' -F qcow2 '%s' 64M",
                                c->create_opts, base, path),
                         0);
        free(base);
    } else {
        assert_int_equal(qt_run("qemu-img create -q -f qcow2 %s '%s' 64M", c->create_opts, path),
                         0);
    }
    assert_int_equal(qt_run("qemu-io -c 'write -P 0x11 0 3M' -c 'write -c -P 0x12 8M %s' "
                            "-c 'write -z 12M 1M' -c 'write -P 0x13 40M 64k' '%s' >/dev/null",
                            c->compressed, path),
                     0);

    /* A: snapshot s1 by us, then change through img_pwrite (shared clusters get copied). */
    save_raw(path, raw[0]);
    our_op(path, img_snapshot_create, "s1");
    img *image = open_rw(path);
    write_pattern(image, 1 * MiB, 2 * MiB, 0x21);     /* overwrite data shared with s1 */
    write_pattern(image, 8 * MiB + 4096, 8192, 0x22); /* inside a compressed cluster */
    write_pattern(image, 20 * MiB, 65536, 0x23);      /* fresh space */
    img_close(image);
    expect_clean(path);

    /* B: snapshot s2 by us, then change through qemu-io. */
    save_raw(path, raw[1]);
    our_op(path, img_snapshot_create, "s2");
    assert_int_equal(qt_run("qemu-io -c 'write -P 0x31 0 1M' -c 'write -P 0x32 40M 128k' "
                            "-c 'discard 20M 64k' '%s' >/dev/null",
                            path),
                     0);
    expect_clean(path);

    /* C: snapshot s3 by qemu-img, then change through img_pwrite. */
    save_raw(path, raw[2]);
    qemu_op(path, "-c", "s3");
    image = open_rw(path);
    write_pattern(image, 0, 4 * MiB, 0x41);
    write_pattern(image, 63 * MiB, 4096, 0x42);
    img_close(image);
    expect_clean(path);
    save_raw(path, raw[3]);
    expect_list(path, "s1 s2 s3");

    /* Each snapshot, applied by the other side from the one that made it. */
    our_op(path, img_snapshot_apply, "s1");
    expect_content(path, raw[0]);
    our_op(path, img_snapshot_apply, "s3");
    expect_content(path, raw[2]);
    qemu_op(path, "-a", "s2");
    expect_content(path, raw[1]);
    our_op(path, img_snapshot_apply, "2"); /* by id */
    expect_content(path, raw[1]);

    /* Deleting, either side; the active layer stays what it was. */
    our_op(path, img_snapshot_delete, "s2");
    expect_list(path, "s1 s3");
    expect_content(path, raw[1]);
    qemu_op(path, "-d", "s1");
    expect_list(path, "s3");
    our_op(path, img_snapshot_apply, "s3");
    expect_content(path, raw[2]);
    our_op(path, img_snapshot_delete, "s3");
    expect_list(path, "");
    expect_content(path, raw[2]);

    /* With no snapshot left, everything is unshared again: writing in place must be safe. */
    image = open_rw(path);
    write_pattern(image, 0, 1 * MiB, 0x51);
    img_close(image);
    expect_clean(path);

    for (int i = 0; i < 4; i++)
        free(raw[i]);
    free(path);
}

static const struct layout_case cases[] = {
    {"default", "", NULL, "256k"},
    {"small-clusters", "-o cluster_size=4096", NULL, "256k"},
    {"big-clusters", "-o cluster_size=2M", NULL, "2M"},
    {"extended-l2", "-o extended_l2=on,cluster_size=64k", NULL, "256k"},
    {"v2", "-o compat=0.10", NULL, "256k"},
    {"refcount8", "-o refcount_bits=8", NULL, "256k"},
    {"refcount64", "-o refcount_bits=64", NULL, "256k"},
    {"lazy", "-o lazy_refcounts=on", NULL, "256k"},
    {"zstd", "-o compression_type=zstd", NULL, "256k"},
    {"overlay", "", "", "256k"},
};

static void test_interchange(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fprintf(stderr, "-- %s\n", cases[i].name);
        run_scenario(&cases[i]);
    }
}

/* ---- sizes ---- */

static void test_apply_restores_size(void **state)
{
    char *path = qt_path("sizes.qcow2");
    char *small = qt_path("sizes-small.raw"), *big = qt_path("sizes-big.raw");
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 '%s' 64M", path), 0);
    assert_int_equal(qt_run("qemu-io -c 'write -P 0x71 60M 4M' '%s' >/dev/null", path), 0);
    save_raw(path, small);
    our_op(path, img_snapshot_create, "small");

    img *image = open_rw(path);
    assert_int_equal(img_resize(image, 200 * MiB, 0, NULL), 0);
    write_pattern(image, 150 * MiB, MiB, 0x72);
    img_close(image);
    save_raw(path, big);
    our_op(path, img_snapshot_create, "big");

    our_op(path, img_snapshot_apply, "small");
    expect_content(path, small);
    /* The snapshot's size is the image's size again, as qemu-img sees it. */
    char *info = qt_capture("qemu-img info --output=json '%s'", path);
    assert_non_null(info);
    assert_non_null(strstr(info, "\"virtual-size\": 67108864"));
    free(info);
    qemu_op(path, "-a", "big");
    expect_content(path, big);
    our_op(path, img_snapshot_apply, "small");
    expect_content(path, small);
    our_op(path, img_snapshot_apply, "big");
    expect_content(path, big);
    free(small);
    free(big);
    free(path);
}

/* ---- refusals ---- */

static void test_refusals(void **state)
{
    char *path = qt_path("refusals.qcow2");
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 '%s' 16M", path), 0);
    assert_int_equal(qt_run("qemu-io -c 'write -P 1 0 1M' '%s' >/dev/null", path), 0);
    our_op(path, img_snapshot_create, "one");

    img *image = open_rw(path);
    assert_int_equal(img_snapshot_apply(image, "two"), -ENOENT);
    assert_non_null(strstr(img_last_error(), "snapshot 'two' not found"));
    assert_int_equal(img_snapshot_delete(image, "two"), -ENOENT);
    img_close(image);
    expect_clean(path);
    expect_list(path, "one");

    /* Names need not be unique, as in qemu-img: delete by name takes the first (id 1). */
    assert_int_equal(qt_run("qemu-io -c 'write -P 2 0 64k' '%s' >/dev/null", path), 0);
    our_op(path, img_snapshot_create, "one");
    expect_list(path, "one one");
    our_op(path, img_snapshot_delete, "one");
    char *ids = qt_capture("qemu-img snapshot -l '%s' | awk 'NR > 2 { print $1 }'", path);
    assert_non_null(ids);
    assert_string_equal(ids, "2\n");
    free(ids);
    expect_clean(path);

    /* Read-only handles change nothing. */
    assert_int_equal(img_open(&image, path, "qcow2", IMG_OPEN_READ_ONLY, NULL), 0);
    assert_true(img_snapshot_create(image, "ro") < 0);
    assert_true(img_snapshot_delete(image, "one") < 0);
    img_close(image);
    expect_list(path, "one");

    /* One-bit refcounts cannot count a second reference. */
    char *narrow = qt_path("refcount1.qcow2");
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 -o refcount_bits=1 '%s' 16M", narrow), 0);
    assert_int_equal(qt_run("qemu-io -c 'write -P 1 0 1M' '%s' >/dev/null", narrow), 0);
    image = open_rw(narrow);
    assert_int_equal(img_snapshot_create(image, "x"), -ENOTSUP);
    img_close(image);
    expect_clean(narrow);
    expect_list(narrow, "");

    /*
     * Two-bit refcounts: clusters shared by two snapshots and the active layer are at the
     * largest count, others are not. The refused snapshot gives back what it had counted.
     */
    char *two = qt_path("refcount2.qcow2");
    char *two_raw = qt_path("refcount2.raw");
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 -o refcount_bits=2 '%s' 16M", two), 0);
    assert_int_equal(qt_run("qemu-io -c 'write -P 1 2M 1M' '%s' >/dev/null", two), 0);
    assert_int_equal(qt_run("qemu-img snapshot -c a '%s' && qemu-img snapshot -c b '%s'", two, two),
                     0);
    assert_int_equal(qt_run("qemu-io -c 'write -P 2 0 1M' '%s' >/dev/null", two), 0);
    save_raw(two, two_raw);
    image = open_rw(two);
    assert_int_equal(img_snapshot_create(image, "c"), -EIO);
    assert_non_null(strstr(img_last_error(), "would overflow"));
    assert_int_equal(img_snapshot_apply(image, "a"), -EIO);
    img_close(image);
    expect_clean(two);
    expect_list(two, "a b");
    expect_content(two, two_raw);
    free(two_raw);
    free(two);

    /* Snapshots need this file's refcounts for the data: not with an external data file. */
    char *df = qt_path("datafile.qcow2");
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 -o data_file=datafile.raw '%s' 16M", df),
                     0);
    assert_int_equal(
        img_open(&image, df, "qcow2", IMG_OPEN_READ_WRITE | IMG_OPEN_ALLOW_DATA_FILE, NULL), 0);
    assert_int_equal(img_snapshot_create(image, "x"), -ENOTSUP);
    img_close(image);
    free(df);
    free(narrow);
    free(path);
}

static void expect_read(img *image, uint64_t offset, size_t len, uint8_t fill)
{
    uint8_t *buf = malloc(len);
    assert_int_equal(img_pread(image, buf, len, offset), (int64_t)len);
    for (size_t i = 0; i < len; i++)
        if (buf[i] != fill)
            fail_msg("byte %" PRIu64 " reads 0x%02x, not 0x%02x", offset + i, buf[i], fill);
    free(buf);
}

/* One handle throughout: what it reads follows each operation at once. */
static void test_same_handle(void **state)
{
    char *path = qt_path("handle.qcow2");
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 -o cluster_size=4096 '%s' 8M", path), 0);
    img *image = open_rw(path);
    write_pattern(image, 0, 3 * MiB, 0xa1);
    assert_int_equal(img_snapshot_create(image, "a"), 0);
    char *list = NULL;
    assert_int_equal(img_snapshot_list(image, &list), 0);
    assert_non_null(strstr(list, "\"name\": \"a\""));
    img_free(list);

    write_pattern(image, MiB, MiB, 0xb2);
    expect_read(image, MiB, MiB, 0xb2);
    assert_int_equal(img_snapshot_create(image, "b"), 0);
    write_pattern(image, 0, 4096, 0xc3);

    assert_int_equal(img_snapshot_apply(image, "a"), 0);
    expect_read(image, 0, 3 * MiB, 0xa1);
    expect_read(image, 3 * MiB, MiB, 0);
    write_pattern(image, 2 * MiB, 8192, 0xd4); /* the tables are shared with "a" again */
    assert_int_equal(img_snapshot_apply(image, "b"), 0);
    expect_read(image, 0, MiB, 0xa1);
    expect_read(image, MiB, MiB, 0xb2);
    expect_read(image, 2 * MiB, MiB, 0xa1);
    assert_int_equal(img_snapshot_delete(image, "a"), 0);
    assert_int_equal(img_snapshot_delete(image, "b"), 0);
    write_pattern(image, 0, MiB, 0xe5);
    expect_read(image, 0, MiB, 0xe5);
    expect_read(image, MiB, MiB, 0xb2);
    img_close(image);
    expect_clean(path);
    expect_list(path, "");
    free(path);
}

/* A snapshot entry naming an unusable L1 table is refused before anything is written. */
static void test_hostile_entry(void **state)
{
    char *path = qt_path("hostile.qcow2");
    char *copy = qt_path("hostile-before.qcow2");
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 '%s' 16M", path), 0);
    assert_int_equal(qt_run("qemu-io -c 'write -P 1 0 1M' '%s' >/dev/null", path), 0);
    assert_int_equal(qt_run("qemu-img snapshot -c s '%s'", path), 0);
    struct img *raw;
    assert_int_equal(qt_open(path, 0, &raw), 0);
    struct qcow2_state *s = raw->priv;
    uint64_t entry = s->hdr.snapshots_offset, l1 = s->snapshots[0].l1_table_offset;
    qt_close(raw);

    static const struct {
        uint64_t offset;
        uint32_t size;
        int err;
    } bad[] = {
        {1, 1, -EIO},            /* unaligned */
        {1ull << 50, 1, -EIO},   /* past the end of the file */
        {0, 0x10000000, -EFBIG}, /* larger than QEMU's limit */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int fd = open(path, O_RDWR);
        assert_true(fd >= 0);
        uint8_t e[12];
        store_be64(e, bad[i].offset ? (bad[i].offset == 1 ? l1 + 512 : bad[i].offset) : l1);
        store_be32(e + 8, bad[i].size);
        assert_int_equal(pwrite(fd, e, sizeof(e), (off_t)entry), sizeof(e));
        close(fd);
        assert_int_equal(qt_run("cp '%s' '%s'", path, copy), 0);

        img *image = open_rw(path);
        assert_int_equal(img_snapshot_apply(image, "s"), bad[i].err);
        assert_int_equal(img_snapshot_delete(image, "s"), bad[i].err);
        img_close(image);
        assert_int_equal(qt_run("cmp -s '%s' '%s'", path, copy), 0);
    }
    free(copy);
    free(path);
}

/* The entry as qemu-img lists it: id, name, no VM state, and the instruction count qemu-img
 * records (0). */
static void test_entry_fields(void **state)
{
    char *path = qt_path("fields.qcow2");
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 '%s' 16M", path), 0);
    our_op(path, img_snapshot_create, "fields");
    char *info = qt_capture("qemu-img info --output=json '%s'", path);
    assert_non_null(info);
    assert_non_null(strstr(info, "\"icount\": 0"));
    assert_non_null(strstr(info, "\"vm-state-size\": 0"));
    assert_non_null(strstr(info, "\"name\": \"fields\""));
    assert_non_null(strstr(info, "\"id\": \"1\""));
    assert_non_null(strstr(info, "\"vm-clock-sec\": 0"));
    free(info);

    /* Ids continue after the largest, as QEMU numbers them. */
    qemu_op(path, "-c", "q");
    our_op(path, img_snapshot_delete, "fields");
    our_op(path, img_snapshot_create, "after");
    char *list = qt_capture("qemu-img snapshot -l '%s' | awk 'NR > 2 { print $1 \":\" $2 }' | "
                            "xargs echo",
                            path);
    assert_non_null(list);
    assert_string_equal(list, "2:q 3:after\n");
    free(list);
    free(path);
}

int main(void)
{
    int ret = qt_interop_begin();
    if (ret)
        return ret;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interchange),   cmocka_unit_test(test_apply_restores_size),
        cmocka_unit_test(test_refusals),      cmocka_unit_test(test_same_handle),
        cmocka_unit_test(test_hostile_entry), cmocka_unit_test(test_entry_fields),
    };
    return cmocka_run_group_tests(tests, NULL, qt_teardown);
}
