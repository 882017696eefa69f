#!/usr/bin/env bash
# Assemble the static site (contract 3) into site/ (or the directory given as $1):
#
#   site/                    www/ (index.html, course-notes.html, the JS front-end)
#   site/pkg/                wasm86.js + wasm86_bg.wasm (wasm-pack --target web output in pkg/)
#   site/vendor/xterm/       xterm.mjs, xterm.css, addon-fit.mjs, LICENSE (from node_modules)
#   site/images/             bzImage, initramfs.cpio.gz, disk.img, cdrom.iso, boot.iso, hdboot.img, floppy.img, firmware/
#                            (SeaBIOS, SeaVGABIOS, for ?fda=, ?hda=, ?cdrom= without kernel=), and linux.state:
#                            the bundled Linux saved at its shell prompt by the native build
#                            (target/release/wasm86), for ?state=images/linux.state
#
# The result is plain files: copy it to any static web server (one that honours Range requests,
# so that disks stream). Inputs are checked first, and a missing one is named with the command
# that makes it; site/ is replaced only when the new one is complete.
set -euo pipefail

cd "$(dirname "$0")/.."
out=${1:-site}

die() {
    printf 'site: error: %s\n' "$*" >&2
    exit 1
}

missing=()
for f in pkg/wasm86.js pkg/wasm86_bg.wasm; do
    [ -f "$f" ] || missing+=("$f")
done
[ ${#missing[@]} -eq 0 ] ||
    die "${missing[*]} missing: build the wasm package first with 'make wasm' (wasm-pack build --release --target web --out-dir pkg)"

xterm=node_modules/@xterm/xterm
fit=node_modules/@xterm/addon-fit
for f in "$xterm/lib/xterm.mjs" "$xterm/css/xterm.css" "$xterm/LICENSE" "$fit/lib/addon-fit.mjs"; do
    [ -f "$f" ] || die "$f missing: install the front-end dependencies first with 'npm ci'"
done

for f in bzImage initramfs.cpio.gz disk.img cdrom.iso boot.iso hdboot.img floppy.img firmware/bios-256k.bin firmware/vgabios-stdvga.bin; do
    [ -f "images/$f" ] || die "images/$f missing (see images/README.md: images/build.sh, images/build-disk.sh)"
done

[ -d www ] || die "www/ missing: run this from a wasm86 checkout"

wasm86=target/release/wasm86
[ -x "$wasm86" ] || die "$wasm86 missing: build it first with 'make build' (it saves images/linux.state)"

tmp="$out.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp/pkg" "$tmp/vendor/xterm" "$tmp/images/firmware"

cp -R www/. "$tmp/"
cp pkg/wasm86.js pkg/wasm86_bg.wasm "$tmp/pkg/"
cp "$xterm/lib/xterm.mjs" "$xterm/css/xterm.css" "$fit/lib/addon-fit.mjs" "$tmp/vendor/xterm/"
cp "$xterm/LICENSE" "$tmp/vendor/xterm/LICENSE"
for f in bzImage initramfs.cpio.gz disk.img cdrom.iso boot.iso hdboot.img floppy.img; do
    cp --reflink=auto "images/$f" "$tmp/images/"
done
# The firmware with its licence and provenance (LGPL-3.0, see images/firmware/README.md).
cp images/firmware/bios-256k.bin images/firmware/vgabios-stdvga.bin images/firmware/README.md \
    images/firmware/copyright "$tmp/images/firmware/"

# The bundled Linux at its shell prompt, with the page's default configuration (64 MiB, its
# command line), saved after the kernel's last boot message (its switch to the TSC clocksource,
# about a second after the prompt) so that nothing interrupts the first command typed. The run
# is deterministic: the same build and images give the same file.
if ! "$wasm86" --memory 64 --append "console=ttyS0 console=tty0 nomodeset" \
    --until $'Switched to clocksource tsc\r' --timeout 300 \
    --save-state "$tmp/images/linux.state" </dev/null >"$tmp/state.log" 2>&1; then
    tail -5 "$tmp/state.log" >&2
    die "saving the bundled Linux at its prompt failed (the log is above)"
fi
rm -f "$tmp/state.log"

rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "site: assembled $out/ ($(du -sh "$out" | cut -f1))"
