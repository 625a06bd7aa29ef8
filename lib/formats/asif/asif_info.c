/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* info's "format-specific": {"type": "asif", "data": {...}}, in qemu-img's manner. */
#include <stdio.h>

#include "formats/asif/asif.h"
#include "util/json.h"

int asif_info_specific(struct img *img, struct json_writer *w)
{
    const struct asif_state *s = img->priv;
    const uint8_t *u = s->uuid;
    char uuid[37];
    snprintf(uuid, sizeof(uuid),
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
             u[15]);
    json_string(w, "type", "asif");
    json_object_begin(w, "data");
    json_string(w, "uuid", uuid);
    if (s->stable_uuid[0])
        json_string(w, "stable-uuid", s->stable_uuid);
    json_u64(w, "chunk-size", s->g.chunk_size);
    json_u64(w, "block-size", s->g.block_size);
    json_u64(w, "max-size", s->g.max_bytes);
    json_u64(w, "directory-sequence", s->dir_seq[s->active]);
    json_object_end(w);
    return 0;
}
