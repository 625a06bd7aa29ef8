/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdlib.h>

#include "config.h"
#include "imgutil.h"

IMG_API const char *img_version(void)
{
    return IMGUTIL_VERSION;
}

IMG_API void img_free(void *ptr)
{
    free(ptr);
}
