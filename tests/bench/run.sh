#!/bin/bash
# make bench: the benchmarks of the issues, each comparing against a baseline measured
# in the same run.  Timings are reported, never asserted.  Figures depend on the machine;
# the ratios are what the goals are about.
set -eu
TOP=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$TOP/build}
PYTHON=${PYTHON:-/usr/bin/python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vhdx-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export TOP BUILD PYTHON WORK
VHDX="$BUILD/vhdx"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
rate() { awk -v mib="$1" -v s="$2" 'BEGIN { printf "%.0f", mib / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "== Read throughput (issue 2): 1 GiB of random data, page cache warm"
head -c 1G /dev/urandom > "$WORK/random.raw"
for bs in 32 1; do
    img="$WORK/disk-${bs}M.vhdx"
    qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=${bs}M "$WORK/random.raw" "$img"
    # The baseline raw file is written the way the image was (by qemu-img, in large
    # writes): how a file was written changes how fast the page cache serves it.
    rm -f "$WORK/disk.raw"
    qemu-img convert -f vhdx -O raw "$img" "$WORK/disk.raw"
    "$VHDX" cat "$img" | cmp - "$WORK/disk.raw"       # same data, and warms the cache
    echo "-- dynamic, ${bs} MiB blocks"
    best_cat=0 best_dd=0 best_qemu=0
    for run in 1 2 3; do
        t0=$(now); "$VHDX" cat "$img" > /dev/null; t1=$(now)
        dd if="$WORK/disk.raw" of=/dev/null bs=4M status=none; t2=$(now)
        qemu-img convert -n -f vhdx -O raw "$img" null-co:// ; t3=$(now)
        best_cat=$(awk -v a="$best_cat" -v b="$(rate 1024 "$(secs "$t0" "$t1")")" 'BEGIN{print (b>a)?b:a}')
        best_dd=$(awk -v a="$best_dd" -v b="$(rate 1024 "$(secs "$t1" "$t2")")" 'BEGIN{print (b>a)?b:a}')
        best_qemu=$(awk -v a="$best_qemu" -v b="$(rate 1024 "$(secs "$t2" "$t3")")" 'BEGIN{print (b>a)?b:a}')
    done
    printf '  %-28s %6s MiB/s   raw dd 4 MiB: %6s MiB/s (x%s)   qemu-img convert: %6s MiB/s (x%s)\n' \
        "vhdx cat > /dev/null" "$best_cat" "$best_dd" "$(ratio "$best_cat" "$best_dd")" \
        "$best_qemu" "$(ratio "$best_cat" "$best_qemu")"
    "$BUILD/bench/bench_read" "$img" "$WORK/disk.raw" | while read -r name core raw; do
        case "$name" in
            sequential_4K) size=4k count=262144 step=4k ;;
            sequential_64K) size=64k count=16384 step=64k ;;
            sequential_1024K) size=1M count=1024 step=1M ;;
            random_4K) size="" ;;
        esac
        q=""
        if [ -n "$size" ]; then
            out=$(qemu-img bench -f vhdx -d 1 -c "$count" -s "$size" -S "$step" "$img" 2>&1)
            qs=$(sed -n 's/.*completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
            [ -n "$qs" ] && q=$(rate 1024 "$qs")
        fi
        printf '  %-28s %6s MiB/s   raw pread:    %6s MiB/s (x%s)' "core $name" "$core" "$raw" \
            "$(ratio "$core" "$raw")"
        if [ -n "$q" ]; then
            printf '   qemu-img bench -d 1: %6s MiB/s (x%s)\n' "$q" "$(ratio "$core" "$q")"
        else
            printf '\n'
        fi
    done
done
rm -f "$WORK"/disk*

echo
echo "== A differencing chain of depth 4 against one flat image of the same data (issue 10)"
flat="$WORK/flat.vhdx"
qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=2M "$WORK/random.raw" "$flat"
"$VHDX" create "$WORK/level0.vhdx" --size 1G --block-size 2M
for level in 0 1 2 3; do
    file="$WORK/level$level.vhdx"
    [ "$level" -gt 0 ] && "$VHDX" create "$file" --parent "$WORK/level$((level - 1)).vhdx"
    # Each level holds one quarter of the data; the top reads the rest through its parents.
    dd if="$WORK/random.raw" bs=1M skip=$((level * 256)) count=256 status=none |
        "$VHDX" write "$file" --offset $((level * 256))M
done
"$VHDX" cat "$WORK/level3.vhdx" | cmp - "$WORK/random.raw"
rm -f "$WORK/disk.raw"
qemu-img convert -f vhdx -O raw "$flat" "$WORK/disk.raw"
# The chain and the flat image read in the same process, taking turns (best of 5).
"$BUILD/bench/bench_read" "$WORK/level3.vhdx" "$WORK/disk.raw" "$flat" |
    while read -r name chain raw flat_rate; do
        printf '  %-20s chain of 4: %6s MiB/s   one flat image: %6s MiB/s (x%s)   raw pread: %6s MiB/s\n' \
            "$name" "$chain" "$flat_rate" "$(ratio "$chain" "$flat_rate")" "$raw"
    done
rm -f "$WORK"/level?.vhdx "$flat"

echo "== A 64 TiB disk, 1 MiB blocks (issue 9): a 512 MiB BAT through a bounded cache"
huge="$WORK/huge.vhdx"
qemu-img create -q -f vhdx -o block_size=1M "$huge" 64T
fallocate -d "$huge"
"$VHDX" cat "$huge" --offset 0 --length 1M > /dev/null      # the BAT into the page cache
for cache in 1048576 16777216; do
    "$BUILD/bench/bench_huge" "$huge" "$cache" | while read -r what a b c; do
        case "$what" in
            open) printf '  cache %5s KiB: open %s s' "$((cache / 1024))" "$a" ;;
            random_4K) printf ', random 4 KiB reads over the whole disk %s MiB/s' "$a" ;;
            cache) printf ', hit rate %s%% (%s of %s BAT pages cached)' \
                       "$(awk -v h="$a" -v m="$b" 'BEGIN { printf "%.1f", 100 * h / (h + m) }')" \
                       "$c" "$(( (64 << 20) * 8 / 4096 ))" ;;
            core_peak) printf ', core peak %s MiB\n' "$(awk -v p="$a" 'BEGIN { printf "%.1f", p / 1048576 }')" ;;
        esac
    done
done
rm -f "$huge"

echo "== Writes (issue 3): durable, against qemu-io on the same requests"
n=${BENCH_WRITES:-1000}
"$PYTHON" - "$n" > "$WORK/offsets" <<'PY'
import random, sys
r = random.Random(3)
blocks = r.sample(range(2048), int(sys.argv[1]))         # 4 GiB / 2 MiB blocks
for b in blocks:
    print(b * (2 << 20) + r.randrange(0, 512) * 4096)
PY
qemu-img create -q -f vhdx -o subformat=dynamic,block_size=2M "$WORK/ours.vhdx" 4G
qemu-img create -q -f vhdx -o subformat=dynamic,block_size=2M "$WORK/qemu.vhdx" 4G
sync
read -r count secs_ours flushes < <("$BUILD/bench/bench_write" "$WORK/ours.vhdx" "$WORK/offsets")
args=()
while read -r off; do args+=(-c "write -P 0x5a $off 4k" -c flush); done < "$WORK/offsets"
sync
t0=$(now); qemu-io -f vhdx "${args[@]}" "$WORK/qemu.vhdx" > /dev/null; t1=$(now)
secs_qemu=$(secs "$t0" "$t1")
w_ours=$(awk -v n="$count" -v s="$secs_ours" 'BEGIN{printf "%.0f", n/s}')
w_qemu=$(awk -v n="$count" -v s="$secs_qemu" 'BEGIN{printf "%.0f", n/s}')
printf '  (a) %d random 4 KiB writes, each allocating a 2 MiB block, flush after each:\n' "$count"
printf '      core %s writes/s (%s s, %s fdatasyncs)   qemu-io %s writes/s (%s s)   x%s\n' \
    "$w_ours" "$secs_ours" "$flushes" "$w_qemu" "$secs_qemu" "$(ratio "$w_ours" "$w_qemu")"
qemu-img check -q "$WORK/ours.vhdx" && qemu-img check -q "$WORK/qemu.vhdx"
rm -f "$WORK/ours.vhdx" "$WORK/qemu.vhdx"

best_ours=0 best_qemu=0
for run in 1 2 3 4 5; do
    rm -f "$WORK/ours.vhdx" "$WORK/qemu.vhdx"
    qemu-img create -q -f vhdx -o subformat=dynamic "$WORK/ours.vhdx" 4G
    qemu-img create -q -f vhdx -o subformat=dynamic "$WORK/qemu.vhdx" 4G
    # Each timed write starts with no dirty pages around (sync), and the two take turns
    # at going first: writeback left by one must not slow the other.
    for who in $([ $((run % 2)) -eq 1 ] && echo "ours qemu" || echo "qemu ours"); do
        sync
        t0=$(now)
        if [ "$who" = ours ]; then
            "$BUILD/bench/bench_write" "$WORK/ours.vhdx" --sequential 64
        else
            qemu-io -f vhdx -c "write -P 0x5a 0 64M" -c flush "$WORK/qemu.vhdx" > /dev/null
        fi
        t1=$(now)
        r=$(rate 64 "$(secs "$t0" "$t1")")
        if [ "$who" = ours ]; then
            best_ours=$(awk -v a="$best_ours" -v b="$r" 'BEGIN{print (b>a)?b:a}')
        else
            best_qemu=$(awk -v a="$best_qemu" -v b="$r" 'BEGIN{print (b>a)?b:a}')
        fi
    done
    qemu-img check -q "$WORK/ours.vhdx"
done
printf '  (b) 64 MiB sequential write into a fresh 4 GiB image (32 MiB blocks), flushed, best of 5:\n'
printf '      core (bench_write, whole process) %s MiB/s   qemu-io %s MiB/s   x%s\n' "$best_ours" "$best_qemu" \
    "$(ratio "$best_ours" "$best_qemu")"

echo
echo "== Log replay (issue 3): a full 1 MiB log"
"$PYTHON" - <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.environ["TOP"], "tests"))
import vhdxgen as V
img = V.Image(3 << 30, block_size=1 << 20, seed=1)
lg = img.log()
# 127 entries of 8 KiB (one descriptor sector, one data sector): 1016 KiB of the 1 MiB log.
for k in range(127):
    lg.set_block(k * 23 % 3072, data=bytes([k + 1]) * 4096)
img.build(os.path.join(os.environ["WORK"], "fulllog.vhdx"))
PY
best_mem=9 best_place=9 best_qemu=9
for run in 1 2 3 4 5; do
    cp --sparse=always "$WORK/fulllog.vhdx" "$WORK/a.vhdx"
    cp --sparse=always "$WORK/fulllog.vhdx" "$WORK/b.vhdx"
    t0=$(now); "$VHDX" info "$WORK/a.vhdx" > /dev/null; t1=$(now)
    "$VHDX" replay "$WORK/a.vhdx" > /dev/null; t2=$(now)
    qemu-img check -q -r all "$WORK/b.vhdx" > /dev/null 2>&1 || true; t3=$(now)
    best_mem=$(awk -v a="$best_mem" -v b="$(secs "$t0" "$t1")" 'BEGIN{print (b<a)?b:a}')
    best_place=$(awk -v a="$best_place" -v b="$(secs "$t1" "$t2")" 'BEGIN{print (b<a)?b:a}')
    best_qemu=$(awk -v a="$best_qemu" -v b="$(secs "$t2" "$t3")" 'BEGIN{print (b<a)?b:a}')
done
agree="differs"
qemu-img compare -q -f vhdx -F vhdx "$WORK/a.vhdx" "$WORK/b.vhdx" && agree="same disk"
printf '  127 entries, 1016 KiB: in memory (vhdx info) %s s, in place (vhdx replay) %s s;\n' \
    "$best_mem" "$best_place"
printf '  qemu-img check -r all %s s (%s as ours); whole-process times, best of 5\n' \
    "$best_qemu" "$agree"

echo
BUILD="$BUILD" "$TOP/tests/bench/serve.sh"
echo
BUILD="$BUILD" PYTHON="$PYTHON" "$TOP/tests/bench/hostile.sh"

[ -n "${BENCH_HOST_ONLY:-}" ] && exit 0
# Other benchmarks (tests/bench/*.sh, e.g. ovmf.sh inside OVMF); not this script, and
# not serve.sh and hostile.sh (host benchmarks, run above).
for extra in "$TOP"/tests/bench/*.sh; do
    case "$(basename "$extra")" in run.sh|serve.sh|hostile.sh) continue ;; esac
    [ -x "$extra" ] || continue
    echo
    "$extra"
done
