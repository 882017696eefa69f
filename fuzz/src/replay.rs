//! Replay logs: `Recording::from_bytes` of any bytes, and of well-formed files (right magic,
//! length and CRC) whose body the input changed: the start state, the events (runs, keys,
//! mouse moves, serial bytes, disk wake-ups, resets at any instruction count), the drives'
//! recorded answers and the expected end. A recording that parses is replayed on the machine
//! its start state restores to; the replay must end, with success or a divergence.
//!
//! A replay runs the machine as long as the recording's runs say; a forged recording can ask
//! for any number of instructions, as a guest that never halts can. The harness replays only
//! recordings that ask for at most [`MAX_REPLAY_INSTRUCTIONS`], so that every input finishes
//! within libFuzzer's time limit.

use super::snapshot::edit;
use super::Input;
use wasm86::block::{BlockBackend, MemBackend};
use wasm86::dev::ide::{AtaDisk, Drive};
use wasm86::machine::{Machine, MachineConfig, TimeMode};
use wasm86::state::replay::{Event, Recording};

const RAM: usize = 1 << 20;
const DISK_BYTES: usize = 64 * 512;
pub const MAX_REPLAY_INSTRUCTIONS: u64 = 2_000_000;
/// The guest of the reference recording: echo every byte COM1 receives back (polling the LSR),
/// in real mode at 0000:1000.
///   mov dx, 0x3FD / wait: in al, dx / test al, 1 / jz wait / mov dx, 0x3F8 / in al, dx /
///   out dx, al / jmp start
const ECHO: &[u8] = &[
    0xBA, 0xFD, 0x03, 0xEC, 0xA8, 0x01, 0x74, 0xFB, 0xBA, 0xF8, 0x03, 0xEC, 0xEE, 0xEB, 0xF0,
];

fn disk() -> Box<dyn BlockBackend> {
    Box::new(MemBackend::new(vec![0x44; DISK_BYTES]))
}

/// A recording of a small machine that echoes serial input, with every kind of event.
pub fn reference_recording() -> Recording {
    let mut m = Machine::new(MachineConfig {
        ram_bytes: RAM,
        ..MachineConfig::default()
    });
    if let Ok(d) = AtaDisk::new(disk()) {
        m.attach_drive(0, Drive::Ata(d));
    }
    m.cpu.mem.load(0x1000, ECHO);
    m.cpu.segs[wasm86::cpu::Segment::CS as usize] = wasm86::cpu::SegCache::real(0);
    m.cpu.eip = 0x1000;
    m.start_recording();
    m.run(500);
    for &b in b"hi\r" {
        m.serial_input(0, b);
        m.run(300);
    }
    m.key_event(&[0x1C], true);
    m.mouse_move(3, -2, 0, 1);
    m.storage_wake();
    m.run(1000);
    m.reset();
    m.run(200);
    m.serial_output(0);
    m.take_recording()
        .unwrap_or_else(|| panic!("the reference recording was not made"))
}

/// The file form of `rec` with its body replaced by `body` (magic, version, length, CRC right).
fn file_with_body(rec: &Recording, body: &[u8]) -> Vec<u8> {
    let reference = rec.to_bytes();
    let mut out = reference[..12].to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    let crc = wasm86::state::crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub fn run(data: &[u8]) {
    thread_local! {
        static REFERENCE: Recording = reference_recording();
    }
    let mut input = Input::new(data);
    let mode = input.u8();
    let file = REFERENCE.with(|reference| match mode % 4 {
        0 => input.take_rest().to_vec(),
        1 => {
            // The body as bytes, edited.
            let whole = reference.to_bytes();
            let mut body = whole[16..whole.len() - 4].to_vec();
            edit(&mut body, &mut input);
            file_with_body(reference, &body)
        }
        2 => {
            // Events from the input.
            let mut rec = reference.clone();
            rec.events = events(&mut input);
            rec.end_instructions = input.u64() % (MAX_REPLAY_INSTRUCTIONS + 1);
            rec.to_bytes()
        }
        _ => {
            // The start state edited.
            let mut rec = reference.clone();
            edit(&mut rec.start, &mut input);
            rec.to_bytes()
        }
    });
    let Ok(rec) = Recording::from_bytes(&file) else {
        return;
    };
    let asked: u64 = rec
        .events
        .iter()
        .map(|e| match e {
            Event::Run { budget, .. } => *budget,
            _ => 0,
        })
        .fold(0, u64::saturating_add);
    if asked > MAX_REPLAY_INSTRUCTIONS {
        return;
    }
    let time_mode = if rec.realtime {
        TimeMode::Realtime
    } else {
        TimeMode::Deterministic
    };
    let Ok(mut m) = Machine::restore_state(&rec.start, time_mode, vec![(0, disk())]) else {
        return;
    };
    let _ = m.replay(&rec, |_| {});
}

/// Events as the input lists them.
fn events(input: &mut Input) -> Vec<Event> {
    let mut events = Vec::new();
    while !input.is_empty() && events.len() < 64 {
        let at = u64::from(input.u16());
        events.push(match input.u8() % 6 {
            0 => Event::Run {
                budget: u64::from(input.u16()),
                host_ns: input.bool().then(|| input.u64()),
            },
            1 => Event::Serial {
                at,
                port: input.u8(),
                byte: input.u8(),
            },
            2 => Event::Key {
                at,
                make: {
                    let n = input.length(8);
                    input.bytes(n).to_vec()
                },
                pressed: input.bool(),
            },
            3 => Event::Mouse {
                at,
                dx: input.u32() as i32,
                dy: input.u32() as i32,
                dz: input.u32() as i32,
                buttons: input.u8(),
            },
            4 => Event::StorageWake { at },
            _ => Event::Reset { at },
        });
    }
    events
}
