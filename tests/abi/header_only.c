/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The public header on its own: this file includes nothing else and is built as strict C99 and
 * C11 with warnings as errors, so the header must not lean on anything a consumer lacks.
 */
#include <imgutil.h>

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

static const char expected_version[] = STRINGIFY(IMGUTIL_VERSION_MAJOR) "." STRINGIFY(
    IMGUTIL_VERSION_MINOR) "." STRINGIFY(IMGUTIL_VERSION_MICRO);

static int same_string(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

int main(void)
{
    const char *version = img_version();
    img *none = NULL;
    img_progress_fn progress = NULL;

    /* The documented NULL-accepting calls, and a type from each part of the header. */
    img_close(none);
    img_free(NULL);
    img_opts_free(NULL);
    (void)progress;

    if (!version || !same_string(version, expected_version))
        return 1;
    return img_last_error() != NULL ? 0 : 1;
}
