/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* imgutil amend: changes an image's format options in place, as qemu-img amend does. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_commands.h"
#include "cli_image_args.h"
#include "cli_json.h"
#include "cli_progress.h"
#include "cli_util.h"

enum {
    OPT_FORCE = CLI_OPT_OWN,
};

static const char *member_text(const struct json_value *object, const char *key)
{
    const struct json_value *v = json_get(object, key);
    return v && v->type == JSON_STRING ? v->text : NULL;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(member_text(*(const struct json_value *const *)a, "name"),
                  member_text(*(const struct json_value *const *)b, "name"));
}

/* qemu-img's print_amend_option_help(): the amendable options, sorted by name. */
static int print_amend_help(const char *format)
{
    char *text = NULL;
    struct json_value *doc = NULL;
    if (img_amend_options_json(format, &text) < 0 || json_parse(text, &doc) < 0) {
        img_free(text);
        cli_error("%s", img_last_error());
        return CLI_EXIT_FAILURE;
    }
    img_free(text);
    const struct json_value *options = json_get(doc, "options");
    size_t count = options && options->type == JSON_ARRAY ? options->count : 0;
    const struct json_value **sorted = calloc(count + 1, sizeof(*sorted));
    if (!sorted) {
        json_free(doc);
        cli_error("out of memory");
        return CLI_EXIT_FAILURE;
    }
    size_t n = 0;
    for (size_t i = 0; i < count; i++)
        if (member_text(&options->items[i], "name"))
            sorted[n++] = &options->items[i];
    qsort(sorted, n, sizeof(*sorted), by_name);
    printf("Amend options for '%s':\n", format);
    for (size_t i = 0; i < n; i++) {
        const char *type = member_text(sorted[i], "type");
        const char *shown = !type                       ? "str"
                            : strcmp(type, "bool") == 0 ? "bool (on/off)"
                            : strcmp(type, "size") == 0 ? "size"
                            : strcmp(type, "int") == 0  ? "num"
                                                        : "str";
        char key[128];
        snprintf(key, sizeof(key), "%s=<%s>", member_text(sorted[i], "name"), shown);
        const char *help = member_text(sorted[i], "help");
        printf("  %-22s - %s\n", key, help ? help : "");
    }
    free(sorted);
    json_free(doc);
    return 0;
}

/* qemu-img words amend's failures without the file name the library puts first. */
static void print_amend_error(const char *filename)
{
    const char *reason = img_last_error();
    size_t len = strlen(filename);
    if (strncmp(reason, filename, len) == 0 && strncmp(reason + len, ": ", 2) == 0)
        reason += len + 2;
    cli_error("%s", reason);
}

static int run_amend(img *image, const img_opts *opts, bool show_progress)
{
    struct cli_progress progress;
    cli_progress_start(&progress, show_progress);
    img_set_progress(image, cli_progress_update, &progress);
    int ret = img_amend(image, opts);
    if (ret == 0)
        ret = img_flush(image);
    /* qemu-img draws 100% whatever the outcome, then reports the error. */
    cli_progress_finish(&progress, true);
    img_set_progress(image, NULL, NULL);
    if (ret < 0)
        print_amend_error(img_get_filename(image));
    return ret;
}

int cmd_amend(int argc, char **argv)
{
    static const struct option long_options[] = {
        CLI_LONG_HELP,
        {"force", no_argument, NULL, OPT_FORCE},
        {NULL, 0, NULL, 0},
    };
    struct cli_image_args args = {.format = NULL};
    img_opts *opts = NULL;
    bool help = false, show_progress = false, given = false;
    int c;
    while ((c = cli_image_getopt(argc, argv, ":ho:f:t:pq", long_options, &args)) != -1) {
        switch (c) {
        case 'o':
            given = true;
            if (cli_opts_add(&opts, optarg, &help)) {
                img_opts_free(opts);
                return CLI_EXIT_FAILURE;
            }
            break;
        case 't': /* the cache mode: every write here is synced anyway */
            break;
        case 'p':
            show_progress = true;
            break;
        case OPT_FORCE: /* only LUKS keyslot changes ask for it */
            break;
        default:
            img_opts_free(opts);
            return cli_getopt_error(c, argv);
        }
    }
    if (args.stop) {
        img_opts_free(opts);
        return args.status;
    }
    if (!given)
        return cli_usage_error("Must specify options (-o)");
    int status = CLI_EXIT_FAILURE;
    img *image = NULL;
    if (help && args.format) {
        status = print_amend_help(args.format);
        goto out;
    }
    if (optind != argc - 1) {
        cli_error("Expecting one image file name");
        goto out;
    }
    /* As qemu-img, the image is opened with the external data file it names. */
    if (!cli_image_open(argc, argv, "Expecting one image file name", &args,
                        IMG_OPEN_READ_WRITE | IMG_OPEN_ALLOW_DATA_FILE, &image)) {
        status = args.status;
        goto out;
    }
    if (help) {
        status = print_amend_help(img_get_format(image));
        goto out;
    }
    if (run_amend(image, opts, show_progress && !args.quiet) == 0)
        status = 0;
    else if (cli_progress_interrupted())
        cli_progress_reraise();
out:
    img_close(image);
    img_opts_free(opts);
    return status;
}
