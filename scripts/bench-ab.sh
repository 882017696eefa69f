#!/usr/bin/env bash
# make bench-ab A=DIR B=DIR [WORKLOAD=isprime] [ROUNDS=3]: two builds of the browser package
# (directories as `make wasm` leaves pkg/: wasm86.js and wasm86_bg.wasm) side by side in one
# headless Chromium worker, taking turns in short slices on the benchmark guest (bench/ab.js),
# so that the machine's noise falls on both alike. Prints each build's MIPS per round and the
# ratio B/A of the medians; saves target/bench/ab-TIME.json.
#
# To compare a change with what it changes: `make wasm && cp -r pkg /tmp/pkg-before`, make the
# change, `make wasm`, then `make bench-ab A=/tmp/pkg-before B=pkg`.
#
# JS_FLAGS (environment): V8 flags for this Chromium, e.g. --intel-jcc-erratum-mitigation,
# which makes V8 pad its code so that no jump crosses or ends on a 32-byte boundary. Where the
# hot jumps of the run loop fall moves with any edit to it, and by that alone one workload can
# move by 5% either way (seen on this project's machines: the same two builds, isprime 0.948x
# without the flag and 0.993x with it). With the flag the ratio says more about the change
# itself; without it, what a user's browser runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/headless.sh

a=${1:?usage: bench-ab.sh DIR_A DIR_B [WORKLOAD] [ROUNDS]}
b=${2:?usage: bench-ab.sh DIR_A DIR_B [WORKLOAD] [ROUNDS]}
workload=${3:-isprime}
rounds=${4:-3}
die() { printf 'bench-ab: error: %s\n' "$*" >&2; exit 1; }

case "$workload" in isprime|gzip|forkexec) ;; *) die "unknown workload '$workload' (isprime, gzip, forkexec)" ;; esac
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a whole number from 1, not '$rounds'"
for d in "$a" "$b"; do
    [ -f "$d/wasm86.js" ] && [ -f "$d/wasm86_bg.wasm" ] || die "$d: not a built package (no wasm86.js and wasm86_bg.wasm)"
done
for f in images/bzImage images/bench-initramfs.cpio.gz target/release/wasm86; do
    [ -f "$f" ] || die "$f missing (make build; images/ comes with the repository)"
done
command -v chromium >/dev/null || die "chromium not found (make setup installs it)"

root=target/bench-ab
rm -rf "$root"
mkdir -p "$root/images" target/bench
cp -r "$a" "$root/a"
cp -r "$b" "$root/b"
cp bench/ab.html bench/ab.js "$root/"
cp images/bzImage images/bench-initramfs.cpio.gz "$root/images/"

port=$((20000 + RANDOM % 20000))
profile=$(mktemp -d)
log=$(mktemp)
target/release/wasm86 serve --root "$root" --port "$port" >/dev/null 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; pkill -f "user-data-dir=$profile" 2>/dev/null || true; rm -rf "$profile" "$log"; }
trap cleanup EXIT
sleep 0.5

printf 'bench-ab: %s (A) against %s (B), %s, %s rounds each%s\n' "$a" "$b" "$workload" "$rounds" \
    "${JS_FLAGS:+, V8 flags $JS_FLAGS}"
headless_until "$profile" "http://127.0.0.1:$port/ab.html?a=a&b=b&w=$workload&n=$rounds" AB "$log"
json=$(headless_report "$log" AB) || die "no result: $json"
out="target/bench/ab-$(date +%s).json"
printf '{"a":"%s","b":"%s","js_flags":"%s","result":%s}\n' "$a" "$b" "${JS_FLAGS:-}" "$json" > "$out"
node -e '
const r = JSON.parse(process.argv[1]);
const med = (v) => { const s = [...v].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const m = r.result.builds.map((b) => b.rounds.map((x) => x.mips));
for (const [i, name] of ["A", "B"].entries())
  console.log(`${name} ${r[name.toLowerCase()]}: MIPS per round ${m[i].map((x) => x.toFixed(1)).join(", ")}, median ${med(m[i]).toFixed(1)}`);
console.log(`B/A ${(med(m[1]) / med(m[0])).toFixed(3)} (${r.result.workload}; ratios per round ${m[1].map((x, k) => (x / m[0][k]).toFixed(3)).join(", ")})`);
' "$(cat "$out")"
printf 'bench-ab: saved %s\n' "$out"
