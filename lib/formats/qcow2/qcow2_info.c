/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * "format-specific" for info, field for field as qemu-img 7.2 prints it (its members come out
 * in the order of QEMU's dictionary, which is what scripts comparing the output see).
 */
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "util/json.h"

static void write_bitmaps(const struct qcow2_state *s, struct json_writer *w)
{
    json_array_begin(w, "bitmaps");
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        const struct qcow2_bitmap *b = &s->bitmaps[i];
        json_object_begin(w, NULL);
        json_array_begin(w, "flags");
        if (b->flags & QCOW2_BITMAP_IN_USE)
            json_string(w, NULL, "in-use");
        if (b->flags & QCOW2_BITMAP_AUTO)
            json_string(w, NULL, "auto");
        json_array_end(w);
        json_string(w, "name", b->name);
        json_u64(w, "granularity", 1ull << b->granularity_bits);
        json_object_end(w);
    }
    json_array_end(w);
}

int qcow2_info_specific(struct img *img, struct json_writer *w)
{
    const struct qcow2_state *s = img->priv;
    const struct qcow2_header *h = &s->hdr;
    const char *compression = h->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib";

    json_string(w, "type", "qcow2");
    json_object_begin(w, "data");
    if (h->version < 3) {
        json_string(w, "compat", "0.10");
        json_string(w, "compression-type", compression);
        json_u64(w, "refcount-bits", s->refcount_bits);
        json_object_end(w);
        return 0;
    }
    json_string(w, "compat", "1.1");
    json_string(w, "compression-type", compression);
    json_bool(w, "lazy-refcounts", (h->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) != 0);
    if (s->nb_bitmaps)
        write_bitmaps(s, w);
    json_u64(w, "refcount-bits", s->refcount_bits);
    if (s->ext.data_file)
        json_string(w, "data-file", s->ext.data_file);
    if (h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE)
        json_bool(w, "data-file-raw", (h->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW) != 0);
    json_bool(w, "corrupt", (h->incompatible_features & QCOW2_INCOMPAT_CORRUPT) != 0);
    json_bool(w, "extended-l2", s->extended_l2);
    json_object_end(w);
    return 0;
}
