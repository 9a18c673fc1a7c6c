#!/bin/sh
# dracut shutdown hook (module "vhdx"): the old root is unmounted by now; detach every
# NBD device, so each server flushes and closes its image (a clean log) and exits.
[ -x /usr/sbin/vhdx ] && /usr/sbin/vhdx detach --all
