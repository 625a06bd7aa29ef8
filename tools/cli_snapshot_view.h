/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMGUTIL_CLI_SNAPSHOT_VIEW_H
#define IMGUTIL_CLI_SNAPSHOT_VIEW_H

#include "imgutil.h"

/*
 * Opens `path` read-only as cli_open_image() does, showing the internal snapshot that `param`
 * names (qemu-img's -l: "snapshot.id=ID", "snapshot.name=NAME", both comma-separated, or a bare
 * ID or name). Reports failures in qemu-img's words. Returns 0 or a negative errno.
 */
int cli_open_snapshot_view(img **out, const char *path, const char *format, unsigned flags,
                           const char *param);

#endif
