#!/bin/sh
# Rebuilds the bundled Linux guest of wasm86 from Debian 12 packages:
#   images/bzImage            i386 kernel from linux-source-6.1 (config: images/linux.config)
#   images/initramfs.cpio.gz  busybox-static:i386 + images/initramfs/ (gzip'd newc cpio)
#   images/bench-initramfs.cpio.gz  the same plus /bench: the benchmark guest (images/bench/:
#                             static i386 C programs built with i686-linux-gnu-gcc, and
#                             /bench/run, the workloads between serial markers)
#   images/linux.config.full  the complete kernel .config that was built
#   images/SHA256SUMS, images/SOURCES.md
#   images/firmware/          (step `firmware` only) SeaBIOS and SeaVGABIOS for BIOS boot, from
#                             Debian 12's seabios package, with images/firmware/README.md
#
# Usage: images/build.sh [kernel|initramfs|bench|all|firmware]     (default: all)
# Environment:
#   WASM86_BUILD_DIR  build trees (default /work/build-images; never inside the repository)
#   JOBS              make -j (default 2)
#   SOURCE_DATE_EPOCH timestamps in the kernel and the cpio (default: date of the
#                     linux-source-6.1 Debian changelog entry, so a rebuild is reproducible)
# Idempotent: run it again and it rebuilds incrementally into the same outputs.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
W=${WASM86_BUILD_DIR:-/work/build-images}
JOBS=${JOBS:-2}
WHAT=${1:-all}
case "$WHAT" in kernel|initramfs|bench|all|firmware) ;; *) echo "usage: $0 [kernel|initramfs|bench|all|firmware]" >&2; exit 2;; esac
mkdir -p "$W"
W=$(cd "$W" && pwd)
case "$W/" in "$HERE"/*|"$(dirname "$HERE")"/*) echo "build dir must be outside the repository" >&2; exit 2;; esac

log() { printf '\n=== %s\n' "$*"; }

# ---- firmware: Debian's SeaBIOS binaries, unmodified --------------------------------------
# Not built here: fetched with apt-get download (never installed) and unpacked; the version and
# SHA-256 of each file go into images/firmware/README.md, which this step writes.
if [ "$WHAT" = firmware ]; then
	SEABIOS_VER=${SEABIOS_VER:-1.16.2-1}
	t=$W/firmware
	rm -rf "$t"
	mkdir -p "$t"
	log "fetching seabios $SEABIOS_VER"
	(cd "$t" && apt-get download "seabios=$SEABIOS_VER")
	dpkg-deb -x "$t"/seabios_*.deb "$t/x"
	mkdir -p "$HERE/firmware"
	for f in bios-256k.bin vgabios-stdvga.bin; do cp "$t/x/usr/share/seabios/$f" "$HERE/firmware/$f"; done
	cp "$t/x/usr/share/doc/seabios/copyright" "$HERE/firmware/copyright"
	cd "$HERE/firmware"
	cat >README.md <<EOF
# Firmware for booting through the BIOS

Unmodified binaries from Debian 12's \`seabios\` package, version $SEABIOS_VER (fetched by
\`images/build.sh firmware\` with \`apt-get download\`):

- \`bios-256k.bin\`: SeaBIOS, the system BIOS (QEMU's i440FX build, 256 KiB).
- \`vgabios-stdvga.bin\`: SeaVGABIOS for the Bochs/QEMU standard VGA (PCI 1234:1111), the
  display's option ROM.

Licence: LGPL-3.0 (SeaBIOS and SeaVGABIOS; see \`copyright\`, Debian's copyright file from the
same package). The complete corresponding source is the Debian source package of the same
version: \`apt-get source seabios=$SEABIOS_VER\`, or https://sources.debian.org/src/seabios/.

SHA-256:

\`\`\`
$(sha256sum bios-256k.bin vgabios-stdvga.bin)
\`\`\`
EOF
	log "images/firmware: $(sha256sum bios-256k.bin vgabios-stdvga.bin | tr '\n' ' ')"
	exit 0
fi

# ---- host packages ----------------------------------------------------------------------
PKGS="build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils gzip kmod dpkg-dev linux-source-6.1 gcc-i686-linux-gnu"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	log "installing host packages:$missing"
	SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y $missing
fi

KPKG_VER=$(dpkg-query -W -f='${Version}' linux-source-6.1)
KSRC_VER=$(dpkg-query -W -f='${source:Version}' linux-source-6.1)
KTAR=/usr/src/linux-source-6.1.tar.xz
# A step that does not rebuild the kernel keeps the kernel's record (versions, epoch) in
# SOURCES.md: the installed linux-source-6.1 may be newer than the one bzImage was built from.
REC=$HERE/SOURCES.md
if [ "$WHAT" != kernel ] && [ "$WHAT" != all ] && [ -f "$REC" ]; then
	v=$(sed -n 's/^- linux-source-6.1 \([^ ]*\), from source package linux \(.*\)$/\1 \2/p' "$REC")
	if [ -n "$v" ]; then KPKG_VER=${v% *}; KSRC_VER=${v#* }; fi
	[ -n "${SOURCE_DATE_EPOCH:-}" ] || SOURCE_DATE_EPOCH=$(sed -n 's/^SOURCE_DATE_EPOCH=//p' "$REC")
fi
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	d=$(zcat /usr/share/doc/linux-source-6.1/changelog.Debian.gz | sed -n 's/^ -- .*>  //p' | head -n 1)
	SOURCE_DATE_EPOCH=$(date -d "$d" +%s)
fi
export SOURCE_DATE_EPOCH
export LC_ALL=C

# ---- kernel -----------------------------------------------------------------------------
KSRC=$W/linux-source-6.1
build_kernel() {
	if [ "$(cat "$KSRC/.wasm86-source-version" 2>/dev/null)" != "$KPKG_VER" ]; then
		log "unpacking linux-source-6.1 $KPKG_VER into $KSRC"
		rm -rf "$KSRC"
		tar -C "$W" -xf "$KTAR"
		echo "$KPKG_VER" >"$KSRC/.wasm86-source-version"
	fi
	cd "$KSRC"
	log "configuring: tinyconfig + images/linux.config"
	make ARCH=i386 tinyconfig >/dev/null
	# Apply the fragment with scripts/config, one command per line (echoed to the log).
	grep -E '^(CONFIG_|# CONFIG_.* is not set)' "$HERE/linux.config" | while IFS= read -r line; do
		case "$line" in
		"# CONFIG_"*) sym=${line#\# CONFIG_}; sym=${sym% is not set}; set -- --disable "$sym";;
		*=y) sym=${line%%=*}; sym=${sym#CONFIG_}; set -- --enable "$sym";;
		*=\"*) sym=${line%%=*}; sym=${sym#CONFIG_}; val=${line#*=\"}; val=${val%\"}; set -- --set-str "$sym" "$val";;
		*) sym=${line%%=*}; sym=${sym#CONFIG_}; set -- --set-val "$sym" "${line#*=}";;
		esac
		echo "scripts/config $*"
		scripts/config --file .config "$@"
	done
	make ARCH=i386 olddefconfig >/dev/null
	# Every line of the fragment must have survived olddefconfig.
	bad=0
	grep -E '^(CONFIG_|# CONFIG_.* is not set)' "$HERE/linux.config" | while IFS= read -r line; do
		case "$line" in
		"# CONFIG_"*) sym=${line#\# }; sym=${sym% is not set}
			if grep -q "^$sym=" .config; then echo "config: wanted '$line', got: $(grep "^$sym=" .config)"; exit 1; fi;;
		*) grep -qxF "$line" .config || { echo "config: wanted '$line', got: $(grep -E "^(# )?${line%%=*}[= ]" .config || echo absent)"; exit 1; };;
		esac
	done || bad=1
	[ "$bad" = 0 ] || { echo "kernel config fragment not honoured (see above)" >&2; exit 1; }

	log "building bzImage (make -j$JOBS, nice 10)"
	KBUILD_BUILD_TIMESTAMP=$(date -u -d "@$SOURCE_DATE_EPOCH" '+%Y-%m-%d %H:%M:%S UTC')
	export KBUILD_BUILD_TIMESTAMP KBUILD_BUILD_USER=wasm86 KBUILD_BUILD_HOST=debian KBUILD_BUILD_VERSION=1
	nice -n 10 make ARCH=i386 -j"$JOBS" bzImage
	cp arch/x86/boot/bzImage "$HERE/bzImage"
	cp .config "$HERE/linux.config.full"
	cd "$HERE"
}

# ---- busybox-static:i386 from Debian, with a private apt state ----------------------------
APT=$W/apt-i386
fetch_busybox() {
	o="-oAPT::Architecture=i386 -oAPT::Architectures=i386 -oDir::State::Lists=$APT/lists -oDir::Cache=$APT/cache"
	mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/debs"
	log "fetching busybox-static:i386"
	# shellcheck disable=SC2086
	apt-get $o update || true   # a failing secondary index is harmless
	rm -f "$APT/debs"/busybox-static_*.deb
	# shellcheck disable=SC2086
	(cd "$APT/debs" && apt-get $o download busybox-static)
	BB_DEB=$(ls "$APT/debs"/busybox-static_*_i386.deb)
	BB_VER=$(dpkg-deb -f "$BB_DEB" Version)
	# binNMUs (+bN) have no source of their own: the Source field names the source version
	BB_SRC_VER=$(dpkg-deb -f "$BB_DEB" Source | sed -n 's/^busybox (\(.*\))$/\1/p')
	[ -n "$BB_SRC_VER" ] || BB_SRC_VER=$BB_VER
	rm -rf "$W/busybox-static"
	dpkg -x "$BB_DEB" "$W/busybox-static"
}

# ---- initramfs ----------------------------------------------------------------------------
gen_init_cpio() {
	[ -x "$W/gen_init_cpio" ] && return 0
	cc -O2 -o "$W/gen_init_cpio" "$KSRC/usr/gen_init_cpio.c" 2>/dev/null || {
		# the kernel tree may not be unpacked when only the initramfs is built
		mkdir -p "$W/gic" && tar -C "$W/gic" -xf "$KTAR" linux-source-6.1/usr/gen_init_cpio.c
		cc -O2 -o "$W/gen_init_cpio" "$W/gic/linux-source-6.1/usr/gen_init_cpio.c"
	}
}

# Stage busybox + images/initramfs/ in $S and write the gen_init_cpio list of it to $L.
stage_initramfs() {
	S=$1 L=$2
	rm -rf "$S"; mkdir -p "$S"
	cp "$W/busybox-static/bin/busybox" "$S/busybox"
	cp -r "$HERE/initramfs/." "$S/"
	find "$S" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	{
		for d in bin dev etc mnt proc root run sbin sys tmp usr usr/bin usr/sbin var; do
			echo "dir /$d 0755 0 0"
		done
		echo "nod /dev/console 0600 0 0 c 5 1"
		echo "nod /dev/null 0666 0 0 c 1 3"
		echo "file /bin/busybox $S/busybox 0755 0 0"
		echo "slink /bin/sh busybox 0777 0 0"
		echo "slink /sbin/init ../bin/busybox 0777 0 0"
		echo "file /init $S/init 0755 0 0"
		(cd "$S/etc" && find . -type f | sort) | while read -r f; do
			f=${f#./}; echo "file /etc/$f $S/etc/$f 0644 0 0"
		done
	} >"$L"
}

build_initramfs() {
	fetch_busybox
	log "building initramfs.cpio.gz (busybox-static $BB_VER)"
	gen_init_cpio
	stage_initramfs "$W/initramfs-staging" "$W/initramfs.list"
	"$W/gen_init_cpio" -t "$SOURCE_DATE_EPOCH" "$W/initramfs.list" | gzip -9 -n >"$HERE/initramfs.cpio.gz"
}

# ---- benchmark initramfs --------------------------------------------------------------------
# The bundled initramfs plus /bench: static i386 programs from images/bench/*.c and the
# /bench/run script. Before packing, the whole benchmark runs natively on this host (static
# i386 binaries run on x86-64 through the kernel's IA32 emulation) and must print no error:
# that checks the expected results written in images/bench/run.
BENCH_PROGS="isprime gen true"
build_bench() {
	[ -x "$W/busybox-static/bin/busybox" ] && [ -n "${BB_VER:-}" ] || fetch_busybox
	log "building bench-initramfs.cpio.gz"
	gen_init_cpio
	S=$W/bench-staging
	stage_initramfs "$S" "$W/bench-initramfs.list"
	mkdir -p "$S/bench"
	for p in $BENCH_PROGS; do
		i686-linux-gnu-gcc -O2 -static -s -o "$S/bench/$p" "$HERE/bench/$p.c"
	done
	cp "$HERE/bench/run" "$S/bench/run"
	find "$S/bench" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	log "checking the benchmark natively on this host"
	t=$W/bench-tmp
	for size in small full; do
		rm -rf "$t"; mkdir -p "$t"
		out=$(BENCH_DIR="$S/bench" BENCH_TMP="$t" BENCH_BUSYBOX="$S/busybox" "$S/busybox" sh "$S/bench/run" "$size") || {
			printf '%s\n' "$out"; echo "the benchmark failed natively ($size)" >&2; exit 1; }
		printf '%s\n' "$out"
		case "$out" in *"WASM86-BENCH error"*|"") exit 1;; esac
		case "$out" in *"WASM86-BENCH done"*) ;; *) echo "no 'WASM86-BENCH done' ($size)" >&2; exit 1;; esac
	done
	rm -rf "$t"
	{
		echo "dir /bench 0755 0 0"
		for p in $BENCH_PROGS run; do echo "file /bench/$p $S/bench/$p 0755 0 0"; done
	} >>"$W/bench-initramfs.list"
	"$W/gen_init_cpio" -t "$SOURCE_DATE_EPOCH" "$W/bench-initramfs.list" | gzip -9 -n >"$HERE/bench-initramfs.cpio.gz"
}

case "$WHAT" in
kernel) build_kernel ;;
initramfs) build_initramfs ;;
bench) build_bench ;;
all) build_kernel; build_initramfs; build_bench ;;
esac

# ---- checksums and source record -------------------------------------------------------------
if [ -z "${BB_VER:-}" ] && [ -f "$HERE/SOURCES.md" ]; then
	BB_VER=$(sed -n 's/^- busybox-static:i386 \([^ ]*\), from source package busybox \(.*\)$/\1/p' "$HERE/SOURCES.md")
	BB_SRC_VER=$(sed -n 's/^- busybox-static:i386 \([^ ]*\), from source package busybox \(.*\)$/\2/p' "$HERE/SOURCES.md")
fi
cd "$HERE"
sums=""
for f in bzImage initramfs.cpio.gz bench-initramfs.cpio.gz; do if [ -f "$f" ]; then sums="$sums $f"; fi; done
# Keep the lines of other images (disk.img, cdrom.iso: images/build-disk.sh).
grep -v -E '  (bzImage|initramfs\.cpio\.gz|bench-initramfs\.cpio\.gz)$' SHA256SUMS >SHA256SUMS.other 2>/dev/null || true
# shellcheck disable=SC2086
sha256sum $sums >SHA256SUMS
cat SHA256SUMS.other >>SHA256SUMS
rm -f SHA256SUMS.other
# The benchmark programs' compiler and static C library (recorded when they were built).
if [ "$WHAT" = bench ] || [ "$WHAT" = all ]; then
	XGCC_VER=$(dpkg-query -W -f='${Version}' gcc-12-i686-linux-gnu)
	XLIBC_VER=$(dpkg-query -W -f='${Version}' libc6-dev-i386-cross)
	XLIBC_SRC=$(dpkg-query -W -f='${source:Package} ${source:Version}' libc6-dev-i386-cross)
elif [ -f SOURCES.md ]; then
	XGCC_VER=$(sed -n 's/^- gcc-12-i686-linux-gnu \(.*\)$/\1/p' SOURCES.md)
	XLIBC_VER=$(sed -n 's/^- libc6-dev-i386-cross \([^ ]*\), from source package \(.*\)$/\1/p' SOURCES.md)
	XLIBC_SRC=$(sed -n 's/^- libc6-dev-i386-cross \([^ ]*\), from source package \(.*\)$/\2/p' SOURCES.md)
fi
GCC_VER=$(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion)
cat >SOURCES.md <<EOF
# Sources of the bundled Linux

Both binaries are built by \`images/build.sh\` from Debian 12 (bookworm) packages, unmodified.
Their complete corresponding source code (GPL-2.0) is the Debian source package of the same
version, e.g. \`apt-get source linux=$KSRC_VER\` and \`apt-get source busybox=${BB_SRC_VER:-?}\`,
or from https://snapshot.debian.org/ and https://sources.debian.org/.

- linux-source-6.1 $KPKG_VER, from source package linux $KSRC_VER
- busybox-static:i386 ${BB_VER:-?}, from source package busybox ${BB_SRC_VER:-?}

Kernel: \`make ARCH=i386 tinyconfig\`, then \`images/linux.config\` applied with
\`scripts/config\` (full result: \`images/linux.config.full\`), built with Debian's gcc $GCC_VER.
The initramfs adds only the files under \`images/initramfs/\` (this repository) to busybox.

The benchmark initramfs (\`bench-initramfs.cpio.gz\`) is the initramfs plus \`/bench\`: the
script \`images/bench/run\` and static i386 programs compiled from \`images/bench/*.c\` (this
repository) by \`i686-linux-gnu-gcc -O2 -static -s\`. They contain Debian's static glibc
(LGPL-2.1; source: the glibc source package that the cross-toolchain source package carries,
\`apt-get source $(echo "${XLIBC_SRC:-cross-toolchain-base}" | tr ' ' =)\`):

- gcc-12-i686-linux-gnu ${XGCC_VER:-?}
- libc6-dev-i386-cross ${XLIBC_VER:-?}, from source package ${XLIBC_SRC:-?}

SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH
EOF
log "done"
ls -l bzImage initramfs.cpio.gz bench-initramfs.cpio.gz 2>/dev/null || true
cat SHA256SUMS
