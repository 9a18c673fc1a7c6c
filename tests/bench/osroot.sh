#!/bin/bash
# The root file system through `vhdx attach` (issue 12), in a QEMU guest with Debian's
# cloud kernel (ovmf-scripts/guest.py; booted directly: the firmware plays no part in
# the measurement): the same ext4 partition, once inside a dynamic VHDX served on
# /dev/nbd0 (attached with `vhdx attach --firmware` from a vhdx= parameter, as an
# initramfs would) and once on a plain virtio disk.
#   sequential read   the whole 192 MiB partition, 1 MiB O_DIRECT reads
#   small files       2000 files of 4 KiB written, then sync
# Best of 3 inside one boot.  TCG emulation: informational; the ratio is what counts.
set -eu
TOP=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$TOP/build}
PYTHON=${PYTHON:-/usr/bin/python3}
echo "== The root file system through vhdx attach (issue 12): QEMU guest, TCG"
"$PYTHON" - "$TOP" "$BUILD" <<'PY'
import os, re, subprocess, sys, tempfile
top, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(top, "ovmf-scripts"))
import guest, ovmf
MiB = 1 << 20
work = tempfile.mkdtemp(prefix="vhdx-bench-osroot.")
try:
    tree = os.path.join(work, "tree")
    os.makedirs(tree)
    for i in range(6):                      # data to read: 96 MiB of random files
        with open(os.path.join(tree, "data%d" % i), "wb") as f:
            f.write(os.urandom(16 * MiB))
    raw = os.path.join(work, "inner.raw")
    guest.ext4_disk(raw, 194 * MiB, tree, label="bench")
    vhdx = os.path.join(work, "disk.vhdx")
    ovmf.vhdx_from_raw(raw, vhdx, "dynamic", 32 * MiB)
    esp = os.path.join(work, "esp.img")
    ovmf.esp_image(esp, 320 * MiB, {"disk.vhdx": vhdx})
    job = r'''
t() { awk '{ printf "%d", $1 * 100 }' /proc/uptime; }
vhdx attach --firmware > /dev/null || { echo "BENCH attach failed"; exit 1; }
mkdir -p /a /b
for dev in nbd0p1 vdb1; do
    best=999999
    for run in 1 2 3; do
        echo 3 > /proc/sys/vm/drop_caches
        t0=$(t); dd if=/dev/$dev of=/dev/null bs=1M iflag=direct 2>/dev/null; t1=$(t)
        [ $((t1 - t0)) -lt $best ] && best=$((t1 - t0))
    done
    echo "BENCH read $dev $best"
done
mount /dev/nbd0p1 /a; mount /dev/vdb1 /b
for dir in a b; do
    best=999999
    for run in 1 2 3; do
        mkdir /$dir/small$run
        t0=$(t)
        i=0; while [ $i -lt 2000 ]; do
            dd if=/dev/zero of=/$dir/small$run/f$i bs=4096 count=1 2>/dev/null; i=$((i + 1))
        done
        sync; t1=$(t)
        [ $((t1 - t0)) -lt $best ] && best=$((t1 - t0))
    done
    echo "BENCH small $dir $best"
done
umount /a /b
vhdx detach /dev/nbd0 2>/dev/null
'''
    initrd = guest.initramfs(build, os.path.join(work, "initrd.img"), job)
    g = guest.Guest(build, initrd, disks=[esp, raw], memory=1024,
                    cmdline="vhdx=PARTUUID=%s:/disk.vhdx" % guest.partition_guid(esp))
    log, exited = g.wait(1200)
    r = dict(((k, d), int(v)) for k, d, v in re.findall(r"^BENCH (\w+) (\S+) (\d+)$", log, re.M))
    if len(r) != 4:
        print("  the guest did not report (exited %s):\n%s" % (exited, log[-2000:]))
        sys.exit(1)
    size = 192
    nbd, plain = r[("read", "nbd0p1")] / 100, r[("read", "vdb1")] / 100
    print("  sequential read, %d MiB:  /dev/nbd0p1 (VHDX) %6.1f MiB/s   virtio %6.1f MiB/s   (x%.2f)"
          % (size, size / nbd, size / plain, plain / nbd))
    a, b = r[("small", "a")] / 100, r[("small", "b")] / 100
    print("  2000 x 4 KiB files + sync:  VHDX %5.1f s   virtio %5.1f s   (x%.2f)" % (a, b, b / a))
finally:
    subprocess.run(["rm", "-rf", work])
PY
