/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_check: the format's consistency check, reported as qemu-img check --output=json, with the
 * individual findings (which qemu-img prints on stderr) under "imgutil-findings".
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "progress.h"
#include "util/array.h"
#include "util/json.h"

/* A damaged image can yield a finding per cluster: keep the first ones, count the rest. */
#define MAX_FINDINGS 65536u
/* Room img_last_error() keeps for the findings of a failed check besides its reason. */
#define FAILURE_MESSAGE_MAX 1000u

struct findings {
    char **lines;
    size_t count, cap;
    uint64_t dropped; /* not kept: past MAX_FINDINGS, or out of memory */
};

static void collect_finding(void *user, const char *line)
{
    struct findings *f = user;
    if (f->count == MAX_FINDINGS) {
        f->dropped++;
        return;
    }
    if (ARRAY_RESERVE(f->lines, f->cap, f->count + 1) < 0) {
        f->dropped++;
        return;
    }
    char *copy = strdup(line);
    if (!copy) {
        f->dropped++;
        return;
    }
    f->lines[f->count++] = copy;
}

static void findings_free(struct findings *f)
{
    for (size_t i = 0; i < f->count; i++)
        free(f->lines[i]);
    free(f->lines);
}

static void write_findings(struct json_writer *w, const struct findings *f)
{
    if (f->count == 0 && f->dropped == 0)
        return;
    json_array_begin(w, "imgutil-findings");
    for (size_t i = 0; i < f->count; i++)
        json_string(w, NULL, f->lines[i]);
    if (f->dropped) {
        char more[64];
        snprintf(more, sizeof(more), "(%" PRIu64 " more findings not listed)", f->dropped);
        json_string(w, NULL, more);
    }
    json_array_end(w);
}

static char *check_report_json(struct img *img, const struct img_check_result *r,
                               const struct findings *f)
{
    struct json_writer w;
    json_init(&w);
    /* qemu-img's field order; counters are printed only when non-zero. */
    json_object_begin(&w, NULL);
    if (r->image_end_offset)
        json_u64(&w, "image-end-offset", r->image_end_offset);
    if (r->compressed_clusters)
        json_u64(&w, "compressed-clusters", r->compressed_clusters);
    if (r->total_clusters)
        json_u64(&w, "total-clusters", r->total_clusters);
    if (r->corruptions)
        json_u64(&w, "corruptions", r->corruptions);
    if (r->corruptions_fixed)
        json_u64(&w, "corruptions-fixed", r->corruptions_fixed);
    json_u64(&w, "check-errors", r->check_errors);
    if (r->leaks)
        json_u64(&w, "leaks", r->leaks);
    if (r->leaks_fixed)
        json_u64(&w, "leaks-fixed", r->leaks_fixed);
    if (r->allocated_clusters)
        json_u64(&w, "allocated-clusters", r->allocated_clusters);
    json_string(&w, "filename", img->filename);
    json_string(&w, "format", img->fmt->name);
    if (r->fragmented_clusters)
        json_u64(&w, "fragmented-clusters", r->fragmented_clusters);
    write_findings(&w, f);
    json_object_end(&w);
    return json_finish(&w);
}

/*
 * A failed check has no report: its findings go before the reason in img_last_error(), the
 * latest ones (those nearest the failure) when not all fit.
 */
static void put_findings_in_error(const struct findings *f)
{
    if (f->count == 0)
        return;
    char reason[FAILURE_MESSAGE_MAX + 1];
    snprintf(reason, sizeof(reason), "%s", img_last_error());
    size_t used = strlen(reason);
    size_t first = f->count;
    while (first > 0) {
        size_t len = strlen(f->lines[first - 1]) + 1;
        if (used + len > FAILURE_MESSAGE_MAX)
            break;
        used += len;
        first--;
    }
    char message[FAILURE_MESSAGE_MAX + 1];
    size_t at = 0;
    for (size_t i = first; i < f->count; i++)
        at += (size_t)snprintf(message + at, sizeof(message) - at, "%s\n", f->lines[i]);
    snprintf(message + at, sizeof(message) - at, "%s", reason);
    img_error(0, "%s", message);
}

IMG_API int img_check(img *img, unsigned flags, char **report)
{
    if (report)
        *report = NULL;
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    if (!img->fmt->check)
        return img_error(-ENOTSUP, "%s: format %s does not support checks", img->filename,
                         img->fmt->name);
    if ((flags & (IMG_CHECK_REPAIR_LEAKS | IMG_CHECK_REPAIR_ERRORS)) && !img->writable)
        return img_error(-EROFS, "%s: repairing needs the image opened read-write", img->filename);
    struct findings findings = {0};
    struct img_check_result result;
    memset(&result, 0, sizeof(result));
    result.log = collect_finding;
    result.log_user = &findings;
    /* Repairs rewrite tables the data path reads: they run alone. A plain check shares. */
    bool repair = (flags & (IMG_CHECK_REPAIR_LEAKS | IMG_CHECK_REPAIR_ERRORS)) != 0;
    if (repair)
        img_drain_enter(img);
    else
        img_io_enter(img);
    struct img_op op;
    img_op_begin(&op, img, NULL, NULL);
    int ret = img->fmt->check(img, flags, &result);
    img_op_end(&op);
    img_io_leave(img);
    if (ret < 0) {
        put_findings_in_error(&findings);
    } else if (report) {
        *report = check_report_json(img, &result, &findings);
        if (!*report)
            ret = img_error(-ENOMEM, "out of memory");
    }
    findings_free(&findings);
    return ret;
}
