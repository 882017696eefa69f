//! Storage tests: the bundled Linux drives the PIIX3 IDE controller (ata_piix, built in) with a
//! disk (images/disk.img, ext2) and a CD-ROM (images/cdrom.iso, ISO 9660): mount, write, sync,
//! remount and read back; checksums through /dev/sda against the host's; DMA in use; the disk
//! as the root file system; the CLI's copy-on-write and --write-back on a copy of the image.
//!
//! Run with `cargo test --release --test storage`. Hang guards are instruction budgets.

mod common;

use common::{find, md5_hex};
use std::path::{Path, PathBuf};
use wasm86::block::MemBackend;
use wasm86::boot::linux;
use wasm86::dev::atapi::Cdrom;
use wasm86::dev::ide::{AtaDisk, Drive};
use wasm86::machine::{Machine, MachineConfig, Stop};

fn image(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("images")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    let p = image(name);
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "{} missing ({e}); images/build-disk.sh builds it",
            p.display()
        )
    })
}

struct Console {
    machine: Machine,
    out: Vec<u8>,
    scanned: usize,
}

impl Console {
    fn boot(machine: Machine) -> Console {
        Console {
            machine,
            out: Vec::new(),
            scanned: 0,
        }
    }

    fn pump(&mut self) -> Stop {
        let stop = self.machine.run(5_000_000);
        self.out.extend(self.machine.serial_output(0));
        while let Some(pos) = find(&self.out[self.scanned..], b"\x1b[6n") {
            self.scanned += pos + 4;
            for &b in b"\x1b[1;1R" {
                self.send(b);
            }
        }
        stop
    }

    /// Run until `text` appears after `from`; the position after it.
    fn wait_for(&mut self, text: &str, from: usize, budget: u64) -> usize {
        let start = self.machine.cpu.instructions;
        loop {
            let stop = self.pump();
            if let Some(pos) = find(&self.out[from.min(self.out.len())..], text.as_bytes()) {
                return from + pos + text.len();
            }
            if let Stop::Reset(cause) = stop {
                panic!("guest reset ({cause:?}) waiting for {text:?}");
            }
            if self.machine.cpu.instructions - start > budget {
                panic!(
                    "{text:?} did not appear within {budget} instructions; output:\n{}",
                    String::from_utf8_lossy(&self.out)
                );
            }
        }
    }

    fn send(&mut self, b: u8) {
        for _ in 0..1000 {
            if self.machine.serial_input(0, b) {
                return;
            }
            self.machine.run(10_000);
            self.out.extend(self.machine.serial_output(0));
        }
        panic!("the guest stopped reading COM1");
    }

    /// Type `cmd`, then wait for the line `marker` it prints (computed by the shell, so the
    /// echo of the typed command does not match); the output in between.
    fn run(&mut self, cmd: &str, n: u32) -> String {
        let from = self.out.len();
        for b in format!("{cmd}; echo END$(({n}*1000+7))\n").bytes() {
            self.send(b);
        }
        let end = self.wait_for(&format!("END{}", n * 1000 + 7), from, 3_000_000_000);
        String::from_utf8_lossy(&self.out[from..end]).into_owned()
    }
}

fn machine_with(disk: Option<Vec<u8>>, cd: Option<Vec<u8>>) -> Machine {
    let mut m = Machine::new(MachineConfig::default());
    if let Some(d) = disk {
        let d = AtaDisk::new(Box::new(MemBackend::new(d))).expect("disk image size");
        m.attach_drive(0, Drive::Ata(d));
    }
    if let Some(c) = cd {
        m.attach_drive(
            2,
            Drive::Atapi(Cdrom::with_disc(Box::new(MemBackend::new(c)))),
        );
    }
    m
}

#[test]
fn linux_reads_and_writes_the_disk_with_dma_and_mounts_the_cdrom() {
    let disk = read("disk.img");
    let iso = read("cdrom.iso");
    let kernel = read("bzImage");
    let initrd = read("initramfs.cpio.gz");
    let mut m = machine_with(Some(disk.clone()), Some(iso.clone()));
    linux::load(&mut m.cpu, &kernel, Some(&initrd), "console=ttyS0").unwrap();
    let mut con = Console::boot(m);
    con.wait_for("/ # ", 0, 5_000_000_000);

    // Checksums through the block device, before anything writes to the disk.
    let out = con.run("dd if=/dev/sda bs=4k count=256 2>/dev/null | md5sum", 1);
    let host = md5_hex(&disk[..1 << 20]);
    assert!(
        out.contains(&host),
        "guest md5 of /dev/sda differs from {host}:\n{out}"
    );
    let out = con.run("dd if=/dev/sda bs=4k 2>/dev/null | md5sum", 2);
    assert!(out.contains(&md5_hex(&disk)), "{out}");

    // Mount, write, sync, unmount, mount again, read back.
    let out = con.run(
        "mount /dev/sda /mnt && cat /mnt/hello.txt && echo payload-$((6*7)) > /mnt/new.txt \
         && head -c 262144 /mnt/data/pattern.bin > /mnt/copy.bin && df /mnt && sync && umount /mnt && echo UNMOUNTED",
        3,
    );
    assert!(
        out.contains("hello from the wasm86 disk") && out.contains("UNMOUNTED"),
        "{out}"
    );
    let out = con.run(
        "mount /dev/sda /mnt && cat /mnt/new.txt && head -c 262144 /mnt/data/pattern.bin | cmp - /mnt/copy.bin \
         && echo SAME; umount /mnt",
        4,
    );
    assert!(out.contains("payload-42") && out.contains("SAME"), "{out}");

    // Linux uses DMA: the transfer mode libata chose, and the controller's own count.
    let out = con.run("cat /sys/class/ata_device/dev1.0/xfer_mode", 5);
    assert!(out.contains("XFER_MW_DMA_2"), "{out}");
    let dma = con.machine.board().ide.borrow().dma_count();
    assert!(dma[0] > 10, "DMA transfers on the primary channel: {dma:?}");

    // The CD-ROM: ISO 9660, a file read back, read by DMA too.
    let out = con.run(
        "mkdir -p /cd && mount -t iso9660 /dev/sr0 /cd && cat /cd/readme.txt && umount /cd",
        6,
    );
    assert!(out.contains("hello from the wasm86 cd-rom"), "{out}");
    let out = con.run("dd if=/dev/sr0 bs=2048 2>/dev/null | md5sum", 7);
    assert!(out.contains(&md5_hex(&iso)), "{out}");

    // The guest's writes live in the overlay; the image bytes on disk are untouched.
    let ide = con.machine.board().ide.clone();
    let ide = ide.borrow();
    let Some(Drive::Ata(d)) = ide.drive(0) else {
        panic!("no disk")
    };
    assert!(d.overlay().dirty_count() > 0);
    drop(ide);
    assert!(read("disk.img") == disk, "the source image changed");
}

#[test]
fn linux_boots_with_the_disk_as_root() {
    let kernel = read("bzImage");
    let mut m = machine_with(Some(read("disk.img")), None);
    linux::load(&mut m.cpu, &kernel, None, "console=ttyS0 root=/dev/sda rw").unwrap();
    let mut con = Console::boot(m);
    let at = con.wait_for("wasm86 disk root is up", 0, 5_000_000_000);
    con.wait_for("/ # ", at, 2_000_000_000);
    let out = con.run("cat /hello.txt; grep ' / ' /proc/mounts", 1);
    assert!(out.contains("hello from the wasm86 disk"), "{out}");
    assert!(
        out.contains("/dev/root / ext2 rw") || out.contains("/dev/sda / ext"),
        "{out}"
    );
}

/// A private copy of the disk image for the CLI tests.
fn temp_disk(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasm86-storage-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("disk.img");
    std::fs::write(&p, read("disk.img")).unwrap();
    p
}

/// The bundled Linux with the disk attached: a kernel option, so that the disk is not booted
/// through the BIOS.
const APPEND: &str = "--append";
const CONSOLE: &str = "console=ttyS0";

/// Run the CLI; once the shell prompt is on its output, type `input`.
fn run_cli(args: &[&str], input: &str) -> (bool, String, String) {
    common::run_cli(args, "/ # ", || {}, input)
}

#[test]
fn cli_keeps_the_image_unchanged_unless_write_back_is_asked() {
    let p = temp_disk("cow");
    let ps = p.to_str().unwrap();
    let original = std::fs::read(&p).unwrap();
    let script = "mount /dev/sda /mnt && echo cli-$((3*5)) > /mnt/cli.txt && umount /mnt && echo DONE$((40+2))\n";
    let (ok, out, err) = run_cli(
        &[
            APPEND,
            CONSOLE,
            "--hda",
            ps,
            "--until",
            "DONE42",
            "--timeout",
            "600",
        ],
        script,
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        std::fs::read(&p).unwrap() == original,
        "image changed without --write-back"
    );

    let (ok, out, err) = run_cli(
        &[
            APPEND,
            CONSOLE,
            "--hda",
            ps,
            "--write-back",
            "--until",
            "DONE42",
            "--timeout",
            "600",
        ],
        script,
    );
    assert!(ok && err.contains("changed sectors back"), "{out}\n{err}");
    assert!(
        std::fs::read(&p).unwrap() != original,
        "--write-back wrote nothing"
    );
    // The written file is there at the next boot.
    let (ok, out, err) = run_cli(
        &[
            APPEND,
            CONSOLE,
            "--hda",
            ps,
            "--until",
            "cli-15",
            "--timeout",
            "600",
        ],
        "mount /dev/sda /mnt && cat /mnt/cli.txt\n",
    );
    assert!(ok, "{out}\n{err}");
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

#[test]
fn cli_rejects_missing_empty_and_odd_sized_images() {
    let dir = std::env::temp_dir().join(format!("wasm86-storage-{}-bad", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    let odd = dir.join("odd.img");
    std::fs::write(&odd, vec![0u8; 1000]).unwrap();
    for (args, needle) in [
        (
            vec!["--hda", "/nonexistent/disk.img"],
            "--hda /nonexistent/disk.img",
        ),
        (vec!["--hda", empty.to_str().unwrap()], "empty"),
        (
            vec!["--hda", odd.to_str().unwrap()],
            "not a multiple of 512",
        ),
        (vec!["--cdrom", empty.to_str().unwrap()], "--cdrom"),
    ] {
        let (ok, _, err) = run_cli(&args, "");
        assert!(!ok && err.contains(needle), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The CD-ROM path uses DMA as on a real PIIX3: libata picks multiword DMA 2 for the ATAPI
/// drive, and every READ(10) of file and device data moves by bus-master DMA (the controller's
/// counters: DMA transfers up, PIO read commands unchanged), with the right bytes.
#[test]
fn linux_reads_the_cdrom_by_dma() {
    let iso = read("cdrom.iso");
    let readme = std::fs::read(image("cdrom").join("readme.txt")).expect("images/cdrom/readme.txt");
    let kernel = read("bzImage");
    let initrd = read("initramfs.cpio.gz");
    let mut m = machine_with(None, Some(iso.clone()));
    linux::load(&mut m.cpu, &kernel, Some(&initrd), "console=ttyS0").unwrap();
    let mut con = Console::boot(m);
    con.wait_for("/ # ", 0, 5_000_000_000);

    // The transfer mode libata set on the secondary master (ata2.00).
    let out = con.run("cat /sys/class/ata_device/dev2.0/xfer_mode", 1);
    assert!(out.contains("XFER_MW_DMA_2"), "{out}");

    let counts = |con: &Console| {
        let ide = con.machine.board().ide.clone();
        let ide = ide.borrow();
        (ide.dma_count()[1], ide.pio_read_count()[1])
    };

    // A file through ISO 9660, from a cold cache.
    let (dma0, pio0) = counts(&con);
    let out = con.run(
        "echo 3 > /proc/sys/vm/drop_caches; mkdir -p /cd && mount -t iso9660 /dev/sr0 /cd \
         && md5sum /cd/readme.txt && umount /cd",
        2,
    );
    assert!(out.contains(&md5_hex(&readme)), "{out}");
    let (dma1, pio1) = counts(&con);
    assert!(
        dma1 > dma0,
        "no DMA for the mount and the file: {dma0} -> {dma1}"
    );
    assert_eq!(pio1, pio0, "CD reads went by PIO");

    // The whole disc through /dev/sr0.
    let out = con.run(
        "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/sr0 bs=2048 2>/dev/null | md5sum",
        3,
    );
    assert!(out.contains(&md5_hex(&iso)), "{out}");
    let (dma2, pio2) = counts(&con);
    // At most 64 KiB-128 KiB per command: a 364 KiB disc takes several transfers.
    assert!(
        dma2 - dma1 >= 3,
        "DMA transfers for the disc: {}",
        dma2 - dma1
    );
    assert_eq!(pio2, pio0, "CD reads went by PIO");
}
