//! The CPU: random instruction streams run from random register, flag, control-register and
//! descriptor-table states in each mode the processor has (real mode, 16-bit and 32-bit
//! protected mode at CPL 0, 32-bit at CPL 3 with paging on, virtual-8086 mode), with the
//! interpreter alone or with the compiling tier. Every run has an instruction budget and must
//! return within it; exceptions are the guest's business and are delivered through a working
//! IDT (or IVT), which the input may corrupt too.
//!
//! Input: mode, tier, control bits, registers, flags, patches of the system area (GDT, IDT,
//! TSS, LDT, page tables), selectors for DS/ES/FS/GS, then the code.

use super::Input;
use wasm86::bus::Bus;
use wasm86::cpu::protected::Descriptor;
use wasm86::cpu::{flags, Cpu, RunExit, SegCache, Segment, TableReg, ESP};
use wasm86::cpu::{CR0_AM, CR0_EM, CR0_ET, CR0_MP, CR0_NE, CR0_PE, CR0_PG, CR0_TS, CR0_WP};
use wasm86::jit::wasmi_engine::WasmiEngine;

const RAM: usize = 2 << 20;
/// Real-mode interrupt vector table (also the bottom of the system area patches reach).
const IVT: u32 = 0;
/// Interrupt handlers: IRET, and (for exceptions that push an error code) ADD ESP,4 / IRET.
const HANDLER: u32 = 0x600;
const HANDLER_ERROR_CODE: u32 = 0x610;
const IDT: u32 = 0x800;
const GDT: u32 = 0x1000;
const GDT_ENTRIES: u32 = 16;
/// A 32-bit TSS with an I/O permission bitmap for every port (0x68 + 8 KiB + the end byte).
const TSS: u32 = 0x1800;
const TSS_LIMIT: u32 = 0x68 + 0x2000;
const LDT: u32 = 0x3A00;
const PAGE_DIR: u32 = 0x4000;
const PAGE_TABLE: u32 = 0x5000;
/// End of the area the input's patches may rewrite.
const SYSTEM_END: u32 = 0x6000;
const STACK3_TOP: u32 = 0x8000;
const STACK0_TOP: u32 = 0x9000;
/// Where the code runs (CS base 0x10000 in real mode, 16-bit protected mode and V86).
const CODE: u32 = 0x10000;
const MAX_CODE: usize = 0x2000;

/// GDT selectors.
const CODE32_0: u16 = 0x08;
const DATA32_0: u16 = 0x10;
const CODE32_3: u16 = 0x18 | 3;
const DATA32_3: u16 = 0x20 | 3;
const CODE16_0: u16 = 0x28;
const DATA16_0: u16 = 0x30;
const TSS_SEL: u16 = 0x38;
const LDT_SEL: u16 = 0x40;
const CALL_GATE: u16 = 0x48;
const CONFORMING: u16 = 0x50;

/// Instructions per `Cpu::run` call, and calls per input.
const BUDGET: u64 = 1_000;
const RUNS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Real,
    Protected16,
    Protected32,
    /// CPL 3, paging on.
    User,
    V86,
}

/// A code or data descriptor: `access` is the P/DPL/S/type byte, `flags` the G/D nibble.
fn seg(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    Descriptor::segment(base, limit, access, flags).to_u64()
}

/// A gate descriptor to `sel:offset`.
fn gate(sel: u16, offset: u32, access: u8) -> u64 {
    let lo = (offset & 0xFFFF) | (u32::from(sel) << 16);
    let hi = (offset & 0xFFFF_0000) | (u32::from(access) << 8);
    u64::from(lo) | u64::from(hi) << 32
}

fn put(cpu: &mut Cpu, addr: u32, bytes: &[u8]) {
    cpu.mem.load(addr, bytes);
}

fn descriptor(cpu: &Cpu, sel: u16) -> Descriptor {
    let a = (GDT + u32::from(sel & !7)) as usize;
    let word = |at: usize| u32::from_le_bytes(cpu.mem.ram[at..at + 4].try_into().unwrap());
    Descriptor {
        lo: word(a),
        hi: word(a + 4),
    }
}

/// A bus whose ports and MMIO answer bytes from the input, and whose INTR line comes and
/// goes with it, so that IN, INS and external interrupts see arbitrary values.
struct FuzzBus {
    answers: Vec<u8>,
    at: usize,
    /// Ask for an interrupt after this many port accesses (0: never).
    interrupt_every: u8,
    accesses: u32,
}

impl FuzzBus {
    fn next(&mut self, size: u8) -> u32 {
        let mut v = 0u32;
        for i in 0..u32::from(size) {
            let b = if self.answers.is_empty() {
                0xFF
            } else {
                self.answers[self.at % self.answers.len()]
            };
            self.at = self.at.wrapping_add(1);
            v |= u32::from(b) << (8 * i);
        }
        v
    }
}

impl Bus for FuzzBus {
    fn io_read(&mut self, _port: u16, size: u8) -> u32 {
        self.accesses += 1;
        self.next(size)
    }
    fn io_write(&mut self, _port: u16, _size: u8, _value: u32) {
        self.accesses += 1;
    }
    fn mmio_read(&mut self, _addr: u32, size: u8) -> u32 {
        self.next(size)
    }
    fn mmio_write(&mut self, _addr: u32, _size: u8, _value: u32) {}
    fn interrupt_pending(&self) -> bool {
        self.interrupt_every != 0
            && self
                .accesses
                .is_multiple_of(u32::from(self.interrupt_every))
    }
    fn acknowledge_interrupt(&mut self) -> u8 {
        self.accesses += 1;
        self.next(1) as u8
    }
}

/// Build the environment, run the input's code, and require every run to return.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = match input.u8() % 5 {
        0 => Mode::Real,
        1 => Mode::Protected16,
        2 => Mode::Protected32,
        3 => Mode::User,
        _ => Mode::V86,
    };
    let tier = input.u8();
    let cr0_extra = input.u8();
    let cr4 = u32::from(input.u8()) & 0x9F; // VME PVI TSD DE PSE, PGE
    let paging = mode == Mode::User || mode == Mode::V86 || input.bool();
    let mut regs = [0u32; 8];
    for r in regs.iter_mut() {
        *r = input.u32();
    }
    let keep_stack = input.bool();
    let eflags = input.u32();
    let bus = FuzzBus {
        answers: input.bytes(16).to_vec(),
        at: 0,
        interrupt_every: input.u8() & 0x1F,
        accesses: 1,
    };

    let mut cpu = Cpu::new(RAM, Box::new(bus));
    build_tables(&mut cpu);
    for (i, r) in regs.iter().enumerate() {
        cpu.regs[i] = *r;
    }
    let extra = [CR0_MP, CR0_EM, CR0_TS, CR0_NE, CR0_WP, CR0_AM]
        .iter()
        .enumerate()
        .filter(|(i, _)| cr0_extra & (1 << i) != 0)
        .fold(0, |acc, (_, bit)| acc | bit);
    // Flags the guest may hold in any mode (IF, IOPL, DF, TF ... but not VM: V86 is entered
    // through IRET below).
    let flag_bits = flags::ARITH
        | flags::TF
        | flags::IF
        | flags::DF
        | flags::IOPL
        | flags::NT
        | flags::AC
        | flags::ID;
    match mode {
        Mode::Real => {
            let _ = cpu.write_cr0(CR0_ET | (extra & !CR0_WP));
            for s in 0..6 {
                cpu.segs[s] = SegCache::real(0);
            }
            cpu.segs[Segment::CS as usize] = SegCache::real((CODE >> 4) as u16);
            cpu.flags.set_word(flags::FIXED1 | (eflags & flag_bits));
        }
        _ => {
            let _ = cpu.write_cr4(cr4);
            cpu.write_cr3(PAGE_DIR);
            let pg = if paging { CR0_PG } else { 0 };
            let _ = cpu.write_cr0(CR0_PE | CR0_ET | pg | extra);
            let (cs, data) = match mode {
                Mode::Protected16 => (CODE16_0, DATA16_0),
                _ => (CODE32_0, DATA32_0),
            };
            cpu.segs[Segment::CS as usize] = descriptor(&cpu, cs).to_cache(cs);
            for s in [
                Segment::SS,
                Segment::DS,
                Segment::ES,
                Segment::FS,
                Segment::GS,
            ] {
                cpu.segs[s as usize] = descriptor(&cpu, data).to_cache(data);
            }
            cpu.ldtr = descriptor(&cpu, LDT_SEL).to_cache(LDT_SEL);
            cpu.set_cpl(0);
            // The TSS is available in the fresh GDT: LTR cannot fail.
            let _ = cpu.load_task_register(TSS_SEL);
            cpu.flags.set_word(flags::FIXED1 | (eflags & flag_bits));
        }
    }
    cpu.eip = if mode == Mode::Protected32 || mode == Mode::User {
        CODE
    } else {
        0
    };
    if keep_stack || mode == Mode::V86 {
        cpu.regs[ESP] = STACK0_TOP;
    }
    match mode {
        Mode::User => {
            cpu.segs[Segment::CS as usize] = descriptor(&cpu, CODE32_3).to_cache(CODE32_3);
            for s in [Segment::SS, Segment::DS, Segment::ES] {
                cpu.segs[s as usize] = descriptor(&cpu, DATA32_3).to_cache(DATA32_3);
            }
            cpu.set_cpl(3);
            if keep_stack {
                cpu.regs[ESP] = STACK3_TOP;
            }
        }
        Mode::V86 => {
            // IRET to V86 from CPL 0: EIP CS EFLAGS ESP SS ES DS FS GS.
            let v86_flags = flags::FIXED1 | flags::VM | (eflags & flag_bits);
            let frame = [
                0,
                CODE >> 4,
                v86_flags,
                if keep_stack { 0xFFFE } else { regs[ESP] },
                STACK3_TOP >> 4,
                regs[0] >> 16,
                regs[1] >> 16,
                regs[2] >> 16,
                regs[3] >> 16,
            ];
            let sp = STACK0_TOP - 4 * frame.len() as u32;
            for (i, v) in frame.iter().enumerate() {
                put(&mut cpu, sp + 4 * i as u32, &v.to_le_bytes());
            }
            cpu.regs[ESP] = sp;
            // The frame and the TSS are well formed: this enters V86.
            let _ = cpu.iret_protected(true);
        }
        _ => {}
    }

    // Random descriptor states: the input rewrites parts of the GDT, IDT, TSS, LDT and page
    // tables after the CPU loaded what it needs, as a guest may.
    for _ in 0..input.u8() % 8 {
        let at = u32::from(input.u16()) % SYSTEM_END;
        let n = usize::from(input.u8() % 16);
        let bytes = input.bytes(n).to_vec();
        put(&mut cpu, at, &bytes);
    }
    // Data segment registers through the CPU's own checked loads.
    for s in [Segment::DS, Segment::ES, Segment::FS, Segment::GS] {
        let selector = input.u16();
        if input.bool() {
            let _ = cpu.load_seg(s, selector);
        }
    }
    let code = input.bytes(MAX_CODE).to_vec();
    put(&mut cpu, CODE, &code);

    if tier & 1 != 0 {
        let threshold = u32::from(tier >> 1) % 4 + 1;
        cpu.set_jit(Some(Box::new(WasmiEngine::new())), threshold);
    }
    for _ in 0..RUNS {
        match cpu.run(BUDGET) {
            RunExit::Shutdown => break,
            // Wake the CPU as an interrupt would, so code after HLT runs too.
            RunExit::Halted => cpu.halted = false,
            RunExit::Budget => {}
        }
    }
}

/// The IVT, IDT, GDT, LDT, TSS and page tables of a flat machine whose interrupt handlers
/// return at once.
fn build_tables(cpu: &mut Cpu) {
    for v in 0..256u32 {
        // Real mode: every vector at 0000:HANDLER.
        put(cpu, IVT + 4 * v, &HANDLER.to_le_bytes());
        // Protected mode: exceptions that push an error code pop it before IRET.
        let handler = match v {
            8 | 10..=14 | 17 => HANDLER_ERROR_CODE,
            _ => HANDLER,
        };
        // 32-bit interrupt gates, DPL 3 so INT n works from every ring.
        put(
            cpu,
            IDT + 8 * v,
            &gate(CODE32_0, handler, 0xEE).to_le_bytes(),
        );
    }
    put(cpu, HANDLER, &[0xCF]); // IRET (IRETD in 32-bit code)
    put(cpu, HANDLER_ERROR_CODE, &[0x83, 0xC4, 0x04, 0xCF]); // ADD ESP,4 / IRETD
    let entries: [(u16, u64); 10] = [
        (CODE32_0, seg(0, 0xFFFFF, 0x9A, 0xC)),
        (DATA32_0, seg(0, 0xFFFFF, 0x92, 0xC)),
        (CODE32_3, seg(0, 0xFFFFF, 0xFA, 0xC)),
        (DATA32_3, seg(0, 0xFFFFF, 0xF2, 0xC)),
        (CODE16_0, seg(CODE, 0xFFFF, 0x9A, 0)),
        (DATA16_0, seg(0, 0xFFFF, 0x92, 0)),
        (TSS_SEL, seg(TSS, TSS_LIMIT, 0x89, 0)),
        (LDT_SEL, seg(LDT, 0x1F, 0x82, 0)),
        (CALL_GATE, gate(CODE32_0, HANDLER, 0xEC)),
        (CONFORMING, seg(0, 0xFFFFF, 0x9E, 0xC)),
    ];
    for (sel, d) in entries {
        put(cpu, GDT + u32::from(sel & !7), &d.to_le_bytes());
    }
    // LDT: a ring-3 data segment and a ring-0 code segment.
    put(cpu, LDT + 8, &seg(0x20000, 0xFFFF, 0xF2, 0).to_le_bytes());
    put(cpu, LDT + 16, &seg(0, 0xFFFFF, 0x9A, 0xC).to_le_bytes());
    cpu.gdtr = TableReg {
        base: GDT,
        limit: GDT_ENTRIES * 8 - 1,
    };
    cpu.idtr = TableReg {
        base: IDT,
        limit: 256 * 8 - 1,
    };
    // TSS: the ring-0 stack, and an I/O bitmap that allows every port.
    put(cpu, TSS + 4, &STACK0_TOP.to_le_bytes());
    put(cpu, TSS + 8, &DATA32_0.to_le_bytes());
    put(cpu, TSS + 0x66, &0x68u16.to_le_bytes());
    put(cpu, TSS + TSS_LIMIT, &[0xFF]);
    // Paging: the first 4 MiB identity-mapped, user and writable.
    put(cpu, PAGE_DIR, &(PAGE_TABLE | 7).to_le_bytes());
    for page in 0..1024u32 {
        put(
            cpu,
            PAGE_TABLE + 4 * page,
            &((page << 12) | 7).to_le_bytes(),
        );
    }
}
