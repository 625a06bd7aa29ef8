/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The backend against qemu-img on images qemu-img and qemu-io write at test time: for a matrix
 * of versions, cluster sizes, refcount widths, extended L2 entries, compression types,
 * preallocation, snapshots, bitmaps, backing and data files, map() must agree with
 * `qemu-img map`, the bytes read through the extents with `qemu-img convert -O raw`, and
 * "format-specific" with `qemu-img info`. Skips (77) without qemu-img.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "codec/codec.h"
#include "imgutil.h"
#include "qcow2_test_util.h"
#include "util/json.h"

/* ---- a normalised allocation map ---- */

struct seg {
    uint64_t start, length;
    char kind; /* D data, C compressed, Z zero, U not in this layer */
    bool has_offset;
    uint64_t offset;
};

struct seg_list {
    struct seg *v;
    size_t n, cap;
};

static void seg_add(struct seg_list *l, struct seg s)
{
    if (s.length == 0) /* qemu-img lists an empty image as one empty run */
        return;
    if (s.kind == 'U' || s.kind == 'C') {
        s.has_offset = false;
        s.offset = 0;
    }
    if (l->n) {
        struct seg *last = &l->v[l->n - 1];
        if (last->kind == s.kind && last->start + last->length == s.start &&
            last->has_offset == s.has_offset &&
            (!s.has_offset || last->offset + last->length == s.offset)) {
            last->length += s.length;
            return;
        }
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = realloc(l->v, l->cap * sizeof(*l->v));
    }
    l->v[l->n++] = s;
}

static uint64_t field_u64(const char *line, const char *key, bool *found)
{
    const char *p = strstr(line, key);
    if (found)
        *found = p != NULL;
    return p ? strtoull(p + strlen(key), NULL, 10) : 0;
}

static bool field_true(const char *line, const char *key)
{
    const char *p = strstr(line, key);
    return p && strncmp(p + strlen(key), "true", 4) == 0;
}

/* `qemu-img map --output=json`, seen from the top layer. */
static void qemu_map(const char *path, struct seg_list *out)
{
    char *text = qt_capture("qemu-img map --output=json '%s'", path);
    assert_non_null(text);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strstr(line, "\"start\""))
            continue;
        struct seg s = {0};
        s.start = field_u64(line, "\"start\": ", NULL);
        s.length = field_u64(line, "\"length\": ", NULL);
        uint64_t depth = field_u64(line, "\"depth\": ", NULL);
        s.offset = field_u64(line, "\"offset\": ", &s.has_offset);
        bool present = field_true(line, "\"present\": ");
        bool zero = field_true(line, "\"zero\": ");
        bool data = field_true(line, "\"data\": ");
        if (depth > 0 || !present)
            s.kind = 'U';
        else if (data)
            s.kind = s.has_offset ? 'D' : 'C';
        else if (zero)
            s.kind = 'Z';
        else
            s.kind = '?';
        seg_add(out, s);
    }
    free(text);
}

static void our_map(struct img *img, struct seg_list *out)
{
    struct img_extent ext;
    for (uint64_t off = 0; off < img->size; off += ext.length) {
        int ret = format_qcow2.map(img, off, img->size - off, &ext);
        if (ret != 0)
            fprintf(stderr, "map at %" PRIu64 ": %s\n", off, img_last_error());
        assert_int_equal(ret, 0);
        assert_true(ext.length > 0 && ext.length <= img->size - off);
        struct seg s = {.start = off, .length = ext.length};
        switch (ext.kind) {
        case EXTENT_DATA:
            s.kind = 'D';
            s.has_offset = true;
            s.offset = ext.host_offset;
            break;
        case EXTENT_COMPRESSED:
            s.kind = 'C';
            break;
        case EXTENT_ZERO:
            s.kind = 'Z';
            s.has_offset = ext.host_offset_valid;
            s.offset = ext.host_offset;
            break;
        case EXTENT_UNALLOCATED:
            s.kind = 'U';
            break;
        }
        seg_add(out, s);
    }
}

static void print_map(const char *who, const struct seg_list *l)
{
    fprintf(stderr, "%s:\n", who);
    for (size_t i = 0; i < l->n; i++)
        fprintf(stderr, "  %c %" PRIu64 "+%" PRIu64 " %s%" PRIx64 "\n", l->v[i].kind, l->v[i].start,
                l->v[i].length, l->v[i].has_offset ? "@0x" : "", l->v[i].offset);
}

static void check_map(struct img *img, const char *path)
{
    struct seg_list ours = {0}, theirs = {0};
    our_map(img, &ours);
    qemu_map(path, &theirs);
    bool same = ours.n == theirs.n;
    for (size_t i = 0; same && i < ours.n; i++)
        same = memcmp(&ours.v[i], &theirs.v[i], sizeof(struct seg)) == 0;
    if (!same) {
        print_map("ours", &ours);
        print_map("qemu-img", &theirs);
        fail_msg("map of %s differs from qemu-img map", path);
    }
    free(ours.v);
    free(theirs.v);
}

/* ---- data ---- */

static uint8_t *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert_int_equal(fread(buf, 1, *len, f), *len);
    fclose(f);
    return buf;
}

/* Reads every extent as the core would and compares with qemu-img's raw conversion. */
static void check_data(struct img *img, const char *path, bool has_backing)
{
    char *raw = qt_path("reference.raw");
    assert_int_equal(qt_run("qemu-img convert -O raw '%s' '%s'", path, raw), 0);
    size_t ref_len;
    uint8_t *ref = read_whole(raw, &ref_len);
    assert_int_equal(ref_len, img->size);
    unlink(raw);
    free(raw);

    struct img_extent ext;
    for (uint64_t off = 0; off < img->size; off += ext.length) {
        assert_int_equal(format_qcow2.map(img, off, img->size - off, &ext), 0);
        const uint8_t *want = ref + off;
        uint8_t *got = malloc(ext.length);
        switch (ext.kind) {
        case EXTENT_DATA:
            assert_int_equal(io_pread(ext.file, got, ext.length, ext.host_offset), 0);
            break;
        case EXTENT_COMPRESSED: {
            uint8_t *packed = malloc(ext.comp_length);
            uint8_t *unit = malloc(ext.unit_size);
            assert_int_equal(io_pread(ext.file, packed, ext.comp_length, ext.host_offset), 0);
            assert_int_equal(codec_decompress((enum img_codec)ext.codec, packed, ext.comp_length,
                                              unit, ext.unit_size),
                             0);
            assert_true(off >= ext.unit_start &&
                        off + ext.length <= ext.unit_start + ext.unit_size);
            memcpy(got, unit + (off - ext.unit_start), ext.length);
            free(packed);
            free(unit);
            break;
        }
        case EXTENT_ZERO:
            memset(got, 0, ext.length);
            break;
        case EXTENT_UNALLOCATED:
            if (has_backing) {
                free(got);
                continue;
            }
            memset(got, 0, ext.length);
            break;
        }
        if (memcmp(got, want, ext.length) != 0)
            fail_msg("%s: data at %" PRIu64 " (+%" PRIu64 ", kind %d) differs from qemu-img", path,
                     off, ext.length, (int)ext.kind);
        free(got);
    }
    free(ref);
}

/* ---- info ---- */

static char *strip_spaces(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t k = 0;
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' && (i == 0 || s[i - 1] != '\\'))
            in_string = !in_string;
        if (!in_string && (s[i] == ' ' || s[i] == '\n'))
            continue;
        out[k++] = s[i];
    }
    out[k] = '\0';
    return out;
}

/* The balanced {...} that follows `key` in `text`. */
static char *object_after(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    assert_non_null(p);
    p = strchr(p, '{');
    int depth = 0;
    const char *q = p;
    do {
        if (*q == '{')
            depth++;
        else if (*q == '}')
            depth--;
        q++;
    } while (depth > 0 && *q);
    return strip_spaces(p, (size_t)(q - p));
}

static void check_info(struct img *img, const char *path, bool force_share)
{
    char *text = qt_capture("qemu-img info %s--output=json '%s'", force_share ? "-U " : "", path);
    assert_non_null(text);
    char *theirs = object_after(text, "\"format-specific\"");

    struct json_writer w;
    json_init(&w);
    json_object_begin(&w, NULL);
    assert_int_equal(format_qcow2.info_specific(img, &w), 0);
    json_object_end(&w);
    char *json = json_finish(&w);
    char *ours = strip_spaces(json, strlen(json));
    if (strcmp(ours, theirs) != 0)
        fail_msg("format-specific differs:\n ours %s\n qemu %s", ours, theirs);

    /* Snapshots: every field info prints. */
    struct img_snapshot *list;
    size_t count;
    assert_int_equal(format_qcow2.snapshot_list(img, &list, &count), 0);
    const char *p = strstr(text, "\"snapshots\"");
    size_t seen = 0;
    while (p && (p = strstr(p, "\"id\": \"")) != NULL) {
        /* Fields of one snapshot lie between the braces around its id. */
        const char *start = p;
        while (start > text && *start != '{')
            start--;
        const char *end = strchr(p, '}');
        char *obj = strndup(start, (size_t)(end - start + 1));
        assert_true(seen < count);
        const struct img_snapshot *sn = &list[seen++];
        char expect[512];
        snprintf(expect, sizeof(expect), "\"id\": \"%s\"", sn->id);
        assert_non_null(strstr(obj, expect));
        snprintf(expect, sizeof(expect), "\"name\": \"%s\"", sn->name);
        assert_non_null(strstr(obj, expect));
        assert_int_equal(field_u64(obj, "\"date-sec\": ", NULL), sn->date_sec);
        assert_int_equal(field_u64(obj, "\"date-nsec\": ", NULL), sn->date_nsec);
        assert_int_equal(field_u64(obj, "\"vm-state-size\": ", NULL), sn->vm_state_size);
        assert_int_equal(field_u64(obj, "\"vm-clock-nsec\": ", NULL),
                         sn->vm_clock_nsec % 1000000000u);
        bool has_icount;
        uint64_t icount = field_u64(obj, "\"icount\": ", &has_icount);
        assert_int_equal(has_icount, sn->has_icount);
        if (has_icount)
            assert_int_equal(icount, sn->icount);
        free(obj);
        p = end;
    }
    assert_int_equal(seen, count);
    img_snapshots_free(list, count);

    /* Size and cluster size as qemu-img reports them. */
    assert_int_equal(field_u64(text, "\"virtual-size\": ", NULL), img->size);
    assert_int_equal(field_u64(text, "\"cluster-size\": ", NULL), img->cluster_size);
    assert_int_equal(field_true(text, "\"dirty-flag\": "), img->dirty);
    free(json);
    free(ours);
    free(theirs);
    free(text);
}

/* ---- the matrix ---- */

#define IO_MIXED                                                                                   \
    "-c 'write -P 0xab 0 100k' -c 'write -z 200k 64k' -c 'discard 400k 64k' "                      \
    "-c 'write -P 0x11 300k 5k' -c 'write -P 0x22 1M 128k' -c 'write -P 0x33 3M 1k' "              \
    "-c 'write -P 0x44 1536k 512' -c 'discard 1M 64k'"
#define IO_SUBCLUSTERS                                                                             \
    "-c 'write -P 1 0 2k' -c 'write -P 2 6k 2k' -c 'write -z 64k 8k' -c 'write -P 3 130k 10k' "    \
    "-c 'write -P 4 1M 512k' -c 'write -z 1200k 4k' -c 'discard 1M 16k'"

struct image_case {
    const char *name;
    const char *create; /* qemu-img create -o options */
    const char *size;
    const char *io;       /* qemu-io commands, or NULL */
    const char *compress; /* when set: convert -c -o <this> the image into the tested one */
};

static const struct image_case cases[] = {
    {"v3-64k", "compat=1.1", "4M", IO_MIXED, NULL},
    {"v2-64k", "compat=0.10", "4M", IO_MIXED, NULL},
    {"v2-4k", "compat=0.10,cluster_size=4k", "4M", IO_MIXED, NULL},
    {"cl8k-rc2", "cluster_size=8k,refcount_bits=2", "4M", IO_MIXED, NULL},
    {"cl32k-rc4", "cluster_size=32k,refcount_bits=4", "4M", IO_MIXED, NULL},
    {"cl128k-rc8", "cluster_size=128k,refcount_bits=8", "4M", IO_MIXED, NULL},
    {"cl1M-rc32", "cluster_size=1M,refcount_bits=32", "5M", IO_MIXED, NULL},
    {"cl512", "cluster_size=512", "4M", IO_MIXED, NULL},
    {"cl4k-rc1", "cluster_size=4k,refcount_bits=1", "4M", IO_MIXED, NULL},
    {"cl16k-rc64", "cluster_size=16k,refcount_bits=64", "4M", IO_MIXED, NULL},
    {"cl2M", "cluster_size=2M", "9M", IO_MIXED " -c 'write -P 0x55 8300k 100k'", NULL},
    {"odd-size", "cluster_size=64k", "1000000", "-c 'write -P 0x66 950000 49664'", NULL},
    {"extl2-64k", "extended_l2=on,cluster_size=64k", "4M", IO_SUBCLUSTERS, NULL},
    {"extl2-16k", "extended_l2=on,cluster_size=16k", "4M", IO_SUBCLUSTERS, NULL},
    {"extl2-2M", "extended_l2=on,cluster_size=2M", "6M", IO_SUBCLUSTERS, NULL},
    {"prealloc-metadata", "preallocation=metadata", "4M", IO_MIXED, NULL},
    {"prealloc-falloc", "preallocation=falloc,cluster_size=4k", "4M", IO_MIXED, NULL},
    {"prealloc-full", "preallocation=full", "2M", "-c 'write -P 7 64k 1k' -c 'write -z 0 64k'",
     NULL},
    {"extl2-prealloc", "extended_l2=on,preallocation=metadata", "2M", IO_SUBCLUSTERS, NULL},
    {"lazy", "lazy_refcounts=on", "4M", IO_MIXED, NULL},
    {"zlib", "compat=1.1", "4M", IO_MIXED, "compression_type=zlib"},
    {"zstd", "compat=1.1", "4M", IO_MIXED, "compression_type=zstd"},
    {"zlib-512", "compat=1.1", "4M", IO_MIXED, "cluster_size=512"},
    {"zstd-2M", "compat=1.1", "9M", IO_MIXED, "compression_type=zstd,cluster_size=2M"},
    {"zlib-v2", "compat=1.1", "4M", IO_MIXED, "compat=0.10"},
    {"zstd-extl2", "compat=1.1", "4M", IO_MIXED, "compression_type=zstd,extended_l2=on"},
    {"compressed-writes", "cluster_size=4k", "1M",
     "-c 'write -c -P 0x44 0 4k' -c 'write -c -P 0 4k 4k' -c 'write -c -P 9 8k 4k' "
     "-c 'write -P 1 12k 4k' -c 'write -c -P 5 64k 4k'",
     NULL},
    {"zstd-writes", "compression_type=zstd,cluster_size=16k", "1M",
     "-c 'write -c -P 0x44 0 16k' -c 'write -c -P 0x45 16k 16k' -c 'write -c -P 0 48k 16k'", NULL},
    {"empty", "compat=1.1", "0", NULL, NULL},
};

static void run_case(const struct image_case *c)
{
    char name[128];
    snprintf(name, sizeof(name), "%s.qcow2", c->name);
    char *path = qt_path(name);
    char *src = qt_path("source.qcow2");
    const char *made = c->compress ? src : path;
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 -o %s '%s' %s", c->create, made, c->size),
                     0);
    if (c->io)
        assert_int_equal(qt_run("qemu-io %s '%s' >/dev/null", c->io, made), 0);
    if (c->compress)
        assert_int_equal(
            qt_run("qemu-img convert -c -O qcow2 -o %s '%s' '%s'", c->compress, src, path), 0);
    struct img *img;
    int ret = qt_open(path, 0, &img);
    if (ret != 0)
        fail_msg("%s: open failed: %s", c->name, img_last_error());
    check_map(img, path);
    check_data(img, path, false);
    check_info(img, path, false);
    qt_close(img);
    unlink(path);
    unlink(src);
    free(path);
    free(src);
}

static void test_matrix(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fprintf(stderr, "case %s\n", cases[i].name);
        run_case(&cases[i]);
    }
}

static void test_snapshots_and_bitmaps(void **state)
{
    char *path = qt_path("snap.qcow2");
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 '%s' 4M && "
                            "qemu-io -c 'write -P 1 0 256k' '%s' >/dev/null && "
                            "qemu-img snapshot -c first '%s' && "
                            "qemu-io -c 'write -P 2 64k 64k' -c 'write -z 128k 64k' '%s' "
                            ">/dev/null && qemu-img snapshot -c 'the second' '%s' && "
                            "qemu-img snapshot -c third '%s' && qemu-img snapshot -d first '%s' && "
                            "qemu-img bitmap --add '%s' b0 && "
                            "qemu-img bitmap --add -g 512 --disable '%s' other",
                            path, path, path, path, path, path, path, path, path),
                     0);
    struct img *img;
    assert_int_equal(qt_open(path, 0, &img), 0);
    struct qcow2_state *s = img->priv;
    assert_int_equal(s->nb_snapshots, 2);
    assert_int_equal(s->nb_bitmaps, 2);
    check_map(img, path);
    check_data(img, path, false);
    check_info(img, path, false);
    qt_close(img);
    free(path);
}

static void test_backing(void **state)
{
    char *base = qt_path("base.qcow2");
    char *top = qt_path("top.qcow2");
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 '%s' 4M && "
                            "qemu-io -c 'write -P 1 0 1M' '%s' >/dev/null && "
                            "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 -o extended_l2=on "
                            "'%s' && qemu-io -c 'write -P 2 100k 8k' -c 'write -z 512k 64k' "
                            "-c 'write -P 3 3M 64k' '%s' >/dev/null",
                            base, base, top, top),
                     0);
    struct img *img;
    assert_int_equal(qt_open(top, 0, &img), 0);
    assert_string_equal(img->backing_name, "base.qcow2");
    assert_string_equal(img->backing_format, "qcow2");
    check_map(img, top);
    check_data(img, top, true);
    check_info(img, top, false);
    qt_close(img);
    free(base);
    free(top);
}

static void test_data_files(void **state)
{
    for (int raw = 0; raw <= 1; raw++) {
        char name[64];
        snprintf(name, sizeof(name), "df%d.qcow2", raw);
        char *path = qt_path(name);
        assert_int_equal(qt_run("qemu-img create -q -f qcow2 -o data_file=df%d.data,"
                                "data_file_raw=%s '%s' 4M && qemu-io %s '%s' >/dev/null",
                                raw, raw ? "on" : "off", path, IO_MIXED, path),
                         0);
        struct img *img;
        /* Without permission: info, but no data (IO_MIXED writes data at offset 0). */
        assert_int_equal(qt_open(path, 0, &img), 0);
        check_info(img, path, false);
        struct img_extent ext;
        assert_int_equal(format_qcow2.map(img, 0, img->size, &ext), -EPERM);
        char expect[128];
        snprintf(expect, sizeof(expect),
                 "qcow2: image uses the external data file 'df%d.data'; reading it needs "
                 "IMG_OPEN_ALLOW_DATA_FILE",
                 raw);
        assert_string_equal(img_last_error(), expect);
        qt_close(img);
        assert_int_equal(qt_open(path, IMG_OPEN_ALLOW_DATA_FILE, &img), 0);
        check_map(img, path);
        check_data(img, path, false);
        check_info(img, path, false);
        qt_close(img);
        free(path);
    }
}

struct map_worker {
    struct img *img;
    const struct seg_list *expect;
    int bad;
};

static void *map_worker_main(void *arg)
{
    struct map_worker *w = arg;
    for (int round = 0; round < 20; round++) {
        struct seg_list got = {0};
        our_map(w->img, &got);
        if (got.n != w->expect->n || memcmp(got.v, w->expect->v, got.n * sizeof(struct seg)) != 0)
            w->bad++;
        free(got.v);
    }
    return NULL;
}

/* map() from several threads at once gives every thread the same answers. */
static void test_concurrent_map(void **state)
{
    char *path = qt_path("threads.qcow2");
    assert_int_equal(qt_run("qemu-img create -q -f qcow2 -o cluster_size=512 '%s' 64M && "
                            "qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 8M 3M' "
                            "-c 'write -z 9M 64k' -c 'write -P 3 40M 8M' '%s' >/dev/null",
                            path, path),
                     0);
    struct img *img;
    assert_int_equal(qt_open(path, 0, &img), 0);
    struct seg_list expect = {0};
    our_map(img, &expect);
    pthread_t t[4];
    struct map_worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct map_worker){img, &expect, 0};
        assert_int_equal(pthread_create(&t[i], NULL, map_worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].bad, 0);
    }
    check_map(img, path);
    free(expect.v);
    qt_close(img);
    free(path);
}

int main(void)
{
    int ret = qt_interop_begin();
    if (ret)
        return ret;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matrix),         cmocka_unit_test(test_snapshots_and_bitmaps),
        cmocka_unit_test(test_backing),        cmocka_unit_test(test_data_files),
        cmocka_unit_test(test_concurrent_map),
    };
    return cmocka_run_group_tests(tests, NULL, qt_teardown);
}
