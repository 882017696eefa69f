//! The decoder: prefixes, ModR/M and SIB, immediates, and the opcode map.
//!
//! Decoding produces an [`Instr`] whose `exec` handler is already specialised for its operand
//! size and for register or memory operands. Its effective address is base plus scaled index
//! plus displacement, absent registers reading 0 (`Instr::ea`). Each instruction group (arith.rs,
//! data.rs, ...) owns the decoding of its opcodes: this file only routes an opcode to its group.

use super::exception::{Exception, Fault};
use super::seg::Segment;
use super::{arith, bits, control, data, string, system};
use super::{Cpu, EBP, ESP, REG_SLOTS, ZERO_REG};

/// An instruction handler: executes one decoded instruction. EIP already points past it.
pub type Handler = fn(&mut Cpu, &Instr) -> Fault;

/// No REP prefix.
pub const REP_NONE: u8 = 0;
/// F3: REP / REPE / REPZ.
pub const REP_Z: u8 = 1;
/// F2: REPNE / REPNZ.
pub const REP_NZ: u8 = 2;

/// One decoded instruction.
#[derive(Clone, Copy)]
pub struct Instr {
    /// The handler chosen at decode time.
    pub exec: Handler,
    /// Displacement of the memory operand.
    pub disp: u32,
    /// First immediate (sign- or zero-extended as the instruction requires).
    pub imm: u32,
    /// Second immediate (far pointer selector, ENTER nesting level).
    pub imm2: u32,
    /// Length in bytes, prefixes included.
    pub len: u8,
    /// Where the next instruction starts, as an offset from the start of the block this one was
    /// decoded in (`len` for an instruction decoded alone). The run loop finds EIP from it, so
    /// it keeps no EIP of its own from one instruction to the next.
    pub end: u16,
    /// ModR/M reg field, or the register encoded in the opcode.
    pub reg: u8,
    /// ModR/M rm field (the register of register forms).
    pub rm: u8,
    /// Base and index registers of the address ([`ZERO_REG`] when absent), and the SIB scale
    /// (bits 0-1) with [`REG_FORM`] above it.
    pub base: u8,
    pub index: u8,
    pub scale: u8,
    /// Segment of the memory operand (default or override). An enum, not a number: the
    /// compiler then knows it indexes `Cpu::segs` in bounds, and the memory-access fast path
    /// has no bounds check.
    pub seg: Segment,
    /// Operand size is 32 bits.
    pub op32: bool,
    /// Address size is 32 bits.
    pub addr32: bool,
    /// REP prefix kind (REP_NONE, REP_Z, REP_NZ).
    pub rep: u8,
    /// A segment-override prefix was present.
    pub seg_override: bool,
    /// The opcode (0x0F-prefixed opcodes are 0x0Fxx).
    pub opcode: u16,
    /// The run loop's inline form of this instruction (see fast.rs), or `fast::NONE`.
    pub fast: super::fast::Kind,
    /// A compare fused with the conditional jump after it (fast.rs): the jump's condition
    /// code, and the length of the compare alone (`len` covers both).
    pub cc: u8,
    pub first_len: u8,
    /// A register-to-register `MOV r32, r32` (two bytes) that came right before this
    /// instruction in its block, folded into it (fast.rs, [`super::fast::fold_move`]): the run
    /// loop retires it before this one without a dispatch of its own. 0: none; else
    /// [`PRE_MOV`] | destination << 3 | source. `len` and `end` are this instruction's own.
    pub pre_mov: u8,
}

/// Set in [`Instr::pre_mov`] when a move is folded in.
pub const PRE_MOV: u8 = 0x40;

fn exec_ud(_: &mut Cpu, _: &Instr) -> Fault {
    Err(Exception::ud())
}

impl Default for Instr {
    fn default() -> Self {
        Instr {
            exec: exec_ud,
            disp: 0,
            imm: 0,
            imm2: 0,
            len: 0,
            end: 0,
            reg: 0,
            rm: 0,
            base: ZERO_REG as u8,
            index: ZERO_REG as u8,
            scale: 0,
            seg: Segment::DS,
            op32: false,
            addr32: false,
            rep: REP_NONE,
            seg_override: false,
            opcode: 0,
            fast: super::fast::NONE,
            cc: 0,
            first_len: 0,
            pre_mov: 0,
        }
    }
}

impl Instr {
    /// Offset of the memory operand: base + index * scale + displacement, wrapped to the address
    /// size. Every addressing form is this one computation (an absent base or index is
    /// [`ZERO_REG`], which reads 0; 16-bit forms have scale 0), so there is no branch and no
    /// indirect call on the hot path.
    #[inline(always)]
    pub fn ea(&self, cpu: &Cpu) -> u32 {
        let mask = if self.addr32 { u32::MAX } else { 0xFFFF };
        self.address_sum(cpu) & mask
    }

    /// [`ea`](Self::ea) for an instruction known to use 32-bit addressing: no wrap to 16
    /// bits. The run loop's inline forms with a memory operand compute their address with it:
    /// the decoder gives such a form only to instructions that address memory with 32 bits
    /// (see `Decoder::memory16`).
    #[inline(always)]
    pub fn ea32(&self, cpu: &Cpu) -> u32 {
        debug_assert!(self.addr32);
        self.address_sum(cpu)
    }

    /// Base + index * scale + displacement, before any wrap to the address size.
    #[inline(always)]
    fn address_sum(&self, cpu: &Cpu) -> u32 {
        let slot = |r: u8| r as usize & (REG_SLOTS - 1);
        cpu.regs[slot(self.base)]
            .wrapping_add(cpu.regs[slot(self.index)] << (self.scale & 3))
            .wrapping_add(self.disp)
    }
}

/// Set in [`Instr::scale`] when the ModR/M operand is a register (mod = 3). The interpreter's
/// handlers know their form already; the compiling tier reads it from here.
pub const REG_FORM: u8 = 0x80;

impl Instr {
    /// The ModR/M operand is a register (only meaningful for instructions with ModR/M).
    #[inline(always)]
    pub fn reg_form(&self) -> bool {
        self.scale & REG_FORM != 0
    }
}

/// The longest legal instruction.
const MAX_LEN: u32 = 15;

/// Decoding state for one instruction.
pub struct Decoder<'a> {
    cpu: &'a mut Cpu,
    /// Offset (in CS) of the instruction's first byte.
    start: u32,
    /// Bytes consumed so far.
    pos: u32,
    /// The instruction being built.
    pub i: Instr,
    /// A LOCK prefix was present.
    pub lock: bool,
    lock_ok: bool,
    /// ModR/M has been read and selects a register operand.
    is_reg: bool,
    /// ModR/M has been read and selects a memory operand with a 16-bit address. Such an
    /// instruction gets no inline form in the run loop ([`super::fast::classify`] is not
    /// asked): the inline forms compute addresses with [`Instr::ea32`].
    memory16: bool,
    /// Mod field of the ModR/M byte.
    pub mode: u8,
    /// Decoding must stop after this instruction (control transfer, mode change).
    pub ends_block: bool,
    /// The bytes from `pos` below this are plain memory that [`Decoder::byte`] read the first
    /// of through the CS limit check and the TLB: the rest of that page, within the limit and
    /// [`MAX_LEN`]. They are read straight from RAM, at `window_ram + pos`.
    window_end: u32,
    window_ram: u32,
}

impl<'a> Decoder<'a> {
    /// Fetch the next instruction byte, checking the CS limit and paging.
    #[inline]
    pub fn byte(&mut self) -> Fault<u8> {
        if self.pos < self.window_end {
            if let Some(&b) = self
                .cpu
                .mem
                .ram
                .get(self.window_ram.wrapping_add(self.pos) as usize)
            {
                self.pos += 1;
                return Ok(b);
            }
        }
        self.byte_checked()
    }

    /// [`Decoder::byte`] through the CS limit check and the TLB, opening the window of the
    /// bytes after it in the same page (see `window_end`).
    #[inline(never)]
    fn byte_checked(&mut self) -> Fault<u8> {
        if self.pos >= MAX_LEN {
            return Err(Exception::gp(0));
        }
        let off = self.start.wrapping_add(self.pos);
        let cs = &self.cpu.segs[Segment::CS as usize];
        let limit = if cs.big {
            cs.limit
        } else {
            cs.limit.min(0xFFFF)
        };
        if off > limit {
            return Err(Exception::gp(0));
        }
        let lin = cs.base.wrapping_add(off);
        let user = self.cpu.cpl == 3;
        let phys = match self.cpu.mem.tlb.lookup(lin, self.cpu.tlb_read_perm) {
            Some(p) => p,
            None => self.cpu.translate(lin, false, user)?,
        };
        let Some(ram) = self.cpu.mem.fetchable(phys) else {
            self.pos += 1;
            return Ok(self.cpu.mem.read_phys(&mut *self.cpu.bus, phys, 1) as u8);
        };
        // Bytes left, counting this one: in the page, within the limit, within MAX_LEN (at
        // least 1 each). The window starts with this byte.
        let in_page = 0x1000 - (phys & 0xFFF);
        let in_limit = u64::from(limit - off) + 1;
        let left = u64::from(in_page)
            .min(in_limit)
            .min(u64::from(MAX_LEN - self.pos));
        self.window_end = self.pos + left as u32;
        self.window_ram = ram.wrapping_sub(self.pos);
        let b = self.cpu.mem.ram[ram as usize];
        self.pos += 1;
        Ok(b)
    }

    pub fn u16(&mut self) -> Fault<u16> {
        let lo = self.byte()? as u16;
        Ok(lo | (self.byte()? as u16) << 8)
    }

    pub fn u32(&mut self) -> Fault<u32> {
        let lo = self.u16()? as u32;
        Ok(lo | (self.u16()? as u32) << 16)
    }

    /// imm8, zero-extended, into `i.imm`.
    pub fn imm8(&mut self) -> Fault {
        self.i.imm = self.byte()? as u32;
        Ok(())
    }

    /// imm8, sign-extended to 32 bits, into `i.imm`.
    pub fn imm8s(&mut self) -> Fault {
        self.i.imm = self.byte()? as i8 as i32 as u32;
        Ok(())
    }

    /// imm16 into `i.imm`.
    pub fn imm16(&mut self) -> Fault {
        self.i.imm = self.u16()? as u32;
        Ok(())
    }

    /// imm16 or imm32 by operand size into `i.imm`.
    pub fn imm_v(&mut self) -> Fault {
        self.i.imm = if self.i.op32 {
            self.u32()?
        } else {
            self.u16()? as u32
        };
        Ok(())
    }

    /// A relative displacement of operand size (rel16/rel32), sign-extended, into `i.imm`.
    pub fn rel_v(&mut self) -> Fault {
        self.i.imm = if self.i.op32 {
            self.u32()?
        } else {
            self.u16()? as i16 as i32 as u32
        };
        Ok(())
    }

    /// A moffs address (address size) into `i.disp`, with no base or index register.
    pub fn moffs(&mut self) -> Fault {
        self.i.disp = if self.i.addr32 {
            self.u32()?
        } else {
            self.u16()? as u32
        };
        self.i.base = ZERO_REG as u8;
        self.i.index = ZERO_REG as u8;
        self.i.scale = 0;
        Ok(())
    }

    /// The register form was selected by the ModR/M byte.
    #[inline]
    pub fn is_reg(&self) -> bool {
        self.is_reg
    }

    /// This instruction accepts LOCK (when its destination is memory).
    pub fn allow_lock(&mut self) {
        self.lock_ok = !self.is_reg;
    }

    /// Stop decoding the block after this instruction.
    pub fn end_block(&mut self) {
        self.ends_block = true;
    }

    /// Read ModR/M (and SIB and displacement); fills reg, rm and the address form.
    pub fn modrm(&mut self) -> Fault {
        let m = self.byte()?;
        self.mode = m >> 6;
        self.i.reg = (m >> 3) & 7;
        self.i.rm = m & 7;
        if self.mode == 3 {
            self.is_reg = true;
            self.i.scale = REG_FORM;
            return Ok(());
        }
        self.is_reg = false;
        self.memory16 = !self.i.addr32;
        if self.i.addr32 {
            self.modrm32(m & 7)
        } else {
            self.modrm16(m & 7)
        }
    }

    fn modrm16(&mut self, rm: u8) -> Fault {
        const BX: u8 = 3;
        const BP: u8 = 5;
        const SI: u8 = 6;
        const DI: u8 = 7;
        const Z: u8 = ZERO_REG as u8;
        let (base, index) = match rm {
            0 => (BX, SI),
            1 => (BX, DI),
            2 => (BP, SI),
            3 => (BP, DI),
            4 => (SI, Z),
            5 => (DI, Z),
            6 => (BP, Z),
            _ => (BX, Z),
        };
        let (base, disp) = match self.mode {
            0 if rm == 6 => (Z, self.u16()? as u32),
            0 => (base, 0),
            1 => (base, self.byte()? as i8 as i32 as u32),
            _ => (base, self.u16()? as u32),
        };
        self.i.base = base;
        self.i.index = index;
        self.i.disp = disp;
        if base == BP && !self.i.seg_override {
            self.i.seg = Segment::SS;
        }
        Ok(())
    }

    fn modrm32(&mut self, rm: u8) -> Fault {
        let mut base = rm;
        let mut index = ZERO_REG as u8;
        let mut scale = 0;
        let mut no_base = false;
        if rm == 4 {
            let sib = self.byte()?;
            scale = sib >> 6;
            index = (sib >> 3) & 7;
            if index == 4 {
                index = ZERO_REG as u8;
            }
            base = sib & 7;
            if base == 5 && self.mode == 0 {
                no_base = true;
            }
        } else if rm == 5 && self.mode == 0 {
            no_base = true;
        }
        let disp = match self.mode {
            0 if no_base => self.u32()?,
            0 => 0,
            1 => self.byte()? as i8 as i32 as u32,
            _ => self.u32()?,
        };
        if no_base {
            base = ZERO_REG as u8;
        }
        self.i.base = base;
        self.i.index = index;
        self.i.scale = scale;
        self.i.disp = disp;
        if (base as usize == ESP || base as usize == EBP) && !self.i.seg_override {
            self.i.seg = Segment::SS;
        }
        Ok(())
    }
}

/// Select a handler by register/memory form and operand size (16/32) for a generic handler
/// `f::<R, W>` where R is [`RegRm`](super::operand::RegRm)/[`MemRm`](super::operand::MemRm)
/// and W is [`W16`](super::operand::W16)/[`W32`](super::operand::W32).
#[macro_export]
macro_rules! rm_v {
    ($d:expr, $f:ident) => {{
        use $crate::cpu::operand::{MemRm, RegRm, W16, W32};
        match ($d.is_reg(), $d.i.op32) {
            (true, false) => $f::<RegRm, W16> as $crate::cpu::decode::Handler,
            (true, true) => $f::<RegRm, W32>,
            (false, false) => $f::<MemRm, W16>,
            (false, true) => $f::<MemRm, W32>,
        }
    }};
}

/// Like [`rm_v!`] for byte operands: `f::<R, W8>`.
#[macro_export]
macro_rules! rm_b {
    ($d:expr, $f:ident) => {{
        use $crate::cpu::operand::{MemRm, RegRm, W8};
        if $d.is_reg() {
            $f::<RegRm, W8> as $crate::cpu::decode::Handler
        } else {
            $f::<MemRm, W8>
        }
    }};
}

/// Select `f::<W16>` or `f::<W32>` by operand size.
#[macro_export]
macro_rules! by_v {
    ($d:expr, $f:ident) => {{
        use $crate::cpu::operand::{W16, W32};
        if $d.i.op32 {
            $f::<W32> as $crate::cpu::decode::Handler
        } else {
            $f::<W16>
        }
    }};
}

impl Cpu {
    /// Decode one instruction at CS:`eip`. Returns it and whether the block must end after it.
    pub fn decode_one(&mut self, eip: u32) -> Fault<(Instr, bool)> {
        let big = self.segs[Segment::CS as usize].big;
        let mut d = Decoder {
            cpu: self,
            start: eip,
            pos: 0,
            i: Instr {
                op32: big,
                addr32: big,
                ..Instr::default()
            },
            lock: false,
            lock_ok: false,
            is_reg: false,
            memory16: false,
            mode: 0,
            ends_block: false,
            window_end: 0,
            window_ram: 0,
        };
        let mut op = loop {
            let b = d.byte()?;
            match b {
                0x26 | 0x2E | 0x36 | 0x3E => {
                    d.i.seg = Segment::from_index((b >> 3) & 3);
                    d.i.seg_override = true;
                }
                0x64 | 0x65 => {
                    d.i.seg = Segment::from_index(b - 0x60);
                    d.i.seg_override = true;
                }
                0x66 => d.i.op32 = !big,
                0x67 => d.i.addr32 = !big,
                0xF0 => d.lock = true,
                0xF2 => d.i.rep = REP_NZ,
                0xF3 => d.i.rep = REP_Z,
                _ => break b as u16,
            }
        };
        if op == 0x0F {
            op = 0x0F00 | d.byte()? as u16;
        }
        d.i.opcode = op;
        let exec = dispatch(&mut d, op)?;
        if d.lock && !d.lock_ok {
            return Err(Exception::ud());
        }
        d.i.exec = exec;
        d.i.len = d.pos as u8;
        d.i.end = d.pos as u16;
        d.i.fast = if d.memory16 {
            super::fast::NONE
        } else {
            super::fast::classify(&d.i, d.is_reg)
        };
        let ends = d.ends_block;
        Ok((d.i, ends))
    }
}

/// Route an opcode to the group that decodes it.
fn dispatch(d: &mut Decoder, op: u16) -> Fault<Handler> {
    match op {
        // ALU ops, INC/DEC, TEST, NOT/NEG/MUL/DIV, shifts, BCD, flag ops, CBW/CWD, SETcc, CMOVcc
        0x00..=0x05
        | 0x08..=0x0D
        | 0x10..=0x15
        | 0x18..=0x1D
        | 0x20..=0x25
        | 0x27
        | 0x28..=0x2D
        | 0x2F
        | 0x30..=0x35
        | 0x37
        | 0x38..=0x3D
        | 0x3F
        | 0x40..=0x4F
        | 0x69
        | 0x6B
        | 0x80..=0x85
        | 0x98
        | 0x99
        | 0x9E
        | 0x9F
        | 0xA8
        | 0xA9
        | 0xC0
        | 0xC1
        | 0xD0..=0xD6
        | 0xF5
        | 0xF6
        | 0xF7
        | 0xF8
        | 0xF9
        | 0xFE
        | 0x0F40..=0x0F4F
        | 0x0F90..=0x0F9F
        | 0x0FA4
        | 0x0FA5
        | 0x0FAC
        | 0x0FAD
        | 0x0FAF => arith::decode(d, op),
        // Bit tests and scans, CMPXCHG, XADD, BSWAP
        0x0FA3
        | 0x0FAB
        | 0x0FB3
        | 0x0FBB
        | 0x0FBA
        | 0x0FBC
        | 0x0FBD
        | 0x0FB0
        | 0x0FB1
        | 0x0FC0
        | 0x0FC1
        | 0x0FC7
        | 0x0FC8..=0x0FCF => bits::decode(d, op),
        // Moves, exchanges, stack, segment loads, LEA, XLAT, ENTER/LEAVE, BOUND
        0x06
        | 0x07
        | 0x0E
        | 0x16
        | 0x17
        | 0x1E
        | 0x1F
        | 0x50..=0x62
        | 0x68
        | 0x6A
        | 0x86..=0x8F
        | 0x90..=0x97
        | 0x9C
        | 0x9D
        | 0xA0..=0xA3
        | 0xB0..=0xBF
        | 0xC4..=0xC9
        | 0xD7
        | 0x0FA0
        | 0x0FA1
        | 0x0FA8
        | 0x0FA9
        | 0x0FB2
        | 0x0FB4..=0x0FB7
        | 0x0FBE
        | 0x0FBF => data::decode(d, op),
        // String instructions (with REP)
        0x6C..=0x6F | 0xA4..=0xA7 | 0xAA..=0xAF => string::decode(d, op),
        // Jumps, calls, returns, loops, INT/IRET, HLT, flag control, port I/O, FF group
        0x70..=0x7F
        | 0x0F80..=0x0F8F
        | 0x9A
        | 0xC2
        | 0xC3
        | 0xCA..=0xCF
        | 0xE0..=0xEF
        | 0xF4
        | 0xFA..=0xFD
        | 0xFF => control::decode(d, op),
        // System: descriptor tables, control/debug registers, MSRs, CPUID, SYSENTER, ARPL...
        0x63 | 0x0F00..=0x0F0B | 0x0F20..=0x0F23 | 0x0F30..=0x0F35 | 0x0FA2 | 0x0F1F => {
            system::decode(d, op)
        }
        // x87 escapes, WAIT and FXSAVE/FXRSTOR
        0x9B | 0xD8..=0xDF | 0x0FAE => super::x87::decode(d, op),
        _ => Ok(exec_ud),
    }
}

/// The #UD handler, for groups to return for undefined encodings.
pub fn undefined() -> Handler {
    exec_ud
}

#[cfg(test)]
mod tests {
    use super::super::{Cpu, SegCache, Segment};
    use super::*;

    /// A CPU whose code segment has base 0x1000 and the given limit and size, with `code` at
    /// offset `at` of it.
    fn cpu_with(code: &[u8], at: u32, limit: u32, big: bool) -> Cpu {
        let mut cpu = Cpu::with_ram(1 << 20);
        let mut cs = SegCache::real(0x100);
        cs.base = 0x1000;
        cs.limit = limit;
        cs.big = big;
        cs.compute_ranges();
        cpu.segs[Segment::CS as usize] = cs;
        cpu.mem.load(0x1000 + at, code);
        cpu
    }

    /// Every byte of an instruction is fetched within the code segment's limit (and 64 KiB for
    /// 16-bit code) and within 15 bytes, including those read from the fetch window the first
    /// byte opened.
    #[test]
    fn instruction_fetch_checks_the_limit_and_the_length_at_every_byte() {
        // mov eax, 0x44332211 at offset 0x10: five bytes, 0x10..=0x14.
        let mov = [0xB8, 0x11, 0x22, 0x33, 0x44];
        for (limit, fits) in [(0x14, true), (0x13, false), (0x11, false), (0x10, false)] {
            let mut cpu = cpu_with(&mov, 0x10, limit, true);
            match cpu.decode_one(0x10) {
                Ok((i, _)) => {
                    assert!(fits, "limit {limit:#x}: decoded past the limit");
                    assert_eq!((i.len, i.imm), (5, 0x4433_2211));
                }
                Err(e) => {
                    assert!(!fits, "limit {limit:#x}: {e:?}");
                    assert_eq!(e, Exception::gp(0), "limit {limit:#x}");
                }
            }
        }
        // 16-bit code: the offset may not pass 0xFFFF whatever the limit says.
        let mov16 = [0xB8, 0x11, 0x22];
        let mut cpu = cpu_with(&mov16, 0xFFFD, 0xF_FFFF, false);
        assert_eq!(cpu.decode_one(0xFFFD).map(|(i, _)| i.imm), Ok(0x2211));
        let mut cpu = cpu_with(&mov16, 0xFFFE, 0xF_FFFF, false);
        assert_eq!(cpu.decode_one(0xFFFE).map(|_| ()), Err(Exception::gp(0)));
        // Fifteen bytes with ten prefixes is an instruction; sixteen is #GP.
        for (prefixes, ok) in [(10, true), (11, false)] {
            let mut code = vec![0x3E; prefixes];
            code.extend_from_slice(&mov);
            let mut cpu = cpu_with(&code, 0, 0xFFFF, true);
            let got = cpu.decode_one(0).map(|(i, _)| (i.len, i.imm));
            let want = if ok {
                Ok((15, 0x4433_2211))
            } else {
                Err(Exception::gp(0))
            };
            assert_eq!(got, want, "{prefixes} prefixes");
        }
    }
}
