/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* imgutil: a disk image tool on top of libimgutil that speaks qemu-img's command line. */
#include <stdio.h>
#include <string.h>

#include "cli_commands.h"
#include "cli_util.h"

#define STR(x) #x
#define XSTR(x) STR(x)
#define TOOL_VERSION                                                                               \
    XSTR(IMGUTIL_VERSION_MAJOR) "." XSTR(IMGUTIL_VERSION_MINOR) "." XSTR(IMGUTIL_VERSION_MICRO)

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
};

/* One command per line: adding a command adds one line. */
// clang-format off
static const struct command commands[] = {
    {"check", cmd_check},
    {"compare", cmd_compare},
    {"convert", cmd_convert},
    {"create", cmd_create},
    {"info", cmd_info},
    {"map", cmd_map},
    {"resize", cmd_resize},
    {"snapshot", cmd_snapshot},
    {"measure", cmd_measure},
    {"dd", cmd_dd},
    {"commit", cmd_commit},
    {"rebase", cmd_rebase},
    {"amend", cmd_amend},
    {"bitmap", cmd_bitmap},
};
// clang-format on

static void print_version(void)
{
    printf(CLI_NAME " version " TOOL_VERSION " (libimgutil %s)\n", img_version());
}

void cli_print_help(void)
{
    print_version();
    printf("usage: " CLI_NAME " [standard options] command [command options]\n"
           "Disk image utility (speaks the qemu-img command line)\n"
           "\n"
           "    '-h', '--help'       display this help and exit\n"
           "    '-V', '--version'    output version information and exit\n"
           "\n"
           "Command syntax:\n"
           "  amend [-f fmt] [-p] [-q] [-o options] [--force] filename\n"
           "  bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... "
           "[-b source_file [-F source_fmt]] [-g granularity] [-f fmt] filename bitmap\n"
           "  check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-U] filename\n"
           "  commit [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] filename\n"
           "  compare [-f fmt] [-F fmt] [-p] [-q] [-s] [-U] filename1 filename2\n"
           "  convert [-U] [-c] [-p] [-q] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] "
           "[-o options] [-S sparse_size] [-m num_coroutines] [-W] filename output_filename\n"
           "  create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename "
           "[size]\n"
           "  info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename\n"
           "  map [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] "
           "filename\n"
           "  measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [-f fmt] "
           "[-l snapshot_param] filename]\n"
           "  dd [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] "
           "if=input of=output\n"
           "  snapshot [-U] [-q] [-f fmt] [-l | -a snapshot | -c snapshot | -d snapshot] "
           "filename\n"
           "  resize [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size\n"
           "  rebase [-f fmt] [-t cache] [-T src_cache] [-p] [-q] [-u] [-U] -b backing_file "
           "[-F backing_fmt] filename\n"
           "\n"
           "Command parameters:\n"
           "  'filename' is a disk image filename\n"
           "  'fmt' is the disk image format. It is guessed automatically in most cases\n"
           "  'size' is the disk image size in bytes. Optional suffixes\n"
           "    'k' or 'K' (kilobyte, 1024), 'M' (megabyte, 1024k), 'G' (gigabyte, 1024M),\n"
           "    'T' (terabyte, 1024G), 'P' (petabyte, 1024T) and 'E' (exabyte, 1024P)  are\n"
           "    supported. 'b' is ignored.\n"
           "  'output_filename' is the destination disk image filename\n"
           "  'output_fmt' is the destination format\n"
           "  'options' is a comma separated list of format specific options in a\n"
           "    name=value format, the same as qemu-img's\n"
           "  '-c' indicates that target image must be compressed (qcow2 only)\n"
           "  '-u' allows unsafe backing chains: the image is created without opening the\n"
           "       backing file\n"
           "  '-h' with or without a command shows this help\n"
           "  '-p' show progress of command (only certain commands)\n"
           "  '-q' use Quiet mode - do not print any output (except errors)\n"
           "  '-S' indicates the consecutive number of bytes (defaults to 4k) that must\n"
           "       contain only zeros for " CLI_NAME " to create a sparse image during\n"
           "       conversion. If the number of bytes is 0, the source will not be scanned for\n"
           "       unallocated or zero sectors, and the destination image will always be\n"
           "       fully allocated\n"
           "  '-U' opens the image read-only without taking locks (force share)\n"
           "  '-t', '-T', '-m' and '-W' are accepted for compatibility with qemu-img convert;\n"
           "       they tune qemu-img's copy and do not change the result\n"
           "  '--output' takes the format in which the output must be done (human or json)\n"
           "\n"
           "Parameters to check subcommand:\n"
           "  '-r' tries to repair any inconsistencies that are found during the check.\n"
           "       '-r leaks' repairs only cluster leaks, whereas '-r all' fixes all\n"
           "       kinds of errors, with a higher risk of choosing the wrong fix or\n"
           "       hiding corruption that has already occurred.\n"
           "\n"
           "Parameters to snapshot subcommand:\n"
           "  'snapshot' is the name of the snapshot to create, apply or delete\n"
           "  '-a' applies a snapshot (revert disk to saved state)\n"
           "  '-c' creates a snapshot\n"
           "  '-d' deletes a snapshot\n"
           "  '-l' lists all snapshots in the given image\n"
           "\n"
           "Parameters to compare subcommand:\n"
           "  '-f' first image format\n"
           "  '-F' second image format\n"
           "  '-s' run in Strict mode - fail on different image size or sector allocation\n"
           "\n"
           "Parameters to dd subcommand:\n"
           "  'bs=BYTES' read and write up to BYTES bytes at a time (default: 512)\n"
           "  'count=N' copy only N input blocks\n"
           "  'if=FILE' read from FILE\n"
           "  'of=FILE' write to FILE\n"
           "  'skip=N' skip N bs-sized blocks at the start of input\n");
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("Not enough arguments");

    const char *word = argv[1];
    if (strcmp(word, "-h") == 0 || strcmp(word, "--help") == 0) {
        cli_print_help();
        return 0;
    }
    if (strcmp(word, "-V") == 0 || strcmp(word, "--version") == 0) {
        print_version();
        return 0;
    }
    if (word[0] == '-')
        return cli_usage_error("unrecognized option '%s'", word);

    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(word, commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    return cli_usage_error("Command not found: %s", word);
}
