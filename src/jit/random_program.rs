//! Random guest programs for differential tests of the compiling tier: each seed gives a
//! 32-bit program whose hot loop runs 5 to 40 random integer instructions, and the environment
//! to run it in. [`same_with_and_without`] runs it with the interpreter alone and with the tier
//! on, in slices, and compares the machines after every slice.
//!
//! The menu: MOV in all its forms (moffs too), MOVZX/MOVSX, LEA, the ALU group in every
//! encoding (00-3D, 80-83), TEST, INC/DEC, NOT/NEG, shifts and rotates /0-/7 by an immediate
//! (0, and past the width, too), by 1 and by CL, SETcc, CMOVcc, MUL/IMUL (one, two and three
//! operands), DIV/IDIV (guarded against #DE), CBW/CWDE/CWD/CDQ, XCHG, BSWAP, BT/BTS/BTR/BTC,
//! BSF/BSR, SHLD/SHRD, XADD, CMPXCHG, MOV from segment registers, PUSH/POP (registers,
//! immediates, memory), PUSHFD, LAHF/SAHF, CLC/STC/CMC, CALL of small functions that return
//! with RET or RET imm16, forward Jcc (all 16 conditions) and JMP over a few instructions, and
//! MOVS/STOS/LODS/CMPS/SCAS with REP/REPE/REPNE, either direction. Operands are 8-, 16- (0x66)
//! and 32-bit, registers (AL..BH too) or memory in every addressing form ([disp32],
//! [base + disp8/32], [base + index * scale + disp], [index * scale + disp32], ESP-relative),
//! some with a segment override (FS and GS have bases of their own).
//!
//! The programs are hand-encoded here (a small ModR/M + SIB encoder), so a failing seed can be
//! dumped, disassembled (`objdump -D -b binary -mi386 -M intel`, code at [`CODE`]) and cut
//! down ([`minimise`]). Layout, the same linear (= physical) addresses in both [`Mode`]s:
//!
//! ```text
//! 0x1000 ..        code: prologue, loop, exit, then the called functions (well below 0x8000)
//! 0x8000 .. 0xC000 data: random bytes; random memory operands land in here
//! 0xC000           the page a walking pointer runs onto (a fault in some programs)
//! 0xD000           the loop counter, the walking pointer, the divisor that counts down
//! .. 0xF000        the stack (ESP-relative operands land just above ESP)
//! ```
//!
//! Memory operands stay inside the data area whatever the registers hold: just before an
//! instruction that addresses memory through registers, the generator masks its base and index
//! registers (AND, MOVZX) and adds the data area's offset in the operand's segment, so the
//! address changes from pass to pass with the registers but never leaves the area.
//!
//! Some programs end in a fault in the middle of the loop, once the tier runs it compiled
//! ([`Planned`]): a divisor that counts down to zero (#DE), and in the paged mode a pointer
//! that walks one step per pass onto a page that is not present, supervisor-only or
//! read-only (#PF), or past a segment limit (#GP). In the flat mode a pointer walks past the
//! end of RAM instead (no fault: reads see open bus). Every exception vector leads to a HLT of
//! its own, so where the CPU halted says what happened ([`outcome`]).

use super::Engine;
use crate::cpu::protected::{null_cache, Descriptor};
use crate::cpu::{
    Cpu, RunExit, Segment, TableReg, CR0_ET, CR0_PE, CR0_PG, EAX, EBP, EBX, ECX, EDI, EDX, ESI, ESP,
};

/// Where the code is loaded (and starts).
pub const CODE: u32 = 0x1000;
/// The code must end below this address.
pub const CODE_END: u32 = 0x8000;
/// The data area every random memory operand lands in.
pub const DATA: u32 = 0x8000;
pub const DATA_END: u32 = 0xC000;
/// The page after the data area, which the walking pointer reaches (a fault in some programs).
pub const FAULT_PAGE: u32 = 0xC000;
/// The loop counter (counts down to 0).
pub const COUNTER: u32 = 0xD000;
/// The walking pointer (grows by a fixed stride every pass).
pub const WALK: u32 = 0xD004;
/// The divisor that counts down (by 1 every pass).
pub const DIVISOR: u32 = 0xD008;
/// The initial stack pointer.
pub const STACK_TOP: u32 = 0xF000;
/// The bases of FS and GS (the program loads them in its prologue).
const FS_BASE: u32 = 0x2000;
const GS_BASE: u32 = 0x7000;
/// Base registers of memory operands are masked to this, plus the data area's offset.
const BASE_MASK: u32 = 0x1FFF;
/// Where masked base registers start: room below for negative displacements.
const BASE_START: u32 = DATA + 0x100;
/// Index registers are masked to this (times the scale, at most 8).
const INDEX_MASK: u32 = 0x1FF;

/// Flat mode: the HLT #DE goes to (set by `sample::cpu_running`), and the HLTs every other
/// vector goes to (0x0E00 + vector; the environment points the real-mode IVT at them).
const FLAT_DE_HANDLER: u32 = 0x0F00;
const FLAT_HANDLERS: u32 = 0x0E00;

/// Paged mode: system structures, on supervisor pages.
const PAGE_DIR: u32 = 0x10000;
const PAGE_TABLE: u32 = 0x11000;
const GDT: u32 = 0x12000;
const IDT: u32 = 0x12800;
const TSS: u32 = 0x13000;
/// A HLT for every vector at HANDLERS + vector.
const HANDLERS: u32 = 0x14000;
const KERNEL_STACK_TOP: u32 = 0x16000;
/// RAM up to here holds everything a paged program's run may change but the walked-past
/// RAM of a flat program: compared after every slice.
const COMPARED_RAM: usize = 0x17000;
/// Paged mode: the program ends with INT EXIT_VECTOR (HLT would fault at CPL 3).
pub const EXIT_VECTOR: u8 = 0x30;

// Paged mode's GDT selectors.
const CODE0: u16 = 0x08;
const DATA0: u16 = 0x10;
const CODE3: u16 = 0x18 | 3;
const DATA3: u16 = 0x20 | 3;
const TSS_SEL: u16 = 0x28;
const FS3: u16 = 0x30 | 3;
const GS3: u16 = 0x38 | 3;

// Page-table entry bits.
const PTE_P: u32 = 1;
const PTE_RW: u32 = 2;
const PTE_US: u32 = 4;

/// The environment a program runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `sample::cpu_running`: real mode with flat 4 GiB segments (unreal mode), CPL 0, no
    /// paging; exceptions go through the real-mode IVT.
    Flat,
    /// Protected mode with paging on, the program at CPL 3 with flat segments (FS and GS with
    /// other bases), exceptions through interrupt gates to ring 0.
    Paged,
}

/// How the program is meant to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Planned {
    /// After its last pass: HLT (flat) or INT [`EXIT_VECTOR`] (paged).
    Exit,
    /// #DE: a divisor counts down to zero.
    DivideByZero,
    /// Flat mode: a pointer walks past the end of RAM (reads there see open bus, writes are
    /// dropped); the program still exits normally.
    BeyondRam,
    /// #PF: the pointer walks onto a page that is not present ...
    PageNotPresent,
    /// ... a supervisor-only page ...
    PageSupervisor,
    /// ... or a read-only page (the walking instruction writes).
    PageReadOnly,
    /// #GP: the pointer walks past FS's limit.
    SegmentLimit,
}

/// A generated program.
#[derive(Clone, Debug)]
pub struct Program {
    pub seed: u64,
    pub mode: Mode,
    pub planned: Planned,
    /// Machine code, loaded at [`CODE`].
    pub code: Vec<u8>,
    /// The data area's initial bytes, loaded at [`DATA`].
    pub data: Vec<u8>,
    /// Passes of the loop, if nothing faults.
    pub iterations: u32,
    /// The pass in which the planned fault happens (counting from 0), if one is planned.
    pub fault_pass: Option<u32>,
    /// Random units generated (see [`program_without`]).
    pub units: usize,
    /// The address of the instruction that ends the program (HLT or INT).
    pub exit: u32,
}

impl Program {
    /// Code and data as one image to load at [`CODE`].
    pub fn image(&self) -> Vec<u8> {
        let mut image = self.code.clone();
        image.resize((DATA - CODE) as usize, 0);
        image.extend_from_slice(&self.data);
        image
    }

    /// The code as hex, 32 bytes a line (for reproducing a failure).
    pub fn hex(&self) -> String {
        self.code
            .chunks(32)
            .map(|line| line.iter().map(|b| format!("{b:02x}")).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The program's exit instruction ran.
    Exit,
    /// An exception with this vector was delivered (and its handler's HLT ran), with its error
    /// code if it has one.
    Exception { vector: u8, error: Option<u32> },
    /// Halted somewhere else, or shut down: a bug in the program or the environment.
    Elsewhere { eip: u32, shutdown: bool },
}

/// A small xorshift64* generator: the same numbers on every host.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // SplitMix64 of the seed, so that neighbouring seeds start far apart (never 0).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// 0 ..= n - 1 (n > 0).
    pub fn below(&mut self, n: u32) -> u32 {
        ((self.next_u32() as u64 * n as u64) >> 32) as u32
    }

    /// lo ..= hi.
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below(hi - lo + 1)
    }

    /// True `percent` times in 100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u32) as usize]
    }

    /// A value for a register or an immediate: often small or at an edge, mostly random.
    pub fn value(&mut self) -> u32 {
        match self.below(10) {
            0 => self.below(16),
            1 => self.pick(&[
                0,
                1,
                2,
                0x7F,
                0x80,
                0xFF,
                0x100,
                0x7FFF,
                0x8000,
                0xFFFF,
                0x1_0000,
                0x7FFF_FFFF,
                0x8000_0000,
                0xFFFF_FFFF,
                0xFFFF_FFFE,
                0x8000_0001,
            ]),
            2 => self.below(16).wrapping_neg(),
            3 => self.next_u32() & 0xFF,
            _ => self.next_u32(),
        }
    }
}

/// A segment-override prefix's segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seg {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
}

impl Seg {
    fn prefix(self) -> u8 {
        match self {
            Seg::Es => 0x26,
            Seg::Cs => 0x2E,
            Seg::Ss => 0x36,
            Seg::Ds => 0x3E,
            Seg::Fs => 0x64,
            Seg::Gs => 0x65,
        }
    }

    fn base(self) -> u32 {
        match self {
            Seg::Fs => FS_BASE,
            Seg::Gs => GS_BASE,
            _ => 0,
        }
    }
}

/// A memory operand: `seg:[base + index * (1 << scale) + disp]`.
#[derive(Clone, Copy, Debug)]
struct Mem {
    base: Option<u8>,
    /// Register and scale (log2).
    index: Option<(u8, u8)>,
    disp: i32,
    /// A segment-override prefix.
    seg: Option<Seg>,
    /// Encode the displacement in 32 bits even if it fits in 8.
    wide: bool,
}

/// A ModR/M operand: a register or memory.
#[derive(Clone, Copy, Debug)]
enum Rm {
    Reg(u8),
    Mem(Mem),
}

/// How an instruction accesses its memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    /// Read, then write (a read-modify-write).
    Modify,
}

/// Registers an instruction may write: all but ESP.
const WRITABLE: [u8; 7] = [0, 1, 2, 3, 5, 6, 7];

/// Shift and rotate counts: the edges of every width, and past them.
const COUNTS: [u8; 22] = [
    0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 63, 64, 65, 127, 128, 200, 255,
];

/// Most values pushed and not yet popped at once (the stack-relative stores stay above them).
const MAX_PUSHED: usize = 6;
/// Stack-relative stores go at least this far above ESP: above everything the program keeps on
/// the stack (its own pushes, a function's arguments and return address, and its pushes).
const STACK_STORE_MIN: i32 = 0x50;

/// The generator's state.
struct Gen {
    rng: Rng,
    mode: Mode,
    out: Vec<u8>,
    /// CALL rel32 fields to fill in: (offset in `out`, function).
    calls: Vec<(usize, usize)>,
    /// The functions' argument counts (each pops its own with RET imm16).
    funcs: Vec<u32>,
    /// Sizes of the values pushed and not yet popped.
    pushed: Vec<u8>,
    /// Conditional jumps the current instruction is inside (forward skips).
    skip_depth: u32,
    /// Generating a function's body (no calls).
    in_func: bool,
    /// Units generated so far (see [`program_without`]).
    units: usize,
    /// Units to leave out.
    drop: std::collections::BTreeSet<usize>,
}

/// Generate the program for `seed` in `mode`.
pub fn program(seed: u64, mode: Mode) -> Program {
    program_without(seed, mode, &Default::default())
}

/// The program for `seed` in `mode` without the units (the random instructions with what they
/// need before them, numbered from 0 in the order generated: the functions' first, then the
/// loop's; [`Program::units`] counts them) in `drop`. Everything else stays as it was, but
/// for the stack: a POP whose PUSH was dropped goes too, or pops something else. For cutting
/// a failing program down.
pub fn program_without(seed: u64, mode: Mode, drop: &std::collections::BTreeSet<usize>) -> Program {
    let mut g = Gen {
        rng: Rng::new(seed),
        mode,
        out: Vec::new(),
        calls: Vec::new(),
        funcs: Vec::new(),
        pushed: Vec::new(),
        skip_depth: 0,
        in_func: false,
        units: 0,
        drop: drop.clone(),
    };
    g.program(seed)
}

impl Gen {
    // ---- Encoding ----

    fn b(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn imm(&mut self, v: u32, size: u8) {
        self.out
            .extend_from_slice(&v.to_le_bytes()[..size as usize]);
    }

    /// The ModR/M byte (and SIB and displacement) for `reg` (a register or an opcode
    /// extension) and `rm`.
    fn modrm(&mut self, reg: u8, rm: Rm) {
        let m = match rm {
            Rm::Reg(r) => return self.b(&[0xC0 | reg << 3 | r]),
            Rm::Mem(m) => m,
        };
        match (m.base, m.index) {
            (None, None) => {
                self.b(&[reg << 3 | 5]);
                self.imm(m.disp as u32, 4);
            }
            (None, Some((i, s))) => {
                self.b(&[reg << 3 | 4, s << 6 | i << 3 | 5]);
                self.imm(m.disp as u32, 4);
            }
            (Some(base), index) => {
                let md = if m.disp == 0 && base != EBP as u8 && !m.wide {
                    0
                } else if m.disp == m.disp as i8 as i32 && !m.wide {
                    1
                } else {
                    2
                };
                if index.is_some() || base == ESP as u8 {
                    // No index: index field 100; the scale bits are then ignored.
                    let (i, s) = index.unwrap_or((4, self.rng.below(4) as u8));
                    self.b(&[md << 6 | reg << 3 | 4, s << 6 | i << 3 | base]);
                } else {
                    self.b(&[md << 6 | reg << 3 | base]);
                }
                match md {
                    1 => self.b(&[m.disp as u8]),
                    2 => self.imm(m.disp as u32, 4),
                    _ => {}
                }
            }
        }
    }

    /// An instruction with a ModR/M operand: the segment prefix of a memory operand and the
    /// operand-size prefix if `size` is 2 (in either order), `opcode`, ModR/M and `imm`.
    fn op(&mut self, size: u8, opcode: &[u8], reg: u8, rm: Rm, imm: Option<(u32, u8)>) {
        let mut prefixes = Vec::with_capacity(2);
        if let Rm::Mem(Mem { seg: Some(s), .. }) = rm {
            prefixes.push(s.prefix());
        }
        if size == 2 {
            prefixes.push(0x66);
        }
        if self.rng.chance(50) {
            prefixes.reverse();
        }
        self.b(&prefixes);
        self.b(opcode);
        self.modrm(reg, rm);
        if let Some((v, n)) = imm {
            self.imm(v, n);
        }
    }

    fn p66(&mut self, size: u8) {
        if size == 2 {
            self.b(&[0x66]);
        }
    }

    /// `opcode` for byte operands, `opcode + 1` for word and dword.
    fn w(opcode: u8, size: u8) -> u8 {
        opcode + (size != 1) as u8
    }

    /// Immediate bytes for a full-size immediate of an operand of `size`.
    fn isz(size: u8) -> u8 {
        size.min(4)
    }

    fn mov_imm32(&mut self, r: u8, v: u32) {
        self.b(&[0xB8 + r]);
        self.imm(v, 4);
    }

    fn and_imm32(&mut self, r: u8, mask: u32) {
        if r == EAX as u8 && self.rng.chance(30) {
            self.b(&[0x25]);
        } else {
            self.b(&[0x81, 0xE0 | r]);
        }
        self.imm(mask, 4);
    }

    fn add_imm32(&mut self, r: u8, v: u32) {
        if r == EAX as u8 && self.rng.chance(30) {
            self.b(&[0x05]);
        } else {
            self.b(&[0x81, 0xC0 | r]);
        }
        self.imm(v, 4);
    }

    /// `op dword [addr]` with a /digit opcode (`FF /1`: DEC ...), absolute address.
    fn op_abs(&mut self, opcode: u8, digit: u8, addr: u32) {
        self.b(&[opcode, digit << 3 | 5]);
        self.imm(addr, 4);
    }

    // ---- Operands ----

    /// A register an instruction of `size` may write.
    fn dst(&mut self, size: u8) -> u8 {
        if size == 1 {
            self.rng.below(8) as u8
        } else {
            self.rng.pick(&WRITABLE)
        }
    }

    /// A register an instruction of `size` reads (ESP now and then).
    fn src(&mut self, size: u8) -> u8 {
        if size == 1 || self.rng.chance(8) {
            self.rng.below(8) as u8
        } else {
            self.rng.pick(&WRITABLE)
        }
    }

    fn size(&mut self) -> u8 {
        match self.rng.below(10) {
            0..=2 => 1,
            3..=4 => 2,
            _ => 4,
        }
    }

    /// Make `r` hold `offset` plus a few KiB, from its current value.
    fn fix_base(&mut self, r: u8, offset: u32) {
        match self.rng.below(5) {
            0 => {
                self.and_imm32(r, BASE_MASK);
                // LEA r, [r + offset]
                self.b(&[0x8D, 0x80 | r << 3 | r]);
                self.imm(offset, 4);
            }
            1 => {
                let v = offset.wrapping_add(self.rng.below(BASE_MASK + 1));
                self.mov_imm32(r, v);
            }
            2 if r < 4 => {
                // MOVZX r, r8 (the low byte)
                self.b(&[0x0F, 0xB6, 0xC0 | r << 3 | r]);
                self.add_imm32(r, offset);
            }
            _ => {
                self.and_imm32(r, BASE_MASK);
                self.add_imm32(r, offset);
            }
        }
    }

    /// Make `r` a small index.
    fn fix_index(&mut self, r: u8) {
        match self.rng.below(3) {
            0 if r < 4 => self.b(&[0x0F, 0xB6, 0xC0 | r << 3 | r]),
            1 => {
                let v = self.rng.below(INDEX_MASK + 1);
                self.mov_imm32(r, v);
            }
            _ => self.and_imm32(r, INDEX_MASK),
        }
    }

    /// A memory operand inside the data area (or just above ESP), emitting the instructions
    /// that put its registers in range first. `avoid`: registers (bit mask) it must not use.
    fn mem(&mut self, access: Access, avoid: u8) -> Mem {
        let writes = access != Access::Read;
        let seg = if self.rng.chance(20) {
            let s = self
                .rng
                .pick(&[Seg::Es, Seg::Cs, Seg::Ss, Seg::Ds, Seg::Fs, Seg::Gs]);
            // CS is not writable in protected mode.
            (!(writes && s == Seg::Cs)).then_some(s)
        } else {
            None
        };
        let seg_base = seg.map_or(0, Seg::base);
        let wide = self.rng.chance(15);
        let form = self.rng.below(100);
        if form < 12 {
            // [disp32]
            let addr = self.rng.range(DATA, DATA_END - 8);
            return Mem {
                base: None,
                index: None,
                disp: addr.wrapping_sub(seg_base) as i32,
                seg,
                wide: true,
            };
        }
        if form < 20 && seg_base == 0 {
            // [ESP + disp]: stores only well above everything pushed.
            let lo = if writes { STACK_STORE_MIN } else { 0 };
            return Mem {
                base: Some(ESP as u8),
                index: None,
                disp: self.rng.range(lo as u32, 0x7C) as i32,
                seg,
                wide,
            };
        }
        let choices: Vec<u8> = WRITABLE
            .iter()
            .copied()
            .filter(|&r| avoid & (1 << r) == 0)
            .collect();
        let disp = match self.rng.below(4) {
            0 => 0,
            1 | 2 => self.rng.range(0, 255) as i32 - 128,
            _ => self.rng.range(0, 0x200) as i32 - 0x100,
        };
        let with_index = choices.len() > 1 && self.rng.chance(40);
        if form < 28 && with_index {
            // [index * scale + disp32]: no base.
            let i = self.rng.pick(&choices);
            self.fix_index(i);
            let addr = BASE_START + self.rng.below(BASE_MASK);
            return Mem {
                base: None,
                index: Some((i, self.rng.below(4) as u8)),
                disp: addr.wrapping_sub(seg_base) as i32,
                seg,
                wide: true,
            };
        }
        let base = self.rng.pick(&choices);
        let index = if with_index {
            let others: Vec<u8> = choices.iter().copied().filter(|&r| r != base).collect();
            let i = self.rng.pick(&others);
            Some((i, self.rng.below(4) as u8))
        } else {
            None
        };
        self.fix_base(base, BASE_START.wrapping_sub(seg_base));
        if let Some((i, _)) = index {
            self.fix_index(i);
        }
        // EBP addresses through SS by default; an explicit SS or DS is the same (base 0).
        Mem {
            base: Some(base),
            index,
            disp,
            seg,
            wide,
        }
    }

    /// A register (one an instruction may write if it does) or memory operand.
    fn rm(&mut self, size: u8, access: Access, avoid: u8) -> Rm {
        if self.rng.chance(45) {
            Rm::Mem(self.mem(access, avoid))
        } else if access == Access::Read {
            Rm::Reg(self.src(size))
        } else {
            Rm::Reg(self.dst(size))
        }
    }

    // ---- Program ----

    fn program(&mut self, seed: u64) -> Program {
        let planned = {
            let r = self.rng.below(100);
            match self.mode {
                Mode::Flat if r < 17 => Planned::DivideByZero,
                Mode::Flat if r < 25 => Planned::BeyondRam,
                Mode::Paged if r < 5 => Planned::DivideByZero,
                Mode::Paged if r < 10 => Planned::PageNotPresent,
                Mode::Paged if r < 15 => Planned::PageSupervisor,
                Mode::Paged if r < 20 => Planned::PageReadOnly,
                Mode::Paged if r < 25 => Planned::SegmentLimit,
                _ => Planned::Exit,
            }
        };
        let iterations = self.rng.range(100, 400);

        // Functions first (their code goes after the exit).
        let mut func_code = Vec::new();
        for _ in 0..self.rng.below(4) {
            let args = self.rng.below(3);
            self.in_func = true;
            let saved = std::mem::take(&mut self.out);
            for _ in 0..self.rng.range(1, 8) {
                self.unit();
            }
            self.pop_all();
            if args > 0 || self.rng.chance(20) {
                self.b(&[0xC2]);
                self.imm(args * 4, 2);
            } else {
                self.b(&[0xC3]);
            }
            func_code.push(std::mem::replace(&mut self.out, saved));
            self.funcs.push(args);
            self.in_func = false;
        }

        self.prologue();
        // What the fault needs: the first pass it happens in, and how.
        let fault_pass = self.rng.range(2, (iterations - 1).min(250));
        let walk = matches!(
            planned,
            Planned::BeyondRam
                | Planned::PageNotPresent
                | Planned::PageSupervisor
                | Planned::PageReadOnly
                | Planned::SegmentLimit
        );
        let stride = match planned {
            Planned::BeyondRam => self.rng.range(0x40, 0x800),
            _ => self.rng.range(1, 48),
        };
        let loop_top = self.out.len();
        let units = self.rng.range(5, 40);
        let fault_at = self.rng.below(units + 1);
        let mut walk_start = 0;
        for n in 0..=units {
            if n == fault_at {
                if walk {
                    walk_start = self.walking_access(planned, fault_pass, stride);
                } else if planned == Planned::DivideByZero {
                    self.divide_by_countdown();
                }
            }
            if n < units {
                self.unit();
            }
        }
        self.pop_all();
        if walk {
            if stride < 0x80 && self.rng.chance(50) {
                self.op_abs(0x83, 0, WALK);
                self.b(&[stride as u8]);
            } else {
                self.op_abs(0x81, 0, WALK);
                self.imm(stride, 4);
            }
        }
        if planned == Planned::DivideByZero {
            self.op_abs(0xFF, 1, DIVISOR); // DEC dword [DIVISOR]
        }
        // The loop's end: counter - 1, JNZ.
        match self.rng.below(3) {
            0 => self.op_abs(0xFF, 1, COUNTER), // DEC dword [COUNTER]
            1 => {
                self.b(&[0x8B, 0x0D]); // MOV ECX, [COUNTER]
                self.imm(COUNTER, 4);
                self.b(&[0x49]); // DEC ECX
                self.b(&[0x89, 0x0D]); // MOV [COUNTER], ECX
                self.imm(COUNTER, 4);
            }
            _ => {
                self.op_abs(0x83, 5, COUNTER); // SUB dword [COUNTER], 1
                self.b(&[1]);
            }
        }
        self.jump_back(0x5, loop_top);
        let exit = CODE + self.out.len() as u32;
        match self.mode {
            Mode::Flat => self.b(&[0xF4]),
            Mode::Paged => self.b(&[0xCD, EXIT_VECTOR, 0xF4]),
        }

        // The functions, and the calls to them.
        let mut func_at = Vec::new();
        for f in func_code {
            func_at.push(self.out.len());
            self.out.extend(f);
        }
        for &(at, f) in &self.calls {
            let rel = func_at[f] as i32 - (at as i32 + 4);
            self.out[at..at + 4].copy_from_slice(&rel.to_le_bytes());
        }
        assert!(
            CODE as usize + self.out.len() < CODE_END as usize,
            "the program outgrew its area"
        );

        // The data area: random bytes.
        let mut data: Vec<u8> = (0..DATA_END - DATA)
            .map(|_| self.rng.next_u32() as u8)
            .collect();
        // Runs of zeros and 0xFF here and there (zero divisors, BSF of 0, REPE matches).
        for _ in 0..8 {
            let at = self.rng.below(DATA_END - DATA - 64) as usize;
            let len = self.rng.range(4, 64) as usize;
            let v = self.rng.pick(&[0u8, 0xFF]);
            data[at..at + len].fill(v);
        }
        let mut code = std::mem::take(&mut self.out);
        // The prologue's placeholders: counter, walking pointer, divisor.
        patch(&mut code, 0xC0DE_0001, iterations);
        patch(&mut code, 0xC0DE_0002, walk_start);
        patch(&mut code, 0xC0DE_0003, fault_pass);
        Program {
            seed,
            mode: self.mode,
            planned,
            code,
            data,
            iterations,
            fault_pass: matches!(
                planned,
                Planned::DivideByZero
                    | Planned::PageNotPresent
                    | Planned::PageSupervisor
                    | Planned::PageReadOnly
                    | Planned::SegmentLimit
            )
            .then_some(fault_pass),
            units: self.units,
            exit,
        }
    }

    /// Segment registers, general registers, and the counters (placeholders patched later).
    fn prologue(&mut self) {
        let (fs, gs) = match self.mode {
            Mode::Flat => ((FS_BASE >> 4) as u16, (GS_BASE >> 4) as u16),
            Mode::Paged => (FS3, GS3),
        };
        // MOV EAX, sel; MOV FS, AX / MOV GS, AX
        self.mov_imm32(EAX as u8, fs as u32);
        self.b(&[0x8E, 0xE0]);
        self.mov_imm32(EAX as u8, gs as u32);
        self.b(&[0x8E, 0xE8]);
        for (addr, placeholder) in [
            (COUNTER, 0xC0DE_0001u32),
            (WALK, 0xC0DE_0002),
            (DIVISOR, 0xC0DE_0003),
        ] {
            // MOV dword [addr], imm32
            self.b(&[0xC7, 0x05]);
            self.imm(addr, 4);
            self.imm(placeholder, 4);
        }
        let mut regs = WRITABLE;
        for i in (1..regs.len()).rev() {
            let j = self.rng.below(i as u32 + 1) as usize;
            regs.swap(i, j);
        }
        for r in regs {
            let v = self.rng.value();
            self.mov_imm32(r, v);
        }
    }

    /// JNZ (or Jcc `cc`) back to `target`, short if it reaches.
    fn jump_back(&mut self, cc: u8, target: usize) {
        let rel8 = target as i64 - (self.out.len() as i64 + 2);
        if rel8 >= -128 && self.rng.chance(80) {
            self.b(&[0x70 + cc, rel8 as u8]);
        } else {
            let rel32 = target as i64 - (self.out.len() as i64 + 6);
            self.b(&[0x0F, 0x80 + cc]);
            self.imm(rel32 as u32, 4);
        }
    }

    /// POP everything pushed and not yet popped.
    fn pop_all(&mut self) {
        while let Some(size) = self.pushed.pop() {
            let r = self.rng.pick(&WRITABLE);
            self.p66(size);
            self.b(&[0x58 + r]);
        }
    }

    /// The #DE: divide by the countdown (it reaches 0 in pass `fault_pass`).
    fn divide_by_countdown(&mut self) {
        // DIV after XOR EDX, EDX, or IDIV after CDQ: only a zero divisor faults.
        let digit = self.rng.pick(&[6u8, 7]);
        let high: &[u8] = if digit == 6 { &[0x31, 0xD2] } else { &[0x99] };
        match self.rng.below(4) {
            0 => {
                // MOV r, [DIVISOR]; XOR EDX, EDX; DIV r
                let r = self
                    .rng
                    .pick(&[ECX as u8, EBX as u8, EBP as u8, ESI as u8, EDI as u8]);
                self.b(&[0x8B, r << 3 | 5]);
                self.imm(DIVISOR, 4);
                self.b(high);
                self.b(&[0xF7, 0xC0 | digit << 3 | r]);
            }
            1 => {
                self.b(high);
                self.op_abs(0xF7, digit, DIVISOR);
            }
            2 => {
                // XOR DX, DX; DIV word [DIVISOR]
                self.b(&[0x66, 0x31, 0xD2, 0x66]);
                self.op_abs(0xF7, 6, DIVISOR);
            }
            _ => {
                // MOVZX EAX, AL; DIV byte [DIVISOR] (quotient <= 255, fits)
                self.b(&[0x0F, 0xB6, 0xC0]);
                self.op_abs(0xF6, 6, DIVISOR);
            }
        }
    }

    /// The access that walks: a pointer from [WALK] (which grows by `stride` each pass) in a
    /// random instruction whose access first crosses the boundary in pass `fault_pass`.
    /// Returns the pointer's initial value.
    fn walking_access(&mut self, planned: Planned, fault_pass: u32, stride: u32) -> u32 {
        let string = self.rng.chance(25);
        // The boundary in the operand's segment; the segment.
        let (boundary, seg) = match planned {
            Planned::BeyondRam => (0x10_0000, None),
            Planned::SegmentLimit => (DATA_END - FS_BASE, Some(Seg::Fs)),
            // Only a string instruction's source (ESI) can have a segment override, and a
            // read-only page faults only on its destination (ES:EDI).
            Planned::PageReadOnly if string => (FAULT_PAGE, None),
            _ => {
                let s = self
                    .rng
                    .pick(&[None, None, Some(Seg::Ds), Some(Seg::Es), Some(Seg::Gs)]);
                (FAULT_PAGE - s.map_or(0, Seg::base), s)
            }
        };
        // Read-only pages fault only on writes.
        let access = if planned == Planned::PageReadOnly {
            self.rng.pick(&[Access::Write, Access::Modify])
        } else {
            self.rng
                .pick(&[Access::Read, Access::Write, Access::Modify])
        };
        let extent = if string {
            self.walking_string(access, seg)
        } else {
            let r = self.rng.pick(&WRITABLE);
            // MOV r, [WALK]
            self.b(&[0x8B, r << 3 | 5]);
            self.imm(WALK, 4);
            let size = self.size();
            let disp = self.rng.below(16) as i32;
            let m = Mem {
                base: Some(r),
                index: None,
                disp,
                seg,
                wide: self.rng.chance(15),
            };
            self.mem_op(m, size, access);
            disp as u32 + size as u32
        };
        // The pointer crosses in pass `fault_pass`: start + pass * stride + extent - 1 is
        // the last byte touched.
        let j = self.rng.below(stride);
        (boundary + 1 + j)
            .wrapping_sub(extent)
            .wrapping_sub(fault_pass * stride)
    }

    /// A string instruction whose walking pointer is ESI (reads) or EDI (writes). Returns how
    /// many bytes past the pointer it touches.
    fn walking_string(&mut self, access: Access, seg: Option<Seg>) -> u32 {
        // A segment override applies to the source (ESI) only.
        let reads = access == Access::Read || seg == Some(Seg::Fs) || seg == Some(Seg::Gs);
        let size = self.rng.pick(&[1u8, 2, 4]);
        let count = self.rng.range(1, 24);
        let w = Self::w(0, size);
        self.b(&[0xFC]); // CLD
                         // ECX = count.
        self.mov_imm32(ECX as u8, count);
        let walker = if reads { ESI } else { EDI } as u8;
        self.b(&[0x8B, walker << 3 | 5]); // MOV walker, [WALK]
        self.imm(WALK, 4);
        let other = if reads { EDI } else { ESI } as u8;
        self.fix_base(other, BASE_START);
        let mut prefixes = Vec::new();
        if let Some(s) = seg {
            prefixes.push(s.prefix());
        }
        if size == 2 {
            prefixes.push(0x66);
        }
        let opcode = if reads {
            match self.rng.below(3) {
                0 => {
                    prefixes.push(0xF3);
                    0xA4 // REP MOVS (source walks)
                }
                1 => {
                    prefixes.push(self.rng.pick(&[0xF3, 0xF2]));
                    0xA6 // REPE/REPNE CMPS
                }
                _ => {
                    prefixes.push(0xF3);
                    0xAC // REP LODS
                }
            }
        } else {
            prefixes.push(0xF3);
            self.rng.pick(&[0xA4, 0xAA]) // REP MOVS, REP STOS (destination walks)
        };
        self.b(&prefixes);
        self.b(&[opcode + w]);
        count * size as u32
    }

    /// One random instruction (or a few) accessing memory operand `m` of `size` as `access`
    /// says. Nothing it runs before the access writes a register.
    fn mem_op(&mut self, m: Mem, size: u8, access: Access) {
        let rm = Rm::Mem(m);
        let s = size;
        let w = |op: u8| Self::w(op, s);
        let isz = Self::isz(s);
        match access {
            Access::Read => match self.rng.below(11) {
                0 => {
                    let r = self.dst(s);
                    self.op(s, &[w(0x8A)], r, rm, None);
                }
                1 => {
                    let (op, r) = (self.rng.below(8) as u8, self.dst(s));
                    self.op(s, &[w(0x02 + op * 8)], r, rm, None);
                }
                2 => {
                    let v = self.rng.value();
                    if s != 1 && self.rng.chance(50) {
                        self.op(s, &[0x83], 7, rm, Some((v, 1)));
                    } else {
                        self.op(s, &[w(0x80)], 7, rm, Some((v, isz)));
                    }
                }
                3 => {
                    let r = self.src(s);
                    let opcode = self.rng.pick(&[w(0x38), w(0x84)]);
                    self.op(s, &[opcode], r, rm, None);
                }
                4 => {
                    let v = self.rng.value();
                    self.op(s, &[w(0xF6)], 0, rm, Some((v, isz)));
                }
                5 if s != 4 => {
                    let r = self.rng.pick(&WRITABLE);
                    let opcode = self.rng.pick(&[0xB6, 0xBE]) + (s == 2) as u8;
                    self.op(4, &[0x0F, opcode], r, rm, None);
                }
                6 if s != 1 => {
                    let (cc, r) = (self.rng.below(16) as u8, self.rng.pick(&WRITABLE));
                    self.op(s, &[0x0F, 0x40 + cc], r, rm, None);
                }
                7 if s != 1 => {
                    let bit = self.rng.next_u32() as u8;
                    self.op(s, &[0x0F, 0xBA], 4, rm, Some((bit as u32, 1)));
                }
                8 => {
                    let digit = self.rng.pick(&[4u8, 5]);
                    self.op(s, &[w(0xF6)], digit, rm, None);
                }
                9 if s != 1 => {
                    let (r, v) = (self.rng.pick(&WRITABLE), self.rng.value());
                    if self.rng.chance(50) {
                        self.op(s, &[0x6B], r, rm, Some((v, 1)));
                    } else {
                        self.op(s, &[0x69], r, rm, Some((v, isz)));
                    }
                }
                10 if s != 1 => {
                    // PUSH m; POP r
                    self.op(s, &[0xFF], 6, rm, None);
                    let r = self.rng.pick(&WRITABLE);
                    self.p66(s);
                    self.b(&[0x58 + r]);
                }
                _ => {
                    let r = self.dst(s);
                    self.op(s, &[w(0x8A)], r, rm, None);
                }
            },
            Access::Write => match self.rng.below(5) {
                0 | 1 => {
                    let r = self.src(s);
                    self.op(s, &[w(0x88)], r, rm, None);
                }
                2 => {
                    let v = self.rng.value();
                    self.op(s, &[w(0xC6)], 0, rm, Some((v, isz)));
                }
                3 if s == 1 => {
                    let cc = self.rng.below(16) as u8;
                    self.op(1, &[0x0F, 0x90 + cc], 0, rm, None);
                }
                4 if s != 1 => {
                    // PUSH r; POP m (m's base register is not written before the POP)
                    let r = self.src(s);
                    self.p66(s);
                    self.b(&[0x50 + r]);
                    self.op(s, &[0x8F], 0, rm, None);
                }
                _ => {
                    // MOV m16, Sreg
                    let sreg = self.rng.below(6) as u8;
                    self.op(2, &[0x8C], sreg, rm, None);
                }
            },
            Access::Modify => match self.rng.below(9) {
                0 => {
                    let (op, r) = (self.rng.below(7) as u8, self.src(s));
                    self.op(s, &[w(op * 8)], r, rm, None);
                }
                1 => {
                    let (op, v) = (self.rng.below(7) as u8, self.rng.value());
                    if s != 1 && self.rng.chance(50) {
                        self.op(s, &[0x83], op, rm, Some((v, 1)));
                    } else {
                        self.op(s, &[w(0x80)], op, rm, Some((v, isz)));
                    }
                }
                2 => {
                    let digit = self.rng.below(2) as u8;
                    self.op(s, &[w(0xFE)], digit, rm, None);
                }
                3 => {
                    let digit = self.rng.pick(&[2u8, 3]);
                    self.op(s, &[w(0xF6)], digit, rm, None);
                }
                4 => {
                    // A shift or rotate by a count that is not 0 (mod 32): it writes.
                    let digit = self.rng.below(8) as u8;
                    let count = self.rng.range(1, 31);
                    if count == 1 && self.rng.chance(50) {
                        self.op(s, &[w(0xD0)], digit, rm, None);
                    } else {
                        self.op(s, &[w(0xC0)], digit, rm, Some((count, 1)));
                    }
                }
                5 => {
                    let r = self.dst(s);
                    self.op(s, &[w(0x86)], r, rm, None);
                }
                6 if s != 1 => {
                    let (digit, bit) = (self.rng.range(5, 7) as u8, self.rng.next_u32());
                    self.op(s, &[0x0F, 0xBA], digit, rm, Some((bit & 0xFF, 1)));
                }
                7 => {
                    let r = self.dst(s);
                    self.op(s, &[0x0F, w(0xC0)], r, rm, None);
                }
                8 if s != 1 => {
                    let (r, count) = (self.src(s), self.rng.range(1, 15));
                    let opcode = self.rng.pick(&[0xA4, 0xAC]);
                    self.op(s, &[0x0F, opcode], r, rm, Some((count, 1)));
                }
                _ => {
                    let (op, r) = (self.rng.below(7) as u8, self.src(s));
                    self.op(s, &[w(op * 8)], r, rm, None);
                }
            },
        }
    }

    // ---- The instruction menu ----

    /// One random instruction, with whatever it needs before it (unless it is to be dropped).
    fn unit(&mut self) {
        let n = self.units;
        self.units += 1;
        let (at, calls, pushed) = (self.out.len(), self.calls.len(), self.pushed.clone());
        self.any_unit();
        if self.drop.contains(&n) {
            self.out.truncate(at);
            self.calls.truncate(calls);
            self.pushed = pushed;
        }
    }

    fn any_unit(&mut self) {
        loop {
            let done = match self.rng.below(31) {
                0 | 1 => self.mov(),
                2 => self.movx(),
                3 => self.lea(),
                4..=7 => self.alu(),
                8 => self.test(),
                9 => self.inc_dec(),
                10 => self.not_neg(),
                11 | 12 => self.shift(),
                13 => self.setcc_cmov(),
                14 => self.mul(),
                15 => self.div(),
                16 => self.convert(),
                17 => self.xchg_bswap(),
                18 => self.bit_test(),
                19 => self.bit_scan_shld(),
                20 => self.push(),
                21 => self.pop(),
                22 => self.call(),
                23 | 24 => self.skip(),
                25 => self.string(),
                26 => self.flags(),
                27 => self.xadd_cmpxchg(),
                28 => self.segment_moves(),
                29 => {
                    let (size, access) = (self.size(), self.rng.below(3));
                    let access = [Access::Read, Access::Write, Access::Modify][access as usize];
                    let m = self.mem(access, 0);
                    self.mem_op(m, size, access);
                    true
                }
                _ => {
                    self.b(&[0x90]);
                    true
                }
            };
            if done {
                return;
            }
        }
    }

    /// MOV in every form.
    fn mov(&mut self) -> bool {
        let s = self.size();
        let w = Self::w(0x88, s);
        match self.rng.below(6) {
            0 => {
                let rm = self.rm(s, Access::Write, 0);
                let r = self.src(s);
                self.op(s, &[w], r, rm, None);
            }
            1 => {
                let rm = self.rm(s, Access::Read, 0);
                let r = self.dst(s);
                self.op(s, &[w + 2], r, rm, None);
            }
            2 => {
                let rm = self.rm(s, Access::Write, 0);
                let v = self.rng.value();
                self.op(s, &[Self::w(0xC6, s)], 0, rm, Some((v, Self::isz(s))));
            }
            3 => {
                let (r, v) = (self.dst(s), self.rng.value());
                self.p66(s);
                let opcode = if s == 1 { 0xB0 } else { 0xB8 };
                self.b(&[opcode + r]);
                self.imm(v, Self::isz(s));
            }
            _ => {
                // MOV AL/AX/EAX, moffs and back.
                let seg = if self.rng.chance(20) {
                    Some(self.rng.pick(&[Seg::Es, Seg::Ds, Seg::Fs, Seg::Gs]))
                } else {
                    None
                };
                if let Some(s) = seg {
                    self.b(&[s.prefix()]);
                }
                self.p66(s);
                let opcode = Self::w(0xA0, s) + 2 * self.rng.below(2) as u8;
                let addr = self.rng.range(DATA, DATA_END - 4);
                self.b(&[opcode]);
                self.imm(addr.wrapping_sub(seg.map_or(0, Seg::base)), 4);
            }
        }
        true
    }

    /// MOVZX, MOVSX from bytes and words.
    fn movx(&mut self) -> bool {
        let src = self.rng.pick(&[1u8, 2]);
        let rm = self.rm(src, Access::Read, 0);
        let opcode = self.rng.pick(&[0xB6u8, 0xBE]) + (src == 2) as u8;
        // A 16-bit destination for byte sources now and then.
        let dsize = if src == 1 && self.rng.chance(25) {
            2
        } else {
            4
        };
        let r = self.dst(dsize);
        self.op(dsize, &[0x0F, opcode], r, rm, None);
        true
    }

    /// LEA with raw registers: it computes an address but does not access it.
    fn lea(&mut self) -> bool {
        let base = if self.rng.chance(85) {
            Some(self.rng.below(8) as u8)
        } else {
            None
        };
        let index = if self.rng.chance(50) {
            Some((
                self.rng.pick(&[0u8, 1, 2, 3, 5, 6, 7]),
                self.rng.below(4) as u8,
            ))
        } else {
            None
        };
        let disp = match self.rng.below(3) {
            0 => 0,
            1 => self.rng.range(0, 255) as i32 - 128,
            _ => self.rng.value() as i32,
        };
        let m = Mem {
            base,
            index,
            disp,
            seg: None,
            wide: self.rng.chance(15),
        };
        let size = if self.rng.chance(15) { 2 } else { 4 };
        let r = self.dst(size);
        self.op(size, &[0x8D], r, Rm::Mem(m), None);
        true
    }

    /// ADD OR ADC SBB AND SUB XOR CMP in all their encodings.
    fn alu(&mut self) -> bool {
        let op = self.rng.below(8) as u8;
        let s = self.size();
        let writes = if op == 7 {
            Access::Read
        } else {
            Access::Modify
        };
        let v = self.rng.value();
        match self.rng.below(6) {
            0 => {
                let rm = self.rm(s, writes, 0);
                let r = self.src(s);
                self.op(s, &[Self::w(op * 8, s)], r, rm, None);
            }
            1 => {
                let rm = self.rm(s, Access::Read, 0);
                let r = if op == 7 { self.src(s) } else { self.dst(s) };
                self.op(s, &[Self::w(op * 8 + 2, s)], r, rm, None);
            }
            2 => {
                self.p66(s);
                self.b(&[Self::w(op * 8 + 4, s)]);
                self.imm(v, Self::isz(s));
            }
            3 if s != 1 => {
                let rm = self.rm(s, writes, 0);
                self.op(s, &[0x83], op, rm, Some((v, 1)));
            }
            4 if s == 1 && self.rng.chance(30) => {
                // 82: the other encoding of 80.
                let rm = self.rm(s, writes, 0);
                self.op(s, &[0x82], op, rm, Some((v, 1)));
            }
            _ => {
                let rm = self.rm(s, writes, 0);
                self.op(s, &[Self::w(0x80, s)], op, rm, Some((v, Self::isz(s))));
            }
        }
        true
    }

    /// TEST: 84/85, A8/A9, F6/F7 /0.
    fn test(&mut self) -> bool {
        let s = self.size();
        let v = self.rng.value();
        match self.rng.below(3) {
            0 => {
                let rm = self.rm(s, Access::Read, 0);
                let r = self.src(s);
                self.op(s, &[Self::w(0x84, s)], r, rm, None);
            }
            1 => {
                self.p66(s);
                self.b(&[Self::w(0xA8, s)]);
                self.imm(v, Self::isz(s));
            }
            _ => {
                let rm = self.rm(s, Access::Read, 0);
                self.op(s, &[Self::w(0xF6, s)], 0, rm, Some((v, Self::isz(s))));
            }
        }
        true
    }

    /// INC, DEC: 40-4F and FE/FF /0 /1.
    fn inc_dec(&mut self) -> bool {
        let s = self.size();
        let digit = self.rng.below(2) as u8;
        if s != 1 && self.rng.chance(50) {
            let r = self.dst(s);
            self.p66(s);
            self.b(&[0x40 + digit * 8 + r]);
        } else {
            let rm = self.rm(s, Access::Modify, 0);
            self.op(s, &[Self::w(0xFE, s)], digit, rm, None);
        }
        true
    }

    /// NOT, NEG.
    fn not_neg(&mut self) -> bool {
        let s = self.size();
        let digit = self.rng.pick(&[2u8, 3]);
        let rm = self.rm(s, Access::Modify, 0);
        self.op(s, &[Self::w(0xF6, s)], digit, rm, None);
        true
    }

    /// Shifts and rotates (/0 .. /7) by an immediate, by 1 and by CL.
    fn shift(&mut self) -> bool {
        let s = self.size();
        let digit = self.rng.below(8) as u8;
        match self.rng.below(3) {
            0 => {
                let count = if self.rng.chance(70) {
                    self.rng.pick(&COUNTS)
                } else {
                    self.rng.next_u32() as u8
                };
                let rm = self.rm(s, Access::Modify, 0);
                self.op(s, &[Self::w(0xC0, s)], digit, rm, Some((count as u32, 1)));
            }
            1 => {
                let rm = self.rm(s, Access::Modify, 0);
                self.op(s, &[Self::w(0xD0, s)], digit, rm, None);
            }
            _ => {
                if self.rng.chance(50) {
                    let count = self.rng.pick(&COUNTS);
                    self.b(&[0xB1, count]); // MOV CL, count
                }
                // The operand's fix-ups may change ECX, and so CL: fine, any count will do.
                let rm = self.rm(s, Access::Modify, 0);
                self.op(s, &[Self::w(0xD2, s)], digit, rm, None);
            }
        }
        true
    }

    /// SETcc, CMOVcc.
    fn setcc_cmov(&mut self) -> bool {
        let cc = self.rng.below(16) as u8;
        if self.rng.chance(50) {
            let rm = self.rm(1, Access::Write, 0);
            self.op(1, &[0x0F, 0x90 + cc], 0, rm, None);
        } else {
            let s = self.rng.pick(&[2u8, 4, 4]);
            let rm = self.rm(s, Access::Read, 0);
            let r = self.dst(s);
            self.op(s, &[0x0F, 0x40 + cc], r, rm, None);
        }
        true
    }

    /// MUL, IMUL (one, two and three operands).
    fn mul(&mut self) -> bool {
        let s = self.size();
        match self.rng.below(4) {
            0 => {
                let digit = self.rng.pick(&[4u8, 5]);
                let rm = self.rm(s, Access::Read, 0);
                self.op(s, &[Self::w(0xF6, s)], digit, rm, None);
            }
            _ if s == 1 => return false,
            1 => {
                let rm = self.rm(s, Access::Read, 0);
                let r = self.dst(s);
                self.op(s, &[0x0F, 0xAF], r, rm, None);
            }
            2 => {
                let rm = self.rm(s, Access::Read, 0);
                let (r, v) = (self.dst(s), self.rng.value());
                self.op(s, &[0x69], r, rm, Some((v, s)));
            }
            _ => {
                let rm = self.rm(s, Access::Read, 0);
                let (r, v) = (self.dst(s), self.rng.value());
                self.op(s, &[0x6B], r, rm, Some((v, 1)));
            }
        }
        true
    }

    /// DIV, IDIV, guarded: an odd (or large) divisor and a high half that cannot overflow.
    fn div(&mut self) -> bool {
        let s = self.size();
        let signed = self.rng.chance(50);
        // EAX and EDX hold the dividend: not the divisor, nor its address.
        let avoid = 1 << EAX | 1 << EDX;
        let rm = if self.rng.chance(50) {
            Rm::Mem(self.mem(Access::Modify, avoid))
        } else if s == 1 {
            // CL DL BL CH DH BH: not AL or AH.
            Rm::Reg(self.rng.pick(&[1u8, 2, 3, 5, 6, 7]))
        } else {
            Rm::Reg(
                self.rng
                    .pick(&[ECX as u8, EBX as u8, EBP as u8, ESI as u8, EDI as u8]),
            )
        };
        // Divisor: OR rm, 1 (or, unsigned, OR rm, 0x100 and a high half below 0x100).
        let big = !signed && s != 1 && self.rng.chance(30);
        if big {
            self.op(s, &[0x81], 1, rm, Some((0x100, Self::isz(s))));
        } else if s == 1 {
            self.op(1, &[0x80], 1, rm, Some((1, 1)));
        } else {
            self.op(s, &[0x83], 1, rm, Some((1, 1)));
        }
        match (s, signed) {
            (1, false) => self.b(&[0x66, 0x0F, 0xB6, 0xC0]), // MOVZX AX, AL
            (1, true) => self.b(&[0x66, 0x98]),              // CBW
            (_, true) => {
                self.p66(s);
                self.b(&[0x99]); // CWD / CDQ
            }
            (_, false) if big => {
                // AND EDX, 0xFF
                self.p66(s);
                self.b(&[0x81, 0xE2]);
                self.imm(0xFF, Self::isz(s));
            }
            (_, false) => {
                self.p66(s);
                self.b(&[0x31, 0xD2]); // XOR EDX, EDX
            }
        }
        let digit = if signed { 7 } else { 6 };
        self.op(s, &[Self::w(0xF6, s)], digit, rm, None);
        true
    }

    /// CBW CWDE CWD CDQ.
    fn convert(&mut self) -> bool {
        if self.rng.chance(30) {
            self.b(&[0x66]);
        }
        let opcode = self.rng.pick(&[0x98, 0x99]);
        self.b(&[opcode]);
        true
    }

    /// XCHG (86/87, 90+r), BSWAP.
    fn xchg_bswap(&mut self) -> bool {
        let s = self.size();
        match self.rng.below(3) {
            0 => {
                let rm = self.rm(s, Access::Modify, 0);
                let r = self.dst(s);
                self.op(s, &[Self::w(0x86, s)], r, rm, None);
            }
            1 if s != 1 => {
                let r = self.dst(s);
                self.p66(s);
                self.b(&[0x90 + r]);
            }
            _ => {
                let r = self.dst(4);
                self.b(&[0x0F, 0xC8 + r]);
            }
        }
        true
    }

    /// BT BTS BTR BTC with a register or an immediate bit offset.
    fn bit_test(&mut self) -> bool {
        let s = self.rng.pick(&[2u8, 4, 4]);
        let kind = self.rng.below(4) as u8;
        let access = if kind == 0 {
            Access::Read
        } else {
            Access::Modify
        };
        if self.rng.chance(50) {
            let r = self.src(s);
            let rm = if self.rng.chance(50) {
                // A register bit offset reaches beyond the operand: keep it below 1024 bits.
                let r = if r == ESP as u8 { EAX as u8 } else { r };
                self.and_imm32(r, 0x3FF);
                let mut m = self.mem(access, 1 << r);
                m.disp = m.disp.abs();
                self.op(s, &[0x0F, 0xA3 + kind * 8], r, Rm::Mem(m), None);
                return true;
            } else {
                Rm::Reg(self.dst(s))
            };
            self.op(s, &[0x0F, 0xA3 + kind * 8], r, rm, None);
        } else {
            let bit = self.rng.next_u32() & 0xFF;
            let rm = self.rm(s, access, 0);
            self.op(s, &[0x0F, 0xBA], 4 + kind, rm, Some((bit, 1)));
        }
        true
    }

    /// BSF BSR, SHLD SHRD.
    fn bit_scan_shld(&mut self) -> bool {
        let s = self.rng.pick(&[2u8, 4, 4]);
        if self.rng.chance(40) {
            let rm = self.rm(s, Access::Read, 0);
            let r = self.dst(s);
            let opcode = self.rng.pick(&[0xBC, 0xBD]);
            self.op(s, &[0x0F, opcode], r, rm, None);
        } else {
            let right = self.rng.below(2) as u8 * 8;
            if self.rng.chance(50) {
                let rm = self.rm(s, Access::Modify, 0);
                let (r, count) = (self.src(s), self.rng.pick(&COUNTS));
                self.op(s, &[0x0F, 0xA4 + right], r, rm, Some((count as u32, 1)));
            } else {
                if self.rng.chance(50) {
                    let count = self.rng.pick(&COUNTS);
                    self.b(&[0xB1, count]); // MOV CL, count
                }
                let rm = self.rm(s, Access::Modify, 0);
                let r = self.src(s);
                self.op(s, &[0x0F, 0xA5 + right], r, rm, None);
            }
        }
        true
    }

    /// PUSH a register, an immediate or memory (popped later).
    fn push(&mut self) -> bool {
        if self.skip_depth > 0 || self.pushed.len() >= MAX_PUSHED {
            return false;
        }
        let s = if self.rng.chance(20) { 2 } else { 4 };
        match self.rng.below(4) {
            0 => {
                let r = self.rng.below(8) as u8;
                self.p66(s);
                self.b(&[0x50 + r]);
            }
            1 => {
                let v = self.rng.value();
                self.p66(s);
                self.b(&[0x6A, v as u8]);
            }
            2 => {
                let v = self.rng.value();
                self.p66(s);
                self.b(&[0x68]);
                self.imm(v, s);
            }
            _ => {
                let m = self.mem(Access::Read, 0);
                self.op(s, &[0xFF], 6, Rm::Mem(m), None);
            }
        }
        self.pushed.push(s);
        true
    }

    /// POP to a register or memory (what was pushed last, at its size).
    fn pop(&mut self) -> bool {
        if self.skip_depth > 0 {
            return false;
        }
        let Some(&s) = self.pushed.last() else {
            return false;
        };
        self.pushed.pop();
        if self.rng.chance(60) {
            let r = self.dst(4);
            self.p66(s);
            self.b(&[0x58 + r]);
        } else {
            // Not ESP-relative: POP computes that address after it moves ESP.
            let mut m = self.mem(Access::Write, 1 << ESP);
            if m.base == Some(ESP as u8) {
                m.base = None;
                m.disp = self.rng.range(DATA, DATA_END - 4) as i32;
                m.seg = None;
                m.wide = true;
            }
            self.op(s, &[0x8F], 0, Rm::Mem(m), None);
        }
        true
    }

    /// Push a function's arguments and CALL it (it pops them with RET imm16).
    fn call(&mut self) -> bool {
        if self.in_func || self.funcs.is_empty() {
            return false;
        }
        let f = self.rng.below(self.funcs.len() as u32) as usize;
        for _ in 0..self.funcs[f] {
            if self.rng.chance(50) {
                let r = self.rng.below(8) as u8;
                self.b(&[0x50 + r]);
            } else {
                let v = self.rng.value();
                self.b(&[0x68]);
                self.imm(v, 4);
            }
        }
        self.b(&[0xE8]);
        self.calls.push((self.out.len(), f));
        self.imm(0, 4);
        true
    }

    /// A forward Jcc (or JMP) over 1-3 instructions.
    fn skip(&mut self) -> bool {
        if self.skip_depth >= 2 {
            return false;
        }
        let jmp = self.rng.chance(8);
        let cc = self.rng.below(16) as u8;
        let at = self.out.len();
        let near = self.rng.chance(20);
        if near {
            if jmp {
                self.b(&[0xE9, 0, 0, 0, 0]);
            } else {
                self.b(&[0x0F, 0x80 + cc, 0, 0, 0, 0]);
            }
        } else if jmp {
            self.b(&[0xEB, 0]);
        } else {
            self.b(&[0x70 + cc, 0]);
        }
        let start = self.out.len();
        self.skip_depth += 1;
        for _ in 0..self.rng.range(1, 3) {
            self.unit();
        }
        self.skip_depth -= 1;
        let len = self.out.len() - start;
        if near {
            let field = start - 4;
            self.out[field..start].copy_from_slice(&(len as u32).to_le_bytes());
        } else if len < 128 {
            self.out[start - 1] = len as u8;
        } else {
            // Too far for rel8: the near form, and everything after it moves by 3 or 4.
            let long: Vec<u8> = if jmp {
                vec![0xE9]
            } else {
                vec![0x0F, 0x80 + cc]
            };
            let grow = long.len() + 4 - 2;
            let mut bytes = long;
            bytes.extend((len as u32).to_le_bytes());
            self.out.splice(at..start, bytes);
            for c in self.calls.iter_mut() {
                if c.0 >= start {
                    c.0 += grow;
                }
            }
        }
        true
    }

    /// String instructions: MOVS STOS LODS (REP or single), CMPS SCAS (REPE or REPNE), with
    /// the direction flag either way and small counts inside the data area.
    fn string(&mut self) -> bool {
        let size = self.rng.pick(&[1u8, 2, 4]);
        let down = self.rng.chance(20);
        self.b(&[if down { 0xFD } else { 0xFC }]); // STD / CLD
        let kind = self.rng.below(5);
        // The source may have a segment override; the destination is ES:EDI.
        let uses_esi = matches!(kind, 0 | 2 | 3);
        let uses_edi = matches!(kind, 0 | 1 | 3 | 4);
        let seg = if uses_esi && self.rng.chance(25) {
            Some(self.rng.pick(&[Seg::Cs, Seg::Ss, Seg::Fs, Seg::Gs]))
        } else {
            None
        };
        let count = self.rng.range(0, 40);
        if self.rng.chance(50) {
            self.mov_imm32(ECX as u8, count);
        } else {
            // ECX from its own value: at most 31.
            self.and_imm32(ECX as u8, 0x1F);
        }
        if uses_esi {
            self.fix_base(ESI as u8, BASE_START.wrapping_sub(seg.map_or(0, Seg::base)));
        }
        if uses_edi {
            self.fix_base(EDI as u8, BASE_START);
        }
        let mut prefixes = Vec::new();
        if let Some(s) = seg {
            prefixes.push(s.prefix());
        }
        if size == 2 {
            prefixes.push(0x66);
        }
        let rep = self.rng.chance(85);
        let (opcode, prefix) = match kind {
            0 => (0xA4, 0xF3),                           // MOVS
            1 => (0xAA, 0xF3),                           // STOS
            2 => (0xAC, 0xF3),                           // LODS
            3 => (0xA6, self.rng.pick(&[0xF3u8, 0xF2])), // CMPS
            _ => (0xAE, self.rng.pick(&[0xF3u8, 0xF2])), // SCAS
        };
        if rep {
            prefixes.push(prefix);
        }
        for i in (1..prefixes.len()).rev() {
            let j = self.rng.below(i as u32 + 1) as usize;
            prefixes.swap(i, j);
        }
        self.b(&prefixes);
        self.b(&[Self::w(opcode, size)]);
        true
    }

    /// CLC STC CMC, LAHF SAHF, PUSHFD with a POP.
    fn flags(&mut self) -> bool {
        match self.rng.below(6) {
            0 => self.b(&[0xF8]),
            1 => self.b(&[0xF9]),
            2 => self.b(&[0xF5]),
            3 => self.b(&[0x9F]),
            4 => self.b(&[0x9E]),
            _ => {
                let r = self.dst(4);
                self.b(&[0x9C, 0x58 + r]);
            }
        }
        true
    }

    /// XADD, CMPXCHG.
    fn xadd_cmpxchg(&mut self) -> bool {
        let s = self.size();
        let rm = self.rm(s, Access::Modify, 0);
        let r = self.dst(s);
        let opcode = self.rng.pick(&[0xC0u8, 0xB0]);
        self.op(s, &[0x0F, Self::w(opcode, s)], r, rm, None);
        true
    }

    /// MOV from a segment register (to a register or memory).
    fn segment_moves(&mut self) -> bool {
        let sreg = self.rng.below(6) as u8;
        if self.rng.chance(50) {
            let s = self.rng.pick(&[2u8, 4]);
            let r = self.dst(s);
            self.op(s, &[0x8C], sreg, Rm::Reg(r), None);
        } else {
            let m = self.mem(Access::Write, 0);
            self.op(2, &[0x8C], sreg, Rm::Mem(m), None);
        }
        true
    }
}

/// Cut the program for `seed` in `mode` down to the fewest units for which `fails` still holds
/// (greedily: drop halves, quarters ... of what is left, down to single units, while that
/// keeps it failing). Returns the cut-down program and the units dropped.
pub fn minimise(
    seed: u64,
    mode: Mode,
    mut fails: impl FnMut(&Program) -> bool,
) -> (Program, std::collections::BTreeSet<usize>) {
    let units = program(seed, mode).units;
    let mut drop = std::collections::BTreeSet::new();
    let mut chunk = units.max(1);
    loop {
        let kept: Vec<usize> = (0..units).filter(|u| !drop.contains(u)).collect();
        let mut progress = false;
        for c in kept.chunks(chunk) {
            let mut trial = drop.clone();
            trial.extend(c.iter().copied());
            if trial.len() > drop.len() && fails(&program_without(seed, mode, &trial)) {
                drop = trial;
                progress = true;
            }
        }
        if !progress {
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
    }
    (program_without(seed, mode, &drop), drop)
}

/// Replace the 32-bit `placeholder` in `code` (exactly once) by `v`.
fn patch(code: &mut [u8], placeholder: u32, v: u32) {
    let p = placeholder.to_le_bytes();
    let at = code
        .windows(4)
        .position(|w| w == p)
        .expect("placeholder in the prologue");
    code[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

// ---- The environment ----

fn put(cpu: &mut Cpu, addr: u32, v: u32) {
    cpu.mem.load(addr, &v.to_le_bytes());
}

/// A CPU ready to run `p` in its mode.
pub fn cpu_for(p: &Program) -> Cpu {
    match p.mode {
        Mode::Flat => {
            let mut cpu = super::sample::cpu_running(&p.image());
            // Every vector but #DE (which sample::cpu_running sends to 0x0F00) to a HLT of
            // its own.
            cpu.mem.load(FLAT_HANDLERS, &[0xF4; 32]);
            for v in 1..32 {
                put(&mut cpu, v * 4, FLAT_HANDLERS + v);
            }
            cpu
        }
        Mode::Paged => paged_cpu(p),
    }
}

fn paged_cpu(p: &Program) -> Cpu {
    let mut cpu = Cpu::with_ram(1 << 20);
    cpu.mem.load(CODE, &p.image());
    // Page tables: code read-only, data, counters and stack writable, all user; the system
    // structures supervisor-only; page 0 and everything above 1 MiB absent.
    put(&mut cpu, PAGE_DIR, PAGE_TABLE | PTE_P | PTE_RW | PTE_US);
    for page in 1..256u32 {
        let addr = page << 12;
        let flags = match addr {
            a if a < DATA => PTE_P | PTE_US,
            FAULT_PAGE => match p.planned {
                Planned::PageNotPresent => 0,
                Planned::PageSupervisor => PTE_P | PTE_RW,
                Planned::PageReadOnly => PTE_P | PTE_US,
                _ => PTE_P | PTE_RW | PTE_US,
            },
            a if a <= STACK_TOP => PTE_P | PTE_RW | PTE_US,
            _ => PTE_P | PTE_RW,
        };
        put(&mut cpu, PAGE_TABLE + page * 4, addr | flags);
    }
    // GDT: ring-0 and ring-3 flat code and data, the TSS, FS (its limit ends at the data
    // area's end when the program walks past it), GS.
    let fs_limit = if p.planned == Planned::SegmentLimit {
        DATA_END - 1 - FS_BASE
    } else {
        0xF_FFFF
    };
    let fs_flags = if p.planned == Planned::SegmentLimit {
        0x4
    } else {
        0xC
    };
    let entries = [
        (CODE0, Descriptor::segment(0, 0xF_FFFF, 0x9A, 0xC)),
        (DATA0, Descriptor::segment(0, 0xF_FFFF, 0x92, 0xC)),
        (CODE3, Descriptor::segment(0, 0xF_FFFF, 0xFA, 0xC)),
        (DATA3, Descriptor::segment(0, 0xF_FFFF, 0xF2, 0xC)),
        (TSS_SEL, Descriptor::segment(TSS, 0x67, 0x89, 0)),
        (FS3, Descriptor::segment(FS_BASE, fs_limit, 0xF2, fs_flags)),
        (GS3, Descriptor::segment(GS_BASE, 0xF_FFFF, 0xF2, 0xC)),
    ];
    for (sel, d) in entries {
        let at = GDT + (sel & !7) as u32;
        put(&mut cpu, at, d.lo);
        put(&mut cpu, at + 4, d.hi);
    }
    cpu.gdtr = TableReg {
        base: GDT,
        limit: 8 * 8 - 1,
    };
    // IDT: every vector to its own HLT at ring 0 through an interrupt gate; INT EXIT_VECTOR
    // is allowed at CPL 3.
    for v in 0..256u32 {
        let handler = HANDLERS + v;
        let dpl = if v == EXIT_VECTOR as u32 { 3 } else { 0 };
        let gate = Descriptor::interrupt_gate32(CODE0, handler, dpl);
        put(&mut cpu, IDT + v * 8, gate.lo);
        put(&mut cpu, IDT + v * 8 + 4, gate.hi);
    }
    cpu.idtr = TableReg {
        base: IDT,
        limit: 256 * 8 - 1,
    };
    cpu.mem.load(HANDLERS, &[0xF4; 256]);
    // TSS: the ring-0 stack.
    put(&mut cpu, TSS + 4, KERNEL_STACK_TOP);
    put(&mut cpu, TSS + 8, DATA0 as u32);
    cpu.write_cr3(PAGE_DIR);
    cpu.write_cr0(CR0_PE | CR0_PG | CR0_ET)
        .expect("paging turns on");
    cpu.load_task_register(TSS_SEL).expect("the TSS loads");
    let cache = |cpu: &Cpu, sel: u16| {
        let at = GDT + (sel & !7) as u32;
        let word = |a: u32| {
            u32::from_le_bytes(cpu.mem.ram[a as usize..a as usize + 4].try_into().unwrap())
        };
        Descriptor {
            lo: word(at),
            hi: word(at + 4),
        }
        .to_cache(sel)
    };
    cpu.segs[Segment::CS as usize] = cache(&cpu, CODE3);
    for s in [Segment::SS, Segment::DS, Segment::ES] {
        cpu.segs[s as usize] = cache(&cpu, DATA3);
    }
    for s in [Segment::FS, Segment::GS] {
        cpu.segs[s as usize] = null_cache(0);
    }
    cpu.set_cpl(3);
    cpu.regs[ESP] = STACK_TOP;
    cpu.eip = CODE;
    cpu
}

/// How `cpu`, having run `p`, ended (if it halted).
pub fn outcome(p: &Program, cpu: &Cpu) -> Outcome {
    let at = cpu.eip.wrapping_sub(1);
    let elsewhere = Outcome::Elsewhere {
        eip: cpu.eip,
        shutdown: cpu.shutdown,
    };
    if cpu.shutdown || !cpu.halted {
        return elsewhere;
    }
    match p.mode {
        Mode::Flat if at == p.exit => Outcome::Exit,
        Mode::Flat if at == FLAT_DE_HANDLER => Outcome::Exception {
            vector: 0,
            error: None,
        },
        Mode::Flat if (FLAT_HANDLERS + 1..FLAT_HANDLERS + 32).contains(&at) => Outcome::Exception {
            vector: (at - FLAT_HANDLERS) as u8,
            error: None,
        },
        Mode::Paged if (HANDLERS..HANDLERS + 256).contains(&at) => {
            let vector = (at - HANDLERS) as u8;
            if vector == EXIT_VECTOR {
                return Outcome::Exit;
            }
            let error = crate::cpu::exception::has_error_code(vector).then(|| {
                let sp = cpu.regs[ESP] as usize;
                u32::from_le_bytes(cpu.mem.ram[sp..sp + 4].try_into().unwrap())
            });
            Outcome::Exception { vector, error }
        }
        _ => elsewhere,
    }
}

/// Loop passes completed (by the counter in memory).
pub fn passes(p: &Program, cpu: &Cpu) -> u32 {
    let c = COUNTER as usize;
    let left = u32::from_le_bytes(cpu.mem.ram[c..c + 4].try_into().unwrap());
    p.iterations.wrapping_sub(left)
}

/// Where two CPUs that ran the same program differ: what `sample::difference` compares
/// (registers, EIP, EFLAGS, the count, HLT, the first 64 KiB of RAM), and the segment
/// registers, CPL, CR0, CR2, CR3, shutdown, and RAM up to `ram` bytes.
pub fn difference(a: &Cpu, b: &Cpu, ram: usize) -> Option<String> {
    let quick = |c: &Cpu| (c.regs, c.eip, c.flags.word(), c.instructions, c.halted);
    let system = |c: &Cpu| (c.segs, c.cpl, c.cr0, c.cr2, c.cr3, c.shutdown);
    let same =
        quick(a) == quick(b) && system(a) == system(b) && a.mem.ram[..ram] == b.mem.ram[..ram];
    if same {
        return None;
    }
    if let Some(d) = super::sample::difference(a, b) {
        return Some(d);
    }
    if system(a) != system(b) {
        return Some(format!(
            "segments, CPL, CR0, CR2, CR3, shutdown: {:x?} vs {:x?}",
            system(a),
            system(b)
        ));
    }
    (0..ram).find(|&n| a.mem.ram[n] != b.mem.ram[n]).map(|n| {
        format!(
            "memory at {n:#x}: {:#04x} vs {:#04x}",
            a.mem.ram[n], b.mem.ram[n]
        )
    })
}

/// Run `p` in slices of `slice` instructions with the interpreter alone and with the compiling
/// tier (`engine`, at `threshold`), until it halts; every slice must end in the same state
/// ([`difference`], with the first 92 KiB of RAM; all of it at the end). Returns the compiled
/// CPU, or what differed.
pub fn same_with_and_without(
    p: &Program,
    slice: u64,
    engine: Box<dyn Engine>,
    threshold: u32,
) -> Result<Cpu, String> {
    let mut plain = cpu_for(p);
    let mut compiled = cpu_for(p);
    compiled.set_jit(Some(engine), threshold);
    for n in 0.. {
        let a = plain.run(slice);
        let b = compiled.run(slice);
        let what = format!("slice {n} of {slice} (threshold {threshold})");
        if a != b {
            return Err(format!("{what}: {a:?} vs {b:?}"));
        }
        let end = a != RunExit::Budget;
        let ram = if end {
            plain.mem.ram.len()
        } else {
            COMPARED_RAM
        };
        if let Some(d) = difference(&plain, &compiled, ram) {
            return Err(format!("{what}: {d}"));
        }
        if let Some(e) = compiled.jit_error() {
            return Err(format!("{what}: the tier failed: {e}"));
        }
        if end {
            return Ok(compiled);
        }
        if plain.instructions > 10_000_000 {
            break;
        }
    }
    Err(format!("never halted in slices of {slice}"))
}

/// Run `p` with the interpreter alone until it halts (at most `budget` instructions).
pub fn run_plain(p: &Program, budget: u64) -> Cpu {
    let mut cpu = cpu_for(p);
    cpu.run(budget);
    cpu
}
