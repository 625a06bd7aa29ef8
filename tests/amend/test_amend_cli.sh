#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# imgutil amend against qemu-img amend, each run on an identical copy of an image made by
# qemu-img/qemu-io: the same output, messages and exit status; the same `qemu-img info
# --output=json` (actual-size aside: qemu-img writes whole refcount blocks where this library
# writes the bytes that change, so the file systems allocate differently), the same `qemu-img
# check` report, the same guest content (`qemu-img compare`) and, where both tools write
# deterministically, the same bytes. Covers compat up and down (zero clusters, backing files,
# snapshots), lazy refcounts, every refcount width, data file bits, size, the backing file
# (confirmed only, as in qemu 7.2), and each refusal.
# usage: test_amend_cli.sh IMGUTIL

. "$(dirname "$0")/../cli/lib.sh"
enter_work_with_qemu

# same IMAGE BYTES ARGS...: amends copies of IMAGE with both tools and compares everything.
# BYTES is "bytes" when the files must be identical too, "state" when only the exit status
# and the resulting image are compared (qemu-img reports the repairs it makes on opening a
# dirty image, which the library makes silently), "fixed" where qemu-img leaves an image
# that its own check calls corrupt: then this library's must check clean.
same() {
    image=$1
    bytes=$2
    shift 2
    rm -f q.qcow2 i.qcow2
    cp "$image" q.qcow2
    cp "$image" i.qcow2
    qemu-img amend "$@" q.qcow2 >q.out 2>q.err
    q_status=$?
    "$IMGUTIL" amend "$@" i.qcow2 >i.out 2>i.err
    i_status=$?
    sed -i 's/^imgutil:/qemu-img:/; s/i\.qcow2/q.qcow2/g' i.err
    what="amend $* ($image)"
    if [ "$q_status" -ne "$i_status" ]; then
        fail "$what: exit status $i_status, qemu-img $q_status ($(cat i.err))"
        return
    fi
    if [ "$bytes" = state ]; then
        :
    elif ! cmp -s q.out i.out; then
        fail "$what: stdout differs: $(cat i.out) / qemu-img: $(cat q.out)"
    fi
    if [ "$bytes" != state ] && ! cmp -s q.err i.err; then
        fail "$what: stderr differs: $(cat i.err) / qemu-img: $(cat q.err)"
    fi
    for f in q i; do
        qemu-img info --output=json $f.qcow2 2>&1 | grep -v '"filename"\|"actual-size"' >$f.info
        qemu-img check $f.qcow2 2>&1 | sed "s/'$f.qcow2'/IMAGE/" >$f.check
        echo $? >>$f.check
    done
    if ! cmp -s q.info i.info; then
        fail "$what: info differs: $(diff q.info i.info)"
    fi
    if [ "$bytes" = fixed ]; then
        if [ "$(tail -n 1 i.check)" != 0 ]; then
            fail "$what: check is not clean: $(cat i.check)"
        fi
    elif ! cmp -s q.check i.check; then
        fail "$what: check differs: $(diff q.check i.check)"
    fi
    if ! qemu-img compare q.qcow2 i.qcow2 >/dev/null 2>&1 &&
        ! grep -q "data-file\|Could not open" q.check; then
        fail "$what: guest content differs"
    fi
    if [ "$bytes" = bytes ] && ! cmp -s q.qcow2 i.qcow2; then
        fail "$what: the files differ: $(cmp q.qcow2 i.qcow2)"
    fi
}

# Images, made by qemu-img and qemu-io.
qemu-img create -q -f qcow2 v3.qcow2 64M
qemu-io -c 'write -P 1 0 1M' -c 'write -z 2M 1M' -c 'write -P 3 10M 64k' \
    -c 'write -c -P 4 20M 64k' v3.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 64M
qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 5M 4k' v2.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=4k -b v3.qcow2 -F qcow2 overlay.qcow2
qemu-io -c 'write -z 0 128k' -c 'write -z 1M 64k' -c 'write -P 5 4M 64k' -c 'write -z 4M 64k' \
    overlay.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=4k,lazy_refcounts=on small.qcow2 16M
qemu-io -c 'write -P 6 0 3M' -c 'write -z 8M 1M' small.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=4k snap.qcow2 64M
qemu-io -c 'write -P 1 0 1M' -c 'write -z 2M 1M' -c 'write -c -P 4 20M 64k' snap.qcow2 >/dev/null
qemu-img snapshot -c s1 snap.qcow2
qemu-io -c 'write -z 0 64k' -c 'write -P 7 128k 64k' snap.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o extended_l2=on ext.qcow2 64M
qemu-img create -q -f qcow2 -o compression_type=zstd zstd.qcow2 64M
qemu-img create -q -f qcow2 -o compression_type=zstd zstd-data.qcow2 64M
qemu-io -c 'write -c -P 9 0 64k' zstd-data.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o data_file=data.raw datafile.qcow2 64M
qemu-img create -q -f qcow2 -o data_file=rawdata.raw,data_file_raw=on rawdatafile.qcow2 64M
# (qemu-img takes a minute to widen 1-bit refcounts: only refusals use this one.)
qemu-img create -q -f qcow2 -o refcount_bits=1 rc1.qcow2 64M
qemu-io -c 'write -P 8 0 256k' rc1.qcow2 >/dev/null

# compat, both ways.
for opts in compat=0.10 compat=v2 compat=1.1 compat=v3; do
    same v3.qcow2 bytes -o $opts
    same v2.qcow2 bytes -o $opts
    same overlay.qcow2 bytes -o $opts
done
same snap.qcow2 bytes -o compat=1.1
same snap.qcow2 fixed -o compat=0.10
# Preallocated zero clusters still shared with a snapshot: qemu-img 7.2's downgrade flags
# them COPIED (by the L2 table's refcount, not the cluster's), which its check calls corrupt.
qemu-img create -q -f qcow2 -o cluster_size=4k shared-zero.qcow2 2M
qemu-io -c 'write -P 0x11 0 300k' -c 'write -z 64k 12k' shared-zero.qcow2 >/dev/null
qemu-img snapshot -c s1 shared-zero.qcow2
qemu-io -c 'write -P 0x13 4k 8k' shared-zero.qcow2 >/dev/null
same shared-zero.qcow2 fixed -o compat=0.10
same small.qcow2 bytes -o compat=0.10
same ext.qcow2 bytes -o compat=0.10
same zstd.qcow2 bytes -o compat=0.10
same zstd-data.qcow2 bytes -o compat=0.10
same datafile.qcow2 bytes -o compat=0.10
same rc1.qcow2 bytes -o compat=0.10
same v2.qcow2 bytes -o compat=1.1,lazy_refcounts=on
same v2.qcow2 bytes -o compat=1.1,refcount_bits=8

# Refcount widths, up and down.
# (qemu-img walks every entry the refcount table spans, three times: with 64k clusters that
# takes it seconds, so the 4k-cluster image takes every width.)
for bits in 1 2 4 8 16 32 64; do
    same small.qcow2 bytes -o refcount_bits=$bits
done
same v3.qcow2 bytes -o refcount_bits=8
same snap.qcow2 bytes -o refcount_bits=1
same overlay.qcow2 bytes -o refcount_bits=64
same small.qcow2 bytes -p -o refcount_bits=4 -q
same small.qcow2 bytes -o refcount_bits=32,compat=0.10

# A dirty image (lazy refcounts, killed while writing) is repaired first, as qemu-img does.
qemu-img create -q -f qcow2 -o cluster_size=4k,lazy_refcounts=on dirty.qcow2 16M
(qemu-io -c 'write -P 6 0 300k' -c 'sigraise 9' dirty.qcow2 >/dev/null 2>&1)
for opts in compat=0.10 lazy_refcounts=off refcount_bits=8 lazy_refcounts=on; do
    same dirty.qcow2 state -o $opts
done

# Lazy refcounts, data file bits, size.
same v3.qcow2 bytes -o lazy_refcounts=on
same small.qcow2 bytes -o lazy_refcounts=off
same v3.qcow2 bytes -o lazy_refcounts=on,compat=0.10
same datafile.qcow2 bytes -o data_file=other.raw
same datafile.qcow2 bytes -o data_file=data.raw
same datafile.qcow2 bytes -o data_file_raw=off
same rawdatafile.qcow2 bytes -o data_file_raw=off
same rawdatafile.qcow2 bytes -o data_file_raw=on
same rawdatafile.qcow2 bytes -o data_file=
same v3.qcow2 "" -o size=128M
same v3.qcow2 bytes -o size=0
same overlay.qcow2 "" -o size=32M

# The backing file: accepted when it repeats the image's, refused otherwise (use rebase).
same overlay.qcow2 bytes -o backing_file=v3.qcow2,backing_fmt=qcow2
same overlay.qcow2 bytes -o backing_file=v3.qcow2
same overlay.qcow2 bytes -o backing_fmt=raw
same v3.qcow2 bytes -o backing_file=v3.qcow2
same v2.qcow2 bytes -o compat=1.1,backing_file=other.qcow2

# Refusals.
for opts in cluster_size=4k extended_l2=on preallocation=full compression_type=zstd \
    encryption=on bogus=1 compat=0.9 compat= refcount_bits=3 refcount_bits=128 refcount_bits=x \
    size=100000 size=8E size=x data_file=x data_file_raw=on lazy_refcounts=maybe \
    encrypt.state=active encrypt.new-secret=s; do
    same v3.qcow2 bytes -o $opts
done
same ext.qcow2 bytes -o compat=0.10
same datafile.qcow2 bytes -o data_file_raw=on
same snap.qcow2 bytes -o compat=0.10,size=128M
same rc1.qcow2 bytes -o refcount_bits=1,compat=0.10

# The help text, with and without a file; no options; no file; other formats.
same v3.qcow2 bytes -o help
same v3.qcow2 bytes -f qcow2 -o help
same v3.qcow2 bytes -o compat=1.1 -o help
# qemu-img 7.2 amends qcow2 (and luks) only: every other format this library writes refuses.
# (qemu-img rewrites a VHDX header on every writable open, even one that changes nothing.)
for fmt in vpc raw vmdk vhdx vdi qed parallels; do
    qemu-img create -q -f $fmt disk.$fmt 16M
    mode=bytes
    [ $fmt = vhdx ] && mode=""
    same disk.$fmt "$mode" -o size=32M
    same disk.$fmt "$mode" -o help
    same disk.$fmt "$mode" -f $fmt -o lazy_refcounts=on
done
for args in "-f vpc -o help" "-f vmdk -o help" "-f foo -o help" "-o help" "-o compat=1.1" \
    "-o compat=1.1 a b" "v3.qcow2" "-x -o compat=1.1 v3.qcow2"; do
    # shellcheck disable=SC2086
    qemu-img amend $args >q.out 2>q.err
    q_status=$?
    # shellcheck disable=SC2086
    "$IMGUTIL" amend $args >i.out 2>i.err
    i_status=$?
    sed -i 's/^imgutil:/qemu-img:/; s/imgutil --help/qemu-img --help/' i.err
    [ "$q_status" -eq "$i_status" ] || fail "amend $args: exit status $i_status, qemu-img $q_status"
    cmp -s q.out i.out || fail "amend $args: stdout differs: $(cat i.out) / $(cat q.out)"
    cmp -s q.err i.err || fail "amend $args: stderr differs: $(cat i.err) / $(cat q.err)"
done

expect_status 1 amend -o compat=1.1 missing.qcow2
expect_err "missing.qcow2"

[ "$FAILURES" -eq 0 ] || exit 1
echo "amend: imgutil and qemu-img agree"
