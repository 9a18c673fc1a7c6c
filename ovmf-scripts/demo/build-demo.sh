#!/bin/bash
# build-demo.sh OUTDIR - build the "boot Linux from a VHDX" demo disks from Debian packages.
#
# Makes, in OUTDIR (downloads cached in OUTDIR/cache, so a second run is offline):
#   vmlinuz            Debian's linux-image-*-cloud-amd64 kernel (EFI stub, 8250 console)
#   initrd.img         gzip newc cpio: busybox-static + init.sh as /init (banner, poweroff)
#   disk-sdboot.raw    Disk A, 256 MiB GPT: p1 ESP (FAT32) with systemd-boot as
#                      \EFI\BOOT\BOOTX64.EFI, loader.conf, entries/demo.conf, kernel, initrd
#   disk-grub.raw      Disk B, 256 MiB GPT: p1 ESP (FAT32) with a grub-mkimage GRUB as
#                      \EFI\BOOT\BOOTX64.EFI; p2 ext4 (made without root by mkfs.ext4 -d)
#                      with /boot/{vmlinuz,initrd.img} and /boot/grub/{grub.cfg,grubenv,
#                      vhdx-demo.marker}; GRUB's grub.cfg writes grubenv with save_env
#   grubx64.efi        the GRUB image on Disk B's ESP
#   demo.env           shell-sourceable summary: kernel version, banners, paths, offsets
#
# Needs (Debian): apt (apt-get download, apt-cache), dpkg, python3, gdisk, dosfstools,
# mtools, e2fsprogs, grub-common, grub-efi-amd64-bin, systemd-boot-efi, busybox-static.
# No root and no loop mounts.  DEMO_KERNEL_PKG=linux-image-X-cloud-amd64 overrides the
# kernel package; otherwise the one linux-image-cloud-amd64 depends on is taken (and
# remembered in OUTDIR/cache/kernel.pkg: delete that file to pick up a newer kernel).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"     # sgdisk, mkfs.*, debugfs, e2fsck

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
CACHE=$OUT/cache
WORK=$OUT/work
mkdir -p "$CACHE"
rm -rf "$WORK"
mkdir -p "$WORK"

# Every timestamp written into the images (file mtimes in the cpio, FAT and ext4).
EPOCH=${SOURCE_DATE_EPOCH:-1704067200}      # 2024-01-01T00:00:00Z
export SOURCE_DATE_EPOCH=$EPOCH
export E2FSPROGS_FAKE_TIME=$EPOCH           # mke2fs: superblock/inode times
export MTOOLS_SKIP_CHECK=1 LC_ALL=C
MiB=$((1024 * 1024))

# The strings a boot test looks for (also written to demo.env).
INIT_BANNER="VHDX-EFI DEMO: Linux booted from a VHDX file"
INIT_DONE="VHDX-EFI DEMO: powering off"
GRUB_BANNER="VHDX-EFI DEMO: GRUB loaded the kernel from ext4"
GRUB_ENV_KEY=saved_marker
GRUB_ENV_INITIAL=not-yet-written
GRUB_ENV_VALUE=written-by-grub
GRUB_COUNTER_KEY=vhdx_demo_boots
GRUB_COUNTER_MAX=50                         # counts 1..50, then stays "50+"
CMDLINE="console=ttyS0,115200 panic=-1 loglevel=6"

# Fixed identifiers, so that the same inputs give the same images.
DISK_A_GUID=5644584A-0001-4000-8000-00000000A000
DISK_A_ESP_GUID=5644584A-0001-4000-8000-00000000A001
DISK_B_GUID=5644584A-0002-4000-8000-00000000B000
DISK_B_ESP_GUID=5644584A-0002-4000-8000-00000000B001
DISK_B_ROOT_GUID=5644584A-0002-4000-8000-00000000B002
EXT4_UUID=5644584a-0002-4000-8000-0000000e4704

say() { echo "build-demo: $*" >&2; }
die() { echo "build-demo: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Tools and package files
for t in apt-get apt-cache dpkg-deb dpkg-query python3 sgdisk mkfs.fat mmd mcopy \
         mkfs.ext4 debugfs grub-mkimage grub-editenv; do
    command -v "$t" >/dev/null 2>&1 || die "missing tool $t (see the header of $0)"
done
SDBOOT_EFI=/usr/lib/systemd/boot/efi/systemd-bootx64.efi
GRUB_DIR=/usr/lib/grub/x86_64-efi
BUSYBOX=/bin/busybox
[ -f "$SDBOOT_EFI" ] || die "missing $SDBOOT_EFI (package systemd-boot-efi)"
[ -f "$GRUB_DIR/moddep.lst" ] || die "missing $GRUB_DIR (package grub-efi-amd64-bin)"
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" \
    || die "package busybox-static is not installed (the dynamic busybox cannot run alone)"
pkgver() { dpkg-query -W -f='${Version}' "$1"; }

# ---------------------------------------------------------------------------------------
# 1. Kernel: linux-image-cloud-amd64 -> linux-image-<abi>-cloud-amd64, downloaded, not
#    installed.
resolve_kernel() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
download_kernel() {     # download_kernel PKG: the .deb in the cache, fetched if needed
    local deb
    deb=$(ls "$CACHE/$1"_*_amd64.deb 2>/dev/null | tail -n 1 || true)
    if [ -z "$deb" ]; then
        say "downloading $1"
        (cd "$CACHE" && apt-get download -q "$1" 2>&1 |
            grep -v -e '^W: Download is performed unsandboxed' >&2) || true
        deb=$(ls "$CACHE/$1"_*_amd64.deb 2>/dev/null | tail -n 1 || true)
    fi
    echo "$deb"
}
if [ -n "${DEMO_KERNEL_PKG:-}" ]; then
    KPKG=$DEMO_KERNEL_PKG
    KDEB=$(download_kernel "$KPKG")
else
    KPKG=$(cat "$CACHE/kernel.pkg" 2>/dev/null || true)
    KDEB=
    [ -n "$KPKG" ] && KDEB=$(download_kernel "$KPKG")
    if [ -z "$KDEB" ]; then
        # First run, or the remembered ABI left the archive: ask the metapackage.
        KPKG=$(resolve_kernel)
        [ -n "$KPKG" ] || die "cannot resolve linux-image-cloud-amd64 (run apt-get update first)"
        KDEB=$(download_kernel "$KPKG")
    fi
fi
[ -n "$KDEB" ] || die "apt-get download $KPKG failed"
echo "$KPKG" > "$CACHE/kernel.pkg"
KPKG_VERSION=$(dpkg-deb -f "$KDEB" Version)
KX=$CACHE/${KPKG}_$KPKG_VERSION
if [ ! -d "$KX/boot" ]; then
    # Only what the demo uses (like dpkg-deb -x, but 15 MB instead of 105 MB).
    rm -rf "$KX.tmp"
    mkdir -p "$KX.tmp"
    dpkg-deb --fsys-tarfile "$KDEB" |
        tar -x -C "$KX.tmp" --wildcards './boot/*' '*/kernel/fs/efivarfs/efivarfs.ko'
    mv "$KX.tmp" "$KX"
fi
VMLINUZ_SRC=$(ls "$KX"/boot/vmlinuz-* | head -n 1)
KCONFIG=$(ls "$KX"/boot/config-* | head -n 1)
for opt in CONFIG_EFI_STUB CONFIG_EFI CONFIG_SERIAL_8250 CONFIG_SERIAL_8250_CONSOLE \
           CONFIG_BLK_DEV_INITRD CONFIG_RD_GZIP CONFIG_DEVTMPFS CONFIG_PROC_FS CONFIG_SYSFS \
           CONFIG_BINFMT_SCRIPT; do
    grep -q "^$opt=y" "$KCONFIG" || die "$KPKG: $opt is not built in"
done
# The bzImage setup header (Documentation/x86/boot.rst): "HdrS" at 0x202, the version
# string at 0x200 + the word at 0x20e; the EFI stub makes it a PE image ("MZ", "PE\0\0").
KERNEL_VERSION_STRING=$(python3 - "$VMLINUZ_SRC" <<'EOF'
import struct, sys
d = open(sys.argv[1], "rb").read(65536)
assert d[0x202:0x206] == b"HdrS", "not a bzImage"
assert d[:2] == b"MZ", "no EFI stub (no MZ header)"
pe = struct.unpack_from("<I", d, 0x3c)[0]
assert d[pe:pe + 4] == b"PE\0\0", "no EFI stub (no PE header)"
machine = struct.unpack_from("<H", d, pe + 4)[0]
assert machine == 0x8664, "PE machine %#x is not x86-64" % machine
off = 0x200 + struct.unpack_from("<H", d, 0x20e)[0]
print(d[off:d.index(b"\0", off)].decode())
EOF
) || die "$VMLINUZ_SRC is not an EFI-stub bzImage"
KERNEL_VERSION=${KERNEL_VERSION_STRING%% *}
cp "$VMLINUZ_SRC" "$OUT/vmlinuz"
touch -d "@$EPOCH" "$OUT/vmlinuz"
say "kernel $KERNEL_VERSION ($KPKG $KPKG_VERSION)"

# ---------------------------------------------------------------------------------------
# 2. initramfs: busybox-static, /init = init.sh, efivarfs.ko
IR=$WORK/initramfs
mkdir -p "$IR/bin" "$IR/dev" "$IR/proc" "$IR/sys" "$IR/tmp"
cp "$BUSYBOX" "$IR/bin/busybox"
ln -s busybox "$IR/bin/sh"
cp "$HERE/init.sh" "$IR/init"
# efivarfs is a module in this kernel; /init loads it to print the loader's variables.
mkdir -p "$IR/lib/modules"
cp "$KX/lib/modules/$KERNEL_VERSION/kernel/fs/efivarfs/efivarfs.ko" "$IR/lib/modules/" \
    || die "no efivarfs.ko in $KPKG"
chmod 755 "$IR/init" "$IR/bin/busybox"
python3 "$HERE/mkcpio.py" "$IR" "$OUT/initrd.img" "$EPOCH"
touch -d "@$EPOCH" "$OUT/initrd.img"

# ---------------------------------------------------------------------------------------
# Helpers (note: sgdisk -q does not write the table, so its chatter goes to /dev/null):
# a GPT disk file, a FAT32 partition image, putting an image at an offset.
new_disk() {    # new_disk FILE SIZE_MIB DISK_GUID
    rm -f "$1"
    truncate -s $(($2 * MiB)) "$1"
    sgdisk -o -U "$3" "$1" >/dev/null 2>&1 || die "sgdisk -o $1 failed"
}
new_fat32() {   # new_fat32 FILE SIZE_MIB LABEL VOLID
    rm -f "$1"
    mkfs.fat -F 32 -S 512 -s 1 -n "$3" -i "$4" --invariant -C "$1" $(($2 * 1024)) >/dev/null
}
put() {         # put IMAGE DISK START_LBA
    dd if="$1" of="$2" bs=512 seek="$3" conv=notrunc,sparse status=none
}
fat_put() {     # fat_put FAT_IMAGE SRC DEST   (mtime of SRC kept: set to EPOCH)
    touch -d "@$EPOCH" "$2"
    mcopy -o -m -i "$1" "$2" "::$3"
}

# ---------------------------------------------------------------------------------------
# 3. Disk A: systemd-boot
A=$WORK/disk-sdboot.raw
new_disk "$A" 256 "$DISK_A_GUID"
sgdisk -n 1:2048:+120M -t 1:EF00 -c 1:"EFI System" -u "1:$DISK_A_ESP_GUID" "$A" >/dev/null 2>&1 \
    || die "sgdisk $A failed"
A_ESP_START=2048
A_ESP_SECTORS=$((120 * MiB / 512))
ESP=$WORK/esp-a.img
new_fat32 "$ESP" 120 VHDXDEMO-A 5644580a
mmd -i "$ESP" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
cp "$SDBOOT_EFI" "$WORK/BOOTX64.EFI"
fat_put "$ESP" "$WORK/BOOTX64.EFI" /EFI/BOOT/BOOTX64.EFI
printf 'default demo.conf\ntimeout 0\nconsole-mode keep\neditor no\n' > "$WORK/loader.conf"
fat_put "$ESP" "$WORK/loader.conf" /loader/loader.conf
cat > "$WORK/demo.conf" <<EOF
title   VHDX-EFI demo (Linux $KERNEL_VERSION)
linux   /vmlinuz
initrd  /initrd.img
options $CMDLINE
EOF
fat_put "$ESP" "$WORK/demo.conf" /loader/entries/demo.conf
fat_put "$ESP" "$OUT/vmlinuz" /vmlinuz
fat_put "$ESP" "$OUT/initrd.img" /initrd.img
put "$ESP" "$A" "$A_ESP_START"
rm -f "$ESP"

# ---------------------------------------------------------------------------------------
# 4. Disk B: GRUB on the ESP, kernel, initrd and grubenv on ext4
B=$WORK/disk-grub.raw
new_disk "$B" 256 "$DISK_B_GUID"
sgdisk -n 1:2048:+64M -t 1:EF00 -c 1:"EFI System" -u "1:$DISK_B_ESP_GUID" \
          -n 2:0:0 -t 2:8300 -c 2:"vhdx-demo root" -u "2:$DISK_B_ROOT_GUID" "$B" >/dev/null 2>&1 \
    || die "sgdisk $B failed"
part_field() {  # part_field DISK N FIELD  ("First sector" / "Last sector")
    sgdisk -i "$2" "$1" | awk -v f="$3" 'index($0, f ":") == 1 { print $3 }'
}
B_ESP_START=$(part_field "$B" 1 "First sector")
B_ROOT_START=$(part_field "$B" 2 "First sector")
B_ROOT_LAST=$(part_field "$B" 2 "Last sector")
B_ROOT_SECTORS=$((B_ROOT_LAST - B_ROOT_START + 1))

# GRUB: the embedded config finds the ext4 partition by its marker file and points
# $prefix there; normal mode then runs $prefix/grub.cfg.  If the marker is not found,
# root stays the ESP, whose /boot/grub/grub.cfg says so and halts (no hang at a prompt).
cat > "$WORK/early.cfg" <<'EOF'
search --no-floppy --file --set=root /boot/grub/vhdx-demo.marker
set prefix=($root)/boot/grub
EOF
GRUB_MODULES="part_gpt part_msdos fat ext2 linux normal configfile search search_fs_file
echo loadenv test ls cat halt reboot"
# shellcheck disable=SC2086
grub-mkimage -O x86_64-efi -d "$GRUB_DIR" -p /boot/grub -c "$WORK/early.cfg" \
    -o "$OUT/grubx64.efi" $GRUB_MODULES
touch -d "@$EPOCH" "$OUT/grubx64.efi"

ESP=$WORK/esp-b.img
new_fat32 "$ESP" 64 VHDXDEMO-B 5644580b
mmd -i "$ESP" ::/EFI ::/EFI/BOOT ::/boot ::/boot/grub
fat_put "$ESP" "$OUT/grubx64.efi" /EFI/BOOT/BOOTX64.EFI
cat > "$WORK/esp-grub.cfg" <<'EOF'
echo "VHDX-EFI DEMO: GRUB did not find /boot/grub/vhdx-demo.marker on any disk"
ls
halt
EOF
fat_put "$ESP" "$WORK/esp-grub.cfg" /boot/grub/grub.cfg
put "$ESP" "$B" "$B_ESP_START"
rm -f "$ESP"

ROOT=$WORK/rootfs
mkdir -p "$ROOT/boot/grub"
cp "$OUT/vmlinuz" "$ROOT/boot/vmlinuz"
cp "$OUT/initrd.img" "$ROOT/boot/initrd.img"
echo "vhdx-efi demo root file system ($KERNEL_VERSION)" > "$ROOT/boot/grub/vhdx-demo.marker"
grub-editenv "$ROOT/boot/grub/grubenv" create
grub-editenv "$ROOT/boot/grub/grubenv" set "$GRUB_ENV_KEY=$GRUB_ENV_INITIAL" \
    "$GRUB_COUNTER_KEY=0"
[ "$(stat -c %s "$ROOT/boot/grub/grubenv")" -eq 1024 ] || die "grubenv is not 1024 bytes"
{
    cat <<EOF
# vhdx-efi demo: GRUB reads and writes its environment block on this ext4 file system
# (save_env writes the block's sectors in place, through the firmware's Block I/O),
# then boots the kernel from it.
set timeout=0
set envfile=\$prefix/grubenv
echo "VHDX-EFI DEMO: GRUB root=\$root prefix=\$prefix"
load_env --file \$envfile $GRUB_ENV_KEY $GRUB_COUNTER_KEY
echo "VHDX-EFI DEMO: grubenv before: $GRUB_ENV_KEY=\$$GRUB_ENV_KEY $GRUB_COUNTER_KEY=\$$GRUB_COUNTER_KEY"
set $GRUB_ENV_KEY=$GRUB_ENV_VALUE
EOF
    # A boot counter (GRUB script has no arithmetic): 0 -> 1 -> ... -> MAX -> MAX+.
    echo "if [ \"\$$GRUB_COUNTER_KEY\" = \"\" ]; then set $GRUB_COUNTER_KEY=1"
    for i in $(seq 0 $((GRUB_COUNTER_MAX - 1))); do
        echo "elif [ \"\$$GRUB_COUNTER_KEY\" = \"$i\" ]; then set $GRUB_COUNTER_KEY=$((i + 1))"
    done
    echo "else set $GRUB_COUNTER_KEY=$GRUB_COUNTER_MAX+"
    echo "fi"
    cat <<EOF
if save_env --file \$envfile $GRUB_ENV_KEY $GRUB_COUNTER_KEY; then
    echo "VHDX-EFI DEMO: grubenv saved: $GRUB_ENV_KEY=\$$GRUB_ENV_KEY $GRUB_COUNTER_KEY=\$$GRUB_COUNTER_KEY"
else
    echo "VHDX-EFI DEMO: GRUB save_env failed"
fi
if linux /boot/vmlinuz $CMDLINE; then
    if initrd /boot/initrd.img; then
        echo "$GRUB_BANNER"
        boot
    fi
fi
echo "VHDX-EFI DEMO: GRUB failed to boot the kernel"
halt
EOF
} > "$ROOT/boot/grub/grub.cfg"
find "$ROOT" -exec touch -h -d "@$EPOCH" {} +
EXT4=$WORK/root.ext4
rm -f "$EXT4"
truncate -s $((B_ROOT_SECTORS * 512)) "$EXT4"
mkfs.ext4 -q -F -L vhdx-demo -U "$EXT4_UUID" -b 4096 \
    -E "root_owner=0:0,hash_seed=$EXT4_UUID,lazy_itable_init=0,lazy_journal_init=0" \
    -d "$ROOT" "$EXT4"
# mkfs.ext4 -d copies each file's ctime, which touch cannot set, and its owner (the
# builder's uid when not root): set both in the image.
(cd "$ROOT" && find . -mindepth 1) |
    sed "s|^\.\(.*\)|sif \1 ctime @$EPOCH\nsif \1 uid 0\nsif \1 gid 0|" > "$WORK/ctime.cmds"
debugfs -w -f "$WORK/ctime.cmds" "$EXT4" >/dev/null 2>&1 || die "debugfs ctime fix failed"
# GRUB's save_env refuses a file whose blocks it cannot list: check it is a plain
# extent-mapped 1024-byte file (not inline data).
debugfs -R "stat /boot/grub/grubenv" "$EXT4" 2>/dev/null | grep -q "EXTENTS:" \
    || die "grubenv on ext4 is not extent-mapped (inline data?)"
put "$EXT4" "$B" "$B_ROOT_START"
rm -f "$EXT4"

# ---------------------------------------------------------------------------------------
# 5. Publish the images and demo.env
sgdisk -v "$A" | grep -q "No problems found" || die "disk A: GPT check failed"
sgdisk -v "$B" | grep -q "No problems found" || die "disk B: GPT check failed"
mv -f "$A" "$OUT/disk-sdboot.raw"
mv -f "$B" "$OUT/disk-grub.raw"
q() { printf "%s='%s'\n" "$1" "$(printf %s "$2" | sed "s/'/'\\\\''/g")"; }
{
    echo "# vhdx-efi demo disks, made by ovmf-scripts/demo/build-demo.sh; sourceable by sh."
    echo "# Paths are relative to this file's directory."
    q KERNEL_PACKAGE "$KPKG"
    q KERNEL_PACKAGE_VERSION "$KPKG_VERSION"
    q KERNEL_VERSION "$KERNEL_VERSION"
    q KERNEL_VERSION_STRING "$KERNEL_VERSION_STRING"
    q KERNEL_BANNER "Linux version $KERNEL_VERSION"
    q KERNEL_CMDLINE "$CMDLINE"
    q INIT_BANNER "$INIT_BANNER"
    q INIT_UNAME_LINE "VHDX-EFI DEMO: uname -r = $KERNEL_VERSION"
    q INIT_DONE "$INIT_DONE"
    q INIT_SDBOOT_PARTUUID_LINE "VHDX-EFI DEMO: efivar LoaderDevicePartUUID: $DISK_A_ESP_GUID"
    q GRUB_BANNER "$GRUB_BANNER"
    q GRUB_ENV_PATH /boot/grub/grubenv
    q GRUB_ENV_PARTITION 2
    q GRUB_ENV_KEY "$GRUB_ENV_KEY"
    q GRUB_ENV_INITIAL "$GRUB_ENV_INITIAL"
    q GRUB_ENV_VALUE "$GRUB_ENV_VALUE"
    q GRUB_COUNTER_KEY "$GRUB_COUNTER_KEY"
    q VMLINUZ vmlinuz
    q INITRD initrd.img
    q GRUB_EFI grubx64.efi
    q DISK_SDBOOT disk-sdboot.raw
    q DISK_SDBOOT_SIZE $((256 * MiB))
    q DISK_SDBOOT_ESP_START_LBA "$A_ESP_START"
    q DISK_SDBOOT_ESP_SECTORS "$A_ESP_SECTORS"
    q DISK_SDBOOT_GUID "$DISK_A_GUID"
    q DISK_SDBOOT_ESP_GUID "$DISK_A_ESP_GUID"
    q DISK_GRUB disk-grub.raw
    q DISK_GRUB_SIZE $((256 * MiB))
    q DISK_GRUB_ESP_START_LBA "$B_ESP_START"
    q DISK_GRUB_ROOT_START_LBA "$B_ROOT_START"
    q DISK_GRUB_ROOT_SECTORS "$B_ROOT_SECTORS"
    q DISK_GRUB_GUID "$DISK_B_GUID"
    q DISK_GRUB_ESP_GUID "$DISK_B_ESP_GUID"
    q DISK_GRUB_ROOT_GUID "$DISK_B_ROOT_GUID"
    q EXT4_UUID "$EXT4_UUID"
    q PKG_SYSTEMD_BOOT_EFI "$(pkgver systemd-boot-efi)"
    q PKG_GRUB_EFI_AMD64_BIN "$(pkgver grub-efi-amd64-bin)"
    q PKG_BUSYBOX_STATIC "$(pkgver busybox-static)"
} > "$OUT/demo.env.tmp"
mv -f "$OUT/demo.env.tmp" "$OUT/demo.env"
rm -rf "$WORK"
say "done: $OUT/disk-sdboot.raw $OUT/disk-grub.raw ($KERNEL_VERSION)"
