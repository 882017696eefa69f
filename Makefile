# wasm86 build and test entry points. `make test` and `make run` install what they need first
# (scripts/setup.sh skips tools already present at the right version).
#
#   make setup           install toolchain pieces (wasm32 target, wasm-pack, wasm-bindgen, chromium)
#   make test            setup, lint (with tsc), native tests, hardware CPU tests, browser tests,
#                        webdriver tests (with the npm package's install test)
#   make run             build the page and serve it on http://127.0.0.1:$(PORT)/ (PORT=8080):
#                        open it and Linux boots in the browser
#   make console         boot the bundled Linux on the serial console in this terminal instead
#   make wasm            build the browser package into pkg/ (wasm-pack --target web)
#   make site            assemble the static site in site/ (www/ + pkg/ + xterm.js + images/)
#   make package         the npm package in pkg-npm/ (front-end, wasm, TypeScript declarations;
#                        no images), packed by npm pack into target/package/wasm86-VERSION.tgz
#   make tsc             tsc --checkJs over the front-end (www/*.js; part of `make lint`)
#   make bench           the Linux benchmark guest natively (isprime, gzip, fork/exec; guest MIPS
#                        and slowdown against this host running the same programs); REPS=n runs
#                        (default 3), BENCH_ARGS=--synthetic for the CPU micro benchmark
#   make bench-web       wasm86's page (alone, and with jit=1) and v86 (interpreter, JIT) in Chromium,
#                        and wasm86-native (target/release/wasm86 bench, the same core built
#                        natively, same guest) for the browser-vs-native ratio; REPS=3 repetitions,
#                        results in target/bench/web-*.json; BENCH_WEB_ARGS=--no-native skips
#                        the native runs; not in `make test`
#   make bench-ab A=DIR B=DIR  two builds of the browser package (as `make wasm` leaves pkg/) in
#                        one headless Chromium worker, taking turns in short slices on the
#                        benchmark guest, so the machine's noise falls on both alike: MIPS per
#                        round and the ratio B/A (WORKLOAD=isprime|gzip|forkexec, ROUNDS=3;
#                        JS_FLAGS=... passes V8 flags, e.g. --intel-jcc-erratum-mitigation)
#   make bench-page A=DIR B=DIR  two builds of the browser package run by the page's own worker
#                        (bench/page.html: the MachineController and worker.js, no terminal or
#                        canvas), page loads taking turns: MIPS per round between the guest's
#                        markers and the ratio B/A, what the worker adds around the interpreter
#                        included (WORKLOAD, ROUNDS=3, LOADS=2, FRAMES=1 or 0, JS_FLAGS)
#   make soak            a busy page left running SOAK_MINUTES (default 10) in headless Chromium:
#                        its wasm, JavaScript and renderer memory must not grow (WebDriver);
#                        not in `make test`
#   make sst             only the hardware-captured single-step CPU tests (CPU_TESTS=dir)
#   make fuzz            build the fuzz targets (fuzz/, libFuzzer on stable Rust) and run each for
#                        FUZZ_SECONDS (default 60); fails if one finds a crash, hang or memory
#                        blow-up (inputs saved in target/fuzz-artifacts/TARGET/); then DIFF_CASES
#                        (default 2,000,000) random instruction sequences compared with this
#                        host's CPU (tests/differential.rs)
#   make fuzz-smoke      the same for FUZZ_SMOKE_SECONDS (default 5) per target: part of `make test`

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
# Steps run one after another, in the order listed, even under `make -j`.
.NOTPARALLEL:

export PATH := $(HOME)/.cargo/bin:$(PATH)

CARGO ?= cargo
WASM_PACK ?= wasm-pack
# Hardware-captured CPU tests (see ../shared/cpu-tests/README).
CPU_TESTS ?= ../shared/cpu-tests/80286-real
# The browser-test timeout covers a whole test binary (default 20 s): raise it.
WASM_BINDGEN_TEST_TIMEOUT ?= 300
export WASM_BINDGEN_TEST_TIMEOUT
# The port `make run` serves the page on.
PORT ?= 8080
BENCH_ARGS ?=
# Repetitions of each workload in `make bench` and of each system in `make bench-web`.
REPS ?= 3
# `make bench-ab`: the two package directories, the workload and the rounds.
A ?=
B ?= pkg
WORKLOAD ?= isprime
ROUNDS ?= 3
# `make bench-page`: page loads per build, and whether the worker sends frames (1) or not (0).
LOADS ?= 2
FRAMES ?= 1
# Seconds allowed for one `make bench-web` run.
BENCH_WEB_TIMEOUT ?= 300
# More arguments for bench_web, e.g. BENCH_WEB_ARGS='--command "/bench/run small"'.
BENCH_WEB_ARGS ?=
# Seconds each fuzz target runs in `make fuzz`, and in the `make test` step `fuzz-smoke`.
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5
# Random instruction sequences `make fuzz` runs on this host's CPU and on wasm86 and compares
# (tests/differential.rs; `make test` runs its default, 50,000).
DIFF_CASES ?= 2000000

.PHONY: all setup test lint fmt-check clippy clippy-wasm clippy-fuzz tsc unit sst fuzz fuzz-smoke test-web \
	test-webdriver soak run console wasm site package bench bench-web bench-ab bench-page build build-wasm32 clean

all: build

setup:
	scripts/setup.sh

test: setup lint unit sst fuzz-smoke test-web test-webdriver
	@echo "make test: all steps passed"

lint: fmt-check clippy clippy-wasm clippy-fuzz tsc

fmt-check:
	$(CARGO) fmt --check
	$(CARGO) fmt --check --manifest-path fuzz/Cargo.toml

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

# The wasm32-only code (src/web, tests/web.rs) is invisible to a native clippy. The CLI is
# native-only.
clippy-wasm:
	$(CARGO) clippy --target wasm32-unknown-unknown --lib --test web --test web_jit -- -D warnings

# The fuzz crate is outside the workspace: linted on its own (uninstrumented, its own target dir).
clippy-fuzz:
	$(CARGO) clippy --manifest-path fuzz/Cargo.toml --target-dir fuzz/target --all-targets -- -D warnings

# The front-end's types: tsc --checkJs over www/*.js (package/tsconfig.json), which checks every
# worker message against protocol.js. TypeScript is a pinned devDependency of package/build/,
# installed by scripts/package.sh with npm ci on first use.
tsc:
	scripts/package.sh tsc

# Native unit and integration tests.
unit:
	$(CARGO) test --release

# Hardware-captured single-step CPU tests.
sst:
	@test -d "$(CPU_TESTS)" || { echo "sst: CPU test directory '$(CPU_TESTS)' not found (set CPU_TESTS=dir)" >&2; exit 1; }
	$(CARGO) run --release -- sst $(CPU_TESTS)

# Fuzz targets (fuzz/run.sh builds them with libFuzzer's coverage instrumentation on stable
# Rust). Crashes saved in target/fuzz-artifacts/TARGET/ become regression inputs in
# tests/data/fuzz/TARGET/ (tests/fuzz_regressions.rs), which also seed the fuzzers.
fuzz:
	fuzz/run.sh $(FUZZ_SECONDS)
	WASM86_DIFF_CASES=$(DIFF_CASES) $(CARGO) test --release --test differential random_sequences

fuzz-smoke:
	fuzz/run.sh $(FUZZ_SMOKE_SECONDS)

# wasm-bindgen tests (tests/web*.rs) in headless Chromium; args from webdriver.json.
test-web:
	$(WASM_PACK) test --headless --chrome

# End-to-end tests that drive the real page in headless Chromium (webdriver/ crate): they start
# `wasm86 serve` on site/ and chromedriver themselves. One at a time: each boots Linux. The npm
# package's test installs target/package/wasm86-VERSION.tgz (make package) into an empty folder.
test-webdriver:
	@if [ -f webdriver/Cargo.toml ]; then \
		$(MAKE) --no-print-directory site build package && \
		$(CARGO) test --release --manifest-path webdriver/Cargo.toml -- --test-threads=1; \
	else \
		echo "test-webdriver: no webdriver/Cargo.toml yet, skipped"; \
	fi

# The memory soak (webdriver/tests/soak.rs, #[ignore]d in test-webdriver's run).
SOAK_MINUTES ?= 10
soak: setup site build
	WASM86_SOAK_MINUTES=$(SOAK_MINUTES) $(CARGO) test --release --manifest-path webdriver/Cargo.toml \
		--test soak -- --ignored --nocapture

build:
	$(CARGO) build --release

build-wasm32:
	$(CARGO) build --release --target wasm32-unknown-unknown --lib

wasm:
	$(WASM_PACK) build --release --target web --out-dir pkg

site: wasm build
	scripts/site.sh

# The npm package (scripts/package.sh): pkg-npm/ and target/package/wasm86-VERSION.tgz.
package: wasm
	scripts/package.sh build

run: setup site build
	@echo "make run: open http://127.0.0.1:$(PORT)/ (Ctrl-C stops the server)"
	target/release/wasm86 serve --root site --port $(PORT)

# The bundled Linux on the serial console in this terminal (Ctrl-A X quits).
console: build
	target/release/wasm86

# The git commit goes into the build identity that `wasm86 bench` prints and records.
bench:
	WASM86_GIT_COMMIT="$$(git describe --always --dirty --abbrev=12 2>/dev/null || true)" \
		$(CARGO) run --release -- bench $(if $(REPS),--reps $(REPS)) $(BENCH_ARGS)

# wasm86's own page and v86 0.5.462 (npm devDependency, Debian's seabios/vgabios) side by side
# in one headless Chromium, interleaved, booting the benchmark guest; right after wasm86's page
# each repetition runs wasm86-native, `target/release/wasm86 bench --reps 1 --no-native` on the
# same kernel, initrd, command line and RAM (a child process, no browser), for the column
# wasm86/native: how much slower the browser build is than the same core built natively, judged
# per repetition on the pair (webdriver/README.md).
bench-web: setup site build
	scripts/bench-web-site.sh target/bench-site
	$(CARGO) run --release --manifest-path webdriver/Cargo.toml --bin bench_web -- \
		--root target/bench-site --reps $(REPS) --timeout $(BENCH_WEB_TIMEOUT) --out target/bench \
		--native-wasm86 target/release/wasm86 $(BENCH_WEB_ARGS)

bench-ab: build
	JS_FLAGS="$(JS_FLAGS)" scripts/bench-ab.sh "$(A)" "$(B)" $(WORKLOAD) $(ROUNDS)

bench-page: build
	JS_FLAGS="$(JS_FLAGS)" scripts/bench-page.sh "$(A)" "$(B)" $(WORKLOAD) $(ROUNDS) $(LOADS) $(FRAMES)

clean:
	$(CARGO) clean
	rm -rf pkg site pkg-npm
