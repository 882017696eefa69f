#!/usr/bin/env bash
# Install everything `make test`, `make run` and `make wasm` need, skipping what is already
# present at the right version. Safe to run again and again; prints how long each install took.
#
# What is installed (see TOOLING.md for why each version):
#   rustup target wasm32-unknown-unknown, rustfmt, clippy
#   wasm-pack 0.15.1            (cargo install --locked)
#   wasm-bindgen-cli 0.2.130    (cargo install, NOT --locked: the registry lacks one locked dep;
#                                must equal the wasm-bindgen pinned in Cargo.toml)
#   chromium + chromium-driver  (apt, only if /usr/bin/chromium or /usr/bin/chromedriver is missing)
#   nasm                        (apt, only if missing: tests/guest_programs.rs assembles guest code)
#   gcc-i686-linux-gnu          (apt, only if missing: tests/differential.rs builds a static i386
#                                helper that runs random code on the host CPU)
#   g++                         (apt, only if missing: fuzz/ builds libFuzzer's C++ runtime)
#   node_modules                (npm ci --omit=dev from package-lock.json: xterm.js for the page;
#                                v86, a dev dependency, is installed by `make bench-web` only)
set -euo pipefail

WASM_PACK_VERSION=0.15.1
WASM_BINDGEN_VERSION=0.2.130

export PATH="$HOME/.cargo/bin:$PATH"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Run a named install step and report its duration.
step() {
    local name=$1
    shift
    say "installing $name ..."
    local t0=$SECONDS
    "$@"
    say "installed $name in $((SECONDS - t0)) s"
}

command -v cargo >/dev/null || die "cargo not found: install Rust with rustup first (https://rustup.rs)"
command -v rustup >/dev/null || die "rustup not found: the wasm32 target is installed with rustup"

# Rust target and components.
if rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "wasm32-unknown-unknown target: present"
else
    step "wasm32-unknown-unknown target" rustup target add wasm32-unknown-unknown
fi
for comp in rustfmt clippy; do
    sub=$([ "$comp" = rustfmt ] && echo fmt || echo clippy)
    if cargo "$sub" --version >/dev/null 2>&1; then
        say "$comp: present"
    else
        step "$comp" rustup component add "$comp"
    fi
done

# wasm-pack.
have_wasm_pack=$(wasm-pack --version 2>/dev/null || true)
if [ "$have_wasm_pack" = "wasm-pack $WASM_PACK_VERSION" ]; then
    say "wasm-pack $WASM_PACK_VERSION: present"
else
    say "wasm-pack: have '${have_wasm_pack:-none}', want $WASM_PACK_VERSION"
    step "wasm-pack $WASM_PACK_VERSION" cargo install --locked "wasm-pack@$WASM_PACK_VERSION"
fi

# wasm-bindgen CLI (wasm-bindgen and wasm-bindgen-test-runner come from the same crate).
have_bindgen=$(wasm-bindgen --version 2>/dev/null || true)
have_runner=$(wasm-bindgen-test-runner --version 2>/dev/null || true)
if [ "${have_bindgen%% (*}" = "wasm-bindgen $WASM_BINDGEN_VERSION" ] \
    && [ "${have_runner%% (*}" = "wasm-bindgen-test-runner $WASM_BINDGEN_VERSION" ]; then
    say "wasm-bindgen-cli $WASM_BINDGEN_VERSION: present"
else
    say "wasm-bindgen: have '${have_bindgen:-none}', want $WASM_BINDGEN_VERSION"
    step "wasm-bindgen-cli $WASM_BINDGEN_VERSION" \
        cargo install --force "wasm-bindgen-cli@$WASM_BINDGEN_VERSION"
fi

# Debian packages, as root or through sudo (one `apt-get update` per run at most).
APT_UPDATED=0
apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "need root or sudo to apt-get install $*"
        sudo=(sudo)
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        "${sudo[@]}" apt-get update
        APT_UPDATED=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

# Chromium and its WebDriver, for the browser tests.
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    say "chromium and chromedriver: present"
else
    step "chromium chromium-driver" apt_install chromium chromium-driver
fi

# nasm, for the guest-program tests (tests/guest/*.asm).
if command -v nasm >/dev/null; then
    say "nasm: present"
else
    step "nasm" apt_install nasm
fi

# The i686 cross compiler, for the differential test's static i386 helper
# (tests/differential.rs builds tests/host/diff_helper.c with it).
if command -v i686-linux-gnu-gcc >/dev/null; then
    say "i686-linux-gnu-gcc: present"
else
    step "gcc-i686-linux-gnu" apt_install gcc-i686-linux-gnu
fi

# A C++ compiler: libfuzzer-sys compiles libFuzzer for the fuzz targets (fuzz/run.sh).
if command -v g++ >/dev/null || command -v c++ >/dev/null; then
    say "g++: present"
else
    step "g++" apt_install g++
fi

# The page's JavaScript dependencies (xterm.js), exactly as package-lock.json records them.
if [ -f package-lock.json ]; then
    command -v npm >/dev/null || die "npm not found: the page needs Node.js and npm for xterm.js"
    # npm writes node_modules/.package-lock.json on every install: newer than the lock = done.
    if [ node_modules/.package-lock.json -nt package-lock.json ]; then
        say "node_modules: present"
    else
        step "node_modules (npm ci)" npm ci --omit=dev --no-audit --no-fund
    fi
fi

say "all tools present"
