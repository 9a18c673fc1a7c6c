#!/bin/bash
# read-grubenv.sh DISK.raw [PARTITION] - print the GRUB environment block that the demo's
# Disk B keeps at /boot/grub/grubenv on its ext4 partition (default 2), one KEY=VALUE a
# line (comments and the '#' padding left out).  Reads the raw disk in place with
# debugfs (no mount, no root).  Fails if the file is missing or not 1024 bytes.
# For a disk inside a VHDX, convert it first: qemu-img convert -O raw X.vhdx X.raw
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"     # sgdisk, mkfs.*, debugfs, e2fsck
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 DISK.raw [PARTITION]" >&2
    exit 2
fi
disk=$1 part=${2:-2}
start=$(sgdisk -i "$part" "$disk" 2>/dev/null |
        awk 'index($0, "First sector:") == 1 { print $3 }')
[ -n "$start" ] || { echo "read-grubenv: $disk has no partition $part" >&2; exit 1; }
dev="$disk?offset=$((start * 512))"
size=$(debugfs -R "stat /boot/grub/grubenv" "$dev" 2>/dev/null |
       sed -n 's/.*Size: \([0-9]*\).*/\1/p' | head -n 1)
[ "$size" = 1024 ] || { echo "read-grubenv: /boot/grub/grubenv: size '$size', not 1024" >&2; exit 1; }
debugfs -R "cat /boot/grub/grubenv" "$dev" 2>/dev/null | tr -d '\0' | grep -v '^#' | grep . || true
