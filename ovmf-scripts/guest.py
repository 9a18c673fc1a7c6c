"""guest.py - Linux guests that attach VHDX files with the kernel's NBD driver.

The host's own kernel has no nbd module, so everything kernel-side runs in QEMU guests
with Debian's cloud kernel (the package the demo disks already use, cached in
BUILD/demo/cache).  This module makes what those guests need:

  kernel_modules(build, names)  the .ko files of `names` and every module they depend on
                                (the `depends=` of each module's .modinfo section), from
                                the kernel package, in load order; cached in
                                BUILD/guest/modules
  initramfs(build, out, ...)    a gzip cpio: busybox-static, the static `vhdx`, those
                                modules (loaded by /init in order), extra files, and an
                                /init that mounts the usual file systems, loads the
                                modules and runs a shell script (the test's job), then
                                powers off
  boot(...)                     QEMU (TCG) boots the kernel directly (-kernel/-initrd:
                                no firmware, a few seconds) with virtio disks, and
                                returns the serial console text

Used by tests/attach.test and the demo builder (ovmf-scripts/demo/build-demo.sh calls
`guest.py modules` for the demo initramfs).
"""

import os
import re
import shutil
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run_demo  # noqa: E402

QEMU = os.environ.get("QEMU", "qemu-system-x86_64")
BUSYBOX = "/bin/busybox"
MiB = 1 << 20

# What attaching needs: the NBD driver, the ESP's file system and its code pages
# (vfat's defaults: codepage 437, iocharset ascii), efivarfs, and virtio disks.
ATTACH_MODULES = ["nbd", "vfat", "nls_cp437", "nls_ascii", "nls_utf8", "efivarfs",
                  "virtio_blk", "virtio_pci"]


def kernel(build):
    """(vmlinuz, kernel package .deb, kernel version) of the demo's cloud kernel."""
    demo, env = run_demo.ensure_demo(build, log=lambda text: None)
    cache = os.path.join(demo, "cache")
    pkg = env["KERNEL_PACKAGE"]
    debs = sorted(n for n in os.listdir(cache) if n.startswith(pkg + "_") and
                  n.endswith(".deb"))
    return os.path.join(demo, env["VMLINUZ"]), os.path.join(cache, debs[-1]), \
        env["KERNEL_VERSION"]


def _modinfo_depends(path):
    """The `depends=` list of a kernel module, from its ELF .modinfo section."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("%s: not a 64-bit ELF file" % path)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3a)

    def section(i):
        return struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
    names = section(shstrndx)
    for i in range(shnum):
        s = section(i)
        name_at = names[4] + s[0]
        name = data[name_at:data.index(b"\0", name_at)]
        if name == b".modinfo":
            for item in data[s[4]:s[4] + s[5]].split(b"\0"):
                if item.startswith(b"depends="):
                    return [d for d in item[8:].decode().split(",") if d]
    return []


def kernel_modules(build, names):
    """Paths of the modules `names` need, dependencies first (cached extraction)."""
    vmlinuz, deb, version = kernel(build)
    out = os.path.join(build, "guest", "modules", version)
    listing = os.path.join(out, "listing.txt")
    os.makedirs(out, exist_ok=True)
    if not os.path.exists(listing) or os.path.getmtime(listing) < os.path.getmtime(deb):
        text = subprocess.run(["dpkg-deb", "-c", deb], stdout=subprocess.PIPE, text=True,
                              check=True).stdout
        paths = re.findall(r"(\./lib/modules/\S+\.ko)$", text, re.M)
        with open(listing + ".tmp", "w") as f:
            f.write("\n".join(paths) + "\n")
        os.replace(listing + ".tmp", listing)
    with open(listing) as f:
        where = {os.path.basename(p)[:-3].replace("-", "_"): p for p in f.read().split()}

    def fetch(name):
        local = os.path.join(out, name + ".ko")
        if not os.path.exists(local):
            if name not in where:
                raise KeyError("kernel module %s is not in %s" % (name, deb))
            tmp = os.path.join(out, "x")
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            p1 = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
            subprocess.run(["tar", "-x", "-C", tmp, where[name]], stdin=p1.stdout, check=True)
            p1.wait()
            os.replace(os.path.join(tmp, where[name]), local)
            shutil.rmtree(tmp, ignore_errors=True)
        return local

    order, seen = [], set()

    def visit(name):
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        path = fetch(name)
        for dep in _modinfo_depends(path):
            visit(dep)
        order.append(path)
    for name in names:
        visit(name)
    return order


INIT = r"""#!/bin/sh
# /init of a test guest (ovmf-scripts/guest.py): busybox, then the job, then power off.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1
for m in $(cat /etc/modules.order); do insmod /lib/modules/$m.ko $(grep "^$m " /etc/modules.options | cut -d' ' -f2-) || echo "guest: insmod $m failed"; done
echo "guest: ready"
sh /job.sh
echo "guest: job exited $?"
sync
poweroff -f
"""


def initramfs(build, out, job, files=None, modules=ATTACH_MODULES, options=None,
              init=INIT):
    """A test guest's initramfs at `out`: /job.sh = `job` (text), `files` {path in the
    guest: host path or bytes}, the static vhdx as /bin/vhdx, `modules` loaded in order
    with `options` {module: "param=value ..."}."""
    tree = out + ".tree"
    shutil.rmtree(tree, ignore_errors=True)
    for d in ("bin", "sbin", "dev", "proc", "sys", "etc", "lib/modules", "run", "tmp"):
        os.makedirs(os.path.join(tree, d), exist_ok=True)
    shutil.copy(BUSYBOX, os.path.join(tree, "bin", "busybox"))
    os.symlink("busybox", os.path.join(tree, "bin", "sh"))
    shutil.copy(os.path.join(build, "static", "vhdx"), os.path.join(tree, "bin", "vhdx"))
    paths = kernel_modules(build, modules)
    for p in paths:
        shutil.copy(p, os.path.join(tree, "lib", "modules"))
    with open(os.path.join(tree, "etc", "modules.order"), "w") as f:
        f.write("\n".join(os.path.basename(p)[:-3] for p in paths) + "\n")
    with open(os.path.join(tree, "etc", "modules.options"), "w") as f:
        for name, value in (options or {}).items():
            f.write("%s %s\n" % (name, value))
    for name, data in (files or {}).items():
        target = os.path.join(tree, name.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if isinstance(data, (bytes, bytearray)):
            with open(target, "wb") as f:
                f.write(data)
        else:
            shutil.copy(data, target)
    with open(os.path.join(tree, "init"), "w") as f:
        f.write(init)
    with open(os.path.join(tree, "job.sh"), "w") as f:
        f.write(job)
    os.chmod(os.path.join(tree, "init"), 0o755)
    subprocess.run([sys.executable, os.path.join(HERE, "demo", "mkcpio.py"), tree, out],
                   check=True)
    shutil.rmtree(tree, ignore_errors=True)
    return out


class Guest:
    """One direct-kernel QEMU boot; `log` is the serial console so far."""

    def __init__(self, build, initrd, disks=(), cmdline="", memory=768, workdir=None):
        vmlinuz, deb, version = kernel(build)
        cmd = [QEMU, "-machine", "q35,accel=tcg", "-m", str(memory), "-nodefaults",
               "-nic", "none", "-no-reboot", "-display", "none", "-monitor", "none",
               "-serial", "stdio", "-kernel", vmlinuz, "-initrd", initrd, "-append",
               "console=ttyS0,115200 panic=-1 loglevel=4 " + cmdline]
        for disk in disks:
            cmd += ["-drive", "file=%s,format=raw,if=virtio,cache=unsafe" % disk]
        self.start = time.time()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.raw = b""

    def wait(self, timeout):
        """Wait for QEMU to exit (killed after `timeout`): (log, exited by itself)."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
            self.raw += out
            return self.text(), True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            self.raw += out
            return self.text(), False

    def text(self):
        return self.raw.decode("utf-8", errors="replace").replace("\r", "")


def ext4_disk(path, size, tree=None, label="vhdx-test", part_guid=None, sector=512):
    """A raw disk: GPT, one Linux partition from 1 MiB to the end holding ext4 (made by
    mkfs.ext4 -d from `tree`, without root).  Returns the partition's byte offset."""
    with open(path, "wb") as f:
        f.truncate(size)
    cmd = ["sgdisk", "-o", "-n", "1:2048:0", "-t", "1:8300", "-c", "1:" + label]
    if part_guid:
        cmd += ["-u", "1:" + part_guid]
    subprocess.run(cmd + [path], stdout=subprocess.DEVNULL, check=True,
                   env=dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"))
    info = subprocess.run(["sgdisk", "-i", "1", path], stdout=subprocess.PIPE, text=True,
                          env=dict(os.environ, PATH=os.environ.get("PATH", "") +
                                   ":/usr/sbin:/sbin"), check=True).stdout
    first = int(re.search(r"First sector: (\d+)", info).group(1))
    last = int(re.search(r"Last sector: (\d+)", info).group(1))
    part = path + ".ext4"
    with open(part, "wb") as f:
        f.truncate((last - first + 1) * sector)
    cmd = ["mkfs.ext4", "-q", "-F", "-L", label, "-E", "root_owner=0:0"]
    if tree:
        cmd += ["-d", tree]
    subprocess.run(cmd + [part], check=True,
                   env=dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"))
    with open(part, "rb") as src, open(path, "r+b") as dst:
        dst.seek(first * sector)
        shutil.copyfileobj(src, dst, 4 * MiB)
    os.unlink(part)
    return first * sector


def partition_guid(disk, number=1):
    """A GPT partition's unique GUID (sgdisk), upper case as sgdisk prints it."""
    info = subprocess.run(["sgdisk", "-i", str(number), disk], stdout=subprocess.PIPE,
                          text=True, check=True,
                          env=dict(os.environ, PATH=os.environ.get("PATH", "") +
                                   ":/usr/sbin:/sbin")).stdout
    return re.search(r"Partition unique GUID: (\S+)", info).group(1)


def results(log):
    """The PASS/FAIL/SKIP lines a guest job printed, as (kind, name, rest)."""
    return re.findall(r"^(PASS|FAIL|SKIP) (\S+)(.*)$", log, re.M)


if __name__ == "__main__":
    # guest.py modules BUILD NAME...: print the module paths in load order.
    if len(sys.argv) >= 3 and sys.argv[1] == "modules":
        for path in kernel_modules(os.path.abspath(sys.argv[2]), sys.argv[3:]):
            print(path)
        sys.exit(0)
    sys.stderr.write(__doc__)
    sys.exit(2)
