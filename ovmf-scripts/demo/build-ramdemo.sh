#!/bin/bash
# build-ramdemo.sh OUTDIR - the RAM-disk demo disk (`make run MODE=ram`), from the kernel
# package build-demo.sh left in OUTDIR/cache (run that first) and busybox-static.
#
#   disk-ram.raw    96 MiB GPT: p1 ESP (FAT32) with systemd-boot, the kernel and
#                   initrd-ram.img; p2 ext4 root (PARTUUID below) with busybox and
#                   /sbin/init = ram-root-init.sh
#   initrd-ram.img  busybox, Debian's libnvdimm, nd_btt, nd_pmem and nfit modules, and
#                   /init = ram-init.sh: finds root=PARTUUID= and switches to it.
#                   Nothing of vhdx-efi: the firmware hands the OS a RAM disk described
#                   by ACPI NFIT, which the kernel sees as /dev/pmem0.
#   ramdemo.env     RAM_DISK, RAM_ROOT_PARTUUID, RAM_ROOT_PARTITION, RAM_BANNER
#
# Reproducible like build-demo.sh (fixed GUIDs, UUIDs and timestamps); no root needed.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(cd "$1" && pwd)
WORK=$OUT/work-ram
die() { echo "build-ramdemo: error: $*" >&2; exit 1; }
[ -f "$OUT/demo.env" ] || die "$OUT/demo.env is missing: run build-demo.sh $OUT first"
# shellcheck disable=SC1091
. "$OUT/demo.env"
KDEB=$(ls "$OUT/cache/${KERNEL_PACKAGE}"_*_amd64.deb 2>/dev/null | tail -n 1)
[ -n "$KDEB" ] || die "no $KERNEL_PACKAGE package in $OUT/cache"
EPOCH=${SOURCE_DATE_EPOCH:-1704067200}
export SOURCE_DATE_EPOCH=$EPOCH E2FSPROGS_FAKE_TIME=$EPOCH MTOOLS_SKIP_CHECK=1 LC_ALL=C
MiB=$((1024 * 1024))
DISK_GUID=5644584A-0003-4000-8000-00000000C000
ESP_GUID=5644584A-0003-4000-8000-00000000C001
ROOT_GUID=5644584A-0003-4000-8000-00000000C002
EXT4_UUID=5644584a-0003-4000-8000-0000000e4703
CMDLINE="console=ttyS0,115200 panic=-1 loglevel=6 root=PARTUUID=$ROOT_GUID rootwait"
RAM_BANNER="VHDX-EFI RAM DEMO: root on /dev/pmem0p2"

rm -rf "$WORK"
mkdir -p "$WORK"

# The initramfs: busybox, the four modules (ext4 and dax are built in), /init.
IR=$WORK/initramfs
mkdir -p "$IR/bin" "$IR/dev" "$IR/proc" "$IR/sys" "$IR/root" "$IR/lib/modules"
cp /bin/busybox "$IR/bin/busybox"
ln -s busybox "$IR/bin/sh"
cp "$HERE/ram-init.sh" "$IR/init"
dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$WORK" --wildcards \
    '*/drivers/acpi/nfit/nfit.ko' '*/drivers/nvdimm/libnvdimm.ko' \
    '*/drivers/nvdimm/nd_btt.ko' '*/drivers/nvdimm/nd_pmem.ko'
for m in nfit libnvdimm nd_btt nd_pmem; do
    cp "$(find "$WORK/lib/modules" -name "$m.ko")" "$IR/lib/modules/"
done
chmod 755 "$IR/init" "$IR/bin/busybox"
python3 "$HERE/mkcpio.py" "$IR" "$OUT/initrd-ram.img" "$EPOCH"

# The root file system: busybox and /sbin/init.
ROOT=$WORK/rootfs
mkdir -p "$ROOT/bin" "$ROOT/sbin" "$ROOT/dev" "$ROOT/proc" "$ROOT/sys" "$ROOT/tmp"
cp /bin/busybox "$ROOT/bin/busybox"
for tool in sh awk cat dd sync sleep poweroff mount uname echo; do
    ln -s busybox "$ROOT/bin/$tool"
done
cp "$HERE/ram-root-init.sh" "$ROOT/sbin/init"
chmod 755 "$ROOT/sbin/init" "$ROOT/bin/busybox"
find "$ROOT" -exec touch -h -d "@$EPOCH" {} +

# The disk: ESP 48 MiB, root 46 MiB.
D=$WORK/disk-ram.raw
truncate -s $((96 * MiB)) "$D"
sgdisk -o -U "$DISK_GUID" \
    -n 1:2048:+48M -t 1:EF00 -c 1:"EFI System" -u "1:$ESP_GUID" \
    -n 2:0:0 -t 2:8300 -c 2:"ram-demo root" -u "2:$ROOT_GUID" "$D" >/dev/null
first() { sgdisk -i "$1" "$D" | awk '/^First sector:/ { print $3 }'; }
last() { sgdisk -i "$1" "$D" | awk '/^Last sector:/ { print $3 }'; }
ESP_START=$(first 1)
ROOT_START=$(first 2)
ROOT_SECTORS=$(( $(last 2) - ROOT_START + 1 ))

ESP=$WORK/esp.img
mkfs.fat -F 32 -S 512 -s 1 -n RAMDEMO -i 5644580c --invariant -C "$ESP" $((48 * 1024)) >/dev/null
mmd -i "$ESP" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
put() { touch -d "@$EPOCH" "$1"; mcopy -o -m -i "$ESP" "$1" "::$2"; }
cp /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$WORK/BOOTX64.EFI"
put "$WORK/BOOTX64.EFI" /EFI/BOOT/BOOTX64.EFI
printf 'default ram.conf\ntimeout 0\nconsole-mode keep\neditor no\n' > "$WORK/loader.conf"
put "$WORK/loader.conf" /loader/loader.conf
printf 'title   VHDX-EFI RAM-disk demo\nlinux   /vmlinuz\ninitrd  /initrd-ram.img\noptions %s\n' \
    "$CMDLINE" > "$WORK/ram.conf"
put "$WORK/ram.conf" /loader/entries/ram.conf
put "$OUT/vmlinuz" /vmlinuz
put "$OUT/initrd-ram.img" /initrd-ram.img
dd if="$ESP" of="$D" bs=512 seek="$ESP_START" conv=notrunc,sparse status=none

EXT4=$WORK/root.ext4
truncate -s $((ROOT_SECTORS * 512)) "$EXT4"
mkfs.ext4 -q -F -L ram-root -U "$EXT4_UUID" -b 1024 \
    -E "root_owner=0:0,hash_seed=$EXT4_UUID,lazy_itable_init=0,lazy_journal_init=0" \
    -d "$ROOT" "$EXT4"
dd if="$EXT4" of="$D" bs=512 seek="$ROOT_START" conv=notrunc,sparse status=none
sgdisk -v "$D" | grep -q "No problems found" || die "GPT check failed"
mv -f "$D" "$OUT/disk-ram.raw"
{
    echo "# the RAM-disk demo disk, made by ovmf-scripts/demo/build-ramdemo.sh"
    echo "RAM_DISK='disk-ram.raw'"
    echo "RAM_ROOT_PARTUUID='$ROOT_GUID'"
    echo "RAM_ROOT_PARTITION='2'"
    echo "RAM_BANNER='$RAM_BANNER'"
    echo "RAM_CMDLINE='$CMDLINE'"
} > "$OUT/ramdemo.env"
rm -rf "$WORK"
echo "build-ramdemo: done: $OUT/disk-ram.raw" >&2
