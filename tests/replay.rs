//! Record and replay: a run recorded by the machine itself (keys typed on the PS/2 keyboard,
//! mouse moves, serial bytes, and a disk whose image answers "still fetching" as a streamed one
//! does) replays on a machine restored from the recording's start with the very same result:
//! instructions retired, serial output, RAM. A recording that is changed, or a replay whose
//! image answers otherwise, says at which instruction it diverged.
//!
//! Run with `cargo test --release --test replay`. Guards are instruction budgets.

mod common;

use common::find;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;
use std::rc::Rc;
use wasm86::block::{BlockBackend, BlockError, MemBackend, ReadStatus};
use wasm86::boot::linux;
use wasm86::dev::ide::{AtaDisk, Drive};
use wasm86::input::HostInput;
use wasm86::machine::{Machine, MachineConfig, TimeMode};
use wasm86::state::replay::{Event, Recording};

fn read(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("images")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A machine booting the bundled Linux on the serial console, with `disk` as its first disk.
fn booting(disk: Option<Box<dyn BlockBackend>>) -> Machine {
    let mut m = Machine::new(MachineConfig::default());
    if let Some(d) = disk {
        m.attach_drive(0, Drive::Ata(AtaDisk::new(d).unwrap()));
        m.set_disk_name(0, "disk.img");
    }
    linux::load(
        &mut m.cpu,
        &read("bzImage"),
        Some(&read("initramfs.cpio.gz")),
        "console=ttyS0",
    )
    .unwrap();
    m
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    })
}

/// A host at the machine: takes its serial output, answers the shell's cursor queries on the
/// serial line, and feeds the keys and bytes queued in `input` as the devices take them.
#[derive(Default)]
struct Host {
    out: Vec<u8>,
    scanned: usize,
    input: HostInput,
}

impl Host {
    fn slice(&mut self, m: &mut Machine, between: &mut impl FnMut(&mut Machine)) {
        m.run(200_000);
        self.out.extend(m.serial_output(0));
        while let Some(pos) = find(&self.out[self.scanned..], b"\x1b[6n") {
            self.scanned += pos + 4;
            self.input.send_serial(b"\x1b[1;1R");
        }
        between(m);
        self.input.pump(m);
    }

    /// Run slices until the output shows `text`.
    fn until(&mut self, m: &mut Machine, text: &str, between: &mut impl FnMut(&mut Machine)) {
        let start = m.cpu.instructions;
        while find(&self.out, text.as_bytes()).is_none() {
            self.slice(m, between);
            assert!(
                m.cpu.instructions - start < 1_500_000_000,
                "no {text:?} in: {}",
                String::from_utf8_lossy(&self.out)
            );
        }
    }
}

/// Replay `rec` on a machine restored from its start with `disks`; the output it printed.
fn replayed(
    rec: &Recording,
    disks: Vec<(usize, Box<dyn BlockBackend>)>,
) -> (
    Result<(), wasm86::state::replay::Divergence>,
    Machine,
    Vec<u8>,
) {
    let mut m = Machine::restore_state(&rec.start, TimeMode::Deterministic, disks).unwrap();
    let mut out = Vec::new();
    let result = m.replay(rec, |o| out.extend_from_slice(o));
    (result, m, out)
}

#[test]
fn keys_typed_on_the_ps2_keyboard_and_mouse_moves_replay_exactly() {
    let mut m = booting(None);
    let mut host = Host::default();
    host.until(&mut m, "/ # ", &mut |_| {});
    m.start_recording();
    let from = host.out.len();
    // The shell on tty1 (the screen) reads the keyboard; its answer goes to the serial line.
    host.input.type_text("echo key-$((6*7)) > /dev/ttyS0\n");
    m.mouse_move(5, -3, 1, 1);
    host.until(&mut m, "key-42", &mut |_| {});
    // And a command on the serial line.
    host.input.send_serial(b"echo serial-$((6*7))\n");
    host.until(&mut m, "serial-42", &mut |_| {});
    // Some more time with nothing typed (timers, the idle shell).
    for _ in 0..20 {
        host.slice(&mut m, &mut |_| {});
    }
    let rec = m.take_recording().expect("a recording");
    assert!(!m.is_recording());
    let keys = rec.events.iter().filter(|e| matches!(e, Event::Key { .. }));
    assert!(
        keys.count() >= 2 * 30,
        "the typed keys are in the recording"
    );
    assert!(rec.events.iter().any(|e| matches!(e, Event::Mouse { .. })));
    assert!(rec.events.iter().any(|e| matches!(e, Event::Serial { .. })));
    // Through the file form and back.
    let rec = Recording::from_bytes(&rec.to_bytes()).unwrap();

    let (result, b, out) = replayed(&rec, vec![]);
    assert_eq!(result, Ok(()));
    assert_eq!(b.cpu.instructions, m.cpu.instructions);
    assert_eq!(out, host.out[from..], "the replay printed something else");
    assert_eq!(fnv(&b.cpu.mem.ram), fnv(&m.cpu.mem.ram), "RAM differs");

    // The first key one instruction later: the replay stops there and says so.
    let mut late = rec.clone();
    let Some(Event::Key { at, .. }) = late
        .events
        .iter_mut()
        .find(|e| matches!(e, Event::Key { .. }))
    else {
        unreachable!()
    };
    *at += 1;
    let first_key = *at - 1;
    let (result, _, _) = replayed(&late, vec![]);
    let e = result.unwrap_err();
    assert_eq!(e.at, first_key, "{e}");
    assert!(e.to_string().contains("diverged at instruction"), "{e}");
}

/// An image that answers "still fetching" to the first read of every 64 KiB chunk, as a
/// streamed disk does; the host "fetches" the chunks asked for between slices.
struct Streamed {
    data: Vec<u8>,
    shared: Rc<RefCell<Fetches>>,
}

#[derive(Default)]
struct Fetches {
    have: BTreeSet<u64>,
    wanted: BTreeSet<u64>,
}

impl BlockBackend for Streamed {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, BlockError> {
        let mut f = self.shared.borrow_mut();
        let chunks = offset >> 16..=(offset + buf.len() as u64 - 1) >> 16;
        let missing: Vec<u64> = chunks.filter(|c| !f.have.contains(c)).collect();
        if !missing.is_empty() {
            f.wanted.extend(missing);
            return Ok(ReadStatus::Pending);
        }
        let at = offset as usize;
        buf.copy_from_slice(&self.data[at..at + buf.len()]);
        Ok(ReadStatus::Ready)
    }
}

#[test]
fn a_disk_that_answers_late_replays_with_the_recorded_answers_from_a_plain_image() {
    let disk = read("disk.img");
    let fetches = Rc::new(RefCell::new(Fetches::default()));
    let mut m = booting(Some(Box::new(Streamed {
        data: disk.clone(),
        shared: Rc::clone(&fetches),
    })));
    let mut fetch = |m: &mut Machine| {
        let mut f = fetches.borrow_mut();
        if !f.wanted.is_empty() {
            let wanted = std::mem::take(&mut f.wanted);
            f.have.extend(wanted);
            drop(f);
            m.storage_wake();
        }
    };
    let mut host = Host::default();
    host.until(&mut m, "/ # ", &mut fetch);
    m.start_recording();
    let from = host.out.len();
    host.input
        .send_serial(b"md5sum /dev/sda | sed 's/ .*/ =s''um/'\n");
    host.until(&mut m, " =sum", &mut fetch);
    let rec = m.take_recording().unwrap();
    assert!(
        rec.disk_answers.len() > 10,
        "{} late answers recorded",
        rec.disk_answers.len()
    );
    assert!(rec
        .events
        .iter()
        .any(|e| matches!(e, Event::StorageWake { .. })));

    // A plain image has every byte at once; the recorded answers make it late where it was.
    let plain = || {
        vec![(
            0,
            Box::new(MemBackend::new(disk.clone())) as Box<dyn BlockBackend>,
        )]
    };
    let (result, b, out) = replayed(&rec, plain());
    assert_eq!(result, Ok(()));
    assert_eq!(b.cpu.instructions, m.cpu.instructions);
    assert_eq!(out, host.out[from..]);
    assert_eq!(fnv(&b.cpu.mem.ram), fnv(&m.cpu.mem.ram), "RAM differs");

    // The recorded answers are what the drive gets: the same recording with its last late
    // answer turned into a failed read gives the guest an I/O error there, and the replay
    // says where it went another way.
    let mut failing = rec.clone();
    let last = failing.disk_answers.last_mut().unwrap();
    last.answer = Err(BlockError::Io("gone".into()));
    let (result, _, _) = replayed(&failing, plain());
    assert!(result.is_err(), "a replay with a failed read matched");
    // And an image that is itself late where the recording had data is a divergence too.
    let mut fresh = Fetches::default();
    fresh.have.clear();
    let late = vec![(
        0,
        Box::new(Streamed {
            data: disk.clone(),
            shared: Rc::new(RefCell::new(fresh)),
        }) as Box<dyn BlockBackend>,
    )];
    let (result, _, _) = replayed(&rec, late);
    let e = result.unwrap_err();
    assert!(e.why.contains("had the data for"), "{e}");
}
