#!/bin/sh
# /sbin/init of the RAM-disk demo's root file system (ext4, inside the VHDX): says which
# device the root is on, writes a file there, and powers off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
root=$(awk '$2 == "/" && $1 != "rootfs" { print $1 }' /proc/mounts | tail -n 1)
echo
echo "VHDX-EFI RAM DEMO: root on $root ($(cat /sys/block/pmem0/size 2>/dev/null) sectors of pmem0)"
echo "VHDX-EFI RAM DEMO: uname -r = $(uname -r)"
# Who made the NFIT the kernel read (its OEM ID, bytes 10-15 of the table).
echo "VHDX-EFI RAM DEMO: NFIT OEM ID: $(dd if=/sys/firmware/acpi/tables/NFIT bs=1 skip=10 count=6 2>/dev/null)"
echo "written at boot by the RAM-disk demo" > /written-at-boot.txt && sync &&
    echo "VHDX-EFI RAM DEMO: wrote /written-at-boot.txt: $(cat /written-at-boot.txt)"
echo "VHDX-EFI RAM DEMO: powering off"
sleep 1
poweroff -f
echo "VHDX-EFI RAM DEMO: poweroff failed"
exit 1
