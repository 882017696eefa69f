#!/usr/bin/env bash
# Assemble the root `make bench-web` serves, target/bench-site/ (or $1), from the built site/:
#
#   target/bench-site/                 a copy of site/ (hard links where possible)
#   target/bench-site/images/          + bench-initramfs.cpio.gz, when images/ has it
#   target/bench-site/bench/           v86.html and recorder.js (bench/ in the repository)
#   target/bench-site/bench/v86/       libv86.mjs, v86.wasm, v86-fallback.wasm, LICENSE
#                                      (npm v86@0.5.462, a devDependency: installed with npm ci)
#   target/bench-site/bench/firmware/  bios.bin (Debian's seabios), vgabios.bin (Debian's vgabios)
#
# v86 and its firmware are for the benchmark only and never enter site/. The firmware .debs are
# fetched with `apt-get download` into target/bench-cache/ and unpacked with dpkg -x, never
# installed; with no usable apt lists, a private apt state under target/bench-cache/ is updated.
set -euo pipefail

cd "$(dirname "$0")/.."
out=${1:-target/bench-site}
cache=target/bench-cache
V86_VERSION=0.5.462

say() { printf 'bench-web: %s\n' "$*"; }
die() { printf 'bench-web: error: %s\n' "$*" >&2; exit 1; }

[ -f site/index.html ] || die "site/ is not assembled: run 'make site' first"

# v86 from npm (devDependency), exactly the pinned version.
# The package says e.g. "0.5.462+g5f9a90f" (the build's commit after the +).
have=$(node -p "require('./node_modules/v86/package.json').version" 2>/dev/null || true)
if [ "${have%%+*}" != "$V86_VERSION" ]; then
    say "v86: have '${have:-none}', want $V86_VERSION: npm ci (with devDependencies)"
    command -v npm >/dev/null || die "npm not found: the benchmark needs Node.js and npm for v86"
    npm ci --include=dev --no-audit --no-fund
    have=$(node -p "require('./node_modules/v86/package.json').version")
    [ "${have%%+*}" = "$V86_VERSION" ] || die "npm ci installed v86 $have, not $V86_VERSION"
fi
v86=node_modules/v86/build
for f in libv86.mjs v86.wasm v86-fallback.wasm; do
    [ -f "$v86/$f" ] || die "$v86/$f missing from the v86 package"
done

# Firmware from Debian: download and unpack, never install.
bios=$cache/firmware/usr/share/seabios/bios.bin
vgabios=$cache/firmware/usr/share/vgabios/vgabios.bin
if [ ! -f "$bios" ] || [ ! -f "$vgabios" ]; then
    mkdir -p "$cache/debs"
    say "fetching seabios and vgabios with apt-get download into $cache/debs"
    if ! (cd "$cache/debs" && apt-get download seabios vgabios); then
        say "apt-get download failed with the system's package lists; updating a private apt state"
        w=$(pwd)/$cache/apt
        o=(-oDir::State::Lists="$w/lists" -oDir::Cache="$w/cache")
        mkdir -p "$w/lists/partial" "$w/cache/archives/partial"
        apt-get "${o[@]}" update || true
        (cd "$cache/debs" && apt-get "${o[@]}" download seabios vgabios) ||
            die "could not download Debian's seabios and vgabios packages"
    fi
    rm -rf "$cache/firmware"
    for deb in "$cache"/debs/seabios_*.deb "$cache"/debs/vgabios_*.deb; do
        dpkg -x "$deb" "$cache/firmware"
    done
    [ -f "$bios" ] && [ -f "$vgabios" ] || die "the firmware packages have no bios.bin / vgabios.bin"
fi

tmp="$out.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$(dirname "$out")"
# site.sh replaces site/ as a whole, never a file in place, so hard links are safe.
cp -al site "$tmp" 2>/dev/null || { rm -rf "$tmp"; cp -R site "$tmp"; }
if [ -f images/bench-initramfs.cpio.gz ]; then
    cp images/bench-initramfs.cpio.gz "$tmp/images/"
else
    say "images/bench-initramfs.cpio.gz is not there: the benchmark runs a stand-in on the bundled initramfs"
fi
mkdir -p "$tmp/bench/v86" "$tmp/bench/firmware"
cp bench/v86.html bench/recorder.js "$tmp/bench/"
cp "$v86/libv86.mjs" "$v86/v86.wasm" "$v86/v86-fallback.wasm" "$tmp/bench/v86/"
cp node_modules/v86/LICENSE "$tmp/bench/v86/" 2>/dev/null || true
cp "$bios" "$vgabios" "$tmp/bench/firmware/"

rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
say "assembled $out/ (v86 $V86_VERSION, $(ls "$cache"/debs/*.deb 2>/dev/null | xargs -n1 basename | tr '\n' ' '))"
