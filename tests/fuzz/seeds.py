#!/usr/bin/python3
"""Fuzz inputs from VHDX images: the encoder of tests/fuzz/fuzz_vhdx.c's input format, and
the seed corpus of `make fuzz`.

    seeds.py encode IMAGE OUT [--reseal N] [--plan N] [--structures]
    seeds.py seeds DIR [--samples DIR]      # every seed below, into DIR

An input is a 12-byte head (reseal flags, plan, fault N, file size in 4 KiB units, seed)
and chunks (u48 offset, u16 length, bytes) holding the file's non-zero bytes; see the top
of fuzz_vhdx.c.  Seeds: qemu-img images of every block size (dynamic and fixed), the
fixture writer's images (tests/vhdxgen.py: clean, dirty logs, differencing, 4 KiB
sectors), every entry of its corruption catalogue, the hostile images of issue 15 that are
small (tests/hostile.py), and the real samples (structures only: header section, log,
metadata and BAT, not the payload).
"""
import lzma
import bz2
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vhdxgen as V  # noqa: E402

MiB = 1 << 20
RESEAL_ALL = 0x1F
GAP = 24            # zero runs shorter than this stay inside a chunk
MAX_CHUNK = 0xFFFF


def nonzero_runs(path, keep=None):
    """(offset, bytes) of the file's non-zero runs, optionally only inside `keep` ranges."""
    sp, size = V.load_file(path)
    runs = []
    for off, data in sp.items():
        data = bytes(data)
        pos = 0
        while pos < len(data):
            start = pos
            while start < len(data) and data[start] == 0:
                start += 1
            if start == len(data):
                break
            end = start
            zeros = 0
            while end < len(data) and zeros < GAP:
                zeros = zeros + 1 if data[end] == 0 else 0
                end += 1
            end -= zeros
            runs.append((off + start, data[start:end]))
            pos = end
    if keep is not None:
        kept = []
        for off, data in runs:
            for a, b in keep:
                lo, hi = max(off, a), min(off + len(data), b)
                if lo < hi:
                    kept.append((lo, data[lo - off:hi - off]))
        runs = kept
    return runs, size


def structure_ranges(path):
    """Header section, log, and every region (BAT, metadata) the region table names."""
    with open(path, "rb") as f:
        head = f.read(MiB)
    ranges = [(0, MiB)]
    for slot in (0x10000, 0x20000):
        h = head[slot:slot + 80]
        if h[:4] == b"head":
            length, offset = struct.unpack_from("<IQ", h, 68)
            if length < 64 * MiB:
                ranges.append((offset, offset + length))
    for table in (0x30000, 0x40000):
        t = head[table:table + 65536]
        if t[:4] != b"regi":
            continue
        count = min(struct.unpack_from("<I", t, 8)[0], 2047)
        for k in range(count):
            offset, length = struct.unpack_from("<QI", t, 16 + 32 * k + 16)
            if length <= 64 * MiB:
                ranges.append((offset, offset + length))
    return ranges


def encode(path, reseal=RESEAL_ALL, plan=0x30, fault_n=0, seed=1, structures=False):
    keep = structure_ranges(path) if structures else None
    runs, size = nonzero_runs(path, keep)
    out = bytearray(struct.pack("<BBHII", reseal, plan, fault_n,
                                min((size + 4095) // 4096, 0xFFFFFFFF), seed))
    for off, data in runs:
        for k in range(0, len(data), MAX_CHUNK):
            piece = data[k:k + MAX_CHUNK]
            out += struct.pack("<Q", off + k)[:6] + struct.pack("<H", len(piece)) + piece
    return bytes(out)


def write_seed(out_dir, name, path, **kw):
    data = encode(path, **kw)
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(data)
    return len(data)


class Seeds:
    def __init__(self, out_dir, work):
        self.out, self.work = out_dir, work
        self.count = 0
        self.plans = 0
        os.makedirs(out_dir, exist_ok=True)

    def plan(self):
        """Spread the fault kinds and workload sizes over the seeds."""
        self.plans += 1
        k = self.plans
        return (k % 8) | (8 if k % 3 == 0 else 0) | ((k * 5 % 16) << 4)

    def add(self, name, path, reseal=RESEAL_ALL, structures=True):
        n = write_seed(self.out, name, path, reseal=reseal, plan=self.plan(),
                       fault_n=self.plans * 37 % 65536, seed=self.plans, structures=structures)
        self.count += 1
        return n

    def tmp(self, name):
        return os.path.join(self.work, name)


def qemu_seeds(s):
    for shift in range(9):
        bs = 1 << shift
        for sub in ("dynamic", "fixed"):
            if sub == "fixed" and bs > 8:
                continue
            p = s.tmp("q.vhdx")
            size = "%dM" % max(8, 2 * bs) if sub == "dynamic" else "8M"
            subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o",
                            "subformat=%s,block_size=%dM" % (sub, bs), p, size], check=True)
            subprocess.run(["qemu-io", "-f", "vhdx", "-c", "write -P 0x5a 0 8k",
                            "-c", "write -P 0x33 %dM 4k" % max(1, bs // 2), p],
                           check=True, capture_output=True)
            s.add("qemu-%s-bs%dM" % (sub, bs), p)
            os.unlink(p)


def writer_images():
    """Fixture-writer images: name -> Image."""
    imgs = {"gen-clean": V.corruption_base(dirty=False),
            "gen-dirty": V.corruption_base(dirty=True)}
    img = V.Image(64 * MiB, block_size=MiB, logical_sector=4096, seed=3)
    img.write(0, b"\x11" * 8192)
    img.write(5 * MiB, b"\x22" * 4096)
    imgs["gen-lss4096"] = img
    img = V.Image(16 * MiB, block_size=2 * MiB, fixed=True, seed=4)
    img.write(MiB, b"\x33" * 4096)
    imgs["gen-fixed"] = img
    parent = V.Image(32 * MiB, block_size=2 * MiB, seed=5)
    child = V.Image(32 * MiB, block_size=2 * MiB, parent=parent, seed=6)
    child.write_partial(4096, b"\x44" * 4096)
    imgs["gen-differencing"] = child
    img = V.Image(32 * MiB, block_size=MiB, seed=7)
    img.write(0, b"\x55" * 4096)
    lg = img.log()
    for k in range(5):
        lg.set_block(k + 2, data=bytes([0x60 + k]) * 4096)
    imgs["gen-dirty-5-entries"] = img
    img = V.Image(32 * MiB, block_size=MiB, seed=8)
    lg = img.log()
    lg.set_block(1, data=b"\x77" * 4096, position=MiB - 4096)   # wraps the end of the log
    imgs["gen-dirty-wrapping"] = img
    img = V.Image(4 * 1024 * MiB + 2 * MiB, block_size=MiB, seed=77)
    for off in (0, 5 * MiB, 4 * 1024 * MiB + MiB):
        img.write(off, b"\x5a" * 8192)
    imgs["gen-wide"] = img
    return imgs


def writer_seeds(s):
    bases = []
    for name, img in writer_images().items():
        p = s.tmp(name + ".vhdx")
        lay = img.build(p)
        s.add(name, p)
        bases.append((name, p, lay))
    # The corruption catalogue, on the bases corrupt.test uses; checksums as corrupted.
    pick = [b for b in bases if b[0] in ("gen-clean", "gen-dirty", "gen-wide")]
    for cname in V.CORRUPTIONS:
        for bname, base, lay in pick:
            p = s.tmp("c.vhdx")
            V.copy_sparse(base, p)
            try:
                V.apply_corruption(p, lay, cname)
            except V.NotApplicable:
                continue
            s.add("corrupt-%s" % cname, p, reseal=0)
            break
    for _, p, _ in bases:
        os.unlink(p)


def hostile_seeds(s):
    try:
        import hostile
    except ImportError:
        return
    for name in hostile.SMALL:
        p = s.tmp("h.vhdx")
        hostile.CASES[name].build(p)
        s.add("hostile-%s" % name, p, reseal=0)
        os.unlink(p)


def sample_seeds(s, samples):
    if not samples or not os.path.isdir(samples):
        print("seeds: no samples at %s" % samples, file=sys.stderr)
        return
    for name in sorted(os.listdir(samples)):
        opener = lzma.open if name.endswith(".xz") else bz2.open if name.endswith(".bz2") \
            else None
        if opener is None:
            continue
        p = s.tmp("sample.vhdx")
        with opener(os.path.join(samples, name)) as src, open(p, "wb") as dst:
            while True:
                chunk = src.read(4 * MiB)
                if not chunk:
                    break
                if chunk.count(0) == len(chunk):
                    dst.seek(len(chunk), 1)
                else:
                    dst.write(chunk)
            dst.truncate()
        s.add("sample-%s" % name.split(".")[0], p, structures=True)
        os.unlink(p)


def main():
    args = sys.argv[1:]
    if len(args) >= 3 and args[0] == "encode":
        kw = {}
        rest = args[3:]
        while rest:
            opt = rest.pop(0)
            if opt == "--structures":
                kw["structures"] = True
            else:
                kw[{"--reseal": "reseal", "--plan": "plan"}[opt]] = int(rest.pop(0), 0)
        with open(args[2], "wb") as f:
            f.write(encode(args[1], **kw))
        return 0
    if len(args) >= 2 and args[0] == "seeds":
        samples = args[args.index("--samples") + 1] if "--samples" in args else None
        work = tempfile.mkdtemp(prefix="vhdx-seeds.")
        try:
            s = Seeds(args[1], work)
            qemu_seeds(s)
            writer_seeds(s)
            hostile_seeds(s)
            sample_seeds(s, samples)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print("seeds: %d inputs in %s" % (s.count, args[1]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    random.seed(1)
    sys.exit(main())
