#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# What create and convert must not take from the user: an image a VM (qemu-io) holds is
# refused untouched, by create and by convert, raw and qcow2, and a data file named by the
# refused convert is not touched either; targets that are no file (a FIFO, a folder) are
# refused before any copy; a replaced file keeps its extended attributes and ACLs; a file
# with other hard links is refused rather than split from them; a link is followed by the
# kernel (fs.protected_symlinks applies); stale temporaries of a killed convert go away.
# Skips (77) without qemu-img and qemu-io.

. "$(dirname "$0")/lib.sh"

enter_work_with_qemu

HOLDER=
# hold FORMAT FILE: a qemu-io process keeps FILE open read-write, with QEMU's locks, reading
# commands from the FIFO on descriptor 9 until release.
hold() {
    rm -f ctl held.out
    mkfifo ctl
    # Opened read-write, the FIFO never blocks, whether or not qemu-io is still reading.
    exec 9<>ctl
    qemu-io -f "$1" "$2" <ctl >held.out 2>&1 9>&- &
    HOLDER=$!
    # qemu-io prompts once it has opened the image (and exits if it could not). Bounded wait.
    tries=0
    until grep -q 'qemu-io>' held.out 2>/dev/null || ! kill -0 "$HOLDER" 2>/dev/null; do
        tries=$((tries + 1))
        [ $tries -gt 300 ] && break
        sleep 0.1
    done
    grep -q 'qemu-io>' held.out || fail "qemu-io did not open $2: $(cat held.out)"
}

# release: end of input makes qemu-io exit, which flushes and drops its locks.
release() {
    exec 9>&-
    wait "$HOLDER"
}

# expect_pattern FILE FORMAT BYTE OFFSET LENGTH: the guest range reads as BYTE.
expect_pattern() {
    qemu-io -f "$2" -c "read -P $3 $4 $5" "$1" >pattern.out 2>&1
    if grep -q -i "fail\|error\|can't" pattern.out || ! grep -q "^read " pattern.out; then
        fail "$1: bytes $4+$5 are not $3: $(cat pattern.out)"
    fi
}

inode() {
    stat -c %i "$1"
}

qemu-img create -q -f raw pat.raw 1M
qemu-io -f raw -c 'write -P 0x44 0 64k' pat.raw >/dev/null

# --- create onto images a VM holds: refused before a byte changes ---
qemu-img create -q -f qcow2 vm.qcow2 64M
qemu-io -c 'write -P 0x11 0 1M' vm.qcow2 >/dev/null
hold qcow2 vm.qcow2
for fmt in qcow2 raw; do
    expect_status 1 create -f $fmt vm.qcow2 1G && expect_err 'Failed to get "write" lock'
done
release
qemu-img check -q vm.qcow2 || fail "create onto a held qcow2 image: the image is damaged"
expect_pattern vm.qcow2 qcow2 0x11 0 1M

qemu-img create -q -f raw vm.raw 4M
qemu-io -f raw -c 'write -P 0x33 0 4M' vm.raw >/dev/null
cp vm.raw vm.raw.orig
hold raw vm.raw
for fmt in raw qcow2; do
    expect_status 1 create -f $fmt vm.raw 1G && expect_err '"write" lock'
done
release
cmp -s vm.raw vm.raw.orig || fail "create onto a held raw image changed it"

# --- convert onto images a VM holds: refused as qemu-img refuses; the VM's writes stay ---
ino=$(inode vm.qcow2)
printf precious >data.bin
hold qcow2 vm.qcow2
for fmt in raw qcow2; do
    expect_status 1 convert -O $fmt pat.raw vm.qcow2 &&
        expect_err "vm.qcow2: error while converting $fmt: Failed to get \"write\" lock"
done
expect_status 1 convert -O qcow2 -o data_file=data.bin pat.raw vm.qcow2
echo 'write -P 0x22 2M 64k' >&9
release
[ "$(inode vm.qcow2)" = "$ino" ] || fail "convert onto a held image replaced it"
expect_pattern vm.qcow2 qcow2 0x11 0 1M
expect_pattern vm.qcow2 qcow2 0x22 2M 64k
[ "$(cat data.bin)" = precious ] || fail "a refused convert touched its data file"

hold raw vm.raw
expect_status 1 convert -O raw pat.raw vm.raw && expect_err '"write" lock'
release
cmp -s vm.raw vm.raw.orig || fail "convert onto a held raw image changed it"

# --- targets that are no file: refused before the copy, left as they are ---
mkfifo fifo
expect_status 1 convert -O raw pat.raw fifo && expect_err "'fifo' is a FIFO"
[ -p fifo ] || fail "convert replaced a FIFO with a file"
mkdir folder.raw
expect_status 1 convert -O qcow2 pat.raw folder.raw && expect_err "'folder.raw' is a directory"
expect_status 1 create -f raw folder.raw 1M && expect_err "'folder.raw' is a directory"

# --- extended attributes and ACLs go over to the replacement ---
if command -v setfattr >/dev/null 2>&1 && printf old >attr.raw &&
    setfattr -n user.imgutil -v kept attr.raw 2>/dev/null; then
    security=no
    setfattr -n security.imgutil -v label attr.raw 2>/dev/null && security=yes
    acl=no
    command -v setfacl >/dev/null 2>&1 && setfacl -m u:nobody:r attr.raw 2>/dev/null && acl=yes
    for fmt in raw qcow2; do
        expect_status 0 convert -O $fmt pat.raw attr.raw || continue
        [ "$(getfattr --only-values -n user.imgutil attr.raw 2>/dev/null)" = kept ] ||
            fail "-O $fmt: the user.imgutil attribute was lost"
        if [ $security = yes ]; then
            [ "$(getfattr --only-values -n security.imgutil attr.raw 2>/dev/null)" = label ] ||
                fail "-O $fmt: the security.imgutil label was lost"
        fi
        if [ $acl = yes ]; then
            getfacl -c attr.raw 2>/dev/null | grep -q '^user:nobody:r--' ||
                fail "-O $fmt: the ACL was lost: $(getfacl -c attr.raw 2>&1)"
        fi
    done
    qemu-img compare -q pat.raw attr.raw || fail "attributes: content differs"
else
    echo "user.* extended attributes unavailable here: attribute checks skipped"
fi

# --- hard links: refused, never split ---
printf old >linked.raw
ln linked.raw other-name.raw
expect_status 1 convert -O raw pat.raw linked.raw && expect_err "hard link"
[ "$(inode linked.raw)" = "$(inode other-name.raw)" ] && [ "$(cat linked.raw)" = old ] ||
    fail "a hard-linked target was split or changed"
expect_status 1 create -f raw linked.raw 1M && expect_err "hard link"
[ "$(cat linked.raw)" = old ] || fail "create changed a hard-linked target"

# --- links are followed by the kernel: fs.protected_symlinks refuses another's link in a
# sticky world-writable folder, even to root ---
if [ "$(cat /proc/sys/fs/protected_symlinks 2>/dev/null)" = 1 ] && [ "$(id -u)" = 0 ] &&
    id nobody >/dev/null 2>&1; then
    mkdir real sticky
    chmod 1777 sticky
    printf old >real/disk.raw
    ln -s "$WORK/real/disk.raw" sticky/planted.raw
    chown -h nobody sticky/planted.raw
    expect_status 1 convert -O raw pat.raw sticky/planted.raw
    [ "$(cat real/disk.raw)" = old ] || fail "a protected link was followed"
    expect_status 1 create -f raw sticky/planted.raw 1M
    [ "$(cat real/disk.raw)" = old ] || fail "create followed a protected link"
else
    echo "fs.protected_symlinks is off (or not root): protected link checks skipped"
fi

# --- create in a folder that takes no new file from the user: the file is written in place,
# under its lock, as qemu-img does ---
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1 && id nobody >/dev/null 2>&1; then
    chmod 711 "$WORK"
    mkdir shut
    printf old >shut/own.raw
    chown nobody shut/own.raw
    ino=$(inode shut/own.raw)
    if setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups "$IMGUTIL" create \
        -f raw shut/own.raw 1M >out 2>err; then
        [ "$(stat -c %s shut/own.raw)" = 1048576 ] && [ "$(inode shut/own.raw)" = "$ino" ] ||
            fail "create in a closed folder: $(stat -c '%s bytes, inode %i' shut/own.raw)"
    else
        fail "create in a closed folder failed: $(cat err)"
    fi
    chmod 700 "$WORK"
fi

# --- a temporary left by a killed convert goes; one of another target stays ---
printf stale >.tidy.raw.0123abcd.tmp
printf other >.other.raw.0123abcd.tmp
expect_status 0 convert -O raw pat.raw tidy.raw
[ -e .tidy.raw.0123abcd.tmp ] && fail "a stale temporary of the target was left"
[ -e .other.raw.0123abcd.tmp ] || fail "the temporary of another target was removed"
rm -f .other.raw.0123abcd.tmp
# A temporary another convert is writing (it holds the in-use mark: an exclusive lock on
# byte 1, see lib/io/lock.h) stays.
if command -v python3 >/dev/null 2>&1; then
    printf live >.busy.raw.89abcdef.tmp
    rm -f marked
    mkfifo marked
    exec 8<>marked
    python3 -c '
import fcntl, struct, sys
f = open(".busy.raw.89abcdef.tmp", "r+b")
fcntl.fcntl(f, fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 1, 1, 0))
print("held", flush=True)
sys.stdin.read()
' <marked >marker.out 8>&- &
    marker=$!
    tries=0
    until grep -q held marker.out 2>/dev/null || ! kill -0 $marker 2>/dev/null; do
        tries=$((tries + 1))
        [ $tries -gt 300 ] && break
        sleep 0.1
    done
    if grep -q held marker.out; then
        expect_status 0 convert -O raw pat.raw busy.raw
        [ "$(cat .busy.raw.89abcdef.tmp 2>/dev/null)" = live ] ||
            fail "the temporary of a running convert was removed"
    else
        fail "python3 could not mark a temporary in use: $(cat marker.out)"
    fi
    exec 8>&-
    wait $marker
    rm -f .busy.raw.89abcdef.tmp
fi
[ -z "$(find . -name '.*.tmp')" ] || fail "temporary files left: $(find . -name '.*.tmp')"

finish
