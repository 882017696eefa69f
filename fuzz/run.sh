#!/usr/bin/env bash
# Build the fuzz targets with libFuzzer on stable Rust and run each one for a while.
#
#   fuzz/run.sh SECONDS [TARGET...]     run every target (or the ones named) SECONDS each
#   fuzz/run.sh --build                 only build
#   fuzz/run.sh --list                  the targets
#
# Environment: FUZZ_TIMEOUT (seconds one input may take before it counts as a hang, default
# 20) and FUZZ_RSS_MB (host memory limit per target process, default 2048). Targets run one
# after another.
#
# Why not `cargo fuzz`: it needs a nightly toolchain for its sanitizer flags (and `cargo
# install`); the coverage instrumentation libFuzzer needs is available on stable through
# LLVM's sancov pass, which is all `cargo fuzz --sanitizer none` turns on anyway. libfuzzer-sys
# compiles libFuzzer itself with the system C++ compiler. The flags below are cargo-fuzz's.
#
# Per target it prints executions, seconds and crashes (crash, hang and out-of-memory inputs
# found, saved under target/fuzz-artifacts/TARGET/), and it exits non-zero if any target found
# one. Corpora grow in target/fuzz-corpus/TARGET (not committed); the committed seeds in
# fuzz/seeds/TARGET and the regression inputs in tests/data/fuzz/TARGET seed them.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"

TARGETS=(cpu devices bzimage disk_images http_range snapshot replay page_inputs)
# Longest input per target (bytes): enough for its program, file or step list.
declare -A MAX_LEN=(
    [cpu]=8192 [devices]=8192 [bzimage]=16384 [disk_images]=16384 [http_range]=4096
    [snapshot]=16384 [replay]=16384 [page_inputs]=8192
)
TIMEOUT=${FUZZ_TIMEOUT:-20}
RSS_MB=${FUZZ_RSS_MB:-2048}

host=$(rustc -vV | sed -n 's/^host: //p')
bin_dir="fuzz/target/$host/release"

build() {
    command -v c++ >/dev/null || command -v g++ >/dev/null \
        || { echo "fuzz: a C++ compiler is needed to build libFuzzer (apt-get install g++)" >&2; exit 1; }
    local t0=$SECONDS
    # --target keeps the instrumentation off build scripts and proc macros (they run on the
    # host, where libFuzzer's coverage symbols do not exist).
    RUSTFLAGS="-Cpasses=sancov-module \
        -Cllvm-args=-sanitizer-coverage-level=4 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
        -Cllvm-args=-sanitizer-coverage-pc-table \
        -Cllvm-args=-sanitizer-coverage-trace-compares \
        --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
        cargo build --release --manifest-path fuzz/Cargo.toml --target "$host" \
        --target-dir fuzz/target --bins
    echo "fuzz: built in $((SECONDS - t0)) s"
}

case "${1:-}" in
    --build) build; exit 0 ;;
    --list) printf '%s\n' "${TARGETS[@]}"; exit 0 ;;
    ''|-*) echo "usage: fuzz/run.sh SECONDS [TARGET...] | --build | --list" >&2; exit 2 ;;
esac
seconds=$1
shift
[ $# -gt 0 ] && TARGETS=("$@")
build

failed=0
rows=()
for t in "${TARGETS[@]}"; do
    [ -x "$bin_dir/$t" ] || { echo "fuzz: no target named $t (fuzz/run.sh --list)" >&2; exit 2; }
    corpus="target/fuzz-corpus/$t"
    artifacts="target/fuzz-artifacts/$t"
    log="target/fuzz-logs/$t.log"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    seeds=()
    for d in "fuzz/seeds/$t" "tests/data/fuzz/$t"; do
        [ -d "$d" ] && seeds+=("$d")
    done
    before=$(find "$artifacts" -type f | wc -l)
    echo "fuzz: $t for $seconds s (log: $log)"
    t0=$(date +%s%N)
    status=0
    "$bin_dir/$t" -max_total_time="$seconds" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" \
        -malloc_limit_mb="$RSS_MB" -max_len="${MAX_LEN[$t]:-4096}" -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$corpus" "${seeds[@]}" >"$log" 2>&1 || status=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    elapsed="$((ms / 1000)).$((ms % 1000 / 100))"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    found=$(( $(find "$artifacts" -type f | wc -l) - before ))
    if [ "$status" -ne 0 ] && [ "$found" -eq 0 ]; then
        # libFuzzer failed without saving an input (it could not start, say).
        found=1
        echo "fuzz: $t exited with status $status; the end of its log:" >&2
        tail -20 "$log" >&2
    elif [ "$found" -ne 0 ]; then
        echo "fuzz: $t found a crash; from its log:" >&2
        grep -E "^(==|SUMMARY|thread|panicked|Test unit written|artifact_prefix)|ERROR|panicked" "$log" | head -20 >&2
    fi
    [ "$found" -ne 0 ] && failed=1
    rows+=("$(printf '%-12s %12s %8s %8s' "$t" "${execs:-?}" "$elapsed" "$found")")
done

printf '\n%-12s %12s %8s %8s\n' target executions seconds crashes
printf '%s\n' "${rows[@]}"
if [ "$failed" -ne 0 ]; then
    echo "fuzz: crashes found (inputs in target/fuzz-artifacts/TARGET/)" >&2
    exit 1
fi
echo "fuzz: no crashes"
