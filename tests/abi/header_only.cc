/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The public header from C++: it must compile as C++11 with warnings as errors and link without
 * name mangling (extern "C"). This file includes nothing else.
 */
#include <imgutil.h>

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

static const char expected_version[] = STRINGIFY(IMGUTIL_VERSION_MAJOR) "." STRINGIFY(
    IMGUTIL_VERSION_MINOR) "." STRINGIFY(IMGUTIL_VERSION_MICRO);

static bool same_string(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

int main()
{
    const char *version = img_version();
    img *none = nullptr;
    img_progress_fn progress = nullptr;

    img_close(none);
    img_free(nullptr);
    img_opts_free(nullptr);
    (void)progress;

    if (!version || !same_string(version, expected_version))
        return 1;
    return img_last_error() != nullptr ? 0 : 1;
}
