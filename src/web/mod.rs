//! The browser's view of the emulator: a small `wasm-bindgen` API over the core, compiled only
//! for `wasm32` (see `src/lib.rs`). It holds no logic of its own: every method forwards to
//! [`crate::cpu::Cpu`] or [`crate::mem::Memory`], so what the page shows is what the core does.
//!
//! Numbers that may exceed 2^32 (the retired-instruction count) are returned as `f64`, which
//! JavaScript reads as an ordinary number (exact up to 2^53); a `u64` would be a BigInt.

use crate::cpu::{Cpu, RunExit, SegCache, Segment};
use wasm_bindgen::prelude::*;

/// One CPU with RAM and nothing else on its bus (no devices yet).
#[wasm_bindgen]
pub struct WasmCpu {
    cpu: Cpu,
    last_exit: RunExit,
}

#[wasm_bindgen]
impl WasmCpu {
    /// A CPU in its power-on state with `ram_bytes` of RAM (rounded up to 4 KiB).
    #[wasm_bindgen(constructor)]
    pub fn new(ram_bytes: u32) -> WasmCpu {
        WasmCpu {
            cpu: Cpu::with_ram(ram_bytes as usize),
            last_exit: RunExit::Budget,
        }
    }

    /// Size of guest RAM in bytes.
    pub fn ram_size(&self) -> u32 {
        self.cpu.mem.ram.len() as u32
    }

    /// Copy `bytes` into RAM at physical address `addr` (bytes past the end of RAM are dropped).
    pub fn load(&mut self, addr: u32, bytes: &[u8]) {
        self.cpu.mem.load(addr, bytes);
    }

    /// Read one byte of RAM at physical address `addr` (0xFF past the end of RAM).
    pub fn read_byte(&self, addr: u32) -> u8 {
        self.cpu.mem.ram.get(addr as usize).copied().unwrap_or(0xFF)
    }

    /// Start executing at `cs:ip` in real mode (CS base = cs * 16, 64 KiB limit).
    pub fn set_real_mode_entry(&mut self, cs: u16, ip: u16) {
        self.cpu.segs[Segment::CS as usize] = SegCache::real(cs);
        self.cpu.eip = ip as u32;
        self.cpu.halted = false;
    }

    /// Set a real-mode data or stack segment register (0 ES, 2 SS, 3 DS, 4 FS, 5 GS).
    pub fn set_real_mode_segment(&mut self, seg: u8, selector: u16) {
        if seg < 6 {
            self.cpu.segs[seg as usize] = SegCache::real(selector);
        }
    }

    /// Load the interrupt-descriptor-table register (in real mode: where the IVT is). With a
    /// limit of 0 any exception escalates to a triple fault, so a run stops instead of looping
    /// through an empty vector table.
    pub fn set_idtr(&mut self, base: u32, limit: u32) {
        self.cpu.idtr.base = base;
        self.cpu.idtr.limit = limit;
    }

    /// Run up to `budget` instructions. Returns why it stopped: "budget", "halted" or "shutdown".
    pub fn run(&mut self, budget: u32) -> String {
        self.last_exit = self.cpu.run(budget as u64);
        self.exit_reason()
    }

    /// Why the last [`WasmCpu::run`] returned: "budget", "halted" or "shutdown".
    pub fn exit_reason(&self) -> String {
        match self.last_exit {
            RunExit::Budget => "budget",
            RunExit::Halted => "halted",
            RunExit::Shutdown => "shutdown",
        }
        .to_string()
    }

    /// General register `i` (0 EAX, 1 ECX, 2 EDX, 3 EBX, 4 ESP, 5 EBP, 6 ESI, 7 EDI).
    pub fn reg(&self, i: u32) -> u32 {
        if i < 8 {
            self.cpu.regs[i as usize]
        } else {
            0
        }
    }

    /// Set general register `i` (same numbering as [`WasmCpu::reg`]).
    pub fn set_reg(&mut self, i: u32, value: u32) {
        if i < 8 {
            self.cpu.regs[i as usize] = value;
        }
    }

    /// The instruction pointer.
    pub fn eip(&self) -> u32 {
        self.cpu.eip
    }

    /// Segment register selector (0 ES, 1 CS, 2 SS, 3 DS, 4 FS, 5 GS).
    pub fn seg(&self, seg: u8) -> u16 {
        self.cpu.segs.get(seg as usize).map_or(0, |s| s.selector)
    }

    /// The architectural EFLAGS value.
    pub fn eflags(&self) -> u32 {
        self.cpu.flags.word()
    }

    /// The CPU executed HLT and waits for an interrupt.
    pub fn halted(&self) -> bool {
        self.cpu.halted
    }

    /// The CPU triple-faulted.
    pub fn shutdown(&self) -> bool {
        self.cpu.shutdown
    }

    /// Instructions retired since power-on (the unit of virtual time).
    pub fn instructions(&self) -> f64 {
        self.cpu.instructions as f64
    }
}
