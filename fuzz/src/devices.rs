//! The devices: a whole machine (no firmware) with an IDE disk, an ATAPI CD-ROM and a floppy,
//! driven by random port reads and writes of random sizes, MMIO reads and writes, writes to
//! RAM (DMA descriptors: IDE bus-master PRD tables, the 8237A's addresses and counts, fw_cfg
//! DMA requests, all pointing anywhere), short guest programs (string port I/O, REP INS/OUTS),
//! host events (keys, mouse, serial bytes, media changes, streamed disk data arriving or
//! failing) and runs of virtual time in which the CPU idles with interrupts on, so that the
//! devices' timers fire, their interrupts are delivered and IDE DMA runs.

use super::Input;
use wasm86::block::{BlockBackend, MemBackend};
use wasm86::block::{Stream, StreamConfig};
use wasm86::cpu::{SegCache, Segment};
use wasm86::dev::atapi::Cdrom;
use wasm86::dev::fdc::Diskette;
use wasm86::dev::ide::{AtaDisk, Drive};
use wasm86::keymap;
use wasm86::machine::{Machine, MachineConfig};

const RAM: usize = 2 << 20;
/// The idle loop (STI / HLT / JMP back) and the interrupt handler every vector points at.
const IDLE: u32 = 0x600;
const IRET: u32 = 0x700;
/// Where guest programs from the input run.
const PROGRAM: u32 = 0x800;
/// Most steps per input, and the longest run of virtual time one step asks for.
const MAX_STEPS: usize = 1024;
const MAX_RUN: u64 = 200_000;
/// Instructions a guest program from the input may take.
const PROGRAM_BUDGET: u64 = 256;

/// Port bases of the board's devices (a step picks one and an offset, or any port).
const PORTS: &[u16] = &[
    0x00, 0x08, 0x20, 0x40, 0x60, 0x61, 0x64, 0x70, 0x80, 0x88, 0x92, 0xA0, 0xC0, 0xD0, 0xF0,
    0x170, 0x176, 0x1CE, 0x1F0, 0x1F6, 0x2F8, 0x376, 0x3B0, 0x3C0, 0x3C8, 0x3D0, 0x3F0, 0x3F6,
    0x3F8, 0x402, 0x510, 0x514, 0xCF8, 0xCF9, 0xCFC, 0xE9, 0xC000, 0xC008,
];

/// PCI configuration addresses of the display (00:02.0) and IDE (00:01.1) functions' registers
/// that move windows: command, BARs, expansion ROM.
const PCI_REGISTERS: &[u32] = &[0x04, 0x10, 0x14, 0x18, 0x1C, 0x20, 0x24, 0x30, 0x40, 0x41];

/// Key codes a host sends (a few of each kind: plain, extended, Pause, modifiers).
const KEYS: &[&str] = &[
    "KeyA",
    "Enter",
    "Escape",
    "ShiftLeft",
    "ControlRight",
    "ArrowUp",
    "NumpadEnter",
    "Pause",
    "PrintScreen",
    "NumLock",
    "F12",
    "Space",
    "Backspace",
];

fn port(input: &mut Input) -> u16 {
    if input.bool() {
        PORTS[usize::from(input.u8()) % PORTS.len()] + u16::from(input.u8() & 7)
    } else {
        input.u16()
    }
}

fn mmio_address(m: &Machine, input: &mut Input) -> u32 {
    let ranges = m.board().mmio_ranges();
    match input.u8() % 3 {
        0 if !ranges.is_empty() => {
            let (start, len) = ranges[usize::from(input.u8()) % ranges.len()];
            start.wrapping_add(input.u32() % len.max(1))
        }
        1 => 0xA_0000 + input.u32() % 0x2_0000,
        _ => input.u32(),
    }
}

/// Put the CPU in real mode at the idle loop (a guest program may have left it anywhere).
fn idle(m: &mut Machine) {
    m.cpu.reset();
    m.cpu.segs[Segment::CS as usize] = SegCache::real(0);
    m.cpu.eip = IDLE;
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut m = Machine::new(MachineConfig {
        ram_bytes: RAM,
        ..MachineConfig::default()
    });
    for v in 0..256u32 {
        m.cpu.mem.load(4 * v, &IRET.to_le_bytes());
    }
    m.cpu.mem.load(IDLE, &[0xFB, 0xF4, 0xEB, 0xFC]); // STI / HLT / JMP IDLE
    m.cpu.mem.load(IRET, &[0xCF]);
    idle(&mut m);

    // The media: a disk (in memory, or streamed by a host the input plays), a CD-ROM drive
    // with or without a disc, a diskette or none.
    let disk_sectors = u64::from(input.u8()) + 1;
    let fill = input.u8();
    let stream = if input.bool() {
        let config = StreamConfig {
            chunk_size: 4096,
            readahead_chunks: u64::from(input.u8() % 4),
            max_request_chunks: u64::from(input.u8() % 8) + 1,
            max_attempts: u32::from(input.u8() % 3) + 1,
            // The smallest cache the stream allows (see StreamConfig::min_cache_bytes), so
            // chunks are dropped and fetched again.
            max_cached_bytes: 0,
        };
        Some(Stream::new(disk_sectors * 512, config))
    } else {
        None
    };
    let disk: Box<dyn BlockBackend> = match &stream {
        Some(s) => s.backend(),
        None => Box::new(MemBackend::new(vec![fill; disk_sectors as usize * 512])),
    };
    if let Ok(disk) = AtaDisk::new(disk) {
        m.attach_drive(0, Drive::Ata(disk));
    }
    let cdrom = match input.u8() % 3 {
        0 => Cdrom::empty(),
        n => Cdrom::with_disc(Box::new(MemBackend::new(vec![
            fill;
            usize::from(n) * 2048 * 8
        ]))),
    };
    m.attach_drive(2, Drive::Atapi(cdrom));
    if input.bool() {
        let diskette = Diskette::new(Box::new(MemBackend::new(vec![fill; 368_640])), input.bool());
        m.insert_floppy(0, diskette.ok());
    }

    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 12 {
            0 | 1 => {
                let (port, size, value) = (port(&mut input), input.size(), input.u32());
                m.cpu.port_out(port, size, value);
            }
            2 => {
                let (port, size) = (port(&mut input), input.size());
                m.cpu.port_in(port, size);
            }
            3 => {
                // PCI configuration: pick a function and a register that moves a window.
                let function =
                    [0x8000_1000u32, 0x8000_0900, 0x8000_0800][usize::from(input.u8() % 3)];
                let register = PCI_REGISTERS[usize::from(input.u8()) % PCI_REGISTERS.len()];
                m.cpu.port_out(0xCF8, 4, function | register);
                let size = input.size();
                m.cpu.port_out(0xCFC, size, input.u32());
            }
            4 => {
                let (addr, size, value) = (mmio_address(&m, &mut input), input.size(), input.u32());
                let _ = m.cpu.write_lin_slow(addr, u32::from(size), value, false);
            }
            5 => {
                let (addr, size) = (mmio_address(&m, &mut input), input.size());
                let _ = m.cpu.read_lin_slow(addr, u32::from(size), false);
            }
            6 => {
                // DMA descriptors, buffers, anything in low RAM (the interrupt table and the
                // idle loop too: the guest may break its own machine).
                let at = input.u32() % 0x1_0000;
                let n = input.length(64);
                let bytes = input.bytes(n).to_vec();
                m.cpu.mem.load(at, &bytes);
            }
            7 => {
                let budget = u64::from(input.u32()) % MAX_RUN;
                idle(&mut m);
                m.run(budget);
            }
            8 => {
                // A short guest program (string port I/O and the like) with registers from
                // the input, ended by HLT.
                let n = input.length(32);
                let mut code = input.bytes(n).to_vec();
                code.push(0xF4);
                m.cpu.reset();
                m.cpu.segs[Segment::CS as usize] = SegCache::real(0);
                m.cpu.eip = PROGRAM;
                for r in 0..8 {
                    m.cpu.regs[r] = input.u32();
                }
                m.cpu.mem.load(PROGRAM, &code);
                m.cpu.run(PROGRAM_BUDGET);
            }
            9 => host_event(&mut m, &mut input),
            10 => {
                if let Some(s) = &stream {
                    answer_fetches(s, &mut input, fill);
                    m.storage_wake();
                }
            }
            _ => {
                // Media changes.
                match input.u8() % 4 {
                    0 => {
                        m.eject_cdrom(2);
                    }
                    1 => {
                        let len = usize::from(input.u8()) * 512;
                        m.insert_cdrom(2, Box::new(MemBackend::new(vec![fill; len])));
                    }
                    2 => m.insert_floppy(0, None),
                    _ => {
                        let sizes = [368_640, 737_280, 1_228_800, 1_474_560];
                        let size = sizes[usize::from(input.u8() % 4)];
                        let disk = Diskette::new(
                            Box::new(MemBackend::new(vec![fill; size])),
                            input.bool(),
                        );
                        m.insert_floppy(0, disk.ok());
                    }
                }
            }
        }
    }
    // Whatever the guest left running finishes in bounded time.
    idle(&mut m);
    m.run(MAX_RUN);
    m.serial_output(0);
    m.debug_output();
}

fn host_event(m: &mut Machine, input: &mut Input) {
    match input.u8() % 4 {
        0 => {
            let key = KEYS[usize::from(input.u8()) % KEYS.len()];
            if let Some(make) = keymap::scancode(key) {
                m.key_event(make, input.bool());
            }
        }
        1 => {
            let (dx, dy, dz) = (input.u16() as i16, input.u16() as i16, input.u8() as i8);
            m.mouse_move(dx.into(), dy.into(), dz.into(), input.u8());
        }
        2 => {
            let (n, byte) = (usize::from(input.u8() & 1), input.u8());
            if m.serial_can_receive(n) {
                m.serial_input(n, byte);
            }
        }
        _ => m.set_boot_menu(input.u16()),
    }
}

/// The host's side of a streamed disk: answer, fail or ignore what the stream asked for.
fn answer_fetches(stream: &Stream, input: &mut Input, fill: u8) {
    for request in stream.take_requests() {
        match input.u8() % 4 {
            0 => stream.fail(request.id, "the fuzzer's network is down"),
            1 => {}
            2 => {
                // A short or long answer.
                let len = input.length(16384);
                stream.complete(request.id, &vec![fill; len]);
            }
            _ => {
                let len = (request.end - request.start) as usize;
                stream.complete(request.id, &vec![fill; len]);
            }
        }
    }
}
