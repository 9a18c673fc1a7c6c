#!/bin/bash
# ovmf.sh - vhdx.efi read throughput inside OVMF (QEMU, TCG), against the ESP it sits on.
#
# One boot: vhdx.efi mounts a 256 MiB fixed VHDX (random content, blocks in order, made
# by tests/vhdxgen.py) read-only from the ESP, then tests/efi/blkbench.c reads
#   - 256 MiB through vhdx.efi's Block I/O in 1 MiB requests, and the same file bytes
#     straight through the ESP partition's Block I/O (the limit the driver sits on);
#   - 8192 random 4 KiB requests through both, at the same offsets;
# best of 5 rounds each, and checks both paths returned the same bytes.  Prints MiB/s and
# the ratio (goal: at least 0.9 for 1 MiB requests) and the size of vhdx.efi.
#
# A second boot (issue 13): vhdx.efi mounts the same file with `ram`, copying it into
# memory at mount (its own summary line gives the MiB/s), between two runs of
# `blkbench.efi --direct` reading the same bytes straight through the ESP's Block I/O;
# the ratio of the copy to the best direct read is printed (goal: at least 0.9).
#
# Usage: BUILD=$PWD/build tests/bench/ovmf.sh   (make bench runs it through tests/bench/)
# Exit status: 0 when the benchmark ran and the data matched, 1 otherwise.
set -eu
TOP=${TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${BUILD:-$TOP/build}
PYTHON=${PYTHON:-/usr/bin/python3}
MIB=${BENCH_MIB:-256}
RANDOM_COUNT=${BENCH_RANDOM:-8192}
own_work=0
if [ -z "${WORK:-}" ]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/vhdx-bench-ovmf.XXXXXX")
    own_work=1
fi
cleanup() { [ $own_work -eq 1 ] && rm -rf "$WORK"; return 0; }
trap cleanup EXIT

for f in efi/vhdx.efi tests/efi/blkbench.efi; do
    if [ ! -f "$BUILD/$f" ]; then
        echo "ovmf bench: $BUILD/$f is missing (run make)" >&2
        exit 1
    fi
done

export TOP BUILD WORK MIB RANDOM_COUNT
"$PYTHON" - <<'PY'
import os, struct, sys, uuid
TOP, BUILD, WORK = os.environ["TOP"], os.environ["BUILD"], os.environ["WORK"]
MIB, RANDOM_COUNT = int(os.environ["MIB"]), int(os.environ["RANDOM_COUNT"])
sys.path.insert(0, os.path.join(TOP, "ovmf-scripts"))
sys.path.insert(0, os.path.join(TOP, "tests"))
import ovmf, vhdxgen

M = 1 << 20
block = 8 * M
img = vhdxgen.Image(MIB * M, block_size=block, fixed=True, logical_sector=512,
                    physical_sector=4096)
for b in range(0, MIB * M, block):
    img.write(b, os.urandom(block))
path = os.path.join(WORK, "bench.vhdx")
img.build(path)

# Where virtual byte 0 lives, and proof that the blocks follow each other in the file:
# read the region table and the BAT ourselves (spec 2.2.3, 2.5).
with open(path, "rb") as f:
    f.seek(192 * 1024)
    table = f.read(64 * 1024)
    count = struct.unpack_from("<I", table, 8)[0]
    bat = None
    for i in range(count):
        guid, offset, length, _ = struct.unpack_from("<16sQII", table, 16 + 32 * i)
        if uuid.UUID(bytes_le=guid) == uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08"):
            bat = offset
    chunk = vhdxgen.chunk_ratio(block, 512)
    offsets = []
    for b in range(MIB * M // block):
        f.seek(bat + 8 * vhdxgen.payload_bat_index(b, chunk))
        entry = struct.unpack("<Q", f.read(8))[0]
        assert entry & 7 == 6, "block %d is not fully present" % b
        offsets.append(entry & ~0xFFFFF)
assert all(o == offsets[0] + i * block for i, o in enumerate(offsets)), "blocks not in order"
payload = offsets[0]

nsh = ("fs0:\r\nload vhdx.efi\r\nblkbench.efi \\bench.vhdx %d %d %d\r\nreset -s\r\n"
       % (payload, MIB, RANDOM_COUNT)).encode()
esp = os.path.join(WORK, "esp-bench.img")
esp_off = ovmf.esp_image(esp, MIB * M + 64 * M, {
    "vhdx.efi": os.path.join(BUILD, "efi", "vhdx.efi"),
    "blkbench.efi": os.path.join(BUILD, "tests", "efi", "blkbench.efi"),
    "vhdx.cfg": b"image=\\bench.vhdx ro\r\n", "startup.nsh": nsh, "bench.vhdx": path})
os.unlink(path)
log, exited = ovmf.boot(esp, WORK, timeout=900, memory=1024)
with open(os.path.join(WORK, "bench.log"), "w") as f:
    f.write(log)
lines = [l for l in log.splitlines() if l.startswith(("blkbench:", "vhdx:"))]
print("\n".join(lines))
size = os.path.getsize(os.path.join(BUILD, "efi", "vhdx.efi"))
print("vhdx.efi: %d bytes (limit 131072)" % size)
ok = exited and any("sequential 1 MiB" in l and "data match" in l for l in lines)
for l in lines:
    if "sequential 1 MiB" in l:
        ratio = float(l.split("ratio ")[1].split(",")[0])
        print("ovmf bench: 1 MiB ratio %.3f: %s" % (ratio, "goal met (>= 0.9)" if ratio >= 0.9
                                                   else "BELOW the 0.9 goal"))

# The RAM-disk copy against a direct read of the same bytes, in one boot.
import re
direct = ("blkbench.efi --direct \\bench.vhdx %d %d\r\n" % (payload, MIB))
ovmf.fat_put(esp, {"vhdx.cfg": b"image=\\bench.vhdx ram\r\n",
                   "startup.nsh": ("fs0:\r\n" + direct + "load vhdx.efi\r\n" + direct +
                                   "reset -s\r\n").encode()}, esp_off)
log, exited = ovmf.boot(esp, WORK, timeout=900, memory=1024)
with open(os.path.join(WORK, "bench-ram.log"), "w") as f:
    f.write(log)
directs = [tuple(map(float, m)) for m in re.findall(
    r"blkbench: direct sequential 1 MiB into fresh memory: ([\d.]+) MiB/s; best of \d+ "
    r"rounds: ([\d.]+) MiB/s", log)]
copy = re.search(r"copied into memory: .* in ([\d.]+) s, ([\d.]+) MiB/s", log)
print("\n".join(l for l in log.splitlines() if "copied into memory" in l or "direct sequential" in l))
if exited and copy and directs:
    rate = float(copy.group(2))
    fresh, warm = max(d[0] for d in directs), max(d[1] for d in directs)
    # The copy fills memory never touched before (under TCG the first touch of guest
    # memory costs as much as the read), so the like-for-like baseline is the direct
    # read's first pass into fresh memory; the best pass into warm memory is the ceiling.
    print("ovmf bench: RAM-disk copy %.1f MiB/s; direct read into fresh memory %.1f MiB/s: "
          "ratio %.3f (goal >= 0.9); into warm memory %.1f MiB/s: ratio %.3f" % (
              rate, fresh, rate / fresh, warm, rate / warm))
else:
    print("ovmf bench: the RAM-disk boot failed; the log is in %s" % os.path.join(WORK, "bench-ram.log"))
    ok = False
if not ok:
    print("ovmf bench: failed; the log is in %s" % os.path.join(WORK, "bench.log"))
sys.exit(0 if ok else 1)
PY
