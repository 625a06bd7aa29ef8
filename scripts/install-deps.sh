#!/usr/bin/env bash
# Installs the Debian 12 packages that building, testing and the demo need (run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends \
    build-essential g++ meson ninja-build pkg-config \
    libbz2-dev \
    zlib1g-dev libzstd-dev liburing-dev libdeflate-dev libcmocka-dev \
    qemu-utils abigail-tools clang libclang-rt-14-dev python3 bzip2 valgrind strace attr acl \
    man-db groff-base
