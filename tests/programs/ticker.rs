//! A small real-mode guest that keeps the PIC, the PIT and the UART busy, shared by the native
//! snapshot tests and the browser tests: the same machine saved at the same instruction must
//! give the same state file on both, and each must restore the other's.
//!
//! The program sets up the PIC (IRQ 0 only, vectors at 8), points vector 8 at a handler that
//! counts ticks at 0x3004 and acknowledges the PIC, starts PIT channel 0 at 100 Hz, then
//! counts at 0x3000 in a busy loop and sends a letter to COM1 at every new tick.

use wasm86::cpu::{SegCache, Segment};
use wasm86::machine::{Machine, MachineConfig, TimeMode};

/// Where the program is loaded and started (0000:1000).
const ORIGIN: u32 = 0x1000;
/// Where the tick handler is (0000:1100).
const HANDLER: u32 = 0x1100;

#[rustfmt::skip]
const PROGRAM: &[u8] = &[
    0xFA,                               // cli
    0xB0, 0x11, 0xE6, 0x20,             // ICW1: edge, cascade, ICW4
    0xB0, 0x08, 0xE6, 0x21,             // ICW2: vectors 8-15
    0xB0, 0x04, 0xE6, 0x21,             // ICW3: slave on IRQ 2
    0xB0, 0x01, 0xE6, 0x21,             // ICW4: 8086 mode
    0xB0, 0xFE, 0xE6, 0x21,             // OCW1: only IRQ 0
    0xC7, 0x06, 0x20, 0x00, 0x00, 0x11, // mov word [8*4], 0x1100
    0xC7, 0x06, 0x22, 0x00, 0x00, 0x00, // mov word [8*4+2], 0
    0xB0, 0x34, 0xE6, 0x43,             // PIT channel 0: lo/hi, mode 2
    0xB0, 0x9C, 0xE6, 0x40,             // divisor 11932 (100 Hz): low byte
    0xB0, 0x2E, 0xE6, 0x40,             //   high byte
    0xBA, 0xFB, 0x03,                   // mov dx, 0x3FB (LCR)
    0xB0, 0x03, 0xEE,                   // 8 bits, no parity
    0xFB,                               // sti
    // main (0x1034):
    0x66, 0xFF, 0x06, 0x00, 0x30,       // inc dword [0x3000]
    0xA1, 0x04, 0x30,                   // mov ax, [0x3004] (ticks)
    0x3B, 0x06, 0x08, 0x30,             // cmp ax, [0x3008] (ticks printed)
    0x74, 0xF2,                         // je main
    0xA3, 0x08, 0x30,                   // mov [0x3008], ax
    0x24, 0x0F,                         // and al, 15
    0x04, 0x61,                         // add al, 'a'
    0xBA, 0xF8, 0x03,                   // mov dx, 0x3F8
    0xEE,                               // out dx, al
    0xEB, 0xE5,                         // jmp main
];

#[rustfmt::skip]
const TICK: &[u8] = &[
    0xFF, 0x06, 0x04, 0x30,             // inc word [0x3004]
    0x50,                               // push ax
    0xB0, 0x20, 0xE6, 0x20,             // EOI
    0x58,                               // pop ax
    0xCF,                               // iret
];

/// Where the machine is saved.
pub const SAVE_AT: u64 = 12_345_678;
/// Where the runs are compared.
pub const END_AT: u64 = 30_000_000;

/// A 4 MiB deterministic machine at the program's first instruction.
pub fn machine() -> Machine {
    let mut m = Machine::new(MachineConfig {
        ram_bytes: 4 << 20,
        time_mode: TimeMode::Deterministic,
        ..MachineConfig::default()
    });
    m.cpu.mem.load(ORIGIN, PROGRAM);
    m.cpu.mem.load(HANDLER, TICK);
    m.cpu.segs[Segment::CS as usize] = SegCache::real(0);
    m.cpu.eip = ORIGIN;
    m
}

/// Run `m` until `end` instructions have retired; what it sent to COM1 meanwhile.
pub fn run_to(m: &mut Machine, end: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while m.cpu.instructions < end {
        m.run((end - m.cpu.instructions).min(100_000));
        out.extend(m.serial_output(0));
    }
    out
}

/// The program's counters: loop turns and ticks.
pub fn counters(m: &Machine) -> (u32, u16) {
    let ram = &m.cpu.mem.ram;
    (
        u32::from_le_bytes([ram[0x3000], ram[0x3001], ram[0x3002], ram[0x3003]]),
        u16::from_le_bytes([ram[0x3004], ram[0x3005]]),
    )
}
