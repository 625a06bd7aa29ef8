# SPDX-License-Identifier: LGPL-2.1-or-later
# Shared helpers for the imgutil command-line tests. Sourced; $1 of the test is the CLI.

IMGUTIL=${1:-${IMGUTIL_CLI:-}}
if [ -z "$IMGUTIL" ] || [ ! -x "$IMGUTIL" ]; then
    echo "imgutil executable not found (pass it as the first argument)" >&2
    exit 1
fi

# enter_work_with_qemu: for tests that compare with qemu-img: skips (77) without qemu-img or
# qemu-io, makes $IMGUTIL absolute and moves into $WORK.
enter_work_with_qemu() {
    case "$IMGUTIL" in
    /*) ;;
    *) IMGUTIL="$(pwd)/$IMGUTIL" ;;
    esac
    command -v qemu-img >/dev/null 2>&1 || exit 77
    command -v qemu-io >/dev/null 2>&1 || exit 77
    cd "$WORK" || exit 1
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/imgutil-cli.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
FAILURES=0

fail() {
    echo "FAIL: $*" >&2
    FAILURES=$((FAILURES + 1))
}

# run ARGS...: runs imgutil, leaving $WORK/out, $WORK/err and $STATUS.
run() {
    "$IMGUTIL" "$@" >"$WORK/out" 2>"$WORK/err"
    STATUS=$?
}

# expect_status CODE ARGS...: runs imgutil and checks its exit status.
expect_status() {
    want=$1
    shift
    run "$@"
    if [ "$STATUS" -ne "$want" ]; then
        fail "imgutil $*: exit status $STATUS, expected $want (stderr: $(cat "$WORK/err"))"
        return 1
    fi
    return 0
}

# expect_err TEXT: the last run's stderr contains TEXT.
expect_err() {
    if ! grep -qF -- "$1" "$WORK/err"; then
        fail "stderr lacks '$1': $(cat "$WORK/err")"
    fi
}

# expect_out TEXT: the last run's stdout contains TEXT.
expect_out() {
    if ! grep -qF -- "$1" "$WORK/out"; then
        fail "stdout lacks '$1': $(cat "$WORK/out")"
    fi
}

# same_as_qemu SUBCOMMAND ARGS...: imgutil and qemu-img print the same on stdout and stderr
# (the program's name aside) and exit with the same status; leaves q.out, q.err, i.out, i.err
# in the current folder.
same_as_qemu() {
    subcommand=$1
    shift
    qemu-img "$subcommand" "$@" >q.out 2>q.err
    q_status=$?
    "$IMGUTIL" "$subcommand" "$@" >i.out 2>i.err
    i_status=$?
    sed -i 's/^imgutil:/qemu-img:/' i.err
    if [ "$q_status" -ne "$i_status" ]; then
        fail "$subcommand $*: exit status $i_status, qemu-img $q_status ($(cat i.out i.err))"
    elif ! cmp -s q.out i.out; then
        fail "$subcommand $*: stdout '$(cat i.out)', qemu-img '$(cat q.out)'"
    elif ! cmp -s q.err i.err; then
        fail "$subcommand $*: stderr '$(cat i.err)', qemu-img '$(cat q.err)'"
    fi
}

# expect_same_output WHAT FILE_A FILE_B: two outputs are identical.
expect_same_output() {
    if ! cmp -s "$2" "$3"; then
        fail "$1 differs from qemu-img:"
        diff "$3" "$2" >&2
    fi
}

finish() {
    if [ "$FAILURES" -ne 0 ]; then
        echo "$FAILURES check(s) failed" >&2
        exit 1
    fi
    exit 0
}
