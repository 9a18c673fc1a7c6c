#!/usr/bin/env python3
"""mkcpio.py - write a gzip-compressed cpio archive (newc) for a Linux initramfs.

Usage: mkcpio.py TREE OUT.cpio.gz [EPOCH]

Archives every file, directory and symlink under TREE (paths relative to it, sorted, so
the output does not depend on directory order), all owned by 0:0 and stamped with EPOCH
(default 0), plus the character device /dev/console (5,1), which the kernel opens for
/init's stdin/stdout before /init runs.  No root is needed: the device node exists only
in the archive.  gzip runs with mtime 0 and no file name, so the same TREE gives the same
bytes.
"""

import gzip
import os
import stat
import sys


def newc_entry(name, mode, data=b"", nlink=1, rdevmajor=0, rdevminor=0, mtime=0, ino=0):
    """One newc record: header, NUL-terminated name padded to 4, data padded to 4."""
    name_b = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, rdevmajor, rdevminor,
              len(name_b), 0)
    hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = hdr + name_b
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    tree, out_path = sys.argv[1], sys.argv[2]
    epoch = int(sys.argv[3]) if len(sys.argv) == 4 else 0

    entries = []  # (name, mode, data, rdev)
    for root, dirs, files in os.walk(tree):
        dirs.sort()
        rel_root = os.path.relpath(root, tree)
        for name in sorted(dirs + files):
            full = os.path.join(root, name)
            rel = os.path.normpath(os.path.join(rel_root, name))
            st = os.lstat(full)
            perm = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                entries.append((rel, stat.S_IFDIR | perm, b"", None))
            elif stat.S_ISLNK(st.st_mode):
                entries.append((rel, stat.S_IFLNK | 0o777, os.readlink(full).encode(), None))
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    entries.append((rel, stat.S_IFREG | perm, f.read(), None))
            else:
                sys.exit("mkcpio: unsupported file type: %s" % full)
    names = {e[0] for e in entries}
    if "dev" not in names:
        entries.append(("dev", stat.S_IFDIR | 0o755, b"", None))
    entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
    entries.sort(key=lambda e: e[0])

    blob = bytearray()
    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        nlink = 2 if stat.S_ISDIR(mode) else 1
        major, minor = rdev if rdev else (0, 0)
        blob += newc_entry(name, mode, data, nlink, major, minor, epoch, ino)
    blob += newc_entry("TRAILER!!!", 0)
    blob += b"\0" * (-len(blob) % 512)

    with open(out_path + ".tmp", "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            gz.write(bytes(blob))
    os.replace(out_path + ".tmp", out_path)


if __name__ == "__main__":
    main()
