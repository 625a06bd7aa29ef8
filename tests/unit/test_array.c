/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imgutil.h"
#include "util/array.h"

/* Linked with -Wl,--wrap=realloc: a test can make the next realloc fail. */
void *__real_realloc(void *ptr, size_t size);
void *__wrap_realloc(void *ptr, size_t size);

static bool fail_next_realloc;
static size_t realloc_calls;

void *__wrap_realloc(void *ptr, size_t size)
{
    realloc_calls++;
    if (fail_next_realloc) {
        fail_next_realloc = false;
        return NULL;
    }
    return __real_realloc(ptr, size);
}

struct item {
    uint64_t a, b;
};

static void test_first_growth_uses_minimum(void **state)
{
    (void)state;
    struct item *v = NULL;
    size_t cap = 0;
    assert_int_equal(ARRAY_RESERVE(v, cap, 1), 0);
    assert_non_null(v);
    assert_int_equal(cap, ARRAY_MIN_ITEMS);
    free(v);
}

static void test_doubles_and_keeps_contents(void **state)
{
    (void)state;
    struct item *v = NULL;
    size_t cap = 0, n = 0;
    size_t caps_seen[8] = {0};
    size_t nb_caps = 0;
    realloc_calls = 0;
    for (uint64_t i = 0; i < 200; i++) {
        assert_int_equal(ARRAY_RESERVE(v, cap, n + 1), 0);
        if (nb_caps == 0 || caps_seen[nb_caps - 1] != cap) {
            assert_true(nb_caps < 8);
            caps_seen[nb_caps++] = cap;
        }
        v[n++] = (struct item){i, ~i};
    }
    /* 16, 32, 64, 128, 256: one realloc per doubling, not one per item. */
    assert_int_equal(nb_caps, 5);
    assert_int_equal(realloc_calls, 5);
    for (size_t i = 0; i < nb_caps; i++)
        assert_int_equal(caps_seen[i], (size_t)ARRAY_MIN_ITEMS << i);
    for (uint64_t i = 0; i < 200; i++) {
        assert_int_equal(v[i].a, i);
        assert_int_equal(v[i].b, ~i);
    }
    free(v);
}

static void test_large_need_in_one_step(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t cap = 0;
    assert_int_equal(ARRAY_RESERVE(buf, cap, 1000), 0);
    /* Doubling from the minimum until it covers the need: 16 << 6. */
    assert_int_equal(cap, 1024);
    memset(buf, 'x', 1000);
    /* Already enough room: nothing changes. */
    char *before = buf;
    realloc_calls = 0;
    assert_int_equal(ARRAY_RESERVE(buf, cap, 1024), 0);
    assert_ptr_equal(buf, before);
    assert_int_equal(cap, 1024);
    assert_int_equal(realloc_calls, 0);
    free(buf);
}

static void test_refuses_overflowing_sizes(void **state)
{
    (void)state;
    struct item *v = NULL;
    size_t cap = 0;
    assert_int_equal(ARRAY_RESERVE(v, cap, 3), 0);
    v[0] = (struct item){1, 2};
    struct item *before = v;
    size_t cap_before = cap;
    const size_t huge[] = {SIZE_MAX, SIZE_MAX / sizeof(struct item) + 1,
                           PTRDIFF_MAX / sizeof(struct item) + 1};
    for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
        realloc_calls = 0;
        assert_int_equal(ARRAY_RESERVE(v, cap, huge[i]), -ENOMEM);
        /* Refused before asking the allocator, with a message naming the problem. */
        assert_int_equal(realloc_calls, 0);
        assert_non_null(strstr(img_last_error(), "out of memory: an array of"));
        assert_non_null(strstr(img_last_error(), "is too large"));
        assert_ptr_equal(v, before);
        assert_int_equal(cap, cap_before);
        assert_int_equal(v[0].a, 1);
        assert_int_equal(v[0].b, 2);
    }
    free(v);
}

static void test_doubling_stops_at_the_limit(void **state)
{
    (void)state;
    /* A capacity past half the limit grows to the limit, never wrapping; the allocation fails. */
    struct item *v = NULL;
    size_t max_items = PTRDIFF_MAX / sizeof(struct item);
    size_t cap = max_items / 2 + 1;
    fail_next_realloc = true;
    assert_int_equal(ARRAY_RESERVE(v, cap, max_items), -ENOMEM);
    char expected[128];
    snprintf(expected, sizeof(expected),
             "out of memory: cannot grow an array to %zu items of %zu bytes", max_items,
             sizeof(struct item));
    assert_string_equal(img_last_error(), expected);
    assert_ptr_equal(v, NULL);
    assert_int_equal(cap, max_items / 2 + 1);
}

static void test_failure_leaves_array_intact(void **state)
{
    (void)state;
    uint32_t *v = NULL;
    size_t cap = 0;
    assert_int_equal(ARRAY_RESERVE(v, cap, ARRAY_MIN_ITEMS), 0);
    for (uint32_t i = 0; i < ARRAY_MIN_ITEMS; i++)
        v[i] = i * 7;
    uint32_t *before = v;
    fail_next_realloc = true;
    assert_int_equal(ARRAY_RESERVE(v, cap, ARRAY_MIN_ITEMS + 1), -ENOMEM);
    assert_string_equal(img_last_error(),
                        "out of memory: cannot grow an array to 32 items of 4 bytes");
    assert_ptr_equal(v, before);
    assert_int_equal(cap, ARRAY_MIN_ITEMS);
    for (uint32_t i = 0; i < ARRAY_MIN_ITEMS; i++)
        assert_int_equal(v[i], i * 7);
    /* The next attempt succeeds and keeps the contents. */
    assert_int_equal(ARRAY_RESERVE(v, cap, ARRAY_MIN_ITEMS + 1), 0);
    assert_int_equal(cap, 2 * ARRAY_MIN_ITEMS);
    for (uint32_t i = 0; i < ARRAY_MIN_ITEMS; i++)
        assert_int_equal(v[i], i * 7);
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_growth_uses_minimum),
        cmocka_unit_test(test_doubles_and_keeps_contents),
        cmocka_unit_test(test_large_need_in_one_step),
        cmocka_unit_test(test_refuses_overflowing_sizes),
        cmocka_unit_test(test_doubling_stops_at_the_limit),
        cmocka_unit_test(test_failure_leaves_array_intact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
