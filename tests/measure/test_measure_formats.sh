#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# imgutil measure for the formats qemu-img 7.2 cannot measure (vdi, qed, parallels, vpc, vhdx,
# vmdk, asif), against what a convert really makes: for each format and option set, and for
# sources made by qemu-img and qemu-io (sparse, half full, full, odd sizes, a qcow2 source),
# both `qemu-img convert -O FMT` (asif: imgutil only) and `imgutil convert -O FMT` are run, and
#   - "required" is at least the bytes either converted image occupies (du, all its files);
#   - where the format is deterministic ("exact" below) "required" is the converted files'
#     length rounded up to 4 KiB host blocks, for both converts, and "fully-allocated" the
#     files' length of a full source's convert; elsewhere "required" exceeds the bytes
#     occupied by at most the tolerance given beside the format, and "fully-allocated" is at
#     least the files' length;
#   - with --size, "required" of an exact format is the length of the image create makes.
# usage: test_measure_formats.sh IMGUTIL

. "$(dirname "$0")/../cli/lib.sh"
DATA_BYTES="$(cd "$(dirname "$0")/../common" && pwd)/data_bytes.py"
enter_work_with_qemu

# Sources: all made by qemu-img and qemu-io.
truncate -s 100M sparse.raw
qemu-io -f raw -c 'write -P 1 0 64k' -c 'write -P 2 1M 4k' -c 'write -P 3 33M 1000' \
    -c 'write -P 4 99M 1M' sparse.raw >/dev/null
qemu-img create -q -f qcow2 half.qcow2 64M
qemu-io -c 'write -P 5 0 16M' -c 'write -P 6 40M 16M' half.qcow2 >/dev/null
head -c 3000000 /dev/urandom >full.raw
head -c 10000 /dev/urandom >odd.raw
truncate -s 5G big.raw
qemu-io -f raw -c 'write -P 7 0 1M' -c 'write -P 8 2047M 2M' -c 'write -P 9 4G 4k' \
    big.raw >/dev/null
SOURCES="sparse.raw half.qcow2 full.raw odd.raw big.raw"
FULL_SOURCES="full.raw odd.raw"

# size_of DIR: the length and the bytes occupied of every file in DIR, as "LENGTH USED"
# (the bytes held as data, not the file system's blocks: see data_bytes.py).
size_of() {
    len=0
    used=0
    for file in "$1"/*; do
        len=$((len + $(stat -c %s "$file")))
        used=$((used + $(python3 "$DATA_BYTES" "$file")))
    done
    echo "$len $used"
}

# json_field NAME FILE
json_field() {
    sed -n "s/.*\"$1\": *\([0-9]*\).*/\1/p" "$2"
}

round_host() {
    echo $((($1 + 4095) / 4096 * 4096))
}

# check FORMAT OPTS KIND TOLERANCE SRC: KIND "length" (deterministic: "required" is the
# converted files' length rounded up to 4 KiB, plus at most TOLERANCE) or "occupied" (for
# full.raw, whose random data fills every unit, at most TOLERANCE over the bytes the files
# occupy; for sparser sources a unit holding a little data counts whole).
check() {
    fmt=$1
    opts=$2
    kind=$3
    tol=$4
    src=$5
    # shellcheck disable=SC2086
    if ! "$IMGUTIL" measure --output=json -O "$fmt" ${opts:+-o "$opts"} "$src" >m.json \
        2>m.err; then
        fail "measure -O $fmt -o '$opts' $src: $(cat m.err)"
        return
    fi
    required=$(json_field required m.json)
    fully=$(json_field fully-allocated m.json)
    for tool in qemu-img "$IMGUTIL"; do
        [ "$tool" = qemu-img ] && [ "$fmt" = asif ] && continue
        rm -rf out && mkdir out
        # shellcheck disable=SC2086
        if ! "$tool" convert -O "$fmt" ${opts:+-o "$opts"} "$src" out/img >/dev/null 2>&1; then
            fail "$tool convert -O $fmt -o '$opts' $src failed"
            continue
        fi
        set -- $(size_of out)
        what="-O $fmt -o '$opts' $src (${tool##*/} convert: length $1, occupied $2)"
        [ -n "$VERBOSE" ] && echo "$what: required $required, fully-allocated $fully"
        if [ "$required" -lt "$2" ]; then
            fail "required $required is less than what the image occupies: $what"
        fi
        if [ "$kind" = length ]; then
            base=$(round_host "$1")
            if [ "$required" -lt "$base" ] || [ "$required" -gt $((base + tol)) ]; then
                fail "required $required is not the length rounded to 4 KiB (+$tol): $what"
            fi
        elif [ "$src" = full.raw ] && [ "$required" -gt $(($2 + tol)) ]; then
            fail "required $required exceeds the bytes occupied by more than $tol: $what"
        fi
        case " $FULL_SOURCES " in
        *" $src "*)
            if [ "$kind" = length ] && [ "$fully" -gt $(($1 + tol)) ]; then
                fail "fully-allocated $fully is more than the length of a full image: $what"
            elif [ "$fully" -lt "$1" ]; then
                fail "fully-allocated $fully is less than the length of a full image: $what"
            fi
            ;;
        esac
    done
}

# check_size FORMAT OPTS SIZE: an empty image's length is "required" of --size.
check_size() {
    # shellcheck disable=SC2086
    "$IMGUTIL" measure --output=json -O "$1" ${2:+-o "$2"} --size "$3" >m.json 2>m.err ||
        fail "measure --size $3 -O $1 -o '$2': $(cat m.err)"
    required=$(json_field required m.json)
    for tool in qemu-img "$IMGUTIL"; do
        [ "$tool" = qemu-img ] && [ "$1" = asif ] && continue
        rm -rf out && mkdir out
        # shellcheck disable=SC2086
        (cd out && "$tool" create -q -f "$1" ${2:+-o "$2"} img "$3" >/dev/null 2>&1) ||
            fail "$tool create -f $1 -o '$2' $3 failed"
        set -- "$1" "$2" "$3" $(size_of out)
        if [ "$required" -ne "$(round_host "$4")" ]; then
            fail "measure --size $3 -O $1 -o '$2': required $required, created length $4 ($tool)"
        fi
    done
}

# FORMAT|OPTS|KIND|TOLERANCE (bytes), as README.md states them.
while IFS='|' read -r fmt opts kind tol; do
    [ -n "$fmt" ] || continue
    for src in $SOURCES; do
        check "$fmt" "$opts" "$kind" "$tol" "$src"
    done
    if [ "$kind" = length ] && [ "$tol" = 0 ]; then
        for size in 1 10000 100M 5G; do
            check_size "$fmt" "$opts" "$size"
        done
    fi
done <<'TABLE'
vdi||length|0
vdi|static=on|occupied|262144
qed||length|0
qed|cluster_size=4k,table_size=4|length|0
parallels||length|4096
parallels|cluster_size=64k|length|4096
vpc||length|0
vpc|force_size=on|length|0
vpc|subformat=fixed|occupied|65536
vhdx||length|0
vhdx|block_size=1M|length|0
vhdx|subformat=fixed|occupied|16777216
vhdx|subformat=fixed,block_state_zero=off|occupied|16777216
vmdk||length|0
vmdk|subformat=twoGbMaxExtentSparse|length|4096
vmdk|subformat=monolithicFlat|occupied|65536
vmdk|subformat=twoGbMaxExtentFlat|occupied|65536
vmdk|subformat=streamOptimized|occupied|131072
asif||occupied|6291456
TABLE

[ "$FAILURES" -eq 0 ]
