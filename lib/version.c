/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdlib.h>

#include "config.h"
#include "imgutil.h"

/* The header a program compiles against and the library it loads must be of one version. */
_Static_assert(IMGUTIL_VERSION_NUMBER == IMGUTIL_VERSION_NUMBER_BUILT,
               "include/imgutil.h and meson.build disagree on the version");

IMG_API int img_version_number(void)
{
    return IMGUTIL_VERSION_NUMBER;
}

IMG_API const char *img_version(void)
{
    return IMGUTIL_VERSION;
}

IMG_API void img_free(void *ptr)
{
    free(ptr);
}
