/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* flush(): everything held in memory written in crash-safe order, then made durable. */
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_writer.h"

int qcow2_flush(struct img *img)
{
    struct qcow2_state *s = img->priv;
    if (!s->writer)
        return 0;
    pthread_mutex_lock(&s->lock);
    int ret = qcow2_flush_caches(s, true);
    pthread_mutex_unlock(&s->lock);
    return ret;
}
