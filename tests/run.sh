#!/bin/bash
# Test runner for `make check`.
#
# Every executable tests/*.test is one suite (any language).  A suite prints one line
# per case: "PASS name", "FAIL name: reason" or "SKIP name: reason"; other lines are
# detail, shown only when the suite fails.  A suite that exits non-zero without having
# printed a FAIL line counts as one failure.  The last line printed here is
# "N passed, N failed".
#
# Usage: tests/run.sh [PATTERN...]   run only suites whose name contains a PATTERN.
# Suites get: BUILD (build dir), VHDX (sanitized tool), PYTHON, SAMPLES (may not exist),
# TOP (project root) and WORK (a fresh scratch directory, removed afterwards).
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
export TOP
export BUILD=${BUILD:-$TOP/build}
export VHDX=${VHDX:-$BUILD/san/vhdx}
export PYTHON=${PYTHON:-/usr/bin/python3}
export SAMPLES=${SAMPLES:-$(cd "$TOP/.." && pwd)/shared/samples}
export PYTHONPATH="$TOP/tests${PYTHONPATH:+:$PYTHONPATH}"
# Sanitizer failures must fail the suite, and leaks are bugs too.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

passed=0 failed=0 skipped=0
for suite in "$TOP"/tests/*.test; do
    [ -x "$suite" ] || continue
    name=$(basename "$suite" .test)
    if [ $# -gt 0 ]; then
        want=0
        for pat in "$@"; do case "$name" in *"$pat"*) want=1 ;; esac; done
        [ $want -eq 1 ] || continue
    fi
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/vhdx-test-$name.XXXXXX")
    export WORK
    start=$(date +%s)
    out=$("$suite" 2>&1)
    rc=$?
    secs=$(( $(date +%s) - start ))
    p=$(grep -c '^PASS ' <<<"$out")
    f=$(grep -c '^FAIL ' <<<"$out")
    s=$(grep -c '^SKIP ' <<<"$out")
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        out="$out
FAIL $name: suite exited with status $rc"
    fi
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    printf '%-22s %4d passed %4d failed %4d skipped  (%ds)\n' "$name" "$p" "$f" "$s" "$secs"
    if [ "$f" -gt 0 ]; then
        # Show the whole output of a failing suite: the detail lines explain the FAILs.
        sed 's/^/    | /' <<<"$out" | tail -n 200
    fi
    grep '^SKIP ' <<<"$out" | sed 's/^/    /'
    rm -rf "$WORK"
done
echo "$skipped skipped"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
