//! Saved states: a machine saved at any point and restored in a fresh one runs on exactly as
//! the original does (same instructions retired, same serial bytes, same RAM and screen, text
//! or graphics), with the bundled Linux busy booting (into the Bochs VBE framebuffer), at its
//! prompt, and reading its disk by DMA; and bad state
//! files and wrong disks are refused with the error that names the problem.
//!
//! Run with `cargo test --release --test snapshot`. Guards are instruction budgets.

mod common;

use common::find;
use std::path::{Path, PathBuf};
use wasm86::block::{BlockBackend, MemBackend};
use wasm86::boot::linux;
use wasm86::dev::ide::{AtaDisk, Drive};
use wasm86::dev::vga::DisplayMode;
use wasm86::machine::{Machine, MachineConfig, TimeMode};
use wasm86::state::StateError;

fn image(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("images")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(image(name)).unwrap_or_else(|e| panic!("images/{name}: {e}"))
}

/// A machine booting the bundled Linux (with `disk` as the first IDE disk, if given).
fn booting(disk: Option<&[u8]>, append: &str) -> Machine {
    let mut m = Machine::new(MachineConfig::default());
    if let Some(d) = disk {
        let drive = AtaDisk::new(Box::new(MemBackend::new(d.to_vec()))).unwrap();
        m.attach_drive(0, Drive::Ata(drive));
        m.set_disk_name(0, "disk.img");
    }
    linux::load(
        &mut m.cpu,
        &read("bzImage"),
        Some(&read("initramfs.cpio.gz")),
        append,
    )
    .unwrap();
    m
}

/// What the host does to a machine, slice by slice: answers the terminal's cursor queries and
/// types `command` once the shell prompt shows, paced as the UART takes bytes. Everything it
/// does depends only on what the machine printed, so two machines in the same state driven by
/// two drivers in the same state see the same inputs at the same instructions.
#[derive(Clone, Default)]
struct Driver {
    out: Vec<u8>,
    scanned: usize,
    typed: bool,
    pending: Vec<u8>,
}

impl Driver {
    fn slice(&mut self, m: &mut Machine, command: &str) {
        m.run(200_000);
        self.out.extend(m.serial_output(0));
        while let Some(pos) = find(&self.out[self.scanned..], b"\x1b[6n") {
            self.scanned += pos + 4;
            self.pending.extend(b"\x1b[1;1R");
        }
        if !self.typed && find(&self.out, b"/ # ").is_some() {
            self.typed = true;
            self.pending.extend(command.bytes());
        }
        while !self.pending.is_empty() && m.serial_input(0, self.pending[0]) {
            self.pending.remove(0);
        }
    }

    /// Run until `end` instructions have retired.
    fn run_to(&mut self, m: &mut Machine, end: u64, command: &str) {
        while m.cpu.instructions < end {
            self.slice(m, command);
        }
    }
}

/// What two runs must agree on.
fn fingerprint(m: &Machine, d: &Driver) -> (u64, Vec<u8>, u64, Vec<String>, u64) {
    let hash = |bytes: &[u8]| {
        bytes.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
        })
    };
    let vga = m.board().vga.clone();
    let mut vga = vga.borrow_mut();
    vga.render();
    let frame = hash(vga.framebuffer());
    (
        m.cpu.instructions,
        d.out.clone(),
        hash(&m.cpu.mem.ram),
        vga.screen_text(),
        frame,
    )
}

/// Whether the display shows a graphics mode (Linux's Bochs framebuffer console).
fn in_graphics_mode(m: &Machine) -> bool {
    let mode = m.board().vga.borrow().display_mode();
    !matches!(mode, DisplayMode::Text | DisplayMode::Blank)
}

#[test]
fn a_machine_restored_mid_boot_runs_on_exactly_as_the_saved_one() {
    const COMMAND: &str = "echo $((6*7)) > /dev/ttyS0; echo snap-$((40+2))\n";
    let mut a = booting(None, "console=ttyS0");
    let mut da = Driver::default();
    // Mid-boot: the kernel is busy (decompressing, initialising devices, timers firing).
    da.run_to(&mut a, 60_000_000, COMMAND);
    let state = a.save_state();
    let mut b = Machine::restore_state(&state, TimeMode::Deterministic, vec![]).unwrap();
    let mut db = da.clone();
    let end = 420_000_000;
    da.run_to(&mut a, end, COMMAND);
    db.run_to(&mut b, end, COMMAND);
    assert!(
        find(&da.out, b"snap-42").is_some(),
        "the command ran: {}",
        String::from_utf8_lossy(&da.out)
    );
    assert!(
        fingerprint(&a, &da) == fingerprint(&b, &db),
        "the runs differ"
    );
    // A saved state of bundled Linux is small: zero pages cost nothing.
    assert!(state.len() < 16 << 20, "{} bytes", state.len());
}

#[test]
fn a_machine_saved_at_its_prompt_answers_a_command_after_restore_and_saves_the_same_again() {
    let mut a = booting(None, "console=ttyS0");
    let mut da = Driver::default();
    while find(&da.out, b"/ # ").is_none() {
        da.slice(&mut a, "");
        assert!(a.cpu.instructions < 1_000_000_000, "no prompt");
    }
    let state = a.save_state();
    let mut b = Machine::restore_state(&state, TimeMode::Deterministic, vec![]).unwrap();
    // The display was in a graphics mode (the framebuffer console): the restored one shows the
    // same frame.
    assert!(
        in_graphics_mode(&a),
        "the display is not in a graphics mode"
    );
    let frame = |m: &Machine| {
        let vga = m.board().vga.clone();
        let mut vga = vga.borrow_mut();
        vga.render();
        (vga.width(), vga.height(), vga.framebuffer().to_vec())
    };
    assert!(frame(&a) == frame(&b), "the restored frame differs");
    // Restoring and saving again gives the very same file.
    assert!(
        b.save_state() == state,
        "a restored machine saves what it was restored from"
    );
    let mut db = Driver {
        typed: true,
        ..Default::default()
    };
    db.pending.extend(b"echo restored-$((6*7))\n");
    let start = b.cpu.instructions;
    while find(&db.out, b"restored-42").is_none() {
        db.slice(&mut b, "");
        assert!(
            b.cpu.instructions - start < 300_000_000,
            "no answer: {}",
            String::from_utf8_lossy(&db.out)
        );
    }
}

#[test]
fn a_machine_saved_while_its_disk_is_read_by_dma_restores_with_the_same_image() {
    let disk = read("disk.img");
    const COMMAND: &str = "md5sum /dev/sda | sed 's/ .*/ =sum/'\n";
    let mut a = booting(Some(&disk), "console=ttyS0");
    let mut da = Driver::default();
    // Run to the prompt and into the md5sum, then on until a slice ends in the middle of a
    // DMA transfer: transfers went on in the slice, and the last one is not finished for the
    // guest yet (a command in progress, or its completion interrupt not yet taken).
    let mut saved = None;
    let mut transfers = 0;
    while saved.is_none() {
        da.slice(&mut a, COMMAND);
        assert!(a.cpu.instructions < 2_000_000_000, "no DMA seen");
        let (count, busy) = {
            let ide = a.board().ide.clone();
            let ide = ide.borrow();
            (ide.dma_count()[0], ide.dma_ready() || ide.busy(0))
        };
        let irq = a.board().irq.get(14);
        if da.typed && count > transfers && transfers >= 16 && (busy || irq) {
            saved = Some((a.save_state(), da.clone()));
        }
        transfers = count;
    }
    let (state, mut db) = saved.unwrap();
    let image: Box<dyn BlockBackend> = Box::new(MemBackend::new(disk.clone()));
    let mut b = Machine::restore_state(&state, TimeMode::Deterministic, vec![(0, image)]).unwrap();
    let end = a.cpu.instructions + 400_000_000;
    da.run_to(&mut a, end, COMMAND);
    db.run_to(&mut b, end, COMMAND);
    assert!(
        find(&da.out, b" =sum").is_some(),
        "md5sum finished: {}",
        String::from_utf8_lossy(&da.out)
    );
    assert!(
        fingerprint(&a, &da) == fingerprint(&b, &db),
        "the runs differ"
    );

    // The image is checked: another image of the same size, a missing one, an extra one.
    let mut other = disk.clone();
    other[10] ^= 1;
    let e = Machine::restore_state(
        &state,
        TimeMode::Deterministic,
        vec![(0, Box::new(MemBackend::new(other)))],
    )
    .err()
    .unwrap();
    assert!(matches!(e, StateError::DiskMismatch { .. }), "{e}");
    assert!(e.to_string().contains("disk.img"), "{e}");
    let e = Machine::restore_state(&state, TimeMode::Deterministic, vec![])
        .err()
        .unwrap();
    assert!(
        matches!(e, StateError::DiskMissing(ref d) if d.slot == 0),
        "{e}"
    );
    let e = Machine::restore_state(
        &state,
        TimeMode::Deterministic,
        vec![
            (0, Box::new(MemBackend::new(disk.clone()))),
            (3, Box::new(MemBackend::new(vec![0; 512]))),
        ],
    )
    .err()
    .unwrap();
    assert_eq!(e, StateError::DiskUnexpected(3));
}

#[test]
fn bad_state_files_are_refused_with_what_is_wrong() {
    let mut m = booting(None, "console=ttyS0");
    m.run(2_000_000);
    let good = m.save_state();
    let restore = |f: &[u8]| Machine::restore_state(f, TimeMode::Deterministic, vec![]).err();
    assert_eq!(
        restore(&good[..good.len() / 2]),
        Some(StateError::Truncated("inside a section"))
    );
    let mut flipped = good.clone();
    flipped[good.len() / 3] ^= 0x04;
    assert_eq!(restore(&flipped), Some(StateError::Checksum));
    let mut newer = good.clone();
    newer[8] = 0xFF;
    assert!(matches!(
        restore(&newer),
        Some(StateError::NewerVersion { .. })
    ));
    assert_eq!(restore(&read("bzImage")), Some(StateError::NotAState));
    assert!(restore(&good).is_none());
}

#[path = "programs/ticker.rs"]
mod ticker;

/// The ticker program saved at `ticker::SAVE_AT`, as natively saved and checked in: the
/// browser tests (tests/web.rs) save the same machine in Chromium and compare with it, and
/// restore it there.
const TICKER_STATE: &str = "tests/data/ticker.state";

#[test]
fn a_state_is_the_same_file_on_every_platform_and_restores_from_the_checked_in_one() {
    let mut a = ticker::machine();
    let before = ticker::run_to(&mut a, ticker::SAVE_AT);
    let state = a.save_state();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(TICKER_STATE);
    if std::env::var_os("WASM86_BLESS").is_some() {
        std::fs::write(&path, &state).unwrap();
    }
    let checked_in = std::fs::read(&path).unwrap();
    assert!(
        checked_in == state,
        "the ticker's state is not the checked-in {TICKER_STATE} ({} bytes, now {}): the state \
         format or a device's state changed. If on purpose, bump state::VERSION where old files \
         no longer read, and regenerate the file with `WASM86_BLESS=1 cargo test --release \
         --test snapshot`",
        checked_in.len(),
        state.len()
    );
    // The file restores to a machine that runs on as the saved one does.
    let mut b = Machine::restore_state(&checked_in, TimeMode::Deterministic, vec![]).unwrap();
    let rest_a = ticker::run_to(&mut a, ticker::END_AT);
    let rest_b = ticker::run_to(&mut b, ticker::END_AT);
    assert_eq!(rest_a, rest_b);
    assert_eq!(a.cpu.instructions, b.cpu.instructions);
    assert!(a.cpu.mem.ram == b.cpu.mem.ram, "RAM differs");
    // The program ran as meant: its loop, its ticks at 100 Hz (10 ms of virtual time is
    // 1,000,000 instructions at 10 ns), one letter per tick.
    let (turns, ticks) = ticker::counters(&a);
    assert!(
        turns > 1_000_000 && (25..=35).contains(&ticks),
        "{turns} {ticks}"
    );
    assert_eq!(before.len() + rest_a.len(), usize::from(ticks));
}
