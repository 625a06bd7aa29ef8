/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* imgutil check: metadata consistency check with qemu-img check's output and exit codes. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli_commands.h"
#include "cli_json.h"
#include "cli_util.h"

enum {
    OPT_OUTPUT = 256,
};

/* qemu-img check's exit codes. */
#define CHECK_EXIT_CORRUPT 2
#define CHECK_EXIT_LEAKS 3
#define CHECK_EXIT_UNSUPPORTED 63

struct check_result {
    int64_t check_errors, corruptions, leaks, corruptions_fixed, leaks_fixed;
    int64_t total_clusters, allocated_clusters, fragmented_clusters, compressed_clusters;
    int64_t image_end_offset;
};

static void read_result(const struct json_value *report, struct check_result *r)
{
    r->check_errors = json_i64_or(report, "check-errors", 0);
    r->corruptions = json_i64_or(report, "corruptions", 0);
    r->leaks = json_i64_or(report, "leaks", 0);
    r->corruptions_fixed = json_i64_or(report, "corruptions-fixed", 0);
    r->leaks_fixed = json_i64_or(report, "leaks-fixed", 0);
    r->total_clusters = json_i64_or(report, "total-clusters", 0);
    r->allocated_clusters = json_i64_or(report, "allocated-clusters", 0);
    r->fragmented_clusters = json_i64_or(report, "fragmented-clusters", 0);
    r->compressed_clusters = json_i64_or(report, "compressed-clusters", 0);
    r->image_end_offset = json_i64_or(report, "image-end-offset", 0);
}

static void print_human(const struct check_result *r)
{
    if (r->leaks_fixed || r->corruptions_fixed)
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %" PRId64 " leaked clusters\n"
               "    %" PRId64 " corruptions\n\n"
               "Double checking the fixed image now...\n",
               r->leaks_fixed, r->corruptions_fixed);

    if (!r->corruptions && !r->leaks && !r->check_errors) {
        printf("No errors were found on the image.\n");
    } else {
        if (r->corruptions)
            printf("\n%" PRId64 " errors were found on the image.\n"
                   "Data may be corrupted, or further writes to the image may corrupt it.\n",
                   r->corruptions);
        if (r->leaks)
            printf("\n%" PRId64 " leaked clusters were found on the image.\n"
                   "This means waste of disk space, but no harm to data.\n",
                   r->leaks);
        if (r->check_errors)
            printf("\n%" PRId64 " internal errors have occurred during the check.\n",
                   r->check_errors);
    }

    if (r->total_clusters && r->allocated_clusters)
        printf("%" PRId64 "/%" PRId64 " = %0.2f%% allocated, %0.2f%% fragmented, "
               "%0.2f%% compressed clusters\n",
               r->allocated_clusters, r->total_clusters,
               (double)r->allocated_clusters * 100.0 / (double)r->total_clusters,
               (double)r->fragmented_clusters * 100.0 / (double)r->allocated_clusters,
               (double)r->compressed_clusters * 100.0 / (double)r->allocated_clusters);
    if (r->image_end_offset)
        printf("Image end offset: %" PRId64 "\n", r->image_end_offset);
}

/* The library's extension to qemu-img's report: findings qemu-img prints on stderr instead. */
#define FINDINGS_KEY "imgutil-findings"

static void print_findings(const struct json_value *report)
{
    const struct json_value *findings = json_get(report, FINDINGS_KEY);
    if (!findings || findings->type != JSON_ARRAY)
        return;
    for (size_t i = 0; i < findings->count; i++)
        if (findings->items[i].type == JSON_STRING)
            fprintf(stderr, "%s\n", findings->items[i].text);
}

/* The report as qemu-img check --output=json prints it: without the findings. */
static void print_json_report(const struct json_value *report)
{
    printf("{");
    bool first = true;
    for (size_t i = 0; i < report->count; i++) {
        if (strcmp(report->keys[i], FINDINGS_KEY) == 0)
            continue;
        printf("%s\n    ", first ? "" : ",");
        json_write_string(report->keys[i], stdout);
        printf(": ");
        json_write_compact(&report->items[i], stdout);
        first = false;
    }
    printf("\n}\n");
}

/*
 * A failed check's message is its findings, one per line, then the reason: the findings go to
 * stderr as qemu-img prints them, the reason after "Check failed".
 */
static void print_failure(const char *library_message, const char *filename)
{
    char message[2048];
    snprintf(message, sizeof(message), "%s", library_message);
    const char *reason = strrchr(message, '\n');
    if (reason) {
        fprintf(stderr, "%.*s\n", (int)(reason - message), message);
        reason++;
    } else {
        reason = message;
    }
    /* The library names the image; qemu-img's line says only the reason. */
    size_t n = strlen(filename);
    if (strncmp(reason, filename, n) == 0 && strncmp(reason + n, ": ", 2) == 0)
        reason += n + 2;
    cli_error("Check failed: %s", reason);
}

/* Runs the check and reports it; returns the exit status. */
static int run_check(img *image, unsigned repair, enum cli_output output, bool quiet)
{
    char *json = NULL;
    int ret = img_check(image, repair, &json);
    if (ret == -ENOTSUP) {
        cli_error("This image format does not support checks");
        return CHECK_EXIT_UNSUPPORTED;
    }
    if (ret < 0) {
        print_failure(img_last_error(), img_get_filename(image));
        return CLI_EXIT_FAILURE;
    }

    struct json_value *report;
    ret = json_parse(json, &report);
    img_free(json);
    if (ret < 0 || report->type != JSON_OBJECT) {
        if (ret == 0)
            json_free(report);
        cli_error("check: the library returned unreadable JSON");
        return CLI_EXIT_FAILURE;
    }
    struct check_result r;
    read_result(report, &r);
    /* qemu-img's block driver prints these as it finds them, -q or not. */
    print_findings(report);
    if (!quiet) {
        if (output == CLI_OUTPUT_JSON)
            print_json_report(report);
        else
            print_human(&r);
    }
    json_free(report);

    if (r.check_errors) {
        cli_error("Check failed");
        return CLI_EXIT_FAILURE;
    }
    if (r.corruptions)
        return CHECK_EXIT_CORRUPT;
    if (r.leaks)
        return CHECK_EXIT_LEAKS;
    return 0;
}

int cmd_check(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"format", required_argument, NULL, 'f'},
        {"repair", required_argument, NULL, 'r'},
        {"force-share", no_argument, NULL, 'U'},
        {"output", required_argument, NULL, OPT_OUTPUT},
        {NULL, 0, NULL, 0},
    };
    const char *format = NULL;
    enum cli_output output = CLI_OUTPUT_HUMAN;
    unsigned share = 0, repair = 0;
    bool quiet = false;
    int c;

    while ((c = getopt_long(argc, argv, ":hf:r:qU", long_options, NULL)) != -1) {
        switch (c) {
        case 'h':
            cli_print_help();
            return 0;
        case 'f':
            format = optarg;
            break;
        case 'r':
            if (strcmp(optarg, "leaks") == 0)
                repair = IMG_CHECK_REPAIR_LEAKS;
            else if (strcmp(optarg, "all") == 0)
                repair = IMG_CHECK_REPAIR_LEAKS | IMG_CHECK_REPAIR_ERRORS;
            else
                return cli_usage_error(
                    "Unknown option value for -r (expecting 'leaks' or 'all'): %s", optarg);
            break;
        case 'q':
            quiet = true;
            break;
        case 'U':
            share = IMG_OPEN_FORCE_SHARE;
            break;
        case OPT_OUTPUT:
            if (cli_parse_output(optarg, &output) < 0)
                return CLI_EXIT_FAILURE;
            break;
        default:
            return cli_getopt_error(c, argv);
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("Expecting one image file name");
    const char *filename = argv[optind];

    /*
     * The check reads this image's metadata only: its backing file need not be there. As
     * qemu-img check, it may repair an image marked corrupt, and a dirty image is repaired by
     * the check (which says what it did) rather than silently at open.
     */
    unsigned flags = IMG_OPEN_NO_BACKING | IMG_OPEN_CHECK | share;
    flags |= repair ? IMG_OPEN_READ_WRITE : IMG_OPEN_READ_ONLY;
    img *image;
    if (cli_open_image(&image, filename, format, flags) < 0)
        return CLI_EXIT_FAILURE;
    int status = run_check(image, repair, output, quiet);
    img_close(image);
    return status;
}
