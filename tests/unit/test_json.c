/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include "util/json.h"

static void test_qemu_layout(void **state)
{
    struct json_writer w;
    json_init(&w);
    json_object_begin(&w, NULL);
    json_u64(&w, "virtual-size", 1073741824);
    json_string(&w, "filename", "a \"b\"\\\n.qcow2");
    json_object_begin(&w, "format-specific");
    json_string(&w, "type", "qcow2");
    json_object_end(&w);
    json_array_begin(&w, "snapshots");
    json_array_end(&w);
    json_bool(&w, "dirty-flag", false);
    json_i64(&w, "neg", -5);
    json_object_end(&w);
    char *text = json_finish(&w);
    assert_string_equal(text, "{\n"
                              "    \"virtual-size\": 1073741824,\n"
                              "    \"filename\": \"a \\\"b\\\"\\\\\\n.qcow2\",\n"
                              "    \"format-specific\": {\n"
                              "        \"type\": \"qcow2\"\n"
                              "    },\n"
                              "    \"snapshots\": [],\n"
                              "    \"dirty-flag\": false,\n"
                              "    \"neg\": -5\n"
                              "}");
    free(text);
}

static void test_arrays(void **state)
{
    struct json_writer w;
    json_init(&w);
    json_array_begin(&w, NULL);
    json_object_begin(&w, NULL);
    json_string(&w, "id", "1");
    json_object_end(&w);
    json_object_begin(&w, NULL);
    json_object_end(&w);
    json_array_end(&w);
    char *text = json_finish(&w);
    assert_string_equal(text, "[\n    {\n        \"id\": \"1\"\n    },\n    {}\n]");
    free(text);

    json_init(&w);
    json_array_begin(&w, NULL);
    json_array_end(&w);
    text = json_finish(&w);
    assert_string_equal(text, "[]");
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qemu_layout),
        cmocka_unit_test(test_arrays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
