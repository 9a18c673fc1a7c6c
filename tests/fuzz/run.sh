#!/bin/sh
# Fuzz the core's open/read/write paths with libFuzzer (clang), for SECONDS (default 300).
# Not part of make check: run by hand or in a nightly job.  Crashes land in $OUT.
set -eu
TOP=$(cd "$(dirname "$0")/../.." && pwd)
SECONDS_TO_RUN=${1:-300}
OUT=${OUT:-$TOP/build/fuzz}
mkdir -p "$OUT/corpus"
/usr/bin/python3 -c "
import sys; sys.path.insert(0, '$TOP/tests')
import vhdxgen as V
V.corruption_base(dirty=True).build('$OUT/base.vhdx')"
clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I"$TOP/core" -I"$TOP/tests/c" "$TOP/tests/fuzz/fuzz_open.c" "$TOP"/core/*.c \
    -o "$OUT/fuzz_open"
cd "$OUT"
FUZZ_BASE="$OUT/base.vhdx" ./fuzz_open -max_total_time="$SECONDS_TO_RUN" -max_len=4096 \
    -timeout=10 -rss_limit_mb=4096 corpus
