/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef CLI_SNAPSHOTS_H
#define CLI_SNAPSHOTS_H

#include "cli_json.h"

/*
 * Prints qemu-img's snapshot table ("Snapshot list:", the "ID TAG VM SIZE DATE VM CLOCK ICOUNT"
 * heading and one row per snapshot) from a JSON array in the form of img_snapshot_list().
 * Prints nothing for an empty array.
 */
void cli_print_snapshot_table(const struct json_value *snapshots);

#endif
