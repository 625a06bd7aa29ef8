/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The write path of the public API as a command line, for the write test scripts. Only
 * imgutil.h is used: this is what an embedding program sees.
 *
 *   write_driver create PATH FORMAT SIZE [OPTIONS]
 *       img_create with OPTIONS parsed by img_opts_parse ("cluster_size=4096,compat=1.1").
 *   write_driver run IMAGE [RUN OPTIONS]
 *       Applies operations (see ops.h) to IMAGE and to a shadow of its content, checking the
 *       image against the shadow after each one, then opens the image again read-only and
 *       compares all of it. Each operation is printed to stdout before it runs, so the output
 *       is a script that replays the run.
 *         -f FORMAT              open with this format instead of probing
 *         --script FILE          operations from FILE ("-": stdin)
 *         --random SEED --ops N  N random operations from SEED
 *         --shadow-in FILE       the content before the first operation (default: zeros)
 *         --backing-raw FILE     the backing chain's content (for --discard keep-or-backing)
 *         --discard MODEL        zeroes | keep-or-backing | hint (see runner.h)
 *         --cluster N --subcluster N   geometry that random offsets aim at, whole-cluster
 *                                      discards are judged by
 *         --min-size N --max-size N    bounds for random resizes
 *         --no-resize --no-discard --resize-prealloc --resize-may-refuse
 *         --shadow-out FILE      the expected content at the end, as a raw file
 *         --check-report FILE    img_check's JSON report of the final image
 *         --snapshot NAME=FILE   the content of an existing internal snapshot, so that the
 *                                script may apply it (repeatable)
 *   write_driver snapshot-list IMAGE
 *       Prints img_snapshot_list's JSON.
 *   write_driver check IMAGE [leaks|all]
 *       Prints img_check's JSON report; with an argument, repairs (leaks, or everything).
 *
 * Exit status: 0 success, 1 a failed call or a content mismatch (described on stderr),
 * 2 bad usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgutil.h"
#include "ops.h"
#include "runner.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2

static int usage(const char *why)
{
    fprintf(stderr, "write_driver: %s\nusage: write_driver create|run|snapshot-list|check ...\n",
            why);
    return EXIT_USAGE;
}

static int cmd_create(int argc, char **argv)
{
    uint64_t size;
    if (argc < 3 || argc > 4 || !op_parse_number(argv[2], &size))
        return usage("create PATH FORMAT SIZE [OPTIONS]");
    img_opts *opts = NULL;
    int ret = img_opts_new(&opts);
    if (ret == 0 && argc == 4)
        ret = img_opts_parse(opts, argv[3]);
    if (ret == 0)
        ret = img_create(argv[0], argv[1], size, opts);
    img_opts_free(opts);
    if (ret < 0) {
        fprintf(stderr, "img_create('%s', %s, %" PRIu64 ", '%s') returned %d (%s): %s\n", argv[0],
                argv[1], size, argc == 4 ? argv[3] : "", ret, img_strerror(ret), img_last_error());
        return EXIT_FAILED;
    }
    return 0;
}

static int cmd_snapshot_list(int argc, char **argv)
{
    if (argc != 1)
        return usage("snapshot-list IMAGE");
    img *image = NULL;
    int ret = img_open(&image, argv[0], NULL, IMG_OPEN_READ_ONLY, NULL);
    char *json = NULL;
    if (ret == 0)
        ret = img_snapshot_list(image, &json);
    if (ret < 0) {
        fprintf(stderr, "snapshot list of %s: %d (%s): %s\n", argv[0], ret, img_strerror(ret),
                img_last_error());
        img_close(image);
        return EXIT_FAILED;
    }
    printf("%s\n", json);
    img_free(json);
    img_close(image);
    return 0;
}

static int cmd_check(int argc, char **argv)
{
    unsigned flags = 0;
    if (argc == 2 && strcmp(argv[1], "leaks") == 0)
        flags = IMG_CHECK_REPAIR_LEAKS;
    else if (argc == 2 && strcmp(argv[1], "all") == 0)
        flags = IMG_CHECK_REPAIR_LEAKS | IMG_CHECK_REPAIR_ERRORS;
    else if (argc != 1)
        return usage("check IMAGE [leaks|all]");
    img *image = NULL;
    int ret =
        img_open(&image, argv[0], NULL, flags ? IMG_OPEN_READ_WRITE : IMG_OPEN_READ_ONLY, NULL);
    char *report = NULL;
    if (ret == 0)
        ret = img_check(image, flags, &report);
    if (ret < 0) {
        fprintf(stderr, "check of %s: %d (%s): %s\n", argv[0], ret, img_strerror(ret),
                img_last_error());
        img_close(image);
        return EXIT_FAILED;
    }
    printf("%s\n", report);
    img_free(report);
    img_close(image);
    return 0;
}

struct run_args {
    const char *script, *shadow_in, *backing_raw, *shadow_out, *check_report;
    bool random;
    uint64_t seed, ops;
    struct opgen gen;
};

static int parse_discard_model(const char *text, enum discard_model *out)
{
    if (strcmp(text, "zeroes") == 0)
        *out = DISCARD_ZEROES;
    else if (strcmp(text, "keep-or-backing") == 0)
        *out = DISCARD_KEEP_OR_BACKING;
    else if (strcmp(text, "hint") == 0)
        *out = DISCARD_HINT;
    else
        return -1;
    return 0;
}

/* NAME=FILE: the snapshot's content, for snapshot-apply of a snapshot made elsewhere. */
static int add_known_snapshot(struct runner *r, const char *spec)
{
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || (size_t)(eq - spec) >= OP_NAME_MAX) {
        fprintf(stderr, "write_driver: --snapshot wants NAME=FILE, not '%s'\n", spec);
        return -1;
    }
    struct saved_snapshot *grown = realloc(r->snapshots, (r->snapshot_count + 1) * sizeof(*grown));
    if (!grown)
        return -1;
    r->snapshots = grown;
    struct saved_snapshot *s = &r->snapshots[r->snapshot_count];
    snprintf(s->name, sizeof(s->name), "%.*s", (int)(eq - spec), spec);
    if (shadow_load_file(&s->content, eq + 1) < 0)
        return -1;
    r->snapshot_count++;
    return 0;
}

static int parse_run_args(int argc, char **argv, struct runner *r, struct run_args *a)
{
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t *number = NULL;
        const char **text = NULL;
        if (strcmp(opt, "--no-resize") == 0) {
            a->gen.resize = false;
            continue;
        } else if (strcmp(opt, "--no-discard") == 0) {
            a->gen.discard = false;
            continue;
        } else if (strcmp(opt, "--resize-prealloc") == 0) {
            a->gen.resize_prealloc = true;
            continue;
        } else if (strcmp(opt, "--resize-may-refuse") == 0) {
            r->resize_may_refuse = true;
            continue;
        } else if (!val) {
            fprintf(stderr, "write_driver: %s needs a value\n", opt);
            return -1;
        } else if (strcmp(opt, "-f") == 0) {
            r->format = val;
        } else if (strcmp(opt, "--discard") == 0) {
            if (parse_discard_model(val, &r->discard) < 0) {
                fprintf(stderr, "write_driver: unknown discard model '%s'\n", val);
                return -1;
            }
        } else if (strcmp(opt, "--snapshot") == 0) {
            if (add_known_snapshot(r, val) < 0)
                return -1;
        } else if (strcmp(opt, "--script") == 0) {
            text = &a->script;
        } else if (strcmp(opt, "--shadow-in") == 0) {
            text = &a->shadow_in;
        } else if (strcmp(opt, "--backing-raw") == 0) {
            text = &a->backing_raw;
        } else if (strcmp(opt, "--shadow-out") == 0) {
            text = &a->shadow_out;
        } else if (strcmp(opt, "--check-report") == 0) {
            text = &a->check_report;
        } else if (strcmp(opt, "--random") == 0) {
            number = &a->seed;
            a->random = true;
        } else if (strcmp(opt, "--ops") == 0) {
            number = &a->ops;
        } else if (strcmp(opt, "--cluster") == 0) {
            number = &r->cluster;
        } else if (strcmp(opt, "--subcluster") == 0) {
            number = &a->gen.subcluster;
        } else if (strcmp(opt, "--min-size") == 0) {
            number = &a->gen.min_size;
        } else if (strcmp(opt, "--max-size") == 0) {
            number = &a->gen.max_size;
        } else {
            fprintf(stderr, "write_driver: unknown option %s\n", opt);
            return -1;
        }
        if (text)
            *text = val;
        if (number && !op_parse_number(val, number)) {
            fprintf(stderr, "write_driver: %s: '%s' is not a number\n", opt, val);
            return -1;
        }
        i++;
    }
    if (r->cluster == 0 || (r->cluster & (r->cluster - 1))) {
        fprintf(stderr, "write_driver: --cluster must be a power of two\n");
        return -1;
    }
    if (a->random == (a->script != NULL)) {
        fprintf(stderr, "write_driver: give exactly one of --script and --random\n");
        return -1;
    }
    return 0;
}

static int run_script(struct runner *r, const char *path)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) {
        fprintf(stderr, "write_driver: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[1024];
    int ret = 0;
    while (ret == 0 && fgets(line, sizeof(line), f)) {
        char *p = line + strspn(line, " \t");
        if (*p == '#' || *p == '\n' || *p == '\0')
            continue;
        struct op op;
        ret = op_parse(p, &op);
        if (ret == 0) {
            printf("%s", p);
            fflush(stdout);
            ret = runner_apply(r, &op);
        }
    }
    if (f != stdin)
        fclose(f);
    return ret;
}

static int run_random(struct runner *r, struct run_args *a)
{
    rng_seed(&a->gen.rng, a->seed);
    a->gen.cluster = r->cluster;
    if (!a->gen.subcluster)
        a->gen.subcluster = r->cluster;
    if (!a->gen.max_size)
        a->gen.max_size = r->cur.size;
    if (!a->gen.min_size)
        a->gen.min_size = r->cur.size < 65536 ? r->cur.size : 65536;
    a->gen.raw = strcmp(img_get_format(r->img), "raw") == 0;
    for (uint64_t i = 0; i < a->ops; i++) {
        struct op op;
        char text[OP_NAME_MAX + 64];
        opgen_next(&a->gen, r->cur.size, &op);
        op_format(&op, text, sizeof(text));
        printf("%s\n", text);
        fflush(stdout);
        if (runner_apply(r, &op) < 0)
            return -1;
    }
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    if (argc < 1)
        return usage("run IMAGE [OPTIONS]");
    struct runner r = {.path = argv[0], .discard = DISCARD_ZEROES, .cluster = 65536};
    struct run_args a = {.gen = {.resize = true, .discard = true}};
    if (parse_run_args(argc, argv, &r, &a) < 0)
        return EXIT_USAGE;
    snprintf(r.when, sizeof(r.when), "before the first operation");
    int ret = runner_open(&r);
    int64_t size = ret == 0 ? img_get_size(r.img) : -1;
    if (ret == 0 && size < 0) {
        fprintf(stderr, "img_get_size: %" PRId64 ": %s\n", size, img_last_error());
        ret = -1;
    }
    if (ret == 0)
        ret = a.shadow_in ? shadow_load(&r.cur, a.shadow_in, (uint64_t)size)
                          : shadow_init(&r.cur, (uint64_t)size);
    if (ret == 0 && a.backing_raw)
        ret = shadow_load_file(&r.backing, a.backing_raw);
    /* The starting point itself must read back as described. */
    if (ret == 0)
        ret = shadow_verify_all(&r.cur, r.img, r.when);
    if (ret == 0)
        ret = a.random ? run_random(&r, &a) : run_script(&r, a.script);
    if (ret == 0)
        ret = runner_finish(&r, a.check_report);
    if (ret == 0 && a.shadow_out)
        ret = shadow_save(&r.cur, a.shadow_out);
    runner_free(&r);
    return ret == 0 ? 0 : EXIT_FAILED;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage("no command");
    const char *cmd = argv[1];
    if (strcmp(cmd, "create") == 0)
        return cmd_create(argc - 2, argv + 2);
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 2, argv + 2);
    if (strcmp(cmd, "snapshot-list") == 0)
        return cmd_snapshot_list(argc - 2, argv + 2);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc - 2, argv + 2);
    return usage("unknown command");
}
