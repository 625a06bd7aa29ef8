/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "cli_snapshots.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "cli_util.h"

#define NSEC_PER_SEC 1000000000LL

static void print_row(const struct json_value *sn)
{
    const char *id = json_get_str(sn, "id");
    const char *name = json_get_str(sn, "name");
    char size[CLI_SIZE_STR_MAX], date[32] = "", clock[64], icount[32] = "";

    cli_size_to_str((uint64_t)json_i64_or(sn, "vm-state-size", 0), size, sizeof(size));

    /* Dates are shown in local time, as qemu-img does. */
    time_t when = (time_t)json_i64_or(sn, "date-sec", 0);
    struct tm tm;
    if (localtime_r(&when, &tm))
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);

    int64_t clock_sec = json_i64_or(sn, "vm-clock-sec", 0);
    int64_t clock_nsec = json_i64_or(sn, "vm-clock-nsec", 0);
    int64_t secs = clock_sec + clock_nsec / NSEC_PER_SEC;
    snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d", (int)(secs / 3600),
             (int)((secs / 60) % 60), (int)(secs % 60), (int)((clock_nsec / 1000000) % 1000));

    int64_t count;
    if (json_get_i64(sn, "icount", &count))
        snprintf(icount, sizeof(icount), "%" PRId64, count);

    printf("%-9s %-16s %8s%20s%13s%11s\n", id ? id : "", name ? name : "", size, date, clock,
           icount);
}

void cli_print_snapshot_table(const struct json_value *snapshots)
{
    if (!snapshots || snapshots->type != JSON_ARRAY || snapshots->count == 0)
        return;
    printf("Snapshot list:\n");
    printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
    for (size_t i = 0; i < snapshots->count; i++)
        print_row(&snapshots->items[i]);
}
