"""Helpers shared by the Python test suites (see tests/run.sh for the protocol)."""
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import traceback

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


def pyvhdi_chain(files, out):
    """The virtual disk of a differencing chain as libvhdi reads it (each file given its
    parent with set_parent), written to `out`; `files` the child first, then its parent,
    and so on."""
    import pyvhdi
    opened = []
    for p in reversed(files):
        f = pyvhdi.file()
        f.open(p)
        if opened:
            f.set_parent(opened[-1])
        opened.append(f)
    top = opened[-1]
    with open(out, "wb") as o:
        size, at = top.get_media_size(), 0
        while at < size:
            n = min(4 * MiB, size - at)
            o.write(top.read_buffer_at_offset(n, at))
            at += n
    for f in reversed(opened):
        f.close()


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


# ---------------------------------------------------------------------------------------
# Firmware boot suites (boot.test, secureboot.test): cases as check functions that return
# None or the reason, disks made with oracle tools, QEMU boots through run_demo.Watch.

failures = 0
BOOT_TIMEOUT = 240
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
DATA_TYPE = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"


def _ovmf_scripts():
    top = os.environ.get("TOP") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    where = os.path.join(top, "ovmf-scripts")
    if where not in sys.path:
        sys.path.insert(0, where)


def report(name, problem, detail=None):
    """PASS when `problem` is None, else FAIL with the reason and detail lines."""
    global failures
    if problem is None:
        print("PASS " + name)
        sys.stdout.flush()
        return
    failures += 1
    print("FAIL %s: %s" % (name, problem))
    for line in (detail or "").splitlines()[-60:]:
        print("    " + line)
    sys.stdout.flush()


def check(name, fn, *args, detail=None):
    """Run a check function returning None or a reason; exceptions are failures."""
    try:
        problem = fn(*args)
    except Exception as e:  # a broken check is a failed case, with the traceback
        problem = "%s: %s" % (type(e).__name__, e)
        detail = (detail or "") + "\n" + traceback.format_exc()
    report(name, problem, detail)
    return problem is None


def run(cmd):
    """(exit status, stdout text, stderr text) of a command."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def crlf(lines):
    return "".join(line + "\r\n" for line in lines).encode()


def log_guid_zero(p):
    """True when the current header (spec 2.2.2) has no LogGuid: the log was closed."""
    import vhdxgen
    best = None
    with open(p, "rb") as f:
        for slot in (64 * 1024, 128 * 1024):
            f.seek(slot)
            h = bytearray(f.read(4096))
            if h[:4] != b"head":
                continue
            stored = int.from_bytes(h[4:8], "little")
            h[4:8] = b"\0\0\0\0"
            if vhdxgen.crc32c(bytes(h)) != stored:
                continue
            seq = int.from_bytes(h[8:16], "little")
            if best is None or seq > best[0]:
                best = (seq, bytes(h[48:64]))
    return best is not None and best[1] == bytes(16)


def image_problems(p):
    """`vhdx check` (ours, sanitized) and `qemu-img check` clean, log closed."""
    rc, out, err = run([VHDX, "check", p])
    if rc != 0:
        return "vhdx check exited %d: %s %s" % (rc, out, err)
    rc, out, err = run(["qemu-img", "check", p])
    if rc != 0:
        return "qemu-img check exited %d: %s %s" % (rc, out, err)
    if not log_guid_zero(p):
        return "the current header still names a log (LogGuid set): not closed"
    return None


def in_order(log, texts):
    """None when every text appears, each after the previous; else what is missing."""
    at = 0
    for text in texts:
        found = log.find(text, at)
        if found < 0:
            where = "at all" if log.find(text) < 0 else "in order"
            return "no %r %s" % (text, where)
        at = found + len(text)
    return None


def split_boot_options(log):
    """The log cut at each "BdsDxe: starting Boot####" line."""
    starts = [m.start() for m in re.finditer(r"^BdsDxe: starting Boot", log, re.M)]
    return [log[a:b] for a, b in zip(starts, starts[1:] + [len(log)])]


def boot_and_wait(disks, name, until, timeout=BOOT_TIMEOUT, **boot_args):
    """Boot `disks` (run_demo.Watch; `boot_args` go to it); wait for the regex `until`,
    then for QEMU to power off (20 s at most).  The log is kept in WORK/NAME.log.
    Returns (log, matched, powered off by itself)."""
    _ovmf_scripts()
    import run_demo
    watch = run_demo.Watch(disks, WORK, **boot_args)
    matched = watch.wait({"until": until, "shell": r"^Shell> ", "grub": r"^grub> ",
                          "panic": r"Kernel panic"}, timeout) == "until"
    exited = watch.finish(20 if matched else 2)
    log = watch.boot.log
    with open(os.path.join(WORK, name + ".log"), "w") as f:
        f.write(log)
    return log, matched, exited


def gpt_fat_disk(p, partitions, size=64 * MiB):
    """A raw GPT disk with FAT partitions [(type GUID, label, {name: data}), ...] of
    equal size (sgdisk, mkfs.fat, mtools).  Returns the byte offset of each partition."""
    _ovmf_scripts()
    import ovmf
    with open(p, "wb") as f:
        f.truncate(size)
    each = (size // 512 - 2048 - 34) // len(partitions) // 2048 * 2048
    cmd = ["sgdisk", "-o"]
    for i, (kind, label, _) in enumerate(partitions, 1):
        start = 2048 + (i - 1) * each
        cmd += ["-n", "%d:%d:%d" % (i, start, start + each - 1), "-t", "%d:%s" % (i, kind),
                "-c", "%d:%s" % (i, label)]
    ovmf.run(cmd + [p])
    offsets = []
    for i, (kind, label, files) in enumerate(partitions, 1):
        offset = (2048 + (i - 1) * each) * 512
        part = p + ".part"
        with open(part, "wb") as f:
            f.truncate(each * 512)
        ovmf.run(["mkfs.fat", "-n", label[:11], part])
        ovmf.fat_put(part, files)
        with open(part, "rb") as src, open(p, "r+b") as dst:
            dst.seek(offset)
            dst.write(src.read())
        os.unlink(part)
        offsets.append(offset)
    return offsets


def inner_vhdx(name, partitions, keep_raw=False):
    """gpt_fat_disk (WORK/NAME.raw) converted to a dynamic VHDX (qemu-img, 1 MiB blocks);
    returns (path, partition offsets).  `keep_raw` leaves the raw disk beside it."""
    _ovmf_scripts()
    import ovmf
    raw = os.path.join(WORK, name + ".raw")
    offsets = gpt_fat_disk(raw, partitions)
    p = os.path.join(WORK, name + ".vhdx")
    ovmf.vhdx_from_raw(raw, p, "dynamic", MiB)
    if not keep_raw:
        os.unlink(raw)
    return p, offsets


# ---- Bounded runs of the tool (tests/hostile.test) -----------------------------------------

# The sanitized tool under guards, so a hostile image cannot take the machine with it: the
# allocator refuses one allocation over 512 MiB and everything once the process holds
# 1 GiB (the core then fails "out of memory"; `vhdx -v` still reports what it asked for).
GUARDED_ASAN = "allocator_may_return_null=1:max_allocation_size_mb=512:" \
               "soft_rss_limit_mb=1024:detect_leaks=1"


def run_guarded(args, cpu_seconds=20, max_file_size=None, stdout_path=None, max_output=None):
    """Run the sanitized tool with a CPU-time limit (a hang guard, not a timing: the
    process is killed past it) and, if given, a file-size limit (RLIMIT_FSIZE: writes and
    grows past it fail with EFBIG).  stdout goes to `stdout_path`, or is read; with
    `max_output`, the process is killed once stdout and stderr together pass that many
    bytes (only the line count and the last 64 KiB of stderr are kept then).
    -> dict: rc, out (bytes), lines (of stdout and stderr), err, killed ('cpu', 'output'
    or None)."""
    import resource
    import signal
    import threading

    def limits():
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        if max_file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_size, max_file_size))

    env = dict(os.environ, ASAN_OPTIONS=GUARDED_ASAN)
    out = open(stdout_path, "wb") if stdout_path else subprocess.PIPE
    p = subprocess.Popen([VHDX, *[str(a) for a in args]], stdout=out, stderr=subprocess.PIPE,
                         preexec_fn=limits, env=env)
    state = {"bytes": 0, "lines": 0, "killed": None, "out": bytearray(), "err": bytearray()}
    lock = threading.Lock()

    def drain(pipe, key):
        while True:
            chunk = pipe.read(1 << 16)
            if not chunk:
                return
            with lock:
                state["bytes"] += len(chunk)
                state["lines"] += chunk.count(b"\n")
                if max_output is None or key == "err":
                    state[key] += chunk
                    if max_output is not None and len(state[key]) > 1 << 16:
                        del state[key][:-(1 << 16)]
                if max_output is not None and state["bytes"] > max_output and \
                        not state["killed"]:
                    state["killed"] = "output"
                    p.kill()

    threads = [threading.Thread(target=drain, args=(p.stderr, "err"))]
    if stdout_path is None:
        threads.append(threading.Thread(target=drain, args=(p.stdout, "out")))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rc = p.wait()
    if stdout_path:
        out.close()
    killed = state["killed"]
    if killed is None and rc in (-signal.SIGXCPU, -signal.SIGKILL):
        killed = "cpu"
    return {"rc": rc, "out": bytes(state["out"]), "lines": state["lines"],
            "err": state["err"].decode(errors="replace"), "killed": killed}


def costs(err):
    """What `vhdx -v` reported: peak (bytes held at most), asked (at most asked for at once,
    refused requests included), read, written (bytes)."""
    import re
    c = {}
    m = re.search(r"core peak allocation: (\d+) bytes \(at most (\d+) asked", err)
    if m:
        c["peak"], c["asked"] = int(m.group(1)), int(m.group(2))
    m = re.search(r"file I/O: (\d+) bytes read in \d+ calls, (\d+) bytes written", err)
    if m:
        c["read"], c["written"] = int(m.group(1)), int(m.group(2))
    return c
