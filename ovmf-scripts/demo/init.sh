#!/bin/sh
# /init of the vhdx-efi demo initramfs: busybox-static only.  Mounts proc, sys and dev,
# prints the demo banner on the console (console=ttyS0), then powers the machine off at
# once, so QEMU exits by itself.  build-demo.sh copies this file to /init as it is.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
if [ -d /sys/firmware/efi ]; then fw="UEFI ($(cat /sys/firmware/efi/fw_platform_size 2>/dev/null)-bit)"; else fw="not UEFI"; fi
echo
echo "VHDX-EFI DEMO: Linux booted from a VHDX file"
echo "VHDX-EFI DEMO: uname -r = $(uname -r)"
echo "VHDX-EFI DEMO: firmware: $fw"
echo "VHDX-EFI DEMO: cmdline: $(cat /proc/cmdline)"
# The boot loader's EFI variables (systemd-boot sets them, Debian's GRUB 2.06 does not):
# LoaderDevicePartUUID names the partition the loader was started from, which tells a
# loader read from the disk inside the VHDX from one on the outer disk.
LV=4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
if [ -f /lib/modules/efivarfs.ko ] && [ -d /sys/firmware/efi ]; then
    insmod /lib/modules/efivarfs.ko 2>/dev/null
    mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
fi
for v in LoaderInfo LoaderDevicePartUUID LoaderImageIdentifier; do
    f=/sys/firmware/efi/efivars/$v-$LV
    # 4 bytes of attributes, then a NUL-terminated UTF-16LE string (ASCII here).
    if [ -f "$f" ]; then val=$(tail -c +5 "$f" | tr -d '\000'); else val="(not set)"; fi
    echo "VHDX-EFI DEMO: efivar $v: $val"
done
echo "VHDX-EFI DEMO: powering off"
# Give the UART time to drain: poweroff -f does not wait for the tty's queued output.
sleep 1
poweroff -f
# Not reached; if poweroff failed, panic (panic=-1 on the command line resets at once).
echo "VHDX-EFI DEMO: poweroff failed"
exit 1
