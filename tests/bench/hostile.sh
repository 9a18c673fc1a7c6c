#!/bin/bash
# make bench: the wall time of each hostile image of issue 15 (tests/hostile.py) through
# the release tool's info, cat, check and replay, for the record (tests/hostile.test
# asserts the bounds; nothing here is asserted).
set -eu
TOP=${TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${BUILD:-$TOP/build}
PYTHON=${PYTHON:-/usr/bin/python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vhdx-bench-hostile.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "== Hostile images (issue 15): wall time of info / cat / check / replay, release build"
PYTHONPATH="$TOP/tests" "$PYTHON" - "$BUILD/vhdx" "$WORK" <<'PY'
import os, subprocess, sys, time
import hostile, vhdxgen
vhdx, work = sys.argv[1], sys.argv[2]
for name, case in hostile.CASES.items():
    image = os.path.join(work, name + ".vhdx")
    case.build(image)
    times = []
    for command in ("info", "cat", "check", "replay"):
        target = image
        if command == "replay":
            target = image + ".copy"
            vhdxgen.copy_sparse(image, target)
        start = time.time()
        with open(os.devnull, "wb") as null:
            rc = subprocess.run([vhdx, command, target], stdout=null, stderr=null).returncode
        times.append("%s %.2f s%s" % (command, time.time() - start, "" if rc == 0 else
                                      " (refused)" if rc in (1, 2) else " (exit %d)" % rc))
    print("  %-36s %s" % (name, ", ".join(times)))
    for f in (image, image + ".copy"):
        if os.path.exists(f):
            os.unlink(f)
PY
