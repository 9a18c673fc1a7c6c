"""Helpers shared by the Python test suites (see tests/run.sh for the protocol)."""
import hashlib
import os
import subprocess
import sys

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
