#!/usr/bin/python3
"""rootdisk.py - the root demo disk: Linux keeps its root file system inside the VHDX.

    rootdisk.py BUILD        build BUILD/demo/disk-root.raw (when out of date)

Disk C, `disk-root.raw` (320 MiB, GPT, fixed GUIDs and ids, so the same inputs give the
same disk):
  p1  ESP, FAT32, 64 MiB: systemd-boot as \\EFI\\BOOT\\BOOTX64.EFI, loader.conf,
      entries/root.conf (root=LABEL=vhdx-root), the cloud kernel as /vmlinuz and
      /initrd-root.img: busybox-static, the static `vhdx`, the modules attaching needs
      (nbd, vfat and code pages, efivarfs, virtio) and root-initramfs.sh as /init;
  p2  ext4 "vhdx-root": busybox-static and root-init.sh as /sbin/init.

Booted from a VHDX by vhdxboot.efi, the initramfs attaches the disk the firmware handed
over (its EFI variable), mounts p2 from /dev/nbd0p2 and switches to it; the init there
counts the boot in /var/lib/vhdx-demo/boot-counter and powers off through
/run/initramfs/shutdown, which closes the image clean.  `make run` (run_demo.py, loader
"root", the default) boots it twice.
"""

import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import guest  # noqa: E402

MiB = 1 << 20
SIZE = 320 * MiB
ESP_SIZE = 64 * MiB
DISK_GUID = "5644584A-0003-4000-8000-00000000C000"
ESP_GUID = "5644584A-0003-4000-8000-00000000C001"
ROOT_GUID = "5644584A-0003-4000-8000-00000000C002"
ROOT_UUID = "5644584a-0003-4000-8000-0000000e4704"
ROOT_LABEL = "vhdx-root"
FAT_SERIAL = "5644580c"
SDBOOT_EFI = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
COUNTER = "/var/lib/vhdx-demo/boot-counter"
CMDLINE = "console=ttyS0,115200 panic=-1 loglevel=6 root=LABEL=" + ROOT_LABEL
# The line root-init.sh prints (N = the boot counter).
ROOT_LINE = r"VHDX-EFI DEMO: root file system on (\S+) \(ext4 inside the VHDX\), boot counter (\d+)"
SOURCES = [os.path.abspath(__file__), os.path.join(HERE, "root-initramfs.sh"),
           os.path.join(HERE, "root-init.sh"), os.path.join(HERE, "mkcpio.py"),
           os.path.join(os.path.dirname(HERE), "guest.py")]
PATH_ENV = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin",
                MTOOLS_SKIP_CHECK="1", LC_ALL="C", SOURCE_DATE_EPOCH="1704067200",
                E2FSPROGS_FAKE_TIME="1704067200")


def run(*cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=PATH_ENV)
    if p.returncode:
        raise RuntimeError("%s failed: %s" % (" ".join(cmd), p.stdout.decode()[-600:]))


def build(build_dir, name="disk-root.raw", root_init=None, initramfs_init=None):
    """BUILD/demo/NAME, rebuilt when a source, the kernel or the static tool is newer.
    Tests make variants with another /sbin/init (`root_init`) or initramfs /init
    (`initramfs_init`), each a host path.  Returns its path."""
    out = os.path.join(build_dir, "demo", name)
    root_init = root_init or os.path.join(HERE, "root-init.sh")
    initramfs_init = initramfs_init or os.path.join(HERE, "root-initramfs.sh")
    vmlinuz, deb, version = guest.kernel(build_dir)
    tool = os.path.join(build_dir, "static", "vhdx")
    if not os.path.exists(tool):
        raise RuntimeError("%s is missing: run make first" % tool)
    inputs = SOURCES + [vmlinuz, deb, tool, SDBOOT_EFI, guest.BUSYBOX, root_init,
                        initramfs_init]
    if os.path.exists(out) and all(os.path.getmtime(p) <= os.path.getmtime(out)
                                   for p in inputs):
        return out
    work = out + ".work"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    with open(initramfs_init) as f:
        init = f.read()
    initrd = guest.initramfs(build_dir, os.path.join(work, "initrd-root.img"), job="",
                             init=init)

    esp = os.path.join(work, "esp.img")
    run("mkfs.fat", "-F", "32", "-S", "512", "-s", "1", "-n", "VHDX-ROOT", "-i", FAT_SERIAL,
        "--invariant", "-C", esp, str(ESP_SIZE // 1024))
    run("mmd", "-i", esp, "::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries")
    files = {
        "loader.conf": "default root.conf\ntimeout 0\nconsole-mode keep\neditor no\n",
        "root.conf": "title   VHDX-EFI root demo (Linux %s)\nlinux   /vmlinuz\n"
                     "initrd  /initrd-root.img\noptions %s\n" % (version, CMDLINE),
    }
    for name, text in files.items():
        with open(os.path.join(work, name), "w") as f:
            f.write(text)
    for src, dst in ((SDBOOT_EFI, "/EFI/BOOT/BOOTX64.EFI"),
                     (os.path.join(work, "loader.conf"), "/loader/loader.conf"),
                     (os.path.join(work, "root.conf"), "/loader/entries/root.conf"),
                     (vmlinuz, "/vmlinuz"), (initrd, "/initrd-root.img")):
        run("mcopy", "-o", "-i", esp, src, "::" + dst)

    tree = os.path.join(work, "root")
    for d in ("bin", "sbin", "dev", "proc", "sys", "run", "tmp", "var/lib/vhdx-demo"):
        os.makedirs(os.path.join(tree, d), exist_ok=True)
    shutil.copy(guest.BUSYBOX, os.path.join(tree, "bin", "busybox"))
    os.symlink("busybox", os.path.join(tree, "bin", "sh"))
    shutil.copy(root_init, os.path.join(tree, "sbin", "init"))
    os.chmod(os.path.join(tree, "sbin", "init"), 0o755)

    disk = out + ".tmp"
    with open(disk, "wb") as f:
        f.truncate(SIZE)
    run("sgdisk", "-o", "-U", DISK_GUID,
        "-n", "1:2048:+%dK" % (ESP_SIZE // 1024 - 1), "-t", "1:EF00", "-c", "1:EFI System",
        "-u", "1:" + ESP_GUID,
        "-n", "2:0:0", "-t", "2:8300", "-c", "2:" + ROOT_LABEL, "-u", "2:" + ROOT_GUID, disk)
    root_start = 2048 + ESP_SIZE // 512
    root_bytes = SIZE - root_start * 512 - 34 * 512
    ext4 = os.path.join(work, "root.ext4")
    with open(ext4, "wb") as f:
        f.truncate(root_bytes // 4096 * 4096)
    run("mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-U", ROOT_UUID, "-b", "4096",
        "-E", "root_owner=0:0,hash_seed=%s,lazy_itable_init=0,lazy_journal_init=0" % ROOT_UUID,
        "-d", tree, ext4)
    for image, start in ((esp, 2048), (ext4, root_start)):
        with open(image, "rb") as src, open(disk, "r+b") as dst:
            dst.seek(start * 512)
            shutil.copyfileobj(src, dst, 4 * MiB)
    os.replace(disk, out)
    shutil.rmtree(work, ignore_errors=True)
    return out


def root_offset():
    """Byte offset of the ext4 root partition in disk-root.raw."""
    return (2048 + ESP_SIZE // 512) * 512


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(build(os.path.abspath(sys.argv[1])))
