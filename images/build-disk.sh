#!/bin/sh
# Builds the storage test images of wasm86 (no root, no loop mounts):
#   images/disk.img    4 MiB ext2 file system: busybox-static:i386 (the same binary as the
#                      initramfs; images/build.sh fetches it) with applet links, images/disk/
#                      (an inittab, /etc/init.d/rcS, /hello.txt ...) and a 1 MiB test pattern.
#                      Bootable as root (root=/dev/sda): /sbin/init is busybox init.
#   images/cdrom.iso   ISO 9660 (Rock Ridge + Joliet) of images/cdrom/
#   images/boot.iso    the bundled Linux (bzImage, initramfs.cpio.gz) on a CD that boots through
#                      the BIOS: El Torito, no emulation, ISOLINUX (Debian's isolinux package)
#   images/hdboot.img  the same on a partitioned 8 MiB hard disk: syslinux's MBR, one bootable
#                      FAT16 partition at 1 MiB with SYSLINUX and its menu (Debian's syslinux)
#   images/floppy.img  a 1.44 MB floppy that boots through the BIOS into GRUB 2 (Debian's
#                      grub-pc-bin): its menu starts Memtest86+ (Debian's memtest86+) after 5 s,
#                      or chainloads the first hard disk. GRUB's core image holds its
#                      configuration and Memtest86+ in a memdisk, right after GRUB's boot sector.
# and updates their lines in images/SHA256SUMS.
#
# Usage: images/build-disk.sh [all|disk|cdrom|boot|hdboot|floppy]   (default: all)
#
# Needs mke2fs (e2fsprogs), genisoimage, isolinux, syslinux (+ syslinux-common), mtools,
# dosfstools, and for the floppy grub-pc-bin and memtest86+. Reproducible: fixed UUIDs, hash seed and
# timestamps (SOURCE_DATE_EPOCH, default 1704067200 = 2024-01-01).
# Environment: WASM86_BUILD_DIR (default /work/build-images), where build.sh put busybox.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
W=${WASM86_BUILD_DIR:-/work/build-images}
BB=$W/busybox-static/bin/busybox
EPOCH=${SOURCE_DATE_EPOCH:-1704067200}
export LC_ALL=C
WHAT=${1:-all}
case "$WHAT" in all|disk|cdrom|boot|hdboot|floppy) ;; *) echo "usage: $0 [all|disk|cdrom|boot|hdboot|floppy]" >&2; exit 2;; esac
want() { [ "$WHAT" = all ] || [ "$WHAT" = "$1" ]; }
BUILT=
if want disk; then
[ -x "$BB" ] || { echo "missing $BB: run images/build.sh initramfs first" >&2; exit 1; }
command -v mke2fs >/dev/null || { echo "mke2fs missing: apt-get install e2fsprogs" >&2; exit 1; }
fi
command -v genisoimage >/dev/null || { echo "genisoimage missing: apt-get install genisoimage" >&2; exit 1; }
ISOLINUX=/usr/lib/ISOLINUX/isolinux.bin
LDLINUX=/usr/lib/syslinux/modules/bios/ldlinux.c32
[ -f "$ISOLINUX" ] && [ -f "$LDLINUX" ] || { echo "isolinux missing: apt-get install isolinux syslinux-common" >&2; exit 1; }
for t in syslinux mcopy mkfs.fat; do
	command -v $t >/dev/null || { echo "$t missing: apt-get install syslinux mtools dosfstools" >&2; exit 1; }
done

if want disk; then
S=$W/disk-staging
rm -rf "$S"
mkdir -p "$S"
cp -r "$HERE/disk/." "$S/"
mkdir -p "$S/bin" "$S/sbin" "$S/usr/bin" "$S/usr/sbin" "$S/dev" "$S/proc" "$S/sys" "$S/tmp" \
	"$S/mnt" "$S/root" "$S/data"
cp "$BB" "$S/bin/busybox"
# Applet links, from the list the binary itself prints (an i386 static binary runs on x86-64).
"$BB" --list-full | while read -r a; do
	[ "$a" = bin/busybox ] && continue
	mkdir -p "$S/$(dirname "$a")"
	ln -sf "/bin/busybox" "$S/$a"
done
# A deterministic 1 MiB pattern for checksum tests.
awk 'BEGIN { x = 12345; for (i = 0; i < 1048576; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "%c", int(x / 65536) % 256 } }' \
	>"$S/data/pattern.bin"
chmod 1777 "$S/tmp"
find "$S" -exec touch -h -d "@$EPOCH" {} +
rm -f "$HERE/disk.img"
E2FSPROGS_FAKE_TIME=$EPOCH mke2fs -q -t ext2 -b 1024 -L wasm86 \
	-U 7761736d-3836-4469-736b-000000000001 -E hash_seed=7761736d-3836-4469-736b-000000000002,root_owner=0:0 \
	-d "$S" "$HERE/disk.img" 4M
BUILT="$BUILT disk.img"
fi

if want cdrom; then
C=$W/cdrom-staging
rm -rf "$C"
cp -r "$HERE/cdrom" "$C"
find "$C" -exec touch -h -d "@$EPOCH" {} +
genisoimage -quiet -V WASM86CD -r -J -o "$HERE/cdrom.iso" "$C"
BUILT="$BUILT cdrom.iso"
fi

if want boot; then
B=$W/boot-staging
rm -rf "$B"
mkdir -p "$B/isolinux"
cp "$ISOLINUX" "$LDLINUX" "$HERE/bzImage" "$HERE/initramfs.cpio.gz" "$B/isolinux/"
cat >"$B/isolinux/isolinux.cfg" <<'CFG'
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL bzImage
  INITRD initramfs.cpio.gz
  APPEND console=ttyS0 console=tty0
CFG
find "$B" -exec touch -h -d "@$EPOCH" {} +
genisoimage -quiet -V WASM86BOOT -r -J -b isolinux/isolinux.bin -c isolinux/boot.cat \
	-no-emul-boot -boot-load-size 4 -boot-info-table -o "$HERE/boot.iso" "$B"
BUILT="$BUILT boot.iso"
fi

# genisoimage stamps the volume descriptor with the current time: pin it for reproducibility.
for iso in $BUILT; do
case "$iso" in *.iso) ;; *) continue;; esac
python3 - "$HERE/$iso" "$EPOCH" <<'PY'
import sys, time
path, epoch = sys.argv[1], int(sys.argv[2])
stamp = time.strftime("%Y%m%d%H%M%S00", time.gmtime(epoch)).encode() + b"\0"
with open(path, "r+b") as f:
    for sector in range(16, 32):
        f.seek(sector * 2048)
        d = f.read(2048)
        if d[1:6] != b"CD001":
            break
        if d[0] == 255:
            break
        for off in (813, 830, 847, 864):  # creation, modification, expiration, effective
            f.seek(sector * 2048 + off)
            f.write(stamp if off != 847 else b"0" * 16 + b"\0")
PY
done

# The hard disk: an MBR partition table by hand (one bootable FAT16 LBA partition from sector
# 2048 to the end), syslinux's MBR code, mkfs.fat and syslinux at the partition's offset, and
# the files copied in with mtools: no root, no loop mount.
if want hdboot; then
H=$W/hdboot
rm -rf "$H"
mkdir -p "$H"
rm -f "$HERE/hdboot.img"
truncate -s 8M "$HERE/hdboot.img"
python3 - "$HERE/hdboot.img" <<'PY'
import struct, sys
total = 8 * 1024 * 1024 // 512
with open(sys.argv[1], "r+b") as f:
    f.seek(446)
    f.write(bytes([0x80, 0xFE, 0xFF, 0xFF, 0x0E, 0xFE, 0xFF, 0xFF]) + struct.pack("<II", 2048, total - 2048))
    f.seek(510)
    f.write(b"\x55\xaa")
PY
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$HERE/hdboot.img" conv=notrunc bs=440 count=1 status=none
mkfs.fat -F 16 -s 1 -n WASM86HD -i 7761736d --invariant --offset 2048 "$HERE/hdboot.img" $(((8 * 2048 - 2048) / 2)) >/dev/null
syslinux --install --offset $((2048 * 512)) "$HERE/hdboot.img"
cat >"$H/syslinux.cfg" <<'CFG'
SERIAL 0 115200
UI menu.c32
PROMPT 0
TIMEOUT 50
MENU TITLE wasm86 hard disk (SYSLINUX)
DEFAULT linux
LABEL linux
  MENU LABEL Linux (the bundled kernel and initramfs)
  KERNEL /bzImage
  INITRD /initramfs.cpio.gz
  APPEND console=ttyS0 console=tty0 nomodeset
CFG
MTOOLS_SKIP_CHECK=1 mcopy -m -i "$HERE/hdboot.img@@1M" "$HERE/bzImage" "$HERE/initramfs.cpio.gz" "$H/syslinux.cfg" \
	/usr/lib/syslinux/modules/bios/menu.c32 /usr/lib/syslinux/modules/bios/libutil.c32 ::/
BUILT="$BUILT hdboot.img"
fi

# The floppy: GRUB's boot sector (boot.img), then its core image, which carries the
# configuration and Memtest86+ in a memdisk (a tar). boot.img reads the core from sector 1 on,
# as its defaults say, so no grub-install (and no root) is needed. Memtest86+ 6.10 needs GRUB's
# linux16 (SYSLINUX's loader leaves it hanging after "Loading", under QEMU too).
if want floppy; then
GRUB=/usr/lib/grub/i386-pc
MEMTEST=/boot/memtest86+ia32.bin
[ -f "$GRUB/boot.img" ] && command -v grub-mkimage >/dev/null || { echo "GRUB missing: apt-get install grub-pc-bin" >&2; exit 1; }
[ -f "$MEMTEST" ] || { echo "$MEMTEST missing: apt-get install memtest86+" >&2; exit 1; }
F=$W/floppy
rm -rf "$F"
mkdir -p "$F/memdisk/boot/grub"
cp "$MEMTEST" "$F/memdisk/memtest.bin"
cat >"$F/memdisk/boot/grub/grub.cfg" <<'CFG'
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=5
set default=0
menuentry "Memtest86+ 6.10" {
  linux16 (memdisk)/memtest.bin
}
menuentry "Boot the first hard disk" {
  set root=(hd0)
  chainloader +1
}
CFG
find "$F/memdisk" -exec touch -h -d "@$EPOCH" {} +
(cd "$F/memdisk" && tar --format=ustar --owner=0 --group=0 --numeric-owner --sort=name -cf "$F/memdisk.tar" boot memtest.bin)
grub-mkimage -O i386-pc -o "$F/core.img" -p '(memdisk)/boot/grub' -m "$F/memdisk.tar" \
	memdisk tar biosdisk part_msdos normal linux16 chain serial terminal echo configfile
cat "$GRUB/boot.img" "$F/core.img" >"$HERE/floppy.img"
truncate -s 1474560 "$HERE/floppy.img"
BUILT="$BUILT floppy.img"
fi

cd "$HERE"
for f in $BUILT; do
	grep -v "  $f\$" SHA256SUMS >SHA256SUMS.new || true
	sha256sum "$f" >>SHA256SUMS.new
	mv SHA256SUMS.new SHA256SUMS
done
ls -l $BUILT
