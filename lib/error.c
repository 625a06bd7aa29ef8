/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "imgutil.h"

#define ERROR_MESSAGE_MAX 1024

/* Per-thread, so a failure in one thread never overwrites another thread's message. */
static _Thread_local char thread_message[ERROR_MESSAGE_MAX];
static _Thread_local int thread_errno;

/* Deeper nesting than this (a chain of backing files) keeps naming the deepest it has. */
#define CONTEXT_DEPTH 16
static _Thread_local const char *thread_context[CONTEXT_DEPTH];
static _Thread_local unsigned thread_context_depth;

void img_error_context_push(const char *name)
{
    if (thread_context_depth < CONTEXT_DEPTH)
        thread_context[thread_context_depth] = name;
    thread_context_depth++;
}

void img_error_context_pop(void)
{
    if (thread_context_depth > 0)
        thread_context_depth--;
}

static const char *current_context(void)
{
    if (thread_context_depth == 0)
        return NULL;
    unsigned top = thread_context_depth < CONTEXT_DEPTH ? thread_context_depth : CONTEXT_DEPTH;
    return thread_context[top - 1];
}

int img_error(int code, const char *fmt, ...)
{
    /* Formatted aside first: an argument may be the message being replaced (img_last_error). */
    char message[ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    memcpy(thread_message, message, sizeof(thread_message));
    thread_errno = code;
    const char *context = current_context();
    if (context && *context && !strstr(thread_message, context))
        img_error_prefix("%s", context);
    return code;
}

void img_error_prefix(const char *fmt, ...)
{
    char old[ERROR_MESSAGE_MAX];
    memcpy(old, thread_message, sizeof(old));
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(thread_message, sizeof(thread_message), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(thread_message) - 2)
        return;
    thread_message[n] = ':';
    thread_message[n + 1] = ' ';
    size_t room = sizeof(thread_message) - (size_t)n - 2;
    size_t len = strnlen(old, room - 1);
    memcpy(thread_message + n + 2, old, len);
    thread_message[(size_t)n + 2 + len] = '\0';
}

void img_error_clear(void)
{
    thread_message[0] = '\0';
    thread_errno = 0;
}

void img_error_rename(const char *from, const char *to)
{
    size_t from_len = strlen(from), to_len = strlen(to);
    if (!from_len)
        return;
    char renamed[ERROR_MESSAGE_MAX];
    size_t out = 0;
    for (const char *p = thread_message; *p && out < sizeof(renamed) - 1;) {
        if (strncmp(p, from, from_len) == 0) {
            size_t n = to_len < sizeof(renamed) - 1 - out ? to_len : sizeof(renamed) - 1 - out;
            memcpy(renamed + out, to, n);
            out += n;
            p += from_len;
        } else {
            renamed[out++] = *p++;
        }
    }
    renamed[out] = '\0';
    memcpy(thread_message, renamed, out + 1);
}

IMG_API int img_last_errno(void)
{
    return thread_errno;
}

IMG_API const char *img_last_error(void)
{
    return thread_message[0] ? thread_message : "no error";
}

struct errno_name {
    int code;
    const char *text;
};

/* Fixed texts, so messages do not depend on the C library's locale or wording. */
static const struct errno_name errno_names[] = {
    {0, "success"},
    {EPERM, "operation not permitted"},
    {ENOENT, "no such file or directory"},
    {EIO, "input/output error (damaged image)"},
    {ENOMEM, "out of memory"},
    {EACCES, "permission denied"},
    {EBUSY, "image is locked by another process"},
    {EEXIST, "file exists"},
    {EINVAL, "invalid argument"},
    {EFBIG, "image exceeds a size limit"},
    {ENOSPC, "no space left on device"},
    {EROFS, "image is read-only"},
    {ERANGE, "value out of range"},
    {ENOTSUP, "not supported"},
    {ELOOP, "backing chain loops or is too deep"},
    {ECANCELED, "operation cancelled"},
    {EBADF, "bad file descriptor"},
    {EISDIR, "is a directory"},
    {EOVERFLOW, "value too large"},
    {ENAMETOOLONG, "file name too long"},
    {ENOTDIR, "not a directory"},
    {EAGAIN, "resource temporarily unavailable"},
    {EINTR, "interrupted"},
    {EMFILE, "too many open files"},
    {ENFILE, "too many open files in the system"},
    {EDQUOT, "disk quota exceeded"},
    {EXDEV, "cross-device link"},
    {ENXIO, "no such device or address"},
    {ENODEV, "no such device"},
    {ETXTBSY, "text file busy"},
    {ESPIPE, "illegal seek"},
    {ENOSYS, "function not implemented"},
};

IMG_API const char *img_strerror(int code)
{
    if (code < 0)
        code = -code;
    for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++)
        if (errno_names[i].code == code)
            return errno_names[i].text;
    return "unknown error";
}
