"""Helpers shared by the Python test suites (see tests/run.sh for the protocol)."""
import hashlib
import os
import signal
import subprocess
import sys
import time

VHDX = os.environ.get("VHDX", "build/san/vhdx")
WORK = os.environ.get("WORK", "/tmp")
MiB = 1 << 20


def case(name, ok, why=""):
    """Print one result line; `ok` may also be a problem string (None/'' = pass)."""
    if isinstance(ok, str) or ok is None:
        ok, why = not ok, ok or ""
    print(("PASS %s" % name) if ok else ("FAIL %s: %s" % (name, why)))
    sys.stdout.flush()
    return ok


def path(name):
    return os.path.join(WORK, name)


def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def vhdx(*args, stdin=None):
    """Run the sanitized tool: (exit status, stdout bytes, stderr text)."""
    r = subprocess.run([VHDX, *[str(a) for a in args]], input=stdin, capture_output=True,
                       timeout=300)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def crashed(rc, err):
    return rc < 0 or rc > 2 or "Sanitizer" in err or "runtime error" in err


def cat(p, offset=None, length=None):
    args = ["cat", p]
    if offset is not None:
        args += ["--offset", offset]
    if length is not None:
        args += ["--length", length]
    return vhdx(*args)


def same_bytes(got, want):
    """None if equal, else where they first differ."""
    if got == want:
        return None
    if len(got) != len(want):
        return "length %d, expected %d" % (len(got), len(want))
    i = next(k for k in range(0, len(got), 4096) if got[k:k + 4096] != want[k:k + 4096])
    return "first difference in the 4 KiB at offset %d" % i


def pyvhdi_read(p, size):
    """The whole virtual disk through libvhdi (ignores the log)."""
    import pyvhdi
    f = pyvhdi.file()
    f.open(p)
    data = f.read_buffer_at_offset(size, 0)
    f.close()
    return data


def qemu(*args):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout + r.stderr


def qemu_raw(file, fmt="vhdx"):
    """The virtual disk as `qemu-img convert` to raw reads it (bytes); `file` may also be
    an NBD URI (fmt="raw")."""
    raw = path("qemu-convert.raw")
    qemu("qemu-img", "convert", "-f", fmt, "-O", "raw", file, raw)
    try:
        with open(raw, "rb") as f:
            return f.read()
    finally:
        os.unlink(raw)


class Server:
    """`vhdx serve IMAGE --socket WORK/NAME.sock [ARGS]` (the sanitized tool), started and
    waited for until it listens; its stderr goes to a file (`log()`)."""

    def __init__(self, image, *args, name="serve", ready_timeout=30):
        self.socket = path(name + ".sock")
        self.log_path = path(name + ".log")
        self.uri = "nbd+unix:///?socket=" + self.socket
        args = list(args) if "--port" in args else ["--socket", self.socket, *args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([VHDX, "serve", image, *[str(a) for a in args]],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.time() + ready_timeout
        while time.time() < deadline and self.proc.poll() is None and " serving " not in self.log():
            time.sleep(0.02)
        self.ready = self.proc.poll() is None and " serving " in self.log()

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Signal it and wait: (exit status, its whole stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            return -999, self.log() + "\n(no exit %d s after signal %d)" % (timeout, sig)
        return rc, self.log()


def cat_vs(img, p, replay=True):
    """`vhdx cat` into a (sparse) file, compared with the fixture writer's expected disk.
    None if equal, else why."""
    out = p + ".raw"
    with open(out, "wb") as f:
        r = subprocess.run([VHDX, "cat", p], stdout=f, stderr=subprocess.PIPE, timeout=300)
    err = r.stderr.decode(errors="replace")
    try:
        if r.returncode or crashed(r.returncode, err):
            return "cat exit %d: %s" % (r.returncode, err.strip()[-200:])
        return img.diff_raw(out, replay=replay)
    finally:
        os.unlink(out)


def libvhdi_vs(img, p, replay=True):
    """The disk as libvhdi reads it, against the writer's expected disk (None if equal)."""
    import pyvhdi
    f = pyvhdi.file()
    f.open(p)
    try:
        return img.diff_reader(lambda off, n: f.read_buffer_at_offset(n, off), replay=replay)
    finally:
        f.close()


def oracle_map(file):
    """The allocation map of a VHDX as the spec-derived reader (vhdxgen.open_file, which
    replays a dirty log) reads its BAT: [(start, length, is_data)] in merged runs, a
    FULLY_PRESENT block being data and every other state reading as zeros."""
    import vhdxgen
    v = vhdxgen.open_file(file)
    runs = []
    for block in range(v.payload_blocks):
        state = v.bat[vhdxgen.payload_bat_index(block, v.chunk_ratio)] & 7
        data = state == vhdxgen.FULLY_PRESENT
        start = block * v.block_size
        length = min(v.block_size, v.virtual_size - start)
        if runs and runs[-1][2] == data:
            runs[-1] = (runs[-1][0], runs[-1][1] + length, data)
        else:
            runs.append((start, length, data))
    return runs


def merge_map(entries):
    """[(start, length, is_data)] with neighbours of the same kind merged."""
    runs = []
    for start, length, data in entries:
        if runs and runs[-1][2] == data and runs[-1][0] + runs[-1][1] == start:
            runs[-1] = (runs[-1][0], runs[-1][1] + length, data)
        else:
            runs.append((start, length, data))
    return runs


def qemu_map_json(text):
    """`qemu-img map --output=json` (or `vhdx map --json`) output as merged runs."""
    import json
    return merge_map([(e["start"], e["length"], bool(e["data"])) for e in json.loads(text)])


def nbdinfo_map(uri):
    """`nbdinfo --map` of an NBD export as merged runs (HOLE clear = data), or a string
    saying why it failed."""
    r = subprocess.run(["nbdinfo", "--map", uri], capture_output=True, text=True,
                       timeout=120)
    if r.returncode:
        return "nbdinfo --map exit %d: %s" % (r.returncode, r.stderr[-300:])
    entries = []
    for line in r.stdout.splitlines():
        start, length, flags = line.split()[:3]
        entries.append((int(start), int(length), not int(flags) & 1))
    return merge_map(entries)
