#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# imgutil measure against qemu-img measure: the same figures, output, messages and exit
# status for --size with each qcow2 cluster size and option, for source images (raw and
# qcow2, sparse and full, compressed, with a backing chain, with bitmaps), and for refusals.
# usage: test_measure_cli.sh IMGUTIL

. "$(dirname "$0")/../cli/lib.sh"
enter_work_with_qemu

# same ARGS...: imgutil measure and qemu-img measure print the same (the program name aside)
# and exit with the same status.
same() {
    same_as_qemu measure "$@"
}

# --size: every cluster size, with the options that change the metadata.
for cs in 512 1k 2k 4k 8k 16k 32k 64k 128k 256k 512k 1M 2M; do
    same --size 1G -O qcow2 -o cluster_size=$cs
    same --size 3T -O qcow2 -o cluster_size=$cs,refcount_bits=1 --output=json
done
for opts in extended_l2=on extended_l2=on,cluster_size=16k refcount_bits=1 refcount_bits=2 \
    refcount_bits=4 refcount_bits=8 refcount_bits=32 refcount_bits=64 compat=0.10 compat=1.1 preallocation=off preallocation=metadata preallocation=falloc \
    preallocation=full extended_l2=on,refcount_bits=64,cluster_size=2M \
    backing_file=base.qcow2,preallocation=full size=5G lazy_refcounts=on,compression_type=zstd; do
    same --size 100G -O qcow2 -o $opts
done
for size in 0 1 511 1023 65537 1G 1T 7E; do
    same --size $size -O qcow2
    same --size $size -O raw --output=json
done
same --size 1G
same --size 1G --output=human

# Sources.
truncate -s 100M sparse.raw
qemu-io -f raw -c 'write -P 1 0 64k' -c 'write -P 2 1M 4k' -c 'write -P 3 33M 1000' \
    -c 'write -P 4 99M 1M' sparse.raw >/dev/null
head -c 3000000 /dev/urandom >full.raw
truncate -s 10000 odd.raw
qemu-img create -q -f qcow2 base.qcow2 64M
qemu-io -c 'write -P 5 0 10M' -c 'write -P 6 40M 3M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 over.qcow2
qemu-io -c 'write -P 7 5M 10M' -c 'write -z 41M 1M' -c 'write -P 8 60M 512' over.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 over_longer.qcow2 80M
qemu-io -c 'write -P 7 70M 1M' over_longer.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 50M
qemu-io -c 'write -P 9 0 1M' v2.qcow2 >/dev/null
qemu-img convert -c -O qcow2 full.raw compressed.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4k zeros.qcow2 30M
qemu-io -c 'write -P 1 0 3k' -c 'write -z 8k 100k' -c 'write -P 1 1M 1' zeros.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=32k,extended_l2=on extl2.qcow2 30M
qemu-io -c 'write -P 1 0 3k' -c 'write -P 1 100k 1k' extl2.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o preallocation=metadata prealloc.qcow2 30M
cp zeros.qcow2 bitmaps.qcow2
qemu-img bitmap --add bitmaps.qcow2 one
qemu-img bitmap --add -g 4096 bitmaps.qcow2 a_longer_name_for_the_directory_entry_size
for f in sparse.raw full.raw odd.raw base.qcow2 over.qcow2 over_longer.qcow2 v2.qcow2 \
    compressed.qcow2 zeros.qcow2 extl2.qcow2 prealloc.qcow2 bitmaps.qcow2; do
    for target in "-O qcow2" "-O raw --output=json" "-O qcow2 -o cluster_size=512,compat=0.10" \
        "-O qcow2 -o cluster_size=2M,refcount_bits=1 --output=json" \
        "-O qcow2 -o backing_file=base.qcow2" "-O qcow2 -o extended_l2=on,cluster_size=16k"; do
        # shellcheck disable=SC2086
        same $target $f
    done
done
same -f raw -O qcow2 base.qcow2
# Bitmaps of every granularity, into targets of other cluster sizes; a source with a snapshot.
qemu-img create -q -f qcow2 -o cluster_size=512 granularities.qcow2 3G
for g in 512 64k 1M 2G; do
    qemu-img bitmap --add -g $g granularities.qcow2 "bitmap_$g"
done
same -O qcow2 -o cluster_size=512 granularities.qcow2
same -O qcow2 -o cluster_size=2M --output=json granularities.qcow2
qemu-img snapshot -c snap base.qcow2
same -O qcow2 base.qcow2
same -U -O qcow2 --output=json bitmaps.qcow2

# Refusals.
same
same --size 1G -O nosuchformat
same --size 1G base.qcow2
same -O qcow2 base.qcow2 over.qcow2
same --size 1G -f qcow2
same --size 1G -l snap
same --size -5 -O qcow2
same --size 1G --output=xml
same --size 1G -O qcow2 -o nosuchoption=1
same --size 1G -O qcow2 -o help
same --size 1G -O qcow2 -o cluster_size=1000
same --size 1G -O qcow2 -o compat=v2
same --size 1G -O qcow2 -o compat=v3
same --size 1G -O qcow2 -o extended_l2=on,cluster_size=4k
same --size 1G -O qcow2 -o extended_l2=maybe
same --size 1G -O qcow2 -o refcount_bits=3
same --size 1G -O qcow2 -o compat=0.10,refcount_bits=8
same --size 1P -O qcow2 -o cluster_size=512
# Out of the option's range: refused as qemu-img refuses it, in the option table's words.
for opts in cluster_size=4M refcount_bits=128; do
    if expect_status 1 measure --size 1G -O qcow2 -o $opts; then
        expect_err "Parameter '${opts%%=*}'"
    fi
done

[ "$FAILURES" -eq 0 ]
