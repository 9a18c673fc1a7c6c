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
