//! State files: `Machine::restore_state` of any bytes, and of files that pass the container's
//! checks (magic, version, section lengths, CRC) but carry a machine section, RAM pages or a
//! disk list the input changed, so the decoding of every device's state is reached. A state
//! that restores must run, save, and restore again.
//!
//! Input: a mode byte, then either the whole file or edits to a reference state.

use super::Input;
use wasm86::block::{BlockBackend, MemBackend};
use wasm86::dev::ide::{AtaDisk, Drive};
use wasm86::machine::{Machine, MachineConfig, TimeMode};
use wasm86::state::{self, DiskIdentity, StateFile};

/// The reference machine's RAM and its disk (primary master).
const RAM: usize = 1 << 20;
const DISK_BYTES: usize = 64 * 512;
/// Instructions a restored machine runs before it is saved again.
const RUN: u64 = 20_000;
/// Most edits to the reference state's machine section.
const MAX_EDITS: usize = 32;

fn disk() -> Box<dyn BlockBackend> {
    Box::new(MemBackend::new(vec![0x33; DISK_BYTES]))
}

/// A small machine with a disk, after running a little: the file edits start from.
pub fn reference_state() -> Vec<u8> {
    let mut m = Machine::new(MachineConfig {
        ram_bytes: RAM,
        ..MachineConfig::default()
    });
    if let Ok(d) = AtaDisk::new(disk()) {
        m.attach_drive(0, Drive::Ata(d));
    }
    m.set_disk_name(0, "disk.img");
    // The CPU starts at the reset vector, where RAM-only memory has nothing: it runs the
    // zeros at 0xFFFF0 (ADD [BX+SI],AL) a while; enough to move time and the devices.
    m.cpu.mem.load(0x1000, b"some guest memory");
    m.run(1000);
    m.save_state()
}

fn restore(file: &[u8], time_mode: TimeMode, with_disk: bool) -> Option<Machine> {
    let disks = if with_disk { vec![(0, disk())] } else { vec![] };
    Machine::restore_state(file, time_mode, disks).ok()
}

pub fn run(data: &[u8]) {
    thread_local! {
        static REFERENCE: Vec<u8> = reference_state();
    }
    let mut input = Input::new(data);
    let mode = input.u8();
    let time_mode = if mode & 0x10 != 0 {
        TimeMode::Realtime
    } else {
        TimeMode::Deterministic
    };
    let with_disk = mode & 0x20 == 0;
    let file = match mode % 4 {
        0 => input.take_rest().to_vec(),
        _ => REFERENCE.with(|reference| edited(reference, mode % 4, &mut input)),
    };
    let Some(mut m) = restore(&file, time_mode, with_disk) else {
        return;
    };
    m.run(RUN);
    let again = m.save_state();
    let has_disk = m.board().with_image(0, |_| ()).is_some();
    if let Err(e) = Machine::restore_state(
        &again,
        time_mode,
        if has_disk { vec![(0, disk())] } else { vec![] },
    ) {
        panic!("a state saved by a restored machine does not restore: {e}");
    }
}

/// The reference state with its machine section (`what` 1), its RAM pages (2) or its disk
/// list (3) changed by the input, written back with a right checksum.
fn edited(reference: &[u8], what: u8, input: &mut Input) -> Vec<u8> {
    let Ok(parsed) = state::read(reference) else {
        panic!("the reference state does not read back");
    };
    let mut machine = parsed.machine.clone();
    let vga_pages = parsed.vram_pages;
    let ram_pages = parsed.ram_pages;
    let mut ram = vec![0u8; RAM];
    let _ = state::decode_memory_into("RAM", ram_pages, &mut ram);
    let mut vram = state::decode_memory("video memory", vga_pages, wasm86::dev::vga::VRAM_SIZE)
        .unwrap_or_default();
    let mut disks = parsed.disks.clone();
    match what {
        1 => edit(&mut machine, input),
        2 => {
            // Memory of another size, or other bytes.
            let ram_len = [RAM, RAM / 2, RAM + 4096, 4096, 0][usize::from(input.u8() % 5)];
            ram.resize(ram_len, 0);
            edit(&mut ram, input);
            if input.bool() {
                vram.truncate(usize::from(input.u16()));
            }
        }
        _ => {
            let slot = usize::from(input.u8());
            let size = input.u64();
            let name = input.string(32);
            match input.u8() % 3 {
                0 => disks.clear(),
                1 => disks.push(DiskIdentity {
                    slot,
                    size,
                    edges_crc: input.bool().then(|| input.u32()),
                    name,
                }),
                _ => {
                    if let Some(d) = disks.first_mut() {
                        d.slot = slot;
                        d.size = size;
                    }
                }
            }
        }
    }
    state::write(&StateFile {
        machine,
        ram: &ram,
        vram: &vram,
        disks,
    })
}

/// Overwrite, insert or delete bytes of `bytes` as the input says.
pub fn edit(bytes: &mut Vec<u8>, input: &mut Input) {
    for _ in 0..MAX_EDITS {
        if input.is_empty() {
            break;
        }
        let at = input.u32() as usize % (bytes.len() + 1);
        match input.u8() % 4 {
            0 => bytes.truncate(at),
            1 => bytes.insert(at, input.u8()),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => {
                let n = input.length(8);
                for (i, b) in input.bytes(n).iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
        }
    }
}
