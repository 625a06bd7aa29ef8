/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "aio_test.h"

#include <sys/wait.h>

char *scratch_dir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof(tmpl), "%s/imgutil-aio-XXXXXX", base && *base ? base : "/tmp");
    char *dir = mkdtemp(tmpl);
    CHECK(dir != NULL);
    char *copy = strdup(dir);
    CHECK(copy != NULL);
    return copy;
}

void scratch_remove(const char *dir)
{
    run("rm -rf '%s'", dir);
}

char *path_in(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    CHECK(p != NULL);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int run(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int status = system(cmd);
    if (status == -1 || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

int have_qemu_img(void)
{
    return run("qemu-img --version >/dev/null 2>&1") == 0;
}
