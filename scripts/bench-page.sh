#!/usr/bin/env bash
# make bench-page A=DIR B=DIR [WORKLOAD=isprime] [ROUNDS=3] [LOADS=2] [FRAMES=1]: two builds of the
# browser package (directories as `make wasm` leaves pkg/) each run by the page's own worker
# (bench/page.html: www/wasm86.js's MachineController and www/worker.js, without terminal or
# canvas), one page load after the other, A then B, LOADS times; each load boots the benchmark
# guest and times ROUNDS rounds of the workload between its markers, as `make bench-web` times
# the page. Prints MIPS per round and the ratio B/A of the medians; saves target/bench/page-TIME.json.
#
# `make bench-ab` times only the inside of the interpreter's run(); this times what the page's
# worker adds around it too (its turns, serial output, frames, the real-time clock's pacing).
# Loads take turns rather than share one worker, so the machine's noise falls less evenly: use
# LOADS=3 or more for small differences. JS_FLAGS (environment): V8 flags, as for bench-ab.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/headless.sh

usage="usage: bench-page.sh DIR_A DIR_B [WORKLOAD] [ROUNDS] [LOADS] [FRAMES]"
a=${1:?$usage}
b=${2:?$usage}
workload=${3:-isprime}
rounds=${4:-3}
loads=${5:-2}
frames=${6:-1}
die() { printf 'bench-page: error: %s\n' "$*" >&2; exit 1; }

case "$workload" in isprime|gzip|forkexec) ;; *) die "unknown workload '$workload' (isprime, gzip, forkexec)" ;; esac
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a whole number from 1, not '$rounds'"
[[ "$loads" =~ ^[1-9][0-9]*$ ]] || die "LOADS must be a whole number from 1, not '$loads'"
case "$frames" in 0|1) ;; *) die "FRAMES must be 1 (frames on, as in the page) or 0, not '$frames'" ;; esac
for d in "$a" "$b"; do
    [ -f "$d/wasm86.js" ] && [ -f "$d/wasm86_bg.wasm" ] || die "$d: not a built package (no wasm86.js and wasm86_bg.wasm)"
done
for f in images/bzImage images/bench-initramfs.cpio.gz target/release/wasm86; do
    [ -f "$f" ] || die "$f missing (make build; images/ comes with the repository)"
done
command -v chromium >/dev/null || die "chromium not found (make setup installs it)"

root=target/bench-page
rm -rf "$root"
for side in a b; do
    mkdir -p "$root/$side/images" "$root/$side/bench"
    cp www/wasm86.js www/worker.js www/protocol.js bench/page.html "$root/$side/"
    cp bench/recorder.js "$root/$side/bench/"
    cp images/bzImage images/bench-initramfs.cpio.gz "$root/$side/images/"
done
cp -r "$a" "$root/a/pkg"
cp -r "$b" "$root/b/pkg"
mkdir -p target/bench

port=$((20000 + RANDOM % 20000))
target/release/wasm86 serve --root "$root" --port "$port" >/dev/null 2>&1 &
server=$!
profile=""
cleanup() {
    kill "$server" 2>/dev/null || true
    [ -z "$profile" ] || { pkill -f "user-data-dir=$profile" 2>/dev/null || true; rm -rf "$profile"; }
}
trap cleanup EXIT
sleep 0.5

# One load of SIDE's page: prints its result JSON.
load() {
    profile=$(mktemp -d)
    local log
    log=$(mktemp)
    headless_until "$profile" "http://127.0.0.1:$port/$1/page.html?w=$workload&n=$rounds&frames=$frames" PAGE "$log" 600
    sleep 0.5
    rm -rf "$profile"
    profile=""
    local json
    json=$(headless_report "$log" PAGE) || die "$1: no result: $json"
    printf '%s\n' "$json"
    rm -f "$log"
}

printf 'bench-page: %s (A) against %s (B), %s, %s rounds per load, %s loads each, frames %s%s\n' \
    "$a" "$b" "$workload" "$rounds" "$loads" "$( [ "$frames" = 1 ] && echo on || echo off)" \
    "${JS_FLAGS:+, V8 flags $JS_FLAGS}"
results_a=()
results_b=()
for ((k = 1; k <= loads; k++)); do
    results_a+=("$(load a)")
    results_b+=("$(load b)")
done
out="target/bench/page-$(date +%s).json"
join() { local IFS=,; printf '%s' "$*"; }
printf '{"a":"%s","b":"%s","js_flags":"%s","a_loads":[%s],"b_loads":[%s]}\n' "$a" "$b" "${JS_FLAGS:-}" \
    "$(join "${results_a[@]}")" "$(join "${results_b[@]}")" > "$out"
node -e '
const r = JSON.parse(process.argv[1]);
const med = (v) => { const s = [...v].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const all = { A: r.a_loads.flatMap((l) => l.mips), B: r.b_loads.flatMap((l) => l.mips) };
for (const [name, loads] of [["A", r.a_loads], ["B", r.b_loads]])
  console.log(`${name} ${r[name.toLowerCase()]}: MIPS per round ${loads.map((l) => l.mips.map((x) => x.toFixed(1)).join(", ")).join(" | ")}, median ${med(all[name]).toFixed(1)}`);
console.log(`B/A ${(med(all.B) / med(all.A)).toFixed(3)} (${r.a_loads[0].workload}, medians of all rounds)`);
' "$(cat "$out")"
printf 'bench-page: saved %s\n' "$out"
