//! Small guest programs and a differential harness for the compiling tier, shared by its
//! tests on every host (natively with the wasmi engine, and in the browser with the real one):
//! a program runs in slices with the interpreter alone and with the tier on, and every slice
//! must end in the same state.

use super::Engine;
use crate::cpu::{Cpu, RunExit, SegCache, ESP};

/// Count the primes below 300 by trial division through a called function (PUSH, CALL,
/// RET, memory loads and stores; MOV, LEA, the ALU group, IMUL, CDQ, IDIV, fused compares and
/// jumps), store the count at 0x8000, then divide by zero: #DE, delivered through the
/// real-mode IVT to a HLT at 0x0F00.
pub const PRIMES: &[u8] = &[
    0xb9, 0x02, 0x00, 0x00, 0x00, 0x31, 0xf6, 0x51, 0xe8, 0x1e, 0x00, 0x00, 0x00, 0x59, 0x01, 0xc6,
    0x89, 0x35, 0x00, 0x80, 0x00, 0x00, 0x41, 0x81, 0xf9, 0x2c, 0x01, 0x00, 0x00, 0x7c, 0xe8, 0xb8,
    0x07, 0x00, 0x00, 0x00, 0x31, 0xd2, 0x31, 0xdb, 0xf7, 0xfb, 0xf4, 0x8b, 0x4c, 0x24, 0x04, 0xbb,
    0x02, 0x00, 0x00, 0x00, 0x89, 0xd8, 0x0f, 0xaf, 0xc3, 0x39, 0xc8, 0x7f, 0x1a, 0x89, 0xc8, 0x99,
    0xf7, 0xfb, 0x85, 0xd2, 0x74, 0x17, 0x8d, 0x5b, 0x01, 0x29, 0xdf, 0x81, 0xe7, 0xff, 0xff, 0x00,
    0x00, 0x83, 0xcf, 0x03, 0x4f, 0xeb, 0xdd, 0xb8, 0x01, 0x00, 0x00, 0x00, 0xc3, 0x31, 0xc0, 0xc3,
];

/// Primes below 300: what [`PRIMES`] stores at 0x8000.
pub const PRIMES_BELOW_300: u8 = 62;

/// A loop that rewrites the immediate of an instruction in its own block on every pass (200
/// passes, adding 0, 1, 2 ... to ESI), then HLT.
pub const SELF_MODIFYING: &[u8] = &[
    0xb9, 0xc8, 0x00, 0x00, 0x00, 0xb8, 0x00, 0x00, 0x00, 0x00, 0xff, 0x05, 0x06, 0x10, 0x00, 0x00,
    0x01, 0xc6, 0x49, 0x75, 0xf0, 0xf4,
];

/// A CPU running 32-bit code `code` at 0x1000 with flat 4 GiB segments, the stack at 0xF000
/// and the #DE vector pointing at a HLT at 0x0F00.
pub fn cpu_running(code: &[u8]) -> Cpu {
    let mut cpu = Cpu::with_ram(1 << 20);
    cpu.mem.load(0x1000, code);
    cpu.mem.load(0x0F00, &[0xF4]);
    cpu.mem.load(0, &[0x00, 0x0F, 0x00, 0x00]);
    for seg in cpu.segs.iter_mut() {
        let mut s = SegCache::real(0);
        s.big = true;
        s.limit = u32::MAX;
        s.compute_ranges();
        *seg = s;
    }
    cpu.eip = 0x1000;
    cpu.regs[ESP] = 0xF000;
    cpu
}

/// Where two CPUs' architectural state differs (registers, EIP, EFLAGS, the retired count,
/// HLT, the first 64 KiB of RAM), if it does.
pub fn difference(a: &Cpu, b: &Cpu) -> Option<String> {
    let regs = |c: &Cpu| (c.regs, c.eip, c.flags.word(), c.instructions, c.halted);
    if regs(a) != regs(b) {
        return Some(format!(
            "registers, EIP, EFLAGS, count, halted: {:x?} vs {:x?}",
            regs(a),
            regs(b)
        ));
    }
    (0..0x10000)
        .find(|&n| a.mem.ram[n] != b.mem.ram[n])
        .map(|n| format!("memory at {n:#x}"))
}

/// Run `code` in slices of `slice` instructions with the interpreter alone and with the
/// compiling tier (`engine`, at `threshold`), until it halts; every slice must end in the same
/// state. Returns the compiled CPU, or what differed.
pub fn same_with_and_without(
    code: &[u8],
    slice: u64,
    engine: Box<dyn Engine>,
    threshold: u32,
) -> Result<Cpu, String> {
    let mut plain = cpu_running(code);
    let mut compiled = cpu_running(code);
    compiled.set_jit(Some(engine), threshold);
    for n in 0..100_000 {
        let a = plain.run(slice);
        let b = compiled.run(slice);
        let what = format!("slice {n} of {slice} (threshold {threshold})");
        if a != b {
            return Err(format!("{what}: {a:?} vs {b:?}"));
        }
        if let Some(d) = difference(&plain, &compiled) {
            return Err(format!("{what}: {d}"));
        }
        if let Some(e) = compiled.jit_error() {
            return Err(format!("{what}: the tier failed: {e}"));
        }
        if a == RunExit::Halted {
            return Ok(compiled);
        }
    }
    Err(format!("never halted in slices of {slice}"))
}
