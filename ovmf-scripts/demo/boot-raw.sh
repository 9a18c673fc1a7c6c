#!/bin/bash
# shellcheck disable=SC2016  # check NAME REASON eval '...': expanded when it runs
# boot-raw.sh OUTDIR - prove the demo disks boot in OVMF as plain raw disks.
#
# OUTDIR is what build-demo.sh made.  Each disk is copied (the originals stay as built)
# and booted as the only disk of a q35 QEMU under TCG, OVMF as pflash with a fresh copy
# of the variable store (so OVMF's boot manager must find \EFI\BOOT\BOOTX64.EFI on its
# own), serial console logged with timestamps to OUTDIR/logs/NAME.log, -no-reboot, and
# a time limit (QEMU is also stopped at the UEFI Shell's or GRUB's prompt, which means
# the boot failed).  Prints "PASS name" / "FAIL name: reason" lines, timing details, and
# "N passed, N failed" last; exits non-zero if anything failed.
#
# Environment: DEMO_BOOT_TIMEOUT (s, default 180), DEMO_DISK_IF (ahci | virtio, default
# ahci), DEMO_GRUB_BOOTS (boots of the GRUB disk copy, default 1; each one counts
# vhdx_demo_boots up in its grubenv), DEMO_IMAGE_FORMAT (raw | vhdx, default raw: vhdx
# converts each copy with qemu-img and lets QEMU's own VHDX code serve it, a control for
# the runs through vhdx.efi), OVMF_CODE, OVMF_VARS, QEMU.
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"     # sgdisk, mkfs.*, debugfs, e2fsck

if [ $# -ne 1 ] || [ ! -f "$1/demo.env" ]; then
    echo "usage: $0 OUTDIR   (OUTDIR made by build-demo.sh)" >&2
    exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(cd "$1" && pwd)
# shellcheck disable=SC1091
. "$OUT/demo.env"
TIMEOUT=${DEMO_BOOT_TIMEOUT:-180}
DISK_IF=${DEMO_DISK_IF:-ahci}
GRUB_BOOTS=${DEMO_GRUB_BOOTS:-1}
FORMAT=${DEMO_IMAGE_FORMAT:-raw}
OVMF_CODE=${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}
OVMF_VARS=${OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}
QEMU=${QEMU:-qemu-system-x86_64}
LOGS=$OUT/logs
mkdir -p "$LOGS"
rm -f "$LOGS"/*.log "$LOGS"/*.log.raw
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/vhdx-demo-boot.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

passed=0 failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
check() {   # check NAME REASON COMMAND...
    local name=$1 reason=$2
    shift 2
    if "$@"; then pass "$name"; else fail "$name" "$reason"; fi
}
has() { grep -qF -- "$2" "$1"; }           # has LOG TEXT
lacks() { ! grep -qF -- "$2" "$1"; }
fsck_clean() { e2fsck -fn "$1?offset=$(($2 * 512))" >/dev/null 2>&1; }   # fsck_clean DISK LBA
at() {      # at LOG TEXT: seconds since QEMU started when TEXT first appeared, or "-"
    awk -v t="$2" 'index($0, t) { s = substr($0, 2, index($0, "]") - 2); gsub(/ /, "", s); print s; f = 1; exit }
                   END { if (!f) print "-" }' "$1"
}

case $DISK_IF in
    ahci) disk_opts() { echo "-drive file=$1,format=$FORMAT,if=ide"; } ;;  # q35: ICH9 AHCI
    virtio) disk_opts() { echo "-drive file=$1,format=$FORMAT,if=virtio"; } ;;
    *) echo "boot-raw: DEMO_DISK_IF must be ahci or virtio" >&2; exit 2 ;;
esac
case $FORMAT in raw | vhdx) ;; *) echo "boot-raw: DEMO_IMAGE_FORMAT must be raw or vhdx" >&2; exit 2 ;; esac

# image SRC NAME: a scratch copy of a built disk, in $FORMAT; prints its path.
image() {
    if [ "$FORMAT" = raw ]; then
        cp --sparse=always "$1" "$SCRATCH/$2.raw"
    else
        qemu-img convert -f raw -O vhdx "$1" "$SCRATCH/$2.vhdx"
    fi
    echo "$SCRATCH/$2.$FORMAT"
}
# as_raw IMAGE: a raw view of IMAGE for host checks; prints its path.
as_raw() {
    if [ "$FORMAT" = raw ]; then echo "$1"; return; fi
    qemu-img convert -f vhdx -O raw "$1" "$SCRATCH/check.raw" && echo "$SCRATCH/check.raw"
}

# boot NAME DISK: one QEMU run; sets RC (124 = killed at the time limit) and SECS.
boot() {
    local name=$1 disk=$2 log=$LOGS/$1.log t0 t1
    cp "$OVMF_VARS" "$SCRATCH/vars.fd"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2046
    "$HERE/runlog.py" --stop '^Shell> ' --stop '^grub> ' "$TIMEOUT" "$log" "$QEMU" -machine q35,accel=tcg -m 512 \
        -nodefaults -nic none -no-reboot -display none -monitor none -serial stdio \
        -drive "if=pflash,format=raw,readonly=on,file=$OVMF_CODE" \
        -drive "if=pflash,format=raw,file=$SCRATCH/vars.fd" \
        $(disk_opts "$disk")
    RC=$?
    t1=$(date +%s.%N)
    SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    echo "    $name: QEMU ran ${SECS}s ($(tail -n 1 "$log" | sed 's/^\[ *[0-9.]*\] //');" \
         "limit ${TIMEOUT}s); log $log"
    echo "    $name: seconds from QEMU start: boot option started $(at "$log" "BdsDxe: starting")," \
         "Linux version $(at "$log" "$KERNEL_BANNER"), init banner $(at "$log" "$INIT_BANNER")," \
         "power down $(at "$log" "reboot: Power down")"
}

# Checks common to both disks on LOG: OVMF's boot manager started the boot option it
# made by itself for the disk (a PCI device path: the removable-media path; the shell's
# option is an Fv() path), the kernel ran, /init printed its banner, and the machine
# powered itself off.
linux_checks() {
    local n=$1 log=$2
    check "$n-bds-disk" "OVMF did not start a boot option for the disk (removable path)" \
        grep -q 'BdsDxe: starting Boot[0-9A-F]* ".*" from PciRoot' "$log"
    check "$n-kernel" "no '$KERNEL_BANNER' line" has "$log" "$KERNEL_BANNER"
    check "$n-init-banner" "no '$INIT_BANNER' / '$INIT_UNAME_LINE' lines" \
        eval 'has "$log" "$INIT_BANNER" && has "$log" "$INIT_UNAME_LINE"'
    check "$n-no-panic" "kernel panic: $(grep -m1 'Kernel panic' "$log")" lacks "$log" "Kernel panic"
    check "$n-poweroff" "QEMU did not power off by itself (exit $RC)" \
        eval '[ "$RC" -eq 0 ] && has "$log" "$INIT_DONE" && has "$log" "reboot: Power down"'
}

echo "    demo: kernel $KERNEL_VERSION ($KERNEL_PACKAGE $KERNEL_PACKAGE_VERSION)," \
     "disk interface $DISK_IF, image format $FORMAT"

# Disk A: systemd-boot on the ESP, kernel and initrd on the ESP.
boot sdboot "$(image "$OUT/$DISK_SDBOOT" a)"
linux_checks sdboot "$LOGS/sdboot.log"
# systemd-boot's own variables, read by /init: the loader ran from Disk A's ESP.
check sdboot-loader-vars "no '$INIT_SDBOOT_PARTUUID_LINE' line" \
    eval 'has "$LOGS/sdboot.log" "$INIT_SDBOOT_PARTUUID_LINE" &&
          has "$LOGS/sdboot.log" "VHDX-EFI DEMO: efivar LoaderInfo: systemd-boot"'

# Disk B: GRUB on the ESP, kernel, initrd and grubenv on ext4.
B=$(image "$OUT/$DISK_GRUB" b)
env_before=$("$HERE/read-grubenv.sh" "$(as_raw "$B")")
check grub-env-initial "grubenv in the built disk is not the initial one: $env_before" \
    eval 'grep -qx "$GRUB_ENV_KEY=$GRUB_ENV_INITIAL" <<<"$env_before"'
for i in $(seq 1 "$GRUB_BOOTS"); do
    n=grub; [ "$GRUB_BOOTS" -gt 1 ] && n=grub$i
    boot "$n" "$B"
    log=$LOGS/$n.log
    check "$n-banner" "no '$GRUB_BANNER' line" has "$log" "$GRUB_BANNER"
    check "$n-save-env" "GRUB did not report save_env success" \
        has "$log" "VHDX-EFI DEMO: grubenv saved: $GRUB_ENV_KEY=$GRUB_ENV_VALUE"
    linux_checks "$n" "$log"
    # On the host: the sectors GRUB wrote hold the new values, and ext4 is still clean.
    b_raw=$(as_raw "$B")
    env_after=$("$HERE/read-grubenv.sh" "$b_raw" "$GRUB_ENV_PARTITION" 2>&1)
    check "$n-env-written" "grubenv after boot: ${env_after//$'\n'/ }" \
        eval 'grep -qx "$GRUB_ENV_KEY=$GRUB_ENV_VALUE" <<<"$env_after" &&
              grep -qx "$GRUB_COUNTER_KEY=$i" <<<"$env_after"'
    check "$n-ext4-fsck" "e2fsck -fn reports problems after GRUB wrote" \
        fsck_clean "$b_raw" "$DISK_GRUB_ROOT_START_LBA"
    echo "    $n: grubenv after boot: ${env_after//$'\n'/ }"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
