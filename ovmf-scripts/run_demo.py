#!/usr/bin/python3
"""run_demo.py - `make run`: boot Linux from a VHDX file on the EFI System Partition.

    run_demo.py [--build DIR] [--loader root|sdboot|grub] [--secure-boot] [--mode ram]
                [--run-dir DIR] [--timeout SECONDS]

1. the demo disk (cached in BUILD/demo): with --loader root (the default), Disk C of
   ovmf-scripts/demo/rootdisk.py: systemd-boot, Debian's cloud kernel and an initramfs
   that attaches the VHDX through the kernel's NBD driver (`vhdx attach --firmware`,
   from the EFI variable vhdxboot.efi publishes) and switches to the ext4 root
   partition inside it, whose init counts the boot and powers off (the disk is booted
   twice: "boot counter 2"); with sdboot or grub, a disk of
   ovmf-scripts/demo/build-demo.sh: systemd-boot (or GRUB) and a busybox initramfs
   whose /init prints a banner and powers off;
2. that disk converted by qemu-img to a dynamic VHDX (BUILD/run/demo-LOADER.vhdx);
3. an outer ESP image (BUILD/run/esp-LOADER.img: GPT, FAT32) holding
   \\EFI\\BOOT\\BOOTX64.EFI = vhdxboot.efi, \\EFI\\BOOT\\vhdxboot.cfg and \\demo.vhdx;
4. OVMF under QEMU (TCG) boots a copy of it (BUILD/run/esp-LOADER.boot.img): the
   firmware's boot manager starts \\EFI\\BOOT\\BOOTX64.EFI by itself (a fresh variable
   store, one disk), vhdxboot.efi mounts \\demo.vhdx and starts the loader inside, and
   the loader starts Linux with console=ttyS0.  The serial console is shown as it comes
   (and kept in BUILD/run/LOADER.log).

--secure-boot (`make run SECUREBOOT=1`; the loader is then systemd-boot) boots the Secure Boot build of
OVMF with Debian's snakeoil variable store (enforcing; ovmf.Boot), and signs with the
snakeoil key (secureboot.py): vhdxboot.efi (BUILD/run/secureboot/vhdxboot.efi), and
systemd-boot and the kernel on a copy of the demo disk (BUILD/demo/
disk-sdboot.secureboot.raw, remade when the disk changes).  It passes only when the
kernel's EFI stub says "UEFI Secure Boot is enabled.".  The initrd is not signed: the kernel's EFI stub
loads it as data, and Secure Boot checks only code.

Exit status 0 once the init banner appears (root: once both boots reached their root
file system, counted, powered off and left the image clean; QEMU is stopped if it has
not powered off by itself soon after), 1 with the reason otherwise (time limit, the firmware fell back
to its shell, QEMU exited early, a kernel panic), 2 for a bad command line or a missing
build product.  Everything in steps 1-3 is reused while its inputs are unchanged.

--mode ram (`make run MODE=ram`) boots the RAM-disk demo instead (build-ramdemo.sh:
systemd-boot, the kernel and an initramfs holding only busybox and Debian's NVDIMM
modules, the root on an ext4 partition of the disk) with `image=\\demo.vhdx ram`:
vhdxboot.efi copies the disk into memory and publishes it as a RAM disk with an ACPI
NFIT; the kernel finds its root (root=PARTUUID=) on /dev/pmem0p2, writes a file there
and powers off.  It passes when the root device line appears and the .vhdx on the ESP
is byte-identical afterwards.

The last line says PASS or FAILED, and why.  tests/boot.test imports this module for
the same steps; tests/secureboot.test runs it with --secure-boot.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import ovmf  # noqa: E402
import secureboot  # noqa: E402

sys.path.insert(0, os.path.join(HERE, "demo"))
import rootdisk  # noqa: E402

MiB = 1 << 20
DEMO_SOURCES = [os.path.join(HERE, "demo", n)
                for n in ("build-demo.sh", "init.sh", "mkcpio.py")]
RAM_SOURCES = [os.path.join(HERE, "demo", n)
               for n in ("build-ramdemo.sh", "ram-init.sh", "ram-root-init.sh", "mkcpio.py")]
# The RAM disk must fit in the guest's memory beside the kernel.
RAM_MEMORY_MIB = 1024
LOADERS = {"root": None, "sdboot": "DISK_SDBOOT", "grub": "DISK_GRUB"}
OUTER_ESP_SIZE = 256 * MiB
BOOT_CONFIG = "\r\n".join([
    "# vhdxboot.efi: the first image= line is the disk to boot from",
    "image=\\demo.vhdx",
    "# the loader inside it (this is the default)",
    "loader=\\EFI\\BOOT\\BOOTX64.EFI",
    ""]).encode()


def say(text):
    print("run-demo: " + text, flush=True)


class Failure(Exception):
    """A step failed; the message says which and why."""


def newer(target, sources):
    """True when `target` exists and is at least as new as every source."""
    if not os.path.exists(target):
        return False
    t = os.path.getmtime(target)
    return all(os.path.getmtime(s) <= t for s in sources)


def read_env(path):
    """demo.env (KEY='value' lines) as a dict."""
    env = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"^([A-Z0-9_]+)='(.*)'$", line.rstrip("\n"))
            if m:
                env[m.group(1)] = m.group(2).replace("'\\''", "'")
    return env


def apt_lists_know_kernel():
    """Does apt know the cloud kernel metapackage (are its package lists there)?"""
    p = subprocess.run(["apt-cache", "policy", "linux-image-cloud-amd64"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    m = re.search(r"Candidate: (\S+)", p.stdout)
    return bool(m) and m.group(1) != "(none)"


def ensure_demo(build, log=say):
    """Build the demo disks into BUILD/demo unless they are up to date; returns the
    directory and its demo.env as a dict."""
    out = os.path.join(build, "demo")
    env_path = os.path.join(out, "demo.env")
    if not newer(env_path, DEMO_SOURCES):
        cached = os.path.exists(os.path.join(out, "cache", "kernel.pkg"))
        if not cached and not apt_lists_know_kernel():
            # A fresh machine whose package lists were never fetched (or were cleaned).
            sudo = [] if os.geteuid() == 0 else ["sudo"] if shutil.which("sudo") else None
            if sudo is not None:
                log("apt knows no linux-image-cloud-amd64: running apt-get update")
                subprocess.run(sudo + ["apt-get", "update", "-qq"], check=False)
        log("building the demo disks (kernel and tools from Debian packages) in " + out)
        t0 = time.time()
        p = subprocess.run([os.path.join(HERE, "demo", "build-demo.sh"), out],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            raise Failure("building the demo disks failed:\n" + p.stdout.rstrip())
        log("demo disks built in %.1f s" % (time.time() - t0))
    return out, read_env(env_path)


def ensure_ram_demo(build, log=say):
    """The RAM-disk demo disk (BUILD/demo/disk-ram.raw) after ensure_demo; returns the
    directory and demo.env plus ramdemo.env as one dict."""
    out, env = ensure_demo(build, log)
    env_path = os.path.join(out, "ramdemo.env")
    if not newer(env_path, RAM_SOURCES + [os.path.join(out, "demo.env")]):
        p = subprocess.run([os.path.join(HERE, "demo", "build-ramdemo.sh"), out],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            raise Failure("building the RAM-disk demo disk failed:\n" + p.stdout.rstrip())
        log("RAM-disk demo disk built: " + os.path.join(out, "disk-ram.raw"))
    env.update(read_env(env_path))
    return out, env


def make_vhdx(raw, vhdx, block_size=None):
    """A dynamic VHDX holding the raw disk (qemu-img), unless it is up to date."""
    if newer(vhdx, [raw]):
        return False
    tmp = vhdx + ".tmp"
    ovmf.vhdx_from_raw(raw, tmp, "dynamic", block_size)
    os.replace(tmp, vhdx)
    return True


def make_outer_esp(path, files, size=OUTER_ESP_SIZE, sources=()):
    """The disk the firmware boots: GPT with one FAT32 ESP holding `files` ({esp path:
    bytes or host path}); rebuilt only when older than one of `sources`."""
    if sources and newer(path, sources):
        return False
    tmp = path + ".tmp"
    ovmf.esp_image(tmp, size, files)
    os.replace(tmp, path)
    return True


def esp_offset(path):
    """Byte offset of the first partition of a GPT disk (512-byte sectors)."""
    with open(path, "rb") as f:
        f.seek(512)
        header = f.read(92)
        lba = int.from_bytes(header[72:80], "little")
        f.seek(lba * 512)
        entry = f.read(128)
    return int.from_bytes(entry[32:40], "little") * 512


def extract(esp, name, out):
    """Copy a file out of the outer ESP image (mtools)."""
    data = ovmf.fat_get(esp, name, esp_offset(esp))
    if data is None:
        raise Failure("%s: no %s on the ESP" % (esp, name))
    with open(out, "wb") as f:
        f.write(data)
    return out


class Watch:
    """One QEMU boot of `disks` (raw images, AHCI ports in order, at most six) and
    `virtio` (more raw images, as virtio-blk disks) through ovmf.Boot, echoing whole
    console lines as they come when `echo` is given.  `secure_boot` and `varstore` go
    to ovmf.Boot.  `virtio_boot`: the first disk is a virtio-blk disk too (what Debian's
    cloud kernel can see)."""

    def __init__(self, disks, workdir, echo=None, virtio=(), secure_boot=False,
                 varstore=None, memory=512, virtio_boot=False):
        extra = []
        for disk in disks[1:]:
            extra += ["-drive", "file=%s,format=raw,if=ide" % disk]
        for disk in virtio:
            extra += ["-drive", "file=%s,format=raw,if=virtio" % disk]
        self.start = time.time()
        self.boot = ovmf.Boot(disks[0], workdir, memory=memory, extra=extra,
                              secure_boot=secure_boot, varstore=varstore,
                              virtio=virtio_boot)
        self.echo = echo
        self.shown = 0
        self.seen = {}

    def log(self):
        text = self.boot.log
        if self.echo:
            end = text.rfind("\n") + 1
            if end > self.shown:
                for line in text[self.shown:end].splitlines():
                    self.echo(line)
                self.shown = end
        return text

    def wait(self, patterns, timeout):
        """Wait until one of {name: regex} matches the log, QEMU exits or `timeout`
        passes.  Returns the name that matched first (recording when), or None."""
        deadline = time.time() + timeout
        rx = {name: re.compile(p, re.M) for name, p in patterns.items()}
        while True:
            text = self.log()
            for name, r in rx.items():
                if name not in self.seen and r.search(text):
                    self.seen[name] = time.time() - self.start
                    return name
            if self.boot.proc.poll() is not None or time.time() >= deadline:
                self.log()
                return None
            time.sleep(0.1)

    def type(self, text):
        self.boot.type(text)

    def finish(self, timeout):
        """Let QEMU power off by itself within `timeout` s (killed after).  Returns
        True when it did."""
        exited = self.boot.finish(timeout)
        self.log()
        if self.echo:
            rest = self.boot.log[self.shown:]
            if rest.strip():
                self.echo(rest.rstrip("\n"))
        return exited

    @property
    def returncode(self):
        return self.boot.proc.returncode

    def elapsed(self):
        return time.time() - self.start


def last_vhdxboot_error(log):
    """The last line in which vhdxboot.efi gave up, if any."""
    lines = re.findall(r"^vhdxboot: .*returning to the firmware$", log, re.M)
    return lines[-1] if lines else None


def signed_demo_disk(demo, env, signer, log=say):
    """A copy of the systemd-boot demo disk whose systemd-boot and kernel are signed
    (BUILD/demo/disk-sdboot.secureboot.raw), remade when older than the disk or the
    certificate."""
    raw = os.path.join(demo, env[LOADERS["sdboot"]])
    out = os.path.join(demo, "disk-sdboot.secureboot.raw")
    if newer(out, [raw, signer.cert]):
        return out
    tmp = out + ".tmp"
    subprocess.run(["cp", "--sparse=always", raw, tmp], check=True)
    offset = int(env["DISK_SDBOOT_ESP_START_LBA"]) * 512
    work = os.path.join(demo, "signing")
    os.makedirs(work, exist_ok=True)
    for name in ("EFI/BOOT/BOOTX64.EFI", "vmlinuz"):
        data = ovmf.fat_get(tmp, name, offset)
        if data is None:
            raise Failure("%s: no %s on its ESP" % (raw, name))
        plain = os.path.join(work, os.path.basename(name))
        with open(plain, "wb") as f:
            f.write(data)
        signer.sign(plain, plain + ".signed")
        ovmf.fat_put(tmp, {name: plain + ".signed"}, offset)
    shutil.rmtree(work)
    os.replace(tmp, out)
    log("signed systemd-boot and the kernel on a copy of the demo disk: " + out)
    return out


def prepare(build, loader, run_dir, log=say, secure_boot=False):
    """Steps 1-3 (outputs in `run_dir`); returns (outer ESP image to boot, demo.env).
    `secure_boot`: vhdxboot.efi, systemd-boot and the kernel signed with the snakeoil
    key."""
    efi = os.path.join(build, "efi", "vhdxboot.efi")
    if not os.path.exists(efi):
        raise Failure("%s is missing: run make first" % efi)
    if secure_boot and loader != "sdboot":
        raise Failure("--secure-boot boots the systemd-boot disk only: the demo's GRUB is "
                      "unsigned and, under Secure Boot, GRUB wants shim")
    demo, env = ensure_demo(build, log)
    os.makedirs(run_dir, exist_ok=True)
    if loader == "root":
        raw = rootdisk.build(build)
    else:
        raw = os.path.join(demo, env[LOADERS[loader]])
    name = loader + ("-secureboot" if secure_boot else "")
    if secure_boot:
        signed_dir = os.path.join(run_dir, "secureboot")
        os.makedirs(signed_dir, exist_ok=True)
        try:
            with secureboot.Signer() as signer:
                efi = signer.sign_if_newer(efi, os.path.join(signed_dir, "vhdxboot.efi"),
                                           strict=True)
                raw = signed_demo_disk(demo, env, signer, log)
        except secureboot.SignError as e:
            raise Failure("signing for Secure Boot failed: %s" % e)
    vhdx = os.path.join(run_dir, "demo-%s.vhdx" % name)
    if make_vhdx(raw, vhdx):
        log("converted %s to a dynamic VHDX: %s (%d MiB)" % (
            os.path.basename(raw), vhdx, os.path.getsize(vhdx) // MiB))
    esp = os.path.join(run_dir, "esp-%s.img" % name)
    files = {"EFI/BOOT/BOOTX64.EFI": efi, "EFI/BOOT/vhdxboot.cfg": BOOT_CONFIG,
             "demo.vhdx": vhdx}
    if make_outer_esp(esp, files, sources=[efi, vhdx, os.path.abspath(__file__)]):
        log("made the outer ESP %s: \\EFI\\BOOT\\BOOTX64.EFI = %svhdxboot.efi, "
            "\\EFI\\BOOT\\vhdxboot.cfg, \\demo.vhdx" % (esp, "signed " if secure_boot else ""))
    booted = os.path.join(run_dir, "esp-%s.boot.img" % name)
    subprocess.run(["cp", "--sparse=always", esp, booted], check=True)
    return booted, env


# The kernel's own words: its EFI stub reads the SecureBoot and SetupMode variables and
# says this only when Secure Boot is enforcing (Debian's kernel then also locks itself
# down: "Kernel is locked down from EFI Secure Boot").
KERNEL_SECURE_BOOT = "EFI stub: UEFI Secure Boot is enabled."
# The firmware's boot manager refusing the outer disk's BOOTX64.EFI (vhdxboot.efi).
FIRMWARE_REFUSED = r'^BdsDxe: failed to load Boot\w+ "UEFI QEMU HARDDISK[^"]*" from .*$'


def ram_config(extra=""):
    """vhdxboot.cfg for the RAM-disk demo (`extra`: more keys for its image= line)."""
    return ("image=\\demo.vhdx ram%s\r\n" % extra).encode()


def prepare_ram(build, run_dir, log=say, config=None):
    """Steps 1-3 for the RAM-disk demo; returns (outer ESP to boot, env, the VHDX's
    SHA-256 before the boot)."""
    import hashlib
    efi = os.path.join(build, "efi", "vhdxboot.efi")
    if not os.path.exists(efi):
        raise Failure("%s is missing: run make first" % efi)
    demo, env = ensure_ram_demo(build, log)
    os.makedirs(run_dir, exist_ok=True)
    vhdx = os.path.join(run_dir, "demo-ram.vhdx")
    if make_vhdx(os.path.join(demo, env["RAM_DISK"]), vhdx):
        log("converted %s to a dynamic VHDX: %s" % (env["RAM_DISK"], vhdx))
    esp = os.path.join(run_dir, "esp-ram.img")
    files = {"EFI/BOOT/BOOTX64.EFI": efi, "EFI/BOOT/vhdxboot.cfg": config or ram_config(),
             "demo.vhdx": vhdx}
    make_outer_esp(esp, files)
    with open(vhdx, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return esp, env, digest


def esp_vhdx_digest(esp, run_dir):
    """SHA-256 of \\demo.vhdx as it is on the ESP image now."""
    import hashlib
    path = extract(esp, "demo.vhdx", os.path.join(run_dir, "after-ram.vhdx"))
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    os.unlink(path)
    return digest


def root_counter(vhdx, build, run_dir):
    """The boot counter in the image's root file system (debugfs on `vhdx cat`)."""
    raw = os.path.join(run_dir, "root-after.raw")
    with open(raw, "wb") as f:
        subprocess.run([os.path.join(build, "vhdx"), "cat", vhdx], stdout=f, check=True)
    p = subprocess.run(["debugfs", "-R", "cat " + rootdisk.COUNTER,
                        "%s?offset=%d" % (raw, rootdisk.root_offset())],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                       env=dict(os.environ, PATH=os.environ["PATH"] + ":/usr/sbin:/sbin"))
    os.unlink(raw)
    return p.stdout.strip()


def image_clean(esp, run_dir, build):
    """None, or why the image copied off the ESP is not clean for `vhdx check` and
    `qemu-img check` (which refuses a log that still needs replaying)."""
    vhdx = extract(esp, "demo.vhdx", os.path.join(run_dir, "after-boot.vhdx"))
    for cmd in ([os.path.join(build, "vhdx"), "check", vhdx], ["qemu-img", "check", vhdx]):
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode:
            return "`%s` found problems:\n%s" % (" ".join(cmd[-3:]), p.stdout.rstrip())
    return None


def boot_root(esp, run_dir, log_path, timeout, number):
    """One boot of the root demo: (the root line's match or None, watch, reason)."""
    watch = Watch([esp], run_dir, echo=lambda line: print(line, flush=True),
                  virtio_boot=True)
    outcome = watch.wait({"root": rootdisk.ROOT_LINE, "shell": r"^Shell> ",
                          "panic": r"Kernel panic", "halt": r"VHDX-EFI DEMO: powering off"},
                         timeout)
    exited = watch.finish(30 if outcome == "root" else 2)
    log = watch.boot.log
    with open(log_path, "a") as f:
        f.write("=== boot %d ===\n%s" % (number, log))
    m = re.search(rootdisk.ROOT_LINE, log)
    if outcome == "root" and exited and "reboot: Power down" in log:
        return m, watch, None
    if outcome == "root":
        reason = "QEMU did not power off by itself after the root init"
    elif outcome == "shell":
        reason = "the firmware fell back to the UEFI Shell: the boot option failed"
    elif outcome == "panic":
        reason = "the kernel panicked"
    elif outcome == "halt":
        lines = re.findall(r"^VHDX-EFI DEMO: .*$", log, re.M)
        reason = "the initramfs gave up: " + (lines[-2] if len(lines) > 1 else "?")
    else:
        reason = "no root line within %d s" % timeout
    gave_up = last_vhdxboot_error(log)
    return None, watch, reason + (" (%s)" % gave_up if gave_up else "")


def run_root(build, timeout, run_dir=None):
    """`make run`: the root demo, booted twice from the same outer ESP."""
    t0 = time.time()
    run_dir = run_dir or os.path.join(build, "run")
    try:
        esp, env = prepare(build, "root", run_dir)
    except (Failure, RuntimeError) as e:
        say("FAILED: %s" % e)
        return 1
    log_path = os.path.join(run_dir, "root.log")
    if os.path.exists(log_path):
        os.unlink(log_path)
    device = None
    for number in (1, 2):
        say("boot %d of 2: OVMF (QEMU, TCG) from %s; serial console follows, log in %s" % (
            number, esp, log_path))
        print("-" * 78, flush=True)
        try:
            m, watch, reason = boot_root(esp, run_dir, log_path, timeout, number)
        except OSError as e:
            say("FAILED: cannot start %s: %s (package qemu-system-x86)" % (ovmf.QEMU, e))
            return 1
        print("-" * 78, flush=True)
        if reason:
            say("FAILED: boot %d: %s; log in %s" % (number, reason, log_path))
            return 1
        device, counter = m.group(1), int(m.group(2))
        say("boot %d: root on %s, boot counter %d, %.1f s after QEMU started" % (
            number, device, counter, watch.seen["root"]))
        problem = image_clean(esp, run_dir, build)
        if problem:
            say("FAILED: after boot %d the image is not clean: %s" % (number, problem))
            return 1
        say("after boot %d: `vhdx check` and `qemu-img check` of \\demo.vhdx copied off the "
            "ESP: clean" % number)
        if counter != number:
            say("FAILED: boot %d counted %d" % (number, counter))
            return 1
    stored = root_counter(os.path.join(run_dir, "after-boot.vhdx"), build, run_dir)
    os.unlink(os.path.join(run_dir, "after-boot.vhdx"))
    if stored != "2":
        say("FAILED: the counter read on the host (debugfs) is %r, not 2" % stored)
        return 1
    say("total %.1f s" % (time.time() - t0))
    say("PASS: Linux booted twice from \\demo.vhdx through vhdxboot.efi and systemd-boot "
        "with its root file system inside the VHDX: root on %s, image clean, counter read "
        "on the host (debugfs) = boot counter 2" % device)
    return 0


def run_ram(build, timeout, run_dir=None):
    t0 = time.time()
    run_dir = run_dir or os.path.join(build, "run")
    try:
        esp, env, before = prepare_ram(build, run_dir)
    except Failure as e:
        say("FAILED: %s" % e)
        return 1
    log_path = os.path.join(run_dir, "ram.log")
    say("booting OVMF (QEMU, TCG, %d MiB) from %s with \\demo.vhdx as a RAM disk; serial "
        "console follows, log in %s" % (RAM_MEMORY_MIB, esp, log_path))
    print("-" * 78, flush=True)
    watch = Watch([esp], run_dir, echo=lambda line: print(line, flush=True),
                  memory=RAM_MEMORY_MIB)
    outcome = watch.wait({"root": r"^VHDX-EFI RAM DEMO: root on (\S+)", "shell": r"^Shell> ",
                          "panic": r"Kernel panic",
                          "gave_up": r"^vhdxboot: .*returning to the firmware$"}, timeout)
    exited = watch.finish(20 if outcome == "root" else 2)
    print("-" * 78, flush=True)
    log = watch.boot.log
    with open(log_path, "w") as f:
        f.write(log)
    root = re.search(r"^VHDX-EFI RAM DEMO: root on (\S+)", log, re.M)
    same = esp_vhdx_digest(esp, run_dir) == before
    if outcome == "root" and root.group(1).startswith("/dev/pmem0p") and same and \
            "VHDX-EFI RAM DEMO: wrote /written-at-boot.txt" in log:
        say("PASS: Linux booted from \\demo.vhdx copied into memory by vhdxboot.efi: root on "
            "%s (RAM disk), a file written there; the initramfs holds busybox and Debian's "
            "NVDIMM modules only; \\demo.vhdx on the ESP byte-identical afterwards; root "
            "device %.1f s after QEMU started%s; total %.1f s" % (
                root.group(1), watch.seen["root"],
                "" if exited else " (QEMU did not power off by itself: stopped)",
                time.time() - t0))
        return 0
    if outcome == "root" and not root.group(1).startswith("/dev/pmem0p"):
        reason = "the root is on %s, not on the RAM disk" % root.group(1)
    elif outcome == "root" and not same:
        reason = "\\demo.vhdx changed on the ESP"
    elif outcome == "root":
        reason = "the file was not written on the root"
    elif outcome == "shell":
        reason = "the firmware fell back to the UEFI Shell"
    elif outcome == "panic":
        reason = "the kernel panicked"
    elif outcome == "gave_up":
        reason = "vhdxboot.efi gave up (%s)" % last_vhdxboot_error(log)
    else:
        reason = "no root device line within %d s" % timeout
    say("FAILED: %s; log in %s" % (reason, log_path))
    return 1


def run(build, loader, timeout, run_dir=None, secure_boot=False):
    if loader == "root":
        return run_root(build, timeout, run_dir)
    t0 = time.time()
    run_dir = run_dir or os.path.join(build, "run")
    try:
        esp, env = prepare(build, loader, run_dir, secure_boot=secure_boot)
    except Failure as e:
        say("FAILED: %s" % e)
        return 1
    log_path = os.path.join(run_dir, "%s%s.log" % (loader, "-secureboot" if secure_boot
                                                    else ""))
    say("booting OVMF (QEMU, TCG%s) from %s; serial console follows, log in %s" % (
        ", Secure Boot enforcing with the snakeoil keys" if secure_boot else "", esp,
        log_path))
    print("-" * 78, flush=True)
    try:
        watch = Watch([esp], run_dir, echo=lambda line: print(line, flush=True),
                      secure_boot=secure_boot)
    except OSError as e:
        say("FAILED: cannot start %s: %s (package qemu-system-x86)" % (ovmf.QEMU, e))
        return 1
    outcome = watch.wait({
        "banner": re.escape(env["INIT_BANNER"]),
        "shell": r"^Shell> ",
        "grub": r"^grub> ",
        "panic": r"Kernel panic",
        # Under Secure Boot the shell is refused too: no prompt to wait for.
        "gave_up": r"^vhdxboot: .*returning to the firmware$",
        "refused": FIRMWARE_REFUSED,
    }, timeout)
    if outcome == "banner":
        # Let /init finish and power off (it prints its variables first).
        exited = watch.finish(20)
    else:
        exited = watch.finish(2)
    print("-" * 78, flush=True)
    log = watch.boot.log
    with open(log_path, "w") as f:
        f.write(log)
    if outcome == "banner" and (not secure_boot or KERNEL_SECURE_BOOT in log):
        after_boot_check(esp, run_dir, build)
        say("PASS: Linux booted from \\demo.vhdx through vhdxboot.efi and %s%s: init banner "
            "%.1f s after QEMU started%s; total %.1f s" % (
                "systemd-boot" if loader == "sdboot" else "GRUB",
                ", all three signed, under Secure Boot enforcing (snakeoil keys; the "
                "kernel's EFI stub: \"UEFI Secure Boot is enabled.\")" if secure_boot else "",
                watch.seen["banner"],
                "" if exited else " (QEMU did not power off by itself: stopped)",
                time.time() - t0))
        return 0
    gave_up = last_vhdxboot_error(log)
    if outcome == "banner":
        reason = "Linux booted, but its EFI stub did not say %r" % KERNEL_SECURE_BOOT
    elif outcome == "refused":
        reason = "the firmware refused vhdxboot.efi: " + re.search(FIRMWARE_REFUSED, log,
                                                                  re.M).group(0)
    elif outcome == "gave_up":
        reason = "vhdxboot.efi gave up"
    elif outcome == "shell":
        reason = "the firmware fell back to the UEFI Shell: the boot option failed"
    elif outcome == "grub":
        reason = "GRUB stopped at its prompt"
    elif outcome == "panic":
        reason = "the kernel panicked"
    elif watch.returncode is not None and watch.returncode != -9:
        reason = "QEMU exited (status %s) before the init banner" % watch.returncode
    else:
        reason = "no init banner within %d s" % timeout
    if gave_up:
        reason += " (%s)" % gave_up
    say("FAILED: %s; log in %s" % (reason, log_path))
    return 1


def after_boot_check(esp, run_dir, build):
    """Show that the image on the ESP was left clean (informational)."""
    tool = os.path.join(build, "vhdx")
    if not os.path.exists(tool):
        return
    try:
        vhdx = extract(esp, "demo.vhdx", os.path.join(run_dir, "after-boot.vhdx"))
    except Failure as e:
        say("after the boot: %s" % e)
        return
    p = subprocess.run([tool, "check", vhdx], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    say("after the boot: `vhdx check` of \\demo.vhdx copied off the ESP: %s" % (
        "clean" if p.returncode == 0 else "PROBLEMS:\n" + p.stdout.rstrip()))
    os.unlink(vhdx)


def main():
    ap = argparse.ArgumentParser(description="Boot Linux from a VHDX on the ESP in OVMF.")
    ap.add_argument("--build", default=os.path.join(TOP, "build"))
    ap.add_argument("--loader", choices=sorted(LOADERS),
                    help="root (default; sdboot with --secure-boot or --mode ram), sdboot "
                         "or grub")
    ap.add_argument("--secure-boot", action="store_true",
                    help="sign and boot under Secure Boot (snakeoil keys; systemd-boot)")
    ap.add_argument("--mode", choices=["disk", "ram"], default="disk",
                    help="ram: the RAM-disk demo (the disk copied into memory, root on pmem)")
    ap.add_argument("--run-dir", help="where the run's files go (default BUILD/run)")
    ap.add_argument("--timeout", type=int, default=300,
                    help="seconds to wait for the init banner (default 300)")
    args = ap.parse_args()
    if args.loader is None:
        args.loader = "sdboot" if args.secure_boot or args.mode == "ram" else "root"
    if args.secure_boot and args.loader != "sdboot":
        say("FAILED: Secure Boot boots the systemd-boot disk only (LOADER=sdboot): the "
            "demo's GRUB is not signed, and under Secure Boot GRUB wants shim")
        return 2
    if args.mode == "ram" and (args.secure_boot or args.loader != "sdboot"):
        say("FAILED: MODE=ram boots its own demo disk (systemd-boot), without Secure Boot")
        return 2
    firmware = [ovmf.OVMF_CODE_SECBOOT, ovmf.OVMF_VARS_SNAKEOIL] if args.secure_boot else \
        [ovmf.OVMF_CODE, ovmf.OVMF_VARS]
    for f in firmware:
        if not os.path.exists(f):
            say("FAILED: %s is missing (package ovmf; scripts/deps.sh)" % f)
            return 2
    if args.mode == "ram":
        return run_ram(os.path.abspath(args.build), args.timeout,
                       args.run_dir and os.path.abspath(args.run_dir))
    return run(os.path.abspath(args.build), args.loader, args.timeout,
               args.run_dir and os.path.abspath(args.run_dir), args.secure_boot)


if __name__ == "__main__":
    sys.exit(main())
