/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The qcow2 write side against qemu-img: random sequences of writes, zeroes, discards and
 * resizes on images of many kinds, mirrored into a raw shadow file, must leave images that
 * `qemu-img check` finds clean and `qemu-img compare` finds equal to the shadow; writes onto
 * images qemu made (compressed clusters, backing files, extended L2 entries, version 2, clusters
 * shared with a snapshot) must read back through qemu-io and leave the snapshot untouched.
 * Skips (77) without qemu-img.
 */
#include <pthread.h>
#include <sys/wait.h>

#include "qcow2_write_test_util.h"

#define MAX_IO (3u << 17)

static uint8_t io_buf[MAX_IO];

enum { OP_WRITE, OP_ZERO, OP_ZERO_UNMAP, OP_DISCARD, OP_RESIZE, OP_FLUSH };

struct run_cfg {
    const char *options;
    uint64_t size;
    uint32_t cluster;
    unsigned ops;
    bool resize;
};

/* The length of the next request: sizes around clusters, subclusters and sectors. */
static uint64_t pick_length(uint64_t *rng, uint32_t cluster)
{
    static const int64_t deltas[] = {-1, 0, 1};
    switch (qw_rand(rng) % 6) {
    case 0:
        return 1 + qw_rand(rng) % 600;
    case 1:
        return 512 * (1 + qw_rand(rng) % 8);
    case 2:
        return (uint64_t)((int64_t)cluster + deltas[qw_rand(rng) % 3]);
    case 3:
        return cluster / 32 * (1 + qw_rand(rng) % 4);
    case 4:
        return (uint64_t)cluster * (1 + qw_rand(rng) % 3);
    default:
        return 1 + qw_rand(rng) % MAX_IO;
    }
}

/* Offsets near cluster boundaries are where the interesting cases are. */
static uint64_t pick_offset(uint64_t *rng, uint64_t size, uint32_t cluster)
{
    uint64_t off = qw_rand(rng) % size;
    if (qw_rand(rng) % 2)
        off = off / cluster * cluster + (qw_rand(rng) % 3 == 0 ? 0 : cluster / 32);
    return off < size ? off : size - 1;
}

static void apply_random_ops(img *h, struct qw_shadow *sh, uint64_t seed, const struct run_cfg *c)
{
    uint64_t rng = seed * 2654435761u + 7;
    for (unsigned i = 0; i < c->ops; i++) {
        unsigned op = (unsigned)(qw_rand(&rng) % 100);
        if (c->resize && op < 6) {
            uint64_t size = (qw_rand(&rng) % (3 * c->size) + 512) & ~511ull;
            unsigned flags = size < sh->size ? IMG_RESIZE_SHRINK : 0;
            static const char *const modes[] = {"", "preallocation=metadata",
                                                "preallocation=falloc", "preallocation=full"};
            const char *mode =
                flags || strstr(c->options, "data_file_raw") ? "" : modes[qw_rand(&rng) % 4];
            img_opts *o = qw_opts(mode);
            int ret = img_resize(h, size, flags, o);
            img_opts_free(o);
            if (ret < 0)
                fprintf(stderr, "resize to %" PRIu64 ": %s\n", size, img_last_error());
            assert_int_equal(ret, 0);
            qw_shadow_resize(sh, size);
            continue;
        }
        uint64_t size = sh->size;
        uint64_t off = pick_offset(&rng, size, c->cluster);
        uint64_t len = pick_length(&rng, c->cluster);
        if (len > size - off)
            len = size - off;
        int ret;
        if (op < 60) {
            qw_fill(io_buf, len, qw_rand(&rng));
            int64_t n = img_pwrite(h, io_buf, len, off);
            if (n < 0)
                fprintf(stderr, "write %" PRIu64 "+%" PRIu64 ": %s\n", off, len, img_last_error());
            assert_int_equal(n, (int64_t)len);
            qw_shadow_write(sh, io_buf, len, off);
        } else if (op < 80) {
            unsigned flags = op < 70 ? 0 : IMG_ZERO_MAY_UNMAP;
            ret = img_zero(h, off, len, flags);
            if (ret < 0)
                fprintf(stderr, "zero %" PRIu64 "+%" PRIu64 ": %s\n", off, len, img_last_error());
            assert_int_equal(ret, 0);
            qw_shadow_zero(sh, len, off);
        } else if (op < 93) {
            /* A discard leaves the range undefined but readable: follow what reads back. */
            assert_int_equal(img_discard(h, off, len), 0);
            assert_int_equal(img_pread(h, io_buf, len, off), (int64_t)len);
            qw_shadow_write(sh, io_buf, len, off);
        } else {
            assert_int_equal(img_flush(h), 0);
        }
    }
}

static void run_random(const struct run_cfg *c, uint64_t seed)
{
    char *path = qt_path("rand.qcow2"), *raw = qt_path("rand.raw");
    qw_create(path, c->size, c->options);
    struct qw_shadow sh;
    qw_shadow_open(&sh, raw, c->size);
    img *h = qw_open(path);
    apply_random_ops(h, &sh, seed, c);
    /* Reopen once in the middle: everything must have reached the file. */
    img_close(h);
    qw_assert_check_clean(path);
    qw_assert_same(path, raw);
    h = qw_open(path);
    apply_random_ops(h, &sh, seed + 1000, c);
    img_close(h);
    qw_shadow_close(&sh);
    qw_assert_check_clean(path);
    qw_assert_same(path, raw);
    free(path);
    free(raw);
}

static void test_random_sequences(void **state)
{
    (void)state;
    static const struct run_cfg cfgs[] = {
        {"", 8 << 20, 65536, 160, false},
        {"compat=0.10", 8 << 20, 65536, 160, false},
        {"cluster_size=512", 2 << 20, 512, 200, false},
        {"cluster_size=4k,refcount_bits=1", 4 << 20, 4096, 200, false},
        {"cluster_size=4k,refcount_bits=64", 4 << 20, 4096, 200, false},
        {"extended_l2=on", 8 << 20, 65536, 160, false},
        {"extended_l2=on,cluster_size=16k", 4 << 20, 16384, 200, false},
        {"lazy_refcounts=on", 8 << 20, 65536, 120, false},
        {"preallocation=metadata", 4 << 20, 65536, 120, false},
        {"preallocation=metadata,extended_l2=on", 4 << 20, 65536, 120, false},
        {"data_file=rand.data", 8 << 20, 65536, 120, false},
        {"data_file=rand.data,data_file_raw=on", 8 << 20, 65536, 120, false},
        {"", 4 << 20, 65536, 120, true},
        {"compat=0.10", 4 << 20, 65536, 120, true},
        {"cluster_size=512", 1 << 20, 512, 120, true},
        {"extended_l2=on,cluster_size=32k", 4 << 20, 32768, 120, true},
        {"data_file=rand.data", 4 << 20, 65536, 100, true},
    };
    for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
        for (uint64_t seed = 1; seed <= 3; seed++)
            run_random(&cfgs[i], seed * 31 + i);
}

/* ---- onto images qemu made ---- */

/* Fills `path` (size `size`, cluster `cluster`) through qemu-io with a mix of kinds. */
static void qemu_fill(const char *path, uint64_t size, uint32_t cluster, bool compress,
                      uint64_t seed)
{
    uint64_t rng = seed + 99;
    char cmd[8192];
    int n = snprintf(cmd, sizeof(cmd), "qemu-io");
    for (int i = 0; i < 40 && n < (int)sizeof(cmd) - 200; i++) {
        uint64_t c = qw_rand(&rng) % (size / cluster);
        unsigned kind = (unsigned)(qw_rand(&rng) % 10);
        if (compress && kind < 4)
            n += snprintf(cmd + n, sizeof(cmd) - n, " -c 'write -c -P %u %" PRIu64 " %u'",
                          (unsigned)(qw_rand(&rng) % 255 + 1), c * cluster, cluster);
        else if (kind < 8) {
            uint64_t off = c * cluster + qw_rand(&rng) % cluster;
            uint64_t len = 1 + qw_rand(&rng) % (2 * cluster);
            if (off + len > size)
                len = size - off;
            n += snprintf(cmd + n, sizeof(cmd) - n, " -c 'write -P %u %" PRIu64 " %" PRIu64 "'",
                          (unsigned)(qw_rand(&rng) % 255 + 1), off, len);
        } else {
            uint64_t len = (1 + qw_rand(&rng) % 2) * cluster;
            if (c * cluster + len > size)
                len = size - c * cluster;
            n += snprintf(cmd + n, sizeof(cmd) - n, " -c 'write -z %" PRIu64 " %" PRIu64 "'",
                          c * cluster, len);
        }
    }
    snprintf(cmd + n, sizeof(cmd) - n, " '%s' >/dev/null 2>&1", path);
    /* Compressed writes onto allocated clusters fail in qemu-io; the rest still lands. */
    if (system(cmd) < 0)
        fail();
}

struct qemu_case {
    const char *options;
    uint32_t cluster;
    bool backing;
    bool compress;
    bool snapshot;
};

static void run_on_qemu_image(const struct qemu_case *q, uint64_t seed)
{
    const uint64_t size = 4 << 20;
    char *path = qt_path("q.qcow2"), *raw = qt_path("q.raw"), *base = qt_path("qbase.qcow2");
    char *snap_before = qt_path("snap0.raw"), *snap_after = qt_path("snap1.raw");
    if (q->backing) {
        assert_int_equal(qt_run("qemu-img create -q -f qcow2 '%s' %" PRIu64, base, size), 0);
        assert_int_equal(
            qt_run("qemu-io -c 'write -P 0x5a 0 %" PRIu64 "' '%s' >/dev/null", size, base), 0);
    }
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 %s%s %s%s%s '%s' %" PRIu64,
                            *q->options ? "-o " : "", q->options, q->backing ? "-F qcow2 -b '" : "",
                            q->backing ? base : "", q->backing ? "'" : "", path, size),
                     0);
    qemu_fill(path, size, q->cluster, q->compress, seed);
    if (q->snapshot) {
        assert_int_equal(qt_run("qemu-img snapshot -c s1 '%s'", path), 0);
        assert_int_equal(
            qt_run("qemu-img convert -O raw -l snapshot.name=s1 '%s' '%s'", path, snap_before), 0);
    }
    assert_int_equal(qt_run("qemu-img convert -O raw '%s' '%s'", path, raw), 0);

    struct qw_shadow sh = {.fd = open(raw, O_RDWR), .size = size};
    assert_true(sh.fd >= 0);
    img *h = qw_open(path);
    struct run_cfg c = {q->options, size, q->cluster, 150, false};
    apply_random_ops(h, &sh, seed, &c);
    /* A last write whose pattern qemu-io checks directly, straddling two clusters. */
    uint64_t off = size / 2 - q->cluster / 3;
    memset(io_buf, 0xc3, q->cluster);
    assert_int_equal(img_pwrite(h, io_buf, q->cluster, off), q->cluster);
    qw_shadow_write(&sh, io_buf, q->cluster, off);
    img_close(h);
    qw_shadow_close(&sh);

    qw_assert_check_clean(path);
    qw_assert_same(path, raw);
    assert_int_equal(qt_run("qemu-io -c 'read -P 0xc3 %" PRIu64 " %u' '%s' | grep -q '^read'", off,
                            q->cluster, path),
                     0);
    if (q->snapshot) {
        assert_int_equal(
            qt_run("qemu-img convert -O raw -l snapshot.name=s1 '%s' '%s'", path, snap_after), 0);
        assert_int_equal(qt_run("cmp -s '%s' '%s'", snap_before, snap_after), 0);
    }
    free(path);
    free(raw);
    free(base);
    free(snap_before);
    free(snap_after);
}

static void test_onto_qemu_images(void **state)
{
    (void)state;
    static const struct qemu_case cases[] = {
        {"", 65536, false, true, false},
        {"", 65536, false, true, true},
        {"", 65536, true, true, false},
        {"", 65536, true, false, true},
        {"compat=0.10", 65536, false, true, true},
        {"compat=0.10", 65536, true, false, false},
        {"extended_l2=on", 65536, false, true, false},
        {"extended_l2=on", 65536, true, true, true},
        {"extended_l2=on,cluster_size=16k", 16384, true, false, false},
        {"compression_type=zstd", 65536, false, true, true},
        {"cluster_size=4k", 4096, true, true, true},
        /* (qemu-img cannot snapshot these: compressed clusters share 2-bit refcounts) */
        {"refcount_bits=2,cluster_size=8k", 8192, false, true, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        for (uint64_t seed = 1; seed <= 2; seed++)
            run_on_qemu_image(&cases[i], seed * 17 + i);
}

/* ---- refcount structures that must grow ---- */

static void grow_refcounts(const char *options, uint64_t bytes)
{
    char *path = qt_path("grow.qcow2"), *raw = qt_path("grow.raw");
    qw_create(path, bytes, options);
    struct qw_shadow sh;
    qw_shadow_open(&sh, raw, bytes);
    img *h = qw_open(path);
    uint32_t table_clusters = qw_header_u32(path, 56);
    uint64_t table_offset = qw_header_u64(path, 48);
    for (uint64_t off = 0; off < bytes; off += MAX_IO) {
        uint64_t n = bytes - off < MAX_IO ? bytes - off : MAX_IO;
        qw_fill(io_buf, n, off);
        assert_int_equal(img_pwrite(h, io_buf, n, off), (int64_t)n);
        qw_shadow_write(&sh, io_buf, n, off);
    }
    img_close(h);
    qw_shadow_close(&sh);
    /* The table moved to a larger place. */
    assert_true(qw_header_u32(path, 56) > table_clusters);
    assert_true(qw_header_u64(path, 48) != table_offset);
    qw_assert_check_clean(path);
    qw_assert_same(path, raw);
    free(path);
    free(raw);
}

static void test_refcount_table_growth(void **state)
{
    (void)state;
    grow_refcounts("cluster_size=512", 24 << 20);
    grow_refcounts("cluster_size=512,refcount_bits=64", 6 << 20);
    grow_refcounts("cluster_size=1k,refcount_bits=64", 24 << 20);
}

/* ---- compressed clusters ---- */

static void convert_compressed(const char *options)
{
    char *src = qt_path("c.raw"), *dst = qt_path("c.qcow2");
    const uint64_t size = 3 << 20;
    /* Half compressible text, half noise, some zeros. */
    int fd = open(src, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    for (uint64_t off = 0; off < size; off += 65536) {
        uint64_t rng = off + 1;
        if ((off / 65536) % 4 == 0)
            for (int i = 0; i < 65536; i += 8) {
                uint64_t v = qw_rand(&rng);
                memcpy(io_buf + i, &v, 8);
            }
        else if ((off / 65536) % 4 == 3)
            memset(io_buf, 0, 65536);
        else
            for (int i = 0; i < 65536; i++)
                io_buf[i] = "qcow2 compressed cluster "[(i + off / 512) % 25];
        assert_int_equal(pwrite(fd, io_buf, 65536, (off_t)off), 65536);
    }
    close(fd);
    img *s;
    assert_int_equal(img_open(&s, src, "raw", IMG_OPEN_READ_ONLY, NULL), 0);
    img_opts *o = qw_opts(options);
    img_opts_set(o, "compress", "on");
    int ret = img_convert(s, dst, "qcow2", o, NULL, NULL);
    if (ret < 0)
        fprintf(stderr, "convert: %s\n", img_last_error());
    assert_int_equal(ret, 0);
    img_opts_free(o);
    img_close(s);
    qw_assert_check_clean(dst);
    qw_assert_same(dst, src);
    char *info = qt_capture("qemu-img check '%s'", dst);
    assert_non_null(info);
    /* Compressible clusters were stored compressed, the noise was not: 2 of 3. */
    const char *pct = strstr(info, "% compressed clusters");
    assert_non_null(pct);
    while (pct > info && pct[-1] != ' ')
        pct--;
    double share = strtod(pct, NULL);
    if (share < 66.0 || share > 67.0)
        fprintf(stderr, "-o %s: %.2f%% compressed:\n%s\n", options, share, info);
    assert_true(share > 66.0 && share < 67.0);
    free(info);

    /* Overwriting parts of compressed clusters: the rest is decompressed into a new one. */
    struct qw_shadow sh = {.fd = open(src, O_RDWR), .size = size};
    img *h = qw_open(dst);
    for (uint64_t off = 65536 + 1000; off < size; off += 4 * 65536 + 777) {
        qw_fill(io_buf, 3000, off);
        assert_int_equal(img_pwrite(h, io_buf, 3000, off), 3000);
        qw_shadow_write(&sh, io_buf, 3000, off);
    }
    assert_int_equal(img_zero(h, 2 * 65536, 65536, IMG_ZERO_MAY_UNMAP), 0);
    qw_shadow_zero(&sh, 65536, 2 * 65536);
    img_close(h);
    close(sh.fd);
    qw_assert_check_clean(dst);
    qw_assert_same(dst, src);
    free(src);
    free(dst);
}

static void test_compressed(void **state)
{
    (void)state;
    convert_compressed("");
    convert_compressed("compression_type=zstd");
    convert_compressed("cluster_size=64k,refcount_bits=2");
    convert_compressed("extended_l2=on");
}

/* ---- lazy refcounts: a crash leaves the dirty bit, the next writable open repairs ---- */

static void test_lazy_refcounts_crash(void **state)
{
    (void)state;
    char *path = qt_path("lazy.qcow2");
    qw_create(path, 16 << 20, "lazy_refcounts=on");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        img *h = NULL;
        if (img_open(&h, path, "qcow2", IMG_OPEN_READ_WRITE, NULL) < 0)
            _exit(1);
        memset(io_buf, 0x42, 65536);
        for (int i = 0; i < 30; i++)
            if (img_pwrite(h, io_buf, 65536, (uint64_t)i * 300000) != 65536)
                _exit(2);
        _exit(0); /* no flush, no close: a crash */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(qw_header_u64(path, 72) & QCOW2_INCOMPAT_DIRTY);
    /* The crash leaked the clusters whose tables never reached the disk. */
    assert_int_not_equal(qt_run("qemu-img check -q '%s' >/dev/null 2>&1", path), 0);

    img *h = qw_open(path);
    memset(io_buf, 0x17, 4096);
    assert_int_equal(img_pwrite(h, io_buf, 4096, 12345), 4096);
    img_close(h);
    assert_false(qw_header_u64(path, 72) & QCOW2_INCOMPAT_DIRTY);
    qw_assert_check_clean(path);
    assert_int_equal(qt_run("qemu-io -c 'read -P 0x17 12345 4096' '%s' | grep -q '^read'", path),
                     0);
    free(path);
}

/* While writing with lazy refcounts the dirty bit is set; a clean close clears it. */
static void test_lazy_refcounts_clean(void **state)
{
    (void)state;
    char *path = qt_path("lazy2.qcow2");
    qw_create(path, 4 << 20, "lazy_refcounts=on");
    img *h = qw_open(path);
    assert_false(qw_header_u64(path, 72) & QCOW2_INCOMPAT_DIRTY);
    memset(io_buf, 9, 512);
    assert_int_equal(img_pwrite(h, io_buf, 512, 0), 512);
    assert_true(qw_header_u64(path, 72) & QCOW2_INCOMPAT_DIRTY);
    img_close(h);
    assert_false(qw_header_u64(path, 72) & QCOW2_INCOMPAT_DIRTY);
    qw_assert_check_clean(path);
    free(path);
}

/* Enabled persistent bitmaps track the writes and are stored consistent at close. */
static void test_bitmaps_marked_in_use(void **state)
{
    (void)state;
    char *path = qt_path("bm.qcow2");
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 '%s' 4M", path), 0);
    assert_int_equal(qt_run("qemu-img bitmap --add '%s' b0", path), 0);
    img *h = qw_open(path);
    memset(io_buf, 1, 512);
    assert_int_equal(img_pwrite(h, io_buf, 512, 65536), 512);
    img_close(h);
    char *info = qt_capture("qemu-img info '%s'", path);
    assert_non_null(info);
    assert_null(strstr(info, "in-use"));
    assert_non_null(strstr(info, "auto"));
    free(info);
    qw_assert_check_clean(path);

    /* A write into an allocated cluster changes no metadata, and is still tracked. */
    char *path2 = qt_path("bm2.qcow2");
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 '%s' 4M", path2), 0);
    assert_int_equal(qt_run("qemu-io -c 'write -P 7 0 64k' '%s' >/dev/null", path2), 0);
    assert_int_equal(qt_run("qemu-img bitmap --add '%s' b0", path2), 0);
    h = qw_open(path2);
    assert_int_equal(img_pwrite(h, io_buf, 512, 4096), 512);
    img_close(h);
    info = qt_capture("qemu-img info '%s'", path2);
    assert_non_null(info);
    assert_null(strstr(info, "in-use"));
    assert_non_null(strstr(info, "auto"));
    free(info);
    free(path2);

    /* Resizing would need the bitmaps resized too. */
    h = qw_open(path);
    assert_int_equal(img_resize(h, 8 << 20, 0, NULL), -ENOTSUP);
    img_close(h);
    free(path);
}

/* Shrinking drops the clusters past the end and cuts the file; growing reads zeros there. */
static void test_shrink_and_grow(void **state)
{
    (void)state;
    char *path = qt_path("sg.qcow2");
    qw_create(path, 16 << 20, "");
    img *h = qw_open(path);
    memset(io_buf, 0xee, MAX_IO);
    for (uint64_t off = 0; off < (16 << 20); off += MAX_IO) {
        uint64_t n = (16 << 20) - off < MAX_IO ? (16 << 20) - off : MAX_IO;
        assert_int_equal(img_pwrite(h, io_buf, n, off), (int64_t)n);
    }
    assert_int_equal(img_resize(h, 1000448, 0, NULL), -EINVAL); /* shrinking needs the flag */
    assert_int_equal(img_resize(h, 1000448, IMG_RESIZE_SHRINK, NULL), 0);
    img_close(h);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_size < (2 << 20));
    qw_assert_check_clean(path);
    h = qw_open(path);
    assert_int_equal(img_get_size(h), 1000448);
    assert_int_equal(img_resize(h, 4 << 20, 0, NULL), 0);
    img_close(h);
    qw_assert_check_clean(path);
    assert_int_equal(qt_run("qemu-io -c 'read -P 0xee 0 1000448' -c 'read -P 0 1000448 %d' '%s' "
                            "| grep -c '^read' | grep -q 2",
                            (4 << 20) - 1000448, path),
                     0);
    free(path);
}

/*
 * A run that starts exactly where a refcount block's range begins, in a range with no block
 * yet: the block goes after the run and the run is used, rather than the search moving on
 * (where each step would meet the next range without a block and march through the file).
 */
static void test_alloc_run_at_block_boundary(void **state)
{
    (void)state;
    char *path = qt_path("boundary.qcow2");
    qw_create(path, 64 << 20, "cluster_size=512,refcount_bits=64");
    img *h = qw_open(path);
    struct qcow2_state *s = ((struct img *)h)->priv;
    uint64_t span = 1ull << s->refcount_block_bits; /* 64 clusters of 512 B */
    pthread_mutex_lock(&s->lock);
    uint64_t off = 0;
    do {
        assert_int_equal(qcow2_alloc_clusters(s, 1, &off), 0);
    } while (((off >> s->cluster_bits) + 1) % span != 0);
    uint64_t boundary = (off >> s->cluster_bits) + 1;
    assert_true((boundary >> s->refcount_block_bits) >= s->refcount_table_entries ||
                !(s->refcount_table[boundary >> s->refcount_block_bits] & QCOW2_REFT_OFFSET_MASK));
    uint64_t run = 0;
    int ret = qcow2_alloc_clusters(s, span - 1, &run);
    if (ret < 0)
        fprintf(stderr, "allocating %" PRIu64 " clusters: %s\n", span - 1, img_last_error());
    assert_int_equal(ret, 0);
    assert_int_equal(run >> s->cluster_bits, boundary);
    pthread_mutex_unlock(&s->lock);
    img_close(h);
    /* The clusters were allocated and never used: leaks, and nothing worse. */
    char *out = qt_capture("qemu-img check --output=json '%s' 2>/dev/null; true", path);
    assert_non_null(out);
    assert_non_null(strstr(out, "\"leaks\": "));
    assert_null(strstr(out, "\"corruptions\""));
    free(out);
    free(path);
}

int main(void)
{
    qw_require_qemu();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_sequences),
        cmocka_unit_test(test_onto_qemu_images),
        cmocka_unit_test(test_refcount_table_growth),
        cmocka_unit_test(test_compressed),
        cmocka_unit_test(test_lazy_refcounts_crash),
        cmocka_unit_test(test_lazy_refcounts_clean),
        cmocka_unit_test(test_bitmaps_marked_in_use),
        cmocka_unit_test(test_shrink_and_grow),
        cmocka_unit_test(test_alloc_run_at_block_boundary),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (!failed)
        qt_cleanup();
    return failed;
}
