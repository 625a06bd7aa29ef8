/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Replacing a table that lock-free readers may hold (the active L1 table, the refcount table):
 * the snapshot switch and the refcount rebuild must keep the old table readable until close,
 * and when there is no memory to keep it, refuse before anything changes, leaving the file and
 * the handle as they were (never switch and then free the old table under its readers).
 *
 * The program is linked with -Wl,--wrap=realloc: the test makes the one realloc() that grows
 * the writer's list of retired tables fail, and no other.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "error.h"
#include "formats/qcow2/qcow2_check.h"
#include "formats/qcow2/qcow2_snapshot_write.h"
#include "formats/qcow2/qcow2_writer.h"
#include "qcow2_test_util.h"

#define BITS 12 /* 4 KiB clusters */
#define CS (1u << BITS)
#define SIZE (64ull << 20)

/* ---- failing the growth of the retired list ---- */

void *__real_realloc(void *ptr, size_t size);
void *__wrap_realloc(void *ptr, size_t size);

/* realloc() of this block fails while set (it is the writer's retired list). */
static void *refuse_realloc_of;

void *__wrap_realloc(void *ptr, size_t size)
{
    if (ptr && ptr == refuse_realloc_of)
        return NULL;
    return __real_realloc(ptr, size);
}

/* Fills the retired list to capacity, so the next reservation must grow it, and fails that. */
static void refuse_next_reservation(struct qcow2_writer *w)
{
    assert_int_equal(qcow2_retire_reserve(w), 0);
    while (w->nb_retired < w->cap_retired) {
        void *filler = malloc(1);
        assert_non_null(filler);
        qcow2_retire_commit(w, filler);
    }
    refuse_realloc_of = w->retired;
}

static void allow_reservations(void)
{
    refuse_realloc_of = NULL;
}

/* ---- the file and the handle, before and after ---- */

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    assert_true(size > 0);
    rewind(f);
    uint8_t *buf = malloc((size_t)size);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    *len = (size_t)size;
    return buf;
}

struct before {
    uint8_t *file;
    size_t file_len;
    uint64_t *l1_table, *refcount_table;
    uint64_t *l1_copy; /* the old active L1 table's entries */
    uint32_t l1_size, nb_snapshots;
    uint64_t l1_table_offset, refcount_table_offset;
};

static void remember(const char *path, const struct qcow2_state *s, struct before *b)
{
    b->file = read_file(path, &b->file_len);
    b->l1_table = s->l1_table;
    b->refcount_table = s->refcount_table;
    b->l1_size = s->l1_size;
    b->nb_snapshots = s->nb_snapshots;
    b->l1_table_offset = s->hdr.l1_table_offset;
    b->refcount_table_offset = s->hdr.refcount_table_offset;
    b->l1_copy = malloc((size_t)s->l1_size * sizeof(uint64_t));
    assert_non_null(b->l1_copy);
    memcpy(b->l1_copy, s->l1_table, (size_t)s->l1_size * sizeof(uint64_t));
}

static void forget(struct before *b)
{
    free(b->file);
    free(b->l1_copy);
}

/* Neither the file nor the handle changed. */
static void expect_unchanged(const char *path, const struct qcow2_state *s, const struct before *b)
{
    size_t len;
    uint8_t *now = read_file(path, &len);
    assert_int_equal(len, b->file_len);
    assert_memory_equal(now, b->file, len);
    free(now);
    assert_ptr_equal(s->l1_table, b->l1_table);
    assert_ptr_equal(s->refcount_table, b->refcount_table);
    assert_int_equal(s->l1_size, b->l1_size);
    assert_int_equal(s->nb_snapshots, b->nb_snapshots);
    assert_int_equal(s->hdr.l1_table_offset, b->l1_table_offset);
    assert_int_equal(s->hdr.refcount_table_offset, b->refcount_table_offset);
    assert_memory_equal(s->l1_table, b->l1_copy, (size_t)b->l1_size * sizeof(uint64_t));
}

static bool is_retired(const struct qcow2_writer *w, const void *table)
{
    for (size_t i = 0; i < w->nb_retired; i++)
        if (w->retired[i] == table)
            return true;
    return false;
}

/* The tables were replaced, and the old ones are kept, still holding what they held. */
static void expect_replaced_and_kept(const struct qcow2_state *s, const struct before *b)
{
    assert_ptr_not_equal(s->l1_table, b->l1_table);
    assert_ptr_not_equal(s->refcount_table, b->refcount_table);
    assert_true(is_retired(s->writer, b->l1_table));
    assert_true(is_retired(s->writer, b->refcount_table));
    /* A reader that loaded the old pointer still reads the old entries (ASan: not freed). */
    assert_memory_equal(b->l1_table, b->l1_copy, (size_t)b->l1_size * sizeof(uint64_t));
}

static void expect_message(const char *text)
{
    const char *msg = img_last_error();
    if (!strstr(msg, text))
        fail_msg("message \"%s\" lacks \"%s\"", msg, text);
}

/* Data clusters 5 and 6 mapped at guest clusters 0 and 1: a consistent image. */
static void build_clean(struct qt_image *im)
{
    qt_build(im, 3, BITS, SIZE, false);
    uint64_t a = qt_add_cluster(im, 0x11);
    uint64_t b = qt_add_cluster(im, 0x22);
    qt_set_l2(im, 0, a | QCOW2_OFLAG_COPIED, 0);
    qt_set_l2(im, 1, b | QCOW2_OFLAG_COPIED, 0);
}

static struct img *open_built(const struct qt_image *im, const char *path)
{
    qt_write(im, path);
    struct img *img;
    int ret = qt_open(path, IMG_OPEN_READ_WRITE, &img);
    if (ret < 0)
        fail_msg("open %s: %s", path, img_last_error());
    return img;
}

static void expect_clean(const char *path)
{
    struct img *img;
    assert_int_equal(qt_open(path, 0, &img), 0);
    struct img_check_result r;
    assert_int_equal(qcow2_check(img, 0, &r), 0);
    qt_close(img);
    assert_int_equal(r.corruptions + r.leaks + r.check_errors, 0);
}

/* ---- snapshots ---- */

static void test_snapshot_switch(void **state)
{
    (void)state;
    struct qt_image im;
    build_clean(&im);
    char *path = qt_path("snapshot.qcow2");
    struct img *img = open_built(&im, path);
    struct qcow2_state *s = img->priv;
    struct before b;

    /* No room to keep the old tables: refused before the switch, nothing changed. */
    remember(path, s, &b);
    refuse_next_reservation(s->writer);
    assert_int_equal(qcow2_snapshot_create(img, "one"), -ENOMEM);
    expect_message("cannot create snapshot 'one'");
    expect_message("out of memory");
    allow_reservations();
    expect_unchanged(path, s, &b);

    /* With room: switched, and the old tables stay readable until close. */
    assert_int_equal(qcow2_snapshot_create(img, "one"), 0);
    assert_int_equal(s->nb_snapshots, 1);
    expect_replaced_and_kept(s, &b);
    forget(&b);

    /* Apply and delete switch the same way. */
    remember(path, s, &b);
    refuse_next_reservation(s->writer);
    assert_int_equal(qcow2_snapshot_apply(img, "one"), -ENOMEM);
    expect_message("cannot apply snapshot 'one'");
    allow_reservations();
    expect_unchanged(path, s, &b);
    assert_int_equal(qcow2_snapshot_apply(img, "one"), 0);
    expect_replaced_and_kept(s, &b);
    forget(&b);

    remember(path, s, &b);
    refuse_next_reservation(s->writer);
    assert_int_equal(qcow2_snapshot_delete(img, "one"), -ENOMEM);
    expect_message("cannot delete snapshot 'one'");
    allow_reservations();
    expect_unchanged(path, s, &b);
    assert_int_equal(qcow2_snapshot_delete(img, "one"), 0);
    assert_int_equal(s->nb_snapshots, 0);
    expect_replaced_and_kept(s, &b);
    forget(&b);

    qt_close(img);
    expect_clean(path);
    free(path);
    qt_free(&im);
}

/* ---- the check's rebuild ---- */

static void log_nothing(void *user, const char *line)
{
    (void)user;
    (void)line;
}

static void test_rebuild_switch(void **state)
{
    (void)state;
    struct qt_image im;
    build_clean(&im);
    /* A refcount of zero for a used cluster makes the repair rebuild the structure... */
    qt_set_refcount(&im, 6, 0);
    /* ...and the L2 table's missing COPIED flag makes the rebuild replace the L1 table too. */
    store_be64(im.buf + qt_cluster(&im, QT_L1), qt_cluster(&im, QT_L2));
    char *path = qt_path("rebuild.qcow2");
    struct img *img = open_built(&im, path);
    struct qcow2_state *s = img->priv;
    unsigned fix = IMG_CHECK_REPAIR_LEAKS | IMG_CHECK_REPAIR_ERRORS;
    struct img_check_result r;
    struct before b;

    remember(path, s, &b);
    refuse_next_reservation(s->writer);
    assert_int_equal(qcow2_check_logged(img, fix, &r, log_nothing, NULL), -ENOMEM);
    expect_message("could not rebuild the refcount structure");
    expect_message("out of memory");
    allow_reservations();
    expect_unchanged(path, s, &b);

    assert_int_equal(qcow2_check_logged(img, fix, &r, log_nothing, NULL), 0);
    assert_int_equal(r.corruptions + r.leaks + r.check_errors, 0);
    expect_replaced_and_kept(s, &b);
    assert_true(s->l1_table[0] & QCOW2_OFLAG_COPIED);
    forget(&b);

    qt_close(img);
    expect_clean(path);
    free(path);
    qt_free(&im);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_switch),
        cmocka_unit_test(test_rebuild_switch),
    };
    return cmocka_run_group_tests(tests, NULL, qt_teardown);
}
