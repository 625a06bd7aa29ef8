/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The subcommands. Each takes the arguments after "imgutil" (argv[0] is the subcommand name)
 * and returns the process exit status.
 */
#ifndef CLI_COMMANDS_H
#define CLI_COMMANDS_H

int cmd_amend(int argc, char **argv);
int cmd_bitmap(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_commit(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_create(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_measure(int argc, char **argv);
int cmd_dd(int argc, char **argv);
int cmd_rebase(int argc, char **argv);
int cmd_resize(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);

#endif
