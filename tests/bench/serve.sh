#!/bin/bash
# vhdx serve against qemu-nbd (issue 11).  One client for all three servers: `qemu-img
# bench` over NBD (a Unix socket), queue depth 1.  Servers: `vhdx serve` (the release
# build) and `qemu-nbd -f vhdx` on copies of the same dynamic VHDX (32 MiB blocks), and
# `qemu-nbd -f raw` on the same data as the ceiling; qemu-nbd with its defaults
# (cache=writeback, aio=threads).
#   sequential read   1 MiB requests over the whole disk
#   random read       4 KiB requests scattered over the disk: the offset advances by
#                     4 KiB x 104729 (a prime) modulo the disk size, so every request
#                     lands far from the one before
#   sequential write  1 MiB requests into a fresh, empty image, a flush every 64
#   random write      4 KiB scattered as above into the full image, a flush every 64
# Best of 5 runs; the servers take turns within each run.  Page cache warm, `sync`
# before each write test.  Run by tests/bench/run.sh, or alone:
#   BUILD=build tests/bench/serve.sh        (BENCH_SERVE_MIB=N for another disk size)
set -eu
TOP=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$TOP/build}
VHDX="$BUILD/vhdx"
MIB=${BENCH_SERVE_MIB:-1024}
STRIDE=$((4096 * 104729))
RUNS=${BENCH_SERVE_RUNS:-5}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/vhdx-bench-serve.XXXXXX")
SOCK="$DIR/nbd.sock"
URI="nbd+unix:///?socket=$SOCK"
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT

echo "== vhdx serve against qemu-nbd (issue 11): qemu-img bench over NBD, queue depth 1, ${MIB} MiB disk"
head -c "${MIB}M" /dev/urandom > "$DIR/data.raw"
qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=32M "$DIR/data.raw" "$DIR/data.vhdx"
cp "$DIR/data.vhdx" "$DIR/ours.vhdx"
cp "$DIR/data.vhdx" "$DIR/qemu.vhdx"
cp "$DIR/data.raw" "$DIR/raw.raw"
rm -f "$DIR/data.vhdx" "$DIR/data.raw"

# start SERVER IMAGE: ours | qemu-vhdx | qemu-raw
start() {
    rm -f "$SOCK"
    case $1 in
        ours) "$VHDX" serve "$2" --socket "$SOCK" 2>>"$DIR/serve.log" & ;;
        qemu-vhdx) qemu-nbd -t -f vhdx -k "$SOCK" "$2" & ;;
        qemu-raw) qemu-nbd -t -f raw -k "$SOCK" "$2" & ;;
    esac
    pid=$!
    for _ in $(seq 100); do [ -S "$SOCK" ] && return 0; sleep 0.05; done
    echo "bench: $1 did not start" >&2
    exit 1
}

stop() {
    kill "$pid"
    wait "$pid" || { echo "bench: the server exited with an error" >&2; exit 1; }
    pid=""
}

# seconds ARGS...: one qemu-img bench run against the server that is up.
seconds() {
    local out
    out=$(qemu-img bench -f raw -d 1 "$@" "$URI" 2>&1)
    sed -n 's/.*completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out" | grep . ||
        { echo "bench: qemu-img bench failed: $out" >&2; exit 1; }
}

# image_for SERVER TEST: the image a server works on (fresh and empty for sequential writes).
image_for() {
    local img
    case $1 in ours) img="$DIR/ours.vhdx" ;; qemu-vhdx) img="$DIR/qemu.vhdx" ;; *) img="$DIR/raw.raw" ;; esac
    if [ "$2" = seq_write ]; then
        img="$DIR/fresh.img"
        rm -f "$img"
        if [ "$1" = qemu-raw ]; then
            truncate -s "${MIB}M" "$img"
        else
            qemu-img create -q -f vhdx -o subformat=dynamic,block_size=32M "$img" "${MIB}M"
        fi
    fi
    echo "$img"
}

seq_count=$MIB
rand_reads=20000
rand_writes=6400
declare -A best
for run in $(seq $RUNS); do
    order="ours qemu-vhdx qemu-raw"
    [ $((run % 2)) -eq 0 ] && order="qemu-raw qemu-vhdx ours"
    for server in $order; do
        for test in seq_read rand_read seq_write rand_write; do
            img=$(image_for "$server" "$test")
            case $test in seq_write|rand_write) sync ;; esac
            start "$server" "$img"
            case $test in
                seq_read) s=$(seconds -c "$seq_count" -s 1M -S 1M) ;;
                rand_read) s=$(seconds -c "$rand_reads" -s 4k -S "$STRIDE") ;;
                seq_write) s=$(seconds -w -c "$seq_count" -s 1M -S 1M --flush-interval=64) ;;
                rand_write) s=$(seconds -w -c "$rand_writes" -s 4k -S "$STRIDE" --flush-interval=64) ;;
            esac
            stop
            case $test in
                seq_*) rate=$(awk -v n="$seq_count" -v s="$s" 'BEGIN { printf "%.0f", n / s }') ;;
                rand_read) rate=$(awk -v n="$rand_reads" -v s="$s" 'BEGIN { printf "%.0f", n / s }') ;;
                rand_write) rate=$(awk -v n="$rand_writes" -v s="$s" 'BEGIN { printf "%.0f", n / s }') ;;
            esac
            key="$server/$test"
            if [ -z "${best[$key]:-}" ] || [ "$rate" -gt "${best[$key]}" ]; then
                best[$key]=$rate
            fi
        done
    done
done
"$VHDX" check "$DIR/ours.vhdx" > /dev/null
qemu-img check -q -f vhdx "$DIR/ours.vhdx"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf '  %-34s %12s %14s %14s %10s %10s\n' "best of $RUNS" "vhdx serve" "qemu-nbd vhdx" "qemu-nbd raw" \
    "x vhdx" "x raw"
for test in seq_read rand_read seq_write rand_write; do
    case $test in
        seq_read) label="sequential read, 1 MiB (MiB/s)" ;;
        rand_read) label="random read, 4 KiB (IOPS)" ;;
        seq_write) label="sequential write, 1 MiB (MiB/s)" ;;
        rand_write) label="random write, 4 KiB (IOPS)" ;;
    esac
    o=${best[ours/$test]} q=${best[qemu-vhdx/$test]} r=${best[qemu-raw/$test]}
    printf '  %-34s %12s %14s %14s %10s %10s\n' "$label" "$o" "$q" "$r" "$(ratio "$o" "$q")" \
        "$(ratio "$o" "$r")"
done
echo "  goals: x vhdx >= 1.0 at every size, x raw >= 0.8"
