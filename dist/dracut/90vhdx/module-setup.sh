#!/bin/bash
# dracut module "vhdx" (installed by vhdx-efi's `make install`): attach the VHDX the
# firmware booted from before the root file system is mounted.  A unit ordered before
# initrd-root-device.target runs `vhdx attach --firmware` (not an initqueue hook: the
# root device only exists once it has run); the server it starts is marked with '@' and
# left alone at switch-root (KillMode=none, IgnoreOnIsolate); at shutdown, after the
# root file system is unmounted, the shutdown hook detaches every NBD device, which
# flushes and closes the images.

check() {
    require_binaries @SBINDIR@/vhdx || return 1
    # Include it wherever it is installed: without a hand-off it does nothing.
    return 0
}

depends() {
    echo systemd
}

installkernel() {
    instmods nbd efivarfs vfat nls_cp437 nls_ascii nls_utf8
}

install() {
    inst_simple @SBINDIR@/vhdx /usr/sbin/vhdx
    inst_simple "$moddir/vhdx-attach.service" "$systemdsystemunitdir/vhdx-attach.service"
    $SYSTEMCTL -q --root "$initdir" add-wants initrd-root-device.target vhdx-attach.service
    inst_hook shutdown 20 "$moddir/vhdx-shutdown.sh"
}
