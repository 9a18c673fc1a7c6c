#!/bin/sh
# /init of the RAM-disk demo's initramfs (ovmf-scripts/demo/build-ramdemo.sh): nothing of
# vhdx-efi, only what any distribution's initramfs does for a root on an NVDIMM: load
# Debian's nfit, libnvdimm, nd_btt and nd_pmem modules, find the partition the kernel
# command line's root=PARTUUID= names (by reading each disk's GPT), mount it and
# switch_root to its /sbin/init.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
for m in libnvdimm nd_btt nd_pmem nfit; do
    insmod /lib/modules/$m.ko || echo "initramfs: insmod $m failed"
done
want=$(sed -n 's/.*root=PARTUUID=\([^ ]*\).*/\1/p' /proc/cmdline | tr 'A-F' 'a-f')
# A GPT entry's unique GUID (16 bytes at offset 16, UEFI 2.10 section 5.3.3) as text:
# the first three fields little-endian, the rest as stored.
guid_at() {     # guid_at DEVICE BYTE_OFFSET
    set -- $(od -An -tx1 -j "$2" -N16 "$1")
    echo "$4$3$2$1-$6$5-$8$7-$9${10}-${11}${12}${13}${14}${15}${16}"
}
find_root() {
    for sys in /sys/block/*; do
        disk=/dev/${sys##*/}
        [ -b "$disk" ] || continue
        for sector in 512 4096; do
            [ "$(dd if="$disk" bs=1 skip=$sector count=8 2>/dev/null)" = "EFI PART" ] || continue
            n=1
            while [ $n -le 8 ]; do
                at=$(( 2 * sector + (n - 1) * 128 + 16 ))
                if [ "$(guid_at "$disk" $at)" = "$want" ]; then
                    for part in "${disk}p$n" "$disk$n"; do
                        [ -b "$part" ] && { echo "$part"; return 0; }
                    done
                fi
                n=$((n + 1))
            done
        done
    done
    return 1
}
tries=0
until root=$(find_root); do
    tries=$((tries + 1))
    if [ $tries -gt 50 ]; then
        echo "initramfs: no partition with PARTUUID=$want; block devices: $(ls /sys/block)"
        exec sh
    fi
    sleep 0.2
done
echo "initramfs: root=PARTUUID=$want is $root"
mkdir -p /root
mount -t ext4 "$root" /root || { echo "initramfs: cannot mount $root"; exec sh; }
umount /proc /sys
mount --move /dev /root/dev 2>/dev/null || umount /dev
exec switch_root /root /sbin/init
