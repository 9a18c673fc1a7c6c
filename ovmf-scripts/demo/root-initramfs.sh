#!/bin/sh
# /init of the root demo's initramfs (ovmf-scripts/demo/rootdisk.py): busybox-static,
# the static `vhdx` and the kernel modules attaching needs.  It does what an
# initramfs-tools local-top script or a dracut unit does on a real system:
#   1. `vhdx attach --firmware`: the disk vhdxboot.efi handed over (its EFI variable) is
#      attached as /dev/nbd0, its partitions appear;
#   2. the root= of the command line (LABEL= or UUID=, resolved by findfs, or a device)
#      is mounted and the machine switches to it; /run (with /run/initramfs/shutdown,
#      which `vhdx attach` left there) goes along.
# Without a hand-off it says so and powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /newroot
mount -t tmpfs -o mode=0755 tmpfs /run
exec </dev/console >/dev/console 2>&1
say() { echo "VHDX-EFI DEMO: $*"; }
halt_here() { say "$*"; say "powering off"; sleep 1; poweroff -f; }

say "Linux booted from a VHDX file"
say "uname -r = $(uname -r)"
for m in $(cat /etc/modules.order); do
    insmod /lib/modules/$m.ko || say "insmod $m failed"
done
root=
for word in $(cat /proc/cmdline); do
    case $word in root=*) root=${word#root=} ;; esac
done
[ -n "$root" ] || halt_here "no root= on the command line"

say "initramfs: vhdx attach --firmware"
dev=$(vhdx attach --firmware) || halt_here "vhdx attach --firmware failed"
[ -n "$dev" ] || halt_here "no disk was handed over by the firmware"
say "initramfs: attached $dev"

# The root device: LABEL=/UUID= through findfs (it reads the new partitions), else a path.
i=0
while :; do
    case $root in
        LABEL=*|UUID=*) found=$(findfs "$root" 2>/dev/null) ;;
        *) [ -b "$root" ] && found=$root ;;
    esac
    [ -n "$found" ] && break
    i=$((i + 1))
    [ $i -lt 100 ] || halt_here "root=$root not found"
    sleep 0.1
done
mount -t ext4 "$found" /newroot || halt_here "cannot mount $found"
say "initramfs: root=$root is $found; switching to it"
for d in run dev proc sys; do
    mount --move /$d /newroot/$d
done
exec switch_root /newroot /sbin/init
