"""ovmf.py - build disk images for vhdx.efi and boot them in OVMF under QEMU (TCG).

Used by tests/ovmf.test and tests/bench/ovmf.sh; also usable by hand:

    python3 ovmf-scripts/ovmf.py boot ESP.img [TIMEOUT]   boot an ESP image, print the log

Images are made with the tools the tests trust as oracles: sgdisk (GPT, 512-byte
sectors), mformat/mkfs.fat/mcopy (FAT), qemu-img (VHDX with 512-byte sectors), the
project's spec-derived tests/vhdxgen.py (VHDX with 4096-byte sectors, dirty logs), and
a small GPT writer below for 4096-byte sectors (which sgdisk cannot make in a file; the
firmware's partition driver then judges it).

Booting: OVMF as pflash (a fresh copy of the variable store each time), the ESP image
as an AHCI disk, the serial console on a pipe.  `secure_boot=True` boots the Secure Boot
build of OVMF (SMM, secure pflash) with a copy of Debian's snakeoil variable store:
Secure Boot enforcing, the snakeoil certificate in PK, KEK and db.  `boot` can answer the console as the
log goes by (steps of "wait for this text, then type that"), which is how tests get
past the shell's startup countdown and drive commands a script cannot (the handle
number `unload` needs).
"""

import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib

OVMF_CODE = os.environ.get("OVMF_CODE", "/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = os.environ.get("OVMF_VARS", "/usr/share/OVMF/OVMF_VARS_4M.fd")
OVMF_CODE_SECBOOT = os.environ.get("OVMF_CODE_SECBOOT",
                                   "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_VARS_SNAKEOIL = os.environ.get("OVMF_VARS_SNAKEOIL",
                                    "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd")
# Microsoft's keys as on most PCs: KEK CA 2011, and in db the Windows PCA 2011 and the
# UEFI CA 2011 (which signs shim); the PK is Debian's.
OVMF_VARS_MS = os.environ.get("OVMF_VARS_MS", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
QEMU = os.environ.get("QEMU", "qemu-system-x86_64")

MiB = 1 << 20
MTOOLS_ENV = dict(os.environ, MTOOLS_SKIP_CHECK="1", LC_ALL="C.UTF-8")
BASIC_DATA = uuid.UUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")
ESP_TYPE = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")


def run(cmd, **kw):
    """Run a command; raise with its output when it fails."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=kw.pop("env", MTOOLS_ENV), **kw)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(map(str, cmd)), p.returncode,
                                                  p.stdout.decode(errors="replace")))
    return p.stdout


# ---------------------------------------------------------------------------------------
# GPT disks with one FAT partition

def _gpt_4k(path, size, type_guid, name):
    """Write a GPT for 4096-byte sectors (UEFI 2.10 section 5.3) with one partition from
    LBA 256 (1 MiB) to the last usable LBA.  Returns (first, last) partition LBAs."""
    S, n = 4096, size // 4096
    entries, entry_size = 128, 128
    entry_sectors = entries * entry_size // S
    first_usable, last_usable = 2 + entry_sectors, n - 2 - entry_sectors
    first, last = 256, last_usable
    table = bytearray(entries * entry_size)
    label = name.encode("utf-16-le")[:72]
    struct.pack_into("<16s16sQQQ", table, 0, type_guid.bytes_le, uuid.uuid4().bytes_le,
                     first, last, 0)
    table[56:56 + len(label)] = label
    disk_guid = uuid.uuid4().bytes_le

    def header(my, alternate, entries_lba):
        h = bytearray(92)
        struct.pack_into("<8sIIIIQQQQ16sQIII", h, 0, b"EFI PART", 0x00010000, 92, 0, 0,
                         my, alternate, first_usable, last_usable, disk_guid, entries_lba,
                         entries, entry_size, zlib.crc32(table))
        struct.pack_into("<I", h, 16, zlib.crc32(h))
        return bytes(h) + bytes(S - 92)

    mbr = bytearray(S)
    struct.pack_into("<BBBBBBBBII", mbr, 446, 0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1,
                     min(n - 1, 0xFFFFFFFF))
    mbr[510:512] = b"\x55\xaa"
    with open(path, "r+b") as f:
        f.write(mbr)
        f.write(header(1, n - 1, 2))
        f.write(table)
        f.seek((n - 1 - entry_sectors) * S)
        f.write(table)
        f.write(header(n - 1, 1, n - 1 - entry_sectors))
    return first, last


def fat_disk(path, size, files, sector=512, label="DISK", esp=False, fat_bits=None):
    """A raw disk image: GPT, one partition from 1 MiB to the end, a FAT file system on
    it holding `files` ({name: bytes}; names may contain '/' for directories).
    Returns the partition's byte offset and size."""
    with open(path, "wb") as f:
        f.truncate(size)
    type_guid = ESP_TYPE if esp else BASIC_DATA
    if sector == 512:
        run(["sgdisk", "-o", "-n", "1:2048:0", "-t", "1:%s" % type_guid, "-c", "1:" + label,
             path])
        info = run(["sgdisk", "-i", "1", path]).decode()
        first = int(re.search(r"First sector: (\d+)", info).group(1))
        last = int(re.search(r"Last sector: (\d+)", info).group(1))
    else:
        first, last = _gpt_4k(path, size, type_guid, label)
    offset, length = first * sector, (last - first + 1) * sector
    part = path + ".part"
    with open(part, "wb") as f:
        f.truncate(length)
    cmd = ["mkfs.fat", "-S", str(sector), "-n", label[:11]]
    if fat_bits:
        cmd += ["-F", str(fat_bits)]
    if sector == 4096 and fat_bits == 16:
        cmd += ["-s", "1"]
    run(cmd + [part])
    fat_put(part, files)
    with open(part, "rb") as src, open(path, "r+b") as dst:
        dst.seek(offset)
        shutil.copyfileobj(src, dst, 4 * MiB)
    os.unlink(part)
    return offset, length


def mbr_fat_disk(path, size, files, fat_bits=16, part_type=0x06, signature=0,
                 label="HUGE"):
    """A raw disk: an MBR (disk signature `signature`) with one FAT partition of type
    `part_type` (0x06 FAT16, 0xEF an EFI System Partition) from LBA 2048 to the end, made
    with mkfs.fat and mtools.  Returns the partition's byte offset."""
    first, sectors = 2048, size // 512 - 2048
    with open(path, "wb") as f:
        f.truncate(size)
    part = path + ".part"
    with open(part, "wb") as f:
        f.truncate(sectors * 512)
    run(["mkfs.fat", "-F", str(fat_bits), "-n", label, part])
    fat_put(part, files)
    mbr = bytearray(512)
    struct.pack_into("<I", mbr, 440, signature)
    # Status, CHS first (unused: 0xFE 0xFF 0xFF), type, CHS last, first LBA, sectors.
    struct.pack_into("<B3sB3sII", mbr, 446, 0, b"\xfe\xff\xff", part_type, b"\xfe\xff\xff",
                     first, sectors)
    mbr[510:512] = b"\x55\xaa"
    with open(path, "r+b") as f, open(part, "rb") as src:
        f.write(mbr)
        at = first * 512
        while True:             # the zeros stay holes of the sparse file
            data = src.read(4 * MiB)
            if not data:
                break
            if data.count(0) != len(data):
                f.seek(at)
                f.write(data)
            at += len(data)
    os.unlink(part)
    return first * 512


def fat_put(image, files, offset=0):
    """Copy {name: bytes or host path} into a FAT image (at byte `offset`) with mtools."""
    target = "%s@@%d" % (image, offset) if offset else image
    tmp = image + ".src"
    os.makedirs(tmp, exist_ok=True)
    made = set()
    for name, data in files.items():
        parts = name.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in made:
                subprocess.run(["mmd", "-i", target, "::" + d], env=MTOOLS_ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                made.add(d)
        if isinstance(data, (bytes, bytearray)):
            src = os.path.join(tmp, parts[-1])
            with open(src, "wb") as f:
                f.write(data)
        else:
            src = data
        run(["mcopy", "-o", "-i", target, src, "::" + "/".join(parts)])
        if isinstance(data, (bytes, bytearray)):
            os.unlink(src)
    shutil.rmtree(tmp, ignore_errors=True)


def fat_get(image, name, offset=0):
    """A file's bytes from a FAT image (mtools), or None if it is missing."""
    target = "%s@@%d" % (image, offset) if offset else image
    p = subprocess.run(["mtype", "-i", target, "::" + name], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, env=MTOOLS_ENV)
    return p.stdout if p.returncode == 0 else None


def fat_extents(image, name, offset=0):
    """Number of fragments of a file's cluster chain, from mtools' mshowfat."""
    target = "%s@@%d" % (image, offset) if offset else image
    out = run(["mshowfat", "-i", target, "::" + name]).decode()
    return len(re.findall(r"<\d+(?:-\d+)?>", out))


def vhdx_from_raw(raw, vhdx, subformat="dynamic", block_size=None):
    """Convert a raw disk to VHDX (512-byte sectors) with qemu-img."""
    opts = "subformat=%s" % subformat
    if block_size:
        opts += ",block_size=%d" % block_size
    if subformat == "fixed":
        # qemu-img convert into a new fixed image appends every written block after the
        # preallocated ones; convert into an existing image keeps the file small.
        size = os.path.getsize(raw)
        run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", opts, vhdx, str(size)])
        run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "vhdx", raw, vhdx])
    else:
        run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", opts, raw, vhdx])


def vhdxgen_from_raw(vhdxgen, raw, **image_args):
    """A vhdxgen.Image holding a raw disk's non-zero 64 KiB pieces."""
    img = vhdxgen.Image(os.path.getsize(raw), **image_args)
    chunk = 64 * 1024
    with open(raw, "rb") as f:
        pos = 0
        while True:
            data = f.read(4 * MiB)
            if not data:
                break
            for q in range(0, len(data), chunk):
                piece = data[q:q + chunk]
                if piece.count(0) != len(piece):
                    img.write(pos + q, piece)
            pos += len(data)
    return img


# ---------------------------------------------------------------------------------------
# The ESP

def esp_image(path, size, files, fragmented=(), filler_cluster_files=2000):
    """A GPT disk with one FAT32 ESP holding `files` ({esp path: bytes or host path}).
    Names in `fragmented` are copied last, after the free space has been cut into
    pieces (fill with small files, delete every other one, reset the FSInfo hint), so
    their cluster chains are scattered.  Returns the partition's byte offset."""
    offset, _ = fat_disk(path, size, {}, label="ESP", esp=True, fat_bits=32)
    plain = {k: v for k, v in files.items() if k not in fragmented}
    fat_put(path, plain, offset)
    if fragmented:
        tmp = path + ".fill"
        os.makedirs(tmp, exist_ok=True)
        cluster = _fat_cluster_size(path, offset)
        names = []
        for i in range(filler_cluster_files):
            n = os.path.join(tmp, "f%05d.bin" % i)
            with open(n, "wb") as f:
                f.write(b"\xee" * cluster)
            names.append(n)
        # One mcopy for all (fast); the files land in consecutive clusters.
        subprocess.run(["mmd", "-i", "%s@@%d" % (path, offset), "::fill"], env=MTOOLS_ENV,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run(["mcopy", "-i", "%s@@%d" % (path, offset)] + names + ["::fill/"])
        doomed = ["::fill/" + os.path.basename(n) for n in names[::2]]
        run(["mdel", "-i", "%s@@%d" % (path, offset)] + doomed)
        shutil.rmtree(tmp, ignore_errors=True)
        _reset_fsinfo_hint(path, offset)
        fat_put(path, {k: files[k] for k in fragmented}, offset)
    return offset


def _fat_cluster_size(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        bs = f.read(512)
    return struct.unpack_from("<H", bs, 11)[0] * bs[13]


def _reset_fsinfo_hint(path, offset):
    """Point the FAT32 FSInfo next-free hint at cluster 2, so the next file is allocated
    from the first free cluster on (into the holes) rather than after the last one."""
    with open(path, "r+b") as f:
        f.seek(offset)
        bs = f.read(512)
        sector = struct.unpack_from("<H", bs, 11)[0]
        fsinfo = struct.unpack_from("<H", bs, 48)[0]
        f.seek(offset + fsinfo * sector + 492)
        f.write(struct.pack("<I", 2))


# ---------------------------------------------------------------------------------------
# Booting

ANSI = re.compile(r"\x1b\[[0-9;=?]*[A-Za-z]")
# The shell stops a script at a command it cannot parse (e.g. a failed redirection) and
# waits at its prompt: nothing more will happen, so stop waiting.
SCRIPT_ABORTED = re.compile(r"Script Error Status: .*")


def clean(text):
    """Serial output without terminal escapes and carriage returns."""
    return ANSI.sub("", text).replace("\r", "")


class Boot:
    """One QEMU run; `log` is the cleaned serial output so far."""

    def __init__(self, esp, workdir, memory=512, extra=(), readonly=False,
                 secure_boot=False, varstore=None, vars_file=None, virtio=False):
        """`varstore`: a variable store to start from (a copy is booted) instead of the
        firmware's blank one (or, with `secure_boot`, the snakeoil one).  `vars_file`:
        keep the store there for the next boot (made from that start when it does not
        exist yet); otherwise a fresh copy is used and removed afterwards."""
        self.keep_vars = vars_file is not None
        self.vars = vars_file or os.path.join(workdir, "vars-%d.fd" % os.getpid())
        if not (self.keep_vars and os.path.exists(self.vars)):
            shutil.copyfile(varstore or (OVMF_VARS_SNAKEOIL if secure_boot else OVMF_VARS),
                            self.vars)
        machine = "q35,accel=tcg"
        firmware = OVMF_CODE
        if secure_boot:
            # The Secure Boot build keeps its variables behind SMM: QEMU must emulate
            # SMM and let only SMM code write the flash.
            machine += ",smm=on"
            firmware = OVMF_CODE_SECBOOT
            extra = ["-global", "driver=cfi.pflash01,property=secure,value=on"] + list(extra)
        cmd = [QEMU, "-machine", machine, "-m", str(memory), "-nodefaults",
               "-nic", "none", "-no-reboot", "-display", "none", "-monitor", "none",
               "-serial", "stdio",
               "-drive", "if=pflash,format=raw,readonly=on,file=" + firmware,
               "-drive", "if=pflash,format=raw,file=" + self.vars] + list(extra)
        if readonly:
            # QEMU's IDE/AHCI disks cannot be read-only; virtio-blk can.
            cmd += ["-drive", "file=%s,format=raw,if=none,id=esp,readonly=on" % esp,
                    "-device", "virtio-blk-pci,drive=esp"]
        elif virtio:
            # What Debian's cloud kernel can see (it has no AHCI driver).
            cmd += ["-drive", "file=%s,format=raw,if=virtio" % esp]
        else:
            cmd += ["-drive", "file=%s,format=raw,if=ide" % esp]
        self.raw = bytearray()
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            data = self.proc.stdout.read1(65536)
            if not data:
                break
            with self.lock:
                self.raw += data

    @property
    def log(self):
        with self.lock:
            return clean(self.raw.decode("utf-8", errors="replace"))

    def wait_for(self, pattern, timeout, start=0):
        """Wait until `pattern` (regex) appears in the log after `start`; return the match
        or None on timeout, exit or an aborted script."""
        deadline = time.time() + timeout
        rx = re.compile(pattern)
        while time.time() < deadline:
            log = self.log
            m = rx.search(log, start)
            if m:
                return m
            if self.proc.poll() is not None or SCRIPT_ABORTED.search(log, start):
                return rx.search(self.log, start)
            time.sleep(0.2)
        return None

    def type(self, text):
        """Type text on the serial console (CR ends a shell command)."""
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def finish(self, timeout):
        """Wait for QEMU to power off; kill it after `timeout`, or soon after the shell
        aborted the script.  True if it powered off by itself."""
        deadline, ok = time.time() + timeout, False
        while time.time() < deadline:
            if self.proc.poll() is not None:
                ok = True
                break
            if SCRIPT_ABORTED.search(self.log):
                time.sleep(2)       # let the error reach the log
                break
            time.sleep(0.2)
        if not ok:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        if not self.keep_vars:
            try:
                os.unlink(self.vars)
            except OSError:
                pass
        return ok


def boot(esp, workdir, timeout=120, skip_countdown=True, memory=512, readonly=False):
    """Boot an ESP whose startup.nsh ends with `reset -s` (or powers off otherwise);
    `readonly` makes the disk write-protected.  Returns (cleaned log, exited by itself)."""
    b = Boot(esp, workdir, memory, readonly=readonly)
    if skip_countdown and b.wait_for(r"Press ESC in \d+ seconds", 60):
        b.type("\r")        # any key but ESC runs startup.nsh at once
    ok = b.finish(timeout)
    return b.log, ok


def main(argv):
    if len(argv) >= 3 and argv[1] == "boot":
        log, ok = boot(argv[2], os.path.dirname(os.path.abspath(argv[2])),
                       timeout=int(argv[3]) if len(argv) > 3 else 120)
        sys.stdout.write(log)
        return 0 if ok else 1
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
