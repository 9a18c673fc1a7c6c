#!/bin/busybox sh
# /sbin/init on the root demo's ext4 root file system, which lives inside the VHDX and is
# served by `vhdx attach` through /dev/nbd0: it says which device its root is on, counts
# the boot in /var/lib/vhdx-demo/boot-counter, makes that durable, and hands over to
# /run/initramfs/shutdown (the copy of `vhdx` the initramfs left), which unmounts this
# file system, detaches the disk (the image is flushed and closed clean) and powers off.
b=/bin/busybox
root=$($b awk '$2 == "/" { print $1 }' /proc/mounts | $b tail -n 1)
counter=/var/lib/vhdx-demo/boot-counter
n=$($b cat $counter 2>/dev/null || echo 0)
n=$((n + 1))
echo $n > $counter.new && $b sync $counter.new && $b mv $counter.new $counter && $b sync
echo "VHDX-EFI DEMO: root file system on $root (ext4 inside the VHDX), boot counter $n"
exec /run/initramfs/shutdown poweroff
