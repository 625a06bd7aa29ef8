/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The image's state as img_get_flags() reports it. */
#include "image.h"
#include "qcow2.h"

unsigned qcow2_status_flags(struct img *img)
{
    struct qcow2_state *s = img->priv;
    unsigned flags = 0;
    /* Under the metadata lock: a writer may mark the image corrupt at any time. */
    pthread_mutex_lock(&s->lock);
    uint64_t incompatible = s->hdr.incompatible_features;
    pthread_mutex_unlock(&s->lock);
    if (incompatible & QCOW2_INCOMPAT_CORRUPT)
        flags |= IMG_FLAG_CORRUPT;
    if (incompatible & QCOW2_INCOMPAT_DATA_FILE)
        flags |= IMG_FLAG_DATA_FILE;
    if (s->hdr.crypt_method != 0)
        flags |= IMG_FLAG_ENCRYPTED;
    if (s->nb_bitmaps > 0)
        flags |= IMG_FLAG_BITMAPS;
    return flags;
}
