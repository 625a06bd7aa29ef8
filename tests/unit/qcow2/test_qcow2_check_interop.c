/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The check against `qemu-img check --output=json` on images qemu-img and qemu-io make at test
 * time (cluster sizes, refcount widths, extended L2 entries, compression, snapshots, backing and
 * data files, preallocation, bitmaps, images left dirty by a killed qemu-io), then on copies
 * damaged on purpose (leaked clusters, refcounts too low or zero). Every figure must agree,
 * unrepaired and after `-r leaks` and `-r all`; a repaired image must pass `qemu-img check`
 * and read as before. Skips (77) without qemu-img.
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

/* ---- the two results ---- */

static uint64_t field(const char *text, const char *key)
{
    char pattern[64];
    snprintf(pattern, sizeof(pattern), "\"%s\": ", key);
    const char *p = strstr(text, pattern);
    return p ? strtoull(p + strlen(pattern), NULL, 10) : 0;
}

/* qemu-img's result; false when qemu-img could not run the check (no report). */
static bool qemu_check(const char *path, const char *repair, struct img_check_result *r)
{
    char *text = qt_capture("qemu-img check --output=json %s '%s' 2>/dev/null; true", repair, path);
    assert_non_null(text);
    memset(r, 0, sizeof(*r));
    bool ok = strstr(text, "\"check-errors\"") != NULL;
    r->check_errors = field(text, "check-errors");
    r->corruptions = field(text, "corruptions");
    r->leaks = field(text, "leaks");
    r->corruptions_fixed = field(text, "corruptions-fixed");
    r->leaks_fixed = field(text, "leaks-fixed");
    r->image_end_offset = field(text, "image-end-offset");
    r->total_clusters = field(text, "total-clusters");
    r->allocated_clusters = field(text, "allocated-clusters");
    r->fragmented_clusters = field(text, "fragmented-clusters");
    r->compressed_clusters = field(text, "compressed-clusters");
    free(text);
    return ok;
}

static int our_check(const char *path, unsigned fix, struct img_check_result *r)
{
    struct img *img;
    int ret = qt_open(path, (fix ? IMG_OPEN_READ_WRITE : 0) | IMG_OPEN_ALLOW_DATA_FILE, &img);
    if (ret < 0) {
        fprintf(stderr, "open %s: %s\n", path, img_last_error());
        return ret;
    }
    ret = qcow2_check(img, fix, r);
    qt_close(img);
    return ret;
}

static void print_result(const char *who, const struct img_check_result *r)
{
    fprintf(stderr,
            "  %s: corruptions %" PRIu64 " leaks %" PRIu64 " check-errors %" PRIu64
            " fixed %" PRIu64 "/%" PRIu64 " end %" PRIu64 " total %" PRIu64 " allocated %" PRIu64
            " fragmented %" PRIu64 " compressed %" PRIu64 "\n",
            who, r->corruptions, r->leaks, r->check_errors, r->corruptions_fixed, r->leaks_fixed,
            r->image_end_offset, r->total_clusters, r->allocated_clusters, r->fragmented_clusters,
            r->compressed_clusters);
}

/* qemu-img leaves out figures that are zero where nothing is allocated: compare as it shows. */
static void normalise(struct img_check_result *r)
{
    if (!r->allocated_clusters)
        r->fragmented_clusters = r->compressed_clusters = 0;
}

static void expect_same(const char *what, struct img_check_result ours,
                        struct img_check_result theirs)
{
    normalise(&ours);
    normalise(&theirs);
    if (memcmp(&ours, &theirs, sizeof(ours)) != 0) {
        print_result("ours", &ours);
        print_result("qemu-img", &theirs);
        fail_msg("check of %s differs from qemu-img check", what);
    }
}

/* Both sides on copies of `path`, with the repair flags given to each. */
static void compare_checks(const char *path, unsigned fix, const char *qemu_flags)
{
    char *mine = qt_path("ours.qcow2"), *theirs = qt_path("theirs.qcow2");
    assert_int_equal(qt_run("cp '%s' '%s' && cp '%s' '%s'", path, mine, path, theirs), 0);
    struct img_check_result a, b;
    memset(&a, 0, sizeof(a));
    int ret = our_check(mine, fix, &a);
    bool qemu_ok = qemu_check(theirs, qemu_flags, &b);
    char what[300];
    snprintf(what, sizeof(what), "%s %s", path, qemu_flags);
    if (!qemu_ok) {
        /* qemu-img gave up (it needs to rebuild and may not): so must we, with a reason. */
        if (ret >= 0)
            fail_msg("check of %s succeeded where qemu-img failed", what);
    } else {
        if (ret < 0)
            fail_msg("check of %s failed: %s", what, img_last_error());
        /*
         * A repair that changes a refcount together with the COPIED flags depending on it
         * writes new tables past the end and switches to them at once (crash safety), where
         * qemu-img rewrites them in place: the image may end later than qemu-img's.
         */
        if (fix && a.image_end_offset >= b.image_end_offset)
            a.image_end_offset = b.image_end_offset;
        expect_same(what, a, b);
    }
    if (fix && ret == 0) {
        /* Repaired as far as qemu-img repairs; the guest content is untouched. */
        struct img_check_result again;
        assert_int_equal(our_check(mine, 0, &again), 0);
        qemu_check(mine, "", &b);
        expect_same("the repaired image", again, b);
        if (a.corruptions == 0 && a.leaks == 0)
            assert_int_equal(qt_run("qemu-img check -q '%s'", mine), 0);
        assert_int_equal(qt_run("qemu-img compare -q '%s' '%s'", mine, path), 0);
    }
    unlink(mine);
    unlink(theirs);
    free(mine);
    free(theirs);
}

static void compare_all_modes(const char *path)
{
    compare_checks(path, 0, "");
    compare_checks(path, IMG_CHECK_REPAIR_LEAKS, "-r leaks");
    compare_checks(path, IMG_CHECK_REPAIR_LEAKS | IMG_CHECK_REPAIR_ERRORS, "-r all");
}

/* ---- damage ---- */

struct where {
    uint64_t block_offset; /* refcount block holding the entry */
    uint64_t index;        /* entry in the block */
    uint32_t order;
    uint32_t cluster_size;
    uint64_t refcount_max;
};

static void locate_refcount(const char *path, uint64_t cluster, struct where *w)
{
    struct img *img;
    assert_int_equal(qt_open(path, 0, &img), 0);
    struct qcow2_state *s = img->priv;
    assert_int_equal(qcow2_refcount_load_table(s), 0);
    uint64_t t = cluster >> s->refcount_block_bits;
    assert_true(t < s->refcount_table_entries);
    w->block_offset = s->refcount_table[t] & QCOW2_REFT_OFFSET_MASK;
    assert_true(w->block_offset != 0);
    w->index = cluster & ((1ull << s->refcount_block_bits) - 1);
    w->order = s->refcount_order;
    w->cluster_size = s->cluster_size;
    w->refcount_max = s->refcount_max;
    qt_close(img);
}

/* Changes a refcount on disk; returns the old value. */
static uint64_t poke_refcount(const char *path, uint64_t cluster, uint64_t value)
{
    struct where w;
    locate_refcount(path, cluster, &w);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t *block = malloc(w.cluster_size);
    assert_int_equal(pread(fd, block, w.cluster_size, (off_t)w.block_offset), w.cluster_size);
    uint64_t old = qcow2_refcount_entry_get(block, w.index, w.order);
    qcow2_refcount_entry_set(block, w.index, w.order, value);
    assert_int_equal(pwrite(fd, block, w.cluster_size, (off_t)w.block_offset), w.cluster_size);
    close(fd);
    free(block);
    return old;
}

/* Host clusters to damage: the first L2 table, and the data cluster of guest cluster 0. */
static void targets(const char *path, uint64_t *l2_cluster, uint64_t *data_cluster, uint64_t *max)
{
    struct img *img;
    assert_int_equal(qt_open(path, 0, &img), 0);
    struct qcow2_state *s = img->priv;
    *l2_cluster = s->l1_size ? (s->l1_table[0] & QCOW2_L1E_OFFSET_MASK) >> s->cluster_bits : 0;
    *data_cluster = 0;
    struct qcow2_l2_cursor cur = {0};
    uint64_t entry, bitmap;
    bool no_l2;
    if (s->l1_size && !(s->hdr.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) &&
        qcow2_l2_lookup(s, &cur, 0, &entry, &bitmap, &no_l2) == 0 && !no_l2 &&
        !(entry & QCOW2_OFLAG_COMPRESSED))
        *data_cluster = qcow2_l2_entry_offset(entry) >> s->cluster_bits;
    qcow2_l2_cursor_release(s, &cur);
    *max = s->refcount_max;
    qt_close(img);
}

static void damage_and_compare(const char *path, uint64_t cluster, uint64_t max, const char *what)
{
    if (!cluster)
        return;
    char *copy = qt_path("damaged.qcow2");
    assert_int_equal(qt_run("cp '%s' '%s'", path, copy), 0);
    uint64_t old = poke_refcount(copy, cluster, 0);
    if (old < max) {
        fprintf(stderr, "     %s cluster %" PRIu64 ": refcount %" PRIu64 " -> %" PRIu64 "\n", what,
                cluster, old, old + 1);
        poke_refcount(copy, cluster, old + 1);
        compare_all_modes(copy);
    }
    if (old > 1) {
        fprintf(stderr, "     %s cluster %" PRIu64 ": refcount %" PRIu64 " -> %" PRIu64 "\n", what,
                cluster, old, old - 1);
        poke_refcount(copy, cluster, old - 1);
        compare_all_modes(copy);
    }
    fprintf(stderr, "     %s cluster %" PRIu64 ": refcount %" PRIu64 " -> 0\n", what, cluster, old);
    poke_refcount(copy, cluster, 0);
    compare_all_modes(copy);
    unlink(copy);
    free(copy);
}

/* A leaked cluster appended to the file (its refcount set, nothing pointing to it). */
static void append_leak_and_compare(const char *path)
{
    char *copy = qt_path("appended.qcow2");
    assert_int_equal(qt_run("cp '%s' '%s'", path, copy), 0);
    struct stat st;
    assert_int_equal(stat(copy, &st), 0);
    struct where w;
    locate_refcount(copy, 0, &w);
    uint64_t end = ((uint64_t)st.st_size + w.cluster_size - 1) / w.cluster_size;
    struct img *img;
    assert_int_equal(qt_open(copy, 0, &img), 0);
    struct qcow2_state *s = img->priv;
    assert_int_equal(qcow2_refcount_load_table(s), 0);
    bool covered = (end >> s->refcount_block_bits) < s->refcount_table_entries &&
                   (s->refcount_table[end >> s->refcount_block_bits] & QCOW2_REFT_OFFSET_MASK);
    qt_close(img);
    if (covered) {
        fprintf(stderr, "     leaked cluster %" PRIu64 " appended\n", end);
        assert_int_equal(truncate(copy, (off_t)((end + 1) * w.cluster_size)), 0);
        poke_refcount(copy, end, 1);
        compare_all_modes(copy);
    }
    unlink(copy);
    free(copy);
}

/* ---- the images ---- */

struct image_case {
    const char *name;
    const char *create; /* qemu-img create arguments before the file name */
    const char *size;
    const char *io;    /* qemu-io commands, or NULL */
    const char *after; /* a shell command with %s for the file name, or NULL */
};

static const struct image_case cases[] = {
    {"plain", "", "64M",
     "-c 'write -P 1 0 3M' -c 'write -c -P 7 8M 256k' -c 'write -P 2 20M 64k' -c 'write -z 30M 1M'",
     NULL},
    {"fresh", "", "64M", NULL, NULL},
    {"empty", "", "0", NULL, NULL},
    {"unaligned-size", "", "1000001", "-c 'write -P 1 0 512'", NULL},
    {"extended-l2", "-o extended_l2=on,cluster_size=128k", "64M",
     "-c 'write -P 1 0 5k' -c 'write -P 2 1M 300k' -c 'write -c -P 3 4M 128k' -c 'write -z 8M 4k'",
     NULL},
    {"clusters-512", "-o cluster_size=512", "8M", "-c 'write -P 1 0 1M' -c 'write -c -P 5 2M 64k'",
     NULL},
    {"clusters-2M", "-o cluster_size=2M", "256M", "-c 'write -P 1 0 5M' -c 'write -c -P 2 100M 4M'",
     NULL},
    {"refcount-1", "-o refcount_bits=1", "64M", "-c 'write -P 1 0 1M'", NULL},
    {"refcount-8", "-o refcount_bits=8", "64M", "-c 'write -P 1 0 1M'", NULL},
    {"refcount-64", "-o refcount_bits=64", "64M", "-c 'write -P 1 0 1M'",
     "qemu-img snapshot -c a '%s'"},
    {"v2", "-o compat=0.10", "64M", "-c 'write -P 1 0 1M'", "qemu-img snapshot -c x '%s'"},
    {"zstd", "-o compression_type=zstd", "64M", "-c 'write -c -P 1 0 1M'", NULL},
    {"prealloc-metadata", "-o preallocation=metadata", "32M", NULL, NULL},
    {"prealloc-falloc", "-o preallocation=falloc", "16M", NULL, NULL},
    {"prealloc-full", "-o preallocation=full", "8M", NULL, NULL},
    {"snapshots", "", "64M", "-c 'write -P 1 0 2M' -c 'write -c -P 9 6M 128k'",
     "qemu-img snapshot -c s1 '%s'"},
    {"bitmaps", "", "64M", "-c 'write -P 1 0 1M'", "qemu-img bitmap --add -g 128k '%s' b0"},
    {"data-file", "-o data_file=data-file.raw", "64M", "-c 'write -P 1 0 1M'", NULL},
    {"backing", "-b plain.qcow2 -F qcow2", "64M", "-c 'write -P 9 1M 100k'", NULL},
    {"big", "", "4T", "-c 'write -P 1 3T 1M'", NULL},
};

static void make_image(const struct image_case *c, char *path)
{
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 %s '%s' %s", c->create, path, c->size), 0);
    if (c->io)
        assert_int_equal(qt_run("qemu-io %s '%s' >/dev/null", c->io, path), 0);
    if (c->after) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), c->after, path);
        assert_int_equal(qt_run("%s", cmd), 0);
        /* Changed again after the snapshot or bitmap, so that things are shared or tracked. */
        assert_int_equal(qt_run("qemu-io -c 'write -P 3 512k 1M' '%s' >/dev/null", path), 0);
    }
}

static void test_images(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct image_case *c = &cases[i];
        char name[80];
        snprintf(name, sizeof(name), "%s.qcow2", c->name);
        char *path = qt_path(name);
        fprintf(stderr, "-- %s\n", c->name);
        make_image(c, path);
        compare_checks(path, 0, "");

        uint64_t l2, data, max;
        targets(path, &l2, &data, &max);
        damage_and_compare(path, l2, max, "L2 table");
        damage_and_compare(path, data, max, "data");
        append_leak_and_compare(path);
        free(path);
    }
}

/* Made with lazy refcounts and killed before writing them: the refcounts lag behind. */
static void test_dirty_images(void **state)
{
    static const char *const io[] = {
        "-c 'write -P 1 0 1M'",
        "-c 'write -P 1 0 1M' -c flush -c 'write -P 2 4M 300k' -c 'write -c -P 3 8M 64k'",
    };
    for (size_t i = 0; i < sizeof(io) / sizeof(io[0]); i++) {
        char *path = qt_path("dirty.qcow2");
        char *raw = qt_path("dirty.raw");
        assert_int_equal(qt_run("qemu-img create -q -f qcow2 -o lazy_refcounts=on '%s' 64M", path),
                         0);
        /* qemu-io dies by the signal; the shell goes on. */
        assert_int_equal(
            qt_run("qemu-io %s -c 'sigraise 9' '%s' >/dev/null 2>&1; true", io[i], path), 0);
        struct img *img;
        assert_int_equal(qt_open(path, 0, &img), 0);
        assert_true(img->dirty);
        qt_close(img);

        compare_checks(path, 0, "");
        assert_int_equal(qt_run("qemu-img convert -U -O raw '%s' '%s'", path, raw), 0);

        /* A writable open repairs the image before anything else, as QEMU's does. */
        assert_int_equal(qt_open(path, IMG_OPEN_READ_WRITE, &img), 0);
        assert_false(img->dirty);
        qt_close(img);
        assert_int_equal(qt_run("qemu-img check -q '%s'", path), 0);
        assert_int_equal(qt_run("qemu-img compare -q -f qcow2 -F raw '%s' '%s'", path, raw), 0);
        unlink(path);
        unlink(raw);
        free(raw);
        free(path);
    }
}

/* Changes the first snapshot table entry's L1 table offset and size. */
static void poke_snapshot_l1(const char *path, uint64_t offset, uint32_t size)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t h[72], e[12];
    assert_int_equal(pread(fd, h, sizeof(h), 0), sizeof(h));
    store_be64(e, offset);
    store_be32(e + 8, size);
    assert_int_equal(pwrite(fd, e, sizeof(e), (off_t)load_be64(h + 64)), sizeof(e));
    close(fd);
}

/* A snapshot whose L1 table cannot be used: its clusters look leaked, the entry corrupt. */
static void test_damaged_snapshot_table(void **state)
{
    char *path = qt_path("bad-snapshot.qcow2");
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 '%s' 16M", path), 0);
    assert_int_equal(qt_run("qemu-io -c 'write -P 1 0 1M' '%s' >/dev/null", path), 0);
    assert_int_equal(qt_run("qemu-img snapshot -c s '%s'", path), 0);
    struct img *img;
    assert_int_equal(qt_open(path, 0, &img), 0);
    uint64_t l1 = ((struct qcow2_state *)img->priv)->snapshots[0].l1_table_offset;
    qt_close(img);

    poke_snapshot_l1(path, l1 + 512, 1);
    compare_all_modes(path);
    poke_snapshot_l1(path, l1, 0x10000000);
    compare_all_modes(path);
    free(path);
}

/* The public entry point reports through JSON, with qemu-img's field names. */
static void test_public_report(void **state)
{
    char *path = qt_path("public.qcow2");
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 '%s' 64M", path), 0);
    assert_int_equal(qt_run("qemu-io -c 'write -P 1 0 1M' '%s' >/dev/null", path), 0);
    uint64_t l2, data, max;
    targets(path, &l2, &data, &max);
    poke_refcount(path, data, 2);

    img *image;
    assert_int_equal(img_open(&image, path, "qcow2", IMG_OPEN_READ_ONLY, NULL), 0);
    char *report = NULL;
    assert_int_equal(img_check(image, 0, &report), 0);
    assert_non_null(strstr(report, "\"leaks\": 1"));
    assert_non_null(strstr(report, "\"corruptions\": 1"));
    img_free(report);
    img_close(image);

    assert_int_equal(img_open(&image, path, "qcow2", IMG_OPEN_READ_WRITE, NULL), 0);
    assert_int_equal(img_check(image, IMG_CHECK_REPAIR_LEAKS, &report), 0);
    assert_non_null(strstr(report, "\"leaks-fixed\": 1"));
    assert_null(strstr(report, "\"leaks\": "));
    img_free(report);

    /* Metadata the writer still holds in memory is part of what a check sees. */
    static uint8_t buf[3 * 65536];
    memset(buf, 0x5a, sizeof(buf));
    assert_int_equal(img_pwrite(image, buf, sizeof(buf), 20 << 20), (int64_t)sizeof(buf));
    assert_int_equal(img_check(image, 0, &report), 0);
    assert_null(strstr(report, "\"leaks\": "));
    assert_null(strstr(report, "\"corruptions\": "));
    assert_non_null(strstr(report, "\"allocated-clusters\": 19"));
    img_free(report);
    img_close(image);
    assert_int_equal(qt_run("qemu-img check -q '%s'", path), 0);
    free(path);
}

static int teardown(void **state)
{
    qt_cleanup();
    return 0;
}

int main(void)
{
    int begin = qt_interop_begin();
    if (begin != 0)
        return begin;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_images),
        cmocka_unit_test(test_dirty_images),
        cmocka_unit_test(test_damaged_snapshot_table),
        cmocka_unit_test(test_public_report),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
