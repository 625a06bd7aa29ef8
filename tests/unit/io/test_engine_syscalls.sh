#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A convert's queued I/O goes through the chosen engine: under strace, `imgutil convert` with
# IMGUTIL_IO=uring must enter io_uring, and with IMGUTIL_IO=threads must not touch it at all.
# Skips (77) without strace, qemu-img or qemu-io, or when the io_uring engine cannot run here (a kernel
# without io_uring, seccomp, a build without liburing).
set -u
# Arguments: the imgutil CLI, and print_engine (prints the engine a process gets).
IMGUTIL=$1
PRINT_ENGINE=$2
[ -x "$IMGUTIL" ] && [ -x "$PRINT_ENGINE" ] || { echo "usage: $0 IMGUTIL PRINT_ENGINE" >&2; exit 1; }
command -v strace >/dev/null 2>&1 || exit 77
command -v qemu-img >/dev/null 2>&1 || exit 77
command -v qemu-io >/dev/null 2>&1 || exit 77
# strace cannot attach where ptrace is refused (some containers).
strace -f -o /dev/null true 2>/dev/null || exit 77

# LeakSanitizer cannot run under ptrace; the other sanitizers still do.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/imgutil-engine.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
qemu-img create -q -f qcow2 "$WORK/src.qcow2" 4M || exit 1
# Data to copy: convert reads it through its queues, which are the ring's users (synchronous
# calls, such as the metadata reads, run inline on both engines).
qemu-io -f qcow2 -c 'write -P 7 0 1M' -c 'write -P 9 3M 64k' "$WORK/src.qcow2" >/dev/null || exit 1

trace() { # ENGINE OUTPUT-NAME
    rm -f "$WORK/$2"
    IMGUTIL_IO=$1 strace -f -qq -o "$WORK/$1.trace" \
        -e trace=io_uring_setup,io_uring_enter,io_uring_register \
        "$IMGUTIL" convert -O qcow2 "$WORK/src.qcow2" "$WORK/$2" || {
        echo "FAIL: convert with IMGUTIL_IO=$1 failed" >&2
        exit 1
    }
}

# On ext4 the data written into a new target is allocated just before it is written (one
# fallocate per run of data, keeping the size: see io_file_allocates_first); into an
# existing target (-n), whose blocks may hold old data, never.
if [ "$(stat -f -c %T "$WORK")" != ext2/ext3 ]; then
    echo "not on ext4: the allocation before writes is not checked"
else
    IMGUTIL_IO=threads strace -f -qq -o "$WORK/falloc.trace" -e trace=fallocate \
        "$IMGUTIL" convert -O raw "$WORK/src.qcow2" "$WORK/new.raw" || exit 1
    if ! grep -q 'fallocate([0-9]*, FALLOC_FL_KEEP_SIZE, ' "$WORK/falloc.trace"; then
        echo "FAIL: a convert to a new raw target on ext4 allocated nothing before writing" >&2
        exit 1
    fi
    IMGUTIL_IO=threads strace -f -qq -o "$WORK/falloc-n.trace" -e trace=fallocate \
        "$IMGUTIL" convert -n -O raw "$WORK/src.qcow2" "$WORK/new.raw" || exit 1
    if grep -q 'fallocate([0-9]*, FALLOC_FL_KEEP_SIZE, ' "$WORK/falloc-n.trace"; then
        echo "FAIL: convert -n allocated ranges of the existing target:" >&2
        head -3 "$WORK/falloc-n.trace" >&2
        exit 1
    fi
fi

trace threads out-threads.qcow2
if grep -q io_uring "$WORK/threads.trace"; then
    echo "FAIL: IMGUTIL_IO=threads made io_uring system calls:" >&2
    head -5 "$WORK/threads.trace" >&2
    exit 1
fi

[ "$(IMGUTIL_IO=uring "$PRINT_ENGINE")" = uring ] || exit 77
trace uring out-uring.qcow2
if ! grep -q 'io_uring_enter(' "$WORK/uring.trace"; then
    echo "FAIL: IMGUTIL_IO=uring made no io_uring_enter call" >&2
    exit 1
fi
echo "io_uring_enter calls: $(grep -c 'io_uring_enter(' "$WORK/uring.trace")"
cmp "$WORK/out-threads.qcow2" "$WORK/out-uring.qcow2" || {
    echo "FAIL: the engines wrote different images" >&2
    exit 1
}
exit 0
