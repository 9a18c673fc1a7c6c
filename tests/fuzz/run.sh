#!/bin/sh
# make fuzz / make fuzz-coverage (see the Makefile).  Not part of make check.
#
#   run.sh fuzz SECONDS   fuzz build/fuzz/fuzz_vhdx for SECONDS (one process, niced) on
#                         build/fuzz/corpus (kept between runs), the seeds and the
#                         committed corpus; findings (crash-*, timeout-*, oom-*) land in
#                         build/fuzz/findings and are triaged at the end
#   run.sh coverage       run the corpus through the coverage build; llvm-cov report of core/
#
# FUZZ_KNOWN=name,... counts those invariants or bounds instead of stopping on them (to
# fuzz past a known bug; the names are in tests/fuzz/fuzz_vhdx.c).
set -eu
TOP=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$TOP/build}
OUT=$BUILD/fuzz
SAMPLES=${SAMPLES:-$(cd "$TOP/.." && pwd)/shared/samples}
mkdir -p "$OUT/corpus" "$OUT/findings"

seeds() {
    if [ ! -d "$OUT/seeds" ]; then
        echo "fuzz: writing the seeds (qemu-img, vhdxgen, corruption catalogue, hostile, samples)"
        /usr/bin/python3 "$TOP/tests/fuzz/seeds.py" seeds "$OUT/seeds.new" --samples "$SAMPLES"
        mv "$OUT/seeds.new" "$OUT/seeds"
    fi
}

case "${1:-}" in
fuzz)
    seconds=${2:-300}
    seeds
    cd "$OUT"
    # -fork=1: one worker at a time; a finding is saved and fuzzing goes on.
    nice -n 10 ./fuzz_vhdx -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        -max_total_time="$seconds" -max_len=65536 -timeout=30 -rss_limit_mb=2048 \
        -dict="$TOP/tests/fuzz/vhdx.dict" -artifact_prefix="$OUT/findings/" \
        -print_final_stats=1 corpus seeds "$TOP/tests/fuzz/corpus" 2>&1 | tee "$OUT/last-run.log" |
        grep -E '^#|INVARIANT|ERROR|fuzz:|stat::|^INFO: fuzzed' || true
    n=$(ls "$OUT/findings" | wc -l)
    echo "fuzz: $n findings in $OUT/findings; triage (one line per distinct reason):"
    if [ "$n" -gt 0 ]; then
        "$BUILD/san/fuzz_corpus" --prefix finding "$OUT/findings" 2>/dev/null |
            sed -n 's/^FAIL finding_\([^:]*\): \(.*\)/\2	\1/p' |
            awk -F'\t' '{ key = $1; sub(/[0-9][0-9]*/, "N", key); if (!(key in seen)) { seen[key] = $2; order[++n] = key } count[key]++ }
                END { for (i = 1; i <= n; i++) printf "  %4d x %s\n         e.g. %s\n", count[order[i]], order[i], seen[order[i]] }'
    fi
    ;;
coverage)
    seeds
    rm -f "$OUT"/cov-*.profraw
    LLVM_PROFILE_FILE="$OUT/cov-%p.profraw" "$BUILD/cov/fuzz_corpus" --prefix cov \
        "$OUT/corpus" "$OUT/seeds" "$TOP/tests/fuzz/corpus" >/dev/null 2>&1 || true
    llvm-profdata merge -sparse "$OUT"/cov-*.profraw -o "$OUT/cov.profdata"
    rm -f "$OUT"/cov-*.profraw
    llvm-cov report "$BUILD/cov/fuzz_corpus" -instr-profile="$OUT/cov.profdata" \
        "$TOP"/core/*.c
    ;;
*)
    echo "usage: run.sh fuzz SECONDS | run.sh coverage" >&2
    exit 2
    ;;
esac
