#!/bin/sh
# Install the Debian packages the build and the tests need, only when one is missing.
# Run by `make check`, `make bench` and `make run`; safe to run again (it does nothing
# when everything is present). Needs root (or sudo) only when something must be installed.
set -eu

PACKAGES="build-essential gnu-efi qemu-utils qemu-system-x86 ovmf python3 python3-libvhdi
libvhdi-utils mtools dosfstools gdisk bzip2 e2fsprogs
grub-common grub-efi-amd64-bin systemd-boot-efi busybox-static
libnbd-bin python3-libnbd debootstrap"

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
