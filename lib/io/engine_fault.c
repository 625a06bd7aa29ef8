/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fault-injecting engine, for tests (IMGUTIL_IO=fault; io.h gives the variables). It is the
 * thread-pool engine with one more step before each request reaches the host: count it, and
 * fail it when it is the one IMGUTIL_FAULT names. Counting happens where the request is
 * performed, so synchronous and queued requests are counted and failed alike.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

enum fault_class {
    CLASS_READ,
    CLASS_WRITE,
    CLASS_FLUSH,
    CLASS_FALLOCATE,
    CLASS_TRUNCATE,
    CLASS_ANY
};
#define CLASS_COUNT (CLASS_ANY + 1)

static const char *const class_names[CLASS_COUNT] = {"read",      "write",    "flush",
                                                     "fallocate", "truncate", "any"};

enum fault_kind { KIND_NONE, KIND_EIO, KIND_ENOSPC, KIND_SHORT };

static struct {
    enum fault_class cls;
    enum fault_kind kind;
    unsigned long at; /* 1-based count of requests of `cls` that fails; 0: none */
    const char *report_path;
    bool report;
    atomic_ulong count[CLASS_COUNT];
} fault;

static pthread_once_t fault_once = PTHREAD_ONCE_INIT;

static enum fault_class class_of(enum io_op op)
{
    switch (op) {
    case IO_OP_READ:
        return CLASS_READ;
    case IO_OP_WRITE:
        return CLASS_WRITE;
    case IO_OP_FSYNC:
        return CLASS_FLUSH;
    case IO_OP_PUNCH_HOLE:
    case IO_OP_WRITE_ZEROES:
    case IO_OP_PREALLOCATE:
        return CLASS_FALLOCATE;
    case IO_OP_TRUNCATE:
        return CLASS_TRUNCATE;
    }
    return CLASS_ANY;
}

static void write_report(void)
{
    FILE *out = stderr;
    if (fault.report_path) {
        out = fopen(fault.report_path, "w");
        if (!out)
            return;
    }
    for (int c = 0; c < CLASS_COUNT; c++)
        fprintf(out, "%s %lu\n", class_names[c], atomic_load(&fault.count[c]));
    if (out != stderr)
        fclose(out);
}

/* "<op>:<n>:<error>"; false when it is not one. */
static bool parse_spec(const char *spec)
{
    char op[16];
    char kind[16];
    unsigned long n;
    int used = 0;
    if (sscanf(spec, "%15[a-z]:%lu:%15[A-Za-z]%n", op, &n, kind, &used) != 3 ||
        spec[used] != '\0' || n == 0)
        return false;

    int cls = -1;
    for (int c = 0; c < CLASS_COUNT; c++)
        if (strcmp(op, class_names[c]) == 0)
            cls = c;
    if (cls < 0)
        return false;
    if (strcmp(kind, "EIO") == 0)
        fault.kind = KIND_EIO;
    else if (strcmp(kind, "ENOSPC") == 0)
        fault.kind = KIND_ENOSPC;
    else if (strcmp(kind, "short") == 0)
        fault.kind = KIND_SHORT;
    else
        return false;
    fault.cls = (enum fault_class)cls;
    fault.at = n;
    return true;
}

static void fault_init(void)
{
    const char *spec = getenv("IMGUTIL_FAULT");
    fault.report_path = getenv("IMGUTIL_FAULT_REPORT");
    fault.report = fault.report_path != NULL;
    if (spec && strcmp(spec, "count") == 0) {
        fault.report = true;
    } else if (spec && *spec && !parse_spec(spec)) {
        /* A test that names a fault it cannot get must not pass unnoticed. */
        fprintf(stderr,
                "IMGUTIL_FAULT=%s: expected count or <op>:<n>:<error> with op "
                "read|write|flush|fallocate|truncate|any and error EIO|ENOSPC|short\n",
                spec);
        abort();
    }
    if (fault.report)
        atexit(write_report);
}

/* Does part of the request, as a filling disk does before it refuses the rest. */
static int fail_short(struct io_req *req)
{
    struct io_req part = *req;
    switch (req->op) {
    case IO_OP_READ:
    case IO_OP_WRITE:
    case IO_OP_WRITE_ZEROES:
    case IO_OP_PREALLOCATE:
        part.len = req->len / 2;
        if (part.len > 0 && io_req_execute(&part) < 0)
            return -EIO;
        /* A read cannot fill a disk: it fails as the device does. */
        return req->op == IO_OP_READ ? -EIO : -ENOSPC;
    case IO_OP_FSYNC:
    case IO_OP_PUNCH_HOLE:
    case IO_OP_TRUNCATE:
        break;
    }
    return -ENOSPC;
}

static int fault_execute(struct io_req *req)
{
    pthread_once(&fault_once, fault_init);
    enum fault_class cls = class_of(req->op);
    unsigned long nth = atomic_fetch_add(&fault.count[cls], 1) + 1;
    unsigned long nth_any = atomic_fetch_add(&fault.count[CLASS_ANY], 1) + 1;

    if (fault.at != 0 && fault.kind != KIND_NONE) {
        unsigned long n = fault.cls == CLASS_ANY ? nth_any : fault.cls == cls ? nth : 0;
        if (n == fault.at) {
            switch (fault.kind) {
            case KIND_EIO:
                return -EIO;
            case KIND_ENOSPC:
                return -ENOSPC;
            case KIND_SHORT:
                return fail_short(req);
            case KIND_NONE:
                break;
            }
        }
    }
    return io_req_execute(req);
}

/* Called once when the engine is chosen: reads the variables before any I/O. */
static bool fault_available(void)
{
    pthread_once(&fault_once, fault_init);
    return true;
}

const struct io_engine io_engine_fault = {
    .name = "fault",
    .available = fault_available,
    .queue_init = io_threads_queue_init,
    .queue_fini = io_threads_queue_fini,
    .submit = io_threads_submit,
    .collect = io_threads_collect,
    .execute = fault_execute,
};
