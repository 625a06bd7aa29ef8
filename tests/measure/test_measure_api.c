/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_measure(): its contract beside the figures (which test_measure_cli.sh compares with
 * qemu-img): results in qemu-img's JSON, "bitmaps" only for a qcow2 v3 source and target,
 * and refusals with their codes and messages, for every format the library knows.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <imgutil.h>

#include "api_check.h"

static void expect_json(img *src, uint64_t size, const char *format, const img_opts *opts,
                        const char *want)
{
    char *json = (char *)"unset";
    int ret = img_measure(src, size, format, opts, &json);
    CHECK(ret == 0, "measure %s: %d", format, ret);
    CHECK(ret != 0 || (json && strcmp(json, want) == 0), "measure %s: got %s, want %s", format,
          ret == 0 && json ? json : "(none)", want);
    img_free(ret == 0 ? json : NULL);
}

static void expect_refusal(img *src, uint64_t size, const char *format, const img_opts *opts,
                           int code, const char *message)
{
    char *json = (char *)"unset";
    int ret = img_measure(src, size, format, opts, &json);
    CHECK(ret == code, "measure %s: %d, want %d", format ? format : "(null)", ret, code);
    CHECK(json == NULL, "measure %s: *json not cleared on failure", format ? format : "(null)");
    CHECK(strstr(img_last_error(), message) != NULL, "message lacks '%s'", message);
}

int main(void)
{
    char dir[] = "/tmp/imgutil-measure.XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char qcow2_path[64], v2_path[64], raw_path[64];
    snprintf(qcow2_path, sizeof(qcow2_path), "%s/v3.qcow2", dir);
    snprintf(v2_path, sizeof(v2_path), "%s/v2.qcow2", dir);
    snprintf(raw_path, sizeof(raw_path), "%s/a.raw", dir);

    /* Figures of qemu-img 7.2 measure --size 1G (-O qcow2 / -O raw). */
    expect_json(NULL, 1u << 30, "qcow2", NULL,
                "{\n    \"required\": 393216,\n    \"fully-allocated\": 1074135040\n}");
    expect_json(NULL, 1023, "raw", NULL,
                "{\n    \"required\": 1024,\n    \"fully-allocated\": 1024\n}");

    img_opts *opts = NULL, *v2 = NULL, *cs = NULL;
    CHECK(img_opts_new(&opts) == 0 && img_opts_new(&v2) == 0 && img_opts_new(&cs) == 0, "options");
    CHECK(opts && v2 && img_opts_set(v2, "compat", "0.10") == 0, "options");
    CHECK(img_create(qcow2_path, "qcow2", 1u << 20, NULL) == 0, "create %s", qcow2_path);
    CHECK(img_create(v2_path, "qcow2", 1u << 20, v2) == 0, "create %s", v2_path);
    CHECK(img_create(raw_path, "raw", 1u << 20, NULL) == 0, "create %s", raw_path);
    img *v3_src = NULL, *v2_src = NULL, *raw_src = NULL;
    CHECK(img_open(&v3_src, qcow2_path, NULL, IMG_OPEN_READ_ONLY, NULL) == 0, "open v3");
    CHECK(img_open(&v2_src, v2_path, NULL, IMG_OPEN_READ_ONLY, NULL) == 0, "open v2");
    CHECK(img_open(&raw_src, raw_path, NULL, IMG_OPEN_READ_ONLY, NULL) == 0, "open raw");

    /* "bitmaps" when both ends keep persistent bitmaps (qemu-img measure -O qcow2 empty.qcow2). */
    if (v3_src && v2_src && raw_src) {
        expect_json(v3_src, 0, "qcow2", NULL,
                    "{\n    \"bitmaps\": 0,\n    \"required\": 327680,\n"
                    "    \"fully-allocated\": 1376256\n}");
        expect_json(v3_src, 0, "qcow2", v2,
                    "{\n    \"required\": 327680,\n    \"fully-allocated\": 1376256\n}");
        expect_json(v2_src, 0, "qcow2", NULL,
                    "{\n    \"required\": 327680,\n    \"fully-allocated\": 1376256\n}");
        expect_json(raw_src, 0, "qcow2", NULL,
                    "{\n    \"required\": 327680,\n    \"fully-allocated\": 1376256\n}");
        expect_json(v3_src, 0, "raw", NULL,
                    "{\n    \"required\": 1048576,\n    \"fully-allocated\": 1048576\n}");
        expect_refusal(v3_src, 4096, "qcow2", NULL, -EINVAL,
                       "--size N cannot be used together with a filename.");
    }

    /* Refusals. */
    CHECK(img_measure(NULL, 1, "raw", NULL, NULL) == -EINVAL, "NULL json");
    expect_refusal(NULL, 1, NULL, NULL, -EINVAL, "no target format");
    expect_refusal(NULL, 1, "nosuchformat", NULL, -ENOENT, "Unknown file format 'nosuchformat'");
    CHECK(img_opts_set(opts, "nosuchoption", "1") == 0, "options");
    expect_refusal(NULL, 1, "qcow2", opts, -EINVAL, "Invalid parameter 'nosuchoption'");
    CHECK(cs && img_opts_set(cs, "cluster_size", "512") == 0, "options");
    expect_refusal(NULL, 1ull << 50, "qcow2", cs, -EFBIG,
                   "The image size is too large (try using a larger cluster size)");

    /* Every format the library writes measures; the others say they cannot, in qemu-img's
     * words. */
    for (int i = 0; i < img_format_count(); i++) {
        const char *name = img_format_name(i);
        char *json = NULL;
        int ret = img_measure(NULL, 1u << 20, name, NULL, &json);
        CHECK(ret == 0 || img_format_supports(name, "create") != 1, "%s cannot measure: %s", name,
              img_last_error());
        if (ret == 0) {
            CHECK(json && strstr(json, "\"required\": ") && strstr(json, "\"fully-allocated\": "),
                  "%s: %s", name, json ? json : "(null)");
        } else {
            char want[128];
            snprintf(want, sizeof(want), "Block driver '%s' does not support size measurement",
                     name);
            CHECK(ret == -ENOTSUP && strcmp(img_last_error(), want) == 0, "%s: %d", name, ret);
        }
        img_free(json);
    }

    img_close(v3_src);
    img_close(v2_src);
    img_close(raw_src);
    img_opts_free(opts);
    img_opts_free(v2);
    img_opts_free(cs);
    unlink(qcow2_path);
    unlink(v2_path);
    unlink(raw_path);
    rmdir(dir);
    return failures ? 1 : 0;
}
