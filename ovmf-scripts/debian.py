"""debian.py - a real Debian system whose root file system lives inside a VHDX.

    debian.py base BUILD     build (or reuse) the debootstrap tree
    debian.py disk BUILD     build (or reuse) the VHDX and print its path

1. base(build): `debootstrap --variant=minbase` of the suite this machine's apt uses,
   from its mirror, with systemd as init, udev, initramfs-tools, the cloud kernel and
   dracut-core (for the dracut build test), run niced once and kept in
   BUILD/debian/base (the downloaded packages in BUILD/debian/debs).  About 3 to 5
   minutes and 150 MB of downloads the first time.
2. disk(build): a copy of that tree with vhdx-efi's files installed the way a user would
   (`make install DESTDIR=`), a root password-less test unit (vhdx-test.service, not
   part of the product: it reports `systemctl is-system-running`, counts boots in
   /var/lib/vhdx-test, then powers off), `update-initramfs -u` run in the chroot;
   then a GPT disk: p1 ESP with systemd-boot, the kernel and the initramfs, p2 ext4
   root (root=PARTUUID=, left as a user writes it); converted to a dynamic VHDX.
   Cached in BUILD/debian/ under a key of everything that went in.
3. dracut_image(build): dracut (from dracut-core) in the same chroot builds an
   initramfs with the "vhdx" module; its listing (lsinitrd) is returned.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, HERE)

MiB = 1 << 20
PACKAGES = ["systemd", "systemd-sysv", "udev", "kmod", "initramfs-tools",
            "linux-image-cloud-amd64", "dracut-core", "e2fsprogs"]
DISK_SIZE = 2048 * MiB
ESP_SIZE = 128 * MiB
DISK_GUID = "5644584A-0004-4000-8000-00000000D000"
ESP_GUID = "5644584A-0004-4000-8000-00000000D001"
ROOT_GUID = "5644584A-0004-4000-8000-00000000D002"
SDBOOT_EFI = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
CMDLINE = "console=ttyS0,115200 root=PARTUUID=%s rw panic=-1 systemd.show_status=1" % (
    ROOT_GUID.lower())
ENV = dict(os.environ, PATH="/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL="C",
           DEBIAN_FRONTEND="noninteractive", MTOOLS_SKIP_CHECK="1")

# The test unit: not part of the product, it is how the host learns what happened.
TEST_SERVICE = """[Unit]
Description=vhdx-efi test report
After=multi-user.target
Wants=multi-user.target

[Service]
# Not oneshot: `systemctl is-system-running --wait` waits for the boot to finish, and
# a oneshot unit that multi-user.target wants would be part of it.
Type=simple
ExecStart=/usr/local/sbin/vhdx-test
"""
TEST_SCRIPT = r"""#!/bin/sh
# vhdx-efi test report: the state systemd reached, the failed units, the root device,
# a file written in this boot and the one from the boot before, then power off.
exec >/dev/console 2>&1
state=$(systemctl is-system-running --wait)
echo "VHDX-TEST: state $state"
systemctl --failed --no-legend --plain | while read -r unit rest; do
    echo "VHDX-TEST: failed $unit: $(systemctl show -p Result --value "$unit")"
done
echo "VHDX-TEST: root $(findmnt -n -o SOURCE /)"
dev=$(findmnt -n -o SOURCE /)
dev=${dev#/dev/}
pid=$(cat /sys/block/${dev%p*}/pid 2>/dev/null)
echo "VHDX-TEST: server $(tr '\0' ' ' < /proc/$pid/cmdline 2>&1) (pid $pid)"
dir=/var/lib/vhdx-test
mkdir -p $dir
n=$(cat $dir/boots 2>/dev/null || echo 0)
n=$((n + 1))
[ -f $dir/written ] && echo "VHDX-TEST: found $(cat $dir/written)"
echo "written in boot $n $(cat /proc/sys/kernel/random/boot_id)" > $dir/written
echo $n > $dir/boots
sync
echo "VHDX-TEST: boot $n wrote $(cat $dir/written)"
systemctl poweroff
"""


def run(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV,
                       **kw)
    if p.returncode:
        raise RuntimeError("%s failed (%d):\n%s" % (" ".join(cmd), p.returncode,
                                                    p.stdout.decode(errors="replace")[-2000:]))
    return p.stdout.decode(errors="replace")


def apt_source():
    """(mirror URI, suite) this machine's apt uses for Debian's main archive."""
    texts = []
    for name in ["/etc/apt/sources.list"] + sorted(
            os.path.join("/etc/apt/sources.list.d", n)
            for n in os.listdir("/etc/apt/sources.list.d") if n.endswith((".list", ".sources"))):
        if os.path.exists(name):
            with open(name) as f:
                texts.append(f.read())
    for text in texts:
        for m in re.finditer(r"^URIs:\s*(\S+)\s*\nSuites:\s*(\S+)", text, re.M):
            if "security" not in m.group(1):
                return m.group(1), m.group(2)
        for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
            if "security" not in m.group(1) and "-" not in m.group(2):
                return m.group(1), m.group(2)
    raise RuntimeError("cannot find a Debian mirror in /etc/apt/sources.list*")


class Chroot:
    """/proc, /sys and /dev of the host inside a tree while a command runs there."""

    def __init__(self, root):
        self.root = root

    def __enter__(self):
        for d in ("proc", "sys", "dev"):
            run(["mount", "--bind" if d == "dev" else "--rbind", "/" + d,
                 os.path.join(self.root, d)])
        return self

    def run(self, *cmd):
        return run(["nice", "chroot", self.root] + list(cmd))

    def __exit__(self, *exc):
        for d in ("dev", "sys", "proc"):
            subprocess.run(["umount", "-R", "-l", os.path.join(self.root, d)], env=ENV)


def base(build, log=print):
    """The debootstrap tree (built once): its path."""
    out = os.path.join(build, "debian", "base")
    stamp = os.path.join(out, ".vhdx-efi-complete")
    if os.path.exists(stamp):
        return out
    mirror, suite = apt_source()
    tmp = out + ".tmp"
    if os.path.exists(tmp):
        subprocess.run(["umount", "-R", "-l", tmp + "/proc", tmp + "/sys", tmp + "/dev"],
                       stderr=subprocess.DEVNULL, env=ENV)
        shutil.rmtree(tmp)
    debs = os.path.join(build, "debian", "debs")
    os.makedirs(debs, exist_ok=True)
    log("debootstrap %s from %s into %s (niced; a few minutes, once)" % (suite, mirror, out))
    run(["nice", "debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
         "--cache-dir=" + debs, suite, tmp, mirror])
    with open(os.path.join(tmp, ".vhdx-efi-complete"), "w") as f:
        f.write("%s %s\n" % (mirror, suite))
    if os.path.exists(out):
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def kernel_version(root):
    modules = os.listdir(os.path.join(root, "lib", "modules"))
    return sorted(modules)[-1]


def _inputs_key(build):
    """A key over everything that goes into the disk besides the base tree."""
    h = hashlib.sha256()
    files = [os.path.abspath(__file__), os.path.join(build, "static", "vhdx"), SDBOOT_EFI,
             os.path.join(TOP, "Makefile")]
    for d in ("dist",):
        for dirpath, _, names in sorted(os.walk(os.path.join(TOP, d))):
            files += [os.path.join(dirpath, n) for n in sorted(names)]
    for name in files:
        with open(name, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def disk(build, log=print):
    """The dynamic VHDX of the Debian system (cached by its inputs): (path, kernel)."""
    root_base = base(build, log)
    key = _inputs_key(build)
    out = os.path.join(build, "debian", "debian-%s.vhdx" % key)
    kver = kernel_version(root_base)
    if os.path.exists(out):
        return out, kver
    for old in os.listdir(os.path.join(build, "debian")):
        if old.startswith("debian-") and old.endswith(".vhdx"):
            os.unlink(os.path.join(build, "debian", old))
    work = os.path.join(build, "debian", "work")
    if os.path.exists(work):
        subprocess.run(["umount", "-R", "-l", work + "/root/proc", work + "/root/sys",
                        work + "/root/dev"], stderr=subprocess.DEVNULL, env=ENV)
        shutil.rmtree(work)
    root = os.path.join(work, "root")
    os.makedirs(work)
    log("preparing the Debian root: make install DESTDIR=, update-initramfs, ext4, VHDX")
    run(["cp", "-a", root_base, root])
    os.unlink(os.path.join(root, ".vhdx-efi-complete"))
    # Our files, the way a user installs them.
    run(["make", "-C", TOP, "--no-print-directory", "install", "DESTDIR=" + root,
         "BUILD=" + build])
    with open(os.path.join(root, "etc", "fstab"), "w") as f:
        f.write("PARTUUID=%s / ext4 rw,errors=remount-ro 0 1\n" % ROOT_GUID.lower())
    with open(os.path.join(root, "etc", "hostname"), "w") as f:
        f.write("vhdx-debian\n")
    os.makedirs(os.path.join(root, "usr", "local", "sbin"), exist_ok=True)
    with open(os.path.join(root, "usr", "local", "sbin", "vhdx-test"), "w") as f:
        f.write(TEST_SCRIPT)
    os.chmod(os.path.join(root, "usr", "local", "sbin", "vhdx-test"), 0o755)
    with open(os.path.join(root, "etc", "systemd", "system", "vhdx-test.service"), "w") as f:
        f.write(TEST_SERVICE)
    os.symlink("/etc/systemd/system/vhdx-test.service",
               os.path.join(root, "etc", "systemd", "system", "multi-user.target.wants",
                            "vhdx-test.service"))
    with Chroot(root) as c:
        c.run("update-initramfs", "-u", "-k", kver)
    # The inner disk: ESP (systemd-boot, kernel, initramfs) + ext4 root.
    esp = os.path.join(work, "esp.img")
    run(["mkfs.fat", "-F", "32", "-n", "DEBIAN-ESP", "-i", "5644580d", "-C", esp,
         str(ESP_SIZE // 1024)])
    run(["mmd", "-i", esp, "::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries"])
    conf = os.path.join(work, "debian.conf")
    with open(conf, "w") as f:
        f.write("title   Debian (root inside the VHDX)\nlinux   /vmlinuz\n"
                "initrd  /initrd.img\noptions %s\n" % CMDLINE)
    loader = os.path.join(work, "loader.conf")
    with open(loader, "w") as f:
        f.write("default debian.conf\ntimeout 0\nconsole-mode keep\neditor no\n")
    for src, dst in ((SDBOOT_EFI, "/EFI/BOOT/BOOTX64.EFI"), (loader, "/loader/loader.conf"),
                     (conf, "/loader/entries/debian.conf"),
                     (os.path.join(root, "boot", "vmlinuz-" + kver), "/vmlinuz"),
                     (os.path.join(root, "boot", "initrd.img-" + kver), "/initrd.img")):
        run(["mcopy", "-o", "-i", esp, src, "::" + dst])
    raw = os.path.join(work, "disk.raw")
    with open(raw, "wb") as f:
        f.truncate(DISK_SIZE)
    run(["sgdisk", "-o", "-U", DISK_GUID,
         "-n", "1:2048:+%dK" % (ESP_SIZE // 1024 - 1), "-t", "1:EF00", "-u", "1:" + ESP_GUID,
         "-n", "2:0:0", "-t", "2:8300", "-u", "2:" + ROOT_GUID, "-c", "2:debian-root", raw])
    root_start = 2048 + ESP_SIZE // 512
    ext4 = os.path.join(work, "root.ext4")
    with open(ext4, "wb") as f:
        f.truncate((DISK_SIZE - root_start * 512 - 34 * 512) // 4096 * 4096)
    run(["nice", "mkfs.ext4", "-q", "-F", "-L", "debian-root", "-E", "root_owner=0:0",
         "-d", root, ext4])
    for image, start in ((esp, 2048), (ext4, root_start)):
        run(["dd", "if=" + image, "of=" + raw, "bs=4M", "oflag=seek_bytes",
             "seek=%d" % (start * 512), "conv=notrunc,sparse", "status=none"])
    run(["nice", "qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o",
         "subformat=dynamic", raw, out + ".tmp"])
    os.replace(out + ".tmp", out)
    shutil.rmtree(work)
    return out, kver


def root_offset():
    return (2048 + ESP_SIZE // 512) * 512


def dracut_image(build):
    """dracut builds an initramfs with the "vhdx" module in a copy of the tree: the
    listing of that image (lsinitrd)."""
    root_base = base(build)
    work = os.path.join(build, "debian", "dracut-work")
    if os.path.exists(work):
        subprocess.run(["umount", "-R", "-l", work + "/proc", work + "/sys", work + "/dev"],
                       stderr=subprocess.DEVNULL, env=ENV)
        shutil.rmtree(work)
    run(["cp", "-a", "--reflink=auto", root_base, work])
    try:
        run(["make", "-C", TOP, "--no-print-directory", "install", "DESTDIR=" + work,
             "BUILD=" + build])
        kver = kernel_version(work)
        with Chroot(work) as c:
            c.run("dracut", "--no-hostonly", "--force", "--add", "vhdx", "--omit",
                  "plymouth", "/tmp/dracut-vhdx.img", kver)
            return c.run("lsinitrd", "/tmp/dracut-vhdx.img")
    finally:
        subprocess.run(["umount", "-R", "-l", work + "/proc", work + "/sys", work + "/dev"],
                       stderr=subprocess.DEVNULL, env=ENV)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "base":
        print(base(os.path.abspath(sys.argv[2])))
    elif len(sys.argv) == 3 and sys.argv[1] == "disk":
        print(disk(os.path.abspath(sys.argv[2]))[0])
    else:
        sys.exit(__doc__)
