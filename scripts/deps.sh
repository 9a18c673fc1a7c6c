#!/bin/sh
# Install the Debian packages the build and the tests need, only when one is missing.
#
#   scripts/deps.sh build   what `make` needs: a C toolchain and gnu-efi
#   scripts/deps.sh [all]   that, plus what `make check`, `make bench` and `make run` need
#   scripts/deps.sh fuzz    what `make fuzz` needs (clang's libFuzzer, llvm-cov)
#
# Safe to run again (it does nothing when everything is present).  Needs root (or sudo)
# only when something must be installed; without them it names what is missing and
# fails, so that the build stops with that message instead of a compiler error.
set -eu

BUILD_PACKAGES="build-essential gnu-efi"
TEST_PACKAGES="qemu-utils qemu-system-x86 ovmf python3 python3-libvhdi libvhdi-utils mtools
dosfstools gdisk bzip2 e2fsprogs grub-common grub-efi-amd64-bin systemd-boot-efi
busybox-static sbsigntool openssl libnbd-bin python3-libnbd 7zip
debootstrap"
# make fuzz, make fuzz-coverage: clang's libFuzzer and sanitizer runtimes
# (libclang-rt-14-dev) and llvm-profdata/llvm-cov (llvm).  Not needed by make check.
FUZZ_PACKAGES="clang libclang-rt-14-dev llvm qemu-utils python3"

case "${1:-all}" in
build) PACKAGES=$BUILD_PACKAGES ;;
all) PACKAGES="$BUILD_PACKAGES $TEST_PACKAGES" ;;
fuzz) PACKAGES="$BUILD_PACKAGES $FUZZ_PACKAGES" ;;
*) echo "usage: scripts/deps.sh [build|all|fuzz]" >&2; exit 2 ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps: not a Debian system (no dpkg-query): make sure these, or their" \
         "equivalents, are installed:" $PACKAGES >&2
    exit 0
fi
missing=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing:$missing" >&2
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "deps: missing packages:$missing (run as root, or install them by hand)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null || $SUDO apt-get update
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
